//! The workload's router runs as its own process (`ringfence router`), so the data plane
//! keeps serving with its last table while the server is down or restarting. The server
//! starts and stops it here; tables and stats go through the traffic seam
//! ([`crate::traffic::BuiltinRouter`]).
//!
//! Each start creates a new secret for the router's admin API and hands it over in a file
//! only this user can read (`run/<workload>.router-admin-token`, mode 0600), never on the
//! command line (others can read that in `ps`) nor in a log line or an event. The server reads
//! the file again to call the router, including one it adopts after a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::state::Shared;
use crate::traffic::RouterEndpoint;

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
    /// The admin API's secret (see [`admin_token`]).
    pub token: String,
}

impl RouterHandle {
    /// Where and how to call this router's admin API.
    pub fn endpoint(&self) -> RouterEndpoint {
        RouterEndpoint { admin: self.admin, token: self.token.clone() }
    }
}

/// The file holding the admin secret of `workload`'s router, under the server's data directory.
pub fn admin_token_path(data_dir: &Path, workload: &str) -> PathBuf {
    data_dir.join("run").join(format!("{workload}.router-admin-token"))
}

/// The secret the admin API of `workload`'s router requires (`Authorization: Bearer ...`), as
/// written when the router was started. Refused, naming the file, when it is missing, empty
/// or readable by group or others.
pub fn admin_token(data_dir: &Path, workload: &str) -> anyhow::Result<String> {
    Ok(ringfence_router::AdminToken::read(&admin_token_path(data_dir, workload))?.expose().to_owned())
}

/// Creates a new admin secret (32 random bytes, hex) and writes it to `path` with mode 0600
/// (atomically: readers see the old secret or the new one); returns it.
pub fn create_admin_token(path: &Path) -> anyhow::Result<String> {
    let token = ringfence_router::AdminToken::generate()?;
    ringfence_router::write_secret_file(path, format!("{}\n", token.expose()).as_bytes())
        .with_context(|| format!("cannot write the router's admin token file {}", path.display()))?;
    Ok(token.expose().to_owned())
}

/// How to call the admin API of `workload`'s router at `admin`. If its secret cannot be read,
/// the endpoint has none: a router started before admin tokens existed (adopted after an
/// upgrade) still answers, and one that requires a token answers 401, which the caller reports.
pub fn endpoint(data_dir: &Path, workload: &str, admin: SocketAddr) -> RouterEndpoint {
    let token = admin_token(data_dir, workload).unwrap_or_else(|e| {
        tracing::debug!(workload, error = %format!("{e:#}"), "calling the router without an admin token");
        String::new()
    });
    RouterEndpoint { admin, token }
}

fn paths(shared: &Shared, workload: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = shared.data_dir.join("run");
    (
        run.join(format!("{workload}.router-ready.json")),
        run.join(format!("{workload}.router-table.json")),
        shared.data_dir.join("logs").join(format!("{workload}-router.log")),
    )
}

/// The workload's users' socket, bound on first use and kept for the next routers; a copy
/// of it for the child.
fn users_socket(shared: &Shared, workload: &str, listen: &str) -> anyhow::Result<std::os::fd::OwnedFd> {
    let mut sockets = shared.router_sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A socket held for another address (the workload's router moved) is closed, not reused.
    let wanted = listen.parse::<SocketAddr>().ok().filter(|a| a.port() != 0);
    if let Some(wanted) = wanted
        && sockets.get(workload).is_some_and(|held| held.local_addr().ok() != Some(wanted))
    {
        sockets.remove(workload);
    }
    let socket = match sockets.entry(workload.to_owned()) {
        std::collections::hash_map::Entry::Occupied(held) => held.into_mut(),
        std::collections::hash_map::Entry::Vacant(slot) => {
            let socket = std::net::TcpListener::bind(listen)
                .with_context(|| format!("cannot listen on {listen} for {workload}'s router"))?;
            slot.insert(socket)
        }
    };
    Ok(std::os::fd::OwnedFd::from(socket.try_clone().context("cannot copy the router's listening socket")?))
}

/// Keeps a copy of the users' socket of `workload`'s router, process `pid` listening on
/// `listen`, started by an earlier server (see [`crate::handover`]), unless this server holds
/// one for that address already: if that router exits, the next one starts on it and no user
/// is refused. Whether a copy is held now; `loud`: a failure is a warning, else a debug line
/// (the caller tries again later).
pub async fn adopt_socket(shared: &Shared, workload: &str, pid: u32, listen: SocketAddr, loud: bool) -> bool {
    let sockets = || shared.router_sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if sockets().get(workload).is_some_and(|held| held.local_addr().ok() == Some(listen)) {
        return true;
    }
    let Some(path) = crate::handover::path(&shared.data_dir, workload) else { return false };
    let taken = tokio::task::spawn_blocking(move || crate::handover::take(&path, pid, listen)).await;
    match taken.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(socket) => {
            sockets().insert(workload.to_owned(), socket);
            tracing::info!(workload, pid, %listen, "kept a copy of the adopted router's users' socket");
            true
        }
        Err(e) => {
            let error = format!("{e:#}");
            let what = "no copy of the adopted router's users' socket yet: if it exits, users are refused until the next router listens";
            if loud {
                tracing::warn!(workload, pid, error, "{what}");
            } else {
                tracing::debug!(workload, pid, error, "{what}");
            }
            false
        }
    }
}

