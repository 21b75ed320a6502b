//! The built binary's `invoke`, configured from its own environment, against a scripted model API
//! on 127.0.0.1: the callback it prints, the files it writes, and no API key in anything it prints.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

mod stub;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shorts_runtime::FileInput;
use stub::{KEY, MODEL, Reply, Stub};

/// The longest an `invoke` may run.
const RUN_WAIT: Duration = Duration::from_secs(60);

struct Run {
    code: Option<i32>,
    callback: Value,
    /// Standard output and standard error, together.
    printed: String,
}

/// Runs `invoke summarize` with `inputs`, an environment of `env` only (and `PATH`), and files
/// written to `out`.
async fn invoke(inputs: &Value, env: &[(&str, &str)], out: &Path) -> Run {
    let dir = Scratch::new("io");
    std::fs::create_dir_all(&dir.0).unwrap();
    let (stdout_path, stderr_path) = (dir.0.join("stdout"), dir.0.join("stderr"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_summarize-short"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Every log line, to show that none carries the key.
        .env("RUST_LOG", "debug")
        .args(["invoke", "summarize", "--input", &inputs.to_string(), "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    let status = wait(command.spawn().expect("the binary runs"), "invoke").await;
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    drop(dir);
    let callback = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    Run {
        code: status.code(),
        callback,
        printed: format!("{stdout}\n{stderr}"),
    }
}

/// A directory of its own under the temporary directory, removed when dropped (a failing test
/// included).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("summarize-short-{name}-{}-{n}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn inputs() -> Value {
    json!({
        "document": [FileInput::new("minutes.txt", "text/plain", b"Bob will send the Q3 report, 12 pages, by Monday.")],
        "tone": "formal",
    })
}

#[tokio::test]
async fn invoke_writes_the_report_and_the_csv() {
    let answer = json!({
        "summary": "Bob sends the <Q3> report by Monday.",
        "items": [{ "name": "Q3 report", "detail": "12 pages, due Monday" }],
    });
    let stub = Stub::always(Reply::answer(&answer)).await;
    let out = Scratch::new("out");
    let base_url = stub.base_url();
    let env = [
        ("OPENAI_API_KEY", KEY),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("OPENAI_MODEL", MODEL),
    ];
    let run = invoke(&inputs(), &env, &out.0).await;
    assert_eq!(run.code, Some(0), "{}", run.printed);
    assert_eq!(run.callback["ok"], true);
    assert_eq!(run.callback["output_type"], "file");
    let files: Vec<(&str, &str)> = run.callback["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| {
                    (
                        f["filename"].as_str().unwrap_or_default(),
                        f["mime_type"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(files, [("report.html", "text/html"), ("items.csv", "text/csv")]);
    let html = std::fs::read_to_string(out.0.join("report.html")).unwrap();
    assert!(
        html.contains("<p>Bob sends the &lt;Q3&gt; report by Monday.</p>"),
        "{html}"
    );
    assert!(
        html.contains("<tr><td>Q3 report</td><td>12 pages, due Monday</td></tr>"),
        "{html}"
    );
    assert!(html.contains("Tone: formal"), "{html}");
    assert_eq!(
        std::fs::read_to_string(out.0.join("items.csv")).unwrap(),
        "name,detail\r\nQ3 report,\"12 pages, due Monday\"\r\n"
    );
    assert!(!run.printed.contains(KEY), "{}", run.printed);

    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen[0].body["model"], MODEL);
    assert!(
        seen[0].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("a formal, professional tone")
    );
    drop(out);
    // The files are written, then removed with the scratch directory.
}

#[tokio::test]
async fn a_missing_key_fails_the_order_and_says_which_variable_to_set() {
    let stub = Stub::always(Reply::answer(&json!({ "summary": "s" }))).await;
    let base_url = stub.base_url();
    let out = Scratch::new("nokey");
    let out_path = out.0.clone();
    let run = invoke(&inputs(), &[("OPENAI_BASE_URL", base_url.as_str())], &out.0).await;
    assert_eq!(run.code, Some(1), "{}", run.printed);
    assert_eq!(run.callback["ok"], false);
    assert_eq!(
        run.callback["error"],
        "the model API key is not configured: the seller must set OPENAI_API_KEY in the short's environment"
    );
    assert!(stub.seen().is_empty());
    drop(out);
    assert!(
        !std::fs::exists(&out_path).unwrap_or(true),
        "the scratch directory is removed"
    );
}

#[tokio::test]
async fn a_refused_key_is_reported_and_never_printed() {
    let message = format!("Incorrect API key provided: {KEY}.");
    let stub = Stub::always(Reply::error(401, &message)).await;
    let base_url = stub.base_url();
    let out = Scratch::new("refused");
    let env = [("OPENAI_API_KEY", KEY), ("OPENAI_BASE_URL", base_url.as_str())];
    let run = invoke(&inputs(), &env, &out.0).await;
    assert_eq!(run.code, Some(1), "{}", run.printed);
    assert_eq!(
        run.callback["error"],
        "the model API refused the request (401 Unauthorized) (check OPENAI_API_KEY): Incorrect API key provided: <redacted>."
    );
    assert!(!run.printed.contains(KEY), "{}", run.printed);
    assert_eq!(stub.seen()[0].body["model"], "gpt-4o-mini", "the default model");
}

#[tokio::test]
async fn rate_limits_are_retried_on_the_configured_schedule() {
    let stub = Stub::always(Reply::rate_limited(None)).await;
    let base_url = stub.base_url();
    let out = Scratch::new("limited");
    let env = [
        ("OPENAI_API_KEY", KEY),
        ("OPENAI_BASE_URL", base_url.as_str()),
        ("SUMMARIZE_RETRY_BASE_MS", "10"),
    ];
    let run = invoke(&inputs(), &env, &out.0).await;
    assert_eq!(run.code, Some(1), "{}", run.printed);
    assert_eq!(
        run.callback["error"],
        "the model API is rate limiting requests (429 Too Many Requests, 4 attempts): try again in a few minutes"
    );
    // Each retry is logged, with its wait: 10 ms, doubled at each.
    assert_eq!(
        run.printed.matches("the model API failed; retrying").count(),
        3,
        "{}",
        run.printed
    );
    for wait in ["10ms", "20ms", "40ms"] {
        assert_eq!(
            run.printed.matches(&format!("retry_in={wait}")).count(),
            1,
            "{}",
            run.printed
        );
    }
    assert!(!run.printed.contains(KEY), "{}", run.printed);
    let seen = stub.seen();
    assert_eq!(seen.len(), 4);
    // And kept: each wait at least the one logged, and not much more (a loaded machine is slow).
    for (pair, wait) in seen.windows(2).zip([10, 20, 40]) {
        let waited = pair[1].at - pair[0].at;
        assert!(
            waited >= Duration::from_millis(wait) && waited < Duration::from_millis(wait + 2000),
            "waited {waited:?} for {wait} ms"
        );
    }
}

/// Runs the binary with `args` and no environment but `PATH`: its exit code and standard output.
/// It is killed, and the test fails, past [`RUN_WAIT`].
/// The exit status of `child`, waited for without blocking the runtime (which may serve the stub
/// meanwhile); killed, and the test failed, past [`RUN_WAIT`].
async fn wait(mut child: std::process::Child, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > RUN_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran longer than {RUN_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(args: &[&str]) -> (Option<i32>, String) {
    let dir = Scratch::new("run");
    std::fs::create_dir_all(&dir.0).unwrap();
    let stdout_path = dir.0.join("stdout");
    let child = Command::new(env!("CARGO_BIN_EXE_summarize-short"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let status = wait(child, &format!("{args:?}")).await;
    (status.code(), std::fs::read_to_string(&stdout_path).unwrap())
}

#[tokio::test]
async fn form_prints_the_inputs_the_platform_form_needs() {
    let (code, text) = run(&["form"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text,
        "summarize  POST /shorts/summarize\n\
         \x20 key       type                                 required  label\n\
         \x20 document  file_*                               yes       Text or CSV file to summarize\n\
         \x20 tone      select: neutral | friendly | formal  no        Tone of the summary\n\n"
    );
    let (code, json) = run(&["form", "summarize", "--json"]).await;
    assert_eq!(code, Some(0), "{json}");
    let form: Value = serde_json::from_str(json.trim()).expect("one JSON line");
    assert_eq!(
        form,
        json!({
            "short": "summarize",
            "path": "/shorts/summarize",
            "inputs": [
                { "key": "document", "type": "file_*", "required": true, "label": "Text or CSV file to summarize" },
                { "key": "tone", "type": "select", "required": false, "label": "Tone of the summary",
                  "options": ["neutral", "friendly", "formal"] },
            ],
            "problems": [],
            "notes": [],
        })
    );
    let (code, _) = run(&["form", "nope"]).await;
    assert_eq!(code, Some(2), "an unknown short is a usage error");
}
