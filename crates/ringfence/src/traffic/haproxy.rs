//! HAProxy as a workload's data plane, for fleets whose traffic already goes through it.
//!
//! The team runs HAProxy; ringfence owns the servers of one backend:
//!
//! - **Weights** through the runtime API (`add server`, `set weight`, `set server state`,
//!   `del server`). The backend balances on the sticky header with `hash-type consistent`, so a
//!   user stays on one server while weights change, and raising the new version's weight only
//!   moves users onto it. A table is applied in an order that never leaves users without a
//!   server: new servers first, then weights, then the servers no longer wanted (drained to
//!   maintenance, then deleted). HAProxy has no atomic swap of a backend's servers, so for a
//!   few milliseconds a change is partly applied; the built-in router swaps whole tables.
//! - **The configuration file** kept in step: between `# ringfence:begin BACKEND` and
//!   `# ringfence:end` inside the backend, ringfence writes a `server` line per server with
//!   its current weight (and the table it installed, as a comment), replacing the file
//!   atomically and changing nothing else. A reload therefore comes up with the same split.
//! - **Counters** from `show stat`: requests and 5xx answers per server, plus connection and
//!   response errors, summed per version. HAProxy's own 503s (no server) count for no version.
//! - **Latency** from HAProxy's request logs (`%Tr`, the server's time to answer headers, in
//!   milliseconds), received on a Unix datagram socket ringfence creates with mode 0620: only
//!   its own user and group can write to it, so another local user cannot forge samples.
//!   `show stat` only has averages, and the analysis compares distributions.
//!
//! HAProxy places users by hashing and cannot say where one user goes, so [`Haproxy::assign`]
//! answers an error: a user report then counts against no group.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ringfence_core::spec::{HaproxySpec, RouterSpec};
use ringfence_router::{BreakerState, RouteTable, StatsSnapshot, UpstreamStats, VersionStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Assignment, TrafficAdapter};

/// The most of an answer of the runtime API read (a `show stat` of a large HAProxy).
const MAX_ANSWER: u64 = 8 << 20;
/// The largest configuration file ringfence rewrites.
const MAX_CONFIG: u64 = 4 << 20;
/// Most distinct (backend, server) pairs whose latency one log socket keeps.
const MAX_SERIES: usize = 4096;
/// The marker a `log-format` carries before ringfence's fields.
const LOG_MARK: &str = "rf1";
/// Highest server weight HAProxy takes.
const MAX_WEIGHT: u32 = 256;
/// Server names ringfence gives, and the only ones it changes.
const PREFIX: &str = "rf-";

/// One workload's HAProxy: where its runtime API, backend, configuration and logs are.
#[derive(Debug, Clone, PartialEq)]
pub struct HaproxyEndpoint {
    pub socket: PathBuf,
    pub backend: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub server_options: String,
    pub sticky_header: String,
}

impl HaproxyEndpoint {
    pub fn new(router: &RouterSpec, h: &HaproxySpec) -> HaproxyEndpoint {
        HaproxyEndpoint {
            socket: h.socket.clone().into(),
            backend: h.backend.clone(),
            config: h.config.clone().into(),
            log: h.log.clone().into(),
            server_options: h.server_options.clone(),
            sticky_header: router.sticky_header.clone(),
        }
    }
}

/// The HAProxy adapter. Clones share the log sockets and the tables last written.
#[derive(Clone)]
pub struct Haproxy {
    timeout: Duration,
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    sinks: Mutex<HashMap<PathBuf, Arc<LogSink>>>,
}

impl Default for Haproxy {
    fn default() -> Self {
        Haproxy::new()
    }
}

impl Haproxy {
    pub fn new() -> Haproxy {
        Haproxy { timeout: Duration::from_secs(2), inner: Arc::default() }
    }

    pub fn with_timeout(&self, timeout: Duration) -> Haproxy {
        Haproxy { timeout, inner: self.inner.clone() }
    }

