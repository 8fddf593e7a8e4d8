//! STOW-RS (PS3.18 §10.5): `POST /dicomweb/studies[/{study}]` with a
//! `multipart/related; type="application/dicom"` body.
//!
//! Each request is admitted by the [`crate::spool`] (bounded uploads in progress and
//! bytes in flight); its body is framed and bounded by [`super::multipart`]; each part
//! is streamed into a spool file while its bytes are counted (clients such as
//! dicomweb-client send chunked bodies with no Content-Length, so limits count what
//! arrives), then handed to [`crate::ingest`]. The response is the Store Instances
//! Response Module in DICOM JSON: Referenced SOP Sequence (0008,1199) for stored
//! instances, Failed SOP Sequence (0008,1198) with Failure Reason (0008,1197) and a
//! readable Error Comment (0000,0902) for the others.
//!
//! An instance stored with a warning (a tomosynthesis object, stored but not triaged)
//! carries Warning Reason (0008,1196) and the text in its Referenced SOP item, and the
//! response a `Warning: 299` header; it does not make the status 202, so a
//! tomosynthesis study is not reported as partly failed on every send.
//!
//! Status: 200 all stored, 202 some refused, 409 none stored; 503 with Retry-After
//! when any part failed for a temporary server reason and 507 when the server's disk
//! is full (resending the whole request is safe: stored instances answer "stored"
//! again); 400/408/413/415 `{"error"}` for a request that cannot be read, 503 when the
//! server is at its upload bounds.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::access::Caller;
use super::multipart::{framed_body, BodyError};
use super::{ApiError, AppState};
use crate::catalog::Role;
use crate::dicom::{is_valid_uid, WARNING_STORED_NOT_TRIAGED};
use crate::ingest::IngestError;
use crate::spool::{Spool, SpoolError, SpoolFile};

/// Header an admin gateway uses to say which imaging center an upload comes from.
pub const CENTER_HEADER: &str = "x-tamiz-center";
const DICOM_JSON: &str = "application/dicom+json";
/// Retry-After (seconds) when the server is at its upload bounds.
pub const RETRY_BUSY_SECS: u64 = 5;
/// Retry-After when a part failed for a temporary server reason.
pub const RETRY_TEMPORARY_SECS: u64 = 10;
/// Retry-After when the disk is full (someone must free space first).
pub const RETRY_DISK_FULL_SECS: u64 = 60;

pub async fn store_instances(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    store(state, &caller, None, headers, body).await
}

pub async fn store_instances_in_study(
    State(state): State<AppState>,
    caller: Caller,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_valid_uid(&study) {
        return ApiError::bad_request("study UID in the URL is not a valid UID").into_response();
    }
    store(state, &caller, Some(study), headers, body).await
}

/// The imaging center an upload is stored for: an imaging-center token's own center;
/// for an admin token acting as a gateway, the one `X-Tamiz-Center` names (or, without
/// it, the one the instances' Institution Name maps to).
fn upload_center(caller: &Caller, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let declared = match headers.get(CENTER_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Tamiz-Center is not readable text"))?,
        ),
    };
    match (caller.role(), caller.center(), declared) {
        (Role::Admin, _, declared) => Ok(declared.map(str::to_owned)),
        (Role::ImagingCenter, Some(own), None) => Ok(Some(own.to_owned())),
        (Role::ImagingCenter, Some(own), Some(d)) if d == own => Ok(Some(own.to_owned())),
        (role, own, Some(_)) => Err(ApiError::forbidden(format!(
            "X-Tamiz-Center is honoured only for an admin token acting as a gateway; this {} token uploads for {}",
            role.as_str(),
            own.unwrap_or("no center")
        ))),
        (role, _, None) => Err(ApiError::forbidden(format!(
            "a {} token without a center cannot upload",
            role.as_str()
        ))),
    }
}

/// Why a part failed, as far as the sender is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// The sender must fix the instance.
    Refused,
    /// A server-side problem: the same bytes may succeed later.
    Temporary,
    /// The server's disk is full.
    DiskFull,
}

