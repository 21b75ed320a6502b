//! Instructions per order under `valgrind --tool=callgrind`: a count that, unlike CPU time, does
//! not move with what else the machine is doing. Each contender runs under callgrind and takes
//! lone orders, one after another (each webhook sent once the previous callback arrived); the
//! counters are zeroed after a warm-up and dumped after the batch, and the dump is split by
//! component from the functions' own costs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shorts_runtime::testing::MockPlatform;

use crate::free_port;
use crate::service::{self, Kind};

/// `shorts-bench callgrind [--orders N] [--only NAME] [--keep]`: instructions per lone order for
/// shorts (SQLite), shorts (memory), B1 and B0, with where they go; `--only` measures the
/// contenders whose name holds NAME (in any case), `--keep` keeps the dumps.
pub(crate) async fn run(args: &[String]) -> ExitCode {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let batch = Batch {
        orders: value("--orders").map_or(200, |n| n.parse().expect("--orders N")),
        warm_up: 30,
    };
    measure_all(batch, value("--only"), args.iter().any(|a| a == "--keep")).await;
    ExitCode::SUCCESS
}

/// The callgrind table of `shorts-bench all`: 200 orders, or a few with `--quick` (a debug build
/// under callgrind takes seconds per order).
pub(crate) async fn in_all(quick: bool) {
    let batch = if quick {
        Batch {
            orders: 3,
            warm_up: 2,
        }
    } else {
        Batch {
            orders: 200,
            warm_up: 30,
        }
    };
    measure_all(batch, None, false).await;
}

/// How many lone orders each contender takes.
#[derive(Clone, Copy)]
struct Batch {
    /// Counted.
    orders: usize,
    /// Before the counters are zeroed: connections open, caches and the database warm.
    warm_up: usize,
}

