//! Compile tests for `#[ai_short]`: what it accepts (`ui/pass`) and how it reports each mistake
//! (`ui/fail`, one mistake per file, with the expected `.stderr`).
//!
//! Each `ui/pass` case is a binary of this package (`[[bin]]` in `Cargo.toml`): Cargo builds it with
//! the suite, against the workspace's dependencies and with its lints (Clippy's too), and [`pass`]
//! runs it, since each case asserts what the expansion registered.
//!
//! Each `ui/fail` case is checked by `rustc` itself ([`fail`]), against the libraries the suite's
//! own build made, as a seller's crate would be: nothing is built again, so the cases take a
//! couple of seconds instead of a check of the whole dependency tree in a target directory of their
//! own.
//!
//! The `.stderr` files depend on the compiler's wording, so [`fail`] runs only on the pinned
//! toolchain; regenerate them with `SHORTS_UI=overwrite cargo nextest run --workspace
//! --all-features -E 'binary(ui)'` and read the diff.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every case of `ui/pass`, with the binary Cargo built from it.
const PASS: &[(&str, &str)] = &[
    ("basic", env!("CARGO_BIN_EXE_ui-pass-basic")),
    ("blocking", env!("CARGO_BIN_EXE_ui-pass-blocking")),
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

/// Each `ui/fail` case is checked by `rustc` against the libraries of the workspace's own test
/// build, and must fail with exactly its `.stderr` (normalized by [`normalize`]).
#[rustversion::attr(not(stable(1.95)), ignore)]
#[test]
fn fail() {
    let libraries = Libraries::of_the_test_build();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cases: Vec<String> = std::fs::read_dir(dir.join("ui/fail"))
        .unwrap_or_else(|e| panic!("ui/fail: {e}"))
        .map(|entry| entry.unwrap_or_else(|e| panic!("ui/fail: {e}")).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".rs").map(str::to_owned))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no case in ui/fail");

    let overwrite = std::env::var_os("SHORTS_UI").is_some_and(|v| v == "overwrite");
    let out = tempfile_dir("shorts-ui-fail");
    // Two checks at a time: the machine's cores, without starving the tests beside this one.
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|scope| {
        let chunks: Vec<&[String]> = cases.chunks(cases.len().div_ceil(2)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (libraries, out) = (&libraries, &out);
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|name| (name.clone(), check_case(libraries, dir, out, name, overwrite)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| panic!("a checking thread panicked"))
            })
            .collect()
    });
    let _ = std::fs::remove_dir_all(&out);
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|why| format!("ui/fail/{name}.rs: {why}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ (SHORTS_UI=overwrite rewrites the .stderr files):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Where the libraries a seller's code links against were built.
struct Libraries {
    /// `rustc` of the toolchain that built them.
    rustc: PathBuf,
    /// `(crate name, .rlib path)` for each crate the cases may name.
    externs: Vec<(&'static str, PathBuf)>,
}

/// The crates a case may name, as a seller's crate does.
const EXTERNS: &[&str] = &["shorts_runtime", "serde"];

impl Libraries {
    /// Asks Cargo for the libraries of the build that `cargo nextest run --workspace
    /// --all-features` (CI and the README) made: up to date, so nothing is built; under another
    /// feature set, Cargo builds them first.
    fn of_the_test_build() -> Self {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cargo_command = std::process::Command::new(&cargo);
        cargo_command
            .args(["test", "--no-run", "--workspace", "--all-features", "--offline"])
            .args(["--message-format=json", "--quiet"])
            .current_dir(workspace());
        let output = output_within(&mut cargo_command, CARGO_LIMIT).unwrap_or_else(|e| {
            panic!("cargo test --no-run: {e} (is another Cargo holding the target directory?)")
        });
        assert!(
            output.status.success(),
            "cargo test --no-run: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let mut externs = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            let Some(name) = EXTERNS.iter().find(|&&name| message["target"]["name"] == name) else {
                continue;
            };
            let rlib = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|file| file.as_str())
                .find(|file| file.ends_with(".rlib"));
            if let Some(rlib) = rlib
                && !externs.iter().any(|(known, _)| known == name)
            {
                externs.push((*name, PathBuf::from(rlib)));
            }
        }
        for name in EXTERNS {
            assert!(
                externs.iter().any(|(known, _)| known == name),
                "cargo named no library {name}"
            );
        }
        let cargo = PathBuf::from(cargo);
        let beside_cargo = cargo.with_file_name("rustc");
        let rustc = if beside_cargo.is_file() {
            beside_cargo
        } else {
            PathBuf::from("rustc")
        };
        Libraries { rustc, externs }
    }
}

