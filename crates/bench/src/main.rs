//! `ringfence-bench`: the benchmarks behind the performance bars of design.md section 5, each
//! a subcommand run against the real release binary. `bench/run.sh` builds and runs them and
//! saves their output under `bench/results/`.

mod baseline;
mod failover;
mod flags;
mod mitigation;
mod mitigations;
/// The PostgreSQL cluster the failover and store benchmarks start, shared with the tests.
#[path = "../../store/tests/support/pgcluster.rs"]
mod pgcluster;
mod procs;
mod router;
mod scale;
mod server;
mod soak;
mod stats;
mod store;
mod tick;
mod trust;
mod ui;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};

/// Every benchmark ran and met its bar.
const EXIT_PASS: u8 = 0;
/// Something went wrong; no result.
const EXIT_ERROR: u8 = 1;
/// The benchmark ran to the end but missed its bar: a result, to be saved and read, not an error.
const EXIT_MISSED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "ringfence-bench",
    version,
    about = "Benchmarks for ringfence's performance bars (design.md section 5)."
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Time to mitigate a hard failure: from the first bad response users see to the last request
    /// routed to the bad version.
    Mitigation(mitigation::MitigationArgs),
    /// Flag evaluation speed: ns per evaluation in process, side by side with unleash-yggdrasil
    /// on comparable rules, and OFREP evaluations per second over HTTP on loopback.
    Flags(flags::FlagsArgs),
    /// Router overhead: throughput (wrk) and added p99 latency (open loop) of the ringfence
    /// router next to nginx doing the same weighted split to the same upstreams.
    Router(router::RouterArgs),
    /// Can the verdicts be trusted, through the real stack (server, routers, replicas, HTTP
    /// load): healthy releases must complete on their own (no false halt in 50, at least 48
    /// complete, per rate), and a hard failure, a subtle error increase and a p99 regression must
    /// be caught in time at 10%.
    Trust(trust::TrustArgs),
    /// Time to restored health for each mitigation (fallback, rollback, bypass, roll forward,
    /// redeploy), side by side in one run through the real stack.
    Mitigations(mitigations::MitigationsArgs),
    /// Replicas on one PostgreSQL: the leading replica SIGKILLed again and again under a
    /// rollout; the time until another one leads (bar: every failover under 5 s).
    Failover(failover::FailoverArgs),
    /// How far one event log carries: appends per second on SQLite and on PostgreSQL (one
    /// writer, three replicas), and the events one real rollout appends per second.
    Store(store::StoreArgs),
    /// The hub's pages with 10,000 past rollouts in the log: time and bytes of the overview,
    /// a workload and a rollout page through the real server (bar: p95 under 50 ms).
    Ui(ui::UiArgs),
    /// A controller tick's cost as a workload's history grows to 10,000 past rollouts: the
    /// snapshot a tick takes next to the deep copy it took before, and the fold per event.
    Tick(tick::TickArgs),
    /// Continuous deploys (one release in three bad) on a few workloads for a set time:
    /// server memory, open files, routers' memory, log size and rollout time, flat or not.
    Soak(soak::SoakArgs),
    /// Many rollouts at once on one server (design.md's 10,000): how late steps fall due, the
    /// server's memory, and a SIGKILL and restart in the middle (`--workloads N`).
    Scale(scale::ScaleArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// One JSON document.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.bench {
        Bench::Mitigation(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            // Started outside the runtime: the guard's start and stop block, and its Drop must work
            // even after the runtime is gone.
            let mut servers = Vec::new();
            for binary in std::iter::once(&ringfence).chain(args.baseline.as_ref()) {
                let server = server::Server::start(binary, args.server_tick.as_deref(), args.keep_data)?;
                eprintln!("bench: ringfence server {} on {}", binary.display(), server.base);
                servers.push(server);
            }
            let outcome = runtime.block_on(async {
                tokio::select! {
                    r = mitigation::run(&args, &mut servers) => r,
                    () = interrupted() => Err(anyhow!("interrupted; the servers and their processes were stopped")),
                }
            });
            // Stopped before printing, so the report can say whether everything went away.
            let stops = servers.iter_mut().map(|s| s.stop_and_tell("bench")).collect();
            drop(servers);
            let mut report = outcome?;
            report.cleanup(stops);
            finish(&report, args.output)
        }
        Bench::Flags(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = block_on(flags::run(&args, &ringfence), "the router was stopped")?;
            finish(&report, args.output)
        }
        Bench::Router(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = block_on(router::run(&args, &ringfence), "the router, nginx and the upstreams were stopped")?;
            finish(&report, args.output)
        }
        Bench::Mitigations(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let mut server = server::Server::start(&ringfence, None, false)?;
            eprintln!("bench: ringfence server {} on {}", ringfence.display(), server.base);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let outcome = runtime.block_on(async {
                tokio::select! {
                    r = mitigations::run(&args, &mut server) => r,
                    () = interrupted() => Err(anyhow!("interrupted; the server and its processes were stopped")),
                }
            });
            let _ = server.stop_and_tell("bench");
            drop(server);
            finish(&outcome?, args.output)
        }
        Bench::Failover(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = failover::run(&args, &ringfence)?;
            finish(&report, args.output)
        }
        Bench::Store(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = store::run(&args, &ringfence)?;
            finish(&report, args.output)
        }
        Bench::Ui(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = ui::run(&args, &ringfence)?;
            finish(&report, args.output)
        }
        Bench::Tick(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = tick::run(&args, &ringfence)?;
            finish(&report, args.output)
        }
        Bench::Soak(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = soak::run(&args, &ringfence)?;
            finish(&report, args.output)
        }
        Bench::Scale(args) => {
            args.validate()?;
            let ringfence = ringfence_binary()?;
            let report = scale::run(&args, &ringfence)?;
            finish(&report, args.output)
        }
        Bench::Trust(args) => {
            let cfg = args.resolve()?;
            let output = cfg.output;
            let ringfence = ringfence_binary()?;
            // Starts and stops its own servers, one per part, each on a fresh runtime.
            let report = trust::run(cfg, &ringfence)?;
            finish(&report, output)
        }
    }
}

