//! `check`: what a seller runs on the host before pasting the webhook URL into the Connect step.
//! It reads the configuration as `serve` would, tries the store, the platform and the certificate,
//! and prints the webhook URLs; each problem is marked on its line.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use url::Url;

use crate::config::{Config, DURATIONS, StoreConfig, TlsConfig};
use crate::server::x509::Leaf;
use crate::short::Short;
use crate::store::{AnyStore, Store as _};

/// How long a name lookup, a connection or the store may take before it counts as a problem.
const PATIENCE: Duration = Duration::from_secs(10);
/// A certificate with fewer days left is worth a note: renewal should have happened by then.
const FEW_DAYS: u64 = 14;
/// What the placeholders of the example environment file (`deploy/shorts.env.example`) start with.
const PLACEHOLDER: &str = "replace-with";
/// A webhook auth value shorter than this is worth a note: it could be guessed.
const SHORT_AUTH_VALUE: usize = 16;
/// The names reserved for documentation (RFC 2606), which no CA certifies.
#[cfg(feature = "acme")]
const EXAMPLE_DOMAINS: [&str; 3] = ["example.com", "example.net", "example.org"];

/// Runs every check and prints the report; the exit code is 1 when a problem was found.
pub(super) async fn check() -> ExitCode {
    let mut report = Report::default();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            report.section("configuration");
            report.problem("environment", e);
            report.summary();
            return ExitCode::from(super::USAGE);
        }
    };
    report.section("configuration");
    configuration(&mut report, &config);
    report.section("store");
    store(&mut report, &config.store).await;
    report.section("platform");
    platform(&mut report, &config).await;
    if let Ok(Some(url)) = config.alert_target() {
        report.section("alerts");
        alert_host(&mut report, &url).await;
    }
    report.section("certificate");
    let names = certificate(&mut report, &config).await;
    report.section("webhook URLs (paste one into the Connect step)");
    webhook_urls(&mut report, &config, names.as_deref());
    report.summary()
}

/// The lines printed so far, and how many were problems.
#[derive(Default)]
struct Report {
    problems: usize,
}

impl Report {
    fn section(&self, title: &str) {
        println!("{title}");
    }

    fn line(&self, mark: &str, label: &str, text: impl Display) {
        println!("  {mark:<8} {label:<26} {text}");
    }

    fn ok(&self, label: &str, text: impl Display) {
        self.line("ok", label, text);
    }

    /// Worth knowing, not wrong.
    fn note(&self, label: &str, text: impl Display) {
        self.line("note", label, text);
    }

    fn problem(&mut self, label: &str, text: impl Display) {
        self.problems += 1;
        self.line("PROBLEM", label, text);
    }

