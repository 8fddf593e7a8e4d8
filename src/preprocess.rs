//! Display image → model input tensor, exactly as the model card's `[preprocess]` says.
//!
//! The same function feeds training (`tamiz dataset`), evaluation and the worker, so
//! the model never sees pixels prepared differently from the ones it was trained on.
//! Steps: orient (chest wall on the left, head up: from Patient Orientation where the
//! image says, else the denser half is the chest wall), crop to the breast, pad to the input aspect
//! ratio, resize with a triangle filter whose support widens with the shrink factor
//! (so it averages: small bright calcifications are dimmed, not dropped), normalize.
//!
//! A full-field mammogram is 13 megapixels, so this is written for speed: one pass
//! over the image gathers everything orientation and cropping need, and the flip, the
//! crop and the padding are index arithmetic inside the resize, never copies.

use serde::Deserialize;

use crate::dicom::pixels::GrayImage;

/// The `[preprocess]` table of a model card.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// Model input height and width in pixels.
    pub height: usize,
    pub width: usize,
    /// Display value above which a pixel counts as breast when cropping.
    pub crop_threshold: f32,
    /// A row or column belongs to the breast when at least this share of it is
    /// above the threshold (ignores isolated bright noise, labels, markers).
    pub crop_min_fraction: f32,
    /// `(value - mean) / std` after resizing.
    pub mean: f32,
    pub std: f32,
    /// How views are rendered to display values: as the file says, or canonically.
    #[serde(default)]
    pub rendering: crate::dicom::pixels::Rendering,
}

/// How a view lies, from Patient Orientation (0020,0020) where the image says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Orientation {
    /// The chest wall is on the right, so the view is mirrored; `None` when the image
    /// does not say (the denser half is taken for the chest wall).
    pub chest_wall_right: Option<bool>,
    /// The columns run toward the head (an MLO stored upside down): turned over.
    pub upside_down: bool,
}

impl Orientation {
    /// Reads Patient Orientation: the direction of the rows, then of the columns
    /// (PS3.3 C.7.6.1.1.1), each from A, P, R, L, H, F. Rows toward A(nterior) put the
    /// chest wall on the left, toward P(osterior) on the right; columns toward H(ead)
    /// mean the image is upside down. Anything else (CBIS-DDSM writes "CC" or "MLO"
    /// there) says nothing.
    pub fn from_patient_orientation(value: Option<&str>) -> Orientation {
        let Some((row, column)) = value.and_then(|v| v.split_once('\\')) else {
            return Orientation::default();
        };
        let (row, column) = (
            row.trim().to_ascii_uppercase(),
            column.trim().to_ascii_uppercase(),
        );
        let chest_wall_right = match row.chars().next() {
            Some('A') => Some(false),
            Some('P') => Some(true),
            _ => None,
        };
        Orientation {
            chest_wall_right,
            upside_down: column.starts_with('H'),
        }
    }

    /// The orientation a DICOM image states.
    pub fn of(obj: &dicom_object::DefaultDicomObject) -> Orientation {
        let value = obj
            .element(dicom_dictionary_std::tags::PATIENT_ORIENTATION)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|v| v.into_owned());
        Orientation::from_patient_orientation(value.as_deref())
    }
}

/// Per-column intensity sums and per-row/column counts of pixels above the threshold.
struct Profile {
    col_sum: Vec<f32>,
    col_count: Vec<u32>,
    row_count: Vec<u32>,
}

fn profile(img: &GrayImage, threshold: f32) -> Profile {
    let w = img.width;
    let mut p = Profile {
        col_sum: vec![0.0; w],
        col_count: vec![0; w],
        row_count: vec![0; img.height],
    };
    for (row_count, row) in p.row_count.iter_mut().zip(img.data.chunks_exact(w.max(1))) {
        let mut n = 0u32;
        for ((&v, sum), count) in row
            .iter()
            .zip(p.col_sum.iter_mut())
            .zip(p.col_count.iter_mut())
        {
            *sum += v;
            let above = u32::from(v > threshold);
            *count += above;
            n += above;
        }
        *row_count = n;
    }
    p
}

