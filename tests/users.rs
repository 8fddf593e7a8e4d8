//! Users and API tokens: `tamiz users` against the configured catalog while the server
//! runs, and the token check on both catalog backends (a token resolves to its user
//! until it is revoked or the user disabled; only its keyed hash is stored).

mod common;

use std::process::Output;

use common::backends::{backends, fresh_catalog};
use common::*;
use tamiz::auth::TokenKey;
use tamiz::catalog::Role;

#[tokio::test]
async fn tokens_resolve_to_their_user_until_revoked_or_disabled_on_every_backend() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = fresh_catalog(backend, dir.path()).await;
        let mut config = test_config(dir.path());
        config.auth.token_key_file = Some(dir.path().join("token.key"));
        let key = TokenKey::load(&config).unwrap();
        let token = tamiz::auth::add_user(
            &catalog,
            &key,
            &config,
            "ana",
            Role::Radiologist,
            Some("north"),
        )
        .await
        .unwrap();
        assert!(token.starts_with("tz_") && token.len() == 67, "{token}");
        let id = catalog
            .identity_for_token(&key.hash(&token))
            .await
            .unwrap()
            .expect("the token names its user");
        assert_eq!(
            (id.name.as_str(), id.role, id.center.as_deref()),
            ("ana", Role::Radiologist, Some("north")),
            "{backend:?}"
        );
        // Stored only as a keyed hash: the token itself, or its hash under another
        // key, finds nobody.
        assert!(catalog.identity_for_token(&token).await.unwrap().is_none());
        let other = {
            let mut c = config.clone();
            c.auth.token_key_file = Some(dir.path().join("other.key"));
            TokenKey::load(&c).unwrap()
        };
        assert!(catalog
            .identity_for_token(&other.hash(&token))
            .await
            .unwrap()
            .is_none());

        let second = tamiz::auth::issue_token(&catalog, &key, "ana")
            .await
            .unwrap();
        assert_ne!(second, token);
        assert!(catalog
            .identity_for_token(&key.hash(&token))
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            catalog.revoke_tokens("ana", tamiz::now_ms()).await.unwrap(),
            2
        );
        for t in [&token, &second] {
            assert!(
                catalog
                    .identity_for_token(&key.hash(t))
                    .await
                    .unwrap()
                    .is_none(),
                "{backend:?}"
            );
        }
        let third = tamiz::auth::issue_token(&catalog, &key, "ana")
            .await
            .unwrap();
        assert!(catalog
            .identity_for_token(&key.hash(&third))
            .await
            .unwrap()
            .is_some());
        catalog.set_user_disabled("ana", true).await.unwrap();
        assert!(
            catalog
                .identity_for_token(&key.hash(&third))
                .await
                .unwrap()
                .is_none(),
            "{backend:?}"
        );

        // Refusals name the problem.
        let err = tamiz::auth::add_user(&catalog, &key, &config, "ana", Role::Coordinator, None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "a user named `ana` already exists");
        let err = tamiz::auth::issue_token(&catalog, &key, "nobody")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no user named `nobody`");
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn tamiz_users_manages_accounts_while_the_server_runs() {
    let t = TestServer::start().await;
    let config = t.dir.path().join("users.toml");
    // The test server's centers (catalog and key come from the environment).
    std::fs::write(
        &config,
        "default_diagnosis_center = \"central\"\n\
         [[diagnosis_centers]]\nid = \"central\"\nname = \"Central\"\n\
         [[diagnosis_centers]]\nid = \"north\"\nname = \"North\"\n\
         [[imaging_centers]]\nid = \"clinic-a\"\nname = \"Clinic A\"\nhome = \"north\"\n",
    )
    .unwrap();
    let users = |args: &[&str]| {
        let mut full = vec!["users"];
        full.extend_from_slice(args);
        let out = t
            .node_command(&full, &config)
            .output()
            .expect("run tamiz users");
        (out.status.success(), text(&out))
    };

    let (ok, (stdout, stderr)) =
        users(&["add", "rad-1", "--role", "radiologist", "--center", "north"]);
    assert!(ok, "{stderr}");
    // The token alone on stdout.
    let token = stdout.strip_suffix('\n').expect("one line");
    assert!(
        token.starts_with("tz_") && token.len() == 67 && !token.contains('\n'),
        "{stdout:?}"
    );
    let key = TokenKey::load(&t.server.config).unwrap();
    let id = t
        .server
        .catalog
        .identity_for_token(&key.hash(token))
        .await
        .unwrap()
        .expect("the printed token works against the running server's catalog");
    assert_eq!((id.name.as_str(), id.role), ("rad-1", Role::Radiologist));
    // ... and over HTTP: north's worklist, not central's.
    let resp = t
        .http
        .get(format!("{}/api/v1/centers/north/worklist", t.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = t
        .http
        .get(format!("{}/api/v1/centers/central/worklist", t.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    let (ok, (stdout, _)) = users(&[
        "add",
        "up-a",
        "--role",
        "imaging_center",
        "--center",
        "clinic-a",
    ]);
    assert!(ok);
    assert!(stdout.starts_with("tz_"));
    let (ok, _) = users(&["add", "coord", "--role", "coordinator"]);
    assert!(ok);

    // Refusals: exit status 1 and the reason on stderr, nothing added.
    for (args, reason) in [
        (
            vec!["add", "x", "--role", "radiologist", "--center", "clinic-a"],
            "`clinic-a` is not a configured diagnosis center (pipeline.toml [[diagnosis_centers]])",
        ),
        (
            vec!["add", "x", "--role", "imaging_center"],
            "a user with role imaging_center needs --center (the center whose data it works with)",
        ),
        (
            vec!["add", "x", "--role", "admin", "--center", "north"],
            "a user with role admin belongs to no center: leave out --center",
        ),
        (
            vec!["add", "x", "--role", "superuser"],
            "unknown role `superuser`: use imaging_center, radiologist, coordinator or admin",
        ),
        (
            vec!["add", "bad name", "--role", "admin"],
            "user name `bad name` must be 1 to 64 letters, digits or . _ - @",
        ),
        (
            vec!["add", "rad-1", "--role", "coordinator"],
            "a user named `rad-1` already exists",
        ),
        (vec!["token", "nobody"], "no user named `nobody`"),
        (vec!["disable", "nobody"], "no user named `nobody`"),
        (vec!["revoke", "nobody"], "no user named `nobody`"),
    ] {
        let (ok, (stdout, stderr)) = users(&args);
        assert!(!ok, "{args:?} was accepted");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }

    let (ok, (second, _)) = users(&["token", "rad-1"]);
    assert!(ok);
    let second = second.trim_end();
    assert_ne!(second, token);
    let (_, (list, _)) = users(&["list"]);
    // Only the users this test made (the test server has one per role of its own).
    let list: String = list
        .lines()
        .filter(|l| {
            ["coord\t", "rad-1\t", "up-a\t"]
                .iter()
                .any(|n| l.starts_with(n))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        list,
        "coord\tcoordinator\t-\tenabled\t1 token(s)\n\
         rad-1\tradiologist\tnorth\tenabled\t2 token(s)\n\
         up-a\timaging_center\tclinic-a\tenabled\t1 token(s)\n"
    );
    assert!(!list.contains(token) && !list.contains(&key.hash(token)));

    let (ok, _) = users(&["disable", "rad-1"]);
    assert!(ok);
    for tok in [token, second] {
        assert!(t
            .server
            .catalog
            .identity_for_token(&key.hash(tok))
            .await
            .unwrap()
            .is_none());
    }
    let (_, (list, _)) = users(&["list"]);
    assert!(
        list.contains("rad-1\tradiologist\tnorth\tdisabled\t2 token(s)\n"),
        "{list}"
    );
    let (ok, (_, stderr)) = users(&["revoke", "rad-1"]);
    assert!(ok);
    assert!(stderr.contains("2 token(s) of rad-1 revoked"), "{stderr}");
    t.stop().await;
}
