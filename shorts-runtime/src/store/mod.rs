//! Where orders live between the webhook and the callback the platform accepted.
//!
//! Every order is committed before the webhook is answered; its callback body is committed before
//! the first POST; delivery attempts and their next times are committed as they happen. An
//! instance works on an order only while it holds the order's lease, which it renews with
//! heartbeats; every write it makes carries the *fence* it got with the lease, so the late write
//! of an instance whose lease passed to another is refused.

mod error;
pub(crate) mod history;
mod memory;
mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
mod sql;
mod sqlite;
pub(crate) mod timing;

pub use error::{StoreError, StoreOperation};
pub(crate) use history::{
    AttemptResult, CallbackAttempt, CallbackRate, HourCount, OrderDetail, OrderFilter, OrderPage, PageCursor,
    RunEnd, RunOutcome, RunTimes,
};

pub(crate) use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub(crate) use postgres::PgStore;
pub(crate) use sqlite::{SqliteStore, query_plans as sqlite_query_plans};

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OrderState {
    /// Accepted; the short has not produced a result yet (it may be running).
    Received,
    /// The callback body is stored and being delivered (or waiting for its next attempt).
    Delivering,
    /// The platform refused the callback secret (401); delivery is probed periodically.
    Paused,
    /// The platform accepted the callback.
    Delivered,
    /// The callback could not be delivered: refused (400) or retries exhausted.
    Dead,
}

impl OrderState {
    /// Every state, in the order of an order's life.
    pub const ALL: [OrderState; 5] = [
        OrderState::Received,
        OrderState::Delivering,
        OrderState::Paused,
        OrderState::Delivered,
        OrderState::Dead,
    ];

    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Received => "received",
            OrderState::Delivering => "delivering",
            OrderState::Paused => "paused",
            OrderState::Delivered => "delivered",
            OrderState::Dead => "dead",
        }
    }

    /// Parses a state's name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for OrderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new order, as the webhook delivered it.
#[derive(Debug, Clone)]
pub(crate) struct NewOrder {
    pub(crate) id: String,
    pub(crate) short: String,
    pub(crate) payload: Bytes,
    /// Where its callback goes (already checked against the configured platform).
    pub(crate) callback_url: String,
    /// Where the `job_token` value sits in `payload` (see `wire::webhook::job_token_span`): the
    /// store replaces it with `null` in the transaction that stores the order's result.
    pub(crate) job_token: Option<std::ops::Range<usize>>,
    /// What the accepting instance does with it.
    pub(crate) hold: Hold,
}

/// A batch of the purge: what it deleted, and what it cost new orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Purged {
    /// Delivered orders deleted.
    pub(crate) orders: u64,
    /// How long the batch held the store, which new orders wait behind: on SQLite its statements
    /// in the writer (not the commit it shares with the orders of its group, nor its wait for the
    /// writer); elsewhere the whole call.
    pub(crate) held: Duration,
}

/// What the instance that accepts an order does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Holds its lease and starts the short at once: the run is counted with the order, which
    /// saves a write per order.
    Start,
    /// Holds its lease; the order waits in that process for a slot of its short.
    Wait,
    /// None: the order is committed without an owner (nor a lease), and the first instance with
    /// room claims it, oldest first. An instance never holds more leases than it can work on soon,
    /// however far the intake runs ahead of the shorts.
    Store,
}

impl Hold {
    /// Whether the short starts with the accept.
    pub(crate) fn started(self) -> bool {
        self == Hold::Start
    }

    /// Whether the accepting instance holds the lease.
    pub(crate) fn leased(self) -> bool {
        self != Hold::Store
    }

    /// The new order's `lease_until`: `lease` from `now` when it is leased, else 0 (none).
    pub(crate) fn lease_until(self, now: i64, lease: Duration) -> i64 {
        if self.leased() { now + ms(lease) } else { 0 }
    }
}

/// An order this instance holds the lease of. It carries the length of the order's webhook body,
/// not the body: an order may wait long for a slot of its short, and the body is read by
/// [`Store::start_run`] once it has one.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) id: String,
    pub(crate) short: String,
    /// The length of the webhook body, in bytes.
    pub(crate) payload_len: u64,
    pub(crate) callback_url: String,
    /// Proves the lease on every write.
    pub(crate) fence: i64,
    /// Callback POSTs made so far (see [`OrderRecord::attempts`]).
    pub(crate) attempts: i32,
    /// Steps of the retry schedule used: retryable failures since the order's result was stored
    /// or it was last retried by hand.
    pub(crate) steps: i32,
    /// The stored callback body, once the short has finished.
    pub(crate) result: Option<Bytes>,
    /// The first run was counted when the order was accepted (see [`NewOrder::started`]).
    pub(crate) started: bool,
    /// When the order was received, in ms since the Unix epoch.
    pub(crate) received_at: i64,
}

