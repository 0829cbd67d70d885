//! The process executor: runs replicas of a version as local processes.
//!
//! Each replica gets a free loopback port, its own process group (so a Ctrl-C meant for the
//! server does not reach it, and a server killed with SIGKILL leaves it serving), a log file
//! and a pid file. The pid file is written right after the spawn, before the start is
//! recorded, so a server that dies in between finds the process on restart and adopts it
//! instead of starting a second one. A replica that exits unasked is reported, never silently
//! restarted: a crash is a health signal.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringfence_core::spec::ExecutorSpec;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::http::HttpClient;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start `{program}` for {version} replica {replica}: {source}")]
    Spawn {
        program: String,
        version: String,
        replica: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{version} replica {replica} exited during start with {status}{log}")]
    ExitedDuringStart { version: String, replica: u32, status: String, log: String },
    #[error("{version} replica {replica} was not ready within {timeout:?} (GET {path} on port {port}){log}")]
    NotReady { version: String, replica: u32, timeout: Duration, path: String, port: u16, log: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Written next to each running replica so a restarted server can find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    port: u16,
    version: String,
    replica: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub pid: u32,
    pub port: u16,
    pub adopted: bool,
}

pub struct Replica<'a> {
    pub workload: &'a str,
    pub version: &'a str,
    pub replica: u32,
    pub spec: &'a ExecutorSpec,
    /// The release's configuration snapshot, passed as environment variables.
    pub config: &'a BTreeMap<String, String>,
    /// The workload's router, where the replica evaluates flags over OFREP.
    pub router: Option<&'a str>,
}

#[derive(Clone)]
pub struct ProcessExecutor {
    run_dir: PathBuf,
    log_dir: PathBuf,
    ringfence: PathBuf,
    http: HttpClient,
    /// The children this process started, by pid: `None` while running, the exit status once
    /// reaped. A child's exit is known only once its reaper has recorded the status, so a
    /// crash is never reported without it (between the exit and the reaping, the pid cannot be
    /// reused: the child is a zombie until reaped).
    children: Arc<Mutex<HashMap<u32, Option<String>>>>,
}

impl ProcessExecutor {
    pub fn new(data_dir: &Path, ringfence: PathBuf, http: HttpClient) -> Result<ProcessExecutor, ExecError> {
        let run_dir = data_dir.join("run");
        let log_dir = data_dir.join("logs");
        for d in [&run_dir, &log_dir] {
            std::fs::create_dir_all(d)
                .map_err(|source| ExecError::Io { what: format!("cannot create {}", d.display()), source })?;
        }
        Ok(ProcessExecutor { run_dir, log_dir, ringfence, http, children: Arc::default() })
    }

