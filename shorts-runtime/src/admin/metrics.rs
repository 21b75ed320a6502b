//! The metrics served at `GET /metrics`: their names, and the type that records them.
//!
//! Metrics observe the engine and never decide anything in it. The recording calls sit at the
//! events: webhook answers in `server/`, runs and outcomes in `worker/run.rs`, callback attempts
//! in `worker/deliver.rs`, uploaded bytes in `delivery/upload.rs`. Each App has a registry of its
//! own (no process-wide state), and the label sets of each short are resolved when the App is
//! built, so recording an order's events takes atomic additions and no allocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::store::{AnyStore, OrderState, RunOutcome, Store as _};

/// Webhook answers, by short and HTTP status.
pub(crate) const WEBHOOKS: &str = "shorts_webhooks";
/// Orders whose short finished, by short and outcome.
pub(crate) const ORDERS_FINISHED: &str = "shorts_orders_finished";
/// The handler's run time, by short.
pub(crate) const HANDLER_SECONDS: &str = "shorts_handler_seconds";
/// From webhook received to callback accepted, by short.
pub(crate) const ORDER_SECONDS: &str = "shorts_order_seconds";
/// Callback POSTs, by result.
pub(crate) const CALLBACK_ATTEMPTS: &str = "shorts_callback_attempts";
/// Orders in the store, by state.
pub(crate) const ORDERS: &str = "shorts_orders";
/// Handlers running in this process, by short.
pub(crate) const RUNNING: &str = "shorts_running";
/// Bytes sent by direct uploads.
pub(crate) const UPLOAD_BYTES: &str = "shorts_upload_bytes";

/// How long a reading of the store's counts serves scrapes.
pub(crate) const ORDERS_READ_EVERY: Duration = Duration::from_secs(5);

/// The `short` label of a request to no short's route.
pub(crate) const NO_SHORT: &str = "";

/// Histogram buckets, in seconds: from 5 ms to an hour.
const BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];

/// Statuses a webhook is commonly answered with: their counters are resolved per short up front.
const COMMON_STATUSES: [u16; 10] = [200, 400, 401, 404, 405, 408, 413, 415, 503, 500];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    short: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    short: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShortLabel {
    short: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The run outcomes counted, in the order of [`ShortMetrics`]' counters (an interrupted run is
/// not an ending: the order runs again).
const FINISHED: [RunOutcome; 5] = [
    RunOutcome::Ok,
    RunOutcome::Error,
    RunOutcome::Panic,
    RunOutcome::Timeout,
    RunOutcome::BadInput,
];

/// How a callback POST ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The platform has the callback.
    Accepted,
    /// It will be sent again: a retryable failure, or a callback too large that is replaced.
    Retry,
    /// It will not be sent again: refused, or retries exhausted.
    Dead,
    /// The platform refused the callback secret (401): delivery is paused.
    Paused,
}

impl Attempt {
    const ALL: [Attempt; 4] = [Attempt::Accepted, Attempt::Retry, Attempt::Dead, Attempt::Paused];

    fn as_str(self) -> &'static str {
        match self {
            Attempt::Accepted => "accepted",
            Attempt::Retry => "retry",
            Attempt::Dead => "dead",
            Attempt::Paused => "paused",
        }
    }
}

