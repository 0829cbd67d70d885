//! The hub's pages with a long history: a workload with 10,000 past rollouts in its log, and
//! the time and bytes of the overview, the workload page (its history paged), a rollout page
//! and, beside them, the API's status of the same workload, each fetched again and again
//! through the real server over loopback. Bar: p95 under 50 ms for the overview and the
//! rollout page.
//!
//! The history is made from a real one: a server runs two real rollouts; the second one's
//! events (intents, replicas, phases, verdicts, traffic samples) are copied into a fresh log
//! 10,000 times under new rollout ids, and a server starts on that log (its start, which folds
//! every event, is timed too).

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ringfence_core::{EventKind, NewEvent};
use ringfence_store::Store;
use serde_json::json;

use crate::server::Server;
use crate::{Output, stats, workload};

const BAR_MS: f64 = 50.0;
const WORKLOAD: &str = "history";

#[derive(Args, Debug)]
pub struct UiArgs {
    /// Past rollouts in the log.
    #[arg(long, default_value_t = 10_000)]
    pub rollouts: u32,
    /// Fetches of each page.
    #[arg(long, default_value_t = 200)]
    pub requests: u32,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

impl UiArgs {
    pub fn validate(&self) -> Result<()> {
        if !(1..=100_000).contains(&self.rollouts) {
            bail!("--rollouts: expected 1 to 100000, found {}", self.rollouts);
        }
        if !(10..=10_000).contains(&self.requests) {
            bail!("--requests: expected 10 to 10000, found {}", self.requests);
        }
        Ok(())
    }
}

struct PageResult {
    name: &'static str,
    path: String,
    ms: Vec<f64>,
    bytes: usize,
    gated: bool,
}

pub struct Report {
    rollouts: u32,
    events: u64,
    start_s: f64,
    pages: Vec<PageResult>,
}

/// The history's workload. It keeps every rollout in memory (`[history]`), so the pages and
/// the controller's work are measured with the whole history held, the worst case.
pub(crate) fn spec() -> String {
    workload::sample_spec(
        WORKLOAD,
        1,
        &[("canary", 20, "2s"), ("all", 100, "1s")],
        "[health.analysis]\npower = 0\n\n[history]\nrollouts = 100000",
    )
}

/// A real history to copy: the log of a server that ran two real rollouts (the second under
/// users' traffic), and that second rollout's events, to be copied under new ids.
pub(crate) struct RealHistory {
    pub(crate) real: Vec<ringfence_core::Event>,
    /// The copied rollout's events as JSON, its id being `copy_of`.
    template: Vec<String>,
    copy_of: String,
    /// The first server's admin token.
    token: String,
}

impl RealHistory {
    /// Runs the two real rollouts on a server of `ringfence`'s own, stopped afterwards.
    pub(crate) fn record(ringfence: &Path) -> Result<RealHistory> {
        eprintln!("bench: two real rollouts");
        let mut first = Server::start(ringfence, None, false)?;
        let api = first.api()?;
        crate::block_on(
            async {
                workload::apply_spec(&api, WORKLOAD, &spec()).await?;
                for v in ["v1", "v2"] {
                    workload::create_release(&api, WORKLOAD, v, &json!({}), "ui bench").await?;
                }
                let id = workload::deploy(&api, WORKLOAD, "v1").await?;
                let status = workload::wait_rollout(&api, WORKLOAD, &id, Duration::from_secs(120)).await?;
                if status != "completed" {
                    bail!("the first deployment ended {status}");
                }
                // The copied rollout has users' traffic, so its page has signals to draw.
                let router = workload::router_address(&api, WORKLOAD).await?;
                let load = workload::Load::start(ringfence::loadgen::LoadConfig::steady(router, 50.0, 100), None)?;
                let id = workload::deploy(&api, WORKLOAD, "v2").await?;
                let status = workload::wait_rollout(&api, WORKLOAD, &id, Duration::from_secs(120)).await?;
                load.stop().await;
                if status != "completed" {
                    bail!("the real rollout of v2 ended {status}");
                }
                Ok(())
            },
            "the server was stopped",
        )?;
        let _ = first.stop_and_tell("bench");
        let real = Store::open(&first.data_dir().join(ringfence_store::LOG_FILE))?.load_all()?;
        let token = std::fs::read_to_string(ringfence::server::admin_token_path(first.data_dir()))
            .context("the first server's admin token")?;
        drop(first);

        let copy_of = format!("{WORKLOAD}-2");
        let start = real
            .iter()
            .position(|e| matches!(&e.kind, EventKind::RolloutStarted { rollout_id, .. } if *rollout_id == copy_of))
            .ok_or_else(|| anyhow!("no rollout {copy_of} in the real history"))?;
        let end = real
            .iter()
            .rposition(|e| e.kind.rollout_id() == Some(copy_of.as_str()))
            .ok_or_else(|| anyhow!("no event of {copy_of}"))?;
        let template = real[start..=end]
            .iter()
            .map(|e| serde_json::to_string(&unnumbered(e)).expect("an event serializes"))
            .collect();
        Ok(RealHistory { real, template, copy_of, token })
    }

