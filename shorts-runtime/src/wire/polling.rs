//! The answer of the polling status endpoint (`docs/protocol.md` §1.4). *Inferred*: the docs say the
//! endpoint reports `processing`, `completed` (with the results) or `failed`, but not the shape;
//! this is the callback body plus a `status` field, kept in this one place.

use serde_json::{Map, Value};

use crate::store::{OrderRecord, OrderState};

/// The status answer for an order: `processing` without a result, otherwise `completed` or
/// `failed` followed by the callback body's fields. A delivered order whose long body was dropped
/// (the platform accepted it by callback, see `store::KEPT_BODY_LIMIT`) is `completed`: only
/// success bodies are that long.
pub(crate) fn status(record: &OrderRecord) -> Value {
    let mut answer = Map::new();
    let body = record.result.as_deref();
    let Some(body) = body.and_then(|body| serde_json::from_slice::<Map<String, Value>>(body).ok()) else {
        if record.state == OrderState::Delivered && record.result.is_none() {
            answer.insert("status".into(), "completed".into());
            answer.insert("ok".into(), true.into());
            answer.insert("order_id".into(), record.id.as_str().into());
        } else {
            answer.insert("status".into(), "processing".into());
        }
        return Value::Object(answer);
    };
    let ok = body.get("ok").and_then(Value::as_bool).unwrap_or(false);
    answer.insert("status".into(), if ok { "completed" } else { "failed" }.into());
    answer.extend(body);
    Value::Object(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(state: OrderState, result: Option<&'static [u8]>) -> OrderRecord {
        OrderRecord {
            id: "o".to_owned(),
            short: "s".to_owned(),
            state,
            runs: 1,
            attempts: 0,
            result: result.map(bytes::Bytes::from_static),
            last_error: None,
            received_at: std::time::UNIX_EPOCH,
            next_at: None,
            payload_purged: false,
        }
    }

    #[test]
    fn the_three_states() {
        assert_eq!(
            status(&record(OrderState::Received, None)),
            json!({"status": "processing"})
        );
        let done = br#"{"ok":true,"order_id":"o","output_type":"text","result_text":"hi"}"#;
        assert_eq!(
            status(&record(OrderState::Delivering, Some(done))),
            json!({"status": "completed", "ok": true, "order_id": "o", "output_type": "text", "result_text": "hi"})
        );
        let failed = br#"{"ok":false,"order_id":"o","error":"boom"}"#;
        assert_eq!(
            status(&record(OrderState::Dead, Some(failed))),
            json!({"status": "failed", "ok": false, "order_id": "o", "error": "boom"})
        );
    }

    #[test]
    fn a_delivered_order_whose_body_was_dropped_is_completed() {
        assert_eq!(
            status(&record(OrderState::Delivered, None)),
            json!({"status": "completed", "ok": true, "order_id": "o"})
        );
    }
}
