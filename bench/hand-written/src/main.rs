//! The short of the benchmarks, written by hand as a careful engineer would, in two flavours:
//!
//! - `b0`: an axum handler that checks the auth header, parses the webhook, answers 200 and POSTs
//!   the callback from a tokio task with one shared reqwest client. Not durable.
//! - `b1 DB`: the same, plus one SQLite commit per webhook (WAL, `synchronous=FULL`) before
//!   answering, and a background task that claims stored orders, POSTs their callbacks and marks
//!   them delivered: the durability of shorts, without grouped commits.
//!
//! Both listen on `BIND` (and print `listening on ADDR` once they do) and call back `CALLBACK_URL` with `CALLBACK_SECRET`; the webhook must carry
//! `x-api-key: API_KEY`.
#![allow(clippy::expect_used, reason = "a benchmark baseline: its setup fails loudly")]

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Notify;

#[derive(Deserialize)]
struct Webhook {
    order_id: String,
    #[serde(default)]
    inputs: serde_json::Value,
}

struct App {
    client: reqwest::Client,
    callback_url: String,
    secret: String,
    api_key: String,
    db: Option<sqlx::SqlitePool>,
    work: Notify,
}

fn env(name: &str) -> String {
    std::env::var(name).expect(name)
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let db = match mode.as_str() {
            "b0" => None,
            "b1" => Some(open(&std::env::args().nth(2).expect("b1 DB")).await),
            _ => {
                eprintln!("usage: hand-written-short b0 | b1 DB");
                std::process::exit(2);
            }
        };
        let app = Arc::new(App {
            client: reqwest::Client::new(),
            callback_url: env("CALLBACK_URL"),
            secret: env("CALLBACK_SECRET"),
            api_key: env("API_KEY"),
            db,
            work: Notify::new(),
        });
        if app.db.is_some() {
            tokio::spawn(deliver_stored(Arc::clone(&app)));
        }
        let router = Router::new().route("/shorts/echo", post(webhook)).with_state(app);
        let listener = tokio::net::TcpListener::bind(env("BIND")).await.expect("bind");
        // The address actually bound, for a caller that asked for port 0.
        println!("listening on {}", listener.local_addr().expect("bound address"));
        axum::serve(listener, router).await.expect("serve");
    });
}

async fn open(path: &str) -> sqlx::SqlitePool {
    let options = SqliteConnectOptions::from_str("sqlite://")
        .expect("options")
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, payload BLOB NOT NULL, state TEXT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("schema");
    // The deliverer polls for received orders: an index of those alone keeps the poll from
    // scanning the delivered rows, which grow with every order.
    sqlx::query("CREATE INDEX IF NOT EXISTS orders_received ON orders (order_id) WHERE state = 'received'")
        .execute(&pool)
        .await
        .expect("schema");
    pool
}

async fn webhook(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    if headers
        .get("x-api-key")
        .is_none_or(|key| key.as_bytes() != app.api_key.as_bytes())
    {
        return (StatusCode::UNAUTHORIZED, r#"{"ok":false}"#);
    }
    let Ok(webhook) = serde_json::from_slice::<Webhook>(&body) else {
        return (StatusCode::BAD_REQUEST, r#"{"ok":false}"#);
    };
    match &app.db {
        None => {
            let app = Arc::clone(&app);
            tokio::spawn(async move { callback(&app, &webhook).await });
        }
        Some(db) => {
            let stored = sqlx::query("INSERT INTO orders (order_id, payload, state) VALUES ($1, $2, 'received') ON CONFLICT DO NOTHING")
                .bind(&webhook.order_id)
                .bind(body.as_ref())
                .execute(db)
                .await;
            if stored.is_err() {
                return (StatusCode::SERVICE_UNAVAILABLE, r#"{"ok":false}"#);
            }
            app.work.notify_one();
        }
    }
    (StatusCode::OK, r#"{"ok":true}"#)
}

/// The echo short's result, POSTed until the platform answers 2xx (bounded).
async fn callback(app: &App, webhook: &Webhook) {
    let body = serde_json::json!({
        "ok": true,
        "order_id": webhook.order_id,
        "output_type": "text",
        "result_text": webhook.inputs.get("text").and_then(|t| t.as_str()).unwrap_or_default(),
    })
    .to_string();
    for _ in 0..5 {
        let sent = app
            .client
            .post(&app.callback_url)
            .header("content-type", "application/json")
            .header("x-callback-secret", &app.secret)
            .body(body.clone())
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Claims stored orders, delivers them, marks them delivered: one commit each.
async fn deliver_stored(app: Arc<App>) {
    let Some(db) = app.db.clone() else { return };
    loop {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT order_id, payload FROM orders WHERE state = 'received' LIMIT 64")
                .fetch_all(&db)
                .await
                .unwrap_or_default();
        if rows.is_empty() {
            tokio::select! {
                () = app.work.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            continue;
        }
        let mut tasks = Vec::with_capacity(rows.len());
        for (order_id, payload) in rows {
            sqlx::query("UPDATE orders SET state = 'running' WHERE order_id = $1")
                .bind(&order_id)
                .execute(&db)
                .await
                .ok();
            let (app, db) = (Arc::clone(&app), db.clone());
            tasks.push(tokio::spawn(async move {
                if let Ok(webhook) = serde_json::from_slice::<Webhook>(&payload) {
                    callback(&app, &webhook).await;
                }
                sqlx::query("UPDATE orders SET state = 'delivered' WHERE order_id = $1")
                    .bind(&order_id)
                    .execute(&db)
                    .await
                    .ok();
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}
