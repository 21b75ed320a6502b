//! The order context a short may take as its second argument.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// The order being worked on: its ids, the time it was placed, the Amazon `job_token` when the
/// short requires an Amazon connection, and the webhook body as received.
///
/// Cheap to clone. Its `Debug` output never shows the `job_token`.
///
/// To unit-test a short that takes an `Order`, build one with [`Order::new`] or
/// [`Order::builder`]:
///
/// ```
/// use shorts_runtime::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Input {
///     text: String,
/// }
///
/// #[ai_short]
/// async fn stamp(input: Input, order: Order) -> Result<String> {
///     Ok(format!("{} (order {})", input.text, order.id()))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let order = Order::builder("550e8400-e29b-41d4-a716-446655440000", "abc123")
///     .ts(1_736_032_405)
///     .job_token("eyJhbGciOiJIUzI1NiJ9.test.token")
///     .build();
/// let input = Input { text: "hello".into() };
/// let text = stamp(input, order.clone()).await.unwrap();
/// assert_eq!(text, "hello (order 550e8400-e29b-41d4-a716-446655440000)");
/// assert_eq!(order.payload_json().unwrap()["ts"], 1_736_032_405);
/// # }
/// ```
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
    pub(crate) fn from_inner(inner: OrderInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// An order with these ids and nothing else, as a test would pass to a short. Its
    /// [`payload`](Order::payload) is the documented webhook body with empty `inputs`.
    pub fn new(order_id: impl Into<String>, short_id: impl Into<String>) -> Self {
        Self::builder(order_id, short_id).build()
    }

    /// Starts an order for a test, to give it a `ts`, a `job_token`, inputs or a raw payload.
    pub fn builder(order_id: impl Into<String>, short_id: impl Into<String>) -> OrderBuilder {
        OrderBuilder {
            id: order_id.into(),
            short_id: short_id.into(),
            ts: None,
            job_token: None,
            short: None,
            inputs: serde_json::Value::Object(serde_json::Map::new()),
            payload: None,
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

/// Builds an [`Order`] for a test: see [`Order::builder`]. Its `Debug` output never shows the
/// `job_token`.
#[derive(Clone)]
#[must_use]
pub struct OrderBuilder {
    id: String,
    short_id: String,
    ts: Option<i64>,
    job_token: Option<String>,
    short: Option<String>,
    inputs: serde_json::Value,
    payload: Option<Bytes>,
}

impl OrderBuilder {
    /// The `ts` field: when the order was placed, in Unix seconds.
    pub fn ts(mut self, ts: i64) -> Self {
        self.ts = Some(ts);
        self
    }

    /// The Amazon `job_token`.
    pub fn job_token(mut self, token: impl Into<String>) -> Self {
        self.job_token = Some(token.into());
        self
    }

    /// The name of the short serving the order, as [`Order::short_name`] returns it. Default: empty.
    pub fn short_name(mut self, name: impl Into<String>) -> Self {
        self.short = Some(name.into());
        self
    }

    /// The `inputs` of the generated payload. Ignored when [`payload`](OrderBuilder::payload) is set.
    pub fn inputs(mut self, inputs: serde_json::Value) -> Self {
        self.inputs = inputs;
        self
    }

    /// The webhook body exactly as [`Order::payload`] returns it, for a short that reads a custom
    /// payload template. Without it, the payload is the documented webhook body built from the
    /// order's fields.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// The order.
    pub fn build(self) -> Order {
        let payload = self.payload.unwrap_or_else(|| {
            let mut body = serde_json::Map::new();
            body.insert("short_id".into(), self.short_id.clone().into());
            body.insert("order_id".into(), self.id.clone().into());
            body.insert("inputs".into(), self.inputs);
            if let Some(ts) = self.ts {
                body.insert("ts".into(), ts.into());
            }
            if let Some(token) = &self.job_token {
                body.insert("job_token".into(), token.clone().into());
            }
            Bytes::from(serde_json::Value::Object(body).to_string())
        });
        Order::from_inner(OrderInner {
            id: self.id,
            short_id: Some(self.short_id),
            ts: self.ts,
            job_token: self.job_token,
            short: Arc::from(self.short.unwrap_or_default()),
            payload,
        })
    }
}

impl fmt::Debug for OrderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderBuilder")
            .field("id", &self.id)
            .field("short_id", &self.short_id)
            .field("ts", &self.ts)
            .field("job_token", &self.job_token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}
