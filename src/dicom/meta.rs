//! The metadata tamiz needs from one instance, and the checks an instance must pass
//! before it is stored.

use std::fmt;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::guard::{self, PixelLayout};
use super::{is_valid_uid, trim_value};
use crate::config::Limits;

/// Mammography SOP classes (PS3.4 Annex B.5): digital mammography for presentation and
/// for processing, breast tomosynthesis, and breast projection X-ray.
pub const MAMMOGRAPHY_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    BREAST_TOMOSYNTHESIS,
    "1.2.840.10008.5.1.4.1.1.13.1.4",
    "1.2.840.10008.5.1.4.1.1.13.1.5",
];

/// Breast Tomosynthesis Image Storage: a multi-frame stack of reconstructed slices.
/// The triage model reads 2D projection views, so such an instance is stored and
/// shown for reading but never scored (it carries the modifier [`TOMOSYNTHESIS`]),
/// and its sender is told so as a warning.
pub const BREAST_TOMOSYNTHESIS: &str = "1.2.840.10008.5.1.4.1.1.13.1.3";

/// The modifier a tomosynthesis instance carries: like a work-up modifier, it keeps
/// the image out of the four screening views (`src/views.rs`, the catalog's
/// completeness check).
pub const TOMOSYNTHESIS: &str = "tomosynthesis";

/// The status of an instance stored with a warning: Warning Reason (0008,1196) in
/// STOW-RS, the C-STORE status. None of the storage warnings (B000 coercion, B006
/// elements discarded, B007 data set does not match the SOP class) is true of a
/// tomosynthesis instance kept untriaged, so tamiz uses the general DIMSE warning
/// 0001 (PS3.7 Annex C); the Error Comment and (0009,1001) say what the warning is.
pub const WARNING_STORED_NOT_TRIAGED: u16 = 0x0001;

/// Single-frame image SOP classes that carry mammograms when Modality is MG: CR, DX
/// and Secondary Capture (the digitized-film archives, CBIS-DDSM among them, use SC).
pub const GENERIC_IMAGE_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Laterality {
    L,
    R,
}

/// The projection. Only CC and MLO count towards a complete screening study.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum View {
    Cc,
    Mlo,
    Other(String),
}

impl Laterality {
    pub fn as_str(self) -> &'static str {
        match self {
            Laterality::L => "L",
            Laterality::R => "R",
        }
    }
    pub fn parse(s: &str) -> Option<Laterality> {
        match s {
            "L" => Some(Laterality::L),
            "R" => Some(Laterality::R),
            _ => None,
        }
    }
}

impl View {
    pub fn as_str(&self) -> &str {
        match self {
            View::Cc => "CC",
            View::Mlo => "MLO",
            View::Other(s) => s,
        }
    }
    pub fn parse(s: &str) -> View {
        match s {
            "CC" => View::Cc,
            "MLO" => View::Mlo,
            other => View::Other(other.to_owned()),
        }
    }
    pub fn is_screening(&self) -> bool {
        matches!(self, View::Cc | View::Mlo)
    }
}

/// What the catalog records about an accepted instance.
#[derive(Clone)]
pub struct InstanceMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub transfer_syntax: String,
    pub modality: String,
    pub laterality: Laterality,
    pub view: View,
    pub rows: u32,
    pub columns: u32,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    /// Patient ID and issuer: only ever hashed into a pseudonymous key, never logged.
    pub patient_id: String,
    pub patient_issuer: String,
    pub institution_name: Option<String>,
    /// What the image is for and how it was taken: what view selection reads.
    pub acquisition: Acquisition,
    /// Number of Frames: 1 except for tomosynthesis.
    pub frames: u32,
    /// Stored, but the sender should know something (a tomosynthesis instance is not
    /// triaged): the text of the warning the STOW-RS and C-STORE responses carry.
    pub warning: Option<String>,
}

