//! The embedded default: SQLite in WAL mode with `synchronous=FULL`, behind one writer task that
//! commits every request waiting for it in one transaction, so durability costs one fsync per
//! group of concurrent orders instead of one per order.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{Connection as _, QueryBuilder, Row as _, Sqlite, SqliteConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, warn};

use super::sql::{
    HEARTBEAT, PURGE_DEAD_PAYLOADS, PURGE_ORDERS, PURGE_PAYLOADS, PURGE_RESULTS, RELEASE, RELEASE_ORDER,
    RETRY, SELECT_PAYLOAD_LENGTH_AND_RESULT, START_RUN, Settled, claimable, claimed_columns,
    drop_delivered_bodies, mappers, push_drop_delivered_bodies, replacing_body, select_records, settle_set,
    settled, started, token_columns,
};
use super::{Claimed, NewOrder, OrderRecord, OrderState, Settle, Started, Store, StoreError, ms, now_ms};

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
    StartRun(String, i64, oneshot::Sender<Result<Option<Started>, StoreError>>),
    SaveResult(String, i64, Bytes, oneshot::Sender<Result<bool, StoreError>>),
    Settle(
        String,
        i64,
        Settle,
        i32,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    Release(String, Vec<String>, oneshot::Sender<Result<u64, StoreError>>),
    Get(String, oneshot::Sender<Result<Option<OrderRecord>, StoreError>>),
    List(
        Option<OrderState>,
        u32,
        oneshot::Sender<Result<Vec<OrderRecord>, StoreError>>,
    ),
    Retry(String, oneshot::Sender<Result<bool, StoreError>>),
    Purge(i64, oneshot::Sender<Result<u64, StoreError>>),
    PurgeDead(i64, oneshot::Sender<Result<u64, StoreError>>),
    ReleaseOrder(String, i64, oneshot::Sender<Result<(), StoreError>>),
}

