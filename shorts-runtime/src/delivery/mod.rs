//! Delivering results: one shared client, the retry schedule, inline or uploaded files, and what
//! each answer of the platform means.

mod body;
mod upload;

use std::time::Duration;

use http::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tracing::{error, info, warn};
use url::Url;

use crate::config::{Config, Secret};
use crate::short::error::Error;
use crate::short::output::{File, Output};
use crate::wire::callback;
use crate::wire::platform::{CALLBACK_SECRET_HEADER, PREPARE_PATH_SUFFIX, SINGLE_FILE_AT_TOP_LEVEL};

use bytes::Bytes;

pub(crate) use body::StreamBody;
pub(crate) use upload::Progress;

/// What one POST of a callback achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Posted {
    /// The platform answered 2xx (a duplicate is answered 200 too).
    Accepted,
    /// The platform refused the body for good (400, another 4xx, or a redirect).
    Rejected { status: u16, detail: String },
    /// The platform answered 413: the body is too large for it.
    TooLarge,
    /// A retryable failure (5xx, 408, 429, network); `after` when the platform asked for a delay.
    Retry { reason: String, after: Option<Duration> },
    /// The platform refused the callback secret (401).
    Unauthorized,
}

/// What one HTTP exchange means for the retry loop.
pub(crate) enum Attempt<T> {
    /// Finished, well or badly: no retry.
    Done(T),
    /// A retryable failure: try again at the next step of the schedule (or later, if asked).
    Retry { reason: String, after: Option<Duration> },
    /// The platform refused the secret: try again slowly, without using up the schedule.
    Unauthorized,
}

/// Every step of the schedule failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Exhausted {
    pub(crate) attempts: u32,
    pub(crate) last: String,
}

/// What a status code means, for every call to the platform.
enum Class {
    Success,
    Unauthorized,
    TooLarge,
    Retryable,
    Redirect,
    Refused,
}

fn classify(status: StatusCode) -> Class {
    match status {
        s if s.is_success() => Class::Success,
        StatusCode::UNAUTHORIZED => Class::Unauthorized,
        StatusCode::PAYLOAD_TOO_LARGE => Class::TooLarge,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Class::Retryable,
        s if s.is_server_error() => Class::Retryable,
        s if s.is_redirection() => Class::Redirect,
        _ => Class::Refused,
    }
}

/// Sends results to the platform with the configured secret, retrying as the schedule says.
pub(crate) struct Delivery {
    client: reqwest::Client,
    secret: Secret,
    callback_url: Url,
    prepare_url: Option<Url>,
    schedule: Vec<Duration>,
    unauthorized_retry: Duration,
    inline_limit: u64,
    request_timeout: Duration,
    progress: Option<Progress>,
}

/// The slowest transfer rate a request is given time for, on top of the configured timeout.
const SLOWEST_RATE: u64 = 256 * 1024;

