//! The stores' schema migrations: the SQL files under `migrations/`, embedded in the binary.
//!
//! They are listed here rather than gathered by `sqlx::migrate!`, whose procedural macro brings
//! a second build of the SQLite and PostgreSQL drivers (and of SQLite's C code) for the compiler
//! into every build of a seller's crate. The list holds exactly what `sqlx::migrate!` would: each
//! file's version and description from its name, and the checksum of its text, so a database
//! migrated by either accepts the other. A test reads the folders and fails when a file is
//! missing from the list or differs from it.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The migrations of a folder under `migrations/`, each named `<version>_<name>.sql`. Both
/// stores have the same list.
macro_rules! migrations {
    ($folder:literal) => {
        migrations!($folder:
            20261127000001 "orders",
            20261202000001 "attempts",
            20261202000002 "job_token",
            20261203000001 "history",
            20261204000001 "uncompressed_bodies",
            20261205000001 "due_index",
        )
    };
    ($folder:literal: $($version:literal $name:literal),+ $(,)?) => {
        Migrator::with_migrations(vec![$(
            migration(
                $version,
                $name,
                include_str!(concat!(
                    "../../migrations/", $folder, "/", stringify!($version), "_", $name, ".sql"
                )),
            )
        ),+])
    };
}

/// The migrations of the SQLite store.
pub(crate) fn sqlite() -> Migrator {
    migrations!("sqlite")
}

/// The migrations of the PostgreSQL store.
#[cfg(feature = "postgres")]
pub(crate) fn postgres() -> Migrator {
    migrations!("postgres")
}

/// One migration, described as `sqlx` describes a file: the name with `_` read as a space.
fn migration(version: i64, name: &str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        Cow::Owned(name.replace('_', " ")),
        MigrationType::Simple,
        SqlStr::from_static(sql),
        false,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// What a migration is recorded by in the database: version, description, kind, checksum,
    /// and whether it runs in a transaction.
    fn recorded(migrator: &Migrator) -> Vec<(i64, String, MigrationType, Vec<u8>, bool)> {
        migrator
            .iter()
            .map(|m| {
                let description = m.description.to_string();
                (
                    m.version,
                    description,
                    m.migration_type,
                    m.checksum.to_vec(),
                    m.no_tx,
                )
            })
            .collect()
    }

    /// The embedded list is what `sqlx` reads from each folder, file for file.
    #[tokio::test]
    async fn the_embedded_migrations_are_the_folders_files() {
        same_as_folder("sqlite", &sqlite()).await;
        #[cfg(feature = "postgres")]
        same_as_folder("postgres", &postgres()).await;
    }

    async fn same_as_folder(folder: &str, embedded: &Migrator) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let read = Migrator::new(root.join(folder))
            .await
            .unwrap_or_else(|e| panic!("migrations/{folder}: {e}"));
        assert!(read.iter().count() >= 4, "migrations/{folder}");
        assert_eq!(recorded(embedded), recorded(&read), "migrations/{folder}");
    }
}
