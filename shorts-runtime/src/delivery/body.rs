//! Request bodies whose exact length is known before a byte is read: callbacks with files
//! base64-encoded as a stream into the JSON, and raw uploads streamed from disk.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use crate::short::output::{File, Source};

/// Bytes read from a source per chunk: a multiple of 3, so each chunk encodes to base64 without
/// padding.
const CHUNK: usize = 3 * 16 * 1024;

/// The length of `n` bytes in padded base64.
pub(crate) fn base64_len(n: u64) -> u64 {
    n.div_ceil(3) * 4
}

/// One piece of a body.
#[derive(Clone)]
enum Part {
    /// Literal bytes (JSON around the files).
    Literal(Bytes),
    /// A file's bytes, base64-encoded on the way out.
    Base64(Source, u64),
    /// A file's bytes as they are.
    Raw(Source, u64),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Literal(bytes) => bytes.len() as u64,
            Part::Base64(_, size) => base64_len(*size),
            Part::Raw(_, size) => *size,
        }
    }
}

/// A body that can be sent any number of times (each attempt reads it anew), with its exact length.
#[derive(Clone)]
pub(crate) struct StreamBody {
    parts: Arc<[Part]>,
    len: u64,
    /// Raw bytes read so far by the latest attempt, for progress reports.
    pub(crate) progress: Arc<AtomicU64>,
}

impl StreamBody {
    fn new(parts: Vec<Part>) -> Self {
        let len = parts.iter().map(Part::len).sum();
        Self {
            parts: parts.into(),
            len,
            progress: Arc::default(),
        }
    }

    /// A file's raw bytes, for an upload.
    pub(crate) fn raw(file: &File, size: u64) -> Self {
        Self::new(vec![Part::Raw(file.source.clone(), size)])
    }

    /// The exact number of bytes the body has.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The whole body in memory (for bodies under the inline limit, which are stored).
    ///
    /// Assembled on one blocking thread, straight into a buffer of the exact length: reading and
    /// encoding a file of a few megabytes then costs one hand-off between threads, not one per
    /// chunk, and no copy beyond the body itself.
    pub(crate) async fn collect(&self) -> io::Result<Bytes> {
        let parts = Arc::clone(&self.parts);
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || assemble(&parts, len))
            .await
            .map_err(io::Error::other)?
    }

    /// A fresh streaming request body.
    pub(crate) fn to_request_body(&self) -> reqwest::Body {
        self.progress.store(0, Ordering::Relaxed);
        let stream = futures_util::stream::unfold(Reader::new(self), |mut reader| async move {
            reader.next().await.map(|chunk| (chunk, reader))
        });
        reqwest::Body::wrap_stream(stream)
    }
}

/// Reads a body's parts in order, one chunk at a time.
struct Reader {
    parts: Arc<[Part]>,
    next_part: usize,
    open: Option<Open>,
    progress: Arc<AtomicU64>,
}

/// The part being read.
enum Open {
    Bytes {
        bytes: Bytes,
        offset: usize,
        encode: bool,
    },
    File {
        file: tokio::fs::File,
        remaining: u64,
        encode: bool,
    },
}

