//! What the SQLite and PostgreSQL stores share: SQL fragments and the mapping of rows.
//!
//! SQL fragments are macros expanding to literals, so that every query is a `&'static str` built
//! with `concat!` (sqlx accepts only those without an explicit audit).

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::{KEPT_BODY_LIMIT, OrderState, Settle};

/// Columns of a claim, from `shorts_orders`.
macro_rules! claimed_columns {
    () => {
        "order_id, short, callback_url, fence, attempts, steps, received_at"
    };
}

/// A record: an order with its callback body, if any.
macro_rules! select_records {
    () => {
        "SELECT o.order_id, o.short, o.state, o.runs, o.attempts, r.body AS result, o.last_error,
                o.received_at, o.next_at,
                NOT EXISTS (SELECT 1 FROM shorts_payloads p WHERE p.order_id = o.order_id) AS payload_purged
         FROM shorts_orders o LEFT JOIN shorts_results r ON r.order_id = o.order_id"
    };
}

/// The condition of orders that need work at `$1` (now) and that nobody holds.
macro_rules! claimable {
    () => {
        // `state IN (...)` repeats the partial index's condition word for word: SQLite uses a
        // partial index only for a query that contains its `WHERE` term.
        "state IN ('received', 'delivering', 'paused')
         AND (owner IS NULL OR lease_until <= $1)
         AND (state = 'received' OR (state IN ('delivering', 'paused') AND (next_at IS NULL OR next_at <= $1)))"
    };
}

/// Leases up to $4 orders that need work at $1 (now), oldest first, to $2 until $3, returning
/// their `claimed_columns!`. `$index` names the index read (`shorts_orders_due`, in the order of
/// `ORDER BY`, so that a claim reads few rows past those it takes), `$order` is the column that
/// orders rows due at the same time; `$lock` what locks the rows chosen.
macro_rules! claim {
    ($index:literal, $order:literal, $lock:literal) => {
        concat!(
            "UPDATE shorts_orders
             SET fence = fence + 1, owner = $2, lease_until = $3
             WHERE order_id IN (
                 SELECT order_id FROM shorts_orders",
            $index,
            " WHERE ",
            claimable!(),
            "
                 ORDER BY COALESCE(next_at, received_at), ",
            $order,
            " LIMIT $4",
            $lock,
            ")
             RETURNING ",
            claimed_columns!()
        )
    };
}

/// `claim!` for PostgreSQL: instances claiming at once skip each other's rows.
#[cfg(feature = "postgres")]
pub(super) const CLAIM_POSTGRES: &str = claim!("", "seq", " FOR UPDATE SKIP LOCKED");

/// `claim!` for SQLite, whose one writer claims alone. The index is named: without statistics
/// (SQLite gathers none by itself), the planner prefers sorting every waiting order.
pub(super) const CLAIM_SQLITE: &str = claim!(" INDEXED BY shorts_orders_due", "rowid", "");

/// What makes an insert into `shorts_results` replace an earlier body.
macro_rules! replacing_body {
    () => {
        " ON CONFLICT (order_id) DO UPDATE SET body = excluded.body"
    };
}

/// Stores a callback body, replacing an earlier one ($1 order, $2 body).
macro_rules! upsert_result {
    () => {
        concat!(
            "INSERT INTO shorts_results (order_id, body) VALUES ($1, $2)",
            replacing_body!()
        )
    };
}

/// The update that settles orders, from the SQL of their new values: state, next attempt, steps
/// of the schedule used, POSTs made and error (a NULL steps or error keeps the old one; the POSTs
/// are added to the attempts). It releases the lease.
macro_rules! settle_set {
    ($state:literal, $next_at:literal, $steps:literal, $posts:literal, $error:literal) => {
        concat!(
            "UPDATE shorts_orders SET state = ",
            $state,
            ", next_at = ",
            $next_at,
            ", steps = COALESCE(",
            $steps,
            ", steps), attempts = attempts + ",
            $posts,
            ", last_error = COALESCE(",
            $error,
            ", last_error), owner = NULL"
        )
    };
}

/// The columns of an order as the list shows it ([`OrderSummary`](super::history::OrderSummary)).
macro_rules! select_summaries {
    () => {
        // A join, not `NOT EXISTS`: PostgreSQL would hash the whole payload table for the
        // subquery (its estimate ignores the page's `LIMIT`) where the join looks up each row.
        "SELECT o.order_id, o.short, o.state, o.runs, o.attempts, o.last_error, o.received_at, o.next_at,
                o.outcome, p.order_id IS NULL AS payload_purged
         FROM shorts_orders o LEFT JOIN shorts_payloads p ON p.order_id = o.order_id"
    };
}

pub(super) use {replacing_body, select_records, settle_set, upsert_result};

// Whole statements. PostgreSQL runs all of them, one order at a time; SQLite runs the rest but
// writes a group's accepts, callback bodies and settles with multi-row statements of its own
// (`INSERT_ORDER`, `INSERT_PAYLOAD`, `MARK_RESULT` and `SETTLE` are PostgreSQL's only).

/// A new order, unless its `order_id` is known: $1 id, $2 short, $3 callback URL, $4 runs, $5
/// owner, $6 lease end, $7 now, $8 and $9 where its `job_token` sits (see [`token_columns`]).
#[cfg(feature = "postgres")]
pub(super) const INSERT_ORDER: &str =
    "INSERT INTO shorts_orders (order_id, short, callback_url, state, runs, fence, owner, lease_until, received_at,
                                token_at, token_len)
     VALUES ($1, $2, $3, 'received', $4, 1, $5, $6, $7, $8, $9)
     ON CONFLICT (order_id) DO NOTHING";