/// Checks `ui/fail/{name}.rs`: it must not compile, and its normalized errors must be the
/// `.stderr` file's (or replace it, with `overwrite`).
fn check_case(
    libraries: &Libraries,
    dir: &Path,
    out: &Path,
    name: &str,
    overwrite: bool,
) -> Result<(), String> {
    // Run from the workspace's root, as Cargo runs rustc: the runtime's own paths in the
    // libraries' metadata are relative to it, and its sources are then found for the excerpts.
    let source = format!("tests/ui/fail/{name}.rs");
    let mut rustc = std::process::Command::new(&libraries.rustc);
    rustc
        .args([
            "--edition=2024",
            "--crate-type=bin",
            "--emit=metadata",
            "--color=never",
        ])
        .arg("--diagnostic-width=140")
        .args(["-A", "dead_code"])
        .arg(format!("--crate-name={name}"))
        .arg("--out-dir")
        .arg(out);
    for (crate_name, rlib) in &libraries.externs {
        rustc
            .arg("--extern")
            .arg(format!("{crate_name}={}", rlib.display()));
        if let Some(deps) = rlib.parent() {
            rustc.arg("-L").arg(format!("dependency={}", deps.display()));
        }
    }
    rustc.arg(&source).current_dir(workspace());
    let output = output_within(&mut rustc, RUSTC_LIMIT).map_err(|e| format!("rustc: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return Err(format!("compiles, but must not:\n{stderr}"));
    }
    let actual = normalize(&stderr);
    let expected_path = dir.join(format!("ui/fail/{name}.stderr"));
    if overwrite {
        return std::fs::write(&expected_path, &actual)
            .map_err(|e| format!("{}: {e}", expected_path.display()));
    }
    let expected =
        std::fs::read_to_string(&expected_path).map_err(|e| format!("{}: {e}", expected_path.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!("expected:\n{expected}\nfound:\n{actual}"))
    }
}

/// The compiler's messages without what differs between machines and runs: the paths of this
/// checkout, of Cargo's sources and of the toolchain become `$WORKSPACE`, `$CARGO` and `$RUST`; a
/// location outside the case loses its line and column, and its excerpt its line numbers (they
/// move with every edit of the runtime); long lists end in `and $N others`; the closing summary
/// lines and the notes naming a file of long type names go.
fn normalize(stderr: &str) -> String {
    let workspace = workspace().display().to_string();
    let cargo_home = std::env::var("CARGO_HOME")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|home| format!("{home}/.cargo")))
        .unwrap_or_default();
    let mut lines = Vec::new();
    // Inside the excerpt of a location outside the case.
    let mut elsewhere = false;
    for line in stderr.lines() {
        if line.starts_with("error: aborting due to")
            || line.starts_with("Some errors have detailed explanations")
            || line.starts_with("For more information about")
            || line.contains("= note: the full name for the type has been written to")
            || line.contains("= note: consider using `--verbose` to print the full type name")
        {
            continue;
        }
        let mut line = line
            .replace(&format!("{workspace}/"), "$WORKSPACE/")
            .replace("tests/ui/fail/", "ui/fail/");
        if !cargo_home.is_empty() {
            line = line.replace(&format!("{cargo_home}/registry/src/"), "$CARGO/");
        }
        line = rust_source(&line);
        if let Some(at) = line.find("--> ").filter(|&at| line[..at].trim().is_empty()) {
            let location = &line[at + 4..];
            elsewhere = !location.starts_with("ui/");
            if elsewhere {
                let file = location.split(':').next().unwrap_or(location);
                // The workspace's own crates are named relative to its root.
                let root = if file.starts_with('$') || file.starts_with('/') {
                    ""
                } else {
                    "$WORKSPACE/"
                };
                line = format!("{}--> {root}{file}", &line[..at]);
            }
        } else if elsewhere {
            match line.split_once(" |") {
                Some((number, rest)) if number.trim().chars().all(|c| c.is_ascii_digit()) => {
                    line = format!("{} |{rest}", " ".repeat(number.len()));
                }
                _ if line.trim_start().starts_with('|') || line.trim_start().starts_with('=') => {}
                _ => elsewhere = false,
            }
        }
        if let Some(start) = line.rfind("and ")
            && let Some(count) = line[start + 4..].strip_suffix(" others")
            && count.chars().all(|c| c.is_ascii_digit())
        {
            line = format!("{}and $N others", &line[..start]);
        }
        lines.push(line.trim_end().to_owned());
    }
    let mut out = String::new();
    for diagnostic in diagnostics(&lines) {
        for line in regutter(diagnostic) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// `lines` cut into diagnostics: each starts at an unindented `error` or `warning` line.
fn diagnostics(lines: &[String]) -> Vec<&[String]> {
    let mut starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("error") || line.starts_with("warning"))
        .map(|(i, _)| i)
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    starts.push(lines.len());
    starts.windows(2).map(|pair| &lines[pair[0]..pair[1]]).collect()
}

