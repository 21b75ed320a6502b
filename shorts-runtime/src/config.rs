//! Configuration: from the environment, or built in code.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// The platform's callback endpoint, [`Config::callback_url`] when `SHORTS_CALLBACK_URL` is not set.
pub const DEFAULT_CALLBACK_URL: &str = crate::wire::platform::DEFAULT_CALLBACK_URL;

/// The default of [`Config::inline_limit`] (`SHORTS_INLINE_LIMIT`): 4,450,000 bytes, 50 kB under
/// the platform's documented 4.5 MB limit on a callback's body, so that a body near the limit goes
/// through direct upload instead of meeting a 413.
pub const DEFAULT_INLINE_LIMIT: u64 = crate::wire::platform::DEFAULT_INLINE_LIMIT;

/// Why the configuration could not be read. Each message names the variable to fix and never
/// repeats a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("`{var}` is not set: {hint}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// What to set it to.
        hint: &'static str,
    },
    /// A variable is set to something that cannot be used.
    #[error("`{var}` is invalid: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A variable asks for what this build leaves out (a cargo feature that is off).
    #[error("`{var}` is set, but {reason}")]
    NotBuilt {
        /// The variable.
        var: &'static str,
        /// What the build lacks, and how to turn it on.
        reason: &'static str,
    },
}

/// A secret value whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A header the platform must send on every webhook, e.g. `x-api-key: abc`.
#[derive(Clone)]
pub struct WebhookAuth {
    pub(crate) name: HeaderName,
    pub(crate) value: Secret,
    /// The SHA-256 digest of `value`, which a webhook's header is compared with.
    pub(crate) digest: [u8; 32],
}

impl WebhookAuth {
    /// A header name and the exact value expected.
    ///
    /// # Errors
    ///
    /// When the name is not a valid header name or the value is empty or not a valid header value.
    pub fn new(name: &str, value: &str) -> Result<Self, ConfigError> {
        Self::named(name, value, WEBHOOK_AUTH_VARS[0])
    }

    /// As [`WebhookAuth::new`], naming `var` in its errors.
    fn named(name: &str, value: &str, var: &'static str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            var,
            reason: reason.to_owned(),
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| invalid("the header name is not a valid HTTP header name"))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(invalid("the header value is empty"));
        }
        HeaderValue::from_str(value)
            .map_err(|_| invalid("the header value is not a valid HTTP header value"))?;
        Ok(Self {
            name,
            value: Secret::new(value),
            digest: crate::server::digest(value.as_bytes()),
        })
    }

    /// Parses `name: value`, as in `SHORTS_WEBHOOK_AUTH`.
    ///
    /// # Errors
    ///
    /// When there is no `:` or either side is invalid.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_var(text, WEBHOOK_AUTH_VARS[0])
    }

    /// As [`WebhookAuth::parse`], naming `var` in its errors.
    fn parse_var(text: &str, var: &'static str) -> Result<Self, ConfigError> {
        let (name, value) = text.split_once(':').ok_or_else(|| ConfigError::Invalid {
            var,
            reason:
                "expected `header-name: value`, e.g. `x-api-key: abc123` or `Authorization: Bearer abc123`"
                    .to_owned(),
        })?;
        Self::named(name, value, var)
    }

    /// The header's name.
    pub fn header_name(&self) -> &str {
        self.name.as_str()
    }
}

impl fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAuth")
            .field("name", &self.name)
            .field("value", &self.value)
            .finish()
    }
}

/// The variables that each hold one header every webhook must carry, as `name: value`: the
/// first, then the numbered ones for a platform configured to send several.
pub(crate) const WEBHOOK_AUTH_VARS: [&str; 9] = [
    "SHORTS_WEBHOOK_AUTH",
    "SHORTS_WEBHOOK_AUTH_2",
    "SHORTS_WEBHOOK_AUTH_3",
    "SHORTS_WEBHOOK_AUTH_4",
    "SHORTS_WEBHOOK_AUTH_5",
    "SHORTS_WEBHOOK_AUTH_6",
    "SHORTS_WEBHOOK_AUTH_7",
    "SHORTS_WEBHOOK_AUTH_8",
    "SHORTS_WEBHOOK_AUTH_9",
];

/// The headers of the `SHORTS_WEBHOOK_AUTH*` variables that are set; two for the same header
/// name are an error, since a request carries one value for it.
fn webhook_auth_from(get: &impl Fn(&str) -> Option<String>) -> Result<Vec<WebhookAuth>, ConfigError> {
    let mut headers: Vec<WebhookAuth> = Vec::new();
    for var in WEBHOOK_AUTH_VARS {
        let Some(text) = get(var) else { continue };
        let auth = WebhookAuth::parse_var(&text, var)?;
        if headers.iter().any(|known| known.name == auth.name) {
            return Err(ConfigError::Invalid {
                var,
                reason: format!(
                    "the header `{}` is already set by another `SHORTS_WEBHOOK_AUTH` variable; \
                     each variable names a different header",
                    auth.name
                ),
            });
        }
        headers.push(auth);
    }
    Ok(headers)
}

/// Why a `postgres://` store cannot be used by a build without the `postgres` feature, and how
/// to turn it on.
pub(crate) const POSTGRES_NOT_BUILT: &str = "this build has no PostgreSQL support: turn on \
    shorts-runtime's `postgres` feature (`features = [\"postgres\"]` on its line in Cargo.toml)";

/// Why ACME (`SHORTS_ACME_*`) cannot be used by a build without the `acme` feature, and how to
/// turn it on.
pub(crate) const ACME_NOT_BUILT: &str = "this build has no ACME support: turn on \
    shorts-runtime's `acme` feature (`features = [\"acme\"]` on its line in Cargo.toml)";

/// The variables of ACME, `SHORTS_ACME_DOMAINS` first.
const ACME_VARS: [&str; 5] = [
    "SHORTS_ACME_DOMAINS",
    "SHORTS_ACME_EMAIL",
    "SHORTS_ACME_DIRECTORY",
    "SHORTS_ACME_CA_ROOT",
    "SHORTS_ACME_CACHE",
];

