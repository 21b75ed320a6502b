//! Shorts: registration, the handler's calling convention, and the types a handler uses.

pub(crate) mod error;
pub(crate) mod form;
pub(crate) mod inputs;
pub(crate) mod order;
pub(crate) mod output;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use self::error::{Error, ErrorKind, IntoError};
use self::order::Order;
use self::output::{IntoOutput, Output};

/// How long a short may run when it sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How many orders of one short run at once when it sets no `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// The boxed future a type-erased handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Output, Error>> + Send + 'static>>;

type HandlerFn = Arc<dyn Fn(Call) -> HandlerFuture + Send + Sync>;

/// One short: a name, a route, its limits and its handler.
///
/// `#[ai_short]` builds these for you; build one by hand with [`Short::new`] (default options) or
/// [`Short::builder`] to register a closure or to choose options at run time, and pass it to
/// [`AppBuilder::short`](crate::AppBuilder::short).
#[derive(Clone)]
pub struct Short {
    pub(crate) name: Arc<str>,
    pub(crate) doc: String,
    pub(crate) path: String,
    pub(crate) timeout: Duration,
    pub(crate) concurrency: usize,
    pub(crate) handler: HandlerFn,
    pub(crate) location: Option<String>,
    /// Reads the form its input type expects (`form`).
    pub(crate) form: form::FormFn,
}

impl Short {
    /// A short named `name`, served at `/shorts/<name>` with the default timeout and concurrency,
    /// running `handler` for every order.
    ///
    /// ```
    /// use shorts_runtime::prelude::*;
    ///
    /// #[derive(Deserialize)]
    /// struct Input { text: String }
    ///
    /// let short = Short::new("echo", |input: Input, _order: Order| async move {
    ///     Ok::<_, Error>(input.text)
    /// });
    /// assert_eq!(short.path(), "/shorts/echo");
    /// ```
    pub fn new<I, F, Fut, R>(name: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        F: Fn(I, Order) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
        R::Ok: IntoOutput,
        R::Err: IntoError,
    {
        let handler = Arc::new(handler);
        let mut short = Self::from_handler(
            name,
            Arc::new(move |call: Call| -> HandlerFuture {
                let handler = Arc::clone(&handler);
                Box::pin(async move {
                    let input = input::<I>(&call)?;
                    match handler(input, call.order).await.into_result() {
                        Ok(value) => value.into_output(),
                        Err(error) => Err(error.into_error()),
                    }
                })
            }),
        );
        short.form = form::of::<I>;
        short
    }

    fn from_handler(name: &str, handler: HandlerFn) -> Self {
        Self {
            name: Arc::from(name),
            doc: String::new(),
            path: format!("/shorts/{name}"),
            timeout: DEFAULT_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            handler,
            location: None,
            form: || form::Form::default(),
        }
    }

    pub(crate) fn from_def(def: &ShortDef) -> Self {
        let handler = def.handler;
        let mut short = Self::from_handler(def.name, Arc::new(handler));
        short.doc = def.doc.to_owned();
        if let Some(path) = def.path {
            short.path = path.to_owned();
        }
        if let Some(millis) = def.timeout_ms {
            short.timeout = Duration::from_millis(millis);
        }
        if let Some(n) = def.concurrency {
            short.concurrency = n as usize;
        }
        short.location = Some(format!("{}:{}", def.file, def.line));
        short.form = def.form;
        short
    }

    /// A short named `name` running `handler` for every order, with its options to set: the
    /// same as `#[ai_short]`'s, named alike.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shorts_runtime::prelude::*;
    ///
    /// #[derive(Deserialize)]
    /// struct Input { text: String }
    ///
    /// let short = Short::builder("echo", |input: Input, _order: Order| async move {
    ///     Ok::<_, Error>(input.text)
    /// })
    /// .path("/v1/echo")
    /// .timeout(Duration::from_secs(30))
    /// .concurrency(4)
    /// .build();
    /// assert_eq!(short.path(), "/v1/echo");
    /// assert_eq!(short.timeout(), Duration::from_secs(30));
    /// assert_eq!(short.concurrency(), 4);
    /// ```
    pub fn builder<I, F, Fut, R>(name: &str, handler: F) -> ShortBuilder
    where
        I: DeserializeOwned + Send + 'static,
        F: Fn(I, Order) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
        R::Ok: IntoOutput,
        R::Err: IntoError,
    {
        ShortBuilder {
            short: Self::new(name, handler),
        }
    }

    /// The short's name (its function's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route the webhook is served at (`path`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first line of the function's documentation.
    pub fn description(&self) -> &str {
        &self.doc
    }

    /// How long one order may run (`timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many orders run at once (`concurrency`).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Every short registered with `#[ai_short]` in this binary, sorted by name.
    pub fn registered() -> Vec<Short> {
        let mut shorts: Vec<Short> = inventory::iter::<ShortDef>().map(Short::from_def).collect();
        shorts.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.location.cmp(&b.location)));
        shorts
    }

    /// The form its input type expects; an error when reading it panicked (a `Deserialize`
    /// implementation of the seller's that does not expect the stand-in values).
    pub(crate) fn read_form(&self) -> Result<form::Form, form::Unreadable> {
        std::panic::catch_unwind(self.form).map_err(|_| form::Unreadable { short: self.origin() })
    }

    /// Where the short was declared, for error messages.
    pub(crate) fn origin(&self) -> String {
        match &self.location {
            Some(location) => format!("`{}` ({location})", self.name),
            None => format!("`{}`", self.name),
        }
    }
}

