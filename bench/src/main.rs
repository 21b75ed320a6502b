//! `shorts-bench`: measures shorts against hand-written baselines on this machine.
//!
//! ```text
//! cargo run --release -p shorts-bench -- all              # the figures of BENCHMARKS.md
//! cargo run --release -p shorts-bench -- all --quick      # a smoke run (tests/smoke.rs)
//! cargo run --release -p shorts-bench -- build            # clean build times (slow)
//! cargo run --release -p shorts-bench -- callgrind [--orders N]   # instructions per lone order
//! cargo run --release -p shorts-bench -- metrics          # intake and CPU per order, metrics on / off
//! cargo run --release -p shorts-bench -- orders [--count N] [--postgres URL]
//!                                                     # the operator's queries and dashboard pages
//!                                                     # on 100,000 orders
//! cargo run --release -p shorts-bench -- scaling [--quick] [--no-purge] [--no-postgres]
//!                                                     # how cost grows: intake with 1,000,000
//!                                                     # orders stored, their purge under load,
//!                                                     # PostgreSQL with 1 and 3 instances
//! cargo run --release -p shorts-bench -- purge [--rate R] [--stored N] [--quick]
//!                                                     # the purge's rows alone
//! ```
//!
//! The framework side runs as a child process of this binary (`serve`, through
//! `shorts_runtime::run()`), so its memory and CPU time are its own; each baseline runs as a child
//! process too, against the same mock platform on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measuring tool: failing loudly is the point"
)]

mod baseline;
mod build;
mod callgrind;
mod files;
mod https;
mod load;
mod proc;
mod scaling;
mod service;

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use shorts_runtime::prelude::*;
use shorts_runtime::testing::MockPlatform;

/// Returns the file at `path` (read from disk when delivered).
#[ai_short(timeout = "10m")]
async fn blob(input: BlobInput) -> Result<File> {
    Ok(File::from_path(input.path))
}

#[derive(Deserialize)]
struct BlobInput {
    path: String,
}

#[derive(Deserialize)]
struct Text {
    text: String,
}

/// Answers at once: the intake and end-to-end benchmarks.
#[ai_short]
async fn echo(input: Text) -> Result<String> {
    Ok(input.text)
}

#[derive(Deserialize)]
struct Sleep {
    seconds: u64,
}

