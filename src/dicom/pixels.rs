//! From stored samples to display values, in tamiz's own code.
//!
//! dicom-rs decodes the transfer syntax; everything after that is done here because
//! dicom-rs ignores the VOI LUT Sequence, exposes only the first window, and never
//! inverts MONOCHROME1. The chain is the grayscale pipeline of PS3.3 C.11:
//! stored value → Modality LUT (rescale) → VOI LUT (table, or window LINEAR /
//! LINEAR_EXACT / SIGMOID) → presentation (MONOCHROME1 inverted), giving values in
//! [0, 1] where 1 is brightest (densest tissue).

use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder, PixelRepresentation, VoiLutFunction};

/// A single-channel image of display values in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl GrayImage {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> GrayImage {
        assert_eq!(
            width * height,
            data.len(),
            "image buffer does not match its size"
        );
        GrayImage {
            width,
            height,
            data,
        }
    }
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("pixel data could not be decoded: {0}")]
    Decode(String),
    #[error("the pixel decoder crashed on this instance (corrupt or truncated pixel data)")]
    DecoderPanic,
    #[error("unsupported pixel layout: {0}")]
    Unsupported(String),
}

/// How stored values map to [0, 1] before presentation.
#[derive(Debug, Clone, PartialEq)]
pub enum Voi {
    /// VOI LUT Sequence (0028,3010): first input value, output bit depth, table.
    Table {
        first: i32,
        bits: u8,
        data: Vec<u16>,
    },
    Window {
        center: f64,
        width: f64,
        function: WindowFunction,
    },
    /// No VOI in the file: stretch the actual value range.
    MinMax,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// Everything needed to turn stored values into display values.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayscalePipeline {
    pub bits_stored: u16,
    pub signed: bool,
    pub slope: f64,
    pub intercept: f64,
    pub voi: Voi,
    pub monochrome1: bool,
}

impl GrayscalePipeline {
    /// Display value for one modality-LUT output value `x`.
    fn voi(&self, x: f64, lo: f64, hi: f64) -> f64 {
        match &self.voi {
            Voi::Table { first, bits, data } => {
                let i = (x.round() as i64 - *first as i64).clamp(0, data.len() as i64 - 1) as usize;
                let max = ((1u32 << (*bits).min(16)) - 1) as f64;
                data[i] as f64 / max
            }
            Voi::Window {
                center,
                width,
                function,
            } => window(x, *center, *width, *function),
            Voi::MinMax => {
                if hi > lo {
                    (x - lo) / (hi - lo)
                } else {
                    0.0
                }
            }
        }
    }

    /// Display value for one stored value; `lo`/`hi` are the image's modality-value
    /// range (used only for [`Voi::MinMax`]).
    pub fn display(&self, stored: i32, lo: f64, hi: f64) -> f32 {
        let x = stored as f64 * self.slope + self.intercept;
        let y = self.voi(x, lo, hi).clamp(0.0, 1.0);
        (if self.monochrome1 { 1.0 - y } else { y }) as f32
    }

    /// Applies the pipeline to stored values through a lookup table over the stored
    /// range (at most 2^16 entries), so a 13-megapixel image costs one table read per
    /// pixel.
    pub fn apply(&self, stored: &[i32], width: usize, height: usize) -> GrayImage {
        self.apply_with(stored.len(), width, height, |i| stored[i])
    }

    /// [`GrayscalePipeline::apply`] over `n` stored values read by `value` (no
    /// intermediate buffer of stored values).
    pub fn apply_with(
        &self,
        n: usize,
        width: usize,
        height: usize,
        value: impl Fn(usize) -> i32,
    ) -> GrayImage {
        if n == 0 {
            return GrayImage::new(width, height, Vec::new());
        }
        let (smin, smax) = (0..n).fold((i32::MAX, i32::MIN), |(a, b), i| {
            let v = value(i);
            (a.min(v), b.max(v))
        });
        let m = |s: i32| s as f64 * self.slope + self.intercept;
        let (lo, hi) = (m(smin).min(m(smax)), m(smin).max(m(smax)));
        let lut: Vec<f32> = (smin..=smax).map(|s| self.display(s, lo, hi)).collect();
        let data = (0..n).map(|i| lut[(value(i) - smin) as usize]).collect();
        GrayImage::new(width, height, data)
    }
}

