//! The worker path end to end: compressed transfer syntaxes decode to the same model
//! input, a study whose pixels cannot be decoded goes out untriaged, a worker that
//! dies mid-job neither loses nor duplicates the study (nor does an API node killed
//! mid-upload, with the upload run again), real CBIS-DDSM mammograms
//! are triaged, and real clients (`tamiz upload`, dicomweb-client) upload.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::DataElement;
use dicom_dictionary_std::tags;
use tamiz::model::ModelCard;
use tamiz::worker::prepare_view;

fn card() -> ModelCard {
    ModelCard::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/triage.toml"))
        .unwrap()
        .0
}

#[test]
fn jpeg_lossless_and_rle_give_the_model_the_same_input_as_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let files = study_files(dir.path(), &plan(31, true));
    let src = files[0].0.to_str().unwrap();
    let jpeg = dir.path().join("jpeg.dcm");
    let rle = dir.path().join("rle.dcm");
    tool("dcmcjpeg", &["+e1", src, jpeg.to_str().unwrap()]); // JPEG Lossless SV1 (.70)
    tool("gdcmconv", &["--rle", src, rle.to_str().unwrap()]);
    let card = card();
    let reference = prepare_view(&files[0].1, &card).unwrap();
    for (name, path, ts) in [
        ("JPEG Lossless", &jpeg, "1.2.840.10008.1.2.4.70"),
        ("RLE", &rle, "1.2.840.10008.1.2.5"),
    ] {
        let bytes = std::fs::read(path).unwrap();
        let obj = dicom_object::OpenFileOptions::new()
            .from_reader(&bytes[128..])
            .unwrap();
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            ts,
            "{name} file has the expected syntax"
        );
        assert_eq!(
            prepare_view(&bytes, &card).unwrap(),
            reference,
            "{name} decodes bit-exactly"
        );
    }
}

#[test]
fn monochrome1_is_inverted_to_the_same_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = plan(32, false);
    let normal = study_files(&dir.path().join("m2"), &p);
    p.monochrome1 = true;
    let inverted = study_files(&dir.path().join("m1"), &p);
    assert_ne!(normal[0].1, inverted[0].1);
    let card = card();
    let a = prepare_view(&normal[0].1, &card).unwrap();
    let b = prepare_view(&inverted[0].1, &card).unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 0.01,
        "MONOCHROME1 after inversion differs by up to {worst}"
    );
}

/// An RLE file whose pixel data fragment is garbage but whose structure (and RLE
/// header: two segments for 16 bits, in order, inside the fragment) is valid: it is
/// accepted at ingest and fails (or panics) in the decoder.
fn corrupt_rle(src: &Path, out: &Path) -> Vec<u8> {
    let rle = out.with_extension("rle.dcm");
    tool(
        "gdcmconv",
        &["--rle", src.to_str().unwrap(), rle.to_str().unwrap()],
    );
    let mut obj = dicom_object::open_file(&rle).unwrap();
    let mut garbage = vec![0u8; 4096];
    garbage[0] = 2; // two segments (high and low bytes of 16-bit samples)...
    garbage[4..8].copy_from_slice(&64u32.to_le_bytes()); // ...at offset 64...
    garbage[8..12].copy_from_slice(&2048u32.to_le_bytes()); // ...and 2048, of literal-run noise
    for (i, b) in garbage.iter_mut().enumerate().skip(64) {
        *b = (i * 37 % 251) as u8;
    }
    let frags = PixelFragmentSequence::new(Vec::<u32>::new(), vec![garbage]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        dicom_core::VR::OB,
        Value::from(frags),
    ));
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    bytes
}

