//! How far one event log carries: appends per second on the embedded SQLite log and on a
//! PostgreSQL cluster the bench starts (one writer, and three replicas appending fenced
//! batches at once, as replicas' controllers do), side by side in alternating rounds; and
//! the events one real rollout appends per second, measured through a real server, router
//! and load. Their quotient is how many rollouts in progress one log keeps up with.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ringfence_core::health::SignalSample;
use ringfence_core::{EventKind, NewEvent, Timestamp};
use ringfence_store::postgres::PgStore;
use ringfence_store::{EventStore, Fence, Store, StoreError};
use serde_json::json;

use crate::pgcluster::PgCluster;
use crate::server::Server;
use crate::{Output, stats, workload};

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Rounds of each measurement, alternated between the logs.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds each measurement appends for.
    #[arg(long, default_value_t = 4)]
    pub seconds: u64,
    /// Skip the real rollout (its event rate is then not measured).
    #[arg(long)]
    pub no_rollout: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

impl StoreArgs {
    pub fn validate(&self) -> Result<()> {
        if !(1..=20).contains(&self.rounds) {
            bail!("--rounds: expected 1 to 20, found {}", self.rounds);
        }
        if !(1..=60).contains(&self.seconds) {
            bail!("--seconds: expected 1 to 60, found {}", self.seconds);
        }
        Ok(())
    }
}

/// One appender's batch: what a controller appends most, a batch of traffic samples of both
/// versions (about 400 bytes of JSON).
fn batch(workload: &str, n: u64) -> Vec<NewEvent> {
    let sample = |version: &str| SignalSample {
        at: Timestamp(1_700_000_000_000 + n as i64),
        version: version.into(),
        span_ms: 1000,
        requests: 100 + n % 7,
        errors: n % 3,
        p50_us: Some(900),
        p99_us: Some(4100),
        users: Some(80),
    };
    vec![NewEvent {
        at: Timestamp(1_700_000_000_000 + n as i64),
        actor: "controller".into(),
        reason: "traffic samples".into(),
        workload: workload.into(),
        kind: EventKind::SignalsRecorded { rollout_id: "r-1".into(), samples: vec![sample("v2"), sample("v1")] },
    }]
}

