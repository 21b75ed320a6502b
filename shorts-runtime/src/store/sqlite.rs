//! The embedded default: SQLite in WAL mode with `synchronous=FULL`, behind one writer task that
//! commits every request waiting for it in one transaction, so durability costs one fsync per
//! group of concurrent orders instead of one per order.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Connection as _, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::sql::{claimable, claimed_columns, mappers, record_columns, settled};
use super::{Claimed, NewOrder, OrderRecord, OrderState, Settle, Store, StoreError, ms, now_ms};

mappers!(SqliteRow);

/// Most requests committed in one transaction.
const MAX_GROUP: usize = 512;

/// One request to the writer, with where to send its answer.
enum Op {
    Accept(
        NewOrder,
        String,
        Duration,
        oneshot::Sender<Result<Option<Claimed>, StoreError>>,
    ),
    Claim(
        String,
        Duration,
        u32,
        oneshot::Sender<Result<Vec<Claimed>, StoreError>>,
    ),
    Heartbeat(String, Duration, oneshot::Sender<Result<u64, StoreError>>),
    StartRun(String, i64, oneshot::Sender<Result<Option<i32>, StoreError>>),
    SaveResult(String, i64, Bytes, oneshot::Sender<Result<bool, StoreError>>),
    Settle(String, i64, Settle, oneshot::Sender<Result<bool, StoreError>>),
    Release(String, Vec<String>, oneshot::Sender<Result<u64, StoreError>>),
    Get(String, oneshot::Sender<Result<Option<OrderRecord>, StoreError>>),
    List(
        Option<OrderState>,
        u32,
        oneshot::Sender<Result<Vec<OrderRecord>, StoreError>>,
    ),
    Retry(String, oneshot::Sender<Result<bool, StoreError>>),
}

