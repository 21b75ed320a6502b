//! The writer: commits requests in groups, one transaction each, and recovers from a failing
//! statement without failing more requests than it must.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::batch::{
    ACCEPT_CHUNK, Batch, Reported, SAVE_CHUNK, SETTLE_CHUNK, accepted_answers, answer_each, chunks, fetch,
    ids, push_accepts, push_saves, push_settles, write_whole,
};
use super::checkpoint::checkpoint;
use super::requests::{Op, Reply};
use super::statements::{
    claim, drop_bodies, fail_now, get, heartbeat, list, purge, purge_dead, purge_within, release,
    release_order, retry, start_run,
};
use crate::store::error::Failure;
use crate::store::{OrderState, Purged, StoreOperation};

/// Most requests committed in one transaction.
pub(super) const MAX_GROUP: usize = 512;

/// Commits requests in groups: waits for one, takes every other already waiting, runs them all in
/// one transaction, commits, then answers each.
pub(super) async fn writer(
    mut connection: SqliteConnection,
    mut ops: mpsc::Receiver<Op>,
    commits: watch::Sender<()>,
    finish: Arc<AtomicBool>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while ops.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (batch, others) = Batch::sort(group.drain(..));
        // A purge batch commits alone, after its group: the group's orders do not wait for the
        // pages it deleted to be written.
        let (purges, others): (Vec<Op>, Vec<Op>) =
            others.into_iter().partition(|op| matches!(op, Op::Purge { .. }));
        if !batch.is_empty() || !others.is_empty() {
            commit_group(&mut connection, batch, others).await;
        }
        for op in purges {
            if let Op::Purge { before, limit, reply } = op {
                purge_alone(&mut connection, before, limit, reply).await;
            }
        }
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
/// A kind with one request in the group (a lone order, the usual group at a few hundred orders a
/// second) is written by single-row statements instead: SQLite runs each `RETURNING` and
/// `UPDATE ... FROM` through a temporary B-tree of its own, which cost a lone order a fifth of its
/// instructions.
/// If anything in that query fails, it is undone and each kind is written on its own (see
/// [`recover`]), so that a failing statement fails only its own requests.
pub(super) async fn commit_group(c: &mut SqliteConnection, batch: Batch, others: Vec<Op>) {
    let mut answers = match write_whole(c, &batch, others.is_empty()).await {
        Ok(reported) if others.is_empty() => {
            batch.answers(Ok(reported)).into_iter().for_each(Answer::send);
            return;
        }
        Ok(reported) => batch.answers(Ok(reported)),
        Err(e) => match recover(c, batch, e).await {
            Recovered::Written(answers) => answers,
            Recovered::Lost(answers) => return abandon(c, answers, others).await,
            Recovered::Failed(failure) => {
                others.into_iter().for_each(|op| op.fail(&failure));
                return;
            }
        },
    };
    let mut others = others.into_iter();
    while let Some(op) = others.next() {
        let (answer, lost) = run(c, op).await;
        answers.push(answer);
        if lost {
            return abandon(c, answers, others.collect()).await;
        }
    }
    match sqlx::query("COMMIT").execute(&mut *c).await {
        Ok(_) => answers.into_iter().for_each(Answer::send),
        Err(e) => {
            error!(error = %e, "could not commit a group of orders");
            let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
            let failure = Failure::Commit(Arc::new(e));
            answers.into_iter().for_each(|answer| answer.fail(&failure));
        }
    }
}

/// What writing a batch's kinds apart did.
enum Recovered {
    /// Written, in a new transaction; each request has its answer.
    Written(Vec<Answer>),
    /// An error may have ended the transaction: the group must be abandoned.
    Lost(Vec<Answer>),
    /// No transaction could begin: the batch's requests are answered with this, which the
    /// group's other requests get too.
    Failed(Failure),
}

/// After the group's whole query failed with `error`: undoes it, begins the transaction again and
/// writes each kind of the batch on its own.
async fn recover(c: &mut SqliteConnection, batch: Batch, error: sqlx::Error) -> Recovered {
    warn!(error = %error, "a group's writes failed together; writing them one kind at a time");
    // Fails harmlessly when the failure already ended the transaction.
    let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await {
        // Nothing runs outside a transaction: every request of the group fails, none is half
        // done.
        error!(error = %e, "could not begin a transaction");
        let failure = Failure::from(e);
        batch.answers(Err(&failure)).into_iter().for_each(Answer::send);
        return Recovered::Failed(failure);
    }
    match write_apart(c, batch).await {
        (answers, false) => Recovered::Written(answers),
        (answers, true) => Recovered::Lost(answers),
    }
}

/// Ends a group whose transaction an error may have ended: SQLite may roll a whole transaction back
/// by itself, and what ran after would then commit alone. Everything is rolled back, nothing more
/// runs, and every request of the group fails.
async fn abandon(c: &mut SqliteConnection, answers: Vec<Answer>, others: Vec<Op>) {
    error!("a group's transaction may have ended early; rolling it back and failing the group");
    let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
    answers
        .into_iter()
        .for_each(|answer| answer.fail(&Failure::RolledBack));
    others.into_iter().for_each(|op| op.fail(&Failure::RolledBack));
}

/// Whether an error may have ended the transaction it happened in. SQLite may roll the whole
/// transaction back after a full disk, an I/O error, a lock, lack of memory or an interrupt; an
/// error of the connection itself (not SQLite's, nor in reading a row) leaves its state unknown.
pub(super) fn may_end_transaction(error: &sqlx::Error) -> bool {
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

/// Whether the transaction `failure` happened in may have ended with it.
fn ends_transaction(failure: &Failure) -> bool {
    match failure {
        Failure::Statement(e) => may_end_transaction(e),
        Failure::Commit(_) | Failure::RolledBack => true,
    }
}

/// The answer to a request, and whether its error may have ended the group's transaction.
fn answered<T: Send + 'static>(reply: Reply<T>, result: Result<T, sqlx::Error>) -> (Answer, bool) {
    let result = result.map_err(Failure::from);
    let lost = result.as_ref().err().is_some_and(ends_transaction);
    (Answer::new(reply, result), lost)
}

/// An answer held until the group is committed: sent as it is, or replaced by the failure that
/// kept the group from committing.
pub(super) struct Answer(Box<dyn Held>);

/// A request's reply with the answer it will get if its group commits.
trait Held: Send {
    fn finish(self: Box<Self>, failed: Option<&Failure>);
}

impl<T: Send> Held for (Reply<T>, Result<T, Failure>) {
    fn finish(self: Box<Self>, failed: Option<&Failure>) {
        let (reply, result) = *self;
        match failed {
            Some(failure) => reply.fail(failure),
            None => reply.send(result),
        }
    }
}

impl Answer {
    pub(super) fn new<T: Send + 'static>(reply: Reply<T>, result: Result<T, Failure>) -> Self {
        Answer(Box::new((reply, result)))
    }

    pub(super) fn send(self) {
        self.0.finish(None);
    }

    /// Answers with `failure` instead: the group it belongs to was not committed.
    pub(super) fn fail(self, failure: &Failure) {
        self.0.finish(Some(failure));
    }
}