#[tokio::test]
async fn undecodable_pixels_yield_an_untriaged_worklist_item() {
    let t = TestServer::start().await;
    let p = plan(33, false);
    let files = study_files(&t.dir.path().join("in"), &p);
    let mut parts: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
    parts[2] = corrupt_rle(&files[2].0, &t.dir.path().join("bad"));
    let (status, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(
        status, 200,
        "structurally valid: accepted at ingest: {body}"
    );
    let s = t.wait_worklisted(&p.study_uid).await;
    let w = s.worklist.unwrap();
    assert_eq!((w.priority.as_str(), w.triaged), ("untriaged", false));
    assert!(w.reason.contains("could not be decoded"), "{}", w.reason);
    assert_eq!(w.center, "central");
    assert_eq!(
        s.job_state.as_deref(),
        Some("done"),
        "not retried: decoding will not improve"
    );
    // the worker survived: another study is still triaged
    let q = plan(34, false);
    let parts = study_parts(&t.dir.path().join("in2"), &q);
    assert_eq!(t.stow("/dicomweb/studies", &parts, None).await.0, 200);
    assert!(
        t.wait_worklisted(&q.study_uid)
            .await
            .worklist
            .unwrap()
            .triaged
    );
    t.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_job_neither_loses_nor_duplicates_the_study() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = plan(35, true);
    let parts = study_parts(&dir.path().join("in"), &p);
    // An API-only node takes the upload; a worker leases the job and "dies".
    let mut cfg = test_config(&data);
    common::backends::use_fresh_stack(&mut cfg, &dir.path().join("secrets")).await;
    cfg.worker.concurrency = 0;
    let model = tamiz::model::ModelCard::load_configured(&cfg.model)
        .unwrap()
        .0
        .version_key();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = tamiz::server::start(cfg.clone(), listener).await.unwrap();
    let tokens = make_test_users(&api).await;
    let (ct, body) = multipart(&parts);
    let r = reqwest::Client::new()
        .post(format!("{}/dicomweb/studies", api.base_url()))
        .header("Authorization", format!("Bearer {}", tokens["admin"]))
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let dead = api
        .catalog
        .lease_job("worker-that-dies", &model, tamiz::now_ms(), 1500)
        .await
        .unwrap()
        .expect("job was queued");
    api.stop().await;

    // A new process with a worker: after the lease expires it takes the job over.
    let mut cfg2 = cfg.clone();
    cfg2.worker.concurrency = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tamiz::server::start(cfg2, listener).await.unwrap();
    let t = TestServer {
        url: server.base_url(),
        server,
        dir,
        http: reqwest::Client::new(),
        tokens,
    };
    let s = t.wait_worklisted(&p.study_uid).await;
    assert_eq!(s.job_attempts, Some(2), "re-leased once after the expiry");
    assert!(s.worklist.as_ref().unwrap().triaged);
    // The dead worker wakes up: it can change nothing.
    let late = tamiz::catalog::NewItem {
        home_center: None,
        center: "north".into(),
        triage: tamiz::triage::untriaged(
            tamiz::triage::UntriagedCause::GaveUp,
            "late".into(),
            &Default::default(),
            0,
        ),
        view_scores: vec![],
        model_version: None,
        reason: "late".into(),
    };
    assert!(t
        .server
        .catalog
        .finish_job(
            &dead,
            tamiz::catalog::JobOutcome::Done,
            &late,
            None,
            tamiz::now_ms()
        )
        .await
        .is_err());
    let items = t.server.catalog.counts().await.unwrap().worklist_items;
    assert_eq!(items, 1, "one study, one worklist item");
    t.stop().await;
}

#[tokio::test]
async fn real_cbis_ddsm_mammograms_are_uploaded_by_the_cli_and_triaged() {
    let t = TestServer::start_with(|c| c.completeness.stable_after_secs = 1).await;
    let cases = mammograms();
    // one file that is not DICOM among them: reported, the others still sent
    let junk = t.dir.path().join("notes.txt");
    std::fs::write(&junk, "not an image").unwrap();
    let mut args = vec![
        "upload".to_string(),
        "--url".into(),
        t.url.clone(),
        "--token".into(),
        t.token("uploader-clinic-a").to_owned(),
    ];
    args.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".cache/mammograms/cases")
            .display()
            .to_string(),
    );
    args.push(junk.display().to_string());
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tamiz"))
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let out = run(args.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one file failed: {stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("stored")).count(),
        8,
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED")
            && stdout.contains("notes.txt")
            && stdout.contains("not a readable DICOM file"),
        "{stdout}"
    );
    assert!(stdout.contains("9 file(s): 8 stored, 1 failed"), "{stdout}");

    // Each CBIS-DDSM image has its own Study UID: each becomes a one-view study, made
    // ready once stable, scored on its view, never classed low (missing views).
    let mut studies = Vec::new();
    for f in &cases {
        let obj = dicom_object::open_file(f).unwrap();
        let uid = obj
            .element(tags::STUDY_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string();
        studies.push(uid);
    }
    for uid in &studies {
        let s = t.wait_worklisted(uid).await;
        let w = s.worklist.unwrap();
        assert!(w.triaged, "{uid}: {}", w.reason);
        assert_ne!(w.priority, "low");
        assert!(
            w.reason.contains("incomplete study, missing"),
            "{}",
            w.reason
        );
        assert_eq!(w.center, "north");
        assert_eq!(s.views.len(), 1);
    }
    // Re-running the upload is safe: everything already stored, nothing duplicated.
    let before = t.stored_objects().await.len();
    let out = run(args).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("stored"))
            .count(),
        8
    );
    assert_eq!(t.stored_objects().await.len(), before);
    t.stop().await;
}

