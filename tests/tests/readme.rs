//! The README's steps for a new crate, followed literally: `cargo new`, the `Cargo.toml` lines of the
//! path variant (pointed at this checkout), the code at the top of the README as `src/main.rs`, then
//! `invoke`, whose printed callback must hold the shouted text; then `check` with a PostgreSQL
//! store, which the default build refuses, naming the feature that adds it.
//!
//! The crate is built offline with this workspace's `Cargo.lock` (so nothing new is resolved) into
//! this workspace's target directory (so the dependencies already built are reused; cargo does not
//! hold the build lock while test binaries run). Its folder is removed afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The crate name the README's `cargo new` uses.
const CRATE: &str = "my-short";
/// Longest a build may take: every dependency from scratch, on a loaded machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest `invoke` may take.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The target directory this test was built in: `<target>/<profile>/deps/<test binary>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary is in <target>/<profile>/deps")
        .to_path_buf()
}

/// The fenced blocks of `markdown` in the language `lang`, in order.
fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == format!("```{lang}") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```{lang} block in the README");
    blocks
}

/// The value of `key = "…"` inside `line`, and where it starts and ends.
fn quoted_value(line: &str, key: &str) -> Option<(usize, usize)> {
    let start = line.find(&format!("{key} = \""))? + key.len() + 4;
    let end = start + line[start..].find('"')?;
    Some((start, end))
}

/// `line` with its `path = "…"` value replaced by `path`.
fn with_path(line: &str, path: &Path) -> String {
    let (start, end) = quoted_value(line, "path").expect("a path");
    format!("{}{}{}", &line[..start], path.display(), &line[end..])
}

/// A folder that is emptied when made and removed when dropped.
struct Fresh(PathBuf);

impl Fresh {
    fn new(path: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` at most `limit`, killing it past that.
fn wait(mut child: Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The workspace's `[profile…]` sections, so that dependencies built with the workspace's
/// per-package settings are reused rather than built again (they change no behaviour).
fn workspace_profiles() -> String {
    let manifest = std::fs::read_to_string(repository().join("Cargo.toml")).unwrap();
    let mut keep = false;
    let mut profiles = String::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            keep = line.starts_with("[profile");
        }
        if keep {
            profiles.push_str(line);
            profiles.push('\n');
        }
    }
    profiles
}

/// Runs the built binary `bin` in `krate` with `args` and only `PATH` and `env` set, at most
/// [`INVOKE_TIMEOUT`]; its exit status, standard output and standard error (written to `out` and
/// `log`).
fn run_built(
    bin: &Path,
    krate: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    out: &Path,
    log: &Path,
) -> (ExitStatus, String, String) {
    let child = Command::new(bin)
        .args(args)
        .current_dir(krate)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("the built binary runs");
    let status = wait(child, INVOKE_TIMEOUT, args[0]);
    let stdout = std::fs::read_to_string(out).unwrap_or_default();
    let stderr = std::fs::read_to_string(log).unwrap_or_default();
    (status, stdout, stderr)
}