    /// One runtime API command, its answer read to the end.
    async fn call(&self, at: &HaproxyEndpoint, cmd: &str) -> anyhow::Result<String> {
        let socket = &at.socket;
        let run = async {
            let mut s = tokio::net::UnixStream::connect(socket).await.with_context(|| {
                format!(
                    "cannot reach HAProxy's runtime API at {} (is HAProxy running with `stats socket {} level admin`?)",
                    socket.display(),
                    socket.display()
                )
            })?;
            s.write_all(format!("{cmd}\n").as_bytes()).await?;
            let mut out = Vec::new();
            s.take(MAX_ANSWER).read_to_end(&mut out).await?;
            anyhow::Ok(String::from_utf8_lossy(&out).into_owned())
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                bail!("HAProxy's runtime API at {} did not answer `{cmd}` within {:?}", socket.display(), self.timeout)
            }
        }
    }

    /// A command that changes something: HAProxy answers an empty line, or a line saying it
    /// did it; anything else is its error.
    async fn change(&self, at: &HaproxyEndpoint, cmd: &str) -> anyhow::Result<()> {
        let answer = self.call(at, cmd).await?;
        let answer = answer.trim();
        if answer.is_empty() || answer == "New server registered." || answer == "Server deleted." {
            return Ok(());
        }
        bail!("HAProxy refused `{cmd}`: {answer}")
    }

    /// The backend's servers as HAProxy runs them now.
    async fn live(&self, at: &HaproxyEndpoint) -> anyhow::Result<BTreeMap<String, LiveServer>> {
        let answer = self.call(at, &format!("show servers state {}", at.backend)).await?;
        parse_servers_state(&answer, &at.backend)
    }

    /// The latency sink of a log socket, created on first use.
    fn sink(&self, at: &HaproxyEndpoint) -> anyhow::Result<Arc<LogSink>> {
        let mut sinks = self.inner.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = sinks.get(&at.log) {
            return Ok(s.clone());
        }
        let sink = LogSink::bind(&at.log)?;
        sinks.insert(at.log.clone(), sink.clone());
        Ok(sink)
    }
}

impl TrafficAdapter for Haproxy {
    type Endpoint = HaproxyEndpoint;

    async fn install(&self, at: &HaproxyEndpoint, table: &RouteTable) -> anyhow::Result<()> {
        if let Some(g) = table.groups.iter().find(|g| g.segment.is_some() || g.shadow_bp > 0) {
            bail!("group {} needs a ring of chosen users or shadow traffic, which HAProxy cannot route", g.name);
        }
        // The file first: a backend ringfence cannot keep in step is refused before anything
        // changes.
        let text = read_config(&at.config)?;
        let region = Region::find(&text, at)?;
        self.sink(at)?;
        let plan = plan_servers(table)?;
        let live = self.live(at).await?;
        for s in &plan {
            if !live.contains_key(&s.name) {
                let cmd = format!(
                    "add server {}/{} {} weight {} {}",
                    at.backend, s.name, s.addr, s.weight, at.server_options
                );
                self.change(at, cmd.trim_end()).await?;
                if has_check(&at.server_options) {
                    self.change(at, &format!("enable health {}/{}", at.backend, s.name)).await?;
                }
                self.change(at, &format!("enable server {}/{}", at.backend, s.name)).await?;
            }
        }
        for s in &plan {
            if let Some(l) = live.get(&s.name) {
                if l.weight != s.weight {
                    self.change(at, &format!("set weight {}/{} {}", at.backend, s.name, s.weight)).await?;
                }
                if l.maint {
                    self.change(at, &format!("set server {}/{} state ready", at.backend, s.name)).await?;
                }
            }
        }
        for (name, l) in &live {
            if name.starts_with(PREFIX) && !plan.iter().any(|s| &s.name == name) {
                if !l.maint {
                    self.change(at, &format!("set server {}/{} state maint", at.backend, name)).await?;
                }
                // A server with connections still open cannot go yet: it stays in maintenance
                // (no traffic), and the next table tries again; the file no longer lists it.
                if let Err(e) = self.change(at, &format!("del server {}/{}", at.backend, name)).await {
                    tracing::debug!(backend = at.backend, server = name, error = %e, "server not deleted yet");
                }
            }
        }
        let written = region.replace(&text, &server_lines(table, &plan, &at.server_options)?);
        write_config(&at.config, &written)
    }

    async fn table(&self, at: &HaproxyEndpoint) -> anyhow::Result<Option<RouteTable>> {
        let text = read_config(&at.config)?;
        let region = Region::find(&text, at)?;
        let Some(recorded) = region.table else { return Ok(None) };
        let live = self.live(at).await?;
        Ok(Some(actual_table(&recorded, &live)?))
    }

