//! A real HTTP double of the SellerShorts platform, for tests.
//!
//! [`MockPlatform`] listens on `127.0.0.1` and plays the platform's side of the protocol as
//! documented:
//!
//! - the callback endpoint: the secret checked (401), JSON only (415), the 4.5 MB body limit (413),
//!   `object_key`s checked against the uploads (400), duplicates answered 200, every callback
//!   recorded;
//! - the prepare endpoint of direct upload, answering signed upload URLs that expire, with
//!   `requires_headers` and `max_bytes`;
//! - the storage behind those URLs, which, like S3, wants every required header, an exact
//!   `Content-Length` and no chunked body (501), and records each object's size and SHA-256.
//!
//! Each endpoint can be told to misbehave on its next calls: given status codes, delays, or dropped
//! connections.
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
//! let app = App::builder().config(platform.config()).build().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(app.serve(listener, std::future::pending()));
//!
//! // Send the webhook the platform would send for an order.
//! let order_id = "550e8400-e29b-41d4-a716-446655440000";
//! let body = platform.webhook_body(order_id, json!({ "text": "hello" }));
//! let status = platform.send_webhook(&format!("http://{addr}/shorts/shout"), &body).await?;
//! assert_eq!(status, 200);
//!
//! // See the callback the platform received.
//! let callback = platform.wait_for(order_id, Duration::from_secs(10)).await.expect("a callback");
//! assert_eq!(callback.body["result_text"], "HELLO");
//! # Ok(())
//! # }
//! ```

mod server;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, Secret, WebhookAuth};
use crate::wire::platform::CALLBACK_BODY_LIMIT;

/// The platform's callback path.
const CALLBACK_PATH: &str = "/api/orders/callback";
/// The platform's prepare path.
const PREPARE_PATH: &str = "/api/orders/callback/prepare";
/// Where the mock's storage serves signed upload URLs.
const STORAGE_PREFIX: &str = "/storage/";

/// The documented example's `max_bytes`: 150 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 157_286_400;

/// One of the mock's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /api/orders/callback`.
    Callback,
    /// `POST /api/orders/callback/prepare`.
    Prepare,
    /// `PUT` to a signed upload URL.
    Storage,
}

/// What the mock does to one of the next calls of an endpoint.
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
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
    /// The `x-callback-secret` header, if sent.
    pub secret: Option<String>,
    /// The raw body for callback and prepare calls (empty when a fault answered before reading
    /// it; always empty for storage).
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
    /// When the mock accepted it.
    pub received_at: std::time::Instant,
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

/// An object stored through a signed upload URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The `object_key` prepare returned.
    pub object_key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, in lowercase hex.
    pub sha256: String,
    /// The `Content-Type` it was uploaded with.
    pub content_type: String,
    /// Where its bytes were saved, when the mock saves objects
    /// ([`MockPlatformBuilder::save_objects_to`]).
    pub path: Option<PathBuf>,
    /// How long the body took to arrive, from the request's headers to its last byte.
    pub elapsed: Duration,
}

/// A file a callback returned, as the platform would show it to the buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedFile {
    /// The name the buyer sees.
    pub filename: String,
    /// Where its bytes are.
    pub contents: FileContents,
}

/// Where a returned file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileContents {
    /// Sent inline, base64 in the callback body: the decoded bytes.
    Inline(Vec<u8>),
    /// Uploaded through a signed URL: the stored object.
    Uploaded(StoredObject),
}

/// Why a callback's files cannot be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// An inline file's `file_base64` is not base64.
    #[error("file `{filename}` is not valid base64: {reason}")]
    Base64 {
        /// The file's name.
        filename: String,
        /// What the decoder said.
        reason: String,
    },
    /// An uploaded file names an object the mock does not hold.
    #[error("the uploaded file `{filename}` names an object the platform does not hold")]
    UnknownObject {
        /// The file's name.
        filename: String,
    },
}

/// An upload slot handed out by prepare.
struct Slot {
    object_key: String,
    mime_type: String,
    expires_at: Instant,
}

struct State {
    faults: Mutex<HashMap<Endpoint, VecDeque<Fault>>>,
    attempts: Mutex<Vec<Attempt>>,
    callbacks: Mutex<Vec<Callback>>,
    completed: Mutex<HashSet<String>>,
    slots: Mutex<HashMap<String, Slot>>,
    objects: Mutex<Vec<StoredObject>>,
    expire_next: Mutex<usize>,
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
            slots: Mutex::default(),
            objects: Mutex::default(),
            expire_next: Mutex::default(),
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
    max_bytes: u64,
    expires_in: Duration,
    save_to: Option<PathBuf>,
    flaky: f64,
    https: Option<(Vec<u8>, Vec<u8>)>,
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

