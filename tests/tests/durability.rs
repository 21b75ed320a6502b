//! Orders survive the process: results delivered after a restart, running orders released at
//! shutdown, the polling status endpoint, and operators' retries.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shorts_runtime::prelude::*;
use shorts_runtime::testing::{Endpoint, MockPlatform};
use shorts_runtime::{OrderState, Retried, StoreConfig};
use shorts_tests::{PATIENCE, Served};

fn database(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shorts-durability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("orders.db")
}

/// A server on `platform` keeping its orders in the SQLite file `db`.
async fn serve_on(platform: MockPlatform, db: &std::path::Path, short: Short, grace: Duration) -> Served {
    let db = db.to_owned();
    Served::start_on(
        platform,
        move |config| {
            config.store = StoreConfig::Sqlite(db);
            config.shutdown_grace = grace;
            // Long enough that only a release, not an expiry, can hand an order over.
            config.lease = Duration::from_secs(60);
        },
        |builder| builder.without_registered().short(short),
    )
    .await
}

#[tokio::test]
async fn a_result_not_yet_delivered_is_delivered_by_the_next_start() {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let short = || {
        Short::new("count", |_: Value, order: Order| async move {
            RUNS.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>(format!("result for {}", order.id()))
        })
    };
    let db = database("undelivered");
    let platform = MockPlatform::start().await.expect("mock");
    // The first callback hangs at the platform while the server stops.
    platform.delay_next(1, Duration::from_secs(8));
    let mut first = serve_on(platform, &db, short(), Duration::from_millis(200)).await;
    assert_eq!(first.order("/shorts/count", "o-restart", json!({})).await, 200);
    let platform = &first.platform;
    shorts_tests::until("the callback to reach the platform", || {
        !platform.attempts_at(Endpoint::Callback).is_empty()
    })
    .await;
    first.shutdown().await;
    assert!(
        first.platform.callbacks().is_empty(),
        "not delivered before the restart"
    );

    // The next start finds the stored result and delivers it, without running the short again.
    let callback_url = first.platform.callback_url();
    let second = Served::start_on(
        MockPlatform::builder()
            .secret(first.platform.secret())
            .start()
            .await
            .expect("mock"),
        {
            let db = db.clone();
            move |config| {
                config.store = StoreConfig::Sqlite(db);
                config.callback_url = callback_url.parse().expect("url");
            }
        },
        |builder| builder.without_registered().short(short()),
    )
    .await;
    let callback = first
        .platform
        .wait_for("o-restart", PATIENCE)
        .await
        .expect("delivered after the restart");
    assert_eq!(callback.body["result_text"], "result for o-restart");
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    second.stop().await;
}

#[tokio::test]
async fn a_shutdown_releases_running_orders_to_the_next_start() {
    static STARTS: AtomicUsize = AtomicUsize::new(0);
    let short = || {
        Short::new("slow", |_: Value, _: Order| async {
            // The first run outlasts the shutdown's grace; the second is quick.
            if STARTS.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok::<_, Error>("finished")
        })
    };
    let db = database("release");
    let platform = MockPlatform::start().await.expect("mock");
    let mut first = serve_on(platform, &db, short(), Duration::from_millis(200)).await;
    assert_eq!(first.order("/shorts/slow", "o-release", json!({})).await, 200);
    shorts_tests::until("the first run to start", || STARTS.load(Ordering::SeqCst) == 1).await;
    first.shutdown().await;

    // Released, not left to a 60 s lease: the next start takes it at once.
    let platform = MockPlatform::builder()
        .secret(first.platform.secret())
        .start()
        .await
        .expect("mock");
    let callback_url = first.platform.callback_url();
    let db2 = db.clone();
    let second = Served::start_on(
        platform,
        move |config| {
            config.store = StoreConfig::Sqlite(db2);
            config.callback_url = callback_url.parse().expect("url");
        },
        |builder| builder.without_registered().short(short()),
    )
    .await;
    let callback = first
        .platform
        .wait_for("o-release", PATIENCE)
        .await
        .expect("delivered by the next start");
    assert_eq!(callback.body["result_text"], "finished");
    assert_eq!(STARTS.load(Ordering::SeqCst), 2);
    second.stop().await;
}

