//! `tamiz simulate`: a year of a screening program run through the real routing code
//! ([`Router`], [`rebalance`]) on an embedded catalog at accelerated time, once with
//! every study read at home and once with exchange of services, from the same random
//! arrivals and absences.
//!
//! - Arrivals: `studies` over the working days (Monday to Friday) of `year`, in
//!   proportion to a month's seasonal weight ([`SEASON`]: October's awareness month
//!   high, the December holidays and the summer low), split among imaging centers by
//!   their yearly targets (equally without), at uniform times from 07:00 to 19:00.
//! - Triage: each study urgent, untriaged or low with the configured shares, else
//!   routine; due times from `[triage]`.
//! - Reading: each center reads its calendar's capacity through the reading hours,
//!   in hourly steps, in worklist order (as `claim_next` picks). On each working day a
//!   center is short of half its readers with probability `absence_rate`; routing does
//!   not foresee it.
//! - Rebalancing (exchange only): at the start of the reading day and at noon.
//! - After the year, reading goes on without arrivals until every study is read (or
//!   `DRAIN_DAYS` pass).
//!
//! The catalog is a scratch SQLite file (no fsync); the two routings run side by side.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{Datelike, NaiveDate, Weekday};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::catalog::{Catalog, NewItem, SimulatedStudy};
use crate::config::Config;
use crate::routing::{rebalance, Router};
use crate::triage::{Priority, Triage, DAY_MS};

const HOUR_MS: i64 = 3600 * 1000;
/// Reading goes on this long after the year's last arrival, at most.
pub const DRAIN_DAYS: i64 = 120;
/// Arrivals per working day by month, relative (January first).
pub const SEASON: [f64; 12] = [
    0.9, 0.95, 1.0, 1.0, 1.0, 0.95, 0.85, 0.9, 1.0, 1.2, 1.1, 0.85,
];

#[derive(Debug, Clone)]
pub struct Options {
    pub studies: u64,
    pub year: i32,
    pub seed: u64,
    pub urgent_share: f64,
    pub untriaged_share: f64,
    pub low_share: f64,
    pub absence_rate: f64,
    /// Diagnosis centers read at this factor of their configured capacity.
    pub capacity_factors: Vec<(String, f64)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            studies: 500_000,
            year: 2027,
            seed: 1,
            urgent_share: 0.04,
            untriaged_share: 0.03,
            low_share: 0.55,
            absence_rate: 0.05,
            capacity_factors: Vec::new(),
        }
    }
}

/// One routing's year.
#[derive(Debug, Clone)]
pub struct Run {
    pub exchange: bool,
    pub studies: Vec<SimulatedStudy>,
    pub moves: usize,
    pub elapsed: Duration,
}

/// Both routings' years.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub home_only: Run,
    pub exchange: Run,
    /// Diagnosis center → institution (for the per-institution rows).
    pub institutions: BTreeMap<String, String>,
}

/// Runs both routings over `config`'s program in scratch catalogs under `dir`, side by
/// side on one single-threaded runtime: each step waits on its catalog's SQLite thread,
/// and on this 2-core machine more scheduler threads only add wake-ups (measured: 32 s
/// for 50,000 studies this way, 39 s on two runtimes, 51 s on the multi-threaded one).
pub fn run(config: &Config, options: &Options, dir: &Path) -> anyhow::Result<Report> {
    let shares = [
        options.urgent_share,
        options.untriaged_share,
        options.low_share,
        options.absence_rate,
    ];
    if shares.iter().any(|s| !(0.0..=1.0).contains(s))
        || options.urgent_share + options.untriaged_share + options.low_share > 1.0
    {
        anyhow::bail!(
            "each share must be within 0..=1, and the urgent, untriaged and low shares together at most 1"
        );
    }
    let mut router = Router::new(config);
    for (center, factor) in &options.capacity_factors {
        if router.calendar(center).is_none() {
            anyhow::bail!(
                "--capacity {center}=...: `{center}` is not a diagnosis center with a capacity"
            );
        }
        router = router.with_capacity_factor(center, *factor);
    }
    if config.imaging_centers.is_empty() {
        anyhow::bail!("the configuration has no [[imaging_centers]] to send studies");
    }
    let (home_dir, exchange_dir) = (dir.join("home-only"), dir.join("exchange"));
    let (home_only, exchange) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the simulation")?
        .block_on(async {
            tokio::try_join!(
                run_one(
                    config,
                    options,
                    router.clone().home_only(),
                    false,
                    &home_dir
                ),
                run_one(config, options, router, true, &exchange_dir),
            )
        })?;
    let institutions = config
        .diagnosis_centers
        .iter()
        .filter_map(|d| Some((d.id.clone(), d.institution.clone()?)))
        .collect();
    Ok(Report {
        options: options.clone(),
        home_only,
        exchange,
        institutions,
    })
}