/// The `token_at` and `token_len` columns of an order whose `job_token` sits at `span` in its
/// webhook body: both NULL for an order without one (most).
pub(super) fn token_columns(span: Option<&std::ops::Range<usize>>) -> (Option<i64>, Option<i64>) {
    let column = |n: usize| i64::try_from(n).ok();
    match span {
        Some(span) => match (column(span.start), column(span.len())) {
            (Some(at), Some(len)) => (Some(at), Some(len)),
            _ => (None, None),
        },
        None => (None, None),
    }
}

/// The webhook body of a new order, and the start of its first run when it was accepted with one:
/// $1 id, $2 body, $3 now, $4 whether it started.
#[cfg(feature = "postgres")]
pub(super) const INSERT_PAYLOAD: &str =
    "WITH h AS (INSERT INTO shorts_history (order_id, kind, number, at) SELECT $1, 'run', 1, $3 WHERE $4)
     INSERT INTO shorts_payloads (order_id, payload) VALUES ($1, $2)";

/// Renews an owner's leases: $1 lease end, $2 owner.
pub(super) const HEARTBEAT: &str = "UPDATE shorts_orders SET lease_until = $1 WHERE owner = $2";

/// Counts a run under the lease, returning its number and the webhook body, and records the run's
/// start in the order's history: $1 id, $2 fence, $3 now. SQLite runs both statements of one
/// query (the row comes from the second).
pub(super) const START_RUN_SQLITE: &str = "INSERT INTO shorts_history (order_id, kind, number, at)
     SELECT order_id, 'run', runs + 1, $3 FROM shorts_orders WHERE order_id = $1 AND fence = $2;
     UPDATE shorts_orders SET runs = runs + 1 WHERE order_id = $1 AND fence = $2
     RETURNING runs,
         (SELECT p.payload FROM shorts_payloads p WHERE p.order_id = shorts_orders.order_id) AS payload";

/// [`START_RUN_SQLITE`] for PostgreSQL, as one statement.
#[cfg(feature = "postgres")]
pub(super) const START_RUN_POSTGRES: &str = "WITH s AS (
         UPDATE shorts_orders SET runs = runs + 1 WHERE order_id = $1 AND fence = $2 RETURNING order_id, runs),
     h AS (INSERT INTO shorts_history (order_id, kind, number, at) SELECT order_id, 'run', runs, $3 FROM s)
     SELECT s.runs, (SELECT p.payload FROM shorts_payloads p WHERE p.order_id = s.order_id) AS payload FROM s";

/// Reads [`START_RUN_SQLITE`]'s (or [`START_RUN_POSTGRES`]'s) row. A missing body reads as empty: the worker fails such an order as
/// unreadable.
pub(super) fn started<R>(row: &R) -> Result<super::Started, sqlx::Error>
where
    R: sqlx::Row,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<Vec<u8>>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    Ok(super::Started {
        run: row.try_get("runs")?,
        payload: row
            .try_get::<Option<Vec<u8>>, _>("payload")?
            .map(bytes::Bytes::from)
            .unwrap_or_default(),
    })
}