/// Presentation Intent (PS3.3 C.8.11.7): raw detector data for a vendor's processing,
/// or the processed image a radiologist reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    #[default]
    Presentation,
    Processing,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Presentation => "presentation",
            Intent::Processing => "processing",
        }
    }
    pub fn parse(s: &str) -> Option<Intent> {
        match s {
            "presentation" => Some(Intent::Presentation),
            "processing" => Some(Intent::Processing),
            _ => None,
        }
    }
}

/// A breast implant in the image (Breast Implant Present (0028,1300) YES), and whether
/// the view pushes it back (View Modifier "implant displaced", Eklund technique).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Implant {
    #[default]
    None,
    Present,
    Displaced,
}

impl Implant {
    pub fn as_str(self) -> &'static str {
        match self {
            Implant::None => "",
            Implant::Present => "present",
            Implant::Displaced => "displaced",
        }
    }
    pub fn parse(s: &str) -> Implant {
        match s {
            "present" => Implant::Present,
            "displaced" => Implant::Displaced,
            _ => Implant::None,
        }
    }
}

/// The attributes that decide whether an image is one of the study's screening views
/// and, among repeats, which one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acquisition {
    pub intent: Intent,
    /// View modifiers (CID 4015) other than "implant displaced", lower case, e.g.
    /// "spot compression", "magnification": such an image is a work-up view.
    pub modifiers: Vec<String>,
    pub implant: Implant,
    /// When the image was acquired, as DICOM date-time digits (`YYYYMMDDHHMMSS.FFFFFF`,
    /// as much as the image states), empty when unknown. Orders repeated views.
    pub acquired: String,
}

/// The name of a View Modifier for Mammography (CID 4015) by its SNOMED CT code or the
/// legacy SNOMED RT code older modalities still send.
fn modifier_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "399161006" | "R-102D2" => "cleavage",
        "399011000" | "R-102D1" => "axillary tail",
        "399197002" | "R-102D3" => "rolled lateral",
        "399226006" | "R-102D4" => "rolled medial",
        "414493004" | "R-102CA" => "rolled inferior",
        "415670009" | "R-102C9" => "rolled superior",
        "399209000" | "R-102D5" => "implant displaced",
        "399163009" | "R-102D6" => "magnification",
        "399055006" | "R-102D7" => "spot compression",
        "399110001" | "R-102C2" => "tangential",
        "442581004" | "R-40AB3" => "nipple in profile",
        "441752004" | "P2-00161" => "anterior compression",
        "442593008" | "R-40ABE" => "infra-mammary fold",
        "442580003" | "R-40AB2" => "axillary tissue",
        _ => return None,
    })
}

/// SOP classes whose images are For Processing whatever the intent attribute says.
const FOR_PROCESSING_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.13.1.5",
];

/// Reads the view-selection attributes: intent from the SOP class or Presentation
/// Intent Type (0008,0068); modifiers from the View Modifier Code Sequence (0054,0222)
/// at the top level and inside the View Code Sequence item (both occur); an unknown
/// modifier code counts as a modifier, named by its Code Meaning; the acquisition time
/// from Acquisition DateTime, else Acquisition Date + Time, else Content Date + Time.
fn acquisition(obj: &InMemDicomObject, sop_class_uid: &str) -> Acquisition {
    let processing = FOR_PROCESSING_SOP_CLASSES.contains(&sop_class_uid)
        || text(obj, tags::PRESENTATION_INTENT_TYPE)
            .is_some_and(|v| v.eq_ignore_ascii_case("FOR PROCESSING"));
    let mut items: Vec<&InMemDicomObject> = Vec::new();
    if let Some(list) = obj
        .get(tags::VIEW_MODIFIER_CODE_SEQUENCE)
        .and_then(|e| e.items())
    {
        items.extend(list);
    }
    if let Some(view) = obj
        .get(tags::VIEW_CODE_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|l| l.first())
    {
        if let Some(list) = view
            .get(tags::VIEW_MODIFIER_CODE_SEQUENCE)
            .and_then(|e| e.items())
        {
            items.extend(list);
        }
    }
    let mut displaced = false;
    let mut modifiers: Vec<String> = Vec::new();
    for item in items {
        let code = text(item, tags::CODE_VALUE).unwrap_or_default();
        let name = match modifier_name(&code) {
            Some(n) => n.to_owned(),
            None => {
                let meaning = text(item, tags::CODE_MEANING).unwrap_or_else(|| code.clone());
                format!("unknown modifier `{}`", printable(&meaning).to_lowercase())
            }
        };
        if name == "implant displaced" {
            displaced = true;
        } else if !modifiers.contains(&name) {
            modifiers.push(name);
        }
    }
    modifiers.sort();
    let implant_present =
        text(obj, tags::BREAST_IMPLANT_PRESENT).is_some_and(|v| v.eq_ignore_ascii_case("YES"));
    let implant = if displaced {
        Implant::Displaced
    } else if implant_present {
        Implant::Present
    } else {
        Implant::None
    };
    Acquisition {
        intent: if processing {
            Intent::Processing
        } else {
            Intent::Presentation
        },
        modifiers,
        implant,
        acquired: acquired(obj),
    }
}

