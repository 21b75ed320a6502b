//! A group's accepts, callback bodies and settles, written by a few multi-row statements.

use std::collections::HashSet;

use sqlx::query_builder::Separated;
use sqlx::{QueryBuilder, Row as _, Sqlite, SqliteConnection};
use tracing::error;

use super::requests::{Accepting, Op, Reply, Saving, Settling};
use super::writer::Answer;
use crate::store::error::Failure;
use crate::store::history::KEPT_ATTEMPTS;
use crate::store::sql::{push_drop_delivered_bodies, replacing_body, settle_set, settled, token_columns};
use crate::store::{Claimed, OrderState, now_ms};

/// Accepts per statement: 13 parameters each, well under SQLite's limit of 32,766.
pub(super) const ACCEPT_CHUNK: usize = 256;

/// Bodies per statement, and per savepoint when a group's kinds are written apart: each body is up
/// to the inline limit (4.45 MB), so such a query holds under 300 MB. The whole group's query
/// holds all its bodies, as many as its shorts run at once.
pub(super) const SAVE_CHUNK: usize = 64;

/// Settles per statement: 7 parameters each.
pub(super) const SETTLE_CHUNK: usize = 256;

/// A group's accepts, callback bodies and settles, written by multi-row statements.
pub(super) struct Batch {
    pub(super) accepts: Vec<Accepting>,
    pub(super) saves: Vec<Saving>,
    pub(super) settles: Vec<Settling>,
    pub(super) now: i64,
}

impl Batch {
    /// Whether it holds no request.
    pub(super) fn is_empty(&self) -> bool {
        self.accepts.is_empty() && self.saves.is_empty() && self.settles.is_empty()
    }

    /// Splits a group into what multi-row statements write and the other requests, which run one
    /// by one after them. An order's second body or settle in one group (not seen in practice) is
    /// one of the others.
    pub(super) fn sort(group: impl Iterator<Item = Op>) -> (Batch, Vec<Op>) {
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
                Op::Accept(accepting) => batch.accepts.push(accepting),
                Op::SaveResult(saving) if batched.insert(("save", saving.id.clone())) => {
                    batch.saves.push(saving);
                }
                Op::Settle {
                    id,
                    fence,
                    settle,
                    attempts,
                    reply,
                } if batched.insert(("settle", id.clone())) => batch.settles.push(Settling {
                    id,
                    fence,
                    values: settled(settle, attempts.len() as i32),
                    attempts,
                    reply,
                }),
                other => others.push(other),
            }
        }
        (batch, others)
    }

    /// The answers to the batch's requests, from what its statements reported.
    pub(super) fn answers(self, reported: Result<Reported, &Failure>) -> Vec<Answer> {
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
            saves.into_iter().map(|saving| (saving.id, saving.reply)),
            saved,
        ));
        answers.extend(answer_each(
            settles.into_iter().map(|settling| (settling.id, settling.reply)),
            done,
        ));
        answers
    }
}

/// What a query's statements reported: the `order_id`s they accepted, moved to delivery with
/// their callback bodies, and settled.
#[derive(Default)]
pub(super) struct Reported {
    pub(super) accepted: HashSet<String>,
    pub(super) saved: HashSet<String>,
    pub(super) settled: HashSet<String>,
}

/// The first column of each row a batch's statements return: which kind of statement reported the
/// `order_id` in the second.
pub(super) const ACCEPTED: i64 = 0;
pub(super) const SAVED: i64 = 1;
pub(super) const SETTLED: i64 = 2;

