//! The process executor: runs the instances of a release as local processes.
//!
//! Each instance gets a free loopback port, its own process group (so a Ctrl-C meant for the
//! server does not reach it, a server killed with SIGKILL leaves it serving, and a stop
//! reaches everything it started, a wrapper script's children too), a log file and a pid
//! file. The pid file is written right after the spawn, before the start is recorded, so a
//! server that dies in between finds the process on restart and adopts it instead of starting
//! a second one. An instance that exits unasked is reported, never silently restarted: a
//! crash is a health signal.
//!
//! Identity: an instance is `proc:<pid>:<start time>` (the kernel's start time of the process,
//! in clock ticks since boot), so a pid the kernel hands to another process later is never
//! taken for the instance: not when adopting, not when checking it, not when stopping it.
//! Files live under a directory per workload (`run/<workload>/<version>.<replica>.json`,
//! `logs/<workload>/<version>.<replica>.log`): names cannot make two slots share a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use ringfence_core::spec::ExecutorSpec;

use super::{ExecFuture, Executor, InstanceStatus, Replica, Slot, Started};
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
    #[error("{version} replica {replica} cannot start: {why}")]
    Secret { version: String, replica: u32, why: String },
    #[error("{version} replica {replica}: the {hook} hook failed: {why}")]
    Hook { hook: &'static str, version: String, replica: u32, why: String },
    #[error("{version} replica {replica}: the {hook} hook exited with {status}: {output}")]
    HookFailed { hook: &'static str, version: String, replica: u32, status: String, output: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Written next to each running instance so a restarted server can find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    /// The process's start time (clock ticks since boot), so a reused pid is not adopted.
    start: u64,
    port: u16,
    version: String,
    replica: u32,
}

/// A process instance as its id names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcId {
    pid: u32,
    /// `None` for ids upgraded from logs that did not record it.
    start: Option<u64>,
}

impl ProcId {
    fn parse(instance: &str) -> Option<ProcId> {
        let rest = instance.strip_prefix("proc:")?;
        let (pid, start) = match rest.split_once(':') {
            Some((pid, start)) => (pid, Some(start.parse().ok()?)),
            None => (rest, None),
        };
        Some(ProcId { pid: pid.parse().ok().filter(|p| *p > 0)?, start })
    }

    fn id(&self) -> String {
        match self.start {
            Some(start) => format!("proc:{}:{start}", self.pid),
            None => format!("proc:{}", self.pid),
        }
    }
}

/// A process this server started: its start time, and how it ended once reaped (and when).
#[derive(Debug, Clone)]
struct Child {
    start: u64,
    ended: Option<(String, Instant)>,
}

