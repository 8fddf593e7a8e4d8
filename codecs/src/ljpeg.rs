//! A lossless JPEG decoder (ISO 10918-1 process 14, SOF3; transfer syntaxes .57 and
//! .70) for one-component images of up to 16 bits, the commonest compressed form of
//! mammography archives.
//!
//! dicom-rs decodes these through the `jpeg-decoder` crate in about 1.8× dcmtk's time;
//! this decoder reads the Huffman codes through a 12-bit lookup table with the
//! difference bits in the same 64-bit window, and predicts row by row without bounds
//! checks in the inner loop. It takes what mammography encoders write: one component,
//! any of the seven predictors, a point transform, no restart markers. Anything else
//! (several components, restart intervals, a DNL marker, hierarchical or arithmetic
//! coding) is [`LjpegError::Unsupported`], and the caller falls back to dicom-rs.
//! Corrupt data is an error or wrong pixels, never a panic or an allocation beyond
//! the declared frame (which ingest has checked against Rows × Columns).

/// Why a stream was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LjpegError {
    /// Valid JPEG this decoder does not handle: decode it another way.
    #[error("not handled by tamiz's JPEG decoders: {0}")]
    Unsupported(String),
    #[error("corrupt JPEG stream: {0}")]
    Corrupt(String),
}

/// A decoded frame: samples row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub rows: usize,
    pub columns: usize,
    pub precision: u8,
    pub samples: Vec<u16>,
}

const LOOKUP_BITS: u32 = 12;

/// A Huffman table of difference categories (SSSS, 0 to 16).
#[derive(Clone)]
pub(crate) struct Table {
    /// Indexed by the next LOOKUP_BITS bits: (code length << 8) | symbol, 0 when the
    /// code is longer than LOOKUP_BITS.
    lookup: Vec<u16>,
    /// For codes longer than the lookup: the largest code of each length (or -1), the
    /// index of its first value, and the first code of each length.
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
}

