//! HAProxy as the data plane, through a real HAProxy (Debian's `haproxy`, which `cargo xtask
//! deps` installs): weights through its runtime API, counters from `show stat`, latency from
//! its logs, its configuration file kept in step so a reload keeps the split; a bad release
//! falls back through it; an HAProxy that is not there is a clear error that changes nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringfence_api::{MitigationAction, RolloutStatus, Stage};
use ringfence_core::EventKind;

use crate::harness::{Load, Server, Spec, by_version, path_str, rollout_id};

/// An HAProxy in front of a workload's replicas, with its own socket, logs and file, stopped
/// on drop. `reload` replaces the process as a reload does (`-sf`), from the file as it is.
struct Haproxy {
    child: Child,
    dir: PathBuf,
    frontend: SocketAddr,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = format!("{dir}/haproxy");
        if Path::new(&p).exists() {
            return p;
        }
    }
    panic!("haproxy is not installed: `apt-get install haproxy` (`cargo xtask deps` does)");
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

impl Haproxy {
    fn config(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("log.sock")
    }

    /// Writes the team's file (frontend, and a backend with ringfence's markers) and starts it.
    /// On a free port; on another (up to three times) when HAProxy exits before it is ready
    /// (another process took the port between `free_addr` and HAProxy's bind).
    async fn start(dir: &Path) -> Haproxy {
        std::fs::create_dir_all(dir).expect("HAProxy's directory");
        let mut tries = 0;
        loop {
            tries += 1;
            let mut h = Haproxy::start_on(dir, free_addr());
            match h.try_ready().await {
                Ok(()) => return h,
                Err(why) if tries < 3 => eprintln!("haproxy exited before it was ready ({why}); another port"),
                Err(why) => panic!("haproxy exited before it was ready, three times (last: {why})"),
            }
        }
    }

    fn start_on(dir: &Path, frontend: SocketAddr) -> Haproxy {
        let config = format!(
            "global\n    stats socket {dir}/admin.sock mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend fe\n    bind {frontend}\n    log {dir}/log.sock local0\n    log-format \"%ci rf1 %b %s %Tr %ST\"\n    default_backend checkout\n\
             backend checkout\n    balance hdr(x-user-id)\n    hash-type consistent\n    # ringfence:begin checkout\n    # ringfence:end\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("haproxy.cfg"), config).expect("write haproxy.cfg");
        Haproxy { child: Haproxy::spawn(dir, None), dir: dir.to_path_buf(), frontend }
    }

    fn spawn(dir: &Path, replacing: Option<u32>) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("haproxy.out")).expect("log");
        let mut cmd = Command::new(binary());
        cmd.arg("-f").arg(dir.join("haproxy.cfg")).arg("-db");
        if let Some(pid) = replacing {
            cmd.arg("-sf").arg(pid.to_string());
        }
        cmd.stdout(Stdio::from(log.try_clone().expect("log"))).stderr(Stdio::from(log)).spawn().expect("start haproxy")
    }

    async fn wait_ready(&mut self) {
        if let Err(why) = self.try_ready().await {
            panic!("haproxy exited with {why}");
        }
    }

    /// Ready, or why not: it exited (its status and output).
    async fn try_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{status}:\n{}", self.output()));
            }
            if self.cmd("show info").await.is_ok_and(|i| i.contains(&format!("Pid: {}", self.child.id()))) {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "haproxy did not answer on its socket:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.out")).unwrap_or_default()
    }

    /// A reload: a new process from the file, the old one told to finish.
    async fn reload(&mut self) {
        let old = self.child.id();
        let new = Haproxy::spawn(&self.dir, Some(old));
        let mut previous = std::mem::replace(&mut self.child, new);
        self.wait_ready().await;
        let _ = tokio::task::spawn_blocking(move || previous.wait()).await;
    }

    async fn cmd(&self, cmd: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(self.socket()).await?;
        s.write_all(format!("{cmd}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// ringfence's servers as HAProxy runs them: (name, weight, in maintenance).
    async fn servers(&self) -> Vec<(String, u32, bool)> {
        let state = self.cmd("show servers state checkout").await.expect("show servers state");
        let mut out: Vec<(String, u32, bool)> = state
            .lines()
            .filter(|l| !l.starts_with('#') && l.split(' ').count() > 8)
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[3].to_string(), f[7].parse().unwrap(), f[6] != "0")
            })
            .filter(|(n, _, _)| n.starts_with("rf-"))
            .collect();
        out.sort();
        out
    }

    /// Servers of `version` that take traffic.
    async fn serving(&self, version: &str) -> usize {
        let prefix = format!("rf-{version}-");
        self.servers().await.iter().filter(|(n, w, maint)| n.starts_with(&prefix) && *w > 0 && !maint).count()
    }
}

