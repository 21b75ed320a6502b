//! Direct upload of large files (`docs/protocol.md` §5): prepare a slot, PUT the bytes to the signed URL,
//! and report the `object_key` in the callback.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};
use url::Url;

use super::error::{DeliveryError, Unusable};
use super::exchange::{Answer, Class, DETAIL_LIMIT, exchange};
use super::{Attempt, Delivery, Exhausted, StreamBody};
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
    /// The name the platform gave the file.
    filename: String,
    /// Where the platform finds the file, for the callback.
    object_key: String,
    /// The signed URL to PUT the file to (a credential: never logged).
    url: Url,
    /// The headers the PUT must carry.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// When the URL should no longer be used (its expiry less a margin).
    use_before: Option<Instant>,
    /// The largest file the slot takes.
    max_bytes: Option<u64>,
}

/// Why a PUT did not store the file.
enum PutFailure {
    /// The URL expired, or the storage answered 403: prepare a new one.
    FreshUrl(String),
    /// The upload cannot succeed.
    Fatal(DeliveryError),
}

impl Delivery {
    /// Uploads one file, preparing a fresh slot when the storage refuses the URL it has.
    pub(super) async fn upload(
        &self,
        prepare_url: &Url,
        order_id: &str,
        short: &str,
        file: &File,
        size: u64,
    ) -> Result<UploadedFile, DeliveryError> {
        let name = || file.name().to_owned();
        let mut fresh_urls = 0;
        loop {
            let slot = self.prepare(prepare_url, order_id, short, file, size).await?;
            if let Some(max) = slot.max_bytes
                && size > max
            {
                return Err(DeliveryError::FileTooLarge {
                    name: name(),
                    size,
                    max,
                });
            }
            match self.put(&slot, file, size).await {
                Ok(()) => {
                    return Ok(UploadedFile {
                        filename: slot.filename,
                        mime_type: file.mime().to_owned(),
                        object_key: slot.object_key,
                    });
                }
                Err(PutFailure::FreshUrl(reason)) if fresh_urls < MAX_FRESH_URLS => {
                    fresh_urls += 1;
                    warn!(file = file.name(), %reason, "preparing a fresh upload URL");
                }
                Err(PutFailure::FreshUrl(reason)) => {
                    return Err(DeliveryError::StorageRefusedUrls {
                        name: name(),
                        urls: fresh_urls + 1,
                        reason,
                    });
                }
                Err(PutFailure::Fatal(error)) => return Err(error),
            }
        }
    }

    /// Reserves an upload slot for `file` at the prepare endpoint `url`, retrying by the policy.
    async fn prepare(
        &self,
        url: &Url,
        order_id: &str,
        short: &str,
        file: &File,
        size: u64,
    ) -> Result<Slot, DeliveryError> {
        let name = file.name();
        let request = PrepareRequest {
            order_id,
            filename: name,
            mime_type: file.mime(),
            file_size: size,
        };
        let body = serde_json::to_vec(&request).map_err(|error| DeliveryError::PrepareEncoding {
            name: name.to_owned(),
            error,
        })?;
        let result = self
            .retry
            .run("prepare", || {
                let request = self
                    .client
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(CALLBACK_SECRET_HEADER, self.secret.expose())
                    .timeout(self.timeout_for(0))
                    .body(body.clone());
                // The whole answer is needed: signed URLs can be long.
                exchange(request, PREPARE_ANSWER_LIMIT, "platform", |answer| {
                    let prepared = self.prepared(name, answer);
                    if matches!(prepared, Attempt::Unauthorized) {
                        // Delivery waits, as a refused callback does: the operator is told.
                        self.alerts.paused(order_id, short);
                    }
                    prepared
                })
            })
            .await;
        match result {
            Ok((slot, _)) => slot,
            Err(Exhausted { last, .. }) => Err(DeliveryError::PrepareExhausted {
                name: name.to_owned(),
                last,
            }),
        }
    }

