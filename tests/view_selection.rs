//! View selection by DICOM meaning (issue: clinical safety): which of a study's images
//! the model scores is decided by what they are (For Presentation or For Processing,
//! work-up modifiers, implants, acquisition time), never by arrival order. Each test
//! sends real DICOM files made from synthetic studies, edited as a modality would
//! write them, to a real server, and checks which SOP Instance UIDs were scored.

mod common;

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use tamiz::catalog::StudyStatus;
use tamiz::dicom::{Laterality, View};

const FOR_PROCESSING_CLASS: &str = "1.2.840.10008.5.1.4.1.1.1.2.1";

/// One image of a study as the test edits it.
struct Image {
    lat: Laterality,
    view: View,
    obj: dicom_object::DefaultDicomObject,
}

impl Image {
    fn sop(&self) -> String {
        self.obj
            .element(tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_owned()
    }
    fn name(&self) -> String {
        format!("{}-{}", self.lat.as_str(), self.view.as_str())
    }
    fn put(&mut self, tag: dicom_core::Tag, vr: VR, value: &str) {
        self.obj
            .put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    /// A copy under a new SOP Instance UID (`suffix` appended).
    fn copy(&self, suffix: &str) -> Image {
        let mut c = Image {
            lat: self.lat,
            view: self.view.clone(),
            obj: self.obj.clone(),
        };
        let sop = format!("{}.{suffix}", self.sop());
        c.put(tags::SOP_INSTANCE_UID, VR::UI, &sop);
        c.obj.meta_mut().media_storage_sop_instance_uid = sop;
        c.obj.meta_mut().update_information_group_length();
        c
    }
    /// Other pixels, so that a wrong pick shows in the scores too: inverted, the way
    /// raw detector data looks next to its processed image.
    fn invert_pixels(&mut self) {
        let pixels: Vec<u16> = self
            .obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .to_multi_int::<u16>()
            .unwrap();
        let max = pixels.iter().copied().max().unwrap_or(0);
        let inverted: Vec<u16> = pixels.iter().map(|v| max - v).collect();
        self.obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(inverted.into()),
        ));
    }
    /// Raw detector data: the For Processing SOP class and intent.
    fn for_processing(mut self) -> Image {
        self.put(tags::SOP_CLASS_UID, VR::UI, FOR_PROCESSING_CLASS);
        self.obj.meta_mut().media_storage_sop_class_uid = FOR_PROCESSING_CLASS.into();
        self.obj.meta_mut().update_information_group_length();
        self.put(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PROCESSING");
        self.invert_pixels();
        self
    }
    /// View Modifier Code Sequence items (SNOMED CT), inside the View Code Sequence
    /// item when `nested` (both places occur in real files).
    fn modifiers(mut self, codes: &[(&str, &str)], nested: bool) -> Image {
        let items: Vec<InMemDicomObject> = codes
            .iter()
            .map(|(value, meaning)| {
                InMemDicomObject::from_element_iter([
                    DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(*value)),
                    DataElement::new(
                        tags::CODING_SCHEME_DESIGNATOR,
                        VR::SH,
                        PrimitiveValue::from("SCT"),
                    ),
                    DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(*meaning)),
                ])
            })
            .collect();
        let modifier_seq = DataElement::new(
            tags::VIEW_MODIFIER_CODE_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(items),
        );
        if nested {
            let (code, meaning) = match self.view {
                View::Cc => ("399162004", "cranio-caudal"),
                _ => ("399368009", "medio-lateral oblique"),
            };
            let view_item = InMemDicomObject::from_element_iter([
                DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(code)),
                DataElement::new(
                    tags::CODING_SCHEME_DESIGNATOR,
                    VR::SH,
                    PrimitiveValue::from("SCT"),
                ),
                DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
                modifier_seq,
            ]);
            self.obj.put(DataElement::new(
                tags::VIEW_CODE_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![view_item]),
            ));
        } else {
            self.obj.put(modifier_seq);
        }
        self
    }
    /// The view given only as a View Code Sequence item (no View Position), as some
    /// modalities write extra views.
    fn view_code(mut self, code: &str, scheme: &str, meaning: &str) -> Image {
        self.obj.remove_element(tags::VIEW_POSITION);
        let item = InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(code)),
            DataElement::new(
                tags::CODING_SCHEME_DESIGNATOR,
                VR::SH,
                PrimitiveValue::from(scheme),
            ),
            DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
        ]);
        self.obj.put(DataElement::new(
            tags::VIEW_CODE_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        ));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.obj.write_all(&mut out).unwrap();
        out
    }
}