#[tokio::test]
async fn dicomweb_client_stores_a_study_over_chunked_stow_rs() {
    let t = TestServer::start().await;
    let p = plan(36, false);
    let files = study_files(&t.dir.path().join("in"), &p);
    let python = venv_python();
    let script = r#"
import sys, pydicom
from dicomweb_client.api import DICOMwebClient
client = DICOMwebClient(url=sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
result = client.store_instances(datasets=[pydicom.dcmread(f) for f in sys.argv[3:]])
print(len(result.ReferencedSOPSequence))
"#;
    let mut args = vec![
        "-c".to_string(),
        script.into(),
        format!("{}/dicomweb", t.url),
        t.token("uploader-clinic-b").to_owned(),
    ];
    args.extend(files.iter().map(|f| f.0.display().to_string()));
    let out =
        tokio::task::spawn_blocking(move || Command::new(python).args(&args).output().unwrap())
            .await
            .unwrap();
    assert_eq!(succeeded(&out).trim(), "4");
    assert!(
        t.wait_worklisted(&p.study_uid)
            .await
            .worklist
            .unwrap()
            .triaged
    );
    t.stop().await;
}

/// The configuration of the API node and worker processes started by these tests
/// (the test server's centers, no model card; catalog and store come from the
/// environment).
const NODE_TOML: &str = r#"default_diagnosis_center = "central"
[model]
intra_threads = 1
[worker]
concurrency = 1
poll_interval_ms = 50
heartbeat_secs = 1
lease_secs = 2
[[diagnosis_centers]]
id = "central"
name = "Central"
[[diagnosis_centers]]
id = "north"
name = "North"
[[imaging_centers]]
id = "clinic-a"
name = "Clinic A"
home = "north"
[[imaging_centers]]
id = "clinic-b"
name = "Clinic B"
home = "central"
institution_names = ["CLINIC B"]
"#;

/// An API-only node takes the upload; a separate `tamiz worker` process, sharing only
/// the catalog and the object store (SQLite + directory, or PostgreSQL + S3), triages
/// it onto the home center's worklist, and stops cleanly on SIGTERM.
#[tokio::test]
async fn a_worker_process_triages_what_an_api_only_node_received() {
    let t = TestServer::start_with(|c| c.worker.concurrency = 0).await;
    let p = plan(57, true);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    assert_eq!(
        t.stow("/dicomweb/studies", &parts, Some("clinic-a"))
            .await
            .0,
        200
    );
    // No card named: the worker runs the model built into the binary, from a folder
    // outside the source tree, and it is the same model version as the API node's.
    let config_path = t.dir.path().join("worker.toml");
    std::fs::write(&config_path, NODE_TOML).unwrap();
    let mut cmd = t.worker_command(&config_path);
    cmd.env("TAMIZ_LOG", "info")
        .env("TAMIZ_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut worker = cmd.spawn().expect("start tamiz worker");
    let status = t.wait_worklisted(&p.study_uid).await;
    let item = status.worklist.unwrap();
    assert!(
        item.triaged,
        "scored by the worker process: {}",
        item.reason
    );
    assert_eq!(item.center, "north", "routed to clinic-a's home center");

    let pid = worker.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = worker.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker ignored SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut worker.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.starts_with("tamiz worker running model "), "{out}");
    // Its log: one JSON object per line (TAMIZ_LOG_FORMAT=json), no colour codes.
    let mut log = String::new();
    std::io::Read::read_to_string(&mut worker.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!log.contains('\x1b'), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "worker process started"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "study on worklist"),
        "{log}"
    );
    t.stop().await;
}