    /// What an answer to the prepare request of the file `name` means.
    fn prepared(&self, name: &str, answer: Answer) -> Attempt<Result<Slot, DeliveryError>> {
        let Answer {
            status,
            class,
            detail,
        } = answer;
        match class {
            Class::Success => Attempt::Done(slot(&detail, name, self.plain_http_uploads())),
            Class::Unauthorized => Attempt::Unauthorized,
            // Retryable answers never get here.
            Class::TooLarge | Class::Redirect | Class::Refused | Class::Retryable => {
                Attempt::Done(Err(DeliveryError::PrepareRefused {
                    name: name.to_owned(),
                    status,
                    detail,
                }))
            }
        }
    }

    /// PUTs the file to the slot's signed URL, retrying by the policy, and reports its progress
    /// while it does.
    async fn put(&self, slot: &Slot, file: &File, size: u64) -> Result<(), PutFailure> {
        let body = StreamBody::raw(file, size);
        let name = file.name();
        let started = std::time::Instant::now();
        info!(file = name, bytes = size, object_key = %slot.object_key, "uploading");
        let attempts = self
            .retry
            .run("upload", || self.put_once(slot, file, size, &body));
        let result = ticking(self.progress.as_ref(), name, &body.progress, size, attempts).await;
        match result {
            Ok((Ok(()), attempts)) => {
                if let Some(progress) = &self.progress {
                    progress(name, size, size);
                }
                if let Some(metrics) = &self.metrics {
                    metrics.uploaded(size);
                }
                let took = crate::logs::duration(started.elapsed());
                info!(file = name, bytes = size, attempts, %took, "uploaded");
                Ok(())
            }
            Ok((Err(failure), _)) => Err(failure),
            Err(Exhausted { last, .. }) => Err(PutFailure::Fatal(DeliveryError::UploadExhausted {
                name: name.to_owned(),
                last,
            })),
        }
    }

    /// One PUT of `body`, the bytes of `file`, unless the URL has expired or the file changed.
    async fn put_once(
        &self,
        slot: &Slot,
        file: &File,
        size: u64,
        body: &StreamBody,
    ) -> Attempt<Result<(), PutFailure>> {
        if slot.use_before.is_some_and(|deadline| Instant::now() >= deadline) {
            return Attempt::Done(Err(PutFailure::FreshUrl("the upload URL expired".to_owned())));
        }
        // The file must still be what was planned: a changed file would fail every attempt.
        if let Err(error) = unchanged(file, size).await {
            return Attempt::Done(Err(PutFailure::Fatal(error)));
        }
        let request = self.put_request(slot, file, size, body);
        exchange(
            request,
            DETAIL_LIMIT,
            "storage",
            |Answer {
                 status,
                 class,
                 detail,
             }| {
                match (status, class) {
                    (_, Class::Success) => Attempt::Done(Ok(())),
                    (StatusCode::FORBIDDEN, _) => Attempt::Done(Err(PutFailure::FreshUrl(format!(
                        "the storage answered 403: {detail}"
                    )))),
                    _ => Attempt::Done(Err(PutFailure::Fatal(DeliveryError::StorageRefused {
                        name: file.name().to_owned(),
                        status,
                        detail,
                    }))),
                }
            },
        )
        .await
    }

    /// The PUT of `body`, the `size` bytes of `file`, to the slot's URL with the headers it
    /// requires.
    fn put_request(&self, slot: &Slot, file: &File, size: u64, body: &StreamBody) -> reqwest::RequestBuilder {
        let mut request = self.client.put(slot.url.clone());
        if !slot.headers.iter().any(|(header, _)| header == CONTENT_TYPE) {
            request = request.header(CONTENT_TYPE, file.mime());
        }
        for (header, value) in &slot.headers {
            request = request.header(header, value);
        }
        request
            .header(CONTENT_LENGTH, size)
            .timeout(self.timeout_for(size))
            .body(body.to_request_body())
    }

    /// Whether an upload URL may be plain `http`: only when the configured callback URL is (a
    /// platform double on 127.0.0.1, in tests and `serve --mock`). A signed URL is a credential,
    /// and the file is the buyer's result.
    fn plain_http_uploads(&self) -> bool {
        self.callback_url.scheme() == "http"
    }
}

