//! `tamiz demo`: a screening day on the embedded default, end to end. Synthetic 4-view
//! studies (real DICOM files, some with lesions) for each imaging center are uploaded
//! with the upload client to a server started in-process; when every study is on a
//! worklist, each diagnosis center's worklist and the program summary are printed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::api::iso_time;
use crate::auth::{add_user, set_password, TokenKey};
use crate::catalog::{Catalog, Role};
use crate::config::Config;
use crate::dataset::{SYNTH_COLUMNS, SYNTH_ROWS};
use crate::parallel::threads;
use crate::synth::{plan_studies, write_study, Finding, StudyPlan};

pub struct DemoOptions {
    pub studies_per_center: usize,
    pub seed: u64,
    pub keep_serving: bool,
}

fn truth(p: &StudyPlan) -> String {
    match p.lesion {
        None => "normal".into(),
        Some((lat, l)) => {
            let what = match l.finding {
                Finding::Mass { spiculated: true } => "spiculated mass",
                Finding::Mass { .. } => "mass",
                Finding::Calcifications => "calcifications",
                Finding::Normal => "normal",
            };
            format!("{what} {}", lat.as_str())
        }
    }
}

/// A user the demo made, with its token (the demo's data directory is wiped on every
/// run, so printing tokens is what lets a newcomer try each role).
struct DemoUser {
    name: String,
    role: Role,
    center: Option<String>,
    token: String,
    password: String,
}

/// One user per role: an uploader per imaging center, a radiologist per diagnosis
/// center, a coordinator and an admin.
async fn demo_users(config: &Config, catalog: &Catalog) -> anyhow::Result<Vec<DemoUser>> {
    let key = TokenKey::load(config)?;
    let mut wanted: Vec<(String, Role, Option<String>)> = Vec::new();
    for c in &config.imaging_centers {
        wanted.push((
            format!("uploader-{}", c.id),
            Role::ImagingCenter,
            Some(c.id.clone()),
        ));
    }
    for d in &config.diagnosis_centers {
        wanted.push((
            format!("radiologist-{}", d.id),
            Role::Radiologist,
            Some(d.id.clone()),
        ));
    }
    wanted.push(("coordinator".into(), Role::Coordinator, None));
    wanted.push(("admin".into(), Role::Admin, None));
    let mut users = Vec::new();
    for (name, role, center) in wanted {
        let token = add_user(catalog, &key, config, &name, role, center.as_deref()).await?;
        let password = format!("demo-{}", hex::encode(rand::random::<[u8; 6]>()));
        set_password(catalog, &name, &password).await?;
        users.push(DemoUser {
            name,
            role,
            center,
            token,
            password,
        });
    }
    Ok(users)
}

