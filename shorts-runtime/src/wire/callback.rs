//! The v1 callback bodies (protocol.md §4.3, §4.4).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::platform::{FAILURE_MESSAGE_FIELD, SINGLE_FILE_AT_TOP_LEVEL};
use crate::short::output::{File, Output};

/// The body of a success callback.
pub(crate) fn success(order_id: &str, output: &Output) -> Vec<u8> {
    let mut body = envelope(true, order_id);
    body.insert("output_type".into(), output.output_type().into());
    match output {
        Output::Text(text) | Output::Html(text) | Output::Json(text) | Output::Csv(text) => {
            body.insert("result_text".into(), text.as_str().into());
        }
        Output::Url(url) => {
            body.insert("result_url".into(), url.as_str().into());
        }
        Output::Files(files) => match files.as_slice() {
            [file] if SINGLE_FILE_AT_TOP_LEVEL => body.extend(file_entry(file)),
            files => {
                let entries = files.iter().map(|f| Value::Object(file_entry(f))).collect();
                body.insert("files".into(), Value::Array(entries));
            }
        },
    }
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

fn file_entry(file: &File) -> Map<String, Value> {
    let mut entry = Map::new();
    entry.insert("filename".into(), file.name().into());
    entry.insert("mime_type".into(), file.mime().into());
    entry.insert("file_base64".into(), STANDARD.encode(file.bytes()).into());
    entry
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
    fn text_json_and_url_bodies_are_the_documented_ones() {
        assert_eq!(
            parse(success("o1", &Output::Text("hi".into()))),
            json!({"ok": true, "order_id": "o1", "output_type": "text", "result_text": "hi"})
        );
        let json = Output::json(&json!({"status": "success", "data": [1, 2, 3]}))
            .unwrap_or(Output::Text(String::new()));
        assert_eq!(
            parse(success("o1", &json)),
            json!({"ok": true, "order_id": "o1", "output_type": "json",
                   "result_text": "{\"data\":[1,2,3],\"status\":\"success\"}"})
        );
        assert_eq!(
            parse(success("o1", &Output::Url("https://x.test/r.pdf".into()))),
            json!({"ok": true, "order_id": "o1", "output_type": "url", "result_url": "https://x.test/r.pdf"})
        );
    }

    #[test]
    fn files_are_inline_base64() {
        let one = Output::Files(vec![File::from_bytes("a.txt", "text/plain", &b"hi"[..])]);
        assert_eq!(
            parse(success("o1", &one)),
            json!({"ok": true, "order_id": "o1", "output_type": "file",
                   "file_base64": "aGk=", "filename": "a.txt", "mime_type": "text/plain"})
        );
        let two = Output::Files(vec![
            File::from_bytes("a.txt", "text/plain", &b"hi"[..]),
            File::from_bytes("b.csv", "text/csv", &b"x,y"[..]),
        ]);
        assert_eq!(
            parse(success("o1", &two)),
            json!({"ok": true, "order_id": "o1", "output_type": "file", "files": [
                {"filename": "a.txt", "mime_type": "text/plain", "file_base64": "aGk="},
                {"filename": "b.csv", "mime_type": "text/csv", "file_base64": "eCx5"}
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