fn spec_text(w: &str, h: &Haproxy, phases: Vec<(u32, &'static str)>) -> String {
    let mut spec = Spec::new(w);
    spec.replicas = 2;
    spec.phases = phases;
    spec.toml().replacen(
        "[router]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[router]\nkind = \"haproxy\"\nlisten = \"{}\"\n\n[router.haproxy]\nsocket = \"{}\"\nbackend = \"checkout\"\nconfig = \"{}\"\nlog = \"{}\"\n",
            h.frontend,
            h.socket().display(),
            h.config().display(),
            h.log().display()
        ),
        1,
    )
}

async fn apply(server: &Server, w: &str, text: &str) {
    let file = server.path(&format!("{w}.toml"));
    std::fs::write(&file, text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_through_haproxy_completes_its_file_kept_in_step_and_a_reload_keeps_the_split() {
    let server = Server::start().await;
    let mut h = Haproxy::start(&server.path("haproxy")).await;
    let w = "checkout";
    apply(&server, w, &spec_text(w, &h, vec![(10, "6s"), (50, "2s"), (100, "2s")])).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}\n{}", server.diagnose(w).await, h.output());
    // Both replicas of v1 are servers of the backend, in HAProxy and in the file.
    let servers = h.servers().await;
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert!(servers.iter().all(|(n, w, maint)| n.starts_with("rf-v1-") && *w == 256 && !maint), "{servers:?}");
    let file = std::fs::read_to_string(h.config()).unwrap();
    assert_eq!(file.matches("    server rf-v1-127.0.0.1:").count(), 2, "{file}");
    assert!(file.starts_with("global\n") && file.contains("frontend fe\n"), "the rest of the file is kept:\n{file}");
    let status = server.cli(&["status", w]).await;
    assert!(status.stdout.contains("HAProxy backend checkout"), "{status}");

    let load = Load::start(h.frontend, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    server
        .wait_status(w, "the first phase baking", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && r.phase == 0 && r.stage == Stage::Baking).map(|_| ())
        })
        .await;
    // 10% of users: two v2 servers beside two v1 servers, weighted 1 to 9.
    let before = h.servers().await;
    let weights = |version: &str| {
        before.iter().filter(|(n, _, _)| n.contains(&format!("-{version}-"))).map(|s| s.1).collect::<Vec<_>>()
    };
    assert_eq!((weights("v1"), weights("v2")), (vec![256, 256], vec![28, 28]), "{before:?}");
    // A reload from the file comes up with the same servers and weights.
    h.reload().await;
    assert_eq!(h.servers().await, before, "after a reload\n{}", h.output());

    let done = server
        .wait_status(w, "the rollout of v2 ends", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, RolloutStatus::Completed, "{}\n{}", server.diagnose(w).await, h.output());
    // The phases before 100% were judged on HAProxy's counters and its logs' latency.
    let events = server.events(w).await;
    let verdicts: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PhasePassed { rollout_id, verdict, .. } if *rollout_id == id => Some(verdict),
            _ => None,
        })
        .collect();
    assert_eq!(verdicts.len(), 3, "every phase passed");
    for signal in ["error_rate", "latency"] {
        let seen = verdicts[0].signals.iter().find(|s| s.signal == signal);
        assert!(
            seen.is_some_and(|s| s.sample_size > 0 && s.baseline_sample_size.unwrap_or(0) > 0),
            "{signal} compared v2 with v1 in the first phase: {:#?}",
            verdicts[0].signals
        );
    }

    // v1's servers are gone from HAProxy and from the file; v2's serve everyone.
    server.wait_status(w, "v1 stopped", |s| s.replicas.iter().all(|r| r.version == "v2").then_some(())).await;
    let after = h.servers().await;
    assert!(after.iter().all(|(n, _, _)| n.starts_with("rf-v2-")), "{after:?}");
    assert_eq!(h.serving("v2").await, 2);
    let file = std::fs::read_to_string(h.config()).unwrap();
    assert!(!file.contains("rf-v1-") && file.matches("server rf-v2-").count() == 2, "{file}");
    let samples = load.finish().await;
    let per = by_version(&samples);
    assert!(per.get("v2").is_some_and(|(n, _)| *n > 50), "{per:?}");
    let errors: usize = per.values().map(|(_, e)| e).sum();
    // A reload may close a kept-alive connection under a request in flight; nothing else fails.
    assert!(errors <= 3, "requests failed through HAProxy: {per:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_through_haproxy_is_halted_and_its_servers_take_no_more_traffic() {
    let server = Server::start().await;
    let h = Haproxy::start(&server.path("haproxy")).await;
    let w = "checkout";
    apply(&server, w, &spec_text(w, &h, vec![(25, "30s"), (100, "2s")])).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}\n{}", server.diagnose(w).await, h.output());
    let load = Load::start(h.frontend, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    let halted = server
        .wait_status(w, "the rollout of v2 ends", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(halted, RolloutStatus::Mitigated, "{}\n{}", server.diagnose(w).await, h.output());
    let fell_back = Instant::now();
    let r = server.rollout(w, &id).await;
    let decision = r.decision.as_ref().expect("a decision");
    assert_eq!(decision.action, MitigationAction::Fallback, "{decision:#?}");
    let verdict = r.last_verdict.as_ref().expect("the verdict that halted it");
    assert!(
        // The comparison with v1 or the fixed limit, both on HAProxy's counters.
        verdict
            .signals
            .iter()
            .any(|s| s.signal.starts_with("error_rate") && s.health == ringfence_api::Health::Unhealthy),
        "judged on HAProxy's counters: {verdict:#?}"
    );
    // No v2 server takes traffic any more; v1's two do.
    assert_eq!(h.serving("v2").await, 0, "{:?}", h.servers().await);
    assert_eq!(h.serving("v1").await, 2, "{:?}", h.servers().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;
    let late: Vec<_> = samples.iter().filter(|s| s.sent_at > fell_back).collect();
    assert!(late.len() > 20, "traffic after the fallback: {}", late.len());
    assert!(
        late.iter().all(|s| s.version.as_deref() == Some("v1") && s.status == Some(200)),
        "after the fallback every user is served by v1: {:?}",
        by_version(&samples)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_haproxy_that_is_not_there_or_not_prepared_is_a_clear_error_that_changes_nothing() {
    let server = Server::start().await;
    let dir = server.path("haproxy");
    std::fs::create_dir_all(&dir).unwrap();
    let w = "checkout";
    // A file without ringfence's markers, and no HAProxy behind the socket.
    let config = dir.join("haproxy.cfg");
    let team_file =
        "frontend fe\n    bind 127.0.0.1:1\n    default_backend checkout\nbackend checkout\n    balance roundrobin\n";
    std::fs::write(&config, team_file).unwrap();
    let text = Spec::new(w).toml().replacen(
        "[router]\nlisten = \"127.0.0.1:0\"\n",
        &format!(
            "[router]\nkind = \"haproxy\"\nlisten = \"127.0.0.1:1\"\n\n[router.haproxy]\nsocket = \"{d}/admin.sock\"\nbackend = \"checkout\"\nconfig = \"{d}/haproxy.cfg\"\nlog = \"{d}/log.sock\"\n",
            d = dir.display()
        ),
        1,
    );
    apply(&server, w, &text).await;
    server.release(w, "v1", &[]).await;
    let out = server.cli(&["deploy", w, "v1"]).await;
    assert_eq!(out.code, 0, "{out}");
    let error = server
        .wait_events(w, "the routes refused", |events| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::ActionFailed { error, .. } if error.contains("ringfence:begin") => Some(error.clone()),
                _ => None,
            })
        })
        .await;
    assert!(error.contains(&format!("{}: no `# ringfence:begin checkout` line", config.display())), "{error}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), team_file, "the team's file is untouched");

    // Markers in place, but the backend cannot keep users sticky; then no HAProxy at all.
    let prepared = format!("{team_file}    # ringfence:begin checkout\n    # ringfence:end\n");
    std::fs::write(&config, &prepared).unwrap();
    server
        .wait_events(w, "the backend refused", |events| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::ActionFailed { error, .. } if error.contains("hash-type consistent") => Some(()),
                _ => None,
            })
        })
        .await;
    let sticky = prepared.replace("balance roundrobin", "balance hdr(x-user-id)\n    hash-type consistent");
    std::fs::write(&config, &sticky).unwrap();
    server
        .wait_events(w, "HAProxy unreachable", |events| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::ActionFailed { error, .. } if error.contains("cannot reach HAProxy's runtime API") => {
                    Some(())
                }
                _ => None,
            })
        })
        .await;
    assert_eq!(std::fs::read_to_string(&config).unwrap(), sticky, "nothing written while HAProxy is unreachable");
    let status = server.status(w).await;
    assert!(status.routes.is_none(), "no table counts as installed: {:?}", status.routes);
}