/// Sleeps: the in-flight memory benchmark.
#[ai_short(concurrency = 20000, timeout = "1h")]
async fn sleepy(input: Sleep) -> Result<String> {
    tokio::time::sleep(Duration::from_secs(input.seconds)).await;
    Ok("rested".into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve" | "invoke" | "list") => shorts_runtime::run(),
        Some("__bare-put") => baseline::bare_put(&args[1..]),
        Some("__bare-inline") => baseline::bare_inline(&args[1..]),
        Some("build") => build::run(),
        Some(command @ ("files" | "service" | "scaling" | "all")) => {
            let quick = args.iter().any(|a| a == "--quick");
            if args.iter().any(|a| a == "--prebuilt") {
                service::PREBUILT.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            runtime().block_on(async {
                if matches!(command, "service" | "all") {
                    service::run(quick).await;
                    println!();
                }
                if command == "all" {
                    callgrind::in_all(quick).await;
                    println!();
                }
                if matches!(command, "files" | "all") {
                    files::run(quick).await;
                }
                if matches!(command, "scaling" | "all") {
                    if command == "all" {
                        println!();
                    }
                    let skip = |part: &str| args.iter().any(|a| a == &format!("--no-{part}"));
                    scaling::run(quick, skip("purge"), skip("postgres")).await;
                }
                ExitCode::SUCCESS
            })
        }
        Some("callgrind") => runtime().block_on(callgrind::run(&args[1..])),
        Some("purge") => runtime().block_on(scaling::purge_alone(&args[1..])),
        Some("probe") => runtime().block_on(service::probe(&args[1..])),
        Some("metrics") => runtime().block_on(service::metrics(args.iter().any(|a| a == "--quick"))),
        Some("orders") => runtime().block_on(orders(&args[1..])),
        _ => {
            eprintln!(
                "usage: shorts-bench all | service | files | scaling [--quick] [--prebuilt] [--no-purge] [--no-postgres] | purge [--rate R] [--stored N] [--quick] | build | callgrind [--orders N] | metrics [--quick] | probe sqlite|memory|memory-no-metrics|b1|b0 RATE [SECONDS] | orders [--count N] [--rounds N] [--postgres URL]"
            );
            ExitCode::from(2)
        }
    }
}

/// Times the queries of an operator's pages, and the dashboard's pages rendered through the admin
/// router, on a store of `--count` orders (100,000 by default):
/// SQLite in a temporary file, or PostgreSQL at `--postgres URL` (in a schema of its own).
async fn orders(args: &[String]) -> ExitCode {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let count: u32 = value("--count").map_or(100_000, |n| n.parse().expect("--count N"));
    let rounds: u32 = value("--rounds").map_or(9, |n| n.parse().expect("--rounds N"));
    let dir = std::env::temp_dir().join(format!("shorts-bench-orders-{}", std::process::id()));
    let (config, name) = match value("--postgres") {
        Some(url) => (
            shorts_runtime::StoreConfig::Postgres(shorts_runtime::Secret::new(url)),
            "PostgreSQL",
        ),
        None => {
            std::fs::create_dir_all(&dir).expect("temp dir");
            (
                shorts_runtime::StoreConfig::Sqlite(dir.join("orders.db")),
                "SQLite",
            )
        }
    };
    let timings = shorts_runtime::__bench::order_queries(&config, count, rounds).await;
    let _ = std::fs::remove_dir_all(&dir);
    let timings = match timings {
        Ok(timings) => timings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{name}, {count} orders: median of {rounds} runs of each query and page");
    for (query, time) in timings {
        println!("  {:>9.3} ms  {query}", time.as_secs_f64() * 1000.0);
    }
    ExitCode::SUCCESS
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The framework under test: this binary's `serve`, delivering to `platform`.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
    db: std::path::PathBuf,
}

impl Server {
    pub(crate) async fn start(platform: &MockPlatform, extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let db = std::env::temp_dir().join(format!("shorts-bench-{}-{port}.db", std::process::id()));
        let mut command = serve(platform, port, &format!("sqlite://{}", db.display()));
        command.env("RUST_LOG", "warn");
        for (key, value) in extra_env {
            command.env(key, value);
        }
        settle_disk();
        let child = command.spawn().expect("spawn the server");
        wait_listening(port, "the server").await;
        Self { child, port, db }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_database(&self.db);
    }
}

/// A schema of its own in the PostgreSQL database the test suite uses (`SHORTS_TEST_POSTGRES_URL`,
/// by default `postgres://postgres@127.0.0.1:5432/test`), dropped with its tables when this is
/// dropped. Made with `psql`.
pub(crate) struct PgSchema {
    admin: String,
    name: String,
    /// The store URL that works in the schema.
    pub(crate) url: String,
}

impl PgSchema {
    /// A new schema; why not, when PostgreSQL cannot be reached.
    pub(crate) fn create() -> Result<Self, String> {
        let admin = std::env::var("SHORTS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("shorts_bench_{}_{}", std::process::id(), fastrand::u32(..));
        psql(&admin, &format!("CREATE SCHEMA {name}"))?;
        let separator = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{separator}options=-c%20search_path%3D{name}");
        Ok(Self { admin, name, url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = psql(&self.admin, &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

/// Runs one SQL command with `psql` on the database at `url`.
fn psql(url: &str, sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| format!("psql (the PostgreSQL client) did not run: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {sql:?} failed (is PostgreSQL at SHORTS_TEST_POSTGRES_URL?): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Deletes an SQLite database and its `-wal` and `-shm` files, if they exist.
pub(crate) fn remove_database(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// Writes back what earlier contenders left in the page cache (`sync`), so that the kernel does
/// not flush it to disk during the next contender's measurement and slow its fsyncs down.
pub(crate) fn settle_disk() {
    let _ = Command::new("sync").status();
}

/// This binary's `serve` on `port`, delivering to `platform`, with `store`; quiet (`RUST_LOG`
/// error) and with no input or output.
pub(crate) fn serve(platform: &MockPlatform, port: u16, store: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command
        .arg("serve")
        .env("SHORTS_BIND", format!("127.0.0.1:{port}"))
        .env("SHORTS_STORE", store)
        .env("SHORTS_CALLBACK_SECRET", platform.secret())
        .env("SHORTS_CALLBACK_URL", platform.callback_url())
        .env(
            "SHORTS_WEBHOOK_AUTH",
            format!("x-api-key: {}", MockPlatform::WEBHOOK_KEY),
        )
        .env("RUST_LOG", "error")
        // The admin listener on, as by default (metrics recorded), on a port of its own.
        .env("SHORTS_ADMIN_BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A port free on 127.0.0.1 (nothing else binds ports on the benchmark machine in between; the
/// hand-written baselines bind their own address, so every contender is started the same way).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Waits (at most 30 s) until something listens on `port`.
pub(crate) async fn wait_listening(port: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the machine's description.
pub(crate) fn machine() -> String {
    format!(
        "{} ({} cores available)",
        proc::cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    )
}
