//! The webhook the platform POSTs to a short (`docs/protocol.md` §2.3).

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

/// Longest `order_id` accepted, in bytes; the platform's are UUIDs (36 bytes).
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
            "`order_id` is longer than {MAX_ORDER_ID_LEN} bytes"
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
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct EnvelopeError {
    pub(crate) path: String,
    pub(crate) message: String,
}

impl Webhook {
    /// Reads a webhook body. The whole body must be UTF-8, unknown fields included: it is stored
    /// and handed to the short as it is ([`crate::Order::payload_json`]), so a body that is not
    /// JSON throughout is refused here, before it is stored.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        // One pass over the bytes; the parser then reads a `str` and checks no string again.
        let text = std::str::from_utf8(body).map_err(|e| EnvelopeError {
            path: ".".to_owned(),
            message: format!("the body is not JSON: it is not valid UTF-8 ({e})"),
        })?;
        let start = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if start.is_empty() {
            return Err(EnvelopeError {
                path: ".".to_owned(),
                message: "the body is empty".to_owned(),
            });
        }
        // serde would also read a struct from an array; a webhook is always an object.
        let first = start.bytes().next();
        if first.is_some_and(|b| b != b'{') && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            return Err(EnvelopeError {
                path: ".".to_owned(),
                message: "expected a JSON object with an `order_id`".to_owned(),
            });
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        // Read without keeping track of where: a body at fault is read again to find the path.
        let webhook = Webhook::deserialize(&mut deserializer).map_err(|e| fault(text, e))?;
        deserializer.end().map_err(|e| not_json(&e))?;
        // The pass above skips unknown fields and `inputs` without reading their strings and
        // numbers; this one reads them, so the body is JSON that `serde_json::Value` holds.
        serde_json::from_str::<Readable>(text).map_err(|e| not_json(&e))?;
        Ok(webhook)
    }
}

/// Why `text` is not a webhook body, with the path of the field at fault: `error` is what reading
/// it found.
fn fault(text: &str, error: serde_json::Error) -> EnvelopeError {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let (path, error) = match serde_path_to_error::deserialize::<_, Webhook>(&mut deserializer) {
        Err(e) => (e.path().to_string(), e.into_inner()),
        Ok(_) => (".".to_owned(), error),
    };
    if error.is_syntax() || error.is_eof() {
        not_json(&error)
    } else {
        EnvelopeError {
            path,
            message: crate::short::without_position(&error.to_string()),
        }
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

/// Any JSON value whose strings and numbers `serde_json::Value` can hold: no lone surrogate
/// escape, no number beyond `f64`, no nesting deeper than its limit. Nothing is kept.
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ReadableVisitor)
    }
}

struct ReadableVisitor;

