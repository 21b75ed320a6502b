//! Direct upload of large files (`docs/protocol.md` §5): prepare a slot, PUT the bytes to the signed URL,
//! and report the `object_key` in the callback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};
use url::Url;

use super::{Answer, Attempt, Class, DETAIL_LIMIT, Delivery, Exhausted, StreamBody, classify, exchange};
use crate::short::output::File;
use crate::wire::callback::UploadedFile;
use crate::wire::platform::CALLBACK_SECRET_HEADER;

/// Called about four times a second while a file uploads: the file's name, bytes sent, and total.
pub(crate) type Progress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// The largest prepare answer read.
const PREPARE_ANSWER_LIMIT: usize = 64 * 1024;

/// How often a file may get a fresh upload URL after the storage refused one (403).
const MAX_FRESH_URLS: u32 = 3;

/// The prepare request (`docs/protocol.md` §5.1).
#[derive(Serialize)]
struct PrepareRequest<'a> {
    order_id: &'a str,
    filename: &'a str,
    mime_type: &'a str,
    file_size: u64,
}

/// The prepare answer; only `object_key` and `upload_url` are indispensable.
#[derive(Deserialize)]
struct PrepareAnswer {
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    filename: Option<String>,
    object_key: String,
    upload_url: String,
    #[serde(default)]
    requires_headers: BTreeMap<String, String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    max_bytes: Option<u64>,
}

/// A reserved upload slot.
struct Slot {
    filename: String,
    object_key: String,
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// When the URL should no longer be used (its expiry less a margin).
    use_before: Option<Instant>,
    max_bytes: Option<u64>,
}

/// Why a PUT did not store the file.
enum PutFailure {
    /// The URL expired, or the storage answered 403: prepare a new one.
    FreshUrl(String),
    /// The upload cannot succeed; the message is for the `ok: false` callback.
    Fatal(String),
}

impl Delivery {
    /// Uploads one file; the error is the message of the `ok: false` callback.
    pub(super) async fn upload(
        &self,
        prepare_url: &Url,
        order_id: &str,
        file: &File,
        size: u64,
    ) -> Result<UploadedFile, String> {
        let mut fresh_urls = 0;
        loop {
            let slot = self.prepare(prepare_url, order_id, file, size).await?;
            if let Some(max) = slot.max_bytes
                && size > max
            {
                return Err(format!(
                    "the file `{}` is {size} bytes, more than the {max} bytes the platform accepts",
                    file.name()
                ));
            }
            match self.put(&slot, file, size).await {
                Ok(()) => {
                    return Ok(UploadedFile {
                        filename: slot.filename,
                        mime_type: file.mime().to_owned(),
                        object_key: slot.object_key,
                    });
                }
                Err(PutFailure::FreshUrl(why)) if fresh_urls < MAX_FRESH_URLS => {
                    fresh_urls += 1;
                    warn!(file = file.name(), reason = %why, "preparing a fresh upload URL");
                }
                Err(PutFailure::FreshUrl(why)) => {
                    return Err(format!(
                        "the platform's storage refused `{}` after {} fresh upload URLs: {why}",
                        file.name(),
                        fresh_urls + 1
                    ));
                }
                Err(PutFailure::Fatal(message)) => return Err(message),
            }
        }
    }

    async fn prepare(&self, url: &Url, order_id: &str, file: &File, size: u64) -> Result<Slot, String> {
        let request = PrepareRequest {
            order_id,
            filename: file.name(),
            mime_type: file.mime(),
            file_size: size,
        };
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let name = file.name();
        let result = self
            .retry
            .run("prepare", || async {
                let request = self
                    .client
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(CALLBACK_SECRET_HEADER, self.secret.expose())
                    .timeout(self.timeout_for(0))
                    .body(body.clone());
                // The whole answer is needed: signed URLs can be long.
                let Answer {
                    status,
                    after,
                    detail,
                } = match exchange(request, PREPARE_ANSWER_LIMIT).await {
                    Ok(answer) => answer,
                    Err(reason) => return Attempt::Retry { reason, after: None },
                };
                match classify(status) {
                    Class::Success => Attempt::Done(slot(&detail, name, self.plain_http_uploads())),
                    Class::Unauthorized => Attempt::Unauthorized,
                    Class::Retryable => Attempt::Retry {
                        reason: format!("the platform answered {status}"),
                        after,
                    },
                    Class::TooLarge | Class::Redirect | Class::Refused => Attempt::Done(Err(format!(
                        "the platform refused to prepare the upload of `{name}` ({status}): {detail}"
                    ))),
                }
            })
            .await;
        match result {
            Ok((slot, _)) => slot,
            Err(Exhausted { last, .. }) => {
                Err(format!("the upload of `{name}` could not be prepared: {last}"))
            }
        }
    }

