//! Exposure beyond a share of users: a ring of chosen users sees the new version first (a
//! phase at 0% with a segment), and a pin header sends one request to a named version.

use std::time::Duration;

use hyper::Method;
use ringfence::http::HttpClient;
use ringfence_api::Stage;

use crate::harness::{Load, Server, Spec, path_str};

/// The version that served one request through the router, as it says in its header.
async fn served_by(router: std::net::SocketAddr, headers: &[(&str, &str)]) -> String {
    let url = format!("http://{router}/");
    let r = HttpClient::new()
        .request(Method::GET, &url, headers, None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(r.status.is_success(), "{url} {headers:?}: {}", r.status);
    r.headers
        .get("x-ringfence-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no x-ringfence-version: {:?}", r.headers))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_users_see_the_new_version_first_and_a_pin_header_reaches_either() {
    let server = Server::start().await;
    let w = "ringed";
    let mut spec = Spec::new(w);
    // The ring's phase outlasts the checks made during it, on a loaded machine too.
    spec.phases = vec![(0, "15s"), (50, "1500ms"), (100, "1500ms")];
    // The load's users `user-19` and `user-190`..`user-199` (11 of 200) are the chosen ring,
    // with whoever sends `x-ring: staff`.
    let text = spec
        .toml()
        .replacen(
            "name = \"p1\"\nweight = 0\n",
            "name = \"p1\"\nweight = 0\nsegment = { prefixes = [\"user-19\"], header = \"x-ring\", values = [\"staff\"] }\n",
            1,
        )
        .replacen("[router]\n", "[router]\npin_header = \"x-ringfence-pin\"\n", 1);
    let file = server.path("ringed.toml");
    std::fs::write(&file, &text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let router = server.router_addr(w).await;
    let mut load = Load::start(router, 100.0, 200);

    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    server
        .wait_status(w, "the ring's phase baking", |s| {
            s.rollout.as_ref().filter(|r| r.release == "v2" && r.phase == 0 && r.stage == Stage::Baking).map(|_| ())
        })
        .await;
    // In the ring: by the user key, or by the header.
    assert_eq!(served_by(router, &[("x-user-id", "user-19")]).await, "v2");
    assert_eq!(served_by(router, &[("x-user-id", "user-195")]).await, "v2");
    assert_eq!(served_by(router, &[("x-user-id", "bob"), ("x-ring", "staff")]).await, "v2");
    // Everyone else: the stable version, whatever their bucket, at 0%.
    for user in ["bob", "carol", "user-1", "user-42"] {
        assert_eq!(served_by(router, &[("x-user-id", user)]).await, "v1", "{user}");
    }
    assert_eq!(served_by(router, &[("x-user-id", "bob"), ("x-ring", "public")]).await, "v1");
    // The pin header names a version for one request, either way.
    assert_eq!(served_by(router, &[("x-user-id", "bob"), ("x-ringfence-pin", "v2")]).await, "v2");
    assert_eq!(served_by(router, &[("x-user-id", "user-19"), ("x-ringfence-pin", "v1")]).await, "v1");
    // The load's own ring users reach v2 too (a few requests a second: wait for one).
    let in_ring = |u: u32| u == 19 || (190..200).contains(&u);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !load.samples().iter().any(|s| in_ring(s.user) && s.version.as_deref() == Some("v2")) {
        assert!(std::time::Instant::now() < deadline, "no request of the ring's users reached v2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still in the ring's phase after these checks: every request the load sent until now
    // was routed by the ring's table (or the one before it, all v1).
    let checked = std::time::Instant::now();
    let s = server.status(w).await;
    let r = s.rollout.as_ref().expect("the rollout");
    assert_eq!((r.phase, r.stage), (0, Stage::Baking), "the ring's phase ended before the checks did");
    let canary = s.desired.routes.iter().find(|g| g.name == "canary").expect("a canary group");
    assert_eq!(
        (canary.weight_bp, canary.segment.as_ref().map(|s| s.prefixes.clone())),
        (0, Some(vec!["user-19".into()]))
    );

    let done = server
        .wait_status(w, "the rollout of v2 ends", |s| {
            s.rollout.as_ref().filter(|r| r.release == "v2" && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, ringfence_api::RolloutStatus::Completed, "{}", server.diagnose(w).await);
    let samples = load.samples().to_vec();
    let outsiders_on_v2: Vec<u32> = samples
        .iter()
        .filter(|s| s.sent_at < checked && !in_ring(s.user) && s.version.as_deref() == Some("v2"))
        .map(|s| s.user)
        .collect();
    assert!(
        outsiders_on_v2.is_empty(),
        "users outside the ring reached v2 during the ring's phase: {outsiders_on_v2:?}"
    );
    assert!(
        samples.iter().any(|s| s.sent_at < checked && in_ring(s.user) && s.version.as_deref() == Some("v2")),
        "the ring's users were served by v2 in the ring's phase"
    );
    // Once the share grows and the rollout ends, everyone is on v2.
    assert!(samples.iter().any(|s| !in_ring(s.user) && s.version.as_deref() == Some("v2")));
}

/// A release that fails its ring of chosen users is halted there: nobody outside the ring was
/// ever answered by it, and the ring's users are back on the stable version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_failing_its_ring_of_chosen_users_is_halted_before_anyone_else_sees_it() {
    let server = Server::start().await;
    let w = "ringbad";
    let mut spec = Spec::new(w);
    spec.lenient_breaker = true;
    spec.phases = vec![(0, "30s"), (100, "1500ms")];
    // `user-1`, `user-10`..`user-19` and `user-100`..`user-199`: the staff ring, as a
    // targeting rule over the user key (the way flags target users).
    let text = spec.toml().replacen(
        "name = \"p1\"\nweight = 0\n",
        "name = \"p1\"\nweight = 0\nsegment = { rule = '{\"starts_with\": [{\"var\": \"targetingKey\"}, \"user-1\"]}' }\n",
        1,
    );
    let file = server.path("ringbad.toml");
    std::fs::write(&file, &text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 10, "halted in the ring's phase:\n{out}\n{}", server.diagnose(w).await);
    let r = server.rollout(w, &crate::harness::rollout_id(&out)).await;
    assert_eq!((r.phase, r.status), (0, ringfence_api::RolloutStatus::Mitigated), "{r:#?}");
    let halted = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = load.finish().await;
    let in_ring = |u: u32| u.to_string().starts_with('1');
    assert!(samples.iter().any(|s| in_ring(s.user) && s.version.as_deref() == Some("v2")), "the ring's users met v2");
    let outsiders: Vec<u32> =
        samples.iter().filter(|s| !in_ring(s.user) && s.version.as_deref() == Some("v2")).map(|s| s.user).collect();
    assert!(outsiders.is_empty(), "users outside the ring were answered by v2: {outsiders:?}");
    assert!(
        samples.iter().filter(|s| s.sent_at > halted).all(|s| s.version.as_deref() == Some("v1")),
        "after the halt the ring's users are back on v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_dark_switches_at_once_keeps_the_old_stack_warm_and_switches_back() {
    let server = Server::start().await;
    let w = "bluegreen";
    let mut spec = Spec::new(w);
    spec.replicas = 2;
    spec.lenient_breaker = true;
    // The preview's bake is long enough to be looked at by this test on a loaded machine.
    spec.phases = vec![(0, "5s"), (100, "3s")];
    let text = spec.toml().replacen("[rollout]\n", "[rollout]\nmodel = \"blue_green\"\nkeep_old_for = \"3s\"\n", 1);
    let file = server.path("bluegreen.toml");
    std::fs::write(&file, &text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");
    for (v, config) in [("v1", &[][..]), ("v2", &[][..]), ("v3", &["SAMPLE_ERROR_RATE=0.5"][..])] {
        server.release(w, v, config).await;
    }
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let mut load = Load::start(server.router_addr(w).await, 100.0, 200);

    // The preview: v2's whole stack runs, no user reaches it.
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    server
        .wait_status(w, "the preview baking", |s| {
            let r = s.rollout.as_ref().filter(|r| r.release == "v2" && r.phase == 0 && r.stage == Stage::Baking)?;
            (s.replicas.iter().filter(|x| x.version == "v2").count() == 2).then_some(r.id.clone())
        })
        .await;
    let previewed = std::time::Instant::now();
    let s = server.status(w).await;
    assert_eq!(s.rollout.as_ref().map(|r| r.phase), Some(0), "the preview ended before it was looked at");
    assert!(
        load.samples().iter().filter(|x| x.sent_at < previewed).all(|x| x.version.as_deref() == Some("v1")),
        "a user reached v2 during its preview"
    );

    // The switch, all at once; the old stack stays warm, then is retired.
    let done = server
        .wait_status(w, "the switch to v2 completes", |s| {
            s.rollout.as_ref().filter(|r| r.release == "v2" && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, ringfence_api::RolloutStatus::Completed, "{}", server.diagnose(w).await);
    let s = server.status(w).await;
    assert_eq!(s.warm.as_ref().map(|x| x.version.as_str()), Some("v1"), "{s:#?}");
    assert!(s.replicas.iter().any(|x| x.version == "v1"), "the old stack runs on: {s:#?}");
    server
        .wait_status(w, "the warm stack retired", |s| {
            (s.warm.is_none() && s.replicas.iter().all(|x| x.version == "v2")).then_some(())
        })
        .await;
    assert!(
        server
            .events(w)
            .await
            .iter()
            .any(|e| matches!(&e.kind, ringfence_core::EventKind::StackRetired { version, .. } if version == "v1")),
        "the retirement is in the log"
    );

    // A bad switch falls back to the stack that never stopped.
    let out = server.cli(&["deploy", w, "v3", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 10, "{out}\n{}", server.diagnose(w).await);
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v2"));
    // The decision weighed every option and says why it switched back.
    let why = server.cli(&["why", w]).await;
    assert!(why.stdout.contains("Options weighed:") && why.stdout.contains("old stack of v2 never stopped"), "{why}");
    assert!(why.stdout.contains("[chosen ] fallback") && why.stdout.contains("roll_forward: no hotfix"), "{why}");
    // A mitigated release is held: nothing deploys it again until a person says why it may.
    let again = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(again.code, 5, "{again}");
    assert!(again.stderr.contains("v3 is held since rollout"), "{again}");
    let out = server.cli(&["release", "clear-hold", w, "v3", "--reason", " "]).await;
    assert_eq!(out.code, 3, "a hold is cleared with a reason: {out}");
    let out = server.cli(&["release", "clear-hold", w, "v3", "--reason", "the error rate was a test fixture"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        server
            .events(w)
            .await
            .iter()
            .any(|e| matches!(&e.kind, ringfence_core::EventKind::ReleaseHoldCleared { version } if version == "v3")
                && e.reason == "the error rate was a test fixture")
    );
    // A release a person decides must never run again is revoked: no deploy, no rollback.
    let out = server.cli(&["release", "revoke", w, "v2", "--reason", "x"]).await;
    assert_eq!(out.code, 5, "the stable version cannot be revoked: {out}");
    let out = server.cli(&["release", "revoke", w, "v3", "--reason", "writes corrupt invoices"]).await;
    assert_eq!(out.code, 0, "{out}");
    let again = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(again.code, 5, "{again}");
    assert!(again.stderr.contains("revoked by it-test: writes corrupt invoices"), "{again}");
    let shown = server.cli(&["release", "show", w, "v3"]).await;
    assert!(shown.stdout.contains("REVOKED   by it-test"), "{shown}");

    // Within the warm window a rollback is a switch back: v2's stack, still running, takes
    // the traffic again; nothing of v2 is started anew. The window is the spec's when the
    // switch completes: long enough now for the checks below on a loaded machine.
    let longer = text.replace("keep_old_for = \"3s\"", "keep_old_for = \"60s\"");
    std::fs::write(&file, &longer).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{longer}");
    let out = server.cli(&["deploy", w, "v1", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    let v2_starts = |events: &[ringfence_core::Event]| {
        events
            .iter()
            .filter(|e| matches!(&e.kind, ringfence_core::EventKind::ReplicaStarted { version, .. } if version == "v2"))
            .count()
    };
    let before = v2_starts(&server.events(w).await);
    assert_eq!(server.status(w).await.warm.as_ref().map(|x| x.version.clone()), Some("v2".into()));
    let out = server.cli(&["rollback", w, "--to", "v2", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    let s = server.status(w).await;
    assert_eq!((s.stable.as_deref(), s.warm.is_none()), (Some("v2"), true), "{s:#?}");
    assert_eq!(v2_starts(&server.events(w).await), before, "the rollback started v2 again instead of switching back");
    drop(load);
}

/// Applies the spec of a workload whose first phase sends the new version copies of half the
/// requests, no user exposed, then all users.
async fn apply_shadowed(server: &Server, w: &str) {
    let mut spec = Spec::new(w);
    spec.lenient_breaker = true;
    spec.phases = vec![(0, "3s"), (100, "1500ms")];
    let text = spec.toml().replacen("name = \"p1\"\nweight = 0\n", "name = \"p1\"\nweight = 0\nshadow = 50\n", 1);
    let file = server.path(&format!("{w}.toml"));
    std::fs::write(&file, &text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_traffic_judges_the_new_version_on_copies_before_any_user_sees_it() {
    let server = Server::start().await;
    let w = "shadowed";
    apply_shadowed(&server, w).await;
    for (v, config) in [("v1", &[][..]), ("v2", &[][..]), ("v3", &["SAMPLE_ERROR_RATE=0.5"][..])] {
        server.release(w, v, config).await;
    }
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let mut load = Load::start(server.router_addr(w).await, 100.0, 200);

    // A healthy release passes its shadow phase on the copies' evidence, then takes users.
    let out = server.cli(&["deploy", w, "v2", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    let r = server.rollout(w, &crate::harness::rollout_id(&out)).await;
    let shadow_verdict = server
        .events(w)
        .await
        .into_iter()
        .find_map(|e| match e.kind {
            ringfence_core::EventKind::PhasePassed { rollout_id, phase: 0, verdict, .. } if rollout_id == r.id => {
                Some(verdict)
            }
            _ => None,
        })
        .expect("the shadow phase passed");
    let traffic = shadow_verdict.signals.iter().find(|s| s.signal == "error_rate").expect("compared with v1");
    assert!(traffic.sample_size >= 20, "judged on the copies v2 answered: {traffic:?}");

    // A bad release is caught on copies alone: no user is ever answered by it.
    let before = load.samples().len();
    let out = server.cli(&["deploy", w, "v3", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 10, "{out}\n{}", server.diagnose(w).await);
    let r = server.rollout(w, &crate::harness::rollout_id(&out)).await;
    assert_eq!(r.phase, 0, "halted in its shadow phase: {r:#?}");
    let samples = load.samples()[before..].to_vec();
    assert!(!samples.is_empty());
    assert!(samples.iter().all(|s| s.version.as_deref() == Some("v2")), "a user was answered by v3 or by nobody");
    let failed = samples.iter().filter(|s| s.status.is_none_or(|c| c >= 500)).count();
    assert_eq!(failed, 0, "users saw failures of a version they never reached");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v2"));
}

/// After a blue-green switch, while the old stack is warm, a crash of the new stable version
/// is a regression found after promotion: ringfence switches back at once, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_in_the_watch_window_switches_back_to_the_warm_stack() {
    let server = Server::start().await;
    let w = "watched";
    let mut spec = Spec::new(w);
    spec.phases = vec![(0, "1s"), (100, "1500ms")];
    let text = spec.toml().replacen("[rollout]\n", "[rollout]\nmodel = \"blue_green\"\nkeep_old_for = \"5m\"\n", 1);
    let file = server.path("watched.toml");
    std::fs::write(&file, &text).expect("write the spec");
    assert_eq!(server.cli(&["apply", path_str(&file)]).await.code, 0);
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 50.0, 100);
    assert_eq!(server.deploy_wait(w, "v2").await.code, 0, "{}", server.diagnose(w).await);
    let s = server.status(w).await;
    assert_eq!(s.warm.as_ref().map(|x| x.version.as_str()), Some("v1"));
    let v2 = s.replicas.iter().find(|r| r.version == "v2").expect("v2 runs").instance.clone();

    // v2 crashes after its promotion.
    let pid = crate::harness::pid_of(&v2);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill v2");
    let r = server
        .wait_status(w, "the switch back to v1", |s| {
            s.rollout
                .as_ref()
                .filter(|r| r.kind == ringfence_api::RolloutKind::Rollback && !r.status.is_active())
                .cloned()
        })
        .await;
    assert_eq!(r.status, ringfence_api::RolloutStatus::Completed, "{}", server.diagnose(w).await);
    assert_eq!((r.release.as_str(), r.started_by.as_str()), ("v1", "controller"));
    assert!(r.reason.contains("within the watch window") && r.reason.contains("warm stack of v1"), "{}", r.reason);
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v1"));
    drop(load);
}

/// A canary with a watch window: after it completes, the previous stable version keeps running
/// with no traffic; a regression in the promoted version's own traffic (its errors past the
/// health limit) switches back to it at once, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_watched_after_promotion_switches_back_on_a_regression_in_its_own_traffic() {
    let server = Server::start().await;
    let w = "watched";
    let mut spec = Spec::new(w);
    spec.lenient_breaker = true;
    let text = spec.toml().replacen("[rollout]\n", "[rollout]\nwatch = \"60s\"\n", 1);
    let file = server.path("watched.toml");
    std::fs::write(&file, &text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");
    server.release(w, "v1", &[]).await;
    // Healthy through its rollout (a few hundred requests), failing half its requests after.
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5", "SAMPLE_ERRORS_AFTER=900"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 0, "v2 is healthy through its rollout:\n{out}\n{}", server.diagnose(w).await);
    let s = server.status(w).await;
    assert_eq!(s.warm.as_ref().map(|x| x.version.as_str()), Some("v1"), "v1 kept warm: {s:#?}");
    let reason = server
        .wait_events(w, "the switch back", |events| {
            events.iter().find_map(|e| match &e.kind {
                ringfence_core::EventKind::RolloutStarted { release, kind, .. }
                    if release == "v1" && *kind == ringfence_core::RolloutKind::Rollback =>
                {
                    Some(e.reason.clone())
                }
                _ => None,
            })
        })
        .await;
    assert!(reason.contains("v2 failed") && reason.contains("within the watch window"), "{reason}");
    server.wait_status(w, "back on v1", |s| (s.stable.as_deref() == Some("v1")).then_some(())).await;
    let back = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let samples = load.finish().await;
    assert!(
        samples
            .iter()
            .filter(|s| s.sent_at > back)
            .all(|s| s.version.as_deref() == Some("v1") && s.status == Some(200)),
        "after the switch back every user is on v1"
    );
}
