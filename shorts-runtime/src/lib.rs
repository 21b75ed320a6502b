//! # shorts
//!
//! Serve an AI Short on the [SellerShorts](https://sellershorts.com) marketplace from one async
//! function. The platform POSTs each paid order to your webhook; shorts checks the auth header,
//! parses the order, runs your function on its own task (with a concurrency limit, a timeout and
//! panics caught) and POSTs the result to the platform's callback endpoint in the documented v1
//! format, retrying until the platform accepts it.
//!
//! ```no_run
//! use shorts_runtime::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Input {
//!     text: String,
//!     #[serde(default)]
//!     shout: bool,
//! }
//!
//! /// Echo the buyer's text back.
//! #[ai_short]
//! async fn echo(input: Input) -> Result<String> {
//!     Ok(if input.shout { input.text.to_uppercase() } else { input.text })
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     shorts_runtime::run()
//! }
//! ```
//!
//! `cargo run` then serves `POST /shorts/echo`; `cargo run -- invoke echo --input '{"text":"hi"}'`
//! runs one order against a built-in mock of the platform and prints the callback; `cargo run --
//! list` lists the shorts. Configuration comes from the environment: see [`Config`].
//!
//! Every order is committed to a store (SQLite by default, PostgreSQL for several instances)
//! before the webhook is answered, and its callback body before the first POST, so a crash, a
//! `kill -9` or a deploy loses nothing: at the next start, results not yet delivered are delivered
//! and orders without a result run again. **Handlers therefore run at least once per order** (an
//! order whose run was interrupted runs again; one that ended the process three times is failed
//! instead). A duplicate webhook for an order already received runs nothing.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod app;
mod cli;
mod config;
mod delivery;
mod logs;
mod malloc;
mod server;
mod short;
mod store;
mod wire;
mod worker;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
// Without the feature, debug builds still carry the mock platform for `invoke` and
// `serve --mock`; release builds leave it out.
#[cfg(all(not(feature = "testing"), any(debug_assertions, test)))]
#[allow(unreachable_pub, dead_code)]
mod testing;

pub use app::{App, AppBuilder, BuildError};
pub use cli::run;
pub use config::{
    AcmeConfig, Config, ConfigError, DEFAULT_ADMIN_BIND, DEFAULT_CALLBACK_URL, DEFAULT_INLINE_LIMIT,
    DEFAULT_RETRY_SCHEDULE, LETS_ENCRYPT_DIRECTORY, LETS_ENCRYPT_STAGING_DIRECTORY, Secret, StoreConfig,
    TlsConfig, WebhookAuth,
};
pub use server::{PairError, TlsError};
pub use short::error::{Error, ErrorKind, IntoError, Result};
pub use short::inputs::{DateRange, FileInput, FileInputError, Tags};
pub use short::order::{Order, OrderBuilder};
pub use short::output::{Csv, File, Html, IntoOutput, Json, Output, Url};
pub use short::{DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, FromCall, HandlerResult, Short, ShortBuilder};
pub use store::{FailedNow, OrderRecord, OrderState, Retried, StoreError, StoreOperation};

/// The `serde_json` this crate uses, for [`Order::payload_json`], [`Json`] and tests' inputs.
pub use serde_json;

