//! Governance over the real API and CLI: roles and separation of duties (403, nothing
//! changed), approvals, a refusal outside the window that names the next opening, a rollback
//! during a freeze, stop the line with a fallback that still runs, the emergency path with its
//! out-of-band gates, and the parity report.

use std::time::Duration;

use ringfence_api::RolloutStatus;

use crate::harness::{Load, Server, Spec, path_str, rollout_id};

/// Applies `spec` with `extra` TOML appended, as the admin.
async fn apply(server: &Server, spec: &Spec<'_>, extra: &str) {
    let file = server.path(&format!("{}.toml", spec.name));
    std::fs::write(&file, spec.toml() + extra).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "apply {}:\n{out}", spec.name);
}

fn rfc3339(offset_ms: i64) -> String {
    let now = ringfence_core::Timestamp(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
    );
    ringfence_core::Timestamp(now.0 + offset_ms).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_need_the_role_and_other_people_than_the_author_and_the_starter() {
    let server = Server::start().await;
    let w = "gov-approve";
    let spec = Spec::new(w);
    apply(&server, &spec, "\n[approval]\nrequired = 2\nbefore_start = true\n").await;
    server.release(w, "v1", &[]).await; // registered by it-test: its author
    let pipeline = server.token_with("pipeline", &[&format!("deployer:{w}")]).await;
    let bob = server.token_with("bob", &[&format!("approver:{w}")]).await;
    let dave = server.token_with("dave", &[&format!("approver:{w}")]).await;
    let elsewhere = server.token_with("eve", &["approver:other"]).await;
    let viewer = server.token_with("vic", &["viewer"]).await;

    let out = server.cli_as(&pipeline, &["deploy", w, "v1", "--reason", "first release"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("queued") && out.stdout.contains("2 approvals"), "{out}");
    let before = server.events(w).await.len();
    // The role: a deployer (the pipeline's service principal), a viewer, an approver of
    // another workload. 403 (exit 7), nothing recorded.
    for (who, token) in [("pipeline", &pipeline), ("viewer", &viewer), ("approver of another workload", &elsewhere)] {
        let out = server.cli_as(token, &["approve", w, "--reason", "ok"]).await;
        assert_eq!(out.code, 7, "{who} may not approve:\n{out}");
    }
    // Separation of duties: the admin holds every role, but registered the release.
    let out = server.cli(&["approve", w]).await;
    assert_eq!(out.code, 7, "{out}");
    assert!(out.stderr.contains("author of v1"), "{out}");
    assert_eq!(server.events(w).await.len(), before, "refusals change nothing");

    let out = server.cli_as(&bob, &["approve", w, "--reason", "plan reviewed"]).await;
    assert_eq!(out.code, 0, "{out}");
    let s = server.status(w).await;
    let q = s.governance.queued.as_ref().expect("still queued");
    assert_eq!((q.approvals.len(), q.approvals_needed), (1, 2), "{q:?}");
    assert!(s.rollout.is_none());
    let again = server.cli_as(&bob, &["approve", w]).await;
    assert_eq!(again.code, 5, "one approval per person:\n{again}");
    let out = server.cli_as(&dave, &["approve", w, "--reason", "go"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("rollout"), "the last approval starts it:\n{out}");
    let s = server
        .wait_status(w, "v1 completed", |s| {
            s.rollout.as_ref().filter(|r| r.status == RolloutStatus::Completed).map(|_| s.clone())
        })
        .await;
    assert_eq!(s.stable.as_deref(), Some("v1"));
    let events = server.events(w).await;
    let started = events.iter().find(|e| e.kind.type_name() == "rollout_started").expect("started");
    assert_eq!(started.actor, "dave", "started by the approval that completed the set");
    let r = server.rollout(w, s.rollout.as_ref().map(|r| r.id.as_str()).unwrap()).await;
    assert_eq!(r.started_by, "pipeline", "the start is the requester's");
    // A deployer may not weaken governance in the spec: 403, nothing changed.
    let file = server.path("weaker.toml");
    std::fs::write(&file, spec.toml()).unwrap();
    let out = server.cli_as(&pipeline, &["apply", path_str(&file)]).await;
    assert_eq!(out.code, 7, "{out}");
    assert!(out.stderr.contains("governed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_a_deploy_is_refused_with_the_next_opening_and_a_rollback_still_runs() {
    let server = Server::start().await;
    let w = "gov-window";
    let spec = Spec { phases: vec![(100, "500ms")], ..Spec::new(w) };
    apply(&server, &spec, "").await;
    for v in ["v1", "v2", "v3"] {
        server.release(w, v, &[]).await;
    }
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    let freeze = format!(
        "\n[schedule]\noutside = \"refuse\"\n[[schedule.freezes]]\nfrom = \"{}\"\nto = \"{}\"\nreason = \"end-of-quarter freeze\"\n",
        rfc3339(-3_600_000),
        rfc3339(2 * 86_400_000)
    );
    apply(&server, &spec, &freeze).await;
    let out = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stderr.contains("end-of-quarter freeze"), "{out}");
    assert!(out.stderr.contains("the next window opens"), "names the next opening:\n{out}");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v2"), "nothing changed");
    let st = server.cli(&["status", w]).await;
    assert!(st.stdout.contains("window     closed"), "{st}");
    // A mitigation is never blocked by a freeze.
    let out = server.cli(&["rollback", w, "--reason", "v2 leaks memory", "--wait", "--timeout", "45s"]).await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v1"));
    drop(load);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_line_pauses_every_rollout_refuses_new_ones_and_a_fallback_still_runs() {
    let server = Server::start().await;
    let (a, b) = ("gov-line-a", "gov-line-b");
    let slow = Spec { phases: vec![(50, "20s"), (100, "1s")], lenient_breaker: true, ..Spec::new(a) };
    apply(&server, &slow, "").await;
    apply(&server, &Spec { name: b, ..Spec { phases: vec![(50, "20s"), (100, "1s")], ..Spec::new(b) } }, "").await;
    for w in [a, b] {
        server.release(w, "v1", &[]).await;
        assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    }
    // a's v2 fails only after the line is stopped below (20 s of its share of the load).
    server.release(a, "v2", &["SAMPLE_ERRORS_AFTER=1000", "SAMPLE_ERROR_RATE=0.6"]).await;
    server.release(b, "v2", &[]).await;
    server.release(b, "v3", &[]).await;
    let load = Load::start(server.router_addr(a).await, 100.0, 200);
    let load_b = Load::start(server.router_addr(b).await, 100.0, 200);
    let ra = rollout_id(&server.cli(&["deploy", a, "v2"]).await);
    let rb = rollout_id(&server.cli(&["deploy", b, "v2"]).await);

    let deployer = server.token_with("pipeline", &["deployer"]).await;
    let out = server.cli_as(&deployer, &["freeze", "--all", "--reason", "payments outage INC-42"]).await;
    assert_eq!(out.code, 7, "only an admin stops the line:\n{out}");
    let out = server.cli(&["freeze", "--all", "--reason", "payments outage INC-42"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains(&ra) && out.stdout.contains(&rb), "both paused:\n{out}");
    assert_eq!(server.rollout(b, &rb).await.status, RolloutStatus::Paused);
    let out = server.cli(&["resume", b]).await;
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stderr.contains("line is stopped"), "{out}");
    let st = server.cli(&["status", b]).await;
    assert!(st.stdout.contains("LINE       STOPPED"), "{st}");

    // a's v2 starts failing while paused: the fallback still runs.
    let r = server
        .wait_status(a, "v2 fallen back with the line stopped", |s| {
            s.rollout.as_ref().filter(|r| r.id == ra && r.status == RolloutStatus::Mitigated).cloned()
        })
        .await;
    assert_eq!(r.release, "v2");
    drop(load);

    let out = server.cli(&["freeze", "--lift", "--reason", "INC-42 resolved"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains(&rb), "b's rollout resumes:\n{out}");
    server
        .wait_status(b, "b's v2 completes after the line restarts", |s| {
            s.rollout.as_ref().filter(|r| r.id == rb && r.status == RolloutStatus::Completed).map(|_| ())
        })
        .await;
    drop(load_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emergency_path_end_to_end_with_its_out_of_band_gates() {
    let server = Server::start().await;
    let (staging, prod) = ("gov-em-staging", "gov-em");
    let phases = vec![(10, "4s"), (100, "4s")];
    apply(
        &server,
        &Spec { phases: vec![(10, "2s"), (100, "2s")], ..Spec::new(staging) },
        "\n[environment]\nname = \"staging\"\n",
    )
    .await;
    let smoked = server.path("smoke.log");
    let extra = format!(
        "\n[[health.smoke]]\nname = \"quick\"\ncommand = [\"/bin/sh\", \"-c\", \"echo $RINGFENCE_VERSION $RINGFENCE_ACCELERATED >> {}\"]\n[environment]\nname = \"production\"\nafter = \"{staging}\"\nrequires = [\"security-scan\"]\n[approval]\nbefore_start = true\n[emergency]\nseverities = [\"sev1\", \"sev2\"]\nbake_factor = 0.25\nout_of_band_within = \"1h\"\n",
        smoked.display()
    );
    apply(&server, &Spec { phases, ..Spec::new(prod) }, &extra).await;
    for w in [staging, prod] {
        server.release(w, "v1", &[]).await;
        server.release(w, "v2", &[]).await;
    }
    // v1 through staging, then production (approved, scanned).
    assert_eq!(server.deploy_wait(staging, "v1").await.code, 0);
    let out = server.cli(&["deploy", prod, "v1"]).await;
    assert_eq!(out.code, 5, "no scan yet:\n{out}");
    assert!(out.stderr.contains("attestation security-scan is missing"), "{out}");
    let scan = ["--kind", "security-scan", "--source", "trivy/run/1", "--subject", "sample-app:v1"];
    let out = server.cli(&[&["release", "attest", prod, "v1"][..], &scan].concat()).await;
    assert_eq!(out.code, 0, "{out}");
    let pipeline = server.token_with("pipeline", &["deployer"]).await;
    let bob = server.token_with("bob", &[&format!("approver:{prod}")]).await;
    let erin = server.token_with("erin", &[&format!("emergency-approver:{prod}")]).await;
    assert_eq!(server.cli_as(&pipeline, &["deploy", prod, "v1"]).await.code, 0);
    assert_eq!(server.cli_as(&bob, &["approve", prod]).await.code, 0);
    server.wait_status(prod, "v1 in production", |s| (s.stable.as_deref() == Some("v1")).then_some(())).await;

    // The hotfix v2: not through staging, not scanned. On the emergency path.
    let load = Load::start(server.router_addr(prod).await, 100.0, 200);
    let out = server
        .cli_as(
            &pipeline,
            &["deploy", prod, "v2", "--emergency", "--incident", "INC-42", "--severity", "sev3", "--reason", "fix"],
        )
        .await;
    assert_eq!(out.code, 7, "sev3 is not an emergency here:\n{out}");
    let out = server
        .cli_as(
            &pipeline,
            &[
                "deploy",
                prod,
                "v2",
                "--emergency",
                "--incident",
                "INC-42",
                "--severity",
                "sev1",
                "--reason",
                "payments time out",
            ],
        )
        .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("emergency approver"), "{out}");
    let out = server.cli_as(&bob, &["approve", prod]).await;
    assert_eq!(out.code, 7, "an ordinary approver may not approve an emergency:\n{out}");
    let out = server.cli_as(&erin, &["approve", prod, "--reason", "INC-42 is sev1; fix reviewed on the call"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("EMERGENCY"), "{out}");
    let s = server
        .wait_status(prod, "the hotfix completes on shortened bakes", |s| {
            s.rollout.as_ref().filter(|r| r.release == "v2" && r.status == RolloutStatus::Completed).map(|_| s.clone())
        })
        .await;
    let r = s.rollout.as_ref().unwrap();
    assert_eq!(r.phases[0].bake_ms, 1_000, "4s x 0.25");
    let smoke = std::fs::read_to_string(&smoked).expect("the smoke tests ran");
    assert!(
        smoke.lines().any(|l| l == "v1 0") && smoke.lines().any(|l| l == "v2 1"),
        "accelerated on the emergency path only:\n{smoke}"
    );
    let em = s.governance.emergency.as_ref().expect("shown in status");
    assert_eq!(em.incident, "INC-42");
    let gates: Vec<(&str, Option<&str>)> =
        s.governance.owed.iter().map(|o| (o.gate.as_str(), o.outcome.as_deref())).collect();
    assert_eq!(
        gates,
        vec![
            (format!("promotion through {staging}").as_str(), None),
            ("attestation security-scan", None),
            ("approval", None)
        ]
    );
    let st = server.cli(&["status", prod]).await;
    assert!(st.stdout.contains("owed       attestation security-scan of v2: PENDING"), "{st}");

    // Out of band: the scan fails (an alert), staging completes the hotfix (passes), an
    // approver approves after the fact (passes), then a new scan passes.
    let scan2 = ["--kind", "security-scan", "--source", "trivy/run/2", "--subject", "sample-app:v2", "--failed"];
    let out = server.cli(&[&["release", "attest", prod, "v2"][..], &scan2].concat()).await;
    assert!(out.stdout.contains("FAILED"), "{out}");
    let load_staging = Load::start(server.router_addr(staging).await, 100.0, 200);
    assert_eq!(server.deploy_wait(staging, "v2").await.code, 0, "{}", server.diagnose(staging).await);
    drop(load_staging);
    drop(load);
    server
        .wait_status(prod, "promotion settled", |s| {
            s.governance
                .owed
                .iter()
                .any(|o| o.gate.starts_with("promotion") && o.outcome.as_deref() == Some("passed"))
                .then_some(())
        })
        .await;
    assert_eq!(server.cli_as(&pipeline, &["approve", prod]).await.code, 7, "the starter may not approve");
    assert_eq!(server.cli_as(&bob, &["approve", prod, "--reason", "reviewed after the fact"]).await.code, 0);
    let scan3 = ["--kind", "security-scan", "--source", "trivy/run/3", "--subject", "sample-app:v2"];
    assert_eq!(server.cli(&[&["release", "attest", prod, "v2"][..], &scan3].concat()).await.code, 0);
    let s = server.status(prod).await;
    let outcomes: Vec<Option<&str>> = s.governance.owed.iter().map(|o| o.outcome.as_deref()).collect();
    assert_eq!(outcomes, vec![Some("passed"), Some("failed"), Some("passed")], "{:?}", s.governance.owed);
    // Every step is in the log, with its actor.
    let events = server.events(prod).await;
    let actors: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.kind.type_name(), e.actor.clone()))
        .filter(|(t, _)| t.contains("approv") || t.contains("emergency"))
        .collect();
    assert!(actors.contains(&("approval_given".into(), "erin".into())), "{actors:?}");
    assert!(actors.contains(&("emergency_declared".into(), "erin".into())), "{actors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parity_report_shows_what_differs_beyond_the_version() {
    let server = Server::start().await;
    let (staging, prod) = ("gov-par-staging", "gov-par");
    let one = vec![(100, "500ms")];
    apply(&server, &Spec { phases: one.clone(), ..Spec::new(staging) }, "").await;
    apply(
        &server,
        &Spec { phases: one, replicas: 2, ..Spec::new(prod) },
        &format!("\n[environment]\nname = \"production\"\nafter = \"{staging}\"\n"),
    )
    .await;
    server.release(staging, "v1", &["POOL=5", "REGION=eu"]).await;
    server.release(prod, "v1", &["POOL=20", "REGION=eu"]).await;
    for w in [staging, prod] {
        assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    }
    let out = server.cli(&["parity", prod]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("executor.replicas") && out.stdout.contains("POOL"), "{out}");
    assert!(!out.stdout.contains("REGION"), "equal keys are not differences:\n{out}");
    let json = server.cli(&["parity", staging, "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["against"], prod, "found through environment.after");
    let keys: Vec<&str> = v["differences"].as_array().unwrap().iter().filter_map(|d| d["key"].as_str()).collect();
    assert_eq!(keys, vec!["executor.replicas", "POOL"]);
    let viewer_elsewhere = server.token_with("vic", &[&format!("viewer:{staging}")]).await;
    let out = server.cli_as(&viewer_elsewhere, &["parity", staging]).await;
    assert_eq!(out.code, 7, "must read both:\n{out}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// A check service of the organisation's own: verifies each request with the Standard
/// Webhooks reference library (not ringfence's code), and fails v3.
async fn check_service(secret: &'static str) -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/check",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let hook = standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec()).unwrap();
                if let Err(e) = hook.verify(&body, &headers) {
                    return (axum::http::StatusCode::UNAUTHORIZED, format!("{e}"));
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let version = v["version"].as_str().unwrap_or_default().to_string();
                log.lock().unwrap().push(version.clone());
                let passed = version != "v3";
                (
                    axum::http::StatusCode::OK,
                    serde_json::json!({"passed": passed, "detail": format!("scanned {version}")}).to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn write_secret(server: &Server, name: &str, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = server.data_dir().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, value).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_ringfence_runs_gate_the_deployment_and_signed_attestations_are_verified() {
    let server = Server::start().await;
    let w = "gov-checks";
    let (addr, seen) = check_service("scanner-secret-of-24-bytes-or-more").await;
    write_secret(&server, "scanner", "scanner-secret-of-24-bytes-or-more");
    write_secret(&server, "ci-hook", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    let extra = format!(
        r#"
[environment]
webhook_secret = "secret://ci-hook"
[[environment.checks]]
name = "tests"
command = ["/bin/sh", "-c", "test \"$RINGFENCE_VERSION\" != v3 || {{ echo 'unit tests failed: 3 of 212' >&2; exit 1; }}"]
timeout = "30s"
[[environment.checks]]
name = "scan"
webhook = "http://{addr}/check"
secret = "secret://scanner"
"#
    );
    apply(&server, &Spec::new(w), &extra).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v3", &[]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "both checks pass, then the rollout:\n{out}\n{}", server.diagnose(w).await);
    assert!(out.stdout.contains("check tests to pass") && out.stdout.contains("check scan to pass"), "{out}");

    let out = server.deploy_wait(w, "v3").await;
    assert_eq!(out.code, 10, "a failed check drops the deployment:\n{out}");
    let events = server.events(w).await;
    let dropped = events
        .iter()
        .find_map(|e| match &e.kind {
            ringfence_core::EventKind::DeployDropped { why, .. } => Some(why.clone()),
            _ => None,
        })
        .expect("dropped");
    assert!(
        dropped.contains("check") && (dropped.contains("unit tests failed") || dropped.contains("scanned v3")),
        "{dropped}"
    );
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v1"));
    assert_eq!(*seen.lock().unwrap(), vec!["v1", "v3"], "each request verified by the reference library");

    // A signed attestation from a CI system: no token, the signature is the credential.
    let body = serde_json::json!({"workload": w, "version": "v1", "kind": "compliance", "source": "grc/run/5", "subject": "sample-app:v1", "passed": true}).to_string();
    let sign = |secret: &str, id: &str| {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let sig = standardwebhooks::Webhook::new(secret).unwrap().sign(id, ts, body.as_bytes()).unwrap();
        vec![
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), sig),
        ]
    };
    let post = |path: String, headers: Vec<(String, String)>| {
        let url = format!("{}{path}", server.url());
        let body = body.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ringfence::http::HttpClient::new()
                .request(hyper::Method::POST, &url, &h, Some(bytes::Bytes::from(body)), Duration::from_secs(10))
                .await
                .unwrap()
                .status
                .as_u16()
        }
    };
    let good = sign("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_1");
    let path = format!("/v1/hooks/{w}/attestations");
    assert_eq!(post(path.clone(), good.clone()).await, 201);
    assert_eq!(post(path.clone(), good).await, 401, "a replay is refused");
    assert_eq!(post(path.clone(), sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_2")).await, 401, "another key");
    assert_eq!(post(path.clone(), Vec::new()).await, 401, "unsigned");
    assert_eq!(
        post("/v1/hooks/nobody/attestations".into(), sign("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_3")).await,
        401,
        "the same answer for a workload that does not exist"
    );
    let events = server.events(w).await;
    let hooked: Vec<&str> = events
        .iter()
        .filter(|e| e.kind.type_name() == "attestation_added" && e.actor.starts_with("webhook:"))
        .map(|e| e.actor.as_str())
        .collect();
    assert_eq!(hooked, vec![format!("webhook:{w}").as_str()], "recorded once, by the signer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_change_warns_or_waits_for_one_more_approval() {
    let server = Server::start().await;
    let w = "gov-size";
    let spec = Spec::new(w);
    apply(&server, &spec, "\n[environment]\nmax_change_lines = 400\n").await;
    server.release(w, "v1", &[]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    for v in ["v2", "v3"] {
        let out = server
            .cli(&[
                "release",
                "create",
                w,
                "--version",
                v,
                "--artifact",
                "sample-app:big",
                "--changed-files",
                "40",
                "--changed-lines",
                "2000",
                "--commits",
                "12",
                "--author",
                "carol",
            ])
            .await;
        assert_eq!(out.code, 0, "{out}");
    }
    let shown = server.cli(&["release", "show", w, "v2", "-o", "json"]).await;
    assert!(shown.stdout.contains("\"lines\": 2000"), "{shown}");
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("2000 lines, above environment.max_change_lines = 400"), "a warning:\n{out}");
    assert_eq!(server.cli(&["abort", w, "--reason", "too big"]).await.code, 0);
    server.wait_status(w, "v2 aborted", |s| s.rollout.as_ref().filter(|r| !r.status.is_active()).map(|_| ())).await;
    apply(&server, &spec, "\n[environment]\nmax_change_lines = 400\nover_size = \"approve\"\n").await;
    let out = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("one more approval"), "queued for an approval:\n{out}");
    let bob = server.token_with("bob", &[&format!("approver:{w}")]).await;
    let out = server.cli_as(&bob, &["approve", w, "--reason", "reviewed the whole diff"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("rollout"), "started:\n{out}");
}
