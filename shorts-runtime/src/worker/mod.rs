//! Running orders: commit at intake, claim with a lease, run the short (concurrency limit,
//! timeout, panics caught), commit the callback body, deliver it with attempts recorded in the
//! store, and pick up whatever a crashed or stopped instance left behind.
//!
//! An order waiting for a slot of its short holds only its id: its webhook body is read from the
//! store when the slot is free, within the bound of [`Pending`].

mod pending;

pub(crate) use pending::{Held, Pending};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};
use url::Url;

use crate::delivery::{Delivered, Delivery, Rendered};
use crate::short::error::{Error, ErrorKind};
use crate::short::order::{Order, OrderInner};
use crate::short::output::Output;
use crate::short::{Call, Short};
use crate::store::{AnyStore, Claimed, NewOrder, Settle, Store, StoreError, ms, now_ms};
use crate::wire::webhook::{self, Webhook};

/// Runs of the short on one order after which it is failed instead of run again: each run that
/// did not store a result ended with the process (a crash, a kill).
pub(crate) const MAX_RUNS: i32 = 3;

/// How long an instance keeps an order of a short it does not have before releasing it.
const UNKNOWN_SHORT_WAIT: Duration = Duration::from_secs(30);

/// Orders claimed per query.
const CLAIM_BATCH: u32 = 64;

/// Orders an instance works on at once before it stops claiming more (orders it accepts itself
/// always start).
const MAX_CLAIMED: usize = 4096;

/// A short with its concurrency limit.
pub(crate) struct Lane {
    pub(crate) short: Short,
    permits: Arc<Semaphore>,
}

impl Lane {
    pub(crate) fn new(short: Short) -> Self {
        let permits = Arc::new(Semaphore::new(short.concurrency.clamp(1, Semaphore::MAX_PERMITS)));
        Self { short, permits }
    }
}

/// An order as it arrived: what the engine needs of its envelope, and the body it came in, held
/// against the bound of pending bytes.
pub(crate) struct Job {
    pub(crate) order_id: String,
    pub(crate) callback_url: Option<String>,
    /// The body carries a `job_token`, which the store erases once the result is stored.
    pub(crate) job_token: bool,
    pub(crate) payload: Bytes,
    pub(crate) held: Held,
}

/// What an order accepted with a free slot starts with: the slot, and the body it arrived with.
struct Start {
    permit: OwnedSemaphorePermit,
    payload: Bytes,
    held: Held,
}

/// Whether a submitted order is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    New,
    Duplicate,
}

/// The engine's clocks: how long leases last, how often it polls, and how long it keeps what it
/// is done with. (When callbacks are retried is the delivery's [`crate::delivery::RetryPolicy`].)
pub(crate) struct Timing {
    /// How long a claim on an order lasts unless the heartbeat renews it.
    pub(crate) lease: Duration,
    /// How often the store is polled for due orders when nothing wakes the poller sooner.
    pub(crate) poll: Duration,
    /// How long delivered orders are kept; zero keeps them forever.
    pub(crate) retention: Duration,
    /// How long dead orders keep their webhook bodies; zero keeps them forever.
    pub(crate) dead_retention: Duration,
}

impl Timing {
    /// How often the purge runs: hourly, or as often as the shorter retention when that is shorter
    /// (at least every second); `None` when both retentions are zero (keep everything).
    fn purge_every(&self) -> Option<Duration> {
        [self.retention, self.dead_retention]
            .into_iter()
            .filter(|retention| !retention.is_zero())
            .min()
            .map(|shortest| shortest.clamp(Duration::from_secs(1), PURGE_EVERY))
    }
}

/// How often old orders are purged with the default retentions.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// How long after start the first purge runs (at most).
const FIRST_PURGE: Duration = Duration::from_secs(60);

/// Runs orders and delivers their callbacks.
pub(crate) struct Engine {
    pub(crate) store: AnyStore,
    delivery: Delivery,
    lanes: HashMap<Arc<str>, Arc<Lane>>,
    /// This instance's name in leases.
    owner: String,
    timing: Timing,
    wake: Notify,
    tasks: TaskTracker,
    /// Stops the poller and the purge at shutdown.
    stop: CancellationToken,
    /// Stops the heartbeat, once the leases are released.
    beat: CancellationToken,
    /// Orders whose short is running in this process.
    running: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The bytes of webhook bodies held in memory.
    pub(crate) pending: Pending,
}