    async fn stats(&self, at: &HaproxyEndpoint) -> anyhow::Result<StatsSnapshot> {
        let sink = self.sink(at)?;
        let info = self.call(at, "show info").await?;
        let info = parse_info(&info)?;
        let text = read_config(&at.config)?;
        let recorded = Region::find(&text, at)?.table;
        let answer = self.call(at, "show stat").await?;
        let rows = parse_stat(&answer, &at.backend)?;
        let plan = recorded.as_ref().map(plan_servers).transpose()?.unwrap_or_default();
        let latency = sink.snapshot(&at.backend);
        let mut versions: BTreeMap<String, VersionStats> = BTreeMap::new();
        let mut upstreams = Vec::new();
        let (mut served, mut served_5xx) = (0u64, 0u64);
        let mut backend_row = None;
        for row in rows {
            if row.server == "BACKEND" {
                backend_row = Some(row);
                continue;
            }
            let Some(s) = plan.iter().find(|s| s.name == row.server) else { continue };
            served += row.requests;
            served_5xx += row.hrsp_5xx;
            let v = versions.entry(s.version.clone()).or_default();
            v.requests += row.requests;
            v.errors += row.hrsp_5xx + row.econ + row.eresp;
            if let Some(h) = latency.get(&s.name) {
                v.latency_sum_us += h.sum_us;
                v.latency_buckets = merge_buckets(&v.latency_buckets, &h.buckets);
            }
            upstreams.push(UpstreamStats {
                addr: s.addr,
                group: s.group.clone(),
                version: s.version.clone(),
                state: if row.status.starts_with("UP") || row.status == "no check" {
                    BreakerState::Closed
                } else {
                    BreakerState::Open
                },
                trips: row.chkdown,
                consecutive_failures: 0,
            });
        }
        if let Some(b) = backend_row {
            // What the backend answered without any server of ours: HAProxy's own 503s.
            let refused = b.hrsp_5xx.saturating_sub(served_5xx).min(b.requests.saturating_sub(served));
            if refused > 0 {
                let v = versions.entry(ringfence_router::NO_VERSION.to_string()).or_default();
                v.requests += refused;
                v.errors += refused;
            }
        }
        Ok(StatsSnapshot {
            instance_id: format!("haproxy-{}-{}-{}", info.pid, info.started, sink.id),
            generation: recorded.map_or(0, |t| t.generation),
            uptime_ms: info.uptime_secs * 1000,
            versions,
            upstreams,
        })
    }

    async fn assign(&self, at: &HaproxyEndpoint, _user: &str) -> anyhow::Result<Assignment> {
        bail!("HAProxy (backend {}) places users by consistent hashing and cannot say where one user goes", at.backend)
    }
}

/// One server ringfence wants in the backend.
#[derive(Debug, Clone, PartialEq)]
struct PlannedServer {
    name: String,
    addr: SocketAddr,
    weight: u32,
    group: String,
    version: String,
}

/// The servers a table asks for: one per (group, upstream), named after the version and the
/// address so the same replica keeps its name, and its users, from table to table. Weights
/// split each group's share evenly over its upstreams, scaled so the largest is 256.
fn plan_servers(table: &RouteTable) -> anyhow::Result<Vec<PlannedServer>> {
    let per_server = |g: &ringfence_router::Group| g.weight_bp as f64 / g.upstreams.len().max(1) as f64;
    let top = table.groups.iter().filter(|g| !g.upstreams.is_empty()).map(per_server).fold(0.0, f64::max);
    let mut out: Vec<PlannedServer> = Vec::new();
    for g in &table.groups {
        let share = per_server(g);
        let weight = if top <= 0.0 || share <= 0.0 {
            0
        } else {
            ((share / top * MAX_WEIGHT as f64).round() as u32).clamp(1, MAX_WEIGHT)
        };
        for addr in &g.upstreams {
            let name = server_name(&g.version, addr);
            if out.iter().any(|s| s.name == name) {
                bail!("two groups would share HAProxy server name {name} (versions {} and {})", g.version, name);
            }
            out.push(PlannedServer { name, addr: *addr, weight, group: g.name.clone(), version: g.version.clone() });
        }
    }
    Ok(out)
}

/// `rf-<version>-<addr>`: HAProxy names take letters, digits and `-_.:`; a version's `+`
/// becomes `_`.
fn server_name(version: &str, addr: &SocketAddr) -> String {
    let v: String = version.chars().map(|c| if c == '+' { '_' } else { c }).collect();
    format!("{PREFIX}{v}-{addr}")
}

