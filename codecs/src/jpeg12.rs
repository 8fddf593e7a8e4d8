//! A decoder of sequential DCT JPEG with Huffman coding (ISO 10918-1 processes 1, 2
//! and 4: SOF0 and SOF1) for one-component images of 8 or 12 bits: DICOM's JPEG
//! Extended (.51), whose 12-bit form the `jpeg-decoder` crate refuses ("precision
//! other than 8") and older mammography archives hold.
//!
//! It takes one component, 8- or 16-bit quantization tables, restart intervals, and
//! the component's blocks in raster order. Progressive, hierarchical, lossless and
//! arithmetic-coded frames, and several components, are [`LjpegError::Unsupported`]
//! (the caller falls back to dicom-rs). The inverse DCT is the separable float
//! transform of ISO 10918-1 A.3.3, rounded; decoders with an integer transform (IJG's
//! `islow`, dcmtk's) may differ from it by one in the last bit of a lossy image.
//! Corrupt data is an error, never a panic or an allocation beyond the declared frame.

use crate::ljpeg::{be16, Bits, Frame, LjpegError, Table};

/// Zigzag order: the natural (row-major) index of the k-th coefficient.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// `COS[x][u]` = C(u) cos((2x+1)uπ/16) / 2, so one dimension of the inverse DCT is
/// `f(x) = Σu COS[x][u] F(u)`.
fn cos_table() -> [[f32; 8]; 8] {
    let mut t = [[0f32; 8]; 8];
    for (x, row) in t.iter_mut().enumerate() {
        for (u, v) in row.iter_mut().enumerate() {
            let c = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            *v = (c * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos() / 2.0)
                as f32;
        }
    }
    t
}

/// The inverse DCT of one block of dequantized coefficients (natural order), level
/// shifted and clamped to `max`. Both passes add scaled rows of 8 (which the compiler
/// vectorizes) and skip zero coefficients and rows (most high frequencies).
fn idct(coef: &[f32; 64], cos: &[[f32; 8]; 8], shift: f32, max: f32, out: &mut [u16; 64]) {
    // cos_t[u][x] = cos[x][u]: one row of the transform per frequency.
    let mut cos_t = [[0f32; 8]; 8];
    for (x, row) in cos.iter().enumerate() {
        for (u, c) in row.iter().enumerate() {
            cos_t[u][x] = *c;
        }
    }
    // tmp[v][x] = Σu F(v, u) cos[x][u].
    let mut tmp = [[0f32; 8]; 8];
    let mut rows = 0;
    for v in 0..8 {
        for u in 0..8 {
            let f = coef[v * 8 + u];
            if f != 0.0 {
                rows = v + 1;
                for x in 0..8 {
                    tmp[v][x] += f * cos_t[u][x];
                }
            }
        }
    }
    // out[y][x] = Σv cos[y][v] tmp[v][x].
    for y in 0..8 {
        let mut acc = [shift; 8];
        for v in 0..rows {
            let c = cos[y][v];
            for x in 0..8 {
                acc[x] += c * tmp[v][x];
            }
        }
        for x in 0..8 {
            out[y * 8 + x] = acc[x].round().clamp(0.0, max) as u16;
        }
    }
}