/// A [`Short`] with its options being set: from [`Short::builder`]. Each setter is named as the
/// getter of [`Short`] that reads it back, and as the `#[ai_short]` option that sets it.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until it is built or given to `AppBuilder::short`"]
pub struct ShortBuilder {
    short: Short,
}

impl ShortBuilder {
    /// Serves the short at `path` instead of `/shorts/<name>`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.short.path = path.into();
        self
    }

    /// Fails an order whose handler runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.short.timeout = timeout;
        self
    }

    /// Runs at most `n` orders of this short at once; more wait their turn.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.short.concurrency = n;
        self
    }

    /// The short.
    #[must_use]
    pub fn build(self) -> Short {
        self.short
    }
}

impl From<ShortBuilder> for Short {
    fn from(builder: ShortBuilder) -> Self {
        builder.build()
    }
}

impl fmt::Debug for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Short")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A short as `#[ai_short]` registers it; built in a `const` context.
#[doc(hidden)]
pub struct ShortDef {
    pub name: &'static str,
    pub doc: &'static str,
    pub path: Option<&'static str>,
    pub timeout_ms: Option<u64>,
    pub concurrency: Option<u32>,
    pub handler: fn(Call) -> HandlerFuture,
    pub form: form::FormFn,
    pub module: &'static str,
    pub file: &'static str,
    pub line: u32,
}

inventory::collect!(ShortDef);

/// One order, as handed to a type-erased handler.
#[doc(hidden)]
pub struct Call {
    pub(crate) inputs: Option<Box<RawValue>>,
    pub(crate) order: Order,
}

/// The input type of a short: anything serde can build from the buyer's JSON inputs. Only named by
/// `#[ai_short]` expansions, to word the error when the type does not fit.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the input of an `#[ai_short]` function",
    label = "the input must implement `Deserialize`",
    note = "the buyer's inputs arrive as JSON: add `#[derive(Deserialize)]` to `{Self}`, an owned type (no references or lifetimes)"
)]
pub trait ShortInput: DeserializeOwned {}

impl<T: DeserializeOwned> ShortInput for T {}

/// Deserializes the buyer's inputs into the short's input type, naming the field that does not fit.
///
/// An input the buyer left empty may arrive as `null` or not at all: a `null` at the top level is
/// taken as absent, so that both `Option` and `#[serde(default)]` fields accept it.
#[doc(hidden)]
pub fn input<T: ShortInput>(call: &Call) -> Result<T, Error> {
    let raw = call.inputs.as_deref().map_or("{}", RawValue::get);
    let raw = if raw == "null" { "{}" } else { raw };
    // Inputs without the letters `null` anywhere (most) are read straight from the text.
    let without_nulls = if raw.contains("null") {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw)
            .ok()
            .map(|mut fields| {
                fields.retain(|_, value| !value.is_null());
                serde_json::Value::Object(fields)
            })
    } else {
        None
    };
    // Read without keeping track of where; inputs at fault are read again for the path.
    if without_nulls.is_none()
        && let Ok(input) = T::deserialize(&mut serde_json::Deserializer::from_str(raw))
    {
        return Ok(input);
    }
    let read = match without_nulls {
        Some(fields) => serde_path_to_error::deserialize(fields),
        None => serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(raw)),
    };
    read.map_err(|error| {
        let path = error.path().to_string();
        let message = without_position(&error.inner().to_string());
        let message = if path == "." {
            format!("invalid input: {message}")
        } else {
            format!("invalid input `{path}`: {message}")
        };
        Error::with_kind(ErrorKind::Input, message)
    })
}

/// serde_json appends " at line L column C", which means nothing to a buyer.
pub(crate) fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) if message[index..].contains(" column ") => message[..index].to_owned(),
        _ => message.to_owned(),
    }
}

mod sealed {
    /// Keeps [`FromCall`](super::FromCall) implemented only by the types this crate lists.
    pub trait Sealed {}

    impl Sealed for super::Order {}
}

