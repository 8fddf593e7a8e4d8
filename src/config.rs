//! `pipeline.toml`: the one configuration file of a tamiz deployment.
//!
//! Every field has a default so an empty file (or none at all) runs the embedded mode.
//! Relative paths are resolved against the directory of the file they were read from,
//! so `tamiz serve --config /etc/tamiz/pipeline.toml` does not depend on the working
//! directory. `TAMIZ_HTTP_ADDR`, `TAMIZ_DATA_DIR`, `TAMIZ_DATABASE_URL`,
//! `TAMIZ_PSEUDONYM_SALT_FILE`, `TAMIZ_TOKEN_KEY_FILE`, `TAMIZ_TLS_CERT_FILE`,
//! `TAMIZ_TLS_KEY_FILE`, `TAMIZ_S3_BUCKET`, `TAMIZ_S3_PREFIX` and `TAMIZ_DICOM_ADDR`
//! override the file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub catalog: CatalogConfig,
    pub storage: StorageConfig,
    pub limits: Limits,
    pub model: ModelConfig,
    pub completeness: CompletenessConfig,
    pub worker: WorkerConfig,
    pub triage: TriageConfig,
    pub reading: ReadingConfig,
    /// Per imaging center and week, against the program (`src/drift.rs`).
    pub drift: crate::drift::DriftConfig,
    pub inbox: InboxConfig,
    /// The DICOM C-STORE listener (`src/dimse/`).
    pub dicom: DicomConfig,
    pub auth: AuthConfig,
    /// Where studies from an imaging center that is not configured are read.
    pub default_diagnosis_center: String,
    pub diagnosis_centers: Vec<DiagnosisCenter>,
    pub imaging_centers: Vec<ImagingCenter>,
    pub targets: Vec<Target>,
    /// The institutions that run diagnosis centers and exchange reading services.
    pub institutions: Vec<Institution>,
    /// Which institution may read for which, at what price (`src/routing/`).
    pub agreements: Vec<Agreement>,
    pub exchange: ExchangeConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API (DICOMweb, worklist, coordinator) listens on.
    pub http_addr: String,
    /// Embedded mode: the SQLite catalog and the object-store directory live here.
    pub data_dir: PathBuf,
    /// PEM certificate chain and private key: with both, the HTTP listener speaks
    /// TLS only (rustls). Without them it speaks plain HTTP and warns at start-up
    /// when it listens on anything but loopback.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The URL clients reach this server at (`https://tamiz.example.org`, behind a
    /// proxy its public name); overridden by `TAMIZ_PUBLIC_URL`. The root of the
    /// DICOMweb Retrieve URLs; unset: taken from each request's `Host`.
    pub public_url: Option<String>,
}

impl ServerConfig {
    /// Whether the listener speaks TLS (session cookies are then `Secure`).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }
}

/// Which catalog database runs, and where the pseudonym salt is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`; overridden by
    /// `TAMIZ_DATABASE_URL`. Unset: the embedded SQLite file in `server.data_dir`.
    pub url: Option<String>,
    /// Most connections this process opens to the database (0: 16 for PostgreSQL,
    /// 8 for SQLite).
    pub max_connections: u32,
    /// The file holding the salt of patient pseudonyms, kept out of the database
    /// that holds the pseudonyms; overridden by `TAMIZ_PSEUDONYM_SALT_FILE`. Unset:
    /// `pseudonym.salt` in `server.data_dir`, created on first start with SQLite;
    /// with PostgreSQL every node must be given the same file (a mounted secret).
    pub salt_file: Option<PathBuf>,
    /// A catalog whose loss costs nothing (`tamiz simulate`): SQLite commits without
    /// waiting for the disk. Never set from the file.
    #[serde(skip)]
    pub scratch: bool,
}

/// Where instance bytes are kept: an S3 bucket, or (unset) `objects/` in the data
/// directory. Endpoint, region and credentials of S3 come from the standard AWS
/// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Overridden by `TAMIZ_S3_BUCKET`.
    pub s3_bucket: Option<String>,
    /// Key prefix inside the bucket; overridden by `TAMIZ_S3_PREFIX`.
    pub s3_prefix: String,
}