/// Blue-green through HAProxy: the preview's servers are in the backend at weight 0 (no user
/// reaches them), the switch moves every user at once, and a bad switch falls back to the old
/// stack's servers, which never left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_through_haproxy_previews_at_weight_zero_and_falls_back_to_the_old_stack() {
    let server = Server::start().await;
    let h = Haproxy::start(&server.path("haproxy")).await;
    let w = "checkout";
    // The preview bakes long enough for this test to read HAProxy's servers during it.
    let text = spec_text(w, &h, vec![(0, "5s"), (100, "30s")]).replacen(
        "[rollout]\n",
        "[rollout]\nmodel = \"blue_green\"\n",
        1,
    );
    apply(&server, w, &text).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}\n{}", server.diagnose(w).await, h.output());
    let load = Load::start(h.frontend, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    server
        .wait_status(w, "the preview baking", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && r.phase == 0 && r.stage == Stage::Baking).map(|_| ())
        })
        .await;
    let servers = h.servers().await;
    let v2: Vec<_> = servers.iter().filter(|(n, _, _)| n.starts_with("rf-v2-")).collect();
    assert!(v2.len() == 2 && v2.iter().all(|(_, weight, _)| *weight == 0), "the preview's servers: {servers:?}");
    let previewed = Instant::now();

    let done = server
        .wait_status(w, "the bad switch ends", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, RolloutStatus::Mitigated, "{}\n{}", server.diagnose(w).await, h.output());
    assert_eq!(h.serving("v2").await, 0, "{:?}", h.servers().await);
    assert_eq!(h.serving("v1").await, 2, "{:?}", h.servers().await);
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = load.finish().await;
    assert!(
        samples.iter().filter(|s| s.sent_at < previewed).all(|s| s.version.as_deref() == Some("v1")),
        "no user reached the preview"
    );
    assert!(samples.iter().any(|s| s.version.as_deref() == Some("v2")), "the switch sent users to v2");
    assert!(
        samples
            .iter()
            .filter(|s| s.sent_at > back)
            .all(|s| s.version.as_deref() == Some("v1") && s.status == Some(200)),
        "after the fallback every user is on v1: {:?}",
        by_version(&samples)
    );
}
