//! The platform's constants, documented and inferred, in one place.
//!
//! Items marked *inferred* are not stated in the platform's docs (`docs/protocol.md` §8); each is the
//! safest reading of an example and can change here alone.

/// Header carrying the callback secret on every callback and prepare call (documented).
pub(crate) const CALLBACK_SECRET_HEADER: &str = "x-callback-secret";

/// The callback endpoint used when none is configured (documented example).
pub(crate) const DEFAULT_CALLBACK_URL: &str = "https://api.sellershorts.com/api/orders/callback";

/// Largest callback body the platform's edge accepts: "4.5 MB" (documented), read as decimal
/// megabytes, the smaller reading.
pub(crate) const CALLBACK_BODY_LIMIT: usize = 4_500_000;

/// Default largest callback body sent inline: 50 kB (about 1 %) under [`CALLBACK_BODY_LIMIT`].
/// The docs give the limit loosely ("4.5 MB", enforced "at our API edge"); the margin covers an
/// edge that counts a little more than our body (a wrapper, a re-encoding), so a body near the
/// limit goes through direct upload instead of meeting a 413. It still lets a 3.3 MB file (the
/// largest the docs expect inline) go inline: its body is about 4,400,200 bytes.
pub(crate) const DEFAULT_INLINE_LIMIT: u64 = CALLBACK_BODY_LIMIT as u64 - 50_000;

/// Appended to the callback URL's path to reach the prepare endpoint of direct upload. *Inferred*:
/// the docs show the path `/api/orders/callback/prepare` but not its host (`docs/protocol.md` §5.1).
pub(crate) const PREPARE_PATH_SUFFIX: &str = "/prepare";

/// Field of a failure callback that carries the error message. *Inferred*: the docs cut off the
/// failure example right after `"ok": false, "order_id"` (`docs/protocol.md` §4.4).
pub(crate) const FAILURE_MESSAGE_FIELD: &str = "error";

/// Whether one returned file is sent with top-level `file_base64`/`filename`/`mime_type` (the
/// documented single-file form) rather than as a one-element `files` array.
pub(crate) const SINGLE_FILE_AT_TOP_LEVEL: bool = true;

/// Body of the webhook's answer. *Inferred*: the docs do not say what the platform expects.
pub(crate) const WEBHOOK_ACK_BODY: &str = r#"{"ok":true}"#;
