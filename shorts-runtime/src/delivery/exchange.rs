//! One request to the platform or its storage: send it, read the answer, and say what the answer
//! means for the retry loop.

use std::time::Duration;

use http::StatusCode;
use reqwest::header::RETRY_AFTER;

use super::retry::Attempt;

/// How much of an answer's body is kept for logs and failure messages.
pub(super) const DETAIL_LIMIT: usize = 512;

/// What a status code means, for every call to the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// 2xx.
    Success,
    /// 401: the platform refused the secret.
    Unauthorized,
    /// 413: the body is too large.
    TooLarge,
    /// 408, 429 and 5xx: try again.
    Retryable,
    /// 3xx: redirects are not followed.
    Redirect,
    /// Any other status: refused for good.
    Refused,
}

impl Class {
    /// The class of `status`.
    pub(super) fn of(status: StatusCode) -> Self {
        match status {
            s if s.is_success() => Self::Success,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Self::Retryable,
            s if s.is_server_error() => Self::Retryable,
            s if s.is_redirection() => Self::Redirect,
            _ => Self::Refused,
        }
    }
}

/// An answer that is not a retryable failure.
pub(super) struct Answer {
    /// Its status.
    pub(super) status: StatusCode,
    /// What the status means.
    pub(super) class: Class,
    /// The start of the body (all of it, up to the limit asked for), for logs and failure
    /// messages.
    pub(super) detail: String,
}

/// Sends `request` and reads up to `limit` bytes of its answer. A network failure or a retryable
/// status (with the `Retry-After` the answer asks for) is retried; any other answer is for
/// `answered` to judge. `peer` names who answers, in the retry's reason.
pub(super) async fn exchange<T>(
    request: reqwest::RequestBuilder,
    limit: usize,
    peer: &str,
    answered: impl FnOnce(Answer) -> Attempt<T>,
) -> Attempt<T> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Attempt::Retry {
                reason: describe(&e),
                after: None,
                status: None,
            };
        }
    };
    let status = response.status();
    let class = Class::of(status);
    let after = retry_after(&response);
    let detail = read_detail(response, limit).await;
    if class == Class::Retryable {
        return Attempt::Retry {
            reason: format!("the {peer} answered {status}"),
            after,
            status: Some(status.as_u16()),
        };
    }
    answered(Answer {
        status,
        class,
        detail,
    })
}

/// The delay an answer asks for with `Retry-After`, in seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The start of an answer's body, at most `limit` bytes.
async fn read_detail(mut response: reqwest::Response, limit: usize) -> String {
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
