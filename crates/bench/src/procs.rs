//! Processes the HTTP benchmarks run against, each a guard that kills its process on drop: a
//! `ringfence router` with a given table, a `ringfence sample-app` upstream, nginx, and HAProxy.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use ringfence::http::HttpClient;
use serde_json::Value;

/// How long a process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A `ringfence router` process on loopback, serving `table`.
pub struct Router {
    child: Child,
    pub listen: SocketAddr,
    admin: SocketAddr,
    authorization: Option<String>,
    /// The users' socket, when the benchmark holds it (see [`Router::start_held`]).
    socket: Option<std::net::TcpListener>,
    dir: tempfile::TempDir,
}

impl Router {
    pub fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

impl Router {
    pub async fn start(ringfence: &Path, table: &Value) -> Result<Router> {
        Router::launch(ringfence, table, None).await
    }

    /// A router on a users' socket the benchmark binds and keeps, as the server does for the
    /// routers it starts (LISTEN_FDS), with a state file: [`Router::restart`] starts the next
    /// one on the same socket, serving the last table.
    pub async fn start_held(ringfence: &Path, table: &Value) -> Result<Router> {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").context("bind the router's users' socket")?;
        Router::launch(ringfence, table, Some(socket)).await
    }

    async fn launch(ringfence: &Path, table: &Value, socket: Option<std::net::TcpListener>) -> Result<Router> {
        let dir = tempfile::Builder::new().prefix("ringfence-bench-router-").tempdir().context("temp dir")?;
        // A `--baseline` from before the admin secret has an open admin API.
        let mut authorization = None;
        if crate::baseline::router_takes_admin_token(ringfence)? {
            let token_file = dir.path().join("admin.token");
            let token = ringfence::routerproc::create_admin_token(&token_file)?;
            authorization = Some(format!("Bearer {token}"));
        }
        let placeholder = SocketAddr::from(([127, 0, 0, 1], 0));
        let child = Router::spawn(ringfence, dir.path(), socket.as_ref(), authorization.is_some())?;
        let mut router = Router { child, listen: placeholder, admin: placeholder, authorization, socket, dir };
        router.wait_ready().await?;
        router.put_table(table).await?;
        Ok(router)
    }