/// Result of one part.
enum PartResult {
    Stored {
        sop_class: String,
        sop: String,
        study: String,
        series: String,
        /// Stored, but not as the sender may assume (tomosynthesis: not triaged).
        warning: Option<String>,
    },
    Failed {
        sop_class: Option<String>,
        sop: Option<String>,
        reason: u16,
        comment: String,
        failure: Failure,
    },
}

impl PartResult {
    fn refused(reason: u16, comment: String) -> PartResult {
        PartResult::Failed {
            sop_class: None,
            sop: None,
            reason,
            comment,
            failure: Failure::Refused,
        }
    }
}

/// Reads the boundary of a `multipart/related` request whose root type (if given) is
/// application/dicom.
fn boundary(headers: &HeaderMap) -> Result<String, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "missing Content-Type: expected multipart/related; type=\"application/dicom\"",
            )
        })?;
    let mime: mime::Mime = ct.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "unreadable Content-Type `{}`",
            ct.chars().take(100).collect::<String>()
        ))
    })?;
    if mime.type_() != mime::MULTIPART || mime.subtype() != "related" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {} is not supported: expected multipart/related; type=\"application/dicom\"", mime.essence_str()),
        ));
    }
    if let Some(t) = mime.get_param("type") {
        if t.as_str() != "application/dicom" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("multipart type `{}` is not supported: only application/dicom parts are accepted", t.as_str()),
            ));
        }
    }
    let b = mime
        .get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("multipart/related Content-Type without a boundary")
        })?;
    if b.len() > 70 {
        return Err(ApiError::bad_request(format!(
            "multipart boundary is {} characters long (at most 70, RFC 2046 §5.1.1)",
            b.len()
        )));
    }
    Ok(b)
}

/// A request-level answer after `results.len()` parts were handled.
fn after_parts(e: ApiError, results: &[PartResult]) -> Response {
    let stored = results
        .iter()
        .filter(|r| matches!(r, PartResult::Stored { .. }))
        .count();
    ApiError {
        message: format!(
            "{} (after {} part(s), {stored} stored; resending them is safe)",
            e.message,
            results.len()
        ),
        ..e
    }
    .into_response()
}

/// The answer for a body that could not be read to its end.
fn body_failed(e: &multer::Error) -> ApiError {
    match BodyError::in_multer(e) {
        Some(b @ BodyError::TooLarge(_)) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, b.to_string())
        }
        Some(b @ (BodyError::IdleTimeout(_) | BodyError::TooSlow(_))) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, b.to_string())
        }
        Some(b) => ApiError::bad_request(format!("malformed multipart body: {b}")),
        None => ApiError::bad_request(format!("malformed multipart body: {e}")),
    }
}

/// The answer when the spool refused or failed.
fn spool_failed(e: SpoolError) -> ApiError {
    match e {
        SpoolError::Busy(_) => ApiError::unavailable(e.to_string(), RETRY_BUSY_SECS),
        SpoolError::DiskFull(_) => {
            tracing::error!(error = %e, "spooling an upload failed: disk full");
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the server's disk is full; nothing was lost, retry later",
            )
            .retry_after(RETRY_DISK_FULL_SECS)
        }
        SpoolError::Io(_) => {
            tracing::error!(error = %e, "spooling an upload failed");
            ApiError::unavailable(
                "the server could not spool the upload (see server log); retry later",
                RETRY_TEMPORARY_SECS,
            )
        }
    }
}

/// The response is DICOM JSON only (PS3.18 §8.7.3: an origin server may answer
/// `application/dicom+xml` with 406). Refused before the body is read, so a client
/// that would not understand the answer uploads nothing.
fn accepts_dicom_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some((ranges, sent)) = super::accept::ranges(headers) else {
        return Ok(());
    };
    let acceptable = ranges.iter().any(|r| {
        !r.refused
            && matches!(
                r.media.as_str(),
                "application/dicom+json" | "application/json" | "application/*" | "*/*"
            )
    });
    if acceptable {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "this server answers STOW-RS in application/dicom+json only; the request accepts {sent}"
            ),
        ))
    }
}

