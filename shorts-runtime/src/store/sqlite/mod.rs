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
//! - [`plans`] shows how SQLite plans the writer's statements on a given database.

mod batch;
mod checkpoint;
mod file;
mod plans;
mod requests;
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

use super::error::{Failure, doing};
use super::history::{self, RUN_TIMES_LIMIT};
use super::sql::{
    BODIES_OF, CALLBACK_RATE, HISTORY_OF, HOURLY, RUN_TIMES, STATE_COUNTS, hour_counts, orders_page,
    run_times, state_counts,
};
use super::{
    CallbackAttempt, CallbackRate, Claimed, FailedNow, HourCount, NewOrder, OrderDetail, OrderFilter,
    OrderPage, OrderRecord, OrderState, PageCursor, RunEnd, RunTimes, Settle, Started, Store, StoreError,
    StoreOperation,
};
pub(crate) use plans::query_plans;
use requests::{Accepting, Op, Reply, Saving};
use statements::{history_row, summary};
use writer::MAX_GROUP;

pub(crate) struct SqliteStore {
    ops: mpsc::Sender<Op>,
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
        Ok(Self { ops, reads })
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
        self.ask(StoreOperation::Claim, |reply| Op::Claim {
            owner,
            lease,
            limit,
            reply,
        })
        .await
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
        let id = id.to_owned();
        self.ask(StoreOperation::SaveResult, |reply| {
            Op::SaveResult(Saving {
                id,
                fence,
                body,
                run,
                reply,
            })
        })
        .await
    }

    async fn settle(
        &self,
        id: &str,
        fence: i64,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(StoreOperation::Settle, |reply| Op::Settle {
            id,
            fence,
            settle,
            attempts,
            reply,
        })
        .await
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
        self.ask(StoreOperation::Get, |reply| Op::Get { id, reply }).await
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        self.ask(StoreOperation::List, |reply| Op::List { state, limit, reply })
            .await
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(StoreOperation::Retry, |reply| Op::Retry { id, reply })
            .await
    }

    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        self.ask(StoreOperation::Purge, |reply| Op::Purge { before, reply })
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
        let id = id.to_owned();
        let message = message.to_owned();
        self.ask(StoreOperation::FailNow, |reply| Op::FailNow {
            id,
            message,
            body,
            reply,
        })
        .await
    }
}
