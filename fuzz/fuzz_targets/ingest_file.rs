//! One uploaded file through everything ingest checks before storing it: the
//! structural guard (depth, lengths, inflate cap, fragment table), dicom-rs's header
//! parse, attribute validation and the Pixel Data layout check. Any input must give
//! `Ok` or a refusal; a panic, an abort (stack overflow) or runaway memory is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tamiz::config::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_instance_bytes: 1 << 20,
        ..Limits::default()
    };
    if let Err(e) = tamiz::dicom::inspect_bytes(data, &limits) {
        // Every refusal names its problem.
        assert!(!e.to_string().is_empty());
    }
});