/// Moves an order to delivery under the lease (its body goes to `shorts_results`), replacing its
/// `job_token` by `null` in its stored webhook body if it has one, and records how the run that
/// produced the body ended: $1 id, $2 fence, $3 now, $4 the run's outcome (NULL for a body that
/// is no run's), $5 its error, $6 its number. Orders without a token cost one look-up of their
/// own row.
#[cfg(feature = "postgres")]
pub(super) const MARK_RESULT: &str = "WITH erased AS (
         UPDATE shorts_payloads p
         SET payload = overlay(p.payload placing convert_to('null', 'UTF8')
                               from (o.token_at + 1)::INT for o.token_len::INT)
         FROM shorts_orders o
         WHERE o.order_id = $1 AND o.fence = $2 AND o.token_at IS NOT NULL AND p.order_id = o.order_id),
     ran AS (
         UPDATE shorts_history h SET ended_at = $3, outcome = $4, detail = $5
         FROM shorts_orders o
         WHERE $4::TEXT IS NOT NULL AND o.order_id = $1 AND o.fence = $2
           AND h.order_id = $1 AND h.kind = 'run' AND h.number = $6 AND h.ended_at IS NULL)
     UPDATE shorts_orders SET state = 'delivering', next_at = NULL, token_at = NULL, token_len = NULL,
                              outcome = COALESCE($4, outcome)
     WHERE order_id = $1 AND fence = $2";

/// Records a delivery's outcome and releases the lease, and its callback POSTs in the order's
/// history, deleting attempts older than the last [`KEPT_ATTEMPTS`](super::history::KEPT_ATTEMPTS):
/// $1 state, $2 next attempt, $3 steps, $4 POSTs, $5 error, $6 id, $7 fence; the attempts' $8
/// numbers, $9 times, $10 results, $11 statuses, $12 errors; $13 the last attempt number deleted.
/// Returns a row when the fence was current.
#[cfg(feature = "postgres")]
pub(super) const SETTLE: &str = concat!(
    "WITH s AS (",
    settle_set!("$1", "$2", "$3", "$4", "$5"),
    " WHERE order_id = $6 AND fence = $7 RETURNING order_id),
     h AS (INSERT INTO shorts_history (order_id, kind, number, at, outcome, status, detail)
           SELECT s.order_id, 'callback', a.number, a.at, a.outcome, a.status, a.detail
           FROM s, unnest($8::INT[], $9::BIGINT[], $10::TEXT[], $11::INT[], $12::TEXT[])
                AS a(number, at, outcome, status, detail)),
     d AS (DELETE FROM shorts_history
           WHERE order_id IN (SELECT order_id FROM s) AND kind = 'callback' AND number <= $13)
     SELECT order_id FROM s"
);

/// Drops the callback bodies of `ids` that are longer than [`KEPT_BODY_LIMIT`], of orders recorded
/// as delivered. Each order is looked up by its primary key.
pub(super) fn drop_delivered_bodies<'a, DB>(ids: impl IntoIterator<Item = &'a str>) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("");
    push_drop_delivered_bodies(&mut query, ids);
    query
}

/// Writes [`drop_delivered_bodies`]'s statement at the end of `query`.
pub(super) fn push_drop_delivered_bodies<'a, DB>(
    query: &mut QueryBuilder<DB>,
    ids: impl IntoIterator<Item = &'a str>,
) where
    DB: Database,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
{
    query.push(
        "DELETE FROM shorts_results
         WHERE EXISTS (SELECT 1 FROM shorts_orders o
                       WHERE o.order_id = shorts_results.order_id AND o.state = 'delivered')
           AND length(body) > ",
    );
    query.push_bind(KEPT_BODY_LIMIT as i64).push(" AND order_id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    query.push(")");
}

/// Releases one order's lease if the fence is current: $1 id, $2 fence.
pub(super) const RELEASE_ORDER: &str =
    "UPDATE shorts_orders SET owner = NULL WHERE order_id = $1 AND fence = $2";

/// Releases an owner's leases: $1 owner.
pub(super) const RELEASE: &str = "UPDATE shorts_orders SET owner = NULL WHERE owner = $1";

