//! Running orders: one task per order, a concurrency limit per short, the timeout, panics caught,
//! and the result handed to delivery.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::delivery::{Delivered, Delivery};
use crate::short::error::{Error, ErrorKind};
use crate::short::order::{Order, OrderInner};
use crate::short::output::Output;
use crate::short::{Call, Short};
use crate::store::{MemoryStore, OrderState};
use crate::wire::webhook::Webhook;

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

/// An order as it arrived: the parsed envelope and the body it came in.
pub(crate) struct Job {
    pub(crate) webhook: Webhook,
    pub(crate) payload: Bytes,
}

/// Whether a submitted order is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    New,
    Duplicate,
}

/// Runs orders and delivers their callbacks.
pub(crate) struct Engine {
    pub(crate) store: MemoryStore,
    delivery: Delivery,
    tasks: TaskTracker,
}

impl Engine {
    pub(crate) fn new(delivery: Delivery) -> Self {
        Self {
            store: MemoryStore::default(),
            delivery,
            tasks: TaskTracker::new(),
        }
    }

    /// Records the order and starts it on its own task; a known `order_id` starts nothing.
    pub(crate) fn submit(self: &Arc<Self>, lane: &Arc<Lane>, job: Job) -> Submitted {
        if !self.store.accept(&job.webhook.order_id) {
            info!(order_id = %job.webhook.order_id, short = %lane.short.name, "duplicate order ignored");
            return Submitted::Duplicate;
        }
        let span = info_span!("order", order_id = %job.webhook.order_id, short = %lane.short.name);
        let engine = Arc::clone(self);
        let lane = Arc::clone(lane);
        self.tasks
            .spawn(async move { engine.process(&lane, job).await }.instrument(span));
        Submitted::New
    }

    async fn process(&self, lane: &Lane, job: Job) {
        let Job { webhook, payload } = job;
        let order_id = webhook.order_id.clone();
        let target = self.delivery.target(webhook.callback_url.as_deref());
        let call = Call {
            inputs: webhook.inputs,
            order: Order::new(OrderInner {
                id: webhook.order_id,
                short_id: webhook.short_id,
                ts: webhook.ts,
                job_token: webhook.job_token,
                short: Arc::clone(&lane.short.name),
                payload,
            }),
        };
        info!("order accepted");

        let result = run(lane, call).await;
        match &result {
            Ok(output) => info!(output_type = output.output_type(), "order finished"),
            Err(e) => match e.chain() {
                causes if causes.is_empty() => warn!(kind = ?e.kind(), error = e.message(), "order failed"),
                causes => warn!(kind = ?e.kind(), error = e.message(), causes, "order failed"),
            },
        }
        self.store.set(&order_id, OrderState::Delivering);
        let outcome = self.delivery.complete(&target, &order_id, result).await;
        let state = match outcome {
            Delivered::Accepted { .. } => OrderState::Delivered,
            Delivered::Rejected { status, detail } => {
                error!(
                    status,
                    detail, "the platform refused the callback; the order is dead-lettered"
                );
                OrderState::Dead
            }
            Delivered::TooLarge => {
                error!(
                    "the platform refused even the failure callback as too large; the order is dead-lettered"
                );
                OrderState::Dead
            }
            Delivered::Exhausted { attempts, last } => {
                error!(
                    attempts,
                    last, "callback retries exhausted; the order is dead-lettered"
                );
                OrderState::Dead
            }
        };
        self.store.set(&order_id, state);
    }

    /// Stops taking new orders' tasks into account and waits up to `grace` for running ones.
    /// Returns how many were still running.
    pub(crate) async fn shutdown(&self, grace: Duration) -> usize {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            return self.tasks.len();
        }
        0
    }
}

/// Runs the handler under the short's limit and timeout, catching a panic.
pub(crate) async fn run(lane: &Lane, call: Call) -> Result<Output, Error> {
    // The semaphore is never closed, so acquiring only waits.
    let _permit = Arc::clone(&lane.permits).acquire_owned().await.ok();
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
