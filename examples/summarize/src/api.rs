//! One chat completion from an OpenAI-compatible API, with bounded retries.
//!
//! Every error this module makes is written for the buyer, and none carries the API key: the key
//! only ever travels in the request's `Authorization` header (marked sensitive), and any text the
//! API or the model sends back is stripped of it, whole, before it is cut short and quoted. A URL in
//! a transport error is shown as its origin only (a path or a query may hold a token).
//!
//! All the requests of one order, retries and waits included, end by [`Config::deadline`].

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

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
/// Characters quoted of a successful answer that is not JSON.
const MAX_BEGAN_CHARS: usize = 200;

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

/// Why no further attempt is made after a transient failure.
enum Stop {
    /// [`Config::max_attempts`] were made.
    Attempts,
    /// Another attempt, its wait included, would not end by [`Config::deadline`].
    Deadline,
    /// The API's `Retry-After` asks for longer than [`Config::max_retry_wait`].
    AskedWait(Duration),
}

/// Sends `messages` to the configured model and returns the text of its answer,
/// `choices[0].message.content`.
pub(crate) async fn complete(config: &Config, messages: Value) -> Result<String> {
    let client = client()?;
    let origin = config.origin()?;
    let body = serde_json::json!({ "model": config.model, "messages": messages }).to_string();
    let deadline = Instant::now() + config.deadline;
    let mut attempt = 1;
    loop {
        // Only the first request can be cut by the deadline: a retry is made with time for a whole one.
        let timeout = config
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let (why, retry_after) = match once(client, config, &origin, timeout, body.clone()).await {
            Attempt::Answer(text) => return Ok(text),
            Attempt::Fail(error) => return Err(error),
            Attempt::Retry { why, retry_after } => (why, retry_after),
        };
        if attempt >= config.max_attempts {
            return Err(give_up(why, attempt, &origin, Stop::Attempts, config));
        }
        if let Some(asked) = retry_after
            && asked > config.max_retry_wait
        {
            return Err(give_up(why, attempt, &origin, Stop::AskedWait(asked), config));
        }
        let backoff = config.retry_base.saturating_mul(1 << (attempt - 1).min(16));
        let wait = retry_after.unwrap_or(backoff).min(config.max_retry_wait);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if wait.saturating_add(config.timeout) > remaining {
            return Err(give_up(why, attempt, &origin, Stop::Deadline, config));
        }
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

/// One request, its answer read whole within `timeout`.
async fn once(
    client: &reqwest::Client,
    config: &Config,
    origin: &str,
    timeout: Duration,
    body: String,
) -> Attempt {
    let request = client
        .post(config.endpoint())
        .bearer_auth(&config.api_key)
        .header(CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body);
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_capped(response).await?;
        Ok::<_, reqwest::Error>((status, retry_after, body))
    };
    let (status, retry_after, body) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Attempt::Fail(timed_out(timeout)),
        Ok(Err(e)) if e.is_timeout() && e.is_connect() => {
            return Attempt::Retry {
                why: Transient::Network(format!("could not connect within {}", seconds(CONNECT_TIMEOUT))),
                retry_after: None,
            };
        }
        Ok(Err(e)) if e.is_timeout() => return Attempt::Fail(timed_out(timeout)),
        Ok(Err(e)) if e.is_builder() => {
            return Attempt::Fail(Error::msg(format!(
                "the request to the model API at {origin} could not be built: check OPENAI_BASE_URL"
            )));
        }
        Ok(Err(e)) => {
            return Attempt::Retry {
                why: Transient::Network(root_cause(e, config)),
                retry_after: None,
            };
        }
        Ok(Ok(answer)) => answer,
    };
    if status.is_success() {
        return match content(config, &body) {
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
            retry_after,
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
fn content(config: &Config, body: &[u8]) -> Result<String> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| {
        // Redacted whole, then cut: a cut first could keep part of the key.
        let text = config.redact(&String::from_utf8_lossy(body));
        Error::msg(format!(
            "the model API's answer is not JSON: it began {}",
            quote_cut(&text, MAX_BEGAN_CHARS)
        ))
    })?;
    let message = &answer["choices"][0]["message"];
    match &message["content"] {
        Value::String(text) if !text.trim().is_empty() => Ok(text.clone()),
        _ => match message["refusal"].as_str() {
            Some(refusal) => Err(Error::msg(format!(
                "the model declined to summarize the file: {}",
                quote(&config.redact(refusal))
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

fn give_up(why: Transient, attempts: u32, origin: &str, stop: Stop, config: &Config) -> Error {
    let attempts = match attempts {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let allowed = seconds(config.deadline);
    let longest = seconds(config.max_retry_wait);
    Error::msg(match (why, stop) {
        (Transient::RateLimited, Stop::Attempts) => format!(
            "the model API is rate limiting requests (429 Too Many Requests, {attempts}): \
             try again in a few minutes"
        ),
        (Transient::RateLimited, Stop::Deadline) => format!(
            "the model API did not answer in time: it was still rate limiting requests when the \
             {allowed} allowed ran out (429 Too Many Requests, {attempts}): try again in a \
             few minutes"
        ),
        (Transient::RateLimited, Stop::AskedWait(asked)) => format!(
            "the model API is rate limiting requests (429 Too Many Requests) and asks to wait {}, \
             longer than the {longest} an order waits: try again later",
            seconds(asked)
        ),
        (Transient::Server { status, message }, stop) => {
            let status = status_text(status);
            let detail = message.map(|m| format!(": {m}")).unwrap_or_default();
            match stop {
                Stop::Attempts => {
                    format!("the model API failed ({status}, {attempts}){detail}")
                }
                Stop::Deadline => format!(
                    "the model API did not answer in time: it was still failing when the \
                     {allowed} allowed ran out ({status}, {attempts}){detail}"
                ),
                Stop::AskedWait(asked) => format!(
                    "the model API is unavailable ({status}) and asks to wait {}, longer than the \
                     {longest} an order waits: try again later{detail}",
                    seconds(asked)
                ),
            }
        }
        (Transient::Network(cause), Stop::Deadline) => format!(
            "could not reach the model API at {origin} in the {allowed} allowed ({attempts}): \
             {cause}"
        ),
        (Transient::Network(cause), _) => {
            format!("could not reach the model API at {origin} ({attempts}): {cause}")
        }
    })
}

fn describe(why: &Transient) -> String {
    match why {
        Transient::RateLimited => "429 Too Many Requests".to_owned(),
        Transient::Server { status, .. } => status_text(*status),
        Transient::Network(cause) => cause.clone(),
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::msg(format!(
        "the model API did not answer within {}",
        seconds(timeout)
    ))
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"): the outer
/// ones repeat the URL. Whatever it says, a URL in it is shown as its origin only and the key is
/// redacted.
fn root_cause(error: reqwest::Error, config: &Config) -> String {
    let error = error.without_url();
    let mut cause: &dyn std::error::Error = &error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    config.redact(&strip_urls(&cause.to_string()))
}

/// `text` with each URL in it (`scheme://...`) replaced by its origin, `http://host:port`: its
/// credentials, path and query may hold a token.
fn strip_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let head = &rest[..at];
        let start = head
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | ']' | '>' | '"' | '\'' | '`'))
            .map_or(rest.len(), |i| at + i);
        // Punctuation that ends a sentence is not part of the URL ("://" itself is always kept).
        let end = (at + 3).max(rest[..end].trim_end_matches(['.', ',', ';', '!', '?']).len());
        out.push_str(&rest[..start]);
        match reqwest::Url::parse(&rest[start..end]) {
            Ok(url) if url.origin().is_tuple() => out.push_str(&url.origin().ascii_serialization()),
            _ => {
                out.push_str(&rest[start..at]);
                out.push_str("://…");
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
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

/// `text` on one line, cut to [`MAX_QUOTED_CHARS`] characters. Redact it first.
fn quote(text: &str) -> String {
    quote_cut(text, MAX_QUOTED_CHARS)
}

/// `text` on one line, cut to `max` characters. Redact it first.
fn quote_cut(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
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
        let config = Config::new("sk-unit-KEY-0123456789");
        let answer = br#"{"choices": [{"message": {"role": "assistant", "content": "hi"}}]}"#;
        assert_eq!(content(&config, answer).ok().as_deref(), Some("hi"));
        let refusal = br#"{"choices": [{"message": {"content": null, "refusal": "no"}}]}"#;
        assert_eq!(
            content(&config, refusal)
                .err()
                .map(|e| e.message().to_owned())
                .as_deref(),
            Some("the model declined to summarize the file: no")
        );
        let empty = br#"{"choices": []}"#;
        assert!(content(&config, empty).is_err());
    }

    #[test]
    fn a_refusal_and_a_non_json_answer_are_redacted_before_they_are_cut() {
        let key = "sk-unit-KEY-0123456789";
        let config = Config::new(key);
        let refusal = serde_json::json!({
            "choices": [{ "message": { "content": null, "refusal": format!("{} {key}", "x".repeat(290)) } }]
        });
        let message = content(&config, refusal.to_string().as_bytes())
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.ends_with("<redacted…"), "{message}");
        assert!(!message.contains("sk-unit"), "{message}");
        // The key straddles the 200th character: cut first, its start would show.
        let body = format!("{} {key} tail", "y".repeat(190));
        let message = content(&config, body.as_bytes())
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.starts_with("the model API's answer is not JSON: it began yyy"),
            "{message}"
        );
        assert!(!message.contains("sk-"), "{message}");
        assert!(message.ends_with("<redacted…"), "{message}");
    }

    #[test]
    fn urls_in_transport_errors_keep_their_origin_only() {
        assert_eq!(
            strip_urls(
                "error sending request for url (http://user:pw@127.0.0.1:8080/v1/chat/completions?token=abc)"
            ),
            "error sending request for url (http://127.0.0.1:8080)"
        );
        assert_eq!(
            strip_urls("see https://api.example.com/v1?key=s3cret, then ftp://x and x://"),
            "see https://api.example.com, then ftp://x and x://…"
        );
        assert_eq!(
            strip_urls("Connection refused (os error 111)"),
            "Connection refused (os error 111)"
        );
        assert_eq!(strip_urls("é://y"), "é://…");
    }
}
