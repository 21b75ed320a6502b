//! `run()`: the command line every short binary gets.

mod check;
mod form;
// The mock platform is compiled into debug builds only (and with the `testing` feature), so that
// a production binary carries none of it; see `local_only`.
#[cfg(any(debug_assertions, feature = "testing"))]
mod local;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::filter::Targets;

use crate::app::App;
use crate::config::Config;
use crate::short::Short;
use crate::store::{AnyStore, OrderFilter, OrderState, PageCursor, Retried, Store as _};

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
        #[cfg_attr(not(any(debug_assertions, feature = "testing")), arg(hide = true))]
        #[arg(long)]
        mock: bool,
    },
    /// Run one order in-process against a built-in mock of the platform and print the callback.
    // Release builds leave the mock out: their help does not offer it.
    #[cfg_attr(not(any(debug_assertions, feature = "testing")), command(hide = true))]
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
    /// Print the buyer's form each short's input type expects: each key, its platform input type,
    /// whether it is required, and its label; exits with 1 when a key or type cannot work on the
    /// platform.
    Form {
        /// Only this short.
        short: Option<String>,
        /// One JSON object per short and line, for tools.
        #[arg(long)]
        json: bool,
    },
    /// List the orders in the store (`SHORTS_STORE`), newest first.
    Orders {
        /// Only orders in this state: received, delivering, paused, delivered or dead.
        #[arg(long)]
        state: Option<String>,
        /// Only orders of this short.
        #[arg(long)]
        short: Option<String>,
        /// Only orders whose `order_id` starts with this (the dashboard's search).
        #[arg(long, value_name = "PREFIX")]
        id: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only orders older than the one with this cursor (the `cursor` of a JSON line): the
        /// next page.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        /// One JSON object per line, for scripts: the fields of the dashboard's list (`id`,
        /// `short`, `state`, `received_at` in RFC 3339, `runs`, `last_error`), then `attempts`,
        /// `next_attempt_at`, `payload_purged`, `outcome`, `failed_by_operator` and `cursor`.
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
/// - `serve` (the default): serve every short, configured from the environment, with the admin
///   listener (the orders dashboard and `GET /metrics`) on `SHORTS_ADMIN_BIND` beside the webhook
///   one; `serve --mock`
///   delivers callbacks to a built-in mock of the platform and prints them;
/// - `invoke <short> --input <json>` (or `--input-file <file>`): run one order in-process against a
///   built-in mock of the platform, print the callback and write returned files to `--out`;
/// - `list`: the shorts in this binary, their routes and options;
/// - `form [<short>] [--json]`: the buyer's form each short's input type expects (each key, its
///   platform input type, whether it is required, its label); exits with 1 when a key breaks the
///   platform's rules or a field's type is none of the platform's input types;
/// - `orders [--state <state>] [--short <short>] [--id <prefix>] [--limit <n>] [--after <cursor>]
///   [--json]`: the orders in the store (`SHORTS_STORE`), newest first; `--json` prints one JSON
///   object per line, with the fields of the dashboard's list;
/// - `retry <order_id>`: deliver a dead or paused order's callback again;
/// - `check`: check the configuration, the store, the platform and the certificate, and print the
///   webhook URLs; exits with 1 when a problem is found.
///
/// Installs a `tracing` subscriber (filtered by `RUST_LOG`, default `info`; human-readable lines,
/// or one JSON object per line with `SHORTS_LOG_FORMAT=json`) and a tokio runtime.
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
    let format = match crate::logs::LogFormat::parse(std::env::var_os(crate::logs::FORMAT_VAR).as_deref()) {
        Ok(format) => format,
        Err(e) => return fail(USAGE, &e.to_string()),
    };
    init_tracing(format);
    match crate::malloc::tuning_wanted(std::env::var_os(crate::malloc::TUNING_VAR).as_deref()) {
        Ok(true) => crate::malloc::tune(),
        Ok(false) => tracing::debug!("allocator settings left alone: SHORTS_MALLOC_TUNING=off"),
        Err(e) => return fail(USAGE, &e.to_string()),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &format!("could not start the tokio runtime: {e}")),
    };
    let code = match cli.command.unwrap_or(Command::Serve { mock: false }) {
        Command::Serve { mock } => runtime.block_on(serve(mock)),
        Command::List => list(),
        Command::Form { short, json } => form::print(&Short::registered(), short.as_deref(), json),
        Command::Check => runtime.block_on(check::check()),
        Command::Orders {
            state,
            short,
            id,
            limit,
            after,
            json,
        } => runtime.block_on(orders(state.as_deref(), short, id, limit, after.as_deref(), json)),
        Command::Retry { order_id } => runtime.block_on(retry(&order_id)),
        #[cfg(any(debug_assertions, feature = "testing"))]
        Command::Invoke {
            short,
            input,
            input_file,
            out,
        } => runtime.block_on(local::invoke(&short, input, input_file, &out)),
        #[cfg(not(any(debug_assertions, feature = "testing")))]
        Command::Invoke { .. } => local_only("invoke"),
    };
    // A `blocking` short whose order timed out may still run on a blocking thread, which no one
    // waits for: the process exits without it after a short wait.
    runtime.shutdown_timeout(BLOCKING_EXIT_WAIT);
    code
}