impl Engine {
    pub(crate) fn new(
        store: AnyStore,
        delivery: Delivery,
        lanes: &[Arc<Lane>],
        timing: Timing,
        pending: Pending,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            delivery,
            lanes: lanes
                .iter()
                .map(|lane| (Arc::clone(&lane.short.name), Arc::clone(lane)))
                .collect(),
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            timing,
            wake: Notify::new(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            beat: CancellationToken::new(),
            running: std::sync::Mutex::default(),
            pending,
        })
    }

    /// Starts looking for work: orders left by earlier runs or other instances, due retries, and
    /// the heartbeat that keeps this instance's leases.
    pub(crate) fn start(self: &Arc<Self>) {
        let engine = Arc::clone(self);
        tokio::spawn(async move { engine.poll().await });
        let engine = Arc::clone(self);
        tokio::spawn(async move { engine.heartbeat().await });
        if let Some(every) = self.timing.purge_every() {
            let engine = Arc::clone(self);
            tokio::spawn(async move { engine.purge(every).await });
        }
    }

    /// Deletes delivered orders older than the retention, and the webhook bodies of dead orders
    /// older than the dead retention: a minute after start (or sooner, see
    /// [`Timing::purge_every`]), then `every`.
    async fn purge(self: Arc<Self>, every: Duration) {
        let mut wait = every.min(FIRST_PURGE);
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => return,
            }
            wait = every;
            let Timing {
                retention,
                dead_retention,
                ..
            } = self.timing;
            if !retention.is_zero() {
                match self.store.purge(now_ms() - ms(retention)).await {
                    Ok(0) => {}
                    Ok(purged) => info!(purged, "deleted delivered orders past their retention"),
                    Err(e) => error!(error = %e, "could not delete old orders"),
                }
            }
            if !dead_retention.is_zero() {
                match self.store.purge_dead(now_ms() - ms(dead_retention)).await {
                    Ok(0) => {}
                    Ok(purged) => info!(
                        purged,
                        "deleted the webhook bodies of dead orders past SHORTS_DEAD_RETENTION"
                    ),
                    Err(e) => error!(error = %e, "could not delete the webhook bodies of old dead orders"),
                }
            }
        }
    }

    /// Looks for work now rather than at the next poll.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Commits the order and starts it on its own task; a known `order_id` starts nothing.
    /// An order that must wait for a slot gives its body back once it is committed.
    ///
    /// # Errors
    ///
    /// When the store fails: the webhook must not be acknowledged then.
    pub(crate) async fn submit(self: &Arc<Self>, lane: &Lane, job: Job) -> Result<Submitted, StoreError> {
        let target = self.delivery.target(job.callback_url.as_deref());
        // With a free slot the short starts at once, and its run is committed with the order.
        let permit = Arc::clone(&lane.permits).try_acquire_owned().ok();
        let job_token = if job.job_token {
            webhook::job_token_span(&job.payload)
        } else {
            None
        };
        let order = NewOrder {
            job_token,
            id: job.order_id,
            short: lane.short.name.to_string(),
            payload: job.payload.clone(),
            callback_url: target.to_string(),
            started: permit.is_some(),
        };
        let id = order.id.clone();
        let accepted = self.store.accept(order, &self.owner, self.timing.lease).await?;
        // Written: the store's copies are gone, and an order that waits holds nothing.
        let start = permit.map(|permit| {
            let mut held = job.held;
            self.pending.shrink(&mut held, job.payload.len() as u64);
            Start {
                permit,
                payload: job.payload,
                held,
            }
        });
        match accepted {
            Some(claimed) => {
                self.spawn(claimed, start);
                Ok(Submitted::New)
            }
            None => {
                info!(order_id = %id, short = %lane.short.name, "duplicate order ignored");
                Ok(Submitted::Duplicate)
            }
        }
    }

    fn spawn(self: &Arc<Self>, claimed: Claimed, start: Option<Start>) {
        let span = info_span!("order", order_id = %claimed.id, short = %claimed.short);
        let engine = Arc::clone(self);
        self.tasks
            .spawn(async move { engine.process(claimed, start).await }.instrument(span));
    }

    async fn poll(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.timing.poll) => {}
                () = self.stop.cancelled() => return,
            }
            loop {
                let room = MAX_CLAIMED
                    .saturating_sub(self.tasks.len())
                    .min(CLAIM_BATCH as usize) as u32;
                if room == 0 {
                    break;
                }
                match self.store.claim(&self.owner, self.timing.lease, room).await {
                    Ok(batch) => {
                        let full = batch.len() as u32 == room;
                        for claimed in batch {
                            self.spawn(claimed, None);
                        }
                        if !full || self.stop.is_cancelled() {
                            break;
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "could not claim orders");
                        break;
                    }
                }
            }
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let every = self.timing.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.beat.cancelled() => return,
            }
            if let Err(e) = self.store.heartbeat(&self.owner, self.timing.lease).await {
                error!(error = %e, "could not renew leases");
            }
        }
    }

    async fn process(self: Arc<Self>, claimed: Claimed, start: Option<Start>) {
        // Whatever ends this task early (a store error, a panic), the lease does not outlive it.
        let mut lease = Lease {
            engine: Arc::clone(&self),
            id: claimed.id.clone(),
            fence: claimed.fence,
            settled: false,
        };
        let target = Url::parse(&claimed.callback_url).unwrap_or_else(|_| self.delivery.target(None));
        let callback = match &claimed.result {
            Some(body) => Rendered::stored(body.clone()),
            None => {
                let Some(callback) = self.produce(&claimed, &target, start).await else {
                    return;
                };
                match self
                    .store
                    .save_result(&claimed.id, claimed.fence, callback.body().clone())
                    .await
                {
                    Ok(true) => callback,
                    Ok(false) => {
                        warn!("another instance took this order over; dropping this result");
                        return;
                    }
                    Err(e) => {
                        error!(error = %e, "could not store the result; the order will run again");
                        return;
                    }
                }
            }
        };
        lease.settled = self.deliver(&claimed, &target, callback).await;
    }

    /// Runs the short and renders its callback; `None` when another instance took the order.
    async fn produce(&self, claimed: &Claimed, target: &Url, start: Option<Start>) -> Option<Rendered> {
        let result = self.run_short(claimed, start).await?;
        match &result {
            Ok(output) => info!(output_type = output.output_type(), "order finished"),
            Err(e) => match e.chain() {
                causes if causes.is_empty() => warn!(kind = ?e.kind(), error = e.message(), "order failed"),
                causes => warn!(kind = ?e.kind(), error = e.message(), causes, "order failed"),
            },
        }
        Some(self.delivery.render(target, &claimed.id, result).await)
    }

    /// Runs the short once a slot of its concurrency limit is free, after committing the start of
    /// the run; `None` when another instance took the order. The webhook body, read from the store
    /// with the start unless the order arrived with it, is held against the bound of pending bytes
    /// until the short has finished.
    async fn run_short(&self, claimed: &Claimed, start: Option<Start>) -> Option<Result<Output, Error>> {
        let Some(lane) = self.lanes.get(claimed.short.as_str()) else {
            // During a rolling deploy another instance may serve it: leave it to them.
            warn!("this server has no short of that name; leaving the order to another instance");
            tokio::time::sleep(UNKNOWN_SHORT_WAIT).await;
            return None;
        };
        let (_permit, _held, payload, run_number) = match start {
            Some(start) if claimed.started => (Some(start.permit), start.held, start.payload, 1),
            _ => {
                // The semaphore is never closed, so acquiring only waits.
                let permit = Arc::clone(&lane.permits).acquire_owned().await.ok();
                let held = self.pending.hold(claimed.payload_len).await;
                match self.store.start_run(&claimed.id, claimed.fence).await {
                    Ok(Some(started)) => (permit, held, started.payload, started.run),
                    Ok(None) => {
                        warn!("another instance took this order over");
                        return None;
                    }
                    Err(e) => {
                        error!(error = %e, "could not record the start of the run; the order will run later");
                        return None;
                    }
                }
            }
        };
        if run_number > MAX_RUNS {
            error!(
                runs = run_number - 1,
                "the short ended the process on every run of this order"
            );
            return Some(Err(Error::with_kind(
                ErrorKind::Panic,
                format!("the short stopped the server {MAX_RUNS} times while running this order"),
            )));
        }
        let webhook = match Webhook::parse(&payload) {
            Ok(webhook) => webhook,
            Err(e) => {
                let message = format!("the stored order is unreadable: {}", e.message);
                return Some(Err(Error::with_kind(ErrorKind::Input, message)));
            }
        };
        if run_number > 1 {
            info!(
                run = run_number,
                "running the order again after an interrupted run"
            );
        } else {
            info!("order accepted");
        }
        let call = Call {
            inputs: webhook.inputs,
            order: Order::from_inner(OrderInner {
                id: webhook.order_id,
                short_id: webhook.short_id,
                ts: webhook.ts,
                job_token: webhook.job_token,
                short: Arc::clone(&lane.short.name),
                payload,
            }),
        };
        self.running_set().insert(claimed.id.clone());
        let result = run(lane, call).await;
        self.running_set().remove(&claimed.id);
        Some(result)
    }

    fn running_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Delivers the callback and records the outcome; retries are left to the poller. A callback
    /// the platform refuses as too large is replaced (stored first) and sent again at once.
    /// Returns whether the outcome was recorded (which also released the lease).
    async fn deliver(self: &Arc<Self>, claimed: &Claimed, target: &Url, mut callback: Rendered) -> bool {
        // Attempts made here; with those made before, the order's attempts.
        let mut posts = 0;
        let settle = loop {
            let delivered = self
                .delivery
                .deliver(
                    target,
                    &claimed.id,
                    callback,
                    usize::try_from(claimed.steps).unwrap_or(0),
                )
                .await;
            posts += 1;
            let attempts = claimed.attempts + posts;
            let replacement = match settlement(delivered, claimed.steps, attempts) {
                Ok(settle) => break settle,
                Err(replacement) => replacement,
            };
            match self
                .store
                .save_result(&claimed.id, claimed.fence, replacement.body().clone())
                .await
            {
                Ok(true) => callback = replacement,
                Ok(false) => return true,
                Err(e) => {
                    error!(error = %e, "could not store the replacement result");
                    return false;
                }
            }
        };
        self.record(claimed, settle, posts).await
    }

    /// Records how a delivery ended, and wakes the poller when its retry is due before the next
    /// poll. Returns whether it was recorded (which also released the lease).
    async fn record(self: &Arc<Self>, claimed: &Claimed, settle: Settle, posts: i32) -> bool {
        let retry_at = match &settle {
            Settle::Retry { at, .. } | Settle::Paused { at } => Some(*at),
            Settle::Delivered | Settle::Dead(_) => None,
        };
        match self.store.settle(&claimed.id, claimed.fence, settle, posts).await {
            Ok(true) => {
                // Released: the poller can take it when it is due.
                if let Some(at) = retry_at {
                    let wait = u64::try_from(at - now_ms()).unwrap_or(0);
                    self.wake_after(Duration::from_millis(wait));
                }
                true
            }
            Ok(false) => {
                warn!("another instance took this order over");
                true
            }
            Err(e) => {
                error!(error = %e, "could not record the delivery; it will be attempted again");
                false
            }
        }
    }

    /// Wakes the poller once `wait` has passed, so that a retry due before the next poll is not
    /// late.
    fn wake_after(self: &Arc<Self>, wait: Duration) {
        if wait >= self.timing.poll {
            return;
        }
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => engine.wake.notify_one(),
                () = engine.stop.cancelled() => {}
            }
        });
    }

    /// Stops looking for work and waits up to `grace` for running orders; what is left is
    /// released for another instance or the next start. Returns how many were released.
    pub(crate) async fn shutdown(&self, grace: Duration) -> u64 {
        self.stop.cancel();
        self.tasks.close();
        let finished = tokio::time::timeout(grace, self.tasks.wait()).await.is_ok();
        let interrupted: Vec<String> = self.running_set().iter().cloned().collect();
        // Leases stay renewed through the grace period; they end with the release.
        let released = self.store.release(&self.owner, &interrupted).await;
        self.beat.cancel();
        match released {
            Ok(released) => {
                if !finished {
                    warn!(released, "orders still running at shutdown were released");
                }
                released
            }
            Err(e) => {
                error!(error = %e, "could not release this instance's orders; their leases will expire");
                0
            }
        }
    }
}

