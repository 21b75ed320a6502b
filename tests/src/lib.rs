//! Helpers shared by the end-to-end suites: the real server on 127.0.0.1 next to a mock platform.
//!
//! Helpers panic on failure: they only run inside tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use shorts_runtime::testing::MockPlatform;
use shorts_runtime::{App, AppBuilder, Config, OrderRecord, OrderState};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for a callback that should come.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The status the mock platform answered to each callback attempt, in order (`None`: none sent).
pub fn statuses(platform: &MockPlatform) -> Vec<Option<u16>> {
    platform.attempts().iter().map(|a| a.status).collect()
}

/// Waits until `ready()` holds, checking every 10 ms for at most [`PATIENCE`]; panics with `what`
/// when it never does.
pub async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let step = Duration::from_millis(10);
    for _ in 0..PATIENCE.as_millis() / step.as_millis() {
        if ready() {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("waited {PATIENCE:?} for {what}");
}

/// A served application and the mock platform it delivers to.
pub struct Served {
    /// The platform double.
    pub platform: MockPlatform,
    /// Where the application listens.
    pub addr: SocketAddr,
    /// The application (for its operator API).
    pub app: App,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Served {
    /// Every `#[ai_short]` of the test binary, configured for the mock.
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |builder| builder).await
    }

    /// As [`Served::start`], with the configuration and the builder adjusted first.
    pub async fn start_with(
        configure: impl FnOnce(&mut Config),
        build: impl FnOnce(AppBuilder) -> AppBuilder,
    ) -> Self {
        let platform = MockPlatform::start().await.expect("mock platform");
        Self::start_on(platform, configure, build).await
    }

    /// As [`Served::start_with`], delivering to a mock platform built by the caller.
    pub async fn start_on(
        platform: MockPlatform,
        configure: impl FnOnce(&mut Config),
        build: impl FnOnce(AppBuilder) -> AppBuilder,
    ) -> Self {
        let mut config = platform.config();
        configure(&mut config);
        let app = build(App::builder().config(config)).build().await.expect("app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Served {
            platform,
            addr,
            app,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The URL of `path` on the server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs the documented webhook body for `order_id` with `inputs` to `path`.
    pub async fn order(&self, path: &str, order_id: &str, inputs: Value) -> u16 {
        let body = self.platform.webhook_body(order_id, inputs);
        self.platform
            .send_webhook(&self.url(path), &body)
            .await
            .expect("webhook sent")
    }

    /// POSTs `body` to `path` with the given headers; returns the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The callback for `order_id`, waiting for it.
    pub async fn callback(&self, order_id: &str) -> Value {
        self.platform
            .wait_for(order_id, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no callback for {order_id}"))
            .body
    }

    /// The record of `order_id` once the store has it as delivered (which happens right after the
    /// platform's answer), waiting for it.
    pub async fn delivered(&self, order_id: &str) -> OrderRecord {
        self.reached(order_id, OrderState::Delivered).await
    }

    /// The record of `order_id` once the store has it in `state`, waiting for it.
    pub async fn reached(&self, order_id: &str, state: OrderState) -> OrderRecord {
        let step = Duration::from_millis(20);
        for _ in 0..PATIENCE.as_millis() / step.as_millis() {
            let record = self.app.order(order_id).await.expect("order");
            if let Some(record) = record.filter(|r| r.state == state) {
                return record;
            }
            tokio::time::sleep(step).await;
        }
        panic!("{order_id} did not reach the state {state}");
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    /// Stops the server gracefully and waits for it, keeping the platform for inspection.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("stopped in time")
                .expect("server task")
                .expect("served");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Headers of a well-formed webhook.
pub const WEBHOOK_HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("x-api-key", MockPlatform::WEBHOOK_KEY),
];

/// A folder of the system's temporary directory, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// A new empty folder whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// The path of `name` inside it.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// The folder itself.
    pub fn root(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
