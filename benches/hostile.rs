//! Peak memory and `/healthz` latency of a real `tamiz serve` (default limits) while
//! the hostile corpus is sent: every case once, then each bomb 8 at once (a deflate
//! bomb that inflates to 1 GiB, a 512 MiB body without its boundary, 3,000 nested
//! sequences, a 256 MiB part), and 16 at once of a valid instance whose attributes
//! before Pixel Data are just under `max_header_bytes` (the most an accepted upload
//! makes ingest hold). Prints a table; asserts nothing about time.
//!
//! `cargo bench --bench hostile` (`make bench` runs it too). Targets (issue 5): peak
//! resident memory under 1 GiB, `/healthz` within 100 ms throughout.

#[path = "../tests/common/corpus.rs"]
mod corpus;
#[path = "../tests/common/procfs.rs"]
#[allow(dead_code)]
mod procfs;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corpus::{Case, Send};
use procfs::memory_kib;
use tamiz::config::Limits;

struct Server {
    child: Child,
    url: String,
    /// An admin's API token (the corpus is sent as an admin gateway would).
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let root = env!("CARGO_MANIFEST_DIR");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhttp_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[model]\ncard = \"{root}/models/triage.toml\"\n[worker]\nconcurrency = 1\n",
            dir.path().join("data").display()
        ),
    )?;
    let added = Command::new(env!("CARGO_BIN_EXE_tamiz"))
        .args(["users", "add", "bench-admin", "--role", "admin", "--config"])
        .arg(&config)
        .output()?;
    anyhow::ensure!(
        added.status.success(),
        "tamiz users add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let token = String::from_utf8(added.stdout)?.trim().to_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_tamiz"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("TAMIZ_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    Ok(Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        token,
        _dir: dir,
    })
}

/// One phase's measurements.
#[derive(Default)]
struct Probe {
    peak_rss_kib: u64,
    healthz_ms: Vec<f64>,
}

