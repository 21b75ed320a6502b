//! Running orders: commit at intake, claim with a lease, run the short (concurrency limit,
//! timeout, panics caught), commit the callback body, deliver it with attempts recorded in the
//! store, and pick up whatever a crashed or stopped instance left behind.
//!
//! An order waiting for a slot of its short holds only its id: its webhook body is read from the
//! store when the slot is free, within the bound of [`Pending`].
//!
//! [`Engine`] is here with intake and shutdown; each of its other concerns has a file: `poll`
//! (claiming due orders), `lease` (the heartbeat and the guard releasing a lease), `purge`,
//! `run` (slots, the handler's timeout and panics), and `deliver` (the callback's outcome
//! recorded in the store).

mod deliver;
mod lease;
mod pending;
mod poll;
mod purge;
mod run;

pub(crate) use pending::{Held, Pending};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::admin::alerts::Alerts;
use crate::admin::metrics::{MaybeMetrics, Metrics, ShortMetrics};
use crate::delivery::{Delivery, Rendered};
use crate::short::Short;
use crate::store::{AnyStore, Claimed, Hold, NewOrder, Store, StoreError};
use crate::wire::webhook;
use lease::Lease;

/// A short with its concurrency limit.
pub(crate) struct Lane {
    /// The short.
    pub(crate) short: Short,
    /// Its free slots: one permit per order it may run at once.
    permits: Arc<Semaphore>,
    /// Its metrics, when they are on.
    pub(crate) metrics: Option<ShortMetrics>,
}

impl Lane {
    /// A lane with as many slots as the short's concurrency (at least one), recording in
    /// `metrics` when they are on.
    pub(crate) fn new(short: Short, metrics: Option<&Metrics>) -> Self {
        let permits = Arc::new(Semaphore::new(short.concurrency.clamp(1, Semaphore::MAX_PERMITS)));
        let metrics = metrics.map(|metrics| metrics.short(&short.name));
        Self {
            short,
            permits,
            metrics,
        }
    }
}

/// An order as it arrived: what the engine needs of its envelope, and the body it came in, held
/// against the bound of pending bytes.
pub(crate) struct Job {
    /// The webhook, as read from the body: an order that starts at once runs with it.
    pub(crate) webhook: webhook::Webhook,
    /// The webhook body.
    pub(crate) payload: Bytes,
    /// The body's share of the bound of pending bytes.
    pub(crate) held: Held,
}

/// What an order accepted with a free slot starts with: the slot, and the body it arrived with.
struct Start {
    /// The slot of the short's lane.
    permit: OwnedSemaphorePermit,
    /// The webhook body.
    payload: Bytes,
    /// The webhook, as read from the body at intake.
    webhook: webhook::Webhook,
    /// The body's share of the bound of pending bytes.
    held: Held,
}

/// Whether a submitted order is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Committed, and started or waiting for a slot.
    New,
    /// An order of that id was committed before: nothing was started.
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
    /// The most orders the instance holds at once (`SHORTS_MAX_HELD`).
    pub(crate) max_held: usize,
}

/// Runs orders and delivers their callbacks.
pub(crate) struct Engine {
    /// Where orders, their results and their attempts are kept.
    pub(crate) store: AnyStore,
    /// Renders and sends callbacks.
    delivery: Delivery,
    /// The shorts served, by name.
    lanes: HashMap<Arc<str>, Arc<Lane>>,
    /// This instance's name in leases.
    owner: String,
    /// Leases, polling and retention.
    timing: Timing,
    /// Wakes the poller before its next poll.
    wake: Notify,
    /// The tasks working on orders.
    tasks: TaskTracker,
    /// Stops the poller and the purge at shutdown.
    stop: CancellationToken,
    /// Stops the heartbeat, once the leases are released.
    beat: CancellationToken,
    /// Orders whose short is running in this process.
    running: std::sync::Mutex<HashSet<String>>,
    /// Set when an order was committed without an owner (the instance held all it may): the
    /// poller is woken as room frees, until a claim finds none left.
    queued: AtomicBool,
    /// The bytes of webhook bodies held in memory.
    pub(crate) pending: Pending,
    /// Counts callback attempts, when metrics are on.
    metrics: MaybeMetrics,
    /// Where dead letters, pauses and store failures are reported.
    pub(crate) alerts: Alerts,
}

