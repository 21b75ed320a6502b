//! The webhook the platform POSTs to a short (protocol.md §2.3).

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;

/// The default webhook body. Only `order_id` is required: custom payload templates (§2.4) may
/// leave the rest out, and unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Webhook {
    #[serde(deserialize_with = "order_id")]
    pub(crate) order_id: String,
    #[serde(default)]
    pub(crate) short_id: Option<String>,
    #[serde(default)]
    pub(crate) inputs: Option<Box<RawValue>>,
    #[serde(default)]
    pub(crate) callback_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_ts")]
    pub(crate) ts: Option<i64>,
    #[serde(default)]
    pub(crate) job_token: Option<String>,
}

/// Longest `order_id` accepted; the platform's are UUIDs (36 characters).
const MAX_ORDER_ID_LEN: usize = 200;

/// A non-empty, reasonably short string. Not required to be a UUID: refusing a paid order over
/// the id's format would leave it hanging, and the docs only show UUIDs by example.
fn order_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let id = String::deserialize(deserializer)?;
    // Kept exactly as sent: the callback must echo it.
    let trimmed = id.as_str();
    if trimmed.trim().is_empty() {
        return Err(de::Error::custom("`order_id` is empty"));
    }
    if trimmed.len() > MAX_ORDER_ID_LEN {
        return Err(de::Error::custom(format!(
            "`order_id` is longer than {MAX_ORDER_ID_LEN} characters"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(de::Error::custom("`order_id` contains control characters"));
    }
    Ok(trimmed.to_owned())
}

/// `ts` is a number in the default body, but a custom template may quote it; an unreadable `ts`
/// is dropped rather than failing a paid order.
fn lenient_ts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Why a body is not a webhook: a message and the JSON path of the field at fault.
#[derive(Debug)]
pub(crate) struct EnvelopeError {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl Webhook {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        // serde would also read a struct from an array; a webhook is always an object.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
        {
            return Err(EnvelopeError {
                path: ".".to_owned(),
                message: "expected a JSON object with an `order_id`".to_owned(),
            });
        }
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let webhook: Webhook =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| EnvelopeError {
                path: e.path().to_string(),
                message: crate::short::without_position(&e.inner().to_string()),
            })?;
        deserializer.end().map_err(|e| EnvelopeError {
            path: ".".to_owned(),
            message: crate::short::without_position(&e.to_string()),
        })?;
        Ok(webhook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_body() {
        let body = br#"{
          "short_id": "abc123",
          "order_id": "550e8400-e29b-41d4-a716-446655440000",
          "inputs": {"website_url": "https://example.com", "include_technical": true},
          "callback_url": "https://api.sellershorts.com/api/orders/callback",
          "ts": 1736032405,
          "job_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        }"#;
        let webhook = Webhook::parse(body).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(webhook.order_id, "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(webhook.short_id.as_deref(), Some("abc123"));
        assert_eq!(webhook.ts, Some(1_736_032_405));
        assert!(webhook.job_token.is_some());
        assert!(
            webhook
                .inputs
                .is_some_and(|raw| raw.get().contains("include_technical"))
        );
    }

    #[test]
    fn names_the_field_at_fault() {
        let missing = Webhook::parse(br#"{"inputs": {}}"#).err();
        assert!(missing.is_some_and(|e| e.message == "missing field `order_id`" && e.path == "."));
        let wrong = Webhook::parse(br#"{"order_id": 5}"#).err();
        assert!(wrong.is_some_and(|e| e.path == "order_id" && e.message.contains("expected a string")));
        let empty = Webhook::parse(br#"{"order_id": " "}"#).err();
        assert!(empty.is_some_and(|e| e.message.contains("empty")));
        assert!(Webhook::parse(br#"{"order_id": "a"} trailing"#).is_err());
    }

    #[test]
    fn a_quoted_or_odd_ts_does_not_fail_the_order() {
        let quoted = Webhook::parse(br#"{"order_id": "a", "ts": "17"}"#).ok();
        assert_eq!(quoted.and_then(|w| w.ts), Some(17));
        let odd = Webhook::parse(br#"{"order_id": "a", "ts": {"x": 1}}"#).ok();
        assert!(odd.is_some_and(|w| w.ts.is_none()));
    }
}
