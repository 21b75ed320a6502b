//! One chat completion from an OpenAI-compatible API, with bounded retries.
//!
//! Every error this module makes is written for the buyer, and none carries the API key: the key
//! only ever travels in the request's `Authorization` header (marked sensitive), and any text the
//! API sends back is stripped of it before it is quoted.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::Value;
use shorts_runtime::{Error, Result};

use crate::config::Config;

/// Time to open a connection to the API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The client's own limit on a request; each request sets the configured, shorter one.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest answer read from the API.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Characters of an API's error message quoted to the buyer.
const MAX_QUOTED_CHARS: usize = 300;

/// The one HTTP client of the process: it keeps connections to the API open between orders.
fn client() -> Result<&'static reqwest::Client> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CLIENT_TIMEOUT)
                // An API has no reason to redirect, and a redirect must not carry the key away.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::msg(format!("the HTTP client could not be set up: {e}")))
}

/// What one request came to.
enum Attempt {
    /// The model's answer.
    Answer(String),
    /// Worth another try, after `retry_after` if the API said.
    Retry {
        why: Transient,
        retry_after: Option<Duration>,
    },
    /// The order fails with this.
    Fail(Error),
}

/// A failure that may pass.
enum Transient {
    RateLimited,
    Server {
        status: StatusCode,
        message: Option<String>,
    },
    Network(String),
}

