//! Typed helpers for the platform's input types (`docs/protocol.md` §3).
//!
//! # How inputs arrive
//!
//! The webhook's `inputs` object has one key per input of the form the seller defined in the
//! platform's Inputs step. Each input type arrives as:
//!
//! | input type | JSON in `inputs` | Rust field type |
//! | --- | --- | --- |
//! | `text`, `textarea`, `url`, `select` | a string | `String` (or a unit-only enum for `select`) |
//! | `number` | a JSON number, not a string | `f64`, `i64`, `u32`, ... |
//! | `boolean` | `true` or `false` | `bool` |
//! | `date` | a string, usually `"YYYY-MM-DD"` | `String` |
//! | `date_range` | `{"from": .., "to": ..}` or `{"start": .., "end": ..}` | [`DateRange`] |
//! | `multiselect` | an array of strings | `Vec<String>` |
//! | `tags` | a comma-separated string (`"seo, ads"`), possibly an array | [`Tags`] |
//! | `file_*` (`file_pdf`, `file_csv`, `file_image`, ...) | an array of file objects, even for one file | `Vec<FileInput>` |
//!
//! An optional input the buyer left empty may be absent or `null`; both are read as absent, so make
//! its field an `Option` or give it `#[serde(default)]`.
//!
//! Use the helpers as field types of a short's input struct:
//!
//! ```
//! use shorts_runtime::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Input {
//!     keywords: Tags,
//!     period: DateRange,
//!     #[serde(default)]
//!     upload_document: Vec<FileInput>,
//! }
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// One uploaded file of a `file_*` input. The platform sends a file input as an array, even for
/// one file, so the field type is `Vec<FileInput>`.
///
/// On the wire, each file is an object with its content inline as base64:
///
/// ```json
/// "upload_document": [
///   { "filename": "report.pdf", "mime_type": "application/pdf", "size_bytes": 524288,
///     "file_base64": "JVBERi0xLjQK..." }
/// ]
/// ```
///
/// `mime_type` and `size_bytes` may be missing. The base64 may lack padding, contain line breaks,
/// or start with a `data:...;base64,` prefix: [`FileInput::bytes`] accepts all of these.
///
/// `FileInput` serializes to the same shape, so a test can put one in the inputs it sends:
///
/// ```
/// use shorts_runtime::FileInput;
///
/// let file = FileInput::new("notes.txt", "text/plain", b"hello");
/// let inputs = serde_json::json!({ "upload_document": [file] });
/// assert_eq!(inputs["upload_document"][0]["file_base64"], "aGVsbG8=");
/// assert_eq!(inputs["upload_document"][0]["size_bytes"], 5);
/// ```
#[derive(Clone, Deserialize, Serialize)]
pub struct FileInput {
    /// The name the buyer uploaded.
    pub filename: String,
    /// The MIME type the platform reported.
    #[serde(default)]
    pub mime_type: String,
    /// The size the platform declared, in bytes.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    file_base64: String,
}

/// Why a [`FileInput`]'s contents could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileInputError {
    /// The content is not valid base64.
    #[error("the uploaded file `{filename}` is not valid base64: {source}")]
    Base64 {
        /// The file's name.
        filename: String,
        /// What the decoder found.
        source: base64::DecodeError,
    },
    /// The decoded size differs from `size_bytes`.
    #[error("the uploaded file `{filename}` has {actual} bytes, but its declared size is {declared}")]
    Size {
        /// The file's name.
        filename: String,
        /// `size_bytes` as sent.
        declared: u64,
        /// The decoded length.
        actual: u64,
    },
}

/// Standard alphabet, padding optional: the docs do not say which the platform sends.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl FileInput {
    /// Creates a file input, as the platform would send it (useful in tests).
    pub fn new(filename: impl Into<String>, mime_type: impl Into<String>, contents: &[u8]) -> Self {
        Self {
            filename: filename.into(),
            mime_type: mime_type.into(),
            size_bytes: Some(contents.len() as u64),
            file_base64: base64::engine::general_purpose::STANDARD.encode(contents),
        }
    }

    /// Decodes the contents and checks them against the declared size. Each call decodes anew, so
    /// keep the result rather than calling it twice.
    ///
    /// # Errors
    ///
    /// When the content is not base64, or its decoded length differs from `size_bytes`.
    pub fn bytes(&self) -> Result<Vec<u8>, FileInputError> {
        let encoded = self.encoded();
        let decoded = if encoded.bytes().any(|b| b.is_ascii_whitespace()) {
            let compact: Vec<u8> = encoded.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            LENIENT.decode(compact)
        } else {
            LENIENT.decode(encoded)
        }
        .map_err(|source| FileInputError::Base64 {
            filename: self.filename.clone(),
            source,
        })?;
        if let Some(declared) = self.size_bytes
            && declared != decoded.len() as u64
        {
            return Err(FileInputError::Size {
                filename: self.filename.clone(),
                declared,
                actual: decoded.len() as u64,
            });
        }
        Ok(decoded)
    }

    /// The base64 text as received, without a `data:...;base64,` prefix if one was sent.
    pub fn encoded(&self) -> &str {
        match self.file_base64.split_once(";base64,") {
            Some((prefix, rest)) if prefix.starts_with("data:") => rest,
            _ => &self.file_base64,
        }
    }
}

