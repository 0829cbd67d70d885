//! Drills through the real stack: a drill release rolled out to a capped share of users with a
//! fault injected by the router (error rate, latency), the executor (crash) or the signal
//! seam (signal outage), judged against the `[drill]` targets, and nothing left behind: no
//! drill process, no drill route, no fault in the table, no incident, the stable version
//! serving every user. Also `lint` on a workload and on a spec file (SARIF).

use std::time::{Duration, Instant};

use ringfence_api::{Drill, GameDay, LintReport, RolloutStatus};

use crate::harness::{Load, Server, Spec, assert_served_by, path_str};

/// The drill's own section: half the users (thin test traffic), generous targets.
const DRILL: &str = "\n[drill]\nmax_weight = 50\ndetect_within = \"20s\"\nmitigate_within = \"10s\"\n";

/// A workload whose v1 is stable, under load.
async fn stable(w: &'static str, spec: Spec<'static>, extra: &str) -> (Server, Load) {
    let server = Server::start().await;
    let file = server.path(&format!("{w}.toml"));
    std::fs::write(&file, spec.toml() + extra).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    server.release(w, "v1", &[]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 150.0, 200);
    (server, load)
}

fn spec(w: &'static str) -> Spec<'static> {
    // The drill takes the first phase's bake; a few seconds give thin traffic time to count.
    Spec { phases: vec![(10, "6s"), (100, "1500ms")], lenient_breaker: true, ..Spec::new(w) }
}

/// Runs `ringfence drill W --fault F --wait` and returns its exit code and the drill.
async fn drill(server: &Server, w: &str, fault: &str) -> (i32, Drill) {
    let out = server.cli(&["drill", w, "--fault", fault, "--weight", "50", "--wait", "--timeout", "90s"]).await;
    let drills: Vec<Drill> =
        serde_json::from_str(&server.cli(&["drills", w, "-o", "json"]).await.stdout).expect("drills as JSON");
    let d = drills.into_iter().next().unwrap_or_else(|| panic!("no drill listed:\n{out}"));
    assert!(d.report.is_some(), "the drill did not end:\n{out}\n{}", server.diagnose(w).await);
    (out.code, d)
}

/// Nothing of the drill is left: its rollout ended, no process of its version runs, the
/// router's table sends every user to v1 with no fault, and it opened no incident.
async fn nothing_left_behind(server: &Server, w: &str, d: &Drill, load: Load) {
    let ended = crate::harness::wait_until("the drill's version to be gone", || async {
        let s = server.status(w).await;
        let clean = s.replicas.iter().all(|r| r.version == "v1")
            && s.routes.as_ref().is_some_and(|(_, g)| g.len() == 1 && g[0].version == "v1" && g[0].fault.is_none())
            && server.replica_processes(w, &d.version).is_empty();
        clean.then_some(Instant::now())
    })
    .await;
    let r = server.rollout(w, &d.rollout_id).await;
    assert!(
        matches!(r.status, RolloutStatus::Mitigated | RolloutStatus::Aborted),
        "the drill's rollout must have ended: {:?}",
        r.status
    );
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v1"), "a drill release never becomes stable");
    let incidents = server.cli(&["incident", "list", w, "-o", "json"]).await;
    assert_eq!(incidents.stdout.trim(), "[]", "a drill opens no incident:\n{incidents}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_served_by(&load.finish().await, ended, "v1", "after the drill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_rate_drill_is_detected_mitigated_and_leaves_nothing_behind() {
    let w = "drill-errors";
    let (server, load) = stable(w, spec(w), DRILL).await;
    let before: LintReport =
        serde_json::from_str(&server.cli(&["lint", w, "-o", "json"]).await.stdout).expect("lint as JSON");
    assert!(
        before.findings.iter().any(|f| f.rule == "trigger-never-drilled" && f.message.contains("`error_rate`")),
        "{before:#?}"
    );
    let (code, d) = drill(&server, w, "error-rate").await;
    let r = d.report.as_ref().expect("ended");
    assert_eq!((code, r.outcome.as_str()), (0, "passed"), "{d:#?}\n{}", server.diagnose(w).await);
    assert_eq!(r.mitigation.as_deref(), Some("fallback"), "{d:#?}");
    assert!(r.time_to_detect_ms.is_some() && r.time_to_mitigate_ms.is_some(), "{d:#?}");
    assert!(r.requests > 0 && r.failed_requests > 0, "the users the drill affected are counted: {d:#?}");
    assert!(d.injection.contains("503"), "{d:#?}");
    nothing_left_behind(&server, w, &d, load).await;

    // The drill is what `status`, `lint` and the game day read.
    let status = server.cli(&["status", w]).await;
    assert!(status.stdout.contains("error-rate") && status.stdout.contains("passed"), "{status}");
    let after: LintReport =
        serde_json::from_str(&server.cli(&["lint", w, "-o", "json"]).await.stdout).expect("lint as JSON");
    assert!(
        !after.findings.iter().any(|f| f.rule.starts_with("trigger-") && f.message.contains("`error_rate`")),
        "{after:#?}"
    );
    let g: GameDay = serde_json::from_str(&server.cli(&["gameday", w, "-o", "json"]).await.stdout).expect("JSON");
    let c = g.coverage.iter().find(|c| c.fault == "error-rate").expect("error-rate covered");
    assert_eq!((c.status.as_str(), c.passed), ("covered", 1), "{g:#?}");
    let svg = server.path("gameday.svg");
    let out = server.cli(&["gameday", w, "--svg", path_str(&svg)]).await;
    assert_eq!(out.code, 0, "{out}");
    let chart = std::fs::read_to_string(&svg).expect("the chart");
    assert!(chart.starts_with("<svg") && chart.contains("error-rate"), "{chart}");

    // And what the hub shows people watching a game day.
    let bearer = server.bearer();
    let cookie = format!("rf_ui={}", bearer.trim_start_matches("Bearer "));
    let http = ringfence::http::HttpClient::new();
    let get = |path: String| {
        let (http, cookie) = (&http, &cookie);
        async move {
            http.request(hyper::Method::GET, &path, &[("cookie", cookie)], None, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        }
    };
    let page = get(format!("{}/ui/w/{w}", server.url())).await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(page.status.is_success() && html.contains(">Drills</h2>"), "{html}");
    assert!(html.contains("<span class=\"badge covered\">covered</span>"), "{html}");
    let chart = get(format!("{}/ui/w/{w}/gameday.svg", server.url())).await;
    assert!(chart.status.is_success() && chart.body.starts_with(b"<svg"), "{:?}", chart.status);
    // Counted as a drill, not as a deployment that failed.
    let metrics = http
        .request(
            hyper::Method::GET,
            &format!("{}/v1/metrics", server.url()),
            &[("authorization", &bearer)],
            None,
            Duration::from_secs(10),
        )
        .await
        .expect("GET /v1/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(&format!("ringfence_drills_total{{workload=\"{w}\",fault=\"error-rate\",outcome=\"passed\"}} 1")),
        "{text}"
    );
    assert!(
        !text.contains(&format!("ringfence_deployments_total{{workload=\"{w}\",outcome=\"mitigated\"}}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_drill_starts_by_itself_when_due() {
    let w = "drill-sched";
    let (server, load) =
        stable(w, spec(w), &format!("{DRILL}\n[[drill.scheduled]]\nfault = \"error-rate\"\nevery = \"1h\"\n")).await;
    let d = crate::harness::wait_until("the scheduled drill to end", || async {
        let drills: Vec<Drill> = serde_json::from_str(&server.cli(&["drills", w, "-o", "json"]).await.stdout).ok()?;
        drills.into_iter().next().filter(|d| d.report.is_some())
    })
    .await;
    assert!(d.scheduled && d.started_by == "controller", "{d:#?}");
    assert_eq!(d.status, "passed", "{d:#?}\n{}", server.diagnose(w).await);
    nothing_left_behind(&server, w, &d, load).await;
    // Not again before `every` has passed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drills: Vec<Drill> =
        serde_json::from_str(&server.cli(&["drills", w, "-o", "json"]).await.stdout).expect("JSON");
    assert_eq!(drills.len(), 1, "{drills:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_drill_is_detected_and_mitigated() {
    let w = "drill-latency";
    let (server, load) = stable(w, Spec { max_p99_latency: "150ms", ..spec(w) }, DRILL).await;
    let (code, d) = drill(&server, w, "latency=400ms").await;
    let r = d.report.as_ref().expect("ended");
    assert_eq!((code, r.outcome.as_str()), (0, "passed"), "{d:#?}\n{}", server.diagnose(w).await);
    assert_eq!(r.mitigation.as_deref(), Some("fallback"), "{d:#?}");
    nothing_left_behind(&server, w, &d, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_drill_kills_the_drill_instances_only_and_is_mitigated() {
    let w = "drill-crash";
    let (server, load) = stable(w, spec(w), DRILL).await;
    let stable_pids = server.replica_processes(w, "v1");
    let (code, d) = drill(&server, w, "crash").await;
    let r = d.report.as_ref().expect("ended");
    assert_eq!((code, r.outcome.as_str()), (0, "passed"), "{d:#?}\n{}", server.diagnose(w).await);
    assert!(d.injection.contains("SIGKILL") && !d.injection.contains("none ran"), "{d:#?}");
    assert_eq!(server.replica_processes(w, "v1"), stable_pids, "the stable instances are untouched");
    nothing_left_behind(&server, w, &d, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_drill_is_caught_and_the_stopped_instances_are_cleaned_up() {
    let w = "drill-hang";
    let (server, load) = stable(w, spec(w), DRILL).await;
    let (code, d) = drill(&server, w, "hang").await;
    let r = d.report.as_ref().expect("ended");
    assert_eq!((code, r.outcome.as_str()), (0, "passed"), "{d:#?}\n{}", server.diagnose(w).await);
    assert!(d.injection.contains("SIGSTOP"), "{d:#?}");
    // A stopped process still goes when it is stopped: nothing of it is left.
    nothing_left_behind(&server, w, &d, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_outage_drill_holds_the_rollout_and_never_passes_it() {
    let w = "drill-outage";
    let (server, load) = stable(w, spec(w), DRILL).await;
    let (code, d) = drill(&server, w, "signal-outage").await;
    let r = d.report.as_ref().expect("ended");
    assert_eq!((code, r.outcome.as_str()), (0, "passed"), "{d:#?}\n{}", server.diagnose(w).await);
    assert_eq!(r.mitigation.as_deref(), Some("hold"), "{d:#?}");
    let events = server.events(w).await;
    assert!(
        !crate::harness::of_rollout(&events, &d.rollout_id)
            .any(|k| matches!(k, ringfence_core::EventKind::PhasePassed { .. })),
        "a phase never passes with its signals out"
    );
    nothing_left_behind(&server, w, &d, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_outage_drill_keeps_users_served_and_mitigates_on_return() {
    let w = "drill-cp";
    let (server, load) = stable(w, spec(w), DRILL).await;
    let (code, d) = drill(&server, w, "control-plane-down=3s").await;
    let r = d.report.as_ref().expect("ended");
    assert_eq!((code, r.outcome.as_str()), (0, "passed"), "{d:#?}\n{}", server.diagnose(w).await);
    assert_eq!(r.mitigation.as_deref(), Some("fallback"), "{d:#?}");
    let injected = d.injected_at.expect("injected").0;
    let halted = server
        .events(w)
        .await
        .into_iter()
        .find(|e| matches!(&e.kind, ringfence_core::EventKind::RolloutHalted { rollout_id, .. } if *rollout_id == d.rollout_id))
        .expect("the drill's rollout halted");
    assert!(halted.at.0 - injected >= 3000, "nothing is decided while the controller is down: {d:#?}");
    // The router served on its own meanwhile: the drill version's requests were counted.
    assert!(r.requests > 0, "{d:#?}");
    nothing_left_behind(&server, w, &d, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_with_automatic_mitigation_off_is_reported_failed_and_cleaned_up() {
    let w = "drill-manual";
    let manual = DRILL.to_string().replace("mitigate_within = \"10s\"", "mitigate_within = \"2s\"");
    let server = Server::start().await;
    let file = server.path(&format!("{w}.toml"));
    let text = spec(w).toml().replace("auto_fallback = true", "auto_fallback = false") + &manual;
    std::fs::write(&file, text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    server.release(w, "v1", &[]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0);
    let load = Load::start(server.router_addr(w).await, 150.0, 200);
    let (code, d) = drill(&server, w, "error-rate").await;
    let r = d.report.as_ref().expect("ended");
    assert_eq!((code, r.outcome.as_str()), (10, "failed"), "{d:#?}\n{}", server.diagnose(w).await);
    assert!(r.problems.iter().any(|p| p.contains("exposure frozen")), "{d:#?}");
    nothing_left_behind(&server, w, &d, load).await;
    let lint: LintReport = serde_json::from_str(&server.cli(&["lint", w, "-o", "json"]).await.stdout).expect("JSON");
    assert!(lint.findings.iter().any(|f| f.rule == "automatic-fallback-off"), "{lint:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_drill_is_recorded_and_leaves_nothing_behind() {
    let w = "drill-abort";
    let (server, load) = stable(w, spec(w), DRILL).await;
    // A long bake: the drill still runs when it is aborted.
    let file = server.path("long.toml");
    std::fs::write(&file, Spec { phases: vec![(10, "60s"), (100, "1500ms")], ..spec(w) }.toml() + DRILL)
        .expect("write");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    let out = server.cli(&["drill", w, "--fault", "signal-outage", "--weight", "50"]).await;
    assert_eq!(out.code, 0, "{out}");
    // A drill waits for no other: a deployment meanwhile is refused.
    server.release(w, "v2", &[]).await;
    let deploy = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(deploy.code, 5, "{deploy}");
    crate::harness::wait_until("the drill release to run", || async {
        server.status(w).await.replicas.iter().any(|r| r.version != "v1").then_some(())
    })
    .await;
    // Who may not drive it: a viewer, and nobody without a token; a huge fault is refused
    // without being echoed back.
    let viewer = server.token_with("watcher", &["viewer"]).await;
    let out = server.cli_as(&viewer, &["drill", w, "--abort"]).await;
    assert_eq!(out.code, 7, "{out}");
    let out = server.cli_as("", &["drills", w]).await;
    assert_eq!(out.code, 7, "{out}");
    let long = "x".repeat(100_000);
    let out = server.cli(&["drill", w, "--fault", &long]).await;
    assert_eq!(out.code, 3, "{}", &out.stderr[..out.stderr.len().min(300)]);
    assert!(out.stderr.len() < 1000 && out.stderr.contains("at most 64 characters"), "{}", &out.stderr[..300]);
    let out = server.cli(&["drill", w, "--abort", "--reason", "game day over"]).await;
    assert_eq!(out.code, 0, "{out}");
    let drills: Vec<Drill> =
        serde_json::from_str(&server.cli(&["drills", w, "-o", "json"]).await.stdout).expect("JSON");
    assert_eq!(drills[0].status, "aborted", "{drills:#?}");
    nothing_left_behind(&server, w, &drills[0], load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_gates_a_pipeline_on_a_spec_file_and_writes_sarif() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clean = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/production.toml");
    let out = crate::harness::cli(&["lint", clean.to_str().expect("utf-8")]).await;
    assert_eq!(out.code, 0, "the production example is clean:\n{out}");
    assert!(out.stdout.contains("0 error(s), 0 warning(s), 0 note(s)"), "{out}");

    let text = std::fs::read_to_string(&clean).expect("read the example");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replacen("weight = 5\nbake = \"5m\"\n", "weight = 5\nbake = \"5m\"\ngates = []\n", 1))
        .expect("write");
    let sarif = dir.path().join("lint.sarif");
    let out = crate::harness::cli(&["lint", path_str(&bad), "--sarif", path_str(&sarif)]).await;
    assert_eq!(out.code, 3, "an error fails the command:\n{out}");
    assert!(out.stdout.contains("error[phase-without-health-gate]"), "{out}");
    let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sarif).expect("sarif")).expect("JSON");
    let result = &log["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "phase-without-health-gate");
    assert_eq!(result["level"], "error");
    assert!(
        result["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64().is_some_and(|l| l > 1),
        "{log:#}"
    );

    // A warning fails only when asked.
    let warn = dir.path().join("warn.toml");
    std::fs::write(&warn, text.replacen("replicas = 3", "replicas = 1", 1)).expect("write");
    assert_eq!(crate::harness::cli(&["lint", path_str(&warn)]).await.code, 0);
    assert_eq!(crate::harness::cli(&["lint", path_str(&warn), "--fail-on", "warning"]).await.code, 3);
}