/// Sends `messages` to the configured model and returns the text of its answer,
/// `choices[0].message.content`.
pub(crate) async fn complete(config: &Config, messages: Value) -> Result<String> {
    let client = client()?;
    let origin = config.origin()?;
    let body = serde_json::json!({ "model": config.model, "messages": messages }).to_string();
    let mut attempt = 1;
    loop {
        let (why, retry_after) = match once(client, config, &origin, body.clone()).await {
            Attempt::Answer(text) => return Ok(text),
            Attempt::Fail(error) => return Err(error),
            Attempt::Retry { why, retry_after } => (why, retry_after),
        };
        if attempt >= config.max_attempts {
            return Err(give_up(why, attempt, &origin));
        }
        let backoff = config.retry_base.saturating_mul(1 << (attempt - 1).min(16));
        let wait = retry_after.unwrap_or(backoff).min(config.max_retry_wait);
        tracing::warn!(
            attempt,
            retry_in = ?wait,
            reason = %describe(&why),
            "the model API failed; retrying"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// One request, its answer read whole within the configured timeout.
async fn once(client: &reqwest::Client, config: &Config, origin: &str, body: String) -> Attempt {
    let request = client
        .post(config.endpoint())
        .bearer_auth(&config.api_key)
        .header(CONTENT_TYPE, "application/json")
        .timeout(config.timeout)
        .body(body);
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_capped(response).await?;
        Ok::<_, reqwest::Error>((status, retry_after, body))
    };
    let (status, retry_after, body) = match tokio::time::timeout(config.timeout, exchange).await {
        Err(_) => return Attempt::Fail(timed_out(config)),
        Ok(Err(e)) if e.is_timeout() && e.is_connect() => {
            return Attempt::Retry {
                why: Transient::Network(format!("could not connect within {}", seconds(CONNECT_TIMEOUT))),
                retry_after: None,
            };
        }
        Ok(Err(e)) if e.is_timeout() => return Attempt::Fail(timed_out(config)),
        Ok(Err(e)) if e.is_builder() => {
            return Attempt::Fail(Error::msg(format!(
                "the request to the model API at {origin} could not be built: check OPENAI_BASE_URL"
            )));
        }
        Ok(Err(e)) => {
            return Attempt::Retry {
                why: Transient::Network(root_cause(&e)),
                retry_after: None,
            };
        }
        Ok(Ok(answer)) => answer,
    };
    if status.is_success() {
        return match content(&body) {
            Ok(text) => Attempt::Answer(text),
            Err(e) => Attempt::Fail(e),
        };
    }
    let message = error_message(&body).map(|m| quote(&config.redact(&m)));
    if status == StatusCode::TOO_MANY_REQUESTS {
        // OpenAI answers 429 for an exhausted quota too, which no wait cures.
        if error_code(&body).as_deref() == Some("insufficient_quota") {
            return Attempt::Fail(refused(status, message));
        }
        return Attempt::Retry {
            why: Transient::RateLimited,
            retry_after,
        };
    }
    if status.is_server_error() {
        return Attempt::Retry {
            why: Transient::Server { status, message },
            retry_after: None,
        };
    }
    Attempt::Fail(refused(status, message))
}

/// Reads the body, refusing one larger than [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            // Keep what fits: the answer is then not JSON, which is reported as such.
            body.extend_from_slice(&chunk[..MAX_ANSWER_BYTES - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` in seconds (its HTTP-date form is ignored: the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

/// `choices[0].message.content` of a successful answer.
fn content(body: &[u8]) -> Result<String> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| {
        Error::msg(format!(
            "the model API's answer is not JSON: it began {}",
            quote(&String::from_utf8_lossy(&body[..body.len().min(200)]))
        ))
    })?;
    let message = &answer["choices"][0]["message"];
    match &message["content"] {
        Value::String(text) if !text.trim().is_empty() => Ok(text.clone()),
        _ => match message["refusal"].as_str() {
            Some(refusal) => Err(Error::msg(format!(
                "the model declined to summarize the file: {}",
                quote(refusal)
            ))),
            None => Err(Error::msg(
                "the model API's answer has no text (no `choices[0].message.content`)",
            )),
        },
    }
}

/// The message of an error answer: OpenAI's `{"error": {"message": ...}}`, the `{"error": "..."}`
/// or `{"message": ...}` of other servers, or the body itself when it is short text.
fn error_message(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(answer) => [&answer["error"]["message"], &answer["error"], &answer["message"]]
            .into_iter()
            .find_map(|v| v.as_str())
            .map(str::to_owned),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            (!text.is_empty() && !text.starts_with('<')).then(|| text.to_owned())
        }
    }
}

fn error_code(body: &[u8]) -> Option<String> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    answer["error"]["code"].as_str().map(str::to_owned)
}

fn refused(status: StatusCode, message: Option<String>) -> Error {
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (check OPENAI_API_KEY)",
        StatusCode::NOT_FOUND => " (check OPENAI_BASE_URL and OPENAI_MODEL)",
        _ => "",
    };
    match message {
        Some(message) => Error::msg(format!(
            "the model API refused the request ({}){hint}: {message}",
            status_text(status)
        )),
        None => Error::msg(format!(
            "the model API refused the request ({}){hint}",
            status_text(status)
        )),
    }
}

fn give_up(why: Transient, attempts: u32, origin: &str) -> Error {
    match why {
        Transient::RateLimited => Error::msg(format!(
            "the model API is rate limiting requests (429 Too Many Requests, {attempts} attempts): \
             try again in a few minutes"
        )),
        Transient::Server { status, message } => {
            let detail = message.map(|m| format!(": {m}")).unwrap_or_default();
            Error::msg(format!(
                "the model API failed ({}, {attempts} attempts){detail}",
                status_text(status)
            ))
        }
        Transient::Network(cause) => Error::msg(format!(
            "could not reach the model API at {origin} ({attempts} attempts): {cause}"
        )),
    }
}

fn describe(why: &Transient) -> String {
    match why {
        Transient::RateLimited => "429 Too Many Requests".to_owned(),
        Transient::Server { status, .. } => status_text(*status),
        Transient::Network(cause) => cause.clone(),
    }
}

fn timed_out(config: &Config) -> Error {
    Error::msg(format!(
        "the model API did not answer within {}",
        seconds(config.timeout)
    ))
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"): the outer
/// ones repeat the URL.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// `2 s`, `0.5 s`.
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// `text` on one line, cut to [`MAX_QUOTED_CHARS`] characters.
fn quote(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_one_line_and_cut() {
        assert_eq!(quote("a\n  b\tc"), "a b c");
        let long = "é".repeat(400);
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(quoted.ends_with('…'));
    }

    #[test]
    fn error_messages_are_found_in_the_usual_shapes() {
        let openai = br#"{"error": {"message": "bad key", "type": "invalid_request_error"}}"#;
        assert_eq!(error_message(openai).as_deref(), Some("bad key"));
        assert_eq!(
            error_message(br#"{"error": "no model"}"#).as_deref(),
            Some("no model")
        );
        assert_eq!(error_message(br#"{"message": "busy"}"#).as_deref(), Some("busy"));
        assert_eq!(error_message(b"upstream down").as_deref(), Some("upstream down"));
        assert_eq!(error_message(b"<html>502</html>"), None);
        assert_eq!(error_message(b"{}"), None);
    }

    #[test]
    fn retry_after_is_read_in_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, reqwest::header::HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(60)), "60 s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
    }

    #[test]
    fn content_is_read_from_the_first_choice() {
        let answer = br#"{"choices": [{"message": {"role": "assistant", "content": "hi"}}]}"#;
        assert_eq!(content(answer).ok().as_deref(), Some("hi"));
        let refusal = br#"{"choices": [{"message": {"content": null, "refusal": "no"}}]}"#;
        assert_eq!(
            content(refusal).err().map(|e| e.message().to_owned()).as_deref(),
            Some("the model declined to summarize the file: no")
        );
        let empty = br#"{"choices": []}"#;
        assert!(content(empty).is_err());
    }
}