/// Longest wait a `Retry-After` header may impose on one attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Delivery {
    /// Builds the process's one HTTP client: no redirects, bounded timeouts.
    pub(crate) fn new(
        config: &Config,
        secret: Secret,
        progress: Option<Progress>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("shorts/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            secret,
            callback_url: config.callback_url.clone(),
            prepare_url: config.prepare_url.clone(),
            schedule: config.retry_schedule.clone(),
            unauthorized_retry: config.unauthorized_retry,
            inline_limit: config.inline_limit,
            request_timeout: config.callback_timeout,
            progress,
        })
    }

    /// The URL to send an order's callback to: the webhook's `callback_url` when it is the
    /// configured endpoint (same scheme, host, port and path; only its query may differ), the
    /// configured one otherwise. The secret is never sent anywhere else, not even to another path
    /// of the platform's host.
    pub(crate) fn target(&self, from_webhook: Option<&str>) -> Url {
        let Some(text) = from_webhook else {
            return self.callback_url.clone();
        };
        match Url::parse(text) {
            Ok(url)
                if url.scheme() == self.callback_url.scheme()
                    && url.host() == self.callback_url.host()
                    && url.port_or_known_default() == self.callback_url.port_or_known_default()
                    && url.path() == self.callback_url.path()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                url
            }
            _ => {
                warn!(
                    callback_url = text,
                    configured = %self.callback_url,
                    "the webhook's callback_url does not match the configured platform; using the configured one"
                );
                self.callback_url.clone()
            }
        }
    }

    /// The prepare endpoint for an order whose callback goes to `target`: configured, or
    /// `<callback path>/prepare` on the same host.
    fn prepare_url(&self, target: &Url) -> Url {
        if let Some(url) = &self.prepare_url {
            return url.clone();
        }
        let mut url = target.clone();
        let path = format!("{}{PREPARE_PATH_SUFFIX}", target.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(None);
        url
    }

    /// The callback body for an order's result: a failure, inline content, or files — inline when
    /// the body fits the inline limit, uploaded first (then listed by `object_key`) otherwise. A
    /// file that cannot be read or uploaded makes the result a failure saying why.
    pub(crate) async fn render(&self, target: &Url, order_id: &str, result: Result<Output, Error>) -> Bytes {
        let (output_type, field, value) = match result {
            Err(e) => return callback::failure(order_id, e.message()).into(),
            Ok(Output::Files(files)) => return self.render_files(target, order_id, files).await,
            Ok(Output::Text(text)) => ("text", "result_text", text),
            Ok(Output::Html(html)) => ("html", "result_text", html),
            Ok(Output::Json(json)) => ("json", "result_text", json),
            Ok(Output::Csv(csv)) => ("csv", "result_text", csv),
            Ok(Output::Url(url)) => ("url", "result_url", url),
        };
        callback::content(order_id, output_type, field, &value).into()
    }

    async fn render_files(&self, target: &Url, order_id: &str, files: Vec<File>) -> Bytes {
        let mut sized = Vec::with_capacity(files.len());
        for file in files {
            match file.size().await {
                Ok(size) => sized.push((file, size)),
                Err(e) => {
                    let message = format!("the file `{}` could not be read: {e}", file.name());
                    error!(error = %message, "order failed");
                    return callback::failure(order_id, &message).into();
                }
            }
        }
        let inline = body::inline_files(order_id, &sized, SINGLE_FILE_AT_TOP_LEVEL);
        if inline.len() <= self.inline_limit {
            match inline.collect().await {
                Ok(body) => return body,
                Err(e) => {
                    let message = format!("the files could not be read: {e}");
                    error!(error = %message, "order failed");
                    return callback::failure(order_id, &message).into();
                }
            }
        }
        info!(
            bytes = inline.len(),
            limit = self.inline_limit,
            "the files do not fit in a callback; uploading them"
        );
        self.upload_files(target, order_id, &sized).await
    }

    /// The callback listing `files` by `object_key` after uploading them, or a failure saying why.
    async fn upload_files(&self, target: &Url, order_id: &str, files: &[(File, u64)]) -> Bytes {
        let prepare_url = self.prepare_url(target);
        let mut uploaded = Vec::with_capacity(files.len());
        for (file, size) in files {
            match self.upload(&prepare_url, order_id, file, *size).await {
                Ok(file) => uploaded.push(file),
                Err(message) => {
                    error!(error = %message, "upload failed");
                    return callback::failure(order_id, &message).into();
                }
            }
        }
        callback::uploaded(order_id, &uploaded).into()
    }

    /// After a 413: the same result with its inline files uploaded instead, or `None` when the
    /// body carries no inline file.
    pub(crate) async fn reupload(&self, target: &Url, order_id: &str, body: &[u8]) -> Option<Bytes> {
        let files = callback::inline_files(body)?;
        Some(self.upload_files(target, order_id, &files).await)
    }

    /// One POST of a callback body.
    pub(crate) async fn post(&self, url: &Url, body: &Bytes) -> Posted {
        let request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CALLBACK_SECRET_HEADER, self.secret.expose())
            .timeout(self.timeout_for(body.len() as u64))
            .body(body.clone());
        let Answer {
            status,
            after,
            detail,
        } = match exchange(request, DETAIL_LIMIT).await {
            Ok(answer) => answer,
            Err(reason) => return Posted::Retry { reason, after: None },
        };
        match classify(status) {
            Class::Success => Posted::Accepted,
            Class::Unauthorized => Posted::Unauthorized,
            Class::TooLarge => Posted::TooLarge,
            Class::Retryable => Posted::Retry {
                reason: format!("the platform answered {status}"),
                after,
            },
            Class::Redirect => Posted::Rejected {
                status: status.as_u16(),
                detail: "the platform redirected the callback; redirects are not followed, check SHORTS_CALLBACK_URL"
                    .to_owned(),
            },
            Class::Refused => Posted::Rejected {
                status: status.as_u16(),
                detail,
            },
        }
    }

    /// Time allowed for a request sending `bytes`: the configured timeout, plus the time the body
    /// takes at the slowest rate expected.
    fn timeout_for(&self, bytes: u64) -> Duration {
        self.request_timeout + Duration::from_secs(bytes / SLOWEST_RATE)
    }

    async fn retry<T, F, Fut>(&self, what: &'static str, attempt: F) -> Result<(T, u32), Exhausted>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        retry(&self.schedule, self.unauthorized_retry, what, attempt).await
    }
}

