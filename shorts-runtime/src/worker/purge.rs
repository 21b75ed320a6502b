//! Purging what the engine is done with: delivered orders past their retention, and the webhook
//! bodies of dead orders past theirs.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};

use super::{Engine, Timing};
use crate::store::{Store, ms, now_ms};

impl Timing {
    /// How often the purge runs: hourly, or as often as the shorter retention when that is shorter
    /// (at least every second); `None` when both retentions are zero (keep everything).
    pub(super) fn purge_every(&self) -> Option<Duration> {
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

impl Engine {
    /// Deletes delivered orders older than the retention, and the webhook bodies of dead orders
    /// older than the dead retention: a minute after start (or sooner, see
    /// [`Timing::purge_every`]), then `every`.
    pub(super) async fn purge(self: Arc<Self>, every: Duration) {
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
                match self.purge_delivered(now_ms() - ms(retention)).await {
                    Ok(0) => {}
                    Ok(purged) => info!(purged, "deleted delivered orders past their retention"),
                    Err(e) => {
                        error!(error = %e, "could not delete old orders");
                        self.alerts.store_failed(None, &e);
                    }
                }
            }
            if !dead_retention.is_zero() {
                match self.store.purge_dead(now_ms() - ms(dead_retention)).await {
                    Ok(0) => {}
                    Ok(purged) => info!(
                        purged,
                        "deleted the webhook bodies of dead orders past SHORTS_DEAD_RETENTION"
                    ),
                    Err(e) => {
                        error!(error = %e, "could not delete the webhook bodies of old dead orders");
                        self.alerts.store_failed(None, &e);
                    }
                }
            }
        }
    }

    /// Deletes the delivered orders received before `before`, [`PURGE_BATCH`] at a time, waiting
    /// [`PURGE_PAUSE`] times as long as each batch took before the next: new orders are never held
    /// behind more than a batch, and the store spends at most a quarter of its time purging.
    /// Returns how many were deleted. Stops with the engine.
    async fn purge_delivered(&self, before: i64) -> Result<u64, crate::store::StoreError> {
        let mut purged = 0;
        loop {
            let started = tokio::time::Instant::now();
            let batch = self.store.purge(before, PURGE_BATCH).await?;
            purged += batch;
            if batch < u64::from(PURGE_BATCH) {
                return Ok(purged);
            }
            tokio::select! {
                () = tokio::time::sleep(started.elapsed() * PURGE_PAUSE) => {}
                () = self.stop.cancelled() => return Ok(purged),
            }
        }
    }
}

/// Delivered orders deleted per transaction by the purge: about 20 ms of SQLite's writer at the
/// 11,000 to 13,000 orders a second one long transaction deletes.
const PURGE_BATCH: u32 = 250;

/// The pause after a batch, in multiples of the time it took.
const PURGE_PAUSE: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(retention: u64, dead_retention: u64) -> Timing {
        Timing {
            lease: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(retention),
            dead_retention: Duration::from_secs(dead_retention),
            max_held: 4096,
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