    fn summary(&self) -> ExitCode {
        match self.problems {
            0 => {
                println!("no problems found");
                ExitCode::SUCCESS
            }
            1 => {
                println!("1 problem found");
                ExitCode::FAILURE
            }
            n => {
                println!("{n} problems found");
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether `var` is set (not empty) in the environment.
fn is_set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|value| !value.trim().is_empty())
}

/// `value`, followed by `(default)` when `var` is not set.
fn shown(var: &str, value: impl Display) -> String {
    if is_set(var) {
        value.to_string()
    } else {
        format!("{value} (default)")
    }
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// Every value `serve` would use, secrets shown only as set or not set.
fn configuration(report: &mut Report, config: &Config) {
    let bind_var = if is_set("SHORTS_BIND") || !is_set("PORT") {
        "SHORTS_BIND"
    } else {
        "PORT"
    };
    report.ok(bind_var, shown(bind_var, config.bind));
    connection(report, config);
    limits(report, config);
    tls(report, config);
    operating(report, config);
}

/// The settings that connect the server to the platform: secrets, auth headers, URLs.
fn connection(report: &mut Report, config: &Config) {
    match &config.callback_secret {
        Some(secret) if secret.expose().starts_with(PLACEHOLDER) => report.problem(
            "SHORTS_CALLBACK_SECRET",
            "still the example file's placeholder: set it to the callback secret shown in the \
             Connect step",
        ),
        Some(_) => report.ok("SHORTS_CALLBACK_SECRET", "set"),
        None => report.problem(
            "SHORTS_CALLBACK_SECRET",
            "not set: set it to the callback secret shown in the Connect step",
        ),
    }
    match config.webhook_auth.as_slice() {
        [auth] => report.ok(
            "SHORTS_WEBHOOK_AUTH",
            format!("header `{}`, value set", auth.header_name()),
        ),
        [_, ..] => {
            let names: Vec<String> = config
                .webhook_auth
                .iter()
                .map(|auth| format!("`{}`", auth.header_name()))
                .collect();
            report.ok(
                "SHORTS_WEBHOOK_AUTH",
                format!("headers {}, each value set", names.join(", ")),
            );
        }
        [] => report.problem(
            "SHORTS_WEBHOOK_AUTH",
            "not set: set it to the auth header entered in the Connect step, e.g. `x-api-key: abc123`",
        ),
    }
    for auth in &config.webhook_auth {
        let value = auth.value.expose();
        if value.contains(PLACEHOLDER) {
            report.problem(
                "SHORTS_WEBHOOK_AUTH",
                format!(
                    "the value of `{}` is still the example file's placeholder: set the value \
                     entered in the Connect step",
                    auth.header_name()
                ),
            );
        } else if value.chars().count() < SHORT_AUTH_VALUE {
            report.note(
                "SHORTS_WEBHOOK_AUTH",
                format!(
                    "the value of `{}` has {} characters: a short value can be guessed; use a \
                     long random one (e.g. `openssl rand -hex 32`), in the Connect step too",
                    auth.header_name(),
                    value.chars().count()
                ),
            );
        }
    }
    for (var, url) in [
        ("SHORTS_CALLBACK_URL", Some(&config.callback_url)),
        ("SHORTS_PREPARE_URL", config.prepare_url.as_ref()),
    ] {
        match url {
            Some(url) if url.scheme() != "https" => report.problem(
                var,
                format!("{url}: not https, so callbacks and their secret would travel unencrypted"),
            ),
            Some(url) => report.ok(var, shown(var, url)),
            None => report.ok(var, "the callback URL followed by `/prepare` (default)"),
        }
    }
}

/// The store, and the limits and times of orders and connections.
fn limits(report: &mut Report, config: &Config) {
    report.ok("SHORTS_STORE", shown("SHORTS_STORE", store_name(&config.store)));
    for (var, value) in [
        ("SHORTS_INLINE_LIMIT", config.inline_limit),
        ("SHORTS_MAX_BODY", config.max_body as u64),
        ("SHORTS_MAX_PENDING_BYTES", config.max_pending_bytes as u64),
    ] {
        report.ok(var, shown(var, bytes(value)));
    }
    let schedule: Vec<String> = config.retry_schedule.iter().map(|d| duration(*d)).collect();
    report.ok(
        "SHORTS_RETRY_SCHEDULE",
        shown("SHORTS_RETRY_SCHEDULE", schedule.join(",")),
    );
    let mut read = config.clone();
    for (var, field) in DURATIONS {
        report.ok(var, shown(var, duration(*field(&mut read))));
    }
    match config.max_connections {
        Some(max) => report.ok("SHORTS_MAX_CONNECTIONS", max),
        None => report.ok(
            "SHORTS_MAX_CONNECTIONS",
            "three quarters of the open-file limit, at most 10000 (default)",
        ),
    }
    report.ok("SHORTS_MAX_HELD", shown("SHORTS_MAX_HELD", config.max_held));
}

/// How the listener serves HTTPS, and the public URL.
fn tls(report: &mut Report, config: &Config) {
    match &config.tls {
        TlsConfig::None => report.ok("SHORTS_TLS_CERT", "not set: the listener serves plain HTTP"),
        TlsConfig::Files { cert, key } => {
            report.ok("SHORTS_TLS_CERT", cert.display());
            report.ok("SHORTS_TLS_KEY", key.display());
        }
        TlsConfig::Acme(acme) => {
            report.ok("SHORTS_ACME_DOMAINS", acme.domains.join(","));
            report.ok(
                "SHORTS_ACME_EMAIL",
                acme.email.as_deref().unwrap_or("none (default)"),
            );
            report.ok(
                "SHORTS_ACME_DIRECTORY",
                shown("SHORTS_ACME_DIRECTORY", &acme.directory),
            );
            if let Some(root) = &acme.ca_root {
                report.ok("SHORTS_ACME_CA_ROOT", root.display());
            }
            report.ok(
                "SHORTS_ACME_CACHE",
                shown("SHORTS_ACME_CACHE", acme.cache.display()),
            );
        }
    }
    match &config.public_url {
        Some(url) => report.ok("SHORTS_PUBLIC_URL", url),
        None => report.ok("SHORTS_PUBLIC_URL", "not set"),
    }
}

/// The settings for operating the server: admin listener, logs, alerts, allocator.
fn operating(report: &mut Report, config: &Config) {
    match config.admin_bind {
        Some(bind) => report.ok(
            "SHORTS_ADMIN_BIND",
            shown("SHORTS_ADMIN_BIND", format!("{bind}: GET /metrics")),
        ),
        None => report.ok("SHORTS_ADMIN_BIND", "off: no admin listener, no metrics"),
    }
    match (&config.admin_token, config.check_admin()) {
        (_, Err(e)) => report.problem("SHORTS_ADMIN_TOKEN", e),
        (Some(_), Ok(())) => report.ok("SHORTS_ADMIN_TOKEN", "set"),
        (None, Ok(())) if config.admin_bind.is_none() => report.ok("SHORTS_ADMIN_TOKEN", "not set"),
        (None, Ok(())) => report.ok(
            "SHORTS_ADMIN_TOKEN",
            "not set: the admin listener answers anyone on this machine",
        ),
    }
    let var = crate::logs::FORMAT_VAR;
    match crate::logs::LogFormat::parse(std::env::var_os(var).as_deref()) {
        Ok(format) => report.ok(var, shown(var, format.as_str())),
        Err(e) => report.problem(var, e),
    }
    match config.alert_target() {
        Ok(Some(url)) => report.ok("SHORTS_ALERT_URL", alert_name(&url)),
        Ok(None) => report.ok("SHORTS_ALERT_URL", "not set: no alerts"),
        Err(e) => report.problem("SHORTS_ALERT_URL", e),
    }
    let var = crate::malloc::TUNING_VAR;
    match crate::malloc::tuning_wanted(std::env::var_os(var).as_deref()) {
        Ok(true) => report.ok(var, shown(var, "on: glibc's allocator tuned for large bodies")),
        Ok(false) => report.ok(var, "off: glibc's allocator settings left alone"),
        Err(e) => report.problem(var, e),
    }
}

/// The alert URL without its path, which may hold a token: `https://hooks.slack.com/…`.
fn alert_name(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}/…", url.scheme()),
        None => format!("{}://{host}/…", url.scheme()),
    }
}

/// Whether the alert URL's host resolves; nothing is sent (a test message would reach people).
async fn alert_host(report: &mut Report, url: &Url) {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return;
    };
    let label = format!("{host}:{port}");
    match tokio::time::timeout(PATIENCE, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => {
            let shown: Vec<String> = addresses.map(|a| a.ip().to_string()).collect();
            let resolves = format!("resolves to {}", shown.join(", "));
            if url.scheme() == "https" {
                report.ok(&label, resolves);
            } else {
                report.note(
                    &label,
                    format!("{resolves}; plain HTTP: alerts travel unencrypted"),
                );
            }
        }
        Ok(Err(e)) => report.problem(&label, format!("does not resolve: {e}; alerts cannot be sent")),
        Err(_) => report.problem(&label, format!("did not resolve within {}", duration(PATIENCE))),
    }
}

