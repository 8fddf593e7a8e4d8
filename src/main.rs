//! The `tamiz` command: parses the command line and calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tamiz::config::Config;

#[derive(Parser)]
#[command(
    name = "tamiz",
    version,
    about = "Mammography screening pipeline: ingest, AI triage, prioritized worklists"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, ingest and the triage workers (embedded SQLite + local directory).
    Serve {
        /// Configuration file [default: pipeline.toml, all defaults if it is absent].
        #[arg(long)]
        config: Option<PathBuf>,
        /// API and ingest only: run no triage workers (and load no model).
        #[arg(long)]
        no_workers: bool,
    },
    /// Run triage workers only (no HTTP): lease jobs from the configured catalog,
    /// read studies from the configured store. SIGTERM finishes the jobs in hand.
    Worker {
        /// Configuration file [default: pipeline.toml, all defaults if it is absent].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker slots in this process [default: worker.concurrency].
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Upload DICOM files and folders to a tamiz server over STOW-RS.
    Upload {
        /// Base URL of the server, e.g. http://127.0.0.1:8042
        #[arg(long, env = "TAMIZ_URL", default_value = "http://127.0.0.1:8042")]
        url: String,
        /// API token of an imaging-center user (`tamiz users add NAME --role
        /// imaging_center --center ID` prints one).
        #[arg(long, env = "TAMIZ_TOKEN", hide_env_values = true)]
        token: String,
        /// Imaging center id, sent as X-Tamiz-Center: only an admin token acting as a
        /// gateway may name one; an imaging-center token uploads for its own center.
        #[arg(long)]
        center: Option<String>,
        /// Also trust the CA certificate(s) in this PEM file (a server whose
        /// certificate a private CA signed); the system's CAs are always trusted.
        #[arg(long, env = "TAMIZ_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// Files or folders (walked recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Manage users and their API tokens in the configured catalog (also while the
    /// server runs).
    Users {
        /// Configuration file [default: pipeline.toml, all defaults if it is absent].
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: UsersCommand,
    },
    /// A screening day end to end on the embedded default, printed as worklists.
    Demo {
        #[arg(long, default_value = "pipeline.toml")]
        config: PathBuf,
        /// Synthetic studies per imaging center.
        #[arg(long, default_value_t = 8)]
        studies_per_center: usize,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Where the demo's catalog and objects go (wiped first).
        #[arg(long, default_value = "tamiz-demo")]
        data_dir: PathBuf,
        /// Keep the API up after the demo (on the configured address).
        #[arg(long)]
        keep_serving: bool,
    },
    /// A year of the program through the real routing code, home-only routing beside
    /// exchange of services: waits, reads within the due time and within 7 days, and
    /// exchange volume per center and institution.
    Simulate {
        #[arg(long, default_value = "pipeline.toml")]
        config: PathBuf,
        #[arg(long, default_value_t = 500_000)]
        studies: u64,
        #[arg(long, default_value_t = 2027)]
        year: i32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 0.04)]
        urgent_share: f64,
        #[arg(long, default_value_t = 0.03)]
        untriaged_share: f64,
        #[arg(long, default_value_t = 0.55)]
        low_share: f64,
        /// Share of a center's working days with half its readers absent.
        #[arg(long, default_value_t = 0.05)]
        absence_rate: f64,
        /// CENTER=FACTOR: a diagnosis center reads at FACTOR times its capacity
        /// (repeatable), e.g. `--capacity hospital-norte=0.5`.
        #[arg(long, value_parser = parse_capacity)]
        capacity: Vec<(String, f64)>,
        /// Scratch catalogs (removed at the end) [default: a temporary folder].
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Score a labelled folder (DICOM files + labels.csv) with the pipeline's own path.
    Evaluate {
        dir: PathBuf,
        #[arg(long, default_value = "models/triage.toml")]
        card: PathBuf,
        /// Also break the results down by this column of labels.csv (e.g. `variant`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Write synthetic screening studies (DICOM) and their labels.csv.
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        studies: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of studies with a lesion.
        #[arg(long, default_value_t = 0.5)]
        cancer_fraction: f64,
        /// Store the studies in every vendor convention in turn (SIGMOID, VOI LUT
        /// Sequence, MONOCHROME1, 10-bit, markers, For Processing, ...), named in the
        /// `variant` column of labels.csv.
        #[arg(long)]
        variants: bool,
    },
    /// Write a preprocessed synthetic training set (x.npy, y.npy, study.npy).
    Dataset {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 600)]
        studies: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "models/triage.toml")]
        card: PathBuf,
        /// Train on every For Presentation vendor convention in turn.
        #[arg(long)]
        variants: bool,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user; prints its first API token alone on stdout, once.
    Add {
        name: String,
        /// imaging_center, radiologist, coordinator or admin.
        #[arg(long)]
        role: String,
        /// The imaging center (role imaging_center) or diagnosis center (radiologist).
        #[arg(long)]
        center: Option<String>,
        /// Also give the user a password for the sign-in page: asked for twice on a
        /// terminal, else read from the first line of stdin.
        #[arg(long)]
        password: bool,
    },
    /// Set a user's password (as `add --password` reads it); its sessions end.
    Password { name: String },
    /// List users: name, role, center, state, live tokens (never a credential).
    List,
    /// Disable a user: its tokens stop working at once.
    Disable { name: String },
    /// Print a new API token for a user; its earlier tokens stay until revoked.
    Token { name: String },
    /// Revoke every API token of a user.
    Revoke { name: String },
}

