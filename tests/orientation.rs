//! Orientation from Patient Orientation (0020,0020): MLO views stored upside down, and
//! saying so, are turned over before the model sees them, so the study scores as it
//! does stored upright (issue: clinical safety, "MLO images stored upside down").

mod common;

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use serde_json::Value;
use tamiz::dicom::View;

/// The study's four views as DICOM files' bytes; with `upside_down`, each MLO's rows are
/// reversed and its Patient Orientation says so (rows toward A or P by where its chest
/// wall is, columns toward H).
fn views(plan: &tamiz::synth::StudyPlan, upside_down: bool) -> Vec<Vec<u8>> {
    tamiz::synth::study_objects(plan)
        .into_iter()
        .map(|(_, view, mut obj)| {
            if upside_down && view == View::Mlo {
                let pixels: Vec<u16> = obj
                    .element(tags::PIXEL_DATA)
                    .unwrap()
                    .value()
                    .to_multi_int::<u16>()
                    .unwrap();
                let (w, h) = (COLUMNS, ROWS);
                assert_eq!(pixels.len(), w * h);
                let half = |range: std::ops::Range<usize>| -> u64 {
                    pixels
                        .chunks(w)
                        .map(|row| row[range.clone()].iter().map(|&v| v as u64).sum::<u64>())
                        .sum()
                };
                let chest_wall_right = half(w / 2..w) > half(0..w / 2);
                let turned: Vec<u16> = pixels.chunks(w).rev().flatten().copied().collect();
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OW,
                    PrimitiveValue::U16(turned.into()),
                ));
                let rows_toward = if chest_wall_right { "P" } else { "A" };
                obj.put(DataElement::new(
                    tags::PATIENT_ORIENTATION,
                    VR::CS,
                    PrimitiveValue::from(format!("{rows_toward}\\H")),
                ));
            }
            let mut bytes = Vec::new();
            obj.write_all(&mut bytes).unwrap();
            bytes
        })
        .collect()
}

/// The view scores the server gives the study, by "L-MLO" and so on.
async fn view_scores(parts: &[Vec<u8>], study: &str) -> Vec<(String, f64)> {
    let t = TestServer::start().await;
    let (code, body) = t.stow("/dicomweb/studies", parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    t.wait_worklisted(study).await;
    let (_, status) = t.get_json(&format!("/api/v1/studies/{study}")).await;
    t.stop().await;
    let mut scores: Vec<(String, f64)> = status["view_scores"]
        .as_array()
        .unwrap_or_else(|| panic!("no view scores: {status}"))
        .iter()
        .map(|v: &Value| {
            (
                format!(
                    "{}-{}",
                    v["laterality"].as_str().unwrap(),
                    v["view"].as_str().unwrap()
                ),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect();
    scores.sort_by(|a, b| a.0.cmp(&b.0));
    scores
}

#[tokio::test]
async fn mlo_views_stored_upside_down_and_saying_so_score_as_upright_ones() {
    let p = plan(81, true);
    let upright = view_scores(&views(&p, false), &p.study_uid).await;
    let turned = view_scores(&views(&p, true), &p.study_uid).await;
    assert_eq!(upright.len(), 4, "{upright:?}");
    for ((view, a), (view_b, b)) in upright.iter().zip(&turned) {
        assert_eq!(view, view_b);
        assert!(
            (a - b).abs() < 1e-5,
            "{view}: {a} upright, {b} stored upside down: {upright:?} {turned:?}"
        );
    }
}
