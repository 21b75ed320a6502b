//! Build cost: a clean release build of `hello-short` against one of `hand-written-short`, a crate
//! with the same dependencies and the short written by hand.

use std::process::{Command, ExitCode};
use std::time::Instant;

use crate::machine;

pub(crate) fn run() -> ExitCode {
    println!("machine: {}", machine());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut times = Vec::new();
    for package in ["hello-short", "hand-written-short"] {
        let target = std::env::temp_dir().join(format!("shorts-build-{package}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&target);
        let started = Instant::now();
        let status = Command::new(&cargo)
            .args(["build", "--release", "--quiet", "-p", package, "--target-dir"])
            .arg(&target)
            .status()
            .expect("cargo runs");
        let seconds = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&target);
        if !status.success() {
            eprintln!("error: {package} did not build");
            return ExitCode::FAILURE;
        }
        println!("clean release build of {package}: {seconds:.1} s");
        times.push(seconds);
    }
    println!();
    println!("| figure | hello-short | hand-written | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| clean release build | {:.0} s | {:.0} s | {:.2}x | <= 1.3x |",
        times[0],
        times[1],
        times[0] / times[1]
    );
    ExitCode::SUCCESS
}
