//! C-STORE ingest throughput: the same files sent by the same dcmtk `storescu` command
//! to tamiz's DICOM listener and to Orthanc (Debian `orthanc`), over one association
//! and over four at once. Prints instances/s and MB/s side by side. Asserts nothing.
//!
//! tamiz runs embedded (SQLite + directory, workers off: ingest only: validation,
//! SHA-256, the object written and fsynced before the catalog row, which is committed
//! with `synchronous=FULL`). Orthanc has no bind-address setting and listens on every
//! interface, so it runs inside a private network namespace (`unshare --net`, `lo`
//! up) with its client; it needs root. Both get `TCP_NODELAY=1` (dcmtk reads it).
//!
//! `scripts/bench-cstore.sh` installs Orthanc and runs this; `TAMIZ_BENCH_STUDIES`
//! [25] synthetic four-view studies (2048 x 1664, 16-bit, 6.8 MB an instance).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{plan, study_files, TestServer};

fn main() -> anyhow::Result<()> {
    let studies: u64 = std::env::var("TAMIZ_BENCH_STUDIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for i in 0..studies {
        files.extend(
            study_files(
                &dir.path().join(format!("s{i}")),
                &plan(30_000 + i, i % 5 == 0),
            )
            .into_iter()
            .map(|f| f.0),
        );
    }
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} instances ({:.0} MB) from dcmtk storescu; this machine has {cores} cores\n",
        files.len(),
        bytes as f64 / 1e6
    );
    println!("| receiver | associations | wall | instances/s | MB/s |");
    println!("|---|---|---|---|---|");
    let rt = tokio::runtime::Runtime::new()?;
    let orthanc = Path::new("/usr/sbin/Orthanc").exists();
    for associations in [1usize, 4] {
        let wall = rt.block_on(tamiz_run(&files, associations))?;
        row("tamiz", associations, wall, files.len(), bytes);
        if orthanc {
            let wall = orthanc_run(dir.path(), &files, associations)?;
            row("Orthanc", associations, wall, files.len(), bytes);
        }
    }
    if !orthanc {
        println!("\n(Orthanc is not installed: scripts/bench-cstore.sh installs it)");
    }
    Ok(())
}

fn row(who: &str, associations: usize, wall: Duration, n: usize, bytes: u64) {
    let s = wall.as_secs_f64();
    println!(
        "| {who} | {associations} | {s:.2} s | {:.1} | {:.1} |",
        n as f64 / s,
        bytes as f64 / 1e6 / s
    );
}

/// The storescu command lines: the files split over `associations` processes.
fn storescu_args(files: &[PathBuf], associations: usize, ae: &str, port: u16) -> Vec<Vec<String>> {
    let per = files.len().div_ceil(associations);
    files
        .chunks(per)
        .map(|chunk| {
            let mut a: Vec<String> = ["-aet", ae, "-aec", "TAMIZ", "127.0.0.1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.push(port.to_string());
            a.extend(chunk.iter().map(|f| f.display().to_string()));
            a
        })
        .collect()
}

/// A fresh ingest-only server per run: nothing is "already stored".
async fn tamiz_run(files: &[PathBuf], associations: usize) -> anyhow::Result<Duration> {
    let t = TestServer::start_with(|c| {
        c.dicom.addr = Some("127.0.0.1:0".into());
        c.worker.concurrency = 0;
        c.limits.max_concurrent_uploads = 64;
    })
    .await;
    let port = t.server.dicom_addr.expect("listener").port();
    let runs = storescu_args(files, associations, "CLINIC_A_MG", port);
    let started = Instant::now();
    let mut children = Vec::new();
    for args in runs {
        children.push(
            Command::new("/usr/bin/storescu")
                .args(&args)
                .env("TCP_NODELAY", "1")
                .spawn()?,
        );
    }
    let waits = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|mut c| c.wait().map(|s| s.success()))
            .collect::<Vec<_>>()
    })
    .await?;
    let wall = started.elapsed();
    for w in waits {
        anyhow::ensure!(w?, "storescu to tamiz failed");
    }
    let stored = t.stored_objects().await.len();
    anyhow::ensure!(
        stored == files.len(),
        "tamiz stored {stored} of {}",
        files.len()
    );
    t.stop().await;
    Ok(wall)
}

/// Orthanc in a private network namespace with the same storescu commands; the wall
/// time is measured inside the namespace, from the first storescu start to the last
/// one's end.
fn orthanc_run(tmp: &Path, files: &[PathBuf], associations: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir_in(tmp)?;
    let config = dir.path().join("orthanc.json");
    std::fs::write(
        &config,
        format!(
            r#"{{ "Name": "bench", "StorageDirectory": "{d}/storage", "IndexDirectory": "{d}/index",
  "DicomAet": "TAMIZ", "DicomPort": 4242, "HttpPort": 8042, "RemoteAccessAllowed": false,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowEcho": true,
  "Plugins": [], "StorageCompression": false, "DicomThreadsCount": 4 }}"#,
            d = dir.path().display()
        ),
    )?;
    let mut script = String::from(
        "set -e; ip link set lo up; TCP_NODELAY=1 /usr/sbin/Orthanc \"$1\" >\"$2\" 2>&1 & pid=$!; \
         for i in $(seq 100); do /usr/bin/echoscu -aet CLINIC_A_MG -aec TAMIZ 127.0.0.1 4242 2>/dev/null && break; sleep 0.1; done; \
         t0=$(date +%s.%N); pids=''; ",
    );
    let lists: Vec<PathBuf> = storescu_args(files, associations, "CLINIC_A_MG", 4242)
        .into_iter()
        .enumerate()
        .map(|(i, args)| {
            let list = dir.path().join(format!("args{i}"));
            std::fs::write(&list, args.join("\n")).expect("args file");
            list
        })
        .collect();
    for l in &lists {
        script.push_str(&format!(
            "(xargs -d '\\n' -a {} env TCP_NODELAY=1 /usr/bin/storescu) & pids=\"$pids $!\"; ",
            l.display()
        ));
    }
    script.push_str(
        "ok=0; for p in $pids; do wait $p || ok=1; done; t1=$(date +%s.%N); kill $pid; wait $pid || true; echo \"$t0 $t1 $ok\"",
    );
    let out = Command::new("unshare")
        .args(["--net", "bash", "-c", &script, "bench"])
        .arg(&config)
        .arg(dir.path().join("orthanc.log"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let f: Vec<&str> = last.split_whitespace().collect();
    anyhow::ensure!(
        out.status.success() && f.len() == 3 && f[2] == "0",
        "Orthanc run failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = f[1].parse::<f64>()? - f[0].parse::<f64>()?;
    Ok(Duration::from_secs_f64(secs))
}
