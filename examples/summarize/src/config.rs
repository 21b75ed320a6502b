//! Where the model API is and how to call it.

use std::fmt;
use std::time::Duration;

use shorts_runtime::{Error, Result};

/// The API key's variable.
pub(crate) const KEY_VAR: &str = "OPENAI_API_KEY";
/// The API's base URL (`{base}/chat/completions` is called).
const BASE_URL_VAR: &str = "OPENAI_BASE_URL";
/// The model asked.
const MODEL_VAR: &str = "OPENAI_MODEL";
/// Seconds one request to the API may take.
const TIMEOUT_VAR: &str = "SUMMARIZE_TIMEOUT_SECS";
/// First delay between retries, in milliseconds.
const RETRY_BASE_VAR: &str = "SUMMARIZE_RETRY_BASE_MS";
/// Seconds all the requests of one order, retries and waits included, may take.
const DEADLINE_VAR: &str = "SUMMARIZE_DEADLINE_SECS";

/// OpenAI's API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// A small, cheap model that follows JSON instructions well.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// How the short reaches the model: read from the environment at each order
/// ([`Config::from_env`]), or built by a test ([`Config::new`], then its fields).
///
/// Its `Debug` output never shows the API key.
#[derive(Clone)]
pub struct Config {
    /// Sent as `Authorization: Bearer <key>` (`OPENAI_API_KEY`, required).
    pub api_key: String,
    /// The API's base URL, without `/chat/completions` (`OPENAI_BASE_URL`, default
    /// `https://api.openai.com/v1`). Any OpenAI-compatible server works, a local one included.
    pub base_url: String,
    /// The model asked (`OPENAI_MODEL`, default `gpt-4o-mini`).
    pub model: String,
    /// Time one request may take, its answer included (`SUMMARIZE_TIMEOUT_SECS`, default 60 s).
    /// A request that takes longer fails the order; it is not retried.
    pub timeout: Duration,
    /// The first delay before a retry after a 429, a 5xx or a network error, doubled at each
    /// retry (`SUMMARIZE_RETRY_BASE_MS`, default 500 ms). The `Retry-After` (in seconds) of a
    /// 429 or a 5xx is honoured instead.
    pub retry_base: Duration,
    /// The longest wait between two attempts (default 20 s): the doubling delay is cut to it, and
    /// an API whose `Retry-After` asks for longer is not retried.
    pub max_retry_wait: Duration,
    /// Requests made at most for one order, the first included (default 4).
    pub max_attempts: u32,
    /// Time all the requests of one order may take, retries and waits included
    /// (`SUMMARIZE_DEADLINE_SECS`, default 240 s, under the short's 5 min timeout). A retry is
    /// only made when its wait and a whole [`Config::timeout`] fit before it; the first request's
    /// timeout is cut to it.
    pub deadline: Duration,
}

impl Config {
    /// OpenAI's API with this key, and the defaults.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            timeout: Duration::from_secs(60),
            retry_base: Duration::from_millis(500),
            max_retry_wait: Duration::from_secs(20),
            max_attempts: 4,
            deadline: Duration::from_secs(240),
        }
    }

    /// Reads the configuration from the environment.
    ///
    /// # Errors
    ///
    /// When `OPENAI_API_KEY` is not set, or a variable holds a value that cannot be used; the
    /// message names the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `lookup`, which answers a variable's value.
    ///
    /// # Errors
    ///
    /// As [`Config::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let set = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let Some(api_key) = set(KEY_VAR) else {
            return Err(Error::msg(format!(
                "the model API key is not configured: the seller must set {KEY_VAR} in the short's \
                 environment"
            )));
        };
        // The key goes into a header: refuse what a header cannot carry rather than fail later
        // with an error that might quote it.
        if !api_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::msg(format!(
                "{KEY_VAR} holds spaces or characters an HTTP header cannot carry"
            )));
        }
        let mut config = Self::new(api_key);
        if let Some(base_url) = set(BASE_URL_VAR) {
            config.base_url = base_url;
        }
        if let Some(model) = set(MODEL_VAR) {
            config.model = model;
        }
        if let Some(secs) = set(TIMEOUT_VAR) {
            config.timeout = match secs.parse::<u64>() {
                Ok(secs) if secs > 0 => Duration::from_secs(secs),
                _ => return Err(Error::msg(format!("{TIMEOUT_VAR} must be a number of seconds"))),
            };
        }
        if let Some(millis) = set(RETRY_BASE_VAR) {
            config.retry_base = match millis.parse::<u64>() {
                Ok(millis) => Duration::from_millis(millis),
                _ => {
                    return Err(Error::msg(format!(
                        "{RETRY_BASE_VAR} must be a number of milliseconds"
                    )));
                }
            };
        }
        if let Some(secs) = set(DEADLINE_VAR) {
            config.deadline = match secs.parse::<u64>() {
                Ok(secs) if secs > 0 => Duration::from_secs(secs),
                _ => return Err(Error::msg(format!("{DEADLINE_VAR} must be a number of seconds"))),
            };
        }
        config.origin()?;
        Ok(config)
    }

    /// `{base_url}/chat/completions`.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    /// The base URL's scheme, host and port, the only part of it error messages show (a path or
    /// a query may hold a token).
    pub(crate) fn origin(&self) -> Result<String> {
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                Ok(url.origin().ascii_serialization())
            }
            _ => Err(Error::msg(format!(
                "{BASE_URL_VAR} is not an http(s) URL such as {DEFAULT_BASE_URL}"
            ))),
        }
    }

    /// `text` with every occurrence of the API key replaced, for text an API sent back.
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.api_key.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.api_key, "<redacted>")
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    "not set"
                } else {
                    "<redacted>"
                },
            )
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("retry_base", &self.retry_base)
            .field("max_retry_wait", &self.max_retry_wait)
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .finish()
    }
}