/// What the store records of a delivery attempt, or the callback that replaces the one the
/// platform refused as too large. `steps` is how many steps of the retry schedule the order had
/// used, `attempts` how many attempts it has had, this one included.
fn settlement(delivered: Delivered, steps: i32, attempts: i32) -> Result<Settle, Rendered> {
    let settle = match delivered {
        Delivered::Replaced(replacement) => return Err(replacement),
        Delivered::Accepted => {
            info!(attempts, "callback accepted");
            Settle::Delivered
        }
        Delivered::Refused { status, detail } => {
            error!(
                status,
                detail, attempts, "the platform refused the callback; the order is dead-lettered"
            );
            Settle::Dead(format!("the platform refused the callback ({status}): {detail}"))
        }
        Delivered::TooLarge => {
            Settle::Dead("the platform refused the callback as too large (413)".to_owned())
        }
        Delivered::Retry { wait, reason } => {
            warn!(attempts, %reason, retry_in = %humantime::format_duration(wait), "callback failed; will retry");
            Settle::Retry {
                at: now_ms() + ms(wait),
                steps: steps + 1,
                error: reason,
            }
        }
        Delivered::Exhausted { reason } => {
            error!(attempts, %reason, "callback retries exhausted; the order is dead-lettered");
            Settle::Dead(format!("gave up after {attempts} attempts: {reason}"))
        }
        Delivered::Unauthorized { wait } => {
            error!(
                attempts,
                retry_in = %humantime::format_duration(wait),
                "the platform refused the callback secret (401); check SHORTS_CALLBACK_SECRET"
            );
            Settle::Paused {
                at: now_ms() + ms(wait),
            }
        }
    };
    Ok(settle)
}