fn has_check(options: &str) -> bool {
    options.split_whitespace().any(|w| w == "check")
}

/// A server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq)]
struct LiveServer {
    addr: String,
    port: u16,
    weight: u32,
    /// In maintenance (forced, inherited or from the configuration): takes no traffic.
    maint: bool,
}

fn parse_servers_state(answer: &str, backend: &str) -> anyhow::Result<BTreeMap<String, LiveServer>> {
    let mut lines = answer.lines();
    let first = lines.next().unwrap_or_default().trim();
    if first != "1" {
        bail!("HAProxy answered `show servers state {backend}` with {:?}", answer.trim());
    }
    let mut out = BTreeMap::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 19 || f[1] != backend {
            continue;
        }
        let num = |i: usize| -> anyhow::Result<u32> {
            f[i].parse().with_context(|| format!("HAProxy server state line {line:?}: field {i} is not a number"))
        };
        let admin = num(6)?;
        // SRV_ADMF_FMAINT | SRV_ADMF_IMAINT | SRV_ADMF_CMAINT | SRV_ADMF_RMAINT
        let maint = admin & (0x01 | 0x02 | 0x04 | 0x20) != 0;
        out.insert(
            f[3].to_string(),
            LiveServer { addr: f[4].to_string(), port: f[18].parse().unwrap_or(0), weight: num(7)?, maint },
        );
    }
    Ok(out)
}

/// What runs, as a table: the recorded one when HAProxy serves exactly its servers and
/// weights, else the recorded groups over the servers HAProxy has enabled, with the shares
/// their weights give (so a change made behind ringfence's back shows as drift).
fn actual_table(recorded: &RouteTable, live: &BTreeMap<String, LiveServer>) -> anyhow::Result<RouteTable> {
    let plan = plan_servers(recorded)?;
    let exact = plan.iter().all(|s| {
        live.get(&s.name).is_some_and(|l| {
            !l.maint && l.weight == s.weight && l.port == s.addr.port() && l.addr == s.addr.ip().to_string()
        })
    }) && live
        .iter()
        .all(|(name, l)| !name.starts_with(PREFIX) || l.maint || l.weight == 0 || plan.iter().any(|s| &s.name == name));
    if exact {
        return Ok(recorded.clone());
    }
    let enabled = |s: &PlannedServer| live.get(&s.name).filter(|l| !l.maint);
    let total: u32 = plan.iter().filter_map(enabled).map(|l| l.weight).sum();
    let mut actual = recorded.clone();
    for g in &mut actual.groups {
        let mine: Vec<&PlannedServer> = plan.iter().filter(|s| s.group == g.name).collect();
        let weight: u32 = mine.iter().filter_map(|s| enabled(s)).map(|l| l.weight).sum();
        g.upstreams = mine.iter().filter(|s| enabled(s).is_some()).map(|s| s.addr).collect();
        g.weight_bp = if total == 0 { 0 } else { (weight as u64 * 10_000 / total as u64) as u32 };
    }
    Ok(actual)
}

/// The managed part of the configuration file: its lines, and the table it records.
struct Region {
    /// Byte range of the lines between the markers.
    inner: std::ops::Range<usize>,
    indent: String,
    table: Option<RouteTable>,
}

