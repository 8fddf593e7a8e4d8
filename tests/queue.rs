//! The job queue and the worklist claims, tested on every catalog backend (a real
//! SQLite file, and a real PostgreSQL database when the run has one): one job per
//! study, exclusive and expiring leases, fencing of stale workers, retries, atomic
//! claims, and the races that only a database with many writers can show.

mod common;

use common::backends::{backends, fresh_catalog, Backend};
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
        acquisition: Default::default(),
        frames: 1,
        warning: None,
    }
}

async fn catalog(backend: Backend) -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = fresh_catalog(backend, dir.path()).await;
    (c, dir)
}

/// Runs the async test body once per backend, naming the backend when it fails.
macro_rules! on_every_backend {
    (|$b:ident| $body:expr) => {
        for $b in backends() {
            eprintln!("backend: {:?}", $b);
            $body;
        }
    };
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
        if let InsertOutcome::Inserted { study_ready, .. } = out {
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
        cause: None,
    };
    NewItem {
        home_center: None,
        center: center.into(),
        triage,
        view_scores: vec![],
        model_version: Some(MODEL.into()),
        reason: "test".into(),
    }
}

/// Inserts one instance; returns whether it made its study ready.
async fn insert(c: &Catalog, m: &InstanceMeta) -> bool {
    let out = c
        .insert_instance(m, None, "k", 1, &m.sop_instance_uid, MODEL, 1000)
        .await
        .unwrap();
    matches!(
        out,
        InsertOutcome::Inserted {
            study_ready: true,
            ..
        }
    )
}

#[tokio::test]
async fn only_scorable_screening_views_complete_a_study() {
    use tamiz::dicom::{Implant, Intent};
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        let views = tamiz::synth::SCREENING_VIEWS;
        // Four For Processing views, then a spot L-CC: not complete; then the
        // For Presentation views: complete on the fourth.
        for (i, (lat, view)) in views.iter().enumerate() {
            let mut m = meta("7.1", &format!("7.1.1.{i}"), *lat, view.clone());
            m.acquisition.intent = Intent::Processing;
            assert!(!insert(&c, &m).await, "For Processing {i}");
        }
        let mut spot = meta("7.1", "7.1.3.0", Laterality::L, View::Cc);
        spot.acquisition.modifiers = vec!["spot compression".into()];
        assert!(!insert(&c, &spot).await);
        for (i, (lat, view)) in views.iter().enumerate() {
            let ready = insert(&c, &meta("7.1", &format!("7.1.2.{i}"), *lat, view.clone())).await;
            assert_eq!(ready, i == 3, "For Presentation {i}");
        }
        // An implant exam is complete once its four implant-displaced views are in.
        for (i, (lat, view)) in views.iter().enumerate() {
            let mut m = meta("7.2", &format!("7.2.1.{i}"), *lat, view.clone());
            m.acquisition.implant = Implant::Present;
            assert!(!insert(&c, &m).await, "implant view {i}");
        }
        for (i, (lat, view)) in views.iter().enumerate() {
            let mut m = meta("7.2", &format!("7.2.2.{i}"), *lat, view.clone());
            m.acquisition.implant = Implant::Displaced;
            assert_eq!(insert(&c, &m).await, i == 3, "displaced view {i}");
        }
        // What selection reads comes back as stored.
        let stored = c.study_instances("7.1").await.unwrap();
        let spot = stored.iter().find(|i| i.sop_uid == "7.1.3.0").unwrap();
        assert_eq!(
            (
                spot.intent.as_str(),
                spot.modifiers.as_str(),
                spot.implant.as_str()
            ),
            ("presentation", "spot compression", "")
        );
        let raw = stored.iter().find(|i| i.sop_uid == "7.1.1.0").unwrap();
        assert_eq!(raw.intent, "processing");
    });
}

#[tokio::test]
async fn a_study_gets_exactly_one_job_per_model_version() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
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
    });
}

