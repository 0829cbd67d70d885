//! The workload's router runs as its own process (`ringfence router`), so the data plane
//! keeps serving with its last table while the server is down or restarting. The server
//! starts and stops it here; tables and stats go through the traffic seam
//! ([`crate::traffic::BuiltinRouter`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::state::Shared;

/// What a router writes to its ready file once it listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyFile {
    pub pid: u32,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

pub struct RouterHandle {
    pub pid: u32,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

fn paths(shared: &Shared, workload: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = shared.data_dir.join("run");
    (
        run.join(format!("{workload}.router-ready.json")),
        run.join(format!("{workload}.router-table.json")),
        shared.data_dir.join("logs").join(format!("{workload}-router.log")),
    )
}

pub async fn start(shared: &Shared, workload: &str, listen: &str) -> anyhow::Result<RouterHandle> {
    let (ready, table, log) = paths(shared, workload);
    let _ = std::fs::remove_file(&ready);
    let exe = shared.executor.ringfence_bin().to_path_buf();
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut child = tokio::process::Command::new(exe)
        .arg("router")
        .arg("--listen")
        .arg(listen)
        .arg("--admin")
        .arg("127.0.0.1:0")
        .arg("--state-file")
        .arg(&table)
        .arg("--ready-file")
        .arg(&ready)
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .context("cannot start the router process")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(r) = serde_json::from_str::<ReadyFile>(&text)
        {
            let pid = r.pid;
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            return Ok(RouterHandle { pid, listen: r.listen, admin: r.admin });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("").to_string();
            bail!("the router for {workload} exited with {status} before listening on {listen}: {last}");
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!("the router for {workload} did not start listening on {listen} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn stop(shared: &Shared, pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if !shared.executor.alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.executor.alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if shared.executor.alive(pid) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
