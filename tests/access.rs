//! Who may do what over HTTP: the role × center × route matrix, generated from the
//! router's own route list (a route without a row here fails), the refusals a stranger
//! or a user of another center meets, and the audit log.

mod common;

use std::collections::HashMap;
use std::process::Stdio;

use common::backends::{backends, use_fresh_catalog, Backend};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tamiz::api::{route_rules, Access, RouteRule};
use tamiz::catalog::{AuditContext, AuditQuery, Catalog, Identity, Role};

/// A well-formed token nobody was given.
const UNKNOWN_TOKEN: &str = "tz_0000000000000000000000000000000000000000000000000000000000000000";
const MISSING: &str = "missing credentials: send Authorization: Bearer <API token> (tamiz users token NAME), or sign in at /signin";
const NOT_VALID: &str = "the API token is not valid: unknown, revoked, or its user is disabled";

/// Who calls, in the matrix: no credentials, an unknown token, or a test user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    Unknown,
    User(&'static str),
}

const CALLERS: [Who; 8] = [
    Who::Nobody,
    Who::Unknown,
    Who::User("admin"),
    Who::User("coordinator"),
    Who::User("uploader-clinic-a"),
    Who::User("uploader-clinic-b"),
    Who::User("radiologist-central"),
    Who::User("radiologist-north"),
];

/// What a cell must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 200 (or 204 where the route answers "nothing to do" that way).
    Allowed,
    Unauthorized,
    Forbidden,
}

/// The rule of the access matrix, written out here independently of the router's
/// table: the data the matrix runs on is a clinic-b study `S` (home: central) on
/// central's worklist; path parameters name central and `S` or its item.
fn expected(method: &Method, path: &str, who: Who) -> Expect {
    use Expect::*;
    match (method.as_str(), path) {
        ("GET", "/" | "/signin" | "/healthz" | "/readyz" | "/metrics") => return Allowed,
        // The matrix's form carries no sign-in form token (its cookie): refused.
        ("POST", "/signin") => return Forbidden,
        _ => {}
    }
    let user = match who {
        Who::Nobody | Who::Unknown => return Unauthorized,
        Who::User(u) => u,
    };
    let allowed = |users: &[&str]| {
        if users.contains(&user) {
            Allowed
        } else {
            Forbidden
        }
    };
    match (method.as_str(), path) {
        // Any signed-in user; an API token has no session to end (204).
        ("POST", "/signout") => Allowed,
        ("POST", "/dicomweb/studies" | "/dicomweb/studies/{study}") => {
            allowed(&["admin", "uploader-clinic-a", "uploader-clinic-b"])
        }
        // Its imaging center (clinic-b), its diagnosis center's radiologists (central).
        ("GET", "/api/v1/studies/{study}" | "/api/v1/studies/{study}/cad-sr") => {
            allowed(&["admin", "uploader-clinic-b", "radiologist-central"])
        }
        // QIDO-RS over all studies: every study reader, each seeing its own.
        ("GET", "/dicomweb/studies") => allowed(&[
            "admin",
            "uploader-clinic-a",
            "uploader-clinic-b",
            "radiologist-central",
            "radiologist-north",
        ]),
        // WADO-RS and QIDO-RS inside a study: who may see the study.
        (
            "GET",
            "/dicomweb/studies/{study}"
            | "/dicomweb/studies/{study}/series"
            | "/dicomweb/studies/{study}/series/{series}/instances"
            | "/dicomweb/studies/{study}/series/{series}"
            | "/dicomweb/studies/{study}/series/{series}/instances/{instance}"
            | "/dicomweb/studies/{study}/metadata"
            | "/dicomweb/studies/{study}/series/{series}/metadata"
            | "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata"
            | "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
            | "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
        ) => allowed(&["admin", "uploader-clinic-b", "radiologist-central"]),
        ("GET", "/api/v1/centers/{center}/worklist")
        | ("POST", "/api/v1/centers/{center}/worklist/claim")
        | ("POST", "/api/v1/worklist/{item}/release")
        | ("POST", "/api/v1/worklist/{item}/reading") => allowed(&["admin", "radiologist-central"]),
        ("GET", "/api/v1/summary" | "/api/v1/exchange") => allowed(&["admin", "coordinator"]),
        ("GET", "/api/v1/audit") => allowed(&["admin"]),
        (m, p) => panic!(
            "route {m} {p} has no row in the access matrix of tests/access.rs: \
             say who may call it (and in the README's route table)"
        ),
    }
}

