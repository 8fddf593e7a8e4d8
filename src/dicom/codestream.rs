//! The frame size a JPEG, JPEG-LS or JPEG 2000 codestream declares, read from the
//! first bytes of its first fragment.
//!
//! A decoder sizes its buffers by the codestream's own header, not by Rows and
//! Columns: a 3 KB JPEG whose frame header says 65535 × 65535 makes the decoder
//! allocate gigabytes in a worker, long after the upload was answered "stored". So
//! ingest compares the declared frame with the attributes (already checked against
//! the size limits) and refuses a mismatch, and a worker never decodes more than the
//! limits allow.

/// What a codestream's frame header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub rows: u32,
    pub columns: u32,
    /// Sample precision in bits.
    pub precision: u8,
    pub components: u16,
}

/// The codec family of an encapsulated transfer syntax, when it has a header to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ISO 10918 JPEG (baseline, extended, lossless) and ISO 14495 JPEG-LS: marker
    /// segments up to the frame header (SOFn, or SOF55 for JPEG-LS).
    Jpeg,
    /// ISO 15444 JPEG 2000 and HTJ2K: SOC then SIZ.
    Jpeg2000,
}

impl Family {
    pub fn of(transfer_syntax: &str) -> Option<Family> {
        match transfer_syntax {
            "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.57"
            | "1.2.840.10008.1.2.4.70"
            | "1.2.840.10008.1.2.4.80"
            | "1.2.840.10008.1.2.4.81" => Some(Family::Jpeg),
            "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203" => Some(Family::Jpeg2000),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Jpeg => "JPEG",
            Family::Jpeg2000 => "JPEG 2000",
        }
    }

    /// Reads the frame header from `head`, the first bytes of the first fragment.
    pub fn frame(self, head: &[u8]) -> Result<Frame, String> {
        match self {
            Family::Jpeg => jpeg_frame(head),
            Family::Jpeg2000 => j2k_frame(head),
        }
    }
}

fn be16(b: &[u8], i: usize) -> Option<u32> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32)
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
        *b.get(i + 2)?,
        *b.get(i + 3)?,
    ]))
}

/// Walks the marker segments after SOI up to the frame header (PS3.5 §A.4.1, ISO
/// 10918-1 B.2; JPEG-LS's SOF55 has the same layout).
fn jpeg_frame(head: &[u8]) -> Result<Frame, String> {
    if !head.starts_with(&[0xFF, 0xD8]) {
        return Err("the JPEG fragment does not start with SOI (FFD8)".into());
    }
    let missing = || {
        format!(
            "no JPEG frame header (SOF) within the first {} bytes of the fragment",
            head.len()
        )
    };
    let mut i = 2;
    loop {
        if *head.get(i).ok_or_else(missing)? != 0xFF {
            return Err(format!(
                "the JPEG fragment has no marker at byte {i} before its frame header"
            ));
        }
        // Fill bytes (FF FF ...) may precede a marker.
        while head.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let marker = *head.get(i + 1).ok_or_else(missing)?;
        match marker {
            0xD0..=0xD7 | 0x01 => i += 2,
            0xDA => return Err("the JPEG fragment has a scan before its frame header".into()),
            0xD9 => return Err("the JPEG fragment ends (EOI) before its frame header".into()),
            0xC0..=0xCF | 0xF7 if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let precision = *head.get(i + 4).ok_or_else(missing)?;
                let rows = be16(head, i + 5).ok_or_else(missing)?;
                let columns = be16(head, i + 7).ok_or_else(missing)?;
                let components = *head.get(i + 9).ok_or_else(missing)? as u16;
                return Ok(Frame {
                    rows,
                    columns,
                    precision,
                    components,
                });
            }
            _ => {
                let len = be16(head, i + 2).ok_or_else(missing)? as usize;
                if len < 2 {
                    return Err(format!(
                        "the JPEG marker segment FF{marker:02X} at byte {i} has length {len}"
                    ));
                }
                i += 2 + len;
            }
        }
    }
}

/// SOC then SIZ (ISO 15444-1 A.5.1). A JP2 file wrapper, which PS3.5 §A.4.4 does
/// not allow but some encoders write, is looked through to its codestream.
fn j2k_frame(head: &[u8]) -> Result<Frame, String> {
    const SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
    let at = head.windows(4).position(|w| w == SOC_SIZ).ok_or_else(|| {
        format!(
            "no JPEG 2000 codestream header (SOC, SIZ) within the first {} bytes of the fragment",
            head.len()
        )
    })?;
    let siz = &head[at + 2..];
    let short = || "the JPEG 2000 SIZ marker segment is cut short".to_string();
    let field = |i: usize| be32(siz, i).ok_or_else(short);
    let (xsiz, ysiz, x0, y0) = (field(6)?, field(10)?, field(14)?, field(18)?);
    let components = be16(siz, 38).ok_or_else(short)? as u16;
    let ssiz = *siz.get(40).ok_or_else(short)?;
    if x0 > xsiz || y0 > ysiz {
        return Err(format!(
            "the JPEG 2000 image offset ({x0}, {y0}) lies outside its size {xsiz} x {ysiz}"
        ));
    }
    Ok(Frame {
        rows: ysiz - y0,
        columns: xsiz - x0,
        precision: (ssiz & 0x7F) + 1,
        components,
    })
}