/// Limits checked before an upload is allowed to cost memory or disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted DICOM instance, counted on the streamed bytes.
    pub max_instance_bytes: u64,
    /// Largest accepted STOW-RS request body, counted on the streamed bytes.
    pub max_request_bytes: u64,
    pub max_rows: u32,
    pub max_columns: u32,
    /// Deepest sequence nesting accepted (checked before parsing: dicom-rs recurses
    /// per level and overflows a thread's stack at about 1,800).
    pub max_nesting_depth: usize,
    /// Most value bytes in the attributes before Pixel Data (what ingest holds in
    /// memory per instance while it reads the header).
    pub max_header_bytes: u64,
    /// Upload requests processed at once; more are answered 503 with Retry-After.
    pub max_concurrent_uploads: usize,
    /// Bytes spooled across all uploads in progress; beyond it, 503 with Retry-After.
    pub max_upload_bytes_in_flight: u64,
    /// Longest multipart preamble or part header block (a body without its boundary
    /// is refused after this many bytes instead of being buffered whole).
    pub max_multipart_header_bytes: usize,
    /// Open HTTP connections; more are closed at once.
    pub max_connections: usize,
    /// A client must send a request's headers within this time (also the keep-alive
    /// idle timeout).
    pub header_timeout_secs: u64,
    /// A request body that sends nothing for this long is refused (408).
    pub body_idle_timeout_secs: u64,
    /// Most parts (instances) in one STOW-RS request; beyond it, 413.
    pub max_parts_per_request: usize,
    /// After the first `body_idle_timeout_secs`, a request body must arrive at least
    /// this fast on average (408 otherwise): a client trickling a byte now and then
    /// would otherwise hold an upload slot for as long as it likes.
    pub min_upload_bytes_per_sec: u64,
    /// Longest time one upload request may take, whatever its rate (408 beyond it).
    pub max_upload_secs: u64,
}

impl Limits {
    /// The bounds of the structural walk: a Deflated data set inflates to at most one
    /// instance's worth of bytes.
    pub fn guard(&self) -> crate::dicom::guard::GuardLimits {
        crate::dicom::guard::GuardLimits {
            max_depth: self.max_nesting_depth,
            max_inflated: self.max_instance_bytes,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The model card (TOML); the `.onnx` file it names sits beside it. Unset: the
    /// shipped model built into the binary (`models/triage.toml`).
    pub card: Option<PathBuf>,
    /// ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose.
    pub intra_threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletenessConfig {
    /// A study without all four screening views is processed once no instance has
    /// arrived for this long.
    pub stable_after_secs: u64,
    /// How often the server looks for studies that became stable.
    pub sweep_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// In-process workers started by `tamiz serve` (0: none, for API-only nodes).
    pub concurrency: usize,
    pub lease_secs: u64,
    pub heartbeat_secs: u64,
    /// After this many failed attempts a job is dead-lettered (and its study still
    /// goes to a worklist, untriaged).
    pub max_attempts: u32,
    /// Retry delay is `backoff_base_secs * 2^(attempt-1)`.
    pub backoff_base_secs: u64,
    pub poll_interval_ms: u64,
    /// Threads one job decodes and preprocesses a study's views on (0: every core).
    /// A worker sized to one core (a pod with `cpu: 1`) sets 1, with
    /// `model.intra_threads = 1`.
    pub decode_threads: usize,
}

/// Due times per priority class, counted from the study's first received instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriageConfig {
    pub urgent_days: u32,
    pub routine_days: u32,
    pub low_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadingConfig {
    /// A claim not turned into a reading within this time returns to the queue.
    pub claim_timeout_secs: u64,
}

impl Default for ReadingConfig {
    fn default() -> Self {
        ReadingConfig {
            claim_timeout_secs: 3600,
        }
    }
}

/// Credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The key API tokens are hashed with (a file of at least 32 hex digits), kept out
    /// of the database that holds the hashes; overridden by `TAMIZ_TOKEN_KEY_FILE`.
    /// Unset: `token.key` in `server.data_dir`, created on first use with SQLite; with
    /// PostgreSQL every node must be given the same file.
    pub token_key_file: Option<PathBuf>,
    /// How long a browser session lasts after sign-in.
    pub session_hours: u64,
    /// Failed sign-ins of one user name within `signin_window_secs` after which its
    /// sign-ins are refused (429) until the window has passed.
    pub signin_max_failures: u32,
    /// The same limit for failed sign-ins from one address, whatever the names.
    pub signin_max_failures_per_address: u32,
    pub signin_window_secs: u64,
    /// An OIDC identity provider whose bearer JWTs are accepted beside API tokens.
    pub oidc: Option<OidcConfig>,
}

/// `[auth.oidc]`: bearer JWTs signed by `issuer`'s keys for `audience`; role and
/// center from the named claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` the tokens must carry; also where discovery is read
    /// (`{issuer}/.well-known/openid-configuration`) unless `jwks_url` is set.
    pub issuer: String,
    /// The `aud` the tokens must carry (tamiz's client id at the provider).
    pub audience: String,
    pub jwks_url: Option<String>,
    /// The claim holding the tamiz role [tamiz_role].
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The claim holding the center of an imaging-center or radiologist user
    /// [tamiz_center].
    #[serde(default = "default_center_claim")]
    pub center_claim: String,
    /// The claim naming the person (readings and the audit log record it)
    /// [preferred_username, else sub].
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// A token naming a key the fetched JWKS lacks (the provider rotated its keys)
    /// fetches it again, at most once per this many seconds [60].
    #[serde(default = "default_jwks_refetch_secs")]
    pub jwks_refetch_secs: u64,
}

fn default_jwks_refetch_secs() -> u64 {
    60
}

fn default_role_claim() -> String {
    "tamiz_role".into()
}
fn default_center_claim() -> String {
    "tamiz_center".into()
}
fn default_name_claim() -> String {
    "preferred_username".into()
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_key_file: None,
            session_hours: 12,
            signin_max_failures: 5,
            signin_max_failures_per_address: 50,
            signin_window_secs: 900,
            oidc: None,
        }
    }
}

