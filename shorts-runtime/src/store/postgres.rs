//! PostgreSQL, for several instances behind a load balancer: claims with
//! `FOR UPDATE SKIP LOCKED`, leases renewed by heartbeats, and fenced writes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{Connection as _, PgPool, Postgres};
use tracing::warn;

use super::error::{Failure, doing};
use super::history::{self, KEPT_ATTEMPTS, RUN_TIMES_LIMIT};
use super::sql::{
    BODIES_OF, CALLBACK_RATE, CLAIM_POSTGRES, FAIL_NOW, FAIL_NOW_CHECK_POSTGRES, HEARTBEAT, HISTORY_OF,
    HOURLY, INSERT_OPERATOR_FAILURE, INSERT_ORDER, INSERT_PAYLOAD, MARK_RESULT, PURGE_DEAD_PAYLOADS, RELEASE,
    RELEASE_ORDER, RETRY, RUN_TIMES, SELECT_PAYLOAD, SETTLE, START_RUN_POSTGRES, STATE_COUNTS,
    UPDATE_PAYLOAD, drop_delivered_bodies, fail_now_refusal, hour_counts, mappers, orders_page, purge_batch,
    replacing_body, run_times, select_records, settled, started, state_counts, token_columns, token_span,
    upsert_result,
};
use super::{
    CallbackAttempt, CallbackRate, Claimed, FailedNow, HourCount, NewOrder, OrderDetail, OrderFilter,
    OrderPage, OrderRecord, OrderState, PageCursor, Purged, RunEnd, RunTimes, Settle, Started, Store,
    StoreError, StoreOperation, ms, now_ms,
};

mappers!(PgRow);

/// How long opening the store waits for PostgreSQL to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct PgStore {
    pool: PgPool,
    /// The heartbeat's own connection: renewing leases never waits behind the webhooks and orders
    /// queued for `pool`, which after an outage can take longer than a lease.
    beats: PgPool,
}

// A lease's end is computed once the query has its connection, never before: the wait for one
// lasts up to the pool's acquire timeout while the database is slow or coming back, and a lease
// computed before it would be written already expired, for another instance to take at once.

impl PgStore {
    /// Connects to `url` and migrates the schema.
    ///
    /// The first connection is made on its own, so that an unreachable server is reported with
    /// its host, port and the error met (connection refused, unknown host, bad password), not as
    /// a pool that timed out.
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        let opening = StoreError::database(StoreOperation::Open);
        let options: PgConnectOptions = url.parse().map_err(opening)?;
        let unreachable = |source: sqlx::Error| StoreError::Connect {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            source: Box::new(source),
        };
        let first = match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(unreachable(e)),
            Err(_) => return Err(unreachable(sqlx::Error::PoolTimedOut)),
        };
        first.close().await.map_err(opening)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(unreachable)?;
        super::migrations::postgres()
            .run(&pool)
            .await
            .map_err(StoreError::migrate)?;
        // A short wait for a connection: when the database is unreachable the heartbeat fails
        // soon and tries again at its next beat, instead of backing off for seconds.
        let beats = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(url)
            .map_err(opening)?;
        Ok(Self { pool, beats })
    }
}