async fn measure_all(batch: Batch, only: Option<&str>, keep: bool) {
    let Batch { orders, warm_up } = batch;
    let dir = std::env::temp_dir().join(format!("shorts-bench-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    service::ensure_baselines();
    println!("machine: {}", crate::machine());
    println!(
        "callgrind: {orders} lone orders per contender (each webhook sent after the previous callback arrived), after {warm_up} to warm up"
    );
    println!();
    println!("| contender | instructions per order | of which: idle background over the same time |");
    println!("| --- | --- | --- |");
    let mut profiles = Vec::new();
    let kinds = [Kind::ShortsSqlite, Kind::ShortsMemory, Kind::B1, Kind::B0];
    for kind in kinds
        .into_iter()
        .filter(|k| only.is_none_or(|o| k.name().to_lowercase().contains(&o.to_lowercase())))
    {
        let measured = measure(kind, batch, &dir).await;
        println!(
            "| {} | {} | {} |",
            kind.name(),
            thousands(measured.per_order),
            thousands(measured.idle_per_order)
        );
        profiles.push((kind, measured.dump));
    }
    for (kind, dump) in profiles {
        println!();
        println!(
            "{}: instructions per order by component (each function's own, by its source file)",
            kind.name()
        );
        for (component, instructions) in components(&dump) {
            println!("  {:>12}  {component}", thousands(instructions / orders as u64));
        }
    }
    if keep {
        println!();
        println!("dumps kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// What one contender measured.
struct Measured {
    /// Instructions per order over the batch.
    per_order: u64,
    /// Instructions the contender spent idle over as long as the batch took, per order of it.
    idle_per_order: u64,
    /// The batch's dump.
    dump: PathBuf,
}

async fn measure(kind: Kind, batch: Batch, dir: &Path) -> Measured {
    let Batch { orders, warm_up } = batch;
    let platform = MockPlatform::start().await.expect("mock platform");
    let port = free_port();
    let db = dir.join(format!(
        "{}-{port}.db",
        kind.name().split(' ').next().unwrap_or("db")
    ));
    let inner = service::command(kind, &platform, port, &db);
    let out = dir.join(format!("{port}.callgrind"));
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut child = command.spawn().expect("valgrind (apt-get install valgrind)");
    let pid = child.id();
    wait_listening(port).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/shorts/echo");
    let body = service::body(&platform);
    let prefix = format!("c{port}");
    lone_orders(&client, &url, &platform, &body, &format!("{prefix}w"), warm_up).await;
    control(pid, "-z");
    let started = Instant::now();
    lone_orders(&client, &url, &platform, &body, &prefix, orders).await;
    let took = started.elapsed();
    control(pid, "-d");
    let batch = total(&out, 1);
    control(pid, "-z");
    tokio::time::sleep(took).await;
    control(pid, "-d");
    let idle = total(&out, 2);
    let _ = child.kill();
    let _ = child.wait();
    crate::remove_database(&db);
    let orders = orders as u64;
    Measured {
        per_order: batch / orders,
        idle_per_order: idle / orders,
        dump: dump_path(&out, 1),
    }
}

/// Sends `count` webhooks one at a time, each after the callback of the one before arrived.
async fn lone_orders(
    client: &reqwest::Client,
    url: &str,
    platform: &MockPlatform,
    body: &impl Fn(&str) -> String,
    prefix: &str,
    count: usize,
) {
    for i in 0..count {
        let before = platform.callback_count();
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-api-key", MockPlatform::WEBHOOK_KEY)
            .body(body(&format!("{prefix}-{i}")))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("webhook");
        assert!(
            response.status().is_success(),
            "webhook answered {}",
            response.status()
        );
        assert!(
            platform
                .wait_for_count(before + 1, Duration::from_secs(60))
                .await
                .is_some(),
            "no callback within 60 s"
        );
    }
}

/// Runs `callgrind_control OPTION PID` (zero the counters, or dump them).
fn control(pid: u32, option: &str) {
    let status = Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control");
    assert!(status.success(), "callgrind_control {option} {pid} failed");
}

/// The file of the `n`th dump of a run whose output file is `out`.
fn dump_path(out: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", out.display()))
}

/// The instructions of the `n`th dump (its `totals:` line), waiting (bounded) for it to be
/// written.
fn total(out: &Path, n: u32) -> u64 {
    let path = dump_path(out, n);
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some(line) = text
                .lines()
                .find(|l| l.starts_with("totals:") || l.starts_with("summary:"))
        {
            return line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .expect("a count after totals:");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("callgrind wrote no dump at {}", path.display());
}

/// Waits (at most 120 s: valgrind starts slowly) until something listens on `port`.
async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the contender did not start under valgrind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dump's own costs (each function's, without what it calls) summed by component, largest
/// first. Read from the dump itself: in each function's block a cost line is its own, except the
/// line after a `calls=` line, which is the inclusive cost of that call.
fn components(dump: &Path) -> Vec<(&'static str, u64)> {
    let text = std::fs::read_to_string(dump).expect("the dump");
    // Names are given once, with their number, then referred to by the number alone.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut own: HashMap<(String, String), u64> = HashMap::new();
    let (mut function, mut function_file, mut file) = (String::new(), String::new(), String::new());
    let mut after_call = false;
    for line in text.lines() {
        if let Some((key, rest)) = line.split_once('=')
            && matches!(key, "fn" | "cfn" | "fl" | "fi" | "fe" | "cfi" | "cfl")
        {
            let (id, name) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = if key.ends_with("fn") { "fn" } else { "fl" };
            if !name.is_empty() {
                names.insert(format!("{kind}{id}"), name.to_owned());
            }
            // `fi` and `fe` name the file of the (inlined) code whose costs follow, until the
            // next function, whose code is in its `fl` file.
            match key {
                "fn" => {
                    function = format!("fn{id}");
                    file.clone_from(&function_file);
                }
                "fl" => {
                    function_file = format!("fl{id}");
                    file.clone_from(&function_file);
                }
                "fi" | "fe" => file = format!("fl{id}"),
                _ => {}
            }
            continue;
        }
        if line.starts_with("calls=") {
            after_call = true;
            continue;
        }
        let Some(first) = line.chars().next() else {
            continue;
        };
        if !(first.is_ascii_digit() || matches!(first, '+' | '-' | '*')) {
            continue;
        }
        if std::mem::take(&mut after_call) {
            continue;
        }
        if let Some(cost) = line.split_whitespace().nth(1).and_then(|c| c.parse::<u64>().ok()) {
            *own.entry((function.clone(), file.clone())).or_default() += cost;
        }
    }
    let mut sums: Vec<(&'static str, u64)> = Vec::new();
    for ((function, file), cost) in own {
        let name = |key: &str| names.get(key).map_or("", String::as_str);
        let component = component(name(&function), name(&file));
        match sums.iter_mut().find(|(c, _)| *c == component) {
            Some((_, sum)) => *sum += cost,
            None => sums.push((component, cost)),
        }
    }
    sums.sort_by_key(|(_, cost)| std::cmp::Reverse(*cost));
    sums
}

/// The component a function belongs to, from its name and its source file.
fn component(function: &str, file: &str) -> &'static str {
    const BY_FILE: [(&str, &str); 13] = [
        (
            "SQLite (C: executing statements, B-trees, WAL, commits)",
            "sqlite3.c",
        ),
        ("sqlx", "/sqlx-"),
        ("hyper, h2, http, httparse", "/hyper-"),
        ("reqwest", "/reqwest-"),
        ("axum, tower", "/axum"),
        ("tokio, mio", "/tokio-"),
        ("serde, serde_json", "/serde"),
        ("tracing", "/tracing"),
        ("shorts-runtime", "shorts-runtime/"),
        ("the short and the bench's servers", "bench/"),
        ("glibc: malloc and free", "/malloc/"),
        ("glibc: memcpy, memset, memcmp", "/string/"),
        ("glibc: threads, mutexes, system calls", "/nptl/"),
    ];
    const BY_NAME: [(&str, &str); 9] = [
        ("hyper, h2, http, httparse", "hyper::"),
        ("tokio, mio", "tokio::"),
        ("sqlx", "sqlx_"),
        ("shorts-runtime", "shorts_runtime::"),
        ("serde, serde_json", "serde"),
        ("tracing", "tracing"),
        (
            "futures, bytes, url, hashbrown and other crates",
            "/index.crates.io-",
        ),
        ("Rust standard library", "/rustc/"),
        ("glibc: threads, mutexes, system calls", "libc.so"),
    ];
    BY_FILE
        .iter()
        .find(|(_, needle)| file.contains(needle))
        .or_else(|| {
            BY_NAME
                .iter()
                .find(|(_, needle)| function.contains(needle) || file.contains(needle))
        })
        .map_or("other (libgcc, the dynamic loader)", |(name, _)| *name)
}

/// A count with thousands separators.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_functions_own_cost_leaves_out_what_it_calls() {
        let dump = "events: Ir\n\
                    fl=(1) /src/sqlite3/sqlite3.c\n\
                    fn=(1) sqlite3VdbeExec\n\
                    10 20\n\
                    cfl=(2) /registry/tokio-1.54.1/src/runtime.rs\n\
                    cfn=(2) tokio::runtime::run\n\
                    calls=1 5\n\
                    12 1000\n\
                    +1 10\n\
                    fi=(3) /rustc/0123/library/core/src/ptr.rs\n\
                    * 7\n\
                    fl=(2)\n\
                    fn=(2)\n\
                    5 5\n\
                    fl=(4) ???\n\
                    fn=(4) 0x0000000000001234\n\
                    1 3\n\
                    fl=(1)\n\
                    fn=(5) sqlite3BtreeInsert\n\
                    fi=(3)\n\
                    2 4\n\
                    fn=(1)\n\
                    3 6\n";
        let path = std::env::temp_dir().join(format!("shorts-bench-dump-{}", std::process::id()));
        std::fs::write(&path, dump).expect("write");
        let sums = components(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            sums,
            vec![
                ("SQLite (C: executing statements, B-trees, WAL, commits)", 36),
                ("Rust standard library", 11),
                ("tokio, mio", 5),
                ("other (libgcc, the dynamic loader)", 3),
            ]
        );
    }

    #[test]
    fn counts_are_written_with_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(890_054), "890,054");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
