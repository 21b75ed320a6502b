//! Delivering callbacks: one shared client, the retry schedule, and what each answer means.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tracing::{error, info, warn};
use url::Url;

use crate::config::{Config, Secret};
use crate::wire::platform::CALLBACK_SECRET_HEADER;

/// How a callback ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// The platform answered 2xx (a duplicate is answered 200 too).
    Accepted { attempts: u32 },
    /// The platform refused the body for good (400, another 4xx, or a redirect).
    Rejected { status: u16, detail: String },
    /// The platform answered 413: the body is too large for it.
    TooLarge,
    /// Every attempt of the schedule failed on a retryable error.
    Exhausted { attempts: u32, last: String },
}

/// Sends callbacks with the configured secret, retrying as the schedule says.
pub(crate) struct Delivery {
    client: reqwest::Client,
    secret: Secret,
    callback_url: Url,
    schedule: Vec<Duration>,
    unauthorized_retry: Duration,
}

/// Longest wait a `Retry-After` header may impose on one attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One attempt's result.
enum Attempt {
    Done(Delivered),
    Retry { reason: String, after: Option<Duration> },
    Unauthorized,
}

impl Delivery {
    /// Builds the process's one HTTP client: no redirects, bounded timeouts.
    pub(crate) fn new(config: &Config, secret: Secret) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(config.callback_timeout)
            .user_agent(concat!("shorts/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            secret,
            callback_url: config.callback_url.clone(),
            schedule: config.retry_schedule.clone(),
            unauthorized_retry: config.unauthorized_retry,
        })
    }

    /// The URL to send an order's callback to: the webhook's `callback_url` when it points at the
    /// configured platform (same scheme, host and port), the configured one otherwise. The secret
    /// is never sent anywhere else.
    pub(crate) fn target(&self, from_webhook: Option<&str>) -> Url {
        let Some(text) = from_webhook else {
            return self.callback_url.clone();
        };
        match Url::parse(text) {
            Ok(url)
                if url.scheme() == self.callback_url.scheme()
                    && url.host() == self.callback_url.host()
                    && url.port_or_known_default() == self.callback_url.port_or_known_default()
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

    /// Delivers one callback body, retrying on 5xx, 408, 429 and network errors as the schedule
    /// says, and slowly (without using up the schedule) while the platform answers 401.
    pub(crate) async fn deliver(&self, url: &Url, body: Bytes) -> Delivered {
        retry(&self.schedule, self.unauthorized_retry, || {
            self.attempt(url, body.clone())
        })
        .await
    }

    async fn attempt(&self, url: &Url, body: Bytes) -> Attempt {
        let response = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(CALLBACK_SECRET_HEADER, self.secret.expose())
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Retry {
                    reason: describe(&e),
                    after: None,
                };
            }
        };
        let status = response.status();
        let after = retry_after(&response);
        let detail = read_detail(response).await;
        match status {
            s if s.is_success() => Attempt::Done(Delivered::Accepted { attempts: 0 }),
            StatusCode::UNAUTHORIZED => Attempt::Unauthorized,
            StatusCode::PAYLOAD_TOO_LARGE => Attempt::Done(Delivered::TooLarge),
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                reason: format!("the platform answered {status}"),
                after,
            },
            s if s.is_server_error() => Attempt::Retry {
                reason: format!("the platform answered {status}"),
                after,
            },
            s if s.is_redirection() => Attempt::Done(Delivered::Rejected {
                status: s.as_u16(),
                detail: "the platform redirected the callback; redirects are not followed, check SHORTS_CALLBACK_URL"
                    .to_owned(),
            }),
            s => Attempt::Done(Delivered::Rejected {
                status: s.as_u16(),
                detail,
            }),
        }
    }
}

/// Runs `attempt` until it is done: after each retryable failure it waits for the next step of
/// `schedule` (or longer, when the platform asked with `Retry-After`), jittered; after a 401 it
/// waits `unauthorized` without using up a step.
async fn retry<F, Fut>(schedule: &[Duration], unauthorized: Duration, mut attempt: F) -> Delivered
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt>,
{
    let mut attempts = 0u32;
    let mut steps = schedule.iter();
    let mut wait = steps.next().copied().unwrap_or_default();
    loop {
        tokio::time::sleep(jitter(wait)).await;
        attempts += 1;
        match attempt().await {
            Attempt::Done(Delivered::Accepted { .. }) => {
                info!(attempts, "callback accepted");
                return Delivered::Accepted { attempts };
            }
            Attempt::Done(other) => return other,
            Attempt::Unauthorized => {
                error!(
                    attempts,
                    retry_in = %humantime::format_duration(unauthorized),
                    "the platform refused the callback secret (401); check SHORTS_CALLBACK_SECRET"
                );
                wait = unauthorized;
            }
            Attempt::Retry { reason, after } => match steps.next() {
                Some(next) => {
                    let next = after.map_or(*next, |after| after.min(MAX_RETRY_AFTER).max(*next));
                    warn!(attempts, %reason, retry_in = %humantime::format_duration(next), "callback failed; will retry");
                    wait = next;
                }
                None => {
                    return Delivered::Exhausted {
                        attempts,
                        last: reason,
                    };
                }
            },
        }
    }
}

/// ±20 % around `delay`, so that retries of many orders do not arrive together.
pub(crate) fn jitter(delay: Duration) -> Duration {
    if delay.is_zero() {
        return delay;
    }
    delay.mul_f64(0.8 + 0.4 * fastrand::f64())
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of the platform's answer, for the logs.
async fn read_detail(response: reqwest::Response) -> String {
    const LIMIT: usize = 512;
    let mut response = response;
    let mut detail = Vec::new();
    while detail.len() < LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => detail.extend_from_slice(&chunk[..chunk.len().min(LIMIT - detail.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&detail).into_owned()
}

/// A network error's causes in one line (reqwest's own message is only "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
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
        Delivery::new(&config, Secret::new("s")).ok()
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

    use std::cell::RefCell;
    use tokio::time::Instant;

    /// Replays `script` as the platform's answers, recording when each attempt was made.
    async fn replay(schedule: &[Duration], script: Vec<Attempt>) -> (Delivered, Vec<Duration>) {
        let start = Instant::now();
        let times = RefCell::new(Vec::new());
        let script = RefCell::new(script.into_iter());
        let outcome = retry(schedule, Duration::from_secs(600), || {
            times.borrow_mut().push(start.elapsed());
            let next = script.borrow_mut().next();
            async move { next.unwrap_or(Attempt::Done(Delivered::Accepted { attempts: 0 })) }
        })
        .await;
        (outcome, times.into_inner())
    }

    fn retryable() -> Attempt {
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
            Delivered::Exhausted {
                attempts: 12,
                last: "503".into()
            }
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
        assert_eq!(outcome, Delivered::Accepted { attempts: 3 });
        assert_eq!(times.len(), 3);
        assert!(within(times[1], Duration::from_secs(5)));
        assert!(within(times[2] - times[1], Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_not_retried() {
        let schedule = [0, 5].map(Duration::from_secs);
        let refused = Attempt::Done(Delivered::Rejected {
            status: 400,
            detail: String::new(),
        });
        let (outcome, times) = replay(&schedule, vec![refused]).await;
        assert!(matches!(outcome, Delivered::Rejected { status: 400, .. }));
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
        assert_eq!(outcome, Delivered::Accepted { attempts: 22 });
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