/// Releases an order's lease when the task working on it ends without settling it. After a settle
/// there is nothing to release (`settled`); once another instance has the order, the fence no
/// longer matches and the release changes nothing.
struct Lease {
    engine: Arc<Engine>,
    id: String,
    fence: i64,
    /// Set once the order is settled: nothing left to release.
    settled: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let engine = Arc::clone(&self.engine);
        let id = std::mem::take(&mut self.id);
        let fence = self.fence;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { engine.release_order(id, fence).await });
        }
    }
}

/// The longest wait between two attempts to release an order's lease.
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(5);

impl Engine {
    /// Releases one order's lease, trying again until the store takes the write (or the instance
    /// stops, which releases every lease it holds). The heartbeat renews every lease this instance
    /// holds, the orders it no longer works on too: a release given up would keep the order leased,
    /// and never run or delivered, as long as the process lives.
    async fn release_order(self: Arc<Self>, id: String, fence: i64) {
        let mut wait = Duration::from_millis(100);
        for attempt in 1u64.. {
            let Err(e) = self.store.release_order(&id, fence).await else {
                if attempt > 1 {
                    info!(order_id = %id, attempt, "released the order's lease");
                }
                return;
            };
            error!(order_id = %id, error = %e, retry_in = %humantime::format_duration(wait), "could not release an order's lease");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => return,
            }
            wait = (wait * 2).min(RELEASE_RETRY_MAX);
        }
    }
}

