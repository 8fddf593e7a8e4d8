//! A year of the demo program (`pipeline.toml`) through the real routing code, as
//! `tamiz simulate` runs it: once as configured and once with hospital-norte at half
//! its capacity, each with home-only routing beside exchange routing. Prints the two
//! tables and how long each took; asserts nothing.
//!
//! `cargo bench --bench simulate` (500,000 studies a year; `TAMIZ_SIM_STUDIES=N` for
//! another number). What issue 10 asks it to show: with a center at half capacity
//! and spare capacity elsewhere in its group, exchange routing raises the share read
//! within 7 days over home-only routing, and urgent studies are read within their due
//! time.

use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let config = tamiz::config::Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.toml"),
        true,
    )?;
    let studies = std::env::var("TAMIZ_SIM_STUDIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);
    for (title, capacity) in [
        ("the demo program", vec![]),
        (
            "hospital-norte at half capacity",
            vec![("hospital-norte".to_owned(), 0.5)],
        ),
    ] {
        let options = tamiz::simulate::Options {
            studies,
            capacity_factors: capacity,
            ..Default::default()
        };
        let dir = tempfile::tempdir()?;
        let t = Instant::now();
        let report = tamiz::simulate::run(&config, &options, dir.path())?;
        println!("## {title}\n\n{}", report.table());
        println!("wall time: {:.0} s\n", t.elapsed().as_secs_f64());
    }
    Ok(())
}
