//! The enhanced mammography classes as imaging centers send them (issue: DICOM as
//! imaging centers really send it). Breast Tomosynthesis is stored and shown, never
//! scored, and its sender gets a warning, not a bare success and not a 202 on every
//! send. Breast Projection X-Ray keeps laterality and VOI in functional groups; they
//! are read from there. Real files over a real server, checked with dicomweb-client.

mod common;

use common::enhanced::{self, BREAST_TOMOSYNTHESIS};
use common::*;
use serde_json::Value;
use tamiz::catalog::StudyStatus;
use tamiz::dicom::pixels::decode_display;

const WARNING_TEXT: &str = "stored, not triaged: Breast Tomosynthesis (3 frames) is kept for reading; the triage model scores 2D projection views only";

/// A synthetic study's four views (R-CC, L-CC, R-MLO, L-MLO) as objects.
fn views(seed: u64, lesion: bool) -> (String, Vec<dicom_object::DefaultDicomObject>) {
    let p = plan(seed, lesion);
    let objs = tamiz::synth::study_objects(&p)
        .into_iter()
        .map(|(_, _, obj)| obj)
        .collect();
    (p.study_uid, objs)
}

fn sop_of(obj: &dicom_object::DefaultDicomObject) -> String {
    obj.meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_owned()
}

fn scored(s: &StudyStatus) -> Vec<String> {
    let mut uids: Vec<String> = s
        .view_scores
        .as_ref()
        .and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("no view scores: {s:?}"))
        .iter()
        .map(|v| v["sop_uid"].as_str().unwrap().to_owned())
        .collect();
    uids.sort();
    uids
}

/// The Referenced SOP item of a STOW-RS response for `sop`.
fn referenced<'a>(body: &'a Value, sop: &str) -> &'a Value {
    seq(body, "00081199")
        .into_iter()
        .find(|i| first(i, "00081155") == sop)
        .unwrap_or_else(|| panic!("{sop} not referenced: {body}"))
}

/// Stores files with dicomweb-client and prints, per referenced instance, its SOP
/// Instance UID, Warning Reason and tamiz's warning text (private (0009,1001)).
const STORE: &str = r#"
import sys
from pydicom import dcmread
from dicomweb_client.api import DICOMwebClient
url, token = sys.argv[1:3]
c = DICOMwebClient(url=url, headers={"Authorization": "Bearer " + token})
res = c.store_instances([dcmread(p) for p in sys.argv[3:]])
assert "FailedSOPSequence" not in res, res
for item in res.ReferencedSOPSequence:
    reason = item.get("WarningReason", "")
    text = item[0x00091001].value if 0x00091001 in item else ""
    print("%s|%s|%s" % (item.ReferencedSOPInstanceUID, reason, text))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tomosynthesis_instance_is_stored_with_a_warning_and_never_scored() {
    let t = TestServer::start().await;
    let (study, four) = views(301, true);
    let tomo = enhanced::tomosynthesis(&four[0], 3, "9");
    let tomo_sop = sop_of(&tomo);
    // Sent first, alone: 200 with a warning, then the same again (a modality resends).
    for attempt in 0..2 {
        let (ct, body) = multipart(&[enhanced::bytes(&tomo)]);
        let resp = t
            .http
            .post(format!("{}/dicomweb/studies", t.url))
            .header("Authorization", t.bearer("uploader-clinic-b"))
            .header("Content-Type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "send {attempt}");
        assert_eq!(
            resp.headers()["warning"].to_str().unwrap(),
            "299 tamiz \"1 instance(s) stored but not triaged; see Warning Reason (0008,1196) in the response\""
        );
        let body: Value = resp.json().await.unwrap();
        assert!(body.get("00081198").is_none(), "{body}");
        let item = referenced(&body, &tomo_sop);
        assert_eq!(first(item, "00081196"), 1, "Warning Reason 0001");
        assert_eq!(first(item, "00091001"), WARNING_TEXT);
        assert_eq!(first(item, "00000902"), error_comment_of(WARNING_TEXT));
        assert_eq!(first(item, "00081150"), BREAST_TOMOSYNTHESIS);
    }
    // The four views, over dicomweb-client: plain successes.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = vec![];
    for (i, obj) in four.iter().enumerate() {
        let p = dir.path().join(format!("{i}.dcm"));
        std::fs::write(&p, enhanced::bytes(obj)).unwrap();
        paths.push(p.to_str().unwrap().to_owned());
    }
    let tomo_path = dir.path().join("tomo.dcm");
    std::fs::write(&tomo_path, enhanced::bytes(&tomo)).unwrap();
    paths.push(tomo_path.to_str().unwrap().to_owned());
    let mut args = vec![
        format!("{}/dicomweb", t.url),
        t.token("uploader-clinic-b").to_owned(),
    ];
    args.extend(paths);
    let out = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        python(STORE, &a)
    })
    .await
    .unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = four.iter().map(|o| format!("{}||", sop_of(o))).collect();
    expected.push(format!("{tomo_sop}|1|{WARNING_TEXT}"));
    expected.sort();
    assert_eq!(lines, expected);

    let s = t.wait_worklisted(&study).await;
    assert_eq!(s.instances, 5);
    let mut scored_expected: Vec<String> = four.iter().map(sop_of).collect();
    scored_expected.sort();
    assert_eq!(scored(&s), scored_expected);
    let w = s.worklist.as_ref().unwrap();
    assert_ne!(w.priority, "untriaged", "{w:?}");
    assert!(
        w.reason
            .contains("tomosynthesis kept for reading, not scored: R-CC"),
        "{}",
        w.reason
    );
    t.stop().await;
}

