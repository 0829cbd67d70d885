//! `ringfence demo`: the whole story on one machine with no setup. A server, a router and the
//! sample app start; v1 goes live; v2 (healthy) is promoted through every phase under live
//! traffic; v3 (20% errors) is halted and traffic falls back within seconds; the timeline and
//! the "why" are printed; then the server stays up to be explored with the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use ringfence_api::{
    self as api, Metadata, ReleaseContent, ReleaseRequest, Rollout, RolloutStatus, Why, WorkloadStatus,
};
use tokio_util::sync::CancellationToken;

use crate::cli::{is_notable, render_status, timeline_line};
use crate::client::ApiClient;
use crate::exit::{CliError, ExitCode};
use crate::server::ServerConfig;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// API address; if taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Keep the demo's state here (default: a new temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Exit when the story is told instead of keeping the server up.
    #[arg(long)]
    pub no_wait: bool,
    /// Requests per second of simulated user traffic.
    #[arg(long, default_value_t = 200.0)]
    pub rps: f64,
}

pub const DEMO_SPEC: &str = r#"
[workload]
name = "demo"
criticality = "high"
description = "The demo's sample service"

[executor]
command = ["{ringfence}", "sample-app", "--listen", "127.0.0.1:{port}", "--version", "{version}"]
replicas = 2

[router]
listen = "127.0.0.1:0"

# Bakes as `ringfence plan` recommends them at the demo's 200 requests/s: a release as good as
# the stable one passes each phase on the evidence of its own traffic (about 35 s at 10%).
[[rollout.phases]]
name = "canary"
weight = 10
bake = "40s"

[[rollout.phases]]
name = "half"
weight = 50
bake = "10s"

[[rollout.phases]]
name = "full"
weight = 100
bake = "5s"

[health]
max_error_rate = 0.05
max_p99_latency = "250ms"
min_requests = 20

[health.probe]
interval = "500ms"

# The default analysis against the stable version (docs/detection.md): it fails a release only
# beyond a margin worth acting on, and passes a phase on evidence, not by waiting.
[health.analysis]
method = "sequential"

[mitigation]
auto_fallback = true
"#;

fn say(line: &str) {
    println!("\n\x1b[1m==> {line}\x1b[0m");
}

pub async fn run(args: &DemoArgs, shutdown: CancellationToken) -> Result<ExitCode, CliError> {
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ringfence-demo-{}", std::process::id())),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot listen on loopback: {e}")))?,
    };
    let addr = listener.local_addr().map_err(|e| CliError::new(ExitCode::Failure, e.to_string()))?;
    let server_stop = CancellationToken::new();
    let mut config = ServerConfig::new(data_dir.clone())?;
    config.tick = Duration::from_millis(50);
    let server = tokio::spawn(crate::server::run(config, listener, server_stop.clone()));
    let base = format!("http://{addr}");
    say(&format!("ringfence server on {base}, state in {}", data_dir.display()));
    // The server writes its admin token on first start; the demo drives it with that token.
    let token_file = crate::server::admin_token_path(&data_dir);
    let found = wait_for_token(&token_file, &server).await;
    let api = match found {
        Ok(t) => ApiClient::new(&base, Some(t)),
        Err(e) => {
            server_stop.cancel();
            let _ = server.await;
            remove_scratch(args, &data_dir);
            return Err(e);
        }
    };

    let result = story(&api, args, &shutdown).await;
    let traffic_stop = match result {
        Ok(t) => t,
        Err(e) => {
            server_stop.cancel();
            let _ = server.await;
            remove_scratch(args, &data_dir);
            return Err(e);
        }
    };

    if !args.no_wait && !shutdown.is_cancelled() {
        let s: WorkloadStatus = api.get("/v1/workloads/demo").await?;
        let router = s.router.map(|r| r.listen).unwrap_or_default();
        say("The server stays up so you can explore. In another terminal:");
        println!("  export RINGFENCE_SERVER={base}");
        println!("  export RINGFENCE_TOKEN_FILE={}", token_file.display());
        println!("  ringfence status demo --watch        # live rollout and traffic split");
        println!("  ringfence events demo                # the timeline");
        println!("  ringfence why demo                   # the evidence behind the last decision");
        println!("  ringfence deploy demo v2 --wait      # deploy any release by version");
        println!("  ringfence rollback demo              # back to the previous last known good");
        println!("  curl -si -H 'x-user-id: alice' http://{router}/   # through the router");
        println!("Simulated users keep sending {} requests/s. Press Ctrl-C to stop everything.", args.rps);
        shutdown.cancelled().await;
    }
    traffic_stop.cancel();
    say("Stopping: replicas, router, server.");
    server_stop.cancel();
    let outcome = match server.await {
        Ok(Ok(())) => Ok(ExitCode::Ok),
        Ok(Err(e)) => Err(CliError::new(ExitCode::Failure, format!("{e:#}"))),
        Err(e) => Err(CliError::new(ExitCode::Failure, e.to_string())),
    };
    remove_scratch(args, &data_dir);
    outcome
}