#[tokio::test]
async fn an_expired_lease_passes_to_another_worker_and_fences_the_first() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        four_views(&c, "2.1", 0).await;
        let a = c
            .lease_job("worker-a", MODEL, 1000, 5000)
            .await
            .unwrap()
            .expect("job leased");
        assert_eq!(a.attempts, 1);
        assert!(
            c.lease_job("worker-b", MODEL, 2000, 5000)
                .await
                .unwrap()
                .is_none(),
            "lease is exclusive"
        );
        c.heartbeat(&a, 3000, 5000).await.unwrap(); // now expires at 8000
        assert!(
            c.lease_job("worker-b", MODEL, 7000, 5000)
                .await
                .unwrap()
                .is_none(),
            "heartbeat extended the lease"
        );
        // worker-a goes silent; after expiry worker-b takes over
        let b = c
            .lease_job("worker-b", MODEL, 8001, 5000)
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
            c.lease_job("worker-c", MODEL, 100_000, 5000)
                .await
                .unwrap()
                .is_none(),
            "a done job is never leased again"
        );
    });
}

#[tokio::test]
async fn retries_wait_for_their_backoff_and_dead_letters_still_reach_a_worklist() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        four_views(&c, "3.1", 0).await;
        let j = c.lease_job("w", MODEL, 1000, 5000).await.unwrap().unwrap();
        c.retry_job(&j, "object store unavailable", 4000)
            .await
            .unwrap();
        assert!(
            c.lease_job("w", MODEL, 3999, 5000).await.unwrap().is_none(),
            "not before its backoff"
        );
        let j2 = c.lease_job("w", MODEL, 4000, 5000).await.unwrap().unwrap();
        assert_eq!(j2.last_error.as_deref(), Some("object store unavailable"));
        let dead = item("north", Priority::Untriaged, 7);
        let mut dead = NewItem {
            triage: untriaged(
                tamiz::triage::UntriagedCause::GaveUp,
                "gave up".into(),
                &Default::default(),
                0,
            ),
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
    });
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_the_same_study() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        for (i, p) in [Priority::Low, Priority::Urgent, Priority::Routine]
            .iter()
            .enumerate()
        {
            let study = format!("4.{i}");
            four_views(&c, &study, 0).await;
            let j = c.lease_job("w", MODEL, 10, 5000).await.unwrap().unwrap();
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
                c.claim_next("central", &format!("radiologist-{r}"), 1000, 0, None)
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
        let (c2, _d2) = catalog(b).await;
        for (i, p) in [Priority::Low, Priority::Urgent, Priority::Routine]
            .iter()
            .enumerate()
        {
            four_views(&c2, &format!("5.{i}"), 0).await;
            let j = c2.lease_job("w", MODEL, 10, 5000).await.unwrap().unwrap();
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
    });
}

