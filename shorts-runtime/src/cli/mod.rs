//! `run()`: the command line every short binary gets.

mod check;

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::app::App;
use crate::config::{Config, Secret, StoreConfig, WebhookAuth};
use crate::short::Short;
use crate::store::{AnyStore, OrderFilter, OrderState, PageCursor, Retried, Store as _};
use crate::testing::{Callback, FileContents, MockPlatform, ReturnedFile};

/// Exit code for a usage or configuration error.
const USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(about = "An AI Short server for the SellerShorts marketplace", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every short (the default); configured from the environment.
    Serve {
        /// Deliver callbacks to a built-in mock of the platform and print them, to try the server
        /// locally with curl. The webhook auth header defaults to `x-api-key: local-test-key`, the
        /// store to `memory`, the address to 127.0.0.1 (`SHORTS_BIND` chooses another).
        #[arg(long)]
        mock: bool,
    },
    /// Run one order in-process against a built-in mock of the platform and print the callback.
    Invoke {
        /// The short to run (see `list`).
        short: String,
        /// The buyer's inputs as JSON, or a whole webhook body.
        #[arg(long, conflicts_with = "input_file", required_unless_present = "input_file")]
        input: Option<String>,
        /// A file holding the inputs as JSON, or a whole webhook body.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// Where to write returned files.
        #[arg(long, value_name = "DIR", default_value = "shorts-out")]
        out: PathBuf,
    },
    /// List the shorts in this binary, their routes and options.
    #[command(alias = "shorts")]
    List,
    /// List the orders in the store (`SHORTS_STORE`), newest first.
    Orders {
        /// Only orders in this state: received, delivering, paused, delivered or dead.
        #[arg(long)]
        state: Option<String>,
        /// Only orders of this short.
        #[arg(long)]
        short: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only orders older than the one with this cursor (the `cursor` of a JSON line): the
        /// next page.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        /// One JSON object per line, for scripts: `id`, `short`, `state`, `received_at` (RFC 3339),
        /// `runs`, `attempts`, `last_error`, `next_attempt_at`, `payload_purged`, `outcome`,
        /// `failed_by_operator`, `cursor`.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration, the store, the platform and the certificate, and print the webhook
    /// URLs to paste into the Connect step; exits with 1 when a problem is found.
    Check,
    /// Deliver a dead or paused order's callback again (the running server picks it up).
    Retry {
        /// The order's `order_id`.
        order_id: String,
    },
}

/// Runs the command line. Its commands (`--help` describes each):
///
/// - `serve` (the default): serve every short, configured from the environment; `serve --mock`
///   delivers callbacks to a built-in mock of the platform and prints them;
/// - `invoke <short> --input <json>` (or `--input-file <file>`): run one order in-process against a
///   built-in mock of the platform, print the callback and write returned files to `--out`;
/// - `list`: the shorts in this binary, their routes and options;
/// - `orders [--state <state>] [--short <short>] [--limit <n>] [--after <cursor>] [--json]`: the
///   orders in the store
///   (`SHORTS_STORE`), newest first; `--json` prints one JSON object per line;
/// - `retry <order_id>`: deliver a dead or paused order's callback again;
/// - `check`: check the configuration, the store, the platform and the certificate, and print the
///   webhook URLs; exits with 1 when a problem is found.
///
/// Installs a `tracing` subscriber (filtered by `RUST_LOG`, default `info`) and a tokio runtime.
/// Configuration errors print one line and exit with code 2.
///
/// On Linux with glibc, `run` also changes the allocator's settings for the whole process: it
/// fixes glibc's mmap threshold at 16 MiB and its trim threshold at 32 MiB (`mallopt`), so that
/// callback bodies of megabytes reuse memory instead of mapping new zeroed pages each time; each
/// arena may then keep up to 32 MiB free. It leaves them alone when `SHORTS_MALLOC_TUNING=off`,
/// or when the environment sets either threshold itself (`MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc.mmap_threshold` / `glibc.malloc.trim_threshold` in
/// `GLIBC_TUNABLES`). Any other value of `SHORTS_MALLOC_TUNING` is a configuration error.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match crate::malloc::tuning_wanted(std::env::var_os(crate::malloc::TUNING_VAR).as_deref()) {
        Ok(true) => crate::malloc::tune(),
        Ok(false) => tracing::debug!("allocator settings left alone: SHORTS_MALLOC_TUNING=off"),
        Err(e) => return fail(USAGE, &e.to_string()),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &format!("could not start the tokio runtime: {e}")),
    };
    match cli.command.unwrap_or(Command::Serve { mock: false }) {
        Command::Serve { mock } => runtime.block_on(serve(mock)),
        Command::List => list(),
        Command::Check => runtime.block_on(check::check()),
        Command::Orders {
            state,
            short,
            limit,
            after,
            json,
        } => runtime.block_on(orders(state.as_deref(), short, limit, after.as_deref(), json)),
        Command::Retry { order_id } => runtime.block_on(retry(&order_id)),
        Command::Invoke {
            short,
            input,
            input_file,
            out,
        } => runtime.block_on(invoke(&short, input, input_file, &out)),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

async fn serve(mock: bool) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => return fail(USAGE, &e.to_string()),
    };
    let (config, platform) = if mock {
        match with_mock_platform(config).await {
            Ok((config, platform)) => (config, Some(platform)),
            Err(message) => return fail(1, &message),
        }
    } else {
        (config, None)
    };
    let app = match App::builder().config(config).build().await {
        Ok(app) => app,
        Err(e) => return fail(USAGE, &e.to_string()),
    };
    // Connections hold file descriptors: as many as the system allows this process.
    match crate::server::limits::raise_open_file_limit() {
        Ok(limit) => info!(limit, "open-file limit"),
        Err(e) => warn!(error = %e, "could not raise the open-file limit"),
    }
    let listener = match listener(app.config().bind).await {
        Ok(listener) => listener,
        Err(message) => return fail(1, &message),
    };
    let result = app.serve(listener, shutdown_signal()).await;
    drop(platform);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e.to_string()),
    }
}