/// The `(received_at, order_id)` of the delivered order received before $1 that ends a batch of
/// $2 + 1 such orders, oldest first (none when fewer are left): the bound of the `PURGE_*`
/// statements, which delete one batch at a time (see [`Store::purge`](super::Store::purge)).
pub(super) const PURGE_BOUND: &str = "SELECT received_at, order_id FROM shorts_orders
     WHERE state = 'delivered' AND received_at < $1 ORDER BY received_at, order_id LIMIT 1 OFFSET $2";

/// Deletes a batch of delivered orders: their history, webhook bodies and callback bodies, then the
/// orders (the last statement, whose count is the batch's). `PURGE_UP_TO` deletes those up to the
/// bound `($1, $2)` that `PURGE_BOUND` found; its plain `received_at <= $1` bounds the range of the
/// `(state, received_at, order_id)` index that is read (the row value alone does not, and a batch
/// would then read every older order). `PURGE_BEFORE` deletes the rest, fewer than a batch, received
/// before $1.
macro_rules! purge {
    ($orders:literal) => {
        [
            concat!("DELETE FROM shorts_history WHERE order_id IN (", $orders, ")"),
            concat!("DELETE FROM shorts_payloads WHERE order_id IN (", $orders, ")"),
            concat!("DELETE FROM shorts_results WHERE order_id IN (", $orders, ")"),
            concat!("DELETE FROM shorts_orders WHERE order_id IN (", $orders, ")"),
        ]
    };
}

/// See `purge!`: $1 and $2 the bound's `received_at` and `order_id`.
pub(super) const PURGE_UP_TO: [&str; 4] = purge!(
    "SELECT order_id FROM shorts_orders WHERE state = 'delivered'
     AND received_at <= $1 AND (received_at, order_id) <= ($1, $2)"
);

/// See `purge!`: $1 the time before which delivered orders are deleted.
pub(super) const PURGE_BEFORE: [&str; 4] =
    purge!("SELECT order_id FROM shorts_orders WHERE state = 'delivered' AND received_at < $1");

/// The statements that delete a batch: up to the bound `PURGE_BOUND` `found`, or the rest.
pub(super) fn purge_statements(found: bool) -> [&'static str; 4] {
    if found { PURGE_UP_TO } else { PURGE_BEFORE }
}

/// Deletes the oldest `limit` delivered orders received before `before` (see
/// [`Store::purge`](super::Store::purge)) on `c`, in the caller's transaction: finds the batch's
/// bound, then runs [`purge_statements`]. Returns the orders' count, which `affected` reads from
/// the last statement's result.
pub(super) async fn purge_batch<DB, C>(
    c: &mut C,
    before: i64,
    limit: u32,
    affected: fn(DB::QueryResult) -> u64,
) -> Result<u64, sqlx::Error>
where
    DB: Database,
    for<'e> &'e mut C: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments: sqlx::IntoArguments<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    (i64, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let offset = i64::from(limit.max(1)) - 1;
    let found: Option<(i64, String)> = sqlx::query_as(PURGE_BOUND)
        .bind(before)
        .bind(offset)
        .fetch_optional(&mut *c)
        .await?;
    let mut deleted = 0;
    for statement in purge_statements(found.is_some()) {
        let query = match &found {
            Some((at, id)) => sqlx::query(statement).bind(*at).bind(id.clone()),
            None => sqlx::query(statement).bind(before),
        };
        deleted = affected(query.execute(&mut *c).await?);
    }
    // The last statement's count: the orders'.
    Ok(deleted)
}

/// Deletes the webhook bodies of dead orders received before $1.
pub(super) const PURGE_DEAD_PAYLOADS: &str = "DELETE FROM shorts_payloads WHERE order_id IN
     (SELECT order_id FROM shorts_orders WHERE state = 'dead' AND received_at < $1)";

/// The length of an order's webhook body and its callback body, each NULL when there is none (a
/// dead order's webhook body may have been purged): $1 id. SQLite reads a blob's length from its
/// record's header, without reading the blob.
pub(super) const SELECT_PAYLOAD_LENGTH_AND_RESULT: &str =
    "SELECT (SELECT length(payload) FROM shorts_payloads WHERE order_id = $1),
            (SELECT body FROM shorts_results WHERE order_id = $1)";

