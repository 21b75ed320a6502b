//! Building an application: the checks at start-up, the concurrency limit, graceful shutdown (of
//! `serve`, and of an application nested in a server of its own).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shorts_runtime::prelude::*;
use shorts_runtime::testing::MockPlatform;
use shorts_runtime::{BuildError, Config, OrderState, ShortBuilder, StoreConfig};
use shorts_tests::{PATIENCE, Served, TempDir};

#[derive(Deserialize)]
struct Input {}

/// Two shorts of this binary claim the same route: the binary must refuse to start.
#[ai_short(path = "/clash")]
async fn first(_input: Input) -> Result<String> {
    Ok("first".into())
}

#[ai_short(path = "/clash")]
async fn second(_input: Input) -> Result<String> {
    Ok("second".into())
}

fn ok_short(name: &str) -> ShortBuilder {
    Short::builder(name, |_: Value, _: Order| async { Ok::<_, Error>("ok") })
}

async fn config() -> (MockPlatform, Config) {
    let platform = MockPlatform::start().await.expect("mock");
    let config = platform.config();
    (platform, config)
}

#[tokio::test]
async fn shorts_of_the_binary_sharing_a_route_are_refused_at_start_up() {
    let (_platform, config) = config().await;
    let error = App::builder()
        .config(config)
        .build()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.starts_with("two shorts are served at `/clash`: `first` (tests/tests/app.rs:"),
        "{error}"
    );
    assert!(error.contains("and `second` (tests/tests/app.rs:"), "{error}");
}