/// How long the process waits at exit for blocking shorts still running after their timeout.
const BLOCKING_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The answer of `invoke` and `serve --mock` in a release build, which has no mock platform.
#[cfg(not(any(debug_assertions, feature = "testing")))]
fn local_only(command: &str) -> ExitCode {
    fail(
        USAGE,
        &format!(
            "`{command}` runs against the built-in mock platform, which release builds leave out; \
             run it from a debug build: `cargo run -- {command} …`"
        ),
    )
}

/// What is logged when `RUST_LOG` is not set: `info`, but PostgreSQL's notices only from `warn`
/// (at each start the migrations' `CREATE TABLE IF NOT EXISTS` draws a notice that the table
/// exists, which says nothing to an operator).
const DEFAULT_LOG_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// The log filter of `rust_log` (`RUST_LOG`: levels by target, such as
/// `info,shorts_runtime=debug`) or the default; with the problem of a `RUST_LOG` that is not such a
/// filter, to be logged.
fn log_filter(rust_log: Result<String, std::env::VarError>) -> (Targets, Option<String>) {
    let default = || DEFAULT_LOG_FILTER.parse().unwrap_or_default();
    match rust_log {
        Ok(value) if !value.trim().is_empty() => match value.parse() {
            Ok(filter) => (filter, None),
            Err(e) => (
                default(),
                Some(format!(
                    "RUST_LOG={value:?} is not a log filter ({e}): it takes levels by target, \
                     such as `info,shorts_runtime=debug`; logging with the default, \
                     `{DEFAULT_LOG_FILTER}`"
                )),
            ),
        },
        Ok(_) | Err(std::env::VarError::NotPresent) => (default(), None),
        Err(std::env::VarError::NotUnicode(_)) => (
            default(),
            Some(format!(
                "RUST_LOG is not UTF-8; logging with the default, `{DEFAULT_LOG_FILTER}`"
            )),
        ),
    }
}

