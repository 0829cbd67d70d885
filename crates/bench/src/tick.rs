//! What a controller tick costs as a workload's history grows: the projections of a real
//! history (a real rollout's events copied under new ids, as in the `ui` benchmark) are folded
//! up to 10, 100, 1,000 and 10,000 past rollouts, and at each size, side by side:
//!
//! - the snapshot a tick takes today (an `Arc` clone of the copy-on-write workload), and a
//!   full copy of the workload's state, which every tick made before (with the rollouts not
//!   yet shared, that copy took 54 ms at 10,000 past rollouts: commit "bench: tick results");
//! - folding one event, with no snapshot held and with one held (a tick in flight: the fold
//!   then copies the workload once).
//!
//! - the checks a tick makes besides the rollout's step, each a pure function of the
//!   workload's state (`tick_checks`): a bypass degraded too long, a regression in the watch
//!   window, governance's due checks and owed gates, incidents' confirmations, updates,
//!   deliveries and reminders, follow-ups to send, drills due.
//!
//! Bars: the tick's snapshot, and its checks, at the largest history cost at most twice what
//! they cost at 10 past rollouts (work per tick independent of the history's size). The copied
//! rollout is a healthy one; every third past rollout is then given the incident a failed one
//! leaves (halted, its updates sent to a stakeholder channel on every change, mitigated,
//! resolved: the events the controller folds, found by the same calls), so the history holds
//! a third as many incidents as rollouts, all settled.

use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use ringfence_core::time::Timestamp;
use ringfence_core::{NewEvent, World};

use crate::ui::RealHistory;
use crate::{Output, stats};

const WORKLOAD: &str = "history";
const SIZES: [u32; 4] = [10, 100, 1_000, 10_000];

#[derive(Args, Debug)]
pub struct TickArgs {
    /// The largest history, in past rollouts (sizes are the powers of ten up to it).
    #[arg(long, default_value_t = 10_000)]
    pub rollouts: u32,
    /// Repetitions of each measurement at each size.
    #[arg(long, default_value_t = 30)]
    pub reps: u32,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

impl TickArgs {
    pub fn validate(&self) -> Result<()> {
        if !(10..=100_000).contains(&self.rollouts) {
            bail!("--rollouts: expected 10 to 100000, found {}", self.rollouts);
        }
        if !(5..=1_000).contains(&self.reps) {
            bail!("--reps: expected 5 to 1000, found {}", self.reps);
        }
        Ok(())
    }
}

struct Row {
    rollouts: u32,
    events: u64,
    /// Medians, in µs.
    full_copy_us: f64,
    snapshot_us: f64,
    fold_us: f64,
    fold_held_us: f64,
    checks_us: f64,
}

pub struct Report {
    events_per_rollout: usize,
    rows: Vec<Row>,
}

pub fn run(args: &TickArgs, ringfence: &Path) -> Result<Report> {
    let real = RealHistory::record(ringfence)?;
    let mut world = World::default();
    let mut seq = 0u64;
    fold(&mut world, &mut seq, real.history());
    with_a_channel(&mut world, &mut seq)?;
    let sizes: Vec<u32> = SIZES.iter().copied().filter(|&n| n <= args.rollouts).collect();
    let mut rows = Vec::new();
    let mut copied = 0u32;
    for &size in &sizes {
        eprintln!("bench: folding up to {size} past rollouts");
        while copied < size {
            fold(&mut world, &mut seq, real.copy(copied)?);
            if copied.is_multiple_of(3) {
                incident(&mut world, &mut seq, copied)?;
            }
            copied += 1;
        }
        let ws = world.snapshot(WORKLOAD).ok_or_else(|| anyhow!("no workload {WORKLOAD} in the history"))?;
        let deep: Vec<f64> = (0..args.reps)
            .map(|_| {
                let t = Instant::now();
                black_box((*ws).clone());
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        // A second after the history's last step (a rollout's end, or an incident's).
        let resolved = ws.incidents.values().filter_map(|i| i.resolved_at).max();
        let now = ws.rollouts.last().and_then(|r| r.ended_at).max(resolved).unwrap_or_default().plus_ms(1_000);
        drop(ws);
        let checks: Vec<f64> = (0..args.reps)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..100 {
                    black_box(tick_checks(&world, now));
                }
                t.elapsed().as_secs_f64() * 1e6 / 100.0
            })
            .collect();
        let snap: Vec<f64> = (0..args.reps)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..1_000 {
                    black_box(world.snapshot(WORKLOAD));
                }
                t.elapsed().as_secs_f64() * 1e6 / 1_000.0
            })
            .collect();
        // Folding: the next past rollouts' events, one by one, without and then with a
        // snapshot held across each (those rollouts are part of the next size's history).
        let mut plain = Vec::new();
        let mut held = Vec::new();
        for k in 0..args.reps.min(10) {
            let events = real.copy(copied)?;
            copied += 1;
            for e in events {
                seq += 1;
                let e = e.numbered(seq);
                if k % 2 == 0 {
                    let t = Instant::now();
                    world.apply(&e);
                    plain.push(t.elapsed().as_secs_f64() * 1e6);
                } else {
                    let snapshot = world.snapshot(WORKLOAD);
                    let t = Instant::now();
                    world.apply(&e);
                    held.push(t.elapsed().as_secs_f64() * 1e6);
                    drop(snapshot);
                }
            }
        }
        let median = |v: Vec<f64>| stats::median(v).unwrap_or(f64::NAN);
        rows.push(Row {
            rollouts: size,
            events: seq,
            full_copy_us: median(deep),
            snapshot_us: median(snap),
            fold_us: median(plain),
            fold_held_us: median(held),
            checks_us: median(checks),
        });
    }
    Ok(Report { events_per_rollout: real.events_per_rollout(), rows })
}