/// Uploads study `seed` as clinic-b and waits until it is on central's worklist.
async fn central_study(t: &TestServer, seed: u64) -> (String, i64) {
    let p = plan(seed, false);
    let parts = study_parts(&t.dir.path().join(format!("s{seed}")), &p);
    let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    let item = t.wait_worklisted(&p.study_uid).await.worklist.unwrap();
    assert_eq!(item.center, "central");
    (p.study_uid, item.id)
}

#[tokio::test]
async fn every_route_answers_each_role_and_center_as_its_rule_says() {
    let t = TestServer::start().await;
    let (study, _) = central_study(&t, 501).await;
    // Items to claim, release and read (two cells read one each).
    for seed in 502..505 {
        central_study(&t, seed).await;
    }
    let rules = route_rules();
    assert!(rules.len() >= 12, "{rules:?}");
    let mut seed = 600;
    let mut failures = Vec::new();
    for rule in &rules {
        for who in CALLERS {
            let want = expected(&rule.method, rule.path, who);
            seed += 1;
            let (code, body) = call(&t, rule, who, &study, want, seed).await;
            let ok = match want {
                Expect::Allowed => code == 200 || code == 204,
                Expect::Unauthorized => code == 401,
                Expect::Forbidden => code == 403,
            };
            // Every refusal is the documented JSON error.
            let documented = code < 400 || body["error"].as_str().is_some_and(|m| !m.is_empty());
            if !ok || !documented {
                failures.push(format!(
                    "{} {} as {who:?}: want {want:?}, got {code} {body}",
                    rule.method, rule.path
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    t.stop().await;
}

/// Makes the request of one cell, preparing what an allowed cell needs (a claimed item
/// for release and reading; a fresh study for uploads).
async fn call(
    t: &TestServer,
    rule: &RouteRule,
    who: Who,
    study: &str,
    want: Expect,
    seed: u64,
) -> (u16, Value) {
    let user = match who {
        Who::User(u) => Some(u),
        _ => None,
    };
    // The item a release or reading acts on: the head of central's queue, claimed
    // (taking over any claim: every claim counts as expired) by the caller where it
    // may act (an admin releases a radiologist's claim, reads its own), else by
    // central's radiologist.
    let mut item = 0;
    if rule.path.contains("{item}") {
        let holder = match (want, user, rule.path.ends_with("/reading")) {
            (Expect::Allowed, Some("admin"), true) => "admin",
            _ => "radiologist-central",
        };
        let now = t.server.catalog.clock_ms().await.unwrap();
        item = t
            .server
            .catalog
            .claim_next("central", holder, now, i64::MAX, None)
            .await
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "the matrix ran out of central items ({} {})",
                    rule.method, rule.path
                )
            })
            .id;
    }
    let first = t
        .server
        .catalog
        .retrievable_instances(study, None, None)
        .await
        .unwrap()
        .remove(0);
    let path = rule
        .path
        .replace("{study}", study)
        .replace("{series}", &first.series_uid)
        .replace("{instance}", &first.sop_uid)
        .replace("{center}", "central")
        .replace("{item}", &item.to_string())
        .replace("{frames}", "1");
    if rule.path.starts_with("/dicomweb/") && rule.method == Method::POST {
        // A fresh one-instance study per cell (an upload for one center must not
        // land in another center's study).
        let p = plan(seed, false);
        let parts = study_parts(&t.dir.path().join(format!("u{seed}")), &p);
        let path = rule.path.replace("{study}", &p.study_uid);
        return match who {
            Who::Nobody => t.stow_as(None, &path, &parts[..1], &[]).await,
            Who::Unknown => stow_with_token(t, UNKNOWN_TOKEN, &path, &parts[..1]).await,
            Who::User(u) => t.stow_as(Some(u), &path, &parts[..1], &[]).await,
        };
    }
    if rule.path == "/signin" && rule.method == Method::POST {
        let resp = t
            .http
            .post(format!("{}/signin", t.url))
            .form(&[
                ("name", "admin"),
                ("password", "not-the-password"),
                ("csrf", "forged"),
            ])
            .send()
            .await
            .unwrap();
        return (resp.status().as_u16(), json!({"error": "(sign-in page)"}));
    }
    let body = (rule.method == Method::POST).then(|| {
        if rule.path.ends_with("/reading") {
            json!({ "birads": 1, "density": "B" })
        } else {
            json!({})
        }
    });
    match who {
        Who::Unknown => {
            let mut req = t
                .http
                .request(rule.method.clone(), format!("{}{path}", t.url))
                .header("Authorization", format!("Bearer {UNKNOWN_TOKEN}"));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.json().await.unwrap_or(Value::Null))
        }
        _ => t.request_as(user, rule.method.clone(), &path, body).await,
    }
}

async fn stow_with_token(
    t: &TestServer,
    token: &str,
    path: &str,
    parts: &[Vec<u8>],
) -> (u16, Value) {
    let (ct, body) = multipart(parts);
    let resp = t
        .http
        .post(format!("{}{path}", t.url))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[test]
fn the_readme_route_table_names_every_route_and_its_roles() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for rule in route_rules() {
        let roles = match rule.access {
            Access::Open => "open".to_owned(),
            Access::Roles(r) => r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        };
        let row = format!("| `{} {}` | {roles} |", rule.method, rule.path);
        assert!(
            readme.contains(&row),
            "README.md's route table lacks the row `{row}`"
        );
    }
}

#[tokio::test]
async fn strangers_other_centers_and_dead_tokens_are_refused_with_the_reason() {
    let t = TestServer::start().await;
    let (study, item) = central_study(&t, 511).await;
    let status = format!("/api/v1/studies/{study}");

    // No credentials, a token of another kind, an unknown token: 401 with a challenge.
    let resp = t
        .http
        .get(format!("{}{status}", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"tamiz\"");
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], MISSING);
    for (header, message) in [
        (
            "Basic YWRtaW46YWRtaW4=",
            "unsupported Authorization scheme: expected Bearer",
        ),
        (
            "Bearer secret-password-123",
            "the bearer token is not a tamiz API token",
        ),
        (&format!("Bearer {UNKNOWN_TOKEN}"), NOT_VALID),
    ] {
        let resp = t
            .http
            .get(format!("{}{status}", t.url))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{header}");
        let text = resp.text().await.unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["error"],
            message
        );
        // A credential is never echoed.
        assert!(
            !text.contains("secret-password-123") && !text.contains("YWRtaW46"),
            "{text}"
        );
    }

    // A role outside the rule, a center outside the user's.
    let (code, err) = t.get_json_as("coordinator", &status).await;
    assert_eq!(
        (code, err["error"].as_str()),
        (
            403,
            Some("role coordinator may not call GET /api/v1/studies/{study} (allowed: imaging_center, radiologist, admin)")
        )
    );
    let (code, err) = t.get_json_as("uploader-clinic-a", &status).await;
    assert_eq!(
        (code, err["error"].as_str()),
        (
            403,
            Some(format!("a imaging_center user of clinic-a may not see study {study}: it belongs to another center").as_str())
        )
    );
    let (code, err) = t
        .get_json_as("radiologist-north", "/api/v1/centers/central/worklist")
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (
            403,
            Some("a radiologist user of north may not use the worklist of diagnosis center `central`")
        )
    );
    // A radiologist of another center can neither claim nor read central's items.
    let (code, _) = t
        .post_json_as(
            "radiologist-north",
            "/api/v1/centers/central/worklist/claim",
            json!({}),
        )
        .await;
    assert_eq!(code, 403);
    let (code, err) = t
        .post_json_as(
            "radiologist-north",
            &format!("/api/v1/worklist/{item}/reading"),
            json!({ "birads": 1, "density": "A" }),
        )
        .await;
    assert_eq!(code, 403, "{err}");
    // A coordinator cannot claim; a radiologist cannot upload.
    let (code, err) = t
        .post_json_as(
            "coordinator",
            "/api/v1/centers/central/worklist/claim",
            json!({}),
        )
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (403, Some("role coordinator may not call POST /api/v1/centers/{center}/worklist/claim (allowed: radiologist, admin)"))
    );
    let p = plan(512, false);
    let parts = study_parts(&t.dir.path().join("r"), &p);
    let (code, err) = t
        .stow_as(
            Some("radiologist-central"),
            "/dicomweb/studies",
            &parts[..1],
            &[],
        )
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (403, Some("role radiologist may not call POST /dicomweb/studies (allowed: imaging_center, admin)"))
    );
    // An imaging center cannot upload as another one; an admin gateway can.
    let (code, err) = t
        .stow_as(
            Some("uploader-clinic-a"),
            "/dicomweb/studies",
            &parts[..1],
            &[("X-Tamiz-Center", "clinic-b".to_owned())],
        )
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (403, Some("X-Tamiz-Center is honoured only for an admin token acting as a gateway; this imaging_center token uploads for clinic-a"))
    );
    assert!(
        t.stored_objects().await.is_empty()
            || !t
                .stored_objects()
                .await
                .iter()
                .any(|k| k.contains(&p.study_uid))
    );
    let (code, body) = t
        .stow_as(
            Some("admin"),
            "/dicomweb/studies",
            &parts[..1],
            &[("X-Tamiz-Center", "clinic-a".to_owned())],
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, s) = t
        .get_json(&format!("/api/v1/studies/{}", p.study_uid))
        .await;
    assert_eq!(s["imaging_center"], "clinic-a");
    // An imaging center's own upload is stored for its center, whatever the
    // Institution Name says (plan() writes "CLINIC B").
    let q = plan(513, false);
    let qparts = study_parts(&t.dir.path().join("q"), &q);
    let (code, _) = t
        .stow_as(
            Some("uploader-clinic-a"),
            "/dicomweb/studies",
            &qparts[..1],
            &[],
        )
        .await;
    assert_eq!(code, 200);
    let (code, s) = t
        .get_json_as(
            "uploader-clinic-a",
            &format!("/api/v1/studies/{}", q.study_uid),
        )
        .await;
    assert_eq!(
        (code, s["imaging_center"].as_str()),
        (200, Some("clinic-a"))
    );

    // A revoked token and a disabled user's token stop working at once.
    let mut t = t;
    let token = t.add_user("temp", Role::Radiologist, Some("central")).await;
    let worklist = "/api/v1/centers/central/worklist";
    assert_eq!(t.get_json_as("temp", worklist).await.0, 200);
    t.server
        .catalog
        .revoke_tokens("temp", tamiz::now_ms())
        .await
        .unwrap();
    let (code, err) = t.get_json_as("temp", worklist).await;
    assert_eq!((code, err["error"].as_str()), (401, Some(NOT_VALID)));
    let key = tamiz::auth::TokenKey::load(&t.server.config).unwrap();
    let fresh = tamiz::auth::issue_token(&t.server.catalog, &key, "temp")
        .await
        .unwrap();
    assert_ne!(fresh, token);
    t.tokens.insert("temp".into(), fresh);
    assert_eq!(t.get_json_as("temp", worklist).await.0, 200);
    t.server
        .catalog
        .set_user_disabled("temp", true)
        .await
        .unwrap();
    let (code, err) = t.get_json_as("temp", worklist).await;
    assert_eq!((code, err["error"].as_str()), (401, Some(NOT_VALID)));
    t.stop().await;
}