/// Starts `tamiz serve --no-workers` on `port` and waits until it answers. The caller
/// owns the child (and kills and reaps it).
#[allow(clippy::zombie_processes)]
async fn start_api_node(t: &TestServer, config: &Path, port: u16) -> std::process::Child {
    let mut child = t
        .node_command(&["serve", "--no-workers"], config)
        .env("TAMIZ_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TAMIZ_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start tamiz serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = t
            .http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return child;
            }
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("API node did not start");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `tamiz upload` of `dir` to the API node on `port` with `token`, as a child process.
fn start_upload(dir: &Path, port: u16, token: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tamiz"))
        .args(["upload", "--url", &format!("http://127.0.0.1:{port}")])
        .env("TAMIZ_TOKEN", token)
        .arg(dir)
        .env("TAMIZ_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tamiz upload")
}

/// Waits (bounded) for a child to exit.
async fn wait_exit(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "{what} did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An API node and three `tamiz worker` processes, all separate processes sharing the
/// catalog and the store (PostgreSQL + S3 on the scaled stack). Two dozen studies are
/// uploaded with `tamiz upload`; the API node is SIGKILLed in the middle of the upload
/// and restarted, and the upload is run again; workers are SIGKILLed again and again
/// and restarted. At the end every study is on exactly one worklist, with one job, and
/// every instance is catalogued once and kept in the store.
#[tokio::test]
async fn api_node_and_workers_killed_again_and_again_lose_and_duplicate_nothing() {
    let t = TestServer::start_with(|c| c.worker.concurrency = 0).await;
    let config_path = t.dir.path().join("node.toml");
    std::fs::write(&config_path, NODE_TOML).unwrap();
    let plans: Vec<_> = (0..24).map(|i| plan(400 + i, i % 3 == 0)).collect();
    let studies = t.dir.path().join("studies");
    for p in &plans {
        tamiz::synth::write_study(p, &studies).expect("write study");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = start_api_node(&t, &config_path, port).await;

    // Three workers; every 700 ms one is SIGKILLed and a new one started in its place,
    // from the first upload until every study is on a worklist.
    let spawn_worker = {
        let mut cmd = t.worker_command(&config_path);
        cmd.env("TAMIZ_LOG", "error")
            .stdout(std::process::Stdio::null());
        move || cmd.spawn().expect("start tamiz worker")
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let killer = tokio::spawn(async move {
        let mut spawn_worker = spawn_worker;
        let mut workers: Vec<std::process::Child> = (0..3).map(|_| spawn_worker()).collect();
        let mut kills = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(700)) => {}
                _ = stop_rx.wait_for(|s| *s) => break,
            }
            let victim = kills % workers.len();
            workers[victim].kill().unwrap(); // SIGKILL
            workers[victim].wait().unwrap();
            workers[victim] = spawn_worker();
            kills += 1;
        }
        for w in &mut workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        kills
    });

    // The API node dies in the middle of the upload.
    let mut first = start_upload(&studies, port, t.token("admin"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while t.server.catalog.counts().await.unwrap().instances < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "upload made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    api.kill().unwrap(); // SIGKILL
    api.wait().unwrap();
    let stored_when_killed = t.server.catalog.counts().await.unwrap().instances;
    assert!(
        stored_when_killed < 96,
        "the API node was killed before the upload ended"
    );
    // Restarted; the interrupted upload retries (or gives up), then is run again.
    let mut api = start_api_node(&t, &config_path, port).await;
    wait_exit(&mut first, 180, "the interrupted upload").await;
    let mut second = start_upload(&studies, port, t.token("admin"));
    let exit = wait_exit(&mut second, 180, "the second upload").await;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut second.stdout.take().unwrap(), &mut out).unwrap();
    assert!(exit.success(), "{exit}: {out}");
    assert!(out.contains("96 file(s): 96 stored, 0 failed"), "{out}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let counts = t.server.catalog.counts().await.unwrap();
        if counts.worklist_items as usize == plans.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all studies reached a worklist: {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    let kills = killer.await.unwrap();
    let _ = api.kill();
    let _ = api.wait();
    assert!(
        kills >= 3,
        "workers were killed {kills} times while triaging"
    );
    let counts = t.server.catalog.counts().await.unwrap();
    assert_eq!(
        counts.worklist_items as usize,
        plans.len(),
        "exactly one item per study"
    );
    assert_eq!(counts.jobs as usize, plans.len(), "one job per study");
    assert_eq!(counts.studies as usize, plans.len());
    assert_eq!(counts.instances as usize, plans.len() * 4);
    for p in &plans {
        let s = t
            .server
            .catalog
            .study_status(&p.study_uid)
            .await
            .unwrap()
            .unwrap();
        assert!(s.worklist.is_some(), "{} is on a worklist", p.study_uid);
        assert_eq!(s.instances, 4, "{}", p.study_uid);
    }
    assert_eq!(
        t.stored_objects().await.len(),
        plans.len() * 4,
        "every instance kept, none twice"
    );
    t.stop().await;
}
