//! The object stores, each against the real thing: the directory store on a temporary
//! folder, and the S3 store against the S3-compatible server `scripts/test.sh` starts
//! (s3s-fs; under CI its absence fails the run). Never overwrite, ranges, listing,
//! multipart uploads, races, and a clear error at start-up for a wrong bucket or key.

mod common;

use std::path::Path;
use std::sync::Arc;

use tamiz::storage::{FsStore, ObjectStore, PutOutcome, S3Store, StoreError};

/// The test bucket, when this run has an S3 server.
fn s3_bucket() -> Option<String> {
    match std::env::var("TAMIZ_TEST_S3_BUCKET") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but TAMIZ_TEST_S3_BUCKET is not: run the tests with scripts/test.sh"
            );
            None
        }
    }
}

fn fresh_prefix() -> String {
    format!("t{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// Every store of this run, each empty.
async fn stores(dir: &Path) -> Vec<(&'static str, Arc<dyn ObjectStore>)> {
    let mut v: Vec<(&'static str, Arc<dyn ObjectStore>)> = vec![(
        "directory",
        Arc::new(FsStore::open(dir.join("objects")).unwrap()),
    )];
    if let Some(bucket) = s3_bucket() {
        let s3 = S3Store::connect(&bucket, &fresh_prefix()).await.unwrap();
        v.push(("s3", Arc::new(s3)));
    }
    v
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn create_if_absent_never_overwrites_and_reads_back_whole_or_in_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let a = file(dir.path(), "a", b"first object bytes");
    let b = file(dir.path(), "b", b"second");
    for (name, store) in stores(dir.path()).await {
        let key = "studies/1.2/1.3/1.4.dcm";
        assert!(!store.exists(key).await.unwrap(), "{name}");
        assert_eq!(
            store.put_file_if_absent(key, &a).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put_file_if_absent(key, &b).await.unwrap(),
            PutOutcome::AlreadyExists,
            "{name}"
        );
        assert_eq!(
            &store.get(key).await.unwrap()[..],
            b"first object bytes",
            "{name}"
        );
        assert_eq!(
            &store.read_range(key, 6, 6).await.unwrap()[..],
            b"object",
            "{name}"
        );
        assert_eq!(
            &store.read_range(key, 13, 100).await.unwrap()[..],
            b"bytes",
            "{name}"
        );
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"first object bytes",
        ));
        assert_eq!(
            tamiz::storage::sha256(store.as_ref(), key).await.unwrap(),
            sha
        );
        store
            .put_file_if_absent("studies/1.2/1.3/1.5.dcm", &b)
            .await
            .unwrap();
        store.put_file_if_absent("other/x.dcm", &b).await.unwrap();
        assert_eq!(
            store.list("studies/").await.unwrap(),
            ["studies/1.2/1.3/1.4.dcm", "studies/1.2/1.3/1.5.dcm"],
            "{name}"
        );
        store.delete("studies/1.2/1.3/1.5.dcm").await.unwrap();
        store.delete("studies/1.2/1.3/1.5.dcm").await.unwrap();
        assert_eq!(store.list("studies/").await.unwrap(), [key], "{name}");
        assert!(matches!(
            store.get("studies/9.dcm").await,
            Err(StoreError::NotFound(k)) if k == "studies/9.dcm"
        ));
        assert!(matches!(
            store.get("../etc/passwd").await,
            Err(StoreError::BadKey(_))
        ));
        store.check().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_key_store_exactly_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..8)
        .map(|i| {
            file(
                dir.path(),
                &format!("f{i}"),
                format!("content {i}").as_bytes(),
            )
        })
        .collect();
    for (name, store) in stores(dir.path()).await {
        let puts = files.iter().map(|f| {
            let (store, f) = (store.clone(), f.clone());
            tokio::spawn(async move {
                store
                    .put_file_if_absent("studies/5/5/5.dcm", &f)
                    .await
                    .unwrap()
            })
        });
        let mut created = 0;
        for p in puts {
            created += usize::from(p.await.unwrap() == PutOutcome::Created);
        }
        assert_eq!(created, 1, "{name}: one writer wins");
        let got = store.get("studies/5/5/5.dcm").await.unwrap();
        assert!(got.starts_with(b"content "), "{name}: a whole object");
    }
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_are_never_overwritten() {
    let Some(bucket) = s3_bucket() else { return };
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let other = vec![7u8; 11 << 20];
    let (a, b) = (
        file(dir.path(), "big", &big),
        file(dir.path(), "other", &other),
    );
    let store = S3Store::connect(&bucket, &fresh_prefix())
        .await
        .unwrap()
        .with_multipart(8 << 20, 5 << 20);
    let key = "studies/7/7/7.dcm";
    assert_eq!(
        store.put_file_if_absent(key, &a).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store.put_file_if_absent(key, &b).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&big));
    assert_eq!(tamiz::storage::sha256(&store, key).await.unwrap(), sha);
    assert_eq!(
        &store.read_range(key, (6 << 20) - 3, 6).await.unwrap()[..],
        &big[(6 << 20) - 3..(6 << 20) + 3],
        "a range across the first part boundary"
    );
}

#[tokio::test]
async fn a_missing_bucket_or_a_wrong_key_stops_start_up_with_the_reason() {
    let Some(bucket) = s3_bucket() else { return };
    let err = S3Store::connect("no-such-bucket", "").await.err().unwrap();
    assert_eq!(
        err.to_string(),
        "object store unavailable: S3 bucket `no-such-bucket`: the bucket does not exist"
    );
    // `tamiz serve` with a wrong secret: refused before it listens.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tamiz"))
        .arg("serve")
        .current_dir(dir.path())
        .env("TAMIZ_DATA_DIR", dir.path().join("data"))
        .env("TAMIZ_HTTP_ADDR", "127.0.0.1:0")
        .env("TAMIZ_S3_BUCKET", &bucket)
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "object store unavailable: S3 bucket `{bucket}`: access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )),
        "{stderr}"
    );
}
