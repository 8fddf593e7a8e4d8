//! `tamiz evaluate --by COLUMN` on a small labelled folder: the same breasts in every
//! vendor convention (a paired set), broken down by the `variant` column.

use std::collections::HashMap;
use std::path::Path;

use tamiz::evaluate::{evaluate, report};
use tamiz::model::Model;
use tamiz::synth::plan_studies;
use tamiz::triage::Priority;

#[test]
fn the_evaluation_breaks_results_down_by_a_labels_column() {
    let dir = tempfile::tempdir().unwrap();
    // One study with a lesion and one without, at a small matrix, in every variant.
    let mut plans = plan_studies(6, 5, 0.5, 512, 416, &["SYNTHETIC"]);
    let cancer = plans.iter().position(|p| p.label() == 1).unwrap();
    let normal = plans.iter().position(|p| p.label() == 0).unwrap();
    plans = vec![plans[cancer].clone(), plans[normal].clone()];
    let set = tamiz::dataset::in_every_variant(&plans, 5);
    assert_eq!(set.len(), 22);
    tamiz::dataset::write_labelled(dir.path(), &set).unwrap();

    let card = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/triage.toml");
    let model = Model::load(&card, 0).unwrap();
    let e = evaluate(dir.path(), &model, &Default::default(), Some("variant")).unwrap();
    assert_eq!(e.studies.len(), 22);
    let names: Vec<&str> = e.groups.iter().map(|g| g.name.as_str()).collect();
    let mut expected: Vec<&str> = tamiz::synth::Variant::ALL
        .iter()
        .map(|v| v.as_str())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    for g in &e.groups {
        assert_eq!((g.studies, g.cancers), (2, 1), "{g:?}");
        let refused = if g.name == "for-processing" { 2 } else { 0 };
        assert_eq!(g.untriaged, refused, "{g:?}");
    }
    // For Processing studies are never scored; the canonical rendering gives every
    // VOI convention exactly the LINEAR input, so the same scores.
    let score = |variant: &str, label: u8| {
        let by_uid: HashMap<&str, &str> = set
            .iter()
            .map(|p| (p.study_uid.as_str(), p.variant.as_str()))
            .collect();
        e.studies
            .iter()
            .find(|s| by_uid[s.study_uid.as_str()] == variant && s.label == label)
            .unwrap()
    };
    for label in [0, 1] {
        assert_eq!(score("for-processing", label).priority, Priority::Untriaged);
        let linear = score("linear", label).score.unwrap();
        for variant in [
            "sigmoid",
            "voi-lut",
            "no-window",
            "narrow-window",
            "voi-lut-16-bit-quirk",
        ] {
            let s = score(variant, label).score.unwrap();
            assert!(
                (s - linear).abs() < 1e-5,
                "{variant}: {s} vs linear {linear}"
            );
        }
    }
    let text = report(&e, &model);
    assert!(
        text.contains("\ngroup                     studies  cancers  untriaged      AUC\n"),
        "{text}"
    );
    assert!(
        text.contains("\nfor-processing                  2        1          2      NaN\n"),
        "{text}"
    );
    assert!(text.contains("\nworst group: "), "{text}");

    let err = evaluate(dir.path(), &model, &Default::default(), Some("vendor")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no column `vendor` to break the results down by (columns: study_uid, label, finding, breast, variant)",
            dir.path().join("labels.csv").display()
        )
    );
}
