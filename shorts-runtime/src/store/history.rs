//! What an operator reads of the orders: pages of the list, counts, run times, the callback
//! acceptance rate, and one order's timeline.
//!
//! The timeline is made of history rows that the order's own writes add, in the same statements
//! or transactions: a run's start with the write that counts it, its end and outcome with the
//! write that stores its result, each callback POST with the write that settles the delivery.
//! No row costs a commit or a round trip of its own.

use std::time::SystemTime;

use serde_json::Value;

use super::{OrderState, time_from_stored};

/// Callback attempts kept per order: older ones are deleted as new ones are recorded.
pub(crate) const KEPT_ATTEMPTS: i32 = 50;

/// Runs that [`run_times`](super::Store::run_times) takes at most: the newest of its window. A
/// sample that large gives p50 and p95 to within a percent or so, and sorting it takes a few
/// tens of milliseconds.
pub(crate) const RUN_TIMES_LIMIT: u32 = 20_000;

/// How a run of the short ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RunOutcome {
    /// The short returned a result.
    Ok,
    /// The short returned an error (or its output could not be delivered as such).
    Error,
    /// The short panicked (or ended the process on every run).
    Panic,
    /// The short ran past its timeout.
    Timeout,
    /// The buyer's inputs did not fit the short's input type.
    BadInput,
    /// The server stopped while it ran: the run is not counted, and the order runs again.
    Interrupted,
}

impl RunOutcome {
    const ALL: [RunOutcome; 6] = [
        RunOutcome::Ok,
        RunOutcome::Error,
        RunOutcome::Panic,
        RunOutcome::Timeout,
        RunOutcome::BadInput,
        RunOutcome::Interrupted,
    ];

    /// The outcome's name, as stored and shown.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Error => "error",
            RunOutcome::Panic => "panic",
            RunOutcome::Timeout => "timeout",
            RunOutcome::BadInput => "bad_input",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// The outcome of a run that ended with `result`.
    pub(crate) fn of<T>(result: &Result<T, crate::Error>) -> Self {
        use crate::ErrorKind;
        match result {
            Ok(_) => RunOutcome::Ok,
            Err(e) => match e.kind() {
                ErrorKind::Input => RunOutcome::BadInput,
                ErrorKind::Timeout => RunOutcome::Timeout,
                ErrorKind::Panic => RunOutcome::Panic,
                ErrorKind::Handler | ErrorKind::Output => RunOutcome::Error,
            },
        }
    }
}

/// How a run ended, recorded with the result it produced (see
/// [`Store::save_result`](super::Store::save_result)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunEnd {
    /// The run's number, from 1.
    pub(crate) run: i32,
    pub(crate) outcome: RunOutcome,
    /// The error's message, for a run that failed.
    pub(crate) error: Option<String>,
}

/// What followed a callback POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AttemptResult {
    /// The platform took the callback.
    Accepted,
    /// A retryable failure: tried again later.
    Retry,
    /// Refused for good, or retries exhausted: the order is dead.
    Dead,
    /// The platform refused the callback secret (401): delivery is paused.
    Paused,
    /// The platform refused the body as too large (413): another body was sent instead.
    Replaced,
}

impl AttemptResult {
    const ALL: [AttemptResult; 5] = [
        AttemptResult::Accepted,
        AttemptResult::Retry,
        AttemptResult::Dead,
        AttemptResult::Paused,
        AttemptResult::Replaced,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Accepted => "accepted",
            AttemptResult::Retry => "retry",
            AttemptResult::Dead => "dead",
            AttemptResult::Paused => "paused",
            AttemptResult::Replaced => "replaced",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// One callback POST, as the worker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallbackAttempt {
    /// The attempt's number among the order's POSTs, from 1.
    pub(crate) number: i32,
    /// When it was made (ms since the Unix epoch).
    pub(crate) at: i64,
    /// The HTTP status the platform answered; `None` for a transport error.
    pub(crate) status: Option<u16>,
    /// The transport error, or what the platform said with a refusal.
    pub(crate) error: Option<String>,
    pub(crate) result: AttemptResult,
}

/// Which orders a page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OrderFilter {
    pub(crate) state: Option<OrderState>,
    pub(crate) short: Option<String>,
    pub(crate) id: Option<IdMatch>,
}