/// Ctrl-C, or SIGTERM (what service managers send).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Logs to stderr: plain text, coloured only when stderr is a terminal (never escape
/// codes in a log file), or one JSON object per line with `TAMIZ_LOG_FORMAT=json`
/// (for log shippers). `TAMIZ_LOG` filters.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAMIZ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tamiz=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("TAMIZ_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Serve { config, no_workers } => {
            init_tracing();
            let must_exist = config.is_some();
            let path = config.unwrap_or_else(|| PathBuf::from("pipeline.toml"));
            let mut config = Config::load(&path, must_exist)?;
            if no_workers {
                config.worker.concurrency = 0;
            }
            rt.block_on(async {
                let addr = config.server.http_addr.clone();
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                let server = tamiz::server::start(config, listener).await?;
                println!("tamiz serving on {}", server.base_url());
                shutdown_signal().await?;
                tracing::info!("shutting down: finishing jobs in hand");
                server.stop().await;
                Ok(())
            })
        }
        Command::Worker {
            config,
            concurrency,
        } => {
            init_tracing();
            let must_exist = config.is_some();
            let path = config.unwrap_or_else(|| PathBuf::from("pipeline.toml"));
            let mut config = Config::load(&path, must_exist)?;
            if let Some(n) = concurrency {
                config.worker.concurrency = n;
            }
            rt.block_on(async {
                let workers = tamiz::worker::start(config).await?;
                println!("tamiz worker running model {}", workers.model_version);
                shutdown_signal().await?;
                tracing::info!("shutting down: finishing jobs in hand");
                workers.stop().await;
                Ok(())
            })
        }
        Command::Upload {
            url,
            token,
            center,
            ca_cert,
            paths,
        } => {
            let report = rt.block_on(tamiz::upload::upload_with(
                &url,
                &token,
                center.as_deref(),
                ca_cert.as_deref(),
                &paths,
                true,
            ))?;
            if report.failed() > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Users { config, action } => {
            // The file must exist: on defaults this would make a new, empty catalog
            // (and key) in ./tamiz-data and print tokens that work nowhere.
            let path = config.unwrap_or_else(|| PathBuf::from("pipeline.toml"));
            let config = Config::load(&path, true)?;
            rt.block_on(users(config, action))
        }
        Command::Demo {
            config,
            studies_per_center,
            seed,
            data_dir,
            keep_serving,
        } => {
            if std::env::var_os("TAMIZ_LOG").is_some() {
                init_tracing();
            }
            let mut config = Config::load(&config, true)?;
            if std::env::var_os("TAMIZ_DATA_DIR").is_none() {
                config.server.data_dir = data_dir;
            }
            rt.block_on(tamiz::demo::run(
                config,
                tamiz::demo::DemoOptions {
                    studies_per_center,
                    seed,
                    keep_serving,
                },
            ))
        }
        Command::Simulate {
            config,
            studies,
            year,
            seed,
            urgent_share,
            untriaged_share,
            low_share,
            absence_rate,
            capacity,
            work_dir,
        } => {
            let config = Config::load(&config, true)?;
            let options = tamiz::simulate::Options {
                studies,
                year,
                seed,
                urgent_share,
                untriaged_share,
                low_share,
                absence_rate,
                capacity_factors: capacity,
            };
            let tmp = tempfile::tempdir_in(work_dir.unwrap_or_else(std::env::temp_dir))
                .context("creating the simulation's scratch folder")?;
            let report = tamiz::simulate::run(&config, &options, tmp.path())?;
            print!("{}", report.table());
            Ok(())
        }
        Command::Evaluate { dir, card, by } => {
            let model = tamiz::model::Model::load(&card, 0)?;
            let e = tamiz::evaluate::evaluate(&dir, &model, &Default::default(), by.as_deref())?;
            print!("{}", tamiz::evaluate::report(&e, &model));
            Ok(())
        }
        Command::Synth {
            out,
            studies,
            seed,
            cancer_fraction,
            variants,
        } => {
            let plans =
                tamiz::dataset::write_synthetic(&out, studies, seed, cancer_fraction, variants)?;
            println!(
                "wrote {} studies ({} with a lesion) to {}",
                plans.len(),
                plans.iter().filter(|p| p.label() == 1).count(),
                out.display()
            );
            Ok(())
        }
        Command::Dataset {
            out,
            studies,
            seed,
            card,
            variants,
        } => {
            let (card, _) = tamiz::model::ModelCard::load(&card)?;
            tamiz::dataset::write_training_set(&out, studies, seed, &card, variants)?;
            println!("wrote {} views to {}", studies * 4, out.display());
            Ok(())
        }
    }
}

