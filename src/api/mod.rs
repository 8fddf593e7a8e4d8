//! The HTTP API: DICOMweb STOW-RS for imaging centers, JSON for radiologists and
//! coordinators. One error type maps every failure to a status and a stable JSON body.

mod stow;
pub use stow::CENTER_HEADER;
mod worklist;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::ingest::Ingest;

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub catalog: Catalog,
    pub config: std::sync::Arc<Config>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/dicomweb/studies", post(stow::store_instances))
        .route(
            "/dicomweb/studies/{study}",
            post(stow::store_instances_in_study),
        )
        .route("/api/v1/studies/{study}", get(worklist::study_status))
        .route("/api/v1/centers/{center}/worklist", get(worklist::list))
        .route(
            "/api/v1/centers/{center}/worklist/claim",
            post(worklist::claim_next),
        )
        .route(
            "/api/v1/worklist/{item}/reading",
            post(worklist::record_reading),
        )
        .route("/api/v1/summary", get(worklist::summary))
        .with_state(state)
}

/// An error answered to a client: a status and a message that names the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(m) => ApiError::not_found(m),
            CatalogError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            other => {
                // Internals stay in the log, not in the response.
                tracing::error!(error = %other, "catalog failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (see server log)",
                )
            }
        }
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC (seconds precision).
pub fn iso_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
