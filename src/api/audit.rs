//! `GET /api/v1/audit`: the audit log, for admins.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{iso_time, ApiError, AppState};
use crate::catalog::AuditQuery;
use crate::dicom::is_valid_uid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    user: Option<String>,
    study: Option<String>,
    /// RFC 3339 time, inclusive.
    since: Option<String>,
    /// RFC 3339 time, exclusive.
    until: Option<String>,
    /// The `next_after` of the previous page.
    after: Option<i64>,
    limit: Option<i64>,
}

fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    let t = humantime::parse_rfc3339_weak(text).map_err(|_| {
        ApiError::bad_request(format!(
            "{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z"
        ))
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::bad_request(format!("{name} is before 1970")))?
        .as_millis();
    i64::try_from(ms).map_err(|_| ApiError::bad_request(format!("{name} is too far ahead")))
}

/// `GET /api/v1/audit[?user=NAME][&study=UID][&since=T][&until=T][&after=ID][&limit=N]`:
/// audit rows oldest first, at most `limit` (default 500, at most 5,000) per page.
pub async fn query(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(study) = &p.study {
        if !is_valid_uid(study) {
            return Err(ApiError::bad_request("study is not a valid UID"));
        }
    }
    let q = AuditQuery {
        user: p.user,
        study_uid: p.study,
        since_ms: p
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until_ms: p
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
        after_id: p.after,
        limit: p.limit.unwrap_or(500).clamp(1, 5000),
    };
    let rows = state.catalog.audit_log(&q).await?;
    let next_after = rows.last().map(|r| r.id);
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "at": iso_time(r.at_ms),
                "at_ms": r.at_ms,
                "user": r.user_name,
                "role": r.role,
                "action": r.action,
                "route": r.route,
                "study_uid": r.study_uid,
                "item": r.item_id,
                "center": r.center_id,
                "address": r.address,
            })
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "next_after": next_after }),
    ))
}
