//! OIDC: bearer JWTs of a local identity provider made in the test (an HTTP server
//! publishing its discovery document and JWKS, RSA keys made by openssl, tokens signed
//! with jsonwebtoken) are accepted with their role and center, and refused with the
//! reason when the issuer, audience, signature, expiry, algorithm or claims are wrong.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tamiz::config::OidcConfig;

/// base64url without padding (the JWK encoding of key numbers).
fn b64url(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An RSA key made by openssl: its PEM and its public JWK under `kid`.
fn rsa_key(dir: &Path, kid: &str) -> (Vec<u8>, Value) {
    let pem = dir.join(format!("{kid}.pem"));
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().strip_prefix("Modulus=").unwrap();
    let modulus: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let jwk = json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": b64url(&modulus), "e": "AQAB",
    });
    (std::fs::read(&pem).unwrap(), jwk)
}

/// The identity provider: discovery and JWKS on a local port; `keys` may change.
async fn start_issuer(keys: Arc<Mutex<Vec<Value>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/keys") });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .route(
            "/keys",
            get(move || {
                let keys = keys.lock().unwrap().clone();
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    issuer
}

fn now_secs() -> i64 {
    tamiz::now_ms() / 1000
}

fn sign(pem: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
}

async fn get_as(t: &TestServer, jwt: &str, path: &str) -> (u16, Value) {
    let resp = t
        .http
        .get(format!("{}{path}", t.url))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn jwts_of_the_configured_issuer_sign_people_in_and_every_wrong_one_is_refused() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (pem1, jwk1) = rsa_key(keys_dir.path(), "k1");
    let (pem2, jwk2) = rsa_key(keys_dir.path(), "k2");
    let published = Arc::new(Mutex::new(vec![jwk1]));
    let issuer = start_issuer(published.clone()).await;
    let iss = issuer.clone();
    let t = TestServer::start_with(move |c| {
        c.auth.oidc = Some(OidcConfig {
            issuer: iss,
            audience: "tamiz".into(),
            jwks_url: None,
            role_claim: "tamiz_role".into(),
            center_claim: "tamiz_center".into(),
            name_claim: "preferred_username".into(),
            jwks_refetch_secs: 0,
        });
    })
    .await;
    let claims = |over: Value| {
        let mut c = json!({
            "iss": issuer, "aud": "tamiz", "sub": "u-123",
            "preferred_username": "dr-oidc",
            "tamiz_role": "radiologist", "tamiz_center": "central",
            "iat": now_secs(), "exp": now_secs() + 600,
        });
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };

    let good = sign(&pem1, "k1", &claims(json!({})));
    assert_eq!(
        get_as(&t, &good, "/api/v1/centers/central/worklist")
            .await
            .0,
        200
    );
    let (code, err) = get_as(&t, &good, "/api/v1/centers/north/worklist").await;
    assert_eq!(
        (code, err["error"].as_str()),
        (403, Some("a radiologist user of central may not use the worklist of diagnosis center `north`"))
    );
    let rows = audit_rows(&t.server.catalog, "dr-oidc").await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.action.as_str(), r.role.as_str()))
            .collect::<Vec<_>>(),
        vec![("worklist.list", "radiologist")]
    );
    let coordinator = sign(
        &pem1,
        "k1",
        &claims(json!({ "tamiz_role": "coordinator", "tamiz_center": null })),
    );
    assert_eq!(get_as(&t, &coordinator, "/api/v1/summary").await.0, 200);
    assert_eq!(
        get_as(&t, &coordinator, "/api/v1/centers/central/worklist")
            .await
            .0,
        403
    );

    let refused = "the identity provider's token was refused: ";
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &claims(json!({})), &EncodingKey::from_secret(b"guess")).unwrap()
    };
    for (jwt, reason) in [
        (
            sign(&pem1, "k1", &claims(json!({ "iss": "http://127.0.0.1:1" }))),
            "it was issued by another issuer",
        ),
        (
            sign(&pem1, "k1", &claims(json!({ "aud": "another-app" }))),
            "it is meant for another audience",
        ),
        (
            sign(&pem1, "k1", &claims(json!({ "exp": now_secs() - 3600 }))),
            "it has expired",
        ),
        // Signed by a key the issuer never published, under a published key's id.
        (sign(&pem2, "k1", &claims(json!({}))), "its signature does not verify"),
        (
            hs256,
            "its algorithm is not one of an identity provider's (RS, PS, ES or EdDSA)",
        ),
        (
            sign(&pem1, "k1", &claims(json!({ "tamiz_role": "superuser" }))),
            "its claim `tamiz_role` holds no tamiz role (imaging_center, radiologist, coordinator, admin)",
        ),
        (
            sign(&pem1, "k1", &claims(json!({ "tamiz_center": "elsewhere" }))),
            "its claim `tamiz_center` names no configured center for role radiologist",
        ),
        (sign(&pem2, "k2", &claims(json!({}))), "its key (kid) is not among the issuer's keys"),
    ] {
        let (code, err) = get_as(&t, &jwt, "/api/v1/centers/central/worklist").await;
        assert_eq!(
            (code, err["error"].as_str()),
            (401, Some(format!("{refused}{reason}").as_str())),
            "{reason}"
        );
        assert!(!err.to_string().contains(&jwt), "the token came back");
    }

    // The provider rotates its keys: a token under the new key is accepted once
    // tamiz fetches the keys again.
    published.lock().unwrap().push(jwk2);
    let rotated = sign(&pem2, "k2", &claims(json!({})));
    assert_eq!(
        get_as(&t, &rotated, "/api/v1/centers/central/worklist")
            .await
            .0,
        200
    );
    // API tokens keep working beside the provider.
    assert_eq!(
        t.get_json_as("radiologist-central", "/api/v1/centers/central/worklist")
            .await
            .0,
        200
    );
    t.stop().await;
}
