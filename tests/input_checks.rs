//! The input checks (issue: clinical safety) on real files through a real server: a
//! view the model was not made for sends its study out untriaged with the reason,
//! counted in the summary and the metrics; real mammograms (CBIS-DDSM) and the
//! synthetic studies pass them.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use tamiz::dicom::pixels::{decode, Rendering};
use tamiz::input_check::check_rendering;
use tamiz::model::ModelCard;

fn shipped_card() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/triage.toml")
}

/// The shipped card and model copied to `dir`, the card set to render as the file
/// says (`[preprocess] rendering = "file"`).
fn file_rendering_card(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(shipped_card()).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("rendering ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("[preprocess]\n"));
    let text = text.replace("[preprocess]\n", "[preprocess]\nrendering = \"file\"\n");
    let card = dir.join("triage.toml");
    std::fs::write(&card, text).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/triage.onnx"),
        dir.join("triage.onnx"),
    )
    .unwrap();
    card
}

#[test]
fn real_and_synthetic_mammograms_pass_the_input_checks_and_raw_data_fails_them() {
    let (card, _) = ModelCard::load(&shipped_card()).unwrap();
    let mut objs = Vec::new();
    for f in mammograms() {
        objs.push((
            f.display().to_string(),
            dicom_object::open_file(&f).unwrap(),
        ));
    }
    for seed in 0..3 {
        let p = plan(100 + seed, seed % 2 == 0);
        for (lat, view, obj) in tamiz::synth::study_objects(&p) {
            objs.push((
                format!("synthetic {seed} {}-{}", lat.as_str(), view.as_str()),
                obj,
            ));
        }
    }
    let check = |obj: &dicom_object::DefaultDicomObject, rendering| {
        let (img, pipeline) = decode(obj, rendering).unwrap();
        check_rendering(
            &img,
            &pipeline,
            rendering,
            card.preprocess.crop_threshold,
            &card.input.checks,
        )
    };
    // Every For Presentation convention passes under the canonical rendering; raw
    // For Processing data does not.
    for variant in tamiz::synth::Variant::ALL {
        let mut p = plan(110, true);
        p.variant = variant;
        for (lat, view, obj) in tamiz::synth::study_objects(&p) {
            let name = format!("{} {}-{}", variant.as_str(), lat.as_str(), view.as_str());
            let result = check(&obj, Rendering::Canonical);
            if variant.for_presentation() {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
            } else {
                let e = result.unwrap_err();
                assert!(
                    e.starts_with("its border is mostly bright ("),
                    "{name}: {e}"
                );
            }
        }
    }
    for (name, obj) in &objs {
        tamiz::input_check::check_attributes(obj, &card.input.checks)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for rendering in [Rendering::File, Rendering::Canonical] {
            check(obj, rendering).unwrap_or_else(|e| panic!("{name} ({rendering:?}): {e}"));
        }
    }
}

/// The four views of a study, each edited by `edit`, as request parts.
fn edited(
    seed: u64,
    edit: impl Fn(&mut dicom_object::DefaultDicomObject),
) -> (String, Vec<Vec<u8>>) {
    let p = plan(seed, false);
    let parts = tamiz::synth::study_objects(&p)
        .into_iter()
        .map(|(_, _, mut obj)| {
            edit(&mut obj);
            let mut out = Vec::new();
            obj.write_all(&mut out).unwrap();
            out
        })
        .collect();
    (p.study_uid, parts)
}