async fn send(http: &reqwest::Client, url: &str, token: &str, case: &Case) -> Option<u16> {
    let (path, ct, body) = match &case.send {
        Send::Instance(b) => (
            "/dicomweb/studies".to_string(),
            Some(corpus::content_type()),
            corpus::multipart_raw(
                &[&[b"Content-Type: application/dicom\r\n\r\n".as_slice(), b].concat()],
                true,
            ),
        ),
        Send::InstanceToStudy(s, b) => (
            format!("/dicomweb/studies/{s}"),
            Some(corpus::content_type()),
            corpus::multipart_raw(
                &[&[b"Content-Type: application/dicom\r\n\r\n".as_slice(), b].concat()],
                true,
            ),
        ),
        Send::Raw {
            path,
            content_type,
            body,
            ..
        } => (path.clone(), content_type.clone(), body.clone()),
    };
    let mut req = http
        .post(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .body(body);
    if let Some(ct) = ct {
        req = req.header("Content-Type", ct);
    }
    // A server that refuses early may close before the whole body is sent: that
    // is a refusal too, and no status comes back.
    req.send().await.ok().map(|r| r.status().as_u16())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let limits = Limits::default();
    eprintln!("building the corpus with the default limits (the 1 GiB deflate bomb takes a few seconds)...");
    let cases = corpus::corpus(&limits);
    let bombs: Vec<(&str, Case)> = [
        (
            "deflate bomb (4x the instance limit)",
            "deflate bomb, 1 GiB inflated",
        ),
        ("3,000 nested sequences", "3,000 nested sequences"),
        ("part over the instance limit", "256 MiB + 1 part"),
    ]
    .iter()
    .map(|(name, label)| {
        let c = cases
            .iter()
            .find(|c| c.name == *name)
            .expect("bomb in corpus")
            .clone();
        (*label, c)
    })
    .chain(std::iter::once((
        // Passes every check: what the header parse may hold, at its bound, per upload.
        "valid instance with a private blob just under max_header_bytes",
        {
            // A study and instance of its own: the corpus phase stored instances under
            // the base's UIDs (other bytes there are refused, as is another woman).
            let base = corpus::mutate(&corpus::base_instance(), |o| {
                for (tag, uid) in [
                    (dicom_dictionary_std::tags::SOP_INSTANCE_UID, "1.2.3.99.1"),
                    (dicom_dictionary_std::tags::STUDY_INSTANCE_UID, "1.2.3.99"),
                ] {
                    o.put(dicom_core::DataElement::new(
                        tag,
                        dicom_core::VR::UI,
                        dicom_core::value::PrimitiveValue::from(uid),
                    ));
                }
                o.meta_mut().media_storage_sop_instance_uid = "1.2.3.99.1".into();
            });
            let at = corpus::dataset_start(&base);
            let blob = corpus::explicit(
                (0x0009, 0x1010),
                b"OB",
                &vec![0x5Au8; limits.max_header_bytes as usize - (64 << 10)],
            );
            Case {
                name: "header at the bound".into(),
                send: Send::Instance([&base[..at], &blob, &base[at..]].concat()),
                expect: corpus::Expect::Error {
                    status: 200,
                    message: String::new(),
                },
            }
        },
    )))
    .chain(std::iter::once((
        "512 MiB body without its boundary",
        Case {
            name: "no boundary".into(),
            send: Send::Raw {
                method: "POST",
                path: "/dicomweb/studies".into(),
                content_type: Some(corpus::content_type()),
                body: vec![0u8; 512 << 20],
            },
            expect: corpus::Expect::Error {
                status: 400,
                message: String::new(),
            },
        },
    )))
    .collect();

    let server = start_server()?;
    let pid = server.child.id();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "tamiz serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })?;
    let (idle_rss, _) = memory_kib(pid);

    let mut rows = Vec::new();
    let mut phase = |label: String, run: &dyn Fn() -> Vec<Option<u16>>| {
        let probe = Arc::new(Mutex::new(Probe::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (probe, stop, url) = (probe.clone(), stop.clone(), server.url.clone());
            std::thread::spawn(move || {
                // Its own runtime and connection: the probe is not queued behind the load.
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client");
                while !stop.load(Ordering::Relaxed) {
                    let (rss, _) = memory_kib(pid);
                    let t = Instant::now();
                    let ok = rt.block_on(async {
                        client
                            .get(format!("{url}/healthz"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success())
                    });
                    let ms = if ok {
                        t.elapsed().as_secs_f64() * 1e3
                    } else {
                        f64::INFINITY
                    };
                    let mut p = probe.lock().expect("probe");
                    p.peak_rss_kib = p.peak_rss_kib.max(rss);
                    p.healthz_ms.push(ms);
                    drop(p);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let t = Instant::now();
        let statuses = run();
        let wall = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        sampler.join().expect("sampler");
        let mut p = probe.lock().expect("probe");
        let (rss, _) = memory_kib(pid);
        p.peak_rss_kib = p.peak_rss_kib.max(rss);
        p.healthz_ms.sort_by(f64::total_cmp);
        let n = p.healthz_ms.len().max(1);
        let pct = |q: f64| {
            p.healthz_ms
                .get(((n as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let mut answered: Vec<String> = statuses
            .iter()
            .map(|s| s.map_or("closed".to_string(), |s| s.to_string()))
            .collect();
        answered.sort();
        answered.dedup();
        rows.push(format!(
            "| {label} | {} | {:.1} s | {} | {:.0} MiB | {:.1} ms | {:.1} ms | {} |",
            statuses.len(),
            wall.as_secs_f64(),
            answered.join(" "),
            p.peak_rss_kib as f64 / 1024.0,
            pct(0.5),
            pct(0.99).max(*p.healthz_ms.last().unwrap_or(&0.0)),
            p.healthz_ms.len(),
        ));
    };

    phase(
        format!("all {} corpus cases, one at a time", cases.len()),
        &|| {
            rt.block_on(async {
                let mut out = Vec::new();
                for c in &cases {
                    out.push(send(&http, &server.url, &server.token, c).await);
                }
                out
            })
        },
    );
    for (label, case) in &bombs {
        // 8 of each bomb at once; as many as may be admitted of the header case.
        let n = if case.name == "header at the bound" {
            limits.max_concurrent_uploads
        } else {
            8
        };
        phase(format!("{label}, {n} at once"), &|| {
            rt.block_on(async {
                let sends = (0..n).map(|_| send(&http, &server.url, &server.token, case));
                futures_util::future::join_all(sends).await
            })
        });
    }
    let (_, hwm) = memory_kib(pid);
    println!("tamiz serve, default limits ({} MiB instance, {} uploads at once, {} MiB in flight); idle RSS {:.0} MiB", limits.max_instance_bytes >> 20, limits.max_concurrent_uploads, limits.max_upload_bytes_in_flight >> 20, idle_rss as f64 / 1024.0);
    println!();
    println!(
        "| phase | requests | wall | statuses | peak RSS | /healthz p50 | /healthz max | probes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!(
        "peak resident memory over the whole run (VmHWM): {:.0} MiB (target < 1024 MiB)",
        hwm as f64 / 1024.0
    );
    Ok(())
}