    async fn put(&self, slot: &Slot, file: &File, size: u64) -> Result<(), PutFailure> {
        let body = StreamBody::raw(file, size);
        let name = file.name();
        let started = std::time::Instant::now();
        info!(file = name, bytes = size, object_key = %slot.object_key, "uploading");
        let ticker = self.progress.clone().map(|progress| {
            let sent = Arc::clone(&body.progress);
            let name = name.to_owned();
            tokio::spawn(async move {
                loop {
                    progress(&name, sent.load(Ordering::Relaxed), size);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        });
        let result = self
            .retry
            .run("upload", || async {
                if slot.use_before.is_some_and(|deadline| Instant::now() >= deadline) {
                    return Attempt::Done(Err(PutFailure::FreshUrl("the upload URL expired".to_owned())));
                }
                // The file must still be what was planned: a changed file would fail every attempt.
                match file.size().await {
                    Ok(now) if now == size => {}
                    Ok(now) => {
                        return Attempt::Done(Err(PutFailure::Fatal(format!(
                            "the file `{name}` changed size from {size} to {now} bytes before it was sent"
                        ))));
                    }
                    Err(e) => {
                        return Attempt::Done(Err(PutFailure::Fatal(format!(
                            "the file `{name}` could not be read: {e}"
                        ))));
                    }
                }
                let mut request = self.client.put(slot.url.clone());
                if !slot.headers.iter().any(|(header, _)| header == CONTENT_TYPE) {
                    request = request.header(CONTENT_TYPE, file.mime());
                }
                for (header, value) in &slot.headers {
                    request = request.header(header, value);
                }
                let request = request
                    .header(CONTENT_LENGTH, size)
                    .timeout(self.timeout_for(size))
                    .body(body.to_request_body());
                let Answer {
                    status,
                    after,
                    detail,
                } = match exchange(request, DETAIL_LIMIT).await {
                    Ok(answer) => answer,
                    Err(reason) => return Attempt::Retry { reason, after: None },
                };
                match (status, classify(status)) {
                    (_, Class::Success) => Attempt::Done(Ok(())),
                    (StatusCode::FORBIDDEN, _) => Attempt::Done(Err(PutFailure::FreshUrl(format!(
                        "the storage answered 403: {detail}"
                    )))),
                    (_, Class::Retryable) => Attempt::Retry {
                        reason: format!("the storage answered {status}"),
                        after,
                    },
                    _ => Attempt::Done(Err(PutFailure::Fatal(format!(
                        "the platform's storage refused `{name}` ({status}): {detail}"
                    )))),
                }
            })
            .await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        match result {
            Ok((Ok(()), attempts)) => {
                if let Some(progress) = &self.progress {
                    progress(name, size, size);
                }
                let seconds = started.elapsed().as_secs_f64();
                info!(file = name, bytes = size, attempts, seconds, "uploaded");
                Ok(())
            }
            Ok((Err(failure), _)) => Err(failure),
            Err(Exhausted { last, .. }) => Err(PutFailure::Fatal(format!(
                "the upload of `{name}` failed: {last}"
            ))),
        }
    }
}

impl Delivery {
    /// Whether an upload URL may be plain `http`: only when the configured callback URL is (a
    /// platform double on 127.0.0.1, in tests and `serve --mock`). A signed URL is a credential,
    /// and the file is the buyer's result.
    fn plain_http_uploads(&self) -> bool {
        self.callback_url.scheme() == "http"
    }
}

/// Reads a prepare answer into a slot; `plain_http` allows an `http` upload URL.
fn slot(answer: &str, name: &str, plain_http: bool) -> Result<Slot, String> {
    let invalid = |why: String| format!("the platform's answer to preparing `{name}` is unusable: {why}");
    let answer: PrepareAnswer = serde_json::from_str(answer).map_err(|e| invalid(e.to_string()))?;
    if answer.ok == Some(false) {
        return Err(format!("the platform refused to prepare the upload of `{name}`"));
    }
    let url = Url::parse(&answer.upload_url).map_err(|e| invalid(format!("`upload_url`: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if plain_http => {}
        "http" => {
            return Err(invalid(
                "`upload_url` is not https (plain http is used only when SHORTS_CALLBACK_URL is http)"
                    .to_owned(),
            ));
        }
        _ => return Err(invalid("`upload_url` is not an https URL".to_owned())),
    }
    let headers = answer
        .requires_headers
        .iter()
        .map(|(header, value)| {
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| invalid(format!("`{header}` is not a header name")))?;
            let value =
                HeaderValue::from_str(value).map_err(|_| invalid(format!("the value of `{header}`")))?;
            Ok((header, value))
        })
        .filter(|h| !matches!(h, Ok((header, _)) if header == CONTENT_LENGTH))
        .collect::<Result<Vec<_>, String>>()?;
    // Stop using a URL a little before it expires: a tenth of its life, at most 30 s.
    let use_before = answer.expires_in.and_then(|secs| {
        let life = Duration::from_secs(secs);
        Instant::now().checked_add(life - (life / 10).min(Duration::from_secs(30)))
    });
    Ok(Slot {
        filename: answer.filename.unwrap_or_else(|| name.to_owned()),
        object_key: answer.object_key,
        url,
        headers,
        use_before,
        max_bytes: answer.max_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_answer_makes_a_slot() {
        let answer = r#"{
          "ok": true, "order_id": "order-uuid", "is_test_mode": false,
          "filename": "20241109-ab12cd-final-video.mp4",
          "object_key": "orders/order-uuid/20241109-ab12cd-final-video.mp4",
          "upload_url": "https://storage.example/signed?sig=1",
          "requires_headers": { "Content-Type": "video/mp4", "Content-Length": "1" },
          "expires_in": 3600, "max_bytes": 157286400
        }"#;
        let slot = slot(answer, "final-video.mp4", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(slot.filename, "20241109-ab12cd-final-video.mp4");
        assert_eq!(
            slot.object_key,
            "orders/order-uuid/20241109-ab12cd-final-video.mp4"
        );
        assert_eq!(slot.max_bytes, Some(157_286_400));
        assert_eq!(slot.headers.len(), 1, "our own Content-Length wins");
        assert_eq!(slot.headers[0].0, CONTENT_TYPE);
        assert!(
            slot.use_before
                .is_some_and(|t| t > Instant::now() + Duration::from_secs(3500))
        );
    }

    #[test]
    fn unusable_answers_are_explained() {
        for (answer, expected) in [
            ("nope", "unusable"),
            (r#"{"object_key": "k"}"#, "missing field `upload_url`"),
            (
                r#"{"object_key": "k", "upload_url": "ftp://x"}"#,
                "not an https URL",
            ),
            (
                r#"{"object_key": "k", "upload_url": "http://storage.example/signed?sig=1"}"#,
                "`upload_url` is not https",
            ),
            (
                r#"{"ok": false, "object_key": "k", "upload_url": "https://x"}"#,
                "refused",
            ),
        ] {
            let error = slot(answer, "f", false).err().unwrap_or_default();
            assert!(error.contains(expected), "{answer}: {error}");
            assert!(!error.contains("sig=1"), "a signed URL is a credential: {error}");
        }
    }

    /// The mock answers prepare with a plain-http URL; with an https platform configured, the
    /// file is not sent there and the order ends with a failure saying why.
    #[tokio::test]
    async fn a_plain_http_upload_url_ends_the_order_when_the_platform_is_https() {
        use crate::testing::{Endpoint, MockPlatform};
        let platform = MockPlatform::start().await.expect("mock platform");
        let prepare = format!("{}/prepare", platform.callback_url());
        let config = crate::config::Config {
            callback_url: Url::parse("https://127.0.0.1:9/api/orders/callback").expect("url"),
            prepare_url: Some(Url::parse(&prepare).expect("url")),
            inline_limit: 10,
            retry_schedule: vec![Duration::ZERO],
            ..platform.config()
        };
        let secret = crate::config::Secret::new(platform.secret().to_owned());
        let delivery = Delivery::new(&config, secret, None).expect("client");
        let target = delivery.target(None);
        let file = File::from_bytes("big.bin", "application/octet-stream", vec![7u8; 1000]);
        let body = delivery
            .render(
                &target,
                "o-http",
                Ok(crate::short::output::Output::Files(vec![file])),
            )
            .await;
        let body: serde_json::Value = serde_json::from_slice(body.body()).expect("json");
        assert_eq!(body["ok"], false);
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("`big.bin`") && error.contains("`upload_url` is not https"),
            "{error}"
        );
        assert!(!error.contains("Signature"), "{error}");
        assert_eq!(platform.attempts_at(Endpoint::Prepare).len(), 1);
        assert!(
            platform.attempts_at(Endpoint::Storage).is_empty(),
            "nothing was uploaded"
        );
    }

    #[test]
    fn plain_http_upload_urls_only_when_the_platform_is_plain_http() {
        let answer = r#"{"object_key": "k", "upload_url": "http://127.0.0.1:9/put?sig=1"}"#;
        assert!(slot(answer, "f", false).is_err());
        let slot = slot(answer, "f", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(slot.url.as_str(), "http://127.0.0.1:9/put?sig=1");
    }
}