/// The imaging centers' shares of arrivals: by their latest yearly targets, else equal.
fn arrival_weights(config: &Config) -> Vec<(String, f64)> {
    let target = |id: &str| {
        config
            .targets
            .iter()
            .filter(|t| t.center.as_deref() == Some(id))
            .max_by_key(|t| t.year)
            .map(|t| t.mammograms as f64)
    };
    let all: Option<Vec<f64>> = config
        .imaging_centers
        .iter()
        .map(|c| target(&c.id))
        .collect();
    let weights = all.unwrap_or_else(|| vec![1.0; config.imaging_centers.len()]);
    let sum: f64 = weights.iter().sum();
    config
        .imaging_centers
        .iter()
        .zip(weights)
        .map(|(c, w)| (c.id.clone(), w / sum))
        .collect()
}

fn pick<'a>(rng: &mut SmallRng, weights: &'a [(String, f64)]) -> &'a str {
    let mut x: f64 = rng.random();
    for (id, w) in weights {
        if x < *w {
            return id;
        }
        x -= w;
    }
    &weights[weights.len() - 1].0
}

fn is_weekday(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

async fn run_one(
    config: &Config,
    options: &Options,
    router: Router,
    exchange: bool,
    dir: &Path,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cfg = config.clone();
    cfg.server.data_dir = dir.to_owned();
    cfg.catalog.url = None;
    cfg.catalog.scratch = true;
    // One connection: its page cache stays warm (a write through another connection
    // of a pool empties every other connection's cache).
    cfg.catalog.max_connections = 1;
    cfg.catalog.salt_file = Some(dir.join("pseudonym.salt"));
    let db = dir.join("catalog.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let catalog = Catalog::open(&cfg)
        .await
        .context("opening the scratch catalog")?;
    catalog.sim_patient().await?;

    let mut rng = SmallRng::seed_from_u64(options.seed);
    let offset = config.exchange.utc_offset_hours as i64 * HOUR_MS;
    let first = NaiveDate::from_ymd_opt(options.year, 1, 1).context("--year")?;
    let year_days = if NaiveDate::from_ymd_opt(options.year, 2, 29).is_some() {
        366
    } else {
        365
    };
    let weight_sum: f64 = (0..year_days)
        .map(|d| first + chrono::Days::new(d as u64))
        .filter(|d| is_weekday(*d))
        .map(|d| SEASON[d.month0() as usize])
        .sum();
    let per_weight = options.studies as f64 / weight_sum;
    let senders = arrival_weights(config);
    let centers: Vec<String> = config
        .diagnosis_centers
        .iter()
        .filter(|d| router.calendar(&d.id).is_some())
        .map(|d| d.id.clone())
        .collect();
    let [open_h, close_h] = config.exchange.reading_hours;
    let reading_hours = (close_h - open_h) as f64;
    let epoch_days = (first.num_days_from_ce() - 719_163) as i64;
    let mut carry = vec![0.0f64; centers.len()];
    let (mut n, mut sent, mut moves) = (0u64, 0u64, 0usize);
    let mut day = 0i64;
    let (mut expected, mut planned) = (0.0f64, 0u64);
    loop {
        let date = first + chrono::Days::new(day as u64);
        let day_start = (epoch_days + day) * DAY_MS - offset;
        let arriving = day < year_days && is_weekday(date);
        if day >= year_days && (sent == n && n > 0 || day >= year_days + DRAIN_DAYS) {
            break;
        }
        // Today's arrivals (the running total rounded, so the year's sum is exactly
        // `studies`), in time order, and each center's capacity after absences.
        let count = if arriving {
            expected += per_weight * SEASON[date.month0() as usize];
            let due = expected.round() as u64;
            let c = due.saturating_sub(planned);
            planned = due;
            c
        } else {
            0
        };
        let mut arrivals: Vec<i64> = (0..count)
            .map(|_| day_start + 7 * HOUR_MS + (rng.random::<f64>() * 12.0 * HOUR_MS as f64) as i64)
            .collect();
        arrivals.sort_unstable();
        let reads_today: Vec<f64> = centers
            .iter()
            .map(|c| {
                let full = router.calendar(c).map_or(0.0, |cal| cal.reads_on(date));
                if rng.random::<f64>() < options.absence_rate {
                    full * 0.5
                } else {
                    full
                }
            })
            .collect();
        let mut next = arrivals.iter().peekable();
        for hour in 0..24i64 {
            let t0 = day_start + hour * HOUR_MS;
            if exchange && (hour == open_h as i64 || hour == 12) {
                moves += rebalance(&router, &catalog, t0).await?.len();
            }
            while let Some(&&at) = next.peek() {
                if at >= t0 + HOUR_MS {
                    break;
                }
                next.next();
                n += 1;
                let priority = {
                    let x: f64 = rng.random();
                    if x < options.urgent_share {
                        Priority::Urgent
                    } else if x < options.urgent_share + options.untriaged_share {
                        Priority::Untriaged
                    } else if x < options.urgent_share + options.untriaged_share + options.low_share
                    {
                        Priority::Low
                    } else {
                        Priority::Routine
                    }
                };
                let sender = pick(&mut rng, &senders).to_owned();
                let due_ms = priority.due_ms(&config.triage, at);
                let decision = router
                    .route(&catalog, Some(&sender), priority, due_ms, at)
                    .await?;
                let item = NewItem {
                    center: decision.center,
                    home_center: Some(decision.home),
                    triage: Triage {
                        priority,
                        score: None,
                        left: None,
                        right: None,
                        due_ms,
                        reason: "simulated".into(),
                        cause: None,
                    },
                    view_scores: Vec::new(),
                    model_version: None,
                    reason: decision.reason,
                };
                catalog
                    .sim_place(&format!("2.25.{n}"), &sender, at, &item)
                    .await?;
            }
            if (open_h as i64..close_h as i64).contains(&hour) {
                for (i, center) in centers.iter().enumerate() {
                    let quota = reads_today[i] / reading_hours + carry[i];
                    let whole = quota.floor();
                    carry[i] = quota - whole;
                    if whole >= 1.0 {
                        let read = catalog
                            .sim_read(center, whole as i64, t0 + HOUR_MS / 2)
                            .await?;
                        sent += read;
                        if read < whole as u64 {
                            // Idle readers do not bank their time.
                            carry[i] = 0.0;
                        }
                    }
                }
            }
        }
        day += 1;
    }
    Ok(Run {
        exchange,
        studies: catalog.sim_results().await?,
        moves,
        elapsed: started.elapsed(),
    })
}

/// Figures of one group of studies under one routing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub studies: usize,
    /// Days from upload to read (unread: never).
    pub median_days: Option<f64>,
    pub p90_days: Option<f64>,
    pub within_due: f64,
    pub within_7_days: f64,
    /// Read after the due time, or never read.
    pub overdue: usize,
    /// Read at a center of another institution than its home center's.
    pub sent_out: usize,
    /// Read here for another institution (per-center and per-institution rows).
    pub read_for_others: usize,
}

/// The figures of `studies` (those whose home is in the group); `crosses` says
/// whether a study was read at another institution. `read_for_others` is left to the
/// caller (it counts other groups' studies).
pub fn figures<'a>(
    studies: impl Iterator<Item = &'a SimulatedStudy>,
    crosses: impl Fn(&SimulatedStudy) -> bool,
) -> Figures {
    let mut waits: Vec<f64> = Vec::new();
    let mut f = Figures::default();
    let (mut in_due, mut in_week) = (0usize, 0usize);
    for s in studies {
        f.studies += 1;
        match s.read_ms {
            Some(r) => {
                waits.push((r - s.received_ms) as f64 / DAY_MS as f64);
                in_due += usize::from(r <= s.due_ms);
                in_week += usize::from(r - s.received_ms <= 7 * DAY_MS);
                f.overdue += usize::from(r > s.due_ms);
            }
            None => {
                waits.push(f64::INFINITY);
                f.overdue += 1;
            }
        }
        f.sent_out += usize::from(crosses(s));
    }
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((waits.len() as f64 * p).ceil() as usize).clamp(1, waits.len().max(1)) - 1;
        waits.get(i).copied().filter(|w| w.is_finite())
    };
    f.median_days = pct(0.5);
    f.p90_days = pct(0.9);
    if f.studies > 0 {
        f.within_due = in_due as f64 / f.studies as f64;
        f.within_7_days = in_week as f64 / f.studies as f64;
    }
    f
}