impl Table {
    pub(crate) fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Table, LjpegError> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != values.len() || total > 256 {
            return Err(LjpegError::Corrupt(
                "a Huffman table's counts and values differ".into(),
            ));
        }
        let mut lookup = vec![0u16; 1 << LOOKUP_BITS];
        let mut maxcode = [-1i32; 18];
        let mut valptr = [0i32; 17];
        let mut mincode = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = counts[len as usize - 1] as usize;
            valptr[len as usize] = k as i32;
            mincode[len as usize] = code as i32;
            for _ in 0..n {
                if code >= (1 << len) {
                    return Err(LjpegError::Corrupt(
                        "a Huffman table has too many codes".into(),
                    ));
                }
                if len <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len;
                    let first = (code << shift) as usize;
                    for e in &mut lookup[first..first + (1 << shift)] {
                        *e = ((len as u16) << 8) | values[k] as u16;
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                maxcode[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Table {
            lookup,
            maxcode,
            valptr,
            mincode,
            values,
        })
    }
}

/// The entropy-coded bits, with byte stuffing (FF 00) removed; at a marker, zeros.
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
    /// Zero bits fed in after the scan's data ended (at a marker or the end).
    fed: u32,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Bits<'a> {
        Bits {
            data,
            pos: 0,
            buf: 0,
            count: 0,
            fed: 0,
        }
    }

    /// Whether bits were read past the scan's data (the stream was cut short).
    pub(crate) fn overran(&self) -> bool {
        self.fed > self.count
    }

    /// At a restart interval's end: drops the bits left in the byte, skips to the
    /// next RSTn marker and past it (ISO 10918-1 F.2.2.5).
    pub(crate) fn restart(&mut self) -> Result<(), LjpegError> {
        self.buf = 0;
        self.count = 0;
        self.fed = 0;
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                self.pos += 2;
                return Ok(());
            }
            self.pos += 1;
        }
        Err(LjpegError::Corrupt(
            "a restart marker is missing where the restart interval ends".into(),
        ))
    }

    /// One Huffman-coded symbol.
    #[inline(always)]
    pub(crate) fn symbol(&mut self, t: &Table) -> Result<u8, LjpegError> {
        self.refill();
        let e = t.lookup[self.peek(LOOKUP_BITS) as usize];
        if e != 0 {
            self.consume((e >> 8) as u32);
            Ok((e & 0xFF) as u8)
        } else {
            self.slow_symbol(t)
        }
    }

    /// The `s` bits that follow a category, as a signed value (ISO 10918-1 F.2.2.1,
    /// EXTEND); `s` from 1 to 15.
    #[inline(always)]
    pub(crate) fn extend(&mut self, s: u32) -> i32 {
        self.refill();
        let v = self.peek(s) as i32;
        self.consume(s);
        if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    #[inline(always)]
    fn refill(&mut self) {
        while self.count <= 56 {
            let byte = match self.data.get(self.pos) {
                Some(&0xFF) => {
                    if self.data.get(self.pos + 1) == Some(&0x00) {
                        self.pos += 2;
                        0xFF
                    } else {
                        // A marker: the scan is over, feed zeros.
                        self.fed = self.fed.saturating_add(8);
                        0
                    }
                }
                Some(&b) => {
                    self.pos += 1;
                    b
                }
                None => {
                    self.fed = self.fed.saturating_add(8);
                    0
                }
            };
            self.buf |= (byte as u64) << (56 - self.count);
            self.count += 8;
        }
    }

    #[inline(always)]
    fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    /// One difference: its Huffman-coded category, then that many bits (ISO 10918-1
    /// H.1.2.2; category 16 is 32768 with no bits).
    #[inline(always)]
    fn difference(&mut self, t: &Table) -> Result<i32, LjpegError> {
        self.refill();
        let e = t.lookup[self.peek(LOOKUP_BITS) as usize];
        let ssss = if e != 0 {
            self.consume((e >> 8) as u32);
            (e & 0xFF) as u32
        } else {
            self.slow_symbol(t)? as u32
        };
        match ssss {
            0 => Ok(0),
            1..=15 => {
                let v = self.peek(ssss) as i32;
                self.consume(ssss);
                Ok(if v < 1 << (ssss - 1) {
                    v - (1 << ssss) + 1
                } else {
                    v
                })
            }
            16 => Ok(32768),
            _ => Err(LjpegError::Corrupt(format!(
                "difference category {ssss} (at most 16)"
            ))),
        }
    }

    /// A code longer than the lookup (ISO 10918-1 F.2.2.3, DECODE).
    fn slow_symbol(&mut self, t: &Table) -> Result<u8, LjpegError> {
        let mut len = LOOKUP_BITS + 1;
        while len <= 16 {
            let code = self.peek(len) as i32;
            if code <= t.maxcode[len as usize] {
                self.consume(len);
                let i = t.valptr[len as usize] + code - t.mincode[len as usize];
                return t
                    .values
                    .get(i as usize)
                    .copied()
                    .ok_or_else(|| LjpegError::Corrupt("a Huffman code without a value".into()));
            }
            len += 1;
        }
        Err(LjpegError::Corrupt(
            "a bit pattern that is no Huffman code".into(),
        ))
    }
}

pub(crate) fn be16(b: &[u8], i: usize) -> Result<usize, LjpegError> {
    match (b.get(i), b.get(i + 1)) {
        (Some(&h), Some(&l)) => Ok(((h as usize) << 8) | l as usize),
        _ => Err(LjpegError::Corrupt(
            "the stream ends inside a marker segment".into(),
        )),
    }
}

