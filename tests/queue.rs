//! The job queue and the worklist claims, tested in SQL on a real SQLite catalog:
//! one job per study, exclusive and expiring leases, fencing of stale workers,
//! retries, atomic claims.

mod common;

use tamiz::catalog::{Catalog, CatalogError, InsertOutcome, JobOutcome, NewItem};
use tamiz::dicom::{InstanceMeta, Laterality, View};
use tamiz::triage::{untriaged, Priority, Triage};

const MODEL: &str = "test-model@1";

fn meta(study: &str, sop: &str, lat: Laterality, view: View) -> InstanceMeta {
    InstanceMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.2".into(),
        sop_instance_uid: sop.into(),
        study_uid: study.into(),
        series_uid: format!("{study}.1"),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        modality: "MG".into(),
        laterality: lat,
        view,
        rows: 10,
        columns: 10,
        bits_allocated: 16,
        bits_stored: 12,
        patient_id: "P1".into(),
        patient_issuer: String::new(),
        institution_name: None,
    }
}

async fn catalog() -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open_sqlite(&dir.path().join("c.sqlite"))
        .await
        .unwrap();
    c.sync_config(&common::test_config(dir.path()))
        .await
        .unwrap();
    (c, dir)
}

/// Inserts the four screening views of `study`; returns whether it became ready.
async fn four_views(c: &Catalog, study: &str, now: i64) -> bool {
    let mut ready = false;
    for (i, (lat, view)) in tamiz::synth::SCREENING_VIEWS.iter().enumerate() {
        let sop = format!("{study}.9.{i}");
        let out = c
            .insert_instance(
                &meta(study, &sop, *lat, view.clone()),
                None,
                "k",
                1,
                &format!("h{i}"),
                MODEL,
                now,
            )
            .await
            .unwrap();
        if let InsertOutcome::Inserted { study_ready } = out {
            ready |= study_ready;
        }
    }
    ready
}

fn item(center: &str, priority: Priority, due: i64) -> NewItem {
    let triage = Triage {
        priority,
        score: Some(0.5),
        left: None,
        right: None,
        due_ms: due,
        reason: "test".into(),
    };
    NewItem {
        center: center.into(),
        triage,
        view_scores: vec![],
        model_version: Some(MODEL.into()),
        reason: "test".into(),
    }
}

