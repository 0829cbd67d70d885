//! `[history]`: the server keeps a workload's newest rollouts in memory and reads older ones
//! back from the log, which keeps them all; the counts `/metrics` reports never lose them.

use ringfence_api::RolloutStatus;
use ringfence_core::EventKind;

use crate::harness::*;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_past_the_kept_history_are_read_back_from_the_log_and_still_counted() {
    let mut server = Server::start().await;
    let w = "kept";
    let file = server.path("kept.toml");
    std::fs::write(&file, Spec::new(w).toml() + "\n[history]\nrollouts = 20\n").unwrap();
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["GREETING=two"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0);
    // 24 rollouts of v2, each aborted at once: 25 ended rollouts, more than the 20 kept and
    // the tenth more after which a batch goes.
    for n in 2..=25 {
        let out = server.cli(&["deploy", w, "v2"]).await;
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(rollout_id(&out), format!("{w}-{n}"), "numbered by count, whatever was let go");
        let out = server.cli(&["abort", w, "--reason", "history test"]).await;
        assert_eq!(out.code, 0, "{out}");
    }

    for round in ["running", "after a SIGKILL"] {
        // Let go of: the oldest ones. Still readable, folded back from the log.
        let (status, body) = server.get_text(&format!("/v1/workloads/{w}/rollouts/{w}-2")).await;
        assert_eq!(status, 200, "{round}: {body}");
        let r = json(&body);
        assert_eq!((r["id"].as_str(), r["status"].as_str()), (Some("kept-2"), Some("aborted")), "{round}: {r}");
        let (status, body) = server.get_text(&format!("/v1/workloads/{w}/rollouts/{w}-1")).await;
        assert_eq!(status, 200, "{round}: {body}");
        assert_eq!(json(&body)["status"].as_str(), Some("completed"), "{round}: the first deploy");
        let (status, page) = server.get_text(&format!("/ui/w/{w}/r/{w}-2")).await;
        assert!(status == 200 && page.contains("kept-2") && page.contains("aborted"), "{round}: {status} {page}");
        assert!(
            page.contains("rollout kept-2 aborted; traffic returns to stable"),
            "{round}: its timeline, from its stretch of the log: {page}"
        );
        let (status, page) = server.get_text(&format!("/ui/w/{w}")).await;
        assert!(
            status == 200 && page.contains("older rollouts are kept in the event log only"),
            "{round}: the history page says where the rest is: {status} {page}"
        );
        let (status, body) = server.get_text(&format!("/v1/workloads/{w}/rollouts/{w}-26")).await;
        assert_eq!(status, 404, "{round}: never started: {body}");

        // Counted all the same.
        let (status, body) = server.get_text("/v1/metrics").await;
        assert_eq!(status, 200, "{body}");
        for line in [
            "ringfence_deployments_total{workload=\"kept\",outcome=\"aborted\"} 24",
            "ringfence_deployments_total{workload=\"kept\",outcome=\"completed\"} 1",
        ] {
            assert!(body.contains(line), "{round}: {line} in:\n{body}");
        }

        // DORA over a window reaching back past what is kept reads the whole log.
        let (status, body) = server.get_text(&format!("/v1/workloads/{w}/dora?days=30")).await;
        assert_eq!(status, 200, "{body}");
        let deployments = json(&body)["deployments"].as_array().map(Vec::len);
        assert_eq!(deployments, Some(25), "{round}: every deployment of the window: {body}");

        if round == "running" {
            server.kill9();
            server.restart().await;
        }
    }
    // The next one is numbered on.
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(rollout_id(&out), format!("{w}-26"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postmortem_of_an_incident_let_go_is_written_from_the_log() {
    let server = Server::start().await;
    let w = "pm";
    let spec = Spec { lenient_breaker: true, ..Spec::new(w) };
    let file = server.path("pm.toml");
    std::fs::write(&file, spec.toml() + "\n[incident]\nconfirm_after = \"1s\"\n\n[history]\nrollouts = 20\n").unwrap();
    assert_eq!(server.cli(&["apply", path_str(&file)]).await.code, 0);
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    server.release(w, "v3", &["GREETING=three"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(out.code, 10, "v2 fails:\n{out}");
    let bad = rollout_id(&out);
    assert_eq!(server.rollout(w, &bad).await.status, RolloutStatus::Mitigated);
    drop(load);
    // Health holds for confirm_after: the controller resolves the incident and writes its
    // last update; nothing is owed any more, so it may be let go.
    wait_until("the incident resolves by itself", || async {
        let out = server.cli(&["incident", "show", w, &bad, "-o", "json"]).await;
        let i: ringfence_api::Incident = serde_json::from_str(&out.stdout).ok()?;
        (i.state == "resolved" && i.updates.last().is_some_and(|u| u.state == "resolved")).then_some(())
    })
    .await;
    for _ in 0..24 {
        assert_eq!(server.cli(&["deploy", w, "v3"]).await.code, 0);
        let out = server.cli(&["abort", w, "--reason", "history test"]).await;
        assert_eq!(out.code, 0, "{out}");
    }
    let out = server.cli(&["incident", "list", w, "-o", "json"]).await;
    let list: Vec<ringfence_api::Incident> = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(list.is_empty(), "the projection let the incident go with its rollout: {list:#?}");
    // Asked for by its id, it is read back from the log, as the rollout is.
    let out = server.cli(&["incident", "show", w, &bad, "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let i: ringfence_api::Incident = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((i.id.as_str(), i.release.as_str(), i.state.as_str()), (bad.as_str(), "v2", "resolved"));
    let (status, body) = server.get_text(&format!("/v1/workloads/{w}/incidents/{w}-3")).await;
    assert_eq!(status, 404, "an aborted rollout opened none: {body}");
    let out = server.cli(&["incident", "show", w, &format!("{w}-99")]).await;
    assert_eq!(out.code, 4, "never started: {out}");

    let (status, body) = server.get_text(&format!("/v1/workloads/{w}/postmortem?rollout={bad}")).await;
    assert_eq!(status, 200, "{body}");
    let md = json(&body)["markdown"].as_str().unwrap_or_default().to_string();
    assert!(md.starts_with(&format!("# Postmortem (draft): {w} v2 — rollout {bad}")), "{md}");
    assert!(md.contains("— controller — HALTED"), "its timeline, from the log: {md}");
    let (status, svg) = server.get_text(&format!("/v1/workloads/{w}/postmortem.svg?rollout={bad}")).await;
    assert!(status == 200 && svg.contains("<svg"), "its signals, drawn: {status} {svg}");

    // The reads above folded the log once; one more rollout, and the next read folds what was
    // appended since onto it: DORA over a window reaching back past what is kept counts all 27.
    assert_eq!(server.cli(&["deploy", w, "v3"]).await.code, 0);
    assert_eq!(server.cli(&["abort", w, "--reason", "history test"]).await.code, 0);
    let (status, body) = server.get_text(&format!("/v1/workloads/{w}/dora?days=30")).await;
    assert_eq!(status, 200, "{body}");
    let deployments = json(&body)["deployments"].as_array().map(Vec::len);
    assert_eq!(deployments, Some(27), "every deployment, the newest too: {body}");
}

/// Old releases: the projection keeps what is left of one `[history]` let go (its digest, where
/// its event is), the log the rest. It is listed and shown from the log, registered again with
/// the same content as before, and deployed or rolled back to after being read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_let_go_are_read_back_from_the_log_to_show_and_to_run_again() {
    let mut server = Server::start().await;
    let w = "old";
    let file = server.path("old.toml");
    std::fs::write(&file, Spec::new(w).toml() + "\n[history]\nrollouts = 20\n").unwrap();
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    for n in 1..=27 {
        let out = server.release(w, &format!("v{n}"), &[&format!("GREETING=release {n}")]).await;
        assert_eq!(out.code, 0, "{out}");
    }
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "{out}");
    let load = Load::start(server.router_addr(w).await, 100.0, 50);
    for v in ["v2", "v3"] {
        let out = server.deploy_wait(w, v).await;
        assert_eq!(out.code, 0, "{out}");
    }
    drop(load);
    // 24 rollouts aborted at once: past the 20 kept and the tenth more (beyond the one kept as
    // the stable version's), twice.
    for n in 4..=27 {
        let out = server.cli(&["deploy", w, &format!("v{n}")]).await;
        assert_eq!(out.code, 0, "{out}");
        let out = server.cli(&["abort", w, "--reason", "history test"]).await;
        assert_eq!(out.code, 0, "{out}");
    }
    let events = |body: &str| -> Vec<serde_json::Value> { json(body).as_array().cloned().unwrap_or_default() };

    for round in ["running", "after a SIGKILL"] {
        // Listed and shown whole, v1 and v4 from the log.
        let (status, body) = server.get_text(&format!("/v1/workloads/{w}/releases")).await;
        assert_eq!(status, 200, "{round}: {body}");
        let list = events(&body);
        let versions: Vec<&str> = list.iter().filter_map(|r| r["version"].as_str()).collect();
        let all: Vec<String> = (1..=27).map(|n| format!("v{n}")).collect();
        assert_eq!(versions, all, "{round}: every release, oldest first");
        assert_eq!(list[3]["content"]["config"]["GREETING"].as_str(), Some("release 4"), "{round}: {}", list[3]);
        for (v, greeting) in [("v1", "release 1"), ("v4", "release 4")] {
            let (status, body) = server.get_text(&format!("/v1/workloads/{w}/releases/{v}")).await;
            assert_eq!(status, 200, "{round}: {body}");
            let r = json(&body);
            assert_eq!(r["content"]["config"]["GREETING"].as_str(), Some(greeting), "{round}: {r}");
            assert_eq!(r["content"]["artifact"].as_str(), Some(format!("sample-app:{v}").as_str()), "{round}: {r}");
        }
        let (status, body) = server.get_text(&format!("/v1/workloads/{w}/releases/v28")).await;
        assert_eq!(status, 404, "{round}: {body}");
        // Registered again: the same content is no change, other content a conflict.
        let out = server.release(w, "v4", &["GREETING=release 4"]).await;
        assert_eq!(out.code, 0, "{round}: {out}");
        let out = server
            .cli(&[
                "release",
                "create",
                w,
                "--version",
                "v4",
                "--artifact",
                "sample-app:v4",
                "--config",
                "GREETING=other",
            ])
            .await;
        assert_ne!(out.code, 0, "{round}: {out}");
        assert!(out.stderr.contains("already exists with different content"), "{round}: {out}");
        if round == "running" {
            server.kill9();
            server.restart().await;
        }
    }

    // Deployed again: read back, then rolled out like any release, serving users.
    let mut load = Load::start(server.router_addr(w).await, 100.0, 50);
    let out = server.deploy_wait(w, "v4").await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v4"));
    let since = std::time::Instant::now();
    wait_until("requests served after the rollout", || {
        let n = load.samples().iter().filter(|s| s.sent_at >= since).count();
        async move { (n >= 40).then_some(()) }
    })
    .await;
    assert_served_by(load.samples(), since, "v4", "v4, read back from the log");
    // Rolled back to: v1 was last known good long ago.
    let out =
        server.cli(&["rollback", w, "--to", "v1", "--reason", "back to the first", "--wait", "--timeout", "45s"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v1"));
    drop(load);
    let log = server.events(w).await;
    let restored = |v: &str| {
        log.iter().filter(|e| matches!(&e.kind, EventKind::ReleaseRestored { release } if release.version == v)).count()
    };
    assert_eq!((restored("v4"), restored("v1")), (1, 1), "each read back once, on the record");
}
