//! Studies per minute with 1, 2 and 4 `tamiz worker` processes on PostgreSQL + S3:
//! an API-only node takes a batch of synthetic four-view studies, then N worker
//! processes triage them; the table gives the rate, the speed-up over one worker and
//! the duplicates (worklist items beyond one per study). Then an API node's memory as
//! the bucket grows: a `tamiz serve --no-workers` process takes rounds of uploads and
//! its resident memory is read after each. Asserts nothing about time or memory.
//!
//! `scripts/bench-scale.sh` starts the private PostgreSQL and S3 server and runs it
//! (`cargo bench --bench scale` needs `TAMIZ_TEST_POSTGRES` and the S3 variables that
//! `scripts/services.sh` sets).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::{plan, procfs, study_parts, TestServer};

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
    println!("| worker processes | wall | studies/min | speed-up | duplicates | workers' CPU per study | workers | S3 server | PostgreSQL | whole machine |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut base = None;
    for n in [1usize, 2, 4] {
        let (wall, dups, cpu) = rt.block_on(run(n, studies))?;
        let secs = wall.as_secs_f64();
        let rate = studies as f64 / secs * 60.0;
        let base_rate = *base.get_or_insert(rate);
        println!(
            "| {n} | {secs:.1} s | {rate:.1} | {:.2}x | {dups} | {:.2} s | {:.2} cores | {:.2} cores | {:.2} cores | {:.2} of {cores} cores |",
            rate / base_rate,
            cpu.workers * secs / studies as f64,
            cpu.workers,
            cpu.s3,
            cpu.postgres,
            cpu.machine,
        );
    }
    if std::env::var_os("TAMIZ_BENCH_SKIP_MEMORY").is_none() {
        rt.block_on(api_node_memory())?;
    }
    Ok(())
}

/// An API node process on PostgreSQL + S3 takes six rounds of eight studies; after
/// each round its resident memory is read, with the objects in the bucket.
async fn api_node_memory() -> anyhow::Result<()> {
    let t = TestServer::start_with(|c| c.worker.concurrency = 0).await;
    let config = t.dir.path().join("api.toml");
    std::fs::write(&config, "[worker]\nconcurrency = 0\n")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut api = t
        .node_command(&["serve", "--no-workers"], &config)
        .env("TAMIZ_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TAMIZ_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while t.http.get(format!("{url}/healthz")).send().await.is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "API node did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "\nAPI node (`tamiz serve --no-workers`, PostgreSQL + S3) memory as the bucket grows\n"
    );
    println!("| studies uploaded | objects in bucket | resident (RSS) | peak (HWM) |");
    println!("|---|---|---|---|");
    let (rss, hwm) = common::procfs::memory_kib(api.id());
    println!("| 0 | 0 | {} MiB | {} MiB |", rss / 1024, hwm / 1024);
    let mut uploaded = 0;
    for round in 0..6u64 {
        for i in 0..8u64 {
            let p = plan(20_000 + round * 8 + i, false);
            let parts = study_parts(&t.dir.path().join("in"), &p);
            let (ct, body) = common::multipart(&parts);
            let resp = t
                .http
                .post(format!("{url}/dicomweb/studies"))
                .header("Authorization", t.bearer("admin"))
                .header("Content-Type", ct)
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(resp.status() == 200, "upload: {}", resp.status());
            uploaded += 1;
        }
        let objects = t.stored_objects().await.len();
        let (rss, hwm) = common::procfs::memory_kib(api.id());
        println!(
            "| {uploaded} | {objects} | {} MiB | {} MiB |",
            rss / 1024,
            hwm / 1024
        );
    }
    let _ = api.kill();
    let _ = api.wait();
    t.stop().await;
    Ok(())
}

/// CPU used during one run, in cores (CPU seconds over the wall time), by process.
struct RunCpu {
    workers: f64,
    s3: f64,
    postgres: f64,
    machine: f64,
}

/// Busy and total CPU time of the machine so far, in ticks (`/proc/stat`).
fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    // idle and iowait
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// Uploads `studies` to a fresh API-only node, then times `n` worker processes until
/// every study is on a worklist. Each worker is sized to one core (one slot, one
/// decode thread, one ONNX Runtime thread), as a pod with `cpu: 1` would be: N workers
/// on N cores is the question, not how one worker spreads over the machine. Returns
/// the wall time, the duplicates and the CPU each part of the system used.
async fn run(n: usize, studies: usize) -> anyhow::Result<(Duration, i64, RunCpu)> {
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
        "[model]\nintra_threads = 1\n[worker]\nconcurrency = 1\npoll_interval_ms = 20\ndecode_threads = 1\n",
    )?;
    let s3_before = procfs::cpu_secs_by_name("s3s-fs");
    let pg_before = procfs::cpu_secs_by_name("postgres");
    let started = Instant::now();
    let ticks_before = machine_ticks()?;
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
    let ticks_after = machine_ticks()?;
    let s3 = procfs::cpu_secs_between(&s3_before, &procfs::cpu_secs_by_name("s3s-fs"));
    let pg = procfs::cpu_secs_between(&pg_before, &procfs::cpu_secs_by_name("postgres"));
    let mut worker_cpu = 0.0;
    for w in &workers {
        worker_cpu += procfs::cpu_secs(w.id()).unwrap_or(0.0);
    }
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let cores = (ticks_after.1 - ticks_before.1).max(1) as f64;
    let secs = wall.as_secs_f64();
    let cpu = RunCpu {
        workers: worker_cpu / secs,
        s3: s3 / secs,
        postgres: pg / secs,
        // busy share of all cores, times the number of cores
        machine: (ticks_after.0 - ticks_before.0) as f64 / cores
            * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
    };
    let dups = t.server.catalog.counts().await?.worklist_items - studies as i64;
    t.stop().await;
    Ok((wall, dups, cpu))
}
