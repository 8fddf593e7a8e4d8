//! Which of a study's stored images the model scores, decided by what their DICOM
//! attributes say they are, never by the order they arrived in.
//!
//! The policy, in order:
//! 1. **Screening views only**: the card's views (CC and MLO) without a work-up modifier (spot compression,
//!    magnification, rolled, cleavage, ...) and not tomosynthesis (a stack of 3D
//!    slices, marked by the modifier `tomosynthesis` at ingest). Such images stay in the
//!    study and on the worklist for reading; they are never scored as a screening view.
//! 2. **Intent**: only the Presentation Intents the model card takes (For Presentation
//!    for the shipped model); raw For Processing data is never scored by a model not
//!    made for it.
//! 3. **Implants**: a view with a breast implant in the image is scored on its
//!    implant-displaced image (Eklund view), and the reason says so. When a view has
//!    only images with the implant in view and the card says the model was not made
//!    for implants, the study is not scored at all: it goes out untriaged with the
//!    reason.
//! 4. **Repeats**: of several images of one view, the latest acquired (Acquisition
//!    DateTime, else Acquisition or Content Date and Time); an image with a time wins
//!    over one without; ties by the greater SOP Instance UID (compared component by
//!    component as numbers).
//!
//! The catalog's four-view completeness check applies rules 1 to 3 in SQL (see
//! `Catalog::insert_instance`), so a study is not triaged before its scorable views
//! are in.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::catalog::StoredInstance;
use crate::dicom::{Implant, Intent, TOMOSYNTHESIS};
use crate::model::InputSpec;

/// The screening views in the order the worker reports them missing.
const SCREENING_VIEWS: [&str; 4] = ["R-CC", "L-CC", "R-MLO", "L-MLO"];

/// What view selection decided for one study.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// One image per screening view found, in (laterality, view) order.
    pub scored: Vec<StoredInstance>,
    /// The screening views with no scorable image, e.g. "L-MLO".
    pub missing: Vec<String>,
    /// What the policy did that a reader should know, for the worklist reason.
    pub notes: Vec<String>,
    /// Why the study cannot be scored at all; `scored` is then empty.
    pub refusal: Option<String>,
}

/// The view's name as the worklist shows it, e.g. "L-CC".
fn name(i: &StoredInstance) -> String {
    format!("{}-{}", i.laterality, i.view)
}