/// Inserts a late image of `view` for `study`; returns whether its job runs again.
async fn late_view(c: &Catalog, study: &str, sop: &str, lat: Laterality, view: View) -> bool {
    let out = c
        .insert_instance(&meta(study, sop, lat, view), None, "k", 1, sop, MODEL, 50)
        .await
        .unwrap();
    match out {
        InsertOutcome::Inserted { retriage, .. } => retriage,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn late_views_run_the_job_again_and_update_the_one_item_by_the_rules() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        four_views(&c, "8.1", 0).await;
        let j = c.lease_job("w", MODEL, 10, 5000).await.unwrap().unwrap();
        // A view arriving while the job runs: it runs again once finished.
        assert!(late_view(&c, "8.1", "8.1.9.5", Laterality::L, View::Cc).await);
        c.finish_job(
            &j,
            JobOutcome::Done,
            &item("central", Priority::Urgent, 100),
            None,
            20,
        )
        .await
        .unwrap();
        let again = c
            .lease_job("w", MODEL, 30, 5000)
            .await
            .unwrap()
            .expect("run again");
        // A new run: its first attempt, the fencing token still growing.
        assert_eq!((again.id, again.attempts, again.attempt), (j.id, 2, 1));
        // A radiologist opens it; the new run says low: the priority stays urgent.
        let claimed = c
            .claim_next("central", "ana", 40, 0, None)
            .await
            .unwrap()
            .unwrap();
        c.finish_job(
            &again,
            JobOutcome::Done,
            &item("central", Priority::Low, 100),
            None,
            50,
        )
        .await
        .unwrap();
        let s = c.study_status("8.1").await.unwrap().unwrap();
        let w = s.worklist.unwrap();
        assert_eq!(
            (w.id, w.priority.as_str(), w.state.as_str()),
            (claimed.id, "urgent", "claimed")
        );
        assert!(w.reason.ends_with("priority kept at urgent: the study was open when the view arrived (the new triage says low (score 0.500))"), "{}", w.reason);
        assert_eq!(s.job_state.as_deref(), Some("done"));
        // A work-up or For Processing image changes nothing; a screening view does.
        let mut spot = meta("8.1", "8.1.9.6", Laterality::R, View::Cc);
        spot.acquisition.modifiers = vec!["spot compression".into()];
        let out = c
            .insert_instance(&spot, None, "k", 1, "s", MODEL, 60)
            .await
            .unwrap();
        assert_eq!(
            out,
            InsertOutcome::Inserted {
                study_ready: false,
                retriage: false
            }
        );
        // Read, then one more view: only a visible note.
        c.record_reading(claimed.id, "ana", 1, "B", 70, None)
            .await
            .unwrap();
        assert!(late_view(&c, "8.1", "8.1.9.7", Laterality::R, View::Mlo).await);
        let third = c.lease_job("w", MODEL, 80, 5000).await.unwrap().unwrap();
        c.finish_job(
            &third,
            JobOutcome::Done,
            &item("central", Priority::Routine, 100),
            None,
            90,
        )
        .await
        .unwrap();
        let w = c
            .study_status("8.1")
            .await
            .unwrap()
            .unwrap()
            .worklist
            .unwrap();
        assert_eq!((w.priority.as_str(), w.state.as_str()), ("urgent", "read"));
        assert!(w.reason.ends_with("; NOTE: a screening view arrived after the reading; triage of all views now: routine (score 0.500); review the study"), "{}", w.reason);
        // Still one item, one job.
        assert_eq!(c.counts().await.unwrap().jobs, 1);
        assert_eq!(c.worklist("central", 10).await.unwrap().len(), 0);
    });
}

#[tokio::test]
async fn abandoned_claims_return_and_readings_need_the_claim() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        four_views(&c, "6.1", 0).await;
        let j = c.lease_job("w", MODEL, 10, 5000).await.unwrap().unwrap();
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
            .claim_next("central", "ana", 1000, 0, None)
            .await
            .unwrap()
            .unwrap();
        assert!(c
            .claim_next("central", "ben", 1500, 0, None)
            .await
            .unwrap()
            .is_none());
        // ana's claim (at 1000) is older than the expiry cut-off: ben gets it
        let again = c
            .claim_next("central", "ben", 5000, 2000, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.id, first.id);
        let err = c
            .record_reading(first.id, "ana", 1, "B", 6000, None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("claimed by another radiologist"),
            "{err}"
        );
        c.record_reading(first.id, "ben", 1, "B", 6000, None)
            .await
            .unwrap();
        assert!(c
            .record_reading(first.id, "ben", 2, "B", 6001, None)
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
    });
}

/// Claims and leases from two "processes" (two pools over one database), many tasks
/// each: every item and every job is handed out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_claimers_and_lessees_on_several_connections_never_share_one() {
    on_every_backend!(|b| {
        let dir = tempfile::tempdir().unwrap();
        let cs = common::backends::fresh_catalogs(b, dir.path(), 2).await;
        let studies = 24;
        for i in 0..studies {
            assert!(four_views(&cs[0], &format!("7.{i}"), 0).await);
        }
        let lessees = (0..8).map(|w| {
            let c = cs[w % 2].clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(j) = c
                    .lease_job(&format!("w{w}"), MODEL, 10, 60_000)
                    .await
                    .unwrap()
                {
                    got.push(j);
                }
                got
            })
        });
        let mut jobs = Vec::new();
        for h in lessees {
            jobs.extend(h.await.unwrap());
        }
        let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            (jobs.len(), ids.len()),
            (studies, studies),
            "each job leased once"
        );
        for (i, j) in jobs.iter().enumerate() {
            let p = [Priority::Urgent, Priority::Routine, Priority::Low][i % 3];
            cs[i % 2]
                .finish_job(j, JobOutcome::Done, &item("central", p, i as i64), None, 20)
                .await
                .unwrap();
        }
        let claimers = (0..12).map(|r| {
            let c = cs[r % 2].clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(i) = c
                    .claim_next("central", &format!("radiologist-{r}"), 1000, 0, None)
                    .await
                    .unwrap()
                {
                    got.push(i);
                }
                got
            })
        });
        let mut items = Vec::new();
        for h in claimers {
            items.extend(h.await.unwrap());
        }
        let mut got: Vec<String> = items.iter().map(|i| i.study_uid.clone()).collect();
        got.sort();
        got.dedup();
        assert_eq!(
            (items.len(), got.len()),
            (studies, studies),
            "each item claimed once"
        );
    });
}