/// Whether the chest wall (the denser half) is on the right, so the image must be
/// mirrored for every breast to face the same way.
fn chest_wall_right(col_sum: &[f32]) -> bool {
    let w = col_sum.len();
    let left: f64 = col_sum[..w / 2].iter().map(|&v| v as f64).sum();
    let right: f64 = col_sum[w - w / 2..].iter().map(|&v| v as f64).sum();
    right > left
}

/// First and one-past-last index whose count reaches `min_fraction` of `across`.
fn span(counts: &[u32], across: usize, min_fraction: f32) -> Option<(usize, usize)> {
    let need = ((across as f32 * min_fraction).ceil() as u32).max(1);
    let first = counts.iter().position(|&c| c >= need)?;
    let last = counts.iter().rposition(|&c| c >= need)?;
    Some((first, last + 1))
}

/// Triangle-filter taps for resizing `src` samples to `dst`: for each output sample,
/// the first input index and the normalized weights.
fn taps(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = src as f64 / dst as f64;
    let support = scale.max(1.0);
    (0..dst)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale - 0.5;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(src - 1);
            let mut w: Vec<f32> = (lo..=hi)
                .map(|i| (1.0 - ((i as f64 - center).abs() / support)).max(0.0) as f32)
                .collect();
            // Drop zero-weight taps at the ends.
            let mut lo = lo;
            while w.len() > 1 && w[0] == 0.0 {
                w.remove(0);
                lo += 1;
            }
            while w.len() > 1 && w[w.len() - 1] == 0.0 {
                w.pop();
            }
            let total: f32 = w.iter().sum();
            if total > 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (lo, w)
        })
        .collect()
}

/// Prepares one view for the model: returns `height * width` normalized values.
/// The orientation is the denser-half guess; see [`preprocess_oriented`].
pub fn preprocess(img: GrayImage, spec: &PreprocessSpec) -> Vec<f32> {
    preprocess_oriented(img, spec, Orientation::default())
}

