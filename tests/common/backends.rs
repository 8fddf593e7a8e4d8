//! The stacks the suite runs against. Catalog: SQLite always, PostgreSQL when
//! `TAMIZ_TEST_POSTGRES` names a server to make test databases in. Object store: the
//! data directory, or the S3 bucket `TAMIZ_TEST_S3_BUCKET` of the S3-compatible server
//! the AWS variables point at. `scripts/test.sh` starts both services; under CI a
//! missing service is a failure, never a skip.

use std::path::Path;

use tamiz::catalog::Catalog;
use tamiz::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The admin URL of the test PostgreSQL server, if there is one.
fn postgres_admin_url() -> Option<String> {
    match std::env::var("TAMIZ_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but TAMIZ_TEST_POSTGRES is not: run the tests with scripts/test.sh \
                 (`make test`), which starts PostgreSQL"
            );
            None
        }
    }
}

/// Every backend available to this run.
pub fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Sqlite];
    if postgres_admin_url().is_some() {
        b.push(Backend::Postgres);
    }
    b
}

/// Whether the server tests run on the scale-out stack, PostgreSQL + S3
/// (`TAMIZ_TEST_STACK=scaled`, the second pass of `scripts/test.sh`), or on the
/// embedded one.
pub fn scaled() -> bool {
    std::env::var("TAMIZ_TEST_STACK").as_deref() == Ok("scaled")
}

/// The catalog backend of the server tests.
pub fn server_backend() -> Backend {
    if scaled() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// Points `config` at a fresh stack of this run's kind: a new catalog (see
/// [`use_fresh_catalog`]) and, on the scaled stack, a new prefix in the test bucket.
pub async fn use_fresh_stack(config: &mut Config, secrets: &Path) {
    use_fresh_catalog(config, server_backend(), secrets).await;
    if scaled() {
        let bucket = std::env::var("TAMIZ_TEST_S3_BUCKET")
            .expect("TAMIZ_TEST_S3_BUCKET names the test bucket on the scaled stack");
        config.storage.s3_bucket = Some(bucket);
        config.storage.s3_prefix = format!("t{}", hex::encode(rand::random::<[u8; 4]>()));
    }
}

/// Points `config` at a new, empty catalog of `backend` (a fresh PostgreSQL database
/// per call; SQLite's file lives in the data directory) with its salt file in `dir`.
pub async fn use_fresh_catalog(config: &mut Config, backend: Backend, dir: &Path) {
    config.catalog.salt_file = Some(dir.join("pseudonym.salt"));
    config.auth.token_key_file = Some(dir.join("token.key"));
    match backend {
        Backend::Sqlite => config.catalog.url = None,
        Backend::Postgres => {
            let admin = postgres_admin_url().expect("TAMIZ_TEST_POSTGRES names the test server");
            let name = format!("tamiz_t_{}", hex::encode(rand::random::<[u8; 8]>()));
            let pool = sqlx::PgPool::connect(&admin)
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .expect("create a test database");
            pool.close().await;
            let (base, _) = admin.rsplit_once('/').expect("admin URL ends in /DATABASE");
            config.catalog.url = Some(format!("{base}/{name}"));
            std::fs::create_dir_all(dir).expect("salt dir");
            // With PostgreSQL the secrets must exist (every node is given them).
            for secret in ["pseudonym.salt", "token.key"] {
                std::fs::write(dir.join(secret), hex::encode(rand::random::<[u8; 32]>()))
                    .expect("write a secret file");
            }
        }
    }
}

/// A new, empty catalog of `backend`, configured like the test server's.
pub async fn fresh_catalog(backend: Backend, dir: &Path) -> Catalog {
    fresh_catalogs(backend, dir, 1).await.remove(0)
}

/// `n` catalogs over one new database, each with its own connection pool, as `n`
/// processes would have.
pub async fn fresh_catalogs(backend: Backend, dir: &Path, n: usize) -> Vec<Catalog> {
    let mut config = super::test_config(dir);
    use_fresh_catalog(&mut config, backend, dir).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let c = Catalog::open(&config).await.expect("open the catalog");
        c.sync_config(&config).await.expect("sync the config");
        out.push(c);
    }
    out
}
