//! The short binary the crash harness kills: each run of `work` is recorded in the file named by
//! `CRASHY_RUNS`, so the harness can count runs per order across processes.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Work {
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    abort: bool,
    /// Bytes added to the answer: a callback body over 64 KiB, which the SQLite store keeps in a
    /// file of its own.
    #[serde(default)]
    answer_bytes: usize,
}

/// Records the run, logs, sleeps, and answers with the process that ran it (and `answer_bytes` more);
/// `abort` ends the process.
#[ai_short]
async fn work(input: Work, order: Order) -> Result<String> {
    if let Some(path) = std::env::var_os("CRASHY_RUNS") {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        // One write per line: appends from several processes do not interleave.
        file.write_all(format!("{}\n", order.id()).as_bytes())?;
    }
    if input.abort {
        std::process::abort();
    }
    tracing::info!(sleep_ms = input.sleep_ms, "working on the order");
    tokio::time::sleep(Duration::from_millis(input.sleep_ms)).await;
    let padding = "x".repeat(input.answer_bytes.min(1 << 20));
    Ok(format!(
        "{} done by process {}{padding}",
        order.id(),
        std::process::id()
    ))
}

fn main() -> ExitCode {
    shorts_runtime::run()
}
