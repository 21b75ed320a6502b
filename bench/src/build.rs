//! Build cost: `hello-short` against `hand-written-short` (B0/B1, written with only the crates a
//! careful engineer would pick), each from a clean target directory, in one run: the README's quick
//! start (a debug build, then `hello-short`'s `invoke`) and a release build.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::machine;

/// What is measured of one package, in seconds.
struct Times {
    /// The debug build from a clean target directory.
    debug: f64,
    /// The first run after it: `hello-short`'s `invoke echo` of the README, or nothing.
    run: f64,
    /// The release build, from a clean target directory too (no artifact is shared with debug).
    release: f64,
}

pub(crate) fn run() -> ExitCode {
    println!("machine: {}", machine());
    let mut measured = Vec::new();
    for package in ["hello-short", "hand-written-short"] {
        let target = std::env::temp_dir().join(format!("shorts-build-{package}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&target);
        let times = measure(package, &target);
        let _ = std::fs::remove_dir_all(&target);
        match times {
            Ok(times) => {
                println!(
                    "{package}: clean debug build {:.1} s, first run {:.1} s, clean release build {:.1} s",
                    times.debug, times.run, times.release
                );
                measured.push(times);
            }
            Err(e) => {
                eprintln!("error: {package}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let [hello, hand] = [&measured[0], &measured[1]];
    println!();
    println!("| figure | hello-short | hand-written | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    let quick_hello = hello.debug + hello.run;
    let quick_hand = hand.debug + hand.run;
    println!(
        "| README quick start (clean debug build and first run) | {quick_hello:.0} s | {quick_hand:.0} s | {:.2}x | <= 1.3x |",
        quick_hello / quick_hand
    );
    println!(
        "| clean release build | {:.0} s | {:.0} s | {:.2}x | <= 1.3x |",
        hello.release,
        hand.release,
        hello.release / hand.release
    );
    ExitCode::SUCCESS
}

/// Builds `package` in debug, runs it as the README's quick start does, then builds it in
/// release, all in `target`.
fn measure(package: &str, target: &Path) -> Result<Times, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = |release: bool| -> Result<f64, String> {
        let started = Instant::now();
        let mut command = Command::new(&cargo);
        command
            .args(["build", "--quiet", "-p", package, "--target-dir"])
            .arg(target);
        if release {
            command.arg("--release");
        }
        let status = command.status().map_err(|e| format!("cargo: {e}"))?;
        if !status.success() {
            return Err(format!("the build failed: {status}"));
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let debug = build(false)?;
    let run = if package == "hello-short" {
        let started = Instant::now();
        let output = Command::new(target.join("debug").join(package))
            .args(["invoke", "echo", "--input", r#"{"text": "hello", "shout": true}"#])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("invoke: {e}"))?;
        if !output.status.success() || !String::from_utf8_lossy(&output.stdout).contains("HELLO") {
            return Err(format!("invoke failed: {}", output.status));
        }
        started.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let release = build(true)?;
    Ok(Times { debug, run, release })
}