/// Decodes a whole lossless JPEG stream (the concatenated fragments of one frame).
/// `max_samples` bounds the output (Rows × Columns of the instance).
pub fn decode(data: &[u8], max_samples: usize) -> Result<Frame, LjpegError> {
    let unsupported = |m: &str| Err(LjpegError::Unsupported(m.into()));
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err(LjpegError::Corrupt("no SOI marker".into()));
    }
    let mut tables: [Option<Table>; 4] = [None, None, None, None];
    let mut frame: Option<(u8, usize, usize, u8)> = None; // precision, rows, columns, id
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
            .ok_or_else(|| LjpegError::Corrupt("the stream ends before its scan".into()))?;
        if matches!(marker, 0xD0..=0xD7 | 0x01) {
            i += 2;
            continue;
        }
        let len = be16(data, i + 2)?;
        let seg = data
            .get(i + 4..i + 2 + len)
            .ok_or_else(|| LjpegError::Corrupt("a marker segment runs past the end".into()))?;
        match marker {
            0xC4 => {
                let mut s = seg;
                while !s.is_empty() {
                    if s.len() < 17 {
                        return Err(LjpegError::Corrupt("a cut Huffman table".into()));
                    }
                    let (class, id) = (s[0] >> 4, (s[0] & 0x0F) as usize);
                    let mut counts = [0u8; 16];
                    counts.copy_from_slice(&s[1..17]);
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    let values = s
                        .get(17..17 + n)
                        .ok_or_else(|| LjpegError::Corrupt("a cut Huffman table".into()))?
                        .to_vec();
                    if class == 0 && id < 4 {
                        tables[id] = Some(Table::new(&counts, values)?);
                    }
                    s = &s[17 + n..];
                }
            }
            0xC3 => {
                if seg.len() < 6 {
                    return Err(LjpegError::Corrupt("a cut frame header".into()));
                }
                let precision = seg[0];
                let (rows, columns) = (be16(seg, 1)?, be16(seg, 3)?);
                if seg[5] != 1 {
                    return unsupported("more than one component");
                }
                if !(2..=16).contains(&precision) {
                    return Err(LjpegError::Corrupt(format!("sample precision {precision}")));
                }
                if rows == 0 {
                    return unsupported("the number of lines comes in a DNL marker");
                }
                if rows * columns > max_samples || columns == 0 {
                    return Err(LjpegError::Corrupt(format!(
                        "a frame of {rows} x {columns} (at most {max_samples} samples)"
                    )));
                }
                let id = *seg.get(6).unwrap_or(&0);
                frame = Some((precision, rows, columns, id));
            }
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return unsupported("not a lossless Huffman frame (SOF3)");
            }
            // DRI: a restart interval of 0 means none.
            0xDD if be16(seg, 0) != Ok(0) => {
                return unsupported("restart intervals");
            }
            0xDA => {
                let Some((precision, rows, columns, _)) = frame else {
                    return Err(LjpegError::Corrupt("a scan before the frame header".into()));
                };
                if seg.len() < 6 || seg[0] != 1 {
                    return unsupported("a scan of several components");
                }
                let table = tables[(seg[2] >> 4) as usize & 3].as_ref().ok_or_else(|| {
                    LjpegError::Corrupt("the scan's Huffman table is not defined".into())
                })?;
                let predictor = seg[3];
                let point_transform = seg[5] & 0x0F;
                if !(1..=7).contains(&predictor) {
                    return Err(LjpegError::Corrupt(format!("predictor {predictor}")));
                }
                if point_transform >= precision {
                    return Err(LjpegError::Corrupt(format!(
                        "point transform {point_transform}"
                    )));
                }
                let mut bits = Bits {
                    data: &data[i + 2 + len..],
                    pos: 0,
                    buf: 0,
                    count: 0,
                    fed: 0,
                };
                let samples = scan(
                    &mut bits,
                    table,
                    rows,
                    columns,
                    precision,
                    predictor,
                    point_transform,
                )?;
                return Ok(Frame {
                    rows,
                    columns,
                    precision,
                    samples,
                });
            }
            0xD9 => return Err(LjpegError::Corrupt("EOI before any scan".into())),
            _ => {}
        }
        i += 2 + len;
    }
}

