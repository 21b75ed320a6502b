//! The figures of the service side: intake, latency, end to end, memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use shorts_runtime::testing::MockPlatform;

use crate::https::{self, Certificate};
use crate::load::{self, Run};
use crate::{Server, free_port, machine, proc, remove_database, serve, settle_disk, wait_listening};

/// A server under test, as a child process.
pub(crate) struct Contender {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    url: String,
    /// Its database, deleted when it stops.
    db: PathBuf,
    /// More instances of it on the same store: the load is spread over all of them, round-robin.
    pub(crate) others: Vec<Contender>,
}

impl Contender {
    /// Spawns `command`, a server listening on `port` once started, whose orders go to
    /// `/shorts/echo`; its database file `db` (if it has one) is deleted when it stops.
    pub(crate) async fn spawn(name: &'static str, command: Command, port: u16, db: PathBuf) -> Self {
        Self::spawn_with_log(name, command, port, db, Stdio::null()).await
    }

    /// [`Contender::spawn`], its standard error (its log) going to `log`.
    pub(crate) async fn spawn_with_log(
        name: &'static str,
        mut command: Command,
        port: u16,
        db: PathBuf,
        log: Stdio,
    ) -> Self {
        settle_disk();
        let child = command
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name}: {e}"));
        wait_listening(port, name).await;
        Contender {
            name,
            child,
            url: format!("http://127.0.0.1:{port}/shorts/echo"),
            db,
            others: Vec::new(),
        }
    }

    /// Where its webhooks go, its own instance's first.
    fn urls(&self) -> Vec<&str> {
        std::iter::once(self.url.as_str())
            .chain(self.others.iter().map(|other| other.url.as_str()))
            .collect()
    }
}

impl Contender {
    /// Stops it and keeps its database file.
    pub(crate) fn stop_keeping_db(mut self) {
        self.db = PathBuf::new();
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_database(&self.db);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ShortsSqlite,
    ShortsMemory,
    /// shorts (memory) with the admin listener off, and with it the recording of metrics.
    ShortsMemoryNoMetrics,
    B1,
    B0,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::ShortsSqlite => "shorts (SQLite)",
            Kind::ShortsMemory => "shorts (memory)",
            Kind::ShortsMemoryNoMetrics => "shorts (memory, metrics off)",
            Kind::B1 => "B1 (axum + SQLite, commit per request)",
            Kind::B0 => "B0 (axum, not durable)",
        }
    }
}

async fn start(kind: Kind, platform: &MockPlatform, dir: &Path) -> Contender {
    let port = free_port();
    let db = dir.join(format!(
        "{}-{port}.db",
        kind.name().split(' ').next().unwrap_or("db")
    ));
    Contender::spawn(kind.name(), command(kind, platform, port, &db), port, db).await
}

/// The command that starts a contender on `port`, with its database (if it has one) at `db`.
pub(crate) fn command(kind: Kind, platform: &MockPlatform, port: u16, db: &Path) -> Command {
    match kind {
        Kind::ShortsSqlite => serve(platform, port, &format!("sqlite://{}", db.display())),
        Kind::ShortsMemory => serve(platform, port, "memory"),
        Kind::ShortsMemoryNoMetrics => {
            let mut command = serve(platform, port, "memory");
            command.env("SHORTS_ADMIN_BIND", "off");
            command
        }
        Kind::B1 | Kind::B0 => {
            let own = std::env::current_exe().expect("own path");
            let mut command = Command::new(own.with_file_name("hand-written-short"));
            if kind == Kind::B1 {
                command.arg("b1").arg(db);
            } else {
                command.arg("b0");
            }
            command
                .env("BIND", format!("127.0.0.1:{port}"))
                .env("CALLBACK_URL", platform.callback_url())
                .env("CALLBACK_SECRET", platform.secret())
                .env("API_KEY", MockPlatform::WEBHOOK_KEY)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            command
        }
    }
}