/// $2 id.
pub(super) const RETRY: &str = "UPDATE shorts_orders SET state = 'delivering', next_at = $1, steps = 0
     WHERE order_id = $2 AND state IN ('dead', 'paused')
       AND EXISTS (SELECT 1 FROM shorts_results r WHERE r.order_id = shorts_orders.order_id)";

/// A page of orders (see [`Store::orders_page`](super::Store::orders_page)): one more row than
/// `limit`, which says whether another page follows. Newest first by `(received_at, order_id)`,
/// which the indexes on `(received_at, order_id)`, `(state, received_at, order_id)` and
/// `(short, received_at, order_id)` give in order; the cursor is a row-value comparison on the
/// same columns.
pub(super) fn orders_page<DB>(
    filter: &super::OrderFilter,
    after: Option<&super::PageCursor>,
    limit: u32,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    use super::history::IdMatch;
    let mut query = QueryBuilder::new(concat!(select_summaries!(), " WHERE TRUE"));
    if let Some(state) = filter.state {
        query.push(" AND o.state = ").push_bind(state.as_str().to_owned());
    }
    if let Some(short) = &filter.short {
        query.push(" AND o.short = ").push_bind(short.clone());
    }
    match &filter.id {
        None => {}
        Some(IdMatch::Exact(id)) => {
            query.push(" AND o.order_id = ").push_bind(id.clone());
        }
        Some(IdMatch::Prefix(prefix)) => {
            query
                .push(" AND substr(o.order_id, 1, length(")
                .push_bind(prefix.clone())
                .push(")) = ")
                .push_bind(prefix.clone());
        }
    }
    if let Some(cursor) = after {
        query
            .push(" AND (o.received_at, o.order_id) < (")
            .push_bind(cursor.received_at)
            .push(", ")
            .push_bind(cursor.id.clone())
            .push(")");
    }
    query
        .push(" ORDER BY o.received_at DESC, o.order_id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    query
}

/// How many orders are in each state.
pub(super) const STATE_COUNTS: &str = "SELECT state, count(*) FROM shorts_orders GROUP BY state";

/// Orders received and failed per hour since $1: failed when dead, or when their last run did not
/// end well, or an operator failed them.
pub(super) const HOURLY: &str = "SELECT (received_at / 3600000) * 3600000 AS hour, count(*) AS received,
            COALESCE(sum(CASE WHEN state = 'dead' OR (outcome IS NOT NULL AND outcome <> 'ok') THEN 1 ELSE 0 END), 0)
                AS failed
     FROM shorts_orders WHERE received_at >= $1 GROUP BY 1 ORDER BY 1";

/// The p50 and p95 durations (ms, nearest rank) of each short's runs started since $1 that ended,
/// from the newest $2 such runs: short, runs, p50, p95, by short. Computed where the rows are,
/// so that only a row per short is sent.
pub(super) const RUN_TIMES: &str = "WITH h AS (
         SELECT order_id, ended_at - at AS ms FROM shorts_history
         WHERE kind = 'run' AND at >= $1 AND ended_at IS NOT NULL AND outcome <> 'interrupted'
         ORDER BY at DESC LIMIT $2),
     r AS (
         SELECT o.short, h.ms, row_number() OVER (PARTITION BY o.short ORDER BY h.ms) AS k,
                count(*) OVER (PARTITION BY o.short) AS n
         FROM h JOIN shorts_orders o ON o.order_id = h.order_id)
     SELECT short, n,
            min(CASE WHEN k >= (n * 50 + 99) / 100 THEN ms END) AS p50,
            min(CASE WHEN k >= (n * 95 + 99) / 100 THEN ms END) AS p95
     FROM r GROUP BY short, n ORDER BY short";

/// [`RUN_TIMES`]'s rows.
pub(super) fn run_times(rows: Vec<(String, i64, i64, i64)>) -> Vec<super::RunTimes> {
    rows.into_iter()
        .map(|(short, runs, p50_ms, p95_ms)| super::RunTimes {
            short,
            runs: u64::try_from(runs).unwrap_or(0),
            p50_ms,
            p95_ms,
        })
        .collect()
}

/// Callback POSTs made since $1, and how many were accepted.
pub(super) const CALLBACK_RATE: &str =
    "SELECT count(*), COALESCE(sum(CASE WHEN outcome = 'accepted' THEN 1 ELSE 0 END), 0)
     FROM shorts_history WHERE kind = 'callback' AND at >= $1";

