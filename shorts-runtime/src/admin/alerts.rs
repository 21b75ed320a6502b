//! Alerts (`SHORTS_ALERT_URL`): a JSON message POSTed when an order is dead-lettered, when
//! delivery is paused on a 401 from the platform, and when the order store fails.
//!
//! The engine only hands an [`Alert`] to a bounded queue ([`Alerts::raise`] never waits: when the
//! queue is full the alert is counted and dropped); a task of its own sends them. Each kind of
//! event is sent at most once per window (a minute): events inside the window are folded, and
//! when it ends the latest of them is sent saying how many more there were (`folded`). A message
//! that cannot be sent is tried again a few times, then dropped with a warning.
//!
//! A message never carries a secret: error texts have their URLs redacted as in failure
//! callbacks, the configured secrets replaced, and the values of fields named like a token, a
//! secret or a password masked.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;
use url::Url;

use crate::wire::callback::redact_urls;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// An order was dead-lettered: its callback will not be sent again unless retried by hand.
    Dead,
    /// The platform refused the callback secret (401): delivery is paused.
    Paused,
    /// An operation of the order store that the engine needed failed.
    StoreFailed,
}

impl Event {
    /// Every event, in the order of [`Event::index`].
    const ALL: [Self; 3] = [Self::Dead, Self::Paused, Self::StoreFailed];

    /// The `event` field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Dead => "dead",
            Self::Paused => "paused",
            Self::StoreFailed => "store_failed",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Dead => 0,
            Self::Paused => 1,
            Self::StoreFailed => 2,
        }
    }
}

/// One event to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alert {
    /// What happened.
    pub(crate) event: Event,
    /// The short of the order concerned, if any.
    pub(crate) short: Option<String>,
    /// The order concerned, if any.
    pub(crate) order_id: Option<String>,
    /// Why, unredacted: [`Alerts`] redacts it before it is sent.
    pub(crate) error: Option<String>,
}

/// How alerts are sent: the rate-limit window, the attempts per message, and the queue.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Each kind of event is sent at most once per window.
    pub(crate) window: Duration,
    /// Attempts per message before it is dropped.
    pub(crate) attempts: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub(crate) backoff: Duration,
    /// The time one attempt is given.
    pub(crate) timeout: Duration,
    /// Alerts waiting to be sent, at most.
    pub(crate) queue: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            attempts: 3,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            queue: 256,
        }
    }
}

/// Where the engine raises alerts; does nothing when no alert URL is configured.
#[derive(Clone, Default)]
pub(crate) struct Alerts {
    queue: Option<Arc<Queue>>,
}

/// The sending side of the queue, and the alerts dropped because it was full, by event.
struct Queue {
    sender: mpsc::Sender<Alert>,
    dropped: [AtomicU64; 3],
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts")
            .field("on", &self.queue.is_some())
            .finish()
    }
}

impl Alerts {
    /// Starts the task sending alerts to `url` with `client`; `secrets` are replaced wherever an
    /// error text quotes them. The task ends once every clone of the result is dropped and the
    /// queue is sent.
    pub(crate) fn start(url: Url, client: reqwest::Client, secrets: Vec<String>, settings: Settings) -> Self {
        let (sender, receiver) = mpsc::channel(settings.queue.max(1));
        let queue = Arc::new(Queue {
            sender,
            dropped: Default::default(),
        });
        let sender = Sender {
            url,
            client,
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
            dropped: Arc::downgrade(&queue),
            settings,
            kinds: Default::default(),
        };
        tokio::spawn(sender.run(receiver));
        Self { queue: Some(queue) }
    }

    /// Queues `alert` without waiting; when the queue is full it is dropped and counted (the
    /// next alert of its kind says so).
    pub(crate) fn raise(&self, alert: Alert) {
        let Some(queue) = &self.queue else { return };
        let event = alert.event;
        if let Err(mpsc::error::TrySendError::Full(_)) = queue.sender.try_send(alert)
            && queue.dropped[event.index()].fetch_add(1, Ordering::Relaxed) == 0
        {
            warn!(
                event = event.as_str(),
                "the alert queue is full; alerts are dropped and counted"
            );
        }
    }

