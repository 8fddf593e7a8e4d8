//! DICOM RLE Lossless (PS3.5 Annex G) for one-component images of 8 or 16 bits.
//!
//! Each byte plane of the image (the most significant first) is one PackBits segment;
//! the decoder writes each segment straight into its byte of the little-endian
//! output, so no plane is interleaved afterwards. Every length is checked against the
//! fragment and the frame: corrupt data is an error naming the problem, never a panic
//! or an allocation beyond Rows × Columns.

/// Why a fragment was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    #[error("not handled by the RLE decoder: {0}")]
    Unsupported(String),
    #[error("corrupt RLE data: {0}")]
    Corrupt(String),
}

/// Decodes one frame (`fragment`: its RLE header and segments) of `rows` × `columns`
/// samples of `bits_allocated` (8 or 16) into little-endian sample bytes.
pub fn decode(
    fragment: &[u8],
    rows: usize,
    columns: usize,
    bits_allocated: u16,
) -> Result<Vec<u8>, RleError> {
    let planes = match bits_allocated {
        8 => 1,
        16 => 2,
        b => return Err(RleError::Unsupported(format!("{b} bits allocated"))),
    };
    if fragment.len() < 64 {
        return Err(RleError::Corrupt(
            "the fragment is shorter than its 64-byte header".into(),
        ));
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            fragment[4 * i],
            fragment[4 * i + 1],
            fragment[4 * i + 2],
            fragment[4 * i + 3],
        ]) as usize
    };
    let segments = word(0);
    if segments != planes {
        return Err(RleError::Corrupt(format!(
            "{segments} segments for {bits_allocated}-bit samples (one per byte: {planes})"
        )));
    }
    let n = rows * columns;
    let mut out = vec![0u8; n * planes];
    for s in 0..planes {
        let start = word(s + 1);
        let end = if s + 1 < planes {
            word(s + 2)
        } else {
            fragment.len()
        };
        let segment = fragment
            .get(start..end)
            .filter(|_| start >= 64)
            .ok_or_else(|| {
                RleError::Corrupt(format!(
                    "segment {} at bytes {start}..{end} lies outside the {}-byte fragment",
                    s + 1,
                    fragment.len()
                ))
            })?;
        // Segment 1 holds the most significant byte: byte `planes - 1 - s` of each
        // little-endian sample.
        unpack(segment, &mut out[planes - 1 - s..], planes, n)
            .map_err(|m| RleError::Corrupt(format!("segment {}: {m}", s + 1)))?;
    }
    Ok(out)
}

/// PackBits into every `stride`-th byte of `out`, `n` bytes in all. A segment may
/// carry a padding byte after its last run.
fn unpack(seg: &[u8], out: &mut [u8], stride: usize, n: usize) -> Result<(), String> {
    let mut i = 0; // position in the segment
    let mut k = 0; // bytes written
    while k < n {
        let Some(&h) = seg.get(i) else {
            return Err(format!("ends after {k} of {n} bytes"));
        };
        i += 1;
        let h = h as i8;
        if h >= 0 {
            let len = h as usize + 1;
            let run = seg.get(i..i + len).ok_or("a literal run past its end")?;
            if k + len > n {
                return Err(format!("a run past the {n} bytes of the frame"));
            }
            for (o, &b) in out[k * stride..].iter_mut().step_by(stride).zip(run) {
                *o = b;
            }
            i += len;
            k += len;
        } else if h != -128 {
            let len = (-(h as i32)) as usize + 1;
            let &b = seg.get(i).ok_or("a repeat run past its end")?;
            if k + len > n {
                return Err(format!("a run past the {n} bytes of the frame"));
            }
            for o in out[k * stride..].iter_mut().step_by(stride).take(len) {
                *o = b;
            }
            i += 1;
            k += len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(segments: &[&[u8]]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        let mut at = 64u32;
        for (i, s) in segments.iter().enumerate() {
            f[4 + 4 * i..8 + 4 * i].copy_from_slice(&at.to_le_bytes());
            at += s.len() as u32;
        }
        for s in segments {
            f.extend_from_slice(s);
        }
        f
    }

    #[test]
    fn sixteen_bit_planes_are_interleaved_little_endian() {
        // high bytes: literal [1, 2], repeat 3 x 0x7F; low bytes: repeat 5 x 0xAA
        let f = fragment(&[&[1, 1, 2, 0xFE, 0x7F], &[0xFC, 0xAA, 0]]);
        let out = decode(&f, 1, 5, 16).unwrap();
        let samples: Vec<u16> = out
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(samples, vec![0x01AA, 0x02AA, 0x7FAA, 0x7FAA, 0x7FAA]);
    }

    #[test]
    fn corrupt_data_is_named() {
        let f = fragment(&[&[1, 1, 2], &[0xFC, 0xAA]]);
        assert_eq!(
            decode(&f, 1, 5, 16),
            Err(RleError::Corrupt(
                "segment 1: ends after 2 of 5 bytes".into()
            ))
        );
        let f = fragment(&[&[0xF0, 1], &[0xFC, 0xAA]]);
        assert_eq!(
            decode(&f, 1, 5, 16),
            Err(RleError::Corrupt(
                "segment 1: a run past the 5 bytes of the frame".into()
            ))
        );
        assert_eq!(
            decode(&fragment(&[&[0]]), 1, 1, 16),
            Err(RleError::Corrupt(
                "1 segments for 16-bit samples (one per byte: 2)".into()
            ))
        );
        // Every cut of a valid fragment short of its padding byte: an error, never a panic.
        let f = fragment(&[&[1, 1, 2, 0xFE, 0x7F], &[0xFC, 0xAA, 0]]);
        for n in 0..f.len() - 1 {
            assert!(decode(&f[..n], 1, 5, 16).is_err(), "cut at {n}");
        }
    }
}
