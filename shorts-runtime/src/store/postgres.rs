//! PostgreSQL, for several instances behind a load balancer: claims with
//! `FOR UPDATE SKIP LOCKED`, leases renewed by heartbeats, and fenced writes.

use std::time::Duration;

use bytes::Bytes;
use sqlx::PgPool;
use sqlx::postgres::{PgPoolOptions, PgRow};

use super::sql::{claimable, claimed_columns, mappers, record_columns, settled};
use super::{Claimed, NewOrder, OrderRecord, OrderState, Settle, Store, StoreError, ms, now_ms};

mappers!(PgRow);

pub(crate) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates the schema.
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

impl Store for PgStore {
    async fn accept(
        &self,
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
        .fetch_optional(&self.pool)
        .await?;
        let mut claimed = row.as_ref().map(claimed).transpose()?;
        if let Some(claimed) = &mut claimed {
            claimed.started = started;
        }
        Ok(claimed)
    }

    async fn claim(&self, owner: &str, lease: Duration, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ms();
        let rows = sqlx::query(concat!(
            "UPDATE shorts_orders
             SET fence = fence + 1, owner = $2, lease_until = $3
             WHERE order_id IN (
                 SELECT order_id FROM shorts_orders WHERE ",
            claimable!(),
            "
                 ORDER BY COALESCE(next_at, received_at), seq LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING ",
            claimed_columns!()
        ))
        .bind(now)
        .bind(owner)
        .bind(now + ms(lease))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(claimed).collect::<Result<_, _>>()?)
    }

    async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE shorts_orders SET lease_until = $1 WHERE owner = $2")
            .bind(now_ms() + ms(lease))
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<i32>, StoreError> {
        let runs = sqlx::query_scalar(
            "UPDATE shorts_orders SET runs = runs + 1 WHERE order_id = $1 AND fence = $2 RETURNING runs",
        )
        .bind(id)
        .bind(fence)
        .fetch_optional(&self.pool)
        .await?;
        Ok(runs)
    }

    async fn save_result(&self, id: &str, fence: i64, body: Bytes) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE shorts_orders SET result = $1, state = 'delivering', next_at = NULL
             WHERE order_id = $2 AND fence = $3",
        )
        .bind(body.as_ref())
        .bind(id)
        .bind(fence)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn settle(&self, id: &str, fence: i64, settle: Settle) -> Result<bool, StoreError> {
        let (state, next_at, attempts, error) = settled(settle);
        let done = sqlx::query(
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("UPDATE shorts_orders SET runs = runs - 1 WHERE order_id = ANY($1) AND owner = $2")
            .bind(interrupted)
            .bind(owner)
            .execute(&mut *transaction)
            .await?;
        let done = sqlx::query("UPDATE shorts_orders SET owner = NULL WHERE owner = $1")
            .bind(owner)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(done.rows_affected())
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM shorts_orders WHERE order_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(record).transpose()?)
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM shorts_orders WHERE ($1::TEXT IS NULL OR state = $1) ORDER BY seq LIMIT $2"
        ))
        .bind(state.map(OrderState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE shorts_orders SET state = 'delivering', next_at = $1, attempts = 0
             WHERE order_id = $2 AND state IN ('dead', 'paused') AND result IS NOT NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