/// A run of the short on an order, as [`Store::start_run`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Started {
    /// The run's number: 1 for the first.
    pub(crate) run: i32,
    /// The order's webhook body.
    pub(crate) payload: Bytes,
}

/// What happens to an order after a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The platform has the callback.
    Delivered,
    /// Give up, with the reason.
    Dead(String),
    /// Try again at `at` (ms since the Unix epoch), with `steps` steps of the schedule used.
    Retry { at: i64, steps: i32, error: String },
    /// The platform refused the secret: probe again at `at`.
    Paused { at: i64 },
}

/// An order as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// The platform's `order_id`.
    pub id: String,
    /// The short serving it.
    pub short: String,
    /// Where it is.
    pub state: OrderState,
    /// Times the short was started on it.
    pub runs: u32,
    /// Callback POSTs made for it, whatever their outcome (accepted, refused, failed, 401). A retry
    /// by hand does not reset it. The position in the retry schedule is kept apart: a 401 does not
    /// advance it, and a retry by hand starts the schedule over.
    pub attempts: i32,
    /// The stored callback body, once there is one; `None` again once a success body longer than
    /// 64 KiB is delivered (it is dropped then: the platform has it).
    pub result: Option<Bytes>,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
    /// When it was received (to the millisecond).
    pub received_at: std::time::SystemTime,
    /// When its next delivery attempt is due, in ms since the Unix epoch.
    pub next_at: Option<i64>,
    /// Its webhook body (the buyer's inputs and files) was purged: a dead order past
    /// `SHORTS_DEAD_RETENTION`. The record and the stored callback body stay.
    pub payload_purged: bool,
}

/// A stored run count as [`OrderRecord::runs`]: a negative one (never written) reads as 0.
pub(crate) fn runs_from_stored(runs: i32) -> u32 {
    u32::try_from(runs).unwrap_or(0)
}

/// A stored time in ms since the Unix epoch as a `SystemTime`: a negative or unrepresentable one
/// (never written) reads as the epoch.
pub(crate) fn time_from_stored(ms: i64) -> std::time::SystemTime {
    u64::try_from(ms)
        .ok()
        .and_then(|ms| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms)))
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// What a retry by hand did (see [`App::retry`](crate::App::retry)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retried {
    /// The order's stored callback body will be delivered again, from the start of the retry
    /// schedule. `payload_purged`: its webhook body is gone, which delivery does not need.
    Redelivering {
        /// The order's webhook body was purged.
        payload_purged: bool,
    },
    /// No order has that `order_id`.
    Unknown,
    /// Only dead and paused orders are retried; the order is in this state.
    NotStuck(OrderState),
    /// The order is dead or paused but has no stored result to deliver. `payload_purged`: its
    /// webhook body is gone too, so it cannot run again either.
    NoResult {
        /// The order's webhook body was purged.
        payload_purged: bool,
    },
}

/// Puts a dead or paused order back to delivery (see [`Store::retry`]), or says why not.
pub(crate) async fn retry(store: &impl Store, id: &str) -> Result<Retried, StoreError> {
    if store.retry(id).await? {
        let payload_purged = store.get(id).await?.is_some_and(|r| r.payload_purged);
        return Ok(Retried::Redelivering { payload_purged });
    }
    Ok(match store.get(id).await? {
        None => Retried::Unknown,
        Some(record) if matches!(record.state, OrderState::Dead | OrderState::Paused) => Retried::NoResult {
            payload_purged: record.payload_purged,
        },
        Some(record) => Retried::NotStuck(record.state),
    })
}

/// What failing an order by hand did (see [`App::fail_now`](crate::App::fail_now)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailedNow {
    /// A failure callback with the operator's message is stored, and will be delivered now by the
    /// normal delivery path (retried as any callback).
    Failing,
    /// No order has that `order_id`.
    Unknown,
    /// Only received, delivering and paused orders can be failed; the order is in this state.
    NotStuck(OrderState),
    /// An instance is working on the order right now: the short is running on it (until it ends
    /// or its timeout), or its callback is being sent. Failing it then would drop that run's
    /// result or send a second callback; the operator tries again once the work ends.
    Busy,
}

