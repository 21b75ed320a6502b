//! The order context a short may take as its second argument.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// The order being worked on: its ids, the time it was placed, the Amazon `job_token` when the
/// short requires an Amazon connection, and the webhook body as received.
///
/// Cheap to clone. Its `Debug` output never shows the `job_token`.
#[derive(Clone)]
pub struct Order {
    inner: Arc<OrderInner>,
}

pub(crate) struct OrderInner {
    pub(crate) id: String,
    pub(crate) short_id: Option<String>,
    pub(crate) ts: Option<i64>,
    pub(crate) job_token: Option<String>,
    pub(crate) short: Arc<str>,
    pub(crate) payload: Bytes,
}

impl Order {
    pub(crate) fn new(inner: OrderInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The platform's `order_id`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The platform's `short_id`: which of the seller's listings was bought.
    pub fn short_id(&self) -> Option<&str> {
        self.inner.short_id.as_deref()
    }

    /// The `ts` field: when the order was placed, in Unix seconds.
    pub fn ts(&self) -> Option<i64> {
        self.inner.ts
    }

    /// `ts` as a time, when it was sent and is not negative.
    pub fn placed_at(&self) -> Option<SystemTime> {
        let secs = u64::try_from(self.inner.ts?).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    }

    /// The token for SellerShorts' Amazon capabilities API, sent as `Authorization: Bearer <token>`.
    /// Present only when the short requires an Amazon Ads or Seller Central connection.
    pub fn job_token(&self) -> Option<&str> {
        self.inner.job_token.as_deref()
    }

    /// The name of the short serving this order.
    pub fn short_name(&self) -> &str {
        &self.inner.short
    }

    /// The webhook body exactly as received (JSON), for custom payload templates.
    pub fn payload(&self) -> &[u8] {
        &self.inner.payload
    }

    /// The webhook body parsed into a JSON value.
    ///
    /// # Errors
    ///
    /// Never for an order that came through the webhook, which refuses a body that is not UTF-8
    /// JSON throughout (unknown fields included) or holds a value `serde_json::Value` cannot.
    pub fn payload_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.inner.payload)
    }
}

impl fmt::Debug for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Order")
            .field("id", &self.inner.id)
            .field("short_id", &self.inner.short_id)
            .field("ts", &self.inner.ts)
            .field("job_token", &self.inner.job_token.as_ref().map(|_| "<redacted>"))
            .field("short", &self.inner.short)
            .finish_non_exhaustive()
    }
}
