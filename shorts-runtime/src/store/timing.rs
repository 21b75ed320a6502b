//! Times the operator's queries, and the dashboard's pages, on a store filled with many orders:
//! `shorts-bench orders`.

use std::time::{Duration, Instant};

use super::history::IdMatch;
use super::{AnyStore, OrderFilter, OrderState, PageCursor, Store, StoreError, StoreOperation, now_ms};
use crate::config::StoreConfig;

/// Milliseconds between two orders' receptions in the filled store: 100,000 orders span a day.
const SPACING_MS: i64 = 864;

/// Why a timing could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TimingError {
    /// The store could not be opened, filled or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The application that serves the dashboard could not be built.
    #[error(transparent)]
    Build(#[from] crate::BuildError),
    /// A query found nothing, or a page did not answer 200 with what it lists: the timing would
    /// not be of the real work.
    #[error("`{0}` found nothing in the filled store")]
    NothingFound(String),
}

/// Fills the SQLite or PostgreSQL store of `config` with `count` orders received over the past
/// (each with a run and a callback attempt in its history; a fiftieth dead, a hundredth still
/// received), then times each query an operator's pages make, and each page of the dashboard
/// rendered through the admin router (in-process, as a browser asks for it), `rounds` times;
/// returns each one's name with its median time. The orders' ids start with `bench-`; the store must hold no
/// such orders. A PostgreSQL store is made in a schema of its own, dropped at the end.
///
/// # Errors
///
/// When the store cannot be opened, filled or read, or a query or page finds nothing.
pub(crate) async fn order_queries(
    config: &StoreConfig,
    count: u32,
    rounds: u32,
) -> Result<Vec<(String, Duration)>, TimingError> {
    match config {
        #[cfg(feature = "postgres")]
        StoreConfig::Postgres(url) => in_schema(url, count, rounds).await,
        _ => timed(config, count, rounds).await,
    }
}