/// The bucket inbox (`inbox/{center}/` in the object store), scanned by every
/// `tamiz serve` node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    pub enabled: bool,
    /// How often the inbox is listed; a file is taken once two listings in a row saw
    /// it with the same size.
    pub scan_interval_secs: u64,
    /// Files handled at once by one node.
    pub concurrency: usize,
    /// A node's claim on a file it handles; a node that dies leaves the file to others
    /// after this long.
    pub claim_secs: u64,
}

/// The DICOM listener modalities and PACS push to (C-STORE, C-ECHO).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    /// `HOST:PORT` to listen on; overridden by `TAMIZ_DICOM_ADDR`. Unset: no listener.
    pub addr: Option<String>,
    /// The called AE title this node answers to.
    pub ae_title: String,
    /// Associations served at once; beyond it a request is rejected as transient
    /// ("local limit exceeded") so the sender tries again later.
    pub max_associations: usize,
    /// An association that sends nothing for this long is aborted.
    pub idle_timeout_secs: u64,
    /// Largest PDU this node receives (the sender's PDUs are at most this).
    pub max_pdu_length: u32,
    /// PEM certificate chain and private key: with both, the listener speaks DICOM
    /// over TLS only (PS3.15 Annex B, rustls).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for DicomConfig {
    fn default() -> Self {
        DicomConfig {
            addr: None,
            ae_title: "TAMIZ".into(),
            max_associations: 32,
            idle_timeout_secs: 60,
            max_pdu_length: 131_072,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            enabled: true,
            scan_interval_secs: 10,
            concurrency: 4,
            claim_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisCenter {
    pub id: String,
    pub name: String,
    /// The institution that runs this center (one of `[[institutions]]`).
    #[serde(default)]
    pub institution: Option<String>,
    /// Exchange groups: a study whose home center would read it too late may go to a
    /// center of another institution that shares a group with its home center.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Reading capacity; without it the center is never projected, and its studies
    /// stay at home as routed by imaging center.
    #[serde(default)]
    pub capacity: Option<Capacity>,
}

/// A diagnosis center's reading capacity, on its calendar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Studies read per working day.
    pub reads_per_day: f64,
    /// Working days: "mon" .. "sun" (default Monday to Friday).
    #[serde(default = "default_working_days")]
    pub working_days: Vec<String>,
    /// Days without reading, "YYYY-MM-DD".
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Days with another capacity than `reads_per_day` (a half day, an extra session).
    #[serde(default)]
    pub overrides: Vec<CapacityOverride>,
}

fn default_working_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityOverride {
    /// "YYYY-MM-DD".
    pub date: String,
    pub reads: f64,
}

/// An institution of the program (each runs some diagnosis centers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Institution {
    pub id: String,
    pub name: String,
}

