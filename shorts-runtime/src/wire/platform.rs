//! The platform's constants, documented and inferred, in one place.
//!
//! Items marked *inferred* are not stated in the platform's docs (protocol.md §8); each is the
//! safest reading of an example and can change here alone.

/// Header carrying the callback secret on every callback and prepare call (documented).
pub const CALLBACK_SECRET_HEADER: &str = "x-callback-secret";

/// The callback endpoint used when none is configured (documented example).
pub const DEFAULT_CALLBACK_URL: &str = "https://api.sellershorts.com/api/orders/callback";

/// Largest callback body the platform's edge accepts: "4.5 MB" (documented), read as decimal
/// megabytes, the smaller reading.
pub const CALLBACK_BODY_LIMIT: usize = 4_500_000;

/// Field of a failure callback that carries the error message. *Inferred*: the docs cut off the
/// failure example right after `"ok": false, "order_id"` (protocol.md §4.4).
pub const FAILURE_MESSAGE_FIELD: &str = "error";

/// Whether one returned file is sent with top-level `file_base64`/`filename`/`mime_type` (the
/// documented single-file form) rather than as a one-element `files` array.
pub const SINGLE_FILE_AT_TOP_LEVEL: bool = true;

/// Body of the webhook's answer. *Inferred*: the docs do not say what the platform expects.
pub const WEBHOOK_ACK_BODY: &str = r#"{"ok":true}"#;
