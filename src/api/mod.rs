//! The HTTP API: DICOMweb STOW-RS for imaging centers, JSON for radiologists and
//! coordinators. One error type maps every failure to a status and a stable JSON body.

mod accept;
mod access;
mod audit;
mod exchange;
mod multipart;
mod qido;
mod session;
mod stow;
mod wado;
mod wado_frames;
mod wado_metadata;
pub use access::{Access, Caller, RouteRule};
pub use multipart::Framing;
pub use stow::{
    error_comment, CENTER_HEADER, FULL_REASON, PRIVATE_CREATOR, PRIVATE_CREATOR_NAME,
    RETRY_BUSY_SECS, RETRY_DISK_FULL_SECS, RETRY_TEMPORARY_SECS,
};
mod worklist;

use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::TokenKey;
use crate::catalog::{Catalog, CatalogError, Role};
use crate::config::Config;
use crate::ingest::Ingest;

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub ingest: Ingest,
    pub catalog: Catalog,
    pub config: std::sync::Arc<Config>,
    /// `name@version` of the model this process runs workers with; `None` on an
    /// API-only node.
    pub model: Option<String>,
    /// The key API tokens are checked with.
    pub token_key: TokenKey,
    /// Checks bearer JWTs of `[auth.oidc]`'s provider, where one is configured.
    pub oidc: Option<std::sync::Arc<crate::oidc::OidcVerifier>>,
}

const UPLOADERS: &[Role] = &[Role::ImagingCenter, Role::Admin];
/// Status of a study: its imaging center (own uploads), its diagnosis center's
/// radiologists, admins. Coordinators see aggregates only.
const STUDY_READERS: &[Role] = &[Role::ImagingCenter, Role::Radiologist, Role::Admin];
const READERS: &[Role] = &[Role::Radiologist, Role::Admin];
const PROGRAM: &[Role] = &[Role::Coordinator, Role::Admin];
const ADMINS: &[Role] = &[Role::Admin];
const ANYONE_SIGNED_IN: &[Role] = &Role::ALL;

/// A route of the router: its rule and its handler.
struct Route {
    rule: RouteRule,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match MethodFilter::try_from(method.clone()) {
        Ok(f) => f,
        Err(_) => unreachable!("routes use standard methods"),
    };
    Route {
        rule: RouteRule {
            method,
            path,
            access,
        },
        handler: axum::routing::on(filter, handler),
    }
}

/// Every route, with who may call it. The router is built from this list only, so a
/// route cannot exist without a rule.
fn routes() -> Vec<Route> {
    use Access::{Open, Roles};
    vec![
        route(Method::GET, "/", Open, session::home),
        route(Method::GET, "/signin", Open, session::signin_form),
        route(Method::POST, "/signin", Open, session::signin),
        route(
            Method::POST,
            "/signout",
            Roles(ANYONE_SIGNED_IN),
            session::signout,
        ),
        route(Method::GET, "/healthz", Open, || async { "ok" }),
        route(Method::GET, "/readyz", Open, readyz),
        route(Method::GET, "/metrics", Open, metrics),
        route(
            Method::POST,
            "/dicomweb/studies",
            Roles(UPLOADERS),
            stow::store_instances,
        ),
        route(
            Method::POST,
            "/dicomweb/studies/{study}",
            Roles(UPLOADERS),
            stow::store_instances_in_study,
        ),
        route(
            Method::GET,
            "/dicomweb/studies",
            Roles(STUDY_READERS),
            qido::search_studies,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series",
            Roles(STUDY_READERS),
            qido::search_series,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series/{series}/instances",
            Roles(STUDY_READERS),
            qido::search_instances,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}",
            Roles(STUDY_READERS),
            wado::retrieve_study,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series/{series}",
            Roles(STUDY_READERS),
            wado::retrieve_series,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
            Roles(STUDY_READERS),
            wado::retrieve_instance,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/metadata",
            Roles(STUDY_READERS),
            wado_metadata::study_metadata,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series/{series}/metadata",
            Roles(STUDY_READERS),
            wado_metadata::series_metadata,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
            Roles(STUDY_READERS),
            wado_metadata::instance_metadata,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            Roles(STUDY_READERS),
            wado_frames::instance_frames,
        ),
        route(
            Method::GET,
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
            Roles(STUDY_READERS),
            wado_frames::instance_rendered,
        ),
        route(
            Method::GET,
            "/api/v1/studies/{study}",
            Roles(STUDY_READERS),
            worklist::study_status,
        ),
        route(
            Method::GET,
            "/api/v1/studies/{study}/cad-sr",
            Roles(STUDY_READERS),
            wado::retrieve_cad_sr,
        ),
        route(
            Method::GET,
            "/api/v1/centers/{center}/worklist",
            Roles(READERS),
            worklist::list,
        ),
        route(
            Method::POST,
            "/api/v1/centers/{center}/worklist/claim",
            Roles(READERS),
            worklist::claim_next,
        ),
        route(
            Method::POST,
            "/api/v1/worklist/{item}/release",
            Roles(READERS),
            worklist::release,
        ),
        route(
            Method::POST,
            "/api/v1/worklist/{item}/reading",
            Roles(READERS),
            worklist::record_reading,
        ),
        route(
            Method::GET,
            "/api/v1/summary",
            Roles(PROGRAM),
            worklist::summary,
        ),
        route(
            Method::GET,
            "/api/v1/exchange",
            Roles(PROGRAM),
            exchange::accounts_of_month,
        ),
        route(Method::GET, "/api/v1/audit", Roles(ADMINS), audit::query),
    ]
}