/// The acquisition date-time as digits and at most one dot (anything else in the
/// value is dropped, so a hostile value cannot reach SQL or logs in a strange shape).
fn acquired(obj: &InMemDicomObject) -> String {
    let joined =
        |d, t| text(obj, d).map(|d: String| format!("{d}{}", text(obj, t).unwrap_or_default()));
    let raw = text(obj, tags::ACQUISITION_DATE_TIME)
        .or_else(|| joined(tags::ACQUISITION_DATE, tags::ACQUISITION_TIME))
        .or_else(|| joined(tags::CONTENT_DATE, tags::CONTENT_TIME))
        .unwrap_or_default();
    let mut out = String::new();
    for c in raw.chars() {
        if c.is_ascii_digit() || (c == '.' && !out.contains('.')) {
            out.push(c);
        } else if c == '+' || c == '-' {
            break; // a UTC offset: the local time is what the modality logged
        }
        if out.len() >= 21 {
            break;
        }
    }
    out
}

/// Patient identifiers are redacted so the struct can be logged safely.
impl fmt::Debug for InstanceMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceMeta")
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("study_uid", &self.study_uid)
            .field("laterality", &self.laterality)
            .field("view", &self.view)
            .field("rows", &self.rows)
            .field("columns", &self.columns)
            .field("patient_id", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why an instance was refused. The text names the problem and the attribute.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum InvalidInstance {
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    #[error("missing required attribute {0}")]
    Missing(&'static str),
    #[error("attribute {name} has an unusable value `{value}`")]
    BadValue { name: &'static str, value: String },
    #[error(
        "invalid UID in {name}: `{value}` (PS3.5 §9.1: digits and dots, at most 64 characters)"
    )]
    BadUid { name: &'static str, value: String },
    #[error("not a mammogram: Modality {modality}, SOP Class {sop_class}")]
    NotMammography { modality: String, sop_class: String },
    #[error("missing laterality: no L or R in Image Laterality (0020,0062), Laterality (0020,0060), Frame Laterality (0020,9072) or the Anatomic Region Sequence (0008,2218)")]
    MissingLaterality,
    #[error("missing view: no View Position (0018,5101), View Code Sequence (0054,0220) or CC/MLO Patient Orientation")]
    MissingView,
    #[error("image too large: {rows}x{columns} exceeds the limit {max_rows}x{max_columns}")]
    TooLarge {
        rows: u32,
        columns: u32,
        max_rows: u32,
        max_columns: u32,
    },
    #[error("unsupported pixel format: {0}")]
    UnsupportedPixels(String),
    #[error(
        "instance belongs to study {found}, not to the study {expected} named in the request URL"
    )]
    WrongStudy { expected: String, found: String },
    #[error("Pixel Data (7FE0,0010) holds {found} bytes but Rows x Columns x Samples per Pixel x Bits Allocated x frames ({rows} x {columns} x 1 x {bits_allocated} x {frames}) needs {expected} (truncated or corrupt image)")]
    PixelDataLength {
        found: u64,
        expected: u64,
        rows: u32,
        columns: u32,
        bits_allocated: u16,
        frames: u32,
    },
    #[error("encapsulated Pixel Data is not usable: {0}")]
    BadFragments(String),
    #[error("unsupported transfer syntax: {0}")]
    UnsupportedTransferSyntax(String),
    /// The instance names another patient or imaging center than its study already
    /// has (merging it would mix two women's images in one exam).
    #[error("instance does not match its study {study}: {reason}")]
    StudyMismatch { study: String, reason: String },
}

