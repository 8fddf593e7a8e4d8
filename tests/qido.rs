//! QIDO-RS search with a real client (dicomweb-client): each caller finds what it
//! may see, by study, patient, series and instance; refusals are exact.

mod common;

use common::*;

/// Searches as `token`: studies (all, and by Patient ID), the first study's series,
/// and that series' instances; prints one line per match.
const SEARCH: &str = r#"
import sys
from dicomweb_client.api import DICOMwebClient
url, token, patient = sys.argv[1:4]
c = DICOMwebClient(url=url, headers={"Authorization": "Bearer " + token})
studies = c.search_for_studies()
for s in studies:
    print("study", s["0020000D"]["Value"][0], s["00201208"]["Value"][0])
for s in c.search_for_studies(search_filters={"PatientID": patient}):
    print("patient", s["0020000D"]["Value"][0])
if studies:
    study = sorted(s["0020000D"]["Value"][0] for s in studies)[0]
    for se in c.search_for_series(study):
        series = se["0020000E"]["Value"][0]
        print("series", series, se["00201209"]["Value"][0])
        for i in c.search_for_instances(study, series):
            print("instance", i["00080018"]["Value"][0], i["00200062"]["Value"][0], i["00185101"]["Value"][0], i["00081190"]["Value"][0].split("/dicomweb/", 1)[1] == "studies/%s/series/%s/instances/%s" % (study, series, i["00080018"]["Value"][0]))
"#;

async fn search(t: &TestServer, user: &str, patient: &str) -> Vec<String> {
    let args: Vec<String> = vec![
        format!("{}/dicomweb", t.url),
        t.token(user).to_owned(),
        patient.to_owned(),
    ];
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        python(SEARCH, &a)
    })
    .await
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn each_caller_finds_the_studies_it_may_see_down_to_the_instances() {
    let t = TestServer::start().await;
    // Two clinic-b studies (read at central), one clinic-a study (read at north).
    let b1 = plan(4170, false);
    let b2 = plan(4171, false);
    let a1 = plan(4172, false);
    for (p, center) in [(&b1, "clinic-b"), (&b2, "clinic-b"), (&a1, "clinic-a")] {
        let parts = study_parts(&t.dir.path().join(&p.study_uid), p);
        let (code, body) = t.stow("/dicomweb/studies", &parts, Some(center)).await;
        assert_eq!(code, 200, "{body}");
        t.wait_worklisted(&p.study_uid).await;
    }
    let mut central = [b1.study_uid.clone(), b2.study_uid.clone()];
    central.sort();

    let lines = search(&t, "radiologist-central", &b2.patient_id).await;
    let studies: Vec<&String> = lines.iter().filter(|l| l.starts_with("study ")).collect();
    let mut found: Vec<String> = studies
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    found.sort();
    assert_eq!(
        found, central,
        "central's radiologist sees central's studies only"
    );
    assert!(studies.iter().all(|l| l.ends_with(" 4")), "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("patient "))
            .collect::<Vec<_>>(),
        vec![&format!("patient {}", b2.study_uid)]
    );
    let instances: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("instance "))
        .collect();
    let series: Vec<&String> = lines.iter().filter(|l| l.starts_with("series ")).collect();
    let per_series: usize = series
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(per_series, 4);
    assert_eq!(instances.len(), 4, "{lines:?}");
    let mut views: Vec<String> = instances
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f[4], "True", "Retrieve URL of the instance: {l}");
            format!("{}-{}", f[2], f[3])
        })
        .collect();
    views.sort();
    assert_eq!(views, ["L-CC", "L-MLO", "R-CC", "R-MLO"]);

    // clinic-a's uploader sees its one study; north's radiologist the same one.
    for user in ["uploader-clinic-a", "radiologist-north"] {
        let lines = search(&t, user, &b2.patient_id).await;
        let studies: Vec<&String> = lines.iter().filter(|l| l.starts_with("study ")).collect();
        assert_eq!(
            studies,
            vec![&format!("study {} 4", a1.study_uid)],
            "{user}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("patient ")), "{user}");
    }
    t.stop().await;
}

#[tokio::test]
async fn retrieve_urls_are_rooted_at_the_public_url() {
    let t = TestServer::start_with(|c| {
        c.server.public_url = Some("https://tamiz.example.org/".into());
    })
    .await;
    let p = plan(4173, false);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    let want = format!("https://tamiz.example.org/dicomweb/studies/{}", p.study_uid);
    assert_eq!(first(&body, "00081190"), want.as_str());
    let (code, found) = t.get_json_as("admin", "/dicomweb/studies").await;
    assert_eq!(code, 200);
    assert_eq!(first(&found[0], "00081190"), want.as_str());
    t.stop().await;
}

#[tokio::test]
async fn search_refusals_are_exact() {
    let t = TestServer::start().await;
    let (code, body) = t
        .get_json_as("admin", "/dicomweb/studies?StudyDate=20260101")
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["error"],
        "query key `StudyDate` is not supported for studies (supported: StudyInstanceUID, PatientID, IssuerOfPatientID, ModalitiesInStudy, limit, offset, includefield, fuzzymatching)"
    );
    let (code, body) = t.get_json_as("admin", "/dicomweb/studies?limit=5000").await;
    assert_eq!(code, 400);
    assert_eq!(body["error"], "limit must be a number from 0 to 1000");
    let (code, body) = t
        .get_json_as("admin", "/dicomweb/studies?StudyInstanceUID=1.2.x")
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["error"],
        "StudyInstanceUID: `1.2.x` is not a valid UID"
    );
    // Nothing stored: no match is 204.
    let resp = t
        .http
        .get(format!("{}/dicomweb/studies", t.url))
        .header("Authorization", t.bearer("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    t.stop().await;
}