/// Decodes a whole sequential DCT JPEG stream of one component. `max_samples` bounds
/// the output (Rows × Columns of the instance).
pub fn decode(data: &[u8], max_samples: usize) -> Result<Frame, LjpegError> {
    let unsupported = |m: &str| Err(LjpegError::Unsupported(m.into()));
    let corrupt = |m: &str| LjpegError::Corrupt(m.into());
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err(corrupt("no SOI marker"));
    }
    let mut dc: [Option<Table>; 4] = [None, None, None, None];
    let mut ac: [Option<Table>; 4] = [None, None, None, None];
    let mut quant: [Option<[f32; 64]>; 4] = [None, None, None, None];
    // precision, rows, columns, quantization table
    let mut frame: Option<(u8, usize, usize, usize)> = None;
    let mut restart = 0usize;
    let mut i = 2;
    loop {
        if data.get(i) != Some(&0xFF) {
            return Err(LjpegError::Corrupt(format!("no marker at byte {i}")));
        }
        while data.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let marker = *data
            .get(i + 1)
            .ok_or_else(|| corrupt("the stream ends before its scan"))?;
        if matches!(marker, 0xD0..=0xD7 | 0x01) {
            i += 2;
            continue;
        }
        let len = be16(data, i + 2)?;
        let seg = data
            .get(i + 4..i + 2 + len)
            .ok_or_else(|| corrupt("a marker segment runs past the end"))?;
        match marker {
            0xC4 => {
                let mut s = seg;
                while !s.is_empty() {
                    if s.len() < 17 {
                        return Err(corrupt("a cut Huffman table"));
                    }
                    let (class, id) = (s[0] >> 4, (s[0] & 0x0F) as usize);
                    let mut counts = [0u8; 16];
                    counts.copy_from_slice(&s[1..17]);
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    let values = s
                        .get(17..17 + n)
                        .ok_or_else(|| corrupt("a cut Huffman table"))?
                        .to_vec();
                    if id < 4 {
                        let table = Some(Table::new(&counts, values)?);
                        match class {
                            0 => dc[id] = table,
                            1 => ac[id] = table,
                            _ => return Err(corrupt("a Huffman table of class 2 or more")),
                        }
                    }
                    s = &s[17 + n..];
                }
            }
            0xDB => {
                let mut s = seg;
                while !s.is_empty() {
                    let (pq, tq) = (s[0] >> 4, (s[0] & 0x0F) as usize);
                    let width = if pq == 0 { 1 } else { 2 };
                    let body = s
                        .get(1..1 + 64 * width)
                        .ok_or_else(|| corrupt("a cut quantization table"))?;
                    let mut q = [0f32; 64];
                    for (k, &natural) in ZIGZAG.iter().enumerate() {
                        q[natural] = if width == 1 {
                            body[k] as f32
                        } else {
                            u16::from_be_bytes([body[2 * k], body[2 * k + 1]]) as f32
                        };
                    }
                    if tq < 4 {
                        quant[tq] = Some(q);
                    }
                    s = &s[1 + 64 * width..];
                }
            }
            0xC0 | 0xC1 => {
                if seg.len() < 9 {
                    return Err(corrupt("a cut frame header"));
                }
                let precision = seg[0];
                let (rows, columns) = (be16(seg, 1)?, be16(seg, 3)?);
                if seg[5] != 1 {
                    return unsupported("more than one component");
                }
                if precision != 8 && precision != 12 {
                    return Err(LjpegError::Corrupt(format!(
                        "sample precision {precision} (a DCT frame has 8 or 12)"
                    )));
                }
                if rows == 0 {
                    return unsupported("the number of lines comes in a DNL marker");
                }
                if rows * columns > max_samples || columns == 0 {
                    return Err(LjpegError::Corrupt(format!(
                        "a frame of {rows} x {columns} (at most {max_samples} samples)"
                    )));
                }
                frame = Some((precision, rows, columns, (seg[8] & 3) as usize));
            }
            0xC2..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return unsupported("not a sequential Huffman DCT frame (SOF0 or SOF1)");
            }
            0xDD => restart = be16(seg, 0)?,
            0xDA => {
                let Some((precision, rows, columns, tq)) = frame else {
                    return Err(corrupt("a scan before the frame header"));
                };
                if seg.len() < 6 || seg[0] != 1 {
                    return unsupported("a scan of several components");
                }
                let (td, ta) = ((seg[2] >> 4) as usize & 3, (seg[2] & 0x0F) as usize & 3);
                let dc = dc[td]
                    .as_ref()
                    .ok_or_else(|| corrupt("the scan's DC Huffman table is not defined"))?;
                let ac = ac[ta]
                    .as_ref()
                    .ok_or_else(|| corrupt("the scan's AC Huffman table is not defined"))?;
                let q = quant[tq]
                    .as_ref()
                    .ok_or_else(|| corrupt("the frame's quantization table is not defined"))?;
                if seg[3] != 0 || seg[4] != 63 || seg[5] != 0 {
                    return unsupported("a scan of part of the spectrum (progressive)");
                }
                let samples = scan(
                    &data[i + 2 + len..],
                    Tables { dc, ac, q },
                    rows,
                    columns,
                    precision,
                    restart,
                )?;
                return Ok(Frame {
                    rows,
                    columns,
                    precision,
                    samples,
                });
            }
            0xD9 => return Err(corrupt("EOI before any scan")),
            _ => {}
        }
        i += 2 + len;
    }
}