#[tokio::test]
async fn each_read_or_change_of_patient_data_leaves_exactly_one_audit_row() {
    let t = TestServer::start().await;
    let (study, _) = central_study(&t, 521).await;
    let c = &t.server.catalog;
    let r = "radiologist-central";
    assert!(audit_rows(c, r).await.is_empty());

    let (code, _) = t.get_json_as(r, &format!("/api/v1/studies/{study}")).await;
    assert_eq!(code, 200);
    let rows = audit_rows(c, r).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].action.as_str(),
            rows[0].route.as_str(),
            rows[0].study_uid.as_deref(),
            rows[0].role.as_str(),
            rows[0].address.as_deref()
        ),
        (
            "study.status",
            "GET /api/v1/studies/{study}",
            Some(study.as_str()),
            "radiologist",
            Some("127.0.0.1")
        )
    );

    assert_eq!(
        t.get_json_as(r, "/api/v1/centers/central/worklist").await.0,
        200
    );
    let (code, claimed) = t
        .post_json_as(r, "/api/v1/centers/central/worklist/claim", json!({}))
        .await;
    assert_eq!(code, 200, "{claimed}");
    let item = claimed["id"].as_i64().unwrap();
    let (code, _) = t
        .post_json_as(r, &format!("/api/v1/worklist/{item}/release"), json!({}))
        .await;
    assert_eq!(code, 200);
    let (code, again) = t
        .post_json_as(r, "/api/v1/centers/central/worklist/claim", json!({}))
        .await;
    assert_eq!((code, again["id"].as_i64()), (200, Some(item)));
    let (code, _) = t
        .post_json_as(
            r,
            &format!("/api/v1/worklist/{item}/reading"),
            json!({ "birads": 1, "density": "B" }),
        )
        .await;
    assert_eq!(code, 200);
    let actions: Vec<(String, Option<String>, Option<i64>)> = audit_rows(c, r)
        .await
        .into_iter()
        .map(|row| (row.action, row.study_uid, row.item_id))
        .collect();
    let s = Some(study.clone());
    assert_eq!(
        actions,
        vec![
            ("study.status".into(), s.clone(), None),
            ("worklist.list".into(), None, None),
            ("worklist.claim".into(), s.clone(), Some(item)),
            ("worklist.release".into(), s.clone(), Some(item)),
            ("worklist.claim".into(), s.clone(), Some(item)),
            ("reading.record".into(), s.clone(), Some(item)),
        ]
    );
    // A refused request, an empty claim and a coordinator's summary leave none.
    assert_eq!(
        t.get_json_as("radiologist-north", &format!("/api/v1/studies/{study}"))
            .await
            .0,
        403
    );
    assert_eq!(
        t.post_json_as(r, "/api/v1/centers/central/worklist/claim", json!({}))
            .await
            .0,
        204
    );
    assert_eq!(t.get_json_as("coordinator", "/api/v1/summary").await.0, 200);
    assert!(audit_rows(c, "radiologist-north").await.is_empty());
    assert!(audit_rows(c, "coordinator").await.is_empty());
    assert_eq!(audit_rows(c, r).await.len(), 6);

    // Admins read the log by user, study and time over HTTP.
    let (code, log) = t
        .get_json(&format!("/api/v1/audit?study={study}&user={r}"))
        .await;
    assert_eq!(code, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "the list names no study: {log}");
    assert!(entries
        .iter()
        .all(|e| e["user"] == r && e["study_uid"] == study.as_str()));
    let (_, future) = t.get_json("/api/v1/audit?since=2100-01-01T00:00:00Z").await;
    assert_eq!(future["entries"].as_array().unwrap().len(), 0);
    let (code, err) = t.get_json("/api/v1/audit?since=yesterday").await;
    assert_eq!(
        (code, err["error"].as_str()),
        (
            400,
            Some("since must be an RFC 3339 time such as 2026-12-01T00:00:00Z")
        )
    );
    t.stop().await;
}

