//! The v1 callback bodies (`docs/protocol.md` §4.3, §4.4).

use std::borrow::Cow;

use serde_json::{Map, Value};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::platform::FAILURE_MESSAGE_FIELD;
use crate::short::output::File;

/// The body of a success callback with inline content: `result_text` or `result_url`.
/// (Files are streamed: see `delivery::body`.)
pub(crate) fn content(order_id: &str, output_type: &str, field: &str, value: &str) -> Vec<u8> {
    let content = Content {
        order_id,
        output_type,
        field,
        value,
    };
    // A map of strings and a boolean always serializes.
    serde_json::to_vec(&content).unwrap_or_default()
}

/// The length of [`content`]'s body, counted without making it.
pub(crate) fn content_len(order_id: &str, output_type: &str, field: &str, value: &str) -> u64 {
    /// Counts what is written to it.
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let content = Content {
        order_id,
        output_type,
        field,
        value,
    };
    // As in `content`: it always serializes.
    let _ = serde_json::to_writer(&mut counter, &content);
    counter.0
}

/// A success callback with inline content, borrowed from the result.
struct Content<'a> {
    order_id: &'a str,
    output_type: &'a str,
    field: &'a str,
    value: &'a str,
}

impl serde::Serialize for Content<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("ok", &true)?;
        map.serialize_entry("order_id", self.order_id)?;
        map.serialize_entry("output_type", self.output_type)?;
        map.serialize_entry(self.field, self.value)?;
        map.end()
    }
}

/// The name and MIME type of the file a text result of `output_type` is uploaded as when its
/// callback is too large to send; `None` for an output type that is not sent as `result_text`.
pub(crate) fn text_file(output_type: &str) -> Option<(&'static str, &'static str)> {
    match output_type {
        "text" => Some(("result.txt", "text/plain")),
        "html" => Some(("result.html", "text/html")),
        "json" => Some(("result.json", "application/json")),
        "csv" => Some(("result.csv", "text/csv")),
        _ => None,
    }
}

/// A file delivered by direct upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadedFile {
    /// The name the prepare step returned.
    pub(crate) filename: String,
    pub(crate) mime_type: String,
    pub(crate) object_key: String,
}

/// The callback after direct uploads (`docs/protocol.md` §5.3): a `files` array of `object_key`s.
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

/// The files a callback body carries inline (`file_base64`), decoded, with their sizes, or its
/// text result as the file [`text_file`] names; `None` when it carries neither or a file does not
/// decode.
pub(crate) fn inline_files(body: &[u8]) -> Option<Vec<(File, u64)>> {
    let mut body: Value = serde_json::from_slice(body).ok()?;
    let text_file = body
        .get("output_type")
        .and_then(Value::as_str)
        .and_then(text_file);
    if let (Some((name, mime)), Some(Value::String(text))) =
        (text_file, body.get_mut("result_text").map(Value::take))
    {
        let size = text.len() as u64;
        return Some(vec![(File::from_bytes(name, mime, text), size)]);
    }
    let entries: Vec<&Value> = match body.get("files").and_then(Value::as_array) {
        Some(files) => files.iter().collect(),
        None => vec![&body],
    };
    let mut files = Vec::with_capacity(entries.len());
    for entry in entries {
        let data = STANDARD.decode(entry.get("file_base64")?.as_str()?).ok()?;
        let name = entry.get("filename").and_then(Value::as_str).unwrap_or("file");
        let mime = entry
            .get("mime_type")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream");
        let size = data.len() as u64;
        files.push((File::from_bytes(name, mime, data), size));
    }
    Some(files)
}

/// Whether a callback body reports a failure (`"ok": false`).
pub(crate) fn is_failure(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|body| body["ok"] == false)
}

/// Failure messages are cut to this many bytes (at a character boundary, ending with `…`): the
/// message is for a person to read, and a failure body then stays under
/// `store::KEPT_BODY_LIMIT`, so it is never dropped after delivery.
pub(crate) const FAILURE_MESSAGE_LIMIT: usize = 8 * 1024;

/// The body of a failure callback: the message with its URLs redacted ([`redact_urls`]) and cut
/// to [`FAILURE_MESSAGE_LIMIT`]. The full message is for the logs only.
pub(crate) fn failure(order_id: &str, message: &str) -> Vec<u8> {
    let mut body = envelope(false, order_id);
    body.insert(FAILURE_MESSAGE_FIELD.into(), cut(&redact_urls(message)).into());
    to_vec(&body)
}

