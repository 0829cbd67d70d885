//! Data changes end to end against a real SQLite database the sample app works on: the backup
//! hook runs before a migration (and holds the release while it fails), an expand release is
//! fallen back from safely, a contract is refused before its expand completed and while the
//! last known good still needs what it removes, and an irreversible change is never fallen back
//! from blindly: a person restores the backup the hook took, then rolls back.

use std::path::Path;

use ringfence_api::{MitigationAction, RolloutStatus};
use ringfence_core::EventKind;

use crate::harness::{Load, Server, Spec, path_str, rollout_id};

fn emails(db: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(db).expect("open the app's database");
    let mut st = db.prepare("SELECT email FROM users ORDER BY id").expect("select");
    st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
}

fn columns(db: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(db).expect("open the app's database");
    let mut st = db.prepare("SELECT name FROM pragma_table_info('users')").expect("pragma");
    st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
}

/// `release create` with the given extra arguments; the exit code and output.
async fn release(server: &Server, w: &str, version: &str, args: &[&str]) -> crate::harness::Out {
    let mut all = vec!["release", "create", w, "--version", version, "--artifact", "sample-app"];
    all.extend_from_slice(args);
    server.cli(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_backed_up_expanded_before_contracted_and_never_rolled_back_blindly() {
    let server = Server::start().await;
    let w = "data";
    let dir = server.path("data");
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    let db = dir.join("app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL);
             INSERT INTO users (email) VALUES ('Ada@Example.org'), ('Grace@Example.org');",
        )
        .unwrap();
    }
    // The team's backup: a copy of the database per migration; fails while `fail-backup` exists.
    let backup = dir.join("backup.sh");
    std::fs::write(
        &backup,
        "#!/bin/sh\nset -eu\nif [ -f \"$BACKUP_DIR/../fail-backup\" ]; then echo 'disk full' >&2; exit 2; fi\n\
         cp \"$SAMPLE_DB\" \"$BACKUP_DIR/$1.db\"\necho \"backup=$BACKUP_DIR/$1.db\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&backup, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut spec = Spec::new(w);
    spec.lenient_breaker = true;
    let text = spec.toml().replacen(
        "replicas = 1\n",
        &format!(
            "replicas = 1\nenv = {{ SAMPLE_DB = \"{}\", BACKUP_DIR = \"{}\" }}\n",
            db.display(),
            dir.join("backups").display()
        ),
        1,
    ) + &format!("\n[data]\nbackup = [\"{}\", \"{{migration}}\"]\ntimeout = \"20s\"\n", backup.display());
    let file = server.path("data.toml");
    std::fs::write(&file, &text).unwrap();
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");

    let needs_email = ["--config", "SAMPLE_NEEDS=users.email", "--requires-schema", "users.email"];
    assert_eq!(release(&server, w, "v1", &needs_email).await.code, 0);
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);

    // An expand with bad code: backed up first (after the hook stops failing), then fallen back
    // from safely: v1 works on the expanded schema.
    let expand = [
        "--migration",
        "m1",
        "--migration-kind",
        "expand",
        "--config",
        "SAMPLE_MIGRATE=ALTER TABLE users ADD COLUMN email_v2 TEXT",
        "--config",
        "SAMPLE_MIGRATION_ID=m1",
        "--config",
        "SAMPLE_ERROR_RATE=0.5",
    ];
    let out = release(&server, w, "v2", &[&needs_email[..], &expand[..]].concat()).await;
    assert_eq!(out.code, 0, "{out}");
    std::fs::write(dir.join("fail-backup"), "").unwrap();
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    let failed = server
        .wait_events(w, "the failing backup", |events| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::ActionFailed { error, .. } if error.contains("backup hook") => Some(error.clone()),
                _ => None,
            })
        })
        .await;
    assert!(failed.contains("disk full"), "the hook's words: {failed}");
    let s = server.status(w).await;
    assert!(s.replicas.iter().all(|r| r.version == "v1"), "nothing of v2 starts before the backup: {s:#?}");
    assert!(columns(&db).iter().all(|c| c != "email_v2"), "no migration before the backup");
    std::fs::remove_file(dir.join("fail-backup")).unwrap();
    let done = server
        .wait_status(w, "the expand's rollout ends", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, RolloutStatus::Mitigated, "{}", server.diagnose(w).await);
    let r = server.rollout(w, &id).await;
    assert_eq!(r.decision.as_ref().map(|d| d.action), Some(MitigationAction::Fallback), "{r:#?}");
    assert!(dir.join("backups/m1.db").exists(), "the hook's backup");
    let events = server.events(w).await;
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::BackupTaken { migration, reference, .. }
        if migration == "m1" && reference.ends_with("backups/m1.db"))));
    assert!(columns(&db).contains(&"email_v2".to_string()), "an expand stays; v1 works beside it");

    // A contract whose expand no completed release carried is refused.
    let contract = |removes: &'static str, after: &'static str| {
        [
            "--migration",
            "m2",
            "--migration-kind",
            "contract",
            "--removes",
            removes,
            "--after",
            after,
            "--config",
            "SAMPLE_MIGRATE=ALTER TABLE users DROP COLUMN email",
            "--config",
            "SAMPLE_MIGRATION_ID=m2",
            "--config",
            "SAMPLE_NEEDS=users.email_v2",
            "--requires-schema",
            "users.email_v2",
        ]
    };
    assert_eq!(release(&server, w, "v3", &contract("users.email", "m1")).await.code, 0);
    let out = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stderr.contains("which no completed release of data carried: deploy the expand first"), "{out}");

    // The expand again, healthy: it completes, and is the last known good, still reading email.
    let expand_ok: Vec<&str> = expand[..expand.len() - 2].to_vec();
    assert_eq!(release(&server, w, "v4", &[&needs_email[..], &expand_ok[..]].concat()).await.code, 0);
    assert_eq!(server.deploy_wait(w, "v4").await.code, 0, "{}", server.diagnose(w).await);
    // The contract now follows a completed expand, but v4 still reads the column it drops.
    let out = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stderr.contains("removes users.email; v4, the last known good, still needs it"), "{out}");
    assert!(columns(&db).contains(&"email".to_string()), "refused: nothing changed");

    // Once a release that no longer reads it is the last known good, the contract runs.
    let reads_new = ["--config", "SAMPLE_NEEDS=users.email_v2", "--requires-schema", "users.email_v2"];
    assert_eq!(release(&server, w, "v5", &reads_new).await.code, 0);
    assert_eq!(server.deploy_wait(w, "v5").await.code, 0, "{}", server.diagnose(w).await);
    let out = server.deploy_wait(w, "v3").await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    assert!(!columns(&db).contains(&"email".to_string()), "contracted");

    // An irreversible rewrite with bad code: held, not fallen back to v3 on rewritten data.
    let before = emails_v2(&db);
    let irreversible = [
        "--migration",
        "m3",
        "--migration-kind",
        "irreversible",
        "--config",
        "SAMPLE_MIGRATE=UPDATE users SET email_v2 = 'redacted'",
        "--config",
        "SAMPLE_MIGRATION_ID=m3",
        "--config",
        "SAMPLE_ERROR_RATE=0.5",
    ];
    assert_eq!(release(&server, w, "v6", &[&reads_new[..], &irreversible[..]].concat()).await.code, 0);
    let out = server.cli(&["deploy", w, "v6"]).await;
    let id = rollout_id(&out);
    let held = server
        .wait_status(w, "the irreversible release halted", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && r.status == RolloutStatus::Halted).cloned()
        })
        .await;
    let decision = held.decision.as_ref().expect("a decision");
    assert_eq!(decision.action, MitigationAction::Hold, "{decision:#?}");
    assert!(decision.rule.contains("irreversible") && decision.rule.contains("backups/m3.db"), "{decision:#?}");
    assert_eq!(emails_v2(&db), vec!["redacted".to_string(); 2], "the migration ran");

    // The person restores the backup the hook took, then rolls back.
    std::fs::copy(dir.join("backups/m3.db"), &db).expect("restore the backup");
    assert_eq!(emails_v2(&db), before, "the backup restores the data");
    let out = server.cli(&["rollback", w, "--reason", "restored backups/m3.db"]).await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    server
        .wait_status(w, "back on v3 alone", |s| {
            (s.rollout.as_ref().is_none_or(|r| !r.status.is_active()) && s.replicas.iter().all(|r| r.version == "v3"))
                .then_some(())
        })
        .await;
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v3"));
    let _ = load.finish().await;
    assert_eq!(emails(&dir.join("backups/m1.db")), vec!["Ada@Example.org", "Grace@Example.org"]);
}

fn emails_v2(db: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(db).expect("open the app's database");
    let mut st = db.prepare("SELECT coalesce(email_v2, '') FROM users ORDER BY id").expect("select");
    st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
}
