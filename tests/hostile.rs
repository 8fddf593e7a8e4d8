//! Hostile uploads: randomly damaged DICOM files and garbage request bodies. Whatever
//! arrives, the server answers with a documented status and a named problem, stays
//! up, and stores exactly the instances it reported as stored.
//!
//! Regression: before `dicom::guard`, a damaged length or VR in a few-kilobyte upload
//! made dicom-rs zero-fill buffers of up to gigabytes (seconds of CPU per request);
//! these 150 uploads then took about a minute, now a fraction of a second.

mod common;

use std::collections::HashSet;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A small but complete MG instance.
fn small_instance() -> Vec<u8> {
    common::corpus::base_instance()
}

fn damage(base: &[u8], rng: &mut SmallRng) -> Vec<u8> {
    let mut b = base.to_vec();
    match rng.random_range(0..4) {
        0 => b.truncate(rng.random_range(0..base.len())),
        1 => {
            // flip bytes in the header, where tags, VRs and lengths live
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..600.min(b.len()));
                b[i] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            let i = rng.random_range(132..600.min(b.len()));
            let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            b.splice(i..i, junk);
        }
        _ => {
            // a huge length field somewhere in the header
            let i = rng.random_range(132..596.min(b.len() - 4));
            b[i..i + 4].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0x7F]);
        }
    }
    b
}

#[tokio::test]
async fn damaged_instances_are_answered_and_never_half_stored() {
    let t = TestServer::start().await;
    let base = small_instance();
    assert_eq!(
        t.stow("/dicomweb/studies", std::slice::from_ref(&base), None)
            .await
            .0,
        200
    );
    let mut rng = SmallRng::seed_from_u64(0x7A312);
    let mut stored: HashSet<String> = HashSet::from(["1.2.3.1.1".to_string()]);
    for round in 0..150 {
        let bad = damage(&base, &mut rng);
        let (status, body) = t.stow("/dicomweb/studies", &[bad], None).await;

        match status {
            200 => {
                for item in seq(&body, "00081199") {
                    stored.insert(first(item, "00081155").as_str().unwrap().to_owned());
                }
            }
            409 => {
                let failed = seq(&body, "00081198");
                assert_eq!(failed.len(), 1, "round {round}: {body}");
                let comment = failure_text(failed[0]);
                let comment = comment.as_str().unwrap_or("");
                let reason = first(failed[0], "00081197").as_u64();
                // A damaged file is the sender's to fix: a refusal naming the problem,
                // never "processing failure, retry later" (how a guard panic once hid).
                assert!(
                    matches!(reason, Some(0xC000 | 0xC122 | 0xA900 | 0x0122 | 0x0111)),
                    "round {round}: reason {reason:?}: {body}"
                );
                assert!(
                    comment.len() > 20 && !comment.contains("retry"),
                    "round {round}: no usable reason given: {body}"
                );
            }
            other => panic!("round {round}: unexpected status {other}: {body}"),
        }
    }
    assert_eq!(
        t.stored_objects().await.len(),
        stored.len(),
        "objects stored = instances reported stored"
    );
    // the original is intact
    let original = t
        .stored_objects()
        .await
        .into_iter()
        .find(|p| p.ends_with("1.2.3.1.1.dcm"))
        .unwrap();
    assert_eq!(t.server.store.get(&original).await.unwrap().to_vec(), base);
    assert_eq!(t.healthz().await, 200);
    t.stop().await;
}

#[tokio::test]
async fn garbage_bodies_get_a_400_and_the_server_stays_up() {
    let t = TestServer::start().await;
    let mut rng = SmallRng::seed_from_u64(99);
    for round in 0..40 {
        let len = rng.random_range(0..4096);
        let mut body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if round % 2 == 0 {
            // starts like our multipart but breaks off
            let mut head =
                b"--tamiz-test-boundary-8c1f\r\nContent-Type: application/dicom\r\n\r\nDICM"
                    .to_vec();
            head.append(&mut body);
            body = head;
        }
        let resp = t
            .http
            .post(format!("{}/dicomweb/studies", t.url))
            .header("Authorization", t.bearer("admin"))
            .header(
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=tamiz-test-boundary-8c1f",
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await.unwrap();
        match status {
            400 => assert!(
                json["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("malformed multipart body")),
                "round {round}: {json}"
            ),
            409 => {
                let failed = seq(&json, "00081198");
                assert_eq!(failed.len(), 1, "round {round}: {json}");
                assert_eq!(
                    first(failed[0], "00081197"),
                    0xC000,
                    "round {round}: {json}"
                );
            }
            other => panic!("round {round}: status {other}: {json}"),
        }
    }
    assert!(t.stored_objects().await.is_empty());
    assert_eq!(t.healthz().await, 200);
    t.stop().await;
}
