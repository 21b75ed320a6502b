//! Every way an order can fail ends in an `ok: false` callback with the error's own message.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::time::Duration;

use serde_json::json;
use shorts_runtime::prelude::*;
use shorts_tests::Served;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[derive(Debug)]
struct Quota;

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream quota exhausted: key sk-live-123")
    }
}

impl std::error::Error for Quota {}

#[derive(Debug)]
struct ReportFailed(Quota);

impl std::fmt::Display for ReportFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the report could not be generated")
    }
}

impl std::error::Error for ReportFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[ai_short]
async fn errs(_input: Input) -> Result<String, ReportFailed> {
    Err(ReportFailed(Quota))
}

#[ai_short]
async fn errs_with_question_mark(input: Input) -> Result<String> {
    let n: u32 = input.text.parse()?;
    Ok(n.to_string())
}

#[ai_short]
async fn errs_with_string(_input: Input) -> Result<String, String> {
    Err("the site could not be reached".into())
}

#[ai_short]
#[allow(clippy::panic)]
async fn panics(input: Input) -> Result<String> {
    if input.text.is_empty() {
        return Ok(String::new());
    }
    panic!("secret internal detail {}", input.text);
}

#[ai_short(timeout = "300ms")]
async fn too_slow(_input: Input) -> Result<String> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok("late".into())
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Typed {
    count: u32,
    nested: Nested,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Nested {
    flag: bool,
}

#[ai_short]
async fn typed(_input: Typed) -> Result<String> {
    Ok("ran".into())
}

#[ai_short]
async fn no_files(_input: Input) -> Result<Vec<File>> {
    Ok(Vec::new())
}

#[ai_short]
async fn bad_upload(input: Vec<FileInput>) -> Result<String> {
    let bytes = input.first().map(FileInput::bytes).transpose()?;
    Ok(format!("{} bytes", bytes.map_or(0, |b| b.len())))
}

async fn failure(path: &str, order_id: &str, inputs: serde_json::Value) -> String {
    let served = Served::start().await;
    assert_eq!(
        served.order(path, order_id, inputs).await,
        200,
        "the order is accepted"
    );
    let body = served.callback(order_id).await;
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["order_id"], order_id);
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(3),
        "ok, order_id and error only: {body}"
    );
    served.stop().await;
    body["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_handler_error_sends_its_message_but_not_its_causes() {
    let message = failure("/shorts/errs", "o-err", json!({"text": "x"})).await;
    assert_eq!(message, "the report could not be generated");
}

#[tokio::test]
async fn question_mark_on_a_foreign_error() {
    let message = failure("/shorts/errs_with_question_mark", "o-q", json!({"text": "ten"})).await;
    assert_eq!(message, "invalid digit found in string");
}

#[tokio::test]
async fn a_string_error() {
    let message = failure("/shorts/errs_with_string", "o-s", json!({"text": "x"})).await;
    assert_eq!(message, "the site could not be reached");
}

#[tokio::test]
async fn a_panic_is_caught_and_its_message_kept_private() {
    let message = failure("/shorts/panics", "o-panic", json!({"text": "boom"})).await;
    assert_eq!(message, "the short failed unexpectedly (it panicked)");
}

#[tokio::test]
async fn a_timeout() {
    let message = failure("/shorts/too_slow", "o-slow", json!({"text": "x"})).await;
    assert_eq!(message, "the short did not finish within its timeout of 300ms");
}

#[tokio::test]
async fn inputs_that_do_not_fit_name_the_field() {
    let wrong_type = failure(
        "/shorts/typed",
        "o-t1",
        json!({"count": "many", "nested": {"flag": true}}),
    )
    .await;
    assert_eq!(
        wrong_type,
        "invalid input `count`: invalid type: string \"many\", expected u32"
    );
    let nested = failure(
        "/shorts/typed",
        "o-t2",
        json!({"count": 1, "nested": {"flag": 3}}),
    )
    .await;
    assert_eq!(
        nested,
        "invalid input `nested.flag`: invalid type: integer `3`, expected a boolean"
    );
    let missing = failure("/shorts/typed", "o-t3", json!({"count": 1})).await;
    assert_eq!(missing, "invalid input: missing field `nested`");
    let absent = failure("/shorts/typed", "o-t4", serde_json::Value::Null).await;
    assert_eq!(absent, "invalid input: missing field `count`");
}

#[tokio::test]
async fn returning_no_files_is_a_failure() {
    let message = failure("/shorts/no_files", "o-nofiles", json!({"text": "x"})).await;
    assert_eq!(message, "the short returned no files");
}

#[tokio::test]
async fn a_corrupt_upload_names_the_file() {
    let upload = json!([{"filename": "a.pdf", "mime_type": "application/pdf", "size_bytes": 9, "file_base64": "aGVsbG8="}]);
    let message = failure("/shorts/bad_upload", "o-upload", upload).await;
    assert_eq!(
        message,
        "the uploaded file `a.pdf` has 5 bytes, but its declared size is 9"
    );
}
