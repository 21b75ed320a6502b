//! Delivering an order's callback and recording how the attempt ended: delivered, dead, or
//! due again at a time the retry policy sets.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};
use url::Url;

use super::Engine;
use crate::admin::metrics::Attempt;
use crate::delivery::{Delivered, Rendered};
use crate::store::{AttemptResult, CallbackAttempt, Claimed, Settle, Store, ms, now_ms};

impl Engine {
    /// Delivers the callback and records the outcome; retries are left to the poller. A callback
    /// the platform refuses as too large is replaced (stored first) and sent again at once.
    /// Returns whether the outcome was recorded (which also released the lease).
    pub(super) async fn deliver(
        self: &Arc<Self>,
        claimed: &Claimed,
        target: &Url,
        mut callback: Rendered,
    ) -> bool {
        // Attempts made here; with those made before, the order's attempts.
        let mut posts = 0;
        let mut attempts = Vec::new();
        let settle = loop {
            let at = now_ms();
            let delivered = self
                .delivery
                .deliver(
                    target,
                    &claimed.id,
                    &claimed.short,
                    callback,
                    usize::try_from(claimed.steps).unwrap_or(0),
                )
                .await;
            posts += 1;
            if let Some(metrics) = &self.metrics {
                metrics.callback_attempt(attempt(&delivered));
            }
            let number = claimed.attempts + posts;
            let (status, error) = attempted(&delivered);
            let settled = settlement(delivered, claimed.steps, number);
            attempts.push(CallbackAttempt {
                number,
                at,
                status,
                error,
                result: match &settled {
                    Ok(settle) => attempt_result(settle),
                    Err(_) => AttemptResult::Replaced,
                },
            });
            let replacement = match settled {
                Ok(settle) => break settle,
                Err(replacement) => replacement,
            };
            match self
                .store
                .save_result(&claimed.id, claimed.fence, replacement.body().clone(), None)
                .await
            {
                Ok(true) => callback = replacement,
                Ok(false) => return true,
                Err(e) => {
                    error!(error = %e, "could not store the replacement result");
                    self.alerts.store_failed(Some((&claimed.id, &claimed.short)), &e);
                    return false;
                }
            }
        };
        if settle == Settle::Delivered
            && let Some(metrics) = self
                .lanes
                .get(claimed.short.as_str())
                .and_then(|lane| lane.metrics.as_ref())
        {
            metrics.delivered(claimed.received_at);
        }
        self.record(claimed, settle, attempts).await
    }

    /// Records how a delivery ended, and wakes the poller when its retry is due before the next
    /// poll. Returns whether it was recorded (which also released the lease).
    async fn record(
        self: &Arc<Self>,
        claimed: &Claimed,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
    ) -> bool {
        let retry_at = match &settle {
            Settle::Retry { at, .. } | Settle::Paused { at } => Some(*at),
            Settle::Delivered | Settle::Dead(_) => None,
        };
        let dead = match &settle {
            Settle::Dead(reason) => Some(reason.clone()),
            _ => None,
        };
        let paused = matches!(settle, Settle::Paused { .. });
        match self
            .store
            .settle(&claimed.id, claimed.fence, settle, attempts)
            .await
        {
            Ok(true) => {
                // Released: the poller can take it when it is due.
                if let Some(at) = retry_at {
                    let wait = u64::try_from(at - now_ms()).unwrap_or(0);
                    self.wake_after(Duration::from_millis(wait));
                }
                if let Some(reason) = dead {
                    self.alerts.dead(&claimed.id, &claimed.short, &reason);
                } else if paused {
                    self.alerts.paused(&claimed.id, &claimed.short);
                }
                true
            }
            Ok(false) => {
                warn!("another instance took this order over");
                true
            }
            Err(e) => {
                error!(error = %e, "could not record the delivery; it will be attempted again");
                self.alerts.store_failed(Some((&claimed.id, &claimed.short)), &e);
                false
            }
        }
    }
}

/// How a callback POST ended, as the metrics count it.
fn attempt(delivered: &Delivered) -> Attempt {
    match delivered {
        Delivered::Accepted { .. } => Attempt::Accepted,
        // Sent again at once with the files uploaded.
        Delivered::Retry { .. } | Delivered::Replaced(_) => Attempt::Retry,
        Delivered::Refused { .. } | Delivered::TooLarge | Delivered::Exhausted { .. } => Attempt::Dead,
        Delivered::Unauthorized { .. } => Attempt::Paused,
    }
}

/// The HTTP status a POST got (`None` for a transport error, or when the answer's status is not
/// known), and the error it met.
fn attempted(delivered: &Delivered) -> (Option<u16>, Option<String>) {
    match delivered {
        Delivered::Accepted { status } => (Some(*status), None),
        Delivered::Refused { status, detail } => (Some(*status), Some(detail.clone())),
        Delivered::TooLarge | Delivered::Replaced(_) => (Some(413), None),
        Delivered::Retry { status, reason, .. } | Delivered::Exhausted { status, reason } => {
            (*status, Some(reason.clone()))
        }
        Delivered::Unauthorized { .. } => (Some(401), None),
    }
}