#[tokio::test]
async fn a_study_gets_exactly_one_job_per_model_version() {
    let (c, _d) = catalog().await;
    assert!(four_views(&c, "1.1", 1000).await);
    // stability sweep and a resent view change nothing
    assert_eq!(
        c.mark_stable_studies_ready(i64::MAX, 0, MODEL, 2000)
            .await
            .unwrap(),
        0
    );
    let dup = c
        .insert_instance(
            &meta("1.1", "1.1.9.0", Laterality::R, View::Cc),
            None,
            "k",
            1,
            "h0",
            MODEL,
            3000,
        )
        .await;
    assert_eq!(dup.unwrap(), InsertOutcome::Duplicate);
    let jobs = c.counts().await.unwrap().jobs;
    assert_eq!(jobs, 1);
    // an incomplete study is made ready only once stable
    c.insert_instance(
        &meta("1.2", "1.2.9.0", Laterality::L, View::Cc),
        None,
        "k",
        1,
        "x",
        MODEL,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(
        c.mark_stable_studies_ready(999, 600, MODEL, 1500)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        c.mark_stable_studies_ready(1000, 600, MODEL, 1500)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        c.mark_stable_studies_ready(1000, 600, MODEL, 1600)
            .await
            .unwrap(),
        0
    );
    let jobs = c.counts().await.unwrap().jobs;
    assert_eq!(jobs, 2);
}

#[tokio::test]
async fn an_expired_lease_passes_to_another_worker_and_fences_the_first() {
    let (c, _d) = catalog().await;
    four_views(&c, "2.1", 0).await;
    let a = c
        .lease_job("worker-a", 1000, 5000)
        .await
        .unwrap()
        .expect("job leased");
    assert_eq!(a.attempts, 1);
    assert!(
        c.lease_job("worker-b", 2000, 5000).await.unwrap().is_none(),
        "lease is exclusive"
    );
    c.heartbeat(&a, 3000, 5000).await.unwrap(); // now expires at 8000
    assert!(
        c.lease_job("worker-b", 7000, 5000).await.unwrap().is_none(),
        "heartbeat extended the lease"
    );
    // worker-a goes silent; after expiry worker-b takes over
    let b = c
        .lease_job("worker-b", 8001, 5000)
        .await
        .unwrap()
        .expect("expired lease re-leased");
    assert_eq!((b.id, b.attempts), (a.id, 2));
    // the stale worker can no longer touch the job
    assert!(matches!(
        c.heartbeat(&a, 8002, 5000).await,
        Err(CatalogError::LeaseLost)
    ));
    let stale = c
        .finish_job(
            &a,
            JobOutcome::Done,
            &item("central", Priority::Low, 1),
            None,
            8003,
        )
        .await;
    assert!(matches!(stale, Err(CatalogError::LeaseLost)));
    c.finish_job(
        &b,
        JobOutcome::Done,
        &item("central", Priority::Urgent, 9),
        None,
        8004,
    )
    .await
    .unwrap();
    let wl = c.worklist("central", 10).await.unwrap();
    assert_eq!(wl.len(), 1, "exactly one worklist item");
    assert_eq!(wl[0].priority, "urgent", "the live worker's result");
    assert!(
        c.lease_job("worker-c", 100_000, 5000)
            .await
            .unwrap()
            .is_none(),
        "a done job is never leased again"
    );
}

#[tokio::test]
async fn retries_wait_for_their_backoff_and_dead_letters_still_reach_a_worklist() {
    let (c, _d) = catalog().await;
    four_views(&c, "3.1", 0).await;
    let j = c.lease_job("w", 1000, 5000).await.unwrap().unwrap();
    c.retry_job(&j, "object store unavailable", 4000)
        .await
        .unwrap();
    assert!(
        c.lease_job("w", 3999, 5000).await.unwrap().is_none(),
        "not before its backoff"
    );
    let j2 = c.lease_job("w", 4000, 5000).await.unwrap().unwrap();
    assert_eq!(j2.last_error.as_deref(), Some("object store unavailable"));
    let dead = item("north", Priority::Untriaged, 7);
    let mut dead = NewItem {
        triage: untriaged("gave up".into(), &Default::default(), 0),
        ..dead.clone()
    };
    dead.center = "north".into();
    c.finish_job(
        &j2,
        JobOutcome::Dead,
        &dead,
        Some("gave up after 2 attempts"),
        5000,
    )
    .await
    .unwrap();
    let status = c.study_status("3.1").await.unwrap().unwrap();
    assert_eq!(status.job_state.as_deref(), Some("dead"));
    let w = status
        .worklist
        .expect("dead-lettered study is on a worklist");
    assert_eq!((w.priority.as_str(), w.triaged), ("untriaged", false));
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_the_same_study() {
    let (c, _d) = catalog().await;
    for (i, p) in [Priority::Low, Priority::Urgent, Priority::Routine]
        .iter()
        .enumerate()
    {
        let study = format!("4.{i}");
        four_views(&c, &study, 0).await;
        let j = c.lease_job("w", 10, 5000).await.unwrap().unwrap();
        c.finish_job(
            &j,
            JobOutcome::Done,
            &item("central", *p, 100 - i as i64),
            None,
            20,
        )
        .await
        .unwrap();
    }
    let claims = futures_util::future::join_all((0..12).map(|r| {
        let c = c.clone();
        async move {
            c.claim_next("central", &format!("radiologist-{r}"), 1000, 0)
                .await
                .unwrap()
        }
    }))
    .await;
    let got: Vec<_> = claims.into_iter().flatten().collect();
    assert_eq!(got.len(), 3, "three items, three successful claims");
    let mut studies: Vec<_> = got.iter().map(|i| i.study_uid.clone()).collect();
    studies.sort();
    studies.dedup();
    assert_eq!(studies.len(), 3, "no study claimed twice");

    // reading order was urgent, routine, low
    let (c2, _d2) = catalog().await;
    for (i, p) in [Priority::Low, Priority::Urgent, Priority::Routine]
        .iter()
        .enumerate()
    {
        four_views(&c2, &format!("5.{i}"), 0).await;
        let j = c2.lease_job("w", 10, 5000).await.unwrap().unwrap();
        c2.finish_job(&j, JobOutcome::Done, &item("central", *p, 100), None, 20)
            .await
            .unwrap();
    }
    let order: Vec<String> = c2
        .worklist("central", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.priority)
        .collect();
    assert_eq!(order, ["urgent", "routine", "low"]);
}

#[tokio::test]
async fn abandoned_claims_return_and_readings_need_the_claim() {
    let (c, _d) = catalog().await;
    four_views(&c, "6.1", 0).await;
    let j = c.lease_job("w", 10, 5000).await.unwrap().unwrap();
    c.finish_job(
        &j,
        JobOutcome::Done,
        &item("central", Priority::Routine, 100),
        None,
        20,
    )
    .await
    .unwrap();
    let first = c
        .claim_next("central", "ana", 1000, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(c
        .claim_next("central", "ben", 1500, 0)
        .await
        .unwrap()
        .is_none());
    // ana's claim (at 1000) is older than the expiry cut-off: ben gets it
    let again = c
        .claim_next("central", "ben", 5000, 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, first.id);
    let err = c
        .record_reading(first.id, "ana", 1, "B", 6000)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("claimed by another radiologist"),
        "{err}"
    );
    c.record_reading(first.id, "ben", 1, "B", 6000)
        .await
        .unwrap();
    assert!(c
        .record_reading(first.id, "ben", 2, "B", 6001)
        .await
        .unwrap_err()
        .to_string()
        .contains("already read"));
    assert!(
        c.worklist("central", 10).await.unwrap().is_empty(),
        "a read study leaves the queue"
    );
    let s = c.study_status("6.1").await.unwrap().unwrap();
    assert_eq!((s.state.as_str(), s.reading.unwrap().birads), ("read", 1));
}