/// Turns an `async fn` into an AI Short.
///
/// ```
/// use shorts_runtime::prelude::*;
///
/// #[derive(Deserialize)]
/// struct ReportInput { topic: String }
///
/// /// Render a report as a text file.
/// #[ai_short(path = "/report", timeout = "10m", concurrency = 4)]
/// async fn report(input: ReportInput, order: Order) -> Result<File> {
///     let text = format!("Report on {} for order {}", input.topic, order.id());
///     Ok(File::from_bytes("report.txt", "text/plain", text.into_bytes()))
/// }
/// ```
///
/// - The function is a free function: not a method, nor an associated function in an `impl`
///   block (there the compiler reports that it cannot find the function, at its name).
/// - The first argument is the buyer's input: any `serde::de::DeserializeOwned` type, built from
///   the webhook's `inputs`. It is an owned type with a name (`String`, not `&str`; `Input`, not
///   `impl Deserialize`). Inputs that do not fit end the order with an `ok: false` callback naming
///   the field.
/// - The optional second argument is the [`Order`].
/// - The return type is `Result<T, E>`: `T` is an output ([`String`] for text, [`Html`], [`Json`],
///   [`Csv`], [`Url`], [`File`], `Vec<File>` or [`Output`]); `E` is [`Error`] or any type
///   implementing [`IntoError`] — every `std::error::Error + Send + Sync + 'static`, `String`,
///   `&'static str`, `anyhow::Error`. In a `Result<T>` (`E` = [`Error`]), `?` converts every
///   `std::error::Error`; a message of your own is `Error::msg("...")` (`&str` and `String` do not
///   convert into [`Error`]).
///   An error, a panic or a timeout ends the order with an `ok: false` callback carrying the error's
///   message.
/// - The function itself is unchanged: call it directly in unit tests.
///
/// Options:
///
/// | option | meaning | default |
/// | --- | --- | --- |
/// | `path = "/report"` | the webhook route | `/shorts/<fn name>` |
/// | `timeout = "10m"` | fail an order that runs longer (`500ms`, `30s`, `1h 30m`, ...) | 15 minutes |
/// | `concurrency = 4` | orders of this short running at once | 32 |
/// | `blocking` | the function is a plain `fn` that blocks its thread, run on tokio's blocking thread pool (below) | off |
/// | `crate = "path"` | where `shorts_runtime` is, when renamed or re-exported | `::shorts_runtime` |
///
/// # Functions that block their thread
///
/// An `async` short runs on one of the runtime's few worker threads, which serve every order and
/// the webhook too. A short that blocks its thread there (`std::thread::sleep`, a synchronous
/// HTTP client, a long computation, blocking file or database calls) holds that worker until it
/// returns, and its `timeout` cannot stop it: the timeout callback goes out only once the
/// function gives the thread back. Move such work to tokio's blocking thread pool with
/// `tokio::task::spawn_blocking`:
///
/// ```
/// use shorts_runtime::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Input { text: String }
///
/// fn count_words(text: &str) -> usize {
///     text.split_whitespace().count() // stands for slow, synchronous work
/// }
///
/// #[ai_short(timeout = "1m")]
/// async fn words(input: Input) -> Result<String> {
///     let count = tokio::task::spawn_blocking(move || count_words(&input.text)).await?;
///     Ok(format!("{count} words"))
/// }
/// ```
///
/// or write the whole short as a plain `fn` with `blocking`, which does the same:
///
/// ```
/// use shorts_runtime::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Input { text: String }
///
/// #[ai_short(blocking, timeout = "1m")]
/// fn word_count(input: Input) -> Result<String> {
///     Ok(format!("{} words", input.text.split_whitespace().count()))
/// }
/// ```
///
/// A `blocking` short's order still ends at its timeout, with the timeout callback. The thread
/// cannot be stopped, though: the function runs on, detached, until it returns, and its result is
/// dropped. Meanwhile it holds one of the blocking pool's threads (512 at most) but no longer one
/// of the short's `concurrency` slots; when the process exits it is not waited for beyond a
/// second. A panic in it ends the order as an `async` short's panic does.
///
/// # Equivalent code without `#[ai_short]`
///
/// The attribute registers the function so that [`run`] and [`App::builder`] find it. The same
/// short, built by hand and given to the builder:
///
/// ```
/// use std::time::Duration;
/// use shorts_runtime::prelude::*;
///
/// #[derive(Deserialize)]
/// struct ReportInput { topic: String }
///
/// async fn report(input: ReportInput, order: Order) -> Result<File> {
///     let text = format!("Report on {} for order {}", input.topic, order.id());
///     Ok(File::from_bytes("report.txt", "text/plain", text.into_bytes()))
/// }
///
/// let short = Short::builder("report", report)
///     .path("/report")
///     .timeout(Duration::from_secs(600))
///     .concurrency(4);
/// let builder = App::builder().short(short);
/// ```
pub use shorts_macros::ai_short;

/// Everything a short usually needs: `use shorts_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::{
        App, Csv, DateRange, Error, File, FileInput, Html, Json, Order, Output, Result, Short, Tags, Url,
        ai_short,
    };
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{Value, json};
}

/// What `#[ai_short]` expansions name. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::short::form::{Form, FormFn, Probe, ViaNothing, ViaSchema, ViaSerde};
    pub use crate::short::{
        Call, FromCall, HandlerFuture, HandlerResult, ShortDef, ShortInput, blocking, input, into_error,
        into_output,
    };
    pub use inventory;
    pub use std::boxed::Box;
    pub use std::option::Option::{None, Some};
    pub use std::result::Result::{Err, Ok};
    pub use std::{file, line, module_path};
}

/// Entry points for `shorts-bench`. Not public API.
#[doc(hidden)]
pub mod __bench {
    /// Fills the store of `config` with `count` orders and times each query of an operator's
    /// pages, then each page of the dashboard rendered through the admin router, `rounds` times:
    /// each one's name and median time.
    ///
    /// # Errors
    ///
    /// When the store cannot be opened, filled or read, or a query or page finds nothing.
    pub async fn order_queries(
        config: &crate::StoreConfig,
        count: u32,
        rounds: u32,
    ) -> Result<Vec<(String, std::time::Duration)>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(crate::store::timing::order_queries(config, count, rounds).await?)
    }

    /// Each statement the SQLite store's writer runs for a lone order, a poll, a run's start, a
    /// lease's renewal and the purge, with its `EXPLAIN QUERY PLAN` lines on the database at
    /// `path` (which the store has created).
    ///
    /// # Errors
    ///
    /// When the database cannot be opened or a statement cannot be planned.
    pub async fn sqlite_query_plans(
        path: &std::path::Path,
    ) -> Result<Vec<(String, Vec<String>)>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(crate::store::sqlite_query_plans(path).await?)
    }
}

/// Entry points for the fuzz targets in `fuzz/`. Not public API.
#[doc(hidden)]
pub mod __fuzz {
    /// Reads a webhook body as the server does: the order id, or the error whose message the `400`
    /// carries.
    ///
    /// # Errors
    ///
    /// When the body is not a webhook.
    pub fn parse_webhook(body: &[u8]) -> Result<String, impl std::error::Error> {
        crate::wire::webhook::Webhook::parse(body).map(|webhook| webhook.order_id)
    }
}
