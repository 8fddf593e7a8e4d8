//! Decoders of the JPEG and RLE forms mammography archives hold, for one-component
//! images: lossless JPEG (process 14, [`ljpeg`]) and DICOM RLE Lossless ([`rle`]), up
//! to 16 bits and written for speed on one core, and sequential DCT JPEG of 8 or 12
//! bits ([`jpeg12`], JPEG Extended, which dicom-rs's decoder refuses at 12 bits).
//! tamiz uses them in place of dicom-rs's decoders for these syntaxes and falls back
//! to dicom-rs for what they do not handle.

pub mod jpeg12;
pub mod ljpeg;
pub mod rle;
