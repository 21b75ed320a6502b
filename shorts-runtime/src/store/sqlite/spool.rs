//! Callback bodies over 64 KiB, each in a file of its own beside the database.
//!
//! A large body (a file returned inline, up to the platform's 4.5 MB) written through SQLite is
//! copied into the statement, into WAL pages with their checksums, and by the checkpoint into the
//! database file. Here it is written once, to `<database>.spool/<order>`, and `fsync`ed with its
//! folder before the transaction that stores the order's result commits; the row in
//! `shorts_results` then holds a *marker* in its place: the file's name, length and CRC-32C. A
//! marker starts with a NUL byte, which no callback body (JSON) does.
//!
//! A file whose length or checksum does not match its marker is never sent: the order is treated
//! as if its result had never been stored, and runs again. The file is deleted once the platform
//! has the callback; a dead order keeps it, for an operator to retry. Files that no order's marker
//! names (a crash between the file and the commit, or after a delivery) are deleted when the store
//! opens.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{error, warn};

use crate::store::{KEPT_BODY_LIMIT, StoreError};

/// Bodies longer than this are spooled (the bodies a delivery drops; see [`KEPT_BODY_LIMIT`]).
pub(super) const SPOOL_OVER: usize = KEPT_BODY_LIMIT;

/// What a marker starts with.
const MARKER: &[u8] = b"\0shorts-spool:";

/// Longest file name: an order's id, hex-encoded, must fit a file system's 255 bytes. An order
/// whose id is longer (not seen: ids are short) keeps its body in the database.
const LONGEST_NAME: usize = 200;

/// CRC-32C, with the 16-table implementation (several bytes per cycle).
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// The folder of spooled bodies, and the orders whose body this process knows to be in it.
pub(super) struct Spool {
    dir: PathBuf,
    spooled: Mutex<HashSet<String>>,
}

/// Why a stored marker's body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum Damaged {
    #[error("the file {path} of a stored callback body could not be read: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the file {path} of a stored callback body does not match its length and checksum")]
    Mismatch { path: PathBuf },
    #[error("a stored callback body's marker is unreadable")]
    Marker,
}

impl Spool {
    /// The spool of the database at `db`: the folder `<db>.spool`, made (private) if missing.
    pub(super) fn beside(db: &Path) -> Result<Arc<Self>, StoreError> {
        let mut dir = db.as_os_str().to_owned();
        dir.push(".spool");
        let dir = PathBuf::from(dir);
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(|source| StoreError::File {
            path: dir.clone(),
            source,
        })?;
        Ok(Arc::new(Self {
            dir,
            spooled: Mutex::default(),
        }))
    }

    /// The file of the order `id`'s body; `None` when its name would be too long.
    fn path(&self, id: &str) -> Option<PathBuf> {
        use std::fmt::Write as _;
        let mut name = String::with_capacity(id.len() * 2);
        for byte in id.as_bytes() {
            let _ = write!(name, "{byte:02x}");
        }
        (name.len() <= LONGEST_NAME).then(|| self.dir.join(name))
    }

    fn spooled(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.spooled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `body` to the order `id`'s file and syncs it and its folder to disk; returns the
    /// marker to store in its place, or `None` when the body stays in the database (64 KiB or
    /// less, or an id too long for a file name).
    pub(super) async fn write(self: &Arc<Self>, id: &str, body: &Bytes) -> Result<Option<Bytes>, StoreError> {
        if body.len() <= SPOOL_OVER {
            return Ok(None);
        }
        let Some(path) = self.path(id) else {
            return Ok(None);
        };
        let (spool, body) = (Arc::clone(self), body.clone());
        let written =
            tokio::task::spawn_blocking(move || spool.write_now(&path, &body).map_err(|e| (path, e)))
                .await
                .map_err(|_| StoreError::WriterStopped)?;
        match written {
            Ok(marker) => {
                self.spooled().insert(id.to_owned());
                Ok(Some(marker))
            }
            Err((path, source)) => Err(StoreError::Spool { path, source }),
        }
    }

    fn write_now(&self, path: &Path, body: &[u8]) -> std::io::Result<Bytes> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        // Private, as the database is: a body holds what the buyer paid for.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(body)?;
        file.sync_all()?;
        // The file's name is durable once its folder is.
        std::fs::File::open(&self.dir)?.sync_all()?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let mut marker = MARKER.to_vec();
        marker.extend_from_slice(format!("{name}:{}:{:08x}", body.len(), CRC.checksum(body)).as_bytes());
        Ok(Bytes::from(marker))
    }

    /// The body `stored` stands for: itself, or, for a marker, its file's contents once they
    /// match the marker's length and checksum.
    pub(super) async fn read(self: &Arc<Self>, stored: Bytes) -> Result<Bytes, Damaged> {
        let Some(marker) = stored.strip_prefix(MARKER) else {
            return Ok(stored);
        };
        let (name, length, checksum) = parse(marker).ok_or(Damaged::Marker)?;
        let path = self.dir.join(name);
        tokio::task::spawn_blocking(move || {
            let body = match std::fs::read(&path) {
                Ok(body) => body,
                Err(source) => return Err(Damaged::Unreadable { path, source }),
            };
            if body.len() != length || CRC.checksum(&body) != checksum {
                return Err(Damaged::Mismatch { path });
            }
            Ok(Bytes::from(body))
        })
        .await
        .map_err(|_| Damaged::Marker)?
    }