/// Whether `file` still has the `size` it was planned with.
async fn unchanged(file: &File, size: u64) -> Result<(), DeliveryError> {
    let name = || file.name().to_owned();
    match file.size().await {
        Ok(now) if now == size => Ok(()),
        Ok(now) => Err(DeliveryError::FileChanged {
            name: name(),
            planned: size,
            now,
        }),
        Err(error) => Err(DeliveryError::FileUnreadable { name: name(), error }),
    }
}

/// How often upload progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs `work`, reporting `sent` of `size` bytes of the file `name` to `progress` every
/// [`PROGRESS_EVERY`] until it is done. The reports end with `work`, even when it is dropped.
async fn ticking<F: Future>(
    progress: Option<&Progress>,
    name: &str,
    sent: &AtomicU64,
    size: u64,
    work: F,
) -> F::Output {
    let Some(progress) = progress else {
        return work.await;
    };
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => progress(name, sent.load(Ordering::Relaxed), size),
        }
    }
}

/// Reads a prepare answer into a slot; `plain_http` allows an `http` upload URL.
fn slot(answer: &str, name: &str, plain_http: bool) -> Result<Slot, DeliveryError> {
    let unusable = |why: Unusable| DeliveryError::PrepareUnusable {
        name: name.to_owned(),
        why,
    };
    let answer: PrepareAnswer = serde_json::from_str(answer).map_err(|e| unusable(Unusable::Json(e)))?;
    if answer.ok == Some(false) {
        return Err(DeliveryError::PrepareDeclined {
            name: name.to_owned(),
        });
    }
    let url = Url::parse(&answer.upload_url).map_err(|e| unusable(Unusable::Url(e)))?;
    match url.scheme() {
        "https" => {}
        "http" if plain_http => {}
        "http" => return Err(unusable(Unusable::PlainHttp)),
        _ => return Err(unusable(Unusable::NotHttps)),
    }
    let headers = required_headers(&answer.requires_headers).map_err(unusable)?;
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

/// The headers the PUT must carry, but `Content-Length`: ours is the file's size.
fn required_headers(required: &BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, Unusable> {
    required
        .iter()
        .map(|(header, value)| {
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| Unusable::HeaderName(header.clone()))?;
            let value = HeaderValue::from_str(value).map_err(|_| Unusable::HeaderValue(name.to_string()))?;
            Ok((name, value))
        })
        .filter(|h| !matches!(h, Ok((header, _)) if header == CONTENT_LENGTH))
        .collect()
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
            let error = slot(answer, "f", false)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
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
                "s",
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

    /// Progress reports belong to the upload: once its future is dropped (the order's task
    /// ended), none follows.
    #[tokio::test]
    async fn progress_reports_stop_when_the_upload_is_dropped() {
        use std::sync::atomic::AtomicUsize;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let reports = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reports);
        let progress: Progress = Arc::new(move |_, _, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let config = crate::config::Config {
            callback_url: Url::parse("http://127.0.0.1:9/api/orders/callback").expect("url"),
            // Nothing listens on the port: the first PUT fails, and the retry waits an hour.
            retry_schedule: vec![Duration::ZERO, Duration::from_secs(3600)],
            ..crate::config::Config::default()
        };
        let delivery =
            Delivery::new(&config, crate::config::Secret::new("s"), Some(progress)).expect("client");
        let slot = Slot {
            filename: "f.bin".to_owned(),
            object_key: "k".to_owned(),
            url: Url::parse(&format!("http://127.0.0.1:{port}/put")).expect("url"),
            headers: Vec::new(),
            use_before: None,
            max_bytes: None,
        };
        let file = File::from_bytes("f.bin", "application/octet-stream", vec![1u8; 10]);
        let upload = delivery.put(&slot, &file, 10);
        let outcome = tokio::time::timeout(Duration::from_millis(600), upload).await;
        assert!(outcome.is_err(), "the upload still waits for its retry");
        let at_drop = reports.load(Ordering::Relaxed);
        assert!(at_drop >= 2, "progress was reported while it ran: {at_drop}");
        tokio::time::sleep(PROGRESS_EVERY * 3).await;
        assert_eq!(
            reports.load(Ordering::Relaxed),
            at_drop,
            "no report after the drop"
        );
    }
}