fn error_comment_of(text: &str) -> String {
    let cut: String = text.chars().take(61).collect();
    format!("{cut}...")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tomosynthesis_only_study_goes_out_untriaged_with_the_reason() {
    let t = TestServer::start_with(|c| c.completeness.stable_after_secs = 1).await;
    let (study, four) = views(302, false);
    let stack: Vec<Vec<u8>> = four
        .iter()
        .enumerate()
        .map(|(i, v)| enhanced::bytes(&enhanced::tomosynthesis(v, 3, &format!("8{i}"))))
        .collect();
    // The fourth with `tamiz upload`, which prints the warning; then the others
    // (within the 1 s the study waits for more).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("l-mlo-tomo.dcm");
    std::fs::write(&file, &stack[3]).unwrap();
    let (url, token) = (t.url.clone(), t.token("uploader-clinic-b").to_owned());
    let f = file.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tamiz"))
            .args(["upload", "--url", &url])
            .env("TAMIZ_TOKEN", token)
            .arg(&f)
            .output()
            .expect("run tamiz upload")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("WARNING  {}: {WARNING_TEXT}", file.display())),
        "{stdout}"
    );
    let (code, body) = t
        .stow("/dicomweb/studies", &stack[..3], Some("clinic-b"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(seq(&body, "00081199").len(), 3);
    let s = t.wait_worklisted(&study).await;
    let w = s.worklist.as_ref().unwrap();
    assert_eq!(w.priority, "untriaged");
    assert!(
        w.reason.starts_with(
            "untriaged: only Breast Tomosynthesis images, no 2D screening view; the model scores 2D projection views"
        ),
        "{}",
        w.reason
    );
    let mut views = s.views.clone();
    views.sort();
    assert_eq!(views, ["L-CC", "L-MLO", "R-CC", "R-MLO"]);
    assert!(s.view_scores.is_none(), "{s:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tomosynthesis_stack_shorter_than_its_frames_is_refused_with_the_sizes() {
    let t = TestServer::start().await;
    let (_, four) = views(303, false);
    let mut tomo = enhanced::tomosynthesis(&four[0], 3, "7");
    // It says 4 frames but holds 3.
    tomo.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::NUMBER_OF_FRAMES,
        dicom_core::VR::IS,
        dicom_core::PrimitiveValue::from("4"),
    ));
    let (code, body) = t
        .stow(
            "/dicomweb/studies",
            &[enhanced::bytes(&tomo)],
            Some("clinic-b"),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let failed = seq(&body, "00081198");
    let n = (ROWS * COLUMNS * 2) as u64;
    assert_eq!(first(failed[0], "00081197"), 0xA900);
    assert_eq!(
        failure_text(failed[0]),
        format!(
            "Pixel Data (7FE0,0010) holds {} bytes but Rows x Columns x Samples per Pixel x Bits Allocated x frames ({ROWS} x {COLUMNS} x 1 x 16 x 4) needs {} (truncated or corrupt image)",
            3 * n,
            4 * n
        )
    );
    // A multi-frame object of another mammography class is still refused.
    let mut multi = enhanced::tomosynthesis(&four[1], 2, "6");
    let class = enhanced::BREAST_PROJECTION_PRESENTATION;
    multi.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::SOP_CLASS_UID,
        dicom_core::VR::UI,
        dicom_core::PrimitiveValue::from(class),
    ));
    multi.meta_mut().media_storage_sop_class_uid = class.into();
    multi.meta_mut().update_information_group_length();
    let (code, body) = t
        .stow(
            "/dicomweb/studies",
            &[enhanced::bytes(&multi)],
            Some("clinic-b"),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    let failed = seq(&body, "00081198");
    assert_eq!(first(failed[0], "00081197"), 0xC000);
    assert_eq!(
        failure_text(failed[0]),
        "unsupported pixel format: 2 frames (only single-frame projection images and Breast Tomosynthesis are read)"
    );
    assert!(t.stored_objects().await.is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breast_projection_images_have_laterality_view_and_voi_read_from_functional_groups() {
    let t = TestServer::start().await;
    let (study, four) = views(304, true);
    let projections: Vec<_> = four
        .iter()
        .enumerate()
        .map(|(i, v)| enhanced::breast_projection(v, &format!("5{i}")))
        .collect();
    // The VOI in the functional group renders as the same VOI at the top level.
    for (plain, enhanced_obj) in four.iter().zip(&projections) {
        let window = dicom_dictionary_std::tags::WINDOW_CENTER;
        assert!(plain.element(window).is_ok() && enhanced_obj.element(window).is_err());
        let a = decode_display(plain).unwrap();
        let b = decode_display(enhanced_obj).unwrap();
        assert_eq!(a.data, b.data, "rendering of {}", sop_of(enhanced_obj));
    }
    let parts: Vec<Vec<u8>> = projections.iter().map(enhanced::bytes).collect();
    let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    let s = t.wait_worklisted(&study).await;
    let mut views = s.views.clone();
    views.sort();
    assert_eq!(views, ["L-CC", "L-MLO", "R-CC", "R-MLO"]);
    let mut expected: Vec<String> = projections.iter().map(sop_of).collect();
    expected.sort();
    assert_eq!(scored(&s), expected);
    assert_ne!(s.worklist.as_ref().unwrap().priority, "untriaged", "{s:?}");
    t.stop().await;
}
