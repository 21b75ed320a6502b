//! How the log reads: durations in one short form, and the JSON line format of
//! `SHORTS_LOG_FORMAT=json`, in which the fields of the spans an event happened in (an order's
//! `order_id` and `short`) sit at the top level of its line, beside the event's own.

use std::ffi::OsStr;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::ConfigError;

/// A duration as a log line shows it: `1.2s`, `350ms`, `12µs`, `2m15s`, `5h10m`.
pub(crate) fn duration(duration: Duration) -> Short {
    Short(duration)
}

/// A duration in its short form; see [`duration`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if secs >= 3600 {
            let (h, m) = (secs / 3600, secs % 3600 / 60);
            return if m == 0 {
                write!(f, "{h}h")
            } else {
                write!(f, "{h}h{m}m")
            };
        }
        if secs >= 60 {
            let (m, s) = (secs / 60, secs % 60);
            return if s == 0 {
                write!(f, "{m}m")
            } else {
                write!(f, "{m}m{s}s")
            };
        }
        let nanos = d.as_nanos();
        let (value, unit) = match nanos {
            1_000_000_000.. => (nanos as f64 / 1e9, "s"),
            1_000_000.. => (nanos as f64 / 1e6, "ms"),
            1_000.. => (nanos as f64 / 1e3, "µs"),
            _ => return write!(f, "{nanos}ns"),
        };
        // One decimal below 10 (`1.2s`), none above (`350ms`); truncated, so that `9.99s` is not
        // shown as `10.0s`.
        if value < 10.0 {
            let tenths = (value * 10.0) as u64;
            match tenths % 10 {
                0 => write!(f, "{}{unit}", tenths / 10),
                t => write!(f, "{}.{t}{unit}", tenths / 10),
            }
        } else {
            write!(f, "{}{unit}", value as u64)
        }
    }
}

/// The variable choosing the log format.
pub(crate) const FORMAT_VAR: &str = "SHORTS_LOG_FORMAT";

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// tracing's human-readable lines (the default).
    Text,
    /// One JSON object per line ([`JsonLines`]).
    Json,
}

impl LogFormat {
    /// The format `SHORTS_LOG_FORMAT` asks for: `text` (or unset or empty) or `json`.
    ///
    /// # Errors
    ///
    /// For any other value.
    pub(crate) fn parse(value: Option<&OsStr>) -> Result<Self, ConfigError> {
        let invalid = |shown: String| ConfigError::Invalid {
            var: FORMAT_VAR,
            reason: format!("{shown} is not a log format; expected `text` or `json`"),
        };
        let Some(value) = value else {
            return Ok(Self::Text);
        };
        let Some(text) = value.to_str() else {
            return Err(invalid(format!("{value:?}")));
        };
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(invalid(format!("{:?}", text.trim()))),
        }
    }

    /// The name shown by `check`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// One JSON object per line:
///
/// ```json
/// {"timestamp":"2026-01-05T10:20:30.123456Z","level":"INFO","message":"order finished","order_id":"o-1","short":"echo","output_type":"text","target":"shorts_runtime::worker::run"}
/// ```
///
/// `timestamp` (UTC, RFC 3339), `level` and `message` come first; then the fields of the spans the
/// event happened in, outermost first (an order's `order_id` and `short`); then the event's own
/// fields (which win over a span's field of the same name); then `target`. Span fields are read
/// as [`JsonFields`](tracing_subscriber::fmt::format::JsonFields) formatted them, so the layer
/// using this format must format fields with it.
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = EventFields::default();
        event.record(&mut fields);

        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        if let Some(message) = fields.message.take() {
            line.insert("message".into(), message);
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(formatted) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(span_fields)) = serde_json::from_str::<Value>(formatted) {
                    line.extend(span_fields);
                }
            }
        }
        line.extend(fields.values);
        let target = fields.log_target.unwrap_or_else(|| meta.target().to_owned());
        line.insert("target".into(), target.into());
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct EventFields {
    /// The message, kept apart to be written first.
    message: Option<Value>,
    /// The target of a `log` record (tracing's `log.target`), which stands for the event's.
    log_target: Option<String>,
    /// The other fields, in the order recorded.
    values: Map<String, Value>,
}

impl EventFields {
    fn insert(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => self.message = Some(value),
            "log.target" => self.log_target = value.as_str().map(str::to_owned),
            // The rest of a `log` record's metadata: not part of the line.
            name if name.starts_with("log.") => {}
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.values.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{info, info_span, warn};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::JsonFields;

    use super::*;

    #[test]
    fn durations_read_short() {
        for (d, shown) in [
            (Duration::from_nanos(0), "0ns"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_micros(12), "12µs"),
            (Duration::from_nanos(1_250), "1.2µs"),
            (Duration::from_micros(350_400), "350ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_millis(1000), "1s"),
            (Duration::from_nanos(1_122_217_379), "1.1s"),
            (Duration::from_millis(9_999), "9.9s"),
            (Duration::from_millis(12_700), "12s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_millis(135_400), "2m15s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5 * 3600 + 10 * 60 + 7), "5h10m"),
            (Duration::from_secs(24 * 3600), "24h"),
        ] {
            assert_eq!(duration(d).to_string(), shown, "{d:?}");
        }
    }

    #[test]
    fn formats_are_text_or_json() {
        let parse = |v: Option<&str>| LogFormat::parse(v.map(OsStr::new)).map_err(|e| e.to_string());
        assert_eq!(parse(None), Ok(LogFormat::Text));
        assert_eq!(parse(Some("")), Ok(LogFormat::Text));
        assert_eq!(parse(Some("text")), Ok(LogFormat::Text));
        assert_eq!(parse(Some(" JSON ")), Ok(LogFormat::Json));
        assert_eq!(
            parse(Some("yaml")),
            Err(
                "`SHORTS_LOG_FORMAT` is invalid: \"yaml\" is not a log format; expected `text` or `json`"
                    .to_owned()
            )
        );
    }

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn span_fields_are_on_every_line_of_the_span() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = info_span!("order", order_id = "o-1", short = "echo");
            let entered = span.enter();
            info!(output_type = "text", took = %duration(Duration::from_millis(1200)), "order finished");
            let inner = info_span!("upload", file = "a.pdf");
            inner.in_scope(|| warn!(attempts = 2_u64, ok = false, "uploading again"));
            drop(entered);
            info!(r#type = "x", "outside");
        });
        let written = lines.0.lock().map(|b| b.clone()).unwrap_or_default();
        let parsed: Vec<Value> = String::from_utf8_lossy(&written)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        assert_eq!(parsed.len(), 3, "{parsed:?}");
        let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>());
        assert_eq!(
            keys(&parsed[0]),
            Some(
                [
                    "timestamp",
                    "level",
                    "message",
                    "order_id",
                    "short",
                    "output_type",
                    "took",
                    "target"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(parsed[0]["order_id"], "o-1");
        assert_eq!(parsed[0]["short"], "echo");
        assert_eq!(parsed[0]["message"], "order finished");
        assert_eq!(parsed[0]["took"], "1.2s");
        assert_eq!(parsed[0]["level"], "INFO");
        assert_eq!(parsed[0]["target"], "shorts_runtime::logs::tests");
        assert!(parsed[0]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(parsed[1]["order_id"], "o-1");
        assert_eq!(parsed[1]["file"], "a.pdf");
        assert_eq!(parsed[1]["attempts"], 2);
        assert_eq!(parsed[1]["ok"], false);
        assert_eq!(parsed[1]["level"], "WARN");
        assert_eq!(parsed[2].get("order_id"), None);
        assert_eq!(parsed[2]["type"], "x");
    }
}