async fn store(
    state: AppState,
    caller: &Caller,
    study: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = accepts_dicom_json(&headers) {
        return e.into_response();
    }
    let declared_center = match upload_center(caller, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let boundary = match boundary(&headers) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let spool = state.ingest.spool.clone();
    // Held until the response is built: the bound on uploads in progress.
    let admitted = match spool.admit() {
        Ok(p) => p,
        Err(e) => return spool_failed(e).into_response(),
    };
    let limits = &state.config.limits;
    let stream = framed_body(body, &boundary, limits);
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut results = Vec::new();
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return after_parts(body_failed(&e), &results),
        };
        if results.len() >= limits.max_parts_per_request {
            let e = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request holds more than {} parts (limits.max_parts_per_request); send fewer instances per request",
                    limits.max_parts_per_request
                ),
            );
            return after_parts(e, &results);
        }
        let part_type = field.content_type().map(|m| m.essence_str().to_owned());
        if part_type.as_deref() != Some("application/dicom") {
            // Drain the part so the next one can be read.
            loop {
                match field.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => return after_parts(body_failed(&e), &results),
                }
            }
            results.push(PartResult::refused(
                0xC000,
                format!(
                    "part has Content-Type {}, expected application/dicom",
                    part_type.as_deref().unwrap_or("(none)")
                ),
            ));
            continue;
        }
        let spooled = match spool_part(&spool, &mut field, limits.max_instance_bytes).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                results.push(PartResult::refused(
                    0xA700,
                    format!(
                        "instance exceeds the limit of {} bytes (limits.max_instance_bytes)",
                        limits.max_instance_bytes
                    ),
                ));
                continue;
            }
            Err(PartError::Body(e)) => return after_parts(body_failed(&e), &results),
            Err(PartError::Spool(e)) => return after_parts(spool_failed(e), &results),
        };
        // The parse holds the upload slot and the spool file (and its bytes in flight)
        // until it ends, even if this request is dropped before that.
        let spooled = std::sync::Arc::new(spooled);
        let hold = (admitted.clone(), spooled.clone());
        let result = match state
            .ingest
            .ingest_file(
                spooled.path(),
                study.as_deref(),
                declared_center.as_deref(),
                hold,
            )
            .await
        {
            Ok((meta, _)) => PartResult::Stored {
                sop_class: meta.sop_class_uid,
                sop: meta.sop_instance_uid,
                study: meta.study_uid,
                series: meta.series_uid,
                warning: meta.warning,
            },
            Err(e) => {
                let (sop_class, sop) = read_uids(spooled.path().to_owned()).await;
                failed(e, sop_class, sop)
            }
        };
        drop(spooled);
        results.push(result);
    }
    if results.is_empty() {
        return ApiError::bad_request("the request holds no instances (no multipart part found)")
            .into_response();
    }
    respond(results, &dicomweb_base(&state, &headers))
}

/// The root of the Retrieve URLs in responses: `server.public_url` + `/dicomweb`, else
/// `http(s)://HOST/dicomweb` as the client addressed this server (its `Host` header;
/// some clients, dicomweb-client among them, leave the port out of it, so a deployment
/// sets `public_url`).
pub(super) fn dicomweb_base(state: &AppState, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &state.config.server.public_url {
        return Some(format!("{}/dicomweb", url.trim_end_matches('/')));
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    // A Host header is an authority: no path, query or spaces.
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
        return None;
    }
    let scheme = if state.config.server.tls_enabled() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{host}/dicomweb"))
}

enum PartError {
    Body(multer::Error),
    Spool(SpoolError),
}

/// Streams one part into the spool. `Ok(None)`: the part is larger than `limit`; the
/// rest of it was read and discarded so later parts can still be read.
async fn spool_part(
    spool: &Spool,
    field: &mut multer::Field<'_>,
    limit: u64,
) -> Result<Option<SpoolFile>, PartError> {
    let mut file = Some(spool.create().await.map_err(PartError::Spool)?);
    let mut n = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(PartError::Body)? {
        n += chunk.len() as u64;
        if n > limit {
            file = None; // removes what was spooled and frees its bytes
            continue;
        }
        if let Some(f) = &mut file {
            f.write(&chunk).await.map_err(PartError::Spool)?;
        }
    }
    if let Some(f) = &mut file {
        f.finish().await.map_err(PartError::Spool)?;
    }
    Ok(file)
}

