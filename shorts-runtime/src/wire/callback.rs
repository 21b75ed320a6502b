//! The v1 callback bodies (protocol.md §4.3, §4.4).

use serde_json::{Map, Value};

use super::platform::FAILURE_MESSAGE_FIELD;

/// The body of a success callback with inline content: `result_text` or `result_url`.
/// (Files are streamed: see `delivery::body`.)
pub(crate) fn content(order_id: &str, output_type: &str, field: &str, value: &str) -> Vec<u8> {
    let mut body = envelope(true, order_id);
    body.insert("output_type".into(), output_type.into());
    body.insert(field.into(), value.into());
    to_vec(&body)
}

/// A file delivered by direct upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadedFile {
    /// The name the prepare step returned.
    pub(crate) filename: String,
    pub(crate) mime_type: String,
    pub(crate) object_key: String,
}

/// The callback after direct uploads (protocol.md §5.3): a `files` array of `object_key`s.
pub(crate) fn uploaded(order_id: &str, files: &[UploadedFile]) -> Vec<u8> {
    let mut body = envelope(true, order_id);
    body.insert("output_type".into(), "file".into());
    let entries = files
        .iter()
        .map(|file| {
            let mut entry = Map::new();
            entry.insert("filename".into(), file.filename.as_str().into());
            entry.insert("mime_type".into(), file.mime_type.as_str().into());
            entry.insert("object_key".into(), file.object_key.as_str().into());
            Value::Object(entry)
        })
        .collect();
    body.insert("files".into(), Value::Array(entries));
    to_vec(&body)
}

/// The body of a failure callback.
pub(crate) fn failure(order_id: &str, message: &str) -> Vec<u8> {
    let mut body = envelope(false, order_id);
    body.insert(FAILURE_MESSAGE_FIELD.into(), message.into());
    to_vec(&body)
}

fn envelope(ok: bool, order_id: &str) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("ok".into(), ok.into());
    body.insert("order_id".into(), order_id.into());
    body
}

fn to_vec(body: &Map<String, Value>) -> Vec<u8> {
    // A map of strings, booleans and arrays of them always serializes.
    serde_json::to_vec(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Vec<u8>) -> Value {
        serde_json::from_slice(&body).unwrap_or_default()
    }

    #[test]
    fn content_bodies_are_the_documented_ones() {
        assert_eq!(
            parse(content("o1", "text", "result_text", "hi")),
            json!({"ok": true, "order_id": "o1", "output_type": "text", "result_text": "hi"})
        );
        assert_eq!(
            parse(content("o1", "url", "result_url", "https://x.test/r.pdf")),
            json!({"ok": true, "order_id": "o1", "output_type": "url", "result_url": "https://x.test/r.pdf"})
        );
    }

    #[test]
    fn uploaded_files_are_listed_by_object_key() {
        let file = UploadedFile {
            filename: "20241109-ab12cd-final-video.mp4".into(),
            mime_type: "video/mp4".into(),
            object_key: "orders/o1/20241109-ab12cd-final-video.mp4".into(),
        };
        assert_eq!(
            parse(uploaded("o1", &[file])),
            json!({"ok": true, "order_id": "o1", "output_type": "file", "files": [
                {"filename": "20241109-ab12cd-final-video.mp4", "mime_type": "video/mp4",
                 "object_key": "orders/o1/20241109-ab12cd-final-video.mp4"}
            ]})
        );
    }

    #[test]
    fn failure_body() {
        assert_eq!(
            parse(failure("o1", "boom")),
            json!({"ok": false, "order_id": "o1", "error": "boom"})
        );
    }
}
