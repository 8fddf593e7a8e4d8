//! STOW-RS (PS3.18 §10.5): `POST /dicomweb/studies[/{study}]` with a
//! `multipart/related; type="application/dicom"` body.
//!
//! Each part is streamed to a temporary file while its bytes are counted (clients such
//! as dicomweb-client send chunked bodies with no Content-Length, so limits count what
//! arrives), then handed to [`crate::ingest`]. The response is the Store Instances
//! Response Module in DICOM JSON: Referenced SOP Sequence (0008,1199) for stored
//! instances, Failed SOP Sequence (0008,1198) with Failure Reason (0008,1197) and a
//! readable Error Comment (0000,0902) for the others. Status: 200 all stored, 202 some
//! failed, 409 none stored, 400/413/415 for a request that cannot be read at all.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::{ApiError, AppState};
use crate::dicom::is_valid_uid;
use crate::ingest::IngestError;

/// Header an uploader uses to say which imaging center it is.
pub const CENTER_HEADER: &str = "x-tamiz-center";
const DICOM_JSON: &str = "application/dicom+json";

pub async fn store_instances(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    store(state, None, headers, body).await
}

pub async fn store_instances_in_study(
    State(state): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_valid_uid(&study) {
        return ApiError::bad_request("study UID in the URL is not a valid UID").into_response();
    }
    store(state, Some(study), headers, body).await
}

/// Result of one part.
enum PartResult {
    Stored {
        sop_class: String,
        sop: String,
    },
    Failed {
        sop_class: Option<String>,
        sop: Option<String>,
        reason: u16,
        comment: String,
    },
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
    mime.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ApiError::bad_request("multipart/related Content-Type without a boundary"))
}

async fn store(state: AppState, study: Option<String>, headers: HeaderMap, body: Body) -> Response {
    let boundary = match boundary(&headers) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let declared_center = headers
        .get(CENTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limits = state.config.limits.clone();

    // Count the whole body as it streams; fail the request past the limit.
    let mut received = 0u64;
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .and_then(move |chunk| {
            received += chunk.len() as u64;
            let over = received > limits.max_request_bytes;
            async move {
                if over {
                    Err(std::io::Error::other(format!(
                        "request body exceeds {} bytes",
                        limits.max_request_bytes
                    )))
                } else {
                    Ok(chunk)
                }
            }
        });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut results = Vec::new();
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let stored = results
                    .iter()
                    .filter(|r| matches!(r, PartResult::Stored { .. }))
                    .count();
                let status = if e.to_string().contains("exceeds") {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return ApiError::new(
                    status,
                    format!("malformed multipart body after {} part(s) ({stored} stored; resending them is safe): {e}", results.len()),
                )
                .into_response();
            }
        };
        let part_type = field.content_type().map(|m| m.essence_str().to_owned());
        if part_type.as_deref() != Some("application/dicom") {
            // Drain the part so the next one can be read.
            while let Ok(Some(_)) = field.chunk().await {}
            results.push(PartResult::Failed {
                sop_class: None,
                sop: None,
                reason: 0xC000,
                comment: format!(
                    "part has Content-Type {}, expected application/dicom",
                    part_type.as_deref().unwrap_or("(none)")
                ),
            });
            continue;
        }
        let tmp = state.ingest.upload_dir.join(format!(
            "upload-{}-{}.dcm",
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = write_part(&mut field, &tmp, limits.max_instance_bytes).await;
        let result = match written {
            Ok(PartWrite::Complete) => {
                match state
                    .ingest
                    .ingest_file(&tmp, study.as_deref(), declared_center.as_deref())
                    .await
                {
                    Ok((meta, _)) => PartResult::Stored {
                        sop_class: meta.sop_class_uid,
                        sop: meta.sop_instance_uid,
                    },
                    Err(e) => {
                        let (sop_class, sop) = read_uids(tmp.clone()).await;
                        failed(e, sop_class, sop)
                    }
                }
            }
            Ok(PartWrite::TooLarge(n)) => PartResult::Failed {
                sop_class: None,
                sop: None,
                reason: 0xA700,
                comment: format!("instance exceeds the limit of {n} bytes"),
            },
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return ApiError::bad_request(format!("reading part {}: {e}", results.len() + 1))
                    .into_response();
            }
        };
        let _ = tokio::fs::remove_file(&tmp).await;
        results.push(result);
    }
    if results.is_empty() {
        return ApiError::bad_request("the request holds no instances (no multipart part found)")
            .into_response();
    }
    respond(results)
}