/// SOP Class and Instance UIDs of a refused instance, when it is readable enough to
/// have them (so the uploader can tell which file failed).
async fn read_uids(path: std::path::PathBuf) -> (Option<String>, Option<String>) {
    tokio::task::spawn_blocking(move || crate::dicom::header_uids(&path))
        .await
        .unwrap_or((None, None))
}

fn failed(e: IngestError, sop_class: Option<String>, sop: Option<String>) -> PartResult {
    let result = failed_part(e, sop_class, sop);
    if let PartResult::Failed { failure, .. } = &result {
        crate::metrics::metrics().count_ingest(match failure {
            Failure::Refused => "refused",
            Failure::Temporary => "temporary",
            Failure::DiskFull => "disk_full",
        });
    }
    result
}

fn failed_part(e: IngestError, sop_class: Option<String>, sop: Option<String>) -> PartResult {
    let (reason, comment, failure) = match e {
        IngestError::Invalid(inv) => (inv.failure_reason(), inv.to_string(), Failure::Refused),
        IngestError::Conflict {
            sop_uid,
            sop_class_uid,
        } => {
            return PartResult::Failed {
                comment: format!("instance {sop_uid} is already stored with different content; the stored instance was kept"),
                sop_class: Some(sop_class_uid),
                sop: Some(sop_uid),
                reason: 0x0111,
                failure: Failure::Refused,
            }
        }
        other if other.is_disk_full() => {
            tracing::error!(error = %other, "storing an instance failed: disk full");
            (
                0x0110,
                "the server's disk is full; nothing was lost, retry later".into(),
                Failure::DiskFull,
            )
        }
        other => {
            tracing::error!(error = %other, "storing an instance failed");
            let what = match other {
                IngestError::Store(_) => "the object store failed or could not be reached",
                IngestError::Catalog(_) => "the catalog database failed or could not be reached",
                _ => "temporary server failure",
            };
            (
                0x0110,
                format!("{what} (see server log); retry later"),
                Failure::Temporary,
            )
        }
    };
    PartResult::Failed {
        sop_class,
        sop,
        reason,
        comment,
        failure,
    }
}

/// The private block of tamiz's own attributes in a response: (0009,0010) names it,
/// (0009,1001) holds a failure's whole reason as UT, since Error Comment (0000,0902)
/// is an LO of at most 64 characters and most reasons name more than that.
pub const PRIVATE_CREATOR: &str = "00090010";
pub const PRIVATE_CREATOR_NAME: &str = "TAMIZ";
pub const FULL_REASON: &str = "00091001";

/// The reason as an Error Comment: LO (PS3.5 §6.2), at most 64 characters, no
/// backslash (the value separator) and no control characters. A cut reason ends in
/// "...".
pub fn error_comment(reason: &str) -> String {
    let clean = reason.chars().map(|c| match c {
        '\\' => '/',
        c if c.is_control() => '?',
        c => c,
    });
    if reason.chars().count() <= 64 {
        clean.collect()
    } else {
        clean.take(61).chain("...".chars()).collect()
    }
}