    /// The `max_bytes` prepare answers and the storage enforces (default 150 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long upload URLs stay valid (default one hour).
    pub fn expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = expires_in;
        self
    }

    /// Fails this share (0.0 to 1.0) of the callbacks not already given a scripted fault: half
    /// answered 503, half dropped without an answer, chosen at random.
    pub fn flaky(mut self, share: f64) -> Self {
        self.flaky = share.clamp(0.0, 1.0);
        self
    }

    /// Saves uploaded objects as files in `dir` (by default only their size and hash are kept).
    pub fn save_objects_to(mut self, dir: impl Into<PathBuf>) -> Self {
        self.save_to = Some(dir.into());
        self
    }

    /// Serves HTTPS (TLS 1.2 and 1.3) with this certificate chain and private key, both PEM, instead
    /// of plain HTTP; its URLs then start with `https://127.0.0.1`. A short delivering to it must
    /// trust the chain: for a short's process, name the chain's file in `SSL_CERT_FILE`.
    pub fn https(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.https = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Starts listening on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// When no port can be bound, or the certificate given to [`MockPlatformBuilder::https`]
    /// cannot be used.
    pub async fn start(self) -> std::io::Result<MockPlatform> {
        let tls = match &self.https {
            Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new());
        let server = server::Server {
            state: Arc::clone(&state),
            secret: Arc::from(self.secret.as_str()),
            addr,
            body_limit: self.body_limit,
            max_bytes: self.max_bytes,
            expires_in: self.expires_in,
            save_to: self.save_to.map(Arc::from),
            flaky: self.flaky,
            scheme,
        };
        let task = tokio::spawn(server.run(listener, tls));
        Ok(MockPlatform {
            addr,
            scheme,
            secret: self.secret,
            state,
            task,
        })
    }
}

/// A running double of the platform; it stops when dropped.
pub struct MockPlatform {
    addr: SocketAddr,
    scheme: &'static str,
    secret: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl MockPlatform {
    /// The webhook auth value [`MockPlatform::config`] configures, sent as `x-api-key`.
    pub const WEBHOOK_KEY: &'static str = "local-test-key";

    /// A builder, to choose the secret or the limits.
    pub fn builder() -> MockPlatformBuilder {
        MockPlatformBuilder {
            secret: format!("mock-secret-{:016x}", fastrand::u64(..)),
            body_limit: CALLBACK_BODY_LIMIT,
            max_bytes: DEFAULT_MAX_BYTES,
            expires_in: Duration::from_secs(3600),
            save_to: None,
            flaky: 0.0,
            https: None,
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

    /// Its callback endpoint, `http://127.0.0.1:PORT/api/orders/callback` (`https://` when built
    /// with [`MockPlatformBuilder::https`]).
    pub fn callback_url(&self) -> String {
        format!("{}://{}{CALLBACK_PATH}", self.scheme, self.addr)
    }

    /// The callback secret it expects.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A configuration that serves on `127.0.0.1:0`, delivers to this mock with its secret,
    /// expects `x-api-key: `[`MockPlatform::WEBHOOK_KEY`] on webhooks, keeps orders in memory, and
    /// retries quickly (`0s, 50ms, 100ms, 200ms, 400ms`).
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
            store: crate::config::StoreConfig::Memory,
            lease: Duration::from_secs(2),
            poll_interval: Duration::from_millis(200),
            ..Config::default()
        }
    }

    /// The documented default webhook body (`docs/protocol.md` §2.3) for an order of this mock.
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

    /// Applies `fault` to each of the next `n` calls of `endpoint` (after faults already queued).
    pub fn inject(&self, endpoint: Endpoint, n: usize, fault: Fault) {
        lock(&self.state.faults)
            .entry(endpoint)
            .or_default()
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Answers the next `n` callbacks with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inject(Endpoint::Callback, n, Fault::Status(status));
    }

    /// Delays the next `n` callbacks by `delay`.
    pub fn delay_next(&self, n: usize, delay: Duration) {
        self.inject(Endpoint::Callback, n, Fault::Delay(delay));
    }

    /// Drops the connection of the next `n` callbacks without answering.
    pub fn drop_next(&self, n: usize) {
        self.inject(Endpoint::Callback, n, Fault::Drop);
    }

    /// Hands out the next `n` upload URLs already expired (`expires_in: 0`, refused by the storage).
    pub fn expire_next_uploads(&self, n: usize) {
        *lock(&self.state.expire_next) += n;
    }

    /// Every callback request received so far, in order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts_at(Endpoint::Callback)
    }