impl<'de> de::Visitor<'de> for ReadableVisitor {
    type Value = Readable;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

/// A body the JSON parser stopped on. The position is kept: it is where the sender's bug is.
fn not_json(error: &serde_json::Error) -> EnvelopeError {
    EnvelopeError {
        path: ".".to_owned(),
        message: format!("the body is not JSON: {error}"),
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

    fn refused(body: &[u8]) -> String {
        match Webhook::parse(body) {
            Ok(webhook) => panic!("accepted: {webhook:?}"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn a_body_that_is_not_json_says_so() {
        assert_eq!(
            refused(b"not json at all"),
            "the body is not JSON: expected ident at line 1 column 2"
        );
        assert_eq!(
            refused(br#"{"order_id": "a",}"#),
            "the body is not JSON: trailing comma at line 1 column 18"
        );
        assert_eq!(
            refused(br#"{"order_id": "a"} trailing"#),
            "the body is not JSON: trailing characters at line 1 column 19"
        );
        assert_eq!(refused(b" \n"), "the body is empty");
    }

    #[test]
    fn invalid_utf8_anywhere_is_refused() {
        let in_unknown_field = b"{\"order_id\": \"a\", \"note\": \"caf\xe9\"}";
        let message = refused(in_unknown_field);
        assert!(
            message.starts_with("the body is not JSON: it is not valid UTF-8"),
            "{message}"
        );
        assert!(Webhook::parse(b"{\"order_id\": \"a\", \"inputs\": {\"x\": \"\xff\"}}").is_err());
        assert!(Webhook::parse(b"{\"order_id\": \"a\"} \xc3").is_err());
    }

    #[test]
    fn values_serde_json_cannot_hold_are_refused_in_unknown_fields_and_inputs() {
        // Each is skipped unread by the envelope's own pass; `Order::payload_json` would fail.
        for (body, expected) in [
            (r#"{"order_id": "a", "x": "\ud800"}"#, "hex escape"),
            (r#"{"order_id": "a", "x": ["\udc00"]}"#, "surrogate"),
            (
                r#"{"order_id": "a", "inputs": {"n": 1e400}}"#,
                "number out of range",
            ),
            (
                &format!(
                    r#"{{"order_id": "a", "x": {}{}}}"#,
                    "[".repeat(200),
                    "]".repeat(200)
                ),
                "recursion limit exceeded",
            ),
        ] {
            let message = refused(body.as_bytes());
            assert!(message.starts_with("the body is not JSON: "), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn the_order_id_limit_counts_bytes() {
        let at_limit = format!(r#"{{"order_id": "{}"}}"#, "é".repeat(100));
        assert!(Webhook::parse(at_limit.as_bytes()).is_ok());
        let over = format!(r#"{{"order_id": "{}x"}}"#, "é".repeat(100));
        assert_eq!(refused(over.as_bytes()), "`order_id` is longer than 200 bytes");
    }

    #[test]
    fn a_quoted_or_odd_ts_does_not_fail_the_order() {
        let quoted = Webhook::parse(br#"{"order_id": "a", "ts": "17"}"#).ok();
        assert_eq!(quoted.and_then(|w| w.ts), Some(17));
        let odd = Webhook::parse(br#"{"order_id": "a", "ts": {"x": 1}}"#).ok();
        assert!(odd.is_some_and(|w| w.ts.is_none()));
    }

    mod properties {
        use super::super::*;
        use crate::wire::arbitrary::{json, json_object};
        use proptest::prelude::*;
        use serde_json::Value;

        /// What the server promises of a body it accepts: `Order::payload_json` reads it.
        fn check(body: &[u8]) -> Result<(), TestCaseError> {
            match Webhook::parse(body) {
                Ok(webhook) => {
                    prop_assert!(std::str::from_utf8(body).is_ok());
                    prop_assert!(serde_json::from_slice::<Value>(body).is_ok());
                    prop_assert!(!webhook.order_id.trim().is_empty());
                    prop_assert!(webhook.order_id.len() <= MAX_ORDER_ID_LEN);
                }
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
            Ok(())
        }

        /// An `order_id` the webhook accepts.
        fn order_id() -> impl Strategy<Value = String> {
            any::<String>().prop_filter("a valid order_id", |id| {
                !id.trim().is_empty() && id.len() <= MAX_ORDER_ID_LEN && !id.chars().any(char::is_control)
            })
        }

        fn envelope() -> impl Strategy<Value = (String, Value, serde_json::Map<String, Value>)> {
            (order_id(), json(), json_object())
        }

        fn body(order_id: &str, inputs: &Value, extra: &serde_json::Map<String, Value>) -> Vec<u8> {
            let mut body: serde_json::Map<String, Value> = extra
                .iter()
                .filter(|(key, _)| {
                    ![
                        "order_id",
                        "short_id",
                        "inputs",
                        "callback_url",
                        "ts",
                        "job_token",
                    ]
                    .contains(&key.as_str())
                })
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            body.insert("order_id".into(), order_id.into());
            body.insert("inputs".into(), inputs.clone());
            serde_json::to_vec(&body).unwrap_or_default()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                check(&bytes)?;
            }

            #[test]
            fn arbitrary_json_never_panics(value in json()) {
                check(&serde_json::to_vec(&value).unwrap_or_default())?;
            }

            #[test]
            fn a_valid_envelope_is_read_as_sent((id, inputs, extra) in envelope()) {
                let body = body(&id, &inputs, &extra);
                let webhook = Webhook::parse(&body).map_err(|e| TestCaseError::fail(e.message))?;
                prop_assert_eq!(&webhook.order_id, &id);
                // The inputs' text as sent (`"inputs": null` reads as no inputs).
                let read = webhook.inputs.map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned());
                prop_assert_eq!(read, serde_json::to_string(&inputs).unwrap_or_default());
                check(&body)?;
            }

            #[test]
            fn a_byte_that_is_not_utf8_anywhere_is_refused(
                (id, inputs, extra) in envelope(),
                at in any::<prop::sample::Index>(),
                byte in 0x80u8..=0xff,
            ) {
                let mut body = body(&id, &inputs, &extra);
                let at = at.index(body.len() + 1);
                body.insert(at, byte);
                if std::str::from_utf8(&body).is_err() {
                    let error = Webhook::parse(&body).err().map(|e| e.message).unwrap_or_default();
                    prop_assert!(error.contains("not valid UTF-8"), "{}", error);
                } else {
                    check(&body)?;
                }
            }
        }
    }
}