impl Op {
    /// Answers the request with `error`.
    fn fail(self, error: &sqlx::Error) {
        match self {
            Op::Accept(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::Claim(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::Heartbeat(.., reply)
            | Op::Release(.., reply)
            | Op::Purge(.., reply)
            | Op::PurgeDead(.., reply) => drop(reply.send(Err(shared(error)))),
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
    /// Opens the database at `path` (see [`connect`]) and starts its writer.
    pub(crate) async fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = connect(path).await?;
        let checkpoints = SqliteConnection::connect_with(&options(path)?).await?;
        let (commits, committed) = watch::channel(());
        let finish = Arc::new(AtomicBool::new(false));
        tokio::spawn(checkpointer(checkpoints, committed, Arc::clone(&finish)));
        let (ops, receiver) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(writer(connection, receiver, commits, finish));
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

/// Opens (creating it if needed) the database at `path` and migrates it.
async fn connect(path: &Path) -> Result<SqliteConnection, StoreError> {
    create_private(path)?;
    let mut connection = SqliteConnection::connect_with(&options(path)?).await?;
    sqlx::migrate!("./migrations/sqlite").run(&mut connection).await?;
    Ok(connection)
}

/// Creates the database file readable and writable by its owner only (`0600`), whatever the
/// umask, before SQLite opens it: SQLite creates the `-wal` and `-shm` files beside it with the
/// database file's own mode. An existing file is left as it is, with a warning when other users
/// can read it or the files beside it.
#[cfg(unix)]
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let failed = |source| StoreError::File {
        path: path.to_owned(),
        source,
    };
    match created {
        // The umask may have cleared bits of the mode asked for: set it whole.
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                let file = Path::new(&file);
                if let Some(mode) = readable_by_others(file) {
                    warn!(
                        file = %file.display(),
                        mode = format!("{mode:o}"),
                        "the order database can be read by other users; it holds buyers' orders: `chmod 600` it"
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// The permission bits of the file at `path` when its group or other users may read it.
#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

fn options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // `checkpointer` copies the WAL into the database beside the writer. A commit checkpoints
        // only if the WAL ever reaches 64 MiB all the same (the checkpointer failing or behind),
        // and the file is cut back to 64 MiB when the WAL starts over. Durability is the WAL's,
        // fsynced at every commit.
        .pragma("wal_autocheckpoint", "16384")
        .pragma("journal_size_limit", "67108864")
        .busy_timeout(Duration::from_secs(10)))
}

/// How long the checkpointer waits after a commit before it checkpoints: the commits in between
/// are copied to the database file in one checkpoint.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(250);

/// Copies committed pages from the WAL into the database file, on a connection (and so a thread)
/// of its own, a moment after commits.
///
/// A checkpoint in the writer held up every group behind it: with SQLite's automatic checkpoints
/// every 64 MiB of WAL, about 60 ms at 4,000 orders a second. Beside the writer, a checkpoint
/// never quite catches up with it, and SQLite starts the WAL over (instead of growing it) only
/// once every frame is copied; so the writer then copies what came in meanwhile itself
/// (`finish`), between two groups.
async fn checkpointer(
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
async fn checkpoint(connection: &mut SqliteConnection) -> bool {
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

/// Commits requests in groups: waits for one, takes every other already waiting, runs them all in
/// one transaction, commits, then answers each.
async fn writer(
    mut connection: SqliteConnection,
    mut ops: mpsc::Receiver<Op>,
    commits: watch::Sender<()>,
    finish: Arc<AtomicBool>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while ops.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (batch, others) = Batch::sort(group.drain(..));
        commit_group(&mut connection, batch, others).await;
        commits.send_replace(());
        // Kept for the next group when another checkpoint was running.
        if finish.load(Ordering::Relaxed) && checkpoint(&mut connection).await {
            finish.store(false, Ordering::Relaxed);
        }
    }
}

/// Writes a group in one transaction, then answers each of its requests.
///
/// Every statement is a round trip to SQLite's thread, so the group's accepts, callback bodies and
/// settles are written by a few multi-row statements, sent as one query with the transaction's
/// start and (when no other request waits) its commit: a lone order's accept is one round trip.
/// If anything in that query fails, it is undone and each kind is written on its own, so that a
/// failing statement fails only its own requests.
async fn commit_group(c: &mut SqliteConnection, batch: Batch, others: Vec<Op>) {
    let mut answers = match write_whole(c, &batch, others.is_empty()).await {
        Ok(reported) if others.is_empty() => {
            batch.answers(Ok(reported)).into_iter().for_each(Answer::send);
            return;
        }
        Ok(reported) => batch.answers(Ok(reported)),
        Err(e) => {
            warn!(error = %e, "a group's writes failed together; writing them one kind at a time");
            // Fails harmlessly when the failure already ended the transaction.
            let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
            if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await {
                // Nothing runs outside a transaction: every request of the group fails, none is
                // half done.
                error!(error = %e, "could not begin a transaction");
                batch.answers(Err(&e)).into_iter().for_each(Answer::send);
                others.into_iter().for_each(|op| op.fail(&e));
                return;
            }
            match write_apart(c, batch).await {
                (answers, false) => answers,
                (answers, true) => return abandon(c, answers, others).await,
            }
        }
    };
    let mut others = others.into_iter();
    while let Some(op) = others.next() {
        let (answer, lost) = run(c, op).await;
        answers.push(answer);
        if lost {
            return abandon(c, answers, others.collect()).await;
        }
    }
    let committed = sqlx::query("COMMIT").execute(&mut *c).await;
    match committed {
        Ok(_) => answers.into_iter().for_each(Answer::send),
        Err(e) => {
            error!(error = %e, "could not commit a group of orders");
            let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
            answers.into_iter().for_each(|answer| answer.fail(&e));
        }
    }
}

/// Ends a group whose transaction an error may have ended: SQLite may roll a whole transaction back
/// by itself, and what ran after would then commit alone. Everything is rolled back, nothing more
/// runs, and every request of the group fails.
async fn abandon(c: &mut SqliteConnection, answers: Vec<Answer>, others: Vec<Op>) {
    error!("a group's transaction may have ended early; rolling it back and failing the group");
    let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
    let ended = ended();
    answers.into_iter().for_each(|answer| answer.fail(&ended));
    others.into_iter().for_each(|op| op.fail(&ended));
}

/// Whether an error may have ended the transaction it happened in. SQLite may roll the whole
/// transaction back after a full disk, an I/O error, a lock, lack of memory or an interrupt; an
/// error of the connection itself (not SQLite's, nor in reading a row) leaves its state unknown.
fn may_end_transaction(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            // SQLITE_BUSY, SQLITE_NOMEM, SQLITE_INTERRUPT, SQLITE_IOERR, SQLITE_FULL, and their
            // extended codes.
            .is_none_or(|code| matches!(code & 0xff, 5 | 7 | 9 | 10 | 13)),
        // Raised while reading a row that SQLite returned: the statement itself ran.
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_) => false,
        _ => true,
    }
}

/// The answer to a request, and whether its error may have ended the group's transaction.
fn answered<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> (Answer, bool) {
    let lost = matches!(&result, Err(StoreError::Database(e)) if may_end_transaction(e));
    (Answer::new(reply, result), lost)
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

    /// Answers with `error` instead: the group it belongs to was not committed.
    fn fail(self, error: &sqlx::Error) {
        (self.0)(Some(shared(error)));
    }
}

/// Runs one request inside the group's transaction: its answer, and whether its error may have ended
/// that transaction.
async fn run(c: &mut SqliteConnection, op: Op) -> (Answer, bool) {
    match op {
        op @ (Op::Accept(..) | Op::SaveResult(..) | Op::Settle(..)) => {
            let (batch, _) = Batch::sort(std::iter::once(op));
            let (answers, lost) = write_apart(c, batch).await;
            (only(answers), lost)
        }
        Op::Claim(owner, lease, limit, reply) => {
            let result = atomic(c, async |c: &mut SqliteConnection| {
                claim(c, &owner, lease, limit).await
            })
            .await;
            answered(reply, result)
        }
        Op::Heartbeat(owner, lease, reply) => {
            let result = sqlx::query(HEARTBEAT)
                .bind(now_ms() + ms(lease))
                .bind(owner)
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from);
            answered(reply, result)
        }
        Op::StartRun(id, fence, reply) => {
            let result = sqlx::query(START_RUN)
                .bind(id)
                .bind(fence)
                .fetch_optional(&mut *c)
                .await
                .and_then(|row| row.as_ref().map(started).transpose())
                .map_err(StoreError::from);
            answered(reply, result)
        }
        Op::Release(owner, interrupted, reply) => answered(reply, release(c, &owner, &interrupted).await),
        Op::Get(id, reply) => {
            let result = sqlx::query(concat!(select_records!(), " WHERE o.order_id = $1"))
                .bind(id)
                .fetch_optional(&mut *c)
                .await
                .and_then(|row| row.as_ref().map(record).transpose())
                .map_err(StoreError::from);
            answered(reply, result)
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
            answered(reply, result)
        }
        Op::Purge(before, reply) => {
            let result = atomic(c, async |c: &mut SqliteConnection| purge(c, before).await).await;
            answered(reply, result)
        }
        Op::PurgeDead(before, reply) => {
            let result = sqlx::query(PURGE_DEAD_PAYLOADS)
                .bind(before)
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from);
            answered(reply, result)
        }
        Op::ReleaseOrder(id, fence, reply) => {
            let result = sqlx::query(RELEASE_ORDER)
                .bind(id)
                .bind(fence)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .map_err(StoreError::from);
            answered(reply, result)
        }
        Op::Retry(id, reply) => {
            let result = sqlx::query(RETRY)
                .bind(now_ms())
                .bind(id)
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected() == 1)
                .map_err(StoreError::from);
            answered(reply, result)
        }
    }
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
        // The webhook body's length only: it is read when the order gets a slot.
        let (length, result): (Option<i64>, Option<Vec<u8>>) =
            sqlx::query_as(SELECT_PAYLOAD_LENGTH_AND_RESULT)
                .bind(&claimed.id)
                .fetch_one(&mut *c)
                .await?;
        claimed.payload_len = length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
        claimed.result = result.map(Bytes::from);
        claims.push(claimed);
    }
    Ok(claims)
}

/// An accept waiting for its group.
type Accepting = (
    NewOrder,
    String,
    Duration,
    oneshot::Sender<Result<Option<Claimed>, StoreError>>,
);

/// A callback body waiting for its group: id, fence, body.
type Saving = (String, i64, Bytes, oneshot::Sender<Result<bool, StoreError>>);

/// A settle waiting for its group: id, fence, new values (see [`settled`]).
type Settling = (String, i64, Settled, oneshot::Sender<Result<bool, StoreError>>);

/// Accepts per statement: 13 parameters each, well under SQLite's limit of 32,766.
const ACCEPT_CHUNK: usize = 256;

/// Bodies per statement, and per savepoint when a group's kinds are written apart: each body is up
/// to the inline limit (4.45 MB), so such a query holds under 300 MB. The whole group's query
/// holds all its bodies, as many as its shorts run at once.
const SAVE_CHUNK: usize = 64;

/// Settles per statement: 7 parameters each.
const SETTLE_CHUNK: usize = 256;

/// A group's accepts, callback bodies and settles, written by multi-row statements.
struct Batch {
    accepts: Vec<Accepting>,
    saves: Vec<Saving>,
    settles: Vec<Settling>,
    now: i64,
}

impl Batch {
    /// Splits a group into what multi-row statements write and the other requests, which run one
    /// by one after them. An order's second body or settle in one group (not seen in practice) is
    /// one of the others.
    fn sort(group: impl Iterator<Item = Op>) -> (Batch, Vec<Op>) {
        let mut batch = Batch {
            accepts: Vec::new(),
            saves: Vec::new(),
            settles: Vec::new(),
            now: now_ms(),
        };
        let mut batched = HashSet::new();
        let mut others = Vec::new();
        for op in group {
            match op {
                Op::Accept(order, owner, lease, reply) => batch.accepts.push((order, owner, lease, reply)),
                Op::SaveResult(id, fence, body, reply) if batched.insert(("save", id.clone())) => {
                    batch.saves.push((id, fence, body, reply));
                }
                Op::Settle(id, fence, settle, posts, reply) if batched.insert(("settle", id.clone())) => {
                    batch.settles.push((id, fence, settled(settle, posts), reply));
                }
                other => others.push(other),
            }
        }
        (batch, others)
    }

