//! Both baselines answer a webhook and call the platform back with the order's text, as the
//! benchmarks assume.
#![allow(clippy::expect_used, reason = "test setup fails loudly")]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shorts_runtime::testing::MockPlatform;

/// Longest a baseline may take to listen, or to call back.
const LIMIT: Duration = Duration::from_secs(30);

/// A baseline's process, killed when dropped.
struct Baseline(Child);

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the baseline in `mode` on a port of its choosing; it and the address it listens on.
fn start(mode: &[&str], platform: &MockPlatform) -> (Baseline, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hand-written-short"))
        .args(mode)
        .env("BIND", "127.0.0.1:0")
        .env("CALLBACK_URL", platform.callback_url())
        .env("CALLBACK_SECRET", platform.secret())
        .env("API_KEY", MockPlatform::WEBHOOK_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the baseline starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let baseline = Baseline(child);
    // The first line says where it listens; a baseline that dies first ends the stream.
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx
        .recv_timeout(LIMIT)
        .expect("the baseline says where it listens");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not an address line: {line:?}"))
        .to_owned();
    (baseline, addr)
}

async fn answers(mode: &[&str], order_id: &str) {
    let platform = MockPlatform::start().await.expect("mock platform");
    let dir = std::env::temp_dir().join(format!("hand-written-{}-{order_id}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let db = dir.join("b1.db");
    let mut args = mode.to_vec();
    let db_arg = db.display().to_string();
    if mode == ["b1"] {
        args.push(&db_arg);
    }
    let (_baseline, addr) = start(&args, &platform);
    let body = platform.webhook_body(order_id, serde_json::json!({"text": "hello"}));
    let status = platform
        .send_webhook(&format!("http://{addr}/shorts/echo"), &body)
        .await
        .expect("the webhook is sent");
    assert_eq!(status, 200);
    let callback = platform.wait_for(order_id, LIMIT).await.expect("a callback");
    assert!(callback.ok(), "{callback:?}");
    assert_eq!(callback.body["result_text"], "hello", "{callback:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn b0_answers_and_calls_back() {
    answers(&["b0"], "order-b0").await;
}

#[tokio::test]
async fn b1_stores_answers_and_calls_back() {
    answers(&["b1"], "order-b1").await;
}
