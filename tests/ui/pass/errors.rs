//! Error types a short may return: the runtime's, any standard error, `String`, `&'static str`, a boxed error.

use std::fmt;

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

/// An error written by hand, the way `thiserror` would write it.
#[derive(Debug)]
enum ReportError {
    Empty,
    Io(std::io::Error),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Empty => f.write_str("the text is empty"),
            ReportError::Io(_) => f.write_str("could not read the text"),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Empty => None,
            ReportError::Io(error) => Some(error),
        }
    }
}

fn check(text: &str) -> std::result::Result<(), ReportError> {
    if text.is_empty() {
        return Err(ReportError::Empty);
    }
    Ok(())
}

#[ai_short]
async fn ours(input: Input) -> Result<String, Error> {
    if input.text.is_empty() {
        return Err(Error::msg("the text is empty"));
    }
    // `?` converts any standard error into `shorts_runtime::Error`.
    check(&input.text)?;
    Ok(input.text)
}

#[ai_short]
async fn std_error(input: Input) -> Result<String, ReportError> {
    if input.text == "io" {
        return Err(ReportError::Io(std::io::Error::other("disk full")));
    }
    check(&input.text)?;
    Ok(input.text)
}

#[ai_short]
async fn string(input: Input) -> Result<String, String> {
    check(&input.text).map_err(|e| e.to_string())?;
    Ok(input.text)
}

#[ai_short]
async fn static_str(input: Input) -> Result<String, &'static str> {
    check(&input.text).map_err(|_| "the text is empty")?;
    Ok(input.text)
}

#[ai_short]
async fn boxed(input: Input) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    check(&input.text)?;
    Ok(input.text)
}

#[ai_short]
async fn io(input: Input) -> std::io::Result<String> {
    Ok(input.text)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let empty = || Input { text: String::new() };
    assert_eq!(
        ours(empty())
            .await
            .err()
            .map(|e| e.message().to_owned())
            .as_deref(),
        Some("the text is empty")
    );
    assert!(matches!(std_error(empty()).await, Err(ReportError::Empty)));
    assert_eq!(string(empty()).await.err().as_deref(), Some("the text is empty"));
    assert_eq!(static_str(empty()).await.err(), Some("the text is empty"));
    assert!(boxed(empty()).await.is_err());
    assert!(io(empty()).await.is_ok());
    assert_eq!(Short::registered().len(), 6);
}
