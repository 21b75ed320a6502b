//! The error a short returns, and how any error becomes one.

use std::error::Error as StdError;
use std::fmt;

/// `Result<T, shorts_runtime::Error>`, the usual return type of a short.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why an order failed. Its message ([`Error::message`]) is what the platform receives in the
/// `ok: false` callback; the chain of sources behind it is written to the logs only.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into it, so `?` works on the errors of
/// other crates. Like `anyhow::Error`, it does not implement `std::error::Error` itself, which is
/// what makes that blanket conversion possible.
///
/// A message of your own is [`Error::msg`]. `&str` and `String` do not convert into `Error`
/// (`"...".into()` and `?` on them do not compile: the blanket conversion above rules out a second
/// one for them, since the standard library may one day make them errors), but a short may return
/// them as its error type, `Result<T, String>` or `Result<T, &'static str>` (see [`IntoError`]):
///
/// ```
/// use shorts_runtime::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Input { text: String }
///
/// #[ai_short]
/// async fn not_empty(input: Input) -> Result<String> {
///     if input.text.is_empty() {
///         return Err(Error::msg("the text is empty"));
///     }
///     let n: u32 = input.text.parse()?; // any `std::error::Error`
///     Ok(format!("{}", n + 1))
/// }
///
/// #[ai_short]
/// async fn with_a_string_error(input: Input) -> Result<String, String> {
///     if input.text.is_empty() {
///         return Err(format!("the text is empty ({} bytes)", input.text.len()));
///     }
///     Ok(input.text)
/// }
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The short's function returned an error.
    Handler,
    /// The buyer's inputs did not fit the short's input type.
    Input,
    /// The function ran past its timeout.
    Timeout,
    /// The function panicked.
    Panic,
    /// The function's output could not be turned into a callback.
    Output,
}

impl Error {
    /// An error with this message, sent to the platform as is.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::with_kind(ErrorKind::Handler, message.to_string())
    }

    /// Wraps any error: its `Display` becomes the message, the error itself the logged source.
    pub fn new<E>(error: E) -> Self
    where
        E: StdError + Send + Sync + 'static,
    {
        Self::from_boxed(Box::new(error))
    }

    pub(crate) fn with_kind(kind: ErrorKind, message: String) -> Self {
        Self {
            kind,
            message,
            source: None,
        }
    }

    pub(crate) fn from_boxed(error: BoxError) -> Self {
        match error.downcast::<ErrorBox>() {
            Ok(ours) => ours.0,
            Err(error) => Self {
                kind: ErrorKind::Handler,
                message: error.to_string(),
                source: Some(error),
            },
        }
    }

    /// The message sent to the platform.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The causes behind the message, outermost first, for the logs.
    pub(crate) fn chain(&self) -> String {
        let mut chain = String::new();
        let mut next = self.source.as_deref().and_then(|e| e.source());
        while let Some(cause) = next {
            if !chain.is_empty() {
                chain.push_str(": ");
            }
            chain.push_str(&cause.to_string());
            next = cause.source();
        }
        chain
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl<E> From<E> for Error
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

/// Carries an [`Error`] through a `Box<dyn std::error::Error>` and back unchanged.
struct ErrorBox(Error);

impl fmt::Debug for ErrorBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ErrorBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl StdError for ErrorBox {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<Error> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: Error) -> Self {
        Box::new(ErrorBox(error))
    }
}

/// Converts a short's error type (the `E` of the `Result<T, E>` it returns) into an [`Error`]:
/// anything that converts into `Box<dyn std::error::Error + Send + Sync>` does (every standard
/// error, `String`, `&'static str`, `anyhow::Error`, and [`Error`] itself). This is not `From`:
/// inside a function returning `Result<T>` (that is, `Result<T, Error>`), write
/// `Error::msg("...")` rather than `"...".into()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of an AI Short",
    label = "this error type cannot be reported to the platform",
    note = "use `shorts_runtime::Error`, or any type implementing `std::error::Error + Send + Sync + 'static`"
)]
pub trait IntoError {
    /// Performs the conversion.
    fn into_error(self) -> Error;
}

impl<E> IntoError for E
where
    E: Into<BoxError>,
{
    fn into_error(self) -> Error {
        Error::from_boxed(self.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not render the report")]
    struct Render(#[source] std::io::Error);

    #[test]
    fn the_message_is_the_outer_error_and_the_chain_is_kept() {
        let error = Error::from(Render(std::io::Error::other("disk full")));
        assert_eq!(error.message(), "could not render the report");
        assert_eq!(error.chain(), "disk full");
        assert_eq!(error.kind(), ErrorKind::Handler);
    }

    #[test]
    fn errors_of_every_shape_convert() {
        assert_eq!("plain".into_error().message(), "plain");
        assert_eq!(String::from("owned").into_error().message(), "owned");
        let ours = Error::with_kind(ErrorKind::Input, "bad input".into());
        let back = ours.into_error();
        assert_eq!(back.kind(), ErrorKind::Input);
        assert_eq!(back.message(), "bad input");
    }
}