/// The store's address without its password.
fn store_name(store: &StoreConfig) -> String {
    match store {
        StoreConfig::Memory => "memory".to_owned(),
        StoreConfig::Sqlite(path) => format!("sqlite://{}", path.display()),
        StoreConfig::Postgres(url) => match Url::parse(url.expose()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.set_query(None);
                url.to_string()
            }
            Err(_) => "postgres://…".to_owned(),
        },
    }
}

/// Whether the store opens and takes writes, without creating anything `serve` would create:
/// this may run as another user than the service.
async fn store(report: &mut Report, store: &StoreConfig) {
    let label = match store {
        StoreConfig::Memory => {
            report.problem(
                "memory",
                if cfg!(feature = "postgres") {
                    "orders are kept in memory and lost on restart: use `sqlite://PATH` or `postgres://…`"
                } else {
                    "orders are kept in memory and lost on restart: use `sqlite://PATH`"
                },
            );
            return;
        }
        StoreConfig::Sqlite(path) => {
            let label = path.display().to_string();
            if !sqlite_file(report, &label, path) {
                return;
            }
            label
        }
        StoreConfig::Postgres(_) => "postgres".to_owned(),
    };
    // A database URL is too long for the label's column: it leads the text instead.
    let url = match store {
        StoreConfig::Postgres(_) => format!("{} ", store_name(store)),
        _ => String::new(),
    };
    match tokio::time::timeout(PATIENCE, open_and_count(store)).await {
        Ok(Ok(count)) => report.ok(&label, format!("{url}opens and answers; {count}")),
        Ok(Err(e)) => report.problem(&label, format!("{url}does not open: {e}")),
        Err(_) => report.problem(&label, format!("{url}did not open within {}", duration(PATIENCE))),
    }
}