/// What institution `reader` agreed to do for institution `home`: read the studies
/// of `home`'s beneficiaries, at a price per read, up to a monthly number. Without an
/// agreement, studies never go from `home` to `reader`; within one institution they
/// may always move, at no price.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// The institution whose studies are read (and which pays).
    pub home: String,
    /// The institution that reads them.
    pub reader: String,
    #[serde(default = "yes")]
    pub allowed: bool,
    #[serde(default)]
    pub price_per_read: f64,
    /// Most studies routed from `home` to `reader` per calendar month.
    #[serde(default)]
    pub monthly_cap: Option<u64>,
}

fn yes() -> bool {
    true
}

/// The program's calendar and the rebalancing pass.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    /// Hours east of UTC of the program's clock: working days, holidays and the
    /// months of the accounts are counted in it (Mexico City: -6).
    pub utc_offset_hours: i32,
    /// Reading hours of a working day, local time, `[start, end)`: a day's capacity is
    /// spread evenly over them.
    pub reading_hours: [u32; 2],
    /// How often the rebalancing pass runs (0: never).
    pub rebalance_interval_secs: u64,
    /// The currency of `price_per_read`, for the accounts.
    pub currency: String,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            utc_offset_hours: 0,
            reading_hours: [8, 16],
            rebalance_interval_secs: 300,
            currency: "MXN".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagingCenter {
    pub id: String,
    pub name: String,
    /// The diagnosis center that reads this center's studies.
    pub home: String,
    /// Institution Name (0008,0080) values that identify this center when the upload
    /// does not say which center it comes from.
    #[serde(default)]
    pub institution_names: Vec<String>,
    /// Calling AE titles of this center's modalities and PACS: a DICOM association
    /// from one of them stores for this center; other callers are rejected.
    #[serde(default)]
    pub ae_titles: Vec<String>,
}

/// A yearly screening target: the whole program, or one imaging center.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub year: i32,
    /// `None` for the program-wide target.
    #[serde(default)]
    pub center: Option<String>,
    pub mammograms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            catalog: CatalogConfig::default(),
            storage: StorageConfig::default(),
            limits: Limits::default(),
            model: ModelConfig::default(),
            completeness: CompletenessConfig::default(),
            worker: WorkerConfig::default(),
            triage: TriageConfig::default(),
            reading: ReadingConfig::default(),
            drift: Default::default(),
            inbox: InboxConfig::default(),
            dicom: DicomConfig::default(),
            auth: AuthConfig::default(),
            default_diagnosis_center: "central".into(),
            diagnosis_centers: vec![DiagnosisCenter {
                id: "central".into(),
                name: "Central diagnosis center".into(),
                ..Default::default()
            }],
            imaging_centers: Vec::new(),
            targets: Vec::new(),
            institutions: Vec::new(),
            agreements: Vec::new(),
            exchange: ExchangeConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: "127.0.0.1:8042".into(),
            data_dir: "tamiz-data".into(),
            tls_cert_file: None,
            tls_key_file: None,
            public_url: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_instance_bytes: 256 << 20,
            max_request_bytes: 4 << 30,
            max_rows: 8192,
            max_columns: 8192,
            max_nesting_depth: 64,
            max_header_bytes: 32 << 20,
            max_concurrent_uploads: 16,
            max_upload_bytes_in_flight: 2 << 30,
            max_multipart_header_bytes: 64 << 10,
            max_connections: 1024,
            header_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            max_parts_per_request: 1000,
            min_upload_bytes_per_sec: 16 << 10,
            max_upload_secs: 3600,
        }
    }
}

impl Default for CompletenessConfig {
    fn default() -> Self {
        CompletenessConfig {
            stable_after_secs: 600,
            sweep_interval_secs: 5,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 2,
            lease_secs: 120,
            heartbeat_secs: 20,
            max_attempts: 3,
            backoff_base_secs: 5,
            poll_interval_ms: 250,
            decode_threads: 0,
        }
    }
}

impl Default for TriageConfig {
    fn default() -> Self {
        TriageConfig {
            urgent_days: 2,
            routine_days: 7,
            low_days: 7,
        }
    }
}

