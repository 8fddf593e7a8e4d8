//! tamiz: a mammography screening pipeline.
//!
//! Imaging centers upload screening mammograms (DICOMweb STOW-RS); each study is
//! validated and stored, triaged by an ONNX model when its four views are in, and
//! placed on the prioritized worklist of a diagnosis center, where radiologists claim
//! and read it; coordinators follow the program against its yearly targets.
//!
//! # Layout
//! - [`config`]: `pipeline.toml`, the deployment's single configuration.
//! - [`dicom`]: structural pre-check, metadata extraction and validation (codestream
//!   frame headers against Rows × Columns included); decoding (JPEG Lossless, JPEG
//!   Extended and RLE by the workspace crate `tamiz-codecs`, the rest by dicom-rs) and stored samples →
//!   display values.
//! - [`ingest`]: one uploaded instance → object store + catalog.
//! - [`inbox`]: files dropped under `inbox/{center}/` in the bucket → ingest, with
//!   receipts under `done/` and refusals under `rejected/`.
//! - [`spool`]: what an upload holds while in flight (admission, temp files, bounds).
//! - [`storage`]: the `ObjectStore` trait, the local-directory store and the S3 store.
//! - [`catalog`]: SQL on SQLite or PostgreSQL: studies, instances, job queue,
//!   worklists, readings, targets.
//! - [`auth`]: API tokens (keyed hashes), passwords (Argon2id) and the checks on
//!   new users.
//! - [`oidc`]: bearer JWTs of a configured OIDC provider (JWKS, issuer, audience).
//! - [`metrics`]: `/metrics` (Prometheus text).
//! - [`views`]: which stored images the model scores, by their DICOM meaning.
//! - [`input_check`]: the checks a view passes before the model sees it.
//! - [`preprocess`]: display image → model tensor, as the model card says.
//! - [`model`]: model card and the ONNX Runtime session thread.
//! - [`triage`]: per-view scores → priority class and due time.
//! - [`routing`]: study → diagnosis center: home, or another institution's center by
//!   projected completion (exchange of services), rebalancing, monthly accounts.
//! - [`drift`]: per imaging center and week against the program (summary, metrics).
//! - [`worker`]: lease → fetch → decode → infer → route → finish; `tamiz worker`.
//! - [`cad_sr`]: a scored study as a Mammography CAD SR (TID 4000) beside it.
//! - [`dimse`]: the DICOM listener (C-STORE, C-ECHO) for modalities and PACS.
//! - [`api`]: axum routes (DICOMweb, worklist, coordinator, sign-in), each with its
//!   access rule; the audit log of patient data read or changed.
//! - [`server`]: `tamiz serve` wiring, startable on any listener.
//! - [`http`]: the HTTP listener: connection bound, header timeout, TLS, drain.
//! - [`upload`], [`demo`], [`evaluate`], [`dataset`], [`simulate`]: the other subcommands
//!   (`dataset` also writes `synth` output and training tensors).
//! - [`parallel`]: order-keeping parallel map for CPU-bound work.
//! - [`synth`]: synthetic mammograms with known ground truth (demo, tests, training).

pub mod api;
pub mod auth;
pub mod cad_sr;
pub mod catalog;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod dicom;
pub mod dimse;
pub mod drift;
pub mod evaluate;
pub mod http;
pub mod inbox;
pub mod ingest;
pub mod input_check;
pub mod metrics;
pub mod model;
pub mod oidc;
pub mod parallel;
pub mod preprocess;
pub mod routing;
pub mod server;
pub mod simulate;
pub mod spool;
pub mod storage;
pub mod synth;
pub mod triage;
pub mod upload;
pub mod views;
pub mod worker;

/// Wall-clock time as Unix epoch milliseconds (the catalog's time unit).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The UTC calendar year containing `ms`, with its start and end (epoch ms).
pub fn year_bounds(ms: i64) -> (i32, i64, i64) {
    let iso = api::iso_time(ms);
    let year: i32 = iso[..4].parse().unwrap_or(1970);
    let start = |y: i32| {
        humantime::parse_rfc3339(&format!("{y:04}-01-01T00:00:00Z"))
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    (year, start(year), start(year + 1))
}
