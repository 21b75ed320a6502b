//! Compile tests for `#[ai_short]`: what it accepts (`ui/pass`) and how it reports each mistake
//! (`ui/fail`, one mistake per file, with the expected `.stderr`).
//!
//! Each `ui/pass` case is a binary of this package (`[[bin]]` in `Cargo.toml`): Cargo builds it with
//! the suite, against the workspace's dependencies and with its lints (Clippy's too), and [`pass`]
//! runs it, since each case asserts what the expansion registered. Kept out of trybuild, the
//! passing cases do not make it build (rather than check) the whole dependency tree again in its own
//! target directory.
//!
//! The `.stderr` files depend on the compiler's wording, so [`fail`] runs only on the pinned
//! toolchain; regenerate them with `TRYBUILD=overwrite cargo test -p shorts-tests --test ui` and
//! read the diff.

use std::collections::BTreeSet;
use std::time::Duration;

/// Every case of `ui/pass`, with the binary Cargo built from it.
const PASS: &[(&str, &str)] = &[
    ("basic", env!("CARGO_BIN_EXE_ui-pass-basic")),
    ("crate_option", env!("CARGO_BIN_EXE_ui-pass-crate_option")),
    ("errors", env!("CARGO_BIN_EXE_ui-pass-errors")),
    ("hygiene", env!("CARGO_BIN_EXE_ui-pass-hygiene")),
    ("options", env!("CARGO_BIN_EXE_ui-pass-options")),
    ("outputs", env!("CARGO_BIN_EXE_ui-pass-outputs")),
    ("with_order", env!("CARGO_BIN_EXE_ui-pass-with_order")),
];

/// How long one passing case may run.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn pass() {
    for &(name, exe) in PASS {
        let run = tokio::process::Command::new(exe).kill_on_drop(true).output();
        let output = tokio::time::timeout(RUN_LIMIT, run)
            .await
            .unwrap_or_else(|_| panic!("ui/pass/{name}.rs still runs after {RUN_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("ui/pass/{name}.rs does not start: {e}"));
        assert!(
            output.status.success(),
            "ui/pass/{name}.rs exited with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A new `ui/pass` case needs its `[[bin]]` in `Cargo.toml` and its line in [`PASS`]: none is left out.
#[test]
fn every_pass_case_is_built_and_run() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/pass");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .file_name()
        })
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    let run: BTreeSet<String> = PASS.iter().map(|(name, _)| format!("{name}.rs")).collect();
    assert_eq!(files, run);
}

#[rustversion::attr(not(stable(1.95)), ignore)]
#[test]
fn fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
}