    /// The answers to the batch's requests, from what its statements reported.
    fn answers(self, reported: Result<Reported, &sqlx::Error>) -> Vec<Answer> {
        let Batch {
            accepts,
            saves,
            settles,
            ..
        } = self;
        let (accepted, saved, done) = match reported {
            Ok(r) => (Ok(r.accepted), Ok(r.saved), Ok(r.settled)),
            Err(e) => (Err(e), Err(e), Err(e)),
        };
        let mut answers = accepted_answers(accepts, accepted);
        answers.extend(answer_each(
            saves.into_iter().map(|(id, .., reply)| (id, reply)),
            saved,
        ));
        answers.extend(answer_each(
            settles.into_iter().map(|(id, .., reply)| (id, reply)),
            done,
        ));
        answers
    }
}

/// What a query's statements reported: the `order_id`s they accepted, moved to delivery with
/// their callback bodies, and settled.
#[derive(Default)]
struct Reported {
    accepted: HashSet<String>,
    saved: HashSet<String>,
    settled: HashSet<String>,
}

/// The first column of each row a batch's statements return: which kind of statement reported the
/// `order_id` in the second.
const ACCEPTED: i64 = 0;
const SAVED: i64 = 1;
const SETTLED: i64 = 2;

/// Runs a query of batch statements and sorts the `order_id`s they report.
async fn fetch(c: &mut SqliteConnection, mut query: QueryBuilder<Sqlite>) -> Result<Reported, sqlx::Error> {
    // The rows are decoded once the query has run to its end: an error from `fetch_all` is then a
    // statement's, which stopped the query before its `COMMIT`.
    let rows = query.build().fetch_all(&mut *c).await?;
    let mut reported = Reported::default();
    for row in &rows {
        let (Ok(kind), Ok(id)) = (row.try_get::<i64, _>(0), row.try_get::<String, _>(1)) else {
            error!("a batch statement reported a row that is not (kind, order_id)");
            continue;
        };
        match kind {
            ACCEPTED => reported.accepted.insert(id),
            SAVED => reported.saved.insert(id),
            _ => reported.settled.insert(id),
        };
    }
    Ok(reported)
}

/// Begins the group's transaction and writes the whole batch in one query, committing it too when
/// `commit`.
async fn write_whole(c: &mut SqliteConnection, batch: &Batch, commit: bool) -> Result<Reported, sqlx::Error> {
    let mut query = QueryBuilder::new("BEGIN IMMEDIATE");
    for chunk in batch.accepts.chunks(ACCEPT_CHUNK) {
        push_accepts(&mut query, chunk, batch.now);
    }
    for chunk in batch.saves.chunks(SAVE_CHUNK) {
        push_saves(&mut query, chunk);
    }
    for chunk in batch.settles.chunks(SETTLE_CHUNK) {
        push_settles(&mut query, chunk);
        // A settle that did not take (a stale fence) leaves its order's state as it was: the drop
        // looks for orders recorded as delivered.
        let delivered = chunk
            .iter()
            .filter(|(_, _, (state, ..), _)| *state == OrderState::Delivered.as_str())
            .map(|(id, ..)| id.as_str());
        push_drop(&mut query, delivered);
    }
    if commit {
        query.push("; COMMIT");
    }
    fetch(c, query).await
}

/// Writes each kind of the batch's requests on its own, in a savepoint each, inside the group's
/// transaction: a failing statement fails only its own requests.
async fn write_apart(c: &mut SqliteConnection, batch: Batch) -> (Vec<Answer>, bool) {
    let Batch {
        accepts,
        saves,
        settles,
        now,
    } = batch;
    let mut answers = Vec::new();
    // Once an error may have ended the transaction, nothing more runs (see `abandon`).
    let mut lost = false;
    for chunk in chunks(accepts, ACCEPT_CHUNK) {
        let mut reported = apart(c, &mut lost, |query| push_accepts(query, &chunk, now)).await;
        answers.extend(accepted_answers(chunk, ids(&mut reported, |r| &mut r.accepted)));
    }
    for chunk in chunks(saves, SAVE_CHUNK) {
        let mut reported = apart(c, &mut lost, |query| push_saves(query, &chunk)).await;
        let replies = chunk.into_iter().map(|(id, .., reply)| (id, reply));
        answers.extend(answer_each(replies, ids(&mut reported, |r| &mut r.saved)));
    }
    for chunk in chunks(settles, SETTLE_CHUNK) {
        let mut reported = apart(c, &mut lost, |query| push_settles(query, &chunk)).await;
        if let Ok(reported) = &reported {
            let delivered: Vec<&str> = chunk
                .iter()
                .filter(|(id, _, (state, ..), _)| {
                    *state == OrderState::Delivered.as_str() && reported.settled.contains(id)
                })
                .map(|(id, ..)| id.as_str())
                .collect();
            lost |= drop_bodies(c, &delivered).await;
        }
        let replies = chunk.into_iter().map(|(id, .., reply)| (id, reply));
        answers.extend(answer_each(replies, ids(&mut reported, |r| &mut r.settled)));
    }
    (answers, lost)
}

/// The error of a request that did not run because an earlier one may have ended the transaction.
fn ended() -> sqlx::Error {
    sqlx::Error::Protocol("an earlier request's error ended the group's transaction".to_owned())
}

/// Runs the statements `push` writes in a savepoint of their own, undone if one fails; runs
/// nothing once `lost` (an earlier error may have ended the transaction), and sets it when its own
/// error may have.
async fn apart(
    c: &mut SqliteConnection,
    lost: &mut bool,
    push: impl FnOnce(&mut QueryBuilder<Sqlite>),
) -> Result<Reported, sqlx::Error> {
    if *lost {
        return Err(ended());
    }
    let mut query = QueryBuilder::new("SAVEPOINT apart");
    push(&mut query);
    query.push("; RELEASE apart");
    let reported = fetch(c, query).await;
    if let Err(e) = &reported {
        *lost = may_end_transaction(e);
        // Undoes whichever of the statements ran (and fails harmlessly if none did).
        let _ = sqlx::query("ROLLBACK TO apart; RELEASE apart")
            .execute(&mut *c)
            .await;
    }
    reported
}

/// The `order_id`s of one kind in what a query reported, or its error.
fn ids(
    reported: &mut Result<Reported, sqlx::Error>,
    kind: fn(&mut Reported) -> &mut HashSet<String>,
) -> Result<HashSet<String>, &sqlx::Error> {
    match reported {
        Ok(reported) => Ok(std::mem::take(kind(reported))),
        Err(e) => Err(e),
    }
}

fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(size).collect());
    }
    chunks
}

