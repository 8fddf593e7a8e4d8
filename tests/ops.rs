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
