//! Orders survive the process: results delivered after a restart, running orders released at
//! shutdown, the polling status endpoint, and operators' retries.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shorts_runtime::prelude::*;
use shorts_runtime::testing::MockPlatform;
use shorts_runtime::{FailedNow, OrderState, Retried, StoreConfig};
use shorts_tests::{PATIENCE, Served};

/// A database file in a fresh folder of its own, and the folder, removed when dropped.
fn database(name: &str) -> (PathBuf, Removed) {
    let dir = std::env::temp_dir().join(format!("shorts-durability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    (dir.join("orders.db"), Removed(dir))
}

/// A folder removed when dropped, at the end of a test, passed or failed.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    let (db, _dir) = database("undelivered");
    let platform = MockPlatform::start().await.expect("mock");
    // The first callback hangs at the platform while the server stops.
    platform.delay_next(1, Duration::from_secs(8));
    let mut first = serve_on(platform, &db, short(), Duration::from_millis(200)).await;
    assert_eq!(first.order("/shorts/count", "o-restart", json!({})).await, 200);
    // The callback is in flight, held by the platform (which records it only once answered).
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let (db, _dir) = database("release");
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
    let (db, _dir) = database("token");
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
}

/// Runs the `orders` command of the test binary on the SQLite store `db` with `args`; its output.
fn orders_command(db: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crashy"))
        .arg("orders")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .env("SHORTS_STORE", format!("sqlite://{}", db.display()))
        .output()
        .expect("run orders");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Each line of `orders --json` as JSON.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

/// `orders --json` prints each order as one JSON object per line, newest first, with the values
/// the store holds; `--short` and `--state` select them; the text output stays the default.
#[tokio::test]
async fn orders_json_prints_one_object_per_order() {
    let echo = Short::new("echo", |_: Value, _: Order| async { Ok::<_, Error>("hello") });
    let (db, _dir) = database("orders-json");
    let served = serve_on(
        MockPlatform::start().await.expect("mock"),
        &db,
        echo,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(served.order("/shorts/echo", "o-json-1", json!({})).await, 200);
    let first = served.delivered("o-json-1").await;
    served.platform.fail_next(1, 400);
    assert_eq!(served.order("/shorts/echo", "o-json-2", json!({})).await, 200);
    let second = served.reached("o-json-2", OrderState::Dead).await;
    let refused = second.last_error.clone().expect("an error");
    assert!(
        refused.starts_with("the platform refused the callback (400)"),
        "{refused}"
    );
    served.stop().await;

    let rfc3339 = |time| humantime::format_rfc3339_millis(time).to_string();
    let cursor = |record: &shorts_runtime::OrderRecord| {
        let ms = record
            .received_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        format!("{ms}.{}", record.id)
    };
    let lines = json_lines(&orders_command(&db, &["--json"]));
    assert_eq!(
        lines,
        [
            json!({
                "id": "o-json-2",
                "short": "echo",
                "state": "dead",
                "received_at": rfc3339(second.received_at),
                "runs": 1,
                "attempts": 1,
                "last_error": refused,
                "next_attempt_at": null,
                "payload_purged": false,
                "outcome": "ok",
                "failed_by_operator": false,
                "cursor": cursor(&second),
            }),
            json!({
                "id": "o-json-1",
                "short": "echo",
                "state": "delivered",
                "received_at": rfc3339(first.received_at),
                "runs": 1,
                "attempts": 1,
                "last_error": null,
                "next_attempt_at": null,
                "payload_purged": false,
                "outcome": "ok",
                "failed_by_operator": false,
                "cursor": cursor(&first),
            }),
        ]
    );
    let dead = json_lines(&orders_command(
        &db,
        &["--json", "--state", "dead", "--short", "echo"],
    ));
    assert_eq!(dead, lines[..1]);
    let limited = json_lines(&orders_command(&db, &["--json", "--limit", "1"]));
    assert_eq!(limited, lines[..1]);
    let next = limited[0]["cursor"].as_str().unwrap();
    let rest = json_lines(&orders_command(&db, &["--json", "--after", next]));
    assert_eq!(rest, lines[1..]);
    assert_eq!(orders_command(&db, &["--json", "--short", "other"]), "");
    // `--id` takes the start of an id, as the dashboard's search does.
    let by_id = json_lines(&orders_command(&db, &["--json", "--id", "o-json-"]));
    assert_eq!(by_id, lines);
    let exact = json_lines(&orders_command(&db, &["--json", "--id", "o-json-1"]));
    assert_eq!(exact, lines[1..]);
    assert_eq!(
        orders_command(&db, &["--id", "o-other"]),
        "no orders with that id\n"
    );
    assert_eq!(
        orders_command(&db, &["--short", "other"]),
        "no orders of short other\n"
    );
    let text = orders_command(&db, &[]);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains("dead") && rows[0].contains("o-json-2") && rows[0].contains("short=echo"),
        "{text}"
    );
    assert!(
        rows[1].contains("delivered")
            && rows[1].contains("o-json-1")
            && rows[1].contains("runs=1  attempts=1"),
        "{text}"
    );
}

/// An order waiting for a slot of its short is failed now: its failure callback, with the
/// operator's message, is delivered by the normal path and it never runs; the order running is
/// left alone.
#[tokio::test]
async fn a_stuck_order_is_failed_now_and_its_failure_delivered() {
    static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let short = Short::builder("slow", |_: Value, _: Order| async {
        STARTED.fetch_add(1, Ordering::SeqCst);
        let _pass = GATE.acquire().await;
        Ok::<_, Error>("finished")
    })
    .concurrency(1);
    let served = Served::start_with(|_| {}, |b| b.without_registered().short(short)).await;
    assert_eq!(served.order("/shorts/slow", "o-busy", json!({})).await, 200);
    for _ in 0..500 {
        if STARTED.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(STARTED.load(Ordering::SeqCst), 1, "the first order runs");
    assert_eq!(served.order("/shorts/slow", "o-stuck", json!({})).await, 200);
    let app = served.app.clone();
    assert_eq!(
        app.fail_now("o-busy", "stuck").await.expect("fail"),
        FailedNow::Busy
    );
    assert_eq!(
        app.fail_now("o-nope", "stuck").await.expect("fail"),
        FailedNow::Unknown
    );
    let message = "refunded: the source site is down";
    assert_eq!(
        app.fail_now("o-stuck", message).await.expect("fail"),
        FailedNow::Failing
    );
    let callback = served.callback("o-stuck").await;
    assert_eq!(
        (&callback["ok"], &callback["order_id"], &callback["error"]),
        (&json!(false), &json!("o-stuck"), &json!(message))
    );
    let record = served.delivered("o-stuck").await;
    assert_eq!((record.runs, record.attempts), (0, 1));
    assert_eq!(
        app.fail_now("o-stuck", "again").await.expect("fail"),
        FailedNow::NotStuck(OrderState::Delivered)
    );
    GATE.add_permits(2);
    assert_eq!(served.callback("o-busy").await["result_text"], "finished");
    served.delivered("o-busy").await;
    assert_eq!(STARTED.load(Ordering::SeqCst), 1, "the failed order never ran");
}