    /// An order was dead-lettered.
    pub(crate) fn dead(&self, order_id: &str, short: &str, error: &str) {
        if self.queue.is_none() {
            return;
        }
        self.raise(Alert {
            event: Event::Dead,
            short: Some(short.to_owned()),
            order_id: Some(order_id.to_owned()),
            error: Some(error.to_owned()),
        });
    }

    /// Delivery of an order was paused on a 401.
    pub(crate) fn paused(&self, order_id: &str, short: &str) {
        if self.queue.is_none() {
            return;
        }
        self.raise(Alert {
            event: Event::Paused,
            short: Some(short.to_owned()),
            order_id: Some(order_id.to_owned()),
            error: Some(PAUSED_ERROR.to_owned()),
        });
    }

    /// A store operation failed, for an order when one is named.
    pub(crate) fn store_failed(&self, order: Option<(&str, &str)>, error: &dyn fmt::Display) {
        if self.queue.is_none() {
            return;
        }
        self.raise(Alert {
            event: Event::StoreFailed,
            short: order.map(|(_, short)| short.to_owned()),
            order_id: order.map(|(id, _)| id.to_owned()),
            error: Some(error.to_string()),
        });
    }
}

/// The `error` of a `paused` alert.
const PAUSED_ERROR: &str = "the platform refused the callback secret (401)";

/// Error texts are cut to this many bytes.
const ERROR_LIMIT: usize = 1000;

/// The rate limit's state for one kind of event.
#[derive(Default)]
struct Kind {
    /// When the last message of this kind was sent (or dropped after its attempts).
    sent: Option<(Instant, SystemTime)>,
    /// The latest event inside the window, to send when it ends.
    held: Option<Alert>,
    /// Events inside the window, the held one included.
    pending: u64,
}

/// The task sending alerts.
struct Sender {
    url: Url,
    client: reqwest::Client,
    secrets: Vec<String>,
    dropped: std::sync::Weak<Queue>,
    settings: Settings,
    kinds: [Kind; 3],
}

