//! Rendering-independent triage (issue: clinical safety): the same breasts stored
//! with another vendor's presentation convention get the same scores and priority.
//! A cancer study A and a normal study B of `tamiz synth` are re-encoded by dcmtk
//! (`dcmodify`) and pydicom as real fleets store them, then sent to a real server.
//! Under the shipped card's canonical rendering, the VOI (window function, VOI LUT
//! Sequence, none at all, a VOI LUT with a wrong bit depth) and the photometric
//! convention do not change the model's input, so the scores match the LINEAR ones.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Rewrites every `.dcm` under `src` into `dst` with new Study, Series and SOP
/// Instance UIDs (the copy is another study), applying `edit` (Python, on `ds`).
const REWRITE: &str = r#"
import sys, pathlib, pydicom, numpy as np
from pydicom.uid import generate_uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
src, dst, edit = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
study, series = generate_uid(), generate_uid()
dst.mkdir(parents=True, exist_ok=True)
def drop_window(ds):
    for k in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
        if k in ds: delattr(ds, k)
def voi_lut(ds, bits, table):
    drop_window(ds)
    item = Dataset()
    item.add_new(0x00283002, "US", [len(table), 0, bits])
    item.add_new(0x00283006, "OW", np.asarray(table, dtype="<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
for f in sorted(src.glob("*.dcm")):
    ds = pydicom.dcmread(f)
    x = np.arange(4096, dtype=np.float64)
    ramp = np.clip((x - 200.0) / 3600.0, 0.0, 1.0)
    if edit == "voi-lut":
        voi_lut(ds, 16, np.round(65535 * ramp ** 0.8))
    elif edit == "voi-lut-16-bit-quirk":
        voi_lut(ds, 16, np.round(4095 * ramp))
    elif edit == "monochrome1":
        px = ds.pixel_array.astype(np.uint16)
        ds.PixelData = (4095 - np.minimum(px, 4095)).astype("<u2").tobytes()
        ds.PhotometricInterpretation = "MONOCHROME1"
    elif edit != "none":
        raise SystemExit("unknown edit " + edit)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(dst / f.name, enforce_file_format=True)
print(study)
"#;

/// A copy of the study in `src` under new UIDs, edited by `edit`; returns its folder
/// and study UID.
fn rewrite(src: &Path, dst: &Path, edit: &str) -> (PathBuf, String) {
    let study = python(
        REWRITE,
        &[src.to_str().unwrap(), dst.to_str().unwrap(), edit],
    )
    .trim()
    .to_owned();
    (dst.to_owned(), study)
}

/// The study's files as request parts.
fn parts(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

/// Sends the study; returns (priority, study score, reason). A 503 ("the object store
/// failed ... retry later": s3s-fs drops a connection now and then under the load of
/// many 27 MB studies) is retried, as `tamiz upload` retries it.
async fn triage(t: &TestServer, dir: &Path, study: &str) -> (String, Option<f64>, String) {
    let parts = parts(dir);
    let mut tries = 0;
    let (code, body) = loop {
        let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
        tries += 1;
        if code != 503 || tries == 4 {
            break (code, body);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    assert_eq!(code, 200, "{body}");
    let item = t.wait_worklisted(study).await.worklist.unwrap();
    (item.priority, item.score, item.reason)
}

/// The LINEAR study and its dcmtk / pydicom re-encodings, in one server.
async fn every_rendering_gives_the_same_priority(seed: u64, lesion: bool) {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(seed, lesion);
    let files = study_files(&dir.path().join("linear"), &p);
    let linear = files[0].0.parent().unwrap().to_owned();
    let t = TestServer::start().await;
    let (base_priority, base_score, reason) = triage(&t, &linear, &p.study_uid).await;
    let base_score = base_score.unwrap_or_else(|| panic!("LINEAR not scored: {reason}"));

    // dcmtk: VOI LUT Function SIGMOID; and no window at all.
    let mut variants = Vec::new();
    for (name, args) in [
        ("sigmoid", vec!["-i", "(0028,1056)=SIGMOID"]),
        (
            "no-window",
            vec![
                "-e",
                "(0028,1050)",
                "-e",
                "(0028,1051)",
                "-e",
                "(0028,1056)",
            ],
        ),
    ] {
        let (copy, study) = rewrite(&linear, &dir.path().join(name), "none");
        for f in std::fs::read_dir(&copy).unwrap() {
            let f = f.unwrap().path();
            let mut a: Vec<&str> = vec!["-nb"];
            a.extend(&args);
            a.push(f.to_str().unwrap());
            tool("dcmodify", &a);
        }
        variants.push((name, copy, study));
    }
    // pydicom: VOI LUT Sequences (a gamma curve; a 16-bit descriptor over 12-bit
    // entries) and MONOCHROME1 storage.
    for name in ["voi-lut", "voi-lut-16-bit-quirk", "monochrome1"] {
        let (copy, study) = rewrite(&linear, &dir.path().join(name), name);
        variants.push((name, copy, study));
    }
    for (name, copy, study) in variants {
        let (priority, score, reason) = triage(&t, &copy, &study).await;
        let score = score.unwrap_or_else(|| panic!("{name} not scored: {reason}"));
        assert_eq!(
            priority, base_priority,
            "{name}: {score} vs LINEAR {base_score}"
        );
        assert!(
            (score - base_score).abs() < 1e-4,
            "{name}: study score {score}, LINEAR {base_score}"
        );
    }
    t.stop().await;
}

/// Both studies in one test, one after the other: two tests at once put 24 uploads of
/// 27 MB on the S3 server together.
#[tokio::test]
async fn sigmoid_voi_lut_no_window_16_bit_voi_lut_and_monochrome1_score_as_linear() {
    every_rendering_gives_the_same_priority(41, true).await;
    every_rendering_gives_the_same_priority(42, false).await;
}