/// Deletes a batch of the purge in a transaction of its own, and answers with how long it held the
/// writer: its statements and its commit.
async fn purge_alone(c: &mut SqliteConnection, before: i64, limit: u32, reply: Reply<Purged>) {
    let started = Instant::now();
    let deleted = purge(c, before, limit).await;
    let held = started.elapsed();
    answered(reply, deleted.map(|orders| Purged { orders, held }))
        .0
        .send();
}

/// Runs one request inside the group's transaction: its answer, and whether its error may have ended
/// that transaction.
async fn run(c: &mut SqliteConnection, op: Op) -> (Answer, bool) {
    match op {
        op @ (Op::Accept(..) | Op::SaveResult(..) | Op::Settle { .. }) => {
            let (batch, _) = Batch::sort(std::iter::once(op));
            let (mut answers, lost) = write_apart(c, batch).await;
            // A batch of one request has one answer.
            let answer = answers
                .pop()
                .unwrap_or_else(|| Answer::new(Reply::new(StoreOperation::Accept).0, Ok(())));
            (answer, lost)
        }
        Op::Claim {
            owner,
            lease,
            limit,
            reply,
        } => answered(reply, claim(c, &owner, lease, limit).await),
        Op::Heartbeat { owner, lease, reply } => answered(reply, heartbeat(c, &owner, lease).await),
        Op::StartRun { id, fence, reply } => answered(reply, start_run(c, &id, fence).await),
        Op::Release {
            owner,
            interrupted,
            reply,
        } => answered(reply, release(c, &owner, &interrupted).await),
        Op::Get { id, reply } => answered(reply, get(c, &id).await),
        Op::List { state, limit, reply } => answered(reply, list(c, state, limit).await),
        // The writer commits each purge batch alone (`purge_alone`); within a group it is as right.
        Op::Purge { before, limit, reply } => {
            let started = Instant::now();
            let deleted = purge_within(c, before, limit).await;
            let held = started.elapsed();
            answered(reply, deleted.map(|orders| Purged { orders, held }))
        }
        Op::PurgeDead { before, reply } => answered(reply, purge_dead(c, before).await),
        Op::ReleaseOrder { id, fence, reply } => answered(reply, release_order(c, &id, fence).await),
        Op::Retry { id, reply } => answered(reply, retry(c, &id).await),
        Op::FailNow {
            id,
            message,
            body,
            reply,
        } => answered(reply, fail_now(c, &id, &message, &body).await),
    }
}