/// The VOI window functions of PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and
/// C.11.2.1.3.1 (SIGMOID), scaled to an output range of [0, 1].
pub fn window(x: f64, center: f64, width: f64, function: WindowFunction) -> f64 {
    match function {
        WindowFunction::Linear => {
            let w = width.max(1.0);
            if x <= center - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if x > center - 0.5 + (w - 1.0) / 2.0 {
                1.0
            } else {
                (x - (center - 0.5)) / (w - 1.0).max(f64::MIN_POSITIVE) + 0.5
            }
        }
        WindowFunction::LinearExact => {
            let w = width.max(f64::MIN_POSITIVE);
            if x <= center - w / 2.0 {
                0.0
            } else if x > center + w / 2.0 {
                1.0
            } else {
                (x - center) / w + 0.5
            }
        }
        WindowFunction::Sigmoid => {
            1.0 / (1.0 + (-4.0 * (x - center) / width.max(f64::MIN_POSITIVE)).exp())
        }
    }
}

/// Decodes the first frame and applies the grayscale pipeline. A panic inside the
/// decoder (dicom-rs's RLE reader panics on truncated data) becomes an error.
pub fn decode_display(obj: &DefaultDicomObject) -> Result<GrayImage, PixelError> {
    catch_unwind(AssertUnwindSafe(|| {
        let decoded = obj
            .decode_pixel_data()
            .map_err(|e| PixelError::Decode(e.to_string()))?;
        let (pipeline, width, height) = read_pipeline(&decoded)?;
        let n = width * height;
        let data = decoded.data();
        let bits = pipeline.bits_stored;
        let mask: u32 = (1u32 << bits) - 1;
        let sign_bit: u32 = 1u32 << (bits - 1);
        let signed = pipeline.signed;
        // Stored value: masked to Bits Stored, sign-extended when signed.
        let to_value = move |raw: u32| -> i32 {
            let v = raw & mask;
            if signed && v & sign_bit != 0 {
                v as i32 - (1i32 << bits)
            } else {
                v as i32
            }
        };
        let bytes_per = if decoded.bits_allocated() == 8 { 1 } else { 2 };
        if data.len() < n * bytes_per {
            return Err(PixelError::Decode(format!(
                "pixel data holds {} bytes, {width}x{height} needs {}",
                data.len(),
                n * bytes_per
            )));
        }
        Ok(if bytes_per == 1 {
            pipeline.apply_with(n, width, height, |i| to_value(data[i] as u32))
        } else {
            pipeline.apply_with(n, width, height, |i| {
                to_value(u16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as u32)
            })
        })
    }))
    .map_err(|_| PixelError::DecoderPanic)?
}

