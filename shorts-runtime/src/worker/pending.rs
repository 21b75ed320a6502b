//! The bound on webhook bodies held in memory (`SHORTS_MAX_PENDING_BYTES`).
//!
//! What is counted: a webhook body from the moment it is being read (its `Content-Length` up
//! front, or each chunk as it arrives) until its order is committed, together with the copies the
//! store makes of it to write it (see `AnyStore::copies`); then, for an order that runs at once,
//! the body alone until its short has finished; an order that waits for a slot holds nothing. A
//! body read back from the store when a waiting or reclaimed order starts is counted from before
//! the read until its short has finished.
//!
//! A body larger than the whole bound is taken only when nothing else is pending: it counts as the
//! whole bound. So the bodies held never pass the larger of the bound and `SHORTS_MAX_BODY`.
//!
//! The webhook asks without waiting and is refused when the bound is reached; a run waits. Waits
//! are served first come, first served, before any webhook.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in units of this many, rounded up, so that a bound of terabytes still fits
/// the semaphore's count.
const UNIT: u64 = 1024;

/// The bytes of webhook bodies held in memory, bounded.
pub(crate) struct Pending {
    units: Arc<Semaphore>,
    /// The whole bound, in units.
    total: u32,
}

/// Bytes held against the bound; given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// The bytes asked for.
    bytes: u64,
}

impl Held {
    /// Holds nothing.
    pub(crate) fn none() -> Self {
        Self {
            permit: None,
            bytes: 0,
        }
    }
}

impl Pending {
    /// A bound of `max` bytes (at least one unit).
    pub(crate) fn new(max: u64) -> Self {
        let total = u32::try_from(max.div_ceil(UNIT)).unwrap_or(u32::MAX).max(1);
        Self {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// The units that `bytes` count for: a body larger than the bound counts as the bound.
    fn units(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.total)
    }

    /// Holds `bytes` if they fit now.
    pub(crate) fn try_hold(&self, bytes: u64) -> Option<Held> {
        let mut held = Held::none();
        self.try_grow(&mut held, bytes).then_some(held)
    }

    /// Grows `held` to `bytes` if the difference fits now; `false` leaves it as it was.
    pub(crate) fn try_grow(&self, held: &mut Held, bytes: u64) -> bool {
        let have = self.units(held.bytes);
        let need = self.units(bytes);
        if need > have {
            let Ok(more) = Arc::clone(&self.units).try_acquire_many_owned(need - have) else {
                return false;
            };
            match &mut held.permit {
                Some(permit) => permit.merge(more),
                None => held.permit = Some(more),
            }
        }
        held.bytes = held.bytes.max(bytes);
        true
    }

    /// Shrinks `held` to `bytes`, giving the rest back.
    pub(crate) fn shrink(&self, held: &mut Held, bytes: u64) {
        let keep = self.units(bytes);
        if let Some(permit) = &mut held.permit {
            let have = permit.num_permits();
            if let Some(give_back) = permit.split(have.saturating_sub(keep as usize)) {
                drop(give_back);
            }
        }
        held.bytes = held.bytes.min(bytes);
    }

    /// Holds `bytes`, waiting until they fit.
    pub(crate) async fn hold(&self, bytes: u64) -> Held {
        let units = self.units(bytes);
        if units == 0 {
            return Held::none();
        }
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.units).acquire_many_owned(units).await.ok();
        Held { permit, bytes }
    }

    /// The bytes held now (rounded up to units).
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        u64::from(self.total - self.units.available_permits() as u32) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn refuses_past_the_bound_and_gives_back_on_drop() {
        let pending = Pending::new(10 * MIB);
        let first = pending.try_hold(6 * MIB).expect("fits");
        assert!(pending.try_hold(5 * MIB).is_none());
        let second = pending.try_hold(4 * MIB).expect("fits exactly");
        assert_eq!(pending.held(), 10 * MIB);
        assert!(pending.try_hold(1).is_none());
        drop(first);
        assert_eq!(pending.held(), 4 * MIB);
        drop(second);
        assert_eq!(pending.held(), 0);
    }

    #[test]
    fn a_body_larger_than_the_bound_is_taken_only_alone() {
        let pending = Pending::new(10 * MIB);
        let small = pending.try_hold(1).expect("fits");
        assert!(pending.try_hold(20 * MIB).is_none());
        drop(small);
        let large = pending.try_hold(20 * MIB).expect("alone");
        assert!(pending.try_hold(1).is_none());
        drop(large);
        assert_eq!(pending.held(), 0);
    }

    #[test]
    fn grows_chunk_by_chunk() {
        let pending = Pending::new(10 * MIB);
        let other = pending.try_hold(7 * MIB).expect("fits");
        let mut held = Held::none();
        assert!(pending.try_grow(&mut held, MIB));
        assert!(pending.try_grow(&mut held, 3 * MIB));
        assert!(!pending.try_grow(&mut held, 3 * MIB + 1));
        assert_eq!(pending.held(), 10 * MIB);
        drop(other);
        assert!(pending.try_grow(&mut held, 9 * MIB));
        pending.shrink(&mut held, 2 * MIB);
        assert_eq!(pending.held(), 2 * MIB);
        assert!(pending.try_hold(8 * MIB).is_some());
        drop(held);
        assert_eq!(pending.held(), 0);
    }

    #[tokio::test]
    async fn a_wait_is_served_before_a_later_webhook() {
        let pending = Arc::new(Pending::new(10 * MIB));
        let running = pending.try_hold(8 * MIB).expect("fits");
        let waiting = {
            let pending = Arc::clone(&pending);
            tokio::spawn(async move { pending.hold(4 * MIB).await })
        };
        // Bounded: the waiter queues within a few yields.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        drop(running);
        // What the running order gave back goes to the wait, not to a webhook asking after it.
        let held = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("served")
            .expect("task");
        assert!(pending.try_hold(7 * MIB).is_none());
        assert!(pending.try_hold(6 * MIB).is_some());
        drop(held);
    }
}
