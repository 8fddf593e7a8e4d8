//! Exchange of services between institutions (src/routing/), on every catalog backend:
//! routing by projected completion on hand-built situations (a full home center, a
//! holiday, an agreement that forbids, a monthly cap reached, an urgent study jumping a
//! routine backlog), the rebalancing pass never moving a claimed item, the monthly
//! accounts over HTTP (JSON and CSV, and the exact refusal of a bad month), and a
//! small simulation.

mod common;

use common::backends::{backends, fresh_catalog, Backend};
use common::TestServer;
use tamiz::catalog::{Catalog, NewItem};
use tamiz::config::{Agreement, Capacity, Config, DiagnosisCenter, ImagingCenter, Institution};
use tamiz::routing::{accounts, parse_date, rebalance, Router};
use tamiz::triage::{Priority, Triage, DAY_MS};

const HOUR: i64 = 3600 * 1000;

/// UTC milliseconds of `date` at `hour` (the test program's clock is UTC).
fn at(date: &str, hour: i64) -> i64 {
    use chrono::Datelike;
    let d = parse_date(date).unwrap();
    (d.num_days_from_ce() as i64 - 719_163) * DAY_MS + hour * HOUR
}

/// Monday 2026-11-30, 08:00: the reading day starts.
fn monday() -> i64 {
    at("2026-11-30", 8)
}

fn center(id: &str, institution: &str, reads: f64, holidays: &[&str]) -> DiagnosisCenter {
    DiagnosisCenter {
        id: id.into(),
        name: id.into(),
        institution: Some(institution.into()),
        groups: vec!["g".into()],
        capacity: Some(Capacity {
            reads_per_day: reads,
            working_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            holidays: holidays.iter().map(|s| s.to_string()).collect(),
            overrides: vec![],
        }),
    }
}

fn agreement(home: &str, reader: &str, price: f64, cap: Option<u64>) -> Agreement {
    Agreement {
        home: home.into(),
        reader: reader.into(),
        allowed: true,
        price_per_read: price,
        monthly_cap: cap,
    }
}

/// Three institutions' centers in one group, 10 reads a day each, 08:00-16:00 UTC:
/// clinic-a's home is north (imss); central (issste) reads for imss at 100 a read,
/// south (sp) at 50 a read up to 2 studies a month.
fn program(dir: &std::path::Path, north_holidays: &[&str]) -> Config {
    let mut c = common::test_config(dir);
    c.institutions = ["issste", "imss", "sp"]
        .map(|i| Institution {
            id: i.into(),
            name: i.to_uppercase(),
        })
        .to_vec();
    c.diagnosis_centers = vec![
        center("central", "issste", 10.0, &[]),
        center("north", "imss", 10.0, north_holidays),
        center("south", "sp", 10.0, &[]),
    ];
    c.agreements = vec![
        agreement("imss", "issste", 100.0, None),
        agreement("imss", "sp", 50.0, Some(2)),
    ];
    c.exchange.utc_offset_hours = 0;
    c.validate().expect("the test program is valid");
    c
}

fn item(center: &str, home: &str, priority: Priority, due_ms: i64) -> NewItem {
    NewItem {
        center: center.into(),
        home_center: Some(home.into()),
        triage: Triage {
            priority,
            score: None,
            left: None,
            right: None,
            due_ms,
            reason: "test".into(),
            cause: None,
        },
        view_scores: vec![],
        model_version: None,
        reason: "test".into(),
    }
}

/// Puts `n` items of `priority` due at `due_ms` on `center` (home `center`).
async fn backlog(c: &Catalog, tag: &str, center: &str, n: usize, priority: Priority, due_ms: i64) {
    for i in 0..n {
        c.sim_place(
            &format!("2.25.{tag}{i}"),
            "clinic-a",
            monday() - DAY_MS,
            &item(center, center, priority, due_ms),
        )
        .await
        .unwrap();
    }
}

async fn catalog(backend: Backend) -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = fresh_catalog(backend, dir.path()).await;
    c.sim_patient().await.unwrap();
    (c, dir)
}