/// A search by `order_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdMatch {
    /// This `order_id` exactly.
    Exact(String),
    /// `order_id`s that start with this.
    Prefix(String),
}

/// Where a page starts: after the order received at `received_at` (ms) with `id`, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageCursor {
    pub(crate) received_at: i64,
    pub(crate) id: String,
}

impl PageCursor {
    /// The cursor as text, for a link: `<received_at>.<order_id>`.
    pub(crate) fn encode(&self) -> String {
        format!("{}.{}", self.received_at, self.id)
    }

    /// Reads [`PageCursor::encode`]'s text; `None` when it is not one.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        Some(PageCursor {
            received_at: at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// An order as the list shows it: no bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderSummary {
    pub(crate) id: String,
    pub(crate) short: String,
    pub(crate) state: OrderState,
    /// When it was received, in ms since the Unix epoch.
    pub(crate) received_at: i64,
    /// Times the short was started on it.
    pub(crate) runs: u32,
    /// Callback POSTs made for it.
    pub(crate) attempts: i32,
    pub(crate) last_error: Option<String>,
    /// When its next delivery attempt is due, in ms since the Unix epoch.
    pub(crate) next_at: Option<i64>,
    pub(crate) payload_purged: bool,
    /// How its last finished run ended; `None` before one ended or once failed by an operator.
    pub(crate) outcome: Option<RunOutcome>,
    /// An operator failed it by hand.
    pub(crate) failed_by_operator: bool,
}

impl OrderSummary {
    /// When it was received.
    pub(crate) fn received(&self) -> SystemTime {
        time_from_stored(self.received_at)
    }

    /// The cursor of the page that starts after this order.
    pub(crate) fn cursor(&self) -> PageCursor {
        PageCursor {
            received_at: self.received_at,
            id: self.id.clone(),
        }
    }

    /// The order as one JSON object, for scripts and pages: times in RFC 3339 (UTC, to the
    /// millisecond); `cursor` continues the list after it.
    pub(crate) fn to_json(&self) -> Value {
        let time = |ms: i64| humantime::format_rfc3339_millis(time_from_stored(ms)).to_string();
        serde_json::json!({
            "id": self.id,
            "short": self.short,
            "state": self.state.as_str(),
            "received_at": time(self.received_at),
            "runs": self.runs,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_at.map(time),
            "payload_purged": self.payload_purged,
            "outcome": self.outcome.map(RunOutcome::as_str),
            "failed_by_operator": self.failed_by_operator,
            "cursor": self.cursor().encode(),
        })
    }
}

/// A page of orders, newest first, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderPage {
    pub(crate) orders: Vec<OrderSummary>,
    /// `None` on the last page.
    pub(crate) next: Option<PageCursor>,
}

/// A page of `orders` (at most the limit asked for); `more` when others follow them.
pub(crate) fn page(orders: Vec<OrderSummary>, more: bool) -> OrderPage {
    let next = match orders.last() {
        Some(last) if more => Some(last.cursor()),
        _ => None,
    };
    OrderPage { orders, next }
}

/// Orders and failures received in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HourCount {
    /// The hour's start, in ms since the Unix epoch (a multiple of 3,600,000).
    pub(crate) hour: i64,
    /// Orders received in it.
    pub(crate) received: u64,
    /// Of those, the ones that failed: their last run did not end well, an operator failed them,
    /// or their callback is dead.
    pub(crate) failed: u64,
}

/// Milliseconds in an hour.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Handler times of one short's runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunTimes {
    pub(crate) short: String,
    /// Runs that ended in the window.
    pub(crate) runs: u64,
    /// Median run time, in ms.
    pub(crate) p50_ms: i64,
    /// 95th percentile run time, in ms.
    pub(crate) p95_ms: i64,
}