/// Where orders are kept (`SHORTS_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfig {
    /// `memory`: in this process's memory, lost on restart (tests, trials).
    Memory,
    /// `sqlite://PATH`: an embedded database file, the default (`sqlite://shorts.db`).
    Sqlite(std::path::PathBuf),
    /// `postgres://...`: a PostgreSQL database, shared by several instances. Needs the crate's
    /// `postgres` feature: without it, [`StoreConfig::parse`] refuses the URL and a store
    /// opened from this variant fails with [`StoreError::PostgresNotBuilt`](crate::StoreError::PostgresNotBuilt).
    Postgres(Secret),
}

impl StoreConfig {
    /// Parses `memory`, `sqlite://PATH` (or `sqlite:PATH`) or `postgres://...` (or `postgresql://`).
    ///
    /// # Errors
    ///
    /// For anything else, or an empty path.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            var: "SHORTS_STORE",
            reason: reason.to_owned(),
        };
        if text == "memory" {
            return Ok(StoreConfig::Memory);
        }
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(invalid(
                    "`sqlite://` needs a file path, e.g. `sqlite://shorts.db`",
                ));
            }
            return Ok(StoreConfig::Sqlite(path.into()));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            if !cfg!(feature = "postgres") {
                return Err(ConfigError::NotBuilt {
                    var: "SHORTS_STORE",
                    reason: POSTGRES_NOT_BUILT,
                });
            }
            return Ok(StoreConfig::Postgres(Secret::new(text)));
        }
        Err(invalid(
            "expected `sqlite://PATH`, `postgres://USER@HOST/DB` or `memory`",
        ))
    }
}

/// Everything `serve` needs. Read it with [`Config::from_env`], or start from [`Config::default`]
/// and set fields in code.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Listen address (`SHORTS_BIND`, or `0.0.0.0:$PORT`). Default `0.0.0.0:8080`.
    pub bind: SocketAddr,
    /// Value of `x-callback-secret` on every callback (`SHORTS_CALLBACK_SECRET`). Required to serve.
    pub callback_secret: Option<Secret>,
    /// Headers every webhook must carry, each compared in constant time: `SHORTS_WEBHOOK_AUTH`,
    /// then `SHORTS_WEBHOOK_AUTH_2` to `SHORTS_WEBHOOK_AUTH_9` for more, one `name: value` in each.
    /// At least one is required to serve.
    pub webhook_auth: Vec<WebhookAuth>,
    /// The platform's callback endpoint (`SHORTS_CALLBACK_URL`). A webhook's `callback_url` is used
    /// only when its scheme, host and port match this one. Default [`DEFAULT_CALLBACK_URL`].
    pub callback_url: url::Url,
    /// The platform's prepare endpoint for direct uploads (`SHORTS_PREPARE_URL`). Default: the
    /// callback URL's path followed by `/prepare`.
    pub prepare_url: Option<url::Url>,
    /// Largest callback body sent with files or a text inline (`SHORTS_INLINE_LIMIT`); larger
    /// results go through direct upload. Default [`DEFAULT_INLINE_LIMIT`], 4,450,000 bytes, just under the
    /// platform's 4.5 MB.
    pub inline_limit: u64,
    /// Where orders are kept (`SHORTS_STORE`). Default `sqlite://shorts.db`.
    pub store: StoreConfig,
    /// How long an instance's claim on an order lasts without a heartbeat (`SHORTS_LEASE`): the
    /// time after which a dead instance's orders pass to a live one. Default 5 s.
    pub lease: std::time::Duration,
    /// How often an instance looks for orders that need work (`SHORTS_POLL_INTERVAL`). Default 1 s.
    pub poll_interval: std::time::Duration,
    /// How long delivered orders are kept (`SHORTS_RETENTION`); `0s` keeps them forever. Dead
    /// orders are always kept (see `dead_retention`). Default 30 days.
    pub retention: std::time::Duration,
    /// How long dead orders keep their webhook body, the buyer's inputs and files
    /// (`SHORTS_DEAD_RETENTION`, counted from when the order was received); `0s` keeps it forever.
    /// The order's record and stored result stay, for `orders` and `retry`. Default 30 days.
    pub dead_retention: std::time::Duration,
    /// Delays before each callback attempt (`SHORTS_RETRY_SCHEDULE`, e.g. `0s,5s,30s,2m`), each
    /// jittered by ±20 %. After the last one the order is dead-lettered.
    pub retry_schedule: Vec<Duration>,
    /// Delay between attempts while the platform answers 401 (`SHORTS_UNAUTHORIZED_RETRY`).
    /// Those attempts do not use up the schedule. Default 10 minutes.
    pub unauthorized_retry: Duration,
    /// Largest webhook body accepted (`SHORTS_MAX_BODY`, e.g. `64MiB`). Default 64 MiB.
    pub max_body: usize,
    /// Bytes of webhook bodies held in memory at once (`SHORTS_MAX_PENDING_BYTES`): bodies being
    /// received (with the store's copies while it writes them), and those of orders running. Past
    /// it the webhook answers 503 with `Retry-After`, storing nothing; a body counting for more is
    /// taken when nothing else is pending. Orders waiting for a slot hold nothing. Default 256 MiB.
    pub max_pending_bytes: usize,
    /// Time allowed for a client to send its request headers (`SHORTS_HEADER_TIMEOUT`). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request before it is closed
    /// (`SHORTS_IDLE_TIMEOUT`). Default 60 s.
    pub idle_timeout: Duration,
    /// The most connections open at once (`SHORTS_MAX_CONNECTIONS`). At the cap, a new connection
    /// takes the place of the one idle for longest; when every connection has a request in
    /// flight, it is closed at once. `None`: three quarters of the open-file limit when serving
    /// starts, at most 10,000.
    pub max_connections: Option<usize>,
    /// The most orders this instance holds at once (`SHORTS_MAX_HELD`): running, delivering, or
    /// waiting in this process for a slot of their short. Past it, a new order that finds no free
    /// slot is committed without an owner and waits in the store, to be claimed, oldest first, by
    /// the first instance with room. Default 4096.
    pub max_held: usize,
    /// Time allowed for a client to send the body (`SHORTS_BODY_TIMEOUT`). Default 60 s.
    pub body_read_timeout: Duration,
    /// Time allowed for one callback request (`SHORTS_CALLBACK_TIMEOUT`). Default 30 s.
    pub callback_timeout: Duration,
    /// How long running orders may take to finish on shutdown (`SHORTS_SHUTDOWN_GRACE`). Default 30 s.
    pub shutdown_grace: Duration,
    /// Whether the listener serves HTTPS, and with which certificate (`SHORTS_TLS_CERT` and
    /// `SHORTS_TLS_KEY`, or `SHORTS_ACME_DOMAINS`). Default: plain HTTP.
    pub tls: TlsConfig,
    /// The public HTTPS address the platform calls when a proxy or a hosting platform terminates
    /// TLS (`SHORTS_PUBLIC_URL`, e.g. `https://shorts.example.com`); a short's webhook URL is this
    /// followed by its path. Only `check` and the start-up log use it. Default: none.
    pub public_url: Option<url::Url>,
    /// The admin listener's address (`SHORTS_ADMIN_BIND`): `GET /metrics` and the operator's
    /// pages, never the webhooks. `None` (`off`) serves no admin listener and records no metrics.
    /// Default `127.0.0.1:9090`.
    pub admin_bind: Option<SocketAddr>,
    /// The token the admin listener asks for (`SHORTS_ADMIN_TOKEN`), as `Authorization: Bearer`
    /// or through its login form. Required when `admin_bind` is not a loopback address; without
    /// it, a loopback admin listener answers anyone on this machine. Default: none.
    pub admin_token: Option<Secret>,
    /// Where alerts are POSTed (`SHORTS_ALERT_URL`): an http(s) URL, such as a Slack or
    /// Mattermost incoming webhook, told when an order is dead-lettered, when delivery is paused
    /// on a 401, and when the order store fails. Kept as a [`Secret`]: such URLs carry their token
    /// in the path. Default: none (no alerts).
    pub alert_url: Option<Secret>,
}