#[tokio::test]
async fn studies_go_home_unless_home_would_read_them_past_their_due_time() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let (c, dir) = catalog(backend).await;
        let router = Router::new(&program(dir.path(), &[]));
        let now = monday();
        let routine_due = now + 7 * DAY_MS;

        // An empty home center: home, with the projection in the reason.
        let d = router
            .route(&c, Some("clinic-a"), Priority::Routine, routine_due, now)
            .await
            .unwrap();
        assert_eq!((d.center.as_str(), d.home.as_str()), ("north", "north"));
        assert_eq!(
            d.reason,
            "home diagnosis center of imaging center clinic-a; north: 0 ahead at 10/day, projected read 2026-11-30 08:48"
        );

        // A full home center: 60 routine items due earlier (6 working days of reading):
        // the 61st read is on the 7th working day, past the due time. South is empty and
        // within its cap: the study goes there, the reason giving both projections.
        backlog(&c, "n", "north", 60, Priority::Routine, now + DAY_MS).await;
        backlog(&c, "c", "central", 5, Priority::Routine, now + DAY_MS).await;
        let d = router
            .route(&c, Some("clinic-a"), Priority::Routine, routine_due, now)
            .await
            .unwrap();
        assert_eq!((d.center.as_str(), d.home.as_str()), ("south", "north"));
        assert_eq!(
            d.reason,
            "home diagnosis center of imaging center clinic-a; north: 60 ahead at 10/day, projected read \
             2026-12-08 08:48, past the due time 2026-12-07 08:00; exchange to south: 0 ahead at 10/day, \
             projected read 2026-11-30 08:48"
        );
        // Two studies routed to south this month reach the imss -> sp cap of 2: the
        // next goes to central, and the reason says why south was skipped.
        for i in 0..2 {
            c.sim_place(
                &format!("2.25.s{i}"),
                "clinic-a",
                now,
                &item("south", "north", Priority::Routine, routine_due),
            )
            .await
            .unwrap();
        }
        let d = router
            .route(&c, Some("clinic-a"), Priority::Routine, routine_due, now)
            .await
            .unwrap();
        assert_eq!(d.center, "central");
        assert!(
            d.reason.ends_with(
                "exchange to central: 5 ahead at 10/day, projected read 2026-11-30 12:48; \
                 south skipped: the imss -> sp monthly cap of 2 is reached"
            ),
            "{}",
            d.reason
        );

        // An agreement that forbids: with imss -> issste not allowed and south capped,
        // no partner may read it, and it stays home, saying so.
        let mut forbidding = program(dir.path(), &[]);
        forbidding.agreements[0].allowed = false;
        let d = Router::new(&forbidding)
            .route(&c, Some("clinic-a"), Priority::Routine, routine_due, now)
            .await
            .unwrap();
        assert_eq!(d.center, "north");
        assert!(
            d.reason.contains("kept at home: no partner may read it; south skipped: the imss -> sp monthly cap of 2 is reached"),
            "{}",
            d.reason
        );

        // An urgent study jumps the routine backlog: nothing urgent is ahead at home.
        let d = router
            .route(
                &c,
                Some("clinic-a"),
                Priority::Urgent,
                now + 2 * DAY_MS,
                now,
            )
            .await
            .unwrap();
        assert_eq!(d.center, "north");
        assert!(
            d.reason
                .ends_with("north: 0 ahead at 10/day, projected read 2026-11-30 08:48"),
            "{}",
            d.reason
        );

        // Home-only routing never leaves home, however late.
        let d = router
            .clone()
            .home_only()
            .route(&c, Some("clinic-a"), Priority::Routine, routine_due, now)
            .await
            .unwrap();
        assert_eq!(d.center, "north");
        assert_eq!(d.reason, "home diagnosis center of imaging center clinic-a");
    }
}