/// Every route of the router with who may call it (the README's route table and the
/// access tests are checked against this list).
pub fn route_rules() -> Vec<RouteRule> {
    routes().into_iter().map(|r| r.rule).collect()
}

pub fn router(state: AppState) -> Router {
    let body_idle = std::time::Duration::from_secs(state.config.limits.body_idle_timeout_secs);
    let mut router = Router::new();
    for Route { rule, handler } in routes() {
        let path = rule.path;
        let handler = match rule.access {
            Access::Open => handler,
            Access::Roles(_) => handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), rule),
                access::require,
            )),
        };
        router = router.route(path, handler);
    }
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn(json_errors))
        // A body that stalls fails (408 on STOW-RS) instead of holding its slot.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_idle))
        .with_state(state)
}

/// An error answered to a client: a status and a message that names the problem,
/// and for a temporary refusal how long to wait before retrying.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// 401: answer with a `WWW-Authenticate: Bearer` challenge.
    pub challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
            challenge: false,
        }
    }
    /// 401: no credentials, or credentials that are not valid.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            challenge: true,
            ..ApiError::new(StatusCode::UNAUTHORIZED, message)
        }
    }
    /// 403: valid credentials outside the route's role or center.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    /// 503 with Retry-After: the server cannot take this now; the same request may
    /// succeed later.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(retry_after_secs)
    }
    pub fn retry_after(self, secs: u64) -> ApiError {
        ApiError {
            retry_after_secs: Some(secs),
            ..self
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
        let mut r = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after_secs {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tamiz\""),
            );
        }
        r
    }
}

/// Ready to take work: the catalog and the object store answer (and, where this
/// process runs workers, the model is loaded, which start-up guarantees). 503 naming
/// what is not ready otherwise. No patient data.
/// `GET /metrics`: Prometheus text (no patient data).
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match crate::metrics::metrics()
        .render(&state.catalog, &state.config.drift)
        .await
    {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "rendering metrics failed");
            ApiError::unavailable(
                "metrics unavailable: the catalog did not answer (see server log)",
                5,
            )
            .into_response()
        }
    }
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let catalog = state.catalog.ping().await.err().map(|e| {
        tracing::warn!(error = %e, "readiness: catalog");
        "catalog unreachable (see server log)"
    });
    let store = state.ingest.store.check().await.err().map(|e| {
        tracing::warn!(error = %e, "readiness: object store");
        "object store unreachable (see server log)"
    });
    let problems: Vec<&str> = [catalog, store].into_iter().flatten().collect();
    if !problems.is_empty() {
        return ApiError::unavailable(format!("not ready: {}", problems.join("; ")), 5)
            .into_response();
    }
    Json(json!({
        "catalog": "ok",
        "object_store": "ok",
        "model": state.model,
    }))
    .into_response()
}

/// Makes every error body on every route the documented `{"error": "..."}`: axum's
/// own rejections (a bad path parameter, query or JSON body, an unknown route, a wrong
/// method) answer `text/plain` or nothing; their text becomes the message.
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    // JSON errors, and the pages of the sign-in flow (HTML by design), pass as they are.
    let documented = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json") || ct.starts_with("text/html"));
    if documented {
        return res;
    }
    let (parts, body) = res.into_parts();
    // Rejection texts are short; anything longer is cut, not buffered.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        match status {
            StatusCode::NOT_FOUND => "no such route".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
            s => s.canonical_reason().unwrap_or("error").to_owned(),
        }
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    for name in [header::RETRY_AFTER, header::ALLOW] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
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
