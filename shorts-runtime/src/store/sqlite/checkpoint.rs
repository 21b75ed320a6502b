//! Copying the WAL into the database file beside the writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::watch;
use tracing::warn;

/// How long the checkpointer waits after a commit before it checkpoints: the commits in between
/// are copied to the database file in one checkpoint.
pub(super) const CHECKPOINT_PAUSE: Duration = Duration::from_millis(250);

/// Copies committed pages from the WAL into the database file, on a connection (and so a thread)
/// of its own, a moment after commits.
///
/// A checkpoint in the writer held up every group behind it: with SQLite's automatic checkpoints
/// every 64 MiB of WAL, about 60 ms at 4,000 orders a second. Beside the writer, a checkpoint
/// never quite catches up with it, and SQLite starts the WAL over (instead of growing it) only
/// once every frame is copied; so the writer then copies what came in meanwhile itself
/// (`finish`), between two groups.
pub(super) async fn checkpointer(
    mut connection: SqliteConnection,
    mut committed: watch::Receiver<()>,
    finish: Arc<AtomicBool>,
) {
    while committed.changed().await.is_ok() {
        tokio::time::sleep(CHECKPOINT_PAUSE).await;
        committed.borrow_and_update();
        if checkpoint(&mut connection).await {
            finish.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs a passive checkpoint (one that waits for nobody); whether it ran to its end.
pub(super) async fn checkpoint(connection: &mut SqliteConnection) -> bool {
    // Its row: whether another checkpoint kept it from running, the WAL's frames, those copied.
    let done = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(connection)
        .await;
    match done {
        Ok((busy, ..)) => busy == 0,
        Err(e) => {
            warn!(error = %e, "could not checkpoint the database");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::Store as _;
    use crate::store::sqlite::SqliteStore;
    use crate::store::suite::order;

    /// Under writes that never pause, the WAL is still checkpointed and started over: SQLite counts
    /// each start in the WAL's header (bytes 12 to 15, the checkpoint sequence number), and the
    /// file stays far below the 64 MiB at which a commit would checkpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_the_writer_never_pauses() {
        let dir = std::env::temp_dir().join(format!("shorts-wal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("orders.db");
        let store = Arc::new(SqliteStore::open(&path).await.expect("open"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for writer in 0..4 {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            writers.push(tokio::spawn(async move {
                // Until told to stop (at most 20,000 orders each).
                for i in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut order = order(&format!("w{writer}-{i}"));
                    order.payload = Bytes::from(vec![7u8; 1024]);
                    store
                        .accept(order, "one", Duration::from_secs(60))
                        .await
                        .expect("accept");
                }
            }));
        }
        // The WAL's header, read every 50 ms for at most 20 s, until it has started over twice.
        let wal = dir.join("orders.db-wal");
        let mut starts = 0;
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut header = [0u8; 16];
            let read = std::fs::File::open(&wal)
                .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header));
            if read.is_ok() {
                starts = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
            }
            if starts >= 2 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.await.expect("writer");
        }
        assert!(starts >= 2, "the WAL started over {starts} times");
        // Started over by the checkpoints beside the writer, not by SQLite's own at 64 MiB.
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(u64::MAX);
        assert!(size < 32 << 20, "the WAL grew to {size} bytes");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
