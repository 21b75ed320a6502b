//! A real HTTP double of the SellerShorts platform, for tests.
//!
//! [`MockPlatform`] listens on `127.0.0.1`, plays the platform's callback endpoint as documented —
//! the secret checked (401), JSON only (415), the 4.5 MB body limit (413), duplicates answered 200 —
//! records every callback, and can be told to misbehave: given status codes, delays, or dropped
//! connections for the next calls.
//!
//! Test a short of your own end to end like this (add `shorts-runtime` with the `testing` feature
//! to your `[dev-dependencies]`):
//!
//! ```
//! use std::time::Duration;
//! use shorts_runtime::prelude::*;
//! use shorts_runtime::testing::MockPlatform;
//!
//! #[derive(Deserialize)]
//! struct Input { text: String }
//!
//! #[ai_short]
//! async fn shout(input: Input) -> Result<String> {
//!     Ok(input.text.to_uppercase())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let platform = MockPlatform::start().await?;
//! let app = App::builder().config(platform.config()).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(app.serve(listener, std::future::pending()));
//!
//! // Send the webhook the platform would send for an order.
//! let order_id = "550e8400-e29b-41d4-a716-446655440000";
//! let body = platform.webhook_body(order_id, serde_json::json!({ "text": "hello" }));
//! let status = platform.send_webhook(&format!("http://{addr}/shorts/shout"), &body).await?;
//! assert_eq!(status, 200);
//!
//! // See the callback the platform received.
//! let callback = platform.wait_for(order_id, Duration::from_secs(10)).await.expect("a callback");
//! assert_eq!(callback.body["result_text"], "HELLO");
//! # Ok(())
//! # }
//! ```

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, Secret, WebhookAuth};
use crate::wire::platform::{CALLBACK_BODY_LIMIT, CALLBACK_SECRET_HEADER};

/// The platform's callback path.
const CALLBACK_PATH: &str = "/api/orders/callback";

/// What the mock does to one of the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status and no side effect.
    Status(u16),
    /// Wait this long, then handle the call normally.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
}

/// One request the mock received, whatever it answered.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
    /// The `x-callback-secret` header, if sent.
    pub secret: Option<String>,
    /// The raw body (empty when a fault answered before reading it).
    pub body: Bytes,
}

/// A callback the mock accepted (answered 200).
#[derive(Debug, Clone)]
pub struct Callback {
    /// The JSON body.
    pub body: serde_json::Value,
    /// Whether an earlier callback for the same order had already been accepted (the platform
    /// ignores such duplicates).
    pub duplicate: bool,
    /// The size of the body in bytes.
    pub size: usize,
}

impl Callback {
    /// The `order_id` of the body.
    pub fn order_id(&self) -> &str {
        self.body["order_id"].as_str().unwrap_or_default()
    }

    /// Whether this is a success callback (`ok: true`).
    pub fn ok(&self) -> bool {
        self.body["ok"].as_bool().unwrap_or(false)
    }
}

struct State {
    faults: Mutex<VecDeque<Fault>>,
    attempts: Mutex<Vec<Attempt>>,
    callbacks: Mutex<Vec<Callback>>,
    completed: Mutex<HashSet<String>>,
    changed: Notify,
    accepted: broadcast::Sender<Callback>,
}

impl State {
    fn new() -> Self {
        Self {
            faults: Mutex::default(),
            attempts: Mutex::default(),
            callbacks: Mutex::default(),
            completed: Mutex::default(),
            changed: Notify::new(),
            accepted: broadcast::channel(64).0,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Builds a [`MockPlatform`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MockPlatformBuilder {
    secret: String,
    body_limit: usize,
}

impl MockPlatformBuilder {
    /// The callback secret the mock expects.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = secret.into();
        self
    }

    /// The largest callback body accepted (default: the documented 4.5 MB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Starts listening on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start(self) -> std::io::Result<MockPlatform> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new());
        let server = Server {
            state: Arc::clone(&state),
            secret: Arc::from(self.secret.as_str()),
            body_limit: self.body_limit,
        };
        let task = tokio::spawn(server.run(listener));
        Ok(MockPlatform {
            addr,
            secret: self.secret,
            state,
            task,
        })
    }
}

/// A running double of the platform; it stops when dropped.
pub struct MockPlatform {
    addr: SocketAddr,
    secret: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl MockPlatform {
    /// The webhook auth value [`MockPlatform::config`] configures, sent as `x-api-key`.
    pub const WEBHOOK_KEY: &'static str = "mock-webhook-key";

    /// A builder, to choose the secret or the body limit.
    pub fn builder() -> MockPlatformBuilder {
        MockPlatformBuilder {
            secret: format!("mock-secret-{:016x}", fastrand::u64(..)),
            body_limit: CALLBACK_BODY_LIMIT,
        }
    }

    /// Starts a mock with a random secret and the documented limits.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::builder().start().await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its callback endpoint, `http://127.0.0.1:PORT/api/orders/callback`.
    pub fn callback_url(&self) -> String {
        format!("http://{}{CALLBACK_PATH}", self.addr)
    }

    /// The callback secret it expects.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A configuration that serves on `127.0.0.1:0`, delivers to this mock with its secret,
    /// expects `x-api-key: `[`MockPlatform::WEBHOOK_KEY`] on webhooks, and retries quickly
    /// (`0s, 50ms, 100ms, 200ms, 400ms`).
    pub fn config(&self) -> Config {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            callback_secret: Some(Secret::new(self.secret.clone())),
            webhook_auth: WebhookAuth::new("x-api-key", Self::WEBHOOK_KEY)
                .into_iter()
                .collect(),
            callback_url: url::Url::parse(&self.callback_url())
                .unwrap_or_else(|_| Config::default().callback_url),
            retry_schedule: [0, 50, 100, 200, 400].map(Duration::from_millis).to_vec(),
            unauthorized_retry: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
            ..Config::default()
        }
    }

    /// The documented default webhook body (protocol.md §2.3) for an order of this mock.
    pub fn webhook_body(&self, order_id: &str, inputs: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "short_id": "abc123",
            "order_id": order_id,
            "inputs": inputs,
            "callback_url": self.callback_url(),
            "ts": 1_736_032_405,
        })
    }