/// Reads the layout checks and the attributes of the grayscale pipeline.
fn read_pipeline(
    decoded: &DecodedPixelData<'_>,
) -> Result<(GrayscalePipeline, usize, usize), PixelError> {
    if decoded.samples_per_pixel() != 1 {
        return Err(PixelError::Unsupported(format!(
            "{} samples per pixel",
            decoded.samples_per_pixel()
        )));
    }
    match decoded.bits_allocated() {
        8 | 16 => {}
        b => return Err(PixelError::Unsupported(format!("Bits Allocated {b}"))),
    }
    let bits_stored = decoded.bits_stored().clamp(1, decoded.bits_allocated());
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let (slope, intercept) = match decoded.rescale() {
        Ok(r) if !r.is_empty() => (r[0].slope, r[0].intercept),
        _ => (1.0, 0.0),
    };
    let voi = if let Ok(Some(luts)) = decoded.voi_lut_sequence() {
        match luts.first() {
            Some(l) if !l.data.is_empty() => Voi::Table {
                first: l.min_pixel_value,
                bits: l.bits_stored,
                data: l.data.clone(),
            },
            _ => Voi::MinMax,
        }
    } else if let Ok(Some(windows)) = decoded.window() {
        match windows.first() {
            Some(w) if w.width > 0.0 => {
                let function = match decoded.voi_lut_function() {
                    Ok(Some(f)) => match f.first() {
                        Some(VoiLutFunction::Sigmoid) => WindowFunction::Sigmoid,
                        Some(VoiLutFunction::LinearExact) => WindowFunction::LinearExact,
                        _ => WindowFunction::Linear,
                    },
                    _ => WindowFunction::Linear,
                };
                Voi::Window {
                    center: w.center,
                    width: w.width,
                    function,
                }
            }
            _ => Voi::MinMax,
        }
    } else {
        Voi::MinMax
    };
    let monochrome1 = decoded.photometric_interpretation().as_str() == "MONOCHROME1";
    Ok((
        GrayscalePipeline {
            bits_stored,
            signed,
            slope,
            intercept,
            voi,
            monochrome1,
        },
        decoded.columns() as usize,
        decoded.rows() as usize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(voi: Voi, monochrome1: bool) -> GrayscalePipeline {
        GrayscalePipeline {
            bits_stored: 12,
            signed: false,
            slope: 1.0,
            intercept: 0.0,
            voi,
            monochrome1,
        }
    }

    #[test]
    fn linear_window_matches_ps3_3_formula() {
        // center 100, width 11: values <= 94.5 -> 0, > 104.5 -> 1, 99.5 -> 0.5
        let f = WindowFunction::Linear;
        assert_eq!(window(94.0, 100.0, 11.0, f), 0.0);
        assert_eq!(window(105.0, 100.0, 11.0, f), 1.0);
        assert!((window(99.5, 100.0, 11.0, f) - 0.5).abs() < 1e-12);
        assert!((window(102.0, 100.0, 11.0, f) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn linear_exact_and_sigmoid() {
        assert!((window(100.0, 100.0, 10.0, WindowFunction::LinearExact) - 0.5).abs() < 1e-12);
        assert_eq!(window(95.0, 100.0, 10.0, WindowFunction::LinearExact), 0.0);
        assert!((window(100.0, 100.0, 10.0, WindowFunction::Sigmoid) - 0.5).abs() < 1e-12);
        // one width above the center: 1 / (1 + e^-4)
        let y = window(110.0, 100.0, 10.0, WindowFunction::Sigmoid);
        assert!((y - 1.0 / (1.0 + (-4.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn monochrome1_is_inverted() {
        let p = pipeline(
            Voi::Window {
                center: 50.0,
                width: 100.0,
                function: WindowFunction::LinearExact,
            },
            true,
        );
        let img = p.apply(&[0, 50, 100], 3, 1);
        assert_eq!(img.data, vec![1.0, 0.5, 0.0]);
        let p2 = GrayscalePipeline {
            monochrome1: false,
            ..p
        };
        assert_eq!(p2.apply(&[0, 50, 100], 3, 1).data, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn rescale_then_minmax() {
        let p = GrayscalePipeline {
            slope: 2.0,
            intercept: -10.0,
            ..pipeline(Voi::MinMax, false)
        };
        // modality values -10, 0, 10 -> 0, 0.5, 1
        assert_eq!(p.apply(&[0, 5, 10], 3, 1).data, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn voi_lut_table_is_looked_up_and_clamped() {
        let p = pipeline(
            Voi::Table {
                first: 10,
                bits: 8,
                data: vec![0, 51, 255],
            },
            false,
        );
        let img = p.apply(&[5, 10, 11, 12, 40], 5, 1);
        assert_eq!(img.data, vec![0.0, 0.0, 0.2, 1.0, 1.0]);
    }
}