    /// The ringfence binary: `{ringfence}` in commands, and what runs routers.
    pub fn ringfence_bin(&self) -> &Path {
        &self.ringfence
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    fn pid_path(&self, workload: &str, version: &str, replica: u32) -> PathBuf {
        self.run_dir.join(format!("{workload}--{version}--{replica}.json"))
    }

    pub fn log_path(&self, workload: &str, version: &str, replica: u32) -> PathBuf {
        self.log_dir.join(format!("{workload}-{version}-{replica}.log"))
    }

    /// Makes sure the replica runs and is ready: adopts a live one found from an earlier
    /// server, or starts it and waits for readiness.
    pub async fn ensure(&self, r: &Replica<'_>) -> Result<Started, ExecError> {
        let pid_path = self.pid_path(r.workload, r.version, r.replica);
        if let Ok(text) = std::fs::read_to_string(&pid_path)
            && let Ok(pf) = serde_json::from_str::<PidFile>(&text)
        {
            if self.alive(pf.pid) && self.ready(pf.port, &r.spec.readiness.path).await {
                return Ok(Started { pid: pf.pid, port: pf.port, adopted: true });
            }
            if self.alive(pf.pid) {
                // Running but not answering: it cannot be trusted; replace it.
                self.signal_and_wait(pf.pid, r.spec.stop_grace.std()).await;
            }
            let _ = std::fs::remove_file(&pid_path);
        }
        self.start(r, &pid_path).await
    }

    async fn start(&self, r: &Replica<'_>, pid_path: &Path) -> Result<Started, ExecError> {
        let port = free_port().map_err(|source| ExecError::Io { what: "cannot find a free port".into(), source })?;
        let subst = |arg: &str| {
            arg.replace("{version}", r.version)
                .replace("{port}", &port.to_string())
                .replace("{replica}", &r.replica.to_string())
                .replace("{workload}", r.workload)
                .replace("{ringfence}", &self.ringfence.to_string_lossy())
        };
        let argv: Vec<String> = r.spec.command.iter().map(|a| subst(a)).collect();
        let log_path = self.log_path(r.workload, r.version, r.replica);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ExecError::Io { what: format!("cannot open {}", log_path.display()), source })?;
        let log_err = log
            .try_clone()
            .map_err(|source| ExecError::Io { what: format!("cannot open {}", log_path.display()), source })?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(&r.spec.env)
            .envs(r.config)
            .env("RINGFENCE_WORKLOAD", r.workload)
            .env("RINGFENCE_VERSION", r.version)
            .env("RINGFENCE_REPLICA", r.replica.to_string())
            .env("PORT", port.to_string())
            .envs(r.router.map(|a| ("OFREP_ENDPOINT", format!("http://{a}"))))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            program: argv[0].clone(),
            version: r.version.into(),
            replica: r.replica,
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let pf = PidFile { pid, port, version: r.version.into(), replica: r.replica };
        ringfence_router::write_atomically(pid_path, &serde_json::to_vec(&pf).expect("pid file serializes"))
            .map_err(|source| ExecError::Io { what: format!("cannot write {}", pid_path.display()), source })?;

        let deadline = Instant::now() + r.spec.readiness.timeout.std();
        let interval = r.spec.readiness.interval.std();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = std::fs::remove_file(pid_path);
                return Err(ExecError::ExitedDuringStart {
                    version: r.version.into(),
                    replica: r.replica,
                    status: status.to_string(),
                    log: log_tail(&log_path),
                });
            }
            if self.ready(port, &r.spec.readiness.path).await {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let _ = std::fs::remove_file(pid_path);
                return Err(ExecError::NotReady {
                    version: r.version.into(),
                    replica: r.replica,
                    timeout: r.spec.readiness.timeout.std(),
                    path: r.spec.readiness.path.clone(),
                    port,
                    log: log_tail(&log_path),
                });
            }
            tokio::time::sleep(interval).await;
        }
        // Reap the child when it exits so its status is known and no zombie is left.
        let children = self.children.clone();
        children.lock().expect("children lock").insert(pid, None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            children.lock().expect("children lock").insert(pid, Some(status));
        });
        Ok(Started { pid, port, adopted: false })
    }

    async fn ready(&self, port: u16, path: &str) -> bool {
        let url = format!("http://127.0.0.1:{port}{path}");
        matches!(self.http.get(&url, Duration::from_millis(500)).await, Ok(r) if r.status.is_success())
    }

    /// Probes a replica once: `Ok` on a 2xx answer, the reason otherwise.
    pub async fn probe(&self, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{port}{path}");
        match self.http.get(&url, timeout).await {
            Ok(r) if r.status.is_success() => Ok(()),
            Ok(r) => Err(format!("GET {path} answered {}", r.status)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether the process still runs. A child of ours runs until its reaper records its exit
    /// status; any other process (adopted after a restart) while it can be signalled.
    pub fn alive(&self, pid: u32) -> bool {
        if pid == 0 {
            return false;
        }
        if let Some(status) = self.children.lock().expect("children lock").get(&pid) {
            return status.is_none();
        }
        match kill(Pid::from_raw(pid as i32), None) {
            Ok(()) => !is_zombie(pid),
            Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        }
    }

    pub fn exit_status(&self, pid: u32) -> Option<String> {
        self.children.lock().expect("children lock").get(&pid).cloned().flatten()
    }

    /// Stops a replica: SIGTERM, then SIGKILL after `grace`. Stopping one that is gone is fine.
    pub async fn stop(&self, workload: &str, version: &str, replica: u32, pid: u32, grace: Duration) {
        self.signal_and_wait(pid, grace).await;
        let _ = std::fs::remove_file(self.pid_path(workload, version, replica));
    }

    async fn signal_and_wait(&self, pid: u32, grace: Duration) {
        if !self.alive(pid) {
            return;
        }
        let target = Pid::from_raw(pid as i32);
        let _ = kill(target, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.alive(pid) {
            let _ = kill(target, Signal::SIGKILL);
            while self.alive(pid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A free TCP port on loopback. Another process could take it before the replica binds it;
/// a replica that fails to bind fails its start and is reported like any failed start.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The last lines of a replica's log, to say why it failed.
fn log_tail(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else { return String::new() };
    let lines: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("; last log lines ({}): {}", path.display(), lines.join(" | "))
}
