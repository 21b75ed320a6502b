//! What the store's callers ask the writer, each with where to send its answer.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::store::error::Failure;
use crate::store::sql::Settled;
use crate::store::{
    CallbackAttempt, Claimed, FailedNow, NewOrder, OrderRecord, OrderState, Purged, RunEnd, Settle, Started,
    StoreError, StoreOperation,
};

/// One request to the writer, with where to send its answer.
pub(super) enum Op {
    Accept(Accepting),
    Claim {
        owner: String,
        lease: Duration,
        limit: u32,
        reply: Reply<Vec<Claimed>>,
    },
    Heartbeat {
        owner: String,
        lease: Duration,
        reply: Reply<u64>,
    },
    StartRun {
        id: String,
        fence: i64,
        reply: Reply<Option<Started>>,
    },
    SaveResult(Saving),
    Settle {
        id: String,
        fence: i64,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
        reply: Reply<bool>,
    },
    Release {
        owner: String,
        interrupted: Vec<String>,
        reply: Reply<u64>,
    },
    Get {
        id: String,
        reply: Reply<Option<OrderRecord>>,
    },
    List {
        state: Option<OrderState>,
        limit: u32,
        reply: Reply<Vec<OrderRecord>>,
    },
    Retry {
        id: String,
        reply: Reply<bool>,
    },
    Purge {
        before: i64,
        limit: u32,
        reply: Reply<Purged>,
    },
    PurgeDead {
        before: i64,
        reply: Reply<u64>,
    },
    ReleaseOrder {
        id: String,
        fence: i64,
        reply: Reply<()>,
    },
    FailNow {
        id: String,
        message: String,
        body: Bytes,
        reply: Reply<FailedNow>,
    },
}

/// A new order to commit, leased to `owner`.
pub(super) struct Accepting {
    pub(super) order: NewOrder,
    pub(super) owner: String,
    pub(super) lease: Duration,
    pub(super) reply: Reply<Option<Claimed>>,
}

/// A callback body to store under the lease `fence` proves.
pub(super) struct Saving {
    pub(super) id: String,
    pub(super) fence: i64,
    pub(super) body: Bytes,
    /// How the run that produced it ended, when it is a run's result.
    pub(super) run: Option<RunEnd>,
    pub(super) reply: Reply<bool>,
}

/// A delivery's outcome to record under the lease `fence` proves, as the new values of its order.
pub(super) struct Settling {
    pub(super) id: String,
    pub(super) fence: i64,
    pub(super) values: Settled,
    /// The callback POSTs made.
    pub(super) attempts: Vec<CallbackAttempt>,
    pub(super) reply: Reply<bool>,
}

impl Op {
    /// Answers the request with `failure`.
    pub(super) fn fail(self, failure: &Failure) {
        match self {
            Op::Accept(Accepting { reply, .. }) => reply.fail(failure),
            Op::Claim { reply, .. } => reply.fail(failure),
            Op::Heartbeat { reply, .. } => reply.fail(failure),
            Op::StartRun { reply, .. } => reply.fail(failure),
            Op::SaveResult(Saving { reply, .. }) => reply.fail(failure),
            Op::Settle { reply, .. } => reply.fail(failure),
            Op::Release { reply, .. } => reply.fail(failure),
            Op::Get { reply, .. } => reply.fail(failure),
            Op::List { reply, .. } => reply.fail(failure),
            Op::Retry { reply, .. } => reply.fail(failure),
            Op::Purge { reply, .. } => reply.fail(failure),
            Op::PurgeDead { reply, .. } => reply.fail(failure),
            Op::ReleaseOrder { reply, .. } => reply.fail(failure),
            Op::FailNow { reply, .. } => reply.fail(failure),
        }
    }
}

/// Where a request's answer goes, and what the request was (for its error).
pub(super) struct Reply<T> {
    operation: StoreOperation,
    sender: oneshot::Sender<Result<T, StoreError>>,
}

impl<T> Reply<T> {
    /// A reply to a request to `operation`, and where its answer arrives.
    pub(super) fn new(operation: StoreOperation) -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (sender, receiver) = oneshot::channel();
        (Reply { operation, sender }, receiver)
    }

    /// Sends the answer (the caller may have stopped waiting for it).
    pub(super) fn send(self, result: Result<T, Failure>) {
        let operation = self.operation;
        let _ = self
            .sender
            .send(result.map_err(|failure| failure.error(operation)));
    }

    /// Answers with `failure`.
    pub(super) fn fail(self, failure: &Failure) {
        self.send(Err(failure.clone()));
    }
}