/// Sends of one instance racing each other: one "inserted", the rest "duplicate",
/// never an error; four views of many studies racing: each study ready once, with
/// one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_inserts_store_once_and_decide_completeness_once() {
    on_every_backend!(|b| {
        let dir = tempfile::tempdir().unwrap();
        let cs = common::backends::fresh_catalogs(b, dir.path(), 2).await;
        let sends = (0..8).map(|k| {
            let c = cs[k % 2].clone();
            tokio::spawn(async move {
                c.insert_instance(
                    &meta("8.1", "8.1.9.0", Laterality::R, View::Cc),
                    Some("clinic-a"),
                    "k",
                    1,
                    "same",
                    MODEL,
                    100,
                )
                .await
                .unwrap()
            })
        });
        let mut outcomes = Vec::new();
        for h in sends {
            outcomes.push(h.await.unwrap());
        }
        let inserted = outcomes
            .iter()
            .filter(|o| matches!(o, InsertOutcome::Inserted { .. }))
            .count();
        let duplicates = outcomes
            .iter()
            .filter(|o| **o == InsertOutcome::Duplicate)
            .count();
        assert_eq!((inserted, duplicates), (1, 7), "{outcomes:?}");

        let studies = 12;
        let mut views = Vec::new();
        for s in 0..studies {
            for (i, (lat, view)) in tamiz::synth::SCREENING_VIEWS.iter().enumerate() {
                let c = cs[(s + i) % 2].clone();
                let m = meta(
                    &format!("9.{s}"),
                    &format!("9.{s}.9.{i}"),
                    *lat,
                    view.clone(),
                );
                views.push(tokio::spawn(async move {
                    c.insert_instance(&m, None, "k", 1, "h", MODEL, 100)
                        .await
                        .unwrap()
                }));
            }
        }
        let mut ready = 0;
        for h in views {
            if matches!(
                h.await.unwrap(),
                InsertOutcome::Inserted {
                    study_ready: true,
                    ..
                }
            ) {
                ready += 1;
            }
        }
        assert_eq!(ready, studies, "exactly one view completes each study");
        let counts = cs[0].counts().await.unwrap();
        assert_eq!(counts.jobs as usize, studies, "one job per study");
        assert_eq!(counts.instances as usize, studies * 4 + 1);
    });
}

#[tokio::test]
async fn an_instance_of_another_woman_or_center_is_refused_from_the_study() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        let first = meta("10.1", "10.1.9.0", Laterality::R, View::Cc);
        c.insert_instance(&first, Some("clinic-a"), "k", 1, "a", MODEL, 1)
            .await
            .unwrap();
        let before = c.counts().await.unwrap();
        let mut other_woman = meta("10.1", "10.1.9.1", Laterality::L, View::Cc);
        other_woman.patient_id = "P2".into();
        let out = c
            .insert_instance(&other_woman, Some("clinic-a"), "k", 1, "b", MODEL, 2)
            .await
            .unwrap();
        assert_eq!(
            out,
            InsertOutcome::StudyMismatch {
                reason: "its Patient ID (or Issuer of Patient ID) differs from the one of the study's instances already stored".into()
            }
        );
        let other_center = meta("10.1", "10.1.9.2", Laterality::L, View::Cc);
        let out = c
            .insert_instance(&other_center, Some("clinic-b"), "k", 1, "c", MODEL, 3)
            .await
            .unwrap();
        assert_eq!(
            out,
            InsertOutcome::StudyMismatch {
                reason: "it comes from imaging center `clinic-b` but the study's instances already stored came from `clinic-a`".into()
            }
        );
        assert_eq!(c.counts().await.unwrap(), before, "nothing changed");
        // The same woman from the same center (or an unnamed center) is welcome.
        let same = meta("10.1", "10.1.9.3", Laterality::L, View::Cc);
        let out = c
            .insert_instance(&same, None, "k", 1, "d", MODEL, 4)
            .await
            .unwrap();
        assert_eq!(
            out,
            InsertOutcome::Inserted {
                study_ready: false,
                retriage: false
            }
        );
    });
}