/// Runs the handler under the short's timeout, catching a panic.
pub(crate) async fn run(lane: &Lane, call: Call) -> Result<Output, Error> {
    let mut handle = tokio::spawn((lane.short.handler)(call));
    match tokio::time::timeout(lane.short.timeout, &mut handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => {
            let panic = join.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            error!(panic = message, "the short panicked");
            Err(Error::with_kind(
                ErrorKind::Panic,
                "the short failed unexpectedly (it panicked)".to_owned(),
            ))
        }
        Ok(Err(_cancelled)) => Err(Error::with_kind(
            ErrorKind::Panic,
            "the short was cancelled before it finished".to_owned(),
        )),
        Err(_elapsed) => {
            handle.abort();
            Err(Error::with_kind(
                ErrorKind::Timeout,
                format!(
                    "the short did not finish within its timeout of {}",
                    humantime::format_duration(lane.short.timeout)
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(retention: u64, dead_retention: u64) -> Timing {
        Timing {
            lease: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(retention),
            dead_retention: Duration::from_secs(dead_retention),
        }
    }

    #[test]
    fn the_purge_runs_hourly_or_as_often_as_the_shortest_retention() {
        const DAYS_30: u64 = 30 * 86_400;
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(timing(DAYS_30, DAYS_30).purge_every(), hour);
        assert_eq!(timing(0, 0).purge_every(), None);
        assert_eq!(timing(0, DAYS_30).purge_every(), hour);
        assert_eq!(timing(DAYS_30, 0).purge_every(), hour);
        assert_eq!(timing(DAYS_30, 2).purge_every(), Some(Duration::from_secs(2)));
        assert_eq!(timing(600, 0).purge_every(), Some(Duration::from_secs(600)));
        assert_eq!(
            Timing {
                dead_retention: Duration::from_millis(10),
                ..timing(0, 0)
            }
            .purge_every(),
            Some(Duration::from_secs(1))
        );
    }
}
