//! Incidents over the real server: a bad release opens exactly one, a person acknowledges it,
//! it resolves once health held after the verified fallback; its postmortem's timeline and
//! times match the event log; DORA metrics count the deployments.

use ringfence_api::RolloutStatus;

use crate::harness::{Load, Server, Spec, path_str, rollout_id, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_release_opens_one_incident_with_a_postmortem_and_the_dora_metrics_count_it() {
    let server = Server::start().await;
    let w = "inc";
    let spec = Spec { lenient_breaker: true, ..Spec::new(w) };
    let file = server.path("inc.toml");
    std::fs::write(
        &file,
        spec.toml()
            + "\n[incident]\ncommander = \"alice\"\nescalation = \"#payments-oncall\"\nconfirm_after = \"2s\"\n[status_page]\npublic = true\ntitle = \"Shop <checkout>\"\n",
    )
    .unwrap();
    assert_eq!(server.cli(&["apply", path_str(&file)]).await.code, 0);
    // v1's change was committed an hour before it was registered: its lead time counts from
    // the commit.
    let committed = ringfence_core::Timestamp(now_ms() - 3_600_000);
    let out = server
        .cli(&[
            "release",
            "create",
            w,
            "--version",
            "v1",
            "--artifact",
            "sample-app:v1",
            "--author",
            "it-test",
            "--committed-at",
            &committed.to_string(),
        ])
        .await;
    assert_eq!(out.code, 0, "{out}");
    let bad = server
        .cli(&["release", "create", w, "--version", "v9", "--author", "it-test", "--committed-at", "yesterday"])
        .await;
    assert_eq!(bad.code, 3, "{bad}");
    assert!(bad.stderr.contains("metadata.committed_at") && bad.stderr.contains("yesterday"), "{bad}");
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(out.code, 10, "v2 fails:\n{out}");
    let id = rollout_id(&out);
    let r = server.rollout(w, &id).await;
    assert_eq!(r.status, RolloutStatus::Mitigated);
    drop(load);

    let out = server.cli(&["incident", "list", w, "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let list: Vec<ringfence_api::Incident> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list.len(), 1, "one incident for one failed rollout: {list:#?}");
    let i = &list[0];
    assert_eq!((i.id.as_str(), i.release.as_str(), i.severity.as_str()), (id.as_str(), "v2", "sev3"));
    assert_eq!((i.commander.as_str(), i.escalation.as_str()), ("alice", "#payments-oncall"));
    assert!(i.mitigated_at.is_some(), "{i:#?}");
    let out = server.cli(&["incident", "ack", w, &id, "--reason", "alice has it"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(server.cli(&["incident", "ack", w, &id]).await.code, 5, "once");
    // Health holds for confirm_after: the controller resolves it.
    let i = wait_until("the incident resolves by itself", || async {
        let out = server.cli(&["incident", "show", w, &id, "-o", "json"]).await;
        let i: ringfence_api::Incident = serde_json::from_str(&out.stdout).ok()?;
        (i.state == "resolved").then_some(i)
    })
    .await;
    let states: Vec<&str> = i.transitions.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(states.first(), Some(&"investigating"));
    assert_eq!(states.last(), Some(&"resolved"));
    assert_eq!(i.transitions.last().unwrap().by, "controller");
    assert!(i.transitions.iter().any(|t| t.by == "it-test" && t.note.contains("alice has it")), "{i:#?}");
    assert_eq!(server.cli(&["incident", "resolve", w, &id]).await.code, 5, "resolved already");
    // Status updates: one per change of state, each naming the next, none after the last.
    let i = wait_until("the final status update", || async {
        let out = server.cli(&["incident", "show", w, &id, "-o", "json"]).await;
        let i: ringfence_api::Incident = serde_json::from_str(&out.stdout).ok()?;
        i.updates.last().is_some_and(|u| u.state == "resolved").then_some(i)
    })
    .await;
    assert!(i.updates.len() >= 3, "{:#?}", i.updates);
    assert!(i.updates[..i.updates.len() - 1].iter().all(|u| u.next_at.is_some()), "{:#?}", i.updates);
    assert_eq!(i.updates.last().unwrap().next_at, None);
    assert!(i.updates[0].stakeholders.contains("Commander: alice"), "{:#?}", i.updates[0]);

    // Follow-up items, linked to the incident and listed in its postmortem.
    let out = server
        .cli(&[
            "followup",
            "add",
            w,
            "--incident",
            &id,
            "--title",
            "alert on the error rate",
            "--owner",
            "bob",
            "--due-in",
            "14d",
        ])
        .await;
    assert_eq!(out.code, 0, "{out}");
    let out = server.cli(&["followup", "add", w, "--incident", "nope", "--title", "x"]).await;
    assert_eq!(out.code, 4, "no such incident:\n{out}");
    assert_eq!(server.cli(&["followup", "assign", w, "fu-1", "--owner", "carol"]).await.code, 0);
    let list = server.cli(&["followup", "list", w, "--open", "-o", "json"]).await;
    let items: Vec<ringfence_api::FollowUp> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].owner.as_str(), items[0].overdue), ("carol", false));
    assert_eq!(server.cli(&["followup", "close", w, "fu-1"]).await.code, 0);
    assert_eq!(server.cli(&["followup", "close", w, "fu-1"]).await.code, 5, "closed already");
    let list = server.cli(&["followup", "list", w, "--open", "-o", "json"]).await;
    assert_eq!(list.stdout.trim(), "[]");

    // The postmortem: its times and timeline are the event log's.
    let out = server.cli(&["postmortem", w]).await;
    assert_eq!(out.code, 0, "{out}");
    let md = &out.stdout;
    assert!(md.starts_with(&format!("# Postmortem (draft): {w} v2 — rollout {id}")), "{md}");
    let events = server.events(w).await;
    let at = |t: &str| {
        events.iter().find(|e| e.kind.type_name() == t && e.kind.rollout_id() == Some(id.as_str())).map(|e| e.at)
    };
    let (started, halted, mitigated) =
        (at("rollout_started").unwrap(), at("rollout_halted").unwrap(), at("mitigation_completed").unwrap());
    let fmt = |ms: u64| {
        if ms < 60_000 { format!("{:.1} s", ms as f64 / 1000.0) } else { format!("{:.1} min", ms as f64 / 60_000.0) }
    };
    assert!(
        md.contains(&format!("| time to detect (rollout start to halt) | {} |", fmt(halted.since(started)))),
        "{md}"
    );
    assert!(
        md.contains(&format!("| time to mitigate (halt to verified mitigation) | {} |", fmt(mitigated.since(halted)))),
        "{md}"
    );
    assert!(md.contains(&format!("{} — controller — HALTED", halted)), "{md}");
    assert!(md.contains("| fallback | yes |"), "the options weighed:\n{md}");
    assert!(md.contains("- [x] fu-1 alert on the error rate (owner carol)"), "the follow-ups:\n{md}");
    let out = server.cli(&["postmortem", w, "-o", "json"]).await;
    assert!(out.stdout.contains("\"markdown\""), "{out}");
    // Its signals, the new version against the stable one around the halt, in words and drawn.
    let chart = server.path("postmortem.svg");
    let out = server.cli(&["postmortem", w, &id, "--svg", path_str(&chart)]).await;
    assert_eq!(out.code, 0, "{out}");
    let before =
        out.stdout.lines().find(|l| l.starts_with("| v2 | before the halt |")).unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = before.split('|').map(str::trim).collect();
    let (requests, errors): (u64, u64) = (cells[3].parse().unwrap(), cells[4].parse().unwrap());
    assert!(requests > 0 && errors > 0, "v2 served and failed before the halt: {before}");
    // The load's 200 users, some of whom the canary served: counted distinctly.
    let users: u64 = cells[7].parse().unwrap_or_else(|_| panic!("a user count: {before}"));
    assert!(users > 0 && users <= 230 && users <= requests, "users of v2 before the halt: {before}");
    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    assert!(svg.starts_with("<svg") && svg.contains("v2 (new)") && svg.contains("v1 (stable)"), "{svg}");
    assert!(svg.contains(">halted<") && svg.contains(">mitigated<") && svg.matches("<polyline").count() >= 4, "{svg}");

    // DORA: v1 and v2 ended in the window, v2 failed, recovered in the fallback's time.
    let out = server.cli(&["dora", w, "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let d: ringfence_api::Dora = serde_json::from_str(&out.stdout).unwrap();
    let outcomes: Vec<(&str, bool)> = d.deployments.iter().map(|x| (x.outcome.as_str(), x.failed)).collect();
    assert_eq!(outcomes, vec![("completed", false), ("mitigated", true)]);
    let v1 = &d.deployments[0];
    assert_eq!(v1.lead_time_from, "commit");
    assert!(v1.lead_time_ms.unwrap() >= 3_600_000, "an hour and the rollout: {v1:#?}");
    assert_eq!(d.change_fail_rate.value, Some(0.5));
    let recovery_h = mitigated.since(halted) as f64 / 3_600_000.0;
    assert!((d.recovery_time.value.unwrap() - recovery_h).abs() < 1e-9, "{d:#?}");
    let chart = server.path("dora.svg");
    let text = server.cli(&["dora", w, "--svg", path_str(&chart)]).await;
    assert!(text.stdout.contains("change fail rate") && text.stdout.contains("50%"), "{text}");
    let svg = std::fs::read_to_string(&chart).expect("the chart was written");
    assert!(
        svg.starts_with("<svg") && svg.contains("<desc id=\"d\">2 deployments from") && svg.contains("1 failed"),
        "{svg}"
    );

    // ringfence's own effect, for Prometheus.
    let (status, body) = server.get_text("/v1/metrics").await;
    assert_eq!(status, 200, "{body}");
    for line in [
        "ringfence_halts_total{workload=\"inc\"} 1",
        "ringfence_deployments_total{workload=\"inc\",outcome=\"mitigated\"} 1",
        "ringfence_deployments_total{workload=\"inc\",outcome=\"completed\"} 1",
        "ringfence_mitigations_total{workload=\"inc\",action=\"fallback\"} 1",
        "ringfence_time_to_mitigate_seconds_count{workload=\"inc\"} 1",
        "ringfence_line_stopped 0",
        "# TYPE ringfence_controller_ticks counter",
    ] {
        assert!(body.contains(line), "{line} in:\n{body}");
    }
    assert!(!body.contains("ringfence_incidents_open{"), "resolved: none open\n{body}");
    let ticks = body
        .lines()
        .find_map(|l| l.strip_prefix("ringfence_controller_ticks_total "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(ticks.is_some_and(|n| n > 0), "the loops' ticks are counted:\n{body}");

    // The public status page: no token, plain words, no versions, escaped.
    let base = server.url().to_string();
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move {
            let r = ringfence::http::HttpClient::new()
                .request(hyper::Method::GET, &url, &[], None, std::time::Duration::from_secs(10))
                .await
                .unwrap();
            (r.status.as_u16(), r.headers.clone(), String::from_utf8_lossy(&r.body).to_string())
        }
    };
    let (status, headers, page) = get(format!("/status/{w}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(headers.get("content-security-policy").is_some_and(|v| v.to_str().unwrap().contains("default-src 'none'")));
    assert!(page.contains("<h1>Shop &lt;checkout&gt;</h1>"), "escaped title:\n{page}");
    assert!(page.contains("All systems operational."), "{page}");
    assert!(page.contains("This incident is resolved."), "{page}");
    assert!(page.contains("89 of 90 days without an incident"), "{page}");
    assert!(!page.contains("v2") && !page.contains("<script"), "no internals, no script:\n{page}");
    let (status, _, feed) = get(format!("/status/{w}/feed.atom")).await;
    assert_eq!(status, 200);
    assert!(feed.starts_with("<?xml") && feed.matches("<entry>").count() >= 3, "{feed}");
    let (status, _, index) = get("/status".into()).await;
    assert_eq!(status, 200);
    assert!(index.contains(&format!("href=\"/status/{w}\"")) && index.contains("operational"), "{index}");
    assert_eq!(get("/status/nope".into()).await.0, 404);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A real SMTP server (aiosmtpd, from PyPI, in the venv `cargo xtask deps` makes) delivering
/// into a Maildir; stopped when dropped.
struct Smtp {
    child: std::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Smtp {
    fn start(dir: &std::path::Path) -> Smtp {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/.venv/bin/python");
        let ok = std::process::Command::new(&root).args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        assert!(
            ok,
            "aiosmtpd is not installed: python3 -m venv tests/conformance/.venv && tests/conformance/.venv/bin/pip install -r tests/conformance/requirements.txt (`cargo xtask deps` does this)"
        );
        let maildir = dir.join("maildir");
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(&root)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            use std::io::Read;
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut greeting = [0u8; 3];
                if c.read_exact(&mut greeting).is_ok() && &greeting == b"220" {
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "aiosmtpd did not answer on {port}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Smtp { child, port, maildir }
    }

    /// Every mail received: (Message-ID, Subject).
    fn mails(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(self.maildir.join(sub)).unwrap().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let header = |name: &str| {
                    text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string())).unwrap_or_default()
                };
                out.push((header("Message-ID:"), header("Subject:")));
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver of the organisation's: `/hook` verifies the Standard Webhooks signature with the
/// scheme's reference library; `/slack` fails its first `fail` requests with 500; `/issues` is
/// an issue tracker's create-issue endpoint that wants its bearer token and answers with the
/// new issue's link.
async fn receiver(secret: &'static str, fail: usize) -> (std::net::SocketAddr, Seen, Seen, Seen) {
    use axum::http::{HeaderMap, StatusCode};
    let (hooks, slack, issues): (Seen, Seen, Seen) = Default::default();
    let (h, s, t) = (hooks.clone(), slack.clone(), issues.clone());
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let h = h.clone();
                async move {
                    let hook = standardwebhooks::Webhook::new(secret).unwrap();
                    if hook.verify(&body, &headers).is_err() {
                        return StatusCode::UNAUTHORIZED;
                    }
                    let id = headers["webhook-id"].to_str().unwrap().to_string();
                    h.lock().unwrap().push((id, serde_json::from_slice(&body).unwrap()));
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/slack",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (s, failures) = (s.clone(), failures.clone());
                async move {
                    if failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let key = headers["idempotency-key"].to_str().unwrap().to_string();
                    s.lock().unwrap().push((key, serde_json::from_slice(&body).unwrap()));
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/issues",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let t = t.clone();
                async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tracker-token-1234") {
                        return (StatusCode::UNAUTHORIZED, String::new());
                    }
                    let key = headers["idempotency-key"].to_str().unwrap().to_string();
                    let mut seen = t.lock().unwrap();
                    seen.push((key, serde_json::from_slice(&body).unwrap()));
                    let n = seen.len();
                    (
                        StatusCode::CREATED,
                        format!("{{\"number\": {n}, \"html_url\": \"https://git.example/shop/issues/{n}\"}}"),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hooks, slack, issues)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_updates_reach_a_signed_webhook_slack_and_a_real_smtp_server_across_a_server_kill() {
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let mut server = Server::start().await;
    let w = "notified";
    let (addr, hooks, slack, issues) = receiver(SECRET, 2).await;
    let smtp = Smtp::start(&server.path("smtp"));
    let dir = server.data_dir().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hook"), SECRET).unwrap();
    std::fs::write(dir.join("tracker"), "tracker-token-1234").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        for s in ["hook", "tracker"] {
            std::fs::set_permissions(dir.join(s), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let spec = Spec { lenient_breaker: true, ..Spec::new(w) };
    let extra = format!(
        "\n[incident]\nconfirm_after = \"3s\"\n\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret = \"secret://hook\"\n\n[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"http://{addr}/slack\"\naudience = \"users\"\n\n[[notify]]\nname = \"mail\"\nkind = \"email\"\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"ringfence@example.com\"\nto = [\"oncall@example.com\"]\n\n[[notify]]\nname = \"issues\"\nkind = \"tracker\"\nurl = \"http://{addr}/issues\"\nsecret = \"secret://tracker\"\n",
        smtp.port
    );
    let file = server.path("notified.toml");
    std::fs::write(&file, spec.toml() + &extra).unwrap();
    assert_eq!(server.cli(&["apply", path_str(&file)]).await.code, 0);
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    let id = rollout_id(&out);
    // The first update reaches the webhook; then the server dies and comes back.
    wait_until("the first update at the webhook", || async { (!hooks.lock().unwrap().is_empty()).then_some(()) }).await;
    drop(load);
    server.kill9();
    server.restart().await;
    let distinct = |ids: &mut dyn Iterator<Item = String>| ids.collect::<std::collections::BTreeSet<_>>().len();
    // It resolves (health held 3 s); every update reaches every channel.
    let i = wait_until("every update delivered", || async {
        let out = server.cli(&["incident", "show", w, &id, "-o", "json"]).await;
        let i: ringfence_api::Incident = serde_json::from_str(&out.stdout).ok()?;
        let n = i.updates.len();
        let done = i.state == "resolved"
            && i.updates.last().is_some_and(|u| u.state == "resolved")
            && distinct(&mut hooks.lock().unwrap().iter().map(|(id, _)| id.clone())) >= n
            && distinct(&mut slack.lock().unwrap().iter().map(|(id, _)| id.clone())) >= n
            && distinct(&mut smtp.mails().into_iter().map(|(id, _)| id)) >= n;
        done.then_some(i)
    })
    .await;
    let n = i.updates.len();
    let (hooks_seen, slack_seen) = (hooks.clone(), slack.clone());
    let hooks = hooks.lock().unwrap().clone();
    let slack = slack.lock().unwrap().clone();
    // Every update reaches every channel under one id per update and channel. The kill may land
    // between a receiver's answer and its record: that one update is sent again, under the
    // same id (the receiver deduplicates on it), at most once more.
    let once = |ids: Vec<&String>, what: &str| {
        let distinct: std::collections::BTreeSet<&String> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), n, "{what}: one id per update: {ids:#?}");
        for id in &distinct {
            let times = ids.iter().filter(|x| *x == id).count();
            assert!(times <= 2, "{what}: {id} sent {times} times: once, and again only if the kill came first");
        }
    };
    once(hooks.iter().map(|(id, _)| id).collect(), "webhook");
    let updates: std::collections::BTreeSet<u64> = hooks.iter().map(|(_, b)| b["update"].as_u64().unwrap()).collect();
    assert_eq!(updates, (0..n as u64).collect(), "none missing");
    assert!(hooks.iter().all(|(_, b)| b["type"] == "incident.updated" && b["incident"] == id.as_str()));
    once(slack.iter().map(|(key, _)| key).collect(), "slack, after its two failures");
    assert!(slack.iter().all(|(_, b)| !b["text"].as_str().unwrap().contains("v2")), "users' words: {slack:#?}");
    // Email: one mail per update, read back from the real SMTP server's Maildir.
    let mails = smtp.mails();
    once(mails.iter().map(|(mid, _)| mid).collect(), "email (Message-ID)");
    let (prefix, about) = (format!("<rf.{w}.{id}."), format!("incident {id}"));
    assert!(mails.iter().all(|(mid, subject)| mid.starts_with(&prefix) && subject.contains(&about)), "{mails:#?}");
    let status = server.status(w).await;
    assert!(status.notifications_failing.is_empty(), "{:?}", status.notifications_failing);
    let events = server.events(w).await;
    let failed = events.iter().filter(|e| e.kind.type_name() == "notification_failed").count();
    // The receiver refuses Slack twice. The kill may land between its first refusal and the
    // record of it (the race `once` allows for above): at least the other one is recorded.
    assert!(failed >= 1, "the Slack failures are recorded: {failed}");
    assert!(issues.lock().unwrap().is_empty(), "a tracker gets no incident updates");

    // A follow-up item goes to the issue tracker once, with its link recorded; overdue, it is
    // brought up on the stakeholder channels (the webhook and the mail, not the users' chat).
    let out = server
        .cli(&["followup", "add", w, "--incident", &id, "--title", "page on p99", "--owner", "bob", "--due-in", "1s"])
        .await;
    assert_eq!(out.code, 0, "{out}");
    let item = wait_until("the item exported and reminded", || async {
        let out = server.cli(&["followup", "list", w, "-o", "json"]).await;
        let items: Vec<ringfence_api::FollowUp> = serde_json::from_str(&out.stdout).ok()?;
        let f = items.into_iter().next()?;
        let reminded = smtp.mails().iter().any(|(_, subject)| subject.contains("[follow-up overdue]"));
        (f.exported.contains_key("issues") && f.reminders >= 1 && reminded).then_some(f)
    })
    .await;
    assert_eq!(item.exported["issues"], "https://git.example/shop/issues/1");
    let exported = issues.lock().unwrap().clone();
    assert_eq!(exported.len(), 1, "exported once: {exported:#?}");
    let (key, body) = &exported[0];
    assert_eq!(key, &format!("rf.{w}.followup/fu-1.0.issues"));
    assert_eq!(body["title"], "page on p99");
    let text = body["body"].as_str().unwrap();
    assert!(text.contains(&format!("incident {id}")) && text.contains("Owner: bob"), "{text}");
    assert_eq!(body["labels"], serde_json::json!(["ringfence", "postmortem", w]));
    let list = server.cli(&["followup", "list", w]).await;
    assert!(list.stdout.contains("exported to issues: https://git.example/shop/issues/1"), "{list}");
    let reminders: Vec<serde_json::Value> = wait_until("the reminder at the webhook", || async {
        let r: Vec<_> = hooks_now(&hooks_seen).into_iter().filter(|b| b["type"] == "followup.overdue").collect();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(reminders[0]["follow_up"], "fu-1");
    assert!(reminders[0]["text"].as_str().unwrap().contains("owner bob"), "{reminders:#?}");
    assert!(
        slack_seen.lock().unwrap().iter().all(|(_, b)| !b["text"].as_str().unwrap().contains("follow-up")),
        "users are not reminded of the team's backlog"
    );
}

fn hooks_now(seen: &Seen) -> Vec<serde_json::Value> {
    seen.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
}