/// The admin token the demo's server writes on its first start (a few milliseconds after the
/// start; the server's own error if it cannot start).
async fn wait_for_token(
    file: &std::path::Path,
    server: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> Result<crate::credentials::Found, CliError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if file.is_file() {
            return crate::credentials::find_token("", Some(file)).map(|f| f.expect("a file was given"));
        }
        if server.is_finished() || std::time::Instant::now() > deadline {
            return Err(CliError::new(
                ExitCode::Failure,
                format!("the demo's server did not start (no admin token in {})", file.display()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The demo's own temporary state goes when it ends (the server has stopped every process it
/// started by then); a `--data-dir` the user chose stays.
fn remove_scratch(args: &DemoArgs, data_dir: &std::path::Path) {
    if args.data_dir.is_none()
        && let Err(e) = std::fs::remove_dir_all(data_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: could not remove the demo's state in {}: {e}", data_dir.display());
    }
}

async fn story(api: &ApiClient, args: &DemoArgs, shutdown: &CancellationToken) -> Result<CancellationToken, CliError> {
    let _: api::Applied =
        api.post("/v1/workloads", &api::ApplySpec { spec: DEMO_SPEC.into(), file: "demo.toml".into() }).await?;
    for (version, config, message) in [
        ("v1", vec![], "first release"),
        ("v2", vec![("GREETING", "hello")], "a healthy change"),
        ("v3", vec![("SAMPLE_ERROR_RATE", "0.2")], "a bug: 20% of requests fail"),
    ] {
        let req = ReleaseRequest {
            version: version.into(),
            content: ReleaseContent {
                artifact: format!("ringfence sample-app {version}"),
                config: config.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                metadata: Metadata {
                    commit: format!("demo-{version}"),
                    author: "demo".into(),
                    message: message.into(),
                    committed_at: None,
                    size: None,
                },
                ..Default::default()
            },
        };
        let _: api::ReleaseCreated = api.post("/v1/workloads/demo/releases", &req).await?;
    }
    say(
        "Applied workload `demo` (phases: canary 10% → half 50% → full 100%); registered v1, v2 and v3 (v3 fails 20% of requests).",
    );

    say("Deploying v1, the first release.");
    let r = deploy_and_follow(api, "v1", shutdown).await?;
    expect(&r, RolloutStatus::Completed)?;

    let s: WorkloadStatus = api.get("/v1/workloads/demo").await?;
    let router: SocketAddr = s
        .router
        .as_ref()
        .and_then(|r| r.listen.parse().ok())
        .ok_or_else(|| CliError::new(ExitCode::Failure, "the demo's router did not start"))?;
    let traffic_stop = CancellationToken::new();
    let cfg = crate::loadgen::LoadConfig::steady(router, args.rps, 1000);
    tokio::spawn(crate::loadgen::run(cfg, None, traffic_stop.clone()));
    say(&format!("Simulated users: {} requests/s from 1000 users through the router at http://{router}", args.rps));

    say("Deploying v2 (healthy): it must pass every phase's health gate on its own.");
    let r = deploy_and_follow(api, "v2", shutdown).await?;
    expect(&r, RolloutStatus::Completed)?;

    say("Deploying v3 (bad): watch it get halted and the traffic fall back.");
    let r = deploy_and_follow(api, "v3", shutdown).await?;
    expect(&r, RolloutStatus::Mitigated)?;
    if let (Some(d), Some(end)) = (&r.decision, r.ended_at) {
        println!(
            "    decision: {:?}; rollout ended {:.1} s after it began",
            d.action,
            (end.0 - r.started_at.0) as f64 / 1000.0
        );
    }

    let s: WorkloadStatus = api.get("/v1/workloads/demo").await?;
    say("Status now:");
    print!("{}", render_status(&s));

    say("Timeline (ringfence events demo):");
    let evs = api.events_after("demo", 0).await?;
    for e in evs.iter().filter(|e| is_notable(e)) {
        println!("{}", timeline_line(e));
    }
    say("Why (ringfence why demo):");
    let w: Why = api.get("/v1/workloads/demo/why").await?;
    print!("{}", w.text);
    Ok(traffic_stop)
}

fn expect(r: &Rollout, want: RolloutStatus) -> Result<(), CliError> {
    if r.status == want {
        return Ok(());
    }
    Err(CliError::new(
        ExitCode::Failure,
        format!("the demo expected rollout {} to end {}, but it ended {}", r.id, want.as_str(), r.status.as_str()),
    ))
}

/// Deploys and prints each notable event of the rollout until it ends.
async fn deploy_and_follow(api: &ApiClient, version: &str, shutdown: &CancellationToken) -> Result<Rollout, CliError> {
    let before = api.events_after("demo", 0).await?;
    let mut after = before.last().map(|e| e.seq).unwrap_or(0);
    let v: api::Started = api
        .post(
            "/v1/workloads/demo/deploy",
            &api::Deploy { version: version.into(), reason: String::new(), emergency: None },
        )
        .await?;
    let id = v.rollout_id;
    let started = Instant::now();
    let mut shown = Instant::now();
    loop {
        let evs = api.events_after("demo", after).await?;
        for e in &evs {
            after = e.seq;
            if let Some(logged) = crate::cli::as_logged(e)
                && (logged.kind.rollout_id() == Some(id.as_str())
                    || matches!(logged.kind, ringfence_core::EventKind::ReplicaStarted { .. }))
            {
                println!(
                    "  +{:>5.1}s  {}",
                    started.elapsed().as_secs_f64(),
                    ringfence_core::explain::describe(&logged)
                );
            }
        }
        let r: Rollout = api.get(&format!("/v1/workloads/demo/rollouts/{id}")).await?;
        if !r.status.is_active() {
            return Ok(r);
        }
        // A bake is long and quiet: every few seconds, say what the evidence still waits for.
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            let s: WorkloadStatus = api.get("/v1/workloads/demo").await?;
            let pending: Vec<String> = s
                .health
                .iter()
                .flat_map(|l| &l.verdict.signals)
                .filter(|sig| sig.detail.starts_with("pending"))
                .map(|sig| format!("{}: {}", sig.signal, sig.detail.split("; new ").next().unwrap_or(&sig.detail)))
                .collect();
            if !pending.is_empty() {
                println!("  +{:>5.1}s  baking: {}", started.elapsed().as_secs_f64(), pending.join("; "));
            }
        }
        if shutdown.is_cancelled() {
            return Err(CliError::new(ExitCode::Failure, "interrupted"));
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(CliError::new(ExitCode::WaitTimeout, format!("rollout {id} did not end within 2 minutes")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