impl Region {
    fn find(text: &str, at: &HaproxyEndpoint) -> anyhow::Result<Region> {
        let path = at.config.display();
        let begin = format!("# ringfence:begin {}", at.backend);
        let mut section: Option<(usize, &str)> = None;
        let mut balance_ok = false;
        let mut consistent = false;
        let mut offset = 0;
        let mut start: Option<(usize, usize, String)> = None;
        let mut found: Option<Region> = None;
        // The whole backend is read (its `balance` may come after the markers).
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let lineno = i + 1;
            let trimmed = line.trim();
            let here = offset;
            offset += line.len();
            if !line.starts_with(char::is_whitespace) && !trimmed.is_empty() && !trimmed.starts_with('#') {
                if start.is_some() {
                    bail!("{path} line {lineno}: a new section begins before `# ringfence:end`");
                }
                section = Some((lineno, trimmed));
                continue;
            }
            let in_backend = section.is_some_and(|(_, s)| {
                let mut w = s.split_whitespace();
                w.next() == Some("backend") && w.next() == Some(at.backend.as_str())
            });
            if in_backend {
                let words: Vec<&str> = trimmed.split_whitespace().collect();
                if words.first() == Some(&"balance") {
                    balance_ok =
                        words.get(1).is_some_and(|b| b.eq_ignore_ascii_case(&format!("hdr({})", at.sticky_header)));
                }
                if words.first() == Some(&"hash-type") {
                    consistent = words.get(1) == Some(&"consistent");
                }
            }
            if trimmed == begin {
                if !in_backend {
                    bail!("{path} line {lineno}: `{begin}` must be inside `backend {}`", at.backend);
                }
                let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
                start = Some((lineno, here + line.len(), indent));
            } else if trimmed == "# ringfence:end"
                && let Some((_, from, indent)) = start.take()
            {
                let inner = &text[from..here];
                let table = inner
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("# ringfence-table "))
                    .map(|json| {
                        serde_json::from_str::<RouteTable>(json)
                            .with_context(|| format!("{path}: the `# ringfence-table` line cannot be read"))
                    })
                    .transpose()?;
                found = Some(Region { inner: from..here, indent, table });
            }
        }
        if let Some(region) = found {
            if !balance_ok || !consistent {
                bail!(
                    "{path}: backend {} must balance on the sticky header with consistent hashing, so users stay put while weights change: add `balance hdr({})` and `hash-type consistent`",
                    at.backend,
                    at.sticky_header
                );
            }
            return Ok(region);
        }
        match start {
            Some((line, _, _)) => bail!("{path} line {line}: `{begin}` has no `# ringfence:end` after it"),
            None => bail!(
                "{path}: no `{begin}` line; put it and `# ringfence:end` inside `backend {}`, where ringfence writes the servers",
                at.backend
            ),
        }
    }

    fn replace(&self, text: &str, lines: &[String]) -> String {
        let mut out = String::with_capacity(text.len() + 256);
        out.push_str(&text[..self.inner.start]);
        for l in lines {
            out.push_str(&self.indent);
            out.push_str(l);
            out.push('\n');
        }
        out.push_str(&text[self.inner.end..]);
        out
    }
}

/// The managed lines: a note, the table (without flags, which HAProxy does not serve), and a
/// server line per server with its weight.
fn server_lines(table: &RouteTable, plan: &[PlannedServer], options: &str) -> anyhow::Result<Vec<String>> {
    let mut recorded = table.clone();
    for g in &mut recorded.groups {
        g.flags = None;
    }
    let mut lines = vec![
        format!("# written by ringfence for workload {}; edits between the markers are replaced", table.workload),
        format!("# ringfence-table {}", serde_json::to_string(&recorded)?),
    ];
    for s in plan {
        lines.push(format!("server {} {} weight {} {}", s.name, s.addr, s.weight, options).trim_end().to_string());
    }
    Ok(lines)
}

fn read_config(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read HAProxy configuration {}", path.display()))?;
    if meta.len() > MAX_CONFIG {
        bail!(
            "HAProxy configuration {} is {} bytes; ringfence rewrites files up to {MAX_CONFIG}",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read HAProxy configuration {}", path.display()))
}

/// Replaces the file whole (a temporary file beside it, synced, then renamed), keeping its
/// permissions: HAProxy reloading at any moment reads the old file or the new one.
fn write_config(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ringfence-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::metadata(path)?.permissions())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("cannot rewrite HAProxy configuration {}: {e}", path.display())
    })
}

/// What `show info` says about the process.
struct Info {
    pid: u64,
    started: u64,
    uptime_secs: u64,
}

