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

    /// Deletes the delivered orders received before `before`, in batches that each hold the store
    /// about [`PURGE_SLICE`] (see [`next_batch`]), waiting [`PURGE_PAUSE`] times as long as each
    /// batch held it before the next: new orders are never held behind more than a short batch,
    /// and the store spends at most a quarter of its time purging. Returns how many were deleted.
    /// Stops with the engine.
    async fn purge_delivered(&self, before: i64) -> Result<u64, crate::store::StoreError> {
        let mut purged = 0;
        let mut batch = FIRST_BATCH;
        loop {
            let done = self.store.purge(before, batch).await?;
            purged += done.orders;
            if done.orders < u64::from(batch) {
                return Ok(purged);
            }
            batch = next_batch(batch, done.held);
            tokio::select! {
                () = tokio::time::sleep(done.held * PURGE_PAUSE) => {}
                () = self.stop.cancelled() => return Ok(purged),
            }
        }
    }
}

/// How long a batch of the purge should hold the store: what a new order may wait behind it.
const PURGE_SLICE: Duration = Duration::from_millis(2);

/// The pause after a batch, in multiples of the time it took.
const PURGE_PAUSE: u32 = 3;

/// Delivered orders deleted by the purge's first batch.
const FIRST_BATCH: u32 = 64;

/// The fewest and the most delivered orders a batch deletes.
const BATCHES: std::ops::RangeInclusive<u32> = 8..=1024;

/// The size of the batch after one of `size` orders that took `took`: half as many after a batch
/// that took longer than [`PURGE_SLICE`], twice as many after one that took less than half of it,
/// within [`BATCHES`]. Deleting an order takes from tens of microseconds to milliseconds, with the
/// disk, the size of the file and the load, so the size follows what the batches take.
fn next_batch(size: u32, took: Duration) -> u32 {
    let size = if took > PURGE_SLICE {
        size / 2
    } else if took < PURGE_SLICE / 2 {
        size.saturating_mul(2)
    } else {
        size
    };
    size.clamp(*BATCHES.start(), *BATCHES.end())
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
            max_held: 4096,
        }
    }

    #[test]
    fn a_purge_batch_follows_the_time_batches_take() {
        let ms = Duration::from_millis;
        // Too long: halved, down to the fewest.
        assert_eq!(next_batch(64, PURGE_SLICE + ms(1)), 32);
        assert_eq!(next_batch(*BATCHES.start(), ms(1000)), *BATCHES.start());
        // Quick: doubled, up to the most.
        assert_eq!(next_batch(64, Duration::ZERO), 128);
        assert_eq!(next_batch(*BATCHES.end(), Duration::ZERO), *BATCHES.end());
        // About right: kept.
        assert_eq!(next_batch(64, PURGE_SLICE), 64);
        assert_eq!(next_batch(64, PURGE_SLICE / 2), 64);
        // From any size, a run of slow batches reaches the fewest and of quick ones the most.
        let mut size = FIRST_BATCH;
        for _ in 0..16 {
            size = next_batch(size, ms(100));
        }
        assert_eq!(size, *BATCHES.start());
        for _ in 0..16 {
            size = next_batch(size, Duration::ZERO);
        }
        assert_eq!(size, *BATCHES.end());
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