/// [`order_queries`] on the PostgreSQL database at `url`, in a schema made for it and dropped.
#[cfg(feature = "postgres")]
async fn in_schema(
    url: &crate::config::Secret,
    count: u32,
    rounds: u32,
) -> Result<Vec<(String, Duration)>, TimingError> {
    let opening = StoreError::database(StoreOperation::Open);
    let admin = sqlx::PgPool::connect(url.expose()).await.map_err(opening)?;
    let schema = format!("shorts_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .map_err(StoreError::database(StoreOperation::Open))?;
    let separator = if url.expose().contains('?') { '&' } else { '?' };
    let scoped = format!("{}{separator}options=-c%20search_path%3D{schema}", url.expose());
    let timings = timed(
        &StoreConfig::Postgres(crate::config::Secret::new(scoped)),
        count,
        rounds,
    )
    .await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await;
    admin.close().await;
    let timings = timings?;
    dropped.map_err(StoreError::database(StoreOperation::Purge))?;
    Ok(timings)
}

/// [`order_queries`] on the store of `config`.
async fn timed(
    config: &StoreConfig,
    count: u32,
    rounds: u32,
) -> Result<Vec<(String, Duration)>, TimingError> {
    let (store, start) = filled(config, count).await?;
    let orders = Picked::new(start, count);
    let mut timings = Vec::new();
    queries(&store, &orders, rounds, &mut timings).await?;
    drop(store);
    pages(config, &orders, rounds, &mut timings).await?;
    Ok(timings)
}

/// Runs `$query` (which answers how many things it found: none is an error) `$rounds` times and
/// adds its median time to `$timings` as `$name`.
macro_rules! time {
    ($timings:expr, $rounds:expr, $name:expr, $query:expr) => {{
        let mut times = Vec::new();
        for _ in 0..$rounds.max(1) {
            let began = Instant::now();
            let found: usize = $query;
            times.push(began.elapsed());
            if found == 0 {
                return Err(TimingError::NothingFound($name.to_owned()));
            }
        }
        times.sort();
        $timings.push(($name.to_owned(), times[times.len() / 2]));
    }};
}

/// The filters, cursor and orders the timings ask for, in a store filled by [`filled`].
struct Picked {
    all: OrderFilter,
    /// The cursor of the middle order: a page from deep in the list.
    deep: PageCursor,
    dead: OrderFilter,
    short: OrderFilter,
    both: OrderFilter,
    /// The start of the middle order's id, shared by a hundred orders.
    prefix: String,
    exact: OrderFilter,
    detail_id: String,
    day_ago: i64,
}

impl Picked {
    fn new(start: i64, count: u32) -> Self {
        let middle = format!("bench-{:08}", count / 2);
        let prefix = middle[..middle.len() - 2].to_owned();
        Picked {
            all: OrderFilter::default(),
            deep: PageCursor {
                received_at: start + i64::from(count / 2) * SPACING_MS,
                id: middle,
            },
            dead: OrderFilter {
                state: Some(OrderState::Dead),
                ..OrderFilter::default()
            },
            short: OrderFilter {
                short: Some("report".to_owned()),
                ..OrderFilter::default()
            },
            both: OrderFilter {
                state: Some(OrderState::Dead),
                short: Some("report".to_owned()),
                id: None,
            },
            exact: OrderFilter {
                id: Some(IdMatch::Exact(format!("bench-{:08}", count / 3))),
                ..OrderFilter::default()
            },
            prefix,
            detail_id: format!("bench-{:08}", count / 3),
            day_ago: now_ms() - 24 * super::history::HOUR_MS,
        }
    }
}

/// Times the store's queries behind the operator's pages.
async fn queries(
    store: &AnyStore,
    picked: &Picked,
    rounds: u32,
    timings: &mut Vec<(String, Duration)>,
) -> Result<(), TimingError> {
    let page = async |filter: &OrderFilter, after: Option<&PageCursor>| -> Result<usize, StoreError> {
        Ok(store.orders_page(filter, after, 50).await?.orders.len())
    };
    let prefix = OrderFilter {
        id: Some(IdMatch::Prefix(picked.prefix.clone())),
        ..OrderFilter::default()
    };
    let day_ago = picked.day_ago;
    time!(
        timings,
        rounds,
        "page 1 of 50, newest first",
        page(&picked.all, None).await?
    );
    time!(
        timings,
        rounds,
        "page of 50 from the middle (cursor)",
        page(&picked.all, Some(&picked.deep)).await?
    );
    time!(
        timings,
        rounds,
        "page of 50, state = dead",
        page(&picked.dead, None).await?
    );
    time!(
        timings,
        rounds,
        "page of 50, short = report",
        page(&picked.short, None).await?
    );
    time!(
        timings,
        rounds,
        "page of 50, state = dead and short = report",
        page(&picked.both, None).await?
    );
    time!(
        timings,
        rounds,
        "page of 50, order_id prefix",
        page(&prefix, None).await?
    );
    time!(
        timings,
        rounds,
        "page, exact order_id",
        page(&picked.exact, None).await?
    );
    time!(
        timings,
        rounds,
        "counts per state",
        store.state_counts().await?.len()
    );
    time!(
        timings,
        rounds,
        "orders and failures per hour, 24 h",
        store.hourly(day_ago).await?.len()
    );
    time!(
        timings,
        rounds,
        "p50/p95 handler time per short, 24 h",
        store.run_times(day_ago).await?.len()
    );
    time!(
        timings,
        rounds,
        "callback acceptance rate, 24 h",
        store.callback_rate(day_ago).await?.attempts as usize
    );
    time!(
        timings,
        rounds,
        "order detail with its timeline",
        store
            .detail(&picked.detail_id)
            .await?
            .map_or(0, |d| d.timeline.len())
    );
    Ok(())
}

/// Times the dashboard's pages through the admin router, as a browser gets them: the queries
/// and the HTML.
async fn pages(
    config: &StoreConfig,
    picked: &Picked,
    rounds: u32,
    timings: &mut Vec<(String, Duration)>,
) -> Result<(), TimingError> {
    let app = crate::App::idle(config.clone(), &["echo", "report", "resize"], None).await?;
    let router = app.admin_router();
    // The page at `path`: 1 when it answers 200 with what it lists (an order's row, the chart,
    // a timeline), else 0.
    let rendered = async |path: &str| -> usize {
        use tower::ServiceExt as _;
        let Ok(request) = http::Request::get(path).body(axum::body::Body::empty()) else {
            return 0;
        };
        let Ok(response) = router.clone().oneshot(request).await;
        if response.status() != http::StatusCode::OK {
            return 0;
        }
        let Ok(body) = axum::body::to_bytes(response.into_body(), usize::MAX).await else {
            return 0;
        };
        let text = String::from_utf8_lossy(&body);
        usize::from(
            ["data-order=", "id=\"hourly-chart\"", "id=\"timeline\""]
                .iter()
                .any(|mark| text.contains(mark)),
        )
    };
    time!(timings, rounds, "page: overview (/)", rendered("/").await);
    time!(
        timings,
        rounds,
        "page: orders, newest 50",
        rendered("/orders").await
    );
    time!(
        timings,
        rounds,
        "page: orders, from the middle (Older link)",
        rendered(&format!("/orders?after={}", picked.deep.encode())).await
    );
    time!(
        timings,
        rounds,
        "page: orders, state = dead",
        rendered("/orders?state=dead").await
    );
    time!(
        timings,
        rounds,
        "page: orders, state = dead and short = report",
        rendered("/orders?state=dead&short=report").await
    );
    time!(
        timings,
        rounds,
        "page: orders, order_id prefix",
        rendered(&format!("/orders?q={}", picked.prefix)).await
    );
    time!(
        timings,
        rounds,
        "page: order detail",
        rendered(&format!("/orders/{}", picked.detail_id)).await
    );
    Ok(())
}

/// Opens the store of `config` and fills it with `count` orders (see [`order_queries`]); the
/// store, and the time the first order was received at.
async fn filled(config: &StoreConfig, count: u32) -> Result<(AnyStore, i64), StoreError> {
    let store = AnyStore::open(config).await?;
    let start = now_ms() - i64::from(count) * SPACING_MS;
    let filling = StoreError::database(StoreOperation::Open);
    match config {
        StoreConfig::Sqlite(path) => {
            use sqlx::Connection as _;
            let options = super::sqlite::connect_options(path)?;
            let mut connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(filling)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(fill_sql(
                count,
                start,
                "printf('bench-%08d', i)",
                "BLOB",
            )))
            .execute(&mut connection)
            .await
            .map_err(StoreError::database(StoreOperation::Open))?;
            sqlx::query("ANALYZE")
                .execute(&mut connection)
                .await
                .map_err(StoreError::database(StoreOperation::Open))?;
        }
        #[cfg(not(feature = "postgres"))]
        StoreConfig::Postgres(_) => return Err(StoreError::PostgresNotBuilt),
        #[cfg(feature = "postgres")]
        StoreConfig::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url.expose()).await.map_err(filling)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(fill_sql(
                count,
                start,
                "'bench-' || lpad(i::TEXT, 8, '0')",
                "BYTEA",
            )))
            .execute(&pool)
            .await
            .map_err(StoreError::database(StoreOperation::Open))?;
            sqlx::query("ANALYZE")
                .execute(&pool)
                .await
                .map_err(StoreError::database(StoreOperation::Open))?;
            pool.close().await;
        }
        StoreConfig::Memory => {}
    }
    Ok((store, start))
}

