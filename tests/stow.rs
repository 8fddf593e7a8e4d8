//! STOW-RS ingest against a real server: the happy path to a worklist, resends,
//! conflicts, and every kind of bad input (which must store nothing).

mod common;

use common::*;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// Re-encodes a DICOM file after `f` edits it.
fn mutate(bytes: &[u8], f: impl FnOnce(&mut DefaultDicomObject)) -> Vec<u8> {
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(&bytes[128..])
        .expect("parse test file");
    f(&mut obj);
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("write test file");
    out
}

fn put_str(obj: &mut DefaultDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

#[tokio::test]
async fn four_views_reach_the_home_center_worklist_in_priority_order() {
    let t = TestServer::start().await;
    let dir = t.dir.path().join("in");
    let sick = plan(101, true);
    let healthy = plan(202, false);
    // clinic-a declared in the header → home center "north"
    let files = study_parts(&dir, &sick);
    let (status, body) = t.stow("/dicomweb/studies", &files, Some("clinic-a")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seq(&body, "00081199").len(), 4);
    // no header: Institution Name "CLINIC B" identifies clinic-b → home center "central"
    let healthy_north = plan(203, false);
    let files = study_parts(&dir, &healthy);
    let (status, body) = t
        .stow(
            &format!("/dicomweb/studies/{}", healthy.study_uid),
            &files,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let files = study_parts(&dir, &healthy_north);
    assert_eq!(
        t.stow("/dicomweb/studies", &files, Some("clinic-a"))
            .await
            .0,
        200
    );

    let s = t.wait_worklisted(&sick.study_uid).await;
    let h = t.wait_worklisted(&healthy.study_uid).await;
    t.wait_worklisted(&healthy_north.study_uid).await;

    let (code, sick_json) = t
        .get_json(&format!("/api/v1/studies/{}", sick.study_uid))
        .await;
    assert_eq!(code, 200);
    assert_eq!(sick_json["state"], "worklisted");
    assert_eq!(sick_json["triaged"], true);
    assert_eq!(sick_json["center"], "north");
    assert_eq!(
        sick_json["priority"], "urgent",
        "a 14 mm spiculated mass must be urgent: {sick_json}"
    );
    assert!(sick_json["reason"]
        .as_str()
        .unwrap()
        .contains("home diagnosis center of imaging center clinic-a"));
    assert!(sick_json["due"].as_str().unwrap().ends_with('Z'));
    assert_eq!(sick_json["view_scores"].as_array().unwrap().len(), 4);
    let (sick_score, healthy_score) = (
        s.worklist.unwrap().score.unwrap(),
        h.worklist.as_ref().unwrap().score.unwrap(),
    );
    assert!(
        sick_score > healthy_score,
        "lesion {sick_score} vs normal {healthy_score}"
    );
    assert_eq!(h.worklist.as_ref().unwrap().center, "central");
    assert_ne!(h.worklist.as_ref().unwrap().priority, "urgent");
    // left breast carries the lesion
    assert!(sick_json["score_left"].as_f64() > sick_json["score_right"].as_f64());

    // north's worklist: the urgent study first, then the normal one
    let (_, wl) = t.get_json("/api/v1/centers/north/worklist").await;
    let items = wl["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["study_uid"], sick.study_uid.as_str());
    assert_eq!(items[1]["study_uid"], healthy_north.study_uid.as_str());

    // the coordinator sees both centers
    let (_, summary) = t.get_json("/api/v1/summary").await;
    assert_eq!(summary["studies_by_state"]["worklisted"], 3);
    let open: u64 = summary["open_by_priority"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(open, 3);
    assert!(summary["open_by_priority"]["urgent"].as_u64().unwrap() >= 1);
    let north = summary["diagnosis_centers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["center"] == "north")
        .unwrap();
    assert_eq!(north["queued"], 2);
    t.stop().await;
}

#[tokio::test]
async fn resending_an_instance_is_a_success_without_a_second_copy() {
    let t = TestServer::start().await;
    let files = study_files(&t.dir.path().join("in"), &plan(7, false));
    let one = vec![files[0].1.clone()];
    assert_eq!(t.stow("/dicomweb/studies", &one, None).await.0, 200);
    let (status, body) = t.stow("/dicomweb/studies", &one, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seq(&body, "00081199").len(), 1);
    assert_eq!(t.stored_objects().await.len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn different_bytes_under_a_known_sop_uid_are_refused_and_the_stored_copy_kept() {
    let t = TestServer::start().await;
    let files = study_files(&t.dir.path().join("in"), &plan(8, false));
    let original = files[0].1.clone();
    assert_eq!(
        t.stow("/dicomweb/studies", std::slice::from_ref(&original), None)
            .await
            .0,
        200
    );
    let changed = mutate(&original, |o| {
        put_str(o, tags::PATIENT_ID, VR::LO, "SOMEONE-ELSE")
    });
    let (status, body) = t.stow("/dicomweb/studies", &[changed], None).await;
    assert_eq!(status, 409, "{body}");
    let failed = seq(&body, "00081198");
    assert_eq!(failed.len(), 1);
    assert_eq!(first(failed[0], "00081197"), 0x0111);
    assert!(failure_text(failed[0])
        .as_str()
        .unwrap()
        .contains("different content"));
    let stored = t.stored_objects().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        t.server.store.get(&stored[0]).await.unwrap().to_vec(),
        original,
        "stored instance untouched"
    );
    t.stop().await;
}

#[tokio::test]
async fn bad_instances_get_a_named_error_and_store_nothing() {
    let t = TestServer::start().await;
    let files = study_files(&t.dir.path().join("in"), &plan(9, false));
    let good = files[0].1.clone();
    let base = files[1].1.clone();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            base[..base.len() / 2].to_vec(),
            "not a DICOM file",
        ),
        (
            "not dicom",
            b"hello, this is not DICOM".to_vec(),
            "not a DICOM file",
        ),
        (
            "CT",
            mutate(&base, |o| {
                put_str(o, tags::MODALITY, VR::CS, "CT");
                put_str(o, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2");
            }),
            "not a mammogram: Modality CT",
        ),
        (
            "no laterality",
            mutate(&base, |o| {
                o.remove_element(tags::IMAGE_LATERALITY);
            }),
            "missing laterality",
        ),
        (
            "hostile UID",
            mutate(&base, |o| {
                put_str(o, tags::SOP_INSTANCE_UID, VR::UI, "../../etc/passwd")
            }),
            "invalid UID",
        ),
        (
            "oversized",
            mutate(&base, |o| {
                o.put(DataElement::new(
                    tags::ROWS,
                    VR::US,
                    PrimitiveValue::from(60000u16),
                ));
            }),
            "image too large: 60000x1664",
        ),
    ];
    let mut parts = vec![good];
    parts.extend(cases.iter().map(|c| c.1.clone()));
    let (status, body) = t.stow("/dicomweb/studies", &parts, None).await;
    assert_eq!(status, 202, "some stored, some failed: {body}");
    assert_eq!(seq(&body, "00081199").len(), 1);
    let failed = seq(&body, "00081198");
    assert_eq!(failed.len(), cases.len(), "{body}");
    let comments: Vec<String> = failed
        .iter()
        .map(|f| failure_text(f).as_str().unwrap().to_owned())
        .collect();
    for (name, _, expected) in &cases {
        assert!(
            comments.iter().any(|c| c.contains(expected)),
            "{name}: no failure mentions `{expected}` in {comments:?}"
        );
    }
    assert!(failed
        .iter()
        .all(|f| first(f, "00081197").as_u64().is_some()));
    assert_eq!(
        t.stored_objects().await.len(),
        1,
        "only the good instance is stored"
    );

    // all bad: 409
    let (status, _) = t
        .stow("/dicomweb/studies", &[cases[1].1.clone()], None)
        .await;
    assert_eq!(status, 409);
    t.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_refused_whole() {
    let t = TestServer::start().await;
    let files = study_files(&t.dir.path().join("in"), &plan(10, false));
    let (ct, body) = multipart(&[files[0].1.clone()]);
    let post = |ct: String, body: Vec<u8>, path: &'static str| {
        let req = t
            .http
            .post(format!("{}{path}", t.url))
            .header("Authorization", t.bearer("admin"))
            .header("Content-Type", ct)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let code = r.status().as_u16();
            (
                code,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    // wrong boundary: the body's parts are never found
    let (code, json) = post(
        ct.replace("tamiz-test-boundary-8c1f", "some-other-boundary"),
        body.clone(),
        "/dicomweb/studies",
    )
    .await;
    assert_eq!(code, 400, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("multipart"),
        "{json}"
    );
    // not multipart/related
    let (code, _) = post(
        "application/dicom".into(),
        body.clone(),
        "/dicomweb/studies",
    )
    .await;
    assert_eq!(code, 415);
    // related, but of JSON parts
    let (code, _) = post(
        ct.replace("application/dicom", "application/json"),
        body.clone(),
        "/dicomweb/studies",
    )
    .await;
    assert_eq!(code, 415);
    // no boundary
    let (code, json) = post(
        "multipart/related; type=\"application/dicom\"".into(),
        body.clone(),
        "/dicomweb/studies",
    )
    .await;
    assert_eq!(code, 400);
    assert!(json["error"].as_str().unwrap().contains("boundary"));
    // invalid study UID in the URL
    let (code, _) = post(ct.clone(), body.clone(), "/dicomweb/studies/1..2").await;
    assert_eq!(code, 400);
    // instance of another study than the URL names: that instance fails (409)
    let (code, json) = post(ct.clone(), body.clone(), "/dicomweb/studies/1.2.3.4").await;
    assert_eq!(code, 409);
    assert!(
        json.to_string().contains("not to the study 1.2.3.4"),
        "{json}"
    );
    assert!(t.stored_objects().await.is_empty());
    // bad requests on the worklist API
    let (code, err) = t
        .post_json(
            "/api/v1/centers/nowhere/worklist/claim",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (404, Some("unknown diagnosis center `nowhere`"))
    );
    let (code, err) = t
        .post_json(
            "/api/v1/worklist/1/reading",
            serde_json::json!({"birads": 9, "density": "A"}),
        )
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (400, Some("birads must be 0-6, got 9"))
    );
    let (code, err) = t
        .post_json(
            "/api/v1/worklist/1/reading",
            serde_json::json!({"birads": 1, "density": "A"}),
        )
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (404, Some("worklist item 1 not found"))
    );
    let (code, err) = t.get_json("/api/v1/studies/..%2F..%2Fetc").await;
    assert_eq!(
        (code, err["error"].as_str()),
        (400, Some("study UID is not a valid UID"))
    );
    t.stop().await;
}

#[tokio::test]
async fn an_instance_over_the_size_limit_fails_alone() {
    let t = TestServer::start_with(|c| c.limits.max_instance_bytes = 1 << 20).await;
    let files = study_files(&t.dir.path().join("in"), &plan(11, false));
    let (status, body) = t
        .stow("/dicomweb/studies", &[files[0].1.clone()], None)
        .await;
    assert_eq!(status, 409, "{body}");
    let failed = seq(&body, "00081198");
    assert!(failure_text(failed[0])
        .as_str()
        .unwrap()
        .contains("exceeds the limit"));
    assert!(t.stored_objects().await.is_empty());
    t.stop().await;
}

/// Sixteen uploads of one new instance at once: one stores it, the others hear
/// "stored" too (a resend), none is refused or told to retry, and one object is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_uploads_racing_all_succeed_and_store_one_object() {
    let t = std::sync::Arc::new(TestServer::start().await);
    let base = common::corpus::base_instance();
    assert_eq!(
        t.stow("/dicomweb/studies", std::slice::from_ref(&base), None)
            .await
            .0,
        200
    );
    // Another view of the stored study, sent sixteen times at once.
    let bytes = common::corpus::mutate(&base, |o| {
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.1.99"),
        ));
        o.meta_mut().media_storage_sop_instance_uid = "1.2.3.1.99".into();
    });
    // With 24 MiB of attributes, so that the parses overlap as in the hostile bench.
    let at = common::corpus::dataset_start(&bytes);
    let blob = common::corpus::explicit((0x0009, 0x1010), b"OB", &vec![0x5A; 24 << 20]);
    let bytes = [&bytes[..at], &blob, &bytes[at..]].concat();
    let sends = (0..16).map(|_| {
        let (t, bytes) = (t.clone(), bytes.clone());
        tokio::spawn(async move { t.stow("/dicomweb/studies", &[bytes], None).await })
    });
    for s in sends {
        let (status, body) = s.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(t.stored_objects().await.len(), 2);
    assert_eq!(t.server.catalog.counts().await.unwrap().instances, 2);
}

/// Sixteen uploads at once of an image of another woman under a stored study: every
/// one is refused with the reason (the object one of them wrote and removed again
/// never turns the others into "retry later"), and nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_uploads_of_a_refused_instance_are_all_refused_with_the_reason() {
    let t = std::sync::Arc::new(TestServer::start().await);
    let base = common::corpus::base_instance();
    assert_eq!(
        t.stow("/dicomweb/studies", std::slice::from_ref(&base), None)
            .await
            .0,
        200
    );
    let other = common::corpus::mutate(&base, |o| {
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.1.98"),
        ));
        o.meta_mut().media_storage_sop_instance_uid = "1.2.3.1.98".into();
        o.put(DataElement::new(
            tags::PATIENT_ID,
            VR::LO,
            PrimitiveValue::from("SOMEONE-ELSE"),
        ));
    });
    let at = common::corpus::dataset_start(&other);
    let blob = common::corpus::explicit((0x0009, 0x1010), b"OB", &vec![0x5A; 8 << 20]);
    let other = [&other[..at], &blob, &other[at..]].concat();
    let sends = (0..16).map(|_| {
        let (t, bytes) = (t.clone(), other.clone());
        tokio::spawn(async move { t.stow("/dicomweb/studies", &[bytes], None).await })
    });
    for s in sends {
        let (status, body) = s.await.unwrap();
        assert_eq!(status, 409, "{body}");
        let failed = seq(&body, "00081198");
        assert_eq!(first(failed[0], "00081197"), 0xA900, "{body}");
        assert!(failure_text(failed[0])
            .as_str()
            .unwrap()
            .ends_with("its Patient ID (or Issuer of Patient ID) differs from the one of the study's instances already stored"));
    }
    assert_eq!(
        t.stored_objects().await.len(),
        1,
        "only the first woman's image"
    );
}