async fn open_and_count(store: &StoreConfig) -> Result<String, crate::store::StoreError> {
    let store = AnyStore::open(store).await?;
    let orders = store.list(None, 1000).await?;
    Ok(match orders.len() {
        0 => "no orders yet".to_owned(),
        1000.. => "1000 orders or more".to_owned(),
        n => format!("{n} orders"),
    })
}

/// Checks the SQLite file and its folder; `true` when the store is worth opening (it exists).
fn sqlite_file(report: &mut Report, label: &str, path: &Path) -> bool {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        report.problem(label, format!("its folder {} does not exist", folder.display()));
        return false;
    }
    // SQLite writes its journal beside the file: the folder must take new files.
    let probe = folder.join(format!(".shorts-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            report.problem(
                label,
                format!("its folder {} is not writable: {e}", folder.display()),
            );
            return false;
        }
    }
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.ok(label, "does not exist yet: `serve` creates it (mode 0600)");
            return false;
        }
        Err(e) => {
            report.problem(label, format!("cannot be read: {e}"));
            return false;
        }
    };
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(path) {
        report.problem(label, format!("is not writable: {e}"));
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            report.problem(
                label,
                format!(
                    "file mode {mode:04o}: other users can read buyers' data; run `chmod 600 {}`",
                    path.display()
                ),
            );
        } else {
            report.ok(label, format!("file mode {mode:04o}"));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    true
}

/// Whether each platform host resolves and completes a TLS handshake.
async fn platform(report: &mut Report, config: &Config) {
    let mut origins = BTreeMap::new();
    for url in std::iter::once(&config.callback_url).chain(config.prepare_url.as_ref()) {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            continue;
        };
        origins.entry(format!("{host}:{port}")).or_insert(url);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PATIENCE)
        .build();
    for (origin, url) in origins {
        let Some(host) = url.host_str() else { continue };
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup = tokio::time::timeout(PATIENCE, tokio::net::lookup_host((host, port))).await;
        let addresses: Vec<SocketAddr> = match lookup {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(e)) => {
                report.problem(&origin, format!("does not resolve: {e}"));
                continue;
            }
            Err(_) => {
                report.problem(&origin, format!("did not resolve within {}", duration(PATIENCE)));
                continue;
            }
        };
        let shown: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
        let resolves = format!("resolves to {}", shown.join(", "));
        if url.scheme() != "https" {
            report.problem(&origin, format!("{resolves}; plain HTTP, no TLS"));
            continue;
        }
        let client = match &client {
            Ok(client) => client,
            Err(e) => {
                report.problem(&origin, format!("{resolves}; no HTTPS client: {e}"));
                continue;
            }
        };
        match client.head(url.as_str()).send().await {
            Ok(response) => report.ok(
                &origin,
                format!(
                    "{resolves}; TLS handshake completed (HTTP {})",
                    response.status().as_u16()
                ),
            ),
            Err(e) => report.problem(
                &origin,
                format!("{resolves}; no TLS connection: {}", crate::delivery::describe(&e)),
            ),
        }
    }
}

/// Reports a certificate's subject, issuer and days left; marks one that is not valid now.
fn report_certificate(report: &mut Report, label: &str, described: &Leaf) {
    let now = SystemTime::now();
    let who = format!(
        "subject {}, issuer {}, for {}",
        described.subject,
        described.issuer,
        if described.names.is_empty() {
            "no name".to_owned()
        } else {
            described.names.join(", ")
        }
    );
    if described.subject == described.issuer {
        report.note(
            label,
            "self-signed (its issuer is its subject): a client that checks certificates, as the \
             platform's does, refuses it; use one from a CA (`SHORTS_ACME_DOMAINS` obtains one)",
        );
    }
    let expires = humantime::format_rfc3339_seconds(described.not_after);
    match described.not_after.duration_since(now) {
        Err(_) => report.problem(label, format!("{who}; expired at {expires}")),
        Ok(_) if described.not_before > now => report.problem(label, format!("{who}; not valid yet")),
        Ok(left) => {
            let days = left.as_secs() / 86_400;
            let text = format!("{who}; {days} days left (until {expires})");
            if days < FEW_DAYS {
                report.note(label, text);
            } else {
                report.ok(label, text);
            }
        }
    }
}