#[tokio::test]
async fn hand_built_shorts_are_checked_too() {
    let (_platform, config) = config().await;
    async fn build(config: &Config, shorts: Vec<ShortBuilder>) -> Result<App, BuildError> {
        let mut builder = App::builder().config(config.clone()).without_registered();
        for short in shorts {
            builder = builder.short(short);
        }
        builder.build().await
    }
    assert!(matches!(build(&config, vec![]).await, Err(BuildError::NoShorts)));
    assert!(matches!(
        build(&config, vec![ok_short("a"), ok_short("a").path("/other")]).await,
        Err(BuildError::DuplicateName { .. })
    ));
    assert!(matches!(
        build(&config, vec![ok_short("a").path("/x"), ok_short("b").path("/x")]).await,
        Err(BuildError::DuplicatePath { .. })
    ));
    for path in ["x", "/x/", "/a//b", "/{id}", "/healthz", "/a b"] {
        assert!(
            matches!(
                build(&config, vec![ok_short("a").path(path)]).await,
                Err(BuildError::InvalidPath { .. })
            ),
            "{path}"
        );
    }
    assert!(
        build(&config, vec![ok_short("a"), ok_short("b").path("/v1/b-c_d.e~f")])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn serving_needs_the_secret_and_the_auth_header() {
    let (_platform, config) = config().await;
    let mut without_secret = config.clone();
    without_secret.callback_secret = None;
    let error = App::builder()
        .config(without_secret)
        .short(ok_short("a"))
        .without_registered()
        .build()
        .await;
    assert!(
        error
            .err()
            .is_some_and(|e| e.to_string().contains("SHORTS_CALLBACK_SECRET"))
    );
    let mut without_auth = config;
    without_auth.webhook_auth.clear();
    let error = App::builder()
        .config(without_auth)
        .short(ok_short("a"))
        .without_registered()
        .build()
        .await;
    assert!(
        error
            .err()
            .is_some_and(|e| e.to_string().contains("SHORTS_WEBHOOK_AUTH"))
    );
}

#[tokio::test]
async fn the_concurrency_limit_holds() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    // Each run waits for a permit: runs end only when the test lets them.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (r, p, g) = (Arc::clone(&running), Arc::clone(&peak), Arc::clone(&gate));
    let short = Short::builder("limited", move |_: Value, _: Order| {
        let (running, peak, gate) = (Arc::clone(&r), Arc::clone(&p), Arc::clone(&g));
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Error>("done")
        }
    })
    .concurrency(2);
    let served = Served::start_with(|_| {}, |b| b.without_registered().short(short)).await;
    for i in 0..6 {
        assert_eq!(
            served
                .order("/shorts/limited", &format!("o-{i}"), json!({}))
                .await,
            200
        );
    }
    // Two run and hold their slots; the other four wait. Then one run ends at a time.
    for finished in 0..6 {
        let expected = (6 - finished).min(2);
        let settled = async {
            while running.load(Ordering::SeqCst) != expected || served.platform.callback_count() != finished {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        assert!(
            tokio::time::timeout(PATIENCE, settled).await.is_ok(),
            "{finished} finished: {} running, {} callbacks",
            running.load(Ordering::SeqCst),
            served.platform.callback_count()
        );
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        gate.add_permits(1);
    }
    let callbacks = served
        .platform
        .wait_for_count(6, PATIENCE)
        .await
        .expect("six callbacks");
    assert!(callbacks.iter().all(|c| c.ok()));
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    served.stop().await;
}

/// Past `SHORTS_MAX_HELD`, a new order that finds no free slot is committed leased to nobody: the
/// instance's leases (and the heartbeat renewing them) stay bounded however long the backlog, and
/// the orders waiting in the store run, oldest first, as room frees.
#[tokio::test]
async fn an_instance_holds_no_more_orders_than_its_bound() {
    let dir = TempDir::new("held");
    let db = dir.path("shorts.db");
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (r, g) = (Arc::clone(&ran), Arc::clone(&gate));
    let short = Short::builder("one", move |input: Value, _: Order| {
        let (ran, gate) = (Arc::clone(&r), Arc::clone(&g));
        async move {
            ran.lock().unwrap().push(input["n"].as_u64().unwrap_or(99));
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            Ok::<_, Error>("done")
        }
    })
    .concurrency(1);
    let store = StoreConfig::Sqlite(db.clone());
    let served = Served::start_with(
        |config| {
            config.store = store;
            config.max_held = 3;
            // No poll comes in time: the orders in the store are claimed as tasks end.
            config.poll_interval = Duration::from_secs(3600);
        },
        |b| b.without_registered().short(short),
    )
    .await;
    for n in 0..8 {
        let status = served
            .order("/shorts/one", &format!("o-{n}"), json!({ "n": n }))
            .await;
        assert_eq!(status, 200);
    }
    // One runs and two wait for the slot in the instance; five wait in the store.
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open the store");
    let owned: Vec<(String, bool)> =
        sqlx::query_as("SELECT order_id, owner IS NOT NULL FROM shorts_orders ORDER BY order_id")
            .fetch_all(&mut c)
            .await
            .expect("read the store");
    let leased: Vec<&str> = owned
        .iter()
        .filter(|(_, leased)| *leased)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(leased, ["o-0", "o-1", "o-2"], "{owned:?}");
    assert_eq!(owned.len(), 8);
    gate.add_permits(8);
    let callbacks = served
        .platform
        .wait_for_count(8, PATIENCE)
        .await
        .expect("eight callbacks");
    assert!(callbacks.iter().all(|c| c.ok()));
    assert_eq!(*ran.lock().unwrap(), (0..8).collect::<Vec<u64>>(), "oldest first");
    drop(c);
    served.stop().await;
}

#[tokio::test]
async fn shutdown_lets_running_orders_finish() {
    let short = Short::new("slow", |_: Value, _: Order| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, Error>("finished")
    });
    let mut served = Served::start_with(|_| {}, |b| b.without_registered().short(short)).await;
    assert_eq!(served.order("/shorts/slow", "o-grace", json!({})).await, 200);
    assert!(served.platform.callbacks().is_empty(), "still running");
    served.shutdown().await;
    let callbacks = served.platform.callbacks();
    assert_eq!(callbacks.len(), 1, "delivered before shutdown returned");
    assert_eq!(callbacks[0].body["result_text"], "finished");
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(served.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_of_a_nested_app_lets_running_orders_finish_and_takes_no_new_order() {
    let short = Short::new("slow", |_: Value, _: Order| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, Error>("finished")
    });
    let platform = MockPlatform::start().await.expect("mock");
    let app = App::builder()
        .config(platform.config())
        .without_registered()
        .short(short)
        .build()
        .await
        .expect("app");
    // The test's own server, with a route of its own and the shorts nested under `/sell`.
    let router = axum::Router::new()
        .route("/own", axum::routing::get(|| async { "own" }))
        .nest("/sell", app.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let url = format!("http://{addr}/sell/shorts/slow");

    let body = platform.webhook_body("o-nested", json!({}));
    assert_eq!(platform.send_webhook(&url, &body).await.expect("sent"), 200);
    assert!(platform.callbacks().is_empty(), "still running");
    tokio::time::timeout(PATIENCE, app.shutdown(PATIENCE))
        .await
        .expect("shutdown within its grace");
    let callbacks = platform.callbacks();
    assert_eq!(callbacks.len(), 1, "delivered before shutdown returned");
    assert_eq!(callbacks[0].body["result_text"], "finished");
    let record = app.order("o-nested").await.expect("store").expect("stored");
    assert_eq!(record.state, OrderState::Delivered);

    // The server still runs, but the stopped engine takes no new order: 503, nothing stored.
    let late = platform.webhook_body("o-late", json!({}));
    assert_eq!(platform.send_webhook(&url, &late).await.expect("sent"), 503);
    assert!(app.order("o-late").await.expect("store").is_none());
    let own = reqwest::get(format!("http://{addr}/own"))
        .await
        .expect("own route");
    assert_eq!(own.text().await.expect("body"), "own");

    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("server stopped")
        .expect("server task")
        .expect("server");
}
