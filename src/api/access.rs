//! Who may call which route. Every route of the router is declared once with its
//! [`Access`] rule ([`super::route_rules`] lists them for the README and the tests), and
//! a route with a role rule runs behind [`require`]: the credentials (an API token in
//! `Authorization: Bearer`, else a session cookie of a signed-in browser) become an
//! [`Identity`] or the request ends with 401, a role outside the rule ends it with 403,
//! and a session's state-changing request without its CSRF token ends with 403. Center rules (a radiologist sees only its own diagnosis center, an
//! imaging center only its own uploads) need the data, so the handlers apply them with
//! the [`Caller`] this layer leaves in the request.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::catalog::{AuditContext, Identity, Role};

/// The cookie of a signed-in browser session.
pub const SESSION_COOKIE: &str = "tamiz_session";
/// The header a session's scripts send its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The most a form body is read to find its `csrf` field.
const MAX_FORM_BYTES: usize = 16 << 10;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials (no patient data behind it).
    Open,
    /// Users holding one of these roles; handlers add center rules.
    Roles(&'static [Role]),
}

/// One route as the router declares it.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub method: Method,
    /// The path template, as axum matches it (`/api/v1/studies/{study}`).
    pub path: &'static str,
    pub access: Access,
}

/// The signed-in caller of a route with a role rule, and where the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// `METHOD /path/{param}`: the route template, for the audit log.
    pub route: String,
    pub address: Option<String>,
    /// Signed in through a browser session (not an API token).
    pub via_session: bool,
}

impl Caller {
    /// The audit context of an action this caller takes.
    pub fn audit(&self) -> AuditContext<'_> {
        AuditContext {
            who: &self.identity,
            route: &self.route,
            address: self.address.as_deref(),
        }
    }

    pub fn role(&self) -> Role {
        self.identity.role
    }

    /// The caller's center, for the roles that have one.
    pub fn center(&self) -> Option<&str> {
        self.identity.center.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        // Present on every route behind `require`; a handler on an open route that
        // asked for it is a programming error, answered without detail.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("a handler asked for the caller on a route without a role rule");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
    }
}

/// The middleware of a route with rule `Roles(roles)`: authenticates the request and
/// checks the role; the handler then finds a [`Caller`] in the request.
pub async fn require(
    State((state, rule)): State<(AppState, RouteRule)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Access::Roles(roles) = rule.access else {
        return next.run(req).await;
    };
    let (identity, session_csrf) = match authenticate(&state, req.headers()).await {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if !roles.contains(&identity.role) {
        return ApiError::forbidden(format!(
            "role {} may not call {} {} (allowed: {})",
            identity.role.as_str(),
            rule.method,
            rule.path,
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into_response();
    }
    let via_session = session_csrf.is_some();
    if let Some(expected) = session_csrf {
        if !rule.method.is_safe() {
            req = match check_csrf(req, &expected).await {
                Ok(r) => r,
                Err(e) => return e.into_response(),
            };
        }
    }
    let address = peer_address(req.extensions());
    req.extensions_mut().insert(Caller {
        identity,
        route: format!("{} {}", rule.method, rule.path),
        address,
        via_session,
    });
    next.run(req).await
}

/// The identity behind the request's credentials, and for a browser session its CSRF
/// token: `Authorization: Bearer` with an API token of an enabled user, else the
/// session cookie of a live session. Never echoes a credential.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Identity, Option<String>), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match session(state, headers).await? {
            Some((identity, csrf)) => Ok((identity, Some(csrf))),
            None if cookie(headers, SESSION_COOKIE).is_some() => Err(ApiError::unauthorized(
                "the session has ended or expired: sign in again at /signin",
            )),
            None => Err(ApiError::unauthorized(
                "missing credentials: send Authorization: Bearer <API token> (tamiz users token NAME), or sign in at /signin",
            )),
        };
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not readable text"))?;
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <API token>`",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized(
            "unsupported Authorization scheme: expected Bearer",
        ));
    }
    let token = token.trim();
    if let Some(oidc) = state.oidc.as_ref() {
        if crate::oidc::OidcVerifier::is_jwt_shaped(token) {
            let config = &state.config;
            let center_ok = |role: Role, c: &str| match role {
                Role::ImagingCenter => config.imaging_center(c).is_some(),
                Role::Radiologist => config.diagnosis_centers.iter().any(|d| d.id == c),
                _ => false,
            };
            return match oidc.verify(token, center_ok).await {
                Ok(identity) => Ok((identity, None)),
                Err(e @ crate::oidc::OidcError::Refused(_)) => {
                    Err(ApiError::unauthorized(e.to_string()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "OIDC keys");
                    Err(ApiError::unavailable(
                        "the identity provider's signing keys could not be fetched (see server log); retry later",
                        10,
                    ))
                }
            };
        }
    }
    if !crate::auth::is_token_shaped(token) {
        return Err(ApiError::unauthorized(
            "the bearer token is not a tamiz API token",
        ));
    }
    let hash = state.token_key.hash(token);
    match state.catalog.identity_for_token(&hash).await? {
        Some(identity) => Ok((identity, None)),
        None => Err(ApiError::unauthorized(
            "the API token is not valid: unknown, revoked, or its user is disabled",
        )),
    }
}

/// The live session named by the request's session cookie, with its CSRF token.
pub async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Identity, String)>, ApiError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    if !value.starts_with("ts_") || value.len() != 67 {
        return Ok(None);
    }
    let found = state
        .catalog
        .session_identity(&state.token_key.hash(&value), crate::now_ms())
        .await?;
    Ok(found.map(|s| (s.identity, s.csrf_token)))
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A session's state-changing request must carry the session's CSRF token: in header
/// `X-CSRF-Token`, or (a form) in field `csrf`; the form body is read (bounded) and
/// handed on unchanged.
async fn check_csrf(req: Request, expected: &str) -> Result<Request, ApiError> {
    let refused = || {
        ApiError::forbidden(
            "missing or wrong CSRF token: a signed-in browser sends its session's token \
             (X-CSRF-Token header, or form field csrf) with every change",
        )
    };
    let matches = |given: &str| {
        given.len() == expected.len()
            && given
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    };
    if let Some(given) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return if matches(given) {
            Ok(req)
        } else {
            Err(refused())
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refused());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ApiError::bad_request("the form is larger than 16 KiB"))?;
    let given = form_urlencoded_field(&bytes, "csrf");
    if !given.as_deref().is_some_and(matches) {
        return Err(refused());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The first value of field `name` in an `application/x-www-form-urlencoded` body.
fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The client's address as this server saw it (set per connection by [`crate::http`]).
fn peer_address(ext: &axum::http::Extensions) -> Option<String> {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
}

/// The client's address, for routes without a role rule (sign-in counts failures per
/// address).
pub struct PeerAddress(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<PeerAddress, Self::Rejection> {
        Ok(PeerAddress(peer_address(&parts.extensions)))
    }
}

/// A radiologist may use only its own diagnosis center's worklist; an admin any.
pub fn check_diagnosis_center(caller: &Caller, center: &str) -> Result<(), ApiError> {
    match caller.role() {
        Role::Admin => Ok(()),
        Role::Radiologist if caller.center() == Some(center) => Ok(()),
        role => Err(ApiError::forbidden(format!(
            "a {} user of {} may not use the worklist of diagnosis center `{}`",
            role.as_str(),
            caller.center().unwrap_or("no center"),
            center.chars().take(64).collect::<String>()
        ))),
    }
}
