//! Database setup at start: create the database if missing, then migrate.

use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};

use super::{hosts, target};

/// Creates the database named in `url` if it does not exist, then applies
/// the migrations. Safe to run from many processes at once. With several
/// hosts, on the first that qualifies (the primary).
pub async fn prepare(url: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let parsed =
        hosts::parse(url).map_err(|e| crate::config::redact::url_error("DATABASE_URL", url, e))?;
    let options = match parsed {
        hosts::Parsed::Single(options) => *options,
        // Probed on the maintenance database: ours may not exist yet.
        hosts::Parsed::Several(hosts, attrs) => {
            target::first_qualifying(&hosts, attrs, Some("postgres"))
                .await?
                .options
                .clone()
        }
    };
    let name = options.get_database().unwrap_or("postgres").to_owned();
    if PgConnection::connect_with(&options).await.is_err() {
        let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
            .await
            .context("cannot reach Postgres")?;
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await?;
        if !exists {
            let create = format!("create database \"{}\"", name.replace('"', "\"\""));
            match sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
            {
                Ok(_) => tracing::info!(database = %name, "created database"),
                // Another process created it between our check and our
                // create (42P04), or while ours ran (23505 on pg_database).
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
                Err(e) => return Err(e).context("cannot create database"),
            }
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("cannot connect to the database")?;
    crate::MIGRATOR
        .run(&pool)
        .await
        .context("migrations failed")?;
    pool.close().await;
    Ok(())
}