/// The samples of one scan (ISO 10918-1 H.1.2.1: the first row predicted from the
/// left, the first column from above, the rest by the selected predictor; values
/// modulo 2^16, then shifted left by the point transform).
fn scan(
    bits: &mut Bits<'_>,
    table: &Table,
    rows: usize,
    columns: usize,
    precision: u8,
    predictor: u8,
    pt: u8,
) -> Result<Vec<u16>, LjpegError> {
    let mut out = vec![0u16; rows * columns];
    let initial = 1i32 << (precision - pt - 1);
    // The first row.
    let mut left = initial;
    for s in out[..columns].iter_mut() {
        left = (left + bits.difference(table)?) & 0xFFFF;
        *s = left as u16;
    }
    for r in 1..rows {
        let (done, rest) = out.split_at_mut(r * columns);
        let above = &done[(r - 1) * columns..];
        let row = &mut rest[..columns];
        let mut ra = (above[0] as i32 + bits.difference(table)?) & 0xFFFF;
        row[0] = ra as u16;
        macro_rules! predict {
            ($px:expr) => {
                for c in 1..columns {
                    let rb = above[c] as i32;
                    let rc = above[c - 1] as i32;
                    #[allow(clippy::redundant_closure_call)]
                    let px: i32 = ($px)(ra, rb, rc);
                    ra = (px + bits.difference(table)?) & 0xFFFF;
                    row[c] = ra as u16;
                }
            };
        }
        match predictor {
            1 => predict!(|a, _b, _c| a),
            2 => predict!(|_a, b, _c| b),
            3 => predict!(|_a, _b, c| c),
            4 => predict!(|a, b, c| a + b - c),
            5 => predict!(|a, b, c| a + ((b - c) >> 1)),
            6 => predict!(|a, b, c| b + ((a - c) >> 1)),
            _ => predict!(|a, b, _c| (a + b) >> 1),
        }
    }
    // Bits read past the scan's data: the stream was cut short.
    if bits.fed > bits.count {
        return Err(LjpegError::Corrupt(format!(
            "the scan's data ends before its last sample ({} bits missing)",
            bits.fed - bits.count
        )));
    }
    if pt > 0 {
        for s in &mut out {
            *s <<= pt;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made stream: 2 x 3 samples, predictor 1, 8 bits, a table of two codes
    /// (0 -> category 0, 10 -> category 1... ) written bit by bit.
    fn stream(predictor: u8, bits: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8];
        // DHT: class 0 id 0; one code of length 1 (category 0), one of length 2 (category 2)
        let mut counts = [0u8; 16];
        counts[0] = 1;
        counts[1] = 1;
        s.extend_from_slice(&[0xFF, 0xC4, 0, 2 + 17 + 2, 0x00]);
        s.extend_from_slice(&counts);
        s.extend_from_slice(&[0, 2]);
        s.extend_from_slice(&[0xFF, 0xC3, 0, 11, 8, 0, 2, 0, 3, 1, 1, 0x11, 0]);
        s.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0x00, predictor, 0, 0]);
        s.extend_from_slice(bits);
        s.extend_from_slice(&[0xFF, 0xD9]);
        s
    }

    #[test]
    fn a_hand_made_stream_decodes() {
        // Codes: "0" = diff 0, "10" + 2 bits = category 2 (11 -> +3, 00 -> -3).
        // Six samples: +3, 0, -3 | 0, +3, 0  (bits: 1011 0 1000 | 0 1011 0)
        // = 1011_0100 0010_1100 + padding ones
        let s = stream(1, &[0b1011_0100, 0b0010_1101, 0xFF, 0x00]);
        let f = decode(&s, 6).unwrap();
        // first row from 128: 131, 131, 128; second row first from above: 131, then left
        assert_eq!(f.samples, vec![131, 131, 128, 131, 134, 134]);
        assert_eq!(
            decode(&s, 5),
            Err(LjpegError::Corrupt(
                "a frame of 2 x 3 (at most 5 samples)".into()
            ))
        );
    }

    #[test]
    fn what_it_does_not_handle_is_named() {
        let mut s = stream(1, &[0]);
        s[2 + 2 + 2 + 17 + 2 + 1] = 0xC1; // SOF3 -> SOF1
        assert!(matches!(decode(&s, 6), Err(LjpegError::Unsupported(_))));
        assert_eq!(
            decode(&[1, 2, 3], 6),
            Err(LjpegError::Corrupt("no SOI marker".into()))
        );
        // Every cut of a valid stream is an error or pixels, never a panic.
        let s = stream(4, &[0b1011_0100, 0b0010_1101]);
        for n in 0..s.len() {
            let _ = decode(&s[..n], 6);
        }
    }
}