pub(crate) struct SqliteStore {
    ops: mpsc::Sender<Op>,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path` and migrates it.
    pub(crate) async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let mut connection = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut connection).await?;
        let (ops, receiver) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer(connection, receiver));
        Ok(Self { ops })
    }

    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ops.send(op(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Commits requests in groups: waits for one, takes every other already waiting, runs them all in
/// one transaction, commits, then answers each.
async fn writer(mut connection: SqliteConnection, mut ops: mpsc::Receiver<Op>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while ops.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut answers = Vec::with_capacity(group.len());
        let begun = sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await;
        if let Err(e) = begun {
            error!(error = %e, "could not begin a transaction");
        }
        for op in group.drain(..) {
            answers.push(run(&mut connection, op).await);
        }
        let committed = sqlx::query("COMMIT").execute(&mut connection).await;
        match committed {
            Ok(_) => answers.into_iter().for_each(Answer::send),
            Err(e) => {
                error!(error = %e, "could not commit a group of orders");
                let _ = sqlx::query("ROLLBACK").execute(&mut connection).await;
                answers.into_iter().for_each(Answer::fail);
            }
        }
    }
}

/// An answer held until the group is committed.
struct Answer(Box<dyn FnOnce(Option<StoreError>) + Send>);

impl Answer {
    fn new<T: Send + 'static>(
        reply: oneshot::Sender<Result<T, StoreError>>,
        result: Result<T, StoreError>,
    ) -> Self {
        Answer(Box::new(move |failed| {
            let _ = reply.send(match failed {
                Some(e) => Err(e),
                None => result,
            });
        }))
    }

    fn send(self) {
        (self.0)(None);
    }

    fn fail(self) {
        (self.0)(Some(StoreError::Database(sqlx::Error::WorkerCrashed)));
    }
}

async fn run(c: &mut SqliteConnection, op: Op) -> Answer {
    match op {
        Op::Accept(order, owner, lease, reply) => Answer::new(reply, accept(c, order, &owner, lease).await),
        Op::Claim(owner, lease, limit, reply) => Answer::new(reply, claim(c, &owner, lease, limit).await),
        Op::Heartbeat(owner, lease, reply) => {
            let result = sqlx::query("UPDATE shorts_orders SET lease_until = $1 WHERE owner = $2")
                .bind(now_ms() + ms(lease))
                .bind(owner)
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::StartRun(id, fence, reply) => {
            let result = sqlx::query(
                "UPDATE shorts_orders SET runs = runs + 1 WHERE order_id = $1 AND fence = $2 RETURNING runs",
            )
            .bind(id)
            .bind(fence)
            .fetch_optional(&mut *c)
            .await
            .and_then(|row| row.map(|row| sqlx::Row::try_get::<i32, _>(&row, 0)).transpose())
            .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::SaveResult(id, fence, body, reply) => {
            let result = sqlx::query(
                "UPDATE shorts_orders SET result = $1, state = 'delivering', next_at = NULL
                 WHERE order_id = $2 AND fence = $3",
            )
            .bind(body.as_ref())
            .bind(id)
            .bind(fence)
            .execute(&mut *c)
            .await
            .map(|done| done.rows_affected() == 1)
            .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::Settle(id, fence, settle, reply) => {
            let (state, next_at, attempts, error) = settled(settle);
            let result = sqlx::query(
                "UPDATE shorts_orders SET state = $1, next_at = $2, attempts = COALESCE($3, attempts),
                 last_error = COALESCE($4, last_error), owner = NULL
                 WHERE order_id = $5 AND fence = $6",
            )
            .bind(state)
            .bind(next_at)
            .bind(attempts)
            .bind(error)
            .bind(id)
            .bind(fence)
            .execute(&mut *c)
            .await
            .map(|done| done.rows_affected() == 1)
            .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::Release(owner, interrupted, reply) => Answer::new(reply, release(c, &owner, &interrupted).await),
        Op::Get(id, reply) => {
            let result = sqlx::query(concat!(
                "SELECT ",
                record_columns!(),
                " FROM shorts_orders WHERE order_id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *c)
            .await
            .and_then(|row| row.as_ref().map(record).transpose())
            .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::List(state, limit, reply) => {
            let result = sqlx::query(concat!(
                "SELECT ",
                record_columns!(),
                " FROM shorts_orders WHERE ($1 IS NULL OR state = $1) ORDER BY rowid LIMIT $2"
            ))
            .bind(state.map(OrderState::as_str))
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .and_then(|rows| rows.iter().map(record).collect())
            .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::Retry(id, reply) => {
            let result = sqlx::query(
                "UPDATE shorts_orders SET state = 'delivering', next_at = $1, attempts = 0
                 WHERE order_id = $2 AND state IN ('dead', 'paused') AND result IS NOT NULL",
            )
            .bind(now_ms())
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|done| done.rows_affected() == 1)
            .map_err(StoreError::from);
            Answer::new(reply, result)
        }
    }
}

async fn accept(
    c: &mut SqliteConnection,
    order: NewOrder,
    owner: &str,
    lease: Duration,
) -> Result<Option<Claimed>, StoreError> {
    let now = now_ms();
    let started = order.started;
    let row = sqlx::query(concat!("INSERT INTO shorts_orders (order_id, short, payload, callback_url, state, runs, fence, owner, lease_until, received_at)
         VALUES ($1, $2, $3, $4, 'received', $8, 1, $5, $6, $7)
         ON CONFLICT (order_id) DO NOTHING
         RETURNING ", claimed_columns!()))
    .bind(order.id)
    .bind(order.short)
    .bind(order.payload.as_ref())
    .bind(order.callback_url)
    .bind(owner)
    .bind(now + ms(lease))
    .bind(now)
    .bind(i32::from(started))
    .fetch_optional(&mut *c)
    .await?;
    let mut claimed = row.as_ref().map(claimed).transpose()?;
    if let Some(claimed) = &mut claimed {
        claimed.started = started;
    }
    Ok(claimed)
}

async fn claim(
    c: &mut SqliteConnection,
    owner: &str,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Claimed>, StoreError> {
    let now = now_ms();
    let rows = sqlx::query(concat!(
        "UPDATE shorts_orders
         SET fence = fence + 1, owner = $2, lease_until = $3
         WHERE order_id IN (
             SELECT order_id FROM shorts_orders WHERE ",
        claimable!(),
        "
             ORDER BY COALESCE(next_at, received_at), rowid LIMIT $4)
         RETURNING ",
        claimed_columns!()
    ))
    .bind(now)
    .bind(owner)
    .bind(now + ms(lease))
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await?;
    Ok(rows.iter().map(claimed).collect::<Result<_, _>>()?)
}

async fn release(c: &mut SqliteConnection, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
    for id in interrupted {
        sqlx::query("UPDATE shorts_orders SET runs = runs - 1 WHERE order_id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&mut *c)
            .await?;
    }
    let done = sqlx::query("UPDATE shorts_orders SET owner = NULL WHERE owner = $1")
        .bind(owner)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected())
}

impl Store for SqliteStore {
    async fn accept(
        &self,
        order: NewOrder,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, StoreError> {
        let owner = owner.to_owned();
        self.ask(|reply| Op::Accept(order, owner, lease, reply)).await
    }

    async fn claim(&self, owner: &str, lease: Duration, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        let owner = owner.to_owned();
        self.ask(|reply| Op::Claim(owner, lease, limit, reply)).await
    }

    async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.ask(|reply| Op::Heartbeat(owner, lease, reply)).await
    }

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<i32>, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::StartRun(id, fence, reply)).await
    }

    async fn save_result(&self, id: &str, fence: i64, body: Bytes) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::SaveResult(id, fence, body, reply)).await
    }

    async fn settle(&self, id: &str, fence: i64, settle: Settle) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::Settle(id, fence, settle, reply)).await
    }

    async fn release(&self, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        let interrupted = interrupted.to_vec();
        self.ask(|reply| Op::Release(owner, interrupted, reply)).await
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::Get(id, reply)).await
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        self.ask(|reply| Op::List(state, limit, reply)).await
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::Retry(id, reply)).await
    }
}
