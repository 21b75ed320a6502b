//! The binary's command line: `invoke`, `list`, configuration errors, and `serve` for real.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shorts_runtime::testing::{self, Listener, MockPlatform};

const BIN: &str = env!("CARGO_BIN_EXE_hello-short");

/// The binary with a clean environment.
fn hello() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Tests run side by side: none takes the admin listener's port.
        .env("SHORTS_ADMIN_BIND", "off");
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("the binary runs")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn invoke_prints_the_callback() {
    let output = run(hello().args(["invoke", "echo", "--input", r#"{"text": "hello", "shout": true}"#]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let callback = stdout_json(&output);
    assert_eq!(callback["ok"], true);
    assert_eq!(callback["output_type"], "text");
    assert_eq!(callback["result_text"], "HELLO");
    assert!(callback["order_id"].as_str().is_some_and(|id| id.len() == 36));
}

#[test]
fn invoke_replays_a_whole_webhook_from_a_file() {
    let dir = std::env::temp_dir().join(format!("hello-short-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("webhook.json");
    let webhook = json!({
        "short_id": "abc123",
        "order_id": "550e8400-e29b-41d4-a716-446655440000",
        "inputs": {"text": "from a file"},
        "callback_url": "https://api.sellershorts.com/api/orders/callback",
        "ts": 1736032405
    });
    std::fs::write(&file, webhook.to_string()).expect("write");
    let output = run(hello().args(["invoke", "echo", "--input-file"]).arg(&file));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout_json(&output),
        json!({"ok": true, "order_id": "550e8400-e29b-41d4-a716-446655440000",
               "output_type": "text", "result_text": "from a file"})
    );
}

#[test]
fn invoke_exits_1_on_a_failed_order() {
    let output = run(hello().args(["invoke", "echo", "--input", r#"{"txt": "typo"}"#]));
    assert_eq!(output.status.code(), Some(1));
    let callback = stdout_json(&output);
    assert_eq!(callback["ok"], false);
    assert_eq!(callback["error"], "invalid input: missing field `text`");
}

#[test]
fn invoke_usage_errors_exit_2() {
    let unknown = run(hello().args(["invoke", "nope", "--input", "{}"]));
    assert_eq!(unknown.status.code(), Some(2));
    assert_eq!(
        stderr(&unknown).trim(),
        "error: no short named `nope`; this binary has: echo"
    );

    let not_json = run(hello().args(["invoke", "echo", "--input", "{text"]));
    assert_eq!(not_json.status.code(), Some(2));
    assert!(stderr(&not_json).starts_with("error: the input is not JSON"));

    let missing = run(hello().args(["invoke", "echo"]));
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn list_shows_the_short() {
    let output = run(hello().arg("list"));
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text.trim(),
        "echo  POST /shorts/echo  timeout 15m  concurrency 32  Echo the buyer's text back."
    );
}

#[test]
fn configuration_errors_are_one_line_and_exit_2() {
    let no_secret = run(hello().env("SHORTS_WEBHOOK_AUTH", "x-api-key: k"));
    assert_eq!(no_secret.status.code(), Some(2));
    assert_eq!(
        stderr(&no_secret).trim(),
        "error: `SHORTS_CALLBACK_SECRET` is not set: set it to the callback secret shown in the Connect step"
    );

    let bad_auth = run(hello()
        .arg("serve")
        .env("SHORTS_CALLBACK_SECRET", "s")
        .env("SHORTS_WEBHOOK_AUTH", "k"));
    assert_eq!(bad_auth.status.code(), Some(2));
    let message = stderr(&bad_auth);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("error: `SHORTS_WEBHOOK_AUTH` is invalid"),
        "{message}"
    );

    let bad_port = run(hello().env("PORT", "eighty"));
    assert_eq!(bad_port.status.code(), Some(2));
    assert_eq!(
        stderr(&bad_port).trim(),
        "error: `PORT` is invalid: \"eighty\" is not a port number"
    );
}

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A socket for the server, on a free port the test holds.
fn listener() -> Listener {
    Listener::bind().expect("a socket on 127.0.0.1")
}

/// Waits (bounded) until the server on `port` answers its health check.
async fn wait_serving(port: u16) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        testing::wait_serving(addr, Duration::from_secs(20)).await,
        "the server on port {port} is not serving"
    );
}

/// The binary serving on `listener`, delivering to `platform`, quiet.
fn server(platform: &MockPlatform, listener: &Listener) -> Command {
    let mut command = hello();
    listener.pass_to(&mut command).expect("pass the socket");
    command
        .env("SHORTS_CALLBACK_SECRET", platform.secret())
        .env("SHORTS_CALLBACK_URL", platform.callback_url())
        .env(
            "SHORTS_WEBHOOK_AUTH",
            format!("x-api-key: {}", MockPlatform::WEBHOOK_KEY),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Sends SIGTERM and returns the exit code (bounded wait).
async fn terminate(child: &mut Child) -> Option<i32> {
    let terminated = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(terminated.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_takes_a_webhook_and_stops_on_sigterm() {
    let platform = MockPlatform::start().await.expect("mock");
    let listener = listener();
    let port = listener.addr().port();
    let db = std::env::temp_dir().join(format!("hello-short-{port}.db"));
    let child = server(&platform, &listener)
        .env("SHORTS_STORE", format!("sqlite://{}", db.display()))
        .spawn()
        .expect("spawn");
    let mut child = Child(child);
    wait_serving(port).await;

    let order = "550e8400-e29b-41d4-a716-446655440000";
    let body = platform.webhook_body(order, json!({"text": "over the wire"}));
    let status = platform
        .send_webhook(&format!("http://127.0.0.1:{port}/shorts/echo"), &body)
        .await
        .expect("webhook sent");
    assert_eq!(status, 200);
    let callback = platform
        .wait_for(order, Duration::from_secs(10))
        .await
        .expect("callback");
    assert_eq!(callback.body["result_text"], "over the wire");
    assert_eq!(terminate(&mut child).await, Some(0));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// The README's `curl` example for `serve --mock`: its auth header and its body.
fn readme_curl() -> ((String, String), Value) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
    let curl = &readme[readme
        .find("curl -X POST localhost:8080")
        .expect("the curl example")..];
    let curl = &curl[..curl.find("```").expect("the end of the example")];
    let quoted: Vec<&str> = curl.split('\'').skip(1).step_by(2).collect();
    let auth = quoted
        .iter()
        .find_map(|q| q.strip_prefix("x-api-key: "))
        .expect("an x-api-key header");
    let body = quoted.last().expect("a body");
    (
        ("x-api-key".to_owned(), auth.to_owned()),
        serde_json::from_str(body).expect("the body is JSON"),
    )
}

#[tokio::test]
async fn serve_with_the_mock_platform_takes_the_readme_example_and_prints_its_callback() {
    let listener = listener();
    let port = listener.addr().port();
    let log = std::env::temp_dir().join(format!("hello-mock-{}.log", std::process::id()));
    let mut command = hello();
    listener.pass_to(&mut command).expect("pass the socket");
    let child = command
        .args(["serve", "--mock"])
        .env_remove("SHORTS_WEBHOOK_AUTH")
        .env_remove("SHORTS_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut child = Child(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    wait_serving(port).await;

    let ((header, value), body) = readme_curl();
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/shorts/echo"))
        .header(header, value)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("webhook sent");
    assert_eq!(response.status(), 200);
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !printed.ends_with("}\n") && Instant::now() < deadline {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(100)) {
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    let callback: Value = serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(
        callback,
        json!({"ok": true, "order_id": body["order_id"], "output_type": "text", "result_text": "hello"})
    );
    assert_eq!(terminate(&mut child).await, Some(0));
    // The documented happy path warns about nothing.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(!text.contains("WARN"), "{text}");
}

#[tokio::test]
async fn operators_list_orders_and_retry_a_dead_one() {
    let platform = MockPlatform::start().await.expect("mock");
    platform.fail_next(1, 400);
    let listener = listener();
    let port = listener.addr().port();
    let db = std::env::temp_dir().join(format!("hello-short-ops-{port}.db"));
    let store = format!("sqlite://{}", db.display());
    let child = server(&platform, &listener)
        .env("SHORTS_STORE", &store)
        .env("SHORTS_POLL_INTERVAL", "100ms")
        .spawn()
        .expect("spawn");
    let mut child = Child(child);
    wait_serving(port).await;
    let body = platform.webhook_body("o-ops", json!({"text": "again"}));
    let url = format!("http://127.0.0.1:{port}/shorts/echo");
    assert_eq!(platform.send_webhook(&url, &body).await.expect("sent"), 200);

    // The platform refused the callback (400): the order is dead.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = run(hello()
            .args(["orders", "--state", "dead"])
            .env("SHORTS_STORE", &store));
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        if text.contains("o-ops") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        listed.contains("dead") && listed.contains("o-ops") && listed.contains("short=echo"),
        "{listed}"
    );
    assert!(
        listed.contains("error: the platform refused the callback (400)"),
        "{listed}"
    );
    assert!(listed.contains("attempts=1"), "the refused POST counts: {listed}");

    let retried = run(hello().args(["retry", "o-ops"]).env("SHORTS_STORE", &store));
    assert_eq!(retried.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&retried.stdout).trim(),
        "order o-ops will be delivered again"
    );
    let callback = platform
        .wait_for("o-ops", Duration::from_secs(10))
        .await
        .expect("delivered after the retry");
    assert_eq!(callback.body["result_text"], "again");
    // The retry keeps the refused POST: two in all.
    let delivered = orders_until(&store, &["--state", "delivered"], "o-ops").await;
    assert!(delivered.contains("attempts=2"), "{delivered}");
    // The refusal is history once the order is delivered.
    assert!(
        delivered.contains("  earlier error: the platform refused the callback (400)"),
        "{delivered}"
    );
    let none = run(hello()
        .args(["orders", "--state", "dead"])
        .env("SHORTS_STORE", &store));
    assert_eq!(
        String::from_utf8_lossy(&none.stdout).trim(),
        "no orders in state dead"
    );

    let unknown = run(hello().args(["retry", "nope"]).env("SHORTS_STORE", &store));
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(stderr(&unknown).trim(), "error: no order `nope`");
    let delivered = run(hello().args(["retry", "o-ops"]).env("SHORTS_STORE", &store));
    assert_eq!(delivered.status.code(), Some(1));
    assert_eq!(
        stderr(&delivered).trim(),
        "error: order `o-ops` is delivered; only dead or paused orders are retried"
    );
    let bad_state = run(hello()
        .args(["orders", "--state", "lost"])
        .env("SHORTS_STORE", &store));
    assert_eq!(bad_state.status.code(), Some(2));
    assert_eq!(terminate(&mut child).await, Some(0));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// `orders ARGS` on `store`, run again (bounded) until its output contains `wanted`.
async fn orders_until(store: &str, args: &[&str], wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = run(hello().arg("orders").args(args).env("SHORTS_STORE", store));
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        if text.contains(wanted) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn orders_on_an_empty_store_say_so() {
    let db = std::env::temp_dir().join(format!("hello-short-empty-{}.db", std::process::id()));
    let store = format!("sqlite://{}", db.display());
    // No file there: not a server's store, and not made into an empty one.
    for command in [&["orders"][..], &["retry", "o-1"]] {
        let missing = run(hello().args(command).env("SHORTS_STORE", &store));
        assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
        assert!(
            stderr(&missing).contains("there is no order store at"),
            "{}",
            stderr(&missing)
        );
        assert!(!db.exists());
    }
    // An empty file is an empty store.
    std::fs::File::create(&db).expect("create the store's file");
    let all = run(hello().arg("orders").env("SHORTS_STORE", &store));
    assert_eq!(all.status.code(), Some(0), "{}", stderr(&all));
    assert_eq!(String::from_utf8_lossy(&all.stdout).trim(), "no orders");
    let dead = run(hello()
        .args(["orders", "--state", "dead"])
        .env("SHORTS_STORE", &store));
    assert_eq!(dead.status.code(), Some(0), "{}", stderr(&dead));
    assert_eq!(
        String::from_utf8_lossy(&dead.stdout).trim(),
        "no orders in state dead"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// Every POST counts, as the log counts them: a schedule of three attempts against a platform
/// answering 503 ends with `attempts=3` in `orders` and in the log's dead-letter line.
#[tokio::test]
async fn orders_count_every_callback_post_as_the_log_does() {
    let platform = MockPlatform::start().await.expect("mock");
    platform.fail_next(3, 503);
    let listener = listener();
    let port = listener.addr().port();
    let db = std::env::temp_dir().join(format!("hello-short-503-{port}.db"));
    let log = std::env::temp_dir().join(format!("hello-short-503-{port}.log"));
    let store = format!("sqlite://{}", db.display());
    let child = server(&platform, &listener)
        .env("SHORTS_STORE", &store)
        .env("SHORTS_POLL_INTERVAL", "100ms")
        .env("SHORTS_RETRY_SCHEDULE", "0s,1s,1s")
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut child = Child(child);
    wait_serving(port).await;
    let body = platform.webhook_body("o-503", json!({"text": "x"}));
    let url = format!("http://127.0.0.1:{port}/shorts/echo");
    assert_eq!(platform.send_webhook(&url, &body).await.expect("sent"), 200);

    let listed = orders_until(&store, &["--state", "dead"], "o-503").await;
    assert_eq!(terminate(&mut child).await, Some(0));
    assert_eq!(platform.attempts().len(), 3);
    assert!(listed.contains("attempts=3"), "{listed}");
    let log_text = std::fs::read_to_string(&log).expect("log");
    let given_up = log_text
        .lines()
        .find(|line| line.contains("dead-lettered"))
        .unwrap_or_default();
    assert!(given_up.contains("attempts=3"), "{log_text}");
    assert!(listed.contains("gave up after 3 attempts"), "{listed}");
    let _ = std::fs::remove_file(&log);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// The permission bits of `path`.
fn mode(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o777
}

/// Under the usual umask (022) and under none (000), the database and the `-wal` and `-shm` files
/// beside it are the owner's only while the server runs; a database made readable by others is
/// warned about at the next start.
#[tokio::test]
async fn the_database_is_private_whatever_the_umask() {
    for umask in ["022", "000"] {
        let platform = MockPlatform::start().await.expect("mock");
        let listener = listener();
        let port = listener.addr().port();
        let db = std::env::temp_dir().join(format!("hello-short-umask-{umask}-{port}.db"));
        let db = db.display().to_string();
        let store = format!("sqlite://{db}");
        // The umask is the process's: the server gets its own through a shell.
        let command = server(&platform, &listener);
        let mut shell = Command::new("sh");
        listener.pass_to(&mut shell).expect("pass the socket");
        let shell = shell
            .args(["-c", &format!("umask {umask} && exec \"$0\" serve"), BIN])
            .env_clear()
            .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env("SHORTS_STORE", &store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut child = Child(shell);
        wait_serving(port).await;
        let body = platform.webhook_body("o-private", json!({"text": "x"}));
        let url = format!("http://127.0.0.1:{port}/shorts/echo");
        assert_eq!(platform.send_webhook(&url, &body).await.expect("sent"), 200);
        platform
            .wait_for("o-private", Duration::from_secs(10))
            .await
            .expect("callback");
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(
                mode(&format!("{db}{suffix}")),
                0o600,
                "umask {umask}: {db}{suffix}"
            );
        }
        assert_eq!(terminate(&mut child).await, Some(0));

        // Made readable by others: every command that opens it says so.
        let chmod = Command::new("chmod").args(["644", &db]).status().expect("chmod");
        assert!(chmod.success());
        let listed = run(hello().arg("orders").env("SHORTS_STORE", &store));
        assert_eq!(listed.status.code(), Some(0));
        assert!(
            stderr(&listed).contains("the order database can be read by other users"),
            "{}",
            stderr(&listed)
        );
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{db}{suffix}"));
        }
    }
}

/// Past `SHORTS_DEAD_RETENTION` a dead order loses its webhook body (the buyer's data) but keeps
/// its record and result: `orders` says the payload is gone, and `retry` delivers the stored result.
#[tokio::test]
async fn a_dead_order_past_its_retention_keeps_its_result_but_not_its_payload() {
    let platform = MockPlatform::start().await.expect("mock");
    platform.fail_next(1, 400);
    let listener = listener();
    let port = listener.addr().port();
    let db = std::env::temp_dir().join(format!("hello-short-purge-{port}.db"));
    let store = format!("sqlite://{}", db.display());
    let child = server(&platform, &listener)
        .env("SHORTS_STORE", &store)
        .env("SHORTS_POLL_INTERVAL", "100ms")
        .env("SHORTS_DEAD_RETENTION", "1s")
        .spawn()
        .expect("spawn");
    let mut child = Child(child);
    wait_serving(port).await;
    let body = platform.webhook_body("o-purged", json!({"text": "kept result"}));
    let url = format!("http://127.0.0.1:{port}/shorts/echo");
    assert_eq!(platform.send_webhook(&url, &body).await.expect("sent"), 200);

    let listed = orders_until(&store, &["--state", "dead"], "payload purged").await;
    assert!(
        listed.contains("o-purged") && listed.contains("attempts=1  payload purged"),
        "{listed}"
    );
    let retried = run(hello().args(["retry", "o-purged"]).env("SHORTS_STORE", &store));
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    assert_eq!(
        String::from_utf8_lossy(&retried.stdout).trim(),
        "order o-purged will be delivered again from its stored result \
         (its webhook payload was purged after SHORTS_DEAD_RETENTION)"
    );
    let callback = platform
        .wait_for("o-purged", Duration::from_secs(10))
        .await
        .expect("delivered after the retry");
    assert_eq!(callback.body["result_text"], "kept result");
    let delivered = orders_until(&store, &["--state", "delivered"], "o-purged").await;
    assert!(delivered.contains("attempts=2  payload purged"), "{delivered}");
    assert_eq!(terminate(&mut child).await, Some(0));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
