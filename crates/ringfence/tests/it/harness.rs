//! The harness: a real `ringfence server` process per test, in its own temporary directory,
//! driven by the real CLI and read over the real HTTP API, with real replicas and the real
//! router on loopback.
//!
//! Every process a test causes is accounted for. The server is started with a marker in its
//! environment that its replicas and router inherit; [`Server`]'s `Drop` stops the server with
//! SIGTERM (it stops its replicas and router on a clean exit), SIGKILLs it if it does not
//! exit, and then SIGKILLs anything still alive that is listed in the run files or carries
//! the marker, so nothing is left running even when a test panics halfway.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringfence::client::ApiClient;
use ringfence::credentials::Found;
use ringfence::loadgen::{LoadConfig, LoadSummary, Sample};
use ringfence_api::{Rollout, WorkloadStatus};
use ringfence_core::{Event, EventKind};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringfence");

/// Environment variable that marks every process a test's server starts (inherited by the
/// replicas and the router), so they can be found, checked and cleaned up.
const MARK_VAR: &str = "RINGFENCE_IT_MARK";

/// Long enough for any rollout of these tests on a loaded 2-core machine; only there so a
/// broken build fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// One `ringfence server` process and its data directory.
pub struct Server {
    // Removed when the fields drop, after `Drop::drop` has stopped every process.
    dir: TempDir,
    data: PathBuf,
    mark: String,
    url: String,
    api: ApiClient,
    /// The token the tests act with: `it-test`, an admin, created with the server's first
    /// admin token (so events name `it-test` as their actor).
    token: String,
    child: Option<Child>,
    launches: u32,
    /// More `ringfence server` arguments (e.g. `--store postgres://...`).
    extra: Vec<String>,
    /// Where the server listens (a free port by default).
    listen: String,
}