/// The admin listener's default address.
pub const DEFAULT_ADMIN_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// The shortest admin token accepted.
pub(crate) const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Whether the listener serves HTTPS, and where its certificate comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsConfig {
    /// Plain HTTP, e.g. behind a proxy that terminates TLS.
    #[default]
    None,
    /// HTTPS with a certificate chain and key read from PEM files (`SHORTS_TLS_CERT`,
    /// `SHORTS_TLS_KEY`), read again when they change and on `SIGHUP`.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key: PKCS#8, RSA (PKCS#1) or EC (SEC1).
        key: PathBuf,
    },
    /// HTTPS with a certificate obtained and renewed from an ACME CA (`SHORTS_ACME_DOMAINS`).
    /// Needs the crate's `acme` feature: without it, [`Config::from_env`] refuses the
    /// `SHORTS_ACME_*` variables and the server does not start from this variant
    /// ([`TlsError::AcmeNotBuilt`](crate::TlsError::AcmeNotBuilt)).
    Acme(AcmeConfig),
}

/// Let's Encrypt's production directory, the default ACME CA.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`SHORTS_ACME_DIRECTORY=staging`).
pub const LETS_ENCRYPT_STAGING_DIRECTORY: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Certificates obtained from an ACME CA through the TLS-ALPN-01 challenge on the listener itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcmeConfig {
    /// The names the certificate covers (`SHORTS_ACME_DOMAINS`, comma-separated).
    pub domains: Vec<String>,
    /// The account's contact address (`SHORTS_ACME_EMAIL`). Default: none.
    pub email: Option<String>,
    /// The CA's directory URL (`SHORTS_ACME_DIRECTORY`; `staging` is Let's Encrypt's staging).
    /// Default: Let's Encrypt production.
    pub directory: url::Url,
    /// An extra root certificate (PEM) trusted for the directory only, for test CAs
    /// (`SHORTS_ACME_CA_ROOT`). Default: none.
    pub ca_root: Option<PathBuf>,
    /// Where the account and certificates are kept (`SHORTS_ACME_CACHE`), created `0700`.
    /// Default `./shorts-acme`.
    pub cache: PathBuf,
}

impl AcmeConfig {
    /// Certificates for `domains` from Let's Encrypt, cached in `./shorts-acme`.
    pub fn new(domains: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            domains: domains.into_iter().map(Into::into).collect(),
            email: None,
            directory: lets_encrypt(LETS_ENCRYPT_DIRECTORY),
            ca_root: None,
            cache: PathBuf::from("shorts-acme"),
        }
    }
}

#[allow(clippy::expect_used, reason = "constants, covered by the `acme` test")]
fn lets_encrypt(url: &str) -> url::Url {
    url::Url::parse(url).expect("Let's Encrypt's directories are valid URLs")
}

/// The default callback retry schedule: about three days in 12 attempts.
pub const DEFAULT_RETRY_SCHEDULE: &str = "0s,5s,30s,2m,5m,30m,2h,5h,10h,14h,20h,1day";

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 8080)),
            callback_secret: None,
            webhook_auth: Vec::new(),
            callback_url: default_callback_url(),
            prepare_url: None,
            inline_limit: DEFAULT_INLINE_LIMIT,
            store: StoreConfig::Sqlite("shorts.db".into()),
            lease: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 86_400),
            dead_retention: Duration::from_secs(30 * 86_400),
            retry_schedule: parse_schedule("SHORTS_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE)
                .unwrap_or_default(),
            unauthorized_retry: Duration::from_secs(600),
            max_body: 64 << 20,
            max_pending_bytes: 256 << 20,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_held: 4096,
            body_read_timeout: Duration::from_secs(60),
            callback_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            tls: TlsConfig::None,
            public_url: None,
            admin_bind: Some(DEFAULT_ADMIN_BIND),
            admin_token: None,
            alert_url: None,
        }
    }
}

#[allow(clippy::expect_used, reason = "a constant, covered by the `defaults` test")]
fn default_callback_url() -> url::Url {
    url::Url::parse(DEFAULT_CALLBACK_URL).expect("DEFAULT_CALLBACK_URL is a valid URL")
}

/// A configuration field that holds a duration.
pub(crate) type DurationField = fn(&mut Config) -> &mut Duration;