impl Config {
    /// Reads `path`; a missing file at the default location means "all defaults".
    pub fn load(path: &Path, must_exist: bool) -> Result<Config, ConfigError> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut c: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
                let base = path.parent().unwrap_or(Path::new("."));
                c.resolve_paths(base);
                c
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Config::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        config.apply_env();
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        for p in [&mut self.server.data_dir]
            .into_iter()
            .chain(self.model.card.as_mut())
            .chain(self.catalog.salt_file.as_mut())
            .chain(self.auth.token_key_file.as_mut())
            .chain(self.server.tls_cert_file.as_mut())
            .chain(self.server.tls_key_file.as_mut())
            .chain(self.dicom.tls_cert_file.as_mut())
            .chain(self.dicom.tls_key_file.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    fn apply_env(&mut self) {
        if let Ok(bucket) = std::env::var("TAMIZ_S3_BUCKET") {
            self.storage.s3_bucket = Some(bucket);
        }
        if let Ok(prefix) = std::env::var("TAMIZ_S3_PREFIX") {
            self.storage.s3_prefix = prefix;
        }
        if let Ok(url) = std::env::var("TAMIZ_DATABASE_URL") {
            self.catalog.url = Some(url);
        }
        if let Ok(file) = std::env::var("TAMIZ_PSEUDONYM_SALT_FILE") {
            self.catalog.salt_file = Some(file.into());
        }
        if let Ok(file) = std::env::var("TAMIZ_TOKEN_KEY_FILE") {
            self.auth.token_key_file = Some(file.into());
        }
        if let Ok(file) = std::env::var("TAMIZ_TLS_CERT_FILE") {
            self.server.tls_cert_file = Some(file.into());
        }
        if let Ok(file) = std::env::var("TAMIZ_TLS_KEY_FILE") {
            self.server.tls_key_file = Some(file.into());
        }
        if let Ok(url) = std::env::var("TAMIZ_PUBLIC_URL") {
            self.server.public_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Ok(addr) = std::env::var("TAMIZ_HTTP_ADDR") {
            self.server.http_addr = addr;
        }
        if let Ok(addr) = std::env::var("TAMIZ_DICOM_ADDR") {
            self.dicom.addr = Some(addr).filter(|a| !a.is_empty());
        }
        if let Ok(dir) = std::env::var("TAMIZ_DATA_DIR") {
            self.server.data_dir = dir.into();
        }
    }

    /// Checks cross references so that a typo fails at start, not at routing time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.server.tls_cert_file.is_some() != self.server.tls_key_file.is_some() {
            return bad(
                "server.tls_cert_file and server.tls_key_file go together: set both for TLS, or neither"
                    .into(),
            );
        }
        if let Some(u) = &self.server.public_url {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && !u.contains(['?', '#', ' '])
                && u.len() < 512;
            if !ok {
                return bad(format!(
                    "server.public_url `{}` must be an http:// or https:// URL without query or fragment",
                    u.chars().take(80).collect::<String>()
                ));
            }
        }
        if self.auth.session_hours == 0 || self.auth.signin_max_failures == 0 {
            return bad(
                "auth.session_hours and auth.signin_max_failures must be at least 1".into(),
            );
        }
        if let Some(url) = &self.catalog.url {
            if !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                return bad(
                    "catalog.url (or TAMIZ_DATABASE_URL) must start with sqlite: or postgres:"
                        .into(),
                );
            }
        }
        let mut diag = HashSet::new();
        for d in &self.diagnosis_centers {
            check_id(&d.id)?;
            if !diag.insert(d.id.as_str()) {
                return bad(format!("diagnosis center `{}` is defined twice", d.id));
            }
        }
        if !diag.contains(self.default_diagnosis_center.as_str()) {
            return bad(format!(
                "default_diagnosis_center `{}` is not among [[diagnosis_centers]]",
                self.default_diagnosis_center
            ));
        }
        let mut imaging = HashSet::new();
        for c in &self.imaging_centers {
            check_id(&c.id)?;
            if !imaging.insert(c.id.as_str()) {
                return bad(format!("imaging center `{}` is defined twice", c.id));
            }
            if !diag.contains(c.home.as_str()) {
                return bad(format!(
                    "imaging center `{}` has home `{}`, which is not a diagnosis center",
                    c.id, c.home
                ));
            }
        }
        self.validate_dicom()?;
        for t in &self.targets {
            if let Some(c) = &t.center {
                if !imaging.contains(c.as_str()) {
                    return bad(format!(
                        "target for {} names unknown imaging center `{c}`",
                        t.year
                    ));
                }
            }
        }
        self.validate_exchange()?;
        let l = &self.limits;
        if l.max_nesting_depth == 0 || l.max_nesting_depth > 256 {
            // dicom-rs recurses once per level: deeper risks the parser's stack.
            return bad("limits.max_nesting_depth must be 1..=256".into());
        }
        if l.max_concurrent_uploads == 0 || l.max_connections == 0 {
            return bad(
                "limits.max_concurrent_uploads and limits.max_connections must be at least 1"
                    .into(),
            );
        }
        if l.max_upload_bytes_in_flight < l.max_instance_bytes {
            return bad(
                "limits.max_upload_bytes_in_flight must be at least limits.max_instance_bytes"
                    .into(),
            );
        }
        if l.header_timeout_secs == 0 || l.body_idle_timeout_secs == 0 {
            return bad(
                "limits.header_timeout_secs and limits.body_idle_timeout_secs must be > 0".into(),
            );
        }
        if l.max_header_bytes < 64 << 10 {
            return bad("limits.max_header_bytes must be at least 65536".into());
        }
        if l.max_parts_per_request == 0 || l.max_upload_secs == 0 {
            return bad(
                "limits.max_parts_per_request and limits.max_upload_secs must be at least 1".into(),
            );
        }
        if l.max_multipart_header_bytes < 1024 {
            return bad("limits.max_multipart_header_bytes must be at least 1024".into());
        }
        if self.worker.max_attempts == 0 {
            return bad("worker.max_attempts must be at least 1".into());
        }
        if self.worker.heartbeat_secs == 0 || self.worker.heartbeat_secs >= self.worker.lease_secs {
            return bad("worker.heartbeat_secs must be > 0 and < worker.lease_secs".into());
        }
        Ok(())
    }

    pub fn imaging_center(&self, id: &str) -> Option<&ImagingCenter> {
        self.imaging_centers.iter().find(|c| c.id == id)
    }

    pub fn diagnosis_center(&self, id: &str) -> Option<&DiagnosisCenter> {
        self.diagnosis_centers.iter().find(|c| c.id == id)
    }

    /// The agreement under which `reader` reads for `home`, if any.
    pub fn agreement(&self, home: &str, reader: &str) -> Option<&Agreement> {
        self.agreements
            .iter()
            .find(|a| a.home == home && a.reader == reader)
    }

    /// Institutions, agreements, capacities and calendars: every reference known,
    /// every number in range, every date a date.
    fn validate_exchange(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut inst = HashSet::new();
        for i in &self.institutions {
            check_id(&i.id)?;
            if !inst.insert(i.id.as_str()) {
                return bad(format!("institution `{}` is defined twice", i.id));
            }
        }
        let e = &self.exchange;
        if !(-12..=14).contains(&e.utc_offset_hours) {
            return bad("exchange.utc_offset_hours must be -12..=14".into());
        }
        let [start, end] = e.reading_hours;
        if start >= end || end > 24 {
            return bad(
                "exchange.reading_hours must be [start, end) with start < end <= 24".into(),
            );
        }
        for d in &self.diagnosis_centers {
            if let Some(i) = &d.institution {
                if !inst.contains(i.as_str()) {
                    return bad(format!(
                        "diagnosis center `{}` names institution `{i}`, which is not among [[institutions]]",
                        d.id
                    ));
                }
            }
            if !d.groups.is_empty() && (d.institution.is_none() || d.capacity.is_none()) {
                return bad(format!(
                    "diagnosis center `{}` is in exchange groups, so it needs an institution and a capacity",
                    d.id
                ));
            }
            for g in &d.groups {
                check_id(g)?;
            }
            if let Some(c) = &d.capacity {
                crate::routing::Calendar::new(c, e).map_err(|m| {
                    ConfigError::Invalid(format!("diagnosis center `{}`: capacity: {m}", d.id))
                })?;
            }
        }
        let mut pairs = HashSet::new();
        for a in &self.agreements {
            for i in [&a.home, &a.reader] {
                if !inst.contains(i.as_str()) {
                    return bad(format!(
                        "agreement {} -> {} names institution `{i}`, which is not among [[institutions]]",
                        a.home, a.reader
                    ));
                }
            }
            if a.home == a.reader {
                return bad(format!(
                    "agreement {} -> {}: an institution needs no agreement with itself",
                    a.home, a.reader
                ));
            }
            if !pairs.insert((a.home.as_str(), a.reader.as_str())) {
                return bad(format!(
                    "agreement {} -> {} is defined twice",
                    a.home, a.reader
                ));
            }
            if !(a.price_per_read.is_finite() && a.price_per_read >= 0.0) {
                return bad(format!(
                    "agreement {} -> {}: price_per_read must be a number >= 0",
                    a.home, a.reader
                ));
            }
        }
        Ok(())
    }
}