/// What a controller's tick asks of the state besides the rollout's step (the calls in
/// `controller::step`, in its order), as a count of what they found.
fn tick_checks(world: &World, now: Timestamp) -> usize {
    use ringfence_core::{command, drill, governance, incident};
    let Some(ws) = world.workload(WORKLOAD) else { return 0 };
    usize::from(command::degraded_too_long(world, WORKLOAD, now).is_some())
        + governance::checks_due(world, WORKLOAD).len()
        + governance::tick(world, WORKLOAD, now).len()
        + incident::confirmed(ws, now).len()
        + incident::deliveries_due(ws, now).len()
        + incident::follow_up_sends_due(ws, now).len()
        + incident::reminders_due(ws, now).len()
        + incident::updates_due(ws, now).len()
        + usize::from(command::regression_in_watch(world, WORKLOAD, None).is_some())
        + drill::undrilled(ws, now).len()
}

/// The workload's spec again, with a stakeholder channel for incidents' updates.
fn with_a_channel(world: &mut World, seq: &mut u64) -> Result<()> {
    let text =
        crate::ui::spec() + "\n[[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/hook\"\n";
    let spec = ringfence_core::spec::parse("history.toml", &text).map_err(|e| anyhow!("the bench's spec: {e:?}"))?;
    let kind = ringfence_core::command::apply_spec(world, &spec).map_err(|e| anyhow!("{}", e.message))?;
    let at = world.workload(WORKLOAD).and_then(|ws| ws.rollouts.last()).and_then(|r| r.ended_at).unwrap_or_default();
    if let Some(kind) = kind {
        event(world, seq, at, kind);
    }
    Ok(())
}

/// Past rollout `i` failed after all: the incident the controller would have run to its end,
/// each step a second after the last, with the updates and deliveries its calls find due.
fn incident(world: &mut World, seq: &mut u64, i: u32) -> Result<()> {
    use ringfence_core::{EventKind, decision, incident};
    let id = format!("{WORKLOAD}-{}", i + 3);
    let ws = world.workload(WORKLOAD).ok_or_else(|| anyhow!("no workload {WORKLOAD}"))?;
    let r = ws.rollout(&id).ok_or_else(|| anyhow!("no rollout {id} in the history"))?;
    let decision = Box::new(decision::manual_rollback(r, "bench", "errors up"));
    let mut at = r.ended_at.unwrap_or_default();
    let steps = [
        EventKind::RolloutHalted { rollout_id: id.clone(), decision },
        EventKind::MitigationCompleted { rollout_id: id.clone(), verified: true, detail: "bench".into() },
        EventKind::IncidentResolved { incident: id.clone() },
    ];
    for kind in steps {
        event(world, seq, at, kind);
        let ws = world.workload(WORKLOAD).ok_or_else(|| anyhow!("no workload {WORKLOAD}"))?;
        for kind in incident::updates_due(ws, at) {
            event(world, seq, at, kind);
        }
        let ws = world.workload(WORKLOAD).ok_or_else(|| anyhow!("no workload {WORKLOAD}"))?;
        for d in incident::deliveries_due(ws, at) {
            let (channel, incident, update) = (d.channel.name.clone(), d.incident.id.clone(), d.update);
            event(world, seq, at, EventKind::NotificationDelivered { channel, incident, update, attempts: 1 });
        }
        at = at.plus_ms(1_000);
    }
    let ws = world.workload(WORKLOAD).ok_or_else(|| anyhow!("no workload {WORKLOAD}"))?;
    match ws.incidents.get(&id) {
        Some(i) if i.state == incident::IncidentState::Resolved => Ok(()),
        other => Err(anyhow!("the bench's incident {id} did not end resolved: {other:?}")),
    }
}

