//! Display image → model input tensor, exactly as the model card's `[preprocess]` says.
//!
//! The same function feeds training (`tamiz dataset`), evaluation and the worker, so
//! the model never sees pixels prepared differently from the ones it was trained on.
//! Steps: orient (chest wall on the left), crop to the breast, pad to the input aspect
//! ratio, resize (triangle filter, which averages when shrinking so small bright
//! calcifications are dimmed but not dropped), normalize.

use image::imageops::{resize, FilterType};
use image::{ImageBuffer, Luma};
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
}

/// Mirrors the image left-right when the chest wall (the denser half) is on the right,
/// so every breast faces the same way whatever its laterality or how the modality
/// stored it. Returns whether it flipped.
pub fn orient_chest_wall_left(img: &mut GrayImage) -> bool {
    let (w, h) = (img.width, img.height);
    if w < 2 {
        return false;
    }
    let (mut left, mut right) = (0.0f64, 0.0f64);
    for y in 0..h {
        let row = &img.data[y * w..(y + 1) * w];
        left += row[..w / 2].iter().map(|&v| v as f64).sum::<f64>();
        right += row[w - w / 2..].iter().map(|&v| v as f64).sum::<f64>();
    }
    if right > left {
        for y in 0..h {
            img.data[y * w..(y + 1) * w].reverse();
        }
        true
    } else {
        false
    }
}

/// Bounding box `(x0, y0, x1, y1)` (exclusive ends) of the breast; the whole image when
/// nothing passes the threshold.
pub fn breast_bbox(
    img: &GrayImage,
    threshold: f32,
    min_fraction: f32,
) -> (usize, usize, usize, usize) {
    let (w, h) = (img.width, img.height);
    let mut cols = vec![0u32; w];
    let mut rows = vec![0u32; h];
    for (row_count, row) in rows.iter_mut().zip(img.data.chunks_exact(w.max(1))) {
        for (x, &v) in row.iter().enumerate() {
            if v > threshold {
                cols[x] += 1;
                *row_count += 1;
            }
        }
    }
    let span = |counts: &[u32], len_other: usize| {
        let need = ((len_other as f32 * min_fraction).ceil() as u32).max(1);
        let first = counts.iter().position(|&c| c >= need);
        let last = counts.iter().rposition(|&c| c >= need);
        match (first, last) {
            (Some(a), Some(b)) => Some((a, b + 1)),
            _ => None,
        }
    };
    match (span(&cols, h), span(&rows, w)) {
        (Some((x0, x1)), Some((y0, y1))) => (x0, y0, x1, y1),
        _ => (0, 0, w, h),
    }
}

/// Prepares one view for the model: returns `height * width` normalized values.
pub fn preprocess(mut img: GrayImage, spec: &PreprocessSpec) -> Vec<f32> {
    orient_chest_wall_left(&mut img);
    let (x0, y0, x1, y1) = breast_bbox(&img, spec.crop_threshold, spec.crop_min_fraction);
    let (cw, ch) = (x1 - x0, y1 - y0);

    // Pad the crop to the input's aspect ratio: to the right (away from the chest
    // wall) or below, with background.
    let target_aspect = spec.width as f64 / spec.height as f64;
    let (pw, ph) = if (cw as f64 / ch as f64) < target_aspect {
        (((ch as f64 * target_aspect).round() as usize).max(cw), ch)
    } else {
        (cw, ((cw as f64 / target_aspect).round() as usize).max(ch))
    };
    let pad_top = (ph - ch) / 2;
    let mut padded = vec![0.0f32; pw * ph];
    for y in 0..ch {
        let src = &img.data[(y0 + y) * img.width + x0..(y0 + y) * img.width + x1];
        padded[(pad_top + y) * pw..(pad_top + y) * pw + cw].copy_from_slice(src);
    }
    let buf: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(pw as u32, ph as u32, padded)
        .expect("buffer sized from its dimensions");
    let out = resize(
        &buf,
        spec.width as u32,
        spec.height as u32,
        FilterType::Triangle,
    );
    let inv_std = 1.0 / spec.std;
    out.into_raw()
        .into_iter()
        .map(|v| (v - spec.mean) * inv_std)
        .collect()
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

    #[test]
    fn flips_when_chest_wall_is_right() {
        let mut a = img(4, 2, |x, _| x as f32 / 3.0); // bright on the right
        assert!(orient_chest_wall_left(&mut a));
        assert_eq!(
            a.data,
            vec![
                1.0,
                2.0 / 3.0,
                1.0 / 3.0,
                0.0,
                1.0,
                2.0 / 3.0,
                1.0 / 3.0,
                0.0
            ]
        );
        // already facing left: untouched
        let mut b = a.clone();
        assert!(!orient_chest_wall_left(&mut b));
        assert_eq!(a, b);
    }

    #[test]
    fn bbox_ignores_isolated_noise() {
        // 10x10, breast block at x 0..4, y 2..8; one bright noise pixel at (9, 9).
        let i = img(10, 10, |x, y| {
            if (x < 4 && (2..8).contains(&y)) || (x == 9 && y == 9) {
                0.8
            } else {
                0.0
            }
        });
        assert_eq!(breast_bbox(&i, 0.1, 0.15), (0, 2, 4, 8));
        // with no threshold crossing the whole image is kept
        let dark = img(5, 3, |_, _| 0.0);
        assert_eq!(breast_bbox(&dark, 0.1, 0.0), (0, 0, 5, 3));
    }

    #[test]
    fn crop_pad_resize_normalize() {
        // An 8x8 image whose right half is bright (chest wall right): after the flip the
        // breast is x 0..4 (4 wide, 8 tall). Target 4x2 (h x w) has the same aspect, so
        // the 4x8 crop is halved: every output pixel is bright.
        let i = img(8, 8, |x, _| if x >= 4 { 1.0 } else { 0.0 });
        let spec = PreprocessSpec {
            height: 4,
            width: 2,
            crop_threshold: 0.5,
            crop_min_fraction: 0.1,
            mean: 0.5,
            std: 0.25,
        };
        let t = preprocess(i, &spec);
        assert_eq!(t.len(), 8);
        for v in t {
            assert!((v - 2.0).abs() < 1e-5, "(1.0 - 0.5) / 0.25 = 2, got {v}");
        }
    }

    #[test]
    fn wide_crop_is_padded_below_not_stretched() {
        // breast 4 wide x 2 tall in the top rows; target 4x4: padded to 4x4 with the
        // crop centred vertically, so the top and bottom output rows are background.
        let i = img(4, 6, |_, y| if y < 2 { 1.0 } else { 0.0 });
        let spec = PreprocessSpec {
            height: 4,
            width: 4,
            crop_threshold: 0.5,
            crop_min_fraction: 0.1,
            mean: 0.0,
            std: 1.0,
        };
        let t = preprocess(i, &spec);
        assert!(t[..4].iter().all(|&v| v < 0.01), "{t:?}");
        assert!(t[12..].iter().all(|&v| v < 0.01), "{t:?}");
        assert!(t[4..12].iter().all(|&v| v > 0.99), "{t:?}");
    }
}