/// Center ids appear in URLs and logs: keep them to a safe alphabet.
impl Config {
    /// AE titles: 1-16 characters of PS3.5's AE repertoire (no backslash, no control
    /// characters, not all spaces), each calling title owned by one imaging center.
    fn validate_dicom(&self) -> Result<(), ConfigError> {
        let d = &self.dicom;
        check_ae_title(&d.ae_title, "dicom.ae_title")?;
        if d.tls_cert_file.is_some() != d.tls_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "dicom.tls_cert_file and dicom.tls_key_file go together: set both for TLS, or neither"
                    .into(),
            ));
        }
        if d.max_associations == 0 || d.idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "dicom.max_associations and dicom.idle_timeout_secs must be at least 1".into(),
            ));
        }
        if !(4096..=16 << 20).contains(&d.max_pdu_length) {
            return Err(ConfigError::Invalid(
                "dicom.max_pdu_length must be 4096..=16777216".into(),
            ));
        }
        let mut owners = std::collections::HashMap::new();
        for c in &self.imaging_centers {
            for t in &c.ae_titles {
                check_ae_title(t, &format!("imaging center `{}`: ae_titles", c.id))?;
                if let Some(other) = owners.insert(t.trim(), c.id.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "AE title `{}` is given to both imaging centers `{other}` and `{}`",
                        t.trim(),
                        c.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The imaging center whose modality calls with `calling_ae_title`.
    pub fn center_of_ae_title(&self, calling_ae_title: &str) -> Option<&ImagingCenter> {
        let t = calling_ae_title.trim();
        self.imaging_centers
            .iter()
            .find(|c| c.ae_titles.iter().any(|a| a.trim() == t))
    }
}

fn check_ae_title(title: &str, what: &str) -> Result<(), ConfigError> {
    let ok = !title.trim().is_empty()
        && title.len() <= 16
        && title
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{what}: AE title `{}` must be 1-16 printable ASCII characters without `\\`",
            title.escape_default()
        )))
    }
}