impl Reader {
    fn new(body: &StreamBody) -> Self {
        Self {
            parts: Arc::clone(&body.parts),
            next_part: 0,
            open: None,
            progress: Arc::clone(&body.progress),
        }
    }

    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if let Some(open) = &mut self.open {
                match read_chunk(open).await {
                    Ok(Some((chunk, raw))) => {
                        self.progress.fetch_add(raw, Ordering::Relaxed);
                        return Some(Ok(chunk));
                    }
                    Ok(None) => self.open = None,
                    Err(e) => return Some(Err(e)),
                }
            }
            let part = self.parts.get(self.next_part)?.clone();
            self.next_part += 1;
            match part {
                Part::Literal(bytes) => return Some(Ok(bytes)),
                Part::Base64(source, size) => match open(&source, size, true).await {
                    Ok(open) => self.open = Some(open),
                    Err(e) => return Some(Err(e)),
                },
                Part::Raw(source, size) => match open(&source, size, false).await {
                    Ok(open) => self.open = Some(open),
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }
}

async fn open(source: &Source, size: u64, encode: bool) -> io::Result<Open> {
    Ok(match source {
        Source::Bytes(bytes) => Open::Bytes {
            bytes: bytes.slice(..clipped(bytes, size)?.len()),
            offset: 0,
            encode,
        },
        Source::Path(path, _) => Open::File {
            file: tokio::fs::File::open(path).await?,
            remaining: size,
            encode,
        },
    })
}

/// The next chunk (encoded when asked) and how many raw bytes it holds; `None` at the end.
async fn read_chunk(open: &mut Open) -> io::Result<Option<(Bytes, u64)>> {
    match open {
        Open::Bytes {
            bytes,
            offset,
            encode,
        } => {
            if *offset >= bytes.len() {
                return Ok(None);
            }
            let end = (*offset + CHUNK).min(bytes.len());
            let raw = bytes.slice(*offset..end);
            *offset = end;
            let len = raw.len() as u64;
            Ok(Some((if *encode { encode_chunk(&raw) } else { raw }, len)))
        }
        Open::File {
            file,
            remaining,
            encode,
        } => {
            if *remaining == 0 {
                return Ok(None);
            }
            let want = usize::try_from(*remaining).unwrap_or(CHUNK).min(CHUNK);
            let mut buffer = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = file.read(&mut buffer[filled..]).await?;
                if n == 0 {
                    return Err(shorter());
                }
                filled += n;
            }
            *remaining -= want as u64;
            // The file must end where it was measured: a file that grew is never sent cut. Checked
            // before the last chunk goes out, since an HTTP client stops reading the body at its
            // declared length and would send the first bytes as a whole file.
            if *remaining == 0 {
                let mut probe = [0u8; 1];
                if file.read(&mut probe).await? > 0 {
                    return Err(longer());
                }
            }
            let raw = Bytes::from(buffer);
            let len = raw.len() as u64;
            Ok(Some((if *encode { encode_chunk(&raw) } else { raw }, len)))
        }
    }
}

/// The body of `parts`, `len` bytes long, read and encoded in one pass.
fn assemble(parts: &[Part], len: usize) -> io::Result<Bytes> {
    let mut out = Vec::with_capacity(len);
    let mut chunk = Vec::new();
    for part in parts {
        match part {
            Part::Literal(bytes) => out.extend_from_slice(bytes),
            Part::Base64(Source::Bytes(bytes), size) => append(&mut out, clipped(bytes, *size)?, true),
            Part::Raw(Source::Bytes(bytes), size) => append(&mut out, clipped(bytes, *size)?, false),
            Part::Base64(Source::Path(path, _), size) | Part::Raw(Source::Path(path, _), size) => {
                let encode = matches!(part, Part::Base64(..));
                let mut file = std::fs::File::open(path)?;
                let mut remaining = *size;
                chunk.resize(CHUNK, 0);
                while remaining > 0 {
                    let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
                    std::io::Read::read_exact(&mut file, &mut chunk[..want]).map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof {
                            shorter()
                        } else {
                            e
                        }
                    })?;
                    append(&mut out, &chunk[..want], encode);
                    remaining -= want as u64;
                }
                if std::io::Read::read(&mut file, &mut chunk[..1])? > 0 {
                    return Err(longer());
                }
            }
        }
    }
    if out.len() != len {
        // A source shorter than planned: sending would break the JSON or the declared length.
        return Err(shorter());
    }
    Ok(Bytes::from(out))
}

/// The first `size` bytes of `bytes`; an error when there are fewer.
fn clipped(bytes: &Bytes, size: u64) -> io::Result<&[u8]> {
    let size = usize::try_from(size).map_err(io::Error::other)?;
    bytes.get(..size).ok_or_else(shorter)
}

/// Appends `raw` to `out`, base64-encoded when asked. Every piece but a part's last is a multiple
/// of 3 bytes long, so the pieces of one part encode to the same text as the whole.
fn append(out: &mut Vec<u8>, raw: &[u8], encode: bool) {
    if !encode {
        out.extend_from_slice(raw);
        return;
    }
    let start = out.len();
    let encoded = usize::try_from(base64_len(raw.len() as u64)).unwrap_or(0);
    out.resize(start + encoded, 0);
    // The slice is exactly as long as the encoding, so this cannot fail.
    let written = STANDARD.encode_slice(raw, &mut out[start..]);
    debug_assert_eq!(written.ok(), Some(encoded));
}

fn shorter() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file became shorter while it was being sent",
    )
}

fn longer() -> io::Error {
    io::Error::other("the file became longer while it was being sent")
}

fn encode_chunk(raw: &[u8]) -> Bytes {
    Bytes::from(STANDARD.encode(raw))
}

