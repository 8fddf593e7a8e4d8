//! QIDO-RS search (PS3.18 §10.6) over the catalog: studies, a study's series, a
//! series' instances, as DICOM JSON with each match's WADO-RS Retrieve URL.
//!
//! A search sees only what its caller may see: an imaging center its own uploads, a
//! radiologist the studies on its diagnosis center's worklist, an admin everything.
//! The catalog holds no patient identifiers, so a `PatientID` query is matched through
//! the patient's pseudonym and patient attributes (name, birth date) are not returned;
//! neither are the study's date and description, which the catalog does not keep.
//! Query keys other than those listed get 400 naming the key, never a silent
//! "match all". No match is 204.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::access::Caller;
use super::{ApiError, AppState};
use crate::catalog::{Role, StudySearch};
use crate::dicom::is_valid_uid;

const DICOM_JSON: &str = "application/dicom+json";
/// Matches returned when the query does not say `limit`, and the most it may ask.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// The query: its key/value pairs, keys by keyword or by tag.
fn pairs(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

fn number(key: &str, v: &str, max: i64) -> Result<i64, ApiError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| (0..=max).contains(n))
        .ok_or_else(|| ApiError::bad_request(format!("{key} must be a number from 0 to {max}")))
}

/// `limit`, `offset` and the keys every level ignores (`includefield`: every
/// attribute tamiz has is always returned; `fuzzymatching`: nothing is fuzzy).
fn paging(key: &str, v: &str, limit: &mut i64, offset: &mut i64) -> Result<bool, ApiError> {
    match key {
        "limit" => *limit = number("limit", v, MAX_LIMIT)?,
        "offset" => *offset = number("offset", v, i64::MAX)?,
        "includefield" | "fuzzymatching" => {}
        _ => return Ok(false),
    }
    Ok(true)
}

fn unsupported(key: &str, level: &str) -> ApiError {
    ApiError::bad_request(format!(
        "query key `{}` is not supported for {level} (supported: {})",
        key.chars().take(64).collect::<String>(),
        match level {
            "studies" => "StudyInstanceUID, PatientID, IssuerOfPatientID, ModalitiesInStudy, limit, offset, includefield, fuzzymatching",
            "series" => "SeriesInstanceUID, Modality, limit, offset, includefield, fuzzymatching",
            _ => "SOPInstanceUID, SOPClassUID, limit, offset, includefield, fuzzymatching",
        }
    ))
}

fn uid_list(key: &str, v: &str) -> Result<Vec<String>, ApiError> {
    v.split([',', '\\'])
        .map(|u| {
            let u = u.trim();
            if is_valid_uid(u) {
                Ok(u.to_owned())
            } else {
                Err(ApiError::bad_request(format!(
                    "{key}: `{}` is not a valid UID",
                    u.chars().take(64).collect::<String>()
                )))
            }
        })
        .collect()
}

fn base_url(state: &AppState, headers: &HeaderMap) -> Option<String> {
    super::stow::dicomweb_base(state, headers)
}

fn answer(matches: Vec<Value>) -> Response {
    if matches.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        Value::Array(matches).to_string(),
    )
        .into_response()
}

fn attr(vr: &str, value: impl Into<Value>) -> Value {
    json!({ "vr": vr, "Value": [value.into()] })
}