#[test]
fn a_new_crate_made_as_the_readme_says_builds_and_runs() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let runtime = repository().join("shorts-runtime");

    // The code shown at the top of the README is `src/main.rs`.
    let main_rs = code_blocks(&readme, "rust")
        .into_iter()
        .next()
        .expect("a rust block in the README");
    assert!(main_rs.contains("shorts_runtime::run()"), "{main_rs}");

    // `cargo new my-short`, as step 1 says.
    let step = readme
        .split("**1. Write the function.**")
        .nth(1)
        .and_then(|rest| rest.split("**2.").next())
        .expect("step 1 in the README");
    assert!(step.contains(&format!("cargo new {CRATE}")), "{step}");

    // The path variant of step 1's `Cargo.toml` lines, pointed at this checkout, and the
    // dev-dependencies of "Testing your short", with the same path.
    let tomls = code_blocks(&readme, "toml");
    let dependencies = tomls
        .iter()
        .find(|block| block.lines().any(|l| l.starts_with("shorts-runtime = { path = ")))
        .expect("a [dependencies] block with the path variant");
    let dev_dependencies = tomls
        .iter()
        .find(|block| block.starts_with("[dev-dependencies]"))
        .expect("a [dev-dependencies] block");
    let mut lines = String::new();
    for line in dependencies.lines().chain(dev_dependencies.lines()) {
        if line.starts_with("shorts-runtime = { path = ") {
            lines.push_str(&with_path(line, &runtime));
        } else if line.starts_with("shorts-runtime = { git = ") {
            let (start, end) = quoted_value(line, "git").expect("a git URL");
            let git = start - "git = \"".len();
            lines.push_str(&format!(
                "{}path = \"{}{}",
                &line[..git],
                runtime.display(),
                &line[end..]
            ));
        } else {
            lines.push_str(line);
        }
        lines.push('\n');
    }
    assert!(lines.contains("features = [\"derive\"]"), "{lines}");
    assert!(lines.contains("features = [\"testing\"]"), "{lines}");

    let target = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // A stable folder per target directory: the crate's artifacts in the shared target directory
    // are then replaced by the next run instead of piling up under a new hash each time.
    let mut hasher = std::hash::DefaultHasher::new();
    target.hash(&mut hasher);
    let root = Fresh::new(std::env::temp_dir().join(format!("shorts-readme-{:016x}", hasher.finish())));
    let krate = root.0.join(CRATE);
    let log = root.0.join("cargo.log");

    let status = Command::new(&cargo)
        .args(["new", "--vcs", "none", "--offline", CRATE])
        .current_dir(&root.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("cargo new runs");
    assert!(status.success(), "cargo new: {status}");

    let manifest_path = krate.join("Cargo.toml");
    let mut manifest = std::fs::read_to_string(&manifest_path).unwrap();
    // `cargo new` ends the manifest with an empty `[dependencies]`: the README's block brings its own.
    manifest = manifest.trim_end().trim_end_matches("[dependencies]").to_string();
    manifest.push('\n');
    manifest.push_str(&lines);
    manifest.push('\n');
    manifest.push_str(&workspace_profiles());
    std::fs::write(&manifest_path, &manifest).unwrap();
    std::fs::write(krate.join("src/main.rs"), &main_rs).unwrap();
    std::fs::copy(repository().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();

    let started = Instant::now();
    let build = Command::new(&cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cargo build runs");
    let status = wait(build, BUILD_TIMEOUT, "cargo build");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "cargo build: {status}\n{manifest}\n{output}");
    eprintln!("built {CRATE} in {:.1?}", started.elapsed());

    let bin = target.join("debug").join(CRATE);
    let out = root.0.join("run.out");
    let run = |args: &[&str], env: &[(&str, &str)]| run_built(&bin, &krate, args, env, &out, &log);

    let (status, stdout, stderr) = run(
        &["invoke", "echo", "--input", r#"{"text": "hello", "shout": true}"#],
        &[],
    );
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    let callback: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(callback["ok"], true, "{callback}");
    assert_eq!(callback["result_text"], "HELLO", "{callback}");

    // The crate's default build has no PostgreSQL support: `check` refuses a `postgres://` store
    // and says how to turn the feature on.
    let store = ("SHORTS_STORE", "postgres://shorts@127.0.0.1:5432/orders");
    let (status, stdout, stderr) = run(&["check"], &[store]);
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("SHORTS_STORE") && stdout.contains("`postgres` feature"),
        "{stdout}\n{stderr}"
    );

    // Nor ACME: `check` and `serve` refuse `SHORTS_ACME_DOMAINS` and say how to turn it on.
    let acme = ("SHORTS_ACME_DOMAINS", "shorts.example.com");
    let (status, stdout, stderr) = run(&["check"], &[acme]);
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("SHORTS_ACME_DOMAINS") && stdout.contains("`features = [\"acme\"]`"),
        "{stdout}\n{stderr}"
    );
    let (status, stdout, stderr) = run(&["serve"], &[acme]);
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("SHORTS_ACME_DOMAINS") && stderr.contains("`acme` feature"),
        "{stdout}\n{stderr}"
    );
}
