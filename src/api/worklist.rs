//! JSON routes for radiologists (worklist, claim, reading) and coordinators (study
//! status, program summary).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::{check_diagnosis_center, Caller};
use super::{iso_time, ApiError, AppState};
use crate::catalog::{Role, WorklistItem};
use crate::dicom::is_valid_uid;

fn item_json(i: &WorklistItem) -> Value {
    json!({
        "id": i.id,
        "study_uid": i.study_uid,
        "center": i.center,
        "priority": i.priority,
        "triaged": i.triaged,
        "score": i.score,
        "score_left": i.score_left,
        "score_right": i.score_right,
        "due": iso_time(i.due_ms),
        "due_ms": i.due_ms,
        "reason": i.reason,
        "state": i.state,
        "claimed_by": i.claimed_by,
    })
}

fn check_center(state: &AppState, center: &str) -> Result<(), ApiError> {
    if state
        .config
        .diagnosis_centers
        .iter()
        .any(|c| c.id == center)
    {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "unknown diagnosis center `{}`",
            center.chars().take(64).collect::<String>()
        )))
    }
}

/// `GET /api/v1/studies/{study_uid}`: an imaging center sees the studies it uploaded,
/// a radiologist those on its diagnosis center's worklist, an admin every study.
/// Each answer is an audited read.
/// The study, if `caller` may read it: an admin any study, an imaging center its
/// own uploads, a radiologist the studies on its diagnosis center's worklist; 400 for
/// a malformed UID, 404 for an unknown study, 403 for another center's.
pub(super) async fn readable_study(
    state: &AppState,
    caller: &Caller,
    study: &str,
) -> Result<crate::catalog::StudyStatus, ApiError> {
    if !is_valid_uid(study) {
        return Err(ApiError::bad_request("study UID is not a valid UID"));
    }
    let s = state
        .catalog
        .study_status(study)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("study {study} not found")))?;
    let w = s.worklist.as_ref();
    let allowed = match caller.role() {
        Role::Admin => true,
        Role::ImagingCenter => {
            s.imaging_center.is_some() && s.imaging_center.as_deref() == caller.center()
        }
        Role::Radiologist => w.is_some_and(|w| Some(w.center.as_str()) == caller.center()),
        Role::Coordinator => false,
    };
    if !allowed {
        return Err(ApiError::forbidden(format!(
            "a {} user of {} may not see study {study}: it belongs to another center",
            caller.role().as_str(),
            caller.center().unwrap_or("no center"),
        )));
    }
    Ok(s)
}

pub async fn study_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(study): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = readable_study(&state, &caller, &study).await?;
    let w = s.worklist.as_ref();
    let audit = caller.audit();
    state
        .catalog
        .record_audit(&audit.entry("study.status", Some(&study), None, None, crate::now_ms()))
        .await?;
    Ok(Json(json!({
        "study_uid": s.study_uid,
        "state": s.state,
        "imaging_center": s.imaging_center,
        "instances": s.instances,
        "views": s.views,
        "received": iso_time(s.first_received_ms),
        "ready_reason": s.ready_reason,
        "triaged": w.map(|w| w.triaged).unwrap_or(false),
        "score": w.and_then(|w| w.score),
        "score_left": w.and_then(|w| w.score_left),
        "score_right": w.and_then(|w| w.score_right),
        "view_scores": s.view_scores,
        "model_version": s.model_version,
        "priority": w.map(|w| w.priority.clone()),
        "due": w.map(|w| iso_time(w.due_ms)),
        "center": w.map(|w| w.center.clone()),
        "home_center": w.map(|w| w.home_center.clone().unwrap_or_else(|| w.center.clone())),
        "reason": w.map(|w| w.reason.clone()),
        "moves": s.moves.iter().map(|m| json!({
            "from_center": m.from_center,
            "to_center": m.to_center,
            "reason": m.reason,
            "moved": iso_time(m.moved_ms),
        })).collect::<Vec<_>>(),
        "worklist_item": w.map(|w| w.id),
        "worklist_state": w.map(|w| w.state.clone()),
        "job": { "state": s.job_state, "attempts": s.job_attempts, "last_error": s.job_error },
        "reading": s.reading,
    })))
}

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<i64>,
}

