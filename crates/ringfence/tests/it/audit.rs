//! The tamper-evident audit log end to end (docs/audit.md): a real server writes the log
//! through its API, stops cleanly (signing a last digest), and `ringfence audit verify`
//! finds the log intact; then each attack of an intruder with write access to the database
//! (an edited event, two swapped, one deleted, the end cut off), each on its own copy of the
//! real file, is found and named, with exit code 3. `ringfence audit export` writes one JSON
//! line per event.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Server, Spec, cli, path_str};

/// A copy of the server's log (with its write-ahead log, which may hold the last commits) in
/// a directory of its own, so each attack starts from the real file as the server left it.
fn copy_log(server: &Server, case: &str) -> PathBuf {
    let dir = server.path(case);
    std::fs::create_dir_all(&dir).expect("create the case's directory");
    for suffix in ["", "-wal"] {
        let from = server.data_dir().join(format!("events.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, dir.join(format!("events.db{suffix}"))).expect("copy the log");
        }
    }
    dir.join("events.db")
}

/// What an intruder with write access to the file does: plain SQL on the real database.
fn tamper(log: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(log).expect("open the copy");
    conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn verify(log: &Path, public_key: &Path, json: bool) -> crate::harness::Out {
    let mut args = vec!["audit", "verify", "--log", path_str(log), "--public-key", path_str(public_key)];
    if json {
        args.extend_from_slice(&["-o", "json"]);
    }
    cli(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_every_kind_of_tampering() {
    let mut server = Server::start().await;
    // A few changes through the CLI: a workload, its releases, a token.
    server.setup(&Spec::new("audited"), &[("v1", &[]), ("v2", &["SAMPLE_LATENCY_MS=5"]), ("v3", &[])]).await;
    server.token_with("auditor", &["viewer"]).await;
    let api_events = server.all_events().await;
    assert!(server.stop_cleanly(), "the server did not stop cleanly");
    let data = server.data_dir().to_path_buf();
    let public_key = data.join("audit.pub");

    // Untouched: intact, every event covered by the digest the clean stop signed.
    let out = cli(&["audit", "verify", "--data-dir", path_str(&data), "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let report: Value = serde_json::from_str(&out.stdout).expect("verify -o json");
    let last = report["last_seq"].as_u64().expect("last_seq");
    assert!(last >= 7 && last >= api_events.len() as u64, "{report:#}");
    assert_eq!(
        report["signed"]["through_seq"].as_u64(),
        Some(last),
        "the clean stop signed no digest covering the end of the log (is `Shared::seal` called when the server stops?): {report:#}"
    );
    let text = cli(&["audit", "verify", "--data-dir", path_str(&data)]).await;
    assert_eq!(text.code, 0, "{text}");
    assert!(
        text.stdout.starts_with("intact: ") && text.stdout.contains(&format!("events 1 to {last}: proven")),
        "{text}"
    );

    // An edited event.
    let log = copy_log(&server, "edited");
    tamper(&log, "UPDATE events SET reason = 'nothing to see here' WHERE seq = 3");
    let out = verify(&log, &public_key, false).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("event 3 was changed after it was written"), "{out}");

    // Two events swapped: every column but the number.
    let log = copy_log(&server, "reordered");
    tamper(
        &log,
        "CREATE TEMP TABLE t AS SELECT * FROM events WHERE seq IN (4, 5);
         UPDATE events SET
             at = (SELECT at FROM t WHERE t.seq = 9 - events.seq),
             actor = (SELECT actor FROM t WHERE t.seq = 9 - events.seq),
             reason = (SELECT reason FROM t WHERE t.seq = 9 - events.seq),
             workload = (SELECT workload FROM t WHERE t.seq = 9 - events.seq),
             type = (SELECT type FROM t WHERE t.seq = 9 - events.seq),
             rollout_id = (SELECT rollout_id FROM t WHERE t.seq = 9 - events.seq),
             body = (SELECT body FROM t WHERE t.seq = 9 - events.seq),
             hash = (SELECT hash FROM t WHERE t.seq = 9 - events.seq)
         WHERE seq IN (4, 5);",
    );
    let out = verify(&log, &public_key, false).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("events 4 and 5 were swapped"), "{out}");

    // A deleted event.
    let log = copy_log(&server, "deleted");
    tamper(&log, "DELETE FROM events WHERE seq = 4");
    let out = verify(&log, &public_key, true).await;
    assert_eq!(out.code, 3, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).expect("verify -o json");
    assert_eq!(v["intact"], false);
    let messages: Vec<&str> =
        v["findings"].as_array().into_iter().flatten().filter_map(|f| f["message"].as_str()).collect();
    assert_eq!(messages, vec!["event 4 is missing"], "{v:#}");

    // The end cut off: the last digest still covers it.
    let log = copy_log(&server, "truncated");
    tamper(&log, &format!("DELETE FROM events WHERE seq > {}", last - 2));
    let out = verify(&log, &public_key, false).await;
    assert_eq!(out.code, 3, "{out}");
    let removed = format!("events {} to {last} were removed from the end; digest ", last - 1);
    assert!(out.stdout.contains(&removed) && out.stdout.contains(" covers them"), "{out}");

    // A copy without its public key beside it cannot be checked: said, with what to give.
    let out = cli(&["audit", "verify", "--log", path_str(&log)]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("--public-key") && out.stderr.contains("audit.pub"), "{out}");

    // The export: one JSON line per event, in order, each with its hash; then the digests.
    let out = cli(&["audit", "export", "--data-dir", path_str(&data)]).await;
    assert_eq!(out.code, 0, "{out}");
    let lines: Vec<Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(lines.len() as u64, last, "{}", out.stdout);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"].as_u64(), Some(i as u64 + 1), "{line}");
        assert_eq!(line["record"], "event");
        assert!(line["type"].is_string() && line["body"].is_object() && line["actor"].is_string(), "{line}");
        assert_eq!(line["hash"].as_str().map(str::len), Some(64), "{line}");
    }
    for e in &api_events {
        let line = &lines[e.seq as usize - 1];
        assert_eq!(
            (line["type"].as_str(), line["actor"].as_str()),
            (Some(e.kind.type_name().as_str()), Some(e.actor.as_str()))
        );
    }
    // A token's salt and hash stay in the log, as the API keeps them (docs/security.md).
    let tokens: Vec<&Value> = lines.iter().filter(|l| l["type"] == "token_created").collect();
    assert!(tokens.len() >= 3, "the first admin token, it-test and auditor: {tokens:?}");
    for t in tokens {
        assert_eq!(
            (&t["redacted"], &t["body"]["token"]["hash"]),
            (&Value::Bool(true), &Value::from("<redacted>")),
            "{t}"
        );
    }
    let file = server.path("audit.jsonl");
    let out =
        cli(&["audit", "export", "--data", path_str(&data), "--after", "2", "--digests", "--out", path_str(&file)])
            .await;
    assert_eq!(out.code, 0, "{out}");
    let text = std::fs::read_to_string(&file).expect("the export file");
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let events = records.iter().filter(|r| r["record"] == "event").count() as u64;
    let digests: Vec<&Value> = records.iter().filter(|r| r["record"] == "digest").collect();
    assert_eq!(events, last - 2, "{text}");
    assert!(digests.last().is_some_and(|d| d["last_seq"].as_u64() == Some(last)), "{text}");
    assert_eq!(records.last().map(|r| &r["record"]), Some(&Value::from("digest")), "digests come after the events");
}