/// Installs the subscriber writing to standard error in `format`, filtered by `RUST_LOG`.
fn init_tracing(format: crate::logs::LogFormat) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, problem) = log_filter(std::env::var("RUST_LOG"));
    // The filter is the layer's only one (`fmt()`'s own builder would keep its `info` bound too).
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    let _ = match format {
        crate::logs::LogFormat::Text => registry
            .with(
                layer
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(filter),
            )
            .try_init(),
        crate::logs::LogFormat::Json => registry
            .with(
                layer
                    .with_ansi(false)
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(crate::logs::JsonLines)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if let Some(problem) = problem {
        warn!("{problem}");
    }
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
    // The mock platform, if any, is kept until the server stops.
    #[cfg(any(debug_assertions, feature = "testing"))]
    let (config, _platform) = if mock {
        match local::with_mock_platform(config).await {
            Ok((config, platform)) => (config, Some(platform)),
            Err(e) => return fail(1, &e.to_string()),
        }
    } else {
        (config, None)
    };
    #[cfg(not(any(debug_assertions, feature = "testing")))]
    if mock {
        return local_only("serve --mock");
    }
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
        Err(e) => return fail(1, &e.to_string()),
    };
    let admin_listener = match app.config().admin_bind {
        Some(bind) => match TcpListener::bind(bind).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                return fail(1, &format!("could not listen on {bind} (SHORTS_ADMIN_BIND): {e}"));
            }
        },
        None => {
            info!("admin listener off (SHORTS_ADMIN_BIND=off): no metrics");
            None
        }
    };
    // One signal stops both listeners.
    let stop = CancellationToken::new();
    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = shutdown_signal() => stop.cancel(),
                () = stop.cancelled() => {}
            }
        }
    });
    let admin = admin_listener.map(|admin_listener| {
        let (router, config, stopped) = (app.admin_router(), app.config().clone(), stop.clone());
        tokio::spawn(async move {
            crate::admin::serve(router, admin_listener, &config, stopped.cancelled_owned()).await;
        })
    });
    let result = app.serve(listener, stop.clone().cancelled_owned()).await;
    stop.cancel();
    let _ = signal.await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e.to_string()),
    }
}

/// The socket a service manager passed (systemd's socket activation: `LISTEN_FDS`), or a new one
/// bound to `bind`.
async fn listener(bind: std::net::SocketAddr) -> Result<TcpListener, ListenError> {
    #[cfg(unix)]
    {
        let passed = listenfd::ListenFd::from_env()
            .take_tcp_listener(0)
            .map_err(ListenError::Passed)?;
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
                Err(e) => Err(ListenError::Passed(e)),
            };
        }
    }
    TcpListener::bind(bind)
        .await
        .map_err(|source| ListenError::Bind { addr: bind, source })
}

/// Why the webhook listener could not be had.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    /// A service manager passed a socket that cannot be served.
    #[error("the socket passed in LISTEN_FDS cannot be used: {0}")]
    Passed(#[source] std::io::Error),
    /// Binding the configured address failed.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address (`SHORTS_BIND`, or `PORT`).
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
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
    let route_width = shorts.iter().map(|s| s.path().len()).max().unwrap_or(0);
    for short in shorts {
        println!(
            "{:width$}  POST {:route_width$}  timeout {}  concurrency {}  {}",
            short.name(),
            short.path(),
            humantime::format_duration(short.timeout()),
            short.concurrency(),
            short.description(),
        );
    }
    match crate::app::check_shorts(shorts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(USAGE, &e.to_string()),
    }
}

/// The store of `SHORTS_STORE` for `orders` and `retry`: one that holds the server's orders.
async fn open_store() -> Result<AnyStore, ExitCode> {
    let config = Config::from_env().map_err(|e| fail(USAGE, &e.to_string()))?;
    if let Some(problem) = no_orders_in(&config.store) {
        return Err(fail(1, &problem));
    }
    AnyStore::open(&config.store)
        .await
        .map_err(|e| fail(1, &e.to_string()))
}

/// Why `store` cannot hold a server's orders for another process to read: the memory store keeps
/// them inside the server, and a SQLite file that does not exist was never a server's (opening it
/// would create an empty one).
fn no_orders_in(store: &crate::config::StoreConfig) -> Option<String> {
    use crate::config::StoreConfig;
    match store {
        StoreConfig::Memory => Some(
            "SHORTS_STORE is `memory`: its orders live inside the running server, which no other \
             command can read; set SHORTS_STORE as the server has it"
                .to_owned(),
        ),
        StoreConfig::Sqlite(path) if !path.exists() => Some(format!(
            "there is no order store at {} (SHORTS_STORE, relative to this folder): run this where \
             the server runs, or set SHORTS_STORE to its file",
            path.display()
        )),
        StoreConfig::Sqlite(_) | StoreConfig::Postgres(_) => None,
    }
}