/// shorts (SQLite), over HTTPS with `tls`: the URL names `localhost`, which the client resolves to
/// 127.0.0.1.
async fn start_shorts(
    name: &'static str,
    platform: &MockPlatform,
    dir: &Path,
    tls: Option<&Certificate>,
) -> (Contender, u16) {
    let port = free_port();
    let db = dir.join(format!("tls-{port}.db"));
    let mut command = serve(platform, port, &format!("sqlite://{}", db.display()));
    let scheme = match tls {
        Some(certificate) => {
            command
                .env("SHORTS_TLS_CERT", &certificate.cert)
                .env("SHORTS_TLS_KEY", &certificate.key);
            "https"
        }
        None => "http",
    };
    settle_disk();
    let child = command
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {name}: {e}"));
    wait_listening(port, name).await;
    let contender = Contender {
        name,
        child,
        url: format!("{scheme}://localhost:{port}/shorts/echo"),
        db,
        others: Vec::new(),
    };
    (contender, port)
}

pub(crate) fn body(platform: &MockPlatform) -> impl Fn(&str) -> String + use<> {
    let callback_url = platform.callback_url();
    move |order_id: &str| {
        json!({
            "short_id": "abc123",
            "order_id": order_id,
            "inputs": {"text": "hello"},
            "callback_url": callback_url,
            "ts": 1_736_032_405
        })
        .to_string()
    }
}

/// Waits (bounded) until the platform holds `count` callbacks, so runs do not overlap.
pub(crate) async fn drain(platform: &MockPlatform, count: usize) {
    let _ = platform.wait_for_count(count, Duration::from_secs(60)).await;
}

pub(crate) struct Settings {
    pub(crate) trial: Duration,
    /// Trials per intake step: the majority decides.
    pub(crate) trials: usize,
    pub(crate) fixed: Duration,
    /// End-to-end runs per contender.
    pub(crate) rounds: usize,
    pub(crate) in_flight: usize,
}