struct Tables<'a> {
    dc: &'a Table,
    ac: &'a Table,
    q: &'a [f32; 64],
}

/// The blocks of one non-interleaved scan in raster order (ISO 10918-1 F.2.2), each
/// dequantized, inverse transformed and written into the image.
fn scan(
    data: &[u8],
    t: Tables<'_>,
    rows: usize,
    columns: usize,
    precision: u8,
    restart: usize,
) -> Result<Vec<u16>, LjpegError> {
    let (bw, bh) = (columns.div_ceil(8), rows.div_ceil(8));
    let mut out = vec![0u16; rows * columns];
    let cos = cos_table();
    let shift = (1u32 << (precision - 1)) as f32;
    let max = ((1u32 << precision) - 1) as f32;
    let mut bits = Bits::new(data);
    let mut pred = 0i32;
    let mut coef = [0f32; 64];
    let mut block = [0u16; 64];
    for n in 0..bw * bh {
        if restart > 0 && n > 0 && n % restart == 0 {
            bits.restart()?;
            pred = 0;
        }
        coef.fill(0.0);
        pred += match bits.symbol(t.dc)? as u32 {
            0 => 0,
            s @ 1..=15 => bits.extend(s),
            s => {
                return Err(LjpegError::Corrupt(format!(
                    "DC difference category {s} (at most 15)"
                )))
            }
        };
        coef[0] = pred as f32 * t.q[0];
        let mut k = 1;
        while k < 64 {
            let rs = bits.symbol(t.ac)?;
            let (r, s) = ((rs >> 4) as usize, (rs & 0x0F) as u32);
            if s == 0 {
                if r == 15 {
                    k += 16;
                    continue;
                }
                break;
            }
            k += r;
            let Some(&natural) = ZIGZAG.get(k) else {
                return Err(LjpegError::Corrupt(
                    "an AC coefficient beyond the 64th".into(),
                ));
            };
            coef[natural] = bits.extend(s) as f32 * t.q[natural];
            k += 1;
        }
        idct(&coef, &cos, shift, max, &mut block);
        let (bx, by) = (n % bw * 8, n / bw * 8);
        for y in 0..8.min(rows - by) {
            let w = 8.min(columns - bx);
            let at = (by + y) * columns + bx;
            out[at..at + w].copy_from_slice(&block[y * 8..y * 8 + w]);
        }
    }
    if bits.overran() {
        return Err(LjpegError::Corrupt(
            "the scan's data ends before its last block".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inverse_dct_of_a_dc_coefficient_is_flat() {
        let mut coef = [0f32; 64];
        coef[0] = 8.0 * 100.0; // DC: 8 × the mean
        let mut out = [0u16; 64];
        idct(&coef, &cos_table(), 2048.0, 4095.0, &mut out);
        assert!(out.iter().all(|v| *v == 2148), "{out:?}");
    }

    #[test]
    fn what_it_does_not_handle_is_named() {
        // SOI, then a progressive frame header.
        let s = [0xFF, 0xD8, 0xFF, 0xC2, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0];
        assert_eq!(
            decode(&s, 64),
            Err(LjpegError::Unsupported(
                "not a sequential Huffman DCT frame (SOF0 or SOF1)".into()
            ))
        );
        assert_eq!(
            decode(&[0, 1, 2], 64),
            Err(LjpegError::Corrupt("no SOI marker".into()))
        );
    }
}
