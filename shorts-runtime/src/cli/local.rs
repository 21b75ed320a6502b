//! `invoke` and `serve --mock`: trying a short on this machine against the built-in mock platform.
//!
//! Compiled into debug builds (and builds with the `testing` feature) only, so that a production
//! binary carries no mock platform: `cargo run -- invoke …` has it, `cargo build --release` does
//! not.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tracing::info;

use super::{USAGE, fail};
use crate::app::{App, BuildError};
use crate::config::{Config, ConfigError, Secret, StoreConfig, WebhookAuth};
use crate::short::Short;
use crate::testing::{Callback, FileContents, MockPlatform, ReturnedFile};

/// Why a local trial could not run.
#[derive(Debug, thiserror::Error)]
pub(super) enum LocalError {
    /// The mock platform's listener could not start.
    #[error("could not start the mock platform: {0}")]
    MockPlatform(#[source] std::io::Error),
    /// The mock platform's callback URL is not a URL (a bug, reported rather than unwrapped).
    #[error("the mock platform's callback URL cannot be used: {0}")]
    MockUrl(#[from] url::ParseError),
    /// The webhook auth header for the trial cannot be built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The binary's shorts cannot be served, or the trial app cannot be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// No short has the name given.
    #[error("no short named `{name}`; this binary has: {available}")]
    NoShort {
        /// The name asked for.
        name: String,
        /// The names the binary has, comma-separated.
        available: String,
    },
    /// A returned file's name has no last component to write under.
    #[error("file name {0:?} is not usable")]
    FileName(String),
    /// The mock platform did not keep an uploaded file's bytes.
    #[error("the uploaded file `{0}` was not stored")]
    NotStored(String),
    /// Writing into the output folder failed.
    #[error("could not write {}: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl LocalError {
    /// The exit code: 2 when the command line named something the binary cannot run.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Build(_) | Self::NoShort { .. } => USAGE,
            _ => 1,
        }
    }
}