impl Report {
    fn institution(&self, center: &str) -> Option<&str> {
        self.institutions.get(center).map(String::as_str)
    }

    fn crosses(&self, s: &SimulatedStudy) -> bool {
        s.center != s.home_center && self.institution(&s.center) != self.institution(&s.home_center)
    }

    /// Figures per group (home center, home institution, the whole program, urgent
    /// studies) for one run.
    pub fn rows(&self, run: &Run) -> Vec<(String, Figures)> {
        let mut out = Vec::new();
        let mut centers: Vec<&str> = run
            .studies
            .iter()
            .flat_map(|s| [s.home_center.as_str(), s.center.as_str()])
            .chain(self.institutions.keys().map(String::as_str))
            .collect();
        centers.sort_unstable();
        centers.dedup();
        let with_others = |f: &mut Figures, reader: &dyn Fn(&SimulatedStudy) -> bool| {
            f.read_for_others = run
                .studies
                .iter()
                .filter(|s| reader(s) && self.crosses(s))
                .count();
        };
        for c in &centers {
            let mut f = figures(run.studies.iter().filter(|s| s.home_center == *c), |s| {
                self.crosses(s)
            });
            with_others(&mut f, &|s| s.center == *c);
            out.push((format!("center {c}"), f));
        }
        let mut insts: Vec<&str> = self.institutions.values().map(String::as_str).collect();
        insts.sort_unstable();
        insts.dedup();
        for i in &insts {
            let mut f = figures(
                run.studies
                    .iter()
                    .filter(|s| self.institution(&s.home_center) == Some(*i)),
                |s| self.crosses(s),
            );
            with_others(&mut f, &|s| self.institution(&s.center) == Some(*i));
            out.push((format!("institution {i}"), f));
        }
        out.push((
            "program".into(),
            figures(run.studies.iter(), |s| self.crosses(s)),
        ));
        out.push((
            "urgent studies".into(),
            figures(run.studies.iter().filter(|s| s.priority == "urgent"), |s| {
                self.crosses(s)
            }),
        ));
        out
    }

