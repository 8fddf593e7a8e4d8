//! The Mammography CAD SR (TID 4000) a worker writes for each scored study (issue:
//! DICOM as imaging centers really send it, standard outputs): fetched through the
//! API, checked by dcmtk's `dsrdump` (the SR IOD's content constraints, no warning or
//! error) and read back attribute by attribute against the study's triage.

mod common;

use std::path::Path;

use common::enhanced;
use common::*;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde_json::Value;

/// `GET /api/v1/studies/{study}/cad-sr` as `user`: status, Content-Type and body.
async fn fetch(t: &TestServer, user: &str, study: &str) -> (u16, String, Vec<u8>) {
    let resp = t
        .http
        .get(format!("{}/api/v1/studies/{study}/cad-sr", t.url))
        .header("Authorization", t.bearer(user))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

fn dsrdump(file: &Path) -> (bool, String, String) {
    let out = std::process::Command::new("/usr/bin/dsrdump")
        .args(["+Pu", "+Pt", "+Pc", "+Pl"])
        .arg(file)
        .output()
        .expect("dsrdump is not runnable: run `scripts/setup.sh --test`");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
        .unwrap_or_default()
}

fn items(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

fn name_code(item: &InMemDicomObject) -> String {
    text(
        &items(item, tags::CONCEPT_NAME_CODE_SEQUENCE)[0],
        tags::CODE_VALUE,
    )
}

/// The content item named `code` among `obj`'s children.
fn child<'a>(obj: &'a InMemDicomObject, code: &str) -> Vec<&'a InMemDicomObject> {
    items(obj, tags::CONTENT_SEQUENCE)
        .iter()
        .filter(|i| name_code(i) == code)
        .collect()
}

fn value_code(item: &InMemDicomObject) -> String {
    text(
        &items(item, tags::CONCEPT_CODE_SEQUENCE)[0],
        tags::CODE_VALUE,
    )
}

