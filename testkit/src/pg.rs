//! Database URLs and dropping a database, for tests and benchmarks alike.

use anyhow::Context;
use sqlx::{Connection, PgConnection};

/// `server` (a server URL or any database URL on it) with its database
/// replaced by `name`, query kept.
pub fn database_url(server: &str, name: &str) -> String {
    let (head, query) = match server.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (server, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let base = match head[authority..].find('/') {
        Some(slash) => &head[..authority + slash],
        None => head,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Drops database `name` through a connection to `admin` (a database URL),
/// ending any connection still on it.
pub async fn drop_database(admin: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin)
        .await
        .context("connect to Postgres")?;
    let sql = format!(
        "drop database if exists \"{}\" with (force)",
        name.replace('"', "\"\"")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .context("drop database")?;
    admin.close().await.context("close admin connection")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        let url = |server| database_url(server, "x");
        assert_eq!(url("postgres://h:5432/postgres"), "postgres://h:5432/x");
        assert_eq!(url("postgres://h:5432"), "postgres://h:5432/x");
        assert_eq!(
            url("postgres://h/db?sslmode=off"),
            "postgres://h/x?sslmode=off"
        );
    }
}