async fn orders(
    state: Option<&str>,
    short: Option<String>,
    id: Option<String>,
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
        id: id.map(crate::store::history::IdMatch::Prefix),
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
        match (state, &filter.short, &filter.id) {
            (Some(state), _, _) => println!("no orders in state {state}"),
            (None, Some(short), _) => println!("no orders of short {short}"),
            (None, None, Some(_)) => println!("no orders with that id"),
            (None, None, None) => println!("no orders"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn list_refuses_two_shorts_at_one_route_as_serve_does() {
        let short = |name: &str| {
            Short::builder(name, |_: Value, _: crate::Order| async {
                Ok::<_, crate::Error>("ok")
            })
        };
        assert_eq!(
            list_shorts(&[short("a").build(), short("b").build()]),
            ExitCode::SUCCESS
        );
        assert_eq!(
            list_shorts(&[short("a").path("/x").build(), short("b").path("/x").build()]),
            ExitCode::from(USAGE)
        );
    }

    #[test]
    fn orders_and_retry_refuse_a_store_that_holds_no_server_orders() {
        use crate::config::StoreConfig;
        let dir = std::env::temp_dir().join(format!("shorts-cli-{}", uuid::Uuid::new_v4()));
        let missing = dir.join("shorts.db");
        let problem = no_orders_in(&StoreConfig::Sqlite(missing.clone())).unwrap_or_default();
        assert!(problem.contains("no order store at"), "{problem}");
        assert!(problem.contains(&missing.display().to_string()), "{problem}");
        assert!(!missing.exists());
        let problem = no_orders_in(&StoreConfig::Memory).unwrap_or_default();
        assert!(problem.contains("`memory`"), "{problem}");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&missing, b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(no_orders_in(&StoreConfig::Sqlite(missing)), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_default_log_filter_is_read_whole() {
        use tracing::Level;
        let filter: Targets = DEFAULT_LOG_FILTER
            .parse()
            .unwrap_or_else(|e| panic!("{DEFAULT_LOG_FILTER}: {e}"));
        assert!(filter.would_enable("shorts_runtime::server", &Level::INFO));
        assert!(!filter.would_enable("shorts_runtime::server", &Level::DEBUG));
        assert!(filter.would_enable("sqlx::postgres::notice", &Level::WARN));
        assert!(!filter.would_enable("sqlx::postgres::notice", &Level::INFO));
        assert!(filter.would_enable("sqlx::query", &Level::INFO));
    }

    #[test]
    fn rust_log_sets_levels_by_target_and_a_bad_one_is_told() {
        use std::env::VarError;
        use tracing::Level;
        let (filter, problem) = log_filter(Ok("warn,shorts_runtime=debug".into()));
        assert_eq!(problem, None);
        assert!(filter.would_enable("shorts_runtime::run", &Level::DEBUG));
        assert!(!filter.would_enable("hyper", &Level::INFO));
        for unset in [Err(VarError::NotPresent), Ok(" ".into())] {
            let (filter, problem) = log_filter(unset);
            assert_eq!(problem, None);
            assert!(filter.would_enable("shorts_runtime", &Level::INFO));
            assert!(!filter.would_enable("shorts_runtime", &Level::DEBUG));
        }
        // A filter of another syntax (spans, fields) is the default, and said.
        let (filter, problem) = log_filter(Ok("[order{short=a}]=debug".into()));
        let problem = problem.unwrap_or_default();
        assert!(problem.contains("is not a log filter"), "{problem}");
        assert!(problem.contains(DEFAULT_LOG_FILTER), "{problem}");
        assert!(filter.would_enable("shorts_runtime", &Level::INFO));
        let (_, problem) = log_filter(Err(VarError::NotUnicode("\u{fffd}".into())));
        assert!(problem.is_some_and(|p| p.contains("not UTF-8")));
    }
}