/// Appends for `d`, catching up after each conflict as a replica does; returns (appended,
/// conflicts).
fn appender(mut store: Box<dyn EventStore>, fence: Option<Fence>, workload: &str, d: Duration) -> Result<(u64, u64)> {
    let mut last = store.last_seq();
    let (mut appended, mut conflicts) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < d {
        let events = batch(workload, appended);
        let result = match &fence {
            Some(f) => store.append_fenced(f, last, events),
            None => store.append(last, events),
        };
        match result {
            Ok(e) => {
                last = e.last().map_or(last, |e| e.seq);
                appended += e.len() as u64;
            }
            Err(StoreError::Conflict { .. }) => {
                conflicts += 1;
                if let Some(e) = store.read(None, last, 100_000)?.last() {
                    last = e.seq;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((appended, conflicts))
}

/// Events per second over `d` with `writers` appenders (PostgreSQL only above one).
fn measure(kind: Log, pg: Option<&PgCluster>, writers: usize, d: Duration) -> Result<(f64, u64)> {
    let dir = tempfile::Builder::new().prefix("ringfence-bench-store-").tempdir()?;
    let url = pg.map(PgCluster::fresh_db);
    let mut handles = Vec::new();
    for i in 0..writers {
        let w = format!("w{i}");
        let (store, fence): (Box<dyn EventStore>, Option<Fence>) = match kind {
            Log::Sqlite => (Box::new(Store::open(&dir.path().join("events.db"))?), None),
            Log::Postgres => {
                let url = url.as_deref().ok_or_else(|| anyhow!("no PostgreSQL"))?;
                let mut store = PgStore::open(url, None)?;
                let lease = store
                    .acquire(&w, &format!("r{i}"), Duration::from_secs(600))?
                    .ok_or_else(|| anyhow!("no lease for {w}"))?;
                (Box::new(store), Some(Fence { workload: w.clone(), token: lease.token }))
            }
        };
        handles.push(std::thread::spawn(move || appender(store, fence, &w, d)));
    }
    let started = Instant::now();
    let mut total = 0;
    let mut conflicts = 0;
    for h in handles {
        let (a, c) = h.join().map_err(|_| anyhow!("an appender panicked"))??;
        total += a;
        conflicts += c;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64().max(d.as_secs_f64()), conflicts))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Log {
    Sqlite,
    Postgres,
}

pub struct Report {
    rounds: u32,
    seconds: u64,
    sqlite: Vec<f64>,
    pg_one: Vec<f64>,
    pg_three: Vec<f64>,
    pg_conflicts: u64,
    /// Events per second one rollout appended, and over how long.
    rollout: Option<(f64, f64, u64)>,
}

pub fn run(args: &StoreArgs, ringfence: &Path) -> Result<Report> {
    let pg = PgCluster::start().ok_or_else(|| anyhow!("PostgreSQL is not installed: apt-get install postgresql"))?;
    let d = Duration::from_secs(args.seconds);
    let (mut sqlite, mut pg_one, mut pg_three, mut pg_conflicts) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for round in 1..=args.rounds {
        eprintln!("bench: round {round}/{}: SQLite, PostgreSQL with one writer, with three", args.rounds);
        sqlite.push(measure(Log::Sqlite, None, 1, d)?.0);
        pg_one.push(measure(Log::Postgres, Some(&pg), 1, d)?.0);
        let (rate, conflicts) = measure(Log::Postgres, Some(&pg), 3, d)?;
        pg_three.push(rate);
        pg_conflicts += conflicts;
    }
    let rollout = if args.no_rollout { None } else { Some(rollout_rate(ringfence)?) };
    Ok(Report { rounds: args.rounds, seconds: args.seconds, sqlite, pg_one, pg_three, pg_conflicts, rollout })
}

const WORKLOAD: &str = "storebench";

/// One real rollout (three phases of 10 s, 100 requests/s through the router): its events per
/// second from its start to its completion.
fn rollout_rate(ringfence: &Path) -> Result<(f64, f64, u64)> {
    eprintln!("bench: a real rollout, for the events it appends per second");
    let mut server = Server::start(ringfence, None, false)?;
    let spec = workload::sample_spec(
        WORKLOAD,
        2,
        &[("canary", 10, "10s"), ("half", 50, "10s"), ("all", 100, "10s")],
        "[health.analysis]\npower = 0",
    );
    let api = server.api()?;
    let out = crate::block_on(
        async {
            workload::apply_spec(&api, WORKLOAD, &spec).await?;
            for v in ["v1", "v2"] {
                workload::create_release(&api, WORKLOAD, v, &json!({}), "store bench").await?;
            }
            let id = workload::deploy(&api, WORKLOAD, "v1").await?;
            workload::wait_rollout(&api, WORKLOAD, &id, Duration::from_secs(120)).await?;
            let router = workload::router_address(&api, WORKLOAD).await?;
            let load = workload::Load::start(ringfence::loadgen::LoadConfig::steady(router, 100.0, 500), None)?;
            let before = workload::workload_events(&api, WORKLOAD).await?.len() as u64;
            let started = Instant::now();
            let id = workload::deploy(&api, WORKLOAD, "v2").await?;
            let status = workload::wait_rollout(&api, WORKLOAD, &id, Duration::from_secs(300)).await?;
            let secs = started.elapsed().as_secs_f64();
            let after = workload::workload_events(&api, WORKLOAD).await?.len() as u64;
            load.stop().await;
            if status != "completed" {
                bail!("the measured rollout ended {status}");
            }
            let events = after - before;
            Ok((events as f64 / secs, secs, events))
        },
        "the server was stopped",
    )
    .context("the real rollout");
    let _ = server.stop_and_tell("bench");
    out
}

impl crate::Report for Report {
    /// No bar: a measurement for the topology document.
    fn passed(&self) -> bool {
        !self.sqlite.is_empty() && !self.pg_three.is_empty()
    }

    fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench store: appends per second, the embedded SQLite log next to PostgreSQL");
        let _ = writeln!(
            o,
            "  setup   {} rounds of {} s each, alternated; one event per append (a batch of two traffic samples,",
            self.rounds, self.seconds
        );
        let _ = writeln!(
            o,
            "          ~400 bytes), each append one durable transaction; PostgreSQL: a cluster in a temporary"
        );
        let _ = writeln!(o, "          directory on this machine, default settings (synchronous_commit on)");
        let _ = writeln!(o);
        let _ = writeln!(o, "  log                                    appends/s median        min        max");
        let med = |v: &[f64]| stats::summarize(v).map_or((0.0, 0.0, 0.0), |s| (s.median, s.min, s.max));
        for (name, v) in [
            ("SQLite, one server", &self.sqlite),
            ("PostgreSQL, one writer", &self.pg_one),
            ("PostgreSQL, three replicas (fenced)", &self.pg_three),
        ] {
            let (m, lo, hi) = med(v);
            let _ = writeln!(o, "  {name:<38} {m:>16.0} {lo:>10.0} {hi:>10.0}");
        }
        let (sq, one, three) = (med(&self.sqlite).0, med(&self.pg_one).0, med(&self.pg_three).0);
        let _ = writeln!(
            o,
            "  PostgreSQL / SQLite: {:.2} (one writer), {:.2} (three replicas; {} appends raced another and were decided again)",
            one / sq.max(1e-9),
            three / sq.max(1e-9),
            self.pg_conflicts
        );
        let _ = writeln!(o);
        match self.rollout {
            Some((rate, secs, events)) => {
                let _ = writeln!(
                    o,
                    "one rollout (3 phases of 10 s, 2 replicas, 100 req/s): {events} events in {secs:.1} s = {rate:.2} events/s"
                );
                let _ = writeln!(
                    o,
                    "rollouts in progress one log keeps up with, appends alone, at full use: SQLite {:.0}, PostgreSQL with three replicas {:.0}",
                    sq / rate.max(1e-9),
                    three / rate.max(1e-9)
                );
            }
            None => {
                let _ = writeln!(o, "one rollout: not measured (--no-rollout)");
            }
        }
        o
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "rounds": self.rounds,
            "seconds": self.seconds,
            "appends_per_s": {"sqlite": self.sqlite, "postgres_one_writer": self.pg_one, "postgres_three_replicas": self.pg_three},
            "postgres_conflicts": self.pg_conflicts,
            "rollout": self.rollout.map(|(rate, secs, events)| json!({"events_per_s": rate, "seconds": secs, "events": events})),
        })
    }
}
