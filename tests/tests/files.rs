//! Files of any size: inline under the limit, direct upload over it, every failure of the flow
//! ending in success or a clear `ok: false`. Every uploaded object is checked by its SHA-256.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shorts_runtime::prelude::*;
use shorts_runtime::testing::{Endpoint, Fault, MockPlatform, StoredObject};
use shorts_tests::{Served, statuses};

/// Deterministic contents of `size` bytes, different for each `seed`.
fn contents(seed: u64, size: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..size).map(|_| rng.u8(..)).collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
struct Sizes {
    sizes: Vec<u64>,
    #[serde(default)]
    on_disk: bool,
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shorts-files-{}-{name}", fastrand::u64(..)))
}

/// Returns one file per size (seeded by position); from memory, or written to a temporary file.
/// The contents are made on the blocking pool, as a short's CPU-bound work should be: on the
/// test's one-thread runtime, making 20 MB in place would hold up the server's lease heartbeat.
#[ai_short]
async fn files(input: Sizes) -> Result<Vec<File>> {
    let mut out = Vec::new();
    for (i, size) in input.sizes.iter().enumerate() {
        let size = *size;
        let data = tokio::task::spawn_blocking(move || contents(i as u64, size)).await?;
        let name = format!("part-{i}.bin");
        if input.on_disk {
            let path = temp_path(&name);
            tokio::fs::write(&path, &data).await?;
            out.push(File::from_temp_path(path).with_name(name));
        } else {
            out.push(File::from_bytes(name, "application/octet-stream", data));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Long {
    kind: String,
    bytes: usize,
}

/// A result of `bytes` bytes of `a` (as a JSON string for `json`) of the output type `kind`.
#[ai_short]
async fn long(input: Long) -> Result<Output> {
    let text = "a".repeat(input.bytes);
    Ok(match input.kind.as_str() {
        "html" => Output::Html(text),
        "json" => Output::Json(format!("\"{}\"", &text[2..])),
        "csv" => Output::Csv(text),
        _ => Output::Text(text),
    })
}

/// Starts a server on `platform` whose inline limit is `inline_limit` (the default when `None`).
async fn serve(platform: MockPlatform, inline_limit: Option<u64>) -> Served {
    Served::start_on(
        platform,
        |config| {
            if let Some(limit) = inline_limit {
                config.inline_limit = limit;
            }
        },
        |builder| builder,
    )
    .await
}

/// Starts a server, with the default inline limit, on a platform whose callback endpoint refuses
/// bodies over `limit` bytes with 413.
async fn serve_behind_body_limit(limit: usize) -> Served {
    let platform = MockPlatform::builder()
        .body_limit(limit)
        .start()
        .await
        .expect("mock");
    serve(platform, None).await
}

async fn order(served: &Served, order_id: &str, sizes: &[u64], on_disk: bool) -> Value {
    let inputs = json!({"sizes": sizes, "on_disk": on_disk});
    assert_eq!(served.order("/shorts/files", order_id, inputs).await, 200);
    served.callback(order_id).await
}

/// Checks that the callback lists uploaded objects for `sizes`, each matching its contents.
fn assert_uploaded(callback: &Value, objects: &[StoredObject], sizes: &[u64]) {
    assert_eq!(callback["ok"], true, "{callback}");
    assert_eq!(callback["output_type"], "file");
    let entries = callback["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), sizes.len(), "{callback}");
    for (i, (entry, size)) in entries.iter().zip(sizes).enumerate() {
        assert_eq!(
            entry.as_object().map(|o| o.len()),
            Some(3),
            "filename, mime_type, object_key: {entry}"
        );
        let key = entry["object_key"].as_str().unwrap_or_default();
        let object = objects
            .iter()
            .find(|o| o.object_key == key)
            .unwrap_or_else(|| panic!("no object {key}"));
        assert_eq!(object.size, *size);
        assert_eq!(
            object.sha256,
            sha256(&contents(i as u64, *size)),
            "object {i} byte for byte"
        );
        assert_eq!(object.content_type, "application/octet-stream");
        // The name prepare returned, which ends with the original name.
        let filename = entry["filename"].as_str().unwrap_or_default();
        assert!(
            filename.ends_with(&format!("part-{i}.bin")) && filename.len() > 10,
            "{filename}"
        );
        assert_eq!(
            key,
            format!(
                "orders/{}/{filename}",
                callback["order_id"].as_str().unwrap_or_default()
            )
        );
    }
}

#[tokio::test]
async fn a_small_file_goes_inline() {
    let served = serve(MockPlatform::start().await.expect("mock"), None).await;
    let callback = order(&served, "o-1k", &[1024], false).await;
    assert_eq!(
        callback,
        json!({"ok": true, "order_id": "o-1k", "output_type": "file", "filename": "part-0.bin",
               "mime_type": "application/octet-stream", "file_base64": STANDARD.encode(contents(0, 1024))})
    );
    assert!(served.platform.attempts_at(Endpoint::Prepare).is_empty());
    served.stop().await;
}

#[tokio::test]
async fn a_3_3_mb_file_fits_the_default_inline_limit() {
    let served = serve(MockPlatform::start().await.expect("mock"), None).await;
    let callback = order(&served, "o-3.3", &[3_300_000], false).await;
    let inline = STANDARD
        .decode(callback["file_base64"].as_str().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(sha256(&inline), sha256(&contents(0, 3_300_000)));
    assert!(served.platform.callbacks()[0].size <= 4_450_000);
    served.stop().await;
}

#[tokio::test]
async fn a_delivered_inline_file_is_not_kept_but_reported_completed() {
    let served = serve(MockPlatform::start().await.expect("mock"), None).await;
    order(&served, "o-big", &[100_000], false).await;
    let sent = order(&served, "o-small", &[1_000], false).await;
    // The platform has the files: the long body is dropped, the short one kept for operators.
    assert_eq!(served.delivered("o-big").await.result, None);
    let kept = served.delivered("o-small").await.result.unwrap_or_default();
    assert_eq!(serde_json::from_slice::<Value>(&kept).ok(), Some(sent));
    // Polling still reports the order as done.
    let status = reqwest::Client::new()
        .get(served.url("/shorts/files/status/o-big"))
        .header("x-api-key", MockPlatform::WEBHOOK_KEY)
        .send()
        .await
        .expect("status");
    assert_eq!(status.status(), 200);
    let status: Value = serde_json::from_str(&status.text().await.unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        status,
        json!({"status": "completed", "ok": true, "order_id": "o-big"})
    );
    served.stop().await;
}

#[tokio::test]
async fn the_inline_limit_is_exact() {
    // The size of the inline body for a 30,001-byte file, measured at the platform.
    let measured = serve(MockPlatform::start().await.expect("mock"), None).await;
    order(&measured, "o-exact", &[30_001], false).await;
    let size = measured.platform.callbacks()[0].size as u64;

    // A limit of exactly that size: inline, byte for byte the same body.
    let at_limit = serve(MockPlatform::start().await.expect("mock"), Some(size)).await;
    let callback = order(&at_limit, "o-exact", &[30_001], false).await;
    assert!(callback["file_base64"].is_string());
    assert_eq!(at_limit.platform.callbacks()[0].size as u64, size);

    // One byte less: the same file goes through direct upload.
    let over = serve(MockPlatform::start().await.expect("mock"), Some(size - 1)).await;
    let callback = order(&over, "o-exact", &[30_001], false).await;
    assert_uploaded(&callback, &over.platform.objects(), &[30_001]);
    over.stop().await;
}

#[tokio::test]
async fn a_20_mb_file_on_disk_is_uploaded_and_its_temporary_file_removed() {
    let served = serve(MockPlatform::start().await.expect("mock"), None).await;
    // Files left by other runs (a failed one, say) are not this run's.
    let before = twenty_mb_parts();
    let callback = order(&served, "o-20m", &[20_000_000], true).await;
    assert_uploaded(&callback, &served.platform.objects(), &[20_000_000]);
    let put = served.platform.attempts_at(Endpoint::Storage);
    assert_eq!(put.len(), 1);
    assert!(put[0].secret.is_none(), "the secret never goes to the storage");
    let prepare = &served.platform.attempts_at(Endpoint::Prepare)[0];
    let request: Value = serde_json::from_slice(&prepare.body).unwrap_or_default();
    assert_eq!(
        request,
        json!({"order_id": "o-20m", "filename": "part-0.bin", "mime_type": "application/octet-stream", "file_size": 20_000_000})
    );
    served.stop().await;
    let left: Vec<PathBuf> = twenty_mb_parts().difference(&before).cloned().collect();
    assert!(
        left.is_empty(),
        "the temporary file was deleted after delivery: {left:?}"
    );
}

/// The 20 MB files the `files` short may have left in the temporary folder.
fn twenty_mb_parts() -> std::collections::HashSet<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .expect("the temporary folder")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with("part-0.bin"))
        .filter(|e| e.metadata().is_ok_and(|m| m.len() == 20_000_000))
        .map(|e| e.path())
        .collect()
}

#[tokio::test]
async fn files_whose_sum_crosses_the_limit_are_all_uploaded() {
    let served = serve(MockPlatform::start().await.expect("mock"), None).await;
    let sizes = [1_500_000, 1_500_000, 1_500_000, 10];
    let callback = order(&served, "o-sum", &sizes, false).await;
    assert_uploaded(&callback, &served.platform.objects(), &sizes);
    assert_eq!(served.platform.attempts_at(Endpoint::Prepare).len(), 4);
    served.stop().await;
}

#[tokio::test]
async fn several_small_files_go_inline_together() {
    let served = serve(MockPlatform::start().await.expect("mock"), None).await;
    let callback = order(&served, "o-few", &[10, 0, 5000], true).await;
    let files = callback["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 3);
    for (i, (file, size)) in files.iter().zip([10, 0, 5000]).enumerate() {
        assert_eq!(file["file_base64"], STANDARD.encode(contents(i as u64, size)));
        assert_eq!(file["filename"], format!("part-{i}.bin"));
    }
    served.stop().await;
}

#[tokio::test]
async fn an_expired_upload_url_is_prepared_again() {
    let platform = MockPlatform::start().await.expect("mock");
    platform.expire_next_uploads(1);
    let served = serve(platform, Some(1000)).await;
    let callback = order(&served, "o-expired", &[5000], true).await;
    assert_uploaded(&callback, &served.platform.objects(), &[5000]);
    assert_eq!(served.platform.attempts_at(Endpoint::Prepare).len(), 2);
    // The expired URL was never used.
    assert_eq!(served.platform.attempts_at(Endpoint::Storage).len(), 1);
    served.stop().await;
}

#[tokio::test]
async fn a_403_from_the_storage_gets_a_fresh_url() {
    let platform = MockPlatform::start().await.expect("mock");
    platform.inject(Endpoint::Storage, 1, Fault::Status(403));
    let served = serve(platform, Some(1000)).await;
    let callback = order(&served, "o-403", &[5000], true).await;
    assert_uploaded(&callback, &served.platform.objects(), &[5000]);
    assert_eq!(served.platform.attempts_at(Endpoint::Prepare).len(), 2);
    let puts: Vec<_> = served
        .platform
        .attempts_at(Endpoint::Storage)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(puts, [Some(403), Some(200)]);
    served.stop().await;
}

#[tokio::test]
async fn server_errors_on_prepare_and_storage_are_retried() {
    let platform = MockPlatform::start().await.expect("mock");
    platform.inject(Endpoint::Prepare, 1, Fault::Status(500));
    platform.inject(Endpoint::Storage, 1, Fault::Status(503));
    platform.inject(Endpoint::Storage, 1, Fault::Drop);
    let served = serve(platform, Some(1000)).await;
    let callback = order(&served, "o-500", &[5000], true).await;
    assert_uploaded(&callback, &served.platform.objects(), &[5000]);
    let prepares: Vec<_> = served
        .platform
        .attempts_at(Endpoint::Prepare)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(prepares, [Some(500), Some(200)]);
    let puts: Vec<_> = served
        .platform
        .attempts_at(Endpoint::Storage)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(puts, [Some(503), None, Some(200)]);
    served.stop().await;
}

#[tokio::test]
async fn a_file_over_max_bytes_fails_before_uploading() {
    let platform = MockPlatform::builder()
        .max_bytes(1_000_000)
        .start()
        .await
        .expect("mock");
    let served = serve(platform, Some(1000)).await;
    let callback = order(&served, "o-max", &[2_000_000], false).await;
    assert_eq!(
        callback,
        json!({"ok": false, "order_id": "o-max",
               "error": "the file `part-0.bin` is 2000000 bytes, more than the 1000000 bytes the platform accepts"})
    );
    assert!(served.platform.attempts_at(Endpoint::Storage).is_empty());
    served.stop().await;
}

#[tokio::test]
async fn a_413_on_inline_files_switches_to_direct_upload() {
    let served = serve_behind_body_limit(50_000).await;
    let callback = order(&served, "o-413", &[60_000], false).await;
    assert_uploaded(&callback, &served.platform.objects(), &[60_000]);
    assert_eq!(statuses(&served.platform), [Some(413), Some(200)]);
    served.stop().await;
}

#[tokio::test]
async fn a_413_then_a_failed_upload_ends_in_a_failure() {
    let platform = MockPlatform::builder()
        .body_limit(50_000)
        .start()
        .await
        .expect("mock");
    platform.inject(Endpoint::Prepare, 1, Fault::Status(400));
    let served = serve(platform, None).await;
    let callback = order(&served, "o-413-fail", &[60_000], false).await;
    assert_eq!(callback["ok"], false);
    let error = callback["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the platform refused to prepare the upload of `part-0.bin` (400 Bad Request)"),
        "{error}"
    );
    served.stop().await;
}

#[tokio::test]
async fn a_missing_file_fails_the_order_with_its_name() {
    let short = Short::new("missing", |_: Value, _: Order| async {
        Ok::<_, Error>(File::from_path("/nonexistent/report.pdf"))
    });
    let served = Served::start_with(|_| {}, |b| b.without_registered().short(short)).await;
    assert_eq!(served.order("/shorts/missing", "o-missing", json!({})).await, 200);
    let callback = served.callback("o-missing").await;
    assert_eq!(callback["ok"], false);
    let error = callback["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the file `report.pdf` could not be read:"),
        "{error}"
    );
    served.stop().await;
}

#[tokio::test]
async fn the_mock_storage_refuses_chunked_and_unsigned_uploads() {
    let platform = MockPlatform::start().await.expect("mock");
    let client = reqwest::Client::new();
    let prepared = client
        .post(format!("{}/prepare", platform.callback_url()))
        .header("content-type", "application/json")
        .header("x-callback-secret", platform.secret())
        .body(
            json!({"order_id": "o", "filename": "a.mp4", "mime_type": "video/mp4", "file_size": 4})
                .to_string(),
        )
        .send()
        .await
        .expect("prepare")
        .text()
        .await
        .expect("answer");
    let prepared: Value = serde_json::from_str(&prepared).expect("json");
    let url = prepared["upload_url"].as_str().unwrap_or_default().to_owned();
    assert_eq!(prepared["requires_headers"], json!({"Content-Type": "video/mp4"}));

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(b"da".to_vec()), Ok(b"ta".to_vec())];
    let chunked = client
        .put(&url)
        .header("content-type", "video/mp4")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("put");
    assert_eq!(chunked.status(), 501);
    let unsigned = client
        .put(&url)
        .header("content-type", "text/plain")
        .body("data")
        .send()
        .await
        .expect("put");
    assert_eq!(unsigned.status(), 403);
    let signed = client
        .put(&url)
        .header("content-type", "video/mp4")
        .body("data")
        .send()
        .await
        .expect("put");
    assert_eq!(signed.status(), 200);
    assert_eq!(platform.objects()[0].sha256, sha256(b"data"));
}

/// Orders a `long` result of `kind` and `bytes`, and returns its callback.
async fn order_long(served: &Served, order_id: &str, kind: &str, bytes: usize) -> Value {
    let inputs = json!({"kind": kind, "bytes": bytes});
    assert_eq!(served.order("/shorts/long", order_id, inputs).await, 200);
    served.callback(order_id).await
}

/// Checks that `callback` lists one uploaded object named `name` of type `mime`, holding `text`.
fn assert_text_uploaded(callback: &Value, objects: &[StoredObject], (name, mime): (&str, &str), text: &str) {
    assert_eq!(callback["ok"], true, "{callback}");
    assert_eq!(callback["output_type"], "file", "{callback}");
    let entries = callback["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{callback}");
    let filename = entries[0]["filename"].as_str().unwrap_or_default();
    assert!(
        filename.ends_with(name) && filename.len() > name.len(),
        "{filename}"
    );
    assert_eq!(entries[0]["mime_type"], mime);
    let key = entries[0]["object_key"].as_str().unwrap_or_default();
    let object = objects
        .iter()
        .find(|o| o.object_key == key)
        .unwrap_or_else(|| panic!("no object {key}"));
    assert_eq!(object.size, text.len() as u64);
    assert_eq!(object.content_type, mime);
    assert_eq!(object.sha256, sha256(text.as_bytes()), "the text byte for byte");
}

#[tokio::test]
async fn a_text_result_at_the_inline_limit_goes_inline_and_one_byte_over_is_uploaded() {
    let text = "a".repeat(30_000);
    // The size of the text callback, measured at the platform.
    let measured = serve(MockPlatform::start().await.expect("mock"), None).await;
    let callback = order_long(&measured, "o-text", "text", 30_000).await;
    assert_eq!(callback["result_text"], text.as_str());
    let size = measured.platform.callbacks()[0].size as u64;

    // A limit of exactly that size: inline, the same body.
    let at_limit = serve(MockPlatform::start().await.expect("mock"), Some(size)).await;
    let callback = order_long(&at_limit, "o-text", "text", 30_000).await;
    assert_eq!(callback["output_type"], "text");
    assert_eq!(callback["result_text"], text.as_str());
    assert_eq!(at_limit.platform.callbacks()[0].size as u64, size);
    assert!(at_limit.platform.objects().is_empty());

    measured.stop().await;
    at_limit.stop().await;

    // One byte less: the text is uploaded as `result.txt`.
    let over = serve(MockPlatform::start().await.expect("mock"), Some(size - 1)).await;
    let callback = order_long(&over, "o-text", "text", 30_000).await;
    assert_text_uploaded(
        &callback,
        &over.platform.objects(),
        ("result.txt", "text/plain"),
        &text,
    );
    over.stop().await;
}

#[tokio::test]
async fn html_json_and_csv_results_too_large_are_uploaded_as_their_files() {
    let served = serve(MockPlatform::start().await.expect("mock"), Some(1_000)).await;
    let text = "a".repeat(2_000);
    let json = format!("\"{}\"", &text[2..]);
    for (kind, file, result) in [
        ("html", ("result.html", "text/html"), &text),
        ("json", ("result.json", "application/json"), &json),
        ("csv", ("result.csv", "text/csv"), &text),
    ] {
        let callback = order_long(&served, &format!("o-{kind}"), kind, 2_000).await;
        assert_text_uploaded(&callback, &served.platform.objects(), file, result);
    }
    served.stop().await;
}

#[tokio::test]
async fn a_413_on_a_text_callback_uploads_the_text() {
    let served = serve_behind_body_limit(50_000).await;
    let callback = order_long(&served, "o-413-text", "text", 60_000).await;
    let text = "a".repeat(60_000);
    assert_text_uploaded(
        &callback,
        &served.platform.objects(),
        ("result.txt", "text/plain"),
        &text,
    );
    assert_eq!(statuses(&served.platform), [Some(413), Some(200)]);
    served.stop().await;
}
