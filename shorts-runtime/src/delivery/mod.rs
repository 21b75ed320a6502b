//! Delivering results: one shared client renders an order's result into a callback ([`Rendered`]:
//! inline content, inline files, or files or a text uploaded first) and sends it. The worker asks
//! [`Delivery::deliver`] to send a callback once and acts on the [`Delivered`] outcome; a 413 is
//! handled here, from the rendered files or the text. Callbacks and uploads retry by one [`RetryPolicy`]; every
//! request goes through one exchange ([`exchange`]), and what cannot be delivered is a
//! [`DeliveryError`], the message of the `ok: false` callback.

mod body;
mod error;
mod exchange;
mod rendered;
mod retry;
mod upload;

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use tracing::{error, info, warn};
use url::Url;

use crate::config::{Config, Secret};
use crate::short::error::Error;
use crate::short::output::{File, Output};
use crate::wire::callback;
use crate::wire::platform::{CALLBACK_SECRET_HEADER, PREPARE_PATH_SUFFIX, SINGLE_FILE_AT_TOP_LEVEL};

use bytes::Bytes;

pub(crate) use body::StreamBody;
pub(crate) use error::DeliveryError;
pub(crate) use exchange::describe;
pub(crate) use rendered::Rendered;
pub(crate) use retry::RetryPolicy;
pub(crate) use upload::Progress;

use exchange::{Answer, Class, DETAIL_LIMIT, exchange};
use rendered::{Fallback, TOO_LARGE_MESSAGE};
use retry::{Attempt, Exhausted};

/// What one POST of a callback achieved, when it is not to be retried.
enum Posted {
    /// The platform answered 2xx (a duplicate is answered 200 too) with this status.
    Accepted { status: u16 },
    /// The platform refused the body for good (400, another 4xx, or a redirect).
    Rejected { status: u16, detail: String },
    /// The platform answered 413: the body is too large for it.
    TooLarge,
}

/// What the worker does after one attempt to deliver a callback.
pub(crate) enum Delivered {
    /// The platform took the callback (a duplicate is taken too), answering `status`.
    Accepted { status: u16 },
    /// The platform refused the callback for good (a 4xx, or a redirect).
    Refused { status: u16, detail: String },
    /// The platform refused even a failure callback as too large (413).
    TooLarge,
    /// A retryable failure: try again after `wait`, one more step of the schedule used. `status`
    /// is the HTTP status answered, `None` for a transport error.
    Retry {
        wait: Duration,
        reason: String,
        status: Option<u16>,
    },
    /// A retryable failure after the last step of the schedule.
    Exhausted { reason: String, status: Option<u16> },
    /// The platform refused the secret (401): try again after `wait`, using no step.
    Unauthorized { wait: Duration },
    /// The platform refused the callback as too large (413): store this one and send it instead.
    Replaced(Rendered),
}

/// The failure callback for a result that could not be delivered as rendered.
fn failed(order_id: &str, error: &DeliveryError) -> Rendered {
    error!(%error, "order failed");
    Rendered::failure(order_id, &error.to_string())
}

/// Sends results to the platform with the configured secret, retrying as the schedule says.
pub(crate) struct Delivery {
    /// The process's one client: no redirects, bounded connect time.
    client: reqwest::Client,
    /// The callback secret, sent to the configured platform only.
    secret: Secret,
    /// The configured callback endpoint.
    callback_url: Url,
    /// The configured prepare endpoint; `<callback path>/prepare` when unset.
    prepare_url: Option<Url>,
    /// When callbacks and uploads are tried again.
    retry: RetryPolicy,
    /// The largest callback body sent with files or a text inline.
    inline_limit: u64,
    /// The time a request is given, before the time its body takes.
    request_timeout: Duration,
    /// Told how uploads progress, when set.
    progress: Option<Progress>,
    /// Counts the bytes uploaded, when metrics are on.
    metrics: crate::admin::metrics::MaybeMetrics,
    /// Told when the platform refuses the secret of an upload's prepare request.
    alerts: crate::admin::alerts::Alerts,
}

