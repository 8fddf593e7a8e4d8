//! The DICOM listener with real peers: dcmtk's `echoscu` and `storescu` (called as
//! `/usr/bin/...`: the test venv's pynetdicom scripts would shadow them) and
//! pynetdicom. Studies pushed over C-STORE take the same path as STOW-RS: validated,
//! stored, catalogued for the imaging center the calling AE title belongs to, triaged
//! and put on a worklist; refusals carry the exact status and Error Comment.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{plan, study_files, TestServer};

/// A server with its DICOM listener on a free loopback port.
async fn server() -> TestServer {
    TestServer::start_with(|c| c.dicom.addr = Some("127.0.0.1:0".into())).await
}

fn port(t: &TestServer) -> String {
    t.server
        .dicom_addr
        .expect("the DICOM listener runs")
        .port()
        .to_string()
}

/// Runs a dcmtk tool; its output whatever the exit status.
fn dcmtk(tool: &str, args: &[&str]) -> Output {
    let path = Path::new("/usr/bin").join(tool);
    std::process::Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is not runnable ({e}): run `scripts/setup.sh --test`",
                path.display()
            )
        })
}

/// `storescu` run on a blocking thread (the server runs on this test's runtime).
async fn storescu(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        dcmtk("storescu", &a)
    })
    .await
    .expect("storescu thread")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn paths(files: &[(PathBuf, Vec<u8>)]) -> Vec<String> {
    files.iter().map(|f| f.0.display().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_study_over_one_association_reaches_the_worklist_of_its_ae_titles_center() {
    let t = server().await;
    let p = port(&t);
    let echo = tokio::task::spawn_blocking({
        let p = p.clone();
        move || {
            dcmtk(
                "echoscu",
                &["-aet", "CLINIC_A_MG", "-aec", "TAMIZ", "127.0.0.1", &p],
            )
        }
    })
    .await
    .unwrap();
    assert!(echo.status.success(), "C-ECHO failed: {}", text(&echo));

    // The synthetic study says Institution Name "CLINIC B"; the AE title is clinic-a's,
    // and the AE title decides.
    let study = plan(4101, true);
    let files = study_files(&t.dir.path().join("in"), &study);
    let mut args: Vec<String> = ["-aet", "CLINIC_A_MG", "-aec", "TAMIZ", "127.0.0.1", &p]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(paths(&files));
    let out = storescu(args).await;
    assert!(out.status.success(), "storescu failed: {}", text(&out));

    let status = t.wait_worklisted(&study.study_uid).await;
    assert_eq!(status.instances, 4);
    assert_eq!(status.imaging_center.as_deref(), Some("clinic-a"));
    let item = status.worklist.expect("worklisted");
    assert_eq!(item.center, "north", "clinic-a's home diagnosis center");
    assert!(t
        .metrics_text()
        .await
        .contains("dicom_c_store_requests_total{outcome=\"stored\"} 4"));
    t.stop().await;
}