/// `message` with every URL that carries credentials, a query or a fragment shortened to
/// `scheme://host/path?…`: an error's text often quotes the URL of a failed request (reqwest's
/// does), and its query or user part may hold a key or a signature. Other URLs are left as they
/// are. A URL runs from its scheme to the first space or character never found raw in one
/// (`"`, `<`, `>`, a backtick); sentence punctuation and a closing parenthesis or bracket opened
/// before it are not part of it.
pub(crate) fn redact_urls(message: &str) -> Cow<'_, str> {
    if !message.contains("://") {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(separator) = rest.find("://") {
        let start = scheme_start(rest, separator);
        let after = separator + "://".len();
        let mut end = rest[after..]
            .find(|c: char| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '`'))
            .map_or(rest.len(), |i| after + i);
        // Another URL before this one's query (`socks5://https://user:pw@host/`) starts there.
        let query = rest[after..end].find(['?', '#']).map_or(end, |i| after + i);
        if let Some(next) = rest[after..query].find("://") {
            end = scheme_start(rest, after + next).max(after);
        }
        while end > after {
            let url = &rest[start..end];
            let strip = match url.as_bytes().last() {
                Some(b'.' | b',' | b';' | b':' | b'!') => true,
                Some(b')') => !url.contains('('),
                Some(b']') => !url.contains('['),
                _ => false,
            };
            if !strip {
                break;
            }
            end -= 1;
        }
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Where the scheme before the `://` at `separator` begins.
fn scheme_start(text: &str, separator: usize) -> usize {
    separator
        - text[..separator]
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            .count()
}

/// One URL (`scheme://authority/path?query#fragment`), without its user part and with its
/// query and fragment replaced by `?…`; unchanged when it has none of them.
fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let tail = &rest[authority_end..];
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    if host.len() == authority.len() && path_end == tail.len() {
        return Cow::Borrowed(url);
    }
    let elided = if path_end < tail.len() { "?…" } else { "" };
    Cow::Owned(format!("{scheme}://{host}{}{elided}", &tail[..path_end]))
}

