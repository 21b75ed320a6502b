//! PostgreSQL, for several instances behind a load balancer: claims with
//! `FOR UPDATE SKIP LOCKED`, leases renewed by heartbeats, and fenced writes.

use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres};
use tracing::warn;

use super::sql::{
    HEARTBEAT, INSERT_ORDER, INSERT_PAYLOAD, MARK_RESULT, PURGE_DEAD_PAYLOADS, PURGE_ORDERS, PURGE_PAYLOADS,
    PURGE_RESULTS, RELEASE, RELEASE_ORDER, RETRY, SETTLE, START_RUN, claimable, claimed_columns,
    drop_delivered_bodies, mappers, replacing_body, select_records, settled, token_columns, upsert_result,
};
use super::{Claimed, NewOrder, OrderRecord, OrderState, Settle, Store, StoreError, ms, now_ms};

mappers!(PgRow);

/// An order's webhook body and callback body, each `None` when there is none.
type Bodies = (Option<Vec<u8>>, Option<Vec<u8>>);

/// An order's id and [`Bodies`], as a row.
type BodyRow = (String, Option<Vec<u8>>, Option<Vec<u8>>);

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

impl PgStore {
    /// Loads the webhook and callback bodies of claimed orders.
    async fn with_bodies(&self, mut claims: Vec<Claimed>) -> Result<Vec<Claimed>, StoreError> {
        if claims.is_empty() {
            return Ok(claims);
        }
        let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
        // A dead order's webhook body may have been purged: a retry delivers its stored result.
        let rows: Vec<BodyRow> = sqlx::query_as(
            "SELECT o.id, p.payload, r.body FROM unnest($1::TEXT[]) AS o(id)
             LEFT JOIN shorts_payloads p ON p.order_id = o.id
             LEFT JOIN shorts_results r ON r.order_id = o.id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut bodies: std::collections::HashMap<String, Bodies> = rows
            .into_iter()
            .map(|(id, payload, result)| (id, (payload, result)))
            .collect();
        for claimed in &mut claims {
            if let Some((payload, result)) = bodies.remove(&claimed.id) {
                claimed.payload = payload.map(Bytes::from).unwrap_or_default();
                claimed.result = result.map(Bytes::from);
            }
        }
        Ok(claims)
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
        let (token_at, token_len) = token_columns(order.job_token.as_ref());
        let mut transaction = self.pool.begin().await?;
        let inserted = sqlx::query(INSERT_ORDER)
            .bind(&order.id)
            .bind(&order.short)
            .bind(&order.callback_url)
            .bind(i32::from(order.started))
            .bind(owner)
            .bind(now + ms(lease))
            .bind(now)
            .bind(token_at)
            .bind(token_len)
            .execute(&mut *transaction)
            .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(INSERT_PAYLOAD)
            .bind(&order.id)
            .bind(order.payload.as_ref())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(Some(Claimed {
            id: order.id,
            short: order.short,
            payload: order.payload,
            callback_url: order.callback_url,
            fence: 1,
            attempts: 0,
            steps: 0,
            result: None,
            started: order.started,
        }))
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
        let claims = rows.iter().map(claimed).collect::<Result<Vec<_>, _>>()?;
        self.with_bodies(claims).await
    }

    async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64, StoreError> {
        let done = sqlx::query(HEARTBEAT)
            .bind(now_ms() + ms(lease))
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<i32>, StoreError> {
        let runs = sqlx::query_scalar(START_RUN)
            .bind(id)
            .bind(fence)
            .fetch_optional(&self.pool)
            .await?;
        Ok(runs)
    }

    async fn save_result(&self, id: &str, fence: i64, body: Bytes) -> Result<bool, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let updated = sqlx::query(MARK_RESULT)
            .bind(id)
            .bind(fence)
            .execute(&mut *transaction)
            .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(upsert_result!())
            .bind(id)
            .bind(body.as_ref())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn settle(&self, id: &str, fence: i64, settle: Settle, posts: i32) -> Result<bool, StoreError> {
        let delivered = settle == Settle::Delivered;
        let (state, next_at, steps, posts, error) = settled(settle, posts);
        let done = sqlx::query(SETTLE)
            .bind(state)
            .bind(next_at)
            .bind(steps)
            .bind(posts)
            .bind(error)
            .bind(id)
            .bind(fence)
            .execute(&self.pool)
            .await?;
        let settled = done.rows_affected() == 1;
        if settled && delivered {
            // Failing leaves the body in place, which is harmless: the settle stands.
            let dropped = drop_delivered_bodies::<Postgres>([id])
                .build()
                .execute(&self.pool)
                .await;
            if let Err(e) = dropped {
                warn!(error = %e, order_id = id, "could not drop a delivered callback body");
            }
        }
        Ok(settled)
    }

    async fn release(&self, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("UPDATE shorts_orders SET runs = runs - 1 WHERE order_id = ANY($1) AND owner = $2")
            .bind(interrupted)
            .bind(owner)
            .execute(&mut *transaction)
            .await?;
        let done = sqlx::query(RELEASE)
            .bind(owner)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(done.rows_affected())
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let row = sqlx::query(concat!(select_records!(), " WHERE o.order_id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(record).transpose()?)
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            select_records!(),
            " WHERE ($1::TEXT IS NULL OR o.state = $1) ORDER BY o.seq LIMIT $2"
        ))
        .bind(state.map(OrderState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(RETRY)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(PURGE_PAYLOADS)
            .bind(before)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(PURGE_RESULTS)
            .bind(before)
            .execute(&mut *transaction)
            .await?;
        let done = sqlx::query(PURGE_ORDERS)
            .bind(before)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(done.rows_affected())
    }

    async fn purge_dead(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(PURGE_DEAD_PAYLOADS)
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn release_order(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        sqlx::query(RELEASE_ORDER)
            .bind(id)
            .bind(fence)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
