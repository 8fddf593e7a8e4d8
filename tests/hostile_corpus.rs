//! The hostile corpus (`common/corpus.rs`) against a real server: every case gets its
//! exact status and reason, nothing stored changes, the server keeps answering; and
//! the upload client survives every file of it. Regressions named in the corpus:
//! the ~100 KB file of 3,000 nested sequences that aborted the server, the deflate
//! bomb that was stored, the boundary-less body parsed in quadratic time, and the
//! file-meta element whose undefined length made the guard panic ("retry later").

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::corpus::{self, Case, Expect, Send};
use common::*;
use serde_json::Value;
use tamiz::config::Limits;

/// Small limits so that bombs and oversized bodies stay cheap to build.
pub fn corpus_limits() -> Limits {
    Limits {
        max_instance_bytes: 4 << 20,
        max_request_bytes: 16 << 20,
        max_upload_bytes_in_flight: 64 << 20,
        max_header_bytes: 2 << 20,
        ..Limits::default()
    }
}

/// Every object file with its bytes: what "nothing changed" is checked against.
async fn objects(t: &TestServer) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in t.stored_objects().await {
        let b = t.server.store.get(&key).await.expect("read object");
        out.insert(key, b.to_vec());
    }
    out
}

async fn send(t: &TestServer, case: &Case) -> (u16, Option<String>, Value) {
    let (method, path, ct, body) = match &case.send {
        Send::Instance(b) => {
            let (ct, body) = multipart(std::slice::from_ref(b));
            ("POST", "/dicomweb/studies".to_string(), Some(ct), body)
        }
        Send::InstanceToStudy(study, b) => {
            let (ct, body) = multipart(std::slice::from_ref(b));
            ("POST", format!("/dicomweb/studies/{study}"), Some(ct), body)
        }
        Send::Raw {
            method,
            path,
            content_type,
            body,
        } => (*method, path.clone(), content_type.clone(), body.clone()),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut req = t.http.request(method.clone(), format!("{}{path}", t.url));
    if method != reqwest::Method::GET {
        req = req.body(body);
    }
    let mut req = req.header("Authorization", t.bearer("admin"));
    if let Some(ct) = ct {
        req = req.header("Content-Type", ct);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.expect("body");
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Checks one answer; `Err` says what was wrong.
fn check(case: &Case, status: u16, ct: Option<&str>, body: &Value) -> Result<(), String> {
    match &case.expect {
        Expect::Refused { reason, comment } => {
            if status != 409 {
                return Err(format!("status {status}, expected 409: {body}"));
            }
            if ct != Some("application/dicom+json") {
                return Err(format!("Content-Type {ct:?}"));
            }
            let failed = seq(body, "00081198");
            if failed.len() != 1 || !seq(body, "00081199").is_empty() {
                return Err(format!("expected exactly one failed instance: {body}"));
            }
            let got_reason = first(failed[0], "00081197").as_u64();
            let got_comment = failure_text(failed[0]);
            let got_comment = got_comment.as_str().unwrap_or("");
            if got_reason != Some(*reason as u64) {
                return Err(format!(
                    "reason {got_reason:?}, expected {reason:04X}H ({reason}): `{got_comment}`"
                ));
            }
            if !got_comment.contains(comment.as_str()) {
                return Err(format!(
                    "comment `{got_comment}` does not contain `{comment}`"
                ));
            }
        }
        Expect::Error {
            status: want,
            message,
        } => {
            if status != *want {
                return Err(format!("status {status}, expected {want}: {body}"));
            }
            if ct != Some("application/json") {
                return Err(format!("Content-Type {ct:?}, expected application/json"));
            }
            let got = body.get("error").and_then(Value::as_str).unwrap_or("");
            if !got.contains(message.as_str()) {
                return Err(format!("error `{got}` does not contain `{message}`"));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_hostile_case_gets_its_exact_answer_and_changes_nothing() {
    let limits = corpus_limits();
    let l = limits.clone();
    let t = TestServer::start_with(move |c| c.limits = l).await;
    let base = corpus::base_instance();
    let (status, body) = t
        .stow("/dicomweb/studies", std::slice::from_ref(&base), None)
        .await;
    assert_eq!(status, 200, "the valid base instance is stored: {body}");
    let stored = objects(&t).await;
    let (_, summary) = t.get_json("/api/v1/summary").await;
    let counts = t.server.catalog.counts().await.unwrap();
    assert_eq!((counts.studies, counts.instances), (1, 1));

    let cases = corpus::corpus(&limits);
    assert!(cases.len() >= 50, "the corpus has {} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let (status, ct, body) = send(&t, case).await;
        if let Err(e) = check(case, status, ct.as_deref(), &body) {
            wrong.push(format!("{}: {e}", case.name));
        }
        assert_eq!(
            t.healthz().await,
            200,
            "{}: the server stopped answering",
            case.name
        );
        if objects(&t).await != stored {
            wrong.push(format!("{}: the object store changed", case.name));
        }
        if t.server.catalog.counts().await.unwrap() != counts {
            wrong.push(format!("{}: the catalog changed", case.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases got the wrong answer:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    let (_, after) = t.get_json("/api/v1/summary").await;
    for key in [
        "studies_by_state",
        "open_by_priority",
        "studies_this_year",
        "diagnosis_centers",
    ] {
        assert_eq!(after[key], summary[key], "catalog unchanged: {key}");
    }
    assert_eq!(summary["studies_this_year"], 1, "{summary}");
    assert!(t.spooled().is_empty(), "no spool file left behind");
    t.stop().await;
}

#[tokio::test]
async fn the_upload_client_reports_every_hostile_file_and_sends_the_rest() {
    let limits = corpus_limits();
    let l = limits.clone();
    let t = TestServer::start_with(move |c| c.limits = l).await;
    let dir = t.dir.path().join("corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bad = 0;
    for (i, case) in corpus::corpus(&limits).iter().enumerate() {
        if let Send::Instance(bytes) = &case.send {
            std::fs::write(dir.join(format!("bad-{i:03}.dcm")), bytes).unwrap();
            bad += 1;
        }
    }
    // two good files among them: the base and a whole synthetic study
    std::fs::write(dir.join("good-base.dcm"), corpus::base_instance()).unwrap();
    let study = tamiz::synth::plan_studies(1, 77, 0.0, 256, 208, &["CLINIC B"]).remove(0);
    let good = study_files(&dir.join("good-study"), &study);
    let (url, d, token) = (t.url.clone(), dir.clone(), t.token("admin").to_owned());
    // Off the runtime thread: the server under test runs on it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tamiz"))
            .args(["upload", "--url", &url])
            .env("TAMIZ_TOKEN", token)
            .arg(&d)
            .output()
            .expect("run tamiz upload")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 when some files failed (not a crash): {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = stdout.lines().filter(|l| l.starts_with("FAILED")).count();
    let stored = stdout.lines().filter(|l| l.starts_with("stored")).count();
    assert_eq!(failed, bad, "every hostile file is reported:\n{stdout}");
    assert_eq!(stored, 1 + good.len(), "every good file is sent:\n{stdout}");
    assert!(
        stdout.contains("sequences are nested deeper than 64 levels"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "{} file(s): {} stored, {bad} failed",
        bad + 1 + good.len(),
        1 + good.len()
    )));
    t.wait_worklisted(&study.study_uid).await;
    assert_eq!(t.stored_objects().await.len(), 1 + good.len());
    t.stop().await;
}

/// Writes the corpus as libFuzzer seeds: instance files for `ingest_file`, request
/// bodies (first byte: the chunking) for `stow_multipart`. Run by `scripts/fuzz.sh`.
#[test]
#[ignore = "writes the fuzz seed corpus; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let out = PathBuf::from(std::env::var("FUZZ_SEEDS").expect("FUZZ_SEEDS=folder"));
    let (files, bodies) = (out.join("ingest_file"), out.join("stow_multipart"));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::create_dir_all(&bodies).unwrap();
    let limits = Limits {
        max_instance_bytes: 1 << 20,
        max_request_bytes: 4 << 20,
        max_multipart_header_bytes: 4096,
        ..Limits::default()
    };
    let fuzz_boundary = |b: &[u8]| -> Vec<u8> {
        // the fuzz target's boundary is `fuzzb`
        let from = corpus::BOUNDARY.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i..].starts_with(from) {
                out.extend_from_slice(b"fuzzb");
                i += from.len();
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    };
    let mut n = 0;
    let mut add_body = |body: Vec<u8>, chunking: u8| {
        if body.len() <= 256 << 10 {
            let mut seed = vec![chunking];
            seed.extend(fuzz_boundary(&body));
            std::fs::write(bodies.join(format!("seed-{n:03}")), seed).unwrap();
            n += 1;
        }
    };
    let base = corpus::base_instance();
    add_body(multipart(std::slice::from_ref(&base)).1, 0);
    add_body(multipart(&[base.clone(), base.clone()]).1, 13);
    for (i, case) in corpus::corpus(&limits).iter().enumerate() {
        match &case.send {
            Send::Instance(b) | Send::InstanceToStudy(_, b) => {
                if b.len() <= 256 << 10 {
                    std::fs::write(files.join(format!("seed-{i:03}")), b).unwrap();
                }
                add_body(multipart(std::slice::from_ref(b)).1, i as u8);
            }
            Send::Raw { path, body, .. } if path == "/dicomweb/studies" => {
                add_body(body.clone(), i as u8)
            }
            Send::Raw { .. } => {}
        }
    }
    std::fs::write(files.join("seed-base"), &base).unwrap();
}