#[tokio::test]
async fn a_holiday_at_home_sends_a_study_that_would_otherwise_be_read_in_time() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let (c, dir) = catalog(backend).await;
        let now = monday();
        let due = now + 2 * DAY_MS; // Wednesday 08:00
                                    // 15 urgent items ahead at 10 a day: the 16th read is Tuesday 12:48, in time.
        backlog(&c, "u", "north", 15, Priority::Urgent, now + DAY_MS).await;
        let working = Router::new(&program(dir.path(), &[]));
        let d = working
            .route(&c, Some("clinic-a"), Priority::Urgent, due, now)
            .await
            .unwrap();
        assert_eq!(d.center, "north");
        assert!(
            d.reason.ends_with("projected read 2026-12-01 12:48"),
            "{}",
            d.reason
        );
        // With Tuesday a holiday at north it would be Wednesday 12:48, past due: to the
        // first of the empty partners (central and south tie; the configuration's order).
        let holiday = Router::new(&program(dir.path(), &["2026-12-01"]));
        let d = holiday
            .route(&c, Some("clinic-a"), Priority::Urgent, due, now)
            .await
            .unwrap();
        assert_eq!((d.center.as_str(), d.home.as_str()), ("central", "north"));
        assert!(d.reason.contains("north: 15 ahead at 10/day, projected read 2026-12-02 12:48, past the due time 2026-12-02 08:00"), "{}", d.reason);
    }
}

#[tokio::test]
async fn rebalancing_moves_queued_items_past_due_and_never_a_claimed_one() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let (c, dir) = catalog(backend).await;
        let config = program(dir.path(), &[]);
        let router = Router::new(&config);
        let now = monday();
        // North: 25 routine items all due tomorrow 08:00 (10 can be read by then).
        backlog(&c, "r", "north", 25, Priority::Routine, now + DAY_MS).await;
        // The first one is claimed by a radiologist (and then counted as being read).
        let claimed = c
            .claim_next("north", "ana", now, 0, None)
            .await
            .unwrap()
            .unwrap();
        let moved = rebalance(&router, &c, now).await.unwrap();
        // North reads 10 by the due time (the claimed one and the next 9). Each later
        // one goes where it is read first if that is in time: south takes 2 (its
        // monthly cap), central 10 (its 10th read is Monday 16:00); the 3 that nobody
        // can read by Tuesday 08:00 stay.
        let to = |center: &str| moved.iter().filter(|m| m.to == center).count();
        assert_eq!(
            (moved.len(), to("south"), to("central")),
            (12, 2, 10),
            "{moved:?}"
        );
        assert!(moved
            .iter()
            .all(|m| m.from == "north" && m.study_uid != claimed.study_uid));
        let status = c.study_status(&claimed.study_uid).await.unwrap().unwrap();
        assert_eq!(status.worklist.unwrap().center, "north");
        assert!(status.moves.is_empty());
        // A moved study shows its move and its home center.
        let m = &moved[0];
        let s = c.study_status(&m.study_uid).await.unwrap().unwrap();
        assert_eq!(s.moves.len(), 1);
        assert_eq!(
            (
                s.moves[0].from_center.as_str(),
                s.moves[0].to_center.as_str()
            ),
            ("north", m.to.as_str())
        );
        assert!(
            s.moves[0]
                .reason
                .starts_with("moved by rebalancing at 2026-11-30 08:00: north: "),
            "{}",
            s.moves[0].reason
        );
        let w = s.worklist.unwrap();
        assert_eq!(
            (w.center.as_str(), w.home_center.as_deref()),
            (m.to.as_str(), Some("north"))
        );
        assert!(
            w.reason.contains("; moved by rebalancing at"),
            "{}",
            w.reason
        );
        // A second pass finds nothing to move.
        assert!(rebalance(&router, &c, now).await.unwrap().is_empty());
        // A claimed item cannot be moved, even by a direct call (another node's pass).
        let claimed_central = c
            .claim_next("central", "bea", now, 0, None)
            .await
            .unwrap()
            .unwrap();
        assert!(!c
            .move_item(claimed_central.id, "central", "north", "test", now)
            .await
            .unwrap());
        assert!(!c
            .move_item(claimed.id, "north", "central", "test", now)
            .await
            .unwrap());
        assert_eq!(
            c.worklist_item(claimed_central.id)
                .await
                .unwrap()
                .unwrap()
                .center,
            "central"
        );
    }
}

