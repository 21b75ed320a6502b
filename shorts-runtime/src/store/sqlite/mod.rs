//! The embedded default: SQLite in WAL mode with `synchronous=FULL`, behind one writer task that
//! commits every request waiting for it in one transaction, so durability costs one fsync per
//! group of concurrent orders instead of one per order.
//!
//! - [`file`] opens (and creates, privately) the database;
//! - [`requests`] are what the store's callers ask the writer;
//! - [`writer`] commits them in groups, and recovers from a failing statement;
//! - [`batch`] writes a group's accepts, callback bodies and settles with multi-row statements;
//! - [`statements`] runs every other request;
//! - [`checkpoint`] copies the WAL into the database beside the writer.

mod batch;
mod checkpoint;
mod file;
mod requests;
mod statements;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{Connection as _, SqliteConnection};
use tokio::sync::{mpsc, watch};

use super::{Claimed, NewOrder, OrderRecord, OrderState, Settle, Started, Store, StoreError, StoreOperation};
use requests::{Accepting, Op, Reply, Saving};
use writer::MAX_GROUP;

pub(crate) struct SqliteStore {
    ops: mpsc::Sender<Op>,
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
        let (ops, receiver) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer::writer(connection, receiver, commits, finish));
        Ok(Self { ops })
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

    async fn save_result(&self, id: &str, fence: i64, body: Bytes) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(StoreOperation::SaveResult, |reply| {
            Op::SaveResult(Saving {
                id,
                fence,
                body,
                reply,
            })
        })
        .await
    }

    async fn settle(&self, id: &str, fence: i64, settle: Settle, posts: i32) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(StoreOperation::Settle, |reply| Op::Settle {
            id,
            fence,
            settle,
            posts,
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

    async fn count_by_state(&self) -> Result<[u64; 5], StoreError> {
        self.ask(StoreOperation::Count, |reply| Op::Count { reply }).await
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
}
