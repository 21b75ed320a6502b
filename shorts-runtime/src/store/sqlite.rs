//! The embedded default: SQLite in WAL mode with `synchronous=FULL`, behind one writer task that
//! commits every request waiting for it in one transaction, so durability costs one fsync per
//! group of concurrent orders instead of one per order.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Connection as _, QueryBuilder, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::sql::{
    HEARTBEAT, PURGE_ORDERS, PURGE_PAYLOADS, PURGE_RESULTS, RELEASE, RELEASE_ORDER, RETRY, START_RUN,
    claimable, claimed_columns, drop_delivered_bodies, mappers, replacing_body, select_records, settled,
};
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
    Purge(i64, oneshot::Sender<Result<u64, StoreError>>),
    ReleaseOrder(String, i64, oneshot::Sender<Result<(), StoreError>>),
}

impl Op {
    /// Answers the request with `error`.
    fn fail(self, error: &sqlx::Error) {
        match self {
            Op::Accept(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::Claim(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::Heartbeat(.., reply) | Op::Release(.., reply) | Op::Purge(.., reply) => {
                drop(reply.send(Err(shared(error))))
            }
            Op::StartRun(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::SaveResult(.., reply) | Op::Settle(.., reply) | Op::Retry(.., reply) => {
                drop(reply.send(Err(shared(error))))
            }
            Op::Get(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::List(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::ReleaseOrder(.., reply) => drop(reply.send(Err(shared(error)))),
        }
    }
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
            // Checkpoint every 64 MiB of WAL instead of every 4 MiB: a callback body with inline
            // files is up to 4.45 MB, so the default checkpointed after each one. Pages that later
            // orders rewrite (freed when a delivered body is dropped) are now copied once per
            // checkpoint, not once per order. Durability is the WAL's, fsynced at every commit.
            .pragma("wal_autocheckpoint", "16384")
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
            // Nothing runs outside a transaction: every request of the group fails, none is
            // half done.
            error!(error = %e, "could not begin a transaction");
            for op in group.drain(..) {
                op.fail(&e);
            }
            continue;
        }
        // Accepts, callback bodies and settles go first, a few statements each for the whole
        // group: every statement is a round trip to SQLite's thread. An order's second body or
        // settle in one group (not seen in practice) runs on its own, after them.
        let mut accepts = Vec::new();
        let mut saves = Vec::new();
        let mut settles = Vec::new();
        let mut batched = HashSet::new();
        let mut others = Vec::new();
        for op in group.drain(..) {
            match op {
                Op::Accept(order, owner, lease, reply) => accepts.push((order, owner, lease, reply)),
                Op::SaveResult(id, fence, body, reply) if batched.insert(("save", id.clone())) => {
                    saves.push((id, fence, body, reply));
                }
                Op::Settle(id, fence, settle, reply) if batched.insert(("settle", id.clone())) => {
                    settles.push((id, fence, settle, reply));
                }
                other => others.push(other),
            }
        }
        for chunk in chunks(accepts, ACCEPT_CHUNK) {
            answers.extend(accept_many(&mut connection, chunk).await);
        }
        for chunk in chunks(saves, SAVE_CHUNK) {
            answers.extend(save_many(&mut connection, chunk).await);
        }
        for chunk in chunks(settles, SETTLE_CHUNK) {
            answers.extend(settle_many(&mut connection, chunk).await);
        }
        for op in others {
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
        Op::Accept(order, owner, lease, reply) => {
            only(accept_many(c, vec![(order, owner, lease, reply)]).await)
        }
        Op::Claim(owner, lease, limit, reply) => {
            let result = atomic(c, async |c: &mut SqliteConnection| {
                claim(c, &owner, lease, limit).await
            })
            .await;
            Answer::new(reply, result)
        }
        Op::Heartbeat(owner, lease, reply) => {
            let result = sqlx::query(HEARTBEAT)
                .bind(now_ms() + ms(lease))
                .bind(owner)
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::StartRun(id, fence, reply) => {
            let result = sqlx::query_scalar(START_RUN)
                .bind(id)
                .bind(fence)
                .fetch_optional(&mut *c)
                .await
                .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::SaveResult(id, fence, body, reply) => only(save_many(c, vec![(id, fence, body, reply)]).await),
        Op::Settle(id, fence, settle, reply) => only(settle_many(c, vec![(id, fence, settle, reply)]).await),
        Op::Release(owner, interrupted, reply) => Answer::new(reply, release(c, &owner, &interrupted).await),
        Op::Get(id, reply) => {
            let result = sqlx::query(concat!(select_records!(), " WHERE o.order_id = $1"))
                .bind(id)
                .fetch_optional(&mut *c)
                .await
                .and_then(|row| row.as_ref().map(record).transpose())
                .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::List(state, limit, reply) => {
            let result = sqlx::query(concat!(
                select_records!(),
                " WHERE ($1 IS NULL OR o.state = $1) ORDER BY o.rowid LIMIT $2"
            ))
            .bind(state.map(OrderState::as_str))
            .bind(i64::from(limit))
            .fetch_all(&mut *c)
            .await
            .and_then(|rows| rows.iter().map(record).collect())
            .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::Purge(before, reply) => {
            let result = atomic(c, async |c: &mut SqliteConnection| purge(c, before).await).await;
            Answer::new(reply, result)
        }
        Op::ReleaseOrder(id, fence, reply) => {
            let result = sqlx::query(RELEASE_ORDER)
                .bind(id)
                .bind(fence)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .map_err(StoreError::from);
            Answer::new(reply, result)
        }
        Op::Retry(id, reply) => {
            let result = sqlx::query(RETRY)
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

/// An accept waiting for its group.
type Accepting = (
    NewOrder,
    String,
    Duration,
    oneshot::Sender<Result<Option<Claimed>, StoreError>>,
);

/// Accepts per query: 11 parameters each, well under SQLite's limit of 32,766.
const ACCEPT_CHUNK: usize = 256;

fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(size).collect());
    }
    chunks
}

/// Inserts a group of new orders in one round trip to SQLite's thread: one statement for the
/// orders and one for their bodies, inside a savepoint so that an order is never stored without
/// its body. An `order_id` already known (or twice in the group) is a duplicate.
async fn accept_many(c: &mut SqliteConnection, accepts: Vec<Accepting>) -> Vec<Answer> {
    let now = now_ms();
    let mut query = QueryBuilder::<Sqlite>::new(
        "SAVEPOINT accept;
         INSERT INTO shorts_orders (order_id, short, callback_url, state, runs, fence, owner, lease_until, received_at) ",
    );
    query.push_values(&accepts, |mut row, (order, owner, lease, _)| {
        row.push_bind(&order.id)
            .push_bind(&order.short)
            .push_bind(&order.callback_url)
            .push_bind("received")
            .push_bind(i32::from(order.started))
            .push_bind(1_i64)
            .push_bind(owner)
            .push_bind(now + ms(*lease))
            .push_bind(now);
    });
    // A known order keeps the body it came with: bodies are written and purged with their orders,
    // so an `order_id` has a body exactly when it has an order.
    query.push(
        " ON CONFLICT (order_id) DO NOTHING RETURNING order_id;
         INSERT INTO shorts_payloads (order_id, payload) ",
    );
    query.push_values(&accepts, |mut row, (order, ..)| {
        row.push_bind(&order.id).push_bind(order.payload.as_ref());
    });
    query.push(" ON CONFLICT (order_id) DO NOTHING; RELEASE accept");
    let inserted = query.build_query_scalar::<String>().fetch_all(&mut *c).await;
    let mut inserted: HashSet<String> = match inserted {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            // Undoes whichever of the statements ran (and fails harmlessly if none did).
            let _ = sqlx::query("ROLLBACK TO accept; RELEASE accept")
                .execute(&mut *c)
                .await;
            return failed(accepts, &e);
        }
    };
    accepts
        .into_iter()
        .map(|(order, _, _, reply)| {
            let claimed = inserted.remove(&order.id).then(|| Claimed {
                fence: 1,
                attempts: 0,
                result: None,
                started: order.started,
                id: order.id,
                short: order.short,
                payload: order.payload,
                callback_url: order.callback_url,
            });
            Answer::new(reply, Ok(claimed))
        })
        .collect()
}

/// Answers every accept of a group with the error that stopped it (the caller has undone what the
/// group did).
fn failed(accepts: Vec<Accepting>, error: &sqlx::Error) -> Vec<Answer> {
    accepts
        .into_iter()
        .map(|(.., reply)| Answer::new(reply, Err(shared(error))))
        .collect()
}

/// One error for each of the several requests it failed.
fn shared(error: &impl std::fmt::Display) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(error.to_string()))
}

/// The answer of a batch of one request.
fn only(mut answers: Vec<Answer>) -> Answer {
    answers.pop().unwrap_or_else(|| Answer(Box::new(|_| {})))
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
    let mut claims = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut claimed = claimed(row)?;
        let (payload, result): (Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT p.payload, r.body FROM shorts_payloads p
             LEFT JOIN shorts_results r ON r.order_id = p.order_id WHERE p.order_id = $1",
        )
        .bind(&claimed.id)
        .fetch_one(&mut *c)
        .await?;
        claimed.payload = Bytes::from(payload);
        claimed.result = result.map(Bytes::from);
        claims.push(claimed);
    }
    Ok(claims)
}

/// A callback body waiting for its group: id, fence, body.
type Saving = (String, i64, Bytes, oneshot::Sender<Result<bool, StoreError>>);

/// Bodies per statement: each is up to the inline limit (4.45 MB), so a chunk stays under 300 MB.
const SAVE_CHUNK: usize = 64;

/// Stores a group's callback bodies: one statement moves the orders whose fence is current to
/// delivery, one stores their bodies; both or neither.
async fn save_many(c: &mut SqliteConnection, saves: Vec<Saving>) -> Vec<Answer> {
    let stored = atomic(c, async |c: &mut SqliteConnection| {
        // `FROM (VALUES ...)`, not `(order_id, fence) IN (VALUES ...)`: SQLite looks each row up
        // by the primary key for the first, and scans the table for the second.
        let mut mark = QueryBuilder::<Sqlite>::new(
            "UPDATE shorts_orders SET state = 'delivering', next_at = NULL FROM (",
        );
        mark.push_values(&saves, |mut row, (id, fence, ..)| {
            row.push_bind(id).push_bind(fence);
        });
        mark.push(
            ") AS v WHERE shorts_orders.order_id = v.column1 AND shorts_orders.fence = v.column2
             RETURNING shorts_orders.order_id",
        );
        let marked: HashSet<String> = mark
            .build_query_scalar::<String>()
            .fetch_all(&mut *c)
            .await?
            .into_iter()
            .collect();
        let current: Vec<&Saving> = saves.iter().filter(|(id, ..)| marked.contains(id)).collect();
        if !current.is_empty() {
            let mut bodies = QueryBuilder::<Sqlite>::new("INSERT INTO shorts_results (order_id, body) ");
            bodies.push_values(&current, |mut row, (id, _, body, _)| {
                row.push_bind(id).push_bind(body.as_ref());
            });
            bodies.push(replacing_body!());
            bodies.build().execute(&mut *c).await?;
        }
        Ok(marked)
    })
    .await;
    answer_each(saves.into_iter().map(|(id, .., reply)| (id, reply)), stored)
}

/// A settle waiting for its group: id, fence, outcome.
type Settling = (String, i64, Settle, oneshot::Sender<Result<bool, StoreError>>);

/// Settles per statement: 6 parameters each.
const SETTLE_CHUNK: usize = 256;

/// Records a group's delivery outcomes in one statement (each under its fence), then drops the
/// long success bodies of those delivered.
async fn settle_many(c: &mut SqliteConnection, settles: Vec<Settling>) -> Vec<Answer> {
    let mut rows = Vec::with_capacity(settles.len());
    let mut replies = Vec::with_capacity(settles.len());
    for (id, fence, settle, reply) in settles {
        rows.push((id, fence, settled(settle)));
        replies.push(reply);
    }
    let mut update = QueryBuilder::<Sqlite>::new(
        "UPDATE shorts_orders SET state = v.column3, next_at = v.column4,
         attempts = COALESCE(v.column5, attempts), last_error = COALESCE(v.column6, last_error),
         owner = NULL FROM (",
    );
    update.push_values(
        &rows,
        |mut row, (id, fence, (state, next_at, attempts, error))| {
            row.push_bind(id)
                .push_bind(fence)
                .push_bind(*state)
                .push_bind(next_at)
                .push_bind(attempts)
                .push_bind(error);
        },
    );
    update.push(
        ") AS v WHERE shorts_orders.order_id = v.column1 AND shorts_orders.fence = v.column2
         RETURNING shorts_orders.order_id",
    );
    let done: Result<HashSet<String>, StoreError> = update
        .build_query_scalar::<String>()
        .fetch_all(&mut *c)
        .await
        .map(|ids| ids.into_iter().collect())
        .map_err(StoreError::from);
    if let Ok(done) = &done {
        let delivered: Vec<&str> = rows
            .iter()
            .filter(|(id, _, (state, ..))| *state == OrderState::Delivered.as_str() && done.contains(id))
            .map(|(id, ..)| id.as_str())
            .collect();
        drop_bodies(c, &delivered).await;
    }
    answer_each(rows.into_iter().map(|(id, ..)| id).zip(replies), done)
}

/// Answers each request with whether its order is in `done`, or with the error of the batch.
fn answer_each(
    replies: impl Iterator<Item = (String, oneshot::Sender<Result<bool, StoreError>>)>,
    done: Result<HashSet<String>, StoreError>,
) -> Vec<Answer> {
    replies
        .map(|(id, reply)| match &done {
            Ok(done) => Answer::new(reply, Ok(done.contains(&id))),
            Err(e) => Answer::new(reply, Err(shared(e))),
        })
        .collect()
}

/// Runs `work` so that it takes effect whole or not at all inside the group's transaction.
async fn atomic<T>(
    c: &mut SqliteConnection,
    work: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    sqlx::query("SAVEPOINT op").execute(&mut *c).await?;
    let result = work(&mut *c).await;
    if result.is_err() {
        let _ = sqlx::query("ROLLBACK TO op").execute(&mut *c).await;
    }
    let _ = sqlx::query("RELEASE op").execute(&mut *c).await;
    result
}

/// Drops the long bodies of orders just delivered. Failing leaves them in place, which is
/// harmless: the settles they follow stand.
async fn drop_bodies(c: &mut SqliteConnection, ids: &[&str]) {
    if ids.is_empty() {
        return;
    }
    let dropped = drop_delivered_bodies::<Sqlite>(ids.iter().copied())
        .build()
        .execute(&mut *c)
        .await;
    if let Err(e) = dropped {
        warn!(error = %e, orders = ids.len(), "could not drop delivered callback bodies");
    }
}

async fn purge(c: &mut SqliteConnection, before: i64) -> Result<u64, StoreError> {
    sqlx::query(PURGE_PAYLOADS).bind(before).execute(&mut *c).await?;
    sqlx::query(PURGE_RESULTS).bind(before).execute(&mut *c).await?;
    let done = sqlx::query(PURGE_ORDERS).bind(before).execute(&mut *c).await?;
    Ok(done.rows_affected())
}

async fn release(c: &mut SqliteConnection, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
    for id in interrupted {
        sqlx::query("UPDATE shorts_orders SET runs = runs - 1 WHERE order_id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&mut *c)
            .await?;
    }
    let done = sqlx::query(RELEASE).bind(owner).execute(&mut *c).await?;
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

    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        self.ask(|reply| Op::Purge(before, reply)).await
    }

    async fn release_order(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::ReleaseOrder(id, fence, reply)).await
    }
}
