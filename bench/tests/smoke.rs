//! The benchmarks' smoke run: `shorts-bench all --quick` against the baselines that the same test
//! build made, in a debug build, so its figures mean nothing and are not asserted; what is
//! asserted is that every benchmark runs to its end and prints its tables.
#![allow(clippy::expect_used, reason = "test setup fails loudly")]

use std::time::Duration;

/// Longest the smoke run may take, on a loaded machine.
const LIMIT: Duration = Duration::from_secs(15 * 60);

#[tokio::test]
async fn every_benchmark_runs_to_its_end() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_shorts-bench"))
        .args(["all", "--quick", "--prebuilt"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("the smoke run still runs after {LIMIT:?}"))
        .expect("shorts-bench starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stdout}\n{stderr}", output.status);
    // The service table (shorts against B1 and B0), the files table (shorts against a bare upload)
    // and the scaling table (orders stored, their purge, PostgreSQL instances).
    for header in [
        "| figure | shorts (SQLite) | B1 | ratio | B0 | ratio | target |",
        "| figure | shorts | baseline | ratio | target |",
        "| contender | instructions per order | of which: idle background over the same time |",
        "| scaling figure | measured | compared with | ratio | target |",
    ] {
        assert!(stdout.contains(header), "no table {header:?} in:\n{stdout}");
    }
    let rows = stdout
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| ---"))
        .count();
    assert!(rows > 10, "{rows} table rows in:\n{stdout}");
    eprintln!("{stdout}");
}
