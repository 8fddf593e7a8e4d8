//! What checking credentials costs a request: the keyed hash of an API token, the
//! lookup of its identity among 10,000 users with 20,000 tokens (on SQLite and, when
//! `TAMIZ_TEST_POSTGRES` names a server, PostgreSQL), the same through the whole HTTP
//! path (a 401 answered by the access layer vs. `/healthz`, which checks nothing),
//! and, for contrast, one Argon2id password check (what a sign-in costs, once per
//! session). Prints a table; asserts nothing about time.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::backends::{backends, fresh_catalog, Backend};
use tamiz::auth::TokenKey;
use tamiz::catalog::Role;

const USERS: usize = 10_000;
const OPS: usize = 2_000;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    println!("{USERS} users with 2 tokens each; {OPS} checks per row\n");
    println!("| what | backend | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let mut config = common::test_config(dir.path());
    config.auth.token_key_file = Some(dir.path().join("token.key"));
    let key = TokenKey::load(&config)?;
    let token = tamiz::auth::new_token();
    let mut hash = Vec::with_capacity(OPS);
    for _ in 0..OPS {
        let t = Instant::now();
        std::hint::black_box(key.hash(std::hint::black_box(&token)));
        hash.push(t.elapsed());
    }
    row("HMAC-SHA256 of a token", "-", hash);
    for backend in backends() {
        rt.block_on(lookups(backend))?;
    }
    rt.block_on(http_path())?;
    let phc = tamiz::auth::hash_password("correct horse battery staple")?;
    let mut argon = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        assert!(tamiz::auth::verify_password(
            Some(&phc),
            "correct horse battery staple"
        ));
        argon.push(t.elapsed());
    }
    row("Argon2id password check (sign-in)", "-", argon);
    Ok(())
}

async fn lookups(backend: Backend) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let catalog = fresh_catalog(backend, dir.path()).await;
    let mut config = common::test_config(dir.path());
    config.auth.token_key_file = Some(dir.path().join("bench.key"));
    let key = TokenKey::load(&config)?;
    let mut tokens = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let name = format!("user-{i}");
        let t =
            tamiz::auth::add_user(&catalog, &key, &config, &name, Role::Coordinator, None).await?;
        tamiz::auth::issue_token(&catalog, &key, &name).await?;
        tokens.push(t);
    }
    let mut times = Vec::with_capacity(OPS);
    for i in 0..OPS {
        let token = &tokens[(i * 7919) % USERS];
        let t = Instant::now();
        let id = catalog.identity_for_token(&key.hash(token)).await?;
        times.push(t.elapsed());
        anyhow::ensure!(id.is_some(), "a live token found nobody");
    }
    row("hash + identity lookup", &format!("{backend:?}"), times);
    Ok(())
}

/// GET over HTTP from this process to an in-process server: `/healthz` (no check) and
/// `/api/v1/summary` with an unknown token (the check runs, the handler does not).
async fn http_path() -> anyhow::Result<()> {
    let t = common::TestServer::start_with(|c| c.worker.concurrency = 0).await;
    let unknown = format!("Bearer tz_{}", "0".repeat(64));
    for (what, auth) in [
        ("HTTP GET /healthz (no check)", None),
        (
            "HTTP GET with a token checked (401)",
            Some(unknown.as_str()),
        ),
    ] {
        let mut times = Vec::with_capacity(OPS);
        for _ in 0..OPS {
            let mut req = t.http.get(format!("{}/api/v1/summary", t.url));
            if auth.is_none() {
                req = t.http.get(format!("{}/healthz", t.url));
            }
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let start = Instant::now();
            let status = req.send().await?.status().as_u16();
            times.push(start.elapsed());
            anyhow::ensure!(status == 200 || status == 401, "status {status}");
        }
        row(
            what,
            &format!("{:?}", common::backends::server_backend()),
            times,
        );
    }
    t.stop().await;
    Ok(())
}

fn row(what: &str, backend: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    println!(
        "| {what} | {backend} | {} | {} | {} |",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
}