impl fmt::Debug for FileInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileInput")
            .field("filename", &self.filename)
            .field("mime_type", &self.mime_type)
            .field("size_bytes", &self.size_bytes)
            .field("base64_len", &self.file_base64.len())
            .finish()
    }
}

/// A `date_range` input. The platform's docs show both `{"from": "2024-01-01", "to": "2024-01-31"}`
/// and `start`/`end`; both are accepted. Dates are kept as the strings sent (usually `YYYY-MM-DD`).
/// It serializes as `{"start": .., "end": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DateRange {
    /// The first day (`start` or `from`).
    #[serde(alias = "from")]
    pub start: String,
    /// The last day (`end` or `to`).
    #[serde(alias = "to")]
    pub end: String,
}

/// A `tags` input: a comma-separated string (`"selling, seo"`) or an array of strings, trimmed,
/// empty entries dropped; `null` is no tags. It serializes as an array, and reads as a slice:
///
/// ```
/// use shorts_runtime::Tags;
///
/// let tags: Tags = serde_json::from_str(r#""selling, seo ,, ads""#).unwrap();
/// assert_eq!(tags.len(), 3);
/// assert!(tags.contains(&"seo".to_owned()));
/// let upper: Vec<String> = tags.into_iter().map(|t| t.to_uppercase()).collect();
/// assert_eq!(upper, ["SELLING", "SEO", "ADS"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tags(pub Vec<String>);

impl Tags {
    /// The tags, in order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl std::ops::Deref for Tags {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl IntoIterator for Tags {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor;

