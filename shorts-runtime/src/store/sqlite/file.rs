//! Opening the database file: created readable by its owner only, migrated, in WAL mode.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection as _, SqliteConnection};
use tracing::warn;

use crate::store::{StoreError, StoreOperation};

/// Opens (creating it if needed) the database at `path` and migrates it.
pub(super) async fn connect(path: &Path) -> Result<SqliteConnection, StoreError> {
    create_private(path)?;
    let mut connection = SqliteConnection::connect_with(&options(path)?)
        .await
        .map_err(StoreError::database(StoreOperation::Open))?;
    crate::store::migrations::sqlite()
        .run(&mut connection)
        .await
        .map_err(StoreError::migrate)?;
    Ok(connection)
}

/// Creates the database file readable and writable by its owner only (`0600`), whatever the
/// umask, before SQLite opens it: SQLite creates the `-wal` and `-shm` files beside it with the
/// database file's own mode. An existing file is left as it is, with a warning when other users
/// can read it or the files beside it.
#[cfg(unix)]
pub(super) fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let failed = |source| StoreError::File {
        path: path.to_owned(),
        source,
    };
    match created {
        // The umask may have cleared bits of the mode asked for: set it whole.
        Ok(file) => file
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                let file = Path::new(&file);
                if let Some(mode) = readable_by_others(file) {
                    warn!(
                        file = %file.display(),
                        mode = format!("{mode:o}"),
                        "the order database can be read by other users; it holds buyers' orders: `chmod 600` it"
                    );
                }
            }
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

#[cfg(not(unix))]
pub(super) fn create_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// The permission bits of the file at `path` when its group or other users may read it.
#[cfg(unix)]
pub(super) fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

pub(super) fn options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite://")
        .map_err(StoreError::database(StoreOperation::Open))?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // `checkpointer` copies the WAL into the database beside the writer. A commit checkpoints
        // only if the WAL ever reaches 64 MiB all the same (the checkpointer failing or behind),
        // and the file is cut back to 64 MiB when the WAL starts over. Durability is the WAL's,
        // fsynced at every commit.
        .pragma("wal_autocheckpoint", "16384")
        .pragma("journal_size_limit", "67108864")
        .busy_timeout(Duration::from_secs(10)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store as _;
    use crate::store::sqlite::SqliteStore;
    use crate::store::suite::order;

    #[cfg(unix)]
    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    /// The database, its WAL and its shared-memory file are the owner's only, however the process
    /// umask would have them (the command-line tests run the binary under umasks 000 and 022).
    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_the_files_beside_it_are_private() {
        let dir = std::env::temp_dir().join(format!("shorts-mode-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("orders.db");
        let store = SqliteStore::open(&path).await.expect("open");
        store
            .accept(order("o"), "one", Duration::from_secs(60))
            .await
            .expect("accept");
        for name in ["orders.db", "orders.db-wal", "orders.db-shm"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        assert_eq!(readable_by_others(&path), None);
        // A file someone made readable is reported, and left as it is.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(readable_by_others(&path), Some(0o640));
        create_private(&path).expect("existing file");
        assert_eq!(mode(&path), 0o640);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