impl Server {
    /// Starts a server on a free loopback port with a fresh data directory.
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// [`Server::start`] with more `ringfence server` arguments, kept for restarts.
    pub async fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix("ringfence-it-").tempdir().expect("create a temp dir");
        let data = dir.path().join("data");
        let mark = dir.path().display().to_string();
        let mut server = Server {
            dir,
            data,
            mark,
            url: String::new(),
            api: ApiClient::new("http://127.0.0.1:1", None),
            token: String::new(),
            child: None,
            launches: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            listen: "127.0.0.1:0".into(),
        };
        server.launch().await;
        server
    }

    /// Another server on this one's data directory and marker, acting with its token: a
    /// replica beside it (`extra` names the shared store and its replica id).
    pub async fn beside(&self, extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix("ringfence-it-").tempdir().expect("create a temp dir");
        let mut server = Server {
            dir,
            data: self.data.clone(),
            mark: self.mark.clone(),
            url: String::new(),
            api: ApiClient::new("http://127.0.0.1:1", None),
            token: self.token.clone(),
            child: None,
            launches: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            listen: "127.0.0.1:0".into(),
        };
        server.launch().await;
        server
    }

    /// The last lines of the server's log (its current launch).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(self.launches), lines)
    }

    async fn launch(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        self.launches += 1;
        let log_path = self.log_path(self.launches);
        let log = std::fs::File::create(&log_path).expect("create the server log");
        let mut child = Command::new(BIN)
            .args(["server", "--listen", &self.listen, "--tick", "50ms", "--data-dir"])
            .arg(&self.data)
            .args(&self.extra)
            .env(MARK_VAR, &self.mark)
            // Settings of the environment running the tests must not change the server.
            .env_remove("RINGFENCE_KEEP_WORKLOADS")
            .env_remove("RINGFENCE_LOG_FORMAT")
            .env("RINGFENCE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn `ringfence server`");
        let stdout = child.stdout.take().expect("stdout is piped");
        // Kept before waiting for the banner, so Drop cleans up if the wait panics.
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep reading so the server can never block on a full pipe.
            for _ in lines {}
        });
        let first = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("banner reader thread");
        let first = first.unwrap_or_else(|_| {
            panic!("the server printed no banner line; its log:\n{}", tail(&log_path, 40));
        });
        // "ringfence server listening on http://ADDR (data in DIR)"
        let url = first
            .strip_prefix("ringfence server listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected first line from the server: {first:?}"));
        self.url = url.to_string();
        if self.token.is_empty() {
            self.token = self.first_token().await;
        }
        self.api = ApiClient::new(url, Some(Found { token: self.token.clone(), source: "the test harness".into() }));
    }

    /// On the first start: the admin token the server wrote, then an admin token named
    /// `it-test` made with it, through the CLI as a person would.
    async fn first_token(&self) -> String {
        let file = self.data.join("admin.token");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !file.is_file() {
            assert!(Instant::now() < deadline, "the server wrote no admin token to {}", file.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = cli_with(
            &["--server", &self.url, "--token-file", path_str(&file), "token", "create", "it-test", "--role", "admin"],
            &[],
        )
        .await;
        assert_eq!(out.code, 0, "token create failed:\n{out}");
        out.stdout.lines().last().expect("the token is the last line").trim().to_string()
    }

    /// A token with `grants` (e.g. `["viewer"]`, `["deployer:checkout"]`), made by `it-test`.
    pub async fn token_with(&self, name: &str, grants: &[&str]) -> String {
        let v: serde_json::Value = self
            .api
            .post("/v1/tokens", &serde_json::json!({"name": name, "grants": grants}))
            .await
            .unwrap_or_else(|e| panic!("create token {name}: {e}"));
        v["token"].as_str().expect("the token").to_string()
    }

    /// `Bearer <it-test's token>`, for calls made without the CLI.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET path` with the it-test's token (as the API and the browser's pages take it), for
    /// answers the typed client does not read (text, pages, JSON looked at loosely): the
    /// status and the body.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let bearer = self.bearer();
        let cookie = format!("rf_ui={}", self.token);
        let r = ringfence::http::HttpClient::new()
            .request(
                hyper::Method::GET,
                &format!("{}{path}", self.url()),
                &[("authorization", bearer.as_str()), ("cookie", cookie.as_str())],
                None,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status.as_u16(), String::from_utf8_lossy(&r.body).to_string())
    }

    /// SIGKILL: the server dies at once, with no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server");
    }

    /// Starts the server again on the same data directory (on a new port).
    pub async fn restart(&mut self) {
        self.launch().await;
    }

    /// Starts the server again on the same data directory and the same port, as a supervisor
    /// restarts a server its clients know by address.
    pub async fn restart_on_same_port(&mut self) {
        self.listen = self.url.trim_start_matches("http://").to_string();
        self.launch().await;
    }

    /// The marker of this test's processes, for processes a test starts itself.
    pub fn mark(&self) -> (&'static str, &str) {
        (MARK_VAR, &self.mark)
    }

    /// A path in the test's temporary directory (outside the data directory).
    /// The server's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log_path(&self, launch: u32) -> PathBuf {
        self.dir.path().join(format!("server-{launch}.log"))
    }

    /// Runs a client command against this server.
    pub async fn cli(&self, args: &[&str]) -> Out {
        self.cli_as(&self.token, args).await
    }

    /// Runs a client command with another token (`RINGFENCE_TOKEN`).
    pub async fn cli_as(&self, token: &str, args: &[&str]) -> Out {
        let mut all = vec!["--server", self.url.as_str()];
        all.extend_from_slice(args);
        cli_with(&all, &[("RINGFENCE_TOKEN", token)]).await
    }

    /// Writes a spec file, applies it, and registers releases (version, config `K=V` items).
    pub async fn setup(&self, spec: &Spec<'_>, releases: &[(&str, &[&str])]) {
        let file = self.path(&format!("{}.toml", spec.name));
        std::fs::write(&file, spec.toml()).expect("write the spec file");
        let out = self.cli(&["apply", path_str(&file)]).await;
        assert_eq!(out.code, 0, "apply failed:\n{out}");
        for (version, config) in releases {
            self.release(spec.name, version, config).await;
        }
    }

    /// `ringfence release create`, asserting success.
    pub async fn release(&self, workload: &str, version: &str, config: &[&str]) -> Out {
        let artifact = format!("sample-app:{version}");
        let mut args =
            vec!["release", "create", workload, "--version", version, "--artifact", &artifact, "--author", "it-test"];
        for kv in config {
            args.extend_from_slice(&["--config", kv]);
        }
        let out = self.cli(&args).await;
        assert_eq!(out.code, 0, "release create {version} failed:\n{out}");
        out
    }

    /// `ringfence deploy W V --wait`, with a timeout so a stuck rollout fails the test.
    pub async fn deploy_wait(&self, workload: &str, version: &str) -> Out {
        self.cli(&["deploy", workload, version, "--wait", "--timeout", "45s"]).await
    }

    pub async fn status(&self, workload: &str) -> WorkloadStatus {
        self.api
            .get(&format!("/v1/workloads/{workload}"))
            .await
            .unwrap_or_else(|e| panic!("GET /v1/workloads/{workload}: {e}"))
    }

    pub async fn rollout(&self, workload: &str, id: &str) -> Rollout {
        self.api
            .get(&format!("/v1/workloads/{workload}/rollouts/{id}"))
            .await
            .unwrap_or_else(|e| panic!("GET rollout {id}: {e}"))
    }

    /// Every event of a workload, read as the log records them (the API's payload is the
    /// log's record: this fails if it ever is not).
    pub async fn events(&self, workload: &str) -> Vec<Event> {
        logged(self.api.events_after(workload, 0).await.unwrap_or_else(|e| panic!("GET events of {workload}: {e}")))
    }

    /// The whole log, page after page of `GET /v1/events`.
    pub async fn all_events(&self) -> Vec<Event> {
        logged(self.api.all_events_after(0).await.unwrap_or_else(|e| panic!("GET /v1/events: {e}")))
    }

    /// Where users send traffic for this workload.
    pub async fn router_addr(&self, workload: &str) -> SocketAddr {
        let s = self.status(workload).await;
        let router = s.router.unwrap_or_else(|| panic!("{workload} has no router yet"));
        router.listen.parse().unwrap_or_else(|e| panic!("router address {:?}: {e}", router.listen))
    }

    /// What a person would look at to understand a failure: the status screen, the timeline,
    /// the controller's last actions and the end of the server's log. Only the ends, with long
    /// lines cut: a controller retrying in a loop would otherwise bury the message.
    pub async fn diagnose(&self, workload: &str) -> String {
        let status = self.cli(&["status", workload]).await;
        let timeline = self.cli(&["events", workload]).await;
        let actions = self.cli(&["events", workload, "--all"]).await;
        format!(
            "--- ringfence status {workload}\n{}{}\n--- ringfence events {workload} (last 40)\n{}\n\
             --- ringfence events {workload} --all (last 12)\n{}\n--- server log (last 5 lines)\n{}",
            status.stdout,
            status.stderr,
            last_lines(&format!("{}{}", timeline.stdout, timeline.stderr), 40),
            last_lines(&format!("{}{}", actions.stdout, actions.stderr), 12),
            tail(&self.log_path(self.launches), 5)
        )
    }

    /// Polls the workload's status until `f` returns something, or fails with diagnostics.
    pub async fn wait_status<T>(
        &self,
        workload: &str,
        what: &str,
        mut f: impl FnMut(&WorkloadStatus) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.status(workload).await;
            if let Some(t) = f(&s) {
                return t;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.diagnose(workload).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the workload's events until `f` returns something, or fails with diagnostics.
    pub async fn wait_events<T>(&self, workload: &str, what: &str, mut f: impl FnMut(&[Event]) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.events(workload).await;
            if let Some(t) = f(&events) {
                return t;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.diagnose(workload).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Live processes of a workload's version that this test's server started (by the
    /// environment the executor gives each replica).
    pub fn replica_processes(&self, workload: &str, version: &str) -> Vec<u32> {
        let want = [
            format!("{MARK_VAR}={}", self.mark),
            format!("RINGFENCE_WORKLOAD={workload}"),
            format!("RINGFENCE_VERSION={version}"),
        ];
        marked_processes(&want)
    }

    /// How many times a sample-app replica really started: each start appends its fixed
    /// "listening on" line to the replica's log, which outlives the process and the server.
    pub fn real_starts(&self, workload: &str, version: &str, replica: u32) -> usize {
        let log = self.data.join("logs").join(workload).join(format!("{version}.{replica}.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().filter(|l| l.starts_with(&format!("sample-app {version} listening on "))).count()
    }

    /// SIGKILLs the workload's router process, the one its status names, and returns its pid.
    /// Only a live process carrying this test's mark is ever signalled.
    pub async fn kill9_router(&self, workload: &str) -> u32 {
        let router = self.status(workload).await.router.unwrap_or_else(|| panic!("{workload} has no router"));
        let pid = router.pid.unwrap_or_else(|| panic!("{workload}'s router is not a process of ringfence"));
        let mark = format!("{MARK_VAR}={}", self.mark);
        assert!(
            alive(pid) && has_env(pid, &mark),
            "the router of {workload} (pid {pid}) is not a live process of this test"
        );
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap_or_else(|e| panic!("SIGKILL router pid {pid}: {e}"));
        pid
    }

    /// Pids listed in `<data>/run/*.json` (the routers' ready files) and
    /// `<data>/run/<workload>/*.json` (the replicas' pid files).
    fn run_file_pids(&self) -> Vec<u32> {
        let run = self.data.join("run");
        let Ok(dir) = std::fs::read_dir(&run) else { return vec![] };
        let entries: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        let nested = entries.iter().filter(|p| p.is_dir()).filter_map(|d| std::fs::read_dir(d).ok()).flatten();
        entries
            .iter()
            .cloned()
            .chain(nested.filter_map(|e| e.ok()).map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .filter_map(|v| v.get("pid").and_then(|p| p.as_u64()))
            .map(|p| p as u32)
            .collect()
    }
}

impl Server {
    /// SIGTERM, as a supervisor stops the server: a clean exit stops replicas (each with its
    /// stop grace) and the router first. SIGKILL if it takes more than 20 s. Returns whether it
    /// exited on its own.
    pub fn stop_cleanly(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_cleanly();
        // Last safety: whatever is still alive from this test goes, by pid file and by mark.
        // A pid from a pid file is only killed if it carries this test's mark, so a recycled
        // pid of an unrelated process is never touched.
        let mark = format!("{MARK_VAR}={}", self.mark);
        let mut leftovers: Vec<u32> = self.run_file_pids().into_iter().filter(|p| has_env(*p, &mark)).collect();
        leftovers.extend(marked_processes(std::slice::from_ref(&mark)));
        for pid in leftovers {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// The outcome of one CLI run.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the ringfence binary as a user would, with the given arguments.
pub async fn cli(args: &[&str]) -> Out {
    cli_with(args, &[]).await
}

/// The same, with environment variables set. Settings of the environment running the tests
/// (a server, a token) never leak in; the user's own token files are out of reach.
pub async fn cli_with(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("RINGFENCE_SERVER")
        .env_remove("RINGFENCE_OUTPUT")
        .env_remove("RINGFENCE_LOG_FORMAT")
        .env_remove("RINGFENCE_TOKEN")
        .env_remove("RINGFENCE_TOKEN_FILE")
        .env_remove("RINGFENCE_DATA_DIR")
        .env("XDG_CONFIG_HOME", "/nonexistent/ringfence-it")
        .env("XDG_DATA_HOME", "/nonexistent/ringfence-it")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`ringfence {}` did not finish within 120 s", args.join(" ")))
        .expect("run the ringfence binary");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// The rollout id from `ringfence deploy`'s first line, "rollout ID started: W V".
pub fn rollout_id(out: &Out) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("rollout ").and_then(|r| r.split_once(" started")).map(|(id, _)| id.to_string()))
        .unwrap_or_else(|| panic!("no rollout id in the deploy output:\n{out}"))
}

/// A workload spec for the sample app, fast enough for tests.
pub struct Spec<'a> {
    pub name: &'a str,
    pub replicas: u32,
    /// (weight in percent, bake) per phase.
    pub phases: Vec<(u32, &'a str)>,
    pub max_p99_latency: &'a str,
    /// The executor command as a TOML array; the sample app by default.
    pub command: Option<&'a str>,
    /// A breaker that never trips, so a test sees the signal it is about (e.g. the error
    /// rate) rather than the router's breaker reacting to the same failures first.
    pub lenient_breaker: bool,
}

impl<'a> Spec<'a> {
    pub fn new(name: &'a str) -> Spec<'a> {
        Spec {
            name,
            replicas: 1,
            phases: vec![(10, "1500ms"), (50, "1500ms"), (100, "1500ms")],
            // Generous: parallel tests on 2 cores must not turn a healthy release slow.
            max_p99_latency: "2s",
            command: None,
            lenient_breaker: false,
        }
    }

    pub fn toml(&self) -> String {
        let command = self
            .command
            .unwrap_or(r#"["{ringfence}", "sample-app", "--listen", "127.0.0.1:{port}", "--version", "{version}"]"#);
        let mut t = format!(
            r#"# Written by the integration tests.
[workload]
name = "{name}"
criticality = "medium"

[executor]
command = {command}
replicas = {replicas}
stop_grace = "2s"

[router]
listen = "127.0.0.1:0"
"#,
            name = self.name,
            replicas = self.replicas,
        );
        if self.lenient_breaker {
            t.push_str("\n[router.breaker]\nconsecutive_failures = 100000\nwindow = 1000\nmin_success_rate = 0.0\n");
        }
        t.push_str("\n[rollout]\nmax_hold = \"10m\"\n");
        for (i, (weight, bake)) in self.phases.iter().enumerate() {
            t.push_str(&format!("\n[[rollout.phases]]\nname = \"p{}\"\nweight = {weight}\nbake = \"{bake}\"\n", i + 1));
        }
        t.push_str(&format!(
            r#"
[health]
max_error_rate = 0.05
max_p99_latency = "{}"
min_requests = 20

[health.probe]
interval = "200ms"

# Test traffic is thin and bakes are short: a phase passes when the sequential tests find no
# regression by the end of its bake, without asking for the power to rule one out.
[health.analysis]
power = 0

[mitigation]
auto_fallback = true
"#,
            self.max_p99_latency
        ));
        t
    }
}

/// Simulated users through the router, every finished request kept as a [`Sample`].
pub struct Load {
    stop: CancellationToken,
    rx: mpsc::UnboundedReceiver<Sample>,
    task: Option<JoinHandle<LoadSummary>>,
    samples: Vec<Sample>,
}

impl Load {
    /// `rps` requests per second from `users` users (fixed keys `user-N` in `x-user-id`).
    pub fn start(target: SocketAddr, rps: f64, users: u32) -> Load {
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let cfg = LoadConfig::steady(target, rps, users);
        let task = tokio::spawn(ringfence::loadgen::run(cfg, Some(tx), stop.clone()));
        Load { stop, rx, task: Some(task), samples: Vec::new() }
    }

    /// Everything finished so far, in completion order.
    pub fn samples(&mut self) -> &[Sample] {
        while let Ok(s) = self.rx.try_recv() {
            self.samples.push(s);
        }
        &self.samples
    }

    /// Stops sending and returns every finished request.
    pub async fn finish(mut self) -> Vec<Sample> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.samples();
        std::mem::take(&mut self.samples)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Asserts that every request sent at or after `since` was answered 200 by `version`.
pub fn assert_served_by(samples: &[Sample], since: Instant, version: &str, what: &str) {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent_at >= since).collect();
    assert!(after.len() >= 20, "{what}: only {} requests were sent after the moment checked", after.len());
    let bad: Vec<&&Sample> =
        after.iter().filter(|s| s.version.as_deref() != Some(version) || s.status != Some(200)).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} requests were not answered 200 by {version}; first few: {:#?}",
        bad.len(),
        after.len(),
        &bad[..bad.len().min(5)]
    );
}

/// Per version, how many requests answered and how many failed.
pub fn by_version(samples: &[Sample]) -> BTreeMap<String, (usize, usize)> {
    let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for s in samples {
        let e = m.entry(s.version.clone().unwrap_or_else(|| "(none)".into())).or_default();
        e.0 += 1;
        if s.is_error() {
            e.1 += 1;
        }
    }
    m
}

/// Whether a process runs (a zombie does not: it has exited and only waits to be reaped).
pub fn alive(pid: u32) -> bool {
    if pid == 0 || kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| b.split(|c| *c == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default()
}

fn has_env(pid: u32, entry: &str) -> bool {
    environ(pid).iter().any(|e| e == entry)
}

/// Live processes whose environment holds every entry of `want`.
fn marked_processes(want: &[String]) -> Vec<u32> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else { return vec![] };
    proc_dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            let env = environ(*pid);
            want.iter().all(|w| env.contains(w))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    last_lines(&std::fs::read_to_string(path).unwrap_or_default(), lines)
}

/// The last `lines` lines of `text`, each cut to 300 characters.
fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| {
            if l.chars().count() > 300 {
                format!("{}…", l.chars().take(300).collect::<String>())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The API's events as the log's records.
fn logged(events: Vec<ringfence_api::Event>) -> Vec<Event> {
    events
        .iter()
        .map(|e| ringfence::cli::as_logged(e).unwrap_or_else(|| panic!("an event the core does not know: {e:?}")))
        .collect()
}

/// Rollout-scoped event helpers.
/// The phases rollout `id` passed, in order, each with whether a person promoted it.
pub fn phases_passed(events: &[Event], id: &str) -> Vec<(usize, bool)> {
    of_rollout(events, id)
        .filter_map(|k| match k {
            EventKind::PhasePassed { phase, by_hand, .. } => Some((*phase, *by_hand)),
            _ => None,
        })
        .collect()
}

pub fn of_rollout<'e>(events: &'e [Event], id: &str) -> impl Iterator<Item = &'e EventKind> {
    events.iter().map(|e| &e.kind).filter(move |k| k.rollout_id() == Some(id))
}

/// The pid of a process executor's instance (`proc:<pid>:<start time>`).
pub fn pid_of(instance: &str) -> u32 {
    instance
        .strip_prefix("proc:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("not a process instance: {instance:?}"))
}

/// Pids of every replica of `version` the log says was started.
pub fn started_pids(events: &[Event], version: &str) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ReplicaStarted { version: v, instance, .. } if v == version => Some(pid_of(instance)),
            _ => None,
        })
        .collect()
}

/// Polls `f` until it gives a value; panics naming `what` after [`DEADLINE`].
pub async fn wait_until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The intents of `events` with no recorded outcome, by op id.
pub fn of_workload_intents(events: &[Event]) -> Vec<(String, ringfence_core::event::Action)> {
    let mut open: BTreeMap<String, ringfence_core::event::Action> = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::ActionIntended { op_id, action } => {
                open.insert(op_id.clone(), action.clone());
            }
            EventKind::ActionSucceeded { op_id, .. } | EventKind::ActionFailed { op_id, .. } => {
                open.remove(op_id);
            }
            _ => {}
        }
    }
    open.into_iter().collect()
}

/// Sends a request head announcing a body of `len` bytes (and its first 64 KiB) to `path`,
/// as a client streaming a large upload would, and returns the server's answer: status and
/// JSON body. A server that refuses the size answers before it reads the body.
pub async fn announce_body(server: &Server, path: &str, len: usize) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect to the server");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nauthorization: {}\r\ncontent-length: {len}\r\n\r\n",
        server.bearer()
    );
    s.write_all(head.as_bytes()).await.expect("send the head");
    let _ = s.write_all(&vec![b' '; (64 << 10).min(len)]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {path}: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}
