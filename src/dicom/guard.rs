//! A structural pre-check of an uploaded file, run before dicom-rs parses it.
//!
//! dicom-rs reserves and zero-fills a buffer of an element's declared length before
//! reading it, so a few hundred hostile bytes declaring a 2 GiB element cost seconds
//! of CPU and gigabytes of memory. This walk reads only element headers (PS3.5 §7.1)
//! and refuses any element, item or fragment whose declared length exceeds the bytes
//! that remain, so the parser only ever allocates what the file really holds.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::InvalidInstance;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

fn bad(msg: String) -> InvalidInstance {
    InvalidInstance::NotDicom(msg)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// VRs whose explicit header has 2 reserved bytes and a 32-bit length (PS3.5 §7.1.2).
fn long_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Checks every declared length of the file in `bytes` (preamble included) and, for a
/// Deflated data set, of its inflated form, inflating at most `max_inflated` bytes.
pub fn check_lengths(bytes: &[u8], max_inflated: u64) -> Result<(), InvalidInstance> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(bad(
            "no DICOM preamble and \"DICM\" marker (PS3.10 §7.1)".into()
        ));
    }
    // File meta group: explicit VR little endian, group 0002 only.
    let mut pos = 132;
    let mut ts = String::new();
    while pos + 8 <= bytes.len() && u16_at(bytes, pos) == 0x0002 {
        let (tag, len, header) = explicit_header(bytes, pos)?;
        let start = pos + header;
        check_fits(bytes, tag, start, len)?;
        if tag == Tag(0x0002, 0x0010) {
            ts = String::from_utf8_lossy(&bytes[start..start + len as usize])
                .trim_end_matches(['\0', ' '])
                .to_owned();
        }
        pos = start + len as usize;
    }
    let data = &bytes[pos..];
    match ts.as_str() {
        "" => Err(bad(
            "file meta group has no Transfer Syntax UID (0002,0010)".into(),
        )),
        EXPLICIT_VR_BE => Err(bad(
            "Explicit VR Big Endian is retired and not accepted".into()
        )),
        IMPLICIT_VR_LE => walk(data, false),
        DEFLATED => {
            use std::io::Read;
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(data)
                .take(max_inflated + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| bad(format!("Deflated data set does not inflate: {e}")))?;
            if inflated.len() as u64 > max_inflated {
                return Err(bad(format!(
                    "Deflated data set inflates beyond {max_inflated} bytes"
                )));
            }
            walk(&inflated, true)
        }
        _ => walk(data, true),
    }
}

fn check_fits(b: &[u8], tag: Tag, start: usize, len: u32) -> Result<(), InvalidInstance> {
    if len != UNDEFINED && start as u64 + len as u64 > b.len() as u64 {
        return Err(bad(format!(
            "element ({:04X},{:04X}) declares {len} bytes but only {} remain (truncated or corrupt file)",
            tag.0,
            tag.1,
            b.len().saturating_sub(start)
        )));
    }
    Ok(())
}

/// Every VR of PS3.5 §6.2. Parsers disagree on how to read an unknown one, so the
/// file is refused instead.
fn known_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SQ"
            | b"SS"
            | b"ST"
            | b"SV"
            | b"TM"
            | b"UC"
            | b"UI"
            | b"UL"
            | b"UN"
            | b"UR"
            | b"US"
            | b"UT"
            | b"UV"
    )
}

/// Reads an explicit-VR element header at `pos`: tag, length, header size.
fn explicit_header(b: &[u8], pos: usize) -> Result<(Tag, u32, usize), InvalidInstance> {
    let tag = Tag(u16_at(b, pos), u16_at(b, pos + 2));
    if tag.0 == 0xFFFE {
        return Ok((tag, u32_at(b, pos + 4), 8));
    }
    let vr = [b[pos + 4], b[pos + 5]];
    if !known_vr(vr) {
        return Err(bad(format!(
            "element ({:04X},{:04X}) has an unknown VR `{}`",
            tag.0,
            tag.1,
            String::from_utf8_lossy(&vr).escape_default()
        )));
    }
    if long_vr(vr) {
        if pos + 12 > b.len() {
            return Err(bad(format!(
                "element ({:04X},{:04X}) header is cut off",
                tag.0, tag.1
            )));
        }
        Ok((tag, u32_at(b, pos + 8), 12))
    } else {
        Ok((tag, u16_at(b, pos + 6) as u32, 8))
    }
}