/// Writes each kind of the batch's requests on its own, in a savepoint each, inside the group's
/// transaction: a failing statement fails only its own requests. Returns their answers, and
/// whether an error may have ended the transaction (nothing more runs once one may have: see
/// [`abandon`]).
async fn write_apart(c: &mut SqliteConnection, batch: Batch) -> (Vec<Answer>, bool) {
    let Batch {
        accepts,
        saves,
        settles,
        now,
    } = batch;
    let mut answers = Vec::new();
    let mut lost = false;
    for chunk in chunks(accepts, ACCEPT_CHUNK) {
        let mut reported = apart(c, lost, |query| push_accepts(query, &chunk, now)).await;
        lost = self::lost(&reported);
        answers.extend(accepted_answers(chunk, ids(&mut reported, |r| &mut r.accepted)));
    }
    for chunk in chunks(saves, SAVE_CHUNK) {
        let mut reported = apart(c, lost, |query| push_saves(query, &chunk, now)).await;
        lost = self::lost(&reported);
        let replies = chunk.into_iter().map(|saving| (saving.id, saving.reply));
        answers.extend(answer_each(replies, ids(&mut reported, |r| &mut r.saved)));
    }
    for chunk in chunks(settles, SETTLE_CHUNK) {
        let mut reported = apart(c, lost, |query| push_settles(query, &chunk)).await;
        lost = self::lost(&reported);
        if let Ok(reported) = &reported {
            let delivered: Vec<&str> = chunk
                .iter()
                .filter(|settling| {
                    settling.values.state == OrderState::Delivered.as_str()
                        && reported.settled.contains(&settling.id)
                })
                .map(|settling| settling.id.as_str())
                .collect();
            lost = drop_bodies(c, &delivered).await;
        }
        let replies = chunk.into_iter().map(|settling| (settling.id, settling.reply));
        answers.extend(answer_each(replies, ids(&mut reported, |r| &mut r.settled)));
    }
    (answers, lost)
}

/// Whether what [`apart`] returned says the transaction may have ended.
fn lost(reported: &Result<Reported, Failure>) -> bool {
    reported.as_ref().err().is_some_and(ends_transaction)
}