fn parse_info(answer: &str) -> anyhow::Result<Info> {
    let field = |name: &str| -> Option<u64> {
        answer.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    match (field("Pid"), field("Start_time_sec"), field("Uptime_sec")) {
        (Some(pid), Some(started), Some(uptime_secs)) => Ok(Info { pid, started, uptime_secs }),
        _ => bail!("HAProxy answered `show info` without Pid, Start_time_sec and Uptime_sec: {:?}", answer.trim()),
    }
}

/// One row of `show stat` for the backend.
#[derive(Debug, Default, PartialEq)]
struct StatRow {
    server: String,
    status: String,
    requests: u64,
    hrsp_5xx: u64,
    econ: u64,
    eresp: u64,
    chkdown: u64,
}

fn parse_stat(answer: &str, backend: &str) -> anyhow::Result<Vec<StatRow>> {
    let mut lines = answer.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| anyhow!("HAProxy answered `show stat` without its CSV header: {:?}", answer.trim()))?;
    let cols: Vec<&str> = header.split(',').collect();
    let col =
        |name: &str| cols.iter().position(|c| *c == name).ok_or_else(|| anyhow!("`show stat` has no `{name}` column"));
    let (px, sv, status) = (col("pxname")?, col("svname")?, col("status")?);
    let (req, stot, h5, econ, eresp, chkdown) =
        (col("req_tot")?, col("stot")?, col("hrsp_5xx")?, col("econ")?, col("eresp")?, col("chkdown")?);
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < cols.len() || f[px] != backend || f[sv] == "FRONTEND" {
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        out.push(StatRow {
            server: f[sv].to_string(),
            status: f[status].to_string(),
            // `req_tot` counts HTTP requests; `stot` sessions where an older HAProxy leaves
            // it empty.
            requests: if f[req].is_empty() { n(stot) } else { n(req) },
            hrsp_5xx: n(h5),
            econ: n(econ),
            eresp: n(eresp),
            chkdown: n(chkdown),
        });
    }
    Ok(out)
}

/// Latency of one server, on the router's grid.
#[derive(Debug, Clone, Default, PartialEq)]
struct Hist {
    buckets: Vec<(u64, u64)>,
    sum_us: u64,
}

fn merge_buckets(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut m: BTreeMap<u64, u64> = a.iter().copied().collect();
    for &(k, n) in b {
        *m.entry(k).or_default() += n;
    }
    m.into_iter().collect()
}

/// The request logs HAProxy sends to one Unix datagram socket, as latency per server.
struct LogSink {
    /// Changes with every socket, so counters that started over read as a new instance.
    id: String,
    series: Mutex<HashMap<(String, String), BTreeMap<u64, u64>>>,
    sums: Mutex<HashMap<(String, String), u64>>,
}

impl LogSink {
    fn bind(path: &Path) -> anyhow::Result<Arc<LogSink>> {
        use std::os::unix::fs::PermissionsExt as _;
        // A socket file left by an earlier run would refuse the bind; only a socket is removed.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt as _;
            if !meta.file_type().is_socket() {
                bail!("HAProxy log socket {}: a file that is not a socket is in the way", path.display());
            }
            let _ = std::fs::remove_file(path);
        }
        let socket = tokio::net::UnixDatagram::bind(path)
            .with_context(|| format!("cannot create HAProxy log socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o620))
            .with_context(|| format!("cannot restrict HAProxy log socket {}", path.display()))?;
        let sink = Arc::new(LogSink {
            id: format!("{:016x}", rand::random::<u64>()),
            series: Mutex::default(),
            sums: Mutex::default(),
        });
        let weak = Arc::downgrade(&sink);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let Ok(n) = socket.recv(&mut buf).await else { break };
                let Some(sink) = weak.upgrade() else { break };
                if let Some(sample) = parse_log_line(&String::from_utf8_lossy(&buf[..n])) {
                    sink.record(sample);
                }
            }
        });
        Ok(sink)
    }

    fn record(&self, s: LogSample) {
        let bounds = ringfence_traffic::grid::latency_bounds_us();
        // `%Tr` is whole milliseconds: the middle of the millisecond is the best estimate.
        let us = s.millis * 1000 + 500;
        let bucket = bounds[bounds.partition_point(|&b| b < us).min(bounds.len() - 1)];
        let key = (s.backend, s.server);
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if !series.contains_key(&key) && series.len() >= MAX_SERIES {
            return;
        }
        *series.entry(key.clone()).or_default().entry(bucket).or_default() += 1;
        *self.sums.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default() += us;
    }

    /// Latency per server of `backend`, cumulative since the socket was created.
    fn snapshot(&self, backend: &str) -> HashMap<String, Hist> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let sums = self.sums.lock().unwrap_or_else(PoisonError::into_inner);
        series
            .iter()
            .filter(|((b, _), _)| b == backend)
            .map(|(key, buckets)| {
                let hist = Hist {
                    buckets: buckets.iter().map(|(k, v)| (*k, *v)).collect(),
                    sum_us: sums.get(key).copied().unwrap_or(0),
                };
                (key.1.clone(), hist)
            })
            .collect()
    }
}

#[derive(Debug, PartialEq)]
struct LogSample {
    backend: String,
    server: String,
    millis: u64,
}

