//! Drift watch (issue: clinical safety): an imaging center whose studies suddenly all
//! go out untriaged (a modality switched to sending raw For Processing images) is
//! flagged in the summary and the metrics; centers like the program's are not.

mod common;

use common::*;
use tamiz::config::ImagingCenter;
use tamiz::synth::Variant;

#[tokio::test]
async fn a_center_sending_raw_images_all_week_is_flagged_in_the_summary_and_metrics() {
    let t = TestServer::start_with(|c| {
        c.completeness.stable_after_secs = 1;
        c.drift.min_studies = 3;
        c.imaging_centers.push(ImagingCenter {
            id: "clinic-c".into(),
            name: "Clinic C".into(),
            home: "central".into(),
            institution_names: vec![],
            ae_titles: vec![],
        });
    })
    .await;
    // Three studies from each of clinic-a and clinic-c as usual; clinic-b's modality
    // sends For Processing data.
    let mut studies = Vec::new();
    for (i, center) in ["clinic-a", "clinic-c", "clinic-b"].iter().enumerate() {
        for k in 0..3u64 {
            let mut p = plan(300 + 10 * i as u64 + k, false);
            if *center == "clinic-b" {
                p.variant = Variant::ForProcessing;
            }
            let parts = study_parts(&t.dir.path().join(format!("{center}-{k}")), &p);
            let (code, body) = t.stow("/dicomweb/studies", &parts, Some(center)).await;
            assert_eq!(code, 200, "{body}");
            studies.push(p.study_uid);
        }
    }
    for s in &studies {
        t.wait_worklisted(s).await;
    }
    let (code, summary) = t.get_json("/api/v1/summary").await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(
        summary["drift"]["drifting_now"],
        serde_json::json!(["clinic-b"]),
        "{summary}"
    );
    let weeks = summary["drift"]["center_weeks"].as_array().unwrap();
    let b = weeks
        .iter()
        .find(|w| w["center"] == "clinic-b" && w["studies"] == 3)
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(b["untriaged_share"], 1.0);
    let reasons: Vec<&str> = b["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"untriaged 100% vs 0% program median"),
        "{reasons:?}"
    );
    assert_eq!(
        summary["untriaged_by_cause"]["view_selection"], 3,
        "{summary}"
    );
    let text = t.metrics_text().await;
    assert!(
        text.contains("tamiz_center_drifting{center=\"clinic-b\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tamiz_center_drifting{center=\"clinic-a\"} 0"),
        "{text}"
    );
    t.stop().await;
}