/// A success callback carrying `files` inline, as a stream: the literal JSON around each file's
/// `file_base64`, whose value is encoded on the way out. `file_base64` comes last in each object
/// so the JSON can be written in one pass.
pub(crate) fn inline_files(order_id: &str, files: &[(File, u64)], single_at_top_level: bool) -> StreamBody {
    let mut head = Map::new();
    head.insert("ok".into(), true.into());
    head.insert("order_id".into(), order_id.into());
    head.insert("output_type".into(), "file".into());
    let mut parts = Vec::new();
    match files {
        [(file, size)] if single_at_top_level => {
            head.insert("filename".into(), file.name().into());
            head.insert("mime_type".into(), file.mime().into());
            parts.push(Part::Literal(open_object(&head, ",\"file_base64\":\"")));
            parts.push(Part::Base64(file.source.clone(), *size));
            parts.push(Part::Literal(Bytes::from_static(b"\"}")));
        }
        files => {
            parts.push(Part::Literal(open_object(&head, ",\"files\":[")));
            for (index, (file, size)) in files.iter().enumerate() {
                let mut entry = Map::new();
                entry.insert("filename".into(), file.name().into());
                entry.insert("mime_type".into(), file.mime().into());
                let separator = if index == 0 { "" } else { "," };
                let mut literal = separator.as_bytes().to_vec();
                literal.extend_from_slice(&open_object(&entry, ",\"file_base64\":\""));
                parts.push(Part::Literal(literal.into()));
                parts.push(Part::Base64(file.source.clone(), *size));
                parts.push(Part::Literal(Bytes::from_static(b"\"}")));
            }
            parts.push(Part::Literal(Bytes::from_static(b"]}")));
        }
    }
    StreamBody::new(parts)
}