/// Points `config` at an in-process mock platform that prints every callback it accepts.
pub(super) async fn with_mock_platform(mut config: Config) -> Result<(Config, MockPlatform), LocalError> {
    let mut builder = MockPlatform::builder();
    if let Some(secret) = &config.callback_secret {
        builder = builder.secret(secret.expose());
    }
    let platform = builder.start().await.map_err(LocalError::MockPlatform)?;
    config.callback_secret = Some(Secret::new(platform.secret()));
    // A trial: unless a store is chosen, keep orders in memory so that a resent test order runs.
    if std::env::var_os("SHORTS_STORE").is_none() {
        config.store = StoreConfig::Memory;
        tracing::info!(
            "orders are kept in memory for this trial; SHORTS_STORE=sqlite://shorts.db keeps them for `orders` and restarts"
        );
    }
    // The handler runs for anyone who knows the well-known key: listen on this machine only,
    // unless an address is chosen (`PORT` chooses only the port).
    if std::env::var("SHORTS_BIND").map_or(true, |bind| bind.trim().is_empty()) {
        config.bind.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    config.callback_url = url::Url::parse(&platform.callback_url())?;
    // A trial asks no CA for a certificate (a validation that cannot succeed from a development
    // machine still counts against the CA's limits): it serves plain HTTP.
    if matches!(config.tls, crate::config::TlsConfig::Acme(_)) {
        config.tls = crate::config::TlsConfig::None;
        tracing::warn!("SHORTS_ACME_DOMAINS is ignored by `serve --mock`: a trial serves plain HTTP");
    }
    if config.webhook_auth.is_empty() {
        config.webhook_auth = vec![WebhookAuth::new("x-api-key", MockPlatform::WEBHOOK_KEY)?];
    }
    let auth = config
        .webhook_auth
        .iter()
        .map(WebhookAuth::header_name)
        .collect::<Vec<_>>()
        .join(", ");
    info!(callback_url = %config.callback_url, webhook_auth = %auth, "callbacks go to a local mock platform and are printed");
    let mut accepted = platform.subscribe();
    tokio::spawn(async move {
        loop {
            match accepted.recv().await {
                Ok(callback) => println!(
                    "{}",
                    serde_json::to_string_pretty(&abbreviated(&callback.body)).unwrap_or_default()
                ),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    Ok((config, platform))
}

pub(super) async fn invoke(
    name: &str,
    input: Option<String>,
    input_file: Option<PathBuf>,
    out: &Path,
) -> ExitCode {
    let text = match (input, input_file) {
        (Some(text), _) => text,
        (None, Some(path)) => match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) => return fail(USAGE, &format!("could not read {}: {e}", path.display())),
        },
        (None, None) => {
            return fail(
                USAGE,
                "give the inputs with `--input JSON` or `--input-file FILE`",
            );
        }
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => return fail(USAGE, &format!("the input is not JSON: {e}")),
    };

    let objects = std::env::temp_dir().join(format!("shorts-invoke-{}", uuid::Uuid::new_v4()));
    if let Err(e) = std::fs::create_dir_all(&objects) {
        return fail(1, &format!("could not create {}: {e}", objects.display()));
    }
    let _cleanup = RemoveDir(objects.clone());
    let platform = match MockPlatform::builder().save_objects_to(&objects).start().await {
        Ok(platform) => platform,
        Err(e) => return fail(1, &format!("could not start the mock platform: {e}")),
    };
    let (app, route, timeout) = match invoke_app(&platform, name).await {
        Ok(found) => found,
        Err(e) => return fail(e.exit_code(), &e.to_string()),
    };
    // The order goes through the server as the platform's would: over HTTP, on this machine.
    let listener = match TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await {
        Ok(listener) => listener,
        Err(e) => return fail(1, &format!("could not listen on 127.0.0.1: {e}")),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => return fail(1, &format!("could not listen on 127.0.0.1: {e}")),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));

    // A whole webhook body (it has `order_id`) is replayed as is; anything else is the inputs.
    let body = if value.get("order_id").is_some() && value.get("inputs").is_some() {
        let mut body = value;
        body["callback_url"] = Value::String(platform.callback_url());
        body
    } else {
        platform.webhook_body(&uuid::Uuid::new_v4().to_string(), value)
    };
    let order_id = body["order_id"].as_str().unwrap_or_default().to_owned();
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}{route}"))
        .header("x-api-key", MockPlatform::WEBHOOK_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    let outcome = match answer {
        Ok(response) if response.status().is_success() => {
            match platform
                .wait_for(&order_id, timeout + Duration::from_secs(60))
                .await
            {
                Some(callback) => report_callback(&platform, &callback, out),
                None => fail(1, "no callback arrived; see the log above"),
            }
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let detail = response.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<Value>(&detail)
                .ok()
                .and_then(|answer| answer["error"].as_str().map(str::to_owned))
                .unwrap_or(detail);
            fail(USAGE, &format!("the webhook was refused ({status}): {detail}"))
        }
        Err(e) => fail(1, &format!("the webhook could not be sent: {e}")),
    };
    let _ = stop.send(());
    let _ = server.await;
    outcome
}

/// Prints the callback, writes its files into `out`, and exits 0 for a success callback.
fn report_callback(platform: &MockPlatform, callback: &Callback, out: &Path) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(&abbreviated(&callback.body)).unwrap_or_default()
    );
    let files = match platform.files(callback) {
        Ok(files) => files,
        Err(e) => return fail(1, &e.to_string()),
    };
    for file in files {
        if let Err(e) = write_file(&file, out) {
            return fail(e.exit_code(), &e.to_string());
        }
    }
    if callback.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Writes a returned file into `dir` under its name's last component, and says where.
fn write_file(file: &ReturnedFile, dir: &Path) -> Result<(), LocalError> {
    // Only the last path component: a short must not write outside `dir`.
    let name = Path::new(&file.filename)
        .file_name()
        .ok_or_else(|| LocalError::FileName(file.filename.clone()))?;
    std::fs::create_dir_all(dir).map_err(|source| LocalError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(name);
    let written = match &file.contents {
        FileContents::Inline(bytes) => std::fs::write(&path, bytes).map(|()| bytes.len() as u64),
        FileContents::Uploaded(object) => match &object.path {
            Some(stored) => std::fs::copy(stored, &path),
            None => return Err(LocalError::NotStored(file.filename.clone())),
        },
    }
    .map_err(|source| LocalError::Write {
        path: path.clone(),
        source,
    })?;
    eprintln!("wrote {} ({written} bytes)", path.display());
    Ok(())
}

/// An app running only `name`, delivering to the in-process mock: the app, the short's route,
/// and its timeout.
async fn invoke_app(platform: &MockPlatform, name: &str) -> Result<(App, String, Duration), LocalError> {
    let registered = Short::registered();
    // The order runs alone, but the binary must be one `serve` would take.
    crate::app::check_shorts(&registered)?;
    let Some(short) = registered.iter().find(|s| s.name() == name).cloned() else {
        let names: Vec<&str> = registered.iter().map(Short::name).collect();
        return Err(LocalError::NoShort {
            name: name.to_owned(),
            available: names.join(", "),
        });
    };
    let (route, timeout) = (short.path().to_owned(), short.timeout());
    let mut builder = App::builder()
        .config(platform.config())
        .without_registered()
        .short(short);
    if std::io::stderr().is_terminal() {
        builder = builder.upload_progress(print_progress);
    }
    let app = builder.build().await?;
    Ok((app, route, timeout))
}

/// `uploading video.mp4   52.4 / 150.0 MB  35%`, redrawn in place.
fn print_progress(name: &str, sent: u64, total: u64) {
    const MB: f64 = 1_000_000.0;
    let percent = (sent * 100).checked_div(total).unwrap_or(100);
    eprint!(
        "\ruploading {name}  {:.1} / {:.1} MB  {percent:>3}%",
        sent as f64 / MB,
        total as f64 / MB
    );
    if sent >= total {
        eprintln!();
    }
}

/// Removes a folder when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The callback with long base64 strings shortened, for the terminal.
fn abbreviated(body: &Value) -> Value {
    match body {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| match value {
                    Value::String(s) if key == "file_base64" && s.len() > 96 => {
                        let start: String = s.chars().take(64).collect();
                        let shown = format!("{start}… ({} base64 characters)", s.len());
                        (key.clone(), Value::String(shown))
                    }
                    other => (key.clone(), abbreviated(other)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(abbreviated).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_base64_is_abbreviated_for_the_terminal() {
        let long = "A".repeat(200);
        let shown =
            abbreviated(&json!({"files": [{"file_base64": long, "filename": "a"}], "file_base64": "QQ=="}));
        assert_eq!(shown["file_base64"], "QQ==");
        let entry = shown["files"][0]["file_base64"].as_str().unwrap_or_default();
        assert!(entry.ends_with("… (200 base64 characters)"), "{entry}");
    }

    #[test]
    fn files_are_written_inside_the_folder_only() {
        let dir = std::env::temp_dir().join(format!("shorts-cli-{}", uuid::Uuid::new_v4()));
        for (name, bytes) in [("../../escape.txt", b"hi"), ("b.txt", b"yo")] {
            let file = ReturnedFile {
                filename: name.to_owned(),
                contents: FileContents::Inline(bytes.to_vec()),
            };
            assert!(write_file(&file, &dir).is_ok());
        }
        assert_eq!(
            std::fs::read(dir.join("escape.txt")).ok().as_deref(),
            Some(&b"hi"[..])
        );
        assert_eq!(std::fs::read(dir.join("b.txt")).ok().as_deref(), Some(&b"yo"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