#[tokio::test]
async fn a_client_that_accepts_only_xml_is_told_406_before_anything_is_stored() {
    let t = TestServer::start().await;
    let p = plan(4150, false);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    let (status, body) = t
        .stow_as(
            Some("uploader-clinic-a"),
            "/dicomweb/studies",
            &parts[..1],
            &[("Accept", "application/dicom+xml".into())],
        )
        .await;
    assert_eq!(status, 406);
    assert_eq!(
        body["error"],
        "this server answers STOW-RS in application/dicom+json only; the request accepts application/dicom+xml"
    );
    let (status, _) = t
        .stow_as(
            Some("uploader-clinic-a"),
            "/dicomweb/studies",
            &parts[..1],
            &[(
                "Accept",
                "application/dicom+json;q=0, application/dicom+xml".into(),
            )],
        )
        .await;
    assert_eq!(status, 406, "q=0 refuses JSON");
    assert!(t.stored_objects().await.is_empty());
    // XML preferred, JSON acceptable: answered in JSON.
    let (status, body) = t
        .stow_as(
            Some("uploader-clinic-a"),
            "/dicomweb/studies",
            &parts[..1],
            &[(
                "Accept",
                "application/dicom+xml, application/dicom+json;q=0.5".into(),
            )],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seq(&body, "00081199").len(), 1);
    t.stop().await;
}