/// Lets go of this server's copy of `workload`'s users' socket, when another replica leads
/// the workload now (its router is that replica's to restart): a copy kept here would hold the
/// address open after the workload is deleted there. The router and its handover are left as
/// they are.
pub fn forget_socket(shared: &Shared, workload: &str) {
    shared.router_sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(workload);
}

/// Closes the workload's users' socket, once its router is stopped for good (the workload
/// is deleted): from then on its users are refused.
pub fn release_socket(shared: &Shared, workload: &str) {
    shared.router_sockets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(workload);
    if let Some(path) = crate::handover::path(&shared.data_dir, workload) {
        let _ = std::fs::remove_file(path);
    }
}

/// Starts the workload's router on the users' socket this server holds for it (fd 3, as
/// systemd hands sockets over), so that a router restarted after a crash or a stop finds the
/// connections that arrived meanwhile waiting, and no user is refused.
pub async fn start(shared: &Shared, workload: &str, listen: &str) -> anyhow::Result<RouterHandle> {
    use command_fds::{CommandFdExt as _, FdMapping};
    let socket = users_socket(shared, workload, listen)?;
    let (ready, table, log) = paths(shared, workload);
    let _ = std::fs::remove_file(&ready);
    // Before the process: it reads the file once, at start.
    let token_file = admin_token_path(&shared.data_dir, workload);
    let token = create_admin_token(&token_file)?;
    let exe = shared.ringfence_bin.clone();
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let handover = crate::handover::path(&shared.data_dir, workload);
    if handover.is_none() {
        tracing::warn!(
            workload,
            "the data directory's path is too long for a Unix socket: a server restarted while this router runs will have no copy of its users' socket"
        );
    }
    let mut command = tokio::process::Command::new(exe);
    command
        .fd_mappings(vec![FdMapping { parent_fd: socket, child_fd: 3 }])
        .context("cannot hand the listening socket to the router")?;
    let mut child = command
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .arg("router")
        .arg("--admin")
        .arg("127.0.0.1:0")
        .arg("--state-file")
        .arg(&table)
        .arg("--ready-file")
        .arg(&ready)
        .arg("--admin-token-file")
        .arg(&token_file)
        .args(handover.iter().flat_map(|p| [std::ffi::OsStr::new("--handover-socket"), p.as_os_str()]))
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
            return Ok(RouterHandle { pid, listen: r.listen, admin: r.admin, token });
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

pub async fn stop(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if !crate::executor::process::pid_alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::executor::process::pid_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if crate::executor::process::pid_alive(pid) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_admin_token_is_written_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = admin_token_path(dir.path(), "checkout");
        assert!(path.ends_with("run/checkout.router-admin-token"));
        let token = create_admin_token(&path).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(admin_token(dir.path(), "checkout").unwrap(), token);
        let admin: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        let at = endpoint(dir.path(), "checkout", admin);
        assert_eq!(at, RouterEndpoint { admin, token: token.clone() });
        assert!(!format!("{at:?}").contains(&token), "Debug shows no secret");

        // Each start gets a new secret.
        assert_ne!(create_admin_token(&path).unwrap(), token);

        // Without a readable secret the endpoint has none (a router from before tokens).
        let e = admin_token(dir.path(), "other").unwrap_err();
        assert!(format!("{e:#}").contains("other.router-admin-token"), "{e:#}");
        assert_eq!(endpoint(dir.path(), "other", admin).token, "");
    }
}