/// What followed an attempt that ended the delivery with `settle`.
fn attempt_result(settle: &Settle) -> AttemptResult {
    match settle {
        Settle::Delivered => AttemptResult::Accepted,
        Settle::Dead(_) => AttemptResult::Dead,
        Settle::Retry { .. } => AttemptResult::Retry,
        Settle::Paused { .. } => AttemptResult::Paused,
    }
}

/// What the store records of a delivery attempt, or the callback that replaces the one the
/// platform refused as too large. `steps` is how many steps of the retry schedule the order had
/// used, `attempts` how many attempts it has had, this one included.
fn settlement(delivered: Delivered, steps: i32, attempts: i32) -> Result<Settle, Rendered> {
    let settle = match delivered {
        Delivered::Replaced(replacement) => return Err(replacement),
        Delivered::Accepted { .. } => {
            info!(attempts, "callback accepted");
            Settle::Delivered
        }
        Delivered::Refused { status, detail } => {
            error!(
                status,
                detail, attempts, "the platform refused the callback; the order is dead-lettered"
            );
            Settle::Dead(format!("the platform refused the callback ({status}): {detail}"))
        }
        Delivered::TooLarge => {
            Settle::Dead("the platform refused the callback as too large (413)".to_owned())
        }
        Delivered::Retry { wait, reason, .. } => {
            warn!(attempts, %reason, retry_in = %crate::logs::duration(wait), "callback failed; will retry");
            Settle::Retry {
                at: now_ms() + ms(wait),
                steps: steps + 1,
                error: reason,
            }
        }
        Delivered::Exhausted { reason, .. } => {
            error!(attempts, %reason, "callback retries exhausted; the order is dead-lettered");
            Settle::Dead(format!("gave up after {attempts} attempts: {reason}"))
        }
        Delivered::Unauthorized { wait } => {
            error!(
                attempts,
                retry_in = %crate::logs::duration(wait),
                "the platform refused the callback secret (401); check SHORTS_CALLBACK_SECRET"
            );
            Settle::Paused {
                at: now_ms() + ms(wait),
            }
        }
    };
    Ok(settle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(delivered: Delivered) -> Settle {
        settlement(delivered, 2, 4).unwrap_or_else(|_| panic!("a replacement does not settle"))
    }

    #[test]
    fn a_retry_uses_one_more_step_and_is_due_after_its_wait() {
        let before = now_ms();
        let settle = settled(Delivered::Retry {
            status: Some(503),
            wait: Duration::from_secs(5),
            reason: "the platform answered 503".to_owned(),
        });
        let Settle::Retry { at, steps, error } = settle else {
            panic!("{settle:?}");
        };
        assert_eq!(steps, 3);
        assert_eq!(error, "the platform answered 503");
        assert!((before + 5000..=now_ms() + 5000).contains(&at), "{at}");
    }

    #[test]
    fn endings_are_recorded_with_their_reason() {
        assert_eq!(settled(Delivered::Accepted { status: 200 }), Settle::Delivered);
        assert_eq!(
            settled(Delivered::Refused {
                status: 400,
                detail: "bad".to_owned()
            }),
            Settle::Dead("the platform refused the callback (400): bad".to_owned())
        );
        assert_eq!(
            settled(Delivered::Exhausted {
                status: Some(503),
                reason: "the platform answered 503".to_owned()
            }),
            Settle::Dead("gave up after 4 attempts: the platform answered 503".to_owned())
        );
        assert_eq!(
            settled(Delivered::TooLarge),
            Settle::Dead("the platform refused the callback as too large (413)".to_owned())
        );
        assert!(matches!(
            settled(Delivered::Unauthorized {
                wait: Duration::from_secs(600)
            }),
            Settle::Paused { at } if at >= now_ms() + 599_000
        ));
    }

    #[test]
    fn each_attempt_keeps_its_status_or_transport_error() {
        assert_eq!(attempted(&Delivered::Accepted { status: 202 }), (Some(202), None));
        assert_eq!(
            attempted(&Delivered::Refused {
                status: 400,
                detail: "unknown order".to_owned()
            }),
            (Some(400), Some("unknown order".to_owned()))
        );
        assert_eq!(
            attempted(&Delivered::Retry {
                wait: Duration::from_secs(5),
                reason: "connection refused".to_owned(),
                status: None,
            }),
            (None, Some("connection refused".to_owned()))
        );
        assert_eq!(
            attempted(&Delivered::Unauthorized {
                wait: Duration::from_secs(600)
            }),
            (Some(401), None)
        );
        assert_eq!(attempted(&Delivered::TooLarge), (Some(413), None));
        assert_eq!(attempt_result(&Settle::Delivered), AttemptResult::Accepted);
        assert_eq!(attempt_result(&Settle::Paused { at: 0 }), AttemptResult::Paused);
    }

    #[test]
    fn a_replacement_is_sent_before_anything_is_recorded() {
        let replacement = Rendered::read_back(bytes::Bytes::from_static(b"{}"));
        let settled = settlement(Delivered::Replaced(replacement), 0, 1);
        assert!(settled.is_err_and(|callback| callback.body().as_ref() == b"{}"));
    }
}
