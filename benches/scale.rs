//! Studies per minute with 1, 2 and 4 `tamiz worker` processes on PostgreSQL + S3:
//! an API-only node takes a batch of synthetic four-view studies, then N worker
//! processes triage them; the table gives the rate, the speed-up over one worker and
//! the duplicates (worklist items beyond one per study). Asserts nothing about time.
//!
//! `scripts/bench-scale.sh` starts the private PostgreSQL and S3 server and runs it
//! (`cargo bench --bench scale` needs `TAMIZ_TEST_POSTGRES` and the S3 variables that
//! `scripts/services.sh` sets).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::{plan, study_parts, TestServer};

fn main() -> anyhow::Result<()> {
    if std::env::var("TAMIZ_TEST_POSTGRES").is_err()
        || std::env::var("TAMIZ_TEST_S3_BUCKET").is_err()
    {
        eprintln!("scale bench: run it with scripts/bench-scale.sh (it needs PostgreSQL and S3)");
        return Ok(());
    }
    std::env::set_var("TAMIZ_TEST_STACK", "scaled");
    let studies: usize = std::env::var("TAMIZ_BENCH_STUDIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Runtime::new()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("{studies} synthetic four-view studies per run; this machine has {cores} cores\n");
    println!("| worker processes | wall | studies/min | speed-up | duplicates |");
    println!("|---|---|---|---|---|");
    let mut base = None;
    for n in [1usize, 2, 4] {
        let (wall, dups) = rt.block_on(run(n, studies))?;
        let rate = studies as f64 / wall.as_secs_f64() * 60.0;
        let base_rate = *base.get_or_insert(rate);
        println!(
            "| {n} | {:.1} s | {rate:.1} | {:.2}x | {dups} |",
            wall.as_secs_f64(),
            rate / base_rate
        );
    }
    Ok(())
}

/// Uploads `studies` to a fresh API-only node, then times `n` worker processes (one
/// slot each) until every study is on a worklist.
async fn run(n: usize, studies: usize) -> anyhow::Result<(Duration, i64)> {
    let t = TestServer::start_with(|c| c.worker.concurrency = 0).await;
    for i in 0..studies {
        let p = plan(9000 + i as u64, i % 4 == 0);
        let parts = study_parts(&t.dir.path().join("in"), &p);
        let (status, body) = t.stow("/dicomweb/studies", &parts, None).await;
        anyhow::ensure!(status == 200, "upload: {status} {body}");
    }
    let config = t.dir.path().join("worker.toml");
    std::fs::write(
        &config,
        "[model]\nintra_threads = 1\n[worker]\nconcurrency = 1\npoll_interval_ms = 20\n",
    )?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..n {
        let mut cmd = t.worker_command(&config);
        cmd.env("TAMIZ_LOG", "error")
            .stdout(std::process::Stdio::null());
        workers.push(cmd.spawn()?);
    }
    loop {
        let c = t.server.catalog.counts().await?;
        if c.worklist_items as usize >= studies {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let dups = t.server.catalog.counts().await?.worklist_items - studies as i64;
    t.stop().await;
    Ok((wall, dups))
}