fn check_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "center id `{id}` must be 1-64 characters of letters, digits, `-` or `_`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c: Config = toml::from_str("").unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.http_addr, "127.0.0.1:8042");
        assert_eq!(c.default_diagnosis_center, "central");
    }

    #[test]
    fn unknown_home_center_is_rejected() {
        let c: Config = toml::from_str(
            r#"
            [[imaging_centers]]
            id = "c1"
            name = "Clinic"
            home = "nowhere"
            "#,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("nowhere"), "{err}");
    }

    #[test]
    fn misspelled_key_is_an_error() {
        let err = toml::from_str::<Config>("[worker]\nconcurency = 3\n").unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
    }

    #[test]
    fn ae_titles_are_checked_and_owned_by_one_center() {
        let with = |titles: &str, own: &str| {
            toml::from_str::<Config>(&format!(
                r#"
                [dicom]
                ae_title = "{own}"
                [[imaging_centers]]
                id = "a"
                name = "A"
                home = "central"
                ae_titles = ["MG1"]
                [[imaging_centers]]
                id = "b"
                name = "B"
                home = "central"
                ae_titles = [{titles}]
                "#
            ))
            .unwrap()
            .validate()
        };
        with(r#""MG2", "PACS_B""#, "TAMIZ").unwrap();
        assert_eq!(
            with(r#""MG1""#, "TAMIZ").unwrap_err().to_string(),
            "config: AE title `MG1` is given to both imaging centers `a` and `b`"
        );
        assert_eq!(
            with(r#""A\\B""#, "TAMIZ").unwrap_err().to_string(),
            "config: imaging center `b`: ae_titles: AE title `A\\\\B` must be 1-16 printable ASCII characters without `\\`"
        );
        assert_eq!(
            with(r#""MG2""#, "SEVENTEEN_CHARS_X").unwrap_err().to_string(),
            "config: dicom.ae_title: AE title `SEVENTEEN_CHARS_X` must be 1-16 printable ASCII characters without `\\`"
        );
        let c = with(r#""  MG2 ""#, "TAMIZ");
        assert!(c.is_ok());
    }
}
