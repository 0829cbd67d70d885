//! Failover: three replicas on one PostgreSQL event log (a cluster the bench starts in a
//! temporary directory), a rollout in progress. The replica leading the workload is SIGKILLed,
//! again and again; each time, the time from the kill until another replica holds the
//! workload's lease, which is when it starts the workload's controller. The killed replica then
//! comes back as a follower. At the end the rollout is promoted and must complete, and the log
//! must be numbered without a gap. Bar: every failover under 5 s.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ringfence_store::EventStore;
use ringfence_store::postgres::PgStore;
use serde_json::json;

use crate::server::Server;
use crate::{Output, stats, workload};

const BAR: Duration = Duration::from_secs(5);
const WORKLOAD: &str = "failover";

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// How many times the leader is killed.
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

impl FailoverArgs {
    pub fn validate(&self) -> Result<()> {
        if !(1..=200).contains(&self.kills) {
            bail!("--kills: expected 1 to 200, found {}", self.kills);
        }
        Ok(())
    }
}

pub struct Report {
    kills: u32,
    /// Milliseconds from each SIGKILL to another replica holding the lease.
    failovers_ms: Vec<f64>,
    /// Who took over each time.
    takers: Vec<String>,
    events: u64,
    completed: bool,
}

/// The workload, its canary phase baking `bake` (the first deployment bakes as long).
fn spec(bake: &str) -> String {
    workload::sample_spec(WORKLOAD, 1, &[("canary", 10, bake), ("all", 100, "1s")], "[rollout]\nmax_hold = \"2h\"")
}

fn leader(store: &mut PgStore) -> Result<Option<String>> {
    Ok(store.leases()?.into_iter().find(|l| l.workload == WORKLOAD).map(|l| l.holder))
}

