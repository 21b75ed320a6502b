//! What the store's callers ask the writer, each with where to send its answer.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::writer::shared;
use crate::store::{Claimed, NewOrder, OrderRecord, OrderState, Settle, Started, StoreError};

/// One request to the writer, with where to send its answer.
pub(super) enum Op {
    Accept(
        NewOrder,
        String,
        Duration,
        oneshot::Sender<Result<Option<Claimed>, StoreError>>,
    ),
    Claim(
        String,
        Duration,
        u32,
        oneshot::Sender<Result<Vec<Claimed>, StoreError>>,
    ),
    Heartbeat(String, Duration, oneshot::Sender<Result<u64, StoreError>>),
    StartRun(String, i64, oneshot::Sender<Result<Option<Started>, StoreError>>),
    SaveResult(String, i64, Bytes, oneshot::Sender<Result<bool, StoreError>>),
    Settle(
        String,
        i64,
        Settle,
        i32,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    Release(String, Vec<String>, oneshot::Sender<Result<u64, StoreError>>),
    Get(String, oneshot::Sender<Result<Option<OrderRecord>, StoreError>>),
    List(
        Option<OrderState>,
        u32,
        oneshot::Sender<Result<Vec<OrderRecord>, StoreError>>,
    ),
    Retry(String, oneshot::Sender<Result<bool, StoreError>>),
    Purge(i64, oneshot::Sender<Result<u64, StoreError>>),
    PurgeDead(i64, oneshot::Sender<Result<u64, StoreError>>),
    ReleaseOrder(String, i64, oneshot::Sender<Result<(), StoreError>>),
}

impl Op {
    /// Answers the request with `error`.
    pub(super) fn fail(self, error: &sqlx::Error) {
        match self {
            Op::Accept(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::Claim(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::Heartbeat(.., reply)
            | Op::Release(.., reply)
            | Op::Purge(.., reply)
            | Op::PurgeDead(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::StartRun(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::SaveResult(.., reply) | Op::Settle(.., reply) | Op::Retry(.., reply) => {
                drop(reply.send(Err(shared(error))))
            }
            Op::Get(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::List(.., reply) => drop(reply.send(Err(shared(error)))),
            Op::ReleaseOrder(.., reply) => drop(reply.send(Err(shared(error)))),
        }
    }
}