pub async fn search_studies(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut q = StudySearch {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let (mut patient, mut issuer, mut mg_only_excluded) = (None, String::new(), false);
    for (key, v) in pairs(raw)? {
        if paging(&key, &v, &mut q.limit, &mut q.offset)? {
            continue;
        }
        match key.as_str() {
            "StudyInstanceUID" | "0020000D" => q.study_uids = uid_list(&key, &v)?,
            "PatientID" | "00100020" => patient = Some(v),
            "IssuerOfPatientID" | "00100021" => issuer = v,
            // Every study here is MG.
            "ModalitiesInStudy" | "00080061" => {
                mg_only_excluded = !v.split([',', '\\']).any(|m| m.trim() == "MG")
            }
            other => return Err(unsupported(other, "studies")),
        }
    }
    match caller.role() {
        Role::Admin => {}
        Role::ImagingCenter => q.imaging_center = caller.center().map(str::to_owned),
        Role::Radiologist => q.diagnosis_center = caller.center().map(str::to_owned),
        Role::Coordinator => {
            return Err(ApiError::forbidden("coordinators see totals, not studies"))
        }
    }
    if mg_only_excluded {
        return Ok(answer(Vec::new()));
    }
    if let Some(id) = patient {
        q.patient = Some(state.catalog.pseudonym(&issuer, &id));
    }
    let found = state.catalog.search_studies(&q).await?;
    state
        .catalog
        .record_audit(
            &caller
                .audit()
                .entry("qido.studies", None, None, None, crate::now_ms()),
        )
        .await?;
    let base = base_url(&state, &headers);
    let matches = found
        .into_iter()
        .map(|s| {
            let mut m = json!({
                "0020000D": attr("UI", s.study_uid.clone()),
                "00080061": attr("CS", "MG"),
                "00201206": attr("IS", s.series),
                "00201208": attr("IS", s.instances),
            });
            if let Some(b) = &base {
                m["00081190"] = attr("UR", format!("{b}/studies/{}", s.study_uid));
            }
            m
        })
        .collect();
    Ok(answer(matches))
}

pub async fn search_series(
    State(state): State<AppState>,
    caller: Caller,
    Path(study): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0);
    let (mut uids, mut mg_excluded) = (None, false);
    for (key, v) in pairs(raw)? {
        if paging(&key, &v, &mut limit, &mut offset)? {
            continue;
        }
        match key.as_str() {
            "SeriesInstanceUID" | "0020000E" => uids = Some(uid_list(&key, &v)?),
            "Modality" | "00080060" => mg_excluded = v.trim() != "MG",
            other => return Err(unsupported(other, "series")),
        }
    }
    super::worklist::readable_study(&state, &caller, &study).await?;
    let instances = state
        .catalog
        .retrievable_instances(&study, None, None)
        .await?;
    state
        .catalog
        .record_audit(&caller.audit().entry(
            "qido.series",
            Some(&study),
            None,
            None,
            crate::now_ms(),
        ))
        .await?;
    let mut series: Vec<(String, i64)> = Vec::new();
    for i in &instances {
        match series.iter_mut().find(|s| s.0 == i.series_uid) {
            Some(s) => s.1 += 1,
            None => series.push((i.series_uid.clone(), 1)),
        }
    }
    let base = base_url(&state, &headers);
    let matches = series
        .into_iter()
        .filter(|(uid, _)| !mg_excluded && uids.as_ref().is_none_or(|u| u.contains(uid)))
        .skip(offset as usize)
        .take(limit as usize)
        .map(|(uid, n)| {
            let mut m = json!({
                "0020000D": attr("UI", study.clone()),
                "0020000E": attr("UI", uid.clone()),
                "00080060": attr("CS", "MG"),
                "00201209": attr("IS", n),
            });
            if let Some(b) = &base {
                m["00081190"] = attr("UR", format!("{b}/studies/{study}/series/{uid}"));
            }
            m
        })
        .collect();
    Ok(answer(matches))
}

pub async fn search_instances(
    State(state): State<AppState>,
    caller: Caller,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    if !is_valid_uid(&series) {
        return Err(ApiError::bad_request("series UID is not a valid UID"));
    }
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0);
    let (mut sops, mut class) = (None, None);
    for (key, v) in pairs(raw)? {
        if paging(&key, &v, &mut limit, &mut offset)? {
            continue;
        }
        match key.as_str() {
            "SOPInstanceUID" | "00080018" => sops = Some(uid_list(&key, &v)?),
            "SOPClassUID" | "00080016" => class = Some(v),
            other => return Err(unsupported(other, "instances")),
        }
    }
    super::worklist::readable_study(&state, &caller, &study).await?;
    let instances = state
        .catalog
        .retrievable_instances(&study, Some(&series), None)
        .await?;
    state
        .catalog
        .record_audit(&caller.audit().entry(
            "qido.instances",
            Some(&study),
            None,
            None,
            crate::now_ms(),
        ))
        .await?;
    let base = base_url(&state, &headers);
    let matches = instances
        .into_iter()
        .filter(|i| sops.as_ref().is_none_or(|s| s.contains(&i.sop_uid)))
        .filter(|i| class.as_ref().is_none_or(|c| *c == i.sop_class_uid))
        .skip(offset as usize)
        .take(limit as usize)
        .map(|i| {
            let mut m = json!({
                "0020000D": attr("UI", study.clone()),
                "0020000E": attr("UI", i.series_uid.clone()),
                "00080016": attr("UI", i.sop_class_uid.clone()),
                "00080018": attr("UI", i.sop_uid.clone()),
                "00200062": attr("CS", i.laterality.clone()),
                "00185101": attr("CS", i.view.clone()),
                "00280010": attr("US", i.rows),
                "00280011": attr("US", i.columns),
            });
            if let Some(b) = &base {
                m["00081190"] = attr(
                    "UR",
                    format!(
                        "{b}/studies/{study}/series/{}/instances/{}",
                        i.series_uid, i.sop_uid
                    ),
                );
            }
            m
        })
        .collect();
    Ok(answer(matches))
}
