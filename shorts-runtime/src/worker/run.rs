//! Running the short on an order: waiting for a slot of its concurrency limit, committing the
//! start of the run, and running the handler under its timeout with panics caught.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, info, warn};
use url::Url;

use super::{Engine, Held, Lane, Start};
use crate::delivery::Rendered;
use crate::short::Call;
use crate::short::error::{Error, ErrorKind};
use crate::short::order::{Order, OrderInner};
use crate::short::output::Output;
use crate::store::{Claimed, RunEnd, RunOutcome, Store};
use crate::wire::webhook::Webhook;

/// Runs of the short on one order after which it is failed instead of run again: each run that
/// did not store a result ended with the process (a crash, a kill).
const MAX_RUNS: i32 = 3;

/// How long an instance keeps an order of a short it does not have before releasing it.
const UNKNOWN_SHORT_WAIT: Duration = Duration::from_secs(30);

impl Engine {
    /// Runs the short, renders its callback and stores it; `None` when the order is not this
    /// instance's any more, or the store failed (the order then runs again).
    pub(super) async fn run_and_store(
        &self,
        claimed: &Claimed,
        target: &Url,
        start: Option<Start>,
    ) -> Option<Rendered> {
        let (callback, run) = self.produce(claimed, target, start).await?;
        match self
            .store
            .save_result(&claimed.id, claimed.fence, callback.body().clone(), Some(run))
            .await
        {
            Ok(true) => Some(callback),
            Ok(false) => {
                warn!("another instance took this order over; dropping this result");
                None
            }
            Err(e) => {
                error!(error = %e, "could not store the result; the order will run again");
                self.alerts.store_failed(Some((&claimed.id, &claimed.short)), &e);
                None
            }
        }
    }

    /// Runs the short and renders its callback, with how the run ended; `None` when another
    /// instance took the order.
    async fn produce(
        &self,
        claimed: &Claimed,
        target: &Url,
        start: Option<Start>,
    ) -> Option<(Rendered, RunEnd)> {
        let (number, result) = self.run_short(claimed, start).await?;
        let outcome = RunOutcome::of(&result);
        let run = RunEnd {
            run: number,
            outcome,
            error: result.as_ref().err().map(|e| e.message().to_owned()),
        };
        if let Some(metrics) = self
            .lanes
            .get(claimed.short.as_str())
            .and_then(|l| l.metrics.as_ref())
        {
            metrics.finished(outcome);
        }
        match &result {
            Ok(output) => info!(output_type = output.output_type(), "order finished"),
            Err(e) => match e.chain() {
                causes if causes.is_empty() => warn!(kind = ?e.kind(), error = e.message(), "order failed"),
                causes => warn!(kind = ?e.kind(), error = e.message(), causes, "order failed"),
            },
        }
        Some((
            self.delivery
                .render(target, &claimed.id, &claimed.short, result)
                .await,
            run,
        ))
    }

    /// Runs the short once a slot of its concurrency limit is free, after committing the start of
    /// the run; `None` when another instance took the order. The webhook body, read from the store
    /// with the start unless the order arrived with it, is held against the bound of pending bytes
    /// until the short has finished. Returns the run's number with its result.
    async fn run_short(
        &self,
        claimed: &Claimed,
        start: Option<Start>,
    ) -> Option<(i32, Result<Output, Error>)> {
        let Some(lane) = self.lanes.get(claimed.short.as_str()) else {
            // During a rolling deploy another instance may serve it: leave it to them.
            warn!("this server has no short of that name; leaving the order to another instance");
            tokio::time::sleep(UNKNOWN_SHORT_WAIT).await;
            return None;
        };
        let mut slot = self.begin_run(lane, claimed, start).await?;
        if slot.run > MAX_RUNS {
            error!(
                runs = slot.run - 1,
                "the short ended the process on every run of this order"
            );
            return Some((
                slot.run,
                Err(Error::with_kind(
                    ErrorKind::Panic,
                    format!("the short stopped the server {MAX_RUNS} times while running this order"),
                )),
            ));
        }
        let call = match call(lane, slot.payload.clone(), slot.webhook.take()) {
            Ok(call) => call,
            Err(e) => return Some((slot.run, Err(e))),
        };
        if slot.run > 1 {
            info!(run = slot.run, "running the order again after an interrupted run");
        } else {
            info!("order accepted");
        }
        self.running_set().insert(claimed.id.clone());
        let running = lane.metrics.as_ref().map(|metrics| metrics.run());
        let result = run(lane, call).await;
        drop(running);
        self.running_set().remove(&claimed.id);
        Some((slot.run, result))
    }

