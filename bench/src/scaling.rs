//! How cost grows (`shorts-bench scaling`): SQLite intake with a million delivered orders stored
//! against none, the retention purge of a million delivered orders under load, and PostgreSQL
//! with one and with three instances on one store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use shorts_runtime::testing::MockPlatform;
use sqlx::{Connection as _, SqliteConnection};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::load::{self, Run};
use crate::service::{self, Contender, Kind, Settings};
use crate::{free_port, machine, serve};

/// The header of this section's table.
const HEADER: &str = "| scaling figure | measured | compared with | ratio | target |";

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

const DAY_MS: i64 = 86_400_000;

/// How long the quiet run before the purge lasts.
const QUIET: Duration = Duration::from_secs(120);

/// The scaling rows; `no_purge` and `no_postgres` leave those parts out (to measure one change
/// to the stored-orders intake quickly).
pub(crate) async fn run(quick: bool, no_purge: bool, no_postgres: bool) -> ExitCode {
    let settings = service::settings(quick);
    let stored: u32 = if quick { 10_000 } else { 1_000_000 };
    let dir = std::env::temp_dir().join(format!("shorts-bench-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let client = load::client();
    // Kept until the end, as in `service::run` (freeing a platform's record of callbacks slows this
    // process's allocator down for seconds).
    let mut retired = Vec::new();
    let mut rows = Vec::new();
    let mut after_table = Vec::new();
    println!("machine: {}", machine());
    println!(
        "stored orders: {stored} delivered orders, each with its webhook body, callback body and two history rows"
    );

    // 1. SQLite intake on an empty store, then with `stored` delivered orders.
    let platform = MockPlatform::start().await.expect("mock");
    let empty = sqlite("shorts (SQLite, empty)", &platform, dir.join("empty.db")).await;
    warm_up(&client, &empty, &platform).await;
    let (empty_rate, empty_run) = service::max_rate(&client, &empty, &platform, &settings, quick).await;
    println!(
        "intake {:<44} {empty_rate:>7.0} webhooks/s (p99 {:.1} ms)",
        empty.name,
        empty_run.p(0.99)
    );
    drop(empty);
    retired.push(platform);

    let platform = MockPlatform::start().await.expect("mock");
    let db = dir.join("stored.db");
    let filled = prefill(&platform, &db, stored, now_ms() - 10 * DAY_MS).await;
    println!(
        "filled {} in {:.1} s ({:.0} MiB)",
        db.display(),
        filled.as_secs_f64(),
        file_mib(&db)
    );
    let plans = shorts_runtime::__bench::sqlite_query_plans(&db)
        .await
        .expect("query plans");
    let full = sqlite("shorts (SQLite, orders stored)", &platform, db).await;
    warm_up(&client, &full, &platform).await;
    let (full_rate, full_run) = service::max_rate(&client, &full, &platform, &settings, quick).await;
    println!(
        "intake {:<44} {full_rate:>7.0} webhooks/s (p99 {:.1} ms)",
        full.name,
        full_run.p(0.99)
    );
    rows.push(format!(
        "| SQLite intake, webhooks/s at p99 <= 50 ms, {} delivered orders stored vs none | {full_rate:.0} (p99 {:.1} ms) | {empty_rate:.0} (p99 {:.1} ms) | {:.2}x | >= 0.8x |",
        thousands(stored),
        full_run.p(0.99),
        empty_run.p(0.99),
        full_rate / empty_rate.max(1.0)
    ));

    drop(full);
    retired.push(platform);

    // 2. The purge, under a load the server delivers end to end: a tenth of its intake with
    // orders stored, about the end-to-end rate of the service table (a quarter of the intake is
    // more than one instance runs and delivers on two cores: its backlog grows all along).
    if !no_purge {
        let rate = (full_rate * 0.1).max(10.0);
        purge(
            &client,
            &dir,
            stored,
            rate,
            quick,
            &mut rows,
            &mut after_table,
            &mut retired,
        )
        .await;
    }

    // 3. PostgreSQL, one instance and three on one store.
    if !no_postgres {
        match postgres(&client, &dir, &settings, quick, &mut retired).await {
            Ok(postgres_rows) => rows.extend(postgres_rows),
            Err(e) => rows.push(format!("| PostgreSQL: not measured ({e}) | | | | |")),
        }
    }

    print_table(rows, after_table);
    println!();
    println!(
        "SQLite's plans (EXPLAIN QUERY PLAN) of the statements the server runs for a lone order, a poll, a run's start, a lease's renewal and the purge, on the database of {} stored orders:",
        thousands(stored)
    );
    for (statement, lines) in plans {
        println!("- `{}`", shortened(&statement));
        if lines.is_empty() {
            println!("    (no plan: reads no table)");
        }
        for line in lines {
            println!("    {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::mem::forget(retired);
    ExitCode::SUCCESS
}

/// `shorts-bench purge [--rate R] [--stored N] [--quick]`: the purge rows of `scaling` alone, at
/// `R` webhooks a second (by default 1,000) with `N` delivered orders to purge (by default
/// 1,000,000; 10,000 with `--quick`).
pub(crate) async fn purge_alone(args: &[String]) -> ExitCode {
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let quick = args.iter().any(|a| a == "--quick");
    let (Ok(rate), Ok(stored)) = (
        value("--rate").map_or(Ok(1000.0), |r| r.parse::<f64>()),
        value("--stored").map_or(Ok(if quick { 10_000 } else { 1_000_000 }), |n| n.parse::<u32>()),
    ) else {
        eprintln!("usage: shorts-bench purge [--rate R] [--stored N] [--quick]");
        return ExitCode::from(2);
    };
    let dir = std::env::temp_dir().join(format!("shorts-bench-purge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mut rows, mut after_table, mut retired) = (Vec::new(), Vec::new(), Vec::new());
    println!("machine: {}", machine());
    purge(
        &load::client(),
        &dir,
        stored,
        rate,
        quick,
        &mut rows,
        &mut after_table,
        &mut retired,
    )
    .await;
    print_table(rows, after_table);
    let _ = std::fs::remove_dir_all(&dir);
    std::mem::forget(retired);
    ExitCode::SUCCESS
}

/// Prints the section's table of `rows`, then `after_table`'s lines.
fn print_table(rows: Vec<String>, after_table: Vec<String>) {
    println!();
    println!("{HEADER}");
    println!("| --- | --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
    println!();
    for line in after_table {
        println!("{line}");
    }
}

/// The purge of `stored` delivered orders under `rate` webhooks a second, against the same server
/// on the same database with the purge off at that rate (the quiet figure): its rows, and its log
/// and timeline after the table.
#[allow(clippy::too_many_arguments, reason = "the run's accumulators, as in `run`")]
async fn purge(
    client: &reqwest::Client,
    dir: &Path,
    stored: u32,
    rate: f64,
    quick: bool,
    rows: &mut Vec<String>,
    after_table: &mut Vec<String>,
    retired: &mut Vec<MockPlatform>,
) {
    let platform = MockPlatform::start().await.expect("mock");
    let db = dir.join("old.db");
    // Received over ten days, forty days ago: past any retention.
    let oldest = now_ms() - 50 * DAY_MS;
    let filled = prefill(&platform, &db, stored, oldest).await;
    println!(
        "filled {} in {:.1} s ({:.0} MiB)",
        db.display(),
        filled.as_secs_f64(),
        file_mib(&db)
    );
    // The quiet figure: the same file, every order kept (`SHORTS_RETENTION=0s`), for two minutes.
    let quiet_for = if quick { Duration::from_secs(2) } else { QUIET };
    let quiet = {
        let port = free_port();
        let mut command = service::command(Kind::ShortsSqlite, &platform, port, &db);
        command.env("SHORTS_RETENTION", "0s");
        let server = Contender::spawn("shorts (SQLite, keeping)", command, port, db.clone()).await;
        let quiet = service::warm_fixed(client, &server, &platform, rate, quiet_for).await;
        server.stop_keeping_db();
        quiet
    };
    println!(
        "quiet  {:<44} p50 {:.1} ms, p99 {:.1} ms at {rate:.0}/s",
        "shorts (SQLite, keeping)",
        quiet.p(0.5),
        quiet.p(0.99)
    );
    let purge = purge_under_load(client, &platform, &db, rate, quick, oldest + 10 * DAY_MS + 1).await;
    retired.push(platform);
    let run = &purge.run;
    rows.push(match purge.took {
        Some(took) => format!(
            "| retention purge of {} delivered orders (SHORTS_RETENTION=1s): time until none is left, from the first purge | {:.1} s ({:.0} orders/s) | | | |",
            thousands(stored),
            took.as_secs_f64(),
            f64::from(stored) / took.as_secs_f64().max(1e-3)
        ),
        None => format!(
            "| retention purge of {} delivered orders (SHORTS_RETENTION=1s): time until none is left | not done within {:.0} s | | | |",
            thousands(stored),
            purge.waited.as_secs_f64()
        ),
    });
    rows.push(format!(
        "| webhook latency p50 / p99 / max ms at {rate:.0}/s during that purge ({} webhooks, {:.1} % errors) vs quiet (the same file and rate, every order kept, {} webhooks over {:.0} s) | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.2}x (p99) | <= 2x |",
        run.sent,
        run.error_share() * 100.0,
        quiet.sent,
        quiet_for.as_secs_f64(),
        run.p(0.5),
        run.p(0.99),
        run.p(1.0),
        quiet.p(0.5),
        quiet.p(0.99),
        quiet.p(1.0),
        run.p(0.99) / quiet.p(0.99).max(1e-3)
    ));
    if !purge.log.is_empty() {
        after_table.push(format!(
            "the purging server's warnings and errors:\n  {}",
            purge.log.join("\n  ")
        ));
    }
    after_table.push(format!(
        "worst webhook latency (ms) in each second of the run during the purge (the purge starts 1 s after the server listens, about when the run starts): {}",
        run.timeline(Duration::from_secs(1))
            .iter()
            .map(|worst| format!("{worst:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
}

/// Half a second of webhooks at 100/s: the server's connections to its store open (PostgreSQL's
/// pool opens them as they are needed), this client's to the server too.
async fn warm_up(client: &reqwest::Client, contender: &Contender, platform: &MockPlatform) {
    service::fixed(client, contender, platform, 100.0, Duration::from_millis(500)).await;
}

/// shorts (SQLite) on the database `db`, deleted when it stops.
async fn sqlite(name: &'static str, platform: &MockPlatform, db: PathBuf) -> Contender {
    let port = free_port();
    Contender::spawn(
        name,
        service::command(Kind::ShortsSqlite, platform, port, &db),
        port,
        db,
    )
    .await
}

/// `n` with thousands separated by commas.
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A statement, cut after 160 characters.
fn shortened(statement: &str) -> String {
    match statement.char_indices().nth(160) {
        Some((at, _)) => format!("{} ...", &statement[..at]),
        None => statement.to_owned(),
    }
}

/// The size of a database file and its WAL, MiB.
fn file_mib(db: &Path) -> f64 {
    let size = |suffix: &str| {
        std::fs::metadata(format!("{}{suffix}", db.display()))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    (size("") + size("-wal")) as f64 / 1_048_576.0
}

/// Creates the database at `db` by starting the server on it once (it creates its schema), then
/// stores `count` delivered orders in it, received one after another over ten days from `first`
/// (ms since the Unix epoch), each as the server leaves a delivered order of the `echo` short: its
/// row, its webhook body, its callback body, and the history rows of its run and its callback.
/// Returns how long the filling took.
async fn prefill(platform: &MockPlatform, db: &Path, count: u32, first: i64) -> Duration {
    let port = free_port();
    let mut schema = service::command(Kind::ShortsSqlite, platform, port, db);
    let mut child = schema
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server");
    crate::wait_listening(port, "the server").await;
    // Listening: its schema is committed.
    let _ = child.kill();
    let _ = child.wait();

    let began = std::time::Instant::now();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(false);
    let mut c = SqliteConnection::connect_with(&options)
        .await
        .expect("open the database");
    // One transaction, written without a journal nor fsyncs (a failure leaves a file to delete),
    // with a cache large enough for the indexes; the file goes back to WAL mode.
    for pragma in [
        "PRAGMA journal_mode = OFF",
        "PRAGMA synchronous = OFF",
        "PRAGMA cache_size = -1048576",
        "PRAGMA temp_store = MEMORY",
    ] {
        sqlx::query(pragma).execute(&mut c).await.expect(pragma);
    }
    let spacing = (10 * DAY_MS / i64::from(count.max(1))).max(1);
    // Ids spread over the key space as the platform's are, each unique by its number.
    sqlx::query(
        "CREATE TEMP TABLE fill AS
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         SELECT printf('%08x-%07d', (i * 2654435761) % 4294967296, i) AS order_id,
                $2 + i * $3 AS received_at
         FROM n",
    )
    .bind(i64::from(count))
    .bind(first)
    .bind(spacing)
    .execute(&mut c)
    .await
    .expect("the orders' ids");
    let callback_url = platform.callback_url();
    sqlx::query("BEGIN").execute(&mut c).await.expect("begin");
    // (what, the statement, whether it takes the callback URL as $1)
    let fills = [
        // As the server leaves them: accepted with its run started (runs 1, fence 1, a lease of 5
        // s), its body stored (outcome ok), delivered by one POST (attempts 1, steps 0, owner
        // released).
        (
            "the orders",
            "INSERT INTO shorts_orders (order_id, short, callback_url, state, runs, attempts, fence, owner,
                                        lease_until, next_at, last_error, received_at, steps, token_at, token_len,
                                        outcome)
             SELECT order_id, 'echo', $1, 'delivered', 1, 1, 1, NULL, received_at + 5000, NULL, NULL, received_at, 0,
                    NULL, NULL, 'ok'
             FROM fill ORDER BY received_at",
            true,
        ),
        // The webhook body as `service::body` makes it (about 150 bytes).
        (
            "the webhook bodies",
            r#"INSERT INTO shorts_payloads (order_id, payload)
               SELECT order_id,
                      CAST(printf('{"short_id":"abc123","order_id":"%s","inputs":{"text":"hello"},"callback_url":"%s","ts":%d}',
                                  order_id, $1, received_at / 1000) AS BLOB)
               FROM fill ORDER BY received_at"#,
            true,
        ),
        // The callback body of `echo`'s text.
        (
            "the callback bodies",
            r#"INSERT INTO shorts_results (order_id, body)
               SELECT order_id,
                      CAST(printf('{"ok":true,"order_id":"%s","output_type":"text","result_text":"hello"}', order_id) AS BLOB)
               FROM fill ORDER BY received_at"#,
            false,
        ),
        // Its run, then its callback POST.
        (
            "the history",
            "INSERT INTO shorts_history (order_id, kind, number, at, ended_at, outcome, status, detail)
             SELECT order_id, kind, 1, at, ended_at, outcome, status, NULL FROM (
                 SELECT order_id, received_at AS t, 0 AS k, 'run' AS kind, received_at AS at,
                        received_at + 1 AS ended_at, 'ok' AS outcome, NULL AS status FROM fill
                 UNION ALL
                 SELECT order_id, received_at, 1, 'callback', received_at + 2, NULL, 'accepted', 200 FROM fill)
             ORDER BY t, k",
            false,
        ),
    ];
    for (what, statement, takes_url) in fills {
        let query = sqlx::query(statement);
        let query = if takes_url {
            query.bind(&callback_url)
        } else {
            query
        };
        query.execute(&mut c).await.expect(what);
    }
    sqlx::query("COMMIT").execute(&mut c).await.expect("commit");
    sqlx::query("DROP TABLE fill")
        .execute(&mut c)
        .await
        .expect("drop");
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut c)
        .await
        .expect("WAL");
    c.close().await.expect("close");
    began.elapsed()
}

/// What the purge run measured.
struct Purge {
    /// From the first purge (1 s after the server listened) until no prefilled order was left.
    took: Option<Duration>,
    /// How long it was waited for.
    waited: Duration,
    /// The load sent meanwhile.
    run: Run,
    /// The server's warnings and errors meanwhile, shortened.
    log: Vec<String>,
}

/// A line of the server's log, without its SQL text: time, level, message, and the statement's
/// summary, rows and time when it is a slow statement's warning.
fn log_line(line: &str) -> String {
    let field = |name: &str| {
        line.find(&format!(" {name}="))
            .map(|at| {
                let rest = &line[at + name.len() + 2..];
                let end = if let Some(quoted) = rest.strip_prefix('"') {
                    quoted.find('"').map_or(rest.len(), |e| e + 2)
                } else {
                    rest.find(' ').unwrap_or(rest.len())
                };
                format!("{name}={}", &rest[..end])
            })
            .unwrap_or_default()
    };
    if line.contains("slow statement") {
        let time = line.split_whitespace().next().unwrap_or("");
        format!(
            "{time} slow statement {} {} {}",
            field("summary"),
            field("rows_affected"),
            field("elapsed")
        )
    } else {
        shortened(line)
    }
}

/// Starts the server on the prefilled `db` with `SHORTS_RETENTION=1s` (its first purge runs 1 s
/// after it starts, then every second), sends `rate` webhooks a second from when it listens until
/// a second after none of the orders received before `cutoff` is left (polled on the file),
/// bounded.
async fn purge_under_load(
    client: &reqwest::Client,
    platform: &MockPlatform,
    db: &Path,
    rate: f64,
    quick: bool,
    cutoff: i64,
) -> Purge {
    let limit = if quick {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(600)
    };
    let port = free_port();
    let mut command = service::command(Kind::ShortsSqlite, platform, port, db);
    // Its warnings (each statement slower than 1 s) and errors, for what the purge did.
    command.env("SHORTS_RETENTION", "1s").env("RUST_LOG", "warn");
    let log_path = db.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("the server's log");
    let server = Contender::spawn_with_log(
        "shorts (SQLite, purging)",
        command,
        port,
        db.to_owned(),
        log.into(),
    )
    .await;
    let listening = Instant::now();
    let first_purge = listening + Duration::from_secs(1);
    // Its connections open before the purge starts.
    service::fixed(client, &server, platform, rate, Duration::from_millis(300)).await;
    let stop = CancellationToken::new();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let mut reader = SqliteConnection::connect_with(&options)
        .await
        .expect("open the database to read");
    let poll = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut gone = None;
            while listening.elapsed() < limit {
                let left: i64 = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM shorts_orders WHERE state = 'delivered' AND received_at < $1)",
                )
                .bind(cutoff)
                .fetch_one(&mut reader)
                .await
                .unwrap_or(1);
                if left == 0 {
                    gone = Some(Instant::now());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = reader.close().await;
            // The load goes on a second after the purge, then stops.
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
            gone
        })
    };
    let before = platform.callback_count();
    let url = format!("http://127.0.0.1:{port}/shorts/echo");
    let run = load::open_loop(
        client,
        &[url.as_str()],
        &format!("purge{}", fastrand::u64(..)),
        rate,
        limit + Duration::from_secs(2),
        Some(&stop),
        service::body(platform),
    )
    .await;
    let gone = poll.await.expect("the poll ends");
    service::drain(platform, before + run.ok as usize).await;
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    Purge {
        took: gone.map(|at| at.saturating_duration_since(first_purge)),
        waited: listening.elapsed(),
        run,
        log: log.lines().map(log_line).collect(),
    }
}

/// PostgreSQL at `SHORTS_TEST_POSTGRES_URL` (by default the local server's `test` database): the
/// intake, then end to end at half the one instance's intake, of one instance, then of three
/// instances on one store with the load spread over them; each on a schema of its own, dropped at
/// the end. Its table rows.
async fn postgres(
    client: &reqwest::Client,
    dir: &Path,
    settings: &Settings,
    quick: bool,
    retired: &mut Vec<MockPlatform>,
) -> Result<Vec<String>, String> {
    let mut figures = Vec::new();
    let mut rate = None;
    for instances in [1, 3] {
        let schema = crate::PgSchema::create()?;
        let scoped = schema.url.clone();
        let platform = MockPlatform::start().await.expect("mock");
        let name = if instances == 1 {
            "shorts (PostgreSQL, 1 instance)"
        } else {
            "shorts (PostgreSQL, 3 instances)"
        };
        // The first instance creates the schema's tables before the others start.
        let mut contender = start_postgres(name, &platform, &scoped, dir).await;
        for _ in 1..instances {
            contender
                .others
                .push(start_postgres(name, &platform, &scoped, dir).await);
        }
        warm_up(client, &contender, &platform).await;
        let (intake, run) = service::max_rate(client, &contender, &platform, settings, quick).await;
        println!(
            "intake {:<44} {intake:>7.0} webhooks/s (p99 {:.1} ms)",
            contender.name,
            run.p(0.99)
        );
        let rate = *rate.get_or_insert((intake * 0.5).max(10.0));
        service::fixed(client, &contender, &platform, rate, settings.fixed / 10).await;
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..settings.rounds {
            let run = service::fixed(client, &contender, &platform, rate, settings.fixed).await;
            let (p50, p99) = service::end_to_end(&platform, &run);
            p50s.push(p50);
            p99s.push(p99);
        }
        let (p50, p99) = (median(p50s), median(p99s));
        println!(
            "end to end {:<40} p50 {p50:.1} ms, p99 {p99:.1} ms at {rate:.0}/s",
            contender.name
        );
        figures.push((intake, run.p(0.99), p50, p99));
        drop(contender);
        retired.push(platform);
        drop(schema);
    }
    let rate = rate.unwrap_or(0.0);
    let [one, three] = figures[..] else {
        unreachable!("one and three instances")
    };
    Ok(vec![
        format!(
            "| PostgreSQL intake, webhooks/s at p99 <= 50 ms: 3 instances vs 1 (load round-robin over them) | {:.0} (p99 {:.1} ms) | {:.0} (p99 {:.1} ms) | {:.2}x | |",
            three.0,
            three.1,
            one.0,
            one.1,
            three.0 / one.0.max(1.0)
        ),
        format!(
            "| PostgreSQL end to end p50 / p99 ms at {rate:.0}/s (half of one instance's intake; median of {} runs): 3 instances vs 1 | {:.1} / {:.1} | {:.1} / {:.1} | {:.2}x (p99) | |",
            settings.rounds,
            three.2,
            three.3,
            one.2,
            one.3,
            three.3 / one.3.max(1e-3)
        ),
    ])
}

/// One `serve` on the PostgreSQL store at `url`.
async fn start_postgres(name: &'static str, platform: &MockPlatform, url: &str, dir: &Path) -> Contender {
    let port = free_port();
    // No database file: the path names none.
    let none = dir.join(format!("postgres-{port}.none"));
    Contender::spawn(name, serve(platform, port, url), port, none).await
}

/// The median of some figures (the upper one of an even count); zero for none.
fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(0.0)
}