fn put(obj: &mut dicom_object::DefaultDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Sends the study, waits for its worklist item, returns (priority, reason).
async fn outcome(t: &TestServer, study: &str, parts: &[Vec<u8>]) -> (String, String) {
    let (code, body) = t.stow("/dicomweb/studies", parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    let item = t.wait_worklisted(study).await.worklist.unwrap();
    (item.priority, item.reason)
}

#[tokio::test]
async fn raw_data_labelled_for_presentation_goes_out_untriaged_and_is_counted() {
    let t = TestServer::start().await;
    // Raw detector data as some systems send it, without saying For Processing:
    // inverted, so the background is brighter than the breast.
    let (study, parts) = edited(71, |obj| {
        let pixels: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .to_multi_int::<u16>()
            .unwrap();
        let raw: Vec<u16> = pixels.iter().map(|v| 4095 - v.min(&4095)).collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(raw.into()),
        ));
    });
    let (priority, reason) = outcome(&t, &study, &parts).await;
    assert_eq!(priority, "untriaged");
    assert!(
        reason.starts_with(
            "untriaged: L-CC is not an image the model was made for: its border is mostly bright ("
        ),
        "{reason}"
    );
    let (code, summary) = t.get_json("/api/v1/summary").await;
    assert_eq!(code, 200);
    assert_eq!(summary["untriaged_by_cause"]["input_check"], 1, "{summary}");
    assert_eq!(
        summary["untriaged_by_cause"]["view_selection"], 0,
        "{summary}"
    );
    let text = t.metrics_text().await;
    assert!(
        text.contains("tamiz_untriaged_studies{cause=\"input_check\"} 1"),
        "{text}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_pixel_spacing_outside_the_card_goes_out_untriaged_with_the_reason() {
    let t = TestServer::start().await;
    let (study, parts) = edited(72, |obj| put(obj, tags::PIXEL_SPACING, VR::DS, "1.5\\1.5"));
    let (priority, reason) = outcome(&t, &study, &parts).await;
    assert_eq!(priority, "untriaged");
    assert!(
        reason.starts_with("untriaged: L-CC is not an image the model was made for: pixel spacing 1.5 mm is outside the model's range 0.02-0.5 mm;"),
        "{reason}"
    );
    t.stop().await;
}

/// Under a card that renders as the file says, a window that makes the image
/// near-black and a VOI LUT that declares 16 bits for 12-bit entries are refused.
#[tokio::test]
async fn renderings_the_model_cannot_read_go_out_untriaged_under_a_file_rendering_card() {
    let dir = tempfile::tempdir().unwrap();
    let card = file_rendering_card(dir.path());
    let t = TestServer::start_with(|c| c.model.card = Some(card)).await;
    let (dark, parts) = edited(73, |obj| {
        put(obj, tags::WINDOW_CENTER, VR::DS, "9000");
        put(obj, tags::WINDOW_WIDTH, VR::DS, "8000");
    });
    let (priority, reason) = outcome(&t, &dark, &parts).await;
    assert_eq!(priority, "untriaged");
    assert!(
        reason.starts_with("untriaged: L-CC is not an image the model was made for: renders near-black (99.5th percentile of display values"),
        "{reason}"
    );
    let (quirk, parts) = edited(74, voi_lut_16_bit_descriptor_12_bit_entries);
    let (priority, reason) = outcome(&t, &quirk, &parts).await;
    assert_eq!(priority, "untriaged");
    assert!(
        reason.starts_with("untriaged: L-CC is not an image the model was made for: its VOI LUT Descriptor declares 16-bit entries but the table uses 12 bits"),
        "{reason}"
    );
    t.stop().await;
}

/// A VOI LUT Sequence (replacing the window) whose descriptor says 16 bits while its
/// entries are 12-bit: the identity over the 12-bit stored range.
pub fn voi_lut_16_bit_descriptor_12_bit_entries(obj: &mut dicom_object::DefaultDicomObject) {
    use dicom_object::InMemDicomObject;
    obj.remove_element(tags::WINDOW_CENTER);
    obj.remove_element(tags::WINDOW_WIDTH);
    obj.remove_element(tags::VOILUT_FUNCTION);
    let table: Vec<u16> = (0..4096u16).collect();
    let item = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::LUT_DESCRIPTOR,
            VR::US,
            PrimitiveValue::U16(vec![4096, 0, 16].into()),
        ),
        DataElement::new(tags::LUT_DATA, VR::OW, PrimitiveValue::U16(table.into())),
    ]);
    obj.put(DataElement::new(
        tags::VOILUT_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![item]),
    ));
}