/// The percentiles of each short's run times, from `(short, duration in ms)` pairs; by short name.
pub(crate) fn run_times(mut durations: Vec<(String, i64)>) -> Vec<RunTimes> {
    durations.sort_unstable();
    let mut times = Vec::new();
    let mut rest = durations.as_slice();
    while let Some((short, _)) = rest.first() {
        let n = rest.iter().take_while(|(s, _)| s == short).count();
        let (one, others) = rest.split_at(n);
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank = |p: usize| one[(n * p).div_ceil(100).clamp(1, n) - 1].1;
        times.push(RunTimes {
            short: short.clone(),
            runs: n as u64,
            p50_ms: rank(50),
            p95_ms: rank(95),
        });
        rest = others;
    }
    times
}

/// Callback POSTs made in a window, and how many the platform took (the acceptance rate is
/// `accepted / attempts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CallbackRate {
    pub(crate) attempts: u64,
    pub(crate) accepted: u64,
}

/// One thing that happened to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimelineEvent {
    /// The webhook was accepted.
    Received { at: i64 },
    /// A run of the short. `ended_at` and `outcome` are `None` while it runs, or when the
    /// process ended with it.
    Run {
        number: i32,
        started_at: i64,
        ended_at: Option<i64>,
        outcome: Option<RunOutcome>,
        error: Option<String>,
    },
    /// A callback POST.
    Callback {
        number: i32,
        at: i64,
        status: Option<u16>,
        error: Option<String>,
        result: AttemptResult,
    },
    /// An operator failed the order by hand, with this message.
    FailedByOperator { at: i64, message: String },
}

impl TimelineEvent {
    /// When it happened (a run: when it started).
    pub(crate) fn at(&self) -> i64 {
        match self {
            TimelineEvent::Received { at }
            | TimelineEvent::Callback { at, .. }
            | TimelineEvent::FailedByOperator { at, .. } => *at,
            TimelineEvent::Run { started_at, .. } => *started_at,
        }
    }
}

/// A history row as stored: the columns of `shorts_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryRow {
    pub(crate) kind: String,
    pub(crate) number: i32,
    pub(crate) at: i64,
    pub(crate) ended_at: Option<i64>,
    pub(crate) outcome: Option<String>,
    pub(crate) status: Option<i32>,
    pub(crate) detail: Option<String>,
}

impl HistoryRow {
    /// The event the row records; `None` for a row this version does not know.
    pub(crate) fn event(self) -> Option<TimelineEvent> {
        Some(match self.kind.as_str() {
            "run" => TimelineEvent::Run {
                number: self.number,
                started_at: self.at,
                ended_at: self.ended_at,
                outcome: self.outcome.as_deref().and_then(RunOutcome::parse),
                error: self.detail,
            },
            "callback" => TimelineEvent::Callback {
                number: self.number,
                at: self.at,
                status: self.status.and_then(|s| u16::try_from(s).ok()),
                error: self.detail,
                result: AttemptResult::parse(self.outcome.as_deref()?)?,
            },
            "operator" => TimelineEvent::FailedByOperator {
                at: self.at,
                message: self.detail.unwrap_or_default(),
            },
            _ => return None,
        })
    }
}

/// One order with its timeline, for an operator: its inputs and result show their structure,
/// never the contents of their files.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderDetail {
    pub(crate) summary: OrderSummary,
    /// What happened to it, oldest first: its reception, then runs, callback attempts (its last
    /// [`KEPT_ATTEMPTS`]) and operator actions by time.
    pub(crate) timeline: Vec<TimelineEvent>,
    /// The webhook's `inputs`, each file as its name, type and size ([`describe_inputs`]);
    /// `None` when the webhook body is purged or unreadable.
    pub(crate) inputs: Option<Value>,
    /// The stored callback body, each file as its name, type, size and `object_key`
    /// ([`describe_result`]); `None` when there is none.
    pub(crate) result: Option<Value>,
}

/// Builds an order's timeline from its history rows.
pub(crate) fn timeline(received_at: i64, rows: Vec<HistoryRow>) -> Vec<TimelineEvent> {
    let mut events = vec![TimelineEvent::Received { at: received_at }];
    events.extend(rows.into_iter().filter_map(HistoryRow::event));
    // Stable: rows of one time keep the order they were written in.
    events.sort_by_key(TimelineEvent::at);
    events
}