#[tokio::test]
async fn the_monthly_accounts_sum_reads_per_pair_of_institutions() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let (c, dir) = catalog(backend).await;
        let config = program(dir.path(), &[]);
        let dec = at("2026-12-01", 9);
        // Read in December: 3 north studies at central, 2 at south, 4 at home (not
        // exchange); 1 north study read at central in November (another month).
        for (i, (center, when)) in [
            ("central", dec),
            ("central", dec),
            ("central", dec),
            ("south", dec),
            ("south", dec),
            ("north", dec),
            ("north", dec),
            ("north", dec),
            ("north", dec),
            ("central", dec - 2 * DAY_MS),
        ]
        .into_iter()
        .enumerate()
        {
            c.sim_place(
                &format!("2.25.a{i}"),
                "clinic-a",
                when - HOUR,
                &item(center, "north", Priority::Routine, when + DAY_MS),
            )
            .await
            .unwrap();
            assert_eq!(c.sim_read(center, 1, when).await.unwrap(), 1);
        }
        let a = accounts(&config, &c, 2026, 12).await.unwrap();
        let lines: Vec<(&str, &str, i64, f64)> = a
            .lines
            .iter()
            .map(|l| (l.reader.as_str(), l.home.as_str(), l.reads, l.amount))
            .collect();
        assert_eq!(
            lines,
            vec![("issste", "imss", 3, 300.0), ("sp", "imss", 2, 100.0)]
        );
        assert_eq!(
            (a.total_reads, a.total_amount, a.month.as_str()),
            (5, 400.0, "2026-12")
        );
        let nov = accounts(&config, &c, 2026, 11).await.unwrap();
        assert_eq!((nov.total_reads, nov.total_amount), (1, 100.0));
        assert_eq!(
            a.to_csv(),
            "month,reader,home,reads,price_per_read,amount,currency,agreement\n\
             2026-12,issste,imss,3,100.00,300.00,MXN,true\n\
             2026-12,sp,imss,2,50.00,100.00,MXN,true\n"
        );
    }
}

#[tokio::test]
async fn the_accounts_over_http_in_json_and_csv_and_a_bad_month_refused() {
    let t = TestServer::start_with(|c| {
        let p = program(&c.server.data_dir, &[]);
        c.institutions = p.institutions;
        c.diagnosis_centers = p.diagnosis_centers;
        c.agreements = p.agreements;
        c.exchange = p.exchange;
    })
    .await;
    let c = &t.server.catalog;
    c.sim_patient().await.unwrap();
    let dec = at("2026-12-01", 9);
    for i in 0..3 {
        c.sim_place(
            &format!("2.25.h{i}"),
            "clinic-a",
            dec - HOUR,
            &item("central", "north", Priority::Routine, dec + DAY_MS),
        )
        .await
        .unwrap();
    }
    assert_eq!(c.sim_read("central", 3, dec).await.unwrap(), 3);
    let (code, body) = t
        .get_json_as("coordinator", "/api/v1/exchange?month=2026-12")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "month": "2026-12", "currency": "MXN", "total_reads": 3, "total_amount": 300.0,
            "lines": [{"reader": "issste", "home": "imss", "reads": 3, "price_per_read": 100.0,
                       "amount": 300.0, "agreement": true}]
        })
    );
    let csv = t
        .http
        .get(format!("{}/api/v1/exchange?month=2026-12", t.url))
        .header("authorization", t.bearer("coordinator"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        csv.text().await.unwrap(),
        "month,reader,home,reads,price_per_read,amount,currency,agreement\n2026-12,issste,imss,3,100.00,300.00,MXN,true\n"
    );
    for (query, error) in [
        (
            "month=2026-13",
            "month must be YYYY-MM (for example 2026-12), not `2026-13`",
        ),
        (
            "month=december",
            "month must be YYYY-MM (for example 2026-12), not `december`",
        ),
        (
            "month=2026-12&format=xml",
            "format must be json or csv, not `xml`",
        ),
    ] {
        let (code, body) = t
            .get_json_as("coordinator", &format!("/api/v1/exchange?{query}"))
            .await;
        assert_eq!(
            (code, body["error"].as_str()),
            (400, Some(error)),
            "{query}"
        );
    }
    // A radiologist has no business with the accounts.
    let (code, _) = t
        .get_json_as("radiologist-central", "/api/v1/exchange?month=2026-12")
        .await;
    assert_eq!(code, 403);
    t.stop().await;
}