/// A new password: typed twice without echo on a terminal, else the first line of
/// stdin (for scripts).
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("password again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// `tamiz users ...` against the configured catalog.
async fn users(config: Config, action: UsersCommand) -> anyhow::Result<()> {
    use tamiz::catalog::{Catalog, Role};
    let catalog = Catalog::open(&config)
        .await
        .context("opening the catalog")?;
    let key = || tamiz::auth::TokenKey::load(&config);
    match action {
        UsersCommand::Add {
            name,
            role,
            center,
            password,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!(
                    "unknown role `{role}`: use imaging_center, radiologist, coordinator or admin"
                )
            })?;
            // Asked for before the user exists, so a refused password adds nothing.
            let password = if password {
                let p = read_password()?;
                tamiz::auth::check_password(&p)?;
                Some(p)
            } else {
                None
            };
            let token =
                tamiz::auth::add_user(&catalog, &key()?, &config, &name, role, center.as_deref())
                    .await?;
            if let Some(p) = password {
                tamiz::auth::set_password(&catalog, &name, &p).await?;
            }
            println!("{token}");
        }
        UsersCommand::List => {
            for u in catalog.users().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{} token(s)",
                    u.name,
                    u.role.0.as_str(),
                    u.center_id.as_deref().unwrap_or("-"),
                    if u.disabled { "disabled" } else { "enabled" },
                    u.active_tokens
                );
            }
        }
        UsersCommand::Disable { name } => {
            catalog.set_user_disabled(&name, true).await?;
            eprintln!("user {name} disabled");
        }
        UsersCommand::Token { name } => {
            let token = tamiz::auth::issue_token(&catalog, &key()?, &name).await?;
            println!("{token}");
        }
        UsersCommand::Password { name } => {
            let p = read_password()?;
            tamiz::auth::set_password(&catalog, &name, &p).await?;
            eprintln!("password of {name} set; its sessions ended");
        }
        UsersCommand::Revoke { name } => {
            let n = catalog.revoke_tokens(&name, tamiz::now_ms()).await?;
            eprintln!("{n} token(s) of {name} revoked");
        }
    }
    Ok(())
}

/// `CENTER=FACTOR` of `tamiz simulate --capacity`.
fn parse_capacity(s: &str) -> Result<(String, f64), String> {
    let (center, factor) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not CENTER=FACTOR"))?;
    let f: f64 = factor
        .parse()
        .map_err(|_| format!("`{factor}` is not a number"))?;
    if !(f.is_finite() && f > 0.0) {
        return Err(format!("the factor of {center} must be > 0"));
    }
    Ok((center.to_owned(), f))
}