impl Sender {
    async fn run(mut self, mut receiver: mpsc::Receiver<Alert>) {
        loop {
            let due = self
                .kinds
                .iter()
                .filter(|kind| kind.held.is_some())
                .filter_map(|kind| kind.sent.map(|(at, _)| at + self.settings.window))
                .min();
            let wait = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = receiver.recv() => match received {
                    Some(alert) => self.received(alert).await,
                    None => break,
                },
                () = wait => self.flush(false).await,
            }
        }
        // Every sender is gone (the server stops): what is held is sent now.
        self.flush(true).await;
    }

    /// Sends `alert` unless its kind was sent within the window; then it is held.
    async fn received(&mut self, alert: Alert) {
        let window = self.settings.window;
        let kind = &mut self.kinds[alert.event.index()];
        kind.pending += 1;
        kind.held = Some(alert);
        let open = kind.sent.is_some_and(|(at, _)| at.elapsed() < window);
        if !open {
            self.flush(false).await;
        }
    }

    /// Sends the held alert of every kind whose window has ended (of every kind with `all`).
    async fn flush(&mut self, all: bool) {
        for event in Event::ALL {
            let window = self.settings.window;
            let kind = &mut self.kinds[event.index()];
            let open = kind.sent.is_some_and(|(at, _)| at.elapsed() < window);
            if open && !all {
                continue;
            }
            let Some(alert) = kind.held.take() else { continue };
            let dropped = self
                .dropped
                .upgrade()
                .map_or(0, |queue| queue.dropped[event.index()].swap(0, Ordering::Relaxed));
            let folded = kind.pending - 1 + dropped;
            let since = kind.sent.map(|(_, at)| at);
            kind.pending = 0;
            let body = self.message(&alert, folded, since);
            self.send(event, &body).await;
            self.kinds[event.index()].sent = Some((Instant::now(), SystemTime::now()));
        }
    }

    /// The JSON message for `alert`, with `folded` events since `since` folded into it.
    fn message(&self, alert: &Alert, folded: u64, since: Option<SystemTime>) -> Value {
        let error = alert.error.as_deref().map(|e| redact(e, &self.secrets));
        let order = match (&alert.order_id, &alert.short) {
            (Some(id), Some(short)) => format!("order {id} of short {short}"),
            (Some(id), None) => format!("order {id}"),
            _ => String::new(),
        };
        let mut text = match alert.event {
            Event::Dead => format!(
                "shorts: {order} was dead-lettered: {}",
                error.as_deref().unwrap_or("no reason given")
            ),
            Event::Paused => format!(
                "shorts: callbacks are paused: {PAUSED_ERROR} for {order}; check SHORTS_CALLBACK_SECRET"
            ),
            Event::StoreFailed => {
                let reason = error.as_deref().unwrap_or("no reason given");
                if order.is_empty() {
                    format!("shorts: the order store failed: {reason}")
                } else {
                    format!("shorts: the order store failed ({order}): {reason}")
                }
            }
        };
        if folded > 0 {
            match since {
                Some(since) => text.push_str(&format!(
                    " (and {folded} more since {})",
                    humantime::format_rfc3339_seconds(since)
                )),
                None => text.push_str(&format!(" (and {folded} more)")),
            }
        }
        json!({
            "text": text,
            "event": alert.event.as_str(),
            "short": alert.short,
            "order_id": alert.order_id,
            "error": error,
            "folded": folded,
        })
    }

    /// POSTs `body`, trying again after failures; drops it with a warning after the last.
    async fn send(&self, event: Event, body: &Value) {
        let mut wait = self.settings.backoff;
        let attempts = self.settings.attempts.max(1);
        for attempt in 1..=attempts {
            let sent = self
                .client
                .post(self.url.clone())
                .timeout(self.settings.timeout)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => format!("the alert receiver answered {}", response.status()),
                Err(e) => crate::delivery::describe(&e),
            };
            if attempt == attempts {
                warn!(
                    event = event.as_str(),
                    attempts,
                    error = %failure,
                    "could not send an alert; dropped"
                );
                return;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

/// `text` without secrets: URLs redacted as in failure callbacks, every one of `secrets`
/// replaced, and the values of fields named like a token, a secret or a password masked
/// (`"job_token":"…"`, `x-callback-secret: …`, `password=…`); cut to [`ERROR_LIMIT`].
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = redact_urls(text).into_owned();
    for secret in secrets {
        text = text.replace(secret.as_str(), REDACTED);
    }
    let text = mask_fields(&text);
    if text.len() <= ERROR_LIMIT {
        return text;
    }
    let mut end = ERROR_LIMIT - "…".len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What replaces a secret.
const REDACTED: &str = "<redacted>";

/// Names whose values are masked: any field whose name ends with one of them.
const SECRET_NAMES: [&str; 3] = ["token", "secret", "password"];

/// `text` with the value after each `<name>": "`, `<name>: ` or `<name>=` masked, for the names
/// in [`SECRET_NAMES`] (in any case, also ending a longer name: `job_token`, `x-callback-secret`).
fn mask_fields(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < text.len() {
        let Some((start, name)) = SECRET_NAMES
            .iter()
            .filter_map(|name| lower[at..].find(name).map(|i| (at + i, name.len())))
            .min()
        else {
            break;
        };
        let after_name = start + name;
        at = after_name;
        let Some(value) = value_after(text, after_name) else {
            continue;
        };
        out.push_str(&text[copied..value.start]);
        out.push_str(REDACTED);
        copied = value.end;
        at = value.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Where the value assigned after a field name ending at `from` lies: past a closing quote, a
/// `:` or `=`, spaces and an opening quote, up to a quote, a separator or a space.
fn value_after(text: &str, from: usize) -> Option<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut i = from;
    let skip = |i: &mut usize, set: &[u8]| {
        while *i < bytes.len() && set.contains(&bytes[*i]) {
            *i += 1;
        }
    };
    skip(&mut i, b"\\\"'");
    skip(&mut i, b" ");
    if !matches!(bytes.get(i), Some(b':' | b'=')) {
        return None;
    }
    i += 1;
    skip(&mut i, b" \\\"'");
    let start = i;
    while i < bytes.len() && !b"\\\"'&,;}) \t\r\n".contains(&bytes[i]) {
        i += 1;
    }
    (i > start).then_some(start..i)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tokio::sync::Notify;

    use super::*;

    /// A local receiver of alerts: records each body, answering `failures` first with 500.
    #[derive(Clone, Default)]
    struct Receiver {
        bodies: Arc<Mutex<Vec<Value>>>,
        attempts: Arc<AtomicU64>,
        failures: Arc<AtomicU64>,
        arrived: Arc<Notify>,
    }

    impl Receiver {
        async fn start(failures: u64) -> (Self, Url) {
            let receiver = Self::default();
            receiver.failures.store(failures, Ordering::SeqCst);
            let app = Router::new()
                .route("/hook", post(Self::take))
                .with_state(receiver.clone());
            let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap_or_else(|e| panic!("bind: {e}"));
            let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(async move { axum::serve(listener, app).await });
            let url = Url::parse(&format!("http://{addr}/hook")).unwrap_or_else(|e| panic!("{e}"));
            (receiver, url)
        }

        async fn take(State(receiver): State<Self>, body: axum::Json<Value>) -> StatusCode {
            receiver.attempts.fetch_add(1, Ordering::SeqCst);
            let status = if receiver.failures.load(Ordering::SeqCst) > 0 {
                receiver.failures.fetch_sub(1, Ordering::SeqCst);
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                receiver
                    .bodies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(body.0);
                StatusCode::OK
            };
            receiver.arrived.notify_waiters();
            status
        }

        fn bodies(&self) -> Vec<Value> {
            self.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        /// Waits (at most 10 s) until `count` bodies arrived, and returns them.
        async fn wait_for(&self, count: usize) -> Vec<Value> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let arrived = self.arrived.notified();
                let bodies = self.bodies();
                if bodies.len() >= count || Instant::now() >= deadline {
                    return bodies;
                }
                let _ = tokio::time::timeout_at(deadline, arrived).await;
            }
        }

        /// Waits (at most 10 s) until `count` requests arrived, answered or not.
        async fn wait_attempts(&self, count: u64) -> u64 {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let arrived = self.arrived.notified();
                let attempts = self.attempts.load(Ordering::SeqCst);
                if attempts >= count || Instant::now() >= deadline {
                    return attempts;
                }
                let _ = tokio::time::timeout_at(deadline, arrived).await;
            }
        }
    }

    fn settings(window: Duration) -> Settings {
        Settings {
            window,
            attempts: 3,
            backoff: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            queue: 16,
        }
    }

    fn dead(order_id: &str) -> Alert {
        Alert {
            event: Event::Dead,
            short: Some("echo".to_owned()),
            order_id: Some(order_id.to_owned()),
            error: Some("the platform refused the callback (400): bad".to_owned()),
        }
    }

    #[tokio::test]
    async fn events_inside_the_window_are_folded_into_the_next_alert() {
        let (receiver, url) = Receiver::start(0).await;
        let window = Duration::from_millis(400);
        let alerts = Alerts::start(url, reqwest::Client::new(), Vec::new(), settings(window));
        for id in ["o-1", "o-2", "o-3"] {
            alerts.raise(dead(id));
        }
        alerts.store_failed(None, &"database is locked");
        let bodies = receiver.wait_for(2).await;
        // The first of each kind at once; the other two dead orders wait for the window.
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert_eq!(bodies[0]["order_id"], "o-1");
        assert_eq!(bodies[0]["folded"], 0);
        assert_eq!(bodies[1]["event"], "store_failed");
        assert_eq!(bodies[1]["order_id"], Value::Null);
        assert_eq!(
            bodies[1]["text"],
            "shorts: the order store failed: database is locked"
        );
        let first = Instant::now();
        let bodies = receiver.wait_for(3).await;
        assert!(first.elapsed() >= window / 2, "{:?}", first.elapsed());
        assert_eq!(bodies.len(), 3, "{bodies:?}");
        assert_eq!(bodies[2]["order_id"], "o-3");
        assert_eq!(bodies[2]["folded"], 1);
        let text = bodies[2]["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("shorts: order o-3 of short echo was dead-lettered: the platform refused the callback (400): bad (and 1 more since "),
            "{text}"
        );
        // The window starts again with that alert: the next dead order waits for its end.
        alerts.raise(dead("o-4"));
        let bodies = receiver.wait_for(4).await;
        assert_eq!(bodies.len(), 4, "{bodies:?}");
        assert_eq!(bodies[3]["order_id"], "o-4");
        assert_eq!(bodies[3]["folded"], 0);
    }

    #[tokio::test]
    async fn an_alert_is_tried_three_times_then_dropped() {
        let (receiver, url) = Receiver::start(5).await;
        let alerts = Alerts::start(url, reqwest::Client::new(), Vec::new(), settings(Duration::ZERO));
        alerts.raise(dead("o-1"));
        assert_eq!(receiver.wait_attempts(3).await, 3);
        // The second alert gets the receiver's last two failures, then goes through.
        alerts.raise(dead("o-2"));
        let bodies = receiver.wait_for(1).await;
        assert_eq!(receiver.attempts.load(Ordering::SeqCst), 6);
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        assert_eq!(bodies[0]["order_id"], "o-2");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        // No receiver listens: the task is busy with its first alert while the queue fills.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let url = Url::parse(&format!(
            "http://{}/",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let alerts = Alerts::start(
            url,
            reqwest::Client::new(),
            Vec::new(),
            Settings {
                queue: 2,
                ..settings(Duration::ZERO)
            },
        );
        let started = std::time::Instant::now();
        for i in 0..100 {
            alerts.raise(dead(&format!("o-{i}")));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let dropped = alerts
            .queue
            .as_ref()
            .map_or(0, |q| q.dropped[Event::Dead.index()].load(Ordering::Relaxed));
        assert!((97..=98).contains(&dropped), "{dropped}");
    }

    #[test]
    fn secrets_tokens_and_url_queries_are_redacted() {
        let secrets = ["s3cret-value".to_owned()];
        for (text, expected) in [
            (
                r#"the platform refused the callback (400): {"error":"bad","job_token":"jt-123","echo":"s3cret-value"}"#,
                r#"the platform refused the callback (400): {"error":"bad","job_token":"<redacted>","echo":"<redacted>"}"#,
            ),
            (
                "x-callback-secret: abc123 was refused",
                "x-callback-secret: <redacted> was refused",
            ),
            (
                "GET https://u:p@h/x?job_token=jt-9 failed; password=hunter2",
                "GET https://h/x?… failed; password=<redacted>",
            ),
            (
                r#"{\"Job_Token\": \"jt-1\"}"#,
                r#"{\"Job_Token\": \"<redacted>\"}"#,
            ),
            // A word, not a field: left as it is.
            ("the token expired", "the token expired"),
        ] {
            assert_eq!(redact(text, &secrets), expected, "{text}");
        }
        let long = "é".repeat(ERROR_LIMIT);
        let cut = redact(&long, &[]);
        assert!(cut.len() <= ERROR_LIMIT && cut.ends_with('…'), "{}", cut.len());
    }
}
