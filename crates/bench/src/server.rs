//! The `ringfence server` under test, run as a separate process from the release binary, the way
//! it runs in production, so the benchmark measures the real binary and not an in-process copy
//! with other timings.
//!
//! [`Server`] is a guard: however the benchmark ends (error, Ctrl-C, panic), dropping it sends
//! SIGTERM and waits, so the server stops the replicas and routers it started. Those run in their
//! own process groups (they are meant to survive a server crash), so a server that dies without
//! stopping them would leave them behind; the guard then finds them from the server's pid files
//! and the events it saw, and stops them itself.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const LISTENING: &str = "ringfence server listening on ";

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a clean shutdown may take. Generous: it stops every replica and router of every
/// workload the benchmark created, one after the other.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, from the server's first line.
    pub base: String,
    ringfence: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Routers and replicas the server reported starting (from its events).
    known_pids: BTreeSet<u32>,
    authenticated: bool,
    /// The processes in the data directory's run files are this server's to stop when it goes
    /// (not a replica's: the next leader adopts them; see [`Server::stop_processes`]).
    owns_processes: bool,
    /// Removes the data directory when dropped, after the server is stopped (fields drop after
    /// [`Drop::drop`] has run). None when the data is kept.
    _tempdir: Option<tempfile::TempDir>,
}

/// What stopping found.
#[derive(Debug, Default)]
pub struct StopReport {
    /// The server's exit status, e.g. "exit status: 0".
    pub exit: String,
    /// ringfence processes still running after the server exited, which the guard then stopped.
    pub leftovers: Vec<String>,
}

impl Server {
    /// Starts `ringfence server` on a free loopback port with a fresh data directory.
    /// `tick` is passed as `--tick` when given; otherwise the product default applies.
    pub fn start(ringfence: &Path, tick: Option<&str>, keep_data: bool) -> Result<Server> {
        Server::launch(ringfence, tick, keep_data, None, &[])
    }

    /// One replica of several on a shared event log: the data directory is the replicas'
    /// (kept by the caller), `extra` names the store and the replica id, the log is
    /// `server-<id>.log` in it.
    pub fn start_replica(ringfence: &Path, data_dir: &Path, id: &str, extra: &[&str]) -> Result<Server> {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--replica-id", id]);
        Server::launch(ringfence, Some("50ms"), false, Some((data_dir, id)), &args)
    }

    /// A server on an existing data directory (kept by the caller), alone on it.
    pub fn start_in(ringfence: &Path, data_dir: &Path) -> Result<Server> {
        Server::launch(ringfence, None, false, Some((data_dir, "alone")), &[])
    }

    /// [`Server::start_in`] on a set address, so that what was told the server's address (a
    /// router of the tier) finds it again after a restart, with more options (`--store URL`).
    pub fn start_in_at_with(
        ringfence: &Path,
        data_dir: &Path,
        listen: std::net::SocketAddr,
        extra: &[&str],
    ) -> Result<Server> {
        let listen = listen.to_string();
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        Server::launch(ringfence, None, false, Some((data_dir, "alone")), &args)
    }

    /// Where the server keeps its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// SIGKILL: the server dies at once; its processes live on.
    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn launch(
        ringfence: &Path,
        tick: Option<&str>,
        keep_data: bool,
        shared: Option<(&Path, &str)>,
        extra: &[&str],
    ) -> Result<Server> {
        let tempdir = match shared {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("ringfence-bench-")
                    .tempdir()
                    .context("cannot create a temporary data directory")?,
            ),
        };
        let data_dir = match (shared, &tempdir) {
            (Some((dir, _)), _) => dir.to_path_buf(),
            (None, Some(t)) => t.path().to_path_buf(),
            (None, None) => unreachable!("a server has its own data directory or a shared one"),
        };
        let log_path = data_dir.join(match shared {
            Some((_, id)) => format!("server-{id}.log"),
            None => "server.log".to_string(),
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot create the server log {}", log_path.display()))?;
        let mut cmd = Command::new(ringfence);
        cmd.arg("server");
        if !extra.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir").arg(&data_dir).args(extra);
        if let Some(tick) = tick {
            cmd.arg("--tick").arg(tick);
        }
        // The server reads these from the environment; one left over in the caller's shell would
        // silently change what is measured (RINGFENCE_TICK) or leave processes behind on exit
        // (RINGFENCE_KEEP_WORKLOADS).
        cmd.env_remove("RINGFENCE_TICK").env_remove("RINGFENCE_KEEP_WORKLOADS").env_remove("RINGFENCE_LISTEN");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {}", ringfence.display()))?;

        let mut server = Server {
            base: String::new(),
            ringfence: std::fs::canonicalize(ringfence).unwrap_or_else(|_| ringfence.to_path_buf()),
            data_dir: data_dir.clone(),
            log_path,
            known_pids: BTreeSet::new(),
            authenticated: true,
            owns_processes: shared.is_none(),
            child: None,
            _tempdir: match tempdir {
                Some(t) if keep_data => {
                    eprintln!("bench: keeping the server's data in {}", t.keep().display());
                    None
                }
                t => t,
            },
        };

        let stdout = child.stdout.take().context("the server's stdout was not captured")?;
        server.child = Some(child);
        let (tx, rx) = mpsc::channel();
        // The server prints one line; the reader keeps draining afterwards so that a later
        // line can never block the server on a full pipe or kill it with EPIPE.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let first = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => bail!("the server did not print its address within {START_TIMEOUT:?}{}", server.log_tail()),
        };
        let Some(addr) = first.trim().strip_prefix(LISTENING).and_then(|rest| rest.split(" (").next()) else {
            server.check_alive()?;
            bail!("unexpected first line from the server: {:?}{}", first.trim(), server.log_tail());
        };
        server.base = addr.to_string();
        Ok(server)
    }

