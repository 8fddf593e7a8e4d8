//! Sign-in for people: the sign-in page, password check (rate-limited), a session
//! cookie, the home page of a signed-in user and sign-out.
//!
//! The session cookie is `HttpOnly`, `SameSite=Strict`, `Secure` under TLS, and ends
//! on the server (expiry, sign-out, a disabled user, a new password). Every
//! state-changing request of a session carries its CSRF token (header `X-CSRF-Token`,
//! or form field `csrf`), checked by [`super::access::require`]; the sign-in form
//! itself carries a token bound to a short-lived cookie (double submit), so a page of
//! another site cannot sign a browser in under another account.

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::{cookie, Caller, PeerAddress, SESSION_COOKIE};
use super::{ApiError, AppState};
use crate::catalog::Identity;

/// The cookie bound to the sign-in form's CSRF field.
const SIGNIN_COOKIE: &str = "tamiz_signin";

/// Headers of every page: nothing loads from elsewhere, no framing, no caching.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · tamiz</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         label{{display:block;margin:.8rem 0 .2rem}}input{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}}\
         button{{margin-top:1rem;font-size:1rem;padding:.5rem 1.2rem}}.error{{color:#a00}}code{{background:#eee;padding:0 .2rem}}\
         </style></head><body>{body}</body></html>\n",
        title = escape(title),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// HTML text escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A `Set-Cookie` value; `Secure` when the server speaks TLS.
fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: i64,
) -> HeaderValue {
    let secure = if state.config.server.tls_enabled() {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// The sign-in page with a fresh form token, and an optional message.
fn signin_page(
    state: &AppState,
    status: StatusCode,
    message: Option<&str>,
    name: &str,
) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let error = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>tamiz</h1><p>Mammography screening: sign in to your worklist or program view.</p>{error}\
         <form method=\"post\" action=\"/signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <label for=\"name\">User name</label><input id=\"name\" name=\"name\" autocomplete=\"username\" required value=\"{name}\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>",
        name = escape(name),
    );
    let mut r = page(status, "Sign in", &body);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGNIN_COOKIE, &token, "/signin", 3600),
    );
    r
}

/// `GET /signin`: the sign-in form.
pub async fn signin_form(State(state): State<AppState>) -> Response {
    signin_page(&state, StatusCode::OK, None, "")
}

#[derive(Deserialize)]
pub struct SigninForm {
    name: String,
    password: String,
    csrf: String,
}

/// `POST /signin` (form): checks the form token, the failure limit, then the
/// password; a session cookie and a redirect home on success.
pub async fn signin(
    State(state): State<AppState>,
    PeerAddress(address): PeerAddress,
    headers: HeaderMap,
    form: Result<Form<SigninForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return signin_page(
            &state,
            StatusCode::BAD_REQUEST,
            Some("the sign-in form was not sent whole; try again"),
            "",
        );
    };
    let name: String = form.name.trim().chars().take(64).collect();
    let bound = cookie(&headers, SIGNIN_COOKIE);
    if form.csrf.is_empty() || bound.as_deref() != Some(form.csrf.as_str()) {
        return signin_page(
            &state,
            StatusCode::FORBIDDEN,
            Some("the sign-in form expired or did not come from this site; try again"),
            &name,
        );
    }
    match check_signin(&state, &name, &form.password, address.as_deref()).await {
        Ok(identity) => match start_session(&state, &identity).await {
            Ok(cookie_value) => {
                tracing::info!(user = %identity.name, "signed in");
                let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
                let h = r.headers_mut();
                h.append(header::SET_COOKIE, cookie_value);
                h.append(
                    header::SET_COOKIE,
                    set_cookie(&state, SIGNIN_COOKIE, "", "/signin", 0),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            Err(e) => e.into_response(),
        },
        Err(SigninError::Wrong) => signin_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("the user name or password is wrong"),
            &name,
        ),
        Err(SigninError::Limited { retry_after_secs }) => {
            let mut r = signin_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "too many failed sign-ins; try again in {} minutes",
                    retry_after_secs.div_ceil(60)
                )),
                &name,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Err(SigninError::Api(e)) => e.into_response(),
    }
}

enum SigninError {
    /// Unknown user, no password, disabled user or wrong password: one answer for all.
    Wrong,
    Limited {
        retry_after_secs: u64,
    },
    Api(ApiError),
}

impl From<crate::catalog::CatalogError> for SigninError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        SigninError::Api(e.into())
    }
}