        fn push(tags: &mut Vec<String>, tag: &str) {
            let tag = tag.trim();
            if !tag.is_empty() {
                tags.push(tag.to_owned());
            }
        }

        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = Tags;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a comma-separated string or an array of strings")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tags, D::Error> {
                deserializer.deserialize_any(self)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Tags, E> {
                let mut tags = Vec::new();
                for tag in value.split(',') {
                    push(&mut tags, tag);
                }
                Ok(Tags(tags))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tags, A::Error> {
                let mut tags = Vec::new();
                while let Some(tag) = seq.next_element::<String>()? {
                    push(&mut tags, &tag);
                }
                Ok(Tags(tags))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Tags, E> {
                Ok(Tags::default())
            }

            fn visit_none<E: de::Error>(self) -> Result<Tags, E> {
                Ok(Tags::default())
            }
        }

        // Asked for as a newtype named `Tags`, which JSON passes through, so that `form` can
        // tell a `tags` input from any other.
        deserializer.deserialize_newtype_struct("Tags", TagsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_from_a_string_or_an_array() {
        let from_string: Tags =
            serde_json::from_value(json!("selling, seo ,, optimization")).unwrap_or_default();
        assert_eq!(from_string.0, ["selling", "seo", "optimization"]);
        let from_array: Tags = serde_json::from_value(json!([" a", "b", ""])).unwrap_or_default();
        assert_eq!(from_array.0, ["a", "b"]);
        assert!(serde_json::from_value::<Tags>(json!(5)).is_err());
    }

    #[test]
    fn date_range_from_either_key_pair() {
        let a: DateRange = serde_json::from_value(json!({"from": "2024-01-01", "to": "2024-01-31"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let b: DateRange = serde_json::from_value(json!({"start": "2024-01-01", "end": "2024-01-31"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert!(serde_json::from_value::<DateRange>(json!({"from": "2024-01-01"})).is_err());
    }

    #[test]
    fn file_input_decodes_leniently_and_checks_the_size() {
        let file = FileInput::new("a.txt", "text/plain", b"hello world");
        assert_eq!(file.bytes().ok().as_deref(), Some(&b"hello world"[..]));

        let unpadded: FileInput = serde_json::from_value(json!({
            "filename": "a.txt", "mime_type": "text/plain", "size_bytes": 11,
            "file_base64": "aGVsbG8g\nd29ybGQ"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unpadded.bytes().ok().as_deref(), Some(&b"hello world"[..]));

        let lying: FileInput = serde_json::from_value(json!({
            "filename": "a.txt", "size_bytes": 12, "file_base64": "aGVsbG8gd29ybGQ="
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let error = lying.bytes().err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            error,
            "the uploaded file `a.txt` has 11 bytes, but its declared size is 12"
        );

        let broken: FileInput = serde_json::from_value(json!({"filename": "b.bin", "file_base64": "!!!"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(broken.bytes(), Err(FileInputError::Base64 { .. })));

        let data_url: FileInput = serde_json::from_value(json!({
            "filename": "c.txt", "file_base64": "data:text/plain;base64,aGk="
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(data_url.bytes().ok().as_deref(), Some(&b"hi"[..]));
    }

    mod properties {
        use super::super::*;
        use crate::wire::arbitrary::json;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        use proptest::prelude::*;
        use serde_json::{Value, json};

        /// Reads every helper from `body`; none may panic, whatever it holds.
        fn read_all(body: &[u8]) {
            if let Ok(file) = serde_json::from_slice::<FileInput>(body) {
                let _ = file.bytes();
            }
            if let Ok(files) = serde_json::from_slice::<Vec<FileInput>>(body) {
                files.iter().for_each(|file| drop(file.bytes()));
            }
            let _ = serde_json::from_slice::<DateRange>(body);
            let _ = serde_json::from_slice::<Tags>(body);
        }

        /// Base64 text as a platform might send it: with or without padding, wrapped in lines,
        /// or as a data URL.
        fn sent(contents: &[u8], padded: bool, line: usize, data_url: bool) -> String {
            let text = if padded {
                STANDARD.encode(contents)
            } else {
                STANDARD_NO_PAD.encode(contents)
            };
            let wrapped: Vec<String> = text
                .as_bytes()
                .chunks(line)
                .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                .collect();
            let text = wrapped.join("\r\n");
            if data_url {
                format!("data:application/octet-stream;base64,{text}")
            } else {
                text
            }
        }

        fn tags(parts: impl IntoIterator<Item = String>) -> Vec<String> {
            parts
                .into_iter()
                .map(|tag| tag.trim().to_owned())
                .filter(|tag| !tag.is_empty())
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                read_all(&bytes);
            }

            #[test]
            fn arbitrary_json_never_panics(value in json()) {
                read_all(&serde_json::to_vec(&value).unwrap_or_default());
            }

            #[test]
            fn arbitrary_base64_text_never_panics_and_decodes_canonically(
                text in prop_oneof![any::<String>(), "(data:[a-z/]{0,8};base64,)?[A-Za-z0-9+/=\\s]{0,40}"],
                declared in prop::option::of(0u64..32),
            ) {
                let file: FileInput = serde_json::from_value(
                    json!({"filename": "f", "size_bytes": declared, "file_base64": text}),
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                match file.bytes() {
                    Ok(bytes) => {
                        prop_assert!(declared.is_none_or(|d| d == bytes.len() as u64));
                        let compact: String =
                            file.encoded().chars().filter(|c| !c.is_ascii_whitespace()).collect();
                        prop_assert_eq!(STANDARD_NO_PAD.encode(&bytes), compact.trim_end_matches('='));
                    }
                    Err(FileInputError::Size { declared: d, actual, .. }) => {
                        prop_assert_eq!(Some(d), declared);
                        prop_assert_ne!(d, actual);
                    }
                    Err(FileInputError::Base64 { .. }) => {}
                }
            }

            #[test]
            fn a_file_sent_in_any_accepted_form_decodes_to_its_contents(
                contents in prop::collection::vec(any::<u8>(), 0..512),
                padded in any::<bool>(),
                line in 1usize..100,
                data_url in any::<bool>(),
                declare in any::<bool>(),
            ) {
                prop_assert_eq!(FileInput::new("f", "x/y", &contents).bytes().ok(), Some(contents.clone()));
                let file: FileInput = serde_json::from_value(json!({
                    "filename": "f",
                    "size_bytes": declare.then_some(contents.len()),
                    "file_base64": sent(&contents, padded, line, data_url),
                }))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(file.bytes().ok(), Some(contents));
            }

            #[test]
            fn tags_split_trim_and_drop_empty_entries(
                parts in prop::collection::vec("[^,]{0,12}", 0..8),
            ) {
                let joined: Tags = serde_json::from_value(Value::from(parts.join(",")))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&joined.0, &tags(parts.clone()));
                let listed: Tags = serde_json::from_value(Value::from(parts.clone()))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(listed.0, tags(parts));
            }

            #[test]
            fn a_date_range_reads_either_key_pair(start in any::<String>(), end in any::<String>()) {
                let a: DateRange = serde_json::from_value(json!({"from": start, "to": end}))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let b: DateRange = serde_json::from_value(json!({"start": start, "end": end}))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&a, &b);
                prop_assert_eq!((a.start, a.end), (start, end));
            }
        }
    }
}
