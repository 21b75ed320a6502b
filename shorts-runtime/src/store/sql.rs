//! What the SQLite and PostgreSQL stores share: the columns read back and their mapping.

use super::Settle;

// SQL fragments are macros expanding to literals, so that every query is a `&'static str` built
// with `concat!` (sqlx accepts only those without an explicit audit).

/// Columns of a claim.
macro_rules! claimed_columns {
    () => {
        "order_id, short, payload, callback_url, fence, attempts, result"
    };
}

/// Columns of a record.
macro_rules! record_columns {
    () => {
        "order_id, short, state, runs, attempts, result, last_error, received_at, next_at"
    };
}

/// The condition of orders that need work at `$1` (now) and that nobody holds.
macro_rules! claimable {
    () => {
        "(owner IS NULL OR lease_until <= $1)
         AND (state = 'received' OR (state IN ('delivering', 'paused') AND (next_at IS NULL OR next_at <= $1)))"
    };
}

pub(super) use {claimable, claimed_columns, record_columns};

/// Defines `claimed` and `record`, reading a claim and a record from one backend's rows.
macro_rules! mappers {
    ($row:ty) => {
        fn claimed(row: &$row) -> Result<super::Claimed, sqlx::Error> {
            use sqlx::Row as _;
            Ok(super::Claimed {
                id: row.try_get("order_id")?,
                short: row.try_get("short")?,
                payload: bytes::Bytes::from(row.try_get::<Vec<u8>, _>("payload")?),
                callback_url: row.try_get("callback_url")?,
                fence: row.try_get("fence")?,
                attempts: row.try_get("attempts")?,
                result: row
                    .try_get::<Option<Vec<u8>>, _>("result")?
                    .map(bytes::Bytes::from),
                started: false,
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
                runs: row.try_get("runs")?,
                attempts: row.try_get("attempts")?,
                result: row
                    .try_get::<Option<Vec<u8>>, _>("result")?
                    .map(bytes::Bytes::from),
                last_error: row.try_get("last_error")?,
                received_at: row.try_get("received_at")?,
                next_at: row.try_get("next_at")?,
            })
        }
    };
}

pub(super) use mappers;

/// The new values of a settled order: state, next attempt, attempts (None: unchanged), error.
pub(super) fn settled(settle: Settle) -> (&'static str, Option<i64>, Option<i32>, Option<String>) {
    match settle {
        Settle::Delivered => ("delivered", None, None, None),
        Settle::Dead(error) => ("dead", None, None, Some(error)),
        Settle::Retry { at, attempts, error } => ("delivering", Some(at), Some(attempts), Some(error)),
        Settle::Paused { at } => (
            "paused",
            Some(at),
            None,
            Some("the platform refused the callback secret (401)".to_owned()),
        ),
    }
}
