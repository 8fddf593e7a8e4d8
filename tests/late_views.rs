//! Late views (issue: clinical safety): a screening view that arrives after its study
//! was triaged runs the study's triage again, which updates its one worklist item.

mod common;

use common::*;

#[tokio::test]
async fn a_view_arriving_after_triage_re_triages_the_study_on_all_its_views() {
    let t = TestServer::start_with(|c| c.completeness.stable_after_secs = 1).await;
    let p = plan(88, true);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    // R-CC, L-CC, R-MLO: triaged once stable, as an incomplete study.
    let (code, body) = t
        .stow("/dicomweb/studies", &parts[..3], Some("clinic-b"))
        .await;
    assert_eq!(code, 200, "{body}");
    let first = t.wait_worklisted(&p.study_uid).await;
    let item = first.worklist.clone().unwrap();
    assert!(
        item.reason.contains("incomplete study, missing L-MLO"),
        "{}",
        item.reason
    );
    assert_eq!(
        first
            .view_scores
            .as_ref()
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The L-MLO arrives late: the same item is re-triaged on four views.
    let (code, body) = t
        .stow("/dicomweb/studies", &parts[3..], Some("clinic-b"))
        .await;
    assert_eq!(code, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let again = loop {
        let s = t
            .server
            .catalog
            .study_status(&p.study_uid)
            .await
            .unwrap()
            .unwrap();
        if s.worklist
            .as_ref()
            .unwrap()
            .reason
            .starts_with("re-triaged after a late view: ")
        {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never re-triaged: {s:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let w = again.worklist.as_ref().unwrap();
    assert_eq!(w.id, item.id, "still the one item");
    assert!(!w.reason.contains("incomplete"), "{}", w.reason);
    assert_eq!(
        again
            .view_scores
            .as_ref()
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(again.instances, 4);
    assert_eq!(again.job_state.as_deref(), Some("done"));
    let (code, list) = t.get_json("/api/v1/centers/central/worklist").await;
    assert_eq!(code, 200, "{list}");
    let rows = list["items"].as_array().unwrap_or_else(|| panic!("{list}"));
    assert_eq!(
        rows.iter()
            .filter(|r| r["study_uid"] == p.study_uid.as_str())
            .count(),
        1,
        "{list}"
    );
    t.stop().await;
}