    /// A client of this server's API with the admin token it wrote to its data directory on
    /// its first start. A build from before authentication writes none; once it answers the
    /// workload list without a token, the client goes without one (see [`Server::authenticated`]).
    pub fn api(&mut self) -> Result<ringfence::client::ApiClient> {
        let file = ringfence::server::admin_token_path(&self.data_dir);
        let deadline = Instant::now() + START_TIMEOUT;
        // The token may land a moment after the server listens, so a refusal means "not yet".
        while !file.is_file() {
            self.check_alive()?;
            if answers_without_token(&self.base) {
                self.authenticated = false;
                return Ok(ringfence::client::ApiClient::new(&self.base, None));
            }
            if Instant::now() > deadline {
                bail!("the server wrote no admin token to {} within {START_TIMEOUT:?}", file.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let token = ringfence::credentials::find_token(&self.base, Some(&file)).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(ringfence::client::ApiClient::new(&self.base, token))
    }

    /// False once [`Server::api`] found a server that takes requests without a token.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// The ringfence binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.ringfence
    }

    /// An error, with the end of the server's log, if the server is no longer running.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else { bail!("the server was already stopped") };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the ringfence server exited unexpectedly ({status}){}", self.log_tail()),
            Err(e) => bail!("cannot check on the ringfence server: {e}"),
        }
    }

    /// Remembers processes the server said it started, to check on them after it stops.
    pub fn note_pids(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.known_pids.extend(pids);
    }

    /// SIGTERM, wait for a clean exit (SIGKILL after [`STOP_TIMEOUT`]), then stop any of its
    /// processes still running. Idempotent.
    pub fn stop(&mut self) -> StopReport {
        let mut report = StopReport::default();
        if let Some(mut child) = self.child.take() {
            report.exit = terminate(&mut child);
        }
        if self.owns_processes {
            report.leftovers = self.stop_leftovers();
        }
        report
    }

    /// Stops the routers and replicas of the data directory's run files: for replicas, once
    /// the last of them has stopped.
    pub fn stop_processes(&mut self) -> Vec<String> {
        self.stop_leftovers()
    }

    /// [`Server::stop`], saying on stderr (after `who: `) what it had to stop itself.
    pub fn stop_and_tell(&mut self, who: &str) -> StopReport {
        let stop = self.stop();
        if !stop.leftovers.is_empty() {
            eprintln!(
                "{who}: the server ({}) left ringfence processes running; the bench stopped them: {}",
                stop.exit,
                stop.leftovers.join("; ")
            );
        }
        stop
    }

    /// Routers and replicas still running, found from the pids the server wrote to its run
    /// directory and the pids of its events, and stopped.
    fn stop_leftovers(&self) -> Vec<String> {
        let mut pids = self.known_pids.clone();
        let run = self.data_dir.join("run");
        // The routers' ready files, and the replicas' pid files one level down.
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&run).into_iter().flatten().flatten() {
            match std::fs::read_dir(entry.path()) {
                Ok(inner) => files.extend(inner.flatten().map(|e| e.path())),
                Err(_) => files.push(entry.path()),
            }
        }
        {
            for path in &files {
                let Ok(text) = std::fs::read_to_string(path) else { continue };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                    && let Some(pid) = v.get("pid").and_then(|p| p.as_u64()).and_then(|p| u32::try_from(p).ok())
                {
                    pids.insert(pid);
                }
            }
        }
        let mut left = Vec::new();
        for pid in pids {
            // Only a process running our ringfence binary is ours: a pid may have been reused.
            let Some(cmdline) = ringfence_cmdline(pid, &self.ringfence) else { continue };
            left.push(format!("pid {pid}: {cmdline}"));
            signal(pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && ringfence_cmdline(pid, &self.ringfence).is_some() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if ringfence_cmdline(pid, &self.ringfence).is_some() {
                signal(pid, "KILL");
            }
        }
        left
    }

    /// The last lines of the server's log, to put in an error message.
    pub fn log_tail(&self) -> String {
        let Ok(mut f) = std::fs::File::open(&self.log_path) else { return String::new() };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(4000)));
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        if tail.is_empty() {
            String::new()
        } else {
            let kept = if self._tempdir.is_some() { ", removed on exit; --keep-data keeps it" } else { "" };
            format!("\n  server log ({}{kept}):\n    {tail}", self.log_path.display())
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let report = self.stop();
        if !report.leftovers.is_empty() {
            eprintln!("bench: stopped ringfence processes the server left running: {}", report.leftovers.join("; "));
        }
    }
}

/// `GET /v1/workloads` without a token answered 200. Plain blocking HTTP: [`Server::api`] runs
/// outside the async runtime, and this is one request on loopback.
fn answers_without_token(base: &str) -> bool {
    let Some(addr) = base.strip_prefix("http://") else { return false };
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else { return false };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v1/workloads HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if conn.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status = String::new();
    let _ = BufReader::new(conn).read_line(&mut status);
    status.split_whitespace().nth(1) == Some("200")
}

/// SIGTERM and wait; SIGKILL if that takes too long. Returns how it exited.
fn terminate(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!("had already exited ({status})");
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return format!("cannot wait for it: {e}"),
        }
    }
    let _ = child.kill();
    let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
    format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed ({status})")
}

/// Sends a signal with kill(1): the bench has no libc binding of its own, and std only offers
/// SIGKILL (`Child::kill`), which would keep the server from stopping its processes.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The command line of `pid` if it is running `binary` (zombies have an empty one).
fn ringfence_cmdline(pid: u32, binary: &Path) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> =
        raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let matches = exe.as_deref() == Some(binary) || args.first().is_some_and(|a| Path::new(a) == binary);
    matches.then(|| args.join(" "))
}