enum PartWrite {
    Complete,
    TooLarge(u64),
}

/// Streams one part to `path`. Past `limit` bytes the rest of the part is drained
/// and discarded so later parts can still be read.
async fn write_part(
    field: &mut multer::Field<'_>,
    path: &std::path::Path,
    limit: u64,
) -> Result<PartWrite, String> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("temporary file: {e}"))?;
    let mut n = 0u64;
    let mut too_large = false;
    while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
        n += chunk.len() as u64;
        if n > limit {
            too_large = true;
            continue;
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("temporary file: {e}"))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("temporary file: {e}"))?;
    Ok(if too_large {
        PartWrite::TooLarge(limit)
    } else {
        PartWrite::Complete
    })
}

/// SOP Class and Instance UIDs of a refused instance, when it is readable enough to
/// have them (so the uploader can tell which file failed).
async fn read_uids(path: std::path::PathBuf) -> (Option<String>, Option<String>) {
    tokio::task::spawn_blocking(move || {
        // Structurally broken files are not parsed at all (see dicom::guard).
        let Ok(bytes) = std::fs::read(&path) else {
            return (None, None);
        };
        if crate::dicom::guard::check_lengths(&bytes, bytes.len() as u64 * 4).is_err() {
            return (None, None);
        }
        let Ok(obj) = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .from_reader(&bytes[..])
        else {
            return (None, None);
        };
        let get = |tag| {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|v| crate::dicom::trim_value(&v).to_owned())
                .filter(|v| is_valid_uid(v))
        };
        (
            get(dicom_dictionary_std::tags::SOP_CLASS_UID),
            get(dicom_dictionary_std::tags::SOP_INSTANCE_UID),
        )
    })
    .await
    .unwrap_or((None, None))
}

fn failed(e: IngestError, sop_class: Option<String>, sop: Option<String>) -> PartResult {
    match e {
        IngestError::Invalid(inv) => PartResult::Failed {
            sop_class,
            sop,
            reason: inv.failure_reason(),
            comment: inv.to_string(),
        },
        IngestError::Conflict { sop_uid, sop_class_uid } => PartResult::Failed {
            comment: format!("instance {sop_uid} is already stored with different content; the stored instance was kept"),
            sop_class: Some(sop_class_uid),
            sop: Some(sop_uid),
            reason: 0x0111,
        },
        other => {
            tracing::error!(error = %other, "storing an instance failed");
            PartResult::Failed { sop_class, sop, reason: 0x0110, comment: "processing failure (see server log); retry later".into() }
        }
    }
}

fn respond(results: Vec<PartResult>) -> Response {
    let mut referenced = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            PartResult::Stored { sop_class, sop } => referenced.push(json!({
                "00081150": { "vr": "UI", "Value": [sop_class] },
                "00081155": { "vr": "UI", "Value": [sop] },
            })),
            PartResult::Failed {
                sop_class,
                sop,
                reason,
                comment,
            } => {
                let mut item = serde_json::Map::new();
                if let Some(c) = sop_class {
                    item.insert("00081150".into(), json!({ "vr": "UI", "Value": [c] }));
                }
                if let Some(s) = sop {
                    item.insert("00081155".into(), json!({ "vr": "UI", "Value": [s] }));
                }
                item.insert("00081197".into(), json!({ "vr": "US", "Value": [reason] }));
                item.insert("00000902".into(), json!({ "vr": "LO", "Value": [comment] }));
                failures.push(Value::Object(item));
            }
        }
    }
    let status = match (referenced.is_empty(), failures.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut body = serde_json::Map::new();
    if !referenced.is_empty() {
        body.insert(
            "00081199".into(),
            json!({ "vr": "SQ", "Value": referenced }),
        );
    }
    if !failures.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failures }));
    }
    (
        status,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        Value::Object(body).to_string(),
    )
        .into_response()
}