/// Runs `attempt` until it is done: after each retryable failure it waits for the next step of
/// `schedule` (or longer, when the platform asked with `Retry-After`), jittered; after a 401 it
/// waits `unauthorized` without using up a step. Returns the result and the number of attempts.
async fn retry<T, F, Fut>(
    schedule: &[Duration],
    unauthorized: Duration,
    what: &'static str,
    mut attempt: F,
) -> Result<(T, u32), Exhausted>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut attempts = 0u32;
    // Steps of the schedule used: 401s do not use them.
    let mut steps = 1;
    let mut wait = jitter(schedule.first().copied().unwrap_or_default());
    loop {
        tokio::time::sleep(wait).await;
        attempts += 1;
        match attempt().await {
            Attempt::Done(done) => return Ok((done, attempts)),
            Attempt::Unauthorized => {
                error!(
                    what,
                    attempts,
                    retry_in = %humantime::format_duration(unauthorized),
                    "the platform refused the callback secret (401); check SHORTS_CALLBACK_SECRET"
                );
                wait = jitter(unauthorized);
            }
            Attempt::Retry { reason, after } => match next_wait(schedule, steps, after) {
                Some(next) => {
                    steps += 1;
                    warn!(what, attempts, %reason, retry_in = %humantime::format_duration(next), "failed; will retry");
                    wait = next;
                }
                None => {
                    return Err(Exhausted {
                        attempts,
                        last: reason,
                    });
                }
            },
        }
    }
}

/// The wait after `used` attempts of a retryable failure: the schedule's next step, jittered, or
/// longer when the platform asked with `Retry-After` (at most an hour); `None` once the schedule is
/// used up. Callbacks (in the engine) and uploads (here) retry by this one rule.
pub(crate) fn next_wait(schedule: &[Duration], used: usize, after: Option<Duration>) -> Option<Duration> {
    let step = jitter(*schedule.get(used)?);
    Some(after.map_or(step, |after| after.min(MAX_RETRY_AFTER).max(step)))
}

/// ±20 % around `delay`, so that retries of many orders do not arrive together.
pub(crate) fn jitter(delay: Duration) -> Duration {
    if delay.is_zero() {
        return delay;
    }
    delay.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// What every caller reads of an answer.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// The platform's `Retry-After`, in seconds.
    pub(crate) after: Option<Duration>,
    /// The start of the body, for logs and failure messages.
    pub(crate) detail: String,
}

/// How much of an answer's body is kept for logs and failure messages.
pub(crate) const DETAIL_LIMIT: usize = 512;

