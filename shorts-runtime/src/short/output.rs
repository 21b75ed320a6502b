//! What a short returns, and how it maps onto the platform's `output_type`s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::error::{Error, ErrorKind};

/// A finished result, one variant per v1 `output_type` of the callback.
///
/// Handlers usually return one of the wrapper types (`String`, [`Html`], [`Json`], [`Csv`], [`Url`],
/// [`File`], `Vec<File>`) and let the framework build this.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Output {
    /// `output_type: "text"`.
    Text(String),
    /// `output_type: "html"`, inline. Newer platform docs prefer hosting the page and returning a [`Url`].
    Html(String),
    /// `output_type: "json"`: the serialized JSON, sent as the *string* `result_text`.
    Json(String),
    /// `output_type: "csv"`.
    Csv(String),
    /// `output_type: "url"`: a hosted result.
    Url(String),
    /// `output_type: "file"`: one file, or several as a `files` array.
    Files(Vec<File>),
}

impl Output {
    /// Serializes `value` into a JSON output.
    ///
    /// # Errors
    ///
    /// When `value` cannot be serialized (e.g. a map with non-string keys).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_string(value)
            .map(Output::Json)
            .map_err(|e| Error::with_kind(ErrorKind::Output, format!("the output is not valid JSON: {e}")))
    }

    /// The `output_type` this output is sent as.
    pub fn output_type(&self) -> &'static str {
        match self {
            Output::Text(_) => "text",
            Output::Html(_) => "html",
            Output::Json(_) => "json",
            Output::Csv(_) => "csv",
            Output::Url(_) => "url",
            Output::Files(_) => "file",
        }
    }
}

/// An HTML page sent inline (`output_type: "html"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Html(pub String);

/// A value sent as JSON (`output_type: "json"`); the platform receives it serialized as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// CSV text (`output_type: "csv"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csv(pub String);

/// The address of a hosted result (`output_type: "url"`).
///
/// It is also the field type of a `url` input: the buyer's URL as the platform sent it (the
/// platform checks its form), and `form` then names the input `url`, not `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url(pub String);

impl<'de> serde::Deserialize<'de> for Url {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UrlVisitor;

        impl<'de> serde::de::Visitor<'de> for UrlVisitor {
            type Value = Url;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL")
            }

            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Url, D::Error> {
                <String as serde::Deserialize>::deserialize(deserializer).map(Url)
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Url, E> {
                Ok(Url(value.to_owned()))
            }
        }

        // Asked for as a newtype named `Url`, which JSON passes through, so that `form` can tell
        // a `url` input from a `text` one.
        deserializer.deserialize_newtype_struct("Url", UrlVisitor)
    }
}

/// A file returned to the buyer: bytes in memory, or a file on disk read only when it is sent.
///
/// However large, a file is never held in memory by the framework: files that fit in a callback are
/// base64-encoded as a stream into its body, larger ones are streamed to the platform's storage.
#[derive(Clone)]
pub struct File {
    name: String,
    mime: String,
    pub(crate) source: Source,
}

/// Where a file's bytes are.
#[derive(Clone)]
pub(crate) enum Source {
    Bytes(Bytes),
    Path(PathBuf, Option<Arc<TempFile>>),
}

/// Deletes a temporary file once the last [`File`] naming it is gone.
pub(crate) struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        // Already gone is fine; anything else is worth a line in the log.
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "could not delete a temporary file");
        }
    }
}