/// How long a child's exit status is kept after it was reaped, when nobody stops the instance:
/// the controller looks at every instance within seconds, so this is only a bound on the map.
const KEEP_EXIT_STATUS: Duration = Duration::from_secs(600);

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
    children: Arc<Mutex<HashMap<u32, Child>>>,
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

    // Workload names have no `.` nor `/`, and a replica number no `.`: `<version>.<replica>`
    // in a directory per workload is one file per slot, whatever the names.
    fn pid_path(&self, workload: &str, version: &str, replica: u32) -> PathBuf {
        self.run_dir.join(workload).join(format!("{version}.{replica}.json"))
    }

    pub fn log_path(&self, workload: &str, version: &str, replica: u32) -> PathBuf {
        self.log_dir.join(workload).join(format!("{version}.{replica}.log"))
    }

    async fn ensure_slot(&self, r: &Replica<'_>) -> Result<Started, ExecError> {
        let pid_path = self.pid_path(r.workload, r.version, r.replica);
        if let Ok(text) = std::fs::read_to_string(&pid_path)
            && let Ok(pf) = serde_json::from_str::<PidFile>(&text)
            && pf.version == r.version
            && pf.replica == r.replica
        {
            let id = ProcId { pid: pf.pid, start: Some(pf.start) };
            // A process that runs but does not answer yet may be one whose start a server
            // that died (or a leader that was deposed) was waiting on: it gets the readiness
            // budget to come up, as a start would, rather than a second process beside it.
            let deadline = Instant::now() + r.spec.readiness.timeout.std();
            while self.running(id) {
                if self.ready(pf.port, &r.spec.readiness.path).await {
                    return Ok(Started { instance: id.id(), endpoint: endpoint(pf.port), adopted: true });
                }
                if Instant::now() >= deadline {
                    // Running but not answering: it cannot be trusted; replace it.
                    self.stop_group(id, r.spec.stop_grace.std()).await;
                    break;
                }
                tokio::time::sleep(r.spec.readiness.interval.std()).await;
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
        for dir in [log_path.parent(), pid_path.parent()].into_iter().flatten() {
            std::fs::create_dir_all(dir)
                .map_err(|source| ExecError::Io { what: format!("cannot create {}", dir.display()), source })?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ExecError::Io { what: format!("cannot open {}", log_path.display()), source })?;
        let log_err = log
            .try_clone()
            .map_err(|source| ExecError::Io { what: format!("cannot open {}", log_path.display()), source })?;
        // The command starts behind a gate: a shell that waits for a line on its stdin, then
        // becomes the command (same pid, same start time). The line is sent once the pid file
        // is written, so a server that dies between the spawn and the pid file leaves no
        // process nobody knows of: the shell reads end-of-file and exits, and whoever leads
        // next starts the replica once.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"read -r _ || exit 0; exec "$0" "$@" </dev/null"#)
            .args(&argv)
            .envs(&r.spec.env)
            .envs(r.config)
            .env("RINGFENCE_WORKLOAD", r.workload)
            .env("RINGFENCE_VERSION", r.version)
            .env("RINGFENCE_REPLICA", r.replica.to_string())
            .env("PORT", port.to_string())
            .envs(r.router.map(|a| ("OFREP_ENDPOINT", format!("http://{a}"))))
            .stdin(std::process::Stdio::piped())
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
        // The child cannot be reaped before `wait` below, so its /proc entry is there to read.
        let start = proc_start(pid).unwrap_or(0);
        let id = ProcId { pid, start: Some(start) };
        let pf = PidFile { pid, start, port, version: r.version.into(), replica: r.replica };
        if let Err(source) =
            ringfence_router::write_atomically(pid_path, &serde_json::to_vec(&pf).expect("pid file serializes"))
        {
            // Closing the gate unopened ends the shell.
            drop(child.stdin.take());
            let _ = child.wait().await;
            return Err(ExecError::Io { what: format!("cannot write {}", pid_path.display()), source });
        }
        if let Some(mut gate) = child.stdin.take() {
            use tokio::io::AsyncWriteExt as _;
            // A failed write means the shell is gone; the loop below reports its exit.
            let _ = gate.write_all(b"start\n").await;
        }

        let deadline = Instant::now() + r.spec.readiness.timeout.std();
        let interval = r.spec.readiness.interval.std();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = std::fs::remove_file(pid_path);
                return Err(ExecError::ExitedDuringStart {
                    version: r.version.into(),
                    replica: r.replica,
                    status: status.to_string(),
                    log: crate::secrets::redact(&log_tail(&log_path), r.secrets),
                });
            }
            if self.ready(port, &r.spec.readiness.path).await {
                break;
            }
            if Instant::now() >= deadline {
                // The whole group: a wrapper's children too.
                let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
                let _ = child.start_kill();
                let _ = child.wait().await;
                let _ = std::fs::remove_file(pid_path);
                return Err(ExecError::NotReady {
                    version: r.version.into(),
                    replica: r.replica,
                    timeout: r.spec.readiness.timeout.std(),
                    path: r.spec.readiness.path.clone(),
                    port,
                    log: crate::secrets::redact(&log_tail(&log_path), r.secrets),
                });
            }
            tokio::time::sleep(interval).await;
        }
        // Reap the child when it exits so its status is known and no zombie is left.
        let children = self.children.clone();
        {
            let mut children = children.lock().expect("children lock");
            children.retain(|_, c| c.ended.as_ref().is_none_or(|(_, at)| at.elapsed() < KEEP_EXIT_STATUS));
            children.insert(pid, Child { start, ended: None });
        }
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            if let Some(c) = children.lock().expect("children lock").get_mut(&pid) {
                c.ended = Some((status, Instant::now()));
            }
        });
        Ok(Started { instance: id.id(), endpoint: endpoint(port), adopted: false })
    }

    async fn ready(&self, port: u16, path: &str) -> bool {
        let url = format!("http://127.0.0.1:{port}{path}");
        matches!(self.http.get(&url, Duration::from_millis(500)).await, Ok(r) if r.status.is_success())
    }

    /// The child of ours an id names, if it is one.
    fn child(&self, id: ProcId) -> Option<Child> {
        let children = self.children.lock().expect("children lock");
        children.get(&id.pid).filter(|c| id.start.is_none_or(|s| s == c.start)).cloned()
    }

    /// Whether the process an id names runs: a child of ours until its reaper recorded how it
    /// ended; any other (adopted after a restart) while its pid runs with the recorded start
    /// time.
    fn running(&self, id: ProcId) -> bool {
        if let Some(c) = self.child(id) {
            return c.ended.is_none();
        }
        match proc_start(id.pid) {
            Some(start) => id.start.is_none_or(|s| s == start) && !is_zombie(id.pid),
            None => false,
        }
    }

    /// SIGTERM to the instance's process group, then SIGKILL to what is left after `grace`.
    /// The group outlives its leader when a wrapper's children keep running: the stop waits
    /// for the whole group. A pid now used by another process is never signalled.
    async fn stop_group(&self, id: ProcId, grace: Duration) {
        let leader_reused = proc_start(id.pid).is_some_and(|s| id.start.is_some_and(|mine| mine != s));
        if leader_reused {
            return;
        }
        let group = Pid::from_raw(-(id.pid as i32));
        let group_alive = || kill(group, None).is_ok();
        let _ = kill(group, Signal::SIGTERM);
        // A hung instance (a drill's SIGSTOP) takes the SIGTERM only once it runs again.
        let _ = kill(group, Signal::SIGCONT);
        let deadline = Instant::now() + grace;
        while (self.running(id) || group_alive()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let forced = Instant::now() + Duration::from_secs(5);
        while (self.running(id) || group_alive()) && Instant::now() < forced {
            let _ = kill(group, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Executor for ProcessExecutor {
    fn ensure<'a>(&'a self, slot: &'a Replica<'a>) -> ExecFuture<'a, Result<Started, ExecError>> {
        Box::pin(self.ensure_slot(slot))
    }

    fn status(&self, _: Slot<'_>, instance: &str, _: &ExecutorSpec) -> InstanceStatus {
        let Some(id) = ProcId::parse(instance) else {
            return InstanceStatus::Exited(format!("not an instance of the process executor: {instance:?}"));
        };
        if self.running(id) {
            return InstanceStatus::Running;
        }
        let reaped = self.child(id).and_then(|c| c.ended).map(|(status, _)| status);
        InstanceStatus::Exited(reaped.unwrap_or_else(|| "exited; status unknown (not a child of this server)".into()))
    }

    fn inject(&self, instance: &str, fault: super::InstanceFault) -> Result<(), String> {
        let Some(id) = ProcId::parse(instance).filter(|id| self.running(*id)) else {
            return Err(format!("{instance} does not run"));
        };
        let signal = match fault {
            super::InstanceFault::Crash => Signal::SIGKILL,
            super::InstanceFault::Hang => Signal::SIGSTOP,
        };
        kill(Pid::from_raw(-(id.pid as i32)), signal)
            .map_err(|e| format!("{signal} to {instance}'s process group: {e}"))
    }

    /// A local process is undone by stopping it: it changed nothing else.
    fn stop<'a>(
        &'a self,
        slot: Slot<'a>,
        instance: &'a str,
        spec: &'a ExecutorSpec,
        _kind: super::StopKind,
    ) -> ExecFuture<'a, Result<(), ExecError>> {
        Box::pin(async move {
            if let Some(id) = ProcId::parse(instance) {
                self.stop_group(id, spec.stop_grace.std()).await;
                // Stopped for good: its status is asked for no more.
                let mut children = self.children.lock().expect("children lock");
                if children.get(&id.pid).is_some_and(|c| c.ended.is_some() && id.start.is_none_or(|s| s == c.start)) {
                    children.remove(&id.pid);
                }
            }
            let _ = std::fs::remove_file(self.pid_path(slot.workload, slot.version, slot.replica));
            Ok(())
        })
    }

    fn probe<'a>(&'a self, endpoint: &'a str, path: &'a str, timeout: Duration) -> ExecFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let url = format!("http://{endpoint}{path}");
            match self.http.get(&url, timeout).await {
                Ok(r) if r.status.is_success() => Ok(()),
                Ok(r) => Err(format!("GET {path} answered {}", r.status)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

fn endpoint(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Whether a process that is not necessarily our child runs (the routers, found by pid).
pub fn pid_alive(pid: u32) -> bool {
    pid != 0
        && match kill(Pid::from_raw(pid as i32), None) {
            Ok(()) => !is_zombie(pid),
            Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        }
}

/// The start time of a process, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A replica that answers readiness: Python's HTTP server, which the test tooling installs.
    fn spec() -> ExecutorSpec {
        serde_json::from_value(serde_json::json!({
            "command": ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
            "readiness": {"path": "/", "timeout": "10s", "interval": "50ms"},
            "stop_grace": "2s",
        }))
        .expect("executor spec")
    }

    fn known(executor: &ProcessExecutor) -> usize {
        executor.children.lock().expect("children lock").len()
    }

    #[tokio::test]
    async fn a_stopped_child_is_forgotten_once_its_exit_was_seen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let executor =
            ProcessExecutor::new(dir.path(), PathBuf::from("ringfence"), HttpClient::new()).expect("executor");
        let (spec, config) = (spec(), BTreeMap::new());
        let replica = Replica {
            workload: "w",
            version: "v1",
            replica: 0,
            spec: &spec,
            config: &config,
            router: None,
            secrets: &[],
        };
        let slot = Slot { workload: "w", version: "v1", replica: 0 };
        let started = executor.ensure(&replica).await.expect("the replica starts");
        assert_eq!(known(&executor), 1);

        // A crash: its status stays known to the controller until the instance is stopped.
        executor.inject(&started.instance, crate::executor::InstanceFault::Crash).expect("crash injected");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match executor.status(slot, &started.instance, &spec) {
                InstanceStatus::Exited(status) => break status,
                InstanceStatus::Running if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                InstanceStatus::Running => panic!("the killed replica still runs"),
            }
        };
        assert!(status.contains("signal"), "the reaped status says how it ended: {status}");
        assert_eq!(known(&executor), 1);

        executor.stop(slot, &started.instance, &spec, crate::executor::StopKind::Retire).await.expect("stop");
        assert_eq!(known(&executor), 0, "a stopped instance leaves nothing behind in the executor");
        assert!(matches!(executor.status(slot, &started.instance, &spec), InstanceStatus::Exited(_)));
    }
}
