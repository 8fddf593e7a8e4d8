//! The S3 server failing under a running `tamiz serve`: a private s3s-fs is started
//! for this test, killed while the server runs and restarted. While it is down,
//! `/readyz` says the object store is unreachable and an upload is answered 503 with
//! Retry-After, failure reason 0110 and a comment naming the object store, and nothing
//! of it is catalogued; what was stored before is untouched; once S3 is back the same
//! upload succeeds. The server runs as its own process because the S3 endpoint comes
//! from the process environment (the AWS variables), as in production.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The s3s-fs that `scripts/setup.sh --test` builds; `None` (skip) outside CI when it
/// is missing.
fn s3s_fs() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/s3s/bin/s3s-fs");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: run `scripts/setup.sh --test`",
        bin.display()
    );
    eprintln!(
        "skipped: {} is missing (scripts/setup.sh --test)",
        bin.display()
    );
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} is not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_s3(bin: &Path, root: &Path, port: u16) -> Child {
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "outage", "--secret-key", "outage-secret"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    wait_listening(port, "s3s-fs");
    child
}

/// Kills and reaps the children when the test ends, however it ends.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn stow(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    parts: &[Vec<u8>],
) -> (u16, Option<String>, Value) {
    let (ct, body) = multipart(parts);
    let resp = http
        .post(format!("{url}/dicomweb/studies"))
        .header("Content-Type", ct)
        .header("Authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_s3_outage_under_a_running_server_is_a_clear_retryable_error_and_harms_nothing() {
    let Some(bin) = s3s_fs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(s3_root.join("outage-bucket")).unwrap();
    let s3_port = free_port();
    let mut children = Reap(vec![start_s3(&bin, &s3_root, s3_port)]);

    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        "default_diagnosis_center = \"central\"\n[worker]\nconcurrency = 0\n\
         [[diagnosis_centers]]\nid = \"central\"\nname = \"Central\"\n\
         [[imaging_centers]]\nid = \"clinic-a\"\nname = \"Clinic A\"\nhome = \"central\"\n",
    )
    .unwrap();
    // The uploader's token, made with the CLI against the catalog the server will use.
    let added = Command::new(env!("CARGO_BIN_EXE_tamiz"))
        .args([
            "users",
            "add",
            "uploader",
            "--role",
            "imaging_center",
            "--center",
            "clinic-a",
            "--config",
        ])
        .arg(&config)
        .env("TAMIZ_DATA_DIR", dir.path().join("data"))
        .env_remove("TAMIZ_DATABASE_URL")
        .env_remove("TAMIZ_TOKEN_KEY_FILE")
        .env_remove("TAMIZ_PSEUDONYM_SALT_FILE")
        .output()
        .expect("tamiz users add");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let token = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    let http_port = free_port();
    let url = format!("http://127.0.0.1:{http_port}");
    children.0.push(
        Command::new(env!("CARGO_BIN_EXE_tamiz"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("TAMIZ_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("TAMIZ_DATA_DIR", dir.path().join("data"))
            .env("TAMIZ_S3_BUCKET", "outage-bucket")
            .env_remove("TAMIZ_DATABASE_URL")
            .env_remove("TAMIZ_TOKEN_KEY_FILE")
            .env_remove("TAMIZ_PSEUDONYM_SALT_FILE")
            .env_remove("TAMIZ_S3_PREFIX")
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{s3_port}"))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "outage")
            .env("AWS_SECRET_ACCESS_KEY", "outage-secret")
            .env("TAMIZ_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("start tamiz serve"),
    );
    wait_listening(http_port, "tamiz serve");
    let http = reqwest::Client::new();
    let work = dir.path().join("work");
    let a = plan(91, false);
    let b = plan(92, true);
    let a_parts = study_parts(&work, &a);
    let b_parts = study_parts(&work, &b);
    assert_eq!(stow(&http, &url, &token, &a_parts).await.0, 200);
    let objects_before = count_files(&s3_root.join("outage-bucket"));
    assert_eq!(objects_before, 4);

    // S3 goes away.
    {
        let s3 = &mut children.0[0];
        s3.kill().unwrap();
        s3.wait().unwrap();
    }
    let resp = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("5")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"],
        "not ready: object store unreachable (see server log)"
    );
    let (status, retry, body) = stow(&http, &url, &token, &b_parts[..2]).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some(), "Retry-After on a temporary failure");
    let failed = seq(&body, "00081198");
    assert_eq!(failed.len(), 2, "{body}");
    for f in failed {
        assert_eq!(first(f, "00081197"), 0x0110);
        assert_eq!(
            failure_text(f),
            "the object store failed or could not be reached (see server log); retry later"
        );
    }
    let (status, _) = get(
        &http,
        &format!("{url}/api/v1/studies/{}", b.study_uid),
        &token,
    )
    .await;
    assert_eq!(status, 404, "nothing of the study was catalogued");
    let (status, a_status) = get(
        &http,
        &format!("{url}/api/v1/studies/{}", a.study_uid),
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a_status["instances"], 4, "{a_status}");

    // S3 is back on the same port and data: the server recovers without a restart.
    children.0[0] = start_s3(&bin, &s3_root, s3_port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http.get(format!("{url}/readyz")).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = stow(&http, &url, &token, &b_parts).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count_files(&s3_root.join("outage-bucket")), 8);
    let (_, b_status) = get(
        &http,
        &format!("{url}/api/v1/studies/{}", b.study_uid),
        &token,
    )
    .await;
    assert_eq!(b_status["instances"], 4, "{b_status}");
    // Study A's objects are the bytes that were sent.
    for (path, bytes) in study_files(&work, &a) {
        let (_, sop) = tamiz::dicom::header_uids(&path);
        let found = find_file(
            &s3_root.join("outage-bucket"),
            &format!("{}.dcm", sop.unwrap()),
        )
        .expect("object of study A");
        assert_eq!(std::fs::read(found).unwrap(), bytes);
    }
}

/// GET as the uploader (who may see its own studies).
async fn get(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let resp = http
        .get(url)
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Files under `dir` (s3s-fs keeps one file per object, and its own state in
/// dot-files).
fn count_files(dir: &Path) -> usize {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .count()
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    walk(dir)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == name))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