/// The variables that set a duration, with the field each sets.
pub(crate) const DURATIONS: [(&str, DurationField); 10] = [
    ("SHORTS_LEASE", |c| &mut c.lease),
    ("SHORTS_POLL_INTERVAL", |c| &mut c.poll_interval),
    ("SHORTS_RETENTION", |c| &mut c.retention),
    ("SHORTS_DEAD_RETENTION", |c| &mut c.dead_retention),
    ("SHORTS_UNAUTHORIZED_RETRY", |c| &mut c.unauthorized_retry),
    ("SHORTS_HEADER_TIMEOUT", |c| &mut c.header_read_timeout),
    ("SHORTS_IDLE_TIMEOUT", |c| &mut c.idle_timeout),
    ("SHORTS_BODY_TIMEOUT", |c| &mut c.body_read_timeout),
    ("SHORTS_CALLBACK_TIMEOUT", |c| &mut c.callback_timeout),
    ("SHORTS_SHUTDOWN_GRACE", |c| &mut c.shutdown_grace),
];

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    ///
    /// When a variable is set to a value that cannot be used. Missing required values are reported
    /// by [`Config::check_serving`], since `invoke` and `list` do not need them.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads the configuration from any variable lookup (used by tests).
    ///
    /// # Errors
    ///
    /// As [`Config::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &str| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut config = Config::default();

        if let Some(port) = get("PORT") {
            let port: u16 = port.parse().map_err(|_| ConfigError::Invalid {
                var: "PORT",
                reason: format!("{port:?} is not a port number"),
            })?;
            config.bind = SocketAddr::from(([0, 0, 0, 0], port));
        }
        if let Some(bind) = get("SHORTS_BIND") {
            config.bind = bind.parse().map_err(|_| ConfigError::Invalid {
                var: "SHORTS_BIND",
                reason: format!("{bind:?} is not an address such as `0.0.0.0:8080`"),
            })?;
        }
        config.callback_secret = get("SHORTS_CALLBACK_SECRET").map(Secret::new);
        config.webhook_auth = webhook_auth_from(&get)?;
        if let Some(url) = get("SHORTS_CALLBACK_URL") {
            config.callback_url = parse_url("SHORTS_CALLBACK_URL", &url)?;
        }
        if let Some(url) = get("SHORTS_PREPARE_URL") {
            config.prepare_url = Some(parse_url("SHORTS_PREPARE_URL", &url)?);
        }
        if let Some(size) = get("SHORTS_INLINE_LIMIT") {
            config.inline_limit = parse_size("SHORTS_INLINE_LIMIT", &size)? as u64;
        }
        if let Some(store) = get("SHORTS_STORE") {
            config.store = StoreConfig::parse(&store)?;
        }
        if let Some(schedule) = get("SHORTS_RETRY_SCHEDULE") {
            config.retry_schedule = parse_schedule("SHORTS_RETRY_SCHEDULE", &schedule)?;
        }
        for (var, field) in DURATIONS {
            if let Some(text) = get(var) {
                *field(&mut config) = parse_duration(var, &text)?;
            }
        }
        if let Some(size) = get("SHORTS_MAX_BODY") {
            config.max_body = parse_size("SHORTS_MAX_BODY", &size)?;
        }
        if let Some(max) = get("SHORTS_MAX_CONNECTIONS") {
            config.max_connections =
                Some(max.parse::<usize>().ok().filter(|max| *max > 0).ok_or_else(|| {
                    ConfigError::Invalid {
                        var: "SHORTS_MAX_CONNECTIONS",
                        reason: format!("{max:?} is not a number of connections, at least 1"),
                    }
                })?);
        }
        if let Some(max) = get("SHORTS_MAX_HELD") {
            config.max_held =
                max.parse::<usize>()
                    .ok()
                    .filter(|max| *max > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        var: "SHORTS_MAX_HELD",
                        reason: format!("{max:?} is not a number of orders, at least 1"),
                    })?;
        }
        config.tls = tls_from(&get)?;
        if let Some(url) = get("SHORTS_PUBLIC_URL") {
            config.public_url = Some(parse_public_url(&url)?);
        }
        if let Some(size) = get("SHORTS_MAX_PENDING_BYTES") {
            config.max_pending_bytes = parse_size("SHORTS_MAX_PENDING_BYTES", &size)?;
        }
        if let Some(bind) = get("SHORTS_ADMIN_BIND") {
            config.admin_bind = if bind.eq_ignore_ascii_case("off") {
                None
            } else {
                Some(bind.parse().map_err(|_| ConfigError::Invalid {
                    var: "SHORTS_ADMIN_BIND",
                    reason: format!("{bind:?} is not an address such as `127.0.0.1:9090`, or `off`"),
                })?)
            };
        }
        if let Some(token) = get("SHORTS_ADMIN_TOKEN") {
            if token.chars().count() < MIN_ADMIN_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ConfigError::Invalid {
                    var: "SHORTS_ADMIN_TOKEN",
                    reason: format!(
                        "use at least {MIN_ADMIN_TOKEN_LEN} printable ASCII characters without spaces, e.g. `openssl rand -hex 32`"
                    ),
                });
            }
            config.admin_token = Some(Secret::new(token));
        }
        config.alert_url = get("SHORTS_ALERT_URL").map(Secret::new);
        config.alert_target()?;
        config.check_ranges()?;
        Ok(config)
    }

    /// Checks that durations are usable: a lease and a poll interval long enough not to spin, and
    /// nothing longer than a year.
    ///
    /// # Errors
    ///
    /// Names the first variable out of range.
    pub fn check_ranges(&self) -> Result<(), ConfigError> {
        const YEAR: Duration = Duration::from_secs(365 * 86_400);
        let out_of_range = |var: &'static str, reason: &str| ConfigError::Invalid {
            var,
            reason: reason.to_owned(),
        };
        if self.lease < Duration::from_millis(100) {
            return Err(out_of_range("SHORTS_LEASE", "it must be at least 100ms"));
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(out_of_range("SHORTS_POLL_INTERVAL", "it must be at least 10ms"));
        }
        if self.header_read_timeout < Duration::from_millis(100) {
            return Err(out_of_range("SHORTS_HEADER_TIMEOUT", "it must be at least 100ms"));
        }
        if self.idle_timeout < Duration::from_millis(100) {
            return Err(out_of_range("SHORTS_IDLE_TIMEOUT", "it must be at least 100ms"));
        }
        if self.max_connections == Some(0) {
            return Err(out_of_range("SHORTS_MAX_CONNECTIONS", "it must be at least 1"));
        }
        if self.max_held == 0 {
            return Err(out_of_range("SHORTS_MAX_HELD", "it must be at least 1"));
        }
        let mut read = self.clone();
        let durations = DURATIONS.map(|(var, field)| (var, *field(&mut read)));
        let steps = self
            .retry_schedule
            .iter()
            .map(|step| ("SHORTS_RETRY_SCHEDULE", *step));
        for (var, duration) in durations.into_iter().chain(steps) {
            if duration > YEAR {
                return Err(out_of_range(var, "it must be at most a year"));
            }
        }
        Ok(())
    }

    /// The alert URL, parsed; `None` when alerts are off.
    ///
    /// # Errors
    ///
    /// When it is not an http(s) URL with a host. The message does not repeat it: its path may
    /// hold a token.
    pub(crate) fn alert_target(&self) -> Result<Option<url::Url>, ConfigError> {
        let Some(text) = &self.alert_url else {
            return Ok(None);
        };
        let invalid = |reason: &str| ConfigError::Invalid {
            var: "SHORTS_ALERT_URL",
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(text.expose().trim()).map_err(|e| {
            invalid(&format!(
                "not a URL: {e}; expected e.g. `https://hooks.slack.com/services/…`"
            ))
        })?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(invalid("not an http(s) URL"));
        }
        Ok(Some(url))
    }

    /// Checks that everything `serve` needs is set.
    ///
    /// # Errors
    ///
    /// When the callback secret or the webhook auth header is missing, or the alert URL is not an
    /// http(s) URL.
    pub fn check_serving(&self) -> Result<(), ConfigError> {
        self.check_ranges()?;
        self.alert_target()?;
        if self.callback_secret.is_none() {
            return Err(ConfigError::Missing {
                var: "SHORTS_CALLBACK_SECRET",
                hint: "set it to the callback secret shown in the Connect step",
            });
        }
        if self.webhook_auth.is_empty() {
            return Err(ConfigError::Missing {
                var: "SHORTS_WEBHOOK_AUTH",
                hint: "set it to the auth header configured in the Connect step, e.g. `x-api-key: abc123`",
            });
        }
        self.check_admin()
    }

    /// Checks that an admin listener reachable from other machines asks for a token.
    ///
    /// # Errors
    ///
    /// When `admin_bind` is not a loopback address and `admin_token` is not set.
    pub fn check_admin(&self) -> Result<(), ConfigError> {
        if let Some(bind) = self.admin_bind
            && !bind.ip().is_loopback()
            && self.admin_token.is_none()
        {
            return Err(ConfigError::Missing {
                var: "SHORTS_ADMIN_TOKEN",
                hint: "`SHORTS_ADMIN_BIND` is not a loopback address: set a token of at least 16 characters (e.g. `openssl rand -hex 32`), or bind the admin listener to 127.0.0.1",
            });
        }
        Ok(())
    }
}