    /// The two routings side by side, one pair of rows per group, as a Markdown table.
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut t = format!(
            "{} studies over {} (seed {}; urgent {:.0}%, untriaged {:.0}%, low {:.0}%; absences {:.0}% of center-days)",
            self.home_only.studies.len(),
            o.year,
            o.seed,
            o.urgent_share * 100.0,
            o.untriaged_share * 100.0,
            o.low_share * 100.0,
            o.absence_rate * 100.0
        );
        for (c, f) in &o.capacity_factors {
            t.push_str(&format!("; {c} at {f} x capacity"));
        }
        t.push_str("\n\n| group | routing | studies | median wait (d) | p90 wait (d) | read within due | read within 7 d | overdue | sent out | read for others |\n");
        t.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let days = |d: Option<f64>| d.map_or("never".into(), |d| format!("{d:.1}"));
        let home = self.rows(&self.home_only);
        let ex = self.rows(&self.exchange);
        for ((group, a), (_, b)) in home.iter().zip(&ex) {
            for (name, f) in [("home only", a), ("exchange", b)] {
                if f.studies == 0 {
                    t.push_str(&format!(
                        "| {group} | {name} | 0 | - | - | - | - | 0 | 0 | {} |\n",
                        f.read_for_others
                    ));
                    continue;
                }
                t.push_str(&format!(
                    "| {group} | {name} | {} | {} | {} | {:.1}% | {:.1}% | {} | {} | {} |\n",
                    f.studies,
                    days(f.median_days),
                    days(f.p90_days),
                    f.within_due * 100.0,
                    f.within_7_days * 100.0,
                    f.overdue,
                    f.sent_out,
                    f.read_for_others
                ));
            }
        }
        t.push_str(&format!(
            "\nrebalancing moves (exchange): {}; simulated in {:.0} s (home only) and {:.0} s (exchange), side by side\n",
            self.exchange.moves,
            self.home_only.elapsed.as_secs_f64(),
            self.exchange.elapsed.as_secs_f64()
        ));
        t
    }
}