/// A synthetic study's four views, R-CC, L-CC, R-MLO, L-MLO.
fn images(seed: u64, lesion: bool) -> (String, Vec<Image>) {
    let p = plan(seed, lesion);
    let images = tamiz::synth::study_objects(&p)
        .into_iter()
        .map(|(lat, view, obj)| Image { lat, view, obj })
        .collect();
    (p.study_uid, images)
}

/// Sends `images` one request each, in order, as clinic-b.
async fn send(t: &TestServer, images: &[&Image]) {
    for i in images {
        let (code, body) = t
            .stow("/dicomweb/studies", &[i.bytes()], Some("clinic-b"))
            .await;
        assert_eq!(code, 200, "{}: {body}", i.name());
    }
}

/// The SOP Instance UIDs the model scored, sorted.
fn scored(s: &StudyStatus) -> Vec<String> {
    let mut uids: Vec<String> = s
        .view_scores
        .as_ref()
        .and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("no view scores: {s:?}"))
        .iter()
        .map(|v| v["sop_uid"].as_str().unwrap().to_owned())
        .collect();
    uids.sort();
    uids
}

fn sops(images: &[&Image]) -> Vec<String> {
    let mut uids: Vec<String> = images.iter().map(|i| i.sop()).collect();
    uids.sort();
    uids
}

fn reason(s: &StudyStatus) -> String {
    s.worklist.as_ref().expect("on a worklist").reason.clone()
}

#[tokio::test]
async fn for_processing_images_are_never_scored_whatever_the_arrival_order() {
    let t = TestServer::start().await;
    let (study, presentation) = images(91, true);
    let processing: Vec<Image> = presentation
        .iter()
        .map(|i| i.copy("7").for_processing())
        .collect();
    // The raw images arrive first, all four: the study is not complete on them.
    send(&t, &processing.iter().collect::<Vec<_>>()).await;
    send(&t, &presentation.iter().collect::<Vec<_>>()).await;
    let s = t.wait_worklisted(&study).await;
    assert_eq!(s.instances, 8);
    assert_eq!(scored(&s), sops(&presentation.iter().collect::<Vec<_>>()));
    assert!(
        reason(&s).contains(
            "4 For Processing image(s) not scored: the model takes For Presentation images"
        ),
        "{}",
        reason(&s)
    );
    t.stop().await;
}

#[tokio::test]
async fn a_study_of_for_processing_images_only_goes_out_untriaged_with_the_reason() {
    let t = TestServer::start_with(|c| c.completeness.stable_after_secs = 1).await;
    let (study, presentation) = images(92, false);
    let processing: Vec<Image> = presentation
        .iter()
        .map(|i| i.copy("7").for_processing())
        .collect();
    send(&t, &processing.iter().collect::<Vec<_>>()).await;
    let s = t.wait_worklisted(&study).await;
    let w = s.worklist.as_ref().unwrap();
    assert_eq!(w.priority, "untriaged");
    assert!(
        w.reason.starts_with(
            "untriaged: only For Processing images (raw detector data); the model takes For Presentation images;"
        ),
        "{}",
        w.reason
    );
    assert!(s.view_scores.is_none(), "{s:?}");
    t.stop().await;
}

#[tokio::test]
async fn a_spot_magnification_l_cc_arriving_with_the_four_views_is_kept_but_not_scored() {
    let t = TestServer::start().await;
    let (study, four) = images(93, false);
    // A spot-magnification L-CC of the normal study, coded as modalities code it.
    let spot = four[1].copy("5").modifiers(
        &[
            ("399055006", "Spot Compression"),
            ("399163009", "Magnification"),
        ],
        false,
    );
    // It arrives after the standard L-CC, before the study is complete (arrival order
    // used to make it the L-CC that was scored).
    send(&t, &[&four[0], &four[1], &spot, &four[2], &four[3]]).await;
    let s = t.wait_worklisted(&study).await;
    assert_eq!(s.instances, 5);
    assert_eq!(scored(&s), sops(&four.iter().collect::<Vec<_>>()));
    assert!(
        reason(&s).contains(
            "work-up views kept for reading, not scored: L-CC magnification, spot compression"
        ),
        "{}",
        reason(&s)
    );
    t.stop().await;
}