/// SQL that inserts `count` orders (ids from `id`, an expression of `i`), their webhook bodies and
/// their history, received every [`SPACING_MS`] from `start`; `blob` is the type of bytes. It runs
/// on SQLite and PostgreSQL.
fn fill_sql(count: u32, start: i64, id: &str, blob: &str) -> String {
    format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
         INSERT INTO shorts_orders (order_id, short, callback_url, state, runs, attempts, fence, received_at,
                                    outcome, last_error)
         SELECT {id},
                CASE i % 3 WHEN 0 THEN 'echo' WHEN 1 THEN 'report' ELSE 'resize' END,
                'https://api.sellershorts.com/api/orders/callback',
                CASE WHEN i % 50 = 0 THEN 'dead' WHEN i % 100 = 1 THEN 'received' ELSE 'delivered' END,
                1, 1, 1, {start} + i * {SPACING_MS},
                CASE WHEN i % 20 = 0 THEN 'error' ELSE 'ok' END,
                CASE WHEN i % 50 = 0 THEN 'the platform refused the callback (400): bad request' END
         FROM n;
         INSERT INTO shorts_payloads (order_id, payload)
         SELECT order_id, CAST('{{\"order_id\":\"' || order_id || '\",\"inputs\":{{\"text\":\"hello\"}}}}' AS {blob})
         FROM shorts_orders WHERE order_id LIKE 'bench-%';
         INSERT INTO shorts_history (order_id, kind, number, at, ended_at, outcome)
         SELECT order_id, 'run', 1, received_at, received_at + 50 + (received_at % 950), outcome
         FROM shorts_orders WHERE order_id LIKE 'bench-%';
         INSERT INTO shorts_history (order_id, kind, number, at, outcome, status, detail)
         SELECT order_id, 'callback', 1, received_at + 1000,
                CASE state WHEN 'dead' THEN 'dead' ELSE 'accepted' END,
                CASE state WHEN 'dead' THEN 400 ELSE 200 END,
                CASE state WHEN 'dead' THEN 'bad request' END
         FROM shorts_orders WHERE order_id LIKE 'bench-%' AND state <> 'received';"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query of the timing finds what the filled store holds (the figures are not checked).
    #[tokio::test]
    async fn every_timed_query_finds_orders() {
        let dir = std::env::temp_dir().join(format!("shorts-timing-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = StoreConfig::Sqlite(dir.join("orders.db"));
        let timings = order_queries(&config, 1_000, 1).await.expect("timed");
        assert_eq!(timings.len(), 19);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The run times the filled store's runs take, by short, as the fill writes them.
    fn expected_run_times(count: u32, start: i64) -> Vec<super::super::RunTimes> {
        let durations = (1..=i64::from(count))
            .map(|i| {
                let short = ["echo", "report", "resize"][(i % 3) as usize];
                let received_at = start + i * SPACING_MS;
                (short.to_owned(), 50 + received_at % 950)
            })
            .collect();
        super::super::history::run_times(durations)
    }

    /// SQLite computes each short's percentiles as the memory store does (nearest rank).
    #[tokio::test]
    async fn sqlite_percentiles_are_nearest_ranks() {
        let dir = std::env::temp_dir().join(format!("shorts-percentiles-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (store, start) = filled(&StoreConfig::Sqlite(dir.join("orders.db")), 997)
            .await
            .expect("filled");
        assert_eq!(
            store.run_times(0).await.expect("times"),
            expected_run_times(997, start)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// PostgreSQL computes each short's percentiles as the memory store does (nearest rank).
    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn postgres_percentiles_are_nearest_ranks() {
        use crate::store::postgres::tests::InSchema;
        use crate::store::suite::Fixture as _;
        let schema = InSchema::open().await;
        let config = StoreConfig::Postgres(crate::config::Secret::new(schema.url()));
        let (store, start) = filled(&config, 997).await.expect("filled");
        assert_eq!(
            store.run_times(0).await.expect("times"),
            expected_run_times(997, start)
        );
        drop(store);
        schema.close().await;
    }
}