/// The webhook body's `inputs` with every uploaded file (an object with `file_base64`) replaced
/// by its `filename`, `mime_type` and `size_bytes` (the declared size, or the decoded one).
pub(crate) fn describe_inputs(payload: &[u8]) -> Option<Value> {
    let mut body: Value = serde_json::from_slice(payload).ok()?;
    let mut inputs = body.get_mut("inputs").map(Value::take).unwrap_or(Value::Null);
    strip_files(&mut inputs);
    Some(inputs)
}

/// A callback body with every inline file (`file_base64`) replaced by its `filename`,
/// `mime_type` and `size_bytes`; uploaded files keep their `object_key`.
pub(crate) fn describe_result(body: &[u8]) -> Option<Value> {
    let mut body: Value = serde_json::from_slice(body).ok()?;
    strip_files(&mut body);
    Some(body)
}

/// Replaces the `file_base64` of each object holding one by `size_bytes` (the declared size, or
/// the decoded one); the object's other fields (its name and type) stay.
fn strip_files(value: &mut Value) {
    match value {
        Value::Object(object) => match object.remove("file_base64") {
            Some(content) => {
                let decoded = content.as_str().map(decoded_len).unwrap_or(0);
                let size = object
                    .get("size_bytes")
                    .and_then(Value::as_u64)
                    .unwrap_or(decoded);
                object.insert("size_bytes".into(), size.into());
            }
            None => object.values_mut().for_each(strip_files),
        },
        Value::Array(items) => items.iter_mut().for_each(strip_files),
        _ => {}
    }
}

/// The length of the bytes that `base64` (standard, padded) decodes to.
fn decoded_len(base64: &str) -> u64 {
    let text = base64.trim_end();
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
    ((text.len() / 4 * 3).saturating_sub(padding)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentiles_are_nearest_ranks_per_short() {
        let mut durations: Vec<(String, i64)> = (1..=100).map(|d| ("a".to_owned(), d)).collect();
        durations.push(("b".to_owned(), 7));
        let times = run_times(durations);
        assert_eq!(
            times,
            vec![
                RunTimes {
                    short: "a".to_owned(),
                    runs: 100,
                    p50_ms: 50,
                    p95_ms: 95
                },
                RunTimes {
                    short: "b".to_owned(),
                    runs: 1,
                    p50_ms: 7,
                    p95_ms: 7
                },
            ]
        );
        assert!(run_times(Vec::new()).is_empty());
    }

    #[test]
    fn files_show_their_name_type_and_size_only() {
        let payload = json!({
            "order_id": "o",
            "inputs": {
                "text": "hi",
                "docs": [{"filename": "a.pdf", "mime_type": "application/pdf", "file_base64": "aGVsbG8=", "size_bytes": 5}],
                "photo": {"filename": "p.png", "mime_type": "image/png", "file_base64": "aGk="}
            }
        });
        let inputs = describe_inputs(payload.to_string().as_bytes());
        assert_eq!(
            inputs,
            Some(json!({
                "text": "hi",
                "docs": [{"filename": "a.pdf", "mime_type": "application/pdf", "size_bytes": 5}],
                "photo": {"filename": "p.png", "mime_type": "image/png", "size_bytes": 2}
            }))
        );
        let result = json!({"ok": true, "order_id": "o", "files": [
            {"filename": "r.txt", "mime_type": "text/plain", "file_base64": "YWJj"},
            {"filename": "big.bin", "mime_type": "application/octet-stream", "object_key": "k/1"}
        ]});
        assert_eq!(
            describe_result(result.to_string().as_bytes()),
            Some(json!({"ok": true, "order_id": "o", "files": [
                {"filename": "r.txt", "mime_type": "text/plain", "size_bytes": 3},
                {"filename": "big.bin", "mime_type": "application/octet-stream", "object_key": "k/1"}
            ]}))
        );
        assert_eq!(describe_inputs(b"not json"), None);
    }

    #[test]
    fn cursors_read_back() {
        let cursor = PageCursor {
            received_at: 1_700_000_000_123,
            id: "a.b".to_owned(),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(PageCursor::decode("x.y"), None);
        assert_eq!(PageCursor::decode("12"), None);
    }
}
