//! What a store reports when it cannot do what was asked.

use std::sync::Arc;

/// What the store was asked to do: named by [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOperation {
    /// Open the database (or its pool) when the store is opened.
    Open,
    /// Commit a new order.
    Accept,
    /// Lease orders that need work.
    Claim,
    /// Renew this instance's leases.
    Heartbeat,
    /// Record the start of a run.
    StartRun,
    /// Store an order's callback body.
    SaveResult,
    /// Record a delivery's outcome.
    Settle,
    /// Release this instance's leases.
    Release,
    /// Release one order's lease.
    ReleaseOrder,
    /// Read an order.
    Get,
    /// List orders.
    List,
    /// Put a dead or paused order back to delivery.
    Retry,
    /// Delete old delivered orders.
    Purge,
    /// Delete the webhook bodies of old dead orders.
    PurgeDead,
    /// Read the orders' statistics or history.
    Report,
    /// Fail an order by hand.
    FailNow,
}

impl std::fmt::Display for StoreOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreOperation::Open => "open its database",
            StoreOperation::Accept => "store a new order",
            StoreOperation::Claim => "claim orders",
            StoreOperation::Heartbeat => "renew leases",
            StoreOperation::StartRun => "record the start of a run",
            StoreOperation::SaveResult => "store an order's result",
            StoreOperation::Settle => "record a delivery",
            StoreOperation::Release => "release this instance's orders",
            StoreOperation::ReleaseOrder => "release an order's lease",
            StoreOperation::Get => "read an order",
            StoreOperation::List => "list orders",
            StoreOperation::Retry => "retry an order",
            StoreOperation::Purge => "delete old delivered orders",
            StoreOperation::PurgeDead => "delete the webhook bodies of old dead orders",
            StoreOperation::Report => "read the orders' statistics or history",
            StoreOperation::FailNow => "fail an order",
        })
    }
}

/// A store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A database statement failed. (The error is shared: SQLite writes concurrent requests with
    /// one statement, and its failure is each of theirs.)
    #[error("the order store could not {operation}: {source}")]
    Database {
        /// What the store was doing.
        operation: StoreOperation,
        /// What the database reported.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// The transaction holding the request could not be committed: nothing of it was stored.
    #[error("the order store could not commit the transaction to {operation}: {source}")]
    Commit {
        /// What the store was doing.
        operation: StoreOperation,
        /// What the database reported.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// Another write in the same transaction (SQLite commits concurrent requests together) failed
    /// in a way that may have ended the transaction: it was rolled back whole, and this request's
    /// writes with it.
    #[error(
        "the order store could not {operation}: another write in the same transaction failed, and the transaction was rolled back"
    )]
    RolledBack {
        /// What the store was doing.
        operation: StoreOperation,
    },
    /// The schema could not be brought up to date.
    #[error("the order store's schema could not be migrated: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database server could not be reached when the store was opened.
    #[error("could not connect to the order store at {host}:{port}: {source}")]
    Connect {
        /// The host in the store's URL.
        host: String,
        /// The port in the store's URL.
        port: u16,
        /// What connecting met.
        #[source]
        source: sqlx::Error,
    },
    /// The store's writer has stopped (the process is shutting down): nothing more is written.
    #[error("the order store's writer has stopped")]
    WriterStopped,
    /// The database file could not be created.
    #[error("could not create the order database {}: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
}

impl StoreError {
    /// What the store was doing when a database error met it, if it was one.
    pub fn operation(&self) -> Option<StoreOperation> {
        match self {
            StoreError::Database { operation, .. }
            | StoreError::Commit { operation, .. }
            | StoreError::RolledBack { operation } => Some(*operation),
            _ => None,
        }
    }

    /// A failed statement's error, naming `operation`.
    pub(crate) fn database(operation: StoreOperation) -> impl Fn(sqlx::Error) -> StoreError + Copy {
        move |source| StoreError::Database {
            operation,
            source: Arc::new(source),
        }
    }
}

/// Why a request failed, before it is named with its operation (see [`Failure::error`]): the same
/// failure may be each of several requests'.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// A statement failed.
    Statement(Arc<sqlx::Error>),
    /// The transaction could not be committed.
    Commit(Arc<sqlx::Error>),
    /// Another request's error may have ended the transaction, which was rolled back.
    RolledBack,
}

impl Failure {
    /// The error of a request to `operation` that met this failure.
    pub(crate) fn error(&self, operation: StoreOperation) -> StoreError {
        match self {
            Failure::Statement(source) => StoreError::Database {
                operation,
                source: Arc::clone(source),
            },
            Failure::Commit(source) => StoreError::Commit {
                operation,
                source: Arc::clone(source),
            },
            Failure::RolledBack => StoreError::RolledBack { operation },
        }
    }
}

impl Failure {
    /// A failed commit.
    pub(crate) fn commit(error: sqlx::Error) -> Self {
        Failure::Commit(Arc::new(error))
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Statement(Arc::new(error))
    }
}

/// Runs `work`, naming `operation` in its error.
pub(crate) async fn doing<T>(
    operation: StoreOperation,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, StoreError> {
    work.await.map_err(|failure| failure.error(operation))
}