/// Orders UIDs as numbers, component by component.
fn uid_order(a: &str, b: &str) -> Ordering {
    let key = |u: &str| {
        u.split('.')
            .map(|c| {
                (
                    c.trim_start_matches('0').len(),
                    c.trim_start_matches('0').to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    key(a).cmp(&key(b))
}

/// The later of two images of one view by rule 4.
fn later(a: &StoredInstance, b: &StoredInstance) -> Ordering {
    a.acquired
        .cmp(&b.acquired)
        .then_with(|| uid_order(&a.sop_uid, &b.sop_uid))
}

/// Applies the policy of this module to a study's stored images.
pub fn select(instances: &[StoredInstance], input: &InputSpec) -> Selection {
    let mut notes = Vec::new();
    let screening: Vec<&StoredInstance> = instances
        .iter()
        .filter(|i| input.views.contains(&i.view))
        .collect();
    let is_tomo = |i: &StoredInstance| i.modifiers == TOMOSYNTHESIS;
    let tomosynthesis: Vec<String> = screening
        .iter()
        .filter(|i| is_tomo(i))
        .map(|i| name(i))
        .collect();
    if !tomosynthesis.is_empty() {
        notes.push(format!(
            "tomosynthesis kept for reading, not scored: {}",
            tomosynthesis.join(", ")
        ));
    }
    let workup: Vec<String> = screening
        .iter()
        .filter(|i| !i.modifiers.is_empty() && !is_tomo(i))
        .map(|i| format!("{} {}", name(i), i.modifiers))
        .collect();
    if !workup.is_empty() {
        notes.push(format!(
            "work-up views kept for reading, not scored: {}",
            workup.join("; ")
        ));
    }
    let standard = screening.iter().filter(|i| i.modifiers.is_empty());
    let (taken, refused_intent): (Vec<&StoredInstance>, Vec<&StoredInstance>) =
        standard.partition(|i| {
            Intent::parse(&i.intent).is_some_and(|intent| input.intent.contains(&intent))
        });
    if !refused_intent.is_empty() {
        notes.push(format!(
            "{} For Processing image(s) not scored: the model takes {}",
            refused_intent.len(),
            intents(input)
        ));
    }
    let mut by_view: BTreeMap<(String, String), Vec<&StoredInstance>> = BTreeMap::new();
    for i in taken {
        by_view
            .entry((i.laterality.clone(), i.view.clone()))
            .or_default()
            .push(i);
    }
    let mut scored = Vec::new();
    let mut displaced_views = Vec::new();
    let mut implant_only = Vec::new();
    for images in by_view.values() {
        let implant_exam = images
            .iter()
            .any(|i| Implant::parse(&i.implant) != Implant::None);
        let displaced: Vec<&StoredInstance> = images
            .iter()
            .copied()
            .filter(|i| Implant::parse(&i.implant) == Implant::Displaced)
            .collect();
        let candidates = if !implant_exam {
            images.clone()
        } else if !displaced.is_empty() {
            displaced_views.push(name(images[0]));
            displaced
        } else if input.implants {
            images.clone()
        } else {
            implant_only.push(name(images[0]));
            continue;
        };
        let Some(pick) = candidates.iter().copied().max_by(|a, b| later(a, b)) else {
            continue;
        };
        if candidates.len() > 1 {
            notes.push(format!(
                "{}: {} images, the latest acquired scored",
                name(pick),
                candidates.len()
            ));
        }
        scored.push(pick.clone());
    }
    if !displaced_views.is_empty() {
        notes.push(format!(
            "implant exam: implant-displaced views scored ({})",
            displaced_views.join(", ")
        ));
    }
    let refusal = if !implant_only.is_empty() {
        Some(format!(
            "breast implant in view on {} with no implant-displaced image of that view; the model was not made for implants",
            implant_only.join(", ")
        ))
    } else if scored.is_empty() {
        Some(if !refused_intent.is_empty() {
            format!(
                "only For Processing images (raw detector data); the model takes {}",
                intents(input)
            )
        } else if !workup.is_empty() {
            "only work-up views (spot, magnification or other modified views), no screening view"
                .into()
        } else if !tomosynthesis.is_empty() {
            "only Breast Tomosynthesis images, no 2D screening view; the model scores 2D projection views"
                .into()
        } else {
            format!("no {} view in the study", input.views.join(" or "))
        })
    } else {
        None
    };
    if refusal.is_some() {
        scored.clear();
    }
    let missing = SCREENING_VIEWS
        .iter()
        .filter(|v| !scored.iter().any(|i| &name(i) == *v))
        .map(|v| v.to_string())
        .collect();
    Selection {
        scored,
        missing,
        notes,
        refusal,
    }
}

/// "For Presentation images", as a card's intents read in a reason.
fn intents(input: &InputSpec) -> String {
    let names: Vec<&str> = input
        .intent
        .iter()
        .map(|i| match i {
            Intent::Presentation => "For Presentation",
            Intent::Processing => "For Processing",
        })
        .collect();
    format!("{} images", names.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(sop: &str, lat: &str, view: &str) -> StoredInstance {
        StoredInstance {
            sop_uid: sop.into(),
            laterality: lat.into(),
            view: view.into(),
            object_key: format!("k/{sop}"),
            received_ms: 0,
            intent: "presentation".into(),
            modifiers: String::new(),
            implant: String::new(),
            acquired: String::new(),
        }
    }

    fn four(prefix: &str) -> Vec<StoredInstance> {
        [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
            .iter()
            .enumerate()
            .map(|(n, (l, v))| image(&format!("{prefix}.{n}"), l, v))
            .collect()
    }

    fn sops(s: &Selection) -> Vec<&str> {
        s.scored.iter().map(|i| i.sop_uid.as_str()).collect()
    }

    #[test]
    fn four_standard_views_are_scored_in_view_order() {
        let s = select(&four("1.1"), &InputSpec::default());
        assert_eq!(sops(&s), ["1.1.1", "1.1.3", "1.1.0", "1.1.2"]);
        assert!(
            s.missing.is_empty() && s.notes.is_empty() && s.refusal.is_none(),
            "{s:?}"
        );
    }

    #[test]
    fn for_processing_images_are_not_scored_whatever_their_order() {
        let mut images: Vec<StoredInstance> = four("2.2")
            .into_iter()
            .map(|mut i| {
                i.intent = "processing".into();
                i.sop_uid.push_str(".9"); // the greater UID, acquired at the same time
                i
            })
            .collect();
        images.extend(four("2.2"));
        let s = select(&images, &InputSpec::default());
        assert_eq!(sops(&s), ["2.2.1", "2.2.3", "2.2.0", "2.2.2"]);
        assert_eq!(
            s.notes,
            ["4 For Processing image(s) not scored: the model takes For Presentation images"]
        );
        images.reverse();
        assert_eq!(select(&images, &InputSpec::default()).scored, s.scored);
        let only_raw = select(&images[4..], &InputSpec::default());
        assert_eq!(
            only_raw.refusal.as_deref(),
            Some("only For Processing images (raw detector data); the model takes For Presentation images")
        );
        assert!(only_raw.scored.is_empty());
        // A card that takes raw data scores it.
        let raw_model = InputSpec {
            intent: vec![Intent::Processing],
            ..InputSpec::default()
        };
        assert_eq!(select(&images[4..], &raw_model).scored.len(), 4);
    }

    #[test]
    fn a_spot_view_is_kept_but_never_scored() {
        let mut images = four("3.3");
        let mut spot = image("3.3.9", "L", "CC");
        spot.modifiers = "magnification, spot compression".into();
        spot.acquired = "20261201120000".into();
        images.push(spot);
        let s = select(&images, &InputSpec::default());
        assert!(!sops(&s).contains(&"3.3.9"), "{s:?}");
        assert_eq!(s.scored.len(), 4);
        assert_eq!(
            s.notes,
            ["work-up views kept for reading, not scored: L-CC magnification, spot compression"]
        );
        let only_spot = select(&images[4..], &InputSpec::default());
        assert!(only_spot.refusal.unwrap().starts_with("only work-up views"));
    }

    #[test]
    fn implant_exams_are_scored_on_their_displaced_views() {
        let mut images: Vec<StoredInstance> = four("4.4")
            .into_iter()
            .map(|mut i| {
                i.implant = "present".into();
                i
            })
            .collect();
        let implant_only = select(&images, &InputSpec::default());
        assert!(implant_only.scored.is_empty());
        assert_eq!(
            implant_only.refusal.as_deref(),
            Some("breast implant in view on L-CC, L-MLO, R-CC, R-MLO with no implant-displaced image of that view; the model was not made for implants")
        );
        images.extend(four("4.5").into_iter().map(|mut i| {
            i.implant = "displaced".into();
            i
        }));
        let s = select(&images, &InputSpec::default());
        assert_eq!(sops(&s), ["4.5.1", "4.5.3", "4.5.0", "4.5.2"]);
        assert_eq!(
            s.notes,
            ["implant exam: implant-displaced views scored (L-CC, L-MLO, R-CC, R-MLO)"]
        );
        // One breast without its displaced view: not scored at all.
        images.retain(|i| i.sop_uid != "4.5.3");
        assert!(select(&images, &InputSpec::default())
            .refusal
            .unwrap()
            .contains("L-MLO with no implant-displaced"));
    }

    #[test]
    fn of_repeated_views_the_latest_acquired_is_scored_ties_by_uid() {
        let mut images = four("5.5");
        let mut again = image("5.5.0.1", "R", "CC");
        again.acquired = "20261201093000".into();
        let mut earlier = image("5.5.0.2", "R", "CC");
        earlier.acquired = "20261201091500.5".into();
        images.insert(0, again);
        images.push(earlier);
        let s = select(&images, &InputSpec::default());
        assert_eq!(sops(&s)[2], "5.5.0.1", "{s:?}");
        assert_eq!(s.notes, ["R-CC: 3 images, the latest acquired scored"]);
        // No time on either: the greater UID, as a number (10 > 9).
        let t = select(
            &[image("6.6.9", "R", "CC"), image("6.6.10", "R", "CC")],
            &InputSpec::default(),
        );
        assert_eq!(sops(&t), ["6.6.10"]);
        assert_eq!(t.missing, ["L-CC", "R-MLO", "L-MLO"]);
    }
}
