//! The query plans of the statements the writer runs for each order and each poll, as SQLite
//! chooses them on a given database: `shorts-bench scaling` prints them for a database holding a
//! million orders, to show that none of them scans a table.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{Connection as _, QueryBuilder, Row as _, Sqlite, SqliteConnection};

use super::batch::{Batch, push_accepts, push_drop, push_saves, push_settles};
use super::file;
use super::requests::{Accepting, Op, Reply, Saving};
use crate::store::history::{AttemptResult, CallbackAttempt, RunEnd, RunOutcome};
use crate::store::sql::{
    CLAIM_SQLITE, HEARTBEAT, PURGE_BEFORE, PURGE_BOUND, PURGE_UP_TO, SELECT_PAYLOAD_LENGTH_AND_RESULT,
    START_RUN_SQLITE,
};
use crate::store::{NewOrder, Settle, StoreError, StoreOperation, now_ms};

/// Each statement the writer runs for a lone order (its accept, its callback body, its settle),
/// for a poll (the claim, with its look-up per claimed order), for a run's start and a lease's
/// renewal, and for the purge, with the lines of its `EXPLAIN QUERY PLAN` on the database at
/// `path`. The statements are the store's own, built as the writer builds them; their parameters
/// are left unbound.
pub(crate) async fn query_plans(path: &Path) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let failed = StoreError::database(StoreOperation::Open);
    let mut c = SqliteConnection::connect_with(&file::options(path)?)
        .await
        .map_err(failed)?;
    let mut plans = Vec::new();
    for statement in statements() {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}")))
            .fetch_all(&mut c)
            .await
            .map_err(StoreError::database(StoreOperation::Open))?;
        let lines = rows
            .iter()
            .filter_map(|row| row.try_get::<String, _>("detail").ok())
            .collect();
        plans.push((statement, lines));
    }
    let _ = c.close().await;
    Ok(plans)
}

/// The statements, one by one, with their whitespace squeezed.
fn statements() -> Vec<String> {
    let now = now_ms();
    let id = "plan-order";
    let order = NewOrder {
        id: id.to_owned(),
        short: "echo".to_owned(),
        payload: Bytes::from_static(b"{}"),
        callback_url: "http://127.0.0.1/callback".to_owned(),
        job_token: None,
        hold: crate::store::Hold::Start,
    };
    let ops = vec![
        Op::Accept(Accepting {
            order,
            owner: "plans".to_owned(),
            lease: Duration::from_secs(60),
            reply: Reply::new(StoreOperation::Accept).0,
        }),
        Op::SaveResult(Saving {
            id: id.to_owned(),
            fence: 1,
            body: Bytes::from_static(b"{}"),
            run: Some(RunEnd {
                run: 1,
                outcome: RunOutcome::Ok,
                error: None,
            }),
            reply: Reply::new(StoreOperation::SaveResult).0,
        }),
        Op::Settle {
            id: id.to_owned(),
            fence: 1,
            settle: Settle::Delivered,
            attempts: vec![CallbackAttempt {
                number: 1,
                at: now,
                status: Some(200),
                error: None,
                result: AttemptResult::Accepted,
            }],
            reply: Reply::new(StoreOperation::Settle).0,
        },
    ];
    // As `write_whole` writes a group holding one order's accept, body and settle.
    let (batch, _) = Batch::sort(ops.into_iter());
    let mut query = QueryBuilder::<Sqlite>::new("");
    push_accepts(&mut query, &batch.accepts, now);
    push_saves(&mut query, &batch.saves, now);
    push_settles(&mut query, &batch.settles);
    push_drop(
        &mut query,
        batch.settles.iter().map(|settling| settling.id.as_str()),
    );
    let mut statements: Vec<String> = query.into_string().split(';').map(squeezed).collect();
    for constant in [
        CLAIM_SQLITE,
        SELECT_PAYLOAD_LENGTH_AND_RESULT,
        START_RUN_SQLITE,
        HEARTBEAT,
        PURGE_BOUND,
    ]
    .into_iter()
    .chain(PURGE_UP_TO)
    .chain(PURGE_BEFORE)
    {
        statements.extend(constant.split(';').map(squeezed));
    }
    statements.retain(|statement| !statement.is_empty());
    statements
}

/// `statement` on one line, with single spaces.
fn squeezed(statement: &str) -> String {
    statement.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// The statements are planned, and none scans `shorts_orders` whole.
    #[tokio::test]
    async fn no_statement_scans_the_orders() {
        let dir = std::env::temp_dir().join(format!("shorts-plans-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("orders.db");
        drop(SqliteStore::open(&path).await.expect("open"));
        let plans = query_plans(&path).await.expect("plans");
        assert!(plans.len() >= 12, "{plans:?}");
        // The claim reads the due orders in the order it takes them, without sorting them all.
        let claim = plans
            .iter()
            .find(|(statement, _)| statement.starts_with("UPDATE shorts_orders SET fence"))
            .map(|(_, lines)| lines);
        assert!(
            claim.is_some_and(|lines| lines
                .iter()
                .any(|line| line.contains("USING INDEX shorts_orders_due"))
                && !lines.iter().any(|line| line.contains("TEMP B-TREE"))),
            "{plans:?}"
        );
        for (statement, lines) in &plans {
            assert!(
                !lines.iter().any(|line| line == "SCAN shorts_orders"),
                "{statement}: {lines:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