/// `... rf1 BACKEND SERVER TR STATUS` at the end of a syslog line. Requests that reached no
/// server, or got no answer (`%Tr` is -1), carry no latency.
fn parse_log_line(line: &str) -> Option<LogSample> {
    let at = line.rfind(&format!(" {LOG_MARK} "))?;
    let mut f = line[at + LOG_MARK.len() + 2..].split_whitespace();
    let (backend, server, tr) = (f.next()?, f.next()?, f.next()?);
    if server.starts_with('<') {
        return None;
    }
    let millis: i64 = tr.parse().ok()?;
    Some(LogSample { backend: backend.into(), server: server.into(), millis: u64::try_from(millis).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringfence_router::Group;

    fn endpoint(dir: &Path) -> HaproxyEndpoint {
        HaproxyEndpoint {
            socket: dir.join("admin.sock"),
            backend: "be".into(),
            config: dir.join("haproxy.cfg"),
            log: dir.join("log.sock"),
            server_options: "check inter 1s".into(),
            sticky_header: "x-user-id".into(),
        }
    }

    fn group(name: &str, version: &str, weight_bp: u32, ports: &[u16]) -> Group {
        Group {
            name: name.into(),
            version: version.into(),
            weight_bp,
            upstreams: ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect(),
            flags: None,
            segment: None,
            shadow_bp: 0,
            fault: None,
        }
    }

    fn table(groups: Vec<Group>) -> RouteTable {
        RouteTable {
            generation: 3,
            workload: "checkout".into(),
            groups,
            ..serde_json::from_str(r#"{"workload":"x"}"#).unwrap()
        }
    }

    #[test]
    fn weights_follow_the_shares_and_the_largest_is_256() {
        let t = table(vec![group("canary", "v2", 1000, &[4003]), group("stable", "v1", 9000, &[4001, 4002])]);
        let plan = plan_servers(&t).unwrap();
        let w: Vec<(String, u32)> = plan.iter().map(|s| (s.name.clone(), s.weight)).collect();
        assert_eq!(
            w,
            [
                ("rf-v2-127.0.0.1:4003".to_string(), 57),
                ("rf-v1-127.0.0.1:4001".to_string(), 256),
                ("rf-v1-127.0.0.1:4002".to_string(), 256)
            ]
        );
        // A tiny share still gets a server weight; none gets zero.
        let t = table(vec![group("canary", "v2+cfg", 10, &[4003]), group("stable", "v1", 9990, &[4001])]);
        let plan = plan_servers(&t).unwrap();
        assert_eq!(plan[0].name, "rf-v2_cfg-127.0.0.1:4003");
        assert_eq!(plan[0].weight, 1);
        let t = table(vec![group("canary", "v2", 0, &[4003]), group("stable", "v1", 10_000, &[4001])]);
        assert_eq!(plan_servers(&t).unwrap()[0].weight, 0);
    }

    const CONFIG: &str = "global\n    stats socket /x level admin\nfrontend fe\n    bind :80\n    default_backend be\nbackend be\n    balance hdr(x-user-id)\n    hash-type consistent\n    # ringfence:begin be\n    server old 1.2.3.4:5 weight 1\n    # ringfence:end\n    # after\nbackend other\n    server o 1.1.1.1:1\n";

    #[test]
    fn the_region_is_rewritten_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let at = endpoint(dir.path());
        let r = Region::find(CONFIG, &at).unwrap();
        assert!(r.table.is_none());
        let t = table(vec![group("canary", "v2", 1000, &[4003]), group("stable", "v1", 9000, &[4001])]);
        let plan = plan_servers(&t).unwrap();
        let out = r.replace(CONFIG, &server_lines(&t, &plan, "check inter 1s").unwrap());
        assert!(out.starts_with("global\n    stats socket /x level admin\n"));
        assert!(out.contains("    server rf-v2-127.0.0.1:4003 127.0.0.1:4003 weight 28 check inter 1s\n"), "{out}");
        assert!(!out.contains("server old"));
        assert!(out.ends_with("    # ringfence:end\n    # after\nbackend other\n    server o 1.1.1.1:1\n"));
        // Read back: the table it records is the one written.
        let again = Region::find(&out, &at).unwrap();
        assert_eq!(again.table.as_ref().map(|x| &x.groups), Some(&t.groups));
    }

    #[test]
    fn a_backend_it_cannot_keep_is_refused_with_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let at = endpoint(dir.path());
        let e = Region::find("backend be\n    balance roundrobin\n", &at).err().unwrap().to_string();
        assert!(e.contains("no `# ringfence:begin be` line"), "{e}");
        let e = Region::find(&CONFIG.replace("hash-type consistent", "hash-type map-based"), &at)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("hash-type consistent"), "{e}");
        // Where the backend's `balance` and `hash-type` stand does not matter.
        let after = CONFIG
            .replace("    balance hdr(x-user-id)\n    hash-type consistent\n", "")
            .replace("    # after\n", "    # after\n    balance hdr(x-user-id)\n    hash-type consistent\n");
        assert!(Region::find(&after, &at).is_ok(), "{after}");
        let e = Region::find(&CONFIG.replace("    # ringfence:end\n", ""), &at).err().unwrap().to_string();
        assert!(e.contains("line 12: a new section begins"), "{e}");
        let e =
            Region::find("backend x\n    # ringfence:begin be\n    # ringfence:end\n", &at).err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("must be inside `backend be`"), "{e}");
    }

    #[test]
    fn runtime_answers_are_read() {
        let state = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 be 1 rf-v1-127.0.0.1:4001 127.0.0.1 2 0 200 200 1 6 3 4 6 0 0 0 - 4001 - 0 0 - - 0\n3 be 2 rf-v2-127.0.0.1:4003 127.0.0.1 0 1 0 20 1 6 3 4 6 0 0 0 - 4003 - 0 0 - - 0\n\n";
        let live = parse_servers_state(state, "be").unwrap();
        assert_eq!(
            live["rf-v1-127.0.0.1:4001"],
            LiveServer { addr: "127.0.0.1".into(), port: 4001, weight: 200, maint: false }
        );
        assert!(live["rf-v2-127.0.0.1:4003"].maint);
        assert!(parse_servers_state("Can't find backend.\n", "be").is_err());

        let stat = "# pxname,svname,stot,econ,eresp,status,chkdown,hrsp_5xx,req_tot,\nfe,FRONTEND,10,,,OPEN,,0,10,\nbe,rf-v1-127.0.0.1:4001,9,0,1,UP,0,2,9,\nbe,BACKEND,12,0,1,UP,0,5,12,\n";
        let rows = parse_stat(stat, "be").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].requests, 9);
        assert_eq!((rows[0].hrsp_5xx, rows[0].eresp), (2, 1));
        let info = parse_info("Name: HAProxy\nPid: 42\nUptime_sec: 7\nStart_time_sec: 1700000000\n").unwrap();
        assert_eq!((info.pid, info.started, info.uptime_secs), (42, 1_700_000_000, 7));
    }

    #[test]
    fn drift_shows_as_the_shares_haproxy_serves() {
        let t = table(vec![group("canary", "v2", 1000, &[4003]), group("stable", "v1", 9000, &[4001])]);
        let live = |w2: u32, w1: u32| {
            BTreeMap::from([
                (
                    "rf-v2-127.0.0.1:4003".to_string(),
                    LiveServer { addr: "127.0.0.1".into(), port: 4003, weight: w2, maint: false },
                ),
                (
                    "rf-v1-127.0.0.1:4001".to_string(),
                    LiveServer { addr: "127.0.0.1".into(), port: 4001, weight: w1, maint: false },
                ),
            ])
        };
        assert_eq!(actual_table(&t, &live(28, 256)).unwrap(), t);
        let drifted = actual_table(&t, &live(256, 256)).unwrap();
        assert_eq!(drifted.groups[0].weight_bp, 5000);
        assert_eq!(drifted.generation, t.generation);
        assert_ne!(drifted, t);
    }

    #[test]
    fn log_lines_give_latency_per_server() {
        let l = "<134>Nov 30 17:39:28 haproxy[30022]: 127.0.0.1:5 [30/Nov] rf1 be rf-v1-127.0.0.1:4001 12 200\n";
        assert_eq!(
            parse_log_line(l),
            Some(LogSample { backend: "be".into(), server: "rf-v1-127.0.0.1:4001".into(), millis: 12 })
        );
        assert_eq!(parse_log_line("<134>... rf1 be <NOSRV> -1 503"), None);
        assert_eq!(parse_log_line("<134>... rf1 be s -1 502"), None);
        assert_eq!(parse_log_line("no mark here"), None);
    }
}