/// `GET /api/v1/centers/{center}/worklist[?limit=N]`: open items in reading order.
/// An audited read (one row for the listing).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(center): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    check_center(&state, &center)?;
    check_diagnosis_center(&caller, &center)?;
    let limit = p.limit.unwrap_or(200).clamp(1, 5000);
    let items = state.catalog.worklist(&center, limit).await?;
    let audit = caller.audit();
    state
        .catalog
        .record_audit(&audit.entry("worklist.list", None, None, Some(&center), crate::now_ms()))
        .await?;
    Ok(Json(
        json!({ "center": center, "items": items.iter().map(item_json).collect::<Vec<_>>() }),
    ))
}

/// A claim's body: nothing, or `{}` (the claim is always the signed-in user's, so a
/// body naming a radiologist is refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {}

/// `POST /api/v1/centers/{center}/worklist/claim`: the first item of the queue,
/// claimed atomically for the signed-in radiologist; 204 when the queue is empty.
pub async fn claim_next(
    State(state): State<AppState>,
    caller: Caller,
    Path(center): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_center(&state, &center)?;
    check_diagnosis_center(&caller, &center)?;
    if !body.is_empty() {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::bad_request(
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let Json(ClaimBody {}) = Json::<ClaimBody>::from_bytes(&body)
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
    }
    let now = state.catalog.clock_ms().await?;
    let expired_before = now - state.config.reading.claim_timeout_secs as i64 * 1000;
    match state
        .catalog
        .claim_next(
            &center,
            &caller.identity.name,
            now,
            expired_before,
            Some(&caller.audit()),
        )
        .await?
    {
        Some(item) => Ok((StatusCode::OK, Json(item_json(&item)))),
        None => Ok((StatusCode::NO_CONTENT, Json(Value::Null))),
    }
}

/// The item `item`, if the caller may act on it (its diagnosis center's radiologists
/// and admins).
async fn item_for(state: &AppState, caller: &Caller, item: i64) -> Result<WorklistItem, ApiError> {
    let found = state
        .catalog
        .worklist_item(item)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("worklist item {item} not found")))?;
    check_diagnosis_center(caller, &found.center)?;
    Ok(found)
}

/// `POST /api/v1/worklist/{item}/release`: gives a claimed item back to its queue.
/// Only the radiologist holding the claim (or an admin) releases it.
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path(item): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    item_for(&state, &caller, item).await?;
    let by = (caller.role() != Role::Admin).then_some(caller.identity.name.as_str());
    let released = state
        .catalog
        .release_claim(item, by, Some(&caller.audit()), crate::now_ms())
        .await?;
    Ok(Json(item_json(&released)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingBody {
    birads: i64,
    density: String,
}

/// `POST /api/v1/worklist/{item}/reading` `{"birads": 0-6, "density": "A"-"D"}`: the
/// reading of an item the caller holds, recorded under the caller's name (a body that
/// names a radiologist is refused: a reading is never recorded under a name sent).
pub async fn record_reading(
    State(state): State<AppState>,
    caller: Caller,
    Path(item): Path<i64>,
    body: Result<Json<ReadingBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !(0..=6).contains(&body.birads) {
        return Err(ApiError::bad_request(format!(
            "birads must be 0-6, got {}",
            body.birads
        )));
    }
    if !matches!(body.density.as_str(), "A" | "B" | "C" | "D") {
        return Err(ApiError::bad_request("density must be one of A, B, C, D"));
    }
    item_for(&state, &caller, item).await?;
    state
        .catalog
        .record_reading(
            item,
            &caller.identity.name,
            body.birads,
            &body.density,
            crate::now_ms(),
            Some(&caller.audit()),
        )
        .await?;
    Ok(Json(
        json!({ "item": item, "state": "read", "radiologist": caller.identity.name }),
    ))
}

/// `GET /api/v1/summary`: the coordinator's program summary for the current year.
pub async fn summary(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = crate::now_ms();
    let (year, start, end) = crate::year_bounds(now);
    let s = state.catalog.summary(year, start, end, now).await?;
    let drift = state.catalog.drift_weeks(now, &state.config.drift).await?;
    let mut body = serde_json::to_value(s)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    body["drift"] = json!({
        "weeks": state.config.drift.weeks,
        "drifting_now": drift
            .iter()
            .filter(|w| w.drifting && w.week_start_ms == now - 7 * crate::triage::DAY_MS)
            .map(|w| w.center.as_str())
            .collect::<Vec<_>>(),
        "center_weeks": drift,
    });
    Ok(Json(body))
}