fn event(world: &mut World, seq: &mut u64, at: Timestamp, kind: ringfence_core::EventKind) {
    *seq += 1;
    let e = NewEvent { at, actor: "bench".into(), reason: "bench".into(), workload: WORKLOAD.into(), kind };
    world.apply(&e.numbered(*seq));
}

fn fold(world: &mut World, seq: &mut u64, events: Vec<NewEvent>) {
    for e in events {
        *seq += 1;
        world.apply(&e.numbered(*seq));
    }
}

impl Report {
    /// The tick's snapshot at the largest history over at the smallest.
    fn growth(&self) -> f64 {
        self.ratio(|r| r.snapshot_us)
    }

    /// The tick's checks at the largest history over at the smallest.
    fn checks_growth(&self) -> f64 {
        self.ratio(|r| r.checks_us)
    }

    fn ratio(&self, of: impl Fn(&Row) -> f64) -> f64 {
        match (self.rows.first(), self.rows.last()) {
            (Some(a), Some(b)) if of(a) > 0.0 => of(b) / of(a),
            _ => f64::NAN,
        }
    }
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.growth() <= 2.0 && self.checks_growth() <= 2.0
    }

    fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench tick: a controller tick's cost as the history grows");
        let _ = writeln!(
            o,
            "  setup    a real rollout's events ({} per rollout) copied under new ids, folded in-process; medians",
            self.events_per_rollout
        );
        let _ = writeln!(
            o,
            "           every third past rollout with a resolved incident (updates delivered to a stakeholder channel)"
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:>9} {:>9}  {:>16} {:>16} {:>14}  {:>14} {:>22}",
            "rollouts", "events", "full copy µs", "snapshot µs", "checks µs", "fold µs/event", "fold, snapshot held µs"
        );
        let _ = writeln!(o, "  {:>9} {:>9}  {:>16} {:>16}", "", "", "(a tick before)", "(a tick now)");
        for r in &self.rows {
            let _ = writeln!(
                o,
                "  {:>9} {:>9}  {:>16.1} {:>16.3} {:>14.2} {:>14.2} {:>22.1}",
                r.rollouts, r.events, r.full_copy_us, r.snapshot_us, r.checks_us, r.fold_us, r.fold_held_us
            );
        }
        let _ = writeln!(o);
        let mark = |ok: bool| if ok { "met    " } else { "NOT MET" };
        let _ = writeln!(
            o,
            "  {}  a tick's snapshot independent of the history: largest / smallest = {:.2} (bar: at most 2)",
            mark(self.growth() <= 2.0),
            self.growth()
        );
        let _ = writeln!(
            o,
            "  {}  a tick's checks independent of the history: largest / smallest = {:.2} (bar: at most 2)",
            mark(self.checks_growth() <= 2.0),
            self.checks_growth()
        );
        o
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "benchmark": "tick",
            "events_per_rollout": self.events_per_rollout,
            "rows": self.rows.iter().map(|r| serde_json::json!({
                "rollouts": r.rollouts,
                "events": r.events,
                "full_copy_us": stats::round3(r.full_copy_us),
                "snapshot_us": stats::round3(r.snapshot_us),
                "fold_us_per_event": stats::round3(r.fold_us),
                "fold_snapshot_held_us_per_event": stats::round3(r.fold_held_us),
                "checks_us": stats::round3(r.checks_us),
            })).collect::<Vec<_>>(),
            "snapshot_growth": stats::round3(self.growth()),
            "checks_growth": stats::round3(self.checks_growth()),
            "passed": crate::Report::passed(self),
        })
    }
}