    /// POSTs `body` to a short's webhook `url` as the platform would, with the auth header that
    /// [`MockPlatform::config`] expects, and returns the status code.
    ///
    /// # Errors
    ///
    /// When the request cannot be sent.
    pub async fn send_webhook(&self, url: &str, body: &serde_json::Value) -> Result<u16, reqwest::Error> {
        let response = reqwest::Client::new()
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-api-key", Self::WEBHOOK_KEY)
            .body(body.to_string())
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Applies `fault` to each of the next `n` calls (after faults already queued).
    pub fn inject(&self, n: usize, fault: Fault) {
        lock(&self.state.faults).extend(std::iter::repeat_n(fault, n));
    }

    /// Answers the next `n` calls with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inject(n, Fault::Status(status));
    }

    /// Delays the next `n` calls by `delay`.
    pub fn delay_next(&self, n: usize, delay: Duration) {
        self.inject(n, Fault::Delay(delay));
    }

    /// Drops the connection of the next `n` calls without answering.
    pub fn drop_next(&self, n: usize) {
        self.inject(n, Fault::Drop);
    }

    /// Every request received so far, in order.
    pub fn attempts(&self) -> Vec<Attempt> {
        lock(&self.state.attempts).clone()
    }

    /// A stream of the callbacks accepted from now on (a slow reader misses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<Callback> {
        self.state.accepted.subscribe()
    }

    /// Every callback accepted so far, duplicates included, in order.
    pub fn callbacks(&self) -> Vec<Callback> {
        lock(&self.state.callbacks).clone()
    }

    /// Waits up to `timeout` for the first accepted callback of `order_id`.
    pub async fn wait_for(&self, order_id: &str, timeout: Duration) -> Option<Callback> {
        let find = || {
            lock(&self.state.callbacks)
                .iter()
                .find(|c| c.order_id() == order_id)
                .cloned()
        };
        self.wait_until(timeout, find).await
    }

    /// Waits up to `timeout` until `n` callbacks (duplicates included) have been accepted, and
    /// returns them all.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> Option<Vec<Callback>> {
        let enough = || {
            let callbacks = lock(&self.state.callbacks);
            (callbacks.len() >= n).then(|| callbacks.clone())
        };
        self.wait_until(timeout, enough).await
    }

    async fn wait_until<T>(&self, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = check() {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check();
            }
        }
    }
}

impl Drop for MockPlatform {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for MockPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockPlatform")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Server {
    state: Arc<State>,
    secret: Arc<str>,
    body_limit: usize,
}

/// Returned to hyper to close a connection without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a scripted fault")
    }
}

impl std::error::Error for Dropped {}

type Answer = Result<Response<Full<Bytes>>, Dropped>;

impl Server {
    async fn run(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let server = server.clone();
                    async move { server.handle(request).await }
                });
                // A dropped connection surfaces here as an error; that is the point.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Answer {
        let fault = lock(&self.state.faults).pop_front();
        let secret = request
            .headers()
            .get(CALLBACK_SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match fault {
            Some(Fault::Status(status)) => {
                return self.record(status, secret, Bytes::new(), "scripted fault");
            }
            Some(Fault::Drop) => {
                self.push_attempt(None, secret, Bytes::new());
                return Err(Dropped);
            }
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            None => {}
        }
        if request.method() != Method::POST || request.uri().path() != CALLBACK_PATH {
            return self.record(404, secret, Bytes::new(), "not found");
        }
        if secret.as_deref() != Some(&*self.secret) {
            return self.record(401, secret, Bytes::new(), "missing or invalid x-callback-secret");
        }
        let json = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return self.record(415, secret, Bytes::new(), "expected application/json");
        }
        let body = match Limited::new(request.into_body(), self.body_limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return self.record(413, secret, Bytes::new(), "body exceeds the size limit"),
        };
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let valid = parsed
            .as_ref()
            .is_some_and(|v| v["ok"].is_boolean() && v["order_id"].as_str().is_some_and(|id| !id.is_empty()));
        let Some(parsed) = parsed.filter(|_| valid) else {
            return self.record(400, secret, body, "invalid payload");
        };
        let order_id = parsed["order_id"].as_str().unwrap_or_default().to_owned();
        let duplicate = !lock(&self.state.completed).insert(order_id);
        let callback = Callback {
            body: parsed,
            duplicate,
            size: body.len(),
        };
        lock(&self.state.callbacks).push(callback.clone());
        // No subscriber is fine.
        let _ = self.state.accepted.send(callback);
        self.record(200, secret, body, "")
    }

    fn push_attempt(&self, status: Option<u16>, secret: Option<String>, body: Bytes) {
        lock(&self.state.attempts).push(Attempt { status, secret, body });
        self.state.changed.notify_waiters();
    }

    fn record(&self, status: u16, secret: Option<String>, body: Bytes, error: &str) -> Answer {
        self.push_attempt(Some(status), secret, body);
        let body = if status == 200 {
            r#"{"ok":true}"#.to_owned()
        } else {
            serde_json::json!({ "ok": false, "error": error }).to_string()
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}
