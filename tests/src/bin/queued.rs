//! The short binary of the memory tests: `upload`, which the test fills with large orders (one
//! slot, and a run that reads its input and sleeps for `QUEUED_SLEEP_MS` milliseconds), and
//! `long_text`, whose result is a text of the length asked.

use std::process::ExitCode;
use std::time::Duration;

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Upload {
    file: String,
}

/// Answers with the length of the uploaded file, after the configured sleep.
#[ai_short(concurrency = 1)]
async fn upload(input: Upload) -> Result<String> {
    let sleep = std::env::var("QUEUED_SLEEP_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(sleep)).await;
    Ok(format!("{} bytes", input.file.len()))
}

#[derive(Deserialize)]
struct Length {
    bytes: usize,
}

/// A text of `bytes` bytes, made on the blocking pool (megabytes are slow to make in a debug
/// build).
#[ai_short]
async fn long_text(input: Length) -> Result<String> {
    Ok(tokio::task::spawn_blocking(move || "a".repeat(input.bytes)).await?)
}

fn main() -> ExitCode {
    shorts_runtime::run()
}
