//! Operations endpoints: `/readyz` says whether this process can take work, and names
//! what is missing when it cannot.

mod common;

use common::*;

#[tokio::test]
async fn readyz_reports_the_catalog_store_and_model_and_names_what_is_missing() {
    let t = TestServer::start().await;
    let (status, body) = t.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["catalog"], "ok");
    assert_eq!(body["object_store"], "ok");
    assert!(
        body["model"].as_str().is_some_and(|m| m.contains('@')),
        "a process with workers names its model: {body}"
    );

    if common::backends::scaled() {
        // Unreachable S3 is covered in tests/object_store.rs; this moves a folder.
        t.stop().await;
        return;
    }
    let objects = t.dir.path().join("data/objects");
    let moved = t.dir.path().join("data/objects-away");
    std::fs::rename(&objects, &moved).unwrap();
    let resp = t
        .http
        .get(format!("{}/readyz", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"],
        "not ready: object store unreachable (see server log)"
    );
    std::fs::rename(&moved, &objects).unwrap();
    assert_eq!(t.get_json("/readyz").await.0, 200);
    t.stop().await;

    let api_only = TestServer::start_with(|c| c.worker.concurrency = 0).await;
    let (status, body) = api_only.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert!(
        body["model"].is_null(),
        "an API-only node runs no model: {body}"
    );
    api_only.stop().await;
}

/// `/metrics` after a study went through: ingest counts and bytes, stage latencies,
/// jobs by state, and the backlog per center and priority, in the Prometheus text
/// format; no UID or patient data in it.
#[tokio::test]
async fn metrics_report_ingest_stages_jobs_and_backlog_without_patient_data() {
    let t = TestServer::start().await;
    let p = plan(61, true);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    assert_eq!(
        t.stow("/dicomweb/studies", &parts, Some("clinic-a"))
            .await
            .0,
        200
    );
    let item = t.wait_worklisted(&p.study_uid).await.worklist.unwrap();
    let resp = t
        .http
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
    };
    // Counters are this process's (other tests of this binary may add to them).
    assert!(value(r#"tamiz_ingest_instances_total{outcome="stored"}"#) >= 4.0);
    assert!(value("tamiz_ingest_stored_bytes_total") > 0.0);
    assert!(value(r#"tamiz_job_attempts_total{outcome="done"}"#) >= 1.0);
    for stage in ["fetch", "decode", "preprocess", "inference"] {
        assert!(
            value(&format!(r#"tamiz_stage_seconds_count{{stage="{stage}"}}"#)) >= 1.0,
            "{stage}"
        );
    }
    // Gauges come from this test's own catalog: exact.
    assert_eq!(value(r#"tamiz_jobs{state="done"}"#), 1.0);
    let series = format!(
        r#"tamiz_worklist_open_items{{center="north",priority="{}"}}"#,
        item.priority
    );
    assert_eq!(value(&series), 1.0);
    assert!(!text.contains(&p.study_uid), "no UIDs in metrics");
    assert!(!text.contains(&p.patient_id), "no patient IDs in metrics");
    t.stop().await;
}

/// The `pipeline.toml` the Kubernetes manifests ship is one tamiz accepts.
#[test]
fn the_kubernetes_config_map_holds_a_valid_pipeline_toml() {
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/configmap.yaml"),
    )
    .unwrap();
    let toml: String = yaml
        .lines()
        .skip_while(|l| l.trim() != "pipeline.toml: |")
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, &toml).unwrap();
    let c = tamiz::config::Config::load(&path, true).expect("the config map's pipeline.toml");
    assert_eq!(c.server.http_addr, "0.0.0.0:8042");
    assert_eq!(c.worker.concurrency, 0, "API nodes run no workers");
    assert_eq!(
        c.catalog.salt_file.as_deref(),
        Some(std::path::Path::new("/etc/tamiz/secret/pseudonym-salt"))
    );
}