/// What a benchmark reports: a table for people, JSON for scripts, and whether its bars held.
trait Report {
    fn passed(&self) -> bool;
    fn table(&self) -> String;
    fn json(&self) -> serde_json::Value;
}

/// Runs a benchmark on a fresh runtime; Ctrl-C or SIGTERM ends it early, its guards stopping
/// what it started (`stopped` says what, in the error).
fn block_on<T>(bench: impl std::future::Future<Output = Result<T>>, stopped: &str) -> Result<T> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            r = bench => r,
            () = interrupted() => Err(anyhow!("interrupted; {stopped}")),
        }
    })
}

fn finish(report: &impl Report, output: Output) -> Result<u8> {
    match output {
        Output::Table => print!("{}", report.table()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report.json()).context("JSON output")?),
    }
    Ok(if report.passed() { EXIT_PASS } else { EXIT_MISSED })
}

/// The ringfence release binary, next to this one (both land in `target/release`).
fn ringfence_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate the ringfence-bench executable")?;
    let dir = me.parent().ok_or_else(|| anyhow!("{} has no parent directory", me.display()))?;
    let bin = dir.join("ringfence");
    if !bin.is_file() {
        bail!(
            "the ringfence binary is missing: expected {}\nbuild it with `cargo build --release -p ringfence -p ringfence-bench`, or run bench/run.sh, which builds both",
            bin.display()
        );
    }
    if dir.file_name().and_then(|n| n.to_str()) != Some("release") {
        // Debug builds are several times slower; their numbers say nothing about the bar.
        eprintln!("bench: WARNING: {} is not a release build; use bench/run.sh for real numbers", bin.display());
    }
    Ok(bin)
}

/// Resolves on Ctrl-C or SIGTERM, so the guards get to stop the server instead of the process
/// dying with it still running.
pub(crate) async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            // A handler that cannot be installed must not look like an interrupt.
            if r.is_err() { std::future::pending::<()>().await }
        }
        () = async {
            match term.as_mut() {
                Some(s) => { s.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
