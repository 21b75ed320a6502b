//! Callback delivery against a misbehaving platform: retries, refusals, the secret, the URL.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::time::Duration;

use serde_json::json;
use shorts_runtime::OrderState;
use shorts_runtime::prelude::*;
use shorts_runtime::testing::MockPlatform;
use shorts_tests::{PATIENCE, Served, statuses};

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

/// Sends one order and returns its accepted callback.
async fn deliver(served: &Served, order_id: &str) -> serde_json::Value {
    assert_eq!(
        served
            .order("/shorts/echo", order_id, json!({"text": "hi"}))
            .await,
        200
    );
    served.callback(order_id).await
}

#[tokio::test]
async fn server_errors_and_429_are_retried() {
    let served = Served::start().await;
    served.platform.fail_next(2, 500);
    served.platform.fail_next(1, 429);
    served.platform.fail_next(1, 503);
    let body = deliver(&served, "o-5xx").await;
    assert_eq!(body["result_text"], "hi");
    assert_eq!(
        statuses(&served.platform),
        [Some(500), Some(500), Some(429), Some(503), Some(200)]
    );
    let secret = served.platform.secret().to_owned();
    assert!(
        served
            .platform
            .attempts()
            .iter()
            .all(|a| a.secret.as_deref() == Some(secret.as_str()))
    );
    served.stop().await;
}

#[tokio::test]
async fn dropped_connections_and_timeouts_are_retried() {
    let served = Served::start_with(
        |config| config.callback_timeout = Duration::from_millis(300),
        |b| b,
    )
    .await;
    served.platform.drop_next(1);
    served.platform.delay_next(1, Duration::from_secs(5));
    let started = std::time::Instant::now();
    let body = deliver(&served, "o-net").await;
    assert_eq!(body["ok"], true);
    // The third attempt succeeded: the client gave up on the delayed call after 300 ms instead of
    // waiting the 5 s for its answer.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let attempts = served.platform.attempts();
    assert_eq!(
        attempts.first().map(|a| a.status),
        Some(None),
        "the first call was dropped"
    );
    assert_eq!(served.platform.callbacks().len(), 1);
    served.stop().await;
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let served = Served::start().await;
    served.platform.fail_next(1, 400);
    assert_eq!(
        served.order("/shorts/echo", "o-400", json!({"text": "hi"})).await,
        200
    );
    // Dead at once, after one attempt.
    served.reached("o-400", OrderState::Dead).await;
    assert_eq!(statuses(&served.platform), [Some(400)]);
    assert!(served.platform.callbacks().is_empty());
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let served = Served::start().await;
    served.platform.fail_next(1, 307);
    assert_eq!(
        served.order("/shorts/echo", "o-307", json!({"text": "hi"})).await,
        200
    );
    served.reached("o-307", OrderState::Dead).await;
    assert_eq!(statuses(&served.platform), [Some(307)]);
}

#[tokio::test]
async fn retries_end_when_the_schedule_does() {
    let served = Served::start().await;
    served.platform.fail_next(100, 503);
    assert_eq!(
        served
            .order("/shorts/echo", "o-exhausted", json!({"text": "hi"}))
            .await,
        200
    );
    // The mock's schedule has five steps, and then the order is dead.
    served.reached("o-exhausted", OrderState::Dead).await;
    assert_eq!(statuses(&served.platform), [Some(503); 5]);
}

