//! Alerts (`SHORTS_ALERT_URL`) as a receiver on 127.0.0.1 gets them: the exact message of a
//! dead-lettered order and of a delivery paused on a 401, and no secret in either, even when the
//! platform's answer quotes one.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use shorts_runtime::prelude::*;
use shorts_runtime::testing::{Endpoint, Fault, MockPlatform};
use shorts_runtime::{OrderState, Secret};
use shorts_tests::{PATIENCE, Served};
use tokio::sync::Notify;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

/// A file of 2,000 bytes: uploaded when the inline limit is below it.
#[ai_short]
async fn document(input: Input) -> Result<File> {
    Ok(File::new(
        "doc.txt",
        input.text.repeat(2_000 / input.text.len().max(1)),
    ))
}

/// A local alert receiver: keeps every body it is sent.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    /// Listens on 127.0.0.1; returns the receiver and its URL.
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let app = Router::new()
            .route("/hooks/alerts", post(Self::take))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/alerts", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    async fn take(State(receiver): State<Self>, body: axum::Json<Value>) -> StatusCode {
        receiver.bodies.lock().unwrap().push(body.0);
        receiver.arrived.notify_waiters();
        StatusCode::OK
    }

    /// The alerts received once there are `count`, waiting for them.
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            let bodies = self.bodies.lock().unwrap().clone();
            if bodies.len() >= count {
                return bodies;
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "{count} alerts did not arrive; received {bodies:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_dead_letter_and_a_pause_are_alerted() {
    let (receiver, url) = Receiver::start().await;
    let served = Served::start_with(|c| c.alert_url = Some(Secret::new(url)), |b| b).await;

    served.platform.fail_next(1, 400);
    assert_eq!(
        served
            .order("/shorts/echo", "o-dead", json!({"text": "hi"}))
            .await,
        200
    );
    served.reached("o-dead", OrderState::Dead).await;
    let alerts = receiver.wait_for(1).await;
    let error = r#"the platform refused the callback (400): {"ok":false,"error":"scripted fault"}"#;
    assert_eq!(
        alerts[0],
        json!({
            "text": format!("shorts: order o-dead of short echo was dead-lettered: {error}"),
            "event": "dead",
            "short": "echo",
            "order_id": "o-dead",
            "error": error,
            "folded": 0,
        })
    );

    served.platform.fail_next(1, 401);
    assert_eq!(
        served
            .order("/shorts/echo", "o-paused", json!({"text": "hi"}))
            .await,
        200
    );
    let alerts = receiver.wait_for(2).await;
    assert_eq!(
        alerts[1],
        json!({
            "text": "shorts: callbacks are paused: the platform refused the callback secret (401) \
                     for order o-paused of short echo; check SHORTS_CALLBACK_SECRET",
            "event": "paused",
            "short": "echo",
            "order_id": "o-paused",
            "error": "the platform refused the callback secret (401)",
            "folded": 0,
        })
    );
    // Paused, not lost: the next attempt is delivered.
    served.delivered("o-paused").await;
    assert_eq!(receiver.wait_for(2).await.len(), 2);
    served.stop().await;
}

#[tokio::test]
async fn a_refused_upload_secret_pauses_delivery_and_is_alerted() {
    let (receiver, url) = Receiver::start().await;
    let served = Served::start_with(
        |c| {
            c.alert_url = Some(Secret::new(url));
            c.inline_limit = 1_000;
        },
        |b| b,
    )
    .await;
    served.platform.inject(Endpoint::Prepare, 1, Fault::Status(401));
    assert_eq!(
        served
            .order("/shorts/document", "o-upload", json!({"text": "ab"}))
            .await,
        200
    );
    let alerts = receiver.wait_for(1).await;
    assert_eq!(
        alerts[0],
        json!({
            "text": "shorts: callbacks are paused: the platform refused the callback secret (401) \
                     for order o-upload of short document; check SHORTS_CALLBACK_SECRET",
            "event": "paused",
            "short": "document",
            "order_id": "o-upload",
            "error": "the platform refused the callback secret (401)",
            "folded": 0,
        })
    );
    // Paused, not lost: the next attempt prepares the upload again and delivers.
    let record = served.delivered("o-upload").await;
    assert_eq!(record.state, OrderState::Delivered);
    assert_eq!(served.platform.attempts_at(Endpoint::Prepare).len(), 2);
    assert_eq!(receiver.wait_for(1).await.len(), 1);
    served.stop().await;
}

/// A platform that refuses every callback with 400, quoting the secret it was sent and a job
/// token in its answer.
async fn quoting_platform(job_token: &'static str) -> String {
    async fn refuse(headers: HeaderMap, State(job_token): State<&'static str>) -> (StatusCode, String) {
        let secret = headers
            .get("x-callback-secret")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let body = json!({"error": "invalid callback", "job_token": job_token, "echo": secret});
        (StatusCode::BAD_REQUEST, body.to_string())
    }
    let app = Router::new()
        .route("/api/orders/callback", post(refuse))
        .with_state(job_token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/orders/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_alert_never_quotes_the_secret_or_a_job_token() {
    const JOB_TOKEN: &str = "jt-7a1b2c3d4e5f";
    let (receiver, url) = Receiver::start().await;
    let callback_url = quoting_platform(JOB_TOKEN).await;
    let platform = MockPlatform::start().await.unwrap();
    let secret = platform.secret().to_owned();
    let served = Served::start_on(
        platform,
        |c| {
            c.alert_url = Some(Secret::new(url));
            c.callback_url = callback_url.parse().unwrap();
        },
        |b| b,
    )
    .await;
    let mut body = served.platform.webhook_body("o-quoted", json!({"text": "hi"}));
    body["job_token"] = json!(JOB_TOKEN);
    let status = served
        .platform
        .send_webhook(&served.url("/shorts/echo"), &body)
        .await
        .unwrap();
    assert_eq!(status, 200);
    served.reached("o-quoted", OrderState::Dead).await;
    let alerts = receiver.wait_for(1).await;
    let sent = alerts[0].to_string();
    assert!(!sent.contains(JOB_TOKEN), "{sent}");
    assert!(!sent.contains(&secret), "{sent}");
    assert_eq!(
        alerts[0]["error"],
        r#"the platform refused the callback (400): {"error":"invalid callback","job_token":"<redacted>","echo":"<redacted>"}"#
    );
    // The order's record keeps the platform's answer as it was: the redaction is the alert's.
    let record = served.app.order("o-quoted").await.unwrap().unwrap();
    assert!(record.last_error.unwrap_or_default().contains("invalid callback"));
    served.stop().await;
}
