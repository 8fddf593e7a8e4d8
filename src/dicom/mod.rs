//! DICOM: what tamiz reads from an instance (metadata, validation) and how it turns the
//! stored samples into display values (pixels). Writing synthetic instances lives in
//! [`crate::synth`].

pub mod codestream;
pub mod guard;
pub mod meta;
pub mod pixels;

pub use guard::ACCEPTED_TRANSFER_SYNTAXES;
pub use meta::{Acquisition, Implant, InstanceMeta, Intent, InvalidInstance, Laterality, View};
pub use meta::{
    BREAST_TOMOSYNTHESIS, GENERIC_IMAGE_SOP_CLASSES, MAMMOGRAPHY_SOP_CLASSES, TOMOSYNTHESIS,
    WARNING_STORED_NOT_TRIAGED,
};

use std::io::{BufRead, Seek, SeekFrom};

use crate::config::Limits;

/// Everything ingest checks on one instance, reading it as a stream: the structural
/// walk ([`guard`]), then the attributes up to the Pixel Data (dicom-rs never loads
/// the pixels here), then the Pixel Data layout against the attributes. `total` is
/// the length of the data behind `r`.
pub fn inspect<R: BufRead + Seek>(
    mut r: R,
    total: u64,
    limits: &Limits,
) -> Result<InstanceMeta, InvalidInstance> {
    let structure = guard::check(&mut r, Some(total), limits.guard())?;
    r.seek(SeekFrom::Start(0))
        .map_err(|e| InvalidInstance::NotDicom(format!("reading the file: {e}")))?;
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .from_reader(r)
        .map_err(|e| InvalidInstance::NotDicom(e.to_string()))?;
    let meta = meta::extract(&obj, limits)?;
    meta::check_pixel_data(&meta, structure.pixel_data.as_ref())?;
    Ok(meta)
}

/// SOP Class and Instance UIDs of a file, read from its header: the file is walked by
/// [`guard`] first (default depth bound, inflating at most 4× the file or 1 MiB), so
/// even a hostile file is never handed to dicom-rs unchecked. A UID that is absent or
/// not a valid UID is `None`.
pub fn read_header_uids(
    path: &std::path::Path,
) -> Result<(Option<String>, Option<String>), InvalidInstance> {
    let io = |e: std::io::Error| InvalidInstance::NotDicom(format!("reading the file: {e}"));
    let file = std::fs::File::open(path).map_err(io)?;
    let total = file.metadata().map_err(io)?.len();
    let mut r = std::io::BufReader::with_capacity(1 << 16, file);
    let limits = guard::GuardLimits {
        max_inflated: total.saturating_mul(4).max(1 << 20),
        ..Limits::default().guard()
    };
    guard::check(&mut r, Some(total), limits)?;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .from_reader(r)
        .map_err(|e| InvalidInstance::NotDicom(e.to_string()))?;
    let get = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|v| trim_value(&v).to_owned())
            .filter(|v| is_valid_uid(v))
    };
    Ok((
        get(dicom_dictionary_std::tags::SOP_CLASS_UID),
        get(dicom_dictionary_std::tags::SOP_INSTANCE_UID),
    ))
}

/// [`read_header_uids`], with `None`s for a file that cannot be read.
pub fn header_uids(path: &std::path::Path) -> (Option<String>, Option<String>) {
    read_header_uids(path).unwrap_or((None, None))
}

/// [`inspect`] of an instance in memory (the fuzz targets, tests).
pub fn inspect_bytes(bytes: &[u8], limits: &Limits) -> Result<InstanceMeta, InvalidInstance> {
    inspect(std::io::Cursor::new(bytes), bytes.len() as u64, limits)
}

/// Checks a UID against PS3.5 §9.1: 1–64 characters, digits in dot-separated components,
/// no empty component. UIDs become object-store keys, so this is also what keeps `../`
/// and friends out of paths. Leading zeros (which §9.1 forbids) are tolerated because
/// real archives contain them and they are harmless as keys.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid
            .split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// Trims the padding DICOM puts on string values (space for text, NUL for UIDs).
pub fn trim_value(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.1.2"));
        assert!(is_valid_uid("2.25.1234"));
        assert!(!is_valid_uid(""));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("1.2."));
        assert!(!is_valid_uid("../../etc/passwd"));
        assert!(!is_valid_uid("1.2/3"));
        assert!(!is_valid_uid("1.2.3 "));
        assert!(!is_valid_uid(&"1.".repeat(40)));
    }
}
