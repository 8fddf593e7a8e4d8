//! "Lease next" and "claim next" latency with a year and more of studies in the
//! catalog (default 1,000,000; `TAMIZ_BENCH_CATALOG_STUDIES`), on SQLite and, when
//! `TAMIZ_TEST_POSTGRES` names a server (`scripts/bench-scale.sh` starts one), on
//! PostgreSQL. The catalog is loaded with read studies, a backlog of 20,000 open
//! worklist items at one diagnosis center and 2,000 queued jobs, as a program at
//! 500,000 studies a year has after two years; then 1,000 leases and 1,000 claims are
//! timed one at a time, and again from 8 tasks at once (8 workers, 8 radiologists).
//! Prints a table; asserts nothing about time.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::backends::{backends, fresh_catalog, Backend};
use tamiz::catalog::Catalog;

const MODEL: &str = "bench@1";
const CENTER: &str = "central";
const OPS: usize = 1000;
const TASKS: usize = 8;

fn main() -> anyhow::Result<()> {
    let studies: i64 = std::env::var("TAMIZ_BENCH_CATALOG_STUDIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new()?;
    println!("{studies} studies in the catalog, 20,000 open items, 2,000 queued jobs; {OPS} operations per row\n");
    println!("| backend | operation | callers | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for backend in backends() {
        rt.block_on(run(backend, studies))?;
    }
    Ok(())
}

async fn run(backend: Backend, studies: i64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let catalog = fresh_catalog(backend, dir.path()).await;
    let now = catalog.clock_ms().await?;
    let t = Instant::now();
    catalog
        .bulk_load_history(studies, 20_000, 2_000, MODEL, CENTER, now)
        .await?;
    eprintln!(
        "{backend:?}: loaded {studies} studies in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let name = format!("{backend:?}");

    // One caller at a time.
    let mut lease = Vec::with_capacity(OPS);
    for i in 0..OPS {
        let now = catalog_now(&catalog).await?;
        let t = Instant::now();
        let job = catalog
            .lease_job(&format!("w{i}"), MODEL, now, 120_000)
            .await?;
        lease.push(t.elapsed());
        anyhow::ensure!(job.is_some(), "a queued job to lease");
    }
    row(&name, "lease next", 1, &mut lease);
    let mut claim = Vec::with_capacity(OPS);
    for i in 0..OPS {
        let now = catalog_now(&catalog).await?;
        let t = Instant::now();
        let item = catalog
            .claim_next(CENTER, &format!("r{i}"), now, now - 3_600_000, None)
            .await?;
        claim.push(t.elapsed());
        anyhow::ensure!(item.is_some(), "an open item to claim");
    }
    row(&name, "claim next", 1, &mut claim);

    // TASKS callers at once (separate connections from one pool).
    for op in ["lease next", "claim next"] {
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let catalog = catalog.clone();
            handles.push(tokio::spawn(async move {
                let mut times = Vec::with_capacity(OPS / TASKS);
                for i in 0..OPS / TASKS {
                    let now = catalog_now(&catalog).await?;
                    let who = format!("t{task}-{i}");
                    let t = Instant::now();
                    let got = if op == "lease next" {
                        catalog
                            .lease_job(&who, MODEL, now, 120_000)
                            .await?
                            .is_some()
                    } else {
                        catalog
                            .claim_next(CENTER, &who, now, now - 3_600_000, None)
                            .await?
                            .is_some()
                    };
                    times.push(t.elapsed());
                    anyhow::ensure!(got, "{op}: nothing left");
                }
                Ok::<_, anyhow::Error>(times)
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await??);
        }
        row(&name, op, TASKS, &mut all);
    }
    Ok(())
}

async fn catalog_now(c: &Catalog) -> anyhow::Result<i64> {
    Ok(c.clock_ms().await?)
}

fn row(backend: &str, op: &str, callers: usize, times: &mut [Duration]) {
    times.sort();
    let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {backend} | {op} | {callers} | {} | {} | {} |",
        ms(q(0.50)),
        ms(q(0.99)),
        ms(times[times.len() - 1])
    );
}