async fn check_signin(
    state: &AppState,
    name: &str,
    password: &str,
    address: Option<&str>,
) -> Result<Identity, SigninError> {
    let auth = &state.config.auth;
    let now = crate::now_ms();
    let window_ms = auth.signin_window_secs as i64 * 1000;
    let (by_name, by_address) = state
        .catalog
        .signin_failures_since(name, address, now - window_ms)
        .await?;
    if by_name >= auth.signin_max_failures as i64
        || by_address >= auth.signin_max_failures_per_address as i64
    {
        tracing::warn!(
            address = address.unwrap_or("-"),
            "sign-in refused: failure limit reached"
        );
        return Err(SigninError::Limited {
            retry_after_secs: auth.signin_window_secs,
        });
    }
    let record = state.catalog.password_record(name).await?;
    let stored = record
        .as_ref()
        .filter(|r| !r.disabled)
        .and_then(|r| r.password_hash.clone());
    let password = password.to_owned();
    // The KDF runs off the async threads; an unknown user costs the same time.
    let ok = tokio::task::spawn_blocking(move || {
        crate::auth::verify_password(stored.as_deref(), &password)
    })
    .await
    .unwrap_or(false);
    if !ok {
        state
            .catalog
            .record_signin_failure(name, address, now)
            .await?;
        tracing::info!(address = address.unwrap_or("-"), "sign-in failed");
        return Err(SigninError::Wrong);
    }
    record.map(|r| r.identity).ok_or(SigninError::Wrong)
}

/// Records a new session for `identity`; returns its `Set-Cookie` value.
async fn start_session(state: &AppState, identity: &Identity) -> Result<HeaderValue, ApiError> {
    let value = format!("ts_{}", hex::encode(rand::random::<[u8; 32]>()));
    let csrf = hex::encode(rand::random::<[u8; 32]>());
    let now = crate::now_ms();
    let secs = state.config.auth.session_hours as i64 * 3600;
    let user_id = identity.user_id.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a password user without a row",
        )
    })?;
    state
        .catalog
        .create_session(
            user_id,
            &state.token_key.hash(&value),
            &csrf,
            now,
            now + secs * 1000,
        )
        .await?;
    Ok(set_cookie(state, SESSION_COOKIE, &value, "/", secs))
}

/// `GET /`: a signed-in user's home (who they are, what they may open, sign-out); the
/// sign-in form for anyone else.
pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Ok(Some((identity, csrf))) = super::access::session(&state, &headers).await else {
        return signin_page(&state, StatusCode::OK, None, "");
    };
    let links: Vec<(String, &str)> = match (identity.role, identity.center.as_deref()) {
        (crate::catalog::Role::Radiologist, Some(c)) => vec![(
            format!("/api/v1/centers/{c}/worklist"),
            "your diagnosis center's worklist",
        )],
        (crate::catalog::Role::Coordinator, _) => {
            vec![("/api/v1/summary".into(), "the program summary")]
        }
        (crate::catalog::Role::Admin, _) => vec![
            ("/api/v1/summary".into(), "the program summary"),
            ("/api/v1/audit".into(), "the audit log"),
        ],
        _ => vec![],
    };
    let items: String = links
        .iter()
        .map(|(href, what)| {
            format!(
                "<li><a href=\"{href}\">{what}</a></li>",
                href = escape(href)
            )
        })
        .collect();
    let body = format!(
        "<h1>tamiz</h1><p id=\"who\">Signed in as <strong>{name}</strong> ({role}{center}).</p>\
         <ul>{items}</ul>\
         <p>Scripts use the same routes with <code>X-CSRF-Token</code> on every change while signed in here.</p>\
         <form method=\"post\" action=\"/signout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Sign out</button></form>",
        name = escape(&identity.name),
        role = identity.role.as_str(),
        center = identity
            .center
            .as_deref()
            .map(|c| format!(", {}", escape(c)))
            .unwrap_or_default(),
    );
    let mut r = page(StatusCode::OK, "Home", &body);
    r.headers_mut().insert(
        "x-csrf-token",
        HeaderValue::from_str(&csrf).unwrap_or_else(|_| HeaderValue::from_static("")),
    );
    r
}

/// `POST /signout`: ends the session (its CSRF token was checked on the way in) and
/// clears the cookie. A caller with an API token has no session: 204.
pub async fn signout(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
    if !caller.via_session {
        return StatusCode::NO_CONTENT.into_response();
    }
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = state
            .catalog
            .end_session(&state.token_key.hash(&value), crate::now_ms())
            .await
        {
            return ApiError::from(e).into_response();
        }
    }
    tracing::info!(user = %caller.identity.name, "signed out");
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/signin")]).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", "/", 0),
    );
    r
}