#[tokio::test]
async fn the_audit_log_is_append_only_on_every_backend() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir.path().join("data"));
        use_fresh_catalog(&mut config, backend, &dir.path().join("secrets")).await;
        let catalog = Catalog::open(&config).await.unwrap();
        let who = Identity {
            user_id: Some(1),
            name: "ana".into(),
            role: Role::Radiologist,
            center: Some("central".into()),
        };
        let ctx = AuditContext {
            who: &who,
            route: "GET /api/v1/studies/{study}",
            address: Some("10.0.0.7"),
        };
        catalog
            .record_audit(&ctx.entry("study.status", Some("1.2.3"), None, None, 1000))
            .await
            .unwrap();
        let mut errors = Vec::new();
        for sql in [
            "UPDATE audit_log SET user_name = 'eve'",
            "DELETE FROM audit_log",
        ] {
            let r = match backend {
                Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&format!(
                        "sqlite://{}",
                        config.server.data_dir.join("catalog.sqlite").display()
                    ))
                    .await
                    .unwrap();
                    sqlx::query(sql).execute(&pool).await.map(|_| ())
                }
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(config.catalog.url.as_deref().unwrap())
                        .await
                        .unwrap();
                    sqlx::query(sql).execute(&pool).await.map(|_| ())
                }
            };
            errors.push(r.expect_err("the audit log refuses changes").to_string());
        }
        for e in &errors {
            assert!(
                e.contains("the audit log is append-only"),
                "{backend:?}: {e}"
            );
        }
        let rows = catalog
            .audit_log(&AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.user_name.as_str(), r.address.as_deref()))
                .collect::<Vec<_>>(),
            vec![("ana", Some("10.0.0.7"))],
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn tokens_and_passwords_never_reach_the_server_log() {
    let t = TestServer::start_with(|c| c.worker.concurrency = 0).await;
    let config = t.dir.path().join("api.toml");
    std::fs::write(&config, "[worker]\nconcurrency = 0\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = t
        .node_command(&["serve", "--no-workers"], &config)
        .env("TAMIZ_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TAMIZ_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    while t.http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(started.elapsed().as_secs() < 60, "API node did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut sent = HashMap::new();
    for user in ["admin", "radiologist-central", "uploader-clinic-b"] {
        sent.insert(user, t.token(user).to_owned());
    }
    let p = plan(531, false);
    let parts = study_parts(&t.dir.path().join("in"), &p);
    for (user, token) in &sent {
        for path in [
            "/api/v1/summary",
            "/api/v1/centers/central/worklist",
            "/dicomweb/studies",
        ] {
            let (ct, body) = multipart(&parts[..1]);
            let _ = t
                .http
                .post(format!("{url}{path}"))
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", ct)
                .body(body)
                .send()
                .await; // a route that refuses early may close before the body is sent
            let _ = t
                .http
                .get(format!("{url}{path}"))
                .header("Authorization", format!("Bearer {token}x"))
                .send()
                .await;
        }
        let _ = user;
    }
    // A sign-in with a wrong and then the right password, through the sign-in form.
    let password = "a passphrase nobody logs";
    tamiz::auth::set_password(&t.server.catalog, "radiologist-central", password)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for attempt in ["wrong passphrase 123", password] {
        let form = http.get(format!("{url}/signin")).send().await.unwrap();
        let cookie = form.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let html = form.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        let resp = http
            .post(format!("{url}/signin"))
            .header("Cookie", cookie)
            .form(&[
                ("name", "radiologist-central"),
                ("password", attempt),
                ("csrf", &csrf),
            ])
            .send()
            .await
            .unwrap();
        let expected = if attempt == password { 303 } else { 401 };
        assert_eq!(resp.status().as_u16(), expected);
        if let Some(session) = resp.headers().get("set-cookie") {
            sent.insert(
                "session",
                session.to_str().unwrap()["tamiz_session=".len()..][..64].to_owned(),
            );
        }
    }
    terminate(&mut node);
    let out = node.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("tamiz serving"), "the log was captured: {log}");
    for token in sent.values() {
        // Not the token (or session cookie), nor its secret part.
        assert!(
            !log.contains(&token[3..]),
            "a token reached the log:\n{log}"
        );
    }
    assert!(log.contains("signed in"), "the sign-in was logged: {log}");
    for p in ["wrong passphrase 123", password] {
        assert!(!log.contains(p), "a password reached the log:\n{log}");
    }
}

/// SIGTERM: the node drains and exits, flushing its log.
fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
}