/// Reads `SHORTS_TLS_CERT`/`SHORTS_TLS_KEY` and the `SHORTS_ACME_*` variables.
fn tls_from(get: &impl Fn(&str) -> Option<String>) -> Result<TlsConfig, ConfigError> {
    tls_from_built(get, cfg!(feature = "acme"))
}

/// [`tls_from`] for a build with or without ACME support (`acme_built`): without it, any
/// `SHORTS_ACME_*` variable is refused with how to turn the feature on.
fn tls_from_built(get: &impl Fn(&str) -> Option<String>, acme_built: bool) -> Result<TlsConfig, ConfigError> {
    if !acme_built && let Some(var) = ACME_VARS.into_iter().find(|var| get(var).is_some()) {
        return Err(ConfigError::NotBuilt {
            var,
            reason: ACME_NOT_BUILT,
        });
    }
    let files = tls_files(get)?;
    let Some(domains) = get("SHORTS_ACME_DOMAINS") else {
        for var in &ACME_VARS[1..] {
            if get(var).is_some() {
                return Err(ConfigError::Missing {
                    var: "SHORTS_ACME_DOMAINS",
                    hint: "the other `SHORTS_ACME_*` variables are used only with it: set it to the names to certify, e.g. `shorts.example.com`",
                });
            }
        }
        return Ok(files.unwrap_or_default());
    };
    if files.is_some() {
        return Err(ConfigError::Invalid {
            var: "SHORTS_ACME_DOMAINS",
            reason: "set either it or `SHORTS_TLS_CERT` and `SHORTS_TLS_KEY`, not both".to_owned(),
        });
    }
    let mut acme = AcmeConfig::new(acme_domains(&domains)?);
    if let Some(email) = get("SHORTS_ACME_EMAIL") {
        acme.email = Some(acme_email(&email)?);
    }
    if let Some(directory) = get("SHORTS_ACME_DIRECTORY") {
        acme.directory = acme_directory(&directory)?;
    }
    acme.ca_root = get("SHORTS_ACME_CA_ROOT").map(PathBuf::from);
    if let Some(cache) = get("SHORTS_ACME_CACHE") {
        acme.cache = cache.into();
    }
    Ok(TlsConfig::Acme(acme))
}

/// `SHORTS_TLS_CERT` and `SHORTS_TLS_KEY`: both or neither.
fn tls_files(get: &impl Fn(&str) -> Option<String>) -> Result<Option<TlsConfig>, ConfigError> {
    match (get("SHORTS_TLS_CERT"), get("SHORTS_TLS_KEY")) {
        (Some(cert), Some(key)) => Ok(Some(TlsConfig::Files {
            cert: cert.into(),
            key: key.into(),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Missing {
            var: "SHORTS_TLS_KEY",
            hint: "`SHORTS_TLS_CERT` is set: set both, to the private key's PEM file, or neither",
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            var: "SHORTS_TLS_CERT",
            hint: "`SHORTS_TLS_KEY` is set: set both, to the certificate chain's PEM file, or neither",
        }),
    }
}

/// `SHORTS_ACME_DOMAINS`: comma-separated DNS names, lowercased, each once.
fn acme_domains(text: &str) -> Result<Vec<String>, ConfigError> {
    let mut domains: Vec<String> = Vec::new();
    for domain in text.split(',').map(str::trim) {
        let name = domain.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.contains('.')
            && name.parse::<std::net::IpAddr>().is_err()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(ConfigError::Invalid {
                var: "SHORTS_ACME_DOMAINS",
                reason: format!("{domain:?} is not a DNS name such as `shorts.example.com`"),
            });
        }
        if !domains.contains(&name) {
            domains.push(name);
        }
    }
    Ok(domains)
}

/// `SHORTS_ACME_EMAIL`: one address, with or without `mailto:`.
fn acme_email(text: &str) -> Result<String, ConfigError> {
    let email = text.strip_prefix("mailto:").unwrap_or(text);
    let valid = email
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
        && !email.contains(|c: char| c.is_whitespace() || c == ',');
    if !valid {
        return Err(ConfigError::Invalid {
            var: "SHORTS_ACME_EMAIL",
            reason: format!("{email:?} is not an email address"),
        });
    }
    Ok(email.to_owned())
}

/// `SHORTS_ACME_DIRECTORY`: an https URL, or `staging` for Let's Encrypt's staging CA.
fn acme_directory(text: &str) -> Result<url::Url, ConfigError> {
    if text == "staging" {
        return Ok(lets_encrypt(LETS_ENCRYPT_STAGING_DIRECTORY));
    }
    let invalid = |reason: String| ConfigError::Invalid {
        var: "SHORTS_ACME_DIRECTORY",
        reason,
    };
    let url = url::Url::parse(text).map_err(|e| invalid(format!("{text:?} is not a URL: {e}")))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(invalid(format!("{text:?} is not an https URL (or `staging`)")));
    }
    Ok(url)
}