/// The certificate that would be served, or the ACME state; returns the names it covers.
async fn certificate(report: &mut Report, config: &Config) -> Option<Vec<String>> {
    match &config.tls {
        TlsConfig::None => {
            match &config.public_url {
                Some(url) => report.ok(
                    "plain HTTP",
                    format!("TLS is terminated in front of this server, at {url}"),
                ),
                None => report.problem(
                    "plain HTTP",
                    "the platform calls HTTPS webhook URLs only: set `SHORTS_ACME_DOMAINS`, or \
                     `SHORTS_TLS_CERT` and `SHORTS_TLS_KEY`, or `SHORTS_PUBLIC_URL` behind a proxy \
                     that terminates TLS",
                ),
            }
            None
        }
        TlsConfig::Files { cert, key } => {
            let key = match crate::server::tls::load_files(cert, key) {
                Ok(key) => key,
                Err(e) => {
                    report.problem("files", e);
                    return None;
                }
            };
            match key.cert.first().map(|leaf| crate::server::x509::read(leaf)) {
                Some(Ok(described)) => {
                    report_certificate(report, "files", &described);
                    Some(described.names)
                }
                Some(Err(e)) => {
                    report.problem("files", format!("the certificate cannot be read: {e}"));
                    None
                }
                None => {
                    report.problem("files", "the chain holds no certificate");
                    None
                }
            }
        }
        TlsConfig::Acme(acme) => {
            #[cfg(feature = "acme")]
            acme_state(report, config, acme).await;
            #[cfg(not(feature = "acme"))]
            report.problem("ACME", crate::config::ACME_NOT_BUILT);
            Some(acme.domains.clone())
        }
    }
}

#[cfg(feature = "acme")]
async fn acme_state(report: &mut Report, config: &Config, acme: &crate::config::AcmeConfig) {
    for domain in &acme.domains {
        let reserved = EXAMPLE_DOMAINS
            .iter()
            .any(|example| domain == example || domain.ends_with(&format!(".{example}")));
        if reserved {
            report.problem(
                domain,
                "a name reserved for examples, which no CA certifies: set SHORTS_ACME_DOMAINS to \
                 this machine's own name",
            );
            continue;
        }
        match tokio::time::timeout(PATIENCE, tokio::net::lookup_host((domain.as_str(), 443))).await {
            Ok(Ok(addresses)) => {
                let shown: Vec<String> = addresses.map(|a| a.ip().to_string()).collect();
                report.ok(
                    domain,
                    format!("resolves to {}: it must be this machine", shown.join(", ")),
                );
            }
            Ok(Err(e)) => report.problem(
                domain,
                format!("does not resolve: {e}; the CA validates the name at its address"),
            ),
            Err(_) => report.problem(domain, format!("did not resolve within {}", duration(PATIENCE))),
        }
    }
    if config.bind.port() != 443 {
        report.note(
            "port",
            format!(
                "the CA validates on port 443 and this server listens on {}: port 443 must reach it",
                config.bind.port()
            ),
        );
    }
    if acme.directory.as_str() == crate::config::LETS_ENCRYPT_STAGING_DIRECTORY {
        report.note(
            "directory",
            "Let's Encrypt's staging CA (`SHORTS_ACME_DIRECTORY=staging`): its certificates are \
             trusted by no client, the platform's included; unset SHORTS_ACME_DIRECTORY to go live",
        );
    }
    let cache = &acme.cache;
    let label = "cache";
    if cache.is_dir() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(cache)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or_default();
            if mode & 0o077 != 0 {
                report.problem(
                    label,
                    format!(
                        "{}: mode {mode:04o}, but it holds private keys; run `chmod 700 {}`",
                        cache.display(),
                        cache.display()
                    ),
                );
            } else {
                report.ok(label, format!("{}: mode {mode:04o}", cache.display()));
            }
        }
        #[cfg(not(unix))]
        report.ok(label, cache.display());
    } else if cache.exists() {
        report.problem(label, format!("{} is not a folder", cache.display()));
        return;
    } else {
        report.ok(
            label,
            format!(
                "{}: does not exist yet; `serve` creates it (mode 0700)",
                cache.display()
            ),
        );
    }
    let path = crate::server::acme::certificate_path(acme);
    match std::fs::read(&path) {
        Ok(pem) => match crate::server::tls::certified_key(&pem, &pem) {
            Ok(key) => match key.cert.first().map(|leaf| crate::server::x509::read(leaf)) {
                Some(Ok(described)) => report_certificate(report, "certificate", &described),
                Some(Err(e)) => report.note(
                    "certificate",
                    format!("the cached certificate cannot be read ({e}); another is obtained at start"),
                ),
                None => report.note("certificate", "the cached file holds no certificate"),
            },
            Err(e) => report.note(
                "certificate",
                format!("the cached certificate cannot be used ({e}); another is obtained at start"),
            ),
        },
        Err(_) => report.ok(
            "certificate",
            format!(
                "none yet: obtained at start from {} through TLS-ALPN-01",
                acme.directory
            ),
        ),
    }
}