#[tokio::test]
async fn a_401_keeps_retrying_slowly_until_the_secret_is_accepted() {
    let served = Served::start().await;
    // More refusals than the schedule has steps: 401s do not use them up.
    served.platform.fail_next(7, 401);
    let body = deliver(&served, "o-401").await;
    assert_eq!(body["ok"], true);
    assert_eq!(statuses(&served.platform).len(), 8);
    served.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_is_retried_and_never_accepted() {
    let served = Served::start_with(
        |config| config.callback_secret = Some(shorts_runtime::Secret::new("stale")),
        |b| b,
    )
    .await;
    assert_eq!(
        served
            .order("/shorts/echo", "o-stale", json!({"text": "hi"}))
            .await,
        200
    );
    // More attempts than the schedule has steps, and the order waits, paused, for the right one.
    let enough = async {
        while served.platform.attempts().len() < 7 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(tokio::time::timeout(PATIENCE, enough).await.is_ok());
    assert_eq!(
        served.reached("o-stale", OrderState::Paused).await.state,
        OrderState::Paused
    );
    let attempts = served.platform.attempts();
    assert!(
        attempts
            .iter()
            .all(|a| a.status == Some(401) && a.secret.as_deref() == Some("stale"))
    );
    assert!(served.platform.callbacks().is_empty());
}

/// A result that cannot be uploaded instead (a URL: a text is uploaded as a file, see
/// `files.rs`) and meets a 413 ends in a failure saying so.
#[tokio::test]
async fn a_413_on_a_url_sends_a_failure_instead() {
    #[derive(Deserialize)]
    struct Big {
        size: usize,
    }
    let short = Short::new("big", |input: Big, _: Order| async move {
        Ok::<_, Error>(Url(format!("https://example.com/{}", "x".repeat(input.size))))
    });
    let platform = MockPlatform::builder()
        .body_limit(10_000)
        .start()
        .await
        .expect("mock");
    let served = Served::start_on(
        platform,
        |_| {},
        |builder| builder.without_registered().short(short),
    )
    .await;
    assert_eq!(
        served
            .order("/shorts/big", "o-413", json!({"size": 20_000}))
            .await,
        200
    );
    assert_eq!(
        served.callback("o-413").await,
        json!({"ok": false, "order_id": "o-413", "error": "the result is larger than the platform accepts in a callback"})
    );
    assert_eq!(statuses(&served.platform), [Some(413), Some(200)]);
}

#[tokio::test]
async fn a_foreign_callback_url_is_replaced_by_the_configured_one() {
    let served = Served::start().await;
    let mut body = served.platform.webhook_body("o-foreign", json!({"text": "hi"}));
    body["callback_url"] = json!("http://127.0.0.2:9/api/orders/callback");
    let url = served.url("/shorts/echo");
    assert_eq!(served.platform.send_webhook(&url, &body).await.ok(), Some(200));
    assert_eq!(served.callback("o-foreign").await["ok"], true);
    served.stop().await;
}

#[tokio::test]
async fn another_path_on_the_platform_host_never_gets_the_callback() {
    let served = Served::start().await;
    let mut body = served.platform.webhook_body("o-path", json!({"text": "hi"}));
    // Same scheme, host and port as the configured callback URL; another endpoint.
    body["callback_url"] = json!(format!("{}/prepare", served.platform.callback_url()));
    let url = served.url("/shorts/echo");
    assert_eq!(served.platform.send_webhook(&url, &body).await.ok(), Some(200));
    assert_eq!(served.callback("o-path").await["result_text"], "hi");
    assert!(
        served
            .platform
            .attempts_at(shorts_runtime::testing::Endpoint::Prepare)
            .is_empty()
    );
    served.stop().await;
}

#[tokio::test]
async fn duplicates_at_the_platform_count_as_delivered() {
    let served = Served::start().await;
    // The platform already holds a callback for this order (e.g. an earlier answer was lost).
    let client = reqwest::Client::new();
    let sent = client
        .post(served.platform.callback_url())
        .header("content-type", "application/json")
        .header("x-callback-secret", served.platform.secret())
        .body(
            json!({"ok": true, "order_id": "o-dupe", "output_type": "text", "result_text": "first"})
                .to_string(),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(sent.status(), 200);
    assert_eq!(
        served
            .order("/shorts/echo", "o-dupe", json!({"text": "second"}))
            .await,
        200
    );
    let all = served
        .platform
        .wait_for_count(2, PATIENCE)
        .await
        .expect("two callbacks");
    assert!(!all[0].duplicate && all[1].duplicate);
    assert_eq!(statuses(&served.platform), [Some(200), Some(200)]);
    served.stop().await;
}
