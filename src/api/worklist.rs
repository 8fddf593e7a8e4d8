//! JSON routes for radiologists (worklist, claim, reading) and coordinators (study
//! status, program summary).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{iso_time, ApiError, AppState};
use crate::catalog::WorklistItem;
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

/// `GET /api/v1/studies/{study_uid}`
pub async fn study_status(
    State(state): State<AppState>,
    Path(study): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !is_valid_uid(&study) {
        return Err(ApiError::bad_request("study UID is not a valid UID"));
    }
    let s = state
        .catalog
        .study_status(&study)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("study {study} not found")))?;
    let w = s.worklist.as_ref();
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
        "reason": w.map(|w| w.reason.clone()),
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
pub async fn list(
    State(state): State<AppState>,
    Path(center): Path<String>,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    check_center(&state, &center)?;
    let limit = p.limit.unwrap_or(200).clamp(1, 5000);
    let items = state.catalog.worklist(&center, limit).await?;
    Ok(Json(
        json!({ "center": center, "items": items.iter().map(item_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    radiologist: String,
}

fn check_radiologist(r: &str) -> Result<(), ApiError> {
    if r.trim().is_empty() || r.len() > 128 || r.chars().any(char::is_control) {
        Err(ApiError::bad_request(
            "radiologist must be 1-128 printable characters",
        ))
    } else {
        Ok(())
    }
}

/// `POST /api/v1/centers/{center}/worklist/claim` `{"radiologist": "..."}`: the first
/// item of the queue, claimed atomically; 204 when the queue is empty.
pub async fn claim_next(
    State(state): State<AppState>,
    Path(center): Path<String>,
    body: Result<Json<ClaimBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_center(&state, &center)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_radiologist(&body.radiologist)?;
    let now = state.catalog.clock_ms().await?;
    let expired_before = now - state.config.reading.claim_timeout_secs as i64 * 1000;
    match state
        .catalog
        .claim_next(&center, &body.radiologist, now, expired_before)
        .await?
    {
        Some(item) => Ok((StatusCode::OK, Json(item_json(&item)))),
        None => Ok((StatusCode::NO_CONTENT, Json(Value::Null))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingBody {
    radiologist: String,
    birads: i64,
    density: String,
}

/// `POST /api/v1/worklist/{item}/reading` `{"radiologist", "birads": 0-6, "density": "A"-"D"}`
pub async fn record_reading(
    State(state): State<AppState>,
    Path(item): Path<i64>,
    body: Result<Json<ReadingBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_radiologist(&body.radiologist)?;
    if !(0..=6).contains(&body.birads) {
        return Err(ApiError::bad_request(format!(
            "birads must be 0-6, got {}",
            body.birads
        )));
    }
    if !matches!(body.density.as_str(), "A" | "B" | "C" | "D") {
        return Err(ApiError::bad_request("density must be one of A, B, C, D"));
    }
    state
        .catalog
        .record_reading(
            item,
            &body.radiologist,
            body.birads,
            &body.density,
            crate::now_ms(),
        )
        .await?;
    Ok(Json(json!({ "item": item, "state": "read" })))
}

/// `GET /api/v1/summary`: the coordinator's program summary for the current year.
pub async fn summary(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = crate::now_ms();
    let (year, start, end) = crate::year_bounds(now);
    let s = state.catalog.summary(year, start, end, now).await?;
    Ok(Json(serde_json::to_value(s).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?))
}