    /// Takes a slot of the lane and commits the start of the run, unless the order was accepted
    /// with a slot and its run committed with it; `None` when another instance took the order or
    /// the store failed.
    async fn begin_run(&self, lane: &Lane, claimed: &Claimed, start: Option<Start>) -> Option<Slot> {
        if let Some(start) = start
            && claimed.started
        {
            return Some(Slot {
                _permit: Some(start.permit),
                _held: start.held,
                payload: start.payload,
                webhook: Some(start.webhook),
                run: 1,
            });
        }
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&lane.permits).acquire_owned().await.ok();
        let held = self.pending.hold(claimed.payload_len).await;
        match self.store.start_run(&claimed.id, claimed.fence).await {
            Ok(Some(started)) => Some(Slot {
                _permit: permit,
                _held: held,
                payload: started.payload,
                webhook: None,
                run: started.run,
            }),
            Ok(None) => {
                warn!("another instance took this order over");
                None
            }
            Err(e) => {
                error!(error = %e, "could not record the start of the run; the order will run later");
                self.alerts.store_failed(Some((&claimed.id, &claimed.short)), &e);
                None
            }
        }
    }
}

/// What a run of the short holds until it ends: a slot of its lane, and the webhook body counted
/// against the bound of pending bytes.
struct Slot {
    /// The lane's slot.
    _permit: Option<OwnedSemaphorePermit>,
    /// The body's share of the bound of pending bytes.
    _held: Held,
    /// The webhook body.
    payload: Bytes,
    /// The webhook read from the body at intake, when the order started as it arrived.
    webhook: Option<Webhook>,
    /// Which run of the order this is, from 1.
    run: i32,
}

/// The call of the lane's handler for the webhook body `payload`, read from it unless `parsed`
/// already is; an error when the stored body is unreadable.
fn call(lane: &Lane, payload: Bytes, parsed: Option<Webhook>) -> Result<Call, Error> {
    let webhook = match parsed {
        Some(webhook) => webhook,
        None => Webhook::parse(&payload).map_err(|e| {
            let message = format!("the stored order is unreadable: {}", e.message);
            Error::with_kind(ErrorKind::Input, message)
        })?,
    };
    Ok(Call {
        inputs: webhook.inputs,
        order: Order::from_inner(OrderInner {
            id: webhook.order_id,
            short_id: webhook.short_id,
            ts: webhook.ts,
            job_token: webhook.job_token,
            short: Arc::clone(&lane.short.name),
            payload,
        }),
    })
}

/// Runs the handler under the short's timeout, catching a panic. The handler runs on the order's
/// task, in the order's span: what the short logs carries the order's `order_id` and `short`.
async fn run(lane: &Lane, call: Call) -> Result<Output, Error> {
    let mut handler = AssertUnwindSafe((lane.short.handler)(call)).catch_unwind();
    let finished = tokio::time::timeout(lane.short.timeout, &mut handler).await;
    // A handler stopped by its timeout is dropped here; a panic in its drop is caught too.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(handler)));
    match finished {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
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
        Err(_elapsed) => Err(Error::with_kind(
            ErrorKind::Timeout,
            format!(
                "the short did not finish within its timeout of {}",
                crate::logs::duration(lane.short.timeout)
            ),
        )),
    }
}