    /// Every request to `endpoint` received so far, in order.
    pub fn attempts_at(&self, endpoint: Endpoint) -> Vec<Attempt> {
        lock(&self.state.attempts)
            .iter()
            .filter(|a| a.endpoint == endpoint)
            .cloned()
            .collect()
    }

    /// Every object uploaded so far, in order.
    pub fn objects(&self) -> Vec<StoredObject> {
        lock(&self.state.objects).clone()
    }

    /// The files `callback` returned, in order: a single inline file (`file_base64`) or the
    /// `files` list, inline or uploaded. Empty for a callback without files.
    ///
    /// # Errors
    ///
    /// When an inline file is not valid base64, or an uploaded one names an unknown object.
    pub fn files(&self, callback: &Callback) -> Result<Vec<ReturnedFile>, FilesError> {
        use base64::Engine as _;
        let body = &callback.body;
        let mut entries: Vec<&serde_json::Value> = body["files"]
            .as_array()
            .map(|files| files.iter().collect())
            .unwrap_or_default();
        if body.get("file_base64").is_some() {
            entries.push(body);
        }
        let objects = self.objects();
        let mut files = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(filename) = entry["filename"].as_str().map(str::to_owned) else {
                continue;
            };
            let contents = if let Some(data) = entry["file_base64"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| FilesError::Base64 {
                        filename: filename.clone(),
                        reason: e.to_string(),
                    })?;
                FileContents::Inline(bytes)
            } else if let Some(key) = entry["object_key"].as_str() {
                let object = objects
                    .iter()
                    .find(|o| o.object_key == key)
                    .cloned()
                    .ok_or_else(|| FilesError::UnknownObject {
                        filename: filename.clone(),
                    })?;
                FileContents::Uploaded(object)
            } else {
                continue;
            };
            files.push(ReturnedFile { filename, contents });
        }
        Ok(files)
    }

    /// A stream of the callbacks accepted from now on (a slow reader misses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<Callback> {
        self.state.accepted.subscribe()
    }

    /// How many callbacks have been accepted so far, duplicates included.
    pub fn callback_count(&self) -> usize {
        lock(&self.state.callbacks).len()
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

/// A socket listening on a free port of `127.0.0.1`, for a short's own binary that a test starts
/// with `serve`: the test holds the port from the start, so no other process can take it in
/// between, and the server takes the socket over as it would from systemd's socket activation.
///
/// The socket stays the test's: a server started again (after a kill) takes it over again, and
/// connections made while no server runs wait in its queue.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let listener = shorts_runtime::testing::Listener::bind()?;
/// // In an integration test of the short's crate: `env!("CARGO_BIN_EXE_my-short")`.
/// let mut command = std::process::Command::new("target/debug/my-short");
/// listener.pass_to(command.arg("serve"))?;
/// let server = command.spawn()?;
/// let url = format!("http://{}/shorts/echo", listener.addr());
/// # Ok(())
/// # }
/// ```
#[cfg(all(unix, feature = "testing"))]
#[derive(Debug)]
pub struct Listener(std::net::TcpListener);

#[cfg(all(unix, feature = "testing"))]
impl Listener {
    /// Listens on a free port of `127.0.0.1`.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub fn bind() -> std::io::Result<Self> {
        std::net::TcpListener::bind("127.0.0.1:0").map(Self)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.0
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Hands the socket to the process `command` starts, as file descriptor 3 with
    /// `LISTEN_FDS=1`: its `serve` listens there instead of on `SHORTS_BIND`.
    ///
    /// # Errors
    ///
    /// When the socket cannot be duplicated.
    pub fn pass_to<'a>(
        &self,
        command: &'a mut std::process::Command,
    ) -> std::io::Result<&'a mut std::process::Command> {
        use command_fds::{CommandFdExt as _, FdMapping};
        let socket = std::os::fd::OwnedFd::from(self.0.try_clone()?);
        command
            .env("LISTEN_FDS", "1")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .fd_mappings(vec![FdMapping {
                parent_fd: socket,
                child_fd: 3,
            }])
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Waits up to `timeout` until the server at `addr` answers its health check (`GET /healthz`);
/// whether it did. A request sent before the server runs waits in its socket's queue, so this is
/// how a test learns that a short it started on a [`Listener`] is serving.
#[cfg(all(unix, feature = "testing"))]
pub async fn wait_serving(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(timeout).build() else {
        return false;
    };
    let answer = client.get(format!("http://{addr}/healthz")).send().await;
    answer.is_ok_and(|answer| answer.status() == reqwest::StatusCode::OK)
}