/// Runs the statements `push` writes in a savepoint of their own, undone if one fails; runs
/// nothing when the transaction was `lost` (an earlier error may have ended it).
async fn apart(
    c: &mut SqliteConnection,
    lost: bool,
    push: impl FnOnce(&mut QueryBuilder<Sqlite>),
) -> Result<Reported, Failure> {
    if lost {
        return Err(Failure::RolledBack);
    }
    let mut query = QueryBuilder::new("SAVEPOINT apart");
    push(&mut query);
    query.push("; RELEASE apart");
    let reported = fetch(c, query).await;
    if reported.is_err() {
        // Undoes whichever of the statements ran (and fails harmlessly if none did).
        let _ = sqlx::query("ROLLBACK TO apart; RELEASE apart")
            .execute(&mut *c)
            .await;
    }
    Ok(reported?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use tokio::sync::oneshot;

    use super::*;
    use crate::store::sqlite::file::connect;
    use crate::store::sqlite::requests::{Accepting, Saving};
    use crate::store::suite::order;
    use crate::store::{Claimed, Hold, NewOrder, OrderRecord, StoreError};

    type Answered<T> = oneshot::Receiver<Result<T, StoreError>>;

    fn accept(id: &str) -> (Op, Answered<Option<Claimed>>) {
        let (reply, answer) = Reply::new(StoreOperation::Accept);
        let accepting = Accepting {
            order: order(id),
            owner: "one".to_owned(),
            lease: Duration::from_secs(60),
            reply,
        };
        (Op::Accept(accepting), answer)
    }

    fn save(id: &str, fence: i64, body: Bytes) -> (Op, Answered<bool>) {
        let (reply, answer) = Reply::new(StoreOperation::SaveResult);
        let saving = Saving {
            id: id.to_owned(),
            fence,
            body,
            run: None,
            reply,
        };
        (Op::SaveResult(saving), answer)
    }

    fn get(id: &str) -> (Op, Answered<Option<OrderRecord>>) {
        let (reply, answer) = Reply::new(StoreOperation::Get);
        (
            Op::Get {
                id: id.to_owned(),
                reply,
            },
            answer,
        )
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

    /// Each kind of write, for one order alone and for two orders together: a lone order's
    /// single-row statements and a group's multi-row ones leave the same rows.
    #[tokio::test]
    async fn lone_and_grouped_writes_leave_the_same_rows() {
        use crate::store::{AttemptResult, CallbackAttempt, RunEnd, RunOutcome, Settle};

        let dir = std::env::temp_dir().join(format!("shorts-lone-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut c = connect(&dir.join("orders.db")).await.expect("open");
        // A body with a job token, erased when the result is stored; each order started at once.
        let payload = br#"{"order_id":"x","job_token":"secret","inputs":{}}"#;
        let accepting = |id: &str| {
            let (reply, answer) = Reply::new(StoreOperation::Accept);
            let mut order = order(id);
            order.payload = Bytes::from_static(payload);
            order.job_token = crate::wire::webhook::job_token_span(payload);
            order.hold = crate::store::Hold::Start;
            let op = Op::Accept(Accepting {
                order,
                owner: "one".to_owned(),
                lease: Duration::from_secs(60),
                reply,
            });
            (op, answer)
        };
        let saving = |id: &str, fence: i64, failed: bool| {
            let (reply, answer) = Reply::new(StoreOperation::SaveResult);
            let run = RunEnd {
                run: 1,
                outcome: if failed { RunOutcome::Error } else { RunOutcome::Ok },
                error: failed.then(|| "it failed".to_owned()),
            };
            let op = Op::SaveResult(Saving {
                id: id.to_owned(),
                fence,
                body: Bytes::from_static(b"the result"),
                run: Some(run),
                reply,
            });
            (op, answer)
        };
        let settling = |id: &str, fence: i64, retry: bool| {
            let (reply, answer) = Reply::new(StoreOperation::Settle);
            let attempt = CallbackAttempt {
                number: 1,
                at: 5,
                status: Some(if retry { 503 } else { 200 }),
                error: retry.then(|| "unavailable".to_owned()),
                result: if retry {
                    AttemptResult::Retry
                } else {
                    AttemptResult::Accepted
                },
            };
            let settle = if retry {
                Settle::Retry {
                    at: 9,
                    steps: 1,
                    error: "unavailable".to_owned(),
                }
            } else {
                Settle::Delivered
            };
            let op = Op::Settle {
                id: id.to_owned(),
                fence,
                settle,
                attempts: vec![attempt],
                reply,
            };
            (op, answer)
        };
        // "a*" orders go alone, "b*" orders two to a group; the first of each pair is delivered,
        // the second has failed and waits for a retry; a write under a stale fence changes nothing.
        for pair in [["a1", "a2"], ["b1", "b2"]] {
            let groups: Vec<Vec<usize>> = if pair[0].starts_with('a') {
                vec![vec![0], vec![1]]
            } else {
                vec![vec![0, 1]]
            };
            let run = async |c: &mut SqliteConnection, ops: Vec<Op>| {
                let (batch, others) = Batch::sort(ops.into_iter());
                assert!(others.is_empty());
                commit_group(c, batch, others).await;
            };
            for group in &groups {
                let (ops, answers): (Vec<Op>, Vec<_>) = group.iter().map(|&i| accepting(pair[i])).unzip();
                run(&mut c, ops).await;
                for answer in answers {
                    assert!(answer.await.expect("answered").expect("accepted").is_some());
                }
            }
            for (stale, expected) in [(2, false), (1, true)] {
                for group in &groups {
                    let (ops, answers): (Vec<Op>, Vec<_>) =
                        group.iter().map(|&i| saving(pair[i], stale, i == 1)).unzip();
                    run(&mut c, ops).await;
                    for answer in answers {
                        assert_eq!(answer.await.expect("answered").expect("saved"), expected);
                    }
                }
                for group in &groups {
                    let (ops, answers): (Vec<Op>, Vec<_>) =
                        group.iter().map(|&i| settling(pair[i], stale, i == 1)).unzip();
                    run(&mut c, ops).await;
                    for answer in answers {
                        assert_eq!(answer.await.expect("answered").expect("settled"), expected);
                    }
                }
            }
        }
        // Every row of an "a" order is the row of its "b" order, times of the writer aside.
        let rows = async |c: &mut SqliteConnection, id: &str| -> Vec<String> {
            let query = "SELECT json_array(state, runs, fence, owner, attempts, steps, next_at, last_error,
                                           outcome, token_at, token_len) FROM shorts_orders WHERE order_id = $1
                         UNION ALL SELECT CAST(payload AS TEXT) FROM shorts_payloads WHERE order_id = $1
                         UNION ALL SELECT CAST(body AS TEXT) FROM shorts_results WHERE order_id = $1
                         UNION ALL SELECT * FROM (SELECT json_array(kind, number, outcome, status, detail,
                                                                    ended_at IS NULL)
                                                  FROM shorts_history WHERE order_id = $1 ORDER BY kind, number)";
            sqlx::query_scalar(query)
                .bind(id)
                .fetch_all(&mut *c)
                .await
                .expect("rows")
        };
        for (lone, grouped) in [("a1", "b1"), ("a2", "b2")] {
            let lone_rows = rows(&mut c, lone).await;
            assert_eq!(lone_rows, rows(&mut c, grouped).await, "{lone} and {grouped}");
            assert!(lone_rows.len() >= 5, "{lone_rows:?}");
            assert!(
                lone_rows.iter().any(|r| r.contains(r#""job_token":null"#)),
                "{lone_rows:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An order accepted without a lease has no owner, alone or in a group beside a leased one.
    #[tokio::test]
    async fn orders_accepted_without_a_lease_have_no_owner() {
        let dir = std::env::temp_dir().join(format!("shorts-unleased-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut c = connect(&dir.join("orders.db")).await.expect("open");
        let accepting = |id: &str, leased: bool| {
            let (reply, answer) = Reply::new(StoreOperation::Accept);
            let op = Op::Accept(Accepting {
                order: NewOrder {
                    hold: if leased { Hold::Wait } else { Hold::Store },
                    ..order(id)
                },
                owner: "one".to_owned(),
                lease: Duration::from_secs(60),
                reply,
            });
            (op, answer)
        };
        for group in [vec![("a", false)], vec![("b", false), ("c", true)]] {
            let (ops, answers): (Vec<Op>, Vec<_>) =
                group.iter().map(|&(id, leased)| accepting(id, leased)).unzip();
            let (batch, others) = Batch::sort(ops.into_iter());
            commit_group(&mut c, batch, others).await;
            for answer in answers {
                assert!(answer.await.expect("answered").expect("accepted").is_some());
            }
        }
        // No owner, and no lease either.
        let rows: Vec<(String, Option<String>, bool)> =
            sqlx::query_as("SELECT order_id, owner, lease_until > 0 FROM shorts_orders ORDER BY order_id")
                .fetch_all(&mut c)
                .await
                .expect("rows");
        assert_eq!(
            rows,
            [
                ("a".to_owned(), None, false),
                ("b".to_owned(), None, false),
                ("c".to_owned(), Some("one".to_owned()), true)
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
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
        let (save, saved) = save("kept", fence, Bytes::from_static(b"done"));
        let (get, read) = get("kept");
        let (batch, others) = Batch::sort([refused, save, fine, get].into_iter());
        assert_eq!(others.len(), 1);
        commit_group(&mut c, batch, others).await;

        // The accepts' statement failed: both get its error, named with what they asked.
        for answer in [refused_answer, fine_answer] {
            let error = answer.await.expect("answered").expect_err("refused");
            assert!(
                matches!(
                    error,
                    StoreError::Database {
                        operation: StoreOperation::Accept,
                        ..
                    }
                ),
                "{error:?}"
            );
            assert!(error.to_string().contains("refused by the test"), "{error}");
        }
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
        let (save, saved) = save("kept", fence, Bytes::from(vec![1u8; 1 << 20]));
        let (get, read) = get("kept");
        let (batch, others) = Batch::sort([small, save, get].into_iter());
        commit_group(&mut c, batch, others).await;

        // The body's own error may have ended the transaction: the whole group is rolled back.
        for error in [
            small_answer.await.expect("answered").err(),
            saved.await.expect("answered").err(),
            read.await.expect("answered").err(),
        ] {
            assert!(matches!(error, Some(StoreError::RolledBack { .. })), "{error:?}");
        }
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
        let (get, read) = get("orphan");
        let (batch, others) = Batch::sort([orphan, get].into_iter());
        commit_group(&mut c, batch, others).await;
        let error = accepted.await.expect("answered").expect_err("not committed");
        assert!(
            matches!(
                error,
                StoreError::Commit {
                    operation: StoreOperation::Accept,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("FOREIGN KEY constraint failed"), "{message}");
        let read = read.await.expect("answered").expect_err("not committed");
        assert!(
            matches!(
                read,
                StoreError::Commit {
                    operation: StoreOperation::Get,
                    ..
                }
            ),
            "{read:?}"
        );
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
        let (get, read) = get("odd");
        let (batch, others) = Batch::sort([fresh, get].into_iter());
        commit_group(&mut c, batch, others).await;
        let read = read.await.expect("answered").expect_err("unreadable");
        assert!(
            matches!(
                read,
                StoreError::Database {
                    operation: StoreOperation::Get,
                    ..
                }
            ),
            "{read:?}"
        );
        assert!(accepted.await.expect("answered").expect("accepted").is_some());
        assert_eq!(state(&mut c, "fresh").await, Some(("received".to_owned(), None)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
