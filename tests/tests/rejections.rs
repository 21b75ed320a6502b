//! What the webhook refuses, and that a refusal stores nothing and runs nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_runtime::testing::MockPlatform;
use shorts_tests::{Served, WEBHOOK_HEADERS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Deserialize)]
struct Input {
    text: String,
}

/// Echoes the text: a run shows as a callback.
#[ai_short]
async fn counted(input: Input) -> Result<String> {
    Ok(input.text)
}

fn webhook(order_id: &str) -> String {
    json!({
        "short_id": "abc123",
        "order_id": order_id,
        "inputs": {"text": "hi"},
        "callback_url": "https://api.sellershorts.com/api/orders/callback",
        "ts": 1736032405
    })
    .to_string()
}

/// Gives a refused order a moment to (wrongly) run, then checks nothing reached the platform.
async fn assert_nothing_ran(served: &Served, order_id: &str) {
    assert!(
        served
            .platform
            .wait_for(order_id, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(served.platform.attempts().is_empty());
}

#[tokio::test]
async fn a_missing_or_wrong_auth_header_is_401() {
    let served = Served::start().await;
    let key = MockPlatform::WEBHOOK_KEY;
    let (almost, bearer) = (&key[..key.len() - 1], format!("Bearer {key}"));
    for headers in [
        vec![("content-type", "application/json")],
        vec![("content-type", "application/json"), ("x-api-key", "wrong")],
        vec![("content-type", "application/json"), ("x-api-key", almost)],
        vec![
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
        ],
    ] {
        let (status, body) = served.post("/shorts/counted", &headers, webhook("o-401")).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(
            body,
            json!({"ok": false, "error": "missing or invalid authentication header"})
        );
    }
    assert_nothing_ran(&served, "o-401").await;
    // Nothing was stored: the same order, now authenticated, runs.
    let (status, _) = served
        .post("/shorts/counted", WEBHOOK_HEADERS, webhook("o-401"))
        .await;
    assert_eq!(status, 200);
    assert!(
        served
            .platform
            .wait_for("o-401", shorts_tests::PATIENCE)
            .await
            .is_some()
    );
    served.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let served = Served::start().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![("x-api-key", MockPlatform::WEBHOOK_KEY)];
        headers.extend(content_type.map(|ct| ("content-type", ct)));
        let (status, body) = served.post("/shorts/counted", &headers, webhook("o-415")).await;
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(
            body,
            json!({"ok": false, "error": "expected `Content-Type: application/json`"})
        );
    }
    assert_nothing_ran(&served, "o-415").await;
}

#[tokio::test]
async fn a_body_that_is_not_a_webhook_is_400_naming_the_field() {
    let served = Served::start().await;
    let cases = [
        (
            "not json at all",
            "the body is not JSON: expected ident at line 1 column 2",
            ".",
        ),
        ("", "the body is empty", "."),
        (r#"{"inputs": {}}"#, "missing field `order_id`", "."),
        (
            r#"{"order_id": 42}"#,
            "invalid type: integer `42`, expected a string",
            "order_id",
        ),
        (r#"{"order_id": ""}"#, "`order_id` is empty", "order_id"),
        (
            r#"{"order_id": "a", "short_id": 7}"#,
            "invalid type: integer `7`, expected a string",
            "short_id",
        ),
        (r#"[1, 2]"#, "expected a JSON object with an `order_id`", "."),
        (r#""order""#, "expected a JSON object with an `order_id`", "."),
    ];
    for (body, error, path) in cases {
        let (status, answer) = served.post("/shorts/counted", WEBHOOK_HEADERS, body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["ok"], false);
        assert_eq!(answer["error"], error, "{body}");
        assert_eq!(answer["path"], path, "{body}");
    }
    assert!(served.platform.attempts().is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_utf8_anywhere_is_400_and_not_stored() {
    let served = Served::start().await;
    let mut body = served
        .platform
        .webhook_body("o-latin1", json!({"text": "hi"}))
        .to_string()
        .into_bytes();
    // An unknown field whose string is Latin-1, not UTF-8.
    body.truncate(body.len() - 1);
    body.extend_from_slice(b",\"note\":\"caf\xe9\"}");
    let (status, answer) = served.post("/shorts/counted", WEBHOOK_HEADERS, body).await;
    assert_eq!(status, 400);
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the body is not JSON: it is not valid UTF-8"),
        "{error}"
    );
    let stored = reqwest::Client::new()
        .get(served.url("/shorts/counted/status/o-latin1"))
        .header("x-api-key", MockPlatform::WEBHOOK_KEY)
        .send()
        .await
        .expect("status answered");
    assert_eq!(stored.status(), 404, "nothing was stored");
    assert_nothing_ran(&served, "o-latin1").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_before_it_is_read() {
    let served = Served::start_with(|config| config.max_body = 1024, |builder| builder).await;
    // Declared too large: refused on the header, the body never sent in full.
    let mut stream = tokio::net::TcpStream::connect(served.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /shorts/counted HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {}\r\ncontent-length: 100000000\r\n\r\n{{",
        MockPlatform::WEBHOOK_KEY
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than the limit of 1024 bytes"), "{answer}");

    // Chunked (no length): refused once the limit is crossed.
    let big = format!(
        r#"{{"order_id": "o-413", "inputs": {{"text": "{}"}}}}"#,
        "x".repeat(4096)
    );
    let chunks = chunked(big.into_bytes());
    let (status, body) = served.post("/shorts/counted", WEBHOOK_HEADERS, chunks).await;
    assert_eq!(status, 413);
    assert_eq!(body["ok"], false);
    assert_nothing_ran(&served, "o-413").await;
}

/// A streamed body, sent with `Transfer-Encoding: chunked`.
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(512).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn a_duplicate_order_is_answered_200_and_runs_nothing() {
    static ONCE: AtomicUsize = AtomicUsize::new(0);
    let short = Short::new("once", |_: serde_json::Value, _: Order| async {
        ONCE.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Error>("done")
    });
    let served = Served::start_with(|_| {}, |builder| builder.short(short)).await;
    for _ in 0..3 {
        let (status, body) = served
            .post("/shorts/once", WEBHOOK_HEADERS, webhook("o-dup"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"ok": true}));
    }
    assert!(
        served
            .platform
            .wait_for("o-dup", shorts_tests::PATIENCE)
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ONCE.load(Ordering::SeqCst), 1);
    assert_eq!(served.platform.callbacks().len(), 1);
    served.stop().await;
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let served = Served::start().await;
    let health = reqwest::get(served.url("/healthz")).await.expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap_or_default(), r#"{"ok":true}"#);
    let (status, _) = served
        .post("/shorts/nope", WEBHOOK_HEADERS, webhook("o-404"))
        .await;
    assert_eq!(status, 404);
    let get = reqwest::get(served.url("/shorts/counted")).await.expect("get");
    // The auth check comes first: a stranger learns nothing of the routes.
    assert_eq!(get.status(), 401);
    let get = reqwest::Client::new()
        .get(served.url("/shorts/counted"))
        .header("x-api-key", MockPlatform::WEBHOOK_KEY)
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let served = Served::start_with(
        |config| config.header_read_timeout = Duration::from_millis(300),
        |builder| builder,
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(served.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"POST /shorts/counted HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut buffer = vec![0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the server closed the connection in time");
    // Closed (0 bytes, or a reset), possibly after a 408.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(
            String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 408"),
            "unexpected answer"
        ),
    }
}

#[tokio::test]
async fn a_slow_body_is_408() {
    let served = Served::start_with(
        |config| config.body_read_timeout = Duration::from_millis(300),
        |builder| builder,
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(served.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /shorts/counted HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {}\r\ncontent-length: 100\r\n\r\n{{",
        MockPlatform::WEBHOOK_KEY
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"));
}
