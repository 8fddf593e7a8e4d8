//! WADO-RS retrieval with a real client (dicomweb-client): the instances come back
//! byte for byte as stored, for whoever may see the study; refusals are exact.

mod common;

use common::*;

/// `dicomweb-client` retrieves the study, one series and one instance as `user`, and
/// prints, per instance, its SOP Instance UID and the SHA-256 of its Pixel Data.
const RETRIEVE: &str = r#"
import hashlib, sys
from dicomweb_client.api import DICOMwebClient
url, token, study, series, sop = sys.argv[1:6]
c = DICOMwebClient(url=url, headers={"Authorization": "Bearer " + token})
def show(label, datasets):
    for ds in sorted(datasets, key=lambda d: d.SOPInstanceUID):
        print(label, ds.SOPInstanceUID, hashlib.sha256(ds.PixelData).hexdigest())
show("study", c.retrieve_study(study))
show("series", c.retrieve_series(study, series))
show("instance", [c.retrieve_instance(study, series, sop)])
"#;

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn dicomweb_client_retrieves_a_study_series_and_instance_as_stored() {
    let t = TestServer::start().await;
    let p = plan(4160, true);
    let files = study_files(&t.dir.path().join("in"), &p);
    let parts: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
    let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    t.wait_worklisted(&p.study_uid).await;
    // The STOW-RS response names where to retrieve the study and each instance.
    let study_url = format!("{}/dicomweb/studies/{}", t.url, p.study_uid);
    assert_eq!(first(&body, "00081190"), study_url.as_str());
    let referenced = seq(&body, "00081199");
    assert_eq!(referenced.len(), 4);
    for item in &referenced {
        let url = first(item, "00081190");
        let url = url.as_str().unwrap();
        let sop = first(item, "00081155");
        assert!(url.starts_with(&format!("{study_url}/series/")), "{url}");
        assert!(
            url.ends_with(&format!("/instances/{}", sop.as_str().unwrap())),
            "{url}"
        );
        let got = t
            .http
            .get(url)
            .header("Authorization", t.bearer("admin"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "{url}");
    }

    // What was sent: SOP Instance UID -> (series, SHA-256 of Pixel Data).
    let mut sent = std::collections::BTreeMap::new();
    for (path, _) in &files {
        let obj = dicom_object::open_file(path).unwrap();
        let text = |tag| {
            obj.element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .to_owned()
        };
        use dicom_dictionary_std::tags;
        let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        sent.insert(
            text(tags::SOP_INSTANCE_UID),
            (text(tags::SERIES_INSTANCE_UID), sha256_hex(&pixels)),
        );
    }
    let (sop, (series, _)) = sent.iter().next().unwrap();
    let in_series: Vec<_> = sent.iter().filter(|(_, v)| &v.0 == series).collect();
    let url = format!("{}/dicomweb", t.url);
    let token = t.token("radiologist-central").to_owned();
    let args = [
        url.as_str(),
        token.as_str(),
        p.study_uid.as_str(),
        series.as_str(),
        sop.as_str(),
    ];
    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            python(RETRIEVE, &a)
        }
    })
    .await
    .unwrap();
    let mut want = Vec::new();
    for (uid, (_, hash)) in &sent {
        want.push(format!("study {uid} {hash}"));
    }
    for (uid, (_, hash)) in &in_series {
        want.push(format!("series {uid} {hash}"));
    }
    want.push(format!("instance {sop} {}", sent[sop].1));
    assert_eq!(out.lines().collect::<Vec<_>>(), want);

    // The stored object, byte for byte, in a raw request.
    let resp = t
        .http
        .get(format!(
            "{}/dicomweb/studies/{}/series/{series}/instances/{sop}",
            t.url, p.study_uid
        ))
        .header("Authorization", t.bearer("uploader-clinic-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        ct.starts_with("multipart/related; type=\"application/dicom\"; boundary="),
        "{ct}"
    );
    let body = resp.bytes().await.unwrap();
    let original = &files.iter().find(|f| {
        dicom_object::open_file(&f.0)
            .unwrap()
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            == sop
    });
    let original = &original.unwrap().1;
    assert!(
        body.windows(original.len())
            .any(|w| w == original.as_slice()),
        "the part is the stored instance byte for byte"
    );
    let audit = audit_rows(&t.server.catalog, "radiologist-central").await;
    assert!(audit.iter().any(|r| r.action == "wado.retrieve"));
    t.stop().await;
}

#[tokio::test]
async fn retrieval_refusals_are_exact() {
    let t = TestServer::start().await;
    let p = plan(4161, false);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    let (code, _) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(code, 200);
    t.wait_worklisted(&p.study_uid).await;
    let study_path = format!("/dicomweb/studies/{}", p.study_uid);
    let get = |user: &'static str, path: String, accept: Option<&'static str>| {
        let t = &t;
        async move {
            let mut req = t
                .http
                .get(format!("{}{path}", t.url))
                .header("Authorization", t.bearer(user));
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (code, body["error"].as_str().unwrap_or_default().to_owned())
        }
    };
    assert_eq!(
        get("radiologist-north", study_path.clone(), None).await,
        (
            403,
            format!(
                "a radiologist user of north may not see study {}: it belongs to another center",
                p.study_uid
            )
        )
    );
    assert_eq!(
        get("admin", format!("{study_path}/series/1.2.3"), None).await,
        (
            404,
            format!("series 1.2.3 not found in study {}", p.study_uid)
        )
    );
    assert_eq!(
        get("admin", format!("{study_path}/series/1.2.x"), None).await,
        (400, "`1.2.x` is not a valid UID".into())
    );
    assert_eq!(
        get("admin", study_path.clone(), Some("application/dicom+json")).await,
        (
            406,
            "WADO-RS here answers multipart/related; type=\"application/dicom\" only; the request accepts application/dicom+json".into()
        )
    );
    let (code, error) = get(
        "admin",
        study_path.clone(),
        Some(
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.70",
        ),
    )
    .await;
    assert_eq!(code, 406);
    assert!(
        error.ends_with(
            "is stored in transfer syntax 1.2.840.10008.1.2.1 and tamiz does not transcode: accept it, or transfer-syntax=*"
        ),
        "{error}"
    );
    t.stop().await;
}