#[tokio::test]
async fn the_status_endpoint_answers_for_polling_mode() {
    let short = Short::new("poll", |input: Value, _: Order| async move {
        if input["slow"] == true {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        if input["fail"] == true {
            return Err(Error::msg("no data for that site"));
        }
        Ok::<_, Error>("analysis")
    });
    let served = Served::start_with(|_| {}, |b| b.without_registered().short(short)).await;
    for (id, inputs) in [
        ("o-done", json!({})),
        ("o-failed", json!({"fail": true})),
        ("o-running", json!({"slow": true})),
    ] {
        assert_eq!(served.order("/shorts/poll", id, inputs).await, 200);
    }
    served.callback("o-done").await;
    served.callback("o-failed").await;
    let key = [("x-api-key", MockPlatform::WEBHOOK_KEY)];
    let status = |id: &str| {
        let url = served.url(&format!("/shorts/poll/status/{id}"));
        async move {
            let mut request = reqwest::Client::new().get(url);
            for (name, value) in key {
                request = request.header(name, value);
            }
            let response = request.send().await.expect("status");
            let code = response.status().as_u16();
            (
                code,
                serde_json::from_str::<Value>(&response.text().await.unwrap_or_default()).unwrap_or_default(),
            )
        }
    };
    assert_eq!(
        status("o-done").await,
        (
            200,
            json!({"status": "completed", "ok": true, "order_id": "o-done", "output_type": "text", "result_text": "analysis"})
        )
    );
    assert_eq!(
        status("o-failed").await,
        (
            200,
            json!({"status": "failed", "ok": false, "order_id": "o-failed", "error": "no data for that site"})
        )
    );
    assert_eq!(status("o-running").await, (200, json!({"status": "processing"})));
    assert_eq!(status("o-unknown").await.0, 404);
    let anonymous = reqwest::get(served.url("/shorts/poll/status/o-done"))
        .await
        .expect("status");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_dead_order_can_be_retried() {
    let short = Short::new("echo", |_: Value, _: Order| async { Ok::<_, Error>("hello") });
    let served = Served::start_with(|_| {}, |b| b.without_registered().short(short)).await;
    served.platform.fail_next(1, 400);
    assert_eq!(served.order("/shorts/echo", "o-dead", json!({})).await, 200);
    let app = served.app.clone();
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = app.orders(Some(OrderState::Dead), 10).await.expect("orders");
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "o-dead");
    assert_eq!(dead[0].attempts, 1, "the refused POST counts");
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("the platform refused the callback (400)"))
    );
    assert!(served.platform.callbacks().is_empty());

    assert_eq!(
        app.retry("o-dead").await.expect("retry"),
        Retried::Redelivering {
            payload_purged: false
        }
    );
    assert!(
        matches!(
            app.retry("o-dead").await.expect("retry"),
            Retried::NotStuck(OrderState::Delivering | OrderState::Delivered)
        ),
        "only dead or paused orders"
    );
    assert_eq!(app.retry("o-nope").await.expect("retry"), Retried::Unknown);
    let callback = served.callback("o-dead").await;
    assert_eq!(callback["result_text"], "hello");
    let record = served.delivered("o-dead").await;
    // The refused POST and the accepted one.
    assert_eq!(
        (record.state, record.runs, record.attempts),
        (OrderState::Delivered, 1, 2)
    );
    served.stop().await;
}

/// The short sees the buyer's `job_token` (in `Order::job_token` and `Order::payload_json`); once
/// its result is stored, the stored webhook body keeps everything but the token, and polling still
/// answers with the result.
#[tokio::test]
async fn the_job_token_is_erased_once_the_result_is_stored() {
    let short = Short::new("amazon", |_: Value, order: Order| async move {
        let payload = order.payload_json()?;
        let token = order.job_token().unwrap_or("none").to_owned();
        Ok::<_, Error>(format!("{token} {}", payload["job_token"]))
    });
    let db = database("token");
    let platform = MockPlatform::start().await.expect("mock");
    let served = serve_on(platform, &db, short, Duration::from_secs(5)).await;
    let mut body = served
        .platform
        .webhook_body("o-token", json!({"q": "a job_token among the inputs"}));
    body["job_token"] = json!("eyJ.bearer-secret");
    let url = served.url("/shorts/amazon");
    assert_eq!(
        served.platform.send_webhook(&url, &body).await.expect("sent"),
        200
    );
    let callback = served.callback("o-token").await;
    assert_eq!(
        callback["result_text"],
        r#"eyJ.bearer-secret "eyJ.bearer-secret""#
    );
    served.delivered("o-token").await;

    let status = reqwest::Client::new()
        .get(served.url("/shorts/amazon/status/o-token"))
        .header("x-api-key", MockPlatform::WEBHOOK_KEY)
        .send()
        .await
        .expect("status");
    assert_eq!(status.status().as_u16(), 200);
    let status: Value = serde_json::from_str(&status.text().await.expect("body")).expect("JSON");
    assert_eq!(status["status"], "completed");
    assert_eq!(status["result_text"], callback["result_text"]);

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("database");
    let (payload,): (Vec<u8>,) =
        sqlx::query_as("SELECT payload FROM shorts_payloads WHERE order_id = 'o-token'")
            .fetch_one(&pool)
            .await
            .expect("stored body");
    pool.close().await;
    assert!(!String::from_utf8_lossy(&payload).contains("bearer-secret"));
    let mut expected = body.clone();
    expected["job_token"] = Value::Null;
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).expect("still JSON"),
        expected
    );
    served.stop().await;
    let _ = std::fs::remove_dir_all(db.parent().expect("dir"));
}