    fn spawn(ringfence: &Path, dir: &Path, socket: Option<&std::net::TcpListener>, with_token: bool) -> Result<Child> {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("router.log")).context("router log")?;
        let mut cmd = Command::new(ringfence);
        cmd.args(["router", "--admin", "127.0.0.1:0", "--ready-file"]).arg(&ready);
        if with_token {
            cmd.arg("--admin-token-file").arg(dir.join("admin.token"));
        }
        match socket {
            Some(socket) => {
                use command_fds::{CommandFdExt as _, FdMapping};
                let fd = std::os::fd::OwnedFd::from(socket.try_clone().context("copy the users' socket")?);
                cmd.fd_mappings(vec![FdMapping { parent_fd: fd, child_fd: 3 }])
                    .context("hand the users' socket to the router")?;
                cmd.env("LISTEN_FDS", "1").env_remove("LISTEN_PID").arg("--state-file").arg(dir.join("table.json"));
            }
            None => {
                cmd.args(["--listen", "127.0.0.1:0"]);
            }
        }
        cmd.env("RINGFENCE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} router", ringfence.display()))
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let ready = self.dir.path().join("ready.json");
        let deadline = Instant::now() + START_TIMEOUT;
        let info: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str(&text)
            {
                break v;
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the router exited with {status} before it listened");
            }
            if Instant::now() > deadline {
                bail!("the router did not write {} within {START_TIMEOUT:?}", ready.display());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let field = |k: &str| -> Result<SocketAddr> {
            info[k].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("ready file lacks an address {k}"))
        };
        self.listen = field("listen")?;
        self.admin = field("admin")?;
        Ok(())
    }

    /// Installs `table` through the admin API, as the server does at each weight shift.
    pub async fn put_table(&self, table: &Value) -> Result<()> {
        let r = HttpClient::new()
            .request(
                hyper::Method::PUT,
                &format!("http://{}/v1/table", self.admin),
                &self.authorization.iter().map(|a| ("authorization", a.as_str())).collect::<Vec<_>>(),
                Some(Bytes::from(table.to_string())),
                Duration::from_secs(5),
            )
            .await?;
        if !r.status.is_success() {
            bail!("the router refused the table: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        Ok(())
    }

    /// Stops this router the way an upgrade or an operator does (SIGTERM: it stops accepting
    /// and finishes what it serves), waits for it to exit, and only then starts the next one on
    /// the same users' socket, serving the last table from its state file: the order the
    /// server restarts a router in, with no router accepting in between. Only for a router
    /// from [`Router::start_held`].
    pub async fn restart(&mut self, ringfence: &Path) -> Result<()> {
        let socket = self.socket.as_ref().ok_or_else(|| anyhow!("the benchmark holds no socket of this router"))?;
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + START_TIMEOUT;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the router did not exit within {START_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.child = Router::spawn(ringfence, self.dir.path(), Some(socket), self.authorization.is_some())?;
        self.wait_ready().await
    }
}

/// A `ringfence sample-app` process on a free loopback port.
pub struct Upstream {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

impl Upstream {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(ringfence: &Path, version: &str) -> Result<Upstream> {
        let mut child = Command::new(ringfence)
            .args(["sample-app", "--listen", "127.0.0.1:0", "--version", version])
            .env("RINGFENCE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} sample-app", ringfence.display()))?;
        // It says where it listens on its first line: "sample-app V listening on ADDR".
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("sample-app stderr"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining, so the app never blocks on a full pipe.
            for _ in lines {}
        });
        let mut upstream = Upstream { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow!("sample-app {version} did not say where it listens within {START_TIMEOUT:?}"))?;
        upstream.addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("sample-app {version} printed {line:?}, not its address"))?;
        Ok(upstream)
    }
}

/// nginx as a reverse proxy on a free loopback port, from a config written for the run.
pub struct Nginx {
    child: Child,
    pub listen: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
        std::iter::once(master).chain(children.split_whitespace().filter_map(|p| p.parse().ok())).collect()
    }
}

impl Drop for Nginx {
    /// SIGTERM to nginx's process group: the master stops its workers (a SIGKILLed master
    /// would leave them running). SIGKILL to the group if it is not gone within 5 s.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([format!("-{name}"), "--".into(), group.clone()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // The workers belong to the master's group; make sure none outlives it.
                signal("KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("KILL");
        kill(&mut self.child);
    }
}

/// nginx's whole configuration around `http_block`. Everything nginx writes stays in the
/// run's directory `p`: no root-owned defaults.
fn nginx_conf(p: &str, listen: SocketAddr, http_block: &str) -> String {
    format!(
        "daemon off;\nworker_processes auto;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  \
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n{}\n}}\n",
        http_block.replace("LISTEN", &listen.to_string())
    )
}

/// Where Debian installs nginx.
pub fn nginx_binary() -> Result<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("nginx is not installed: `apt-get install nginx-light` (bench/run.sh router does)"))
}