/// Runs a query of batch statements and sorts the `order_id`s they report.
pub(super) async fn fetch(
    c: &mut SqliteConnection,
    mut query: QueryBuilder<Sqlite>,
) -> Result<Reported, sqlx::Error> {
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
pub(super) async fn write_whole(
    c: &mut SqliteConnection,
    batch: &Batch,
    commit: bool,
) -> Result<Reported, sqlx::Error> {
    let mut query = QueryBuilder::new("BEGIN IMMEDIATE");
    for chunk in batch.accepts.chunks(ACCEPT_CHUNK) {
        push_accepts(&mut query, chunk, batch.now);
    }
    for chunk in batch.saves.chunks(SAVE_CHUNK) {
        push_saves(&mut query, chunk, batch.now);
    }
    for chunk in batch.settles.chunks(SETTLE_CHUNK) {
        push_settles(&mut query, chunk);
        // A settle that did not take (a stale fence) leaves its order's state as it was: the drop
        // looks for orders recorded as delivered.
        let delivered = chunk
            .iter()
            .filter(|settling| settling.values.state == OrderState::Delivered.as_str())
            .map(|settling| settling.id.as_str());
        push_drop(&mut query, delivered);
    }
    if commit {
        query.push("; COMMIT");
    }
    fetch(c, query).await
}

/// The `order_id`s of one kind in what a query reported, or its error.
pub(super) fn ids(
    reported: &mut Result<Reported, Failure>,
    kind: fn(&mut Reported) -> &mut HashSet<String>,
) -> Result<HashSet<String>, &Failure> {
    match reported {
        Ok(reported) => Ok(std::mem::take(kind(reported))),
        Err(e) => Err(e),
    }
}

pub(super) fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
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
pub(super) fn push_accepts(query: &mut QueryBuilder<Sqlite>, accepts: &[Accepting], now: i64) {
    if let [accepting] = accepts {
        return push_accept(query, accepting, now);
    }
    query.push(
        "; INSERT INTO shorts_orders (order_id, short, callback_url, state, runs, fence, owner, lease_until, received_at,
                                     token_at, token_len) ",
    );
    query.push_values(accepts, |mut row, accepting| {
        push_order_values(&mut row, accepting, now)
    });
    // A known order keeps the body it came with: bodies are written and purged with their orders,
    // so an `order_id` has a body exactly when it has an order.
    query
        .push(" ON CONFLICT (order_id) DO NOTHING RETURNING ")
        .push(ACCEPTED)
        .push(", order_id; INSERT INTO shorts_payloads (order_id, payload) ");
    query.push_values(accepts, |mut row, accepting| {
        row.push_bind(&accepting.order.id)
            .push_bind(accepting.order.payload.as_ref());
    });
    query.push(" ON CONFLICT (order_id) DO NOTHING");
    push_first_runs(query, accepts, now);
}

/// [`push_accepts`] of one order, by single-row statements: no `RETURNING`, which SQLite buffers
/// in a temporary table of its own for each statement (a lone order is the usual group below a
/// few hundred orders a second).
fn push_accept(query: &mut QueryBuilder<Sqlite>, accepting: &Accepting, now: i64) {
    let order = &accepting.order;
    query.push(
        "; INSERT INTO shorts_orders (order_id, short, callback_url, state, runs, fence, owner, lease_until, received_at,
                                     token_at, token_len) VALUES (",
    );
    push_order_values(&mut query.separated(", "), accepting, now);
    query.push(") ON CONFLICT (order_id) DO NOTHING; ");
    push_report_change(query, ACCEPTED, &order.id);
    query.push("; INSERT INTO shorts_payloads (order_id, payload) VALUES (");
    query
        .push_bind(&order.id)
        .push(", ")
        .push_bind(order.payload.as_ref())
        .push(") ON CONFLICT (order_id) DO NOTHING");
    push_first_runs(query, std::slice::from_ref(accepting), now);
}

/// The values of a new order's row, in the columns' order of [`push_accepts`]' insert.
fn push_order_values<Sep: std::fmt::Display>(
    row: &mut Separated<'_, Sqlite, Sep>,
    accepting: &Accepting,
    now: i64,
) {
    let Accepting {
        order, owner, lease, ..
    } = accepting;
    let (token_at, token_len) = token_columns(order.job_token.as_ref());
    row.push_bind(&order.id)
        .push_bind(&order.short)
        .push_bind(&order.callback_url)
        .push_bind("received")
        .push_bind(i32::from(order.hold.started()))
        .push_bind(1_i64)
        .push_bind(order.hold.leased().then_some(owner.as_str()))
        .push_bind(order.hold.lease_until(now, *lease))
        .push_bind(now)
        .push_bind(token_at)
        .push_bind(token_len);
}

/// Reports `id` as `kind` when the statement before changed a row (a single-row statement's
/// `RETURNING`).
fn push_report_change(query: &mut QueryBuilder<Sqlite>, kind: i64, id: &str) {
    query
        .push("SELECT ")
        .push(kind)
        .push(", ")
        .push_bind(id.to_owned())
        .push(" WHERE changes() = 1");
}

