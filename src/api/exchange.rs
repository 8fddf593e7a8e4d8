//! `GET /api/v1/exchange?month=YYYY-MM[&format=csv]`: the month's accounts of the
//! exchange of services between institutions (`routing::accounts`), as JSON or CSV
//! (`format=csv`, or `Accept: text/csv`), for coordinators.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::routing::{accounts, month_of, parse_month};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeParams {
    /// Default: the current month.
    month: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

pub async fn accounts_of_month(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ExchangeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let csv = match p.format.as_deref() {
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv")),
        Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be json or csv, not `{other}`"
            )))
        }
    };
    let month = match p.month {
        Some(m) => m,
        None => month_of(crate::now_ms(), state.config.exchange.utc_offset_hours).0,
    };
    let (year, month) = parse_month(&month).map_err(ApiError::bad_request)?;
    let a = accounts(&state.config, &state.catalog, year, month).await?;
    if csv {
        let name = format!("attachment; filename=\"exchange-{}.csv\"", a.month);
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, name),
            ],
            a.to_csv(),
        )
            .into_response());
    }
    Ok(Json(a).into_response())
}
