//! OIDC for deployments with an identity provider: a bearer JWT is checked against the
//! configured issuer's signing keys (its JWKS) and audience, and its role and center
//! come from configured claims. tamiz never sees the person's password.
//!
//! The JWKS is fetched at first use (from `jwks_url`, or the issuer's discovery
//! document) and again when a token names a key it does not hold (the provider rotated
//! its keys), at most once per `jwks_refetch_secs`, so a stream of tokens with made-up key ids cannot
//! make tamiz hammer the provider.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::catalog::{Identity, Role};
use crate::config::{Config, OidcConfig};

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// Why a JWT was not accepted (the message goes to the client: it names the check,
/// never the token).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider's token was refused: {0}")]
    Refused(String),
    /// The provider's keys could not be fetched (a server-side problem).
    #[error("the identity provider's signing keys could not be fetched: {0}")]
    Keys(String),
}

/// Checks bearer JWTs of one issuer.
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: Mutex<Option<(Instant, JwkSet)>>,
}

impl OidcVerifier {
    /// The verifier of `[auth.oidc]`, if configured.
    pub fn from_config(config: &Config) -> Option<OidcVerifier> {
        let oidc = config.auth.oidc.clone()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        Some(OidcVerifier {
            config: oidc,
            http,
            keys: Mutex::new(None),
        })
    }

    /// Whether `token` looks like a JWT (three base64url parts), not a tamiz token.
    pub fn is_jwt_shaped(token: &str) -> bool {
        token.split('.').count() == 3 && token.starts_with("ey")
    }

    /// The identity a valid JWT stands for; `centers` tells whether a center claim
    /// names a configured center of the role's kind.
    pub async fn verify(
        &self,
        token: &str,
        center_ok: impl Fn(Role, &str) -> bool,
    ) -> Result<Identity, OidcError> {
        let refused = |m: &str| OidcError::Refused(m.to_owned());
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| refused("not a readable JWT"))?;
        let alg = header.alg;
        if !matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(refused(
                "its algorithm is not one of an identity provider's (RS, PS, ES or EdDSA)",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| refused("its header names no key (kid)"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                refused(match e.kind() {
                    K::InvalidSignature => "its signature does not verify",
                    K::ExpiredSignature => "it has expired",
                    K::ImmatureSignature => "it is not valid yet (nbf)",
                    K::InvalidIssuer => "it was issued by another issuer",
                    K::InvalidAudience => "it is meant for another audience",
                    K::MissingRequiredClaim(_) => "it lacks exp, iss or aud",
                    K::InvalidAlgorithm => "its algorithm does not match its key",
                    _ => "it is not a valid JWT",
                })
            })?;
        let claims = data.claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let name = text(&self.config.name_claim)
            .or_else(|| text("sub"))
            .filter(|n| !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control))
            .ok_or_else(|| refused("it names no user"))?;
        let role = text(&self.config.role_claim)
            .and_then(|r| Role::parse(&r))
            .ok_or_else(|| {
                OidcError::Refused(format!(
                    "its claim `{}` holds no tamiz role (imaging_center, radiologist, coordinator, admin)",
                    self.config.role_claim
                ))
            })?;
        let center = text(&self.config.center_claim);
        let center = match role {
            Role::ImagingCenter | Role::Radiologist => match center {
                Some(c) if center_ok(role, &c) => Some(c),
                _ => {
                    return Err(OidcError::Refused(format!(
                        "its claim `{}` names no configured center for role {}",
                        self.config.center_claim,
                        role.as_str()
                    )))
                }
            },
            Role::Coordinator | Role::Admin => None,
        };
        Ok(Identity {
            user_id: None,
            name,
            role,
            center,
        })
    }

    /// The decoding key `kid`, fetching the JWKS when it is not held yet or lacks the
    /// key (rate-limited).
    async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        let mut keys = self.keys.lock().await;
        let stale = match &*keys {
            None => true,
            Some((at, set)) => {
                set.find(kid).is_none()
                    && at.elapsed() >= Duration::from_secs(self.config.jwks_refetch_secs)
            }
        };
        if stale {
            let set = self.fetch_keys().await?;
            *keys = Some((Instant::now(), set));
        }
        let jwk = keys
            .as_ref()
            .and_then(|(_, set)| set.find(kid))
            .ok_or_else(|| {
                OidcError::Refused("its key (kid) is not among the issuer's keys".into())
            })?;
        DecodingKey::from_jwk(jwk)
            .map_err(|_| OidcError::Refused("the issuer's key for it is unusable".into()))
    }

    async fn fetch_keys(&self) -> Result<JwkSet, OidcError> {
        let keys = |e: String| OidcError::Keys(e);
        let url = match &self.config.jwks_url {
            Some(u) => u.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc: Value = self
                    .http
                    .get(&discovery)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| keys(format!("{discovery}: {e}")))?
                    .json()
                    .await
                    .map_err(|e| keys(format!("{discovery}: {e}")))?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| keys(format!("{discovery} names no jwks_uri")))?
                    .to_owned()
            }
        };
        let set: JwkSet = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| keys(format!("{url}: {e}")))?
            .json()
            .await
            .map_err(|e| keys(format!("{url}: {e}")))?;
        tracing::info!(keys = set.keys.len(), "identity provider keys fetched");
        Ok(set)
    }
}