/// Inserts new orders, then their bodies, reporting each order inserted; an `order_id` already
/// known (or twice in the group) is a duplicate. An order is never stored without its body: the
/// caller runs both or neither.
fn push_accepts(query: &mut QueryBuilder<Sqlite>, accepts: &[Accepting], now: i64) {
    query.push(
        "; INSERT INTO shorts_orders (order_id, short, callback_url, state, runs, fence, owner, lease_until, received_at,
                                     token_at, token_len) ",
    );
    query.push_values(accepts, |mut row, (order, owner, lease, _)| {
        let (token_at, token_len) = token_columns(order.job_token.as_ref());
        row.push_bind(&order.id)
            .push_bind(&order.short)
            .push_bind(&order.callback_url)
            .push_bind("received")
            .push_bind(i32::from(order.started))
            .push_bind(1_i64)
            .push_bind(owner)
            .push_bind(now + ms(*lease))
            .push_bind(now)
            .push_bind(token_at)
            .push_bind(token_len);
    });
    // A known order keeps the body it came with: bodies are written and purged with their orders,
    // so an `order_id` has a body exactly when it has an order.
    query
        .push(" ON CONFLICT (order_id) DO NOTHING RETURNING ")
        .push(ACCEPTED)
        .push(", order_id; INSERT INTO shorts_payloads (order_id, payload) ");
    query.push_values(accepts, |mut row, (order, ..)| {
        row.push_bind(&order.id).push_bind(order.payload.as_ref());
    });
    query.push(" ON CONFLICT (order_id) DO NOTHING");
}

