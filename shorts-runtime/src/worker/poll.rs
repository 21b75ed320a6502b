//! Looking for work: claiming due orders from the store when woken or every poll interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::error;

use super::Engine;
use crate::store::{FailedNow, Retried, Store, StoreError};

/// Orders claimed per query.
const CLAIM_BATCH: u32 = 64;

impl Engine {
    /// Looks for work now rather than at the next poll.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// An order's task ends: while orders wait in the store for an instance with room, the
    /// poller claims them as soon as a quarter of the bound (at most a batch) is free, rather
    /// than at its next poll.
    pub(super) fn room_freed(&self) {
        if !self.queued.load(Ordering::SeqCst) {
            return;
        }
        let max = self.timing.max_held;
        // The task ending still counts until it returns.
        let held = self.tasks.len().saturating_sub(1);
        if max.saturating_sub(held) >= (max / 4).clamp(1, CLAIM_BATCH as usize) {
            self.wake();
        }
    }

    /// Puts a dead or paused order back to delivery (see [`App::retry`](crate::App::retry)) and
    /// looks for work at once when it did.
    pub(crate) async fn retry(&self, order_id: &str) -> Result<Retried, StoreError> {
        let retried = crate::store::retry(&self.store, order_id).await?;
        if matches!(retried, Retried::Redelivering { .. }) {
            self.wake();
        }
        Ok(retried)
    }

    /// Fails a stuck order now (see [`App::fail_now`](crate::App::fail_now)) and looks for work
    /// at once when it did.
    pub(crate) async fn fail_now(&self, order_id: &str, message: &str) -> Result<FailedNow, StoreError> {
        let failed = crate::store::fail_now(&self.store, order_id, message).await?;
        if failed == FailedNow::Failing {
            self.wake();
        }
        Ok(failed)
    }

    /// Claims due orders (left by earlier runs or other instances, or due for a retry) and starts
    /// them, when woken or every poll interval, until shutdown.
    pub(super) async fn poll(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.timing.poll) => {}
                () = self.stop.cancelled() => return,
            }
            loop {
                let room = self
                    .timing
                    .max_held
                    .saturating_sub(self.tasks.len())
                    .min(CLAIM_BATCH as usize) as u32;
                if room == 0 {
                    break;
                }
                // Cleared before the claim: an order committed without an owner during it sets it
                // again.
                self.queued.store(false, Ordering::SeqCst);
                match self.store.claim(&self.owner, self.timing.lease, room).await {
                    Ok(batch) => {
                        let full = batch.len() as u32 == room;
                        if full {
                            // There may be more.
                            self.queued.store(true, Ordering::SeqCst);
                        }
                        for claimed in batch {
                            self.spawn(claimed, None);
                        }
                        if !full || self.stop.is_cancelled() {
                            break;
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "could not claim orders");
                        self.alerts.store_failed(None, &e);
                        break;
                    }
                }
            }
        }
    }

    /// Wakes the poller once `wait` has passed, so that a retry due before the next poll is not
    /// late.
    pub(super) fn wake_after(self: &Arc<Self>, wait: Duration) {
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
}