/// An order's history rows, in the order they were written: $1 id.
pub(super) const HISTORY_OF: &str = "SELECT kind, number, at, ended_at, outcome, status, detail
     FROM shorts_history WHERE order_id = $1 ORDER BY id";

/// An order's webhook body and callback body, each NULL when there is none: $1 id.
pub(super) const BODIES_OF: &str = "SELECT (SELECT payload FROM shorts_payloads WHERE order_id = $1),
            (SELECT body FROM shorts_results WHERE order_id = $1)";

/// What decides whether an order can be failed by hand: its state, whether a live lease holds it,
/// whether a run of it has no end, and where its `job_token` sits: $1 id, $2 now.
macro_rules! fail_now_check {
    () => {
        "SELECT state, (owner IS NOT NULL AND lease_until > $2) AS leased,
                EXISTS (SELECT 1 FROM shorts_history h
                        WHERE h.order_id = shorts_orders.order_id AND h.kind = 'run' AND h.ended_at IS NULL)
                    AS running,
                token_at, token_len
         FROM shorts_orders WHERE order_id = $1"
    };
}

pub(super) const FAIL_NOW_CHECK_SQLITE: &str = fail_now_check!();
/// The row `fail_now_check!` selects: state, leased, running, `token_at`, `token_len`.
pub(super) type FailNowRow = (String, bool, bool, Option<i64>, Option<i64>);

/// Locks the row until the transaction ends: no claim takes it meanwhile.
#[cfg(feature = "postgres")]
pub(super) const FAIL_NOW_CHECK_POSTGRES: &str = concat!(fail_now_check!(), " FOR UPDATE");

/// Moves an order failed by hand to delivery, due now ($2), taking its lease back: $1 id.
pub(super) const FAIL_NOW: &str = "UPDATE shorts_orders
     SET state = 'delivering', next_at = $2, steps = 0, fence = fence + 1, owner = NULL, outcome = 'operator',
         token_at = NULL, token_len = NULL
     WHERE order_id = $1";

/// Records an operator's failure of an order: $1 id, $2 now, $3 message.
pub(super) const INSERT_OPERATOR_FAILURE: &str =
    "INSERT INTO shorts_history (order_id, kind, number, at, outcome, detail)
     VALUES ($1, 'operator', 0, $2, 'failed', $3)";

/// Reads an order's webhook body: $1 id.
pub(super) const SELECT_PAYLOAD: &str = "SELECT payload FROM shorts_payloads WHERE order_id = $1";

/// Replaces an order's webhook body: $1 id, $2 body.
pub(super) const UPDATE_PAYLOAD: &str = "UPDATE shorts_payloads SET payload = $2 WHERE order_id = $1";

/// The span of a `job_token` from its stored columns.
pub(super) fn token_span(at: Option<i64>, len: Option<i64>) -> Option<std::ops::Range<usize>> {
    let at = usize::try_from(at?).ok()?;
    let len = usize::try_from(len?).ok()?;
    Some(at..at.checked_add(len)?)
}

/// Each state's count from `(state, count)` rows, in the order of an order's life; rows of
/// states this version does not know are left out.
pub(super) fn state_counts(rows: Vec<(String, i64)>) -> Vec<(OrderState, u64)> {
    let mut counts: Vec<(OrderState, u64)> = rows
        .into_iter()
        .filter_map(|(state, n)| Some((OrderState::parse(&state)?, u64::try_from(n).unwrap_or(0))))
        .collect();
    counts.sort_by_key(|(state, _)| OrderState::ALL.iter().position(|s| s == state));
    counts
}

/// [`HOURLY`]'s rows.
pub(super) fn hour_counts(rows: Vec<(i64, i64, i64)>) -> Vec<super::HourCount> {
    rows.into_iter()
        .map(|(hour, received, failed)| super::HourCount {
            hour,
            received: u64::try_from(received).unwrap_or(0),
            failed: u64::try_from(failed).unwrap_or(0),
        })
        .collect()
}

/// Decides a failure by hand from the row `fail_now_check!` selects: `None` when it may go ahead.
pub(super) fn fail_now_refusal(
    state: &str,
    leased: bool,
    running: bool,
) -> Result<Option<super::FailedNow>, sqlx::Error> {
    let state = OrderState::parse(state)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?}").into()))?;
    Ok(match state {
        OrderState::Delivered | OrderState::Dead => Some(super::FailedNow::NotStuck(state)),
        _ if leased && (state != OrderState::Received || running) => Some(super::FailedNow::Busy),
        _ => None,
    })
}