pub fn run(args: &FailoverArgs, ringfence: &Path) -> Result<Report> {
    let pg = crate::pgcluster::PgCluster::start()
        .ok_or_else(|| anyhow!("PostgreSQL is not installed: apt-get install postgresql"))?;
    let url = pg.fresh_db();
    let data = tempfile::Builder::new().prefix("ringfence-bench-failover-").tempdir().context("a data directory")?;
    let extra = ["--store", url.as_str()];
    let ids = ["r0", "r1", "r2"];
    let mut servers = Replicas(Vec::new());
    for id in ids {
        servers.0.push(Server::start_replica(ringfence, data.path(), id, &extra)?);
        eprintln!("bench: replica {id} on {}", servers.0.last().map(|s| s.base.as_str()).unwrap_or_default());
        if id == "r0" {
            // The first replica creates the workload and so leads it; the others follow.
            let api = servers.0[0].api()?;
            crate::block_on(
                async {
                    workload::apply_spec(&api, WORKLOAD, &spec("1s")).await?;
                    for v in ["v1", "v2"] {
                        workload::create_release(&api, WORKLOAD, v, &json!({}), "failover bench").await?;
                    }
                    let id = workload::deploy(&api, WORKLOAD, "v1").await?;
                    let status = workload::wait_rollout(&api, WORKLOAD, &id, Duration::from_secs(120)).await?;
                    if status != "completed" {
                        bail!("the first deployment ended {status}");
                    }
                    // The rollout the kills land in bakes for an hour (promoted at the end).
                    workload::apply_spec(&api, WORKLOAD, &spec("1h")).await?;
                    workload::deploy(&api, WORKLOAD, "v2").await?;
                    Ok(())
                },
                "the replicas were stopped",
            )?;
        }
    }
    let mut store = PgStore::open(&url, None)?;
    let mut failovers_ms = Vec::new();
    let mut takers = Vec::new();
    for n in 0..args.kills {
        let holder = leader(&mut store)?.ok_or_else(|| anyhow!("nobody leads {WORKLOAD}"))?;
        let i = ids.iter().position(|id| *id == holder).ok_or_else(|| anyhow!("an unknown replica {holder} leads"))?;
        servers.0[i].kill9();
        let killed = Instant::now();
        let taker = loop {
            if let Some(h) = leader(&mut store)?.filter(|h| *h != holder) {
                break h;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("kill {}: no replica took {WORKLOAD} over within 30 s", n + 1);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        eprintln!("bench: kill {:>2}: {holder} killed, {taker} leads after {:.0} ms", n + 1, ms);
        failovers_ms.push(ms);
        takers.push(taker);
        // The killed replica comes back as a follower; the next kill is of whoever leads.
        servers.0[i] = Server::start_replica(ringfence, data.path(), &holder, &extra)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    // The rollout carried through every failover: promoted, it completes.
    let holder = leader(&mut store)?.unwrap_or_default();
    let i = ids.iter().position(|id| *id == holder).unwrap_or(0);
    let api = servers.0[i].api()?;
    let completed = crate::block_on(
        async {
            let s = workload::status(&api, WORKLOAD).await?;
            let id = s["rollout"]["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no rollout: {s}"))?;
            // Promoted by someone other than who started it (separation of duties).
            // No traffic flows, so each phase is promoted past (a person's call, recorded).
            let approver = crate::trust::approver_client(&api).await?;
            workload::command(&approver, WORKLOAD, "promote", "failover bench").await?;
            let asked = Instant::now();
            while workload::rollout(&api, WORKLOAD, &id).await?["phase"].as_u64() != Some(1) {
                if asked.elapsed() > Duration::from_secs(60) {
                    bail!("the promoted rollout did not reach its last phase within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            workload::command(&approver, WORKLOAD, "promote", "failover bench").await?;
            Ok(workload::wait_rollout(&api, WORKLOAD, &id, Duration::from_secs(120)).await? == "completed")
        },
        "the replicas were stopped",
    )?;
    let all = store.read(None, 0, usize::MAX)?;
    let gapless = all.iter().enumerate().all(|(k, e)| e.seq == k as u64 + 1);
    if !gapless {
        bail!("the event log has a gap or a duplicate");
    }
    drop(servers);
    Ok(Report { kills: args.kills, failovers_ms, takers, events: all.len() as u64, completed })
}

/// The replicas, stopped however the bench ends; they leave the workload running for each
/// other, so the last one out stops its processes.
struct Replicas(Vec<Server>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for s in &mut self.0 {
            s.stop();
        }
        if let Some(last) = self.0.last_mut() {
            last.stop_processes();
        }
    }
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.completed
            && self.failovers_ms.len() == self.kills as usize
            && self.failovers_ms.iter().all(|ms| *ms < BAR.as_secs_f64() * 1000.0)
    }

    fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "ringfence-bench failover: SIGKILL of the leading replica to another one leading, {} kills",
            self.kills
        );
        let _ = writeln!(
            o,
            "  setup   3 replicas on one PostgreSQL, a rollout baking; lease {} s, renewed every {} ms",
            ringfence::state::LEASE_TTL.as_secs(),
            ringfence::state::LEASE_RENEW.as_millis()
        );
        let _ = writeln!(o);
        match stats::summarize(&self.failovers_ms) {
            Some(s) => {
                let _ = writeln!(
                    o,
                    "failover   median {:.2} s   p90 {:.2} s   min {:.2} s   max {:.2} s   (bar: every one under {} s)",
                    s.median / 1000.0,
                    s.p90 / 1000.0,
                    s.min / 1000.0,
                    s.max / 1000.0,
                    BAR.as_secs()
                );
            }
            None => {
                let _ = writeln!(o, "failover   no measurement");
            }
        }
        let mut by: std::collections::BTreeMap<&str, u32> = Default::default();
        for t in &self.takers {
            *by.entry(t).or_default() += 1;
        }
        let _ =
            writeln!(o, "taken over by {}", by.iter().map(|(k, v)| format!("{k} {v}x")).collect::<Vec<_>>().join(", "));
        let _ = writeln!(
            o,
            "the rollout completed after the kills: {}; event log: {} events, numbered without a gap",
            if self.completed { "yes" } else { "NO" },
            self.events
        );
        let _ = writeln!(o, "{}", if self.passed() { "PASS" } else { "MISSED" });
        o
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "kills": self.kills,
            "failovers_ms": self.failovers_ms,
            "takers": self.takers,
            "events": self.events,
            "completed": self.completed,
            "bar_ms": BAR.as_millis() as u64,
            "passed": self.passed(),
        })
    }
}
