//! A fresh PostgreSQL database per test. The server is `TRANSBORDO_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, trust auth); each test
//! creates `transbordo_test_<uuid>` on it and drops it (FORCE) when done. Without a
//! reachable server the test is skipped with a message on stderr, unless
//! `TRANSBORDO_REQUIRE_PG=1` (CI), where it fails.
#![allow(dead_code)]

use std::time::Duration;

use sqlx::Connection;

/// The server tests use unless told otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of one test; dropped with it.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    admin: String,
    name: String,
}

fn admin_url() -> String {
    std::env::var("TRANSBORDO_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

fn with_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (server, _) = base.rsplit_once('/').expect("a postgres:// URL");
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// Creates a fresh database, or `None` (skipped, with a message) when no server answers
/// and `TRANSBORDO_REQUIRE_PG` is not `1`.
pub async fn test_db() -> Option<TestDb> {
    let admin = admin_url();
    let conn =
        tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&admin)).await;
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            if std::env::var("TRANSBORDO_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("TRANSBORDO_REQUIRE_PG=1 but PostgreSQL at {admin} is unreachable: {why}");
            }
            eprintln!(
                "SKIPPED: no PostgreSQL at {admin} ({why}); set TRANSBORDO_TEST_DATABASE_URL \
                 to a server where this user may create databases"
            );
            return None;
        }
    };
    let name = format!("transbordo_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let _ = conn.close().await;
    Some(TestDb {
        url: with_db(&admin, &name),
        admin,
        name,
    })
}

impl TestDb {
    /// The server's admin URL and this database's name (to act on it from outside).
    pub fn admin_and_name(&self) -> (String, String) {
        (self.admin.clone(), self.name.clone())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}
