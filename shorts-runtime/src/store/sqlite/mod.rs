//! The embedded default: SQLite in WAL mode with `synchronous=FULL`, behind one writer task that
//! commits every request waiting for it in one transaction, so durability costs one fsync per
//! group of concurrent orders instead of one per order.
//!
//! - [`file`] opens (and creates, privately) the database;
//! - [`requests`] are what the store's callers ask the writer;
//! - [`writer`] commits them in groups, and recovers from a failing statement;
//! - [`batch`] writes a group's accepts, callback bodies and settles with multi-row statements;
//! - [`statements`] runs every other request;
//! - [`checkpoint`] copies the WAL into the database beside the writer;
//! - [`spool`] keeps callback bodies over 64 KiB in files of their own beside it;
//! - [`plans`] shows how SQLite plans the writer's statements on a given database.

mod batch;
mod checkpoint;
mod file;
mod plans;
mod requests;
mod spool;
mod statements;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection as _, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::error::{Failure, doing};
use super::history::{self, RUN_TIMES_LIMIT};
use super::sql::{
    BODIES_OF, CALLBACK_RATE, HISTORY_OF, HOURLY, RUN_TIMES, STATE_COUNTS, hour_counts, orders_page,
    run_times, state_counts,
};
use super::{
    CallbackAttempt, CallbackRate, Claimed, FailedNow, HourCount, NewOrder, OrderDetail, OrderFilter,
    OrderPage, OrderRecord, OrderState, PageCursor, Purged, RunEnd, RunTimes, Settle, Started, Store,
    StoreError, StoreOperation,
};
pub(crate) use plans::query_plans;
use requests::{Accepting, Op, Reply, Saving};
use spool::Spool;
use statements::{history_row, summary};
use writer::MAX_GROUP;

pub(crate) struct SqliteStore {
    ops: mpsc::Sender<Op>,
    /// Where callback bodies over 64 KiB are written.
    spool: Arc<Spool>,
    /// Connections of their own for an operator's reads (lists, counts, timelines): in WAL mode
    /// they read beside the writer, never waiting behind its groups nor delaying them.
    reads: SqlitePool,
}

/// The options of a connection to the database at `path`, as the store makes them.
pub(super) fn connect_options(path: &Path) -> Result<sqlx::sqlite::SqliteConnectOptions, StoreError> {
    file::options(path)
}