/// Parses a platform endpoint: absolute http(s), no credentials.
fn parse_url(var: &'static str, text: &str) -> Result<url::Url, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { var, reason };
    let url = url::Url::parse(text).map_err(|e| invalid(format!("{text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(invalid(format!("{text:?} is not an http(s) URL")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("the URL must not carry credentials".to_owned()));
    }
    Ok(url)
}

/// Parses `SHORTS_PUBLIC_URL`: an https URL with no credentials, query or fragment, ending in `/`.
fn parse_public_url(text: &str) -> Result<url::Url, ConfigError> {
    const VAR: &str = "SHORTS_PUBLIC_URL";
    let invalid = |reason: String| ConfigError::Invalid { var: VAR, reason };
    let mut url = parse_url(VAR, text)?;
    if url.scheme() != "https" {
        return Err(invalid(format!(
            "{text:?} is not an https URL: the platform calls webhooks over HTTPS only"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "{text:?} has a query or a fragment; give the address only, e.g. `https://shorts.example.com`"
        )));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn parse_duration(var: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
        var,
        reason: format!("{text:?}: {e}; expected e.g. `30s`, `10m` or `1h 30m`"),
    })
}

fn parse_schedule(var: &'static str, text: &str) -> Result<Vec<Duration>, ConfigError> {
    let schedule = text
        .split(',')
        .map(|step| parse_duration(var, step.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if schedule.is_empty() {
        return Err(ConfigError::Invalid {
            var,
            reason: "the schedule needs at least one delay".to_owned(),
        });
    }
    Ok(schedule)
}

/// Parses `67108864`, `64MiB`, `64MB`, `512KiB`, `1GiB`.
fn parse_size(var: &'static str, text: &str) -> Result<usize, ConfigError> {
    let invalid = || ConfigError::Invalid {
        var,
        reason: format!("{text:?} is not a size; expected e.g. `64MiB`, `100MB` or `1048576`"),
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..split].parse().map_err(|_| invalid())?;
    let factor: u64 = match text[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(factor)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|var| vars.get(var).cloned())
    }

    #[test]
    fn defaults() {
        let config = from(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.bind.to_string(), "0.0.0.0:8080");
        assert_eq!(config.max_body, 64 << 20);
        assert_eq!(config.max_pending_bytes, 256 << 20);
        assert_eq!(config.retry_schedule.len(), 12);
        assert_eq!(config.retry_schedule[11], Duration::from_secs(24 * 3600));
        assert_eq!(config.callback_url.as_str(), DEFAULT_CALLBACK_URL);
        assert!(config.check_serving().is_err());
        assert_eq!(config.store, StoreConfig::Sqlite("shorts.db".into()));
        assert_eq!(config.dead_retention, Duration::from_secs(30 * 86_400));
        assert_eq!(config.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.max_connections, None);
    }

    #[test]
    fn tls_from_files() {
        let config = from(&[("SHORTS_TLS_CERT", "c.pem"), ("SHORTS_TLS_KEY", "k.pem")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.tls,
            TlsConfig::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        assert_eq!(from(&[]).map(|c| c.tls).ok(), Some(TlsConfig::None));
        for (set, missing) in [
            ("SHORTS_TLS_CERT", "SHORTS_TLS_KEY"),
            ("SHORTS_TLS_KEY", "SHORTS_TLS_CERT"),
        ] {
            let error = from(&[(set, "x.pem")])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.starts_with(&format!("`{missing}` is not set")), "{error}");
        }
    }

    /// The TLS settings of `vars` as a build with ACME support reads them, with or without the
    /// `acme` feature in this build.
    fn acme_tls(vars: &[(&str, &str)]) -> Result<TlsConfig, ConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tls_from_built(&|var: &str| vars.get(var).cloned(), true)
    }

    #[test]
    fn acme_without_the_feature_says_how_to_turn_it_on() {
        for var in ACME_VARS {
            let set = |name: &str| (name == var).then(|| "shorts.example.com".to_owned());
            let error = tls_from_built(&set, false)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.starts_with(&format!("`{var}` is set, but this build has no ACME support")),
                "{var}: {error}"
            );
            assert!(
                error.contains(
                    "shorts-runtime's `acme` feature (`features = [\"acme\"]` on its line in Cargo.toml)"
                ),
                "{var}: {error}"
            );
        }
        // With certificate files as well, the feature is what the line names.
        let both = |name: &str| match name {
            "SHORTS_ACME_EMAIL" | "SHORTS_ACME_CACHE" => Some("x".to_owned()),
            "SHORTS_TLS_CERT" | "SHORTS_TLS_KEY" => Some("x.pem".to_owned()),
            _ => None,
        };
        let error = tls_from_built(&both, false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("`SHORTS_ACME_EMAIL` is set, but this build has no ACME support"),
            "{error}"
        );
        // Certificate files and plain HTTP need no feature.
        let files = |name: &str| name.starts_with("SHORTS_TLS_").then(|| "x.pem".to_owned());
        assert!(matches!(
            tls_from_built(&files, false),
            Ok(TlsConfig::Files { .. })
        ));
        assert!(matches!(
            tls_from_built(&|_: &str| None, false),
            Ok(TlsConfig::None)
        ));
        // This build reads the environment as its features say.
        let config = from(&[("SHORTS_ACME_DOMAINS", "shorts.example.com")]);
        if cfg!(feature = "acme") {
            assert!(matches!(config.map(|c| c.tls), Ok(TlsConfig::Acme(_))));
        } else {
            let error = config.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains("`acme` feature"), "{error}");
        }
    }

    #[test]
    fn acme() {
        let tls = acme_tls(&[("SHORTS_ACME_DOMAINS", "Shorts.Example.com, b.example.com")])
            .unwrap_or_else(|e| panic!("{e}"));
        let TlsConfig::Acme(acme) = tls else {
            panic!("not acme: {tls:?}")
        };
        assert_eq!(acme.domains, ["shorts.example.com", "b.example.com"]);
        assert_eq!(acme.directory.as_str(), LETS_ENCRYPT_DIRECTORY);
        assert_eq!(acme.cache, PathBuf::from("shorts-acme"));
        assert_eq!(acme.email, None);
        let tls = acme_tls(&[
            ("SHORTS_ACME_DOMAINS", "shorts.example.com"),
            ("SHORTS_ACME_DIRECTORY", "staging"),
            ("SHORTS_ACME_EMAIL", "ops@example.com"),
            ("SHORTS_ACME_CACHE", "/var/lib/shorts/acme"),
            ("SHORTS_ACME_CA_ROOT", "/etc/test-ca.pem"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let TlsConfig::Acme(acme) = tls else {
            panic!("not acme: {tls:?}")
        };
        assert_eq!(acme.directory.as_str(), LETS_ENCRYPT_STAGING_DIRECTORY);
        assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
        assert_eq!(acme.cache, PathBuf::from("/var/lib/shorts/acme"));
        assert_eq!(acme.ca_root, Some(PathBuf::from("/etc/test-ca.pem")));
        for (vars, var) in [
            (vec![("SHORTS_ACME_DOMAINS", "localhost")], "SHORTS_ACME_DOMAINS"),
            (
                vec![("SHORTS_ACME_DOMAINS", "a..example.com")],
                "SHORTS_ACME_DOMAINS",
            ),
            (vec![("SHORTS_ACME_DOMAINS", "127.0.0.1")], "SHORTS_ACME_DOMAINS"),
            (
                vec![
                    ("SHORTS_ACME_DOMAINS", "a.example.com"),
                    ("SHORTS_ACME_EMAIL", "nobody"),
                ],
                "SHORTS_ACME_EMAIL",
            ),
            (
                vec![
                    ("SHORTS_ACME_DOMAINS", "a.example.com"),
                    ("SHORTS_ACME_DIRECTORY", "http://ca.example.com/dir"),
                ],
                "SHORTS_ACME_DIRECTORY",
            ),
            (
                vec![("SHORTS_ACME_EMAIL", "ops@example.com")],
                "SHORTS_ACME_DOMAINS",
            ),
            (
                vec![
                    ("SHORTS_ACME_DOMAINS", "a.example.com"),
                    ("SHORTS_TLS_CERT", "c.pem"),
                    ("SHORTS_TLS_KEY", "k.pem"),
                ],
                "SHORTS_ACME_DOMAINS",
            ),
        ] {
            let error = acme_tls(&vars).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.starts_with(&format!("`{var}`")), "{vars:?}: {error}");
        }
    }

    #[test]
    fn public_url() {
        assert_eq!(from(&[]).ok().and_then(|c| c.public_url), None);
        for (text, read) in [
            ("https://shorts.example.com", "https://shorts.example.com/"),
            (
                "https://example.com:8443/shorts",
                "https://example.com:8443/shorts/",
            ),
            ("https://example.com/shorts/", "https://example.com/shorts/"),
        ] {
            let config = from(&[("SHORTS_PUBLIC_URL", text)]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.public_url.as_ref().map(url::Url::as_str), Some(read));
        }
    }

    #[test]
    fn stores() {
        assert_eq!(StoreConfig::parse("memory").ok(), Some(StoreConfig::Memory));
        assert_eq!(
            StoreConfig::parse("sqlite://data/o.db").ok(),
            Some(StoreConfig::Sqlite("data/o.db".into()))
        );
        assert_eq!(
            StoreConfig::parse("sqlite:o.db").ok(),
            Some(StoreConfig::Sqlite("o.db".into()))
        );
        let pg = StoreConfig::parse("postgres://u:pw@h/db");
        assert!(!format!("{pg:?}").contains("pw"));
        if cfg!(feature = "postgres") {
            assert!(matches!(pg, Ok(StoreConfig::Postgres(url)) if url.expose() == "postgres://u:pw@h/db"));
        } else {
            let error = pg.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.starts_with("`SHORTS_STORE` is set, but"), "{error}");
            assert!(error.contains("`postgres` feature"), "{error}");
        }
    }

    #[test]
    fn reads_every_variable() {
        let config = from(&[
            ("PORT", "9000"),
            ("SHORTS_CALLBACK_SECRET", "s3cret"),
            ("SHORTS_WEBHOOK_AUTH", "Authorization: Bearer t0ken"),
            ("SHORTS_CALLBACK_URL", "http://127.0.0.1:9/api/orders/callback"),
            ("SHORTS_RETRY_SCHEDULE", "0s, 1s,2m"),
            ("SHORTS_MAX_BODY", "1MiB"),
            ("SHORTS_MAX_PENDING_BYTES", "64MiB"),
            ("SHORTS_SHUTDOWN_GRACE", "5s"),
            ("SHORTS_DEAD_RETENTION", "7days"),
            ("SHORTS_IDLE_TIMEOUT", "90s"),
            ("SHORTS_MAX_CONNECTIONS", "4"),
            ("SHORTS_MAX_HELD", "100"),
            ("SHORTS_ALERT_URL", "https://hooks.slack.com/services/T0/B0/tok3n"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(config.webhook_auth[0].header_name(), "authorization");
        assert_eq!(config.webhook_auth[0].value.expose(), "Bearer t0ken");
        assert_eq!(
            config.retry_schedule,
            [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert_eq!(config.max_body, 1 << 20);
        assert_eq!(config.max_pending_bytes, 64 << 20);
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.dead_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.idle_timeout, Duration::from_secs(90));
        assert_eq!(config.max_connections, Some(4));
        assert_eq!(config.max_held, 100);
        assert!(config.check_serving().is_ok());
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{config:?}").contains("t0ken"));
        assert!(!format!("{config:?}").contains("tok3n"));
        assert_eq!(
            config.alert_target().ok().flatten().map(String::from).as_deref(),
            Some("https://hooks.slack.com/services/T0/B0/tok3n")
        );
    }

    #[test]
    fn several_webhook_headers() {
        let config = from(&[
            ("SHORTS_CALLBACK_SECRET", "s"),
            ("SHORTS_WEBHOOK_AUTH", "x-api-key: k1"),
            ("SHORTS_WEBHOOK_AUTH_2", "Authorization: Bearer t0ken"),
            ("SHORTS_WEBHOOK_AUTH_4", "x-tenant: acme"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let headers: Vec<(&str, &str)> = config
            .webhook_auth
            .iter()
            .map(|auth| (auth.header_name(), auth.value.expose()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-api-key", "k1"),
                ("authorization", "Bearer t0ken"),
                ("x-tenant", "acme")
            ]
        );
        assert!(config.check_serving().is_ok());

        // A numbered variable alone is enough to serve.
        let numbered = from(&[
            ("SHORTS_CALLBACK_SECRET", "s"),
            ("SHORTS_WEBHOOK_AUTH_3", "x-api-key: k"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(numbered.webhook_auth.len(), 1);
        assert!(numbered.check_serving().is_ok());

        let error = |vars: &[(&str, &str)]| from(vars).err().map(|e| e.to_string()).unwrap_or_default();
        let twice = error(&[
            ("SHORTS_WEBHOOK_AUTH", "x-api-key: k1"),
            ("SHORTS_WEBHOOK_AUTH_2", "X-Api-Key: k2"),
        ]);
        assert!(twice.starts_with("`SHORTS_WEBHOOK_AUTH_2` is invalid"), "{twice}");
        assert!(twice.contains("`x-api-key` is already set"), "{twice}");
        assert!(!twice.contains("k1") && !twice.contains("k2"), "{twice}");
        let malformed = error(&[("SHORTS_WEBHOOK_AUTH_2", "no-colon-s3cret")]);
        assert!(
            malformed.starts_with("`SHORTS_WEBHOOK_AUTH_2` is invalid"),
            "{malformed}"
        );
        assert!(!malformed.contains("s3cret"), "{malformed}");
    }

    #[test]
    fn admin_listener() {
        let serving = [
            ("SHORTS_CALLBACK_SECRET", "s"),
            ("SHORTS_WEBHOOK_AUTH", "x-api-key: k"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let vars: Vec<(&str, &str)> = serving.iter().chain(extra).copied().collect();
            from(&vars)
        };
        let default = with(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(default.admin_bind, Some(DEFAULT_ADMIN_BIND));
        assert!(default.check_serving().is_ok());
        let off = with(&[("SHORTS_ADMIN_BIND", "off")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(off.admin_bind, None);
        let open = with(&[("SHORTS_ADMIN_BIND", "0.0.0.0:9090")]).unwrap_or_else(|e| panic!("{e}"));
        let missing = open
            .check_serving()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            missing.starts_with("`SHORTS_ADMIN_TOKEN` is not set"),
            "{missing}"
        );
        let token = "0123456789abcdef0123";
        let guarded = with(&[("SHORTS_ADMIN_BIND", "[::]:9090"), ("SHORTS_ADMIN_TOKEN", token)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(guarded.check_serving().is_ok());
        assert!(!format!("{guarded:?}").contains(token));
        for (var, value) in [
            ("SHORTS_ADMIN_BIND", "9090"),
            ("SHORTS_ADMIN_TOKEN", "short"),
            ("SHORTS_ADMIN_TOKEN", "has a space in it somewhere"),
        ] {
            let error = with(&[(var, value)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.starts_with(&format!("`{var}` is invalid")), "{error}");
            assert!(!error.contains("somewhere"), "{error}");
        }
    }

    #[test]
    fn bad_values_name_the_variable_without_echoing_secrets() {
        let error = from(&[("SHORTS_WEBHOOK_AUTH", "Bearer-only-no-colon")])
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(
                |e| e.starts_with("`SHORTS_WEBHOOK_AUTH` is invalid") && !e.contains("Bearer-only")
            )
        );
        for (var, value) in [
            ("PORT", "http"),
            ("SHORTS_CALLBACK_URL", "ftp://x"),
            ("SHORTS_RETRY_SCHEDULE", "1s,soon"),
            ("SHORTS_MAX_BODY", "lots"),
            ("SHORTS_MAX_PENDING_BYTES", "0"),
            ("SHORTS_MAX_PENDING_BYTES", "-1MiB"),
            ("SHORTS_STORE", "redis://x"),
            ("SHORTS_STORE", "sqlite://"),
            ("SHORTS_LEASE", "soon"),
            ("SHORTS_LEASE", "0s"),
            ("SHORTS_POLL_INTERVAL", "0s"),
            ("SHORTS_RETRY_SCHEDULE", "0s,1000years"),
            ("SHORTS_DEAD_RETENTION", "a month"),
            ("SHORTS_DEAD_RETENTION", "2years"),
            ("SHORTS_IDLE_TIMEOUT", "0s"),
            ("SHORTS_HEADER_TIMEOUT", "0s"),
            ("SHORTS_MAX_CONNECTIONS", "0"),
            ("SHORTS_MAX_CONNECTIONS", "many"),
            ("SHORTS_MAX_CONNECTIONS", "-1"),
            ("SHORTS_MAX_HELD", "0"),
            ("SHORTS_MAX_HELD", "lots"),
            ("SHORTS_PUBLIC_URL", "http://shorts.example.com"),
            ("SHORTS_PUBLIC_URL", "https://shorts.example.com/?a=b"),
            ("SHORTS_PUBLIC_URL", "https://user:pw@shorts.example.com"),
            ("SHORTS_PUBLIC_URL", "shorts.example.com"),
            ("SHORTS_ALERT_URL", "hooks.slack.com/services/T0/B0/tok3n"),
            ("SHORTS_ALERT_URL", "ftp://hooks.example.com/tok3n"),
        ] {
            let error = from(&[(var, value)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(var), "{var}: {error}");
            assert!(!error.contains("tok3n"), "{var}: {error}");
        }
    }
}