impl Nginx {
    /// Rewrites the configuration with `http_block` and has the master load it (SIGHUP): new
    /// workers take the new configuration, the old ones finish what they serve, and the
    /// listening socket stays open throughout.
    pub fn reload(&self, http_block: &str) -> Result<()> {
        let conf = self.conf(http_block);
        std::fs::write(self._dir.path().join("nginx.conf"), conf).context("write nginx.conf")?;
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("cannot signal nginx's master to reload");
        }
        Ok(())
    }

    fn conf(&self, http_block: &str) -> String {
        nginx_conf(&self._dir.path().display().to_string(), self.listen, http_block)
    }

    /// `http_block` is the inside of the `http { }` block, with `LISTEN` where the server's
    /// listen address goes.
    pub fn start(http_block: &str) -> Result<Nginx> {
        let bin = nginx_binary()?;
        let dir = tempfile::Builder::new().prefix("ringfence-bench-nginx-").tempdir().context("temp dir")?;
        let listen = free_port()?;
        let conf = nginx_conf(&dir.path().display().to_string(), listen, http_block);
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).context("write nginx.conf")?;
        let log = std::fs::File::create(dir.path().join("stderr.log")).context("nginx log")?;
        let child = Command::new(&bin)
            .process_group(0)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut nginx = Nginx { child, listen, _dir: dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(listen).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(nginx._dir.path().join("stderr.log")).unwrap_or_default();
                bail!("nginx exited with {status} before it listened: {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {listen} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(nginx)
    }
}

/// A loopback port that was free a moment ago (nginx cannot be told to pick one itself).
pub fn free_port() -> Result<SocketAddr> {
    let port = ringfence::executor::free_port().context("find a free loopback port")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// An HAProxy on a free loopback port whose backend `checkout` is left to ringfence (the
/// marker lines of docs/traffic.md), from a file written for the run; killed on drop.
pub struct Haproxy {
    child: Child,
    pub frontend: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

impl Haproxy {
    pub fn start() -> Result<Haproxy> {
        let bin = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("haproxy is not installed: `apt-get install haproxy` (bench/run.sh does)"))?;
        let dir = tempfile::Builder::new().prefix("ringfence-bench-haproxy-").tempdir().context("temp dir")?;
        let frontend = free_port()?;
        let p = dir.path().display().to_string();
        let conf = format!(
            "global\n    stats socket {p}/admin.sock mode 600 level admin\n    maxconn 4000\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend fe\n    bind {frontend}\n    log {p}/log.sock local0\n    log-format \"rf1 %b %s %Tr %ST\"\n    default_backend checkout\n\
             backend checkout\n    balance hdr(x-user-id)\n    hash-type consistent\n    # ringfence:begin checkout\n    # ringfence:end\n"
        );
        std::fs::write(dir.path().join("haproxy.cfg"), conf).context("write haproxy.cfg")?;
        let log = std::fs::File::create(dir.path().join("stderr.log")).context("haproxy log")?;
        let child = Command::new(&bin)
            .arg("-f")
            .arg(dir.path().join("haproxy.cfg"))
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut h = Haproxy { child, frontend, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(frontend).is_err() || !h.socket().exists() {
            if let Some(status) = h.child.try_wait()? {
                let log = std::fs::read_to_string(h.dir.path().join("stderr.log")).unwrap_or_default();
                bail!("haproxy exited with {status} before it listened: {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("haproxy did not listen on {frontend} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(h)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// The `[router]` and `[router.haproxy]` of a workload behind this HAProxy.
    pub fn router_spec(&self) -> String {
        let p = self.dir.path().display();
        format!(
            "[router]\nkind = \"haproxy\"\nlisten = \"{}\"\n\n[router.haproxy]\nsocket = \"{p}/admin.sock\"\nbackend = \"checkout\"\nconfig = \"{p}/haproxy.cfg\"\nlog = \"{p}/log.sock\"\n",
            self.frontend
        )
    }
}

/// The CPU time a process has used, user and system, all its threads, in seconds, from /proc
/// (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime are fields 14 and 15, after the command in parentheses, in ticks of
    // USER_HZ (100 on Linux whatever the kernel's own tick).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The CPU seconds, user and system, of this process's children that have exited and been
/// waited for (`cutime` and `cstime` of /proc/self/stat).
pub fn reaped_children_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(13)?.parse::<f64>().ok()? + f.get(14)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// A process's resident memory in MiB, from /proc (0 once it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    let kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()))
        })
        .unwrap_or(0.0);
    kb / 1024.0
}
