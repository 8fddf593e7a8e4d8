//! WADO-RS metadata (PS3.18 §10.4.1.1.2): a study's, series' or instance's attributes
//! as DICOM JSON (PS3.18 Annex F, written by the `dicom-json` crate), one object per
//! instance, read from the head of each stored object (up to its Pixel Data, which is
//! given as a BulkDataURI to the instance's frames resource). What a DICOMweb viewer
//! reads before it asks for pixels.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_dictionary_std::tags;
use serde_json::{json, Value};

use super::access::Caller;
use super::{ApiError, AppState};
use crate::catalog::RetrievableInstance;

/// Bytes read from the start of an object for its attributes; an object whose
/// attributes run past this is read whole.
const HEAD_BYTES: u64 = 4 << 20;

pub async fn study_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(state, caller, &study, None, None, &headers).await
}

pub async fn series_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(state, caller, &study, Some(&series), None, &headers).await
}

pub async fn instance_metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(
        state,
        caller,
        &study,
        Some(&series),
        Some(&instance),
        &headers,
    )
    .await
}

/// Whether `Accept` allows `application/dicom+json` (or says nothing).
fn accepts_json(headers: &HeaderMap) -> bool {
    match super::accept::ranges(headers) {
        None => true,
        Some((ranges, _)) => ranges.iter().filter(|r| !r.refused).any(|r| {
            matches!(
                r.media.as_str(),
                "application/dicom+json" | "application/json" | "application/*" | "*/*"
            )
        }),
    }
}

async fn metadata(
    state: AppState,
    caller: Caller,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if !accepts_json(headers) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "metadata is served as application/dicom+json only",
        ));
    }
    let instances = super::wado::lookup(&state, &caller, study, series, instance).await?;
    let audit = caller.audit();
    state
        .catalog
        .record_audit(&audit.entry("wado.metadata", Some(study), None, None, crate::now_ms()))
        .await?;
    let base = super::stow::dicomweb_base(&state, headers);
    let mut out = Vec::with_capacity(instances.len());
    for inst in &instances {
        let mut attrs = attributes(&state, inst).await?;
        if let (Some(b), Value::Object(map)) = (&base, &mut attrs) {
            let url = format!(
                "{b}/studies/{study}/series/{}/instances/{}",
                inst.series_uid, inst.sop_uid
            );
            map.insert(
                "7FE00010".into(),
                json!({ "vr": "OW", "BulkDataURI": format!("{url}/frames/1") }),
            );
            map.insert("00081190".into(), json!({ "vr": "UR", "Value": [url] }));
        }
        if let Value::Object(map) = &mut attrs {
            // The stored transfer syntax, which says what the frames resource sends.
            map.insert(
                "00020010".into(),
                json!({ "vr": "UI", "Value": [inst.transfer_syntax] }),
            );
        }
        out.push(attrs);
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Value::Array(out).to_string(),
    )
        .into_response())
}

/// One stored instance's attributes up to its Pixel Data, as DICOM JSON.
async fn attributes(state: &AppState, inst: &RetrievableInstance) -> Result<Value, ApiError> {
    let store = &state.ingest.store;
    let size = inst.size_bytes.max(0) as u64;
    let head = store
        .read_range(&inst.object_key, 0, size.min(HEAD_BYTES))
        .await
        .map_err(store_failed)?;
    let parsed = tokio::task::spawn_blocking(move || parse_head(&head))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let obj = match parsed {
        Ok(obj) => obj,
        Err(_) if size > HEAD_BYTES => {
            let whole = store.get(&inst.object_key).await.map_err(store_failed)?;
            tokio::task::spawn_blocking(move || parse_head(&whole))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(unreadable(inst))?
        }
        Err(e) => return Err(unreadable(inst)(e)),
    };
    dicom_json::to_value(obj).map_err(|e| unreadable(inst)(e.to_string()))
}

fn parse_head(bytes: &[u8]) -> Result<dicom_object::InMemDicomObject, String> {
    dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .map(|o| o.into_inner())
        .map_err(|e| e.to_string())
}

fn unreadable(inst: &RetrievableInstance) -> impl Fn(String) -> ApiError + '_ {
    move |e| {
        tracing::error!(error = %e, sop = %inst.sop_uid, "a stored instance's attributes could not be read");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the attributes of instance {} could not be read (see server log)",
                inst.sop_uid
            ),
        )
    }
}

pub(super) fn store_failed(e: crate::storage::StoreError) -> ApiError {
    tracing::error!(error = %e, "reading a stored object failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the object store failed or could not be reached (see server log)",
    )
}
