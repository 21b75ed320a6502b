//! What the store's callers ask the writer, each with where to send its answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::writer::{may_end_transaction, shared};
use crate::store::sql::Settled;
use crate::store::{Claimed, NewOrder, OrderRecord, OrderState, Settle, Started, StoreError};

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
        posts: i32,
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
        reply: Reply<u64>,
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
    pub(super) reply: Reply<bool>,
}

/// A delivery's outcome to record under the lease `fence` proves, as the new values of its order.
pub(super) struct Settling {
    pub(super) id: String,
    pub(super) fence: i64,
    pub(super) values: Settled,
    pub(super) reply: Reply<bool>,
}

impl Op {
    /// Answers the request with `failure`.
    pub(super) fn fail(self, failure: &Failure) {
        match self {
            Op::Accept(Accepting { reply, .. }) => reply.fail(failure),
            Op::Claim { reply, .. } => reply.fail(failure),
            Op::StartRun { reply, .. } => reply.fail(failure),
            Op::Get { reply, .. } => reply.fail(failure),
            Op::List { reply, .. } => reply.fail(failure),
            Op::ReleaseOrder { reply, .. } => reply.fail(failure),
            Op::SaveResult(Saving { reply, .. }) | Op::Settle { reply, .. } | Op::Retry { reply, .. } => {
                reply.fail(failure)
            }
            Op::Heartbeat { reply, .. }
            | Op::Release { reply, .. }
            | Op::Purge { reply, .. }
            | Op::PurgeDead { reply, .. } => reply.fail(failure),
        }
    }
}

/// Where a request's answer goes.
pub(super) struct Reply<T>(oneshot::Sender<Result<T, StoreError>>);

impl<T> Reply<T> {
    /// A reply, and where its answer arrives.
    pub(super) fn new() -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (sender, receiver) = oneshot::channel();
        (Reply(sender), receiver)
    }

    /// Sends the answer (the caller may have stopped waiting for it).
    pub(super) fn send(self, result: Result<T, Failure>) {
        let _ = self.0.send(result.map_err(|failure| failure.error()));
    }

    /// Answers with `failure`.
    pub(super) fn fail(self, failure: &Failure) {
        self.send(Err(failure.clone()));
    }
}

/// Why a request failed: shared by every request of a statement, or of a group.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// A statement failed: the request's own, or a batch statement that wrote it with others, or
    /// the group's `BEGIN`.
    Statement(Arc<sqlx::Error>),
    /// The group's transaction could not be committed: nothing of it is stored.
    Commit(Arc<sqlx::Error>),
    /// An earlier request's error may have ended the group's transaction: everything was rolled
    /// back.
    Ended,
}

impl Failure {
    /// Whether the transaction the failure happened in may have ended with it.
    pub(super) fn ends_transaction(&self) -> bool {
        match self {
            Failure::Statement(e) => may_end_transaction(e),
            Failure::Commit(_) | Failure::Ended => true,
        }
    }

    /// The error a request's caller gets.
    fn error(&self) -> StoreError {
        match self {
            Failure::Statement(e) | Failure::Commit(e) => shared(e),
            Failure::Ended => shared(&"an earlier request's error ended the group's transaction"),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Statement(Arc::new(error))
    }
}