impl SqliteStore {
    /// Opens the database at `path` (see [`file::connect`]) and starts its writer.
    pub(crate) async fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = file::connect(path).await?;
        let checkpoints = SqliteConnection::connect_with(&file::options(path)?)
            .await
            .map_err(StoreError::database(StoreOperation::Open))?;
        let (commits, committed) = watch::channel(());
        let finish = Arc::new(AtomicBool::new(false));
        tokio::spawn(checkpoint::checkpointer(
            checkpoints,
            committed,
            Arc::clone(&finish),
        ));
        let reads = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(file::options(path)?.read_only(true));
        let (ops, receiver) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer::writer(connection, receiver, commits, finish));
        let spool = Spool::beside(path)?;
        sweep(&spool, &reads).await?;
        Ok(Self { ops, spool, reads })
    }

    /// Sends the request `op` makes to the writer and waits for its answer.
    async fn ask<T>(
        &self,
        operation: StoreOperation,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<T, StoreError> {
        let (reply, answer) = Reply::new(operation);
        // The writer stops only with the runtime.
        let sent = self.ops.send(op(reply)).await;
        sent.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl Store for SqliteStore {
    async fn accept(
        &self,
        order: NewOrder,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, StoreError> {
        let owner = owner.to_owned();
        self.ask(StoreOperation::Accept, |reply| {
            Op::Accept(Accepting {
                order,
                owner,
                lease,
                reply,
            })
        })
        .await
    }

    async fn claim(&self, owner: &str, lease: Duration, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        let owner = owner.to_owned();
        let mut claims = self
            .ask(StoreOperation::Claim, |reply| Op::Claim {
                owner,
                lease,
                limit,
                reply,
            })
            .await?;
        for claimed in &mut claims {
            let Some(stored) = claimed.result.take() else {
                continue;
            };
            self.spool.note(&claimed.id, &stored);
            match self.spool.read(stored).await {
                Ok(body) => claimed.result = Some(body),
                // Never sent: the order runs again, as if its result had not been stored.
                Err(e) => error!(
                    order_id = %claimed.id,
                    error = %e,
                    "a stored result is damaged; the order will run again"
                ),
            }
        }
        Ok(claims)
    }

    async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.ask(StoreOperation::Heartbeat, |reply| Op::Heartbeat {
            owner,
            lease,
            reply,
        })
        .await
    }

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<Started>, StoreError> {
        let id = id.to_owned();
        self.ask(StoreOperation::StartRun, |reply| Op::StartRun {
            id,
            fence,
            reply,
        })
        .await
    }

    async fn save_result(
        &self,
        id: &str,
        fence: i64,
        body: Bytes,
        run: Option<RunEnd>,
    ) -> Result<bool, StoreError> {
        let marker = self.spool.write(id, &body).await?;
        let spooled = marker.is_some();
        let body = marker.unwrap_or(body);
        let order = id.to_owned();
        let saved = self
            .ask(StoreOperation::SaveResult, |reply| {
                Op::SaveResult(Saving {
                    id: order,
                    fence,
                    body,
                    run,
                    reply,
                })
            })
            .await;
        // A file no stored marker names, or one an inline body replaced.
        if !spooled || !matches!(saved, Ok(true)) {
            self.spool.remove(id).await;
        }
        saved
    }

    async fn settle(
        &self,
        id: &str,
        fence: i64,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
    ) -> Result<bool, StoreError> {
        let delivered = settle == Settle::Delivered;
        let order = id.to_owned();
        let settled = self
            .ask(StoreOperation::Settle, |reply| Op::Settle {
                id: order,
                fence,
                settle,
                attempts,
                reply,
            })
            .await;
        // The platform has the body: its file goes (a dead order keeps it, to be retried).
        if delivered && matches!(settled, Ok(true)) {
            self.spool.remove(id).await;
        }
        settled
    }

    async fn release(&self, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        let interrupted = interrupted.to_vec();
        self.ask(StoreOperation::Release, |reply| Op::Release {
            owner,
            interrupted,
            reply,
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let id = id.to_owned();
        let record = self
            .ask(StoreOperation::Get, |reply| Op::Get { id, reply })
            .await?;
        Ok(match record {
            Some(mut record) => {
                record.result = self.spool.show(record.result.take()).await;
                Some(record)
            }
            None => None,
        })
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        let mut records = self
            .ask(StoreOperation::List, |reply| Op::List { state, limit, reply })
            .await?;
        for record in &mut records {
            record.result = self.spool.show(record.result.take()).await;
        }
        Ok(records)
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(StoreOperation::Retry, |reply| Op::Retry { id, reply })
            .await
    }

    async fn purge(&self, before: i64, limit: u32) -> Result<Purged, StoreError> {
        self.ask(StoreOperation::Purge, |reply| Op::Purge { before, limit, reply })
            .await
    }

    async fn purge_dead(&self, before: i64) -> Result<u64, StoreError> {
        self.ask(StoreOperation::PurgeDead, |reply| Op::PurgeDead { before, reply })
            .await
    }

    async fn release_order(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.ask(StoreOperation::ReleaseOrder, |reply| Op::ReleaseOrder {
            id,
            fence,
            reply,
        })
        .await
    }

    async fn orders_page(
        &self,
        filter: &OrderFilter,
        after: Option<&PageCursor>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        doing(StoreOperation::Report, async {
            let rows = orders_page::<Sqlite>(filter, after, limit)
                .build()
                .fetch_all(&self.reads)
                .await?;
            let mut orders = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
            let more = orders.len() > limit as usize;
            orders.truncate(limit as usize);
            Ok::<_, Failure>(history::page(orders, more))
        })
        .await
    }

    async fn state_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        doing(StoreOperation::Report, async {
            let rows: Vec<(String, i64)> = sqlx::query_as(STATE_COUNTS).fetch_all(&self.reads).await?;
            Ok::<_, Failure>(state_counts(rows))
        })
        .await
    }

    async fn hourly(&self, since: i64) -> Result<Vec<HourCount>, StoreError> {
        doing(StoreOperation::Report, async {
            let rows: Vec<(i64, i64, i64)> =
                sqlx::query_as(HOURLY).bind(since).fetch_all(&self.reads).await?;
            Ok::<_, Failure>(hour_counts(rows))
        })
        .await
    }

    async fn run_times(&self, since: i64) -> Result<Vec<RunTimes>, StoreError> {
        doing(StoreOperation::Report, async {
            let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(RUN_TIMES)
                .bind(since)
                .bind(i64::from(RUN_TIMES_LIMIT))
                .fetch_all(&self.reads)
                .await?;
            Ok::<_, Failure>(run_times(rows))
        })
        .await
    }

    async fn callback_rate(&self, since: i64) -> Result<CallbackRate, StoreError> {
        doing(StoreOperation::Report, async {
            let (attempts, accepted): (i64, i64) = sqlx::query_as(CALLBACK_RATE)
                .bind(since)
                .fetch_one(&self.reads)
                .await?;
            Ok::<_, Failure>(CallbackRate {
                attempts: u64::try_from(attempts).unwrap_or(0),
                accepted: u64::try_from(accepted).unwrap_or(0),
            })
        })
        .await
    }

    async fn detail(&self, id: &str) -> Result<Option<OrderDetail>, StoreError> {
        doing(StoreOperation::Report, async {
            let filter = OrderFilter {
                id: Some(history::IdMatch::Exact(id.to_owned())),
                ..OrderFilter::default()
            };
            // One read transaction: the order, its history and its bodies as of one commit.
            let mut transaction = self.reads.begin().await?;
            let Some(row) = orders_page::<Sqlite>(&filter, None, 1)
                .build()
                .fetch_optional(&mut *transaction)
                .await?
            else {
                return Ok(None);
            };
            let summary = summary(&row)?;
            let rows = sqlx::query(HISTORY_OF)
                .bind(id)
                .fetch_all(&mut *transaction)
                .await?;
            let rows = rows.iter().map(history_row).collect::<Result<Vec<_>, _>>()?;
            let (payload, result): (Option<Vec<u8>>, Option<Vec<u8>>) = sqlx::query_as(BODIES_OF)
                .bind(id)
                .fetch_one(&mut *transaction)
                .await?;
            transaction.commit().await.map_err(Failure::commit)?;
            let result = self.spool.show(result.map(Bytes::from)).await;
            Ok::<_, Failure>(Some(OrderDetail {
                timeline: history::timeline(summary.received_at, rows),
                inputs: payload.as_deref().and_then(history::describe_inputs),
                result: result.as_deref().and_then(history::describe_result),
                summary,
            }))
        })
        .await
    }

    async fn fail_now(&self, id: &str, message: &str, body: Bytes) -> Result<FailedNow, StoreError> {
        let order = id.to_owned();
        let message = message.to_owned();
        let failed = self
            .ask(StoreOperation::FailNow, |reply| Op::FailNow {
                id: order,
                message,
                body,
                reply,
            })
            .await;
        // The failure replaced the stored body.
        if matches!(failed, Ok(FailedNow::Failing)) {
            self.spool.remove(id).await;
        }
        failed
    }
}

/// Deletes the spooled files that no order's stored body names (written before a crash that kept
/// the result from committing, or left by one after a delivery), and notes the others.
async fn sweep(spool: &Arc<Spool>, reads: &SqlitePool) -> Result<(), StoreError> {
    for (id, path) in spool.files() {
        let row: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT o.state, r.body FROM shorts_orders o
             LEFT JOIN shorts_results r ON r.order_id = o.order_id WHERE o.order_id = $1",
        )
        .bind(&id)
        .fetch_optional(reads)
        .await
        .map_err(StoreError::database(StoreOperation::Open))?;
        match row {
            Some((state, Some(body)))
                if state != OrderState::Delivered.as_str() && Spool::names(&body, &path) =>
            {
                spool.note(&id, &body);
            }
            _ => {
                if let Err(e) = std::fs::remove_file(&path) {
                    warn!(error = %e, path = %path.display(), "could not delete a result file no order needs");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::store::suite::order;

    const LONG: Duration = Duration::from_secs(600);

    /// The files in the spool beside `db`.
    fn spooled(db: &Path) -> Vec<PathBuf> {
        let dir = PathBuf::from(format!("{}.spool", db.display()));
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("the spool")
            .flatten()
            .map(|entry| entry.path())
            .collect();
        files.sort();
        files
    }

    async fn stored_body(store: &SqliteStore, id: &str) -> Vec<u8> {
        sqlx::query_scalar("SELECT body FROM shorts_results WHERE order_id = $1")
            .bind(id)
            .fetch_one(&store.reads)
            .await
            .expect("stored body")
    }

    /// A body over 64 KiB goes to a file beside the database, with only a marker in the
    /// database; it is read back whole, deleted once delivered, and never sent when damaged.
    #[tokio::test]
    async fn long_bodies_are_spooled_beside_the_database() {
        let dir = std::env::temp_dir().join(format!("shorts-spooled-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = dir.join("orders.db");
        let store = SqliteStore::open(&db).await.expect("open");
        let long = Bytes::from(vec![b'x'; 200_000]);
        for id in ["s1", "s2", "s3"] {
            let claimed = store
                .accept(order(id), "one", LONG)
                .await
                .expect("accept")
                .expect("new");
            assert!(
                store
                    .save_result(id, claimed.fence, long.clone(), None)
                    .await
                    .expect("save")
            );
            assert!(
                stored_body(&store, id).await.len() < 100,
                "a marker in the database"
            );
            // Released without a settle: the next claim reads the body back.
            store.release_order(id, claimed.fence).await.expect("release");
        }
        let files = spooled(&db);
        assert_eq!(files.len(), 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode(&PathBuf::from(format!("{}.spool", db.display()))), 0o700);
            assert_eq!(mode(&files[0]), 0o600);
        }
        // s2's file loses a byte; s3's is gone.
        std::fs::write(&files[1], &long[1..]).expect("damage");
        std::fs::remove_file(&files[2]).expect("remove");
        let mut claims = store.claim("two", LONG, 10).await.expect("claim");
        claims.sort_by(|a, b| a.id.cmp(&b.id));
        let results: Vec<(&str, Option<usize>)> = claims
            .iter()
            .map(|c| (c.id.as_str(), c.result.as_ref().map(Bytes::len)))
            .collect();
        // Only the intact body is sent; the others run again.
        assert_eq!(results, [("s1", Some(200_000)), ("s2", None), ("s3", None)]);
        assert_eq!(claims[0].result.as_ref(), Some(&long));
        assert!(
            store
                .settle("s1", claims[0].fence, Settle::Delivered, Vec::new())
                .await
                .expect("settle")
        );
        assert_eq!(spooled(&db), files[1..2], "the delivered body's file is deleted");
        // s2 ran again and its new result is short: it replaces the damaged file.
        assert!(
            store
                .save_result("s2", claims[1].fence, Bytes::from_static(b"{\"ok\":true}"), None)
                .await
                .expect("save")
        );
        assert!(spooled(&db).is_empty());
        assert_eq!(
            store.get("s2").await.expect("get").expect("record").result,
            Some(Bytes::from_static(b"{\"ok\":true}"))
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// At open, a file no stored body names is deleted (its result never committed, or its order
    /// was delivered), and one that is named is kept and delivered.
    #[tokio::test]
    async fn files_no_order_needs_are_deleted_at_open() {
        let dir = std::env::temp_dir().join(format!("shorts-sweep-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = dir.join("orders.db");
        let store = SqliteStore::open(&db).await.expect("open");
        let long = Bytes::from(vec![b'y'; 100_000]);
        let lease = Duration::from_millis(1);
        let claimed = store
            .accept(order("kept"), "one", lease)
            .await
            .expect("accept")
            .expect("new");
        assert!(
            store
                .save_result("kept", claimed.fence, long.clone(), None)
                .await
                .expect("save")
        );
        drop(store);
        let spool = PathBuf::from(format!("{}.spool", db.display()));
        // A file for an order whose result never committed, and one for no order at all.
        let orphans = [spool.join("6e6f2d726573756c74"), spool.join("616263")];
        for orphan in &orphans {
            std::fs::write(orphan, b"left behind").expect("orphan");
        }
        let reopened = SqliteStore::open(&db).await.expect("reopen");
        let kept = spooled(&db);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(orphans.iter().all(|orphan| !orphan.exists()));
        // The first store's lease (1 ms) has run out.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let claimed = reopened.claim("two", LONG, 10).await.expect("claim").pop();
        let claimed = claimed.expect("claimed");
        assert_eq!(claimed.result.as_ref(), Some(&long));
        assert!(
            reopened
                .settle("kept", claimed.fence, Settle::Delivered, Vec::new())
                .await
                .expect("settle")
        );
        assert!(spooled(&db).is_empty(), "noted at open, deleted once delivered");
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