/// An App's metrics: the registry served at `/metrics`, and the metrics not tied to a short.
pub(crate) struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    finished: Family<OutcomeLabels, Counter>,
    handler_seconds: Family<ShortLabel, Histogram>,
    order_seconds: Family<ShortLabel, Histogram>,
    running: Family<ShortLabel, Gauge>,
    /// One counter per [`Attempt`], in the order of `Attempt::ALL`.
    attempts: [Counter; 4],
    upload_bytes: Counter,
    orders: Family<StateLabel, Gauge>,
    /// When the store's counts were last read; held while they are read again.
    orders_read: tokio::sync::Mutex<Option<Instant>>,
    /// Webhook answers to no short's route.
    unrouted: ShortWebhooks,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Metrics {
    /// A registry with every metric, the label sets without a short already present (at zero).
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let finished = Family::<OutcomeLabels, Counter>::default();
        let handler_seconds =
            Family::<ShortLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let order_seconds =
            Family::<ShortLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let running = Family::<ShortLabel, Gauge>::default();
        let callback_attempts = Family::<ResultLabel, Counter>::default();
        let upload_bytes = Counter::default();
        let orders = Family::<StateLabel, Gauge>::default();
        registry.register(
            WEBHOOKS,
            "Webhook requests answered, by short and HTTP status (short=\"\": no short's route)",
            webhooks.clone(),
        );
        registry.register(
            ORDERS_FINISHED,
            "Runs of a short finished, by outcome: ok, error, panic, timeout or bad_input",
            finished.clone(),
        );
        registry.register(
            HANDLER_SECONDS,
            "Time the short's function ran, in seconds",
            handler_seconds.clone(),
        );
        registry.register(
            ORDER_SECONDS,
            "Time from the webhook received to the callback accepted, in seconds",
            order_seconds.clone(),
        );
        registry.register(
            CALLBACK_ATTEMPTS,
            "Callback POSTs, by result: accepted, retry, dead or paused",
            callback_attempts.clone(),
        );
        registry.register(
            ORDERS,
            "Orders in the store, by state (read from the store at most every 5 s; shared by every instance on one database)",
            orders.clone(),
        );
        registry.register(
            RUNNING,
            "Runs of a short in progress in this process",
            running.clone(),
        );
        registry.register(
            UPLOAD_BYTES,
            "Bytes of files sent by direct upload",
            upload_bytes.clone(),
        );
        let attempts = Attempt::ALL.map(|attempt| {
            callback_attempts.get_or_create_owned(&ResultLabel {
                result: attempt.as_str(),
            })
        });
        for state in OrderState::ALL {
            orders.get_or_create_owned(&StateLabel {
                state: state.as_str(),
            });
        }
        let unrouted = ShortWebhooks::new(&webhooks, NO_SHORT);
        Self {
            registry,
            webhooks,
            finished,
            handler_seconds,
            order_seconds,
            running,
            attempts,
            upload_bytes,
            orders,
            orders_read: tokio::sync::Mutex::new(None),
            unrouted,
        }
    }

    /// The label sets of `short`, resolved once; they appear in the exposition at zero from now.
    pub(crate) fn short(&self, short: &str) -> ShortMetrics {
        let label = ShortLabel {
            short: short.to_owned(),
        };
        ShortMetrics {
            webhooks: ShortWebhooks::new(&self.webhooks, short),
            outcomes: FINISHED.map(|outcome| {
                self.finished.get_or_create_owned(&OutcomeLabels {
                    short: short.to_owned(),
                    outcome: outcome.as_str(),
                })
            }),
            handler_seconds: self.handler_seconds.get_or_create_owned(&label),
            order_seconds: self.order_seconds.get_or_create_owned(&label),
            running: self.running.get_or_create_owned(&label),
        }
    }

    /// Webhook answers to no short's route.
    pub(crate) fn unrouted(&self) -> &ShortWebhooks {
        &self.unrouted
    }

    /// Counts a callback POST.
    pub(crate) fn callback_attempt(&self, attempt: Attempt) {
        let i = Attempt::ALL.iter().position(|a| *a == attempt).unwrap_or(0);
        self.attempts[i].inc();
    }

    /// Counts bytes sent by a direct upload.
    pub(crate) fn uploaded(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
    }

    /// The exposition in the OpenMetrics text format, with the store's counts read again when
    /// the last reading is older than [`ORDERS_READ_EVERY`].
    pub(crate) async fn encode(&self, store: &AnyStore) -> Result<String, std::fmt::Error> {
        {
            let mut read = self.orders_read.lock().await;
            if read.is_none_or(|at| at.elapsed() >= ORDERS_READ_EVERY) {
                match store.state_counts().await {
                    Ok(counts) => {
                        for state in OrderState::ALL {
                            let count = counts
                                .iter()
                                .find(|(counted, _)| *counted == state)
                                .map_or(0, |(_, n)| *n);
                            self.orders
                                .get_or_create(&StateLabel {
                                    state: state.as_str(),
                                })
                                .set(i64::try_from(count).unwrap_or(i64::MAX));
                        }
                        *read = Some(Instant::now());
                    }
                    // The last counts stay; the next scrape tries again.
                    Err(e) => warn!(error = %e, "could not count the orders for /metrics"),
                }
            }
        }
        let mut text = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A short's webhook answer counters.
#[derive(Clone)]
pub(crate) struct ShortWebhooks {
    short: String,
    family: Family<WebhookLabels, Counter>,
    /// The counters of [`COMMON_STATUSES`], in that order.
    common: [Counter; COMMON_STATUSES.len()],
}

impl ShortWebhooks {
    fn new(family: &Family<WebhookLabels, Counter>, short: &str) -> Self {
        Self {
            short: short.to_owned(),
            family: family.clone(),
            common: COMMON_STATUSES.map(|status| {
                family.get_or_create_owned(&WebhookLabels {
                    short: short.to_owned(),
                    status,
                })
            }),
        }
    }

    /// Counts an answer with `status`.
    pub(crate) fn answered(&self, status: http::StatusCode) {
        let status = status.as_u16();
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                self.common[i].inc();
            }
            None => {
                self.family
                    .get_or_create(&WebhookLabels {
                        short: self.short.clone(),
                        status,
                    })
                    .inc();
            }
        }
    }
}