/// `message`, cut to [`FAILURE_MESSAGE_LIMIT`] bytes.
fn cut(message: &str) -> String {
    if message.len() <= FAILURE_MESSAGE_LIMIT {
        return message.to_owned();
    }
    let mark = "…";
    let mut end = FAILURE_MESSAGE_LIMIT - mark.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &message[..end])
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
    fn the_content_length_is_counted_exactly() {
        for value in ["", "hi", "quote \" and \\ and \n", "é ✓ 🚀", "\u{1}\u{1f}"] {
            for (output_type, field) in [("text", "result_text"), ("url", "result_url")] {
                assert_eq!(
                    content_len("o-\"1", output_type, field, value),
                    content("o-\"1", output_type, field, value).len() as u64,
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn a_stored_text_result_is_the_file_of_its_type() {
        for (output_type, name, mime) in [
            ("text", "result.txt", "text/plain"),
            ("html", "result.html", "text/html"),
            ("json", "result.json", "application/json"),
            ("csv", "result.csv", "text/csv"),
        ] {
            let body = content("o1", output_type, "result_text", "a,b\n");
            let files = inline_files(&body).unwrap_or_default();
            assert_eq!(files.len(), 1, "{output_type}");
            let (file, size) = &files[0];
            assert_eq!(
                (file.name(), file.mime(), *size),
                (name, mime, 4),
                "{output_type}"
            );
        }
        assert!(inline_files(&content("o1", "url", "result_url", "https://x.test/")).is_none());
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
    fn inline_files_are_read_back() {
        let one = br#"{"ok":true,"order_id":"o","output_type":"file","filename":"a.txt","mime_type":"text/plain","file_base64":"aGk="}"#;
        let files = inline_files(one).unwrap_or_default();
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].0.name(), files[0].0.mime(), files[0].1),
            ("a.txt", "text/plain", 2)
        );
        let two = br#"{"files":[{"filename":"a","file_base64":"aGk="},{"filename":"b","file_base64":""}]}"#;
        assert_eq!(inline_files(two).map(|f| f.len()), Some(2));
        assert!(inline_files(br#"{"ok":true,"output_type":"url","result_url":"https://x.test/"}"#).is_none());
        assert!(inline_files(br#"{"files":[{"object_key":"k"}]}"#).is_none());
    }

    #[test]
    fn the_longest_failure_body_is_kept_after_delivery() {
        // The longest order_id the webhook accepts, and a message of characters JSON escapes as
        // six bytes each.
        let body = failure(&"o".repeat(200), &"\u{1}".repeat(100_000));
        assert!(body.len() < crate::store::KEPT_BODY_LIMIT, "{}", body.len());
    }

    #[test]
    fn failure_body() {
        assert_eq!(
            parse(failure("o1", "boom")),
            json!({"ok": false, "order_id": "o1", "error": "boom"})
        );
    }

    #[test]
    fn urls_with_credentials_or_a_query_are_redacted() {
        for (message, expected) in [
            (
                "error sending request for url (https://user:pass@api.example:8443/v1/run?key=secret)",
                "error sending request for url (https://api.example:8443/v1/run?…)",
            ),
            (
                "GET https://storage.example/o/k?X-Amz-Signature=abc&x=1, then gave up.",
                "GET https://storage.example/o/k?…, then gave up.",
            ),
            (
                "see postgres://app:hunter2@db/orders.",
                "see postgres://db/orders.",
            ),
            ("token in https://h/p#access_token=t", "token in https://h/p?…"),
            ("\"https://h/p?a=(1)\" failed", "\"https://h/p?…\" failed"),
            (
                "https://a/?k=1 and http://b/x?k=2",
                "https://a/?… and http://b/x?…",
            ),
            (
                "via socks5://https://user:pw@h/p?k=1",
                "via socks5://https://h/p?…",
            ),
            ("https://h/login?next=https://x/cb&key=s", "https://h/login?…"),
            // Nothing secret: left as it is.
            (
                "see https://docs.example/errors/42 (page 2)",
                "see https://docs.example/errors/42 (page 2)",
            ),
            ("no url here: a://", "no url here: a://"),
        ] {
            assert_eq!(redact_urls(message), expected, "{message}");
        }
        let body = parse(failure("o", "failed: http://u:p@127.0.0.1:9/x?key=secret"));
        assert_eq!(body["error"], "failed: http://127.0.0.1:9/x?…");
    }

    #[test]
    fn long_failure_messages_are_cut_at_a_character_boundary() {
        let exact = "x".repeat(FAILURE_MESSAGE_LIMIT);
        assert_eq!(parse(failure("o", &exact))["error"], exact.as_str());
        // Three-byte characters straddle the limit.
        let long = "€".repeat(FAILURE_MESSAGE_LIMIT);
        let body = parse(failure("o", &long));
        let cut = body["error"].as_str().unwrap_or_default();
        assert!(cut.len() <= FAILURE_MESSAGE_LIMIT, "{}", cut.len());
        assert!(cut.len() > FAILURE_MESSAGE_LIMIT - 6);
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == '€'));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any message makes a failure body that is JSON, with the message cut to the limit.
            #[test]
            fn any_message_makes_a_failure_body(order_id in any::<String>(), message in any::<String>()) {
                let body: Value = serde_json::from_slice(&failure(&order_id, &message))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&body["ok"], &Value::from(false));
                let sent = body[FAILURE_MESSAGE_FIELD].as_str().unwrap_or_default();
                prop_assert!(sent.len() <= FAILURE_MESSAGE_LIMIT);
            }

            /// A URL's user part and query never reach the platform, whatever text is around it.
            #[test]
            fn credentials_and_queries_never_reach_the_platform(
                before in any::<String>(),
                proxy in "([a-z]{1,5}://)?",
                after in "([ ,.;:)\"'<>`\n][^\u{0}]{0,20})?",
                scheme in "[a-z][a-z0-9+.-]{0,8}",
                host in "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
                path in "(/[a-zA-Z0-9._~%-]{0,10}){0,3}",
                query in "[a-zA-Z0-9=&%._~,;:()!*'/-]{0,30}",
            ) {
                let url = format!("{scheme}://user:SECRETPASSWORD@{host}{path}?SECRETQUERY{query}");
                let message = format!("{before}{proxy}{url}{after}");
                let sent = redact_urls(&message);
                prop_assert!(!sent.contains("SECRET"), "{}", sent);
                prop_assert!(sent.contains(&format!("{scheme}://{host}{path}?…")), "{}", sent);
            }
        }
    }
}