impl PgStore {
    /// Loads the callback bodies of claimed orders, and the lengths of their webhook bodies (which
    /// are read only when a run starts).
    async fn with_bodies(&self, mut claims: Vec<Claimed>) -> Result<Vec<Claimed>, sqlx::Error> {
        if claims.is_empty() {
            return Ok(claims);
        }
        let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
        // A dead order's webhook body may have been purged: its length is then NULL.
        let rows: Vec<(String, Option<i32>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT o.id, octet_length(p.payload), r.body FROM unnest($1::TEXT[]) AS o(id)
             LEFT JOIN shorts_payloads p ON p.order_id = o.id
             LEFT JOIN shorts_results r ON r.order_id = o.id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut bodies: std::collections::HashMap<String, (Option<i32>, Option<Vec<u8>>)> = rows
            .into_iter()
            .map(|(id, length, result)| (id, (length, result)))
            .collect();
        for claimed in &mut claims {
            if let Some((length, result)) = bodies.remove(&claimed.id) {
                claimed.payload_len = length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
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
        doing(StoreOperation::Accept, async {
            let (token_at, token_len) = token_columns(order.job_token.as_ref());
            let mut transaction = self.pool.begin().await?;
            let now = now_ms();
            let inserted = sqlx::query(INSERT_ORDER)
                .bind(&order.id)
                .bind(&order.short)
                .bind(&order.callback_url)
                .bind(i32::from(order.hold.started()))
                .bind(order.hold.leased().then_some(owner))
                .bind(order.hold.lease_until(now, lease))
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
                .bind(now)
                .bind(order.hold.started())
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await.map_err(Failure::commit)?;
            Ok::<_, Failure>(Some(Claimed {
                id: order.id,
                short: order.short,
                payload_len: order.payload.len() as u64,
                callback_url: order.callback_url,
                fence: 1,
                attempts: 0,
                steps: 0,
                result: None,
                started: order.hold.started(),
                received_at: now,
            }))
        })
        .await
    }

    async fn claim(&self, owner: &str, lease: Duration, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        doing(StoreOperation::Claim, async {
            let mut connection = self.pool.acquire().await?;
            let now = now_ms();
            let rows = sqlx::query(CLAIM_POSTGRES)
                .bind(now)
                .bind(owner)
                .bind(now + ms(lease))
                .bind(i64::from(limit))
                .fetch_all(&mut *connection)
                .await?;
            drop(connection);
            let claims = rows.iter().map(claimed).collect::<Result<Vec<_>, _>>()?;
            Ok::<_, Failure>(self.with_bodies(claims).await?)
        })
        .await
    }

    async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64, StoreError> {
        doing(StoreOperation::Heartbeat, async {
            let mut connection = self.beats.acquire().await?;
            let done = sqlx::query(HEARTBEAT)
                .bind(now_ms() + ms(lease))
                .bind(owner)
                .execute(&mut *connection)
                .await?;
            Ok::<_, Failure>(done.rows_affected())
        })
        .await
    }

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<Started>, StoreError> {
        doing(StoreOperation::StartRun, async {
            let row = sqlx::query(START_RUN_POSTGRES)
                .bind(id)
                .bind(fence)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
            Ok::<_, Failure>(row.as_ref().map(started).transpose()?)
        })
        .await
    }

    async fn save_result(
        &self,
        id: &str,
        fence: i64,
        body: Bytes,
        run: Option<RunEnd>,
    ) -> Result<bool, StoreError> {
        doing(StoreOperation::SaveResult, async {
            let mut transaction = self.pool.begin().await?;
            let (number, outcome, error) = match run {
                Some(run) => (run.run, Some(run.outcome.as_str()), run.error),
                None => (0, None, None),
            };
            let updated = sqlx::query(MARK_RESULT)
                .bind(id)
                .bind(fence)
                .bind(now_ms())
                .bind(outcome)
                .bind(error)
                .bind(number)
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
            transaction.commit().await.map_err(Failure::commit)?;
            Ok::<_, Failure>(true)
        })
        .await
    }

    async fn settle(
        &self,
        id: &str,
        fence: i64,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
    ) -> Result<bool, StoreError> {
        doing(StoreOperation::Settle, async {
            let delivered = settle == Settle::Delivered;
            let values = settled(settle, attempts.len() as i32);
            let last = attempts.iter().map(|a| a.number).max().unwrap_or(0);
            let numbers: Vec<i32> = attempts.iter().map(|a| a.number).collect();
            let times: Vec<i64> = attempts.iter().map(|a| a.at).collect();
            let results: Vec<&str> = attempts.iter().map(|a| a.result.as_str()).collect();
            let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.status.map(i32::from)).collect();
            let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
            let done = sqlx::query(SETTLE)
                .bind(values.state)
                .bind(values.next_at)
                .bind(values.steps)
                .bind(values.posts)
                .bind(values.error)
                .bind(id)
                .bind(fence)
                .bind(numbers)
                .bind(times)
                .bind(results)
                .bind(statuses)
                .bind(errors)
                .bind(last - KEPT_ATTEMPTS)
                .fetch_optional(&self.pool)
                .await?;
            let settled = done.is_some();
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
            Ok::<_, Failure>(settled)
        })
        .await
    }

    async fn release(&self, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
        doing(StoreOperation::Release, async {
            let mut transaction = self.pool.begin().await?;
            // The interrupted runs' rows say so; the order runs again under the same number.
            sqlx::query(
                "WITH r AS (UPDATE shorts_orders SET runs = runs - 1 WHERE order_id = ANY($1) AND owner = $2
                            RETURNING order_id, runs + 1 AS run)
                 UPDATE shorts_history h SET ended_at = $3, outcome = 'interrupted'
                 FROM r WHERE h.order_id = r.order_id AND h.kind = 'run' AND h.number = r.run
                   AND h.ended_at IS NULL",
            )
            .bind(interrupted)
            .bind(owner)
            .bind(now_ms())
            .execute(&mut *transaction)
            .await?;
            let done = sqlx::query(RELEASE)
                .bind(owner)
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await.map_err(Failure::commit)?;
            Ok::<_, Failure>(done.rows_affected())
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        doing(StoreOperation::Get, async {
            let row = sqlx::query(concat!(select_records!(), " WHERE o.order_id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            Ok::<_, Failure>(row.as_ref().map(record).transpose()?)
        })
        .await
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        doing(StoreOperation::List, async {
            let rows = sqlx::query(concat!(
                select_records!(),
                " WHERE ($1::TEXT IS NULL OR o.state = $1) ORDER BY o.seq LIMIT $2"
            ))
            .bind(state.map(OrderState::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            Ok::<_, Failure>(rows.iter().map(record).collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        doing(StoreOperation::Retry, async {
            let done = sqlx::query(RETRY)
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok::<_, Failure>(done.rows_affected() == 1)
        })
        .await
    }

    async fn purge(&self, before: i64, limit: u32) -> Result<Purged, StoreError> {
        doing(StoreOperation::Purge, async {
            let started = Instant::now();
            let mut transaction = self.pool.begin().await?;
            let orders = purge_batch(&mut *transaction, before, limit, |done| done.rows_affected()).await?;
            transaction.commit().await.map_err(Failure::commit)?;
            Ok::<_, Failure>(Purged {
                orders,
                held: started.elapsed(),
            })
        })
        .await
    }

    async fn purge_dead(&self, before: i64) -> Result<u64, StoreError> {
        doing(StoreOperation::PurgeDead, async {
            let done = sqlx::query(PURGE_DEAD_PAYLOADS)
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok::<_, Failure>(done.rows_affected())
        })
        .await
    }

    async fn release_order(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        doing(StoreOperation::ReleaseOrder, async {
            sqlx::query(RELEASE_ORDER)
                .bind(id)
                .bind(fence)
                .execute(&self.pool)
                .await?;
            Ok::<_, Failure>(())
        })
        .await
    }

    async fn orders_page(
        &self,
        filter: &OrderFilter,
        after: Option<&PageCursor>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        doing(StoreOperation::Report, async {
            let rows = orders_page::<Postgres>(filter, after, limit)
                .build()
                .fetch_all(&self.pool)
                .await?;
            let mut orders = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
            let more = orders.len() > limit as usize;
            orders.truncate(limit as usize);
            Ok::<_, Failure>(history::page(orders, more))
        })
        .await
    }

    async fn state_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        doing(StoreOperation::Report, async {
            let rows: Vec<(String, i64)> = sqlx::query_as(STATE_COUNTS).fetch_all(&self.pool).await?;
            Ok::<_, Failure>(state_counts(rows))
        })
        .await
    }

    async fn hourly(&self, since: i64) -> Result<Vec<HourCount>, StoreError> {
        doing(StoreOperation::Report, async {
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(HOURLY).bind(since).fetch_all(&self.pool).await?;
            Ok::<_, Failure>(hour_counts(rows))
        })
        .await
    }

    async fn run_times(&self, since: i64) -> Result<Vec<RunTimes>, StoreError> {
        doing(StoreOperation::Report, async {
            let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(RUN_TIMES)
                .bind(since)
                .bind(i64::from(RUN_TIMES_LIMIT))
                .fetch_all(&self.pool)
                .await?;
            Ok::<_, Failure>(run_times(rows))
        })
        .await
    }

    async fn callback_rate(&self, since: i64) -> Result<CallbackRate, StoreError> {
        doing(StoreOperation::Report, async {
            let (attempts, accepted): (i64, i64) = sqlx::query_as(CALLBACK_RATE)
                .bind(since)
                .fetch_one(&self.pool)
                .await?;
            Ok::<_, Failure>(CallbackRate {
                attempts: u64::try_from(attempts).unwrap_or(0),
                accepted: u64::try_from(accepted).unwrap_or(0),
            })
        })
        .await
    }

    async fn detail(&self, id: &str) -> Result<Option<OrderDetail>, StoreError> {
        doing(StoreOperation::Report, async {
            let filter = OrderFilter {
                id: Some(history::IdMatch::Exact(id.to_owned())),
                ..OrderFilter::default()
            };
            let mut transaction = self.pool.begin().await?;
            let Some(row) = orders_page::<Postgres>(&filter, None, 1)
                .build()
                .fetch_optional(&mut *transaction)
                .await?
            else {
                return Ok(None);
            };
            let summary = summary(&row)?;
            let rows = sqlx::query(HISTORY_OF)
                .bind(id)
                .fetch_all(&mut *transaction)
                .await?;
            let rows = rows.iter().map(history_row).collect::<Result<Vec<_>, _>>()?;
            let (payload, result): (Option<Vec<u8>>, Option<Vec<u8>>) = sqlx::query_as(BODIES_OF)
                .bind(id)
                .fetch_one(&mut *transaction)
                .await?;
            transaction.commit().await.map_err(Failure::commit)?;
            Ok::<_, Failure>(Some(OrderDetail {
                timeline: history::timeline(summary.received_at, rows),
                inputs: payload.as_deref().and_then(history::describe_inputs),
                result: result.as_deref().and_then(history::describe_result),
                summary,
            }))
        })
        .await
    }

    async fn fail_now(&self, id: &str, message: &str, body: Bytes) -> Result<FailedNow, StoreError> {
        doing(StoreOperation::FailNow, async {
            let mut transaction = self.pool.begin().await?;
            let now = now_ms();
            let row: Option<super::sql::FailNowRow> = sqlx::query_as(FAIL_NOW_CHECK_POSTGRES)
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *transaction)
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
                    .fetch_optional(&mut *transaction)
                    .await?;
                if let Some(erased) = payload.and_then(|p| crate::wire::webhook::without_job_token(&p, span))
                {
                    sqlx::query(UPDATE_PAYLOAD)
                        .bind(id)
                        .bind(erased)
                        .execute(&mut *transaction)
                        .await?;
                }
            }
            sqlx::query(FAIL_NOW)
                .bind(id)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
            sqlx::query(upsert_result!())
                .bind(id)
                .bind(body.as_ref())
                .execute(&mut *transaction)
                .await?;
            sqlx::query(INSERT_OPERATOR_FAILURE)
                .bind(id)
                .bind(now)
                .bind(message)
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await.map_err(Failure::commit)?;
            Ok::<_, Failure>(FailedNow::Failing)
        })
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::suite::Fixture;
    use crate::store::suite::order;

    /// The PostgreSQL the tests use: `SHORTS_TEST_POSTGRES_URL`, or the local default.
    fn test_postgres_url() -> String {
        std::env::var("SHORTS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A store in a schema of its own, dropped by [`Fixture::close`].
    pub(crate) struct InSchema {
        store: Arc<PgStore>,
        admin: PgPool,
        schema: String,
        url: String,
    }

    impl InSchema {
        /// The URL of the store's schema.
        pub(crate) fn url(&self) -> String {
            self.url.clone()
        }
    }

    impl Fixture for InSchema {
        type Store = PgStore;

        async fn open() -> Self {
            let url = test_postgres_url();
            let schema = format!("shorts_test_{}", uuid::Uuid::new_v4().simple());
            let admin = PgPool::connect(&url).await.unwrap_or_else(|e| {
                panic!("PostgreSQL at {url} is unreachable ({e}); set SHORTS_TEST_POSTGRES_URL")
            });
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&admin)
                .await
                .expect("create schema");
            let separator = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{separator}options=-c%20search_path%3D{schema}");
            let store = Arc::new(PgStore::open(&scoped).await.expect("open"));
            InSchema {
                store,
                admin,
                schema,
                url: scoped,
            }
        }

        fn store(&self) -> &Arc<PgStore> {
            &self.store
        }

        async fn close(self) {
            self.store.pool.close().await;
            self.store.beats.close().await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.schema
            )))
            .execute(&self.admin)
            .await
            .expect("drop schema");
        }
    }

    /// Every connection of the store's pool, held until dropped.
    async fn hold_pool(store: &PgStore) -> Vec<sqlx::pool::PoolConnection<Postgres>> {
        let mut held = Vec::new();
        for _ in 0..store.pool.options().get_max_connections() {
            held.push(store.pool.acquire().await.expect("connection"));
        }
        held
    }

    /// An accept that waited for a connection longer than a lease still gets a whole lease: no
    /// other instance can take the order the moment it is stored.
    #[tokio::test]
    async fn a_lease_starts_once_the_write_has_its_connection() {
        let schema = InSchema::open().await;
        let store = Arc::clone(schema.store());
        let lease = Duration::from_secs(1);
        let held = hold_pool(&store).await;
        let accepting = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.accept(order("late"), "one", lease).await })
        };
        // Longer than the lease, as while the database comes back after an outage.
        tokio::time::sleep(lease + Duration::from_millis(500)).await;
        drop(held);
        let accepted = accepting.await.expect("task").expect("accepted");
        assert!(accepted.is_some());
        let taken = store.claim("two", lease, 10).await.expect("claim");
        assert!(
            taken.is_empty(),
            "the order was taken at once by another instance"
        );
        schema.close().await;
    }

    /// The heartbeat does not wait behind the other queries for a connection.
    #[tokio::test]
    async fn the_heartbeat_renews_leases_while_every_connection_is_busy() {
        let schema = InSchema::open().await;
        let store = schema.store();
        let lease = Duration::from_secs(5);
        assert!(
            store
                .accept(order("held"), "one", lease)
                .await
                .expect("accept")
                .is_some()
        );
        let held = hold_pool(store).await;
        let beat = tokio::time::timeout(Duration::from_secs(3), store.heartbeat("one", lease)).await;
        assert!(
            matches!(beat, Ok(Ok(1))),
            "the heartbeat waited for a busy pool: {beat:?}"
        );
        drop(held);
        schema.close().await;
    }
}
