//! What a store reports when it cannot do what was asked.

use std::error::Error;
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
///
/// The database's own error is the `source` of a variant, and what [`Error::source`] returns: its
/// type is not part of this crate's API (the database client is a detail of the store).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A database statement failed. (The error is shared: SQLite writes concurrent requests with
    /// one statement, and its failure is each of theirs.)
    Database {
        /// What the store was doing.
        operation: StoreOperation,
        /// What the database reported.
        source: Arc<dyn Error + Send + Sync>,
    },
    /// The transaction holding the request could not be committed: nothing of it was stored.
    Commit {
        /// What the store was doing.
        operation: StoreOperation,
        /// What the database reported.
        source: Arc<dyn Error + Send + Sync>,
    },
    /// Another write in the same transaction (SQLite commits concurrent requests together) failed
    /// in a way that may have ended the transaction: it was rolled back whole, and this request's
    /// writes with it.
    RolledBack {
        /// What the store was doing.
        operation: StoreOperation,
    },
    /// The schema could not be brought up to date.
    Migrate {
        /// What migrating met.
        source: Box<dyn Error + Send + Sync>,
    },
    /// The database server could not be reached when the store was opened.
    Connect {
        /// The host in the store's URL.
        host: String,
        /// The port in the store's URL.
        port: u16,
        /// What connecting met.
        source: Box<dyn Error + Send + Sync>,
    },
    /// The store's writer has stopped (the process is shutting down): nothing more is written.
    WriterStopped,
    /// A PostgreSQL store was asked of a build without the crate's `postgres` feature.
    PostgresNotBuilt,
    /// A callback body could not be written to its file beside the database (see the SQLite
    /// store's spool): nothing of the result was stored.
    Spool {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The database file could not be created.
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Database { operation, source } => {
                write!(f, "the order store could not {operation}: {source}")
            }
            StoreError::Commit { operation, source } => {
                write!(
                    f,
                    "the order store could not commit the transaction to {operation}: {source}"
                )
            }
            StoreError::RolledBack { operation } => write!(
                f,
                "the order store could not {operation}: another write in the same transaction failed, and the transaction was rolled back"
            ),
            StoreError::Migrate { source } => {
                write!(f, "the order store's schema could not be migrated: {source}")
            }
            StoreError::Connect { host, port, source } => {
                write!(
                    f,
                    "could not connect to the order store at {host}:{port}: {source}"
                )
            }
            StoreError::WriterStopped => f.write_str("the order store's writer has stopped"),
            StoreError::PostgresNotBuilt => f.write_str(crate::config::POSTGRES_NOT_BUILT),
            StoreError::File { path, source } => {
                write!(
                    f,
                    "could not create the order database {}: {source}",
                    path.display()
                )
            }
            StoreError::Spool { path, source } => {
                write!(
                    f,
                    "the order store could not write a result to its file {}: {source}",
                    path.display()
                )
            }
        }
    }
}

/// The source is the database's own error, not the `Arc` or `Box` that holds it, so that it can
/// be downcast.
impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StoreError::Database { source, .. } | StoreError::Commit { source, .. } => Some(&**source),
            StoreError::Migrate { source } | StoreError::Connect { source, .. } => Some(&**source),
            StoreError::File { source, .. } | StoreError::Spool { source, .. } => Some(source),
            StoreError::RolledBack { .. } | StoreError::WriterStopped | StoreError::PostgresNotBuilt => None,
        }
    }
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

    /// A schema migration's error.
    pub(crate) fn migrate(source: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Migrate {
            source: Box::new(source),
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
                source: Arc::clone(source) as Arc<dyn Error + Send + Sync>,
            },
            Failure::Commit(source) => StoreError::Commit {
                operation,
                source: Arc::clone(source) as Arc<dyn Error + Send + Sync>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The database's error stays reachable as the source, and its message in the error's own,
    /// without its type being named by the variant.
    #[test]
    fn the_database_error_is_the_source() {
        let error = StoreError::database(StoreOperation::Accept)(sqlx::Error::PoolTimedOut);
        assert_eq!(
            error.to_string(),
            format!(
                "the order store could not store a new order: {}",
                sqlx::Error::PoolTimedOut
            )
        );
        let source = Error::source(&error).map(ToString::to_string);
        assert_eq!(source, Some(sqlx::Error::PoolTimedOut.to_string()));
        let downcast = Error::source(&error).and_then(|source| source.downcast_ref::<sqlx::Error>());
        assert!(
            matches!(downcast, Some(sqlx::Error::PoolTimedOut)),
            "{downcast:?}"
        );

        let failure = Failure::commit(sqlx::Error::WorkerCrashed);
        let commit = failure.error(StoreOperation::Get);
        assert!(
            commit
                .to_string()
                .starts_with("the order store could not commit the transaction to read an order: ")
        );
        assert!(Error::source(&commit).is_some());

        let migrate = StoreError::migrate(sqlx::migrate::MigrateError::VersionMissing(3));
        assert!(
            migrate
                .to_string()
                .starts_with("the order store's schema could not be migrated: ")
        );
        assert!(Error::source(&migrate).is_some());
    }
}
