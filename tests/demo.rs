//! `tamiz demo`, as the README's quick start runs it (one study per imaging center to
//! stay quick): it ends with worklists, the summary and a working sign-in for each
//! demo user.

mod common;

use std::process::Command;

use common::succeeded;

#[test]
fn the_demo_runs_end_to_end_and_prints_a_user_per_role() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tamiz"))
        .args(["demo", "--studies-per-center", "1", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/pipeline.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("demo"))
        .env_remove("TAMIZ_DATABASE_URL")
        .env_remove("TAMIZ_DATA_DIR")
        .env_remove("TAMIZ_S3_BUCKET")
        .env_remove("TAMIZ_TOKEN_KEY_FILE")
        .env_remove("TAMIZ_PSEUDONYM_SALT_FILE")
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    for line in [
        "uploaded 4 files, 4 stored, 0 failed",
        "Worklist of",
        "Program summary",
        "Demo users, one per role",
    ] {
        assert!(stdout.contains(line), "`{line}` missing:\n{stdout}");
    }
    // One user per role: uploaders, radiologists, a coordinator and an admin, each
    // with a password and a token.
    let users: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Demo users"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .collect();
    let roles: std::collections::BTreeSet<&str> = users
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        roles.into_iter().collect::<Vec<_>>(),
        vec!["admin", "coordinator", "imaging_center", "radiologist"],
        "{stdout}"
    );
    for u in &users {
        let fields: Vec<&str> = u.split_whitespace().collect();
        assert!(
            fields[3].starts_with("demo-") && fields[4].starts_with("tz_"),
            "{u}"
        );
    }
}
