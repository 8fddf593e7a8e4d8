//! The triage of a study as a DICOM Mammography CAD SR (SOP Class
//! 1.2.840.10008.5.1.4.1.1.88.50, PS3.16 TID 4000), so a radiologist's workstation or
//! PACS shows what the model said beside the images it said it about.
//!
//! The document holds:
//! - the Image Library: each scored image by reference, with its laterality and view;
//! - the CAD Processing and Findings Summary: "with findings" when the study is
//!   urgent (a view at or above the card's urgent operating point), else "without
//!   findings"; inferred from it, one Individual Impression/Recommendation per view with its
//!   score as Probability of cancer (0 to 1), inferred from that image, and a
//!   Rendering Intent (presentation required for a view at or above the urgent point);
//! - Summary of Detections "Not Attempted" (the model scores whole views; it marks no
//!   location) and Summary of Analyses "Succeeded", with the algorithm's name, version
//!   and parameters: the score scale and the operating points.
//!
//! Patient and study attributes are copied from a scored image; the SOP Instance UID is
//! derived from the study, the model and the scores, so a job that runs again with the
//! same result writes the same object (and the API finds it from the catalog alone).

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject};
use sha2::{Digest, Sha256};

use crate::model::ModelCard;

/// Mammography CAD SR Storage.
pub const MAMMOGRAPHY_CAD_SR: &str = "1.2.840.10008.5.1.4.1.1.88.50";

/// One scored image, as the report refers to it.
#[derive(Debug, Clone)]
pub struct ScoredImage {
    pub sop_class_uid: String,
    pub sop_uid: String,
    pub series_uid: String,
    /// "L" or "R".
    pub laterality: String,
    /// "CC" or "MLO".
    pub view: String,
    pub score: f32,
}

/// The object key of a study's CAD SR in the object store: beside the study, outside
/// `studies/` (whose objects the catalog lists instance by instance).
pub fn object_key(study_uid: &str, sop_uid: &str) -> String {
    format!("cad-sr/{study_uid}/{sop_uid}.dcm")
}

/// The SOP Instance UID of the report of `study_uid` by `model` with these scores
/// (`(SOP Instance UID, score)` of each view): `2.25.` and 128 bits of a SHA-256.
pub fn report_uid<'a>(
    study_uid: &str,
    model: &str,
    scores: impl IntoIterator<Item = (&'a str, f32)>,
) -> String {
    let mut h = Sha256::new();
    h.update(b"tamiz mammography CAD SR\0");
    h.update(study_uid.as_bytes());
    h.update(b"\0");
    h.update(model.as_bytes());
    let mut scores: Vec<(&str, f32)> = scores.into_iter().collect();
    scores.sort_by(|a, b| a.0.cmp(b.0));
    for (sop, score) in scores {
        h.update(format!("\0{sop}={score}").as_bytes());
    }
    let digest = h.finalize();
    let mut n = [0u8; 16];
    n.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(n))
}