/// Defines `claimed` (a claim without its callback body and payload length) and `record`, for one backend's rows.
macro_rules! mappers {
    ($row:ty) => {
        fn claimed(row: &$row) -> Result<super::Claimed, sqlx::Error> {
            use sqlx::Row as _;
            Ok(super::Claimed {
                id: row.try_get("order_id")?,
                short: row.try_get("short")?,
                payload_len: 0,
                callback_url: row.try_get("callback_url")?,
                fence: row.try_get("fence")?,
                attempts: row.try_get("attempts")?,
                steps: row.try_get("steps")?,
                result: None,
                started: false,
                received_at: row.try_get("received_at")?,
            })
        }

        fn record(row: &$row) -> Result<super::OrderRecord, sqlx::Error> {
            use sqlx::Row as _;
            let state: String = row.try_get("state")?;
            Ok(super::OrderRecord {
                id: row.try_get("order_id")?,
                short: row.try_get("short")?,
                state: super::OrderState::parse(&state)
                    .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?}").into()))?,
                runs: crate::store::runs_from_stored(row.try_get("runs")?),
                attempts: row.try_get("attempts")?,
                result: row
                    .try_get::<Option<Vec<u8>>, _>("result")?
                    .map(bytes::Bytes::from),
                last_error: row.try_get("last_error")?,
                received_at: crate::store::time_from_stored(row.try_get("received_at")?),
                next_at: row.try_get("next_at")?,
                payload_purged: row.try_get("payload_purged")?,
            })
        }

        pub(super) fn summary(row: &$row) -> Result<crate::store::history::OrderSummary, sqlx::Error> {
            use sqlx::Row as _;
            let state: String = row.try_get("state")?;
            let outcome: Option<String> = row.try_get("outcome")?;
            Ok(crate::store::history::OrderSummary {
                id: row.try_get("order_id")?,
                short: row.try_get("short")?,
                state: super::OrderState::parse(&state)
                    .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?}").into()))?,
                runs: crate::store::runs_from_stored(row.try_get("runs")?),
                attempts: row.try_get("attempts")?,
                last_error: row.try_get("last_error")?,
                received_at: row.try_get("received_at")?,
                next_at: row.try_get("next_at")?,
                payload_purged: row.try_get("payload_purged")?,
                outcome: outcome.as_deref().and_then(crate::store::RunOutcome::parse),
                failed_by_operator: outcome.as_deref() == Some("operator"),
            })
        }

        pub(super) fn history_row(row: &$row) -> Result<crate::store::history::HistoryRow, sqlx::Error> {
            use sqlx::Row as _;
            Ok(crate::store::history::HistoryRow {
                kind: row.try_get("kind")?,
                number: row.try_get("number")?,
                at: row.try_get("at")?,
                ended_at: row.try_get("ended_at")?,
                outcome: row.try_get("outcome")?,
                status: row.try_get("status")?,
                detail: row.try_get("detail")?,
            })
        }
    };
}

pub(super) use mappers;

/// The new values of a settled order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settled {
    /// Its state's name.
    pub(super) state: &'static str,
    /// When its next attempt is due.
    pub(super) next_at: Option<i64>,
    /// Steps of the retry schedule used; `None` keeps the old count.
    pub(super) steps: Option<i32>,
    /// POSTs made, added to its attempts.
    pub(super) posts: i32,
    /// The delivery's error; `None` keeps the old one.
    pub(super) error: Option<String>,
}

/// An outcome's new values, after `posts` POSTs.
pub(super) fn settled(settle: Settle, posts: i32) -> Settled {
    let (state, next_at, steps, error) = match settle {
        Settle::Delivered => (OrderState::Delivered, None, None, None),
        Settle::Dead(error) => (OrderState::Dead, None, None, Some(error)),
        Settle::Retry { at, steps, error } => (OrderState::Delivering, Some(at), Some(steps), Some(error)),
        Settle::Paused { at } => (
            OrderState::Paused,
            Some(at),
            None,
            Some("the platform refused the callback secret (401)".to_owned()),
        ),
    };
    Settled {
        state: state.as_str(),
        next_at,
        steps,
        posts,
        error,
    }
}
