//! Every output type, end to end: the documented webhook in, the exact v1 callback out.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use serde_json::{Value, json};
use shorts_runtime::prelude::*;
use shorts_tests::Served;

#[derive(Deserialize)]
struct Text {
    text: String,
}

#[ai_short]
async fn text(input: Text) -> Result<String> {
    Ok(format!("Your analysis: {}", input.text))
}

#[ai_short]
async fn html(input: Text) -> Result<Html> {
    Ok(Html(format!("<h1>Report</h1><p>{}</p>", input.text)))
}

#[derive(Serialize)]
struct Analysis {
    status: &'static str,
    data: Vec<u32>,
}

#[ai_short]
async fn json(_input: Text) -> Result<Json<Analysis>> {
    Ok(Json(Analysis {
        status: "success",
        data: vec![1, 2, 3],
    }))
}

#[ai_short]
async fn csv(_input: Text) -> Result<Csv> {
    Ok(Csv("Name,Age,City\nJohn,30,New York".into()))
}

#[ai_short(path = "/hosted")]
async fn url(_input: Text) -> Result<Url> {
    Ok(Url("https://your-storage.com/path/to/result.pdf".into()))
}

#[ai_short]
async fn one_file(input: Text) -> Result<File> {
    Ok(File::from_bytes(
        "report.pdf",
        "application/pdf",
        input.text.into_bytes(),
    ))
}

#[ai_short]
async fn two_files(_input: Text) -> Result<Vec<File>> {
    Ok(vec![
        File::new("summary.txt", &b"all good"[..]),
        File::new("data.csv", &b"a,b\n1,2"[..]),
    ])
}

#[derive(Deserialize)]
struct Empty {}

/// Echoes the order context.
#[ai_short]
async fn context(_input: Empty, order: Order) -> Result<Value> {
    Ok(json!({
        "id": order.id(),
        "short_id": order.short_id(),
        "ts": order.ts(),
        "job_token": order.job_token(),
        "short": order.short_name(),
        "payload_has_inputs": order.payload_json()?.get("inputs").is_some(),
    }))
}

#[derive(Deserialize)]
struct Buyer {
    website_url: String,
    keywords: Tags,
    include_technical: bool,
    period: DateRange,
    upload_document: Vec<FileInput>,
}

/// Reads every documented input type.
#[ai_short]
async fn inputs(input: Buyer) -> Result<Value> {
    let file = &input.upload_document[0];
    Ok(json!({
        "website_url": input.website_url,
        "keywords": input.keywords.as_slice(),
        "include_technical": input.include_technical,
        "period": [input.period.start, input.period.end],
        "file": [file.filename, String::from_utf8(file.bytes()?)?],
    }))
}

const ORDER: &str = "550e8400-e29b-41d4-a716-446655440000";

async fn roundtrip(path: &str, inputs: Value) -> Value {
    let served = Served::start().await;
    assert_eq!(served.order(path, ORDER, inputs).await, 200);
    let callback = served.callback(ORDER).await;
    served.stop().await;
    callback
}

#[tokio::test]
async fn text_output() {
    assert_eq!(
        roundtrip("/shorts/text", json!({"text": "fine"})).await,
        json!({"ok": true, "order_id": ORDER, "output_type": "text", "result_text": "Your analysis: fine"})
    );
}

#[tokio::test]
async fn html_output() {
    assert_eq!(
        roundtrip("/shorts/html", json!({"text": "fine"})).await,
        json!({"ok": true, "order_id": ORDER, "output_type": "html", "result_text": "<h1>Report</h1><p>fine</p>"})
    );
}

#[tokio::test]
async fn json_output_is_a_string() {
    let body = roundtrip("/shorts/json", json!({"text": ""})).await;
    assert_eq!(
        body,
        json!({"ok": true, "order_id": ORDER, "output_type": "json",
               "result_text": "{\"status\":\"success\",\"data\":[1,2,3]}"})
    );
    assert!(body["result_text"].is_string());
}

#[tokio::test]
async fn csv_output() {
    assert_eq!(
        roundtrip("/shorts/csv", json!({"text": ""})).await,
        json!({"ok": true, "order_id": ORDER, "output_type": "csv", "result_text": "Name,Age,City\nJohn,30,New York"})
    );
}

#[tokio::test]
async fn url_output_on_a_custom_path() {
    assert_eq!(
        roundtrip("/hosted", json!({"text": ""})).await,
        json!({"ok": true, "order_id": ORDER, "output_type": "url",
               "result_url": "https://your-storage.com/path/to/result.pdf"})
    );
}

#[tokio::test]
async fn one_file_inline() {
    assert_eq!(
        roundtrip("/shorts/one_file", json!({"text": "%PDF-1.7"})).await,
        json!({"ok": true, "order_id": ORDER, "output_type": "file",
               "file_base64": "JVBERi0xLjc=", "filename": "report.pdf", "mime_type": "application/pdf"})
    );
}

#[tokio::test]
async fn several_files_inline() {
    assert_eq!(
        roundtrip("/shorts/two_files", json!({"text": ""})).await,
        json!({"ok": true, "order_id": ORDER, "output_type": "file", "files": [
            {"filename": "summary.txt", "mime_type": "text/plain", "file_base64": "YWxsIGdvb2Q="},
            {"filename": "data.csv", "mime_type": "text/csv", "file_base64": "YSxiCjEsMg=="}
        ]})
    );
}

#[tokio::test]
async fn the_order_context_with_a_job_token() {
    let served = Served::start().await;
    let mut body = served.platform.webhook_body(ORDER, json!({}));
    body["job_token"] = json!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig");
    let url = served.url("/shorts/context");
    assert_eq!(served.platform.send_webhook(&url, &body).await.ok(), Some(200));
    let callback = served.callback(ORDER).await;
    let result: Value =
        serde_json::from_str(callback["result_text"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        result,
        json!({"id": ORDER, "short_id": "abc123", "ts": 1736032405,
               "job_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig", "short": "context",
               "payload_has_inputs": true})
    );
    served.stop().await;
}

#[tokio::test]
async fn the_order_context_without_a_job_token() {
    let body = roundtrip("/shorts/context", json!({})).await;
    let result: Value =
        serde_json::from_str(body["result_text"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(result["job_token"], Value::Null);
    assert_eq!(result["id"], ORDER);
}

#[tokio::test]
async fn every_documented_input_type() {
    let body = roundtrip(
        "/shorts/inputs",
        json!({
            "website_url": "https://example.com",
            "keywords": "selling, seo, optimization",
            "include_technical": true,
            "period": {"from": "2024-01-01", "to": "2024-01-31"},
            "upload_document": [
                {"filename": "notes.txt", "mime_type": "text/plain", "size_bytes": 5, "file_base64": "aGVsbG8="}
            ]
        }),
    )
    .await;
    assert_eq!(body["ok"], true, "{body}");
    let result: Value =
        serde_json::from_str(body["result_text"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        result,
        json!({"website_url": "https://example.com", "keywords": ["selling", "seo", "optimization"],
               "include_technical": true, "period": ["2024-01-01", "2024-01-31"],
               "file": ["notes.txt", "hello"]})
    );
}