/// The socket a service manager passed (systemd's socket activation: `LISTEN_FDS`), or a new one
/// bound to `bind`.
async fn listener(bind: std::net::SocketAddr) -> Result<TcpListener, String> {
    #[cfg(unix)]
    {
        let passed = listenfd::ListenFd::from_env()
            .take_tcp_listener(0)
            .map_err(|e| format!("the socket passed in LISTEN_FDS cannot be used: {e}"))?;
        if let Some(listener) = passed {
            let listening = listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener));
            return match listening {
                Ok(listener) => {
                    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    info!(%addr, "listening on the socket passed in LISTEN_FDS; SHORTS_BIND is not used");
                    Ok(listener)
                }
                Err(e) => Err(format!("the socket passed in LISTEN_FDS cannot be used: {e}")),
            };
        }
    }
    TcpListener::bind(bind)
        .await
        .map_err(|e| format!("could not listen on {bind}: {e}"))
}

/// Points `config` at an in-process mock platform that prints every callback it accepts.
async fn with_mock_platform(mut config: Config) -> Result<(Config, MockPlatform), String> {
    let mut builder = MockPlatform::builder();
    if let Some(secret) = &config.callback_secret {
        builder = builder.secret(secret.expose());
    }
    let platform = builder
        .start()
        .await
        .map_err(|e| format!("could not start the mock platform: {e}"))?;
    config.callback_secret = Some(Secret::new(platform.secret()));
    // A trial: unless a store is chosen, keep orders in memory so that a resent test order runs.
    if std::env::var_os("SHORTS_STORE").is_none() {
        config.store = StoreConfig::Memory;
    }
    // The handler runs for anyone who knows the well-known key: listen on this machine only,
    // unless an address is chosen (`PORT` chooses only the port).
    if std::env::var("SHORTS_BIND").map_or(true, |bind| bind.trim().is_empty()) {
        config.bind.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    config.callback_url =
        url::Url::parse(&platform.callback_url()).map_err(|e| format!("mock platform URL: {e}"))?;
    if config.webhook_auth.is_empty() {
        config.webhook_auth =
            vec![WebhookAuth::new("x-api-key", MockPlatform::WEBHOOK_KEY).map_err(|e| e.to_string())?];
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

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => info!("SIGINT received; shutting down"),
        () = terminate => info!("SIGTERM received; shutting down"),
    }
}

fn list() -> ExitCode {
    list_shorts(&Short::registered())
}

/// Prints one line per short; a set that cannot be served (two shorts at one route) is listed,
/// then refused with exit code 2, as `serve` would refuse it.
fn list_shorts(shorts: &[Short]) -> ExitCode {
    if shorts.is_empty() {
        println!("no shorts: annotate an `async fn` with `#[ai_short]`");
        return ExitCode::SUCCESS;
    }
    let width = shorts.iter().map(|s| s.name().len()).max().unwrap_or(0);
    let route_width = shorts.iter().map(|s| s.route().len()).max().unwrap_or(0);
    for short in shorts {
        println!(
            "{:width$}  POST {:route_width$}  timeout {}  concurrency {}  {}",
            short.name(),
            short.route(),
            humantime::format_duration(short.timeout_duration()),
            short.concurrency_limit(),
            short.description(),
        );
    }
    match crate::app::check_shorts(shorts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(USAGE, &e.to_string()),
    }
}

async fn open_store() -> Result<AnyStore, ExitCode> {
    let config = Config::from_env().map_err(|e| fail(USAGE, &e.to_string()))?;
    AnyStore::open(&config.store)
        .await
        .map_err(|e| fail(1, &e.to_string()))
}

async fn orders(
    state: Option<&str>,
    short: Option<String>,
    limit: u32,
    after: Option<&str>,
    json: bool,
) -> ExitCode {
    let state = match state.map(|name| OrderState::parse(name).ok_or(name)) {
        None => None,
        Some(Ok(state)) => Some(state),
        Some(Err(name)) => {
            let states: Vec<&str> = OrderState::ALL.iter().map(|s| s.as_str()).collect();
            return fail(
                USAGE,
                &format!("unknown state `{name}`; expected one of {}", states.join(", ")),
            );
        }
    };
    let after = match after.map(|text| PageCursor::decode(text).ok_or(text)) {
        None => None,
        Some(Ok(cursor)) => Some(cursor),
        Some(Err(text)) => {
            return fail(
                USAGE,
                &format!("`{text}` is not a cursor; use the `cursor` of a line of `orders --json`"),
            );
        }
    };
    let store = match open_store().await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let filter = OrderFilter {
        state,
        short,
        id: None,
    };
    let records = match store.orders_page(&filter, after.as_ref(), limit).await {
        Ok(page) => page.orders,
        Err(e) => return fail(1, &e.to_string()),
    };
    if json {
        let mut out = std::io::stdout().lock();
        for record in &records {
            if writeln!(out, "{}", record.to_json()).is_err() {
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    if records.is_empty() {
        match (state, &filter.short) {
            (Some(state), _) => println!("no orders in state {state}"),
            (None, Some(short)) => println!("no orders of short {short}"),
            (None, None) => println!("no orders"),
        }
    }
    for record in records {
        let received = humantime::format_rfc3339_seconds(record.received());
        println!(
            "{received}  {:<10}  {}  short={}  runs={}  attempts={}{}{}",
            record.state.as_str(),
            record.id,
            record.short,
            record.runs,
            record.attempts,
            if record.payload_purged {
                "  payload purged"
            } else {
                ""
            },
            match (record.state, record.last_error) {
                (_, None) => String::new(),
                // Delivered in the end: the error is history, not the order's state.
                (OrderState::Delivered, Some(e)) => format!("  earlier error: {e}"),
                (_, Some(e)) => format!("  error: {e}"),
            }
        );
    }
    ExitCode::SUCCESS
}

async fn retry(order_id: &str) -> ExitCode {
    let store = match open_store().await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let purged = "its webhook payload was purged after SHORTS_DEAD_RETENTION";
    match crate::store::retry(&store, order_id).await {
        Ok(Retried::Redelivering {
            payload_purged: false,
        }) => {
            println!("order {order_id} will be delivered again");
            ExitCode::SUCCESS
        }
        Ok(Retried::Redelivering { payload_purged: true }) => {
            println!("order {order_id} will be delivered again from its stored result ({purged})");
            ExitCode::SUCCESS
        }
        Ok(Retried::Unknown) => fail(1, &format!("no order `{order_id}`")),
        Ok(Retried::NotStuck(state)) => fail(
            1,
            &format!("order `{order_id}` is {state}; only dead or paused orders are retried"),
        ),
        Ok(Retried::NoResult { payload_purged }) => {
            let cannot = if payload_purged {
                format!("; {purged}, so it cannot run again either")
            } else {
                String::new()
            };
            fail(
                1,
                &format!("order `{order_id}` has no stored result to deliver{cannot}"),
            )
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

async fn invoke(name: &str, input: Option<String>, input_file: Option<PathBuf>, out: &Path) -> ExitCode {
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
        Err(message) => return fail(USAGE, &message),
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
        if let Err(message) = write_file(&file, out) {
            return fail(1, &message);
        }
    }
    if callback.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Writes a returned file into `dir` under its name's last component, and says where.
fn write_file(file: &ReturnedFile, dir: &Path) -> Result<(), String> {
    // Only the last path component: a short must not write outside `dir`.
    let name = Path::new(&file.filename)
        .file_name()
        .ok_or_else(|| format!("file name {:?} is not usable", file.filename))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let written = match &file.contents {
        FileContents::Inline(bytes) => std::fs::write(&path, bytes).map(|()| bytes.len() as u64),
        FileContents::Uploaded(object) => match &object.path {
            Some(stored) => std::fs::copy(stored, &path),
            None => return Err(format!("the uploaded file `{}` was not stored", file.filename)),
        },
    }
    .map_err(|e| format!("could not write {}: {e}", path.display()))?;
    eprintln!("wrote {} ({written} bytes)", path.display());
    Ok(())
}

/// An app running only `name`, delivering to the in-process mock: the app, the short's route,
/// and its timeout.
async fn invoke_app(platform: &MockPlatform, name: &str) -> Result<(App, String, Duration), String> {
    let registered = Short::registered();
    // The order runs alone, but the binary must be one `serve` would take.
    crate::app::check_shorts(&registered).map_err(|e| e.to_string())?;
    let Some(short) = registered.iter().find(|s| s.name() == name).cloned() else {
        let names: Vec<&str> = registered.iter().map(Short::name).collect();
        return Err(format!(
            "no short named `{name}`; this binary has: {}",
            names.join(", ")
        ));
    };
    let (route, timeout) = (short.route().to_owned(), short.timeout_duration());
    let mut builder = App::builder()
        .config(platform.config())
        .without_registered()
        .short(short);
    if std::io::stderr().is_terminal() {
        builder = builder.upload_progress(print_progress);
    }
    let app = builder.build().await.map_err(|e| e.to_string())?;
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
    fn list_refuses_two_shorts_at_one_route_as_serve_does() {
        let short = |name: &str| {
            Short::new(name, |_: Value, _: crate::Order| async {
                Ok::<_, crate::Error>("ok")
            })
        };
        assert_eq!(list_shorts(&[short("a"), short("b")]), ExitCode::SUCCESS);
        assert_eq!(
            list_shorts(&[short("a").path("/x"), short("b").path("/x")]),
            ExitCode::from(USAGE)
        );
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
