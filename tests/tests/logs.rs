//! The log of the real binary: with `SHORTS_LOG_FORMAT=json` every line is a JSON object, and
//! every line about an order, the short's own `tracing` lines included, names it with `order_id`
//! and `short`; any other format is a configuration error.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use shorts_runtime::testing::MockPlatform;
use shorts_tests::PATIENCE;
use shorts_tests::process::{Instance, common_env, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_crashy");

/// The log's lines, each parsed as JSON (a line that is not JSON fails the test).
fn json_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The log's lines once one of them says `message` about `order_id`, waiting for it.
async fn wait_for_line(log: &Path, order_id: &str, message: &str) -> Vec<Value> {
    let step = Duration::from_millis(20);
    for _ in 0..PATIENCE.as_millis() / step.as_millis() {
        let lines = json_lines(log);
        if lines
            .iter()
            .any(|l| l["order_id"] == order_id && l["message"] == message)
        {
            return lines;
        }
        tokio::time::sleep(step).await;
    }
    panic!("no line {message:?} for {order_id}:\n{:#?}", json_lines(log));
}

#[tokio::test]
async fn every_line_about_an_order_names_it_in_json() {
    let dir = temp_dir("shorts-logs", "json");
    let log = dir.join("server.log");
    let platform = MockPlatform::start().await.unwrap();
    let mut env = common_env(&platform, "memory", &dir.join("runs"));
    env.retain(|(key, _)| key != "RUST_LOG");
    env.push(("RUST_LOG".to_owned(), "info".to_owned()));
    env.push(("SHORTS_LOG_FORMAT".to_owned(), "json".to_owned()));
    let instance = Instance::logged(BIN, env, &log);
    instance.wait_serving().await;

    let order_id = "o-logged";
    let url = format!("http://127.0.0.1:{}/shorts/work", instance.port());
    let body = platform.webhook_body(order_id, json!({"sleep_ms": 5}));
    assert_eq!(platform.send_webhook(&url, &body).await.unwrap(), 200);
    assert!(platform.wait_for(order_id, PATIENCE).await.is_some());
    let lines = wait_for_line(&log, order_id, "callback accepted").await;

    // Every line is an object with a timestamp, a level, a message and a target.
    for line in &lines {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    let about: Vec<&Value> = lines.iter().filter(|l| l["order_id"] == order_id).collect();
    for line in &about {
        assert_eq!(line["short"], "work", "{line}");
    }
    let messages: Vec<&str> = about.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in [
        "order accepted",
        "working on the order",
        "order finished",
        "callback accepted",
    ] {
        assert!(messages.contains(&expected), "no {expected:?} in {messages:?}");
    }
    // The short's own line, with its own field beside the order's.
    let own = about
        .iter()
        .find(|l| l["message"] == "working on the order")
        .unwrap();
    assert_eq!(own["target"], "crashy");
    assert_eq!(own["sleep_ms"], 5);
    assert_eq!(own["level"], "INFO");
    // The engine's lines about the order are all among them.
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        if target.starts_with("shorts_runtime::worker") {
            assert_eq!(line["order_id"], order_id, "{line}");
        }
    }
    drop(instance);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stderr of `list` run with `RUST_LOG` set to `rust_log` (or unset), the allocator left alone
/// (which is logged at debug level).
fn list_logging(rust_log: Option<&str>) -> String {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHORTS_MALLOC_TUNING", "off")
        .arg("list");
    if let Some(rust_log) = rust_log {
        command.env("RUST_LOG", rust_log);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn rust_log_lets_debug_lines_through_by_target() {
    const DEBUG_LINE: &str = "allocator settings left alone";
    for on in ["debug", "warn,shorts_runtime::cli=debug", "shorts_runtime=trace"] {
        let log = list_logging(Some(on));
        assert!(log.contains(DEBUG_LINE), "RUST_LOG={on}:\n{log}");
    }
    for off in [None, Some("info"), Some("debug,shorts_runtime::cli=info")] {
        let log = list_logging(off);
        assert!(!log.contains(DEBUG_LINE), "RUST_LOG={off:?}:\n{log}");
    }
    // A filter of another form: said, and the default used.
    let log = list_logging(Some("[order{short=echo}]=debug"));
    assert!(log.contains("is not a log filter"), "{log}");
    assert!(!log.contains(DEBUG_LINE), "{log}");
}

#[test]
fn an_unknown_log_format_is_a_configuration_error() {
    let output = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SHORTS_LOG_FORMAT", "yaml")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: `SHORTS_LOG_FORMAT` is invalid: \"yaml\" is not a log format; expected `text` or `json`\n"
    );
    assert!(output.stdout.is_empty());
}
