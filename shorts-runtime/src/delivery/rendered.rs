//! A rendered callback: the body to send, and what to send instead when the platform refuses it
//! as too large (413).

use bytes::Bytes;

use crate::short::output::File;
use crate::wire::callback;

/// The failure sent when a result is larger than the platform takes and cannot be uploaded.
pub(super) const TOO_LARGE_MESSAGE: &str = "the result is larger than the platform accepts in a callback";

/// A callback body ready to send, with its fallback for a 413.
pub(crate) struct Rendered {
    body: Bytes,
    /// `None` for a body read back from the store or a text result: a 413 reads it from the body.
    fallback: Option<Fallback>,
}

/// What replaces a callback body the platform refused as too large.
pub(super) enum Fallback {
    /// Upload the files the body carries inline, or its text result as a file (with their sizes),
    /// and list them instead.
    Upload(Vec<(File, u64)>),
    /// Send a failure saying that the result is too large.
    Fail,
    /// Nothing smaller can be sent: the body is a failure already.
    GiveUp,
}

impl Rendered {
    /// A body with its fallback.
    pub(super) fn new(body: impl Into<Bytes>, fallback: Fallback) -> Self {
        Self {
            body: body.into(),
            fallback: Some(fallback),
        }
    }

    /// A failure callback for `order_id`: nothing smaller replaces it.
    pub(super) fn failure(order_id: &str, message: &str) -> Self {
        Self::new(callback::failure(order_id, message), Fallback::GiveUp)
    }

    /// A body whose fallback is read from the body itself if a 413 needs it: a stored body, or a
    /// text result, which is then not held twice while its callback is sent.
    pub(crate) fn read_back(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            fallback: None,
        }
    }

    /// The body to store and send.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }

    /// The fallback, once a 413 needs it. A read-back body's is read from the body: the files it
    /// carries inline or its text as a file, else a failure unless it is one already.
    pub(super) fn into_fallback(self) -> Fallback {
        if let Some(fallback) = self.fallback {
            return fallback;
        }
        match callback::inline_files(&self.body) {
            Some(files) => Fallback::Upload(files),
            None if callback::is_failure(&self.body) => Fallback::GiveUp,
            None => Fallback::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallback_of_stored(body: &[u8]) -> Fallback {
        Rendered::read_back(Bytes::copy_from_slice(body)).into_fallback()
    }

    #[test]
    fn a_stored_body_carrying_files_inline_falls_back_to_uploading_them() {
        let body = br#"{"ok":true,"order_id":"o","output_type":"file","filename":"a.txt","mime_type":"text/plain","file_base64":"aGk="}"#;
        let Fallback::Upload(files) = fallback_of_stored(body) else {
            panic!("the inline file is uploaded");
        };
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0.name(), "a.txt");
        assert_eq!(files[0].1, 2);
    }

    #[test]
    fn a_stored_failure_has_nothing_smaller_a_url_falls_back_to_a_failure_and_a_text_to_its_file() {
        assert!(matches!(
            fallback_of_stored(&callback::failure("o", "boom")),
            Fallback::GiveUp
        ));
        assert!(matches!(
            fallback_of_stored(&callback::content("o", "url", "result_url", "https://x.test/")),
            Fallback::Fail
        ));
        let Fallback::Upload(files) =
            fallback_of_stored(&callback::content("o", "text", "result_text", "hi"))
        else {
            panic!("a stored text is uploaded as a file");
        };
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].0.name(), files[0].1), ("result.txt", 2));
    }

    #[test]
    fn a_rendered_body_keeps_the_fallback_it_was_rendered_with() {
        let file = File::from_bytes("a.bin", "application/octet-stream", vec![1u8; 3]);
        let rendered = Rendered::new(&b"{}"[..], Fallback::Upload(vec![(file, 3)]));
        assert!(matches!(rendered.into_fallback(), Fallback::Upload(files) if files.len() == 1));
        assert!(matches!(
            Rendered::failure("o", "boom").into_fallback(),
            Fallback::GiveUp
        ));
    }
}
