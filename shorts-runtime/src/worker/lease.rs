//! Keeping leases: the heartbeat that renews this instance's, and the guard that releases an
//! order's lease when the task working on it ends without settling it.

use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument as _, error, info};

use super::Engine;
use crate::store::{Claimed, Store};

impl Engine {
    /// Renews every lease this instance holds, every third of the lease, until the leases are
    /// released at shutdown.
    pub(super) async fn heartbeat(self: Arc<Self>) {
        let every = self.timing.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.beat.cancelled() => return,
            }
            if let Err(e) = self.store.heartbeat(&self.owner, self.timing.lease).await {
                error!(error = %e, "could not renew leases");
                self.alerts.store_failed(None, &e);
            }
        }
    }
}

/// Releases an order's lease when the task working on it ends without settling it. After a settle
/// there is nothing to release (`settled`); once another instance has the order, the fence no
/// longer matches and the release changes nothing.
pub(super) struct Lease {
    /// The engine whose store holds the lease.
    engine: Arc<Engine>,
    /// The order leased.
    id: String,
    /// Its short.
    short: String,
    /// The order's fence when it was claimed.
    fence: i64,
    /// Set once the order is settled: nothing left to release.
    settled: bool,
    /// The order's span, in which the release is logged.
    span: tracing::Span,
}

impl Lease {
    /// The guard of `claimed`'s lease.
    pub(super) fn new(engine: &Arc<Engine>, claimed: &Claimed) -> Self {
        Self {
            engine: Arc::clone(engine),
            id: claimed.id.clone(),
            short: claimed.short.clone(),
            fence: claimed.fence,
            settled: false,
            span: tracing::Span::current(),
        }
    }

    /// The order is settled: there is nothing to release.
    pub(super) fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let engine = Arc::clone(&self.engine);
        let id = std::mem::take(&mut self.id);
        let short = std::mem::take(&mut self.short);
        let fence = self.fence;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let release = async move { engine.release_order(id, short, fence).await };
            runtime.spawn(release.instrument(self.span.clone()));
        }
    }
}

/// The longest wait between two attempts to release an order's lease.
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(5);

impl Engine {
    /// Releases one order's lease (in the order's span), trying again until the store takes the write (or the instance
    /// stops, which releases every lease it holds). The heartbeat renews every lease this instance
    /// holds, the orders it no longer works on too: a release given up would keep the order leased,
    /// and never run or delivered, as long as the process lives.
    async fn release_order(self: Arc<Self>, id: String, short: String, fence: i64) {
        let mut wait = Duration::from_millis(100);
        for attempt in 1u64.. {
            let Err(e) = self.store.release_order(&id, fence).await else {
                if attempt > 1 {
                    info!(attempt, "released the order's lease");
                }
                return;
            };
            error!(error = %e, retry_in = %crate::logs::duration(wait), "could not release an order's lease");
            self.alerts.store_failed(Some((&id, &short)), &e);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => return,
            }
            wait = (wait * 2).min(RELEASE_RETRY_MAX);
        }
    }
}
