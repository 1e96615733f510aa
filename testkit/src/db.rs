//! A Postgres database of the test's own, copied from the migrated template
//! and dropped with the value.

use revokd::store::pg::Db;

use crate::{config::pg_admin_url, pg, template};

/// A database of this test's own, dropped when the value is dropped.
pub struct TestDb {
    /// `revokd_test_<uuid>`.
    pub name: String,
    /// Its URL on the test server.
    pub url: String,
    /// A lazy pool on it.
    pub db: Db,
}

impl TestDb {
    /// A copy of the migrated template database.
    pub async fn create() -> Self {
        let name = format!("revokd_test_{}", uuid::Uuid::new_v4().simple());
        template::create_from_template(&name).await;
        let url = template::database_url(&name);
        let db = Db::connect_lazy(&url).expect("pool");
        Self { name, url, db }
    }

    /// A name and URL for a database that does not exist yet, for a test
    /// of the service creating and migrating it; dropped with the value
    /// (if it was created).
    pub fn unborn() -> Self {
        let name = format!("revokd_test_{}", uuid::Uuid::new_v4().simple());
        let url = template::database_url(&name);
        let db = Db::connect_lazy(&url).expect("pool");
        Self { name, url, db }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = pg_admin_url();
        // Drop may run inside the test's runtime: use a thread with its own.
        // `with (force)` ends the test pool's connections.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let _ = pg::drop_database(&admin, &name).await;
            });
        })
        .join();
    }
}