/// Sends a request and reads its answer (up to `limit` bytes of body); a network failure is the
/// reason, in one line.
pub(crate) async fn exchange(request: reqwest::RequestBuilder, limit: usize) -> Result<Answer, String> {
    let response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    let after = retry_after(&response);
    let detail = read_detail(response, limit).await;
    Ok(Answer {
        status,
        after,
        detail,
    })
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of an answer's body, at most `limit` bytes.
async fn read_detail(response: reqwest::Response, limit: usize) -> String {
    let mut response = response;
    let mut detail = Vec::new();
    while detail.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => detail.extend_from_slice(&chunk[..chunk.len().min(limit - detail.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&detail).trim().to_owned()
}

/// A network error's causes in one line (reqwest's own message is only "error sending request"),
/// without the URL: a signed upload URL is a credential.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(callback_url: &str) -> Option<Delivery> {
        let config = Config {
            callback_url: Url::parse(callback_url).ok()?,
            ..Config::default()
        };
        Delivery::new(&config, Secret::new("s"), None).ok()
    }

    #[test]
    fn only_the_configured_platform_gets_the_secret() {
        let Some(delivery) = delivery("https://api.sellershorts.com/api/orders/callback") else {
            panic!("client");
        };
        let same = delivery.target(Some("https://api.sellershorts.com/api/orders/callback?v=2"));
        assert_eq!(
            same.as_str(),
            "https://api.sellershorts.com/api/orders/callback?v=2"
        );
        for foreign in [
            "https://evil.example/api/orders/callback",
            "http://api.sellershorts.com/api/orders/callback",
            "https://api.sellershorts.com:8443/api/orders/callback",
            "https://user:pw@api.sellershorts.com/api/orders/callback",
            "https://api.sellershorts.com/api/admin/webhook",
            "https://api.sellershorts.com/api/orders/callback/",
            "https://api.sellershorts.com/api/orders/callback/../../admin",
            "https://api.sellershorts.com/api/orders/callbackx",
            "https://api.sellershorts.com/",
            "not a url",
        ] {
            assert_eq!(
                delivery.target(Some(foreign)).as_str(),
                "https://api.sellershorts.com/api/orders/callback",
                "{foreign}"
            );
        }
        assert_eq!(
            delivery.target(None).as_str(),
            "https://api.sellershorts.com/api/orders/callback"
        );
    }

    /// reqwest's message quotes the URL it failed on, user part and query included; the
    /// platform gets it redacted.
    #[tokio::test]
    async fn a_handler_error_quoting_a_url_is_sent_redacted() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let url = format!("http://user:pass@127.0.0.1:{port}/v1/run?key=secret");
        let error = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect_err("nothing listens on the port");
        let full = error.to_string();
        assert!(
            full.contains("?key=secret"),
            "reqwest's message quotes the URL: {full}"
        );
        let Some(delivery) = delivery("https://api.sellershorts.com/api/orders/callback") else {
            panic!("client");
        };
        let target = delivery.target(None);
        let body = delivery.render(&target, "o", Err(Error::from(error))).await;
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let sent = body["error"].as_str().unwrap_or_default();
        assert!(
            sent.contains(&format!("http://127.0.0.1:{port}/v1/run?…")),
            "{sent}"
        );
        assert!(!sent.contains("secret") && !sent.contains("pass"), "{sent}");
    }

    use std::cell::RefCell;
    use tokio::time::Instant;

    /// Replays `script` as the platform's answers, recording when each attempt was made.
    #[derive(Debug, PartialEq, Eq)]
    enum Delivered {
        Accepted,
        Rejected,
    }

    type Outcome = Result<(Delivered, u32), Exhausted>;

    async fn replay(schedule: &[Duration], script: Vec<Attempt<Delivered>>) -> (Outcome, Vec<Duration>) {
        let start = Instant::now();
        let times = RefCell::new(Vec::new());
        let script = RefCell::new(script.into_iter());
        let outcome = retry(schedule, Duration::from_secs(600), "test", || {
            times.borrow_mut().push(start.elapsed());
            let next = script.borrow_mut().next();
            async move { next.unwrap_or(Attempt::Done(Delivered::Accepted)) }
        })
        .await;
        (outcome, times.into_inner())
    }

    fn accepted(attempts: u32) -> Outcome {
        Ok((Delivered::Accepted, attempts))
    }

    fn retryable() -> Attempt<Delivered> {
        Attempt::Retry {
            reason: "503".into(),
            after: None,
        }
    }

    fn within(actual: Duration, expected: Duration) -> bool {
        actual >= expected.mul_f64(0.8) && actual <= expected.mul_f64(1.2) + Duration::from_millis(5)
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_schedule_spans_about_three_days() {
        let schedule = Config::default().retry_schedule;
        let (outcome, times) = replay(&schedule, (0..12).map(|_| retryable()).collect()).await;
        assert_eq!(
            outcome,
            Err(Exhausted {
                attempts: 12,
                last: "503".into()
            })
        );
        assert_eq!(times.len(), 12);
        assert!(
            times[0] < Duration::from_millis(5),
            "the first attempt is immediate"
        );
        for (i, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                within(gap, schedule[i + 1]),
                "gap {i}: {gap:?} vs {:?}",
                schedule[i + 1]
            );
        }
        let total = times[11];
        let days = total.as_secs_f64() / 86_400.0;
        assert!((2.4..3.6).contains(&days), "{days} days");
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_failures_stops_retrying() {
        let schedule = [0, 5, 30].map(Duration::from_secs);
        let (outcome, times) = replay(&schedule, vec![retryable(), retryable()]).await;
        assert_eq!(outcome, accepted(3));
        assert_eq!(times.len(), 3);
        assert!(within(times[1], Duration::from_secs(5)));
        assert!(within(times[2] - times[1], Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_not_retried() {
        let schedule = [0, 5].map(Duration::from_secs);
        let refused = Attempt::Done(Delivered::Rejected);
        let (outcome, times) = replay(&schedule, vec![refused]).await;
        assert!(matches!(outcome, Ok((Delivered::Rejected, 1))));
        assert_eq!(times.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unauthorized_retries_slowly_without_using_up_the_schedule() {
        let schedule = [0, 5].map(Duration::from_secs);
        let script = (0..20)
            .map(|_| Attempt::Unauthorized)
            .chain([retryable()])
            .collect();
        let (outcome, times) = replay(&schedule, script).await;
        // 20 refusals of the secret, one 503, then success on the schedule's second step.
        assert_eq!(outcome, accepted(22));
        for pair in times[..21].windows(2) {
            assert!(within(pair[1] - pair[0], Duration::from_secs(600)));
        }
        assert!(within(times[21] - times[20], Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_lengthens_a_step() {
        let schedule = [0, 5, 5].map(Duration::from_secs);
        let slow_down = Attempt::Retry {
            reason: "429".into(),
            after: Some(Duration::from_secs(60)),
        };
        let (_, times) = replay(&schedule, vec![slow_down]).await;
        assert!(within(times[1], Duration::from_secs(60)));
    }

    #[test]
    fn next_wait_follows_the_schedule_and_retry_after() {
        let schedule = [0, 10, 100].map(Duration::from_secs);
        assert!(next_wait(&schedule, 1, None).is_some_and(|w| within(w, Duration::from_secs(10))));
        // The platform's Retry-After wins when longer, capped at an hour, and is not jittered.
        assert_eq!(
            next_wait(&schedule, 1, Some(Duration::from_secs(50))),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            next_wait(&schedule, 1, Some(Duration::from_secs(99_999))),
            Some(MAX_RETRY_AFTER)
        );
        assert!(
            next_wait(&schedule, 2, Some(Duration::from_secs(1)))
                .is_some_and(|w| w >= Duration::from_secs(80))
        );
        assert_eq!(next_wait(&schedule, 3, None), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jitter(base);
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