impl InvalidInstance {
    /// The Failure Reason (0008,1197) code for the STOW-RS response (PS3.18 §10.5.3,
    /// PS3.4 Annex GG): A900 for data that does not match its SOP class or the
    /// request, C000 for data that cannot be understood, 0122 for an SOP class we do
    /// not store.
    pub fn failure_reason(&self) -> u16 {
        match self {
            InvalidInstance::NotDicom(_) => 0xC000,
            InvalidInstance::NotMammography { .. } => 0x0122,
            InvalidInstance::UnsupportedPixels(_) => 0xC000,
            InvalidInstance::BadFragments(_) => 0xC000,
            // PS3.4 Table GG.4-1: Referenced Transfer Syntax not supported.
            InvalidInstance::UnsupportedTransferSyntax(_) => 0xC122,
            _ => 0xA900,
        }
    }
}

/// Reads one attribute as trimmed text, `None` when absent or empty.
fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let v = e.to_str().ok()?;
    let v = trim_value(&v);
    (!v.is_empty()).then(|| v.to_owned())
}

fn required(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<String, InvalidInstance> {
    text(obj, tag).ok_or(InvalidInstance::Missing(name))
}

fn uid(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<String, InvalidInstance> {
    let v = required(obj, tag, name)?;
    if is_valid_uid(&v) {
        Ok(v)
    } else {
        Err(InvalidInstance::BadUid {
            name,
            value: printable(&v),
        })
    }
}

fn number(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<u32, InvalidInstance> {
    let v = required(obj, tag, name)?;
    let e = obj.get(tag).ok_or(InvalidInstance::Missing(name))?;
    e.to_int::<u32>().map_err(|_| InvalidInstance::BadValue {
        name,
        value: printable(&v),
    })
}

/// Keeps hostile values from flooding an error message or a terminal.
fn printable(s: &str) -> String {
    s.chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The item of a functional group macro (e.g. Frame Anatomy) that holds for the image:
/// the Shared Functional Groups Sequence's, else the first frame's in the Per-frame
/// Functional Groups Sequence (PS3.3 C.7.6.16). The enhanced and breast projection
/// classes keep laterality and VOI there rather than at the top level.
fn functional_group(obj: &InMemDicomObject, macro_tag: Tag) -> Option<&InMemDicomObject> {
    [
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
    ]
    .into_iter()
    .find_map(|seq| {
        obj.get(seq)?
            .items()?
            .first()?
            .get(macro_tag)?
            .items()?
            .first()
    })
}

/// Laterality from a coded anatomic region: "left breast" / "right breast"
/// (SNOMED CT and legacy SNOMED RT), or "breast" with a left / right modifier.
fn coded_laterality(obj: &InMemDicomObject) -> Option<Laterality> {
    let code_of = |item: &InMemDicomObject| match text(item, tags::CODE_VALUE).as_deref() {
        Some("80248007" | "T-04030" | "7771000" | "G-A101") => Some(Laterality::L),
        Some("73056007" | "T-04020" | "24028007" | "G-A100") => Some(Laterality::R),
        _ => None,
    };
    let region = obj.get(tags::ANATOMIC_REGION_SEQUENCE)?.items()?.first()?;
    code_of(region).or_else(|| {
        region
            .get(tags::ANATOMIC_REGION_MODIFIER_SEQUENCE)?
            .items()?
            .iter()
            .find_map(code_of)
    })
}

/// Image Laterality, else Laterality, else Frame Laterality of the Frame Anatomy
/// functional group, else a coded anatomic region (top level, then Frame Anatomy).
fn laterality(obj: &InMemDicomObject) -> Option<Laterality> {
    let anatomy = functional_group(obj, tags::FRAME_ANATOMY_SEQUENCE);
    [tags::IMAGE_LATERALITY, tags::LATERALITY]
        .into_iter()
        .find_map(|t| text(obj, t).and_then(|v| Laterality::parse(&v)))
        .or_else(|| {
            anatomy
                .and_then(|a| text(a, tags::FRAME_LATERALITY))
                .and_then(|v| Laterality::parse(&v))
        })
        .or_else(|| coded_laterality(obj))
        .or_else(|| anatomy.and_then(coded_laterality))
}

/// The views of CID 4014 (View for Mammography), by SNOMED CT code and by the
/// legacy SNOMED-RT code older modalities send. Only CC and MLO are screening views;
/// the others are named by the abbreviation View Position (0018,5101) uses, so they
/// are stored and shown but never scored as one of the four screening views.
fn view_of_code(code: &str) -> Option<View> {
    let other = |abbrev: &str| Some(View::Other(abbrev.to_owned()));
    match code {
        "399162004" | "R-10242" => Some(View::Cc),
        "399368009" | "R-10226" => Some(View::Mlo),
        "399260004" | "R-10224" => other("ML"),
        "399352003" | "R-10228" => other("LM"),
        "399099002" | "R-10230" => other("LMO"),
        "399196006" | "R-10244" => other("FB"),
        "399188001" | "R-102D0" => other("SIO"),
        "441555000" | "R-40AAA" => other("ISO"),
        "399192008" | "R-1024A" => other("XCCL"),
        "399101009" | "R-1024B" => other("XCCM"),
        "127457009" | "T-04005" => other("SPECIMEN"),
        _ => None,
    }
}

/// View Position first; then the View Code Sequence (the views of CID 4014);
/// then a Patient Orientation of exactly "CC"/"MLO", which digitized-film archives
/// such as CBIS-DDSM use in place of View Position.
fn view(obj: &InMemDicomObject) -> Option<View> {
    if let Some(v) = text(obj, tags::VIEW_POSITION) {
        return Some(View::parse(&v.to_ascii_uppercase()));
    }
    if let Some(items) = obj.get(tags::VIEW_CODE_SEQUENCE).and_then(|e| e.items()) {
        if let Some(item) = items.first() {
            if let Some(v) = text(item, tags::CODE_VALUE)
                .as_deref()
                .and_then(view_of_code)
            {
                return Some(v);
            }
        }
    }
    match text(obj, tags::PATIENT_ORIENTATION).as_deref() {
        Some("CC") => Some(View::Cc),
        Some("MLO") => Some(View::Mlo),
        _ => None,
    }
}

/// Extracts and validates everything tamiz needs from the attributes. Runs on every
/// uploaded instance before a byte of it is stored; the Pixel Data itself is checked
/// by [`check_pixel_data`] against what the structural walk found.
pub fn extract(obj: &DefaultDicomObject, limits: &Limits) -> Result<InstanceMeta, InvalidInstance> {
    let sop_class_uid = uid(obj, tags::SOP_CLASS_UID, "SOP Class UID (0008,0016)")?;
    let sop_instance_uid = uid(obj, tags::SOP_INSTANCE_UID, "SOP Instance UID (0008,0018)")?;
    let study_uid = uid(
        obj,
        tags::STUDY_INSTANCE_UID,
        "Study Instance UID (0020,000D)",
    )?;
    let series_uid = uid(
        obj,
        tags::SERIES_INSTANCE_UID,
        "Series Instance UID (0020,000E)",
    )?;
    let transfer_syntax = trim_value(obj.meta().transfer_syntax()).to_owned();
    let modality = text(obj, tags::MODALITY).unwrap_or_default();

    let mammo_class = MAMMOGRAPHY_SOP_CLASSES.contains(&sop_class_uid.as_str());
    let mg_image = modality == "MG" && GENERIC_IMAGE_SOP_CLASSES.contains(&sop_class_uid.as_str());
    if !(mammo_class || mg_image) {
        return Err(InvalidInstance::NotMammography {
            modality: if modality.is_empty() {
                "(none)".into()
            } else {
                printable(&modality)
            },
            sop_class: sop_class_uid,
        });
    }

    let laterality = laterality(obj).ok_or(InvalidInstance::MissingLaterality)?;
    let view = view(obj).ok_or(InvalidInstance::MissingView)?;

    let rows = number(obj, tags::ROWS, "Rows (0028,0010)")?;
    let columns = number(obj, tags::COLUMNS, "Columns (0028,0011)")?;
    if rows == 0 || columns == 0 || rows > limits.max_rows || columns > limits.max_columns {
        return Err(InvalidInstance::TooLarge {
            rows,
            columns,
            max_rows: limits.max_rows,
            max_columns: limits.max_columns,
        });
    }
    let bits_allocated = number(obj, tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")? as u16;
    let bits_stored = number(obj, tags::BITS_STORED, "Bits Stored (0028,0101)")? as u16;
    let samples = number(
        obj,
        tags::SAMPLES_PER_PIXEL,
        "Samples per Pixel (0028,0002)",
    )?;
    let tomosynthesis = sop_class_uid == BREAST_TOMOSYNTHESIS;
    let frames = match text(obj, tags::NUMBER_OF_FRAMES) {
        Some(v) => match obj.get(tags::NUMBER_OF_FRAMES).map(|e| e.to_int::<u32>()) {
            Some(Ok(n)) if n >= 1 => n,
            _ => {
                return Err(InvalidInstance::BadValue {
                    name: "Number of Frames (0028,0008)",
                    value: printable(&v),
                })
            }
        },
        None => 1,
    };
    if !matches!(bits_allocated, 8 | 16) || bits_stored == 0 || bits_stored > bits_allocated {
        return Err(InvalidInstance::UnsupportedPixels(format!(
            "Bits Allocated {bits_allocated}, Bits Stored {bits_stored}"
        )));
    }
    if samples != 1 {
        return Err(InvalidInstance::UnsupportedPixels(format!(
            "{samples} samples per pixel (mammograms are grayscale)"
        )));
    }
    if frames != 1 && !tomosynthesis {
        return Err(InvalidInstance::UnsupportedPixels(format!(
            "{frames} frames (only single-frame projection images and Breast Tomosynthesis are read)"
        )));
    }
    let mut acquisition = acquisition(obj, &sop_class_uid);
    let warning = tomosynthesis.then(|| {
        acquisition.modifiers.push(TOMOSYNTHESIS.to_owned());
        acquisition.modifiers.sort();
        format!(
            "stored, not triaged: Breast Tomosynthesis ({frames} frames) is kept for reading; the triage model scores 2D projection views only"
        )
    });
    Ok(InstanceMeta {
        sop_class_uid,
        sop_instance_uid,
        study_uid,
        series_uid,
        transfer_syntax,
        modality,
        laterality,
        view,
        rows,
        columns,
        bits_allocated,
        bits_stored,
        patient_id: text(obj, tags::PATIENT_ID).unwrap_or_default(),
        patient_issuer: text(obj, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default(),
        institution_name: text(obj, tags::INSTITUTION_NAME),
        acquisition,
        frames,
        warning,
    })
}

/// Transfer syntaxes whose Pixel Data is native (not encapsulated).
fn native_transfer_syntax(ts: &str) -> bool {
    matches!(
        ts,
        guard::IMPLICIT_VR_LE | "1.2.840.10008.1.2.1" | guard::DEFLATED
    )
}

/// Checks the top-level Pixel Data against the attributes, so that an image that
/// cannot be decoded is refused at upload, not discovered by a worker later: native
/// data must hold exactly Rows × Columns × Samples × Bits Allocated / 8 × frames bytes
/// (plus one byte of padding to even length); encapsulated data must be a sane
/// fragment table for one frame (PS3.5 §A.4) and, for RLE, carry a sane RLE header
/// (PS3.5 §G.3.1), whose offsets the RLE decoder would otherwise trust, and for
/// JPEG, JPEG-LS and JPEG 2000 a frame header of Rows × Columns
/// ([`super::codestream`]), by which the decoder would otherwise size its buffers.
pub fn check_pixel_data(
    meta: &InstanceMeta,
    layout: Option<&PixelLayout>,
) -> Result<(), InvalidInstance> {
    let frag = |m: String| Err(InvalidInstance::BadFragments(m));
    let native = native_transfer_syntax(&meta.transfer_syntax);
    match layout {
        None => Err(InvalidInstance::Missing("Pixel Data (7FE0,0010)")),
        Some(PixelLayout::Native { bytes }) => {
            if !native {
                return frag(format!(
                    "transfer syntax {} needs encapsulated Pixel Data, but it is native",
                    meta.transfer_syntax
                ));
            }
            let expected = meta.rows as u64
                * meta.columns as u64
                * (meta.bits_allocated as u64 / 8)
                * meta.frames as u64;
            let padded = expected + expected % 2;
            if *bytes == expected || *bytes == padded {
                Ok(())
            } else {
                Err(InvalidInstance::PixelDataLength {
                    found: *bytes,
                    expected,
                    rows: meta.rows,
                    columns: meta.columns,
                    bits_allocated: meta.bits_allocated,
                    frames: meta.frames,
                })
            }
        }
        Some(PixelLayout::Encapsulated {
            offsets,
            fragments,
            head,
        }) => {
            if native {
                return frag(format!(
                    "transfer syntax {} needs native Pixel Data, but it is encapsulated",
                    meta.transfer_syntax
                ));
            }
            if fragments.is_empty() {
                return frag("no fragment follows the Basic Offset Table".into());
            }
            if fragments.contains(&0) {
                return frag("a fragment is empty".into());
            }
            let frames = meta.frames as usize;
            if !(offsets.is_empty() || (offsets.len() == frames && offsets[0] == 0)) {
                return frag(format!(
                    "the Basic Offset Table lists {} offsets for {frames} frame(s) (expected none, or one per frame starting at 0)",
                    offsets.len()
                ));
            }
            if fragments.len() < frames {
                return frag(format!(
                    "{} fragment(s) for {frames} frames (each frame needs at least one)",
                    fragments.len()
                ));
            }
            if meta.transfer_syntax == guard::RLE_LOSSLESS {
                check_rle_header(meta, fragments, head)?;
            }
            super::codestream::check(
                &meta.transfer_syntax,
                head,
                meta.rows,
                meta.columns,
                1, // Samples per Pixel: only grayscale is accepted
            )
            .map_err(InvalidInstance::BadFragments)
        }
    }
}

/// The RLE header (PS3.5 §G.5): 16 little-endian u32, the segment count then the
/// offset of each segment; one segment per byte of each sample.
fn check_rle_header(
    meta: &InstanceMeta,
    fragments: &[u64],
    head: &[u8],
) -> Result<(), InvalidInstance> {
    let frag = |m: String| Err(InvalidInstance::BadFragments(m));
    if fragments.len() != meta.frames as usize {
        return frag(format!(
            "RLE Lossless stores each frame in one fragment (PS3.5 §G.2), found {} for {} frame(s)",
            fragments.len(),
            meta.frames
        ));
    }
    if head.len() < 64 {
        return frag("the RLE fragment is shorter than its 64-byte header".into());
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            head[4 * i],
            head[4 * i + 1],
            head[4 * i + 2],
            head[4 * i + 3],
        ])
    };
    let segments = word(0) as usize;
    let expected = meta.bits_allocated as usize / 8;
    if segments != expected {
        return frag(format!(
            "the RLE header lists {segments} segments, but {} bits per sample need {expected}",
            meta.bits_allocated
        ));
    }
    let mut previous = 0u64;
    for i in 1..=segments {
        let offset = word(i) as u64;
        if (i == 1 && offset != 64) || offset <= previous || offset >= fragments[0] {
            return frag(format!(
                "RLE segment {i} starts at offset {offset}, outside the {}-byte fragment or out of order",
                fragments[0]
            ));
        }
        previous = offset;
    }
    Ok(())
}