/// Types a short may take as its second argument.
///
/// Only [`Order`](crate::Order) implements it; the trait is sealed, so it cannot be implemented
/// outside this crate.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the second argument of an `#[ai_short]` function",
    label = "expected `Order`",
    note = "the second argument, when present, is the order: `order: shorts_runtime::Order`"
)]
pub trait FromCall: sealed::Sealed {
    /// Extracts the value from the order being run.
    fn from_call(call: &Call) -> Self;
}

impl FromCall for Order {
    fn from_call(call: &Call) -> Self {
        call.order.clone()
    }
}

/// The return type of a short: a `Result` whose `Ok` is an output and whose `Err` is an error.
#[diagnostic::on_unimplemented(
    message = "`#[ai_short]` functions must return `Result<T, E>`, not `{Self}`",
    label = "expected `Result<T, E>`",
    note = "e.g. `-> shorts_runtime::Result<String>`"
)]
pub trait HandlerResult {
    /// The success value.
    type Ok;
    /// The error.
    type Err;
    /// Splits the result.
    ///
    /// # Errors
    ///
    /// Returns the handler's own error.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> HandlerResult for Result<T, E> {
    type Ok = T;
    type Err = E;

    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// Runs a `#[ai_short(blocking)]` function on tokio's blocking thread pool.
///
/// A panic in it panics the calling task again, with the same payload, so that it ends the order
/// as an `async` short's panic does (the panic hook has already run, on the blocking thread). When
/// the order's timeout ends the calling task, the function runs on, detached, until it returns.
#[doc(hidden)]
pub async fn blocking<F, R>(function: F) -> Result<R, Error>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match tokio::task::spawn_blocking(function).await {
        Ok(result) => Ok(result),
        Err(join) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down before the function started.
            Err(_cancelled) => Err(Error::with_kind(
                ErrorKind::Panic,
                "the short was cancelled before it finished".to_owned(),
            )),
        },
    }
}

#[doc(hidden)]
pub fn into_output<T: IntoOutput>(value: T) -> Result<Output, Error> {
    value.into_output()
}

#[doc(hidden)]
pub fn into_error<E: IntoError>(error: E) -> Error {
    error.into_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, Deserialize, PartialEq)]
    struct Form {
        text: String,
        #[serde(default)]
        shout: bool,
        note: Option<String>,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn call(inputs: &str) -> Call {
        Call {
            inputs: RawValue::from_string(inputs.to_owned()).ok(),
            order: Order::new("o-1", "s-1"),
        }
    }

    #[test]
    fn an_input_left_empty_is_absent_whether_null_or_missing() {
        let expected = Form {
            text: "hi".to_owned(),
            shout: false,
            note: None,
            tags: Vec::new(),
        };
        for inputs in [
            r#"{"text": "hi"}"#,
            r#"{"text": "hi", "shout": null, "note": null, "tags": null}"#,
        ] {
            assert_eq!(
                input::<Form>(&call(inputs)).ok(),
                Some(expected.clone()),
                "{inputs}"
            );
        }
        // Text that merely contains the letters is read as it is.
        let read = input::<Form>(&call(r#"{"text": "null and void", "note": "nullable"}"#)).ok();
        assert_eq!(
            read.map(|f| (f.text, f.note)),
            Some(("null and void".to_owned(), Some("nullable".to_owned())))
        );
    }

    #[test]
    fn a_required_input_left_empty_is_named() {
        for inputs in [r#"{"text": null}"#, r#"{"shout": true}"#] {
            let error = input::<Form>(&call(inputs))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(error, "invalid input: missing field `text`", "{inputs}");
        }
        let error = input::<Form>(&call(r#"{"text": "a", "shout": "yes", "note": null}"#))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "invalid input `shout`: invalid type: string \"yes\", expected a boolean"
        );
    }

    #[test]
    fn tags_and_urls_are_read_from_text_and_from_inputs_with_nulls() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Links {
            keywords: crate::Tags,
            site: crate::Url,
            more: Option<crate::Tags>,
        }
        let expected = Links {
            keywords: crate::Tags(vec!["seo".to_owned(), "ads".to_owned()]),
            site: crate::Url("https://example.com/a".to_owned()),
            more: Some(crate::Tags(vec!["x".to_owned()])),
        };
        // Without `null` the inputs are read from their text; with one, from a `Value`.
        for inputs in [
            r#"{"keywords": "seo, ads", "site": "https://example.com/a", "more": ["x"]}"#,
            r#"{"keywords": ["seo", "ads"], "site": "https://example.com/a", "more": "x", "note": null}"#,
        ] {
            let read = input::<Links>(&call(inputs));
            assert_eq!(read.ok().as_ref(), Some(&expected), "{inputs}");
        }
        let error = input::<Links>(&call(r#"{"keywords": 3, "site": "https://example.com/a"}"#))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "invalid input `keywords`: invalid type: integer `3`, expected a comma-separated string or an array of strings"
        );
        let error = input::<Links>(&call(r#"{"keywords": "a", "site": null, "more": null}"#))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(error, "invalid input: missing field `site`");
    }
}