/// A coded concept (Code Value, Coding Scheme Designator, Code Meaning).
type Code = (&'static str, &'static str, &'static str);

const MAMMOGRAPHY_CAD_REPORT: Code = ("111036", "DCM", "Mammography CAD Report");
const IMAGE_LIBRARY: Code = ("111028", "DCM", "Image Library");
const IMAGE_LATERALITY: Code = ("111027", "DCM", "Image Laterality");
const IMAGE_VIEW: Code = ("111031", "DCM", "Image View");
const FINDINGS_SUMMARY: Code = ("111017", "DCM", "CAD Processing and Findings Summary");
const WITH_FINDINGS: Code = ("111242", "DCM", "All algorithms succeeded; with findings");
const WITHOUT_FINDINGS: Code = (
    "111241",
    "DCM",
    "All algorithms succeeded; without findings",
);
const INDIVIDUAL_IMPRESSION: Code = ("111034", "DCM", "Individual Impression/Recommendation");
const RENDERING_INTENT: Code = ("111056", "DCM", "Rendering Intent");
const PRESENTATION_REQUIRED: Code = (
    "111150",
    "DCM",
    "Presentation Required: Rendering device is expected to present",
);
const PRESENTATION_OPTIONAL: Code = (
    "111151",
    "DCM",
    "Presentation Optional: Rendering device may present",
);
const PROBABILITY_OF_CANCER: Code = ("111047", "DCM", "Probability of cancer");
const NO_UNITS: Code = ("1", "UCUM", "no units");
const SUMMARY_OF_DETECTIONS: Code = ("111064", "DCM", "Summary of Detections");
const NOT_ATTEMPTED: Code = ("111225", "DCM", "Not Attempted");
const SUMMARY_OF_ANALYSES: Code = ("111065", "DCM", "Summary of Analyses");
const SUCCEEDED: Code = ("111222", "DCM", "Succeeded");
const SUCCESSFUL_ANALYSES: Code = ("111062", "DCM", "Successful Analyses");
const ANALYSIS_PERFORMED: Code = ("111004", "DCM", "Analysis Performed");
const INDIVIDUAL_ANALYSIS: Code = (
    "111233",
    "DCM",
    "Individual Impression/Recommendation Analysis",
);
const ALGORITHM_NAME: Code = ("111001", "DCM", "Algorithm Name");
const ALGORITHM_VERSION: Code = ("111003", "DCM", "Algorithm Version");
const ALGORITHM_PARAMETERS: Code = ("111002", "DCM", "Algorithm Parameters");
const LEFT: Code = ("7771000", "SCT", "Left");
const RIGHT: Code = ("24028007", "SCT", "Right");
const CRANIO_CAUDAL: Code = ("399162004", "SCT", "cranio-caudal");
const MEDIO_LATERAL_OBLIQUE: Code = ("399368009", "SCT", "medio-lateral oblique");

fn el(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn code_item(c: Code) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, c.0),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.1),
        el(tags::CODE_MEANING, VR::LO, c.2),
    ])
}

/// A content item: relationship, value type, concept name, then the value elements
/// and children.
fn item(
    relationship: &str,
    value_type: &str,
    name: Code,
    value: Vec<DataElement<InMemDicomObject>>,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::from_element_iter([
        el(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        el(tags::VALUE_TYPE, VR::CS, value_type),
        seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code_item(name)]),
    ]);
    for e in value {
        obj.put(e);
    }
    if value_type == "CONTAINER" {
        obj.put(el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    }
    if !children.is_empty() {
        obj.put(seq(tags::CONTENT_SEQUENCE, children));
    }
    obj
}

fn code(
    relationship: &str,
    name: Code,
    value: Code,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    item(
        relationship,
        "CODE",
        name,
        vec![seq(tags::CONCEPT_CODE_SEQUENCE, vec![code_item(value)])],
        children,
    )
}

fn text(relationship: &str, name: Code, value: &str) -> InMemDicomObject {
    item(
        relationship,
        "TEXT",
        name,
        vec![el(tags::TEXT_VALUE, VR::UT, value)],
        vec![],
    )
}

fn image(relationship: &str, i: &ScoredImage, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let reference = InMemDicomObject::from_element_iter([
        el(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            i.sop_class_uid.as_str(),
        ),
        el(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            i.sop_uid.as_str(),
        ),
    ]);
    let mut obj = InMemDicomObject::from_element_iter([
        el(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        el(tags::VALUE_TYPE, VR::CS, "IMAGE"),
        seq(tags::REFERENCED_SOP_SEQUENCE, vec![reference]),
    ]);
    if !children.is_empty() {
        obj.put(seq(tags::CONTENT_SEQUENCE, children));
    }
    obj
}

/// The score scale and operating points, as the Algorithm Parameters say them.
pub fn parameters(card: &ModelCard) -> String {
    format!(
        "score: probability of malignancy per view, 0 to 1; study score: the highest view score; operating points: urgent at or above {}, low below {}, routine between",
        card.operating_points.urgent, card.operating_points.low
    )
}

/// Patient and study attributes copied from a scored image, with its Specific
/// Character Set (so names are written in the repertoire they came in); type 2 ones
/// are written empty when the image lacks them.
const COPIED: &[(Tag, VR)] = &[
    (tags::SPECIFIC_CHARACTER_SET, VR::CS),
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::ISSUER_OF_PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
    (tags::STUDY_DESCRIPTION, VR::LO),
];
const TYPE_2: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
];

