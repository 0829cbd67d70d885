//! `[history]`: the server keeps a workload's newest rollouts in memory and reads older ones
//! back from the log, which keeps them all; the counts `/metrics` reports never lose them.

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