#[test]
fn configuration_errors_name_the_bad_reference() {
    let dir = tempfile::tempdir().unwrap();
    let base = program(dir.path(), &[]);
    type Change = Box<dyn Fn(&mut Config)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|c| c.diagnosis_centers[0].institution = Some("nope".into())),
            "diagnosis center `central` names institution `nope`, which is not among [[institutions]]",
        ),
        (
            Box::new(|c| c.agreements[0].reader = "nope".into()),
            "agreement imss -> nope names institution `nope`, which is not among [[institutions]]",
        ),
        (
            Box::new(|c| c.diagnosis_centers[1].capacity.as_mut().unwrap().holidays = vec!["2026-02-30".into()]),
            "diagnosis center `north`: capacity: `2026-02-30` is not a date YYYY-MM-DD",
        ),
        (
            Box::new(|c| c.diagnosis_centers[2].capacity = None),
            "diagnosis center `south` is in exchange groups, so it needs an institution and a capacity",
        ),
        (
            Box::new(|c| c.agreements.push(agreement("imss", "issste", 1.0, None))),
            "agreement imss -> issste is defined twice",
        ),
    ];
    for (change, message) in cases {
        let mut c = base.clone();
        change(&mut c);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            format!("config: {message}")
        );
    }
}

/// One imaging center whose home (north) reads 100 a day and a partner (central,
/// another institution) reading 100 a day; 2,500 routine studies over 2027, no
/// absences.
fn small_program(dir: &std::path::Path) -> Config {
    let mut c = program(dir, &[]);
    c.diagnosis_centers = vec![
        center("central", "issste", 100.0, &[]),
        center("north", "imss", 100.0, &[]),
    ];
    c.imaging_centers = vec![ImagingCenter {
        id: "clinic-a".into(),
        name: "Clinic A".into(),
        home: "north".into(),
        institution_names: vec![],
        ae_titles: vec![],
    }];
    c.targets.clear();
    c.agreements = vec![agreement("imss", "issste", 100.0, None)];
    c.validate().unwrap();
    c
}

#[test]
fn a_small_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_program(dir.path());
    let options = tamiz::simulate::Options {
        studies: 2500,
        year: 2027,
        seed: 7,
        urgent_share: 0.0,
        untriaged_share: 0.0,
        low_share: 0.0,
        absence_rate: 0.0,
        capacity_factors: vec![],
    };
    // Ample capacity (~10 arrivals a working day against 100 reads): every study is
    // read by the next reading hour, at most Friday 19:00 to Monday 08:30 (2.6 days),
    // nothing leaves home under either routing, and the two routings agree.
    let r = tamiz::simulate::run(&config, &options, &dir.path().join("ample")).unwrap();
    for run in [&r.home_only, &r.exchange] {
        assert_eq!(run.studies.len(), 2500);
        let rows = r.rows(run);
        let (_, program) = rows.iter().find(|(g, _)| g == "program").unwrap();
        assert_eq!(
            (program.studies, program.overdue, program.sent_out),
            (2500, 0, 0)
        );
        assert_eq!((program.within_due, program.within_7_days), (1.0, 1.0));
        assert!(program.p90_days.unwrap() <= 2.6, "{program:?}");
        assert_eq!(run.moves, 0);
    }
    // North at 2% of its capacity (2 reads a day against ~10 arrivals): at home the
    // backlog grows all year; with exchange central reads what north cannot in time.
    let slow = tamiz::simulate::Options {
        capacity_factors: vec![("north".into(), 0.02)],
        ..options
    };
    let r = tamiz::simulate::run(&config, &slow, &dir.path().join("slow")).unwrap();
    let row = |run, group: &str| r.rows(run).into_iter().find(|(g, _)| g == group).unwrap().1;
    let (home, ex) = (
        row(&r.home_only, "center north"),
        row(&r.exchange, "center north"),
    );
    assert_eq!((home.studies, ex.studies), (2500, 2500));
    assert_eq!(home.sent_out, 0);
    assert!(home.within_7_days < 0.5, "{home:?}");
    assert!(ex.within_7_days > 0.99, "{ex:?}");
    // North reads 2 a day on 255 working days (~510, the first ones of each day's
    // arrivals); the others, about 1,990, are read at central.
    assert!((1900..=2050).contains(&ex.sent_out), "{ex:?}");
    assert_eq!(
        row(&r.exchange, "center central").read_for_others,
        ex.sent_out
    );
    assert!(
        r.table().contains("| center north | exchange | 2500 |"),
        "{}",
        r.table()
    );
}