impl Engine {
    /// An engine serving `lanes` from `store`; nothing runs before [`Engine::start`].
    pub(crate) fn new(
        store: AnyStore,
        delivery: Delivery,
        lanes: &[Arc<Lane>],
        timing: Timing,
        pending: Pending,
        metrics: MaybeMetrics,
        alerts: Alerts,
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
            queued: AtomicBool::new(false),
            pending,
            metrics,
            alerts,
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

    /// Commits the order and starts it on its own task; a known `order_id` starts nothing.
    /// An order that must wait for a slot gives its body back once it is committed.
    ///
    /// # Errors
    ///
    /// When the store fails: the webhook must not be acknowledged then.
    pub(crate) async fn submit(self: &Arc<Self>, lane: &Lane, job: Job) -> Result<Submitted, StoreError> {
        let target = self.delivery.target(job.webhook.callback_url.as_deref());
        // With a free slot the short starts at once, and its run is committed with the order.
        let permit = Arc::clone(&lane.permits).try_acquire_owned().ok();
        // Without one it waits for a slot here, leased, while the instance holds fewer orders than
        // it may; otherwise in the store, leased to nobody, so that renewing this instance's
        // leases never grows with a backlog, and another instance with room may take it.
        let hold = if permit.is_some() {
            Hold::Start
        } else if self.tasks.len() < self.timing.max_held {
            Hold::Wait
        } else {
            Hold::Store
        };
        // The body carries a `job_token`, which the store erases once the result is stored.
        let job_token = if job.webhook.job_token.is_some() {
            webhook::job_token_span(&job.payload)
        } else {
            None
        };
        let order = NewOrder {
            job_token,
            id: job.webhook.order_id.clone(),
            short: lane.short.name.to_string(),
            payload: job.payload.clone(),
            callback_url: target.to_string(),
            hold,
        };
        let accepted = self.store.accept(order, &self.owner, self.timing.lease).await?;
        // Written: the store's copies are gone, and an order that waits holds nothing.
        let start = permit.map(|permit| {
            let mut held = job.held;
            self.pending.shrink(&mut held, job.payload.len() as u64);
            Start {
                permit,
                payload: job.payload,
                webhook: job.webhook,
                held,
            }
        });
        match accepted {
            Some(claimed) if hold.leased() => {
                self.spawn(claimed, start);
                Ok(Submitted::New)
            }
            Some(_) => {
                self.queued.store(true, Ordering::SeqCst);
                // Room may have freed while the order was written.
                self.wake();
                Ok(Submitted::New)
            }
            None => {
                // In the webhook's span, which names the order.
                info!("duplicate order ignored");
                Ok(Submitted::Duplicate)
            }
        }
    }

    /// Works on a claimed order on its own task, in a span naming it (of its own: not a child of
    /// the webhook's, which ends with the answer).
    fn spawn(self: &Arc<Self>, claimed: Claimed, start: Option<Start>) {
        let span = info_span!(parent: None, "order", order_id = %claimed.id, short = %claimed.short);
        let engine = Arc::clone(self);
        self.tasks.spawn(
            async move {
                Arc::clone(&engine).process(claimed, start).await;
                engine.room_freed();
            }
            .instrument(span),
        );
    }

    /// Works on one order until it is settled: runs the short and stores its callback unless an
    /// earlier run stored it, then delivers it. The lease is released if the task ends otherwise.
    async fn process(self: Arc<Self>, claimed: Claimed, start: Option<Start>) {
        // Whatever ends this task early (a store error, a panic), the lease does not outlive it.
        let mut lease = Lease::new(&self, &claimed);
        let target = self.delivery.stored_target(&claimed.callback_url);
        let callback = match &claimed.result {
            Some(body) => Rendered::read_back(body.clone()),
            None => match self.run_and_store(&claimed, &target, start).await {
                Some(callback) => callback,
                None => return,
            },
        };
        if self.deliver(&claimed, &target, callback).await {
            lease.settled();
        }
    }

    /// The orders whose short is running in this process (a panic elsewhere does not lose it).
    fn running_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether [`Engine::shutdown`] has been called: new orders are no longer taken.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
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
                self.alerts.store_failed(None, &e);
                0
            }
        }
    }
}