/// Fails a received, delivering or paused order by hand: stores a failure callback with `message`
/// as its result, to be delivered now through the normal delivery path, and records the action in
/// the order's history. An order an instance is working on is left alone ([`FailedNow::Busy`]).
pub(crate) async fn fail_now(store: &impl Store, id: &str, message: &str) -> Result<FailedNow, StoreError> {
    let body = Bytes::from(crate::wire::callback::failure(id, message));
    store.fail_now(id, message, body).await
}

/// Delivered callback bodies longer than this are dropped when the platform accepts them. Such a
/// body carries files (or a long text), which the platform now holds; keeping it for the retention
/// period would cost megabytes of disk (and, with the memory store, of memory) per order. Shorter
/// bodies stay for operators to read. Failure bodies are always shorter (their message is cut to
/// 8 KiB: see `wire::callback::failure`), so a dropped body was always a success. (The length is
/// all the store looks at: reading a body's first bytes would make SQLite read all of it.)
pub(crate) const KEPT_BODY_LIMIT: usize = 64 * 1024;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The operations every store offers. Implementations keep the invariants in the module docs.
pub(crate) trait Store: Send + Sync + 'static {
    /// Commits a new order, leased to `owner` if [`NewOrder::leased`]; `None` when the `order_id`
    /// is already known.
    fn accept(
        &self,
        order: NewOrder,
        owner: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<Claimed>, StoreError>> + Send;

    /// Leases up to `limit` orders that need work: without a result and not leased (or whose
    /// lease expired), or with a result whose next attempt is due.
    fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Extends every lease `owner` holds; returns how many.
    fn heartbeat(&self, owner: &str, lease: Duration)
    -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Counts a start of the short on the order and returns the run's number with the order's
    /// webhook body; `None` when the fence is stale. Committed before the short runs, so a run that
    /// ends the process counts.
    fn start_run(
        &self,
        id: &str,
        fence: i64,
    ) -> impl Future<Output = Result<Option<Started>, StoreError>> + Send;

    /// Stores the callback body and, in the same transaction, erases the order's `job_token` from
    /// its stored webhook body (see [`NewOrder::job_token`]); `false` when the fence is stale
    /// (another instance has the order).
    ///
    /// `run`, when the body is a run's result, records how that run ended in the order's history
    /// (a body that replaces one the platform refused has none).
    fn save_result(
        &self,
        id: &str,
        fence: i64,
        body: Bytes,
        run: Option<RunEnd>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records a delivery's outcome after the callback POSTs `attempts`, adding them to the
    /// order's attempts and its history (which keeps the last [`history::KEPT_ATTEMPTS`]), and
    /// releases the lease; `false` when the fence is stale. A delivered order's body is dropped
    /// when longer than [`KEPT_BODY_LIMIT`].
    fn settle(
        &self,
        id: &str,
        fence: i64,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Releases every lease `owner` holds (at shutdown); returns how many. The runs of
    /// `interrupted` (stopped by the shutdown, not crashed) are not counted against them.
    fn release(
        &self,
        owner: &str,
        interrupted: &[String],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Releases one order's lease if `fence` is still current (a task ended without settling it).
    fn release_order(&self, id: &str, fence: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One order.
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<OrderRecord>, StoreError>> + Send;

    /// Orders in `state` (all when `None`), oldest first, at most `limit`.
    fn list(
        &self,
        state: Option<OrderState>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OrderRecord>, StoreError>> + Send;

    /// Puts a dead or paused order with a stored result back to delivery, due now, at the start of
    /// the retry schedule (its attempts stay counted); `false` when there is no such order.
    fn retry(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes up to `limit` delivered orders received before `before` (ms since the Unix epoch),
    /// oldest first, with their bodies; returns how many, and how long it held the store. Dead
    /// orders stay for an operator to see. A purge goes in batches so that no transaction holds
    /// the store for long.
    fn purge(&self, before: i64, limit: u32) -> impl Future<Output = Result<Purged, StoreError>> + Send;

    /// Deletes the webhook bodies of dead orders received before `before` (ms since the Unix
    /// epoch); returns how many. Their records and callback bodies stay, for an operator to see and
    /// retry.
    fn purge_dead(&self, before: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` orders that `filter` selects, newest first (by reception, then `order_id`),
    /// starting after `after`; with the cursor of the next page when there are more.
    fn orders_page(
        &self,
        filter: &OrderFilter,
        after: Option<&PageCursor>,
        limit: u32,
    ) -> impl Future<Output = Result<OrderPage, StoreError>> + Send;

    /// How many orders are in each state (states without orders are left out).
    fn state_counts(&self) -> impl Future<Output = Result<Vec<(OrderState, u64)>, StoreError>> + Send;

    /// Orders received and failed in each hour since `since` (ms since the Unix epoch), oldest
    /// first; hours without orders are left out.
    fn hourly(&self, since: i64) -> impl Future<Output = Result<Vec<HourCount>, StoreError>> + Send;

    /// The p50 and p95 handler times of each short, from the runs started since `since` that
    /// ended (interrupted runs left out; the newest [`history::RUN_TIMES_LIMIT`] at most).
    fn run_times(&self, since: i64) -> impl Future<Output = Result<Vec<RunTimes>, StoreError>> + Send;

    /// Callback POSTs made since `since`, and how many the platform accepted.
    fn callback_rate(&self, since: i64) -> impl Future<Output = Result<CallbackRate, StoreError>> + Send;

    /// One order with its timeline; `None` when no order has that `order_id`.
    fn detail(&self, id: &str) -> impl Future<Output = Result<Option<OrderDetail>, StoreError>> + Send;

    /// Stores `body` (a failure callback) as the result of a received, delivering or paused order
    /// nobody is working on, due for delivery now at the start of the retry schedule, and records
    /// the operator's `message` in its history; see [`FailedNow`]. Its lease is taken back (the
    /// fence moves on), so an instance that held it while waiting to run it lets it go.
    fn fail_now(
        &self,
        id: &str,
        message: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<FailedNow, StoreError>> + Send;
}

/// The store chosen by the configuration.
pub(crate) enum AnyStore {
    Memory(MemoryStore),
    Sqlite(SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(PgStore),
}

/// Calls the store behind `$self`. PostgreSQL's futures (sqlx's) are boxed: they are several times
/// larger than the others, and unboxed they would size every order's task for them.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($store) => $call.await,
            AnyStore::Sqlite($store) => $call.await,
            #[cfg(feature = "postgres")]
            AnyStore::Postgres($store) => Box::pin($call).await,
        }
    };
}

impl AnyStore {
    /// How many times a webhook body is in memory while the store writes it: the body, and the
    /// store's copies. SQLite's driver copies a bound value, SQLite copies it again until the
    /// statement ends, and builds the row from it; PostgreSQL's driver copies it into the message
    /// it sends; the memory store keeps the body itself.
    pub(crate) fn copies(&self) -> u64 {
        match self {
            AnyStore::Memory(_) => 1,
            AnyStore::Sqlite(_) => 4,
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(_) => 2,
        }
    }

    /// Opens the store at `url`: `memory`, `sqlite://PATH` or `postgres://...`.
    pub(crate) async fn open(config: &crate::config::StoreConfig) -> Result<Self, StoreError> {
        use crate::config::StoreConfig;
        Ok(match config {
            StoreConfig::Memory => AnyStore::Memory(MemoryStore::default()),
            StoreConfig::Sqlite(path) => AnyStore::Sqlite(SqliteStore::open(path).await?),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(url) => AnyStore::Postgres(PgStore::open(url.expose()).await?),
            #[cfg(not(feature = "postgres"))]
            StoreConfig::Postgres(_) => return Err(StoreError::PostgresNotBuilt),
        })
    }
}

impl Store for AnyStore {
    async fn accept(
        &self,
        order: NewOrder,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, StoreError> {
        dispatch!(self, s => s.accept(order, owner, lease))
    }

    async fn claim(&self, owner: &str, lease: Duration, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        dispatch!(self, s => s.claim(owner, lease, limit))
    }

    async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64, StoreError> {
        dispatch!(self, s => s.heartbeat(owner, lease))
    }

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<Started>, StoreError> {
        dispatch!(self, s => s.start_run(id, fence))
    }

    async fn save_result(
        &self,
        id: &str,
        fence: i64,
        body: Bytes,
        run: Option<RunEnd>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.save_result(id, fence, body, run))
    }

    async fn settle(
        &self,
        id: &str,
        fence: i64,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.settle(id, fence, settle, attempts))
    }

    async fn release(&self, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
        dispatch!(self, s => s.release(owner, interrupted))
    }

    async fn release_order(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_order(id, fence))
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        dispatch!(self, s => s.get(id))
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        dispatch!(self, s => s.list(state, limit))
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.retry(id))
    }

    async fn purge(&self, before: i64, limit: u32) -> Result<Purged, StoreError> {
        dispatch!(self, s => s.purge(before, limit))
    }

    async fn purge_dead(&self, before: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge_dead(before))
    }

    async fn orders_page(
        &self,
        filter: &OrderFilter,
        after: Option<&PageCursor>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        dispatch!(self, s => s.orders_page(filter, after, limit))
    }

    async fn state_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        dispatch!(self, s => s.state_counts())
    }

    async fn hourly(&self, since: i64) -> Result<Vec<HourCount>, StoreError> {
        dispatch!(self, s => s.hourly(since))
    }

    async fn run_times(&self, since: i64) -> Result<Vec<RunTimes>, StoreError> {
        dispatch!(self, s => s.run_times(since))
    }

    async fn callback_rate(&self, since: i64) -> Result<CallbackRate, StoreError> {
        dispatch!(self, s => s.callback_rate(since))
    }

    async fn detail(&self, id: &str) -> Result<Option<OrderDetail>, StoreError> {
        dispatch!(self, s => s.detail(id))
    }

    async fn fail_now(&self, id: &str, message: &str, body: Bytes) -> Result<FailedNow, StoreError> {
        dispatch!(self, s => s.fail_now(id, message, body))
    }
}

#[cfg(test)]
pub(crate) mod suite;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use suite::Fixture;

    #[test]
    fn stored_counts_and_times_out_of_range_read_as_zero_and_the_epoch() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(runs_from_stored(3), 3);
        assert_eq!(runs_from_stored(0), 0);
        assert_eq!(runs_from_stored(-1), 0);
        assert_eq!(runs_from_stored(i32::MIN), 0);
        assert_eq!(time_from_stored(1_500), UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(time_from_stored(0), UNIX_EPOCH);
        assert_eq!(time_from_stored(-1), UNIX_EPOCH);
        assert_eq!(time_from_stored(i64::MIN), UNIX_EPOCH);
        assert!(time_from_stored(i64::MAX) >= UNIX_EPOCH);
    }

    /// A memory store.
    struct InMemory(Arc<MemoryStore>);

    impl Fixture for InMemory {
        type Store = MemoryStore;

        async fn open() -> Self {
            InMemory(Arc::new(MemoryStore::default()))
        }

        fn store(&self) -> &Arc<MemoryStore> {
            &self.0
        }

        async fn close(self) {}
    }

    /// A SQLite store in a directory of its own.
    struct InSqlite {
        store: Arc<SqliteStore>,
        dir: PathBuf,
    }

    impl InSqlite {
        fn path(&self) -> PathBuf {
            self.dir.join("orders.db")
        }
    }

    impl Fixture for InSqlite {
        type Store = SqliteStore;

        async fn open() -> Self {
            let dir = std::env::temp_dir().join(format!("shorts-store-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let store = SqliteStore::open(&dir.join("orders.db")).await.expect("open");
            InSqlite {
                store: Arc::new(store),
                dir,
            }
        }

        fn store(&self) -> &Arc<SqliteStore> {
            &self.store
        }

        /// Committed means on disk: a new store on the same file has every order, as it was.
        async fn close(self) {
            let all = self.store.list(None, u32::MAX).await.expect("list");
            let reopened = SqliteStore::open(&self.path()).await.expect("reopen");
            assert_eq!(reopened.list(None, u32::MAX).await.expect("list"), all);
            drop(reopened);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    mod memory {
        crate::store::suite::cases!(super::InMemory);
    }

    mod sqlite {
        crate::store::suite::cases!(super::InSqlite);
    }

    #[cfg(feature = "postgres")]
    mod postgres {
        crate::store::suite::cases!(crate::store::postgres::tests::InSchema);
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn an_unreachable_postgres_is_named_with_the_error_met() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let error = PgStore::open(&format!("postgres://shorts@127.0.0.1:{port}/orders"))
            .await
            .err()
            .expect("no server there");
        assert!(matches!(error, StoreError::Connect { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "could not connect to the order store at 127.0.0.1:{port}: "
            )),
            "{message}"
        );
        assert!(message.contains("refused"), "{message}");
    }
}