/// [`preprocess`] with the orientation the image states: its mirror and turn-over
/// are applied as stated; only an unstated side falls back to the denser half.
pub fn preprocess_oriented(
    img: GrayImage,
    spec: &PreprocessSpec,
    orientation: Orientation,
) -> Vec<f32> {
    let (w, h) = (img.width, img.height);
    if w == 0 || h == 0 {
        return vec![(0.0 - spec.mean) / spec.std; spec.height * spec.width];
    }
    let mut p = profile(&img, spec.crop_threshold);
    let flip = orientation
        .chest_wall_right
        .unwrap_or_else(|| chest_wall_right(&p.col_sum));
    if flip {
        p.col_count.reverse();
    }
    let upside_down = orientation.upside_down;
    if upside_down {
        p.row_count.reverse();
    }
    // Crop box in oriented coordinates; the whole image when nothing passes.
    let (x0, y0, x1, y1) = match (
        span(&p.col_count, h, spec.crop_min_fraction),
        span(&p.row_count, w, spec.crop_min_fraction),
    ) {
        (Some((x0, x1)), Some((y0, y1))) => (x0, y0, x1, y1),
        _ => (0, 0, w, h),
    };
    let (cw, ch) = (x1 - x0, y1 - y0);

    // Pad the crop to the input's aspect ratio: to the right (away from the chest
    // wall), or evenly above and below.
    let target_aspect = spec.width as f64 / spec.height as f64;
    let (pw, ph) = if (cw as f64 / ch as f64) < target_aspect {
        (((ch as f64 * target_aspect).round() as usize).max(cw), ch)
    } else {
        (cw, ((cw as f64 / target_aspect).round() as usize).max(ch))
    };
    let pad_top = (ph - ch) / 2;

    // Horizontal pass over the crop's rows (padding columns are zeros), then vertical.
    let xt = taps(pw, spec.width);
    let mut horizontal = vec![0.0f32; ch * spec.width];
    let mut row_buf = vec![0.0f32; pw];
    for y in 0..ch {
        let sy = if upside_down {
            h - 1 - (y0 + y)
        } else {
            y0 + y
        };
        let src = &img.data[sy * w..(sy + 1) * w];
        if flip {
            for (x, v) in row_buf[..cw].iter_mut().enumerate() {
                *v = src[w - 1 - (x0 + x)];
            }
        } else {
            row_buf[..cw].copy_from_slice(&src[x0..x1]);
        }
        let out = &mut horizontal[y * spec.width..(y + 1) * spec.width];
        for (o, (lo, weights)) in out.iter_mut().zip(&xt) {
            *o = row_buf[*lo..*lo + weights.len()]
                .iter()
                .zip(weights)
                .map(|(a, b)| a * b)
                .sum();
        }
    }
    let yt = taps(ph, spec.height);
    let mut out = vec![0.0f32; spec.height * spec.width];
    for (oy, (lo, weights)) in yt.iter().enumerate() {
        let dst = &mut out[oy * spec.width..(oy + 1) * spec.width];
        for (i, wgt) in weights.iter().enumerate() {
            let py = lo + i;
            if py < pad_top || py >= pad_top + ch {
                continue; // padding rows are zeros
            }
            let src = &horizontal[(py - pad_top) * spec.width..(py - pad_top + 1) * spec.width];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += wgt * s;
            }
        }
    }
    let inv_std = 1.0 / spec.std;
    out.iter_mut().for_each(|v| *v = (*v - spec.mean) * inv_std);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> GrayImage {
        let mut d = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                d.push(f(x, y));
            }
        }
        GrayImage::new(w, h, d)
    }

    fn spec(height: usize, width: usize, threshold: f32) -> PreprocessSpec {
        PreprocessSpec {
            height,
            width,
            crop_threshold: threshold,
            crop_min_fraction: 0.1,
            mean: 0.0,
            std: 1.0,
            rendering: Default::default(),
        }
    }

    #[test]
    fn patient_orientation_is_read_and_only_directions_count() {
        let o = |v: &str| Orientation::from_patient_orientation(Some(v));
        assert_eq!(
            o("A\\FR"),
            Orientation {
                chest_wall_right: Some(false),
                upside_down: false
            }
        );
        assert_eq!(
            o("P\\FL"),
            Orientation {
                chest_wall_right: Some(true),
                upside_down: false
            }
        );
        assert_eq!(
            o("P\\H"),
            Orientation {
                chest_wall_right: Some(true),
                upside_down: true
            }
        );
        assert_eq!(
            o("a\\hl"),
            Orientation {
                chest_wall_right: Some(false),
                upside_down: true
            }
        );
        for says_nothing in ["MLO", "CC", "", "R\\F"] {
            assert_eq!(o(says_nothing).chest_wall_right, None, "{says_nothing}");
        }
        assert_eq!(
            Orientation::from_patient_orientation(None),
            Orientation::default()
        );
    }

    #[test]
    fn a_stated_orientation_overrides_the_guess_and_turns_views_over() {
        let s = spec(16, 8, 0.1);
        // A breast on the right (the guess mirrors it), brighter towards the bottom.
        let breast = |x: usize, y: usize| {
            if x >= 4 {
                0.2 + y as f32 / 40.0 + x as f32 / 20.0
            } else {
                0.0
            }
        };
        let guessed = preprocess(img(8, 16, breast), &s);
        // The image says its rows run toward posterior: the same mirror.
        let stated = preprocess_oriented(
            img(8, 16, breast),
            &s,
            Orientation {
                chest_wall_right: Some(true),
                upside_down: false,
            },
        );
        assert_eq!(guessed, stated);
        // Stored upside down and said so: the same input as the upright image.
        let upside_down = |x: usize, y: usize| breast(x, 15 - y);
        let turned = preprocess_oriented(
            img(8, 16, upside_down),
            &s,
            Orientation {
                chest_wall_right: None,
                upside_down: true,
            },
        );
        assert_eq!(guessed, turned);
        // A stated side wins over the denser half: not mirrored.
        let unmirrored = preprocess_oriented(
            img(8, 16, breast),
            &s,
            Orientation {
                chest_wall_right: Some(false),
                upside_down: false,
            },
        );
        assert_ne!(guessed, unmirrored);
    }

    #[test]
    fn orientation_from_the_denser_half() {
        assert!(chest_wall_right(&[0.0, 0.2, 0.9, 1.0]));
        assert!(!chest_wall_right(&[1.0, 0.9, 0.2, 0.0]));
    }

    #[test]
    fn crop_span_ignores_isolated_noise() {
        // counts per column: breast in 0..4 (6 rows each), one noisy pixel at 9
        let counts = [6, 6, 6, 6, 0, 0, 0, 0, 0, 1];
        assert_eq!(span(&counts, 10, 0.15), Some((0, 4)));
        assert_eq!(span(&[0, 0], 10, 0.1), None);
    }

    #[test]
    fn triangle_taps_average_when_shrinking() {
        // 4 -> 2: support 2 around centres 0.5 and 2.5; weights 1 - |d|/2, clipped at
        // the image edge and normalized: output 1 = (0.25, 0.75, 0.75) / 1.75 of inputs 1..4
        let t = taps(4, 2);
        let (lo, w) = &t[1];
        assert_eq!((*lo, w.len()), (1, 3));
        let expect = [1.0 / 7.0, 3.0 / 7.0, 3.0 / 7.0];
        assert!(
            w.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6),
            "{w:?}"
        );
        assert_eq!(t[0].0, 0);
        assert!((t[0].1.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // identity size: one tap of weight 1
        assert!(taps(3, 3)
            .iter()
            .all(|(_, w)| w.iter().filter(|&&v| v > 0.0).count() == 1));
    }

    #[test]
    fn right_facing_breast_is_mirrored_cropped_and_normalized() {
        // 8x8, right half bright (chest wall right): after the flip the breast is x 0..4
        // (4 wide, 8 tall) which has the 4x2 target's aspect: every output is bright.
        let i = img(8, 8, |x, _| if x >= 4 { 1.0 } else { 0.0 });
        let s = PreprocessSpec {
            mean: 0.5,
            std: 0.25,
            ..spec(4, 2, 0.5)
        };
        let t = preprocess(i, &s);
        assert_eq!(t.len(), 8);
        for v in t {
            assert!((v - 2.0).abs() < 1e-5, "(1.0 - 0.5) / 0.25 = 2, got {v}");
        }
    }

    #[test]
    fn mirrored_images_give_the_same_input() {
        let a = img(12, 16, |x, y| {
            if x < 6 {
                0.5 + 0.01 * (x + y) as f32
            } else {
                0.0
            }
        });
        let b = img(12, 16, |x, y| {
            if x >= 6 {
                0.5 + 0.01 * (11 - x + y) as f32
            } else {
                0.0
            }
        });
        assert_eq!(
            preprocess(a, &spec(8, 6, 0.1)),
            preprocess(b, &spec(8, 6, 0.1))
        );
    }

    #[test]
    fn wide_crop_is_padded_above_and_below_not_stretched() {
        // breast 4 wide x 2 tall in the top rows; target 4x4: the crop is centred
        // vertically, so the top and bottom output rows are background.
        let i = img(4, 6, |_, y| if y < 2 { 1.0 } else { 0.0 });
        let t = preprocess(i, &spec(4, 4, 0.5));
        assert!(t[..4].iter().all(|&v| v < 0.01), "{t:?}");
        assert!(t[12..].iter().all(|&v| v < 0.01), "{t:?}");
        assert!(t[4..12].iter().all(|&v| v > 0.99), "{t:?}");
    }
}