    /// The real log's events, not numbered.
    pub(crate) fn history(&self) -> Vec<NewEvent> {
        self.real.iter().map(unnumbered).collect()
    }

    /// The copied rollout's events under the id of past rollout `i` (from 3 on, after the
    /// two real ones).
    pub(crate) fn copy(&self, i: u32) -> Result<Vec<NewEvent>> {
        let id = format!("\"{WORKLOAD}-{}\"", i + 3);
        let from = format!("\"{}\"", self.copy_of);
        self.template
            .iter()
            .map(|t| serde_json::from_str::<NewEvent>(&t.replace(&from, &id)).context("a copied event"))
            .collect()
    }

    /// Events per copied rollout.
    pub(crate) fn events_per_rollout(&self) -> usize {
        self.template.len()
    }
}

fn unnumbered(e: &ringfence_core::Event) -> NewEvent {
    NewEvent {
        at: e.at,
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        workload: e.workload.clone(),
        kind: e.kind.clone(),
    }
}

pub fn run(args: &UiArgs, ringfence: &Path) -> Result<Report> {
    // 1. Two real rollouts, for a real history to copy.
    let real = RealHistory::record(ringfence)?;
    let token = real.token.clone();

    // 2. A fresh log: the real history, then the second rollout again and again.
    let dir = tempfile::Builder::new().prefix("ringfence-bench-ui-").tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
    }
    eprintln!("bench: writing {} past rollouts ({} events each)", args.rollouts, real.events_per_rollout());
    let mut store = Store::open(&data.join(ringfence_store::LOG_FILE))?;
    store.append_now(real.history())?;
    let mut batch = Vec::new();
    for i in 0..args.rollouts {
        batch.extend(real.copy(i)?);
        if batch.len() >= 5_000 {
            store.append_now(std::mem::take(&mut batch))?;
        }
    }
    store.append_now(batch)?;
    let events = store.last_seq();
    drop(store);
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(ringfence::server::admin_token_path(&data))?;
        f.write_all(token.as_bytes())?;
    }

    // 3. A server on that log; then each page, fetched again and again.
    let token = token.trim().to_string();
    let started = Instant::now();
    let mut server = Server::start_in(ringfence, &data)?;
    // Started: when it answers the workload's status (it has folded the whole log by then).
    let status_url = format!("{}/v1/workloads/{WORKLOAD}", server.base);
    let bearer = format!("Bearer {token}");
    crate::block_on(
        async {
            let http = ringfence::http::HttpClient::new();
            loop {
                let r = http
                    .request(
                        hyper::Method::GET,
                        &status_url,
                        &[("authorization", &bearer)],
                        None,
                        Duration::from_secs(30),
                    )
                    .await;
                if r.is_ok_and(|r| r.status.is_success()) {
                    return Ok(());
                }
                if started.elapsed() > Duration::from_secs(120) {
                    bail!("the server did not answer within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
        "the server was stopped",
    )?;
    let start_s = started.elapsed().as_secs_f64();
    eprintln!("bench: the server answered on {events} events {start_s:.2} s after it was started");
    let middle = format!("{WORKLOAD}-{}", args.rollouts / 2 + 3);
    let mut pages = vec![
        PageResult { name: "overview", path: "/ui".into(), ms: vec![], bytes: 0, gated: true },
        PageResult {
            name: "rollout page",
            path: format!("/ui/w/{WORKLOAD}/r/{middle}"),
            ms: vec![],
            bytes: 0,
            gated: true,
        },
        PageResult { name: "workload page", path: format!("/ui/w/{WORKLOAD}"), ms: vec![], bytes: 0, gated: false },
        PageResult {
            name: "API status (JSON)",
            path: format!("/v1/workloads/{WORKLOAD}"),
            ms: vec![],
            bytes: 0,
            gated: false,
        },
    ];
    let base = server.base.clone();
    let outcome = crate::block_on(
        async {
            let http = ringfence::http::HttpClient::new();
            let cookie = format!("rf_ui={token}");
            let bearer = format!("Bearer {token}");
            for round in 0..args.requests {
                // Interleaved, so a slow moment of the machine falls on every page alike.
                for p in &mut pages {
                    let url = format!("{base}{}", p.path);
                    let headers: [(&str, &str); 1] =
                        if p.path.starts_with("/ui") { [("cookie", &cookie)] } else { [("authorization", &bearer)] };
                    let sent = Instant::now();
                    let r = http.request(hyper::Method::GET, &url, &headers, None, Duration::from_secs(30)).await?;
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    if !r.status.is_success() {
                        bail!("GET {}: {}", p.path, r.status);
                    }
                    if round > 0 {
                        p.ms.push(ms);
                    }
                    p.bytes = r.body.len();
                }
            }
            Ok(())
        },
        "the server was stopped",
    );
    let _ = server.stop_and_tell("bench");
    server.stop_processes();
    outcome?;
    Ok(Report { rollouts: args.rollouts, events, start_s, pages })
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.pages.iter().filter(|p| p.gated).all(|p| stats::summarize(&p.ms).is_some_and(|s| s.p95 < BAR_MS))
    }

    fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench ui: the hub's pages with {} past rollouts in the log", self.rollouts);
        let _ = writeln!(
            o,
            "  setup   one workload, {} events in its log (copies of a real rollout's); the server answered {:.2} s after its start",
            self.events, self.start_s
        );
        let _ = writeln!(
            o,
            "          each page fetched {} times over loopback, interleaved (time to the whole answer)",
            self.pages.first().map_or(0, |p| p.ms.len() + 1)
        );
        let _ = writeln!(o);
        let _ = writeln!(o, "  page                  p50 ms    p95 ms    max ms      bytes  path");
        for p in &self.pages {
            let s = stats::summarize(&p.ms);
            let (p50, p95, max) = s.map_or((0.0, 0.0, 0.0), |s| (s.median, s.p95, s.max));
            let _ = writeln!(o, "  {:<20} {p50:>7.2} {p95:>9.2} {max:>9.2} {:>10}  {}", p.name, p.bytes, p.path);
        }
        let _ = writeln!(o);
        for p in self.pages.iter().filter(|p| p.gated) {
            let p95 = stats::summarize(&p.ms).map_or(f64::NAN, |s| s.p95);
            let _ = writeln!(
                o,
                "  {}  {} p95 under {BAR_MS} ms: {p95:.2} ms",
                if p95 < BAR_MS { "met    " } else { "NOT MET" },
                p.name
            );
        }
        o
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "rollouts": self.rollouts,
            "events": self.events,
            "start_s": self.start_s,
            "pages": self.pages.iter().map(|p| {
                let s = stats::summarize(&p.ms);
                json!({"name": p.name, "path": p.path, "bytes": p.bytes, "p50_ms": s.as_ref().map(|s| s.median), "p95_ms": s.as_ref().map(|s| s.p95), "max_ms": s.as_ref().map(|s| s.max), "bar": p.gated})
            }).collect::<Vec<_>>(),
        })
    }
}