/// The first run of the orders accepted with one: the orders just inserted (a known order was
/// received earlier, and has its runs' rows already).
fn push_first_runs(query: &mut QueryBuilder<Sqlite>, accepts: &[Accepting], now: i64) {
    let started: Vec<&str> = accepts
        .iter()
        .filter(|accepting| accepting.order.hold.started())
        .map(|accepting| accepting.order.id.as_str())
        .collect();
    if !started.is_empty() {
        query.push(
            "; INSERT INTO shorts_history (order_id, kind, number, at)
             SELECT o.order_id, 'run', 1, o.received_at FROM shorts_orders o
             WHERE o.received_at = ",
        );
        query.push_bind(now).push(" AND o.order_id IN (");
        let mut list = query.separated(", ");
        for id in started {
            list.push_bind(id);
        }
        query.push(
            ") AND NOT EXISTS (SELECT 1 FROM shorts_history h WHERE h.order_id = o.order_id AND h.kind = 'run')",
        );
    }
}

/// Replaces the `job_token` of the orders whose fence is current by `null` in their stored webhook
/// bodies, then moves them to delivery, reporting each, then stores their callback bodies (the
/// same orders: the move keeps the fence), and records how the runs that produced them ended (at
/// `now`). Orders without a token cost one look-up of their row.
pub(super) fn push_saves(query: &mut QueryBuilder<Sqlite>, saves: &[Saving], now: i64) {
    if let [saving] = saves {
        return push_save(query, saving, now);
    }
    let runs: Vec<&Saving> = saves.iter().filter(|saving| saving.run.is_some()).collect();
    if !runs.is_empty() {
        query.push("; UPDATE shorts_history SET ended_at = ");
        query.push_bind(now).push(
            ", outcome = v.column4, detail = v.column5
             FROM (",
        );
        query.push_values(runs, |mut row, saving| {
            let run = saving.run.as_ref();
            row.push_bind(&saving.id)
                .push_bind(saving.fence)
                .push_bind(run.map(|r| r.run))
                .push_bind(run.map(|r| r.outcome.as_str()))
                .push_bind(run.and_then(|r| r.error.as_deref()));
        });
        query.push(
            ") AS v JOIN shorts_orders o ON o.order_id = v.column1 AND o.fence = v.column2
             WHERE shorts_history.order_id = v.column1 AND shorts_history.kind = 'run'
               AND shorts_history.number = v.column3 AND shorts_history.ended_at IS NULL",
        );
    }
    // `FROM (VALUES ...)`, not `(order_id, fence) IN (VALUES ...)`: SQLite looks each row up by the
    // primary key for the first, and scans the table for the second.
    query.push(
        "; UPDATE shorts_payloads
         SET payload = CAST(substr(payload, 1, o.token_at) || 'null'
                            || substr(payload, o.token_at + o.token_len + 1) AS BLOB)
         FROM (",
    );
    query.push_values(saves, |mut row, Saving { id, fence, .. }| {
        row.push_bind(id).push_bind(fence);
    });
    query.push(
        ") AS v JOIN shorts_orders o ON o.order_id = v.column1
         WHERE shorts_payloads.order_id = v.column1 AND o.fence = v.column2 AND o.token_at IS NOT NULL",
    );
    query.push(
        "; UPDATE shorts_orders SET state = 'delivering', next_at = NULL, token_at = NULL, token_len = NULL,
                                   outcome = COALESCE(v.column3, outcome)
         FROM (",
    );
    query.push_values(saves, |mut row, Saving { id, fence, run, .. }| {
        row.push_bind(id)
            .push_bind(fence)
            .push_bind(run.as_ref().map(|r| r.outcome.as_str()));
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
    saves.iter().for_each(|saving| push_body(query, saving));
}

/// Stores a callback body if the fence is current.
fn push_body(query: &mut QueryBuilder<Sqlite>, Saving { id, fence, body, .. }: &Saving) {
    query.push("; INSERT INTO shorts_results (order_id, body) SELECT ");
    query.push_bind(id).push(", ").push_bind(body.as_ref());
    query.push(" FROM shorts_orders WHERE order_id = ");
    query.push_bind(id).push(" AND fence = ").push_bind(fence);
    query.push(replacing_body!());
}

/// [`push_saves`] of one body, by single-row statements: no `UPDATE ... FROM` or `RETURNING`,
/// each of which SQLite runs through a temporary table of its own.
fn push_save(query: &mut QueryBuilder<Sqlite>, saving: &Saving, now: i64) {
    let Saving { id, fence, run, .. } = saving;
    if let Some(run) = run {
        query.push("; UPDATE shorts_history SET ended_at = ");
        query
            .push_bind(now)
            .push(", outcome = ")
            .push_bind(run.outcome.as_str())
            .push(", detail = ")
            .push_bind(run.error.clone());
        query.push(" WHERE order_id = ").push_bind(id);
        query.push(" AND kind = 'run' AND number = ").push_bind(run.run);
        query.push(" AND ended_at IS NULL");
        push_fence_holds(query, id, *fence);
    }
    query.push(
        "; UPDATE shorts_payloads
         SET payload = CAST(substr(payload, 1, (SELECT token_at FROM shorts_orders WHERE order_id = ",
    );
    query.push_bind(id).push(
        ")) || 'null'
                            || substr(payload, (SELECT token_at + token_len + 1 FROM shorts_orders WHERE order_id = ",
    );
    query
        .push_bind(id)
        .push(")) AS BLOB) WHERE order_id = ")
        .push_bind(id);
    query
        .push(" AND EXISTS (SELECT 1 FROM shorts_orders o WHERE o.order_id = ")
        .push_bind(id);
    query
        .push(" AND o.fence = ")
        .push_bind(fence)
        .push(" AND o.token_at IS NOT NULL)");
    query.push(
        "; UPDATE shorts_orders SET state = 'delivering', next_at = NULL, token_at = NULL, token_len = NULL,
                                   outcome = COALESCE(",
    );
    query.push_bind(run.as_ref().map(|r| r.outcome.as_str()));
    query.push(", outcome) WHERE order_id = ").push_bind(id);
    query.push(" AND fence = ").push_bind(fence).push("; ");
    push_report_change(query, SAVED, id);
    push_body(query, saving);
}

/// `AND` the order `id` is held under `fence`.
fn push_fence_holds(query: &mut QueryBuilder<Sqlite>, id: &str, fence: i64) {
    query.push(" AND EXISTS (SELECT 1 FROM shorts_orders o WHERE o.order_id = ");
    query
        .push_bind(id.to_owned())
        .push(" AND o.fence = ")
        .push_bind(fence)
        .push(")");
}

/// Records delivery outcomes, each under its fence, reporting each order settled.
pub(super) fn push_settles(query: &mut QueryBuilder<Sqlite>, settles: &[Settling]) {
    if let [settling] = settles {
        push_settle(query, settling);
    } else {
        push_settle_rows(query, settles);
    }
    push_old_attempts(query, settles);
}

/// Records the outcomes and POSTs of several orders, by multi-row statements.
fn push_settle_rows(query: &mut QueryBuilder<Sqlite>, settles: &[Settling]) {
    query.push(concat!(
        "; ",
        settle_set!("v.column3", "v.column4", "v.column5", "v.column6", "v.column7"),
        " FROM ("
    ));
    query.push_values(
        settles,
        |mut row,
         Settling {
             id, fence, values, ..
         }| {
            row.push_bind(id)
                .push_bind(fence)
                .push_bind(values.state)
                .push_bind(values.next_at)
                .push_bind(values.steps)
                .push_bind(values.posts)
                .push_bind(&values.error);
        },
    );
    query
        .push(
            ") AS v WHERE shorts_orders.order_id = v.column1 AND shorts_orders.fence = v.column2
             RETURNING ",
        )
        .push(SETTLED)
        .push(", shorts_orders.order_id");
    // Their POSTs, for the orders just settled (a settle keeps the fence), then the attempts
    // beyond the last `KEPT_ATTEMPTS` of each order.
    let attempts: Vec<(&Settling, &crate::store::CallbackAttempt)> = settles
        .iter()
        .flat_map(|settling| settling.attempts.iter().map(move |a| (settling, a)))
        .collect();
    if attempts.is_empty() {
        return;
    }
    query.push(
        "; INSERT INTO shorts_history (order_id, kind, number, at, outcome, status, detail)
         SELECT v.column1, 'callback', v.column3, v.column4, v.column5, v.column6, v.column7 FROM (",
    );
    query.push_values(attempts, |mut row, (settling, attempt)| {
        row.push_bind(&settling.id)
            .push_bind(settling.fence)
            .push_bind(attempt.number)
            .push_bind(attempt.at)
            .push_bind(attempt.result.as_str())
            .push_bind(attempt.status.map(i32::from))
            .push_bind(attempt.error.as_deref());
    });
    query.push(") AS v JOIN shorts_orders o ON o.order_id = v.column1 AND o.fence = v.column2");
}

/// Records one order's outcome and POSTs by single-row statements: no `UPDATE ... FROM` or
/// `RETURNING`, each of which SQLite runs through a temporary table of its own.
fn push_settle(query: &mut QueryBuilder<Sqlite>, settling: &Settling) {
    let Settling {
        id,
        fence,
        values,
        attempts,
        ..
    } = settling;
    // The columns `settle_set!` sets, each bound in place.
    query
        .push("; UPDATE shorts_orders SET state = ")
        .push_bind(values.state);
    query.push(", next_at = ").push_bind(values.next_at);
    query.push(", steps = COALESCE(").push_bind(values.steps);
    query
        .push(", steps), attempts = attempts + ")
        .push_bind(values.posts);
    query
        .push(", last_error = COALESCE(")
        .push_bind(values.error.clone());
    query.push(", last_error), owner = NULL WHERE order_id = ");
    query
        .push_bind(id)
        .push(" AND fence = ")
        .push_bind(fence)
        .push("; ");
    push_report_change(query, SETTLED, id);
    for attempt in attempts {
        query.push(
            "; INSERT INTO shorts_history (order_id, kind, number, at, outcome, status, detail)
             SELECT order_id, 'callback', ",
        );
        let mut values = query.separated(", ");
        values
            .push_bind(attempt.number)
            .push_bind(attempt.at)
            .push_bind(attempt.result.as_str())
            .push_bind(attempt.status.map(i32::from))
            .push_bind(attempt.error.clone());
        query.push(" FROM shorts_orders WHERE order_id = ").push_bind(id);
        query.push(" AND fence = ").push_bind(fence);
    }
}

/// Deletes the attempts beyond the last `KEPT_ATTEMPTS` of each order settled.
fn push_old_attempts(query: &mut QueryBuilder<Sqlite>, settles: &[Settling]) {
    let old: Vec<(&str, i32)> = settles
        .iter()
        .filter_map(|settling| {
            let last = settling.attempts.iter().map(|a| a.number).max()?;
            (last > KEPT_ATTEMPTS).then_some((settling.id.as_str(), last - KEPT_ATTEMPTS))
        })
        .collect();
    if !old.is_empty() {
        query.push(
            "; DELETE FROM shorts_history WHERE id IN (
                 SELECT h.id FROM (",
        );
        query.push_values(old, |mut row, (id, below)| {
            row.push_bind(id).push_bind(below);
        });
        query.push(
            ") AS v JOIN shorts_history h ON h.order_id = v.column1 AND h.kind = 'callback' AND h.number <= v.column2)",
        );
    }
}

/// Drops the long bodies of those of `ids` recorded as delivered (nothing when there are none).
pub(super) fn push_drop<'a>(query: &mut QueryBuilder<Sqlite>, ids: impl Iterator<Item = &'a str>) {
    let mut ids = ids.peekable();
    if ids.peek().is_some() {
        query.push("; ");
        push_drop_delivered_bodies(query, ids);
    }
}

/// Answers each accept: the new order's claim, `None` for a duplicate, or the error of the batch.
pub(super) fn accepted_answers(
    accepts: Vec<Accepting>,
    accepted: Result<HashSet<String>, &Failure>,
) -> Vec<Answer> {
    let mut accepted = match accepted {
        Ok(accepted) => accepted,
        Err(failure) => {
            return accepts
                .into_iter()
                .map(|accepting| Answer::new(accepting.reply, Err(failure.clone())))
                .collect();
        }
    };
    accepts
        .into_iter()
        .map(|Accepting { order, reply, .. }| {
            let claimed = accepted.remove(&order.id).then(|| Claimed {
                fence: 1,
                attempts: 0,
                steps: 0,
                result: None,
                started: order.hold.started(),
                received_at: now_ms(),
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
pub(super) fn answer_each(
    replies: impl Iterator<Item = (String, Reply<bool>)>,
    done: Result<HashSet<String>, &Failure>,
) -> Vec<Answer> {
    replies
        .map(|(id, reply)| match &done {
            Ok(done) => Answer::new(reply, Ok(done.contains(&id))),
            Err(failure) => Answer::new(reply, Err((*failure).clone())),
        })
        .collect()
}
