//! The migrated template database every test database is copied from, so
//! a run migrates once instead of once per test.
//!
//! It is named by a hash of the migrations the binary embeds, so a template
//! of other migrations (a stale one, another branch's) is never used. It is
//! built under a temporary name and renamed once complete, under an advisory
//! lock, so concurrent test processes build it once and never copy half of
//! one. Nothing stays connected to it: Postgres refuses to copy a database
//! another session is connected to. It is left for the next run (see the
//! README's "Run the tests"); `dropdb` removes it. Only a build that failed
//! drops what it created.

use std::{sync::OnceLock, time::Duration};

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use crate::{config::pg_admin_url, pg};

/// Serialises the builds of every test process on this server.
const BUILD_LOCK: i64 = 0x7265_766f_6b64_0001;

/// The template's name, built on first use.
pub fn template() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        // May be called inside a test's runtime: a thread with its own.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(build())
        })
        .join()
        .expect("template database built")
    })
}

/// `revokd_template_` and 16 hex digits of the migrations' hash.
fn name() -> String {
    let mut hash = Sha256::new();
    for migration in revokd::MIGRATOR.iter() {
        hash.update(migration.version.to_le_bytes());
        hash.update(&migration.checksum);
    }
    format!("revokd_template_{}", &hex::encode(hash.finalize())[..16])
}

async fn build() -> String {
    let name = name();
    let mut admin = PgConnection::connect(&pg_admin_url())
        .await
        .expect("postgres");
    sqlx::query("select pg_advisory_lock($1)")
        .bind(BUILD_LOCK)
        .execute(&mut admin)
        .await
        .expect("build lock");
    if !exists(&mut admin, &name).await {
        let building = format!("{name}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let built = migrate_as(&mut admin, &building, &name).await;
        if built.is_err() {
            let drop = format!("drop database if exists \"{building}\" with (force)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await;
        }
        built.expect("build the template database");
    }
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(BUILD_LOCK)
        .execute(&mut admin)
        .await
        .expect("build lock");
    admin.close().await.expect("close");
    name
}

/// Creates and migrates `building`, then renames it `name` once its last
/// connection has gone.
async fn migrate_as(admin: &mut PgConnection, building: &str, name: &str) -> anyhow::Result<()> {
    let url = database_url(building);
    revokd::store::pg::prepare(&url).await?;
    let count = format!("select count(*) from pg_stat_activity where datname = '{building}'");
    let mut idle = false;
    for _ in 0..250 {
        let sessions: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
            .fetch_one(&mut *admin)
            .await?;
        if sessions == 0 {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(idle, "{building} keeps a connection");
    let rename = format!("alter database \"{building}\" rename to \"{name}\"");
    sqlx::query(sqlx::AssertSqlSafe(rename))
        .execute(&mut *admin)
        .await?;
    Ok(())
}

async fn exists(admin: &mut PgConnection, name: &str) -> bool {
    sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .expect("pg_database")
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    pg::database_url(&pg_admin_url(), name)
}

/// Creates database `name` as a copy of the template.
pub async fn create_from_template(name: &str) {
    let mut admin = PgConnection::connect(&pg_admin_url())
        .await
        .expect("postgres");
    let create = format!("create database \"{name}\" template \"{}\"", template());
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .expect("copy the template database");
    admin.close().await.expect("close");
}