/// The slowest transfer rate a request is given time for, on top of the configured timeout.
const SLOWEST_RATE: u64 = 256 * 1024;

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
            retry: RetryPolicy::from_config(config),
            inline_limit: config.inline_limit,
            request_timeout: config.callback_timeout,
            progress,
            metrics: None,
            alerts: crate::admin::alerts::Alerts::default(),
        })
    }

    /// Records the bytes of direct uploads in `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: crate::admin::metrics::MaybeMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Alerts `alerts` when an upload's prepare request is refused the secret (401).
    pub(crate) fn with_alerts(mut self, alerts: crate::admin::alerts::Alerts) -> Self {
        self.alerts = alerts;
        self
    }

    /// The process's one HTTP client (no redirects, bounded connect time), for other requests
    /// the server makes.
    pub(crate) fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The URL to send an order's callback to: the webhook's `callback_url` when it is the
    /// configured endpoint (same scheme, host, port and path; only its query may differ), the
    /// configured one otherwise. The secret is never sent anywhere else, not even to another path
    /// of the platform's host.
    pub(crate) fn target(&self, from_webhook: Option<&str>) -> Url {
        let Some(text) = from_webhook else {
            return self.callback_url.clone();
        };
        // The configured endpoint itself, as the platform's webhooks name it: nothing to check.
        if text == self.callback_url.as_str() {
            return self.callback_url.clone();
        }
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

    /// The URL to send a stored order's callback to: `stored`, as [`Delivery::target`] chose it
    /// when the order arrived, or the configured endpoint if it no longer parses.
    pub(crate) fn stored_target(&self, stored: &str) -> Url {
        if stored == self.callback_url.as_str() {
            return self.callback_url.clone();
        }
        Url::parse(stored).unwrap_or_else(|_| self.callback_url.clone())
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

    /// The callback for an order's result: a failure, inline content, or files — inline when the
    /// body fits the inline limit, uploaded first (then listed by `object_key`) otherwise. A file
    /// that cannot be read or uploaded makes the result a failure saying why.
    pub(crate) async fn render(
        &self,
        target: &Url,
        order_id: &str,
        short: &str,
        result: Result<Output, Error>,
    ) -> Rendered {
        let (output_type, field, value) = match result {
            Err(e) => return Rendered::failure(order_id, e.message()),
            Ok(Output::Files(files)) => return self.render_files(target, order_id, short, files).await,
            Ok(Output::Text(text)) => ("text", "result_text", text),
            Ok(Output::Html(html)) => ("html", "result_text", html),
            Ok(Output::Json(json)) => ("json", "result_text", json),
            Ok(Output::Csv(csv)) => ("csv", "result_text", csv),
            Ok(Output::Url(url)) => ("url", "result_url", url),
        };
        let Some((name, mime)) = callback::text_file(output_type) else {
            return Rendered::new(
                callback::content(order_id, output_type, field, &value),
                Fallback::Fail,
            );
        };
        // A text too large to send inline is uploaded as a file of its type, as files are; one
        // that fits is too if the platform refuses its callback as too large, read back from the
        // body then (holding it beside the body until the answer would double every callback).
        let inline = callback::content_len(order_id, output_type, field, &value);
        if inline > self.inline_limit {
            info!(
                bytes = inline,
                limit = self.inline_limit,
                "the result does not fit in a callback; uploading it as {name}"
            );
            let size = value.len() as u64;
            let file = File::from_bytes(name, mime, value);
            return self.upload_files(target, order_id, short, &[(file, size)]).await;
        }
        Rendered::read_back(callback::content(order_id, output_type, field, &value))
    }

    /// The callback for files: inline when they fit the inline limit (uploaded if the platform
    /// then refuses the body as too large), uploaded otherwise.
    async fn render_files(&self, target: &Url, order_id: &str, short: &str, files: Vec<File>) -> Rendered {
        let mut sized = Vec::with_capacity(files.len());
        for file in files {
            match file.size().await {
                Ok(size) => sized.push((file, size)),
                Err(error) => {
                    let name = file.name().to_owned();
                    return failed(order_id, &DeliveryError::FileUnreadable { name, error });
                }
            }
        }
        let inline = body::inline_files(order_id, &sized, SINGLE_FILE_AT_TOP_LEVEL);
        if inline.len() <= self.inline_limit {
            return match inline.collect().await {
                Ok(body) => Rendered::new(body, Fallback::Upload(sized)),
                Err(error) => failed(order_id, &DeliveryError::FilesUnreadable(error)),
            };
        }
        info!(
            bytes = inline.len(),
            limit = self.inline_limit,
            "the files do not fit in a callback; uploading them"
        );
        self.upload_files(target, order_id, short, &sized).await
    }

    /// The callback listing `files` by `object_key` after uploading them, or a failure saying why.
    async fn upload_files(
        &self,
        target: &Url,
        order_id: &str,
        short: &str,
        files: &[(File, u64)],
    ) -> Rendered {
        let prepare_url = self.prepare_url(target);
        let mut uploaded = Vec::with_capacity(files.len());
        for (file, size) in files {
            match self.upload(&prepare_url, order_id, short, file, *size).await {
                Ok(file) => uploaded.push(file),
                Err(error) => return failed(order_id, &error),
            }
        }
        Rendered::new(callback::uploaded(order_id, &uploaded), Fallback::Fail)
    }

    /// Sends an order's callback once and says what the worker does next. `retried` is how many
    /// retries earlier failures scheduled (the first attempt is the schedule's first step). After
    /// a 413 the answer is the callback to send instead, its files uploaded or a failure.
    pub(crate) async fn deliver(
        &self,
        target: &Url,
        order_id: &str,
        short: &str,
        callback: Rendered,
        retried: usize,
    ) -> Delivered {
        match self.post(target, callback.body()).await {
            Attempt::Done(Posted::Accepted { status }) => Delivered::Accepted { status },
            Attempt::Done(Posted::Rejected { status, detail }) => Delivered::Refused { status, detail },
            Attempt::Done(Posted::TooLarge) => self.too_large(target, order_id, short, callback).await,
            Attempt::Retry {
                reason,
                after,
                status,
            } => match self.retry.next_wait(retried + 1, after) {
                Some(wait) => Delivered::Retry { wait, reason, status },
                None => Delivered::Exhausted { reason, status },
            },
            Attempt::Unauthorized => Delivered::Unauthorized {
                wait: self.retry.unauthorized(),
            },
        }
    }

    /// What replaces a callback the platform refused as too large.
    async fn too_large(&self, target: &Url, order_id: &str, short: &str, callback: Rendered) -> Delivered {
        match callback.into_fallback() {
            Fallback::Upload(files) => {
                warn!("the platform refused the callback as too large (413); uploading its files instead");
                Delivered::Replaced(self.upload_files(target, order_id, short, &files).await)
            }
            Fallback::Fail => Delivered::Replaced(Rendered::failure(order_id, TOO_LARGE_MESSAGE)),
            Fallback::GiveUp => {
                error!("the platform refused even the failure callback as too large");
                Delivered::TooLarge
            }
        }
    }

    /// One POST of a callback body.
    async fn post(&self, url: &Url, body: &Bytes) -> Attempt<Posted> {
        let request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CALLBACK_SECRET_HEADER, self.secret.expose())
            .timeout(self.timeout_for(body.len() as u64))
            .body(body.clone());
        exchange(request, DETAIL_LIMIT, "platform", |Answer { status, class, detail }| {
            match class {
                Class::Success => Attempt::Done(Posted::Accepted {
                    status: status.as_u16(),
                }),
                Class::Unauthorized => Attempt::Unauthorized,
                Class::TooLarge => Attempt::Done(Posted::TooLarge),
                Class::Redirect => Attempt::Done(Posted::Rejected {
                    status: status.as_u16(),
                    detail: "the platform redirected the callback; redirects are not followed, check SHORTS_CALLBACK_URL"
                        .to_owned(),
                }),
                // Retryable answers never get here.
                Class::Retryable | Class::Refused => Attempt::Done(Posted::Rejected {
                    status: status.as_u16(),
                    detail,
                }),
            }
        })
        .await
    }

    /// Time allowed for a request sending `bytes`: the configured timeout, plus the time the body
    /// takes at the slowest rate expected.
    fn timeout_for(&self, bytes: u64) -> Duration {
        self.request_timeout + Duration::from_secs(bytes / SLOWEST_RATE)
    }
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
        let body = delivery.render(&target, "o", "s", Err(Error::from(error))).await;
        let body: serde_json::Value = serde_json::from_slice(body.body()).expect("json");
        let sent = body["error"].as_str().unwrap_or_default();
        assert!(
            sent.contains(&format!("http://127.0.0.1:{port}/v1/run?…")),
            "{sent}"
        );
        assert!(!sent.contains("secret") && !sent.contains("pass"), "{sent}");
    }
}
