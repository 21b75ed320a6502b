//! Any text as a `file_*` input's base64, with or without a declared size: `FileInput::bytes`
//! answers, never panics, and what it decodes encodes back to the text it was given.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use shorts_runtime::{FileInput, FileInputError};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the declared size: none, or the next two bytes.
    let (declared, text) = match data {
        [flag, a, b, rest @ ..] if flag & 1 == 1 => (Some(u64::from(u16::from_le_bytes([*a, *b]))), rest),
        [_, rest @ ..] => (None, rest),
        [] => (None, data),
    };
    let text = String::from_utf8_lossy(text);
    let input = serde_json::json!({
        "filename": "f.bin",
        "size_bytes": declared,
        "file_base64": text,
    });
    let Ok(file) = serde_json::from_value::<FileInput>(input) else {
        panic!("a well-formed file input was refused");
    };
    match file.bytes() {
        Ok(bytes) => {
            if let Some(declared) = declared {
                assert_eq!(declared, bytes.len() as u64);
            }
            let compact: String = file
                .encoded()
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let again = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
            assert_eq!(again, compact.trim_end_matches('='), "decoding is not canonical");
        }
        Err(FileInputError::Size {
            declared: d, actual, ..
        }) => {
            assert_eq!(Some(d), declared);
            assert_ne!(d, actual);
        }
        Err(_) => {}
    }
});