#[tokio::test]
async fn extra_views_given_only_as_cid_4014_codes_are_stored_and_shown_never_scored() {
    let t = TestServer::start().await;
    let (study, four) = images(94, false);
    // An exaggerated CC (SNOMED CT) and a medio-lateral (legacy SNOMED-RT code) of the
    // left breast, with no View Position: they used to be refused as "missing view".
    let xccl =
        four[1]
            .copy("6")
            .view_code("399192008", "SCT", "cranio-caudal exaggerated laterally");
    let ml = four[3]
        .copy("7")
        .view_code("R-10224", "SRT", "medio-lateral");
    send(&t, &[&four[0], &xccl, &four[1], &ml, &four[2], &four[3]]).await;
    let s = t.wait_worklisted(&study).await;
    assert_eq!(s.instances, 6);
    let mut views = s.views.clone();
    views.sort();
    assert_eq!(views, ["L-CC", "L-ML", "L-MLO", "L-XCCL", "R-CC", "R-MLO"]);
    assert_eq!(scored(&s), sops(&four.iter().collect::<Vec<_>>()));
    t.stop().await;
}

#[tokio::test]
async fn implant_exams_are_scored_on_implant_displaced_views_and_say_so() {
    let t = TestServer::start().await;
    let (study, four) = images(94, true);
    let implant: Vec<Image> = four
        .iter()
        .map(|i| {
            let mut v = i.copy("3");
            v.put(tags::BREAST_IMPLANT_PRESENT, VR::CS, "YES");
            v.invert_pixels();
            v
        })
        .collect();
    let displaced: Vec<Image> = four
        .iter()
        .map(|i| {
            let mut v = i
                .copy("4")
                .modifiers(&[("399209000", "Implant Displaced")], true);
            v.put(tags::BREAST_IMPLANT_PRESENT, VR::CS, "YES");
            v
        })
        .collect();
    send(&t, &implant.iter().collect::<Vec<_>>()).await;
    send(&t, &displaced.iter().collect::<Vec<_>>()).await;
    let s = t.wait_worklisted(&study).await;
    assert_eq!(s.instances, 8);
    assert_eq!(scored(&s), sops(&displaced.iter().collect::<Vec<_>>()));
    assert!(
        reason(&s)
            .contains("implant exam: implant-displaced views scored (L-CC, L-MLO, R-CC, R-MLO)"),
        "{}",
        reason(&s)
    );
    t.stop().await;
}

#[tokio::test]
async fn an_implant_exam_without_displaced_views_goes_out_untriaged_with_the_reason() {
    let t = TestServer::start_with(|c| c.completeness.stable_after_secs = 1).await;
    let (study, four) = images(95, false);
    let implant: Vec<Image> = four
        .iter()
        .map(|i| {
            let mut v = i.copy("3");
            v.put(tags::BREAST_IMPLANT_PRESENT, VR::CS, "YES");
            v
        })
        .collect();
    send(&t, &implant.iter().collect::<Vec<_>>()).await;
    let s = t.wait_worklisted(&study).await;
    let w = s.worklist.as_ref().unwrap();
    assert_eq!(w.priority, "untriaged");
    assert!(
        w.reason.starts_with(
            "untriaged: breast implant in view on L-CC, L-MLO, R-CC, R-MLO with no implant-displaced image of that view; the model was not made for implants;"
        ),
        "{}",
        w.reason
    );
    t.stop().await;
}

#[tokio::test]
async fn of_a_repeated_view_the_latest_acquired_is_scored_not_the_latest_arrived() {
    let t = TestServer::start().await;
    let (study, mut four) = images(96, true);
    // The L-CC was taken twice; the retake (later acquired) arrives first.
    let mut first_take = four[1].copy("1");
    first_take.put(tags::ACQUISITION_DATE_TIME, VR::DT, "20261201091500.000000");
    first_take.invert_pixels();
    four[1].put(tags::ACQUISITION_DATE_TIME, VR::DT, "20261201093000.000000");
    send(&t, &[&four[0], &four[1], &first_take, &four[2], &four[3]]).await;
    let s = t.wait_worklisted(&study).await;
    assert_eq!(scored(&s), sops(&four.iter().collect::<Vec<_>>()));
    assert!(
        reason(&s).contains("L-CC: 2 images, the latest acquired scored"),
        "{}",
        reason(&s)
    );
    t.stop().await;
}