fn guess_mime(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

impl File {
    /// A file from bytes in memory, with its name and MIME type.
    pub fn from_bytes(name: impl Into<String>, mime: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            mime: mime.into(),
            source: Source::Bytes(bytes.into()),
        }
    }

    /// A file from bytes in memory, its MIME type guessed from the name's extension
    /// (`application/octet-stream` when unknown).
    pub fn new(name: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        let name = name.into();
        let mime = guess_mime(&name);
        Self::from_bytes(name, mime, bytes)
    }

    /// A file on disk, named after the path's last component, its MIME type guessed from the
    /// extension. Nothing is read until the file is sent; it is then streamed, never loaded whole.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mime = guess_mime(&name);
        Self {
            name,
            mime,
            source: Source::Path(path, None),
        }
    }

    /// As [`File::from_path`], for a file the handler wrote only to return it: the file is deleted
    /// once it has been delivered (or the order is over).
    pub fn from_temp_path(path: impl Into<PathBuf>) -> Self {
        let mut file = Self::from_path(path);
        if let Source::Path(path, temp) = &mut file.source {
            *temp = Some(Arc::new(TempFile(path.clone())));
        }
        file
    }

    /// Replaces the name the buyer sees.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replaces the MIME type.
    #[must_use]
    pub fn with_mime(mut self, mime: impl Into<String>) -> Self {
        self.mime = mime.into();
        self
    }

    /// The file name the buyer sees.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MIME type.
    pub fn mime(&self) -> &str {
        &self.mime
    }

    /// The path of a file on disk; `None` for bytes in memory.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::Bytes(_) => None,
            Source::Path(path, _) => Some(path),
        }
    }

    /// The size in bytes (read from disk for a file on disk).
    ///
    /// # Errors
    ///
    /// When a file on disk cannot be inspected.
    pub async fn size(&self) -> std::io::Result<u64> {
        match &self.source {
            Source::Bytes(bytes) => Ok(bytes.len() as u64),
            Source::Path(path, _) => Ok(tokio::fs::metadata(path).await?.len()),
        }
    }

    /// The whole contents, in memory (meant for tests of small files).
    ///
    /// # Errors
    ///
    /// When a file on disk cannot be read.
    pub async fn read(&self) -> std::io::Result<Bytes> {
        match &self.source {
            Source::Bytes(bytes) => Ok(bytes.clone()),
            Source::Path(path, _) => tokio::fs::read(path).await.map(Bytes::from),
        }
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("File");
        debug.field("name", &self.name).field("mime", &self.mime);
        match &self.source {
            Source::Bytes(bytes) => debug.field("len", &bytes.len()),
            Source::Path(path, temp) => debug.field("path", path).field("temporary", &temp.is_some()),
        };
        debug.finish()
    }
}

/// Turns a short's success value into an [`Output`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the output of an AI Short",
    label = "not an output",
    note = "return `String` (text), `Html`, `Json<T>`, `Csv`, `Url`, `File`, `Vec<File>` or `Output`"
)]
pub trait IntoOutput {
    /// Performs the conversion.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented, e.g. a `Json<T>` that fails to serialize or an empty
    /// `Vec<File>`.
    fn into_output(self) -> Result<Output, Error>;
}

impl IntoOutput for Output {
    fn into_output(self) -> Result<Output, Error> {
        match &self {
            Output::Files(files) if files.is_empty() => Err(no_files()),
            _ => Ok(self),
        }
    }
}

impl IntoOutput for String {
    fn into_output(self) -> Result<Output, Error> {
        Ok(Output::Text(self))
    }
}

impl IntoOutput for &'static str {
    fn into_output(self) -> Result<Output, Error> {
        Ok(Output::Text(self.to_owned()))
    }
}

impl IntoOutput for Html {
    fn into_output(self) -> Result<Output, Error> {
        Ok(Output::Html(self.0))
    }
}

impl IntoOutput for Csv {
    fn into_output(self) -> Result<Output, Error> {
        Ok(Output::Csv(self.0))
    }
}

impl IntoOutput for Url {
    fn into_output(self) -> Result<Output, Error> {
        Ok(Output::Url(self.0))
    }
}

impl<T: Serialize> IntoOutput for Json<T> {
    fn into_output(self) -> Result<Output, Error> {
        Output::json(&self.0)
    }
}

impl IntoOutput for serde_json::Value {
    fn into_output(self) -> Result<Output, Error> {
        Output::json(&self)
    }
}

impl IntoOutput for File {
    fn into_output(self) -> Result<Output, Error> {
        Ok(Output::Files(vec![self]))
    }
}

impl IntoOutput for Vec<File> {
    fn into_output(self) -> Result<Output, Error> {
        Output::Files(self).into_output()
    }
}

fn no_files() -> Error {
    Error::with_kind(ErrorKind::Output, "the short returned no files".to_owned())
}
