//! The answer of the polling status endpoint (protocol.md §1.4). *Inferred*: the docs say the
//! endpoint reports `processing`, `completed` (with the results) or `failed`, but not the shape;
//! this is the callback body plus a `status` field, kept in this one place.

use serde_json::{Map, Value};

/// The status answer for an order: `processing` without a result, otherwise `completed` or
/// `failed` followed by the callback body's fields.
pub(crate) fn status(result: Option<&[u8]>) -> Value {
    let mut answer = Map::new();
    let Some(body) = result.and_then(|body| serde_json::from_slice::<Map<String, Value>>(body).ok()) else {
        answer.insert("status".into(), "processing".into());
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

    #[test]
    fn the_three_states() {
        assert_eq!(status(None), json!({"status": "processing"}));
        let done = br#"{"ok":true,"order_id":"o","output_type":"text","result_text":"hi"}"#;
        assert_eq!(
            status(Some(done)),
            json!({"status": "completed", "ok": true, "order_id": "o", "output_type": "text", "result_text": "hi"})
        );
        let failed = br#"{"ok":false,"order_id":"o","error":"boom"}"#;
        assert_eq!(
            status(Some(failed)),
            json!({"status": "failed", "ok": false, "order_id": "o", "error": "boom"})
        );
    }
}
