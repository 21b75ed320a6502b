//! Why a result could not be delivered as rendered: each message becomes the `error` of the
//! order's `ok: false` callback, so none quotes a signed URL.

use std::io;

use http::StatusCode;

/// Why files could not be read, sent inline, or uploaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// A file could not be read (or its size found).
    #[error("the file `{name}` could not be read: {error}")]
    FileUnreadable { name: String, error: io::Error },
    /// The files of an inline callback could not be read.
    #[error("the files could not be read: {0}")]
    FilesUnreadable(io::Error),
    /// A file changed size between the plan and the upload: every attempt would fail.
    #[error("the file `{name}` changed size from {planned} to {now} bytes before it was sent")]
    FileChanged { name: String, planned: u64, now: u64 },
    /// A file is larger than the slot the platform prepared for it.
    #[error("the file `{name}` is {size} bytes, more than the {max} bytes the platform accepts")]
    FileTooLarge { name: String, size: u64, max: u64 },
    /// The prepare request could not be encoded.
    #[error("the upload of `{name}` could not be prepared: {error}")]
    PrepareEncoding { name: String, error: serde_json::Error },
    /// The platform refused to prepare an upload, with this status.
    #[error("the platform refused to prepare the upload of `{name}` ({status}): {detail}")]
    PrepareRefused {
        name: String,
        status: StatusCode,
        detail: String,
    },
    /// The platform answered the prepare request with `"ok": false`.
    #[error("the platform refused to prepare the upload of `{name}`")]
    PrepareDeclined { name: String },
    /// The platform's answer to a prepare request cannot be used.
    #[error("the platform's answer to preparing `{name}` is unusable: {why}")]
    PrepareUnusable { name: String, why: Unusable },
    /// Every attempt to prepare an upload failed.
    #[error("the upload of `{name}` could not be prepared: {last}")]
    PrepareExhausted { name: String, last: String },
    /// The storage refused a file for good.
    #[error("the platform's storage refused `{name}` ({status}): {detail}")]
    StorageRefused {
        name: String,
        status: StatusCode,
        detail: String,
    },
    /// The storage kept refusing the upload URLs (403), fresh ones included.
    #[error("the platform's storage refused `{name}` after {urls} fresh upload URLs: {reason}")]
    StorageRefusedUrls { name: String, urls: u32, reason: String },
    /// Every attempt to upload a file failed.
    #[error("the upload of `{name}` failed: {last}")]
    UploadExhausted { name: String, last: String },
}

/// What is wrong with a prepare answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    /// Not the documented JSON.
    #[error("{0}")]
    Json(serde_json::Error),
    /// `upload_url` is not a URL.
    #[error("`upload_url`: {0}")]
    Url(url::ParseError),
    /// `upload_url` is plain http while the platform is https.
    #[error("`upload_url` is not https (plain http is used only when SHORTS_CALLBACK_URL is http)")]
    PlainHttp,
    /// `upload_url` is neither https nor http.
    #[error("`upload_url` is not an https URL")]
    NotHttps,
    /// A required header's name is not a header name.
    #[error("`{0}` is not a header name")]
    HeaderName(String),
    /// A required header's value is not a header value.
    #[error("the value of `{0}`")]
    HeaderValue(String),
}