/// Walks a data set's element headers. Sequences and items are entered (their
/// contents are elements); fragments of encapsulated Pixel Data are skipped.
fn walk(b: &[u8], explicit: bool) -> Result<(), InvalidInstance> {
    let dict = StandardDataDictionary;
    let mut pos = 0usize;
    let mut in_fragments = false;
    while pos < b.len() {
        if pos + 8 > b.len() {
            return Err(bad(format!(
                "{} stray bytes after the last element",
                b.len() - pos
            )));
        }
        let (tag, len, header) = if explicit {
            explicit_header(b, pos)?
        } else {
            (
                Tag(u16_at(b, pos), u16_at(b, pos + 2)),
                u32_at(b, pos + 4),
                8,
            )
        };
        let start = pos + header;
        check_fits(b, tag, start, len)?;
        pos = start;
        if tag == SEQUENCE_END {
            in_fragments = false;
            continue;
        }
        if len == UNDEFINED {
            // Undefined-length sequence, item or encapsulated Pixel Data: contents follow.
            in_fragments |= tag == PIXEL_DATA;
            continue;
        }
        let is_sequence = tag == ITEM && !in_fragments
            || (!explicit
                && dict
                    .by_tag(tag)
                    .is_some_and(|e| e.vr().exact() == Some(VR::SQ)))
            || (explicit && header == 12 && &b[pos - 8..pos - 6] == b"SQ");
        if !is_sequence {
            pos += len as usize; // a value, or a pixel data fragment: skip it
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        let mut v = ts.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        f.extend_from_slice(&(v.len() as u16).to_le_bytes());
        f.extend_from_slice(&v);
        f.extend_from_slice(body);
        f
    }

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&tag.0.to_le_bytes());
        e.extend_from_slice(&tag.1.to_le_bytes());
        e.extend_from_slice(vr);
        if long_vr(*vr) {
            e.extend_from_slice(&[0, 0]);
            e.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            e.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        e.extend_from_slice(value);
        e
    }

    #[test]
    fn well_formed_explicit_and_implicit_pass() {
        let body = [
            explicit((0x0008, 0x0060), b"CS", b"MG"),
            explicit((0x7FE0, 0x0010), b"OW", &[0; 8]),
        ]
        .concat();
        check_lengths(&file("1.2.840.10008.1.2.1", &body), 1 << 20).unwrap();
        let mut implicit = vec![0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0];
        implicit.extend_from_slice(b"MG");
        check_lengths(&file(IMPLICIT_VR_LE, &implicit), 1 << 20).unwrap();
    }

    #[test]
    fn a_length_beyond_the_file_is_refused() {
        let mut body = explicit((0x0008, 0x0060), b"CS", b"MG");
        body.extend_from_slice(&[
            0x10, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2,
        ]);
        let err = check_lengths(&file("1.2.840.10008.1.2.1", &body), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(0010,0010) declares 2147483647 bytes but only 2 remain"),
            "{err}"
        );
    }

    #[test]
    fn encapsulated_fragments_are_skipped_not_parsed() {
        // Pixel Data, undefined length: empty offset table item, one fragment whose
        // bytes look like a huge element header, sequence delimiter.
        let mut body = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        body.extend_from_slice(&[
            0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0, 0x10, 0, 0x10, 0, b'O', b'B', 0xFF, 0xFF,
        ]);
        body.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        check_lengths(&file("1.2.840.10008.1.2.5", &body), 1 << 20).unwrap();
    }

    #[test]
    fn unknown_vr_is_refused() {
        let body = explicit((0x0018, 0x0015), b"C[", b"BREAST");
        let err = check_lengths(&file("1.2.840.10008.1.2.1", &body), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(0018,0015) has an unknown VR `C[`"), "{err}");
    }

    #[test]
    fn no_marker_and_big_endian_are_refused() {
        assert!(check_lengths(b"hello", 10).is_err());
        assert!(check_lengths(&file(EXPLICIT_VR_BE, &[]), 10)
            .unwrap_err()
            .to_string()
            .contains("Big Endian"));
    }
}
