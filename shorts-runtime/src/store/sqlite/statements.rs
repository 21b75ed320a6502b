//! The statements of the requests that are not batched: each runs on its own in the group's
//! transaction.

use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqliteConnection};
use tracing::warn;

use super::writer::may_end_transaction;
use crate::store::sql::{
    CLAIM_SQLITE, FAIL_NOW, FAIL_NOW_CHECK_SQLITE, HEARTBEAT, INSERT_OPERATOR_FAILURE, PURGE_DEAD_PAYLOADS,
    RELEASE, RELEASE_ORDER, RETRY, SELECT_PAYLOAD, SELECT_PAYLOAD_LENGTH_AND_RESULT, START_RUN_SQLITE,
    UPDATE_PAYLOAD, drop_delivered_bodies, fail_now_refusal, mappers, purge_batch, replacing_body,
    select_records, started, token_span, upsert_result,
};
use crate::store::{Claimed, FailedNow, OrderRecord, OrderState, Started, ms, now_ms};

mappers!(SqliteRow);

/// Leases up to `limit` orders that need work, whole or not at all.
pub(super) async fn claim(
    c: &mut SqliteConnection,
    owner: &str,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Claimed>, sqlx::Error> {
    atomic(c, async |c: &mut SqliteConnection| {
        claim_now(c, owner, lease, limit).await
    })
    .await
}

async fn claim_now(
    c: &mut SqliteConnection,
    owner: &str,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let now = now_ms();
    let rows = sqlx::query(CLAIM_SQLITE)
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

/// Runs `work` so that it takes effect whole or not at all inside the group's transaction.
async fn atomic<T>(
    c: &mut SqliteConnection,
    work: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
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
pub(super) async fn drop_bodies(c: &mut SqliteConnection, ids: &[&str]) -> bool {
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

/// Deletes up to `limit` delivered orders received before `before` within the caller's
/// transaction, whole or not at all.
pub(super) async fn purge_within(
    c: &mut SqliteConnection,
    before: i64,
    limit: u32,
) -> Result<u64, sqlx::Error> {
    atomic(c, async |c: &mut SqliteConnection| {
        purge_batch(c, before, limit, |done| done.rows_affected()).await
    })
    .await
}

/// Deletes up to `limit` delivered orders received before `before` in a transaction of its own,
/// whole or not at all.
pub(super) async fn purge(c: &mut SqliteConnection, before: i64, limit: u32) -> Result<u64, sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await?;
    let deleted = match purge_batch(c, before, limit, |done| done.rows_affected()).await {
        Ok(deleted) => deleted,
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
            return Err(e);
        }
    };
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *c).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
        return Err(e);
    }
    Ok(deleted)
}

pub(super) async fn release(
    c: &mut SqliteConnection,
    owner: &str,
    interrupted: &[String],
) -> Result<u64, sqlx::Error> {
    // The interrupted run's row says so; the order runs again under the same number.
    for id in interrupted {
        sqlx::query(
            "UPDATE shorts_history SET ended_at = $3, outcome = 'interrupted'
             WHERE order_id = $1 AND kind = 'run' AND ended_at IS NULL
               AND number = (SELECT runs FROM shorts_orders WHERE order_id = $1 AND owner = $2);
             UPDATE shorts_orders SET runs = runs - 1 WHERE order_id = $1 AND owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
    }
    let done = sqlx::query(RELEASE).bind(owner).execute(&mut *c).await?;
    Ok(done.rows_affected())
}

pub(super) async fn heartbeat(
    c: &mut SqliteConnection,
    owner: &str,
    lease: Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(HEARTBEAT)
        .bind(now_ms() + ms(lease))
        .bind(owner)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn start_run(
    c: &mut SqliteConnection,
    id: &str,
    fence: i64,
) -> Result<Option<Started>, sqlx::Error> {
    // Both statements run to their end before the row is read.
    let rows = sqlx::query(START_RUN_SQLITE)
        .bind(id)
        .bind(fence)
        .bind(now_ms())
        .fetch_all(&mut *c)
        .await?;
    rows.first().map(started).transpose()
}

pub(super) async fn get(c: &mut SqliteConnection, id: &str) -> Result<Option<OrderRecord>, sqlx::Error> {
    let row = sqlx::query(concat!(select_records!(), " WHERE o.order_id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(record).transpose()
}

pub(super) async fn list(
    c: &mut SqliteConnection,
    state: Option<OrderState>,
    limit: u32,
) -> Result<Vec<OrderRecord>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        select_records!(),
        " WHERE ($1 IS NULL OR o.state = $1) ORDER BY o.rowid LIMIT $2"
    ))
    .bind(state.map(OrderState::as_str))
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(record).collect()
}

pub(super) async fn purge_dead(c: &mut SqliteConnection, before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(PURGE_DEAD_PAYLOADS)
        .bind(before)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn release_order(c: &mut SqliteConnection, id: &str, fence: i64) -> Result<(), sqlx::Error> {
    sqlx::query(RELEASE_ORDER)
        .bind(id)
        .bind(fence)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub(super) async fn retry(c: &mut SqliteConnection, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(RETRY)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Fails an order by hand (see [`Store::fail_now`](crate::store::Store::fail_now)), whole or not
/// at all.
pub(super) async fn fail_now(
    c: &mut SqliteConnection,
    id: &str,
    message: &str,
    body: &Bytes,
) -> Result<FailedNow, sqlx::Error> {
    atomic(c, async |c: &mut SqliteConnection| {
        let now = now_ms();
        let row: Option<crate::store::sql::FailNowRow> = sqlx::query_as(FAIL_NOW_CHECK_SQLITE)
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *c)
            .await?;
        let Some((state, leased, running, token_at, token_len)) = row else {
            return Ok(FailedNow::Unknown);
        };
        if let Some(refusal) = fail_now_refusal(&state, leased, running)? {
            return Ok(refusal);
        }
        if let Some(span) = token_span(token_at, token_len) {
            let payload: Option<Vec<u8>> = sqlx::query_scalar(SELECT_PAYLOAD)
                .bind(id)
                .fetch_optional(&mut *c)
                .await?;
            if let Some(erased) = payload.and_then(|p| crate::wire::webhook::without_job_token(&p, span)) {
                sqlx::query(UPDATE_PAYLOAD)
                    .bind(id)
                    .bind(erased)
                    .execute(&mut *c)
                    .await?;
            }
        }
        sqlx::query(FAIL_NOW).bind(id).bind(now).execute(&mut *c).await?;
        sqlx::query(upsert_result!())
            .bind(id)
            .bind(body.as_ref())
            .execute(&mut *c)
            .await?;
        sqlx::query(INSERT_OPERATOR_FAILURE)
            .bind(id)
            .bind(now)
            .bind(message)
            .execute(&mut *c)
            .await?;
        Ok(FailedNow::Failing)
    })
    .await
}
