//! Where orders are kept between the webhook and the callback.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderState {
    /// Accepted; waiting for a slot or running.
    Running,
    /// Finished; the callback is being delivered.
    Delivering,
    /// The platform accepted the callback.
    Delivered,
    /// The callback could not be delivered (refused, or retries exhausted).
    Dead,
}

/// Keeps orders in this process's memory: duplicates are recognised for as long as the process
/// lives, and nothing survives a restart.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    orders: Mutex<HashMap<String, OrderState>>,
}

impl MemoryStore {
    /// Records a new order; `false` when the `order_id` is already known.
    pub(crate) fn accept(&self, order_id: &str) -> bool {
        let mut orders = self
            .orders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if orders.contains_key(order_id) {
            return false;
        }
        orders.insert(order_id.to_owned(), OrderState::Running);
        true
    }

    pub(crate) fn set(&self, order_id: &str, state: OrderState) {
        let mut orders = self
            .orders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        orders.insert(order_id.to_owned(), state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_accepted_once() {
        let store = MemoryStore::default();
        assert!(store.accept("a"));
        assert!(!store.accept("a"));
        store.set("a", OrderState::Delivered);
        assert!(!store.accept("a"));
        assert!(store.accept("b"));
    }
}