    /// [`Spool::read`] for an operator's view: a body that cannot be read is shown as none (a
    /// delivered order's file is gone; a damaged one is logged).
    pub(super) async fn show(self: &Arc<Self>, stored: Option<Bytes>) -> Option<Bytes> {
        match self.read(stored?).await {
            Ok(body) => Some(body),
            Err(Damaged::Unreadable { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(error = %e, "a stored callback body is not shown");
                None
            }
        }
    }

    /// Notes that the order `id`'s body, read back, is spooled: its file goes with its delivery.
    pub(super) fn note(&self, id: &str, stored: &[u8]) {
        if stored.starts_with(MARKER) {
            self.spooled().insert(id.to_owned());
        }
    }

    /// Deletes the order `id`'s file, if this process spooled or read one for it.
    pub(super) async fn remove(self: &Arc<Self>, id: &str) {
        if !self.spooled().remove(id) {
            return;
        }
        if let Some(path) = self.path(id) {
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
            if let Ok(Err(e)) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                error!(error = %e, "could not delete a delivered callback body's file");
            }
        }
    }

    /// The orders whose files are in the folder (by their decoded names), for the sweep at open.
    pub(super) fn files(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let id = decode(name.to_str()?)?;
                Some((id, entry.path()))
            })
            .collect()
    }

    /// Whether `stored`, an order's stored body, is a marker naming `path`.
    pub(super) fn names(stored: &[u8], path: &Path) -> bool {
        let named = stored.strip_prefix(MARKER).and_then(parse).map(|(name, ..)| name);
        named.is_some_and(|name| path.file_name().and_then(|n| n.to_str()) == Some(name))
    }
}

/// A marker's file name, length and checksum.
fn parse(marker: &[u8]) -> Option<(&str, usize, u32)> {
    let marker = std::str::from_utf8(marker).ok()?;
    let mut parts = marker.split(':');
    let name = parts.next()?;
    let length = parts.next()?.parse().ok()?;
    let checksum = u32::from_str_radix(parts.next()?, 16).ok()?;
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit());
    (plain && parts.next().is_none()).then_some((name, length, checksum))
}

/// An order's id from its file's name.
fn decode(name: &str) -> Option<String> {
    if !name.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool() -> (Arc<Spool>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("shorts-spool-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        (Spool::beside(&dir.join("orders.db")).expect("spool"), dir)
    }

    #[tokio::test]
    async fn a_large_body_is_written_once_and_read_back_whole() {
        let (spool, dir) = spool();
        let small = Bytes::from(vec![b'a'; SPOOL_OVER]);
        assert_eq!(
            spool.write("o-1", &small).await.expect("written"),
            None,
            "64 KiB stays"
        );
        let large = Bytes::from(vec![b'b'; SPOOL_OVER + 1]);
        let marker = spool
            .write("o-1", &large)
            .await
            .expect("written")
            .expect("spooled");
        assert!(marker.len() < 100, "{marker:?}");
        assert_eq!(spool.read(marker.clone()).await.expect("read"), large);
        assert_eq!(spool.read(small.clone()).await.expect("as it is"), small);
        let files = spool.files();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "o-1");
        assert!(Spool::names(&marker, &files[0].1));
        assert!(!Spool::names(&large, &files[0].1));
        spool.remove("o-1").await;
        assert!(spool.files().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_that_does_not_match_its_marker_is_never_read() {
        let (spool, dir) = spool();
        let large = Bytes::from(vec![b'c'; 100_000]);
        let marker = spool
            .write("o/2 ü", &large)
            .await
            .expect("written")
            .expect("spooled");
        let path = spool.files().pop().expect("a file").1;
        assert_eq!(spool.files()[0].0, "o/2 ü");
        // One byte changed: the same length, another checksum.
        let mut changed = large.to_vec();
        changed[50_000] = b'd';
        std::fs::write(&path, &changed).expect("write");
        assert!(matches!(
            spool.read(marker.clone()).await,
            Err(Damaged::Mismatch { .. })
        ));
        // Cut short.
        std::fs::write(&path, &large[..1000]).expect("write");
        assert!(matches!(
            spool.read(marker.clone()).await,
            Err(Damaged::Mismatch { .. })
        ));
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            spool.read(marker.clone()).await,
            Err(Damaged::Unreadable { .. })
        ));
        assert_eq!(spool.show(Some(marker)).await, None);
        let mut bad = MARKER.to_vec();
        bad.extend_from_slice(b"../orders.db:10:0");
        assert!(matches!(spool.read(Bytes::from(bad)).await, Err(Damaged::Marker)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
