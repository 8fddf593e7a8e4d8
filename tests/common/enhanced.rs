//! The enhanced mammography objects, made from a synthetic view the way their
//! modalities write them: Breast Tomosynthesis (a multi-frame stack of slices) and
//! Breast Projection X-Ray, both with laterality and VOI in the Shared Functional
//! Groups Sequence instead of the top level, and the view as a View Code Sequence
//! item instead of View Position.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use tamiz::dicom::View;

pub const BREAST_TOMOSYNTHESIS: &str = tamiz::dicom::BREAST_TOMOSYNTHESIS;
pub const BREAST_PROJECTION_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.13.1.4";

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from(scheme),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// Gives `obj` the SOP class `class` and a new SOP Instance UID (`suffix` appended).
fn reclass(obj: &mut DefaultDicomObject, class: &str, suffix: &str) {
    let sop = format!(
        "{}.{suffix}",
        text(obj, tags::SOP_INSTANCE_UID).expect("SOP Instance UID")
    );
    obj.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(class),
    ));
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop.as_str()),
    ));
    let meta = obj.meta_mut();
    meta.media_storage_sop_class_uid = class.into();
    meta.media_storage_sop_instance_uid = sop;
    meta.update_information_group_length();
}

/// Moves Image Laterality into Frame Anatomy (Frame Laterality and a coded "breast"
/// region), the window into Frame VOI LUT, both in the Shared Functional Groups
/// Sequence, and View Position into a View Code Sequence item (CID 4014).
fn enhance(obj: &mut DefaultDicomObject) {
    let lat = text(obj, tags::IMAGE_LATERALITY).expect("Image Laterality");
    let view = View::parse(&text(obj, tags::VIEW_POSITION).expect("View Position"));
    let mut voi = InMemDicomObject::new_empty();
    for tag in [
        tags::WINDOW_CENTER,
        tags::WINDOW_WIDTH,
        tags::VOILUT_FUNCTION,
    ] {
        if let Ok(e) = obj.take_element(tag) {
            voi.put(e);
        }
    }
    for tag in [
        tags::IMAGE_LATERALITY,
        tags::LATERALITY,
        tags::VIEW_POSITION,
    ] {
        obj.remove_element(tag);
    }
    let anatomy = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::FRAME_LATERALITY,
            VR::CS,
            PrimitiveValue::from(lat.as_str()),
        ),
        sequence(
            tags::ANATOMIC_REGION_SEQUENCE,
            vec![code("76752008", "SCT", "Breast")],
        ),
    ]);
    let shared = InMemDicomObject::from_element_iter([
        sequence(tags::FRAME_ANATOMY_SEQUENCE, vec![anatomy]),
        sequence(tags::FRAME_VOILUT_SEQUENCE, vec![voi]),
    ]);
    obj.put(sequence(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    ));
    let view_code = match view {
        View::Cc => code("399162004", "SCT", "cranio-caudal"),
        View::Mlo => code("399368009", "SCT", "medio-lateral oblique"),
        View::Other(v) => panic!("no code for view {v} here"),
    };
    obj.put(sequence(tags::VIEW_CODE_SEQUENCE, vec![view_code]));
}

/// A Breast Projection X-Ray Image (For Presentation) of the same pixels, one frame.
pub fn breast_projection(view: &DefaultDicomObject, suffix: &str) -> DefaultDicomObject {
    let mut obj = view.clone();
    reclass(&mut obj, BREAST_PROJECTION_PRESENTATION, suffix);
    enhance(&mut obj);
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from("1"),
    ));
    obj
}

/// A Breast Tomosynthesis Image of `frames` slices, each the view's pixels.
pub fn tomosynthesis(view: &DefaultDicomObject, frames: u32, suffix: &str) -> DefaultDicomObject {
    let mut obj = view.clone();
    reclass(&mut obj, BREAST_TOMOSYNTHESIS, suffix);
    enhance(&mut obj);
    let slice: Vec<u16> = obj
        .element(tags::PIXEL_DATA)
        .expect("Pixel Data")
        .value()
        .to_multi_int::<u16>()
        .expect("native 16-bit pixels");
    let stack: Vec<u16> = (0..frames).flat_map(|_| slice.iter().copied()).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(stack.into()),
    ));
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from(frames.to_string().as_str()),
    ));
    obj
}

/// The object as a Part 10 file.
pub fn bytes(obj: &DefaultDicomObject) -> Vec<u8> {
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("write DICOM");
    out
}