pub async fn run(mut config: Config, opts: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    if config.imaging_centers.is_empty() {
        bail!("the demo needs [[imaging_centers]] in the configuration (see pipeline.toml)");
    }
    let data = config.server.data_dir.clone();
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("clearing {}", data.display()))?;
    }
    let input = data.join("demo-input");

    // 1. A screening day: synthetic studies per imaging center, about a third with a lesion.
    let centers: Vec<String> = config
        .imaging_centers
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let mut plans: Vec<(String, StudyPlan)> = Vec::new();
    for (i, c) in centers.iter().enumerate() {
        let name = config.imaging_centers[i].name.clone();
        for p in plan_studies(
            opts.studies_per_center,
            opts.seed + i as u64,
            0.35,
            SYNTH_ROWS,
            SYNTH_COLUMNS,
            &[&name],
        ) {
            plans.push((c.clone(), p));
        }
    }
    println!(
        "tamiz demo: {} synthetic screening studies ({} images of {}x{}) from {} imaging centers",
        plans.len(),
        plans.len() * 4,
        SYNTH_COLUMNS,
        SYNTH_ROWS,
        centers.len()
    );
    let written: Vec<anyhow::Result<Vec<PathBuf>>> = std::thread::scope(|s| {
        let chunk = plans.len().div_ceil(threads()).max(1);
        let hs: Vec<_> = plans
            .chunks(chunk)
            .map(|c| {
                let input = &input;
                s.spawn(move || {
                    c.iter()
                        .map(|(center, p)| write_study(p, &input.join(center)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("generator thread panicked"))
            .collect()
    });
    for w in written {
        w?;
    }
    println!("  generated in {:.1} s", started.elapsed().as_secs_f64());

    // 2. The server, in-process.
    let addr = if opts.keep_serving {
        config.server.http_addr.clone()
    } else {
        "127.0.0.1:0".into()
    };
    config.completeness.stable_after_secs = config.completeness.stable_after_secs.max(1);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let server = crate::server::start(config.clone(), listener).await?;
    let url = server.base_url();
    println!("  server on {url} (data in {})", data.display());

    // 3. One user per role (and per center), each with its API token.
    let users = demo_users(&config, &server.catalog).await?;
    let token_of = |name: &str| {
        users
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.token.clone())
            .unwrap_or_default()
    };

    // 4. Each imaging center uploads its day with its own token.
    let t_upload = Instant::now();
    for c in &centers {
        let token = token_of(&format!("uploader-{c}"));
        let report = crate::upload::upload(&url, &token, None, &[input.join(c)], false).await?;
        println!(
            "  {c}: uploaded {} files, {} stored, {} failed",
            report.results.len(),
            report.stored(),
            report.failed()
        );
        if report.failed() > 0 {
            for r in report.results.iter().filter(|r| r.outcome.is_err()) {
                println!(
                    "    {}: {}",
                    r.path.display(),
                    r.outcome.as_ref().err().map(String::as_str).unwrap_or("")
                );
            }
            bail!("the demo upload failed");
        }
    }
    println!("  upload took {:.1} s", t_upload.elapsed().as_secs_f64());

    // 5. Wait until every study is on a worklist.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut pending = 0;
        for (_, p) in &plans {
            let s = server.catalog.study_status(&p.study_uid).await?;
            if s.and_then(|s| s.worklist).is_none() {
                pending += 1;
            }
        }
        if pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{pending} studies were not triaged within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "  all studies triaged {:.1} s after upload started\n",
        t_upload.elapsed().as_secs_f64()
    );

    // 6. The worklists, as radiologists see them, with the synthetic ground truth.
    let truth_of: HashMap<&str, String> = plans
        .iter()
        .map(|(_, p)| (p.study_uid.as_str(), truth(p)))
        .collect();
    for d in &config.diagnosis_centers {
        let items = server.catalog.worklist(&d.id, 1000).await?;
        println!("Worklist of {} ({} studies)", d.name, items.len());
        println!(
            "  {:<3} {:<9} {:<21} {:>6}  {:<18} {:<28} reason",
            "#", "priority", "due", "score", "truth (synthetic)", "study"
        );
        for (i, it) in items.iter().enumerate() {
            let short: String = it
                .study_uid
                .chars()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            println!(
                "  {:<3} {:<9} {:<21} {:>6}  {:<18} ...{:<25} {}",
                i + 1,
                it.priority,
                iso_time(it.due_ms),
                it.score
                    .map(|s| format!("{s:.3}"))
                    .unwrap_or_else(|| "-".into()),
                truth_of
                    .get(it.study_uid.as_str())
                    .map(String::as_str)
                    .unwrap_or("?"),
                short,
                it.reason
            );
        }
        println!();
    }

    // 7. The coordinator's summary.
    let now = crate::now_ms();
    let (year, start, end) = crate::year_bounds(now);
    let s = server.catalog.summary(year, start, end, now).await?;
    println!("Program summary {year}");
    println!("  studies by state: {:?}", s.studies_by_state);
    println!(
        "  open worklist items by priority: {:?}",
        s.open_by_priority
    );
    match s.target {
        Some(t) => println!(
            "  screened this year: {} of {} ({:.3}%); pro-rata plan by today: {}",
            s.studies_this_year,
            t,
            100.0 * s.studies_this_year as f64 / t as f64,
            s.expected_by_now.unwrap_or(0)
        ),
        None => println!(
            "  screened this year: {} (no program target for {year})",
            s.studies_this_year
        ),
    }
    for c in &s.diagnosis_centers {
        println!(
            "  {}: {} queued, {} claimed, {} read, {} overdue",
            c.center, c.queued, c.claimed, c.read, c.overdue
        );
    }
    println!(
        "\ndemo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "\nDemo users, one per role: sign in on the sign-in page (/signin) with the password,\n\
         or call the API with the token (Authorization: Bearer TOKEN):"
    );
    for u in &users {
        println!(
            "  {:<24} {:<15} {:<10} {:<18} {}",
            u.name,
            u.role.as_str(),
            u.center.as_deref().unwrap_or("-"),
            u.password,
            u.token
        );
    }
    if opts.keep_serving {
        let radiologist = format!("radiologist-{}", config.default_diagnosis_center);
        println!(
            "\nserving on {url} until Ctrl-C; open {url}/signin in a browser, or try:\n  curl -H 'Authorization: Bearer {}' {url}/api/v1/summary\n  curl -H 'Authorization: Bearer {}' {url}/api/v1/centers/{}/worklist",
            token_of("coordinator"),
            token_of(&radiologist),
            config.default_diagnosis_center
        );
        tokio::signal::ctrl_c().await?;
    }
    server.stop().await;
    Ok(())
}