#[tokio::test]
async fn a_worker_leases_only_the_jobs_of_its_model_on_the_database_clock() {
    on_every_backend!(|b| {
        let (c, _d) = catalog(b).await;
        four_views(&c, "11.1", 0).await;
        let now = c.clock_ms().await.unwrap();
        let wall = tamiz::now_ms();
        assert!((now - wall).abs() < 5_000, "database clock {now} vs {wall}");
        assert!(c
            .lease_job("w", "other-model@2", now, 5000)
            .await
            .unwrap()
            .is_none());
        let j = c.lease_job("w", MODEL, now, 5000).await.unwrap().unwrap();
        assert_eq!(j.model_version, MODEL);
        // A worker shutting down gives its job back at once.
        c.release_job(&j).await.unwrap();
        let again = c.lease_job("w2", MODEL, now, 5000).await.unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (j.id, 2));
        assert!(matches!(
            c.release_job(&j).await,
            Err(CatalogError::LeaseLost)
        ));
    });
}

#[tokio::test]
async fn pseudonyms_use_a_salt_kept_outside_the_database() {
    on_every_backend!(|b| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::test_config(dir.path());
        common::backends::use_fresh_catalog(&mut config, b, &dir.path().join("s")).await;
        let salt_file = config.catalog.salt_file.clone().unwrap();
        if b == Backend::Postgres {
            // Every node must share one salt: none is invented when the file is missing.
            std::fs::remove_file(&salt_file).unwrap();
            let err = Catalog::open(&config).await.err().expect("refused");
            assert!(
                err.to_string().starts_with(&format!(
                    "pseudonym salt: {} does not exist; with PostgreSQL every node must use the same salt",
                    salt_file.display()
                )),
                "{err}"
            );
            std::fs::write(&salt_file, "ab".repeat(32)).unwrap();
        } else {
            assert!(!salt_file.exists());
        }
        let first = Catalog::open(&config).await.unwrap();
        let p1 = first.pseudonym("", "P1");
        let salt = std::fs::read_to_string(&salt_file).unwrap();
        assert!(salt.trim().len() >= 32, "salt file written: {salt}");
        let again = Catalog::open(&config).await.unwrap();
        assert_eq!(again.pseudonym("", "P1"), p1, "same salt after a restart");
        std::fs::write(&salt_file, "not hex").unwrap();
        let err = Catalog::open(&config).await.err().expect("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "pseudonym salt: {} must hold at least 32 hex digits",
                salt_file.display()
            )
        );
    });
}

/// Several API nodes sweeping for stable studies at once: each study becomes ready,
/// and gets its job, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stability_sweeps_of_several_nodes_make_each_study_ready_once() {
    on_every_backend!(|b| {
        let dir = tempfile::tempdir().unwrap();
        let cs = common::backends::fresh_catalogs(b, dir.path(), 3).await;
        for i in 0..20 {
            let m = meta(
                &format!("12.{i}"),
                &format!("12.{i}.9.0"),
                Laterality::L,
                View::Cc,
            );
            cs[0]
                .insert_instance(&m, None, "k", 1, "h", MODEL, 100)
                .await
                .unwrap();
        }
        let sweeps = (0..6).map(|k| {
            let c = cs[k % 3].clone();
            tokio::spawn(async move {
                c.mark_stable_studies_ready(100, 600, MODEL, 700)
                    .await
                    .unwrap()
            })
        });
        let mut made_ready = 0;
        for s in sweeps {
            made_ready += s.await.unwrap();
        }
        assert_eq!(made_ready, 20, "each study made ready by exactly one sweep");
        assert_eq!(cs[0].counts().await.unwrap().jobs, 20, "one job each");
    });
}
