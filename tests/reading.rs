//! A radiologist's day over HTTP: claim (exclusive), read, and the study leaves the
//! queue; the coordinator's summary follows.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn claim_read_and_leave_the_queue() {
    let t = TestServer::start().await;
    let p = plan(41, false);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    assert_eq!(
        t.stow("/dicomweb/studies", &parts, Some("clinic-b"))
            .await
            .0,
        200
    );
    t.wait_worklisted(&p.study_uid).await;

    // Two radiologists press "next" at once: one gets the study, the other nothing.
    let claim = |who: &'static str| {
        t.post_json(
            "/api/v1/centers/central/worklist/claim",
            json!({ "radiologist": who }),
        )
    };
    let ((a, ja), (b, jb)) = tokio::join!(claim("ana"), claim("ben"));
    let mut codes = [a, b];
    codes.sort();
    assert_eq!(codes, [200, 204], "{ja} {jb}");
    let (winner, item) = if a == 200 { ("ana", ja) } else { ("ben", jb) };
    assert_eq!(item["study_uid"], p.study_uid.as_str());
    assert_eq!(item["state"], "claimed");
    let id = item["id"].as_i64().unwrap();

    // Only the claimant may read it; a bad BI-RADS is refused and changes nothing.
    let other = if winner == "ana" { "ben" } else { "ana" };
    let path = format!("/api/v1/worklist/{id}/reading");
    let (code, err) = t
        .post_json(
            &path,
            json!({ "radiologist": other, "birads": 1, "density": "B" }),
        )
        .await;
    assert_eq!(code, 409, "{err}");
    let (code, _) = t
        .post_json(
            &path,
            json!({ "radiologist": winner, "birads": 7, "density": "B" }),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = t
        .post_json(
            &path,
            json!({ "radiologist": winner, "birads": 2, "density": "C" }),
        )
        .await;
    assert_eq!(code, 200);

    let (_, status) = t
        .get_json(&format!("/api/v1/studies/{}", p.study_uid))
        .await;
    assert_eq!(status["state"], "read");
    assert_eq!(status["reading"]["birads"], 2);
    assert_eq!(status["reading"]["density"], "C");
    let (_, wl) = t.get_json("/api/v1/centers/central/worklist").await;
    assert!(wl["items"].as_array().unwrap().is_empty());
    let (_, summary) = t.get_json("/api/v1/summary").await;
    let central = summary["diagnosis_centers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["center"] == "central")
        .unwrap()
        .clone();
    assert_eq!(
        (central["read"].as_i64(), central["queued"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(summary["studies_this_year"], 1);
    let (code, _) = t.get_json("/api/v1/studies/1.2.3.999").await;
    assert_eq!(code, 404);
    t.stop().await;
}