/// A short's metrics, resolved when the App is built.
pub(crate) struct ShortMetrics {
    /// Its webhook answers.
    pub(crate) webhooks: ShortWebhooks,
    /// One counter per outcome, in the order of `FINISHED`.
    outcomes: [Counter; 5],
    handler_seconds: Histogram,
    order_seconds: Histogram,
    running: Gauge,
}

impl ShortMetrics {
    /// Counts a run that ended with `outcome`.
    pub(crate) fn finished(&self, outcome: RunOutcome) {
        if let Some(i) = FINISHED.iter().position(|o| *o == outcome) {
            self.outcomes[i].inc();
        }
    }

    /// Marks a run of the handler as started, until the guard is dropped; the guard records the
    /// run's time.
    pub(crate) fn run(&self) -> Running<'_> {
        self.running.inc();
        Running {
            metrics: self,
            started: Instant::now(),
        }
    }

    /// Records the time from `received_at` (ms since the Unix epoch) to now, when an order's
    /// callback was accepted.
    pub(crate) fn delivered(&self, received_at: i64) {
        let elapsed = crate::store::now_ms().saturating_sub(received_at).max(0);
        // Whole milliseconds as seconds.
        self.order_seconds.observe(elapsed as f64 / 1000.0);
    }
}

/// A handler's run in progress (see [`ShortMetrics::run`]).
pub(crate) struct Running<'a> {
    metrics: &'a ShortMetrics,
    started: Instant,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.metrics.running.dec();
        self.metrics
            .handler_seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Metrics that may be off: every recording call does nothing then.
pub(crate) type MaybeMetrics = Option<Arc<Metrics>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
            .unwrap_or_else(|e| panic!("{e}"));
        text
    }

    #[test]
    fn names_and_labels_as_documented() {
        let metrics = Metrics::new();
        let echo = metrics.short("echo");
        echo.webhooks.answered(http::StatusCode::OK);
        echo.webhooks.answered(http::StatusCode::IM_A_TEAPOT);
        metrics.unrouted().answered(http::StatusCode::NOT_FOUND);
        echo.finished(RunOutcome::BadInput);
        drop(echo.run());
        metrics.callback_attempt(Attempt::Paused);
        metrics.uploaded(1234);
        let text = exposition(&metrics);
        for line in [
            "shorts_webhooks_total{short=\"echo\",status=\"200\"} 1",
            "shorts_webhooks_total{short=\"echo\",status=\"418\"} 1",
            "shorts_webhooks_total{short=\"echo\",status=\"401\"} 0",
            "shorts_webhooks_total{short=\"\",status=\"404\"} 1",
            "shorts_orders_finished_total{short=\"echo\",outcome=\"bad_input\"} 1",
            "shorts_orders_finished_total{short=\"echo\",outcome=\"ok\"} 0",
            "shorts_handler_seconds_count{short=\"echo\"} 1",
            "shorts_order_seconds_count{short=\"echo\"} 0",
            "shorts_running{short=\"echo\"} 0",
            "shorts_callback_attempts_total{result=\"paused\"} 1",
            "shorts_callback_attempts_total{result=\"accepted\"} 0",
            "shorts_orders{state=\"dead\"} 0",
            "shorts_upload_bytes_total 1234",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }

    #[test]
    fn apps_keep_their_own_metrics() {
        let (one, two) = (Metrics::new(), Metrics::new());
        one.uploaded(5);
        assert!(exposition(&one).contains("shorts_upload_bytes_total 5\n"));
        assert!(exposition(&two).contains("shorts_upload_bytes_total 0\n"));
    }

    #[test]
    fn outcomes_of_errors() {
        use crate::short::error::{Error, ErrorKind};
        let of = |kind| RunOutcome::of::<()>(&Err(Error::with_kind(kind, String::new())));
        assert_eq!(RunOutcome::of::<()>(&Ok(())), RunOutcome::Ok);
        assert_eq!(of(ErrorKind::Handler), RunOutcome::Error);
        assert_eq!(of(ErrorKind::Output), RunOutcome::Error);
        assert_eq!(of(ErrorKind::Panic), RunOutcome::Panic);
        assert_eq!(of(ErrorKind::Timeout), RunOutcome::Timeout);
        assert_eq!(of(ErrorKind::Input), RunOutcome::BadInput);
    }
}