/// The STOW-RS response (PS3.18 §10.5.3): Referenced SOP Sequence with each stored
/// instance's Retrieve URL (WADO-RS), Failed SOP Sequence with the reasons, and the
/// study's Retrieve URL at the top level when every stored instance is of one study.
fn respond(results: Vec<PartResult>, base: &Option<String>) -> Response {
    let studies: std::collections::BTreeSet<&str> = results
        .iter()
        .filter_map(|r| match r {
            PartResult::Stored { study, .. } => Some(study.as_str()),
            PartResult::Failed { .. } => None,
        })
        .collect();
    let study_url = match (base, studies.len()) {
        (Some(b), 1) => studies.first().map(|s| format!("{b}/studies/{s}")),
        _ => None,
    };
    let mut referenced = Vec::new();
    let mut failures = Vec::new();
    let mut worst = Failure::Refused;
    let mut warnings = 0usize;
    for r in results {
        match r {
            PartResult::Stored {
                sop_class,
                sop,
                study,
                series,
                warning,
            } => {
                let mut item = json!({
                    "00081150": { "vr": "UI", "Value": [sop_class] },
                    "00081155": { "vr": "UI", "Value": [sop] },
                });
                if let Some(w) = warning {
                    item["00081196"] = json!({ "vr": "US", "Value": [WARNING_STORED_NOT_TRIAGED] });
                    item["00000902"] = json!({ "vr": "LO", "Value": [error_comment(&w)] });
                    item[PRIVATE_CREATOR] = json!({ "vr": "LO", "Value": [PRIVATE_CREATOR_NAME] });
                    item[FULL_REASON] = json!({ "vr": "UT", "Value": [w] });
                    warnings += 1;
                }
                if let Some(b) = base {
                    item["00081190"] = json!({
                        "vr": "UR",
                        "Value": [format!("{b}/studies/{study}/series/{series}/instances/{sop}")]
                    });
                }
                referenced.push(item);
            }
            PartResult::Failed {
                sop_class,
                sop,
                reason,
                comment,
                failure,
            } => {
                worst = worst.max(failure);
                let mut item = serde_json::Map::new();
                if let Some(c) = sop_class {
                    item.insert("00081150".into(), json!({ "vr": "UI", "Value": [c] }));
                }
                if let Some(s) = sop {
                    item.insert("00081155".into(), json!({ "vr": "UI", "Value": [s] }));
                }
                item.insert("00081197".into(), json!({ "vr": "US", "Value": [reason] }));
                item.insert(
                    "00000902".into(),
                    json!({ "vr": "LO", "Value": [error_comment(&comment)] }),
                );
                item.insert(
                    PRIVATE_CREATOR.into(),
                    json!({ "vr": "LO", "Value": [PRIVATE_CREATOR_NAME] }),
                );
                item.insert(
                    FULL_REASON.into(),
                    json!({ "vr": "UT", "Value": [comment] }),
                );
                failures.push(Value::Object(item));
            }
        }
    }
    let (status, retry_after) = match (worst, referenced.is_empty(), failures.is_empty()) {
        (Failure::DiskFull, _, _) => (StatusCode::INSUFFICIENT_STORAGE, Some(RETRY_DISK_FULL_SECS)),
        (Failure::Temporary, _, _) => (StatusCode::SERVICE_UNAVAILABLE, Some(RETRY_TEMPORARY_SECS)),
        (_, false, true) => (StatusCode::OK, None),
        (_, false, false) => (StatusCode::ACCEPTED, None),
        (_, true, _) => (StatusCode::CONFLICT, None),
    };
    let mut body = serde_json::Map::new();
    if let Some(url) = study_url {
        body.insert("00081190".into(), json!({ "vr": "UR", "Value": [url] }));
    }
    if !referenced.is_empty() {
        body.insert(
            "00081199".into(),
            json!({ "vr": "SQ", "Value": referenced }),
        );
    }
    if !failures.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failures }));
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        Value::Object(body).to_string(),
    )
        .into_response();
    if warnings > 0 {
        // RFC 7234 §5.5 / PS3.18 §8.3.5.1: 299, a miscellaneous persistent warning.
        let text = format!(
            "299 tamiz \"{warnings} instance(s) stored but not triaged; see Warning Reason (0008,1196) in the response\""
        );
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            response.headers_mut().insert(header::WARNING, v);
        }
    }
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::error_comment;

    #[test]
    fn an_error_comment_is_an_lo_of_at_most_64_characters() {
        assert_eq!(error_comment("short reason"), "short reason");
        let long =
            "not a mammogram: Modality CT, SOP Class 1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)";
        assert_eq!(
            error_comment(long),
            "not a mammogram: Modality CT, SOP Class 1.2.840.10008.5.1.4.1..."
        );
        assert_eq!(error_comment(long).chars().count(), 64);
        assert_eq!(error_comment("a\\b\nc"), "a/b?c");
        let exactly = "é".repeat(64);
        assert_eq!(error_comment(&exactly), exactly);
    }
}
