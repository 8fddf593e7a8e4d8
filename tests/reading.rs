//! A radiologist's day over HTTP: claim (exclusive), read, and the study leaves the
//! queue; the coordinator's summary follows.

mod common;

use common::*;
use serde_json::json;
use tamiz::catalog::Role;

#[tokio::test]
async fn claim_read_and_leave_the_queue() {
    let mut t = TestServer::start().await;
    t.add_user("ana", Role::Radiologist, Some("central")).await;
    t.add_user("ben", Role::Radiologist, Some("central")).await;
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
        t.post_json_as(who, "/api/v1/centers/central/worklist/claim", json!({}))
    };
    let ((a, ja), (b, jb)) = tokio::join!(claim("ana"), claim("ben"));
    let mut codes = [a, b];
    codes.sort();
    assert_eq!(codes, [200, 204], "{ja} {jb}");
    let (winner, item) = if a == 200 { ("ana", ja) } else { ("ben", jb) };
    assert_eq!(item["study_uid"], p.study_uid.as_str());
    assert_eq!(item["state"], "claimed");
    assert_eq!(
        item["claimed_by"], winner,
        "claimed under the signed-in name"
    );
    let id = item["id"].as_i64().unwrap();

    // Only the claimant may read it; a bad BI-RADS is refused and changes nothing; a
    // body naming a radiologist is refused (a reading is never recorded under a name
    // sent, only under the signed-in one).
    let other = if winner == "ana" { "ben" } else { "ana" };
    let path = format!("/api/v1/worklist/{id}/reading");
    let (code, err) = t
        .post_json_as(other, &path, json!({ "birads": 1, "density": "B" }))
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (
            409,
            Some(format!("worklist item {id} is claimed by another radiologist").as_str())
        )
    );
    let (code, err) = t
        .post_json_as(
            other,
            &path,
            json!({ "radiologist": winner, "birads": 1, "density": "B" }),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `radiologist`"),
        "{err}"
    );
    let (code, err) = t
        .post_json_as(winner, &path, json!({ "birads": 7, "density": "B" }))
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (400, Some("birads must be 0-6, got 7"))
    );
    let (code, body) = t
        .post_json_as(winner, &path, json!({ "birads": 2, "density": "C" }))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["radiologist"], winner);

    let (_, status) = t
        .get_json(&format!("/api/v1/studies/{}", p.study_uid))
        .await;
    assert_eq!(status["state"], "read");
    assert_eq!(status["reading"]["birads"], 2);
    assert_eq!(status["reading"]["density"], "C");
    assert_eq!(status["reading"]["radiologist"], winner);
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
