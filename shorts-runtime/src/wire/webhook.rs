//! The webhook the platform POSTs to a short (protocol.md §2.3).

use std::ops::Range;

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

/// Where the value of the top-level `job_token` string sits in `body`, a webhook body: its byte
/// range, quotes included; `None` when there is no such string (or `body` is not a JSON object).
///
/// The token is a bearer token for the buyer's Amazon account: the store erases it (see
/// [`without_job_token`]) once the order's result is stored. Called only for orders that carry
/// one, which parses their body a second time.
pub(crate) fn job_token_span(body: &[u8]) -> Option<Range<usize>> {
    let TokenValue(raw) = serde_json::from_slice(body).ok()?;
    let value = raw?.get();
    if !value.starts_with('"') {
        return None;
    }
    // The value is borrowed from `body`: its address gives its place.
    let start = value.as_ptr().addr().checked_sub(body.as_ptr().addr())?;
    let span = start..start.checked_add(value.len())?;
    (body.get(span.clone()) == Some(value.as_bytes())).then_some(span)
}

/// `payload` with the value at `span` (see [`job_token_span`]) replaced by `null`: the same body,
/// byte for byte, without the token.
pub(crate) fn without_job_token(payload: &[u8], span: Range<usize>) -> Option<Vec<u8>> {
    let before = payload.get(..span.start)?;
    let after = payload.get(span.end..)?;
    let mut erased = Vec::with_capacity(before.len() + 4 + after.len());
    erased.extend_from_slice(before);
    erased.extend_from_slice(b"null");
    erased.extend_from_slice(after);
    Some(erased)
}

/// The raw value of a JSON object's `job_token` field, if any.
struct TokenValue<'a>(Option<&'a RawValue>);

impl<'de> Deserialize<'de> for TokenValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> de::Visitor<'de> for Fields {
            type Value = TokenValue<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut token = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "job_token" {
                        token = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                Ok(TokenValue(token))
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_token_is_found_and_erased_in_place() {
        let body = br#"{
          "order_id": "o1",
          "inputs": {"job_token": "not this one"},
          "job\u005ftoken" :  "eyJhbGciOiJIUzI1NiJ9.secret" ,
          "ts": 1736032405
        }"#;
        let span = job_token_span(body).unwrap_or_else(|| panic!("no span"));
        assert_eq!(&body[span.clone()], br#""eyJhbGciOiJIUzI1NiJ9.secret""#);
        let erased = without_job_token(body, span).unwrap_or_default();
        let text = String::from_utf8_lossy(&erased);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains(r#""job\u005ftoken" :  null ,"#), "{text}");
        // Still the order it was, without the token.
        let webhook = Webhook::parse(&erased).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((webhook.order_id.as_str(), webhook.job_token), ("o1", None));
        assert!(
            webhook
                .inputs
                .is_some_and(|raw| raw.get().contains("not this one"))
        );

        assert_eq!(job_token_span(br#"{"order_id": "o2"}"#), None);
        assert_eq!(job_token_span(br#"{"order_id": "o2", "job_token": null}"#), None);
        assert_eq!(job_token_span(br#"["job_token"]"#), None);
    }

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