/// `map` as JSON without its closing brace, followed by `rest`.
fn open_object(map: &Map<String, Value>, rest: &str) -> Bytes {
    // A map of strings and booleans always serializes, and ends with `}`.
    let mut json = serde_json::to_vec(map).unwrap_or_else(|_| b"{}".to_vec());
    json.pop();
    json.extend_from_slice(rest.as_bytes());
    Bytes::from(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_lengths() {
        assert_eq!([0, 1, 2, 3, 4, 5, 6].map(base64_len), [0, 4, 4, 4, 8, 8, 8]);
        for n in [0usize, 1, 2, 3, 100, 49_151, 49_152, 49_153] {
            assert_eq!(
                base64_len(n as u64),
                STANDARD.encode(vec![7u8; n]).len() as u64,
                "{n}"
            );
        }
    }

    async fn check(files: &[(File, u64)], single: bool) -> Value {
        let body = inline_files("o\"1\u{e9}", files, single);
        let bytes = body.collect().await.expect("the planned body");
        assert_eq!(body.len(), bytes.len() as u64, "the planned length is exact");
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    #[tokio::test]
    async fn inline_bodies_are_exact_and_valid_json() {
        let sizes = [0usize, 1, 2, 3, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 2];
        for n in sizes {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let file = File::from_bytes("na\"me\\ \u{1F600}.bin", "application/octet-stream", data.clone());
            let one = check(&[(file.clone(), n as u64)], true).await;
            assert_eq!(one["file_base64"], STANDARD.encode(&data), "{n}");
            assert_eq!(one["filename"], "na\"me\\ \u{1F600}.bin");
            assert_eq!(one["order_id"], "o\"1\u{e9}");
            let two = check(&[(file.clone(), n as u64), (file, n as u64)], true).await;
            assert_eq!(two["files"][1]["file_base64"], STANDARD.encode(&data));
        }
    }

    #[tokio::test]
    async fn a_file_on_disk_is_streamed_and_checked_for_its_length() {
        let dir = std::env::temp_dir().join(format!("shorts-body-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let path = dir.join("data.bin");
        let data: Vec<u8> = (0..(2 * CHUNK + 5)).map(|i| (i % 256) as u8).collect();
        std::fs::write(&path, &data).expect("the file");
        let file = File::from_path(&path);
        let size = file.size().await.expect("the file's size");
        let one = check(&[(file.clone(), size)], true).await;
        assert_eq!(
            one,
            json!({"ok": true, "order_id": "o\"1\u{e9}", "output_type": "file",
            "filename": "data.bin", "mime_type": "application/octet-stream",
            "file_base64": STANDARD.encode(&data)})
        );

        let raw = StreamBody::raw(&file, size);
        assert_eq!(raw.collect().await.ok().as_deref(), Some(&data[..]));

        // Planned longer than the file: the read fails instead of sending a short body.
        let too_long = StreamBody::raw(&file, size + 1);
        assert!(too_long.collect().await.is_err());
        // Planned shorter (the file grew since it was measured): no silently cut file either.
        let grown = inline_files("o", &[(file.clone(), size - 1)], true);
        assert!(grown.collect().await.is_err());
        // The same, streamed, as an upload's body is.
        assert_eq!(stream(&raw).await.ok().as_deref(), Some(&data[..]));
        assert!(stream(&too_long).await.is_err());
        let grown = StreamBody::raw(&file, size - 1);
        let error = stream(&grown).await.err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("the file became longer while it was being sent")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A body planned shorter than its file fails the PUT it is sent with: the HTTP client stops
    /// at the declared length, so the check must come before the last chunk.
    #[tokio::test]
    async fn a_grown_file_fails_its_request_instead_of_arriving_cut() {
        let dir = std::env::temp_dir().join(format!("shorts-body-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let path = dir.join("data.bin");
        std::fs::write(&path, vec![9u8; 2 * CHUNK + 5]).expect("the file");
        let file = File::from_path(&path);
        let size = file.size().await.expect("the file's size");
        let app = axum::Router::new().route(
            "/",
            axum::routing::put(|body: Bytes| async move { body.len().to_string() }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let put = |planned: u64| {
            client
                .put(format!("http://{addr}/"))
                .header(reqwest::header::CONTENT_LENGTH, planned)
                .timeout(std::time::Duration::from_secs(10))
                .body(StreamBody::raw(&file, planned).to_request_body())
                .send()
        };
        let whole = put(size).await.expect("the exact file is sent");
        assert_eq!(whole.text().await.ok(), Some(size.to_string()));
        assert!(put(size - 1).await.is_err(), "a grown file must not arrive cut");
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Everything a streamed body yields, or its first error (at most 64 chunks).
    async fn stream(body: &StreamBody) -> io::Result<Vec<u8>> {
        let mut reader = Reader::new(body);
        let mut out = Vec::new();
        for _ in 0..64 {
            match reader.next().await {
                Some(chunk) => out.extend_from_slice(&chunk?),
                None => return Ok(out),
            }
        }
        Err(io::Error::other("more than 64 chunks"))
    }

    #[tokio::test]
    async fn bytes_shorter_than_planned_fail() {
        let file = File::from_bytes("a.bin", "application/octet-stream", vec![1u8; 10]);
        assert!(
            inline_files("o", &[(file.clone(), 10)], true)
                .collect()
                .await
                .is_ok()
        );
        let short = inline_files("o", &[(file, 11)], true);
        assert!(short.collect().await.is_err());
        // Streamed, too: the part fails instead of sending fewer bytes than planned.
        assert!(stream(&short).await.is_err());
    }

    mod properties {
        use super::super::*;
        use super::stream;
        use crate::wire::arbitrary::json;
        use crate::wire::callback;
        use proptest::prelude::*;

        fn file() -> impl Strategy<Value = (String, String, Vec<u8>)> {
            (
                any::<String>(),
                any::<String>(),
                prop::collection::vec(any::<u8>(), 0..200),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// The planned length is the length of the body built and of the body streamed, and
            /// the body reads back as the files planned, whatever their names and types.
            #[test]
            fn the_planned_length_is_the_real_one(
                order_id in any::<String>(),
                files in prop::collection::vec(file(), 0..4),
                single in any::<bool>(),
            ) {
                let sized: Vec<(File, u64)> = files
                    .iter()
                    .map(|(name, mime, data)| {
                        (File::from_bytes(name.as_str(), mime.as_str(), data.clone()), data.len() as u64)
                    })
                    .collect();
                let planned = inline_files(&order_id, &sized, single);
                let len = usize::try_from(planned.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let built = assemble(&planned.parts, len).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(built.len(), len);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let streamed = runtime
                    .block_on(stream(&planned))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&streamed[..], &built[..]);

                let body: Value = serde_json::from_slice(&built).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&body["order_id"], &Value::from(order_id.as_str()));
                let read = callback::inline_files(&built).unwrap_or_default();
                prop_assert_eq!(read.len(), files.len());
                for ((file, size), (name, mime, data)) in read.iter().zip(&files) {
                    prop_assert_eq!((file.name(), file.mime(), *size), (name.as_str(), mime.as_str(), data.len() as u64));
                    let source = match &file.source {
                        Source::Bytes(bytes) => bytes.to_vec(),
                        Source::Path(..) => Vec::new(),
                    };
                    prop_assert_eq!(&source, data);
                }
            }

            /// A stored callback body is read back (after a 413) whatever it holds.
            #[test]
            fn reading_back_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = callback::inline_files(&bytes);
                let _ = callback::is_failure(&bytes);
            }

            #[test]
            fn reading_back_arbitrary_json_never_panics(value in json()) {
                let bytes = serde_json::to_vec(&value).unwrap_or_default();
                let _ = callback::inline_files(&bytes);
                let _ = callback::is_failure(&bytes);
            }
        }
    }
}
