//! The bucket inbox: files dropped under `inbox/{center}/` in the object store (the
//! data directory's store, or the S3 bucket on the scaled stack) go through the same
//! validation as STOW-RS; stored ones leave a receipt under `done/`, refused ones move
//! to `rejected/` with a reason object, files that cannot be taken stay with a reason
//! object; with two API nodes scanning one bucket, each file is handled once.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tamiz::config::Config;
use tamiz::storage::ObjectStore;

fn fast_inbox(c: &mut Config) {
    c.inbox.scan_interval_secs = 1;
    c.inbox.concurrency = 2;
}

/// Drops `bytes` under `key` in the store (what a center's S3 client or file copy does).
async fn drop_file(store: &dyn ObjectStore, dir: &Path, key: &str, bytes: &[u8]) {
    let src = dir.join(format!("drop-{}", hex::encode(rand::random::<[u8; 6]>())));
    std::fs::write(&src, bytes).expect("write the file to drop");
    store
        .put_file_if_absent(key, &src)
        .await
        .expect("drop a file in the inbox");
}

/// Waits until the inbox holds exactly `keys`.
async fn wait_inbox(store: &dyn ObjectStore, keys: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = store.list("inbox/").await.expect("list the inbox");
        if now == keys {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inbox still holds {now:?}, expected {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The JSON object under `key`, waiting (bounded) for it to be written: the scan that
/// empties the inbox may still be writing its last reason objects.
async fn json_object(store: &dyn ObjectStore, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let bytes = loop {
        match store.get(key).await {
            Ok(b) => break b,
            Err(e) if Instant::now() > deadline => panic!("{key}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
}

/// The failure comment and reason STOW-RS gives for `bytes` (what the inbox must say too).
async fn stow_refusal(ts: &TestServer, bytes: &[u8]) -> (String, String) {
    let (status, body) = ts
        .stow("/dicomweb/studies", &[bytes.to_vec()], Some("clinic-a"))
        .await;
    assert_eq!(status, 409, "{body}");
    let failed = seq(&body, "00081198");
    assert_eq!(failed.len(), 1, "{body}");
    (
        failure_text(failed[0])
            .as_str()
            .expect("comment")
            .to_owned(),
        format!(
            "{:04X}",
            first(failed[0], "00081197").as_u64().expect("reason")
        ),
    )
}

#[tokio::test]
async fn inbox_files_are_stored_rejected_or_explained() {
    let ts = TestServer::start_with(|c| {
        fast_inbox(c);
        c.limits.max_instance_bytes = 12 << 20;
    })
    .await;
    let store = ts.server.store.as_ref();
    let work = ts.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let views = study_files(&work, &plan(61, false));
    let names = [
        "case 1/L CC.dcm",
        "case 1/L MLO.dcm",
        "case 1/R CC (2).dcm",
        "case 1/R_MLO.dcm",
    ];
    for ((_, bytes), name) in views.iter().zip(names) {
        drop_file(store, &work, &format!("inbox/clinic-a/{name}"), bytes).await;
    }
    let other = study_files(&work, &plan(62, false));
    drop_file(store, &work, "inbox/nowhere/x.dcm", &other[0].1).await;
    let garbage = b"this is a scanned referral letter, not a DICOM file".to_vec();
    drop_file(store, &work, "inbox/clinic-a/letter.dcm", &garbage).await;
    drop_file(store, &work, "inbox/loose.dcm", &other[1].1).await;
    let huge = vec![0u8; (12 << 20) + 1];
    drop_file(store, &work, "inbox/clinic-b/huge.dcm", &huge).await;
    // In the directory store, whoever may write the inbox folder could plant a link to
    // a server file (the pseudonym salt): it is never listed nor read.
    let salt = ts.server.config.catalog.salt_file.clone().unwrap();
    if !common::backends::scaled() {
        std::os::unix::fs::symlink(
            &salt,
            ts.dir.path().join("data/objects/inbox/clinic-a/evil.dcm"),
        )
        .unwrap();
    }

    // Only the files that cannot be taken stay.
    wait_inbox(store, &["inbox/clinic-b/huge.dcm", "inbox/loose.dcm"]).await;

    // The study went the way a STOW-RS upload from clinic-a goes.
    let study = &plan(61, false).study_uid;
    let status = ts.wait_worklisted(study).await;
    assert_eq!(status.imaging_center.as_deref(), Some("clinic-a"));
    assert_eq!(status.instances, 4);
    assert_eq!(status.worklist.as_ref().unwrap().center, "north");
    for ((path, _), name) in views.iter().zip(names) {
        let receipt = json_object(store, &format!("done/clinic-a/{name}.json")).await;
        assert_eq!(receipt["status"], "stored", "{receipt}");
        assert_eq!(receipt["file"], format!("inbox/clinic-a/{name}"));
        assert_eq!(receipt["study_instance_uid"].as_str(), Some(study.as_str()));
        let sop = tamiz::dicom::header_uids(path).1.expect("SOP Instance UID");
        assert_eq!(receipt["sop_instance_uid"].as_str(), Some(sop.as_str()));
    }

    // Refused: moved with the reason STOW-RS gives for the same bytes.
    let (comment, code) = stow_refusal(&ts, &garbage).await;
    assert_eq!(
        &store.get("rejected/clinic-a/letter.dcm").await.unwrap()[..],
        &garbage[..]
    );
    let reason = json_object(store, "rejected/clinic-a/letter.dcm.reason.json").await;
    assert_eq!(
        reason["reason"].as_str(),
        Some(comment.as_str()),
        "{reason}"
    );
    assert_eq!(reason["dicom_failure_reason"].as_str(), Some(code.as_str()));
    assert_eq!(code, "C000");
    assert_eq!(reason["moved_to"], "rejected/clinic-a/letter.dcm");

    // An unknown center's folder: refused, nothing catalogued.
    assert_eq!(
        &store.get("rejected/nowhere/x.dcm").await.unwrap()[..],
        &other[0].1[..]
    );
    let reason = json_object(store, "rejected/nowhere/x.dcm.reason.json").await;
    assert_eq!(
        reason["reason"],
        "`nowhere` is not a configured imaging center: files must be dropped in inbox/{center}/ under the id of their center"
    );
    assert_eq!(reason["dicom_failure_reason"], "A900");
    let other_study = &plan(62, false).study_uid;
    assert!(ts
        .server
        .catalog
        .study_status(other_study)
        .await
        .unwrap()
        .is_none());

    // Left in place, with the reason beside where it would have gone.
    let reason = json_object(store, "rejected/loose.dcm.reason.json").await;
    assert_eq!(
        reason["reason"],
        "files must be dropped in a folder named after the imaging center: inbox/{center}/{file}"
    );
    assert_eq!(reason["left_in_inbox"], true);
    let reason = json_object(store, "rejected/clinic-b/huge.dcm.reason.json").await;
    assert_eq!(
        reason["reason"],
        format!(
            "the file is {} bytes, more than the largest accepted instance ({} bytes, limits.max_instance_bytes); it was left in the inbox: remove it",
            (12 << 20) + 1,
            12 << 20
        )
    );

    // The planted link was left alone: nothing of the salt went anywhere.
    let everything = store.list("").await.unwrap();
    assert!(
        !everything.iter().any(|k| k.contains("evil")),
        "{everything:?}"
    );

    // The same instance dropped again under another name: "already stored", nothing new.
    let before = ts.server.catalog.counts().await.unwrap();
    drop_file(store, &work, "inbox/clinic-a/again.dcm", &views[0].1).await;
    wait_inbox(store, &["inbox/clinic-b/huge.dcm", "inbox/loose.dcm"]).await;
    let receipt = json_object(store, "done/clinic-a/again.dcm.json").await;
    assert_eq!(receipt["status"], "already stored", "{receipt}");
    assert_eq!(ts.server.catalog.counts().await.unwrap(), before);

    // A different file under a name already used in rejected/ keeps both.
    drop_file(store, &work, "inbox/clinic-a/letter.dcm", b"another letter").await;
    wait_inbox(store, &["inbox/clinic-b/huge.dcm", "inbox/loose.dcm"]).await;
    let rejected = store.list("rejected/clinic-a/").await.unwrap();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    let renamed = rejected
        .iter()
        .find(|k| k.starts_with("rejected/clinic-a/letter.dcm~") && !k.ends_with(".json"))
        .expect("the second letter under a new name");
    assert_eq!(&store.get(renamed).await.unwrap()[..], b"another letter");
    assert_eq!(
        &store.get("rejected/clinic-a/letter.dcm").await.unwrap()[..],
        &garbage[..]
    );
    let reason = json_object(store, &format!("{renamed}.reason.json")).await;
    assert_eq!(reason["moved_to"].as_str(), Some(renamed.as_str()));

    // Another instance under a name whose receipt exists (scanners reuse names): its
    // own receipt beside it, the first one untouched.
    drop_file(store, &work, "inbox/clinic-a/case 1/L CC.dcm", &other[2].1).await;
    wait_inbox(store, &["inbox/clinic-b/huge.dcm", "inbox/loose.dcm"]).await;
    let first = json_object(store, "done/clinic-a/case 1/L CC.dcm.json").await;
    let first_sop = tamiz::dicom::header_uids(&views[0].0).1.unwrap();
    assert_eq!(first["sop_instance_uid"].as_str(), Some(first_sop.as_str()));
    let receipts: Vec<String> = store.list("done/clinic-a/case 1/L CC.dcm~").await.unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let second = json_object(store, &receipts[0]).await;
    let other_sop = tamiz::dicom::header_uids(&other[2].0).1.unwrap();
    assert_eq!(
        second["sop_instance_uid"].as_str(),
        Some(other_sop.as_str())
    );
    assert_eq!(second["status"], "stored");
    ts.stop().await;
}

#[tokio::test]
async fn two_api_nodes_scanning_one_bucket_handle_each_file_once() {
    let ts = TestServer::start_with(|c| {
        fast_inbox(c);
        c.worker.concurrency = 0;
    })
    .await;
    // A second API node on the same catalog and store.
    let mut config = (*ts.server.config).clone();
    config.worker.concurrency = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = tamiz::server::start(config, listener)
        .await
        .expect("second node starts");
    let store = ts.server.store.as_ref();
    let work = ts.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut expected = Vec::new();
    for seed in 0..3u64 {
        for (i, (path, bytes)) in study_files(&work, &plan(70 + seed, false))
            .into_iter()
            .enumerate()
        {
            let name = format!("s{seed}-v{i}.dcm");
            drop_file(store, &work, &format!("inbox/clinic-b/{name}"), &bytes).await;
            expected.push((name, tamiz::dicom::header_uids(&path).1.unwrap()));
        }
    }
    for i in 0..2 {
        drop_file(
            store,
            &work,
            &format!("inbox/clinic-b/bad{i}.dcm"),
            b"not dicom",
        )
        .await;
    }
    wait_inbox(store, &[]).await;

    let counts = ts.server.catalog.counts().await.unwrap();
    assert_eq!((counts.studies, counts.instances), (3, 12));
    // Every receipt says "stored": no file was ingested twice.
    let done = store.list("done/").await.unwrap();
    assert_eq!(done.len(), 12, "{done:?}");
    for (name, sop) in &expected {
        let receipt = json_object(store, &format!("done/clinic-b/{name}.json")).await;
        assert_eq!(receipt["status"], "stored", "{name}: {receipt}");
        assert_eq!(receipt["sop_instance_uid"].as_str(), Some(sop.as_str()));
    }
    // Each refused file moved once, under its own name.
    assert_eq!(
        store.list("rejected/").await.unwrap(),
        [
            "rejected/clinic-b/bad0.dcm",
            "rejected/clinic-b/bad0.dcm.reason.json",
            "rejected/clinic-b/bad1.dcm",
            "rejected/clinic-b/bad1.dcm.reason.json"
        ]
    );
    assert_eq!(ts.stored_objects().await.len(), 12);
    second.stop().await;
    ts.stop().await;
}