/// A diagnostic's gutter (its line numbers' column) made as wide as the line numbers left in it
/// need: rustc sizes it for the widest number, which a location outside the case lost.
fn regutter(diagnostic: &[String]) -> Vec<String> {
    let width = diagnostic
        .iter()
        .find_map(|line| line.find("--> ").filter(|&at| line[..at].trim().is_empty()));
    let Some(width) = width else {
        return diagnostic.to_vec();
    };
    let numbered = |line: &str| {
        line.get(..width)
            .filter(|field| field.chars().all(|c| c.is_ascii_digit() || c == ' '))
            .filter(|_| line.len() == width || line[width..].starts_with(' '))
            .map(|field| field.trim().to_owned())
    };
    let needed = diagnostic
        .iter()
        .filter_map(|line| numbered(line))
        .map(|number| number.len())
        .max()
        .unwrap_or(1)
        .max(1);
    diagnostic
        .iter()
        .map(|line| match numbered(line) {
            _ if line.get(..width).is_some_and(|gutter| gutter.trim().is_empty())
                && line.get(width..).is_some_and(|rest| rest.starts_with("--> ")) =>
            {
                format!("{:needed$}{}", "", &line[width..])
            }
            Some(number) => format!("{number:>needed$}{}", &line[width..])
                .trim_end()
                .to_owned(),
            None => line.clone(),
        })
        .collect()
}

/// `line` with the standard library's source path, wherever the toolchain keeps it, as `$RUST/`.
fn rust_source(line: &str) -> String {
    for marker in ["/lib/rustlib/src/rust/library/", "/library/"] {
        if let Some(at) = line.find(marker) {
            let start = line[..at].rfind([' ', '@', '`']).map_or(0, |i| i + 1);
            if line[start..at].starts_with('/') {
                return format!("{}$RUST/{}", &line[..start], &line[at + marker.len()..]);
            }
        }
    }
    line.to_owned()
}

/// Longest Cargo may take to name the test build's libraries (nothing to build, normally).
const CARGO_LIMIT: Duration = Duration::from_secs(300);
/// Longest one case's check may take.
const RUSTC_LIMIT: Duration = Duration::from_secs(120);

/// Runs `command` to its end, with its output, or kills it after `limit`.
fn output_within(
    command: &mut std::process::Command,
    limit: Duration,
) -> Result<std::process::Output, String> {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("does not start: {e}"))?;
    // Read both pipes while it runs, so that it never blocks on a full one.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still runs after {limit:?}"));
            }
            Err(e) => return Err(format!("cannot be waited for: {e}")),
        }
    };
    let join = |reader: std::thread::JoinHandle<Vec<u8>>| reader.join().unwrap_or_default();
    Ok(std::process::Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// The workspace's root folder.
fn workspace() -> &'static Path {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests)
}

/// A fresh folder under the system's temporary directory for the checks' output.
fn tempfile_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}