fn referenced_sop(item: &InMemDicomObject) -> String {
    text(
        &items(item, tags::REFERENCED_SOP_SEQUENCE)[0],
        tags::REFERENCED_SOP_INSTANCE_UID,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scored_study_has_a_mammography_cad_sr_that_dsrdump_reads_cleanly() {
    let t = TestServer::start().await;
    let (card, _) = tamiz::model::ModelCard::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/triage.toml"),
    )
    .expect("the shipped model card");
    for (seed, lesion) in [(601u64, true), (602, false)] {
        let p = plan(seed, lesion);
        let parts = study_parts(&t.dir.path().join(format!("s{seed}")), &p);
        let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
        assert_eq!(code, 200, "{body}");
        let s = t.wait_worklisted(&p.study_uid).await;
        let priority = s.worklist.as_ref().unwrap().priority.clone();
        let scores: Vec<Value> = s.view_scores.clone().unwrap().as_array().unwrap().clone();

        let (status, ct, bytes) = fetch(&t, "radiologist-central", &p.study_uid).await;
        assert_eq!((status, ct.as_str()), (200, "application/dicom"));
        let file = t.dir.path().join(format!("sr-{seed}.dcm"));
        std::fs::write(&file, &bytes).unwrap();

        // dcmtk reads it as a Mammography CAD SR with no warning or error.
        let (ok, out, err) = dsrdump(&file);
        assert!(ok, "dsrdump failed: {err}\n{out}");
        // dcmtk checks the SR IOD's content constraints but not templates, and says so.
        for line in err.lines() {
            assert_eq!(
                line, "W: Check for template constraints not yet supported",
                "dsrdump warned: {err}\n{out}"
            );
        }
        assert!(out.contains("Mammography CAD SR"), "{out}");
        assert!(out.contains("TID 4000 (DCMR)"), "{out}");
        assert!(out.contains(&format!("\"{}\"", card.name)), "{out}");

        let obj = dicom_object::OpenFileOptions::new()
            .from_reader(&bytes[128..])
            .unwrap();
        assert_eq!(
            text(&obj, tags::SOP_CLASS_UID),
            tamiz::cad_sr::MAMMOGRAPHY_CAD_SR
        );
        assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), p.study_uid);
        assert_eq!(text(&obj, tags::PATIENT_ID), p.patient_id);
        assert_eq!(text(&obj, tags::MODALITY), "SR");
        assert_eq!(name_code(&obj), "111036");

        // The image library holds exactly the scored images, with laterality and view.
        let library = child(&obj, "111028");
        assert_eq!(library.len(), 1);
        let mut listed: Vec<(String, String, String)> = items(library[0], tags::CONTENT_SEQUENCE)
            .iter()
            .map(|img| {
                let lat = value_code(child(img, "111027")[0]);
                let view = value_code(child(img, "111031")[0]);
                (referenced_sop(img), lat, view)
            })
            .collect();
        listed.sort();
        let mut expected: Vec<(String, String, String)> = scores
            .iter()
            .map(|v| {
                let lat = if v["laterality"] == "L" {
                    "7771000"
                } else {
                    "24028007"
                };
                let view = if v["view"] == "CC" {
                    "399162004"
                } else {
                    "399368009"
                };
                (
                    v["sop_uid"].as_str().unwrap().to_owned(),
                    lat.to_owned(),
                    view.to_owned(),
                )
            })
            .collect();
        expected.sort();
        assert_eq!(listed, expected);

        // Findings: with findings exactly when the study is urgent; each view's score.
        let summary = child(&obj, "111017");
        let want = if priority == "urgent" {
            "111242"
        } else {
            "111241"
        };
        assert_eq!(value_code(summary[0]), want, "priority {priority}");
        let impressions = child(summary[0], "111034");
        assert_eq!(impressions.len(), scores.len());
        for imp in impressions {
            let num = child(imp, "111047")[0];
            let measured = &items(num, tags::MEASURED_VALUE_SEQUENCE)[0];
            let value: f64 = text(measured, tags::NUMERIC_VALUE).parse().unwrap();
            let sop = referenced_sop(child_any(num));
            let score = scores
                .iter()
                .find(|v| v["sop_uid"] == sop.as_str())
                .unwrap()["score"]
                .as_f64()
                .unwrap();
            assert!((value - score).abs() < 1e-5, "{sop}: {value} vs {score}");
            let intent = value_code(child(imp, "111056")[0]);
            let required = score >= card.operating_points.urgent as f64;
            assert_eq!(intent, if required { "111150" } else { "111151" });
        }

        // The algorithm: name, version, score scale and operating points.
        let analyses = child(&obj, "111065");
        assert_eq!(value_code(analyses[0]), "111222");
        let performed = child(child(analyses[0], "111062")[0], "111004")[0];
        assert_eq!(
            text(child(performed, "111001")[0], tags::TEXT_VALUE),
            card.name
        );
        assert_eq!(
            text(child(performed, "111003")[0], tags::TEXT_VALUE),
            card.version
        );
        assert_eq!(
            text(child(performed, "111002")[0], tags::TEXT_VALUE),
            tamiz::cad_sr::parameters(&card)
        );
        assert_eq!(value_code(child(&obj, "111064")[0]), "111225");
    }
    t.stop().await;
}

/// The only child of a content item (the image a score is inferred from).
fn child_any(item: &InMemDicomObject) -> &InMemDicomObject {
    let c = items(item, tags::CONTENT_SEQUENCE);
    assert_eq!(c.len(), 1);
    &c[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_not_scored_has_no_report_and_other_centers_get_none() {
    let t = TestServer::start_with(|c| c.completeness.stable_after_secs = 1).await;
    // Tomosynthesis only: nothing the model scores; it goes out untriaged.
    let p = plan(611, false);
    let parts: Vec<Vec<u8>> = tamiz::synth::study_objects(&p)
        .iter()
        .enumerate()
        .map(|(i, (_, _, v))| enhanced::bytes(&enhanced::tomosynthesis(v, 2, &format!("7{i}"))))
        .collect();
    let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    let s = t.wait_worklisted(&p.study_uid).await;
    assert_eq!(s.worklist.as_ref().unwrap().priority, "untriaged");
    let (status, _, body) = fetch(&t, "admin", &p.study_uid).await;
    assert_eq!(status, 404);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"],
        format!("study {} has no CAD SR: it was not scored", p.study_uid)
    );
    // A radiologist of another diagnosis center may not see the study, nor its report.
    let (status, _, body) = fetch(&t, "radiologist-north", &p.study_uid).await;
    assert_eq!(status, 403);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"],
        format!(
            "a radiologist user of north may not see study {}: it belongs to another center",
            p.study_uid
        )
    );
    t.stop().await;
}