/// The cost of metrics alone: the intake of shorts (memory) with metrics on and off, then their
/// server CPU per order at a fixed rate (`shorts-bench metrics`), the rows `service` prints too.
pub(crate) async fn metrics(quick: bool) -> ExitCode {
    let settings = settings(quick);
    let dir = std::env::temp_dir().join(format!("shorts-bench-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let client = load::client();
    println!("machine: {}", machine());
    let mut retired = Vec::new();
    let mut rates = Vec::new();
    for kind in [Kind::ShortsMemory, Kind::ShortsMemoryNoMetrics] {
        rates.push(intake_of(kind, &client, &dir, &settings, quick, &mut retired).await);
    }
    println!();
    println!("| figure | shorts (memory) | | ratio | | | target |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| intake, metrics on / off | {:.0} / {:.0} | | {:.2}x | | | >= 0.97x |",
        rates[0],
        rates[1],
        rates[0] / rates[1]
    );
    println!(
        "{}",
        metrics_cost(&client, &dir, &settings, quick, &mut retired).await
    );
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}

pub(crate) fn settings(quick: bool) -> Settings {
    if quick {
        Settings {
            trial: Duration::from_millis(300),
            trials: 1,
            fixed: Duration::from_millis(300),
            rounds: 1,
            in_flight: 200,
        }
    } else {
        Settings {
            trial: Duration::from_secs(3),
            trials: 3,
            fixed: Duration::from_secs(5),
            rounds: 3,
            in_flight: 10_000,
        }
    }
}

pub(crate) async fn run(quick: bool) -> ExitCode {
    let settings = settings(quick);
    ensure_baselines();
    let dir = std::env::temp_dir().join(format!("shorts-bench-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let client = load::client();

    println!("machine: {}", machine());
    println!(
        "fsync rate: {:.0} per second (4 KiB write + fdatasync, {})",
        fsync_rate(&dir),
        dir.display()
    );
    println!();

    // Every mock platform is kept until the end. Freeing one's record of callbacks (millions of
    // small allocations after an intake search) leaves glibc's allocator sorting free chunks in
    // every `malloc` of this process for seconds afterwards: measured, the load generator then
    // took a whole core at 121/s and the next contender's webhooks waited up to 300 ms for it.
    let mut retired = Vec::new();

    // Intake: the highest rate with p99 <= 50 ms and no errors.
    let mut intake = Vec::new();
    for kind in [
        Kind::ShortsSqlite,
        Kind::ShortsMemory,
        Kind::ShortsMemoryNoMetrics,
        Kind::B1,
        Kind::B0,
    ] {
        intake.push((
            kind,
            intake_of(kind, &client, &dir, &settings, quick, &mut retired).await,
        ));
    }
    let rate_of = |kind| intake.iter().find(|(k, _)| *k == kind).map_or(0.0, |(_, r)| *r);
    let b1 = rate_of(Kind::B1);

    println!();
    println!("| figure | shorts (SQLite) | B1 | ratio | B0 | ratio | target |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let shorts = rate_of(Kind::ShortsSqlite);
    println!(
        "| intake, webhooks/s at p99 <= 50 ms | {shorts:.0} | {b1:.0} | {:.2}x | {:.0} | {:.2}x | >= 3x B1, >= 0.7x B0 |",
        shorts / b1,
        rate_of(Kind::B0),
        shorts / rate_of(Kind::B0)
    );
    println!(
        "| intake, shorts (memory) | {:.0} | | {:.2}x | | {:.2}x | |",
        rate_of(Kind::ShortsMemory),
        rate_of(Kind::ShortsMemory) / b1,
        rate_of(Kind::ShortsMemory) / rate_of(Kind::B0)
    );
    println!(
        "| intake, shorts (memory), metrics off | {:.0} | | | | | metrics on >= 0.97x off: {:.2}x |",
        rate_of(Kind::ShortsMemoryNoMetrics),
        rate_of(Kind::ShortsMemory) / rate_of(Kind::ShortsMemoryNoMetrics)
    );
    println!(
        "{}",
        metrics_cost(&client, &dir, &settings, quick, &mut retired).await
    );

    // HTTPS: intake with keep-alive connections, and the cost of a connection's handshake.
    let certificate = Certificate::new(&dir);
    let platform = MockPlatform::start().await.expect("mock");
    let (contender, port) = start_shorts("shorts (SQLite, HTTPS)", &platform, &dir, Some(&certificate)).await;
    let tls_client = certificate.client(port, 4096);
    let (tls_rate, run) = max_rate(&tls_client, &contender, &platform, &settings, quick).await;
    println!(
        "| intake over HTTPS (keep-alive connections), webhooks/s at p99 <= 50 ms (p99 {:.1} ms) | {tls_rate:.0} | | {:.2}x plain HTTP | | | |",
        run.p(0.99),
        tls_rate / shorts
    );
    drop(contender);
    retired.push(platform);
    let handshakes = handshake_cost(&certificate, &dir, if quick { 30 } else { 1000 }).await;
    println!("{handshakes}");

    // Latency at fixed shares of B1's maximum, and end to end at half of it.
    // Printed under the table: each stalled run's timeline, then each end-to-end run's p99.
    let mut after_table = Vec::new();
    for share in [0.25, 0.5, 0.75] {
        let rate = (b1 * share).max(10.0);
        let mut cells = Vec::new();
        for kind in [Kind::ShortsSqlite, Kind::B1, Kind::B0] {
            let platform = MockPlatform::start().await.expect("mock");
            let contender = start(kind, &platform, &dir).await;
            let before = platform.callback_count();
            let run = warm_fixed(&client, &contender, &platform, rate, settings.fixed).await;
            drain(&platform, before + run.ok as usize).await;
            if run.p(0.99) > STALL_MS {
                after_table.push(timeline(&contender, rate, &run));
            }
            cells.push(format!(
                "{:.1} / {:.1} / {:.1}",
                run.p(0.5),
                run.p(0.99),
                run.p(0.999)
            ));
            drop(contender);
            retired.push(platform);
        }
        println!(
            "| webhook latency p50 / p99 / p99.9 ms at {rate:.0}/s ({:.0} % of B1's max) | {} | {} | | {} | | |",
            share * 100.0,
            cells[0],
            cells[1],
            cells[2]
        );
    }
    // End to end at half of B1's maximum, with the server's CPU time per order: the contenders
    // take turns, and each figure is the median of their runs, so one disturbed run on this shared
    // machine decides nothing.
    let rate = (b1 * 0.5).max(10.0);
    let mut contenders = Vec::new();
    for kind in [Kind::ShortsSqlite, Kind::B1, Kind::B0, Kind::ShortsMemory] {
        let platform = MockPlatform::start().await.expect("mock");
        let contender = start(kind, &platform, &dir).await;
        contenders.push((platform, contender, Vec::new()));
    }
    for _ in 0..settings.rounds {
        for (platform, contender, rounds) in &mut contenders {
            fixed(&client, contender, platform, rate, settings.fixed / 10).await;
            let pid = contender.child.id();
            let before = proc::Usage::of(pid).unwrap_or_default();
            let run = fixed(&client, contender, platform, rate, settings.fixed).await;
            let used = proc::Usage::of(pid).unwrap_or_default();
            let cpu = used.per(&before, u32::try_from(run.ok.max(1)).unwrap_or(u32::MAX));
            let (p50, p99) = end_to_end(platform, &run);
            rounds.push(Round { p50, p99, cpu });
        }
    }
    let medians: Vec<Round> = contenders
        .iter()
        .map(|(_, contender, rounds)| {
            let p99s: Vec<String> = rounds.iter().map(|r| format!("{:.1}", r.p99)).collect();
            after_table.push(format!(
                "end to end p99 of each run, {}: {} ms",
                contender.name,
                p99s.join(" / ")
            ));
            Round::median(rounds)
        })
        .collect();
    for (platform, contender, _) in contenders {
        drop(contender);
        retired.push(platform);
    }
    let [shorts, b1_run, b0_run, memory_run] = &medians[..] else {
        unreachable!("four contenders")
    };
    println!(
        "| end to end p50 / p99 ms at {rate:.0}/s (webhook sent -> callback received; median of {} runs) | {:.1} / {:.1} | {:.1} / {:.1} | {:.3}x (p99) | {:.1} / {:.1} | | p99 <= 1.25x B1 |",
        settings.rounds,
        shorts.p50,
        shorts.p99,
        b1_run.p50,
        b1_run.p99,
        shorts.p99 / b1_run.p99,
        b0_run.p50,
        b0_run.p99
    );
    let cpu = |round: &Round| {
        format!(
            "{:.0} (user {:.0}, system {:.0})",
            round.cpu.cpu() * 1e6,
            round.cpu.user * 1e6,
            round.cpu.system * 1e6
        )
    };
    println!(
        "| server CPU per order, µs, in those runs | {} | {} | {:.2}x | {} | {:.2}x | <= 2x B0 |",
        cpu(shorts),
        cpu(b1_run),
        shorts.cpu.cpu() / b1_run.cpu.cpu(),
        cpu(b0_run),
        shorts.cpu.cpu() / b0_run.cpu.cpu()
    );
    println!(
        "| the same, shorts (memory): end to end p50 / p99 ms; server CPU per order, µs | {:.1} / {:.1}; {} | | | | {:.2}x (CPU) | <= 1.3x B0 |",
        memory_run.p50,
        memory_run.p99,
        cpu(memory_run),
        memory_run.cpu.cpu() / b0_run.cpu.cpu()
    );

    // Memory.
    let platform = MockPlatform::start().await.expect("mock");
    let (idle, loaded) = memory(&platform, settings.in_flight).await;
    let per_order = loaded.saturating_sub(idle) as f64 / settings.in_flight as f64;
    println!(
        "| RSS idle / with {} in-flight sleeping orders | {:.1} MiB / {:.1} MiB ({:.1} KiB per order) | | | | | <= 64 KiB per order |",
        settings.in_flight,
        idle as f64 / 1_048_576.0,
        loaded as f64 / 1_048_576.0,
        per_order / 1024.0
    );
    println!();
    for line in after_table {
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Freed when the process exits, so that the file benchmarks after these do not meet the
    // allocator's sorting either.
    std::mem::forget(retired);
    ExitCode::SUCCESS
}

/// One contender at one fixed rate, with its timeline: `probe sqlite|memory|memory-no-metrics|b1|b0 RATE [SECONDS]`.
/// For finding out why a rate is or is not sustained.
pub(crate) async fn probe(args: &[String]) -> ExitCode {
    let kind = match args.first().map(String::as_str) {
        Some("sqlite") => Kind::ShortsSqlite,
        Some("memory") => Kind::ShortsMemory,
        Some("memory-no-metrics") => Kind::ShortsMemoryNoMetrics,
        Some("b1") => Kind::B1,
        Some("b0") => Kind::B0,
        _ => {
            eprintln!("usage: shorts-bench probe sqlite|memory|memory-no-metrics|b1|b0 RATE [SECONDS]");
            return ExitCode::from(2);
        }
    };
    let number = |at: usize, default: f64| {
        args.get(at)
            .and_then(|a| a.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let (rate, seconds) = (number(1, 1000.0).clamp(1.0, 100_000.0), number(2, 5.0));
    ensure_baselines();
    let dir = std::env::temp_dir().join(format!("shorts-bench-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let client = load::client();
    let platform = MockPlatform::start().await.expect("mock");
    let contender = start(kind, &platform, &dir).await;
    let duration = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    let run = warm_fixed(&client, &contender, &platform, rate, duration).await;
    let orders = u32::try_from(run.ok.max(1)).unwrap_or(u32::MAX);
    let cpu = match (run.samples_of_cpu.first(), run.samples_of_cpu.last()) {
        (Some(first), Some(last)) => last.server.per(&first.server, orders),
        _ => proc::Usage::default(),
    };
    println!(
        "{} at {rate:.0}/s: p50 {:.1} ms, p99 {:.1} ms, {:.2} % errors, server CPU {:.0} µs per order (user {:.0}, system {:.0})",
        contender.name,
        run.p(0.5),
        run.p(0.99),
        run.error_share() * 100.0,
        cpu.cpu() * 1e6,
        cpu.user * 1e6,
        cpu.system * 1e6
    );
    println!("{}", timeline(&contender, rate, &run));
    drop(contender);
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}

/// The highest intake rate of `kind`, printed; against a fresh platform, since its record of
/// callbacks grows with every run (kept in `retired`, see `run`).
async fn intake_of(
    kind: Kind,
    client: &reqwest::Client,
    dir: &Path,
    settings: &Settings,
    quick: bool,
    retired: &mut Vec<MockPlatform>,
) -> f64 {
    let platform = MockPlatform::start().await.expect("mock");
    let contender = start(kind, &platform, dir).await;
    let (rate, run) = max_rate(client, &contender, &platform, settings, quick).await;
    println!(
        "intake {:<42} {rate:>7.0} webhooks/s (p99 {:.1} ms)",
        contender.name,
        run.p(0.99)
    );
    drop(contender);
    retired.push(platform);
    rate
}

/// The cost of recording metrics: shorts (memory) with metrics on (the default) and off, taking
/// turns at one fixed rate; each figure is the median of its runs of the server's CPU time per
/// order, which the intake search (held by the machine's CPU) cannot resolve to a few percent.
async fn metrics_cost(
    client: &reqwest::Client,
    dir: &Path,
    settings: &Settings,
    quick: bool,
    retired: &mut Vec<MockPlatform>,
) -> String {
    let rate = if quick { 200.0 } else { 2000.0 };
    let rounds = if quick { 1 } else { 5 };
    let mut contenders = Vec::new();
    for kind in [Kind::ShortsMemory, Kind::ShortsMemoryNoMetrics] {
        let platform = MockPlatform::start().await.expect("mock");
        let contender = start(kind, &platform, dir).await;
        contenders.push((platform, contender, Vec::new()));
    }
    for _ in 0..rounds {
        for (platform, contender, cpus) in &mut contenders {
            fixed(client, contender, platform, rate, settings.fixed / 10).await;
            let pid = contender.child.id();
            let before = proc::Usage::of(pid).unwrap_or_default();
            let run = fixed(client, contender, platform, rate, settings.fixed).await;
            let used = proc::Usage::of(pid).unwrap_or_default();
            let orders = u32::try_from(run.ok.max(1)).unwrap_or(u32::MAX);
            cpus.push(used.per(&before, orders).cpu() * 1e6);
        }
    }
    let mut medians = Vec::new();
    for (platform, contender, mut cpus) in contenders {
        cpus.sort_by(f64::total_cmp);
        medians.push(cpus[cpus.len() / 2]);
        drop(contender);
        retired.push(platform);
    }
    let (on, off) = (medians[0], medians[1]);
    format!(
        "| server CPU per order at {rate:.0}/s, shorts (memory), metrics on / off (median of {rounds} turns each) | {on:.0} / {off:.0} µs | | {:.3}x | | | <= 1.03x |",
        on / off
    )
}

/// Doubles the rate until a step is not sustained, then bisects.
pub(crate) async fn max_rate(
    client: &reqwest::Client,
    contender: &Contender,
    platform: &MockPlatform,
    settings: &Settings,
    quick: bool,
) -> (f64, Run) {
    let mut low = 0.0;
    let mut best: Option<Run> = None;
    let mut rate = 250.0;
    let mut high = None;
    // The smoke run only checks that the machinery works.
    let cap = if quick { 1000.0 } else { 64_000.0 };
    while rate <= cap {
        match sustained(client, contender, platform, rate, settings).await {
            Some(run) => {
                low = rate;
                best = Some(run);
                rate *= 2.0;
            }
            None => {
                high = Some(rate);
                break;
            }
        }
    }
    if let Some(mut high) = high {
        for _ in 0..if quick { 0 } else { 4 } {
            let mid = (low + high) / 2.0;
            match sustained(client, contender, platform, mid, settings).await {
                Some(run) => {
                    low = mid;
                    best = Some(run);
                }
                None => high = mid,
            }
        }
    }
    let run = match best {
        Some(run) => run,
        None => fixed(client, contender, platform, 10.0, settings.trial).await,
    };
    (low, run)
}

/// Whether `rate` is sustained: p99 <= 50 ms and no error in the majority of `settings.trials`
/// trials (stopping once a majority is reached). Returns a passing trial when it is.
async fn sustained(
    client: &reqwest::Client,
    contender: &Contender,
    platform: &MockPlatform,
    rate: f64,
    settings: &Settings,
) -> Option<Run> {
    let majority = settings.trials / 2 + 1;
    let mut failed = 0;
    let mut passed = Vec::new();
    while passed.len() < majority && failed < majority {
        let run = fixed(client, contender, platform, rate, settings.trial).await;
        if run.p(0.99) <= 50.0 && run.error_share() == 0.0 {
            passed.push(run);
        } else {
            failed += 1;
        }
    }
    if passed.len() >= majority {
        passed.pop()
    } else {
        None
    }
}

/// One end-to-end run of a contender.
struct Round {
    /// Webhook sent (intended) to callback received, ms.
    p50: f64,
    p99: f64,
    /// The server's CPU time per order.
    cpu: proc::Usage,
}

impl Round {
    /// The medians over `rounds`: of p50, of p99, and the CPU time of the run whose total is the
    /// median (so that its user and system times are one run's, and add up to its total).
    fn median(rounds: &[Round]) -> Round {
        let mut by_cpu: Vec<&Round> = rounds.iter().collect();
        by_cpu.sort_by(|a, b| a.cpu.cpu().total_cmp(&b.cpu.cpu()));
        Round {
            p50: median(rounds.iter().map(|r| r.p50)),
            p99: median(rounds.iter().map(|r| r.p99)),
            cpu: by_cpu
                .get(by_cpu.len() / 2)
                .map_or_else(proc::Usage::default, |r| r.cpu),
        }
    }
}

/// The median of some figures (the upper one of an even count); zero for none.
fn median(figures: impl Iterator<Item = f64>) -> f64 {
    let mut figures: Vec<f64> = figures.collect();
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(0.0)
}

/// A fixed-rate run after a warm-up of a tenth of its length at the same rate (connections open,
/// database file created, caches warm).
pub(crate) async fn warm_fixed(
    client: &reqwest::Client,
    contender: &Contender,
    platform: &MockPlatform,
    rate: f64,
    duration: Duration,
) -> Run {
    fixed(client, contender, platform, rate, duration / 10).await;
    let sampler = proc::Sampler::start(contender.child.id(), Some(wal_of(&contender.db)));
    let mut run = fixed(client, contender, platform, rate, duration).await;
    run.samples_of_cpu = sampler.stop();
    run
}

/// A fixed-rate run whose p99 is over this (ms) prints its timeline.
const STALL_MS: f64 = 100.0;

fn wal_of(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// For each 100 ms of a run, the largest webhook latency of the requests
/// meant to leave in it, with the CPU the server and this process used in it and the server's WAL
/// size: whether the server, the load generator or the disk held the run up.
fn timeline(contender: &Contender, rate: f64, run: &Run) -> String {
    let step = Duration::from_millis(100);
    let mut lines = vec![format!(
        "  {} at {rate:.0}/s (p99 {:.0} ms); each 100 ms: worst latency ms, server CPU %, this process's CPU %, WAL KiB",
        contender.name,
        run.p(0.99)
    )];
    let readings = &run.samples_of_cpu;
    let mut line = Vec::new();
    for (slot, worst) in run.timeline(step).iter().enumerate() {
        let at = run.start.into_std() + step * u32::try_from(slot).unwrap_or(u32::MAX);
        // The readings around this slot: the last before it and the first after it.
        let before = readings.iter().rev().find(|r| r.at <= at);
        let after = readings.iter().find(|r| r.at >= at + step);
        let cell = match (before, after) {
            (Some(b), Some(a)) => {
                let seconds = a.at.duration_since(b.at).as_secs_f64().max(1e-3);
                format!(
                    "{worst:.0}/{:.0}/{:.0}/{}",
                    (a.server.cpu() - b.server.cpu()) / seconds * 100.0,
                    (a.bench.cpu() - b.bench.cpu()) / seconds * 100.0,
                    a.wal.map_or_else(|| "-".to_owned(), |w| (w / 1024).to_string())
                )
            }
            _ => format!("{worst:.0}"),
        };
        line.push(cell);
        if line.len() == 10 {
            lines.push(format!(
                "  {:>4.1} s: {}",
                (slot + 1 - 10) as f64 / 10.0,
                line.join("  ")
            ));
            line.clear();
        }
    }
    if !line.is_empty() {
        lines.push(format!("  rest: {}", line.join("  ")));
    }
    lines.join("\n")
}

pub(crate) async fn fixed(
    client: &reqwest::Client,
    contender: &Contender,
    platform: &MockPlatform,
    rate: f64,
    duration: Duration,
) -> Run {
    let prefix = format!("o{}", fastrand::u64(..));
    let before = platform.callback_count();
    let run = load::open_loop(
        client,
        &contender.urls(),
        &prefix,
        rate,
        duration,
        None,
        body(platform),
    )
    .await;
    // Let the callbacks of this run arrive before the next starts.
    drain(platform, before + run.ok as usize).await;
    run
}

/// p50 and p99 of webhook-sent (intended) to callback-received, in ms.
pub(crate) fn end_to_end(platform: &MockPlatform, run: &Run) -> (f64, f64) {
    let mut histogram = load::histogram();
    for callback in platform.callbacks() {
        if let Some(intended) = run.intended.get(callback.order_id()) {
            let latency = callback
                .received_at
                .saturating_duration_since(intended.into_std());
            let _ = histogram.record(
                u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .clamp(1, 120_000_000),
            );
        }
    }
    (
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

/// Idle RSS, and RSS with `count` orders whose handlers sleep.
async fn memory(platform: &MockPlatform, count: usize) -> (u64, u64) {
    let server = Server::start(platform, &[("RUST_LOG", "error")]).await;
    let client = load::client();
    let url = server.url("/shorts/sleepy");
    let warm = platform.webhook_body("warm-up", json!({"seconds": 0}));
    let _ = platform.send_webhook(&url, &warm).await;
    let _ = platform.wait_for("warm-up", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.pid();
    let idle = proc::memory(pid, "VmRSS").unwrap_or(0);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut sends = Vec::with_capacity(count);
    for i in 0..count {
        let permit = std::sync::Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("permit");
        let body = platform
            .webhook_body(&format!("sleepy-{i}"), json!({"seconds": 600}))
            .to_string();
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-api-key", MockPlatform::WEBHOOK_KEY)
            .body(body);
        sends.push(tokio::spawn(async move {
            let _permit = permit;
            request.send().await.is_ok_and(|r| r.status().is_success())
        }));
    }
    for send in sends {
        assert!(send.await.unwrap_or(false), "an in-flight order was refused");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = proc::memory(pid, "VmRSS").unwrap_or(0);
    (idle, loaded)
}

/// Synchronous 4 KiB writes per second on the benchmark's disk, for 1 s.
fn fsync_rate(dir: &Path) -> f64 {
    use std::io::Write as _;
    let path: PathBuf = dir.join("fsync.probe");
    let mut file = std::fs::File::create(&path).expect("probe");
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut count = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        count += 1;
    }
    let _ = std::fs::remove_file(&path);
    f64::from(count) / started.elapsed().as_secs_f64()
}

/// Set by `--prebuilt`: the caller built the baselines' binary next to this one (the smoke test's
/// `cargo nextest run` does, with the workspace's features), so [`ensure_baselines`] leaves it be.
pub(crate) static PREBUILT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Builds the baselines' binary next to this one, in the same profile (a no-op when it is up to
/// date), unless it is [`PREBUILT`].
pub(crate) fn ensure_baselines() {
    if PREBUILT.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", "hand-written-short"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "the baselines did not build");
}

/// One webhook at a time, each on a new connection, `count` times: to shorts (SQLite) over plain
/// HTTP, over HTTPS with the client resuming its TLS session, and over HTTPS with a new client
/// (a full handshake) each time. A table row: the median time of a webhook and the server's CPU
/// per webhook, and what TLS adds to them per connection.
async fn handshake_cost(certificate: &Certificate, dir: &Path, count: usize) -> String {
    let platform = MockPlatform::start().await.expect("mock");
    let (plain, plain_port) = start_shorts("shorts (SQLite)", &platform, dir, None).await;
    let (tls, tls_port) = start_shorts("shorts (SQLite, HTTPS)", &platform, dir, Some(certificate)).await;
    let plain_client = https::plain_client(plain_port, 0);
    let tls_client = certificate.client(tls_port, 0);
    let warm = count / 10 + 1;
    let (plain_id, tls_id) = (plain.child.id(), tls.child.id());
    let measure = |id, url: &str, port, tls: Option<&Certificate>, client: Option<&reqwest::Client>, n| {
        let url = url.to_owned();
        let platform = &platform;
        let client = client.cloned();
        let tls = tls.map(|_| certificate);
        async move { https::fresh_connections(id, &url, port, platform, tls, client.as_ref(), n).await }
    };
    // Warm-up: connections, the databases and the TLS session caches.
    measure(plain_id, &plain.url, plain_port, None, Some(&plain_client), warm).await;
    measure(
        tls_id,
        &tls.url,
        tls_port,
        Some(certificate),
        Some(&tls_client),
        warm,
    )
    .await;
    let http = measure(plain_id, &plain.url, plain_port, None, Some(&plain_client), count).await;
    let resumed = measure(
        tls_id,
        &tls.url,
        tls_port,
        Some(certificate),
        Some(&tls_client),
        count,
    )
    .await;
    let full = measure(tls_id, &tls.url, tls_port, Some(certificate), None, count).await;
    drain(&platform, 2 * warm + 3 * count).await;
    drop(plain);
    drop(tls);
    std::mem::forget(platform);
    format!(
        "| a new connection per webhook ({count} one at a time), median µs / server CPU µs: plain HTTP; HTTPS, TLS session resumed; HTTPS, full handshake | {:.0} / {:.0}; {:.0} / {:.0}; {:.0} / {:.0} | | TLS adds {:+.0} µs / {:+.0} µs CPU per connection resumed, {:+.0} µs / {:+.0} µs CPU full | | | |",
        http.median,
        http.cpu,
        resumed.median,
        resumed.cpu,
        full.median,
        full.cpu,
        resumed.median - http.median,
        resumed.cpu - http.cpu,
        full.median - http.median,
        full.cpu - http.cpu,
    )
}