/// Replaces the `job_token` of the orders whose fence is current by `null` in their stored webhook
/// bodies, then moves them to delivery, reporting each, then stores their callback bodies (the
/// same orders: the move keeps the fence). Orders without a token cost one look-up of their row.
fn push_saves(query: &mut QueryBuilder<Sqlite>, saves: &[Saving]) {
    // `FROM (VALUES ...)`, not `(order_id, fence) IN (VALUES ...)`: SQLite looks each row up by the
    // primary key for the first, and scans the table for the second.
    query.push(
        "; UPDATE shorts_payloads
         SET payload = CAST(substr(payload, 1, o.token_at) || 'null'
                            || substr(payload, o.token_at + o.token_len + 1) AS BLOB)
         FROM (",
    );
    query.push_values(saves, |mut row, (id, fence, ..)| {
        row.push_bind(id).push_bind(fence);
    });
    query.push(
        ") AS v JOIN shorts_orders o ON o.order_id = v.column1
         WHERE shorts_payloads.order_id = v.column1 AND o.fence = v.column2 AND o.token_at IS NOT NULL",
    );
    query.push(
        "; UPDATE shorts_orders SET state = 'delivering', next_at = NULL, token_at = NULL, token_len = NULL
         FROM (",
    );
    query.push_values(saves, |mut row, (id, fence, ..)| {
        row.push_bind(id).push_bind(fence);
    });
    query
        .push(
            ") AS v WHERE shorts_orders.order_id = v.column1 AND shorts_orders.fence = v.column2
             RETURNING ",
        )
        .push(SAVED)
        .push(", shorts_orders.order_id");
    // A statement per body: a multi-row `SELECT ... FROM (VALUES ...)` would copy every body into
    // a temporary table first.
    for (id, fence, body, _) in saves {
        query.push("; INSERT INTO shorts_results (order_id, body) SELECT ");
        query.push_bind(id).push(", ").push_bind(body.as_ref());
        query.push(" FROM shorts_orders WHERE order_id = ");
        query.push_bind(id).push(" AND fence = ").push_bind(fence);
        query.push(replacing_body!());
    }
}

/// Records delivery outcomes, each under its fence, reporting each order settled.
fn push_settles(query: &mut QueryBuilder<Sqlite>, settles: &[Settling]) {
    query.push(concat!(
        "; ",
        settle_set!("v.column3", "v.column4", "v.column5", "v.column6", "v.column7"),
        " FROM ("
    ));
    query.push_values(
        settles,
        |mut row, (id, fence, (state, next_at, steps, posts, error), _)| {
            row.push_bind(id)
                .push_bind(fence)
                .push_bind(*state)
                .push_bind(next_at)
                .push_bind(steps)
                .push_bind(posts)
                .push_bind(error);
        },
    );
    query
        .push(
            ") AS v WHERE shorts_orders.order_id = v.column1 AND shorts_orders.fence = v.column2
             RETURNING ",
        )
        .push(SETTLED)
        .push(", shorts_orders.order_id");
}

/// Drops the long bodies of those of `ids` recorded as delivered (nothing when there are none).
fn push_drop<'a>(query: &mut QueryBuilder<Sqlite>, ids: impl Iterator<Item = &'a str>) {
    let mut ids = ids.peekable();
    if ids.peek().is_some() {
        query.push("; ");
        push_drop_delivered_bodies(query, ids);
    }
}

/// Answers each accept: the new order's claim, `None` for a duplicate, or the error of the batch.
fn accepted_answers(accepts: Vec<Accepting>, accepted: Result<HashSet<String>, &sqlx::Error>) -> Vec<Answer> {
    let mut accepted = match accepted {
        Ok(accepted) => accepted,
        Err(e) => {
            return accepts
                .into_iter()
                .map(|(.., reply)| Answer::new(reply, Err(shared(e))))
                .collect();
        }
    };
    accepts
        .into_iter()
        .map(|(order, _, _, reply)| {
            let claimed = accepted.remove(&order.id).then(|| Claimed {
                fence: 1,
                attempts: 0,
                steps: 0,
                result: None,
                started: order.started,
                id: order.id,
                short: order.short,
                payload_len: order.payload.len() as u64,
                callback_url: order.callback_url,
            });
            Answer::new(reply, Ok(claimed))
        })
        .collect()
}

/// Answers each request with whether its order is in `done`, or with the error of the batch.
fn answer_each(
    replies: impl Iterator<Item = (String, oneshot::Sender<Result<bool, StoreError>>)>,
    done: Result<HashSet<String>, &sqlx::Error>,
) -> Vec<Answer> {
    replies
        .map(|(id, reply)| match &done {
            Ok(done) => Answer::new(reply, Ok(done.contains(&id))),
            Err(e) => Answer::new(reply, Err(shared(e))),
        })
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
/// harmless: the settles they follow stand. Returns whether its error may have ended the
/// transaction.
async fn drop_bodies(c: &mut SqliteConnection, ids: &[&str]) -> bool {
    if ids.is_empty() {
        return false;
    }
    let dropped = drop_delivered_bodies::<Sqlite>(ids.iter().copied())
        .build()
        .execute(&mut *c)
        .await;
    match dropped {
        Ok(_) => false,
        Err(e) => {
            warn!(error = %e, orders = ids.len(), "could not drop delivered callback bodies");
            may_end_transaction(&e)
        }
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

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<Started>, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::StartRun(id, fence, reply)).await
    }

    async fn save_result(&self, id: &str, fence: i64, body: Bytes) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::SaveResult(id, fence, body, reply)).await
    }

    async fn settle(&self, id: &str, fence: i64, settle: Settle, posts: i32) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::Settle(id, fence, settle, posts, reply))
            .await
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

    async fn purge_dead(&self, before: i64) -> Result<u64, StoreError> {
        self.ask(|reply| Op::PurgeDead(before, reply)).await
    }

    async fn release_order(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.ask(|reply| Op::ReleaseOrder(id, fence, reply)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::order;

    fn accept(id: &str) -> (Op, oneshot::Receiver<Result<Option<Claimed>, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let lease = Duration::from_secs(60);
        (Op::Accept(order(id), "one".to_owned(), lease, reply), answer)
    }

    async fn state(c: &mut SqliteConnection, id: &str) -> Option<(String, Option<Vec<u8>>)> {
        sqlx::query_as(
            "SELECT o.state, r.body FROM shorts_orders o
             LEFT JOIN shorts_results r ON r.order_id = o.order_id WHERE o.order_id = $1",
        )
        .bind(id)
        .fetch_optional(c)
        .await
        .expect("select")
    }

    /// A group's writes go as one query; when one of its statements fails, the others are written
    /// on their own and only that statement's requests fail.
    #[tokio::test]
    async fn a_failing_statement_fails_only_its_own_requests() {
        let dir = std::env::temp_dir().join(format!("shorts-group-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut c = connect(&dir.join("orders.db")).await.expect("open");
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON shorts_payloads WHEN NEW.order_id = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(&mut c)
        .await
        .expect("trigger");

        // A group that goes through whole: an accept.
        let (op, first) = accept("kept");
        let (batch, others) = Batch::sort(std::iter::once(op));
        commit_group(&mut c, batch, others).await;
        let fence = first
            .await
            .expect("answered")
            .expect("accepted")
            .expect("new")
            .fence;

        // A group whose accepts fail (one of their statement's rows is refused), with a body for
        // the order above and a read among them.
        let (refused, refused_answer) = accept("refused");
        let (fine, fine_answer) = accept("fine");
        let (reply, saved) = oneshot::channel();
        let save = Op::SaveResult("kept".to_owned(), fence, Bytes::from_static(b"done"), reply);
        let (reply, read) = oneshot::channel();
        let get = Op::Get("kept".to_owned(), reply);
        let (batch, others) = Batch::sort([refused, save, fine, get].into_iter());
        assert_eq!(others.len(), 1);
        commit_group(&mut c, batch, others).await;

        assert!(refused_answer.await.expect("answered").is_err());
        assert!(fine_answer.await.expect("answered").is_err());
        assert!(saved.await.expect("answered").expect("saved"));
        let record = read.await.expect("answered").expect("read").expect("record");
        assert_eq!(record.state, OrderState::Delivering);
        assert_eq!(state(&mut c, "refused").await, None);
        assert_eq!(state(&mut c, "fine").await, None);
        assert_eq!(
            state(&mut c, "kept").await,
            Some(("delivering".to_owned(), Some(b"done".to_vec())))
        );
        // No transaction is left open.
        sqlx::query("BEGIN IMMEDIATE; ROLLBACK")
            .execute(&mut c)
            .await
            .expect("no open transaction");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A full disk may end the whole transaction; the accept that ran before it in the same group
    /// must then fail and be gone, not commit on its own.
    #[tokio::test]
    async fn an_error_that_may_end_the_transaction_fails_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("shorts-full-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut c = connect(&dir.join("orders.db")).await.expect("open");
        let (op, first) = accept("kept");
        let (batch, others) = Batch::sort(std::iter::once(op));
        commit_group(&mut c, batch, others).await;
        let fence = first
            .await
            .expect("answered")
            .expect("accepted")
            .expect("new")
            .fence;
        // A database that cannot grow by more than two pages: a 1 MB body fails with SQLITE_FULL.
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut c)
            .await
            .expect("page count");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {}",
            pages + 2
        )))
        .execute(&mut c)
        .await
        .expect("limit");

        let (small, small_answer) = accept("small");
        let (reply, saved) = oneshot::channel();
        let big = Bytes::from(vec![1u8; 1 << 20]);
        let save = Op::SaveResult("kept".to_owned(), fence, big, reply);
        let (reply, read) = oneshot::channel();
        let get = Op::Get("kept".to_owned(), reply);
        let (batch, others) = Batch::sort([small, save, get].into_iter());
        commit_group(&mut c, batch, others).await;

        assert!(small_answer.await.expect("answered").is_err());
        assert!(saved.await.expect("answered").is_err());
        assert!(read.await.expect("answered").is_err());
        assert_eq!(state(&mut c, "small").await, None);
        assert_eq!(state(&mut c, "kept").await, Some(("received".to_owned(), None)));
        sqlx::query("BEGIN IMMEDIATE; ROLLBACK")
            .execute(&mut c)
            .await
            .expect("no open transaction");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A group whose commit fails answers every request with the commit's own error, which is
    /// what an operator reads in the log (a full disk, say), and nothing of it is stored.
    #[tokio::test]
    async fn a_failed_commit_answers_with_its_own_error() {
        let dir = std::env::temp_dir().join(format!("shorts-commit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut c = connect(&dir.join("orders.db")).await.expect("open");
        // A foreign key checked at COMMIT, broken by the order `orphan`'s body.
        sqlx::raw_sql(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parents (id TEXT PRIMARY KEY);
             CREATE TABLE children (parent TEXT REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TRIGGER orphan AFTER INSERT ON shorts_payloads WHEN NEW.order_id = 'orphan'
             BEGIN INSERT INTO children VALUES ('nobody'); END",
        )
        .execute(&mut c)
        .await
        .expect("schema");
        let (orphan, accepted) = accept("orphan");
        let (reply, read) = oneshot::channel();
        let (batch, others) = Batch::sort([orphan, Op::Get("orphan".to_owned(), reply)].into_iter());
        commit_group(&mut c, batch, others).await;
        let error = accepted
            .await
            .expect("answered")
            .expect_err("not committed")
            .to_string();
        assert!(error.contains("FOREIGN KEY constraint failed"), "{error}");
        assert!(read.await.expect("answered").is_err());
        assert_eq!(state(&mut c, "orphan").await, None);
        sqlx::query("BEGIN IMMEDIATE; ROLLBACK")
            .execute(&mut c)
            .await
            .expect("no open transaction");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A row that cannot be read fails only its own request: the statement ran, and the
    /// transaction goes on.
    #[tokio::test]
    async fn an_unreadable_row_fails_only_its_own_request() {
        let dir = std::env::temp_dir().join(format!("shorts-decode-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut c = connect(&dir.join("orders.db")).await.expect("open");
        sqlx::query(
            "INSERT INTO shorts_orders (order_id, short, callback_url, state, received_at)
             VALUES ('odd', 'echo', 'https://api.sellershorts.com/api/orders/callback', 'unknown', 0)",
        )
        .execute(&mut c)
        .await
        .expect("an order in a state this version does not know");
        let (fresh, accepted) = accept("fresh");
        let (reply, read) = oneshot::channel();
        let (batch, others) = Batch::sort([fresh, Op::Get("odd".to_owned(), reply)].into_iter());
        commit_group(&mut c, batch, others).await;
        assert!(read.await.expect("answered").is_err());
        assert!(accepted.await.expect("answered").expect("accepted").is_some());
        assert_eq!(state(&mut c, "fresh").await, Some(("received".to_owned(), None)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    /// The database, its WAL and its shared-memory file are the owner's only, however the process
    /// umask would have them (the command-line tests run the binary under umasks 000 and 022).
    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_the_files_beside_it_are_private() {
        let dir = std::env::temp_dir().join(format!("shorts-mode-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("orders.db");
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .accept(order("o"), "one", Duration::from_secs(60))
            .await
            .expect("accept");
        for name in ["orders.db", "orders.db-wal", "orders.db-shm"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        assert_eq!(readable_by_others(&path), None);
        // A file someone made readable is reported, and left as it is.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(readable_by_others(&path), Some(0o640));
        create_private(&path).expect("existing file");
        assert_eq!(mode(&path), 0o640);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

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