/// Builds the report. `source` is a scored image of the study (its patient and study
/// attributes are copied); `urgent` says whether the study came out urgent;
/// `now` is the content date-time as (YYYYMMDD, HHMMSS).
pub fn build(
    study_uid: &str,
    source: &InMemDicomObject,
    images: &[ScoredImage],
    card: &ModelCard,
    urgent: bool,
    now: (&str, &str),
) -> Result<DefaultDicomObject, String> {
    let scores = images.iter().map(|i| (i.sop_uid.as_str(), i.score));
    let sop_uid = report_uid(study_uid, &card.version_key(), scores);
    let series_uid = format!("{sop_uid}.1");
    let sop_uid_text = sop_uid.clone();

    let library = images
        .iter()
        .map(|i| {
            let lat = if i.laterality == "L" { LEFT } else { RIGHT };
            let view = if i.view == "CC" {
                CRANIO_CAUDAL
            } else {
                MEDIO_LATERAL_OBLIQUE
            };
            image(
                "CONTAINS",
                i,
                vec![
                    code("HAS ACQ CONTEXT", IMAGE_LATERALITY, lat, vec![]),
                    code("HAS ACQ CONTEXT", IMAGE_VIEW, view, vec![]),
                ],
            )
        })
        .collect();
    let impressions = images
        .iter()
        .map(|i| {
            let intent = if i.score >= card.operating_points.urgent {
                PRESENTATION_REQUIRED
            } else {
                PRESENTATION_OPTIONAL
            };
            let measured = InMemDicomObject::from_element_iter([
                seq(
                    tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                    vec![code_item(NO_UNITS)],
                ),
                el(
                    tags::NUMERIC_VALUE,
                    VR::DS,
                    format!("{:.6}", i.score.clamp(0.0, 1.0)).as_str(),
                ),
            ]);
            let probability = item(
                "CONTAINS",
                "NUM",
                PROBABILITY_OF_CANCER,
                vec![seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured])],
                vec![image("INFERRED FROM", i, vec![])],
            );
            item(
                "INFERRED FROM",
                "CONTAINER",
                INDIVIDUAL_IMPRESSION,
                vec![],
                vec![
                    code("HAS CONCEPT MOD", RENDERING_INTENT, intent, vec![]),
                    probability,
                ],
            )
        })
        .collect();
    let algorithm = vec![
        text("HAS PROPERTIES", ALGORITHM_NAME, &card.name),
        text("HAS PROPERTIES", ALGORITHM_VERSION, &card.version),
        text("HAS PROPERTIES", ALGORITHM_PARAMETERS, &parameters(card)),
    ];
    let analyses = item(
        "INFERRED FROM",
        "CONTAINER",
        SUCCESSFUL_ANALYSES,
        vec![],
        vec![code(
            "CONTAINS",
            ANALYSIS_PERFORMED,
            INDIVIDUAL_ANALYSIS,
            algorithm,
        )],
    );
    let content = vec![
        item("CONTAINS", "CONTAINER", IMAGE_LIBRARY, vec![], library),
        code(
            "CONTAINS",
            FINDINGS_SUMMARY,
            if urgent {
                WITH_FINDINGS
            } else {
                WITHOUT_FINDINGS
            },
            impressions,
        ),
        code("CONTAINS", SUMMARY_OF_DETECTIONS, NOT_ATTEMPTED, vec![]),
        code("CONTAINS", SUMMARY_OF_ANALYSES, SUCCEEDED, vec![analyses]),
    ];

    // The evidence: every image the report refers to, by series.
    let mut by_series: Vec<(&str, Vec<&ScoredImage>)> = Vec::new();
    for i in images {
        match by_series.iter_mut().find(|(s, _)| *s == i.series_uid) {
            Some((_, list)) => list.push(i),
            None => by_series.push((&i.series_uid, vec![i])),
        }
    }
    let evidence = InMemDicomObject::from_element_iter([
        el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            by_series
                .into_iter()
                .map(|(series, list)| {
                    InMemDicomObject::from_element_iter([
                        el(tags::SERIES_INSTANCE_UID, VR::UI, series),
                        seq(
                            tags::REFERENCED_SOP_SEQUENCE,
                            list.into_iter()
                                .map(|i| {
                                    InMemDicomObject::from_element_iter([
                                        el(
                                            tags::REFERENCED_SOP_CLASS_UID,
                                            VR::UI,
                                            i.sop_class_uid.as_str(),
                                        ),
                                        el(
                                            tags::REFERENCED_SOP_INSTANCE_UID,
                                            VR::UI,
                                            i.sop_uid.as_str(),
                                        ),
                                    ])
                                })
                                .collect(),
                        ),
                    ])
                })
                .collect(),
        ),
    ]);

    let mut obj = InMemDicomObject::from_element_iter([
        el(tags::SOP_CLASS_UID, VR::UI, MAMMOGRAPHY_CAD_SR),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.as_str()),
        el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str()),
        el(tags::MODALITY, VR::CS, "SR"),
        el(tags::SERIES_NUMBER, VR::IS, "9901"),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::MANUFACTURER, VR::LO, "tamiz"),
        el(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")),
        el(tags::CONTENT_DATE, VR::DA, now.0),
        el(tags::CONTENT_TIME, VR::TM, now.1),
        el(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "tamiz triage (Mammography CAD SR)",
        ),
        el(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        el(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        seq(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]),
        seq(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![evidence],
        ),
        el(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        seq(
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code_item(MAMMOGRAPHY_CAD_REPORT)],
        ),
        el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
        seq(
            tags::CONTENT_TEMPLATE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                el(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                el(tags::TEMPLATE_IDENTIFIER, VR::CS, "4000"),
            ])],
        ),
        seq(tags::CONTENT_SEQUENCE, content),
    ]);
    for &(tag, vr) in COPIED {
        match source.get(tag) {
            Some(e) => {
                obj.put(DataElement::new(tag, vr, e.value().clone()));
            }
            None if TYPE_2.contains(&tag) => {
                obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
            }
            None => {}
        }
    }
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(MAMMOGRAPHY_CAD_SR)
            .media_storage_sop_instance_uid(sop_uid_text),
    )
    .map_err(|e| format!("building the CAD SR's file meta: {e}"))
}

/// The report as a Part 10 file.
pub fn to_bytes(obj: &DefaultDicomObject) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|e| format!("writing the CAD SR: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::report_uid;

    #[test]
    fn the_report_uid_is_a_valid_uid_that_depends_on_study_model_and_scores() {
        let a = report_uid("1.2.3", "m@1", [("1.2.3.4", 0.5f32), ("1.2.3.5", 0.25)]);
        let same = report_uid("1.2.3", "m@1", [("1.2.3.5", 0.25f32), ("1.2.3.4", 0.5)]);
        assert_eq!(a, same, "the order of the views does not matter");
        assert!(crate::dicom::is_valid_uid(&a), "{a}");
        assert_ne!(
            a,
            report_uid("1.2.3", "m@2", [("1.2.3.4", 0.5f32), ("1.2.3.5", 0.25)])
        );
        assert_ne!(
            a,
            report_uid("1.2.3", "m@1", [("1.2.3.4", 0.5f32), ("1.2.3.5", 0.26)])
        );
        assert_ne!(
            a,
            report_uid("1.2.4", "m@1", [("1.2.3.4", 0.5f32), ("1.2.3.5", 0.25)])
        );
    }
}