/// The check of ingest: the codestream declares the image the attributes describe.
pub fn check(
    transfer_syntax: &str,
    head: &[u8],
    rows: u32,
    columns: u32,
    samples_per_pixel: u16,
) -> Result<(), String> {
    let Some(family) = Family::of(transfer_syntax) else {
        return Ok(());
    };
    let frame = family.frame(head)?;
    if frame.rows != rows || frame.columns != columns {
        return Err(format!(
            "the {} codestream is {} x {} (rows x columns), but Rows x Columns is {rows} x {columns}",
            family.name(),
            frame.rows,
            frame.columns
        ));
    }
    if frame.components != samples_per_pixel {
        return Err(format!(
            "the {} codestream has {} components, but Samples per Pixel is {samples_per_pixel}",
            family.name(),
            frame.components
        ));
    }
    if frame.precision == 0 || frame.precision > 16 {
        return Err(format!(
            "the {} codestream has {}-bit samples (at most 16)",
            family.name(),
            frame.precision
        ));
    }
    Ok(())
}

/// How many bytes of the first fragment ingest keeps to read these headers.
pub const HEAD_BYTES: usize = 4096;

const _: () = assert!(HEAD_BYTES >= 64, "the RLE header is 64 bytes");

#[cfg(test)]
mod tests {
    use super::*;

    fn sof(marker: u8, rows: u16, columns: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        // an APP0 segment and a DHT to walk over
        b.extend_from_slice(&[0xFF, 0xE0, 0, 4, 1, 2]);
        b.extend_from_slice(&[0xFF, 0xC4, 0, 3, 9]);
        b.extend_from_slice(&[0xFF, marker, 0, 11, 16]);
        b.extend_from_slice(&rows.to_be_bytes());
        b.extend_from_slice(&columns.to_be_bytes());
        b.extend_from_slice(&[1, 1, 0x11, 0]);
        b
    }

    #[test]
    fn jpeg_and_jpeg_ls_frame_headers_are_read() {
        for (ts, marker) in [
            ("1.2.840.10008.1.2.4.70", 0xC3),
            ("1.2.840.10008.1.2.4.50", 0xC0),
            ("1.2.840.10008.1.2.4.80", 0xF7),
        ] {
            let head = sof(marker, 4096, 3328);
            assert_eq!(
                Family::of(ts).unwrap().frame(&head),
                Ok(Frame {
                    rows: 4096,
                    columns: 3328,
                    precision: 16,
                    components: 1
                })
            );
            assert_eq!(check(ts, &head, 4096, 3328, 1), Ok(()));
            assert_eq!(
                check(ts, &sof(marker, 65535, 65535), 4096, 3328, 1),
                Err("the JPEG codestream is 65535 x 65535 (rows x columns), but Rows x Columns is 4096 x 3328".into())
            );
        }
    }

    #[test]
    fn broken_jpeg_headers_are_named() {
        let ts = "1.2.840.10008.1.2.4.70";
        assert_eq!(
            check(ts, &[0, 1, 2], 1, 1, 1),
            Err("the JPEG fragment does not start with SOI (FFD8)".into())
        );
        assert_eq!(
            check(ts, &[0xFF, 0xD8, 0xFF, 0xDA, 0, 2], 1, 1, 1),
            Err("the JPEG fragment has a scan before its frame header".into())
        );
        let head = sof(0xC3, 10, 10);
        assert_eq!(
            check(ts, &head[..12], 10, 10, 1),
            Err("no JPEG frame header (SOF) within the first 12 bytes of the fragment".into())
        );
        assert_eq!(
            check(ts, &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0], 1, 1, 1),
            Err("the JPEG marker segment FFE0 at byte 2 has length 0".into())
        );
    }

    fn siz(width: u32, height: u32, depth: u8) -> Vec<u8> {
        let mut b = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
        for v in [width, height, 0, 0, width, height, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&[0, 1, depth - 1, 1, 1]);
        b
    }

    #[test]
    fn jpeg_2000_siz_is_read_also_inside_a_jp2_wrapper() {
        let ts = "1.2.840.10008.1.2.4.90";
        assert_eq!(check(ts, &siz(3328, 4096, 16), 4096, 3328, 1), Ok(()));
        let mut wrapped = b"\0\0\0\x0cjP  \r\n\x87\n....jp2c".to_vec();
        wrapped.extend(siz(3328, 4096, 12));
        assert_eq!(check(ts, &wrapped, 4096, 3328, 1), Ok(()));
        assert_eq!(
            check(ts, &siz(100_000, 100_000, 16), 4096, 3328, 1),
            Err("the JPEG 2000 codestream is 100000 x 100000 (rows x columns), but Rows x Columns is 4096 x 3328".into())
        );
        assert_eq!(
            check(
                "1.2.840.10008.1.2.4.201",
                &siz(3328, 4096, 24),
                4096,
                3328,
                1
            ),
            Err("the JPEG 2000 codestream has 24-bit samples (at most 16)".into())
        );
        assert_eq!(
            check(ts, &siz(3328, 4096, 16)[..30], 4096, 3328, 1),
            Err("the JPEG 2000 SIZ marker segment is cut short".into())
        );
        assert_eq!(
            check(ts, b"not a codestream", 4096, 3328, 1),
            Err("no JPEG 2000 codestream header (SOC, SIZ) within the first 16 bytes of the fragment".into())
        );
    }
}
