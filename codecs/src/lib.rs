//! Decoders of the two lossless syntaxes most mammography archives hold, written for
//! speed on one core: lossless JPEG (process 14, [`ljpeg`]) and DICOM RLE Lossless
//! ([`rle`]), both for one-component images of up to 16 bits. tamiz uses them in
//! place of dicom-rs's decoders for these syntaxes and falls back to dicom-rs for
//! what they do not handle.

pub mod ljpeg;
pub mod rle;