/// The address the platform calls: `SHORTS_PUBLIC_URL`, or the certificate's first name, on
/// port 443 with ACME (where the CA validates it) and on the listener's port otherwise.
fn public_base(config: &Config, names: Option<&[String]>) -> Option<Url> {
    if let Some(url) = &config.public_url {
        return Some(url.clone());
    }
    let name = names?.iter().find(|name| !name.starts_with('*'))?;
    let port = match (&config.tls, config.bind.port()) {
        (TlsConfig::Acme(_), _) | (_, 443) => String::new(),
        (_, port) => format!(":{port}"),
    };
    Url::parse(&format!("https://{name}{port}/")).ok()
}

fn webhook_urls(report: &mut Report, config: &Config, names: Option<&[String]>) {
    let shorts = Short::registered();
    if let Err(e) = crate::app::check_shorts(&shorts) {
        report.problem("shorts", e);
    }
    let base = public_base(config, names);
    for short in &shorts {
        match base
            .as_ref()
            .map(|base| base.join(short.path().trim_start_matches('/')))
        {
            Some(Ok(url)) => report.ok(short.name(), url),
            Some(Err(e)) => report.problem(short.name(), format!("no URL: {e}")),
            None => report.problem(
                short.name(),
                format!(
                    "path {}; the host is unknown until HTTPS is set up (see `certificate`)",
                    short.path()
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_address_comes_from_the_public_url_or_the_certificate() {
        let mut config = Config::default();
        let names = ["*.example.com".to_owned(), "shorts.example.com".to_owned()];
        assert_eq!(public_base(&config, None), None);
        assert_eq!(
            public_base(&config, Some(&names)).map(String::from),
            Some("https://shorts.example.com:8080/".to_owned())
        );
        config.bind.set_port(443);
        assert_eq!(
            public_base(&config, Some(&names)).map(String::from),
            Some("https://shorts.example.com/".to_owned())
        );
        config.bind.set_port(8443);
        config.tls = TlsConfig::Acme(crate::config::AcmeConfig::new(["shorts.example.com"]));
        assert_eq!(
            public_base(&config, Some(&names)).map(String::from),
            Some("https://shorts.example.com/".to_owned())
        );
        config.public_url = Url::parse("https://proxy.example.com/shorts/").ok();
        assert_eq!(
            public_base(&config, Some(&names)).map(String::from),
            Some("https://proxy.example.com/shorts/".to_owned())
        );
    }

    #[test]
    fn a_postgres_password_is_not_shown() {
        let url = "postgres://user:hunter2@db.example.com:5433/orders?sslmode=require";
        let shown = store_name(&StoreConfig::Postgres(crate::config::Secret::new(url)));
        assert_eq!(shown, "postgres://user:***@db.example.com:5433/orders");
    }

    #[test]
    fn the_alert_url_is_shown_without_its_path() {
        let shown = |text: &str| Url::parse(text).map(|url| alert_name(&url)).unwrap_or_default();
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/tok3n"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            shown("http://127.0.0.1:9000/hooks/x?k=1"),
            "http://127.0.0.1:9000/…"
        );
    }

    #[test]
    fn sizes_read_as_configured() {
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(4_450_000), "4450000 bytes");
    }
}
