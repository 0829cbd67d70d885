//! The command line: one binary for the server, the router, the sample service, the demo and
//! the client commands over the HTTP API.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringfence_api::{
    self as api, Event, Metadata, Migration, Release, ReleaseContent, ReleaseRequest, Rollout, RolloutStatus, Stage,
    Why, WorkloadStatus,
};
use ringfence_core::event::EventKind;
use ringfence_core::explain;
use serde_json::json;

use crate::client::ApiClient;
use crate::exit::{CliError, ExitCode};

/// `print!` and `println!` for the client commands' output, which treat a closed stdout
/// (`ringfence events checkout | head`) as the end of the output instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(e);
        }
    }};
}

macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(e);
        }
    }};
}

mod drill;

/// A reader that went away (`| head`) has what it wanted: exit quietly with success, as Unix
/// filters do. Any other failure to write the output is an error.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write the output: {e}");
    std::process::exit(ExitCode::Failure as i32);
}

const EXAMPLES: &str = "\
Examples:
  ringfence demo                                  # the whole story on this machine, no setup
  ringfence server --data-dir ./state             # run the server (API on 127.0.0.1:7070)
  ringfence validate examples/checkout.toml       # check a spec without applying it
  ringfence apply examples/checkout.toml
  ringfence release create checkout --version v2 --artifact registry/checkout:v2 --config SAMPLE_LATENCY_MS=5
  ringfence deploy checkout v2 --wait             # exit 10 if it ends halted or rolled back
  ringfence status checkout --watch
  ringfence why checkout
  ringfence rollback checkout";

#[derive(Parser, Debug)]
#[command(name = "ringfence", version, about = "Safe deployments: health-gated progressive rollouts with automatic mitigation.", after_help = EXAMPLES)]
pub struct Cli {
    /// Server URL for client commands.
    #[arg(long, global = true, env = "RINGFENCE_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// Output format of read commands.
    #[arg(long, short = 'o', global = true, env = "RINGFENCE_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// File holding the API token for client commands. Without it: $RINGFENCE_TOKEN, then
    /// ~/.config/ringfence/token, then (for a server on this machine) the admin token the
    /// server wrote to its data directory. The token names you: it is the actor of every
    /// event you cause.
    #[arg(long, global = true, env = "RINGFENCE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "RINGFENCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands that do not talk to a server, and the global options that do not apply to
/// them: their `--help` does not list those (`validate` still speaks JSON).
const NOT_CLIENTS: &[(&str, &[&str])] = &[
    ("demo", &["server", "output", "token_file"]),
    ("server", &["server", "output", "token_file"]),
    ("router", &["server", "output", "token_file"]),
    ("sample-app", &["server", "output", "token_file"]),
    ("validate", &["server", "token_file"]),
    ("audit", &["server", "token_file"]),
];

/// The command line's definition: clap's, with the client options hidden from the commands
/// they do not apply to. A global option is shown in every subcommand's help; a subcommand
/// that has its own hidden option of the same name keeps it out (and still accepts it, so a
/// `RINGFENCE_SERVER` in the environment or a stray `--server` changes nothing).
pub fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    for (name, options) in NOT_CLIENTS {
        cmd = cmd.mut_subcommand(*name, |mut sub| {
            for id in *options {
                let long = if *id == "token_file" { "token-file" } else { id };
                let mut arg = clap::Arg::new(*id).long(long).hide(true).num_args(1);
                if *id == "output" {
                    arg = arg.short('o');
                }
                sub = sub.arg(arg);
            }
            sub
        });
    }
    cmd
}

/// Parses the process's arguments.
pub fn parse() -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches()?;
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole story: server, router, sample app; a good release promoted, a bad one halted.
    #[command(
        after_help = "Examples:\n  ringfence demo\n  ringfence demo --no-wait        # exit when the story is told"
    )]
    Demo(crate::demo::DemoArgs),
    /// Run the server: API, controller loops, event log.
    #[command(
        after_help = "On first start the server writes an admin token to <data-dir>/admin.token (mode 0600); the CLI on this machine finds it there. Without --tls-cert/--tls-key the API listens on loopback only (or put a TLS-terminating reverse proxy in front; docs/security.md).\n\nExamples:\n  ringfence server\n  ringfence server --listen 127.0.0.1:7171 --data-dir /var/lib/ringfence\n  ringfence server --allowed-host deploy.example.com   # behind a reverse proxy\n  ringfence server --listen 0.0.0.0:7443 --tls-cert cert.pem --tls-key key.pem --allowed-host deploy.example.com"
    )]
    Server(ServerArgs),
    /// Run a traffic router: a workload's own (the server starts one per workload), or one of
    /// the router tier serving many workloads (--control-plane).
    #[command(
        after_help = "Every admin call but GET /metrics needs `Authorization: Bearer <secret>`, the secret being the content of --admin-token-file (mode 0600: the router refuses a file group or others can read). Without that option the router does not start, unless --insecure-admin is given.\n\nA router of the tier (--control-plane) serves every workload with `[router] kind = \"tier\"` that its token may route, chosen by the request's Host and path (the workloads' `host` and `path_prefix`). It fetches the tables from the API, keeps serving the last ones (also across its own restart, with --state-file) while no server answers, and reports its counters every second.\n\nExamples:\n  (umask 077; openssl rand -hex 32 > admin.token)\n  ringfence router --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 --admin-token-file admin.token\n  curl -H \"Authorization: Bearer $(cat admin.token)\" http://127.0.0.1:9901/v1/stats\n  ringfence router --listen 127.0.0.1:8080 --insecure-admin   # experiments by hand only\n  systemd-socket-activate -l 0.0.0.0:80 ringfence router --admin-token-file admin.token   # a socket handed over (LISTEN_FDS)\n\n  (umask 077; ringfence token create edge-1 --role router | tail -n 1 > router.token)\n  ringfence router --listen 0.0.0.0:80 --admin-token-file admin.token --state-file /var/lib/ringfence-router/tables.json \\\n      --control-plane https://rf-1:7070 --control-plane https://rf-2:7070 --api-token-file router.token --name edge-1"
    )]
    Router(RouterArgs),
    /// Run the sample HTTP service whose behaviour is set per version.
    #[command(
        name = "sample-app",
        after_help = "Examples:\n  ringfence sample-app --listen 127.0.0.1:8081 --version v1\n  SAMPLE_ERROR_RATE=0.2 ringfence sample-app --version bad"
    )]
    SampleApp(crate::sample_app::SampleAppArgs),
    /// Check spec files (.toml) and flag files (.json) without applying them; every error with its place.
    #[command(
        after_help = "A flag file loads as flagd loads it: problems flagd loads too are warnings, with their JSON path; --strict makes them errors.\n\nExamples:\n  ringfence validate examples/checkout.toml\n  ringfence validate -o json a.toml b.toml\n  ringfence validate --strict flags.json"
    )]
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Flag files: refuse any problem, even one flagd loads.
        #[arg(long)]
        strict: bool,
    },
    /// The tamper-evident audit log: verify its hash chain and signed digests, or export it
    /// as JSON Lines. Offline, on the data directory (docs/audit.md).
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    /// Apply a workload spec (create or update the workload).
    #[command(after_help = "Example:\n  ringfence apply examples/checkout.toml")]
    Apply { file: PathBuf },
    /// Register, list and show releases.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Roll a release out through the workload's plan. Governance applies to every caller: a
    /// release must have completed in the previous environment and carry the required
    /// attestations; a deployment that needs approvals or a deployment window is queued and
    /// starts by itself once nothing is missing.
    #[command(
        after_help = "Examples:\n  ringfence deploy checkout v2\n  ringfence deploy checkout v2 --wait --timeout 30m   # exit 10 if halted\n  ringfence deploy checkout v2.0.1 --emergency --incident INC-42 --severity sev1 \\\n      --reason \"hotfix for the payment timeout\"   # waits for an emergency approver"
    )]
    Deploy {
        workload: String,
        version: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Why (recorded with the event); an emergency deployment's justification.
        #[arg(long, default_value = "")]
        reason: String,
        /// An emergency deployment (a hotfix during an incident): an emergency approver
        /// approves it, bakes are shortened, skipped gates are owed out of band.
        #[arg(long, requires_all = ["incident", "severity"])]
        emergency: bool,
        /// The incident an emergency deployment answers.
        #[arg(long, requires = "emergency")]
        incident: Option<String>,
        /// The incident's severity (one of the spec's `emergency.severities`).
        #[arg(long, requires = "emergency")]
        severity: Option<String>,
    },
    /// Approve what waits for an approval: a queued deployment, the current phase's approval
    /// gate, or the approval an emergency deployment skipped. Needs the approver role (an
    /// emergency deployment: emergency-approver); the release's author and the deployment's
    /// starter may not.
    #[command(after_help = "Example:\n  ringfence approve checkout --reason \"go-forward plan reviewed in CAB-311\"")]
    Approve(Verb),
    /// Reject what waits for an approval: the queued deployment is dropped, or the rollout at
    /// an approval gate is aborted (all traffic back to the stable version).
    #[command(after_help = "Example:\n  ringfence reject checkout --reason \"no rollback plan for the schema change\"")]
    Reject(Verb),
    /// How a workload's desired state differs from another environment's beyond the version:
    /// spec (scale, executor, plan, health), configuration keys, flags.
    #[command(
        after_help = "Examples:\n  ringfence parity checkout                       # against environment.after\n  ringfence parity checkout --against checkout-staging -o json"
    )]
    Parity {
        workload: String,
        /// The other environment's workload (default: `environment.after`, or the workload
        /// whose `environment.after` is this one).
        #[arg(long)]
        against: Option<String>,
    },
    /// Stop the line: pause every running rollout of every workload and start none until
    /// lifted. Rollbacks and automatic fallbacks still run. Needs the admin role.
    #[command(
        after_help = "Examples:\n  ringfence freeze --all --reason \"payments outage, INC-42\"\n  ringfence freeze --lift --reason \"INC-42 resolved\""
    )]
    Freeze {
        /// Every workload and environment (the only scope there is: say it).
        #[arg(long, required_unless_present = "lift", conflicts_with = "lift")]
        all: bool,
        /// Restart the line: the rollouts it paused resume.
        #[arg(long)]
        lift: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show a workload's rollout, traffic split and health (all workloads without a name).
    #[command(
        after_help = "Examples:\n  ringfence status\n  ringfence status checkout --watch\n  ringfence status checkout -o json"
    )]
    Status {
        workload: Option<String>,
        /// Keep showing live progress until interrupted.
        #[arg(long, short)]
        watch: bool,
    },
    /// Pause the rollout: bake time stops counting; health is still watched and still halts.
    #[command(after_help = "Example:\n  ringfence pause checkout --reason \"investigating latency\"")]
    Pause(Verb),
    /// Resume a paused rollout.
    #[command(after_help = "Example:\n  ringfence resume checkout")]
    Resume(Verb),
    /// Pass the current phase now (skips the rest of its bake; satisfies an approval gate).
    #[command(after_help = "Example:\n  ringfence promote checkout --reason \"approved by release manager\"")]
    Promote(Verb),
    /// Stop the rollout and send all traffic back to the stable version.
    #[command(after_help = "Example:\n  ringfence abort checkout --reason \"wrong build\"")]
    Abort(Verb),
    /// Redeploy the stable version onto fresh instances, one at a time (each leaves the
    /// traffic split before it stops): for instances that fail (a bad host, a leak), not code.
    #[command(
        after_help = "Example:\n  ringfence redeploy checkout --reason \"replica on host-7 leaks file descriptors\""
    )]
    Redeploy(Verb),
    /// Approve the bypass a halted rollout offers: its guard flags are turned off and the
    /// rollout goes on without the feature. Only the approvers `[mitigation]
    /// bypass_approvers` names may; the reason is required and recorded.
    #[command(
        after_help = "Example:\n  ringfence bypass checkout --reason \"new-checkout off until the tax fix (INC-88); payments work without it\""
    )]
    Bypass(Verb),
    /// Delete a workload: its instances, routes and router are stopped; its history stays
    /// (`events`), and applying its spec again brings it back. Needs the admin role.
    #[command(after_help = "Example:\n  ringfence delete checkout-legacy --reason \"replaced by checkout\"")]
    Delete {
        workload: String,
        /// Why (recorded with the event).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Return to the last known good: falls back a rollout in progress, or rolls back the stable release.
    #[command(after_help = "Examples:\n  ringfence rollback checkout\n  ringfence rollback checkout --to v1 --wait")]
    Rollback {
        workload: String,
        /// A release that was last known good earlier (default: the one before the current).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The timeline of a workload: every event with time, actor and reason.
    #[command(
        after_help = "Examples:\n  ringfence events checkout\n  ringfence events checkout --follow\n  ringfence events checkout -o json"
    )]
    Events {
        workload: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Include the controller's intents and actions.
        #[arg(long, short)]
        all: bool,
        /// Keep printing new events until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
    /// How long each phase needs at today's traffic: to pass a release as good as the stable one, and to catch the targets; warns of short bakes.
    #[command(
        after_help = "Examples:\n  ringfence plan checkout              # traffic measured at the router for 1 s\n  ringfence plan checkout --rps 200"
    )]
    Plan {
        workload: String,
        /// Plan for this many requests per second instead of measuring.
        #[arg(long)]
        rps: Option<f64>,
    },
    /// Feature flags: list them, and the kill switch.
    #[command(subcommand)]
    Flags(FlagsCommand),
    /// File a user's report of a problem; it counts against the rollout group that served them.
    #[command(
        after_help = "Example:\n  ringfence report checkout --user alice@example.com --message \"checkout button does nothing\""
    )]
    Report {
        workload: String,
        /// The user's key, as the router sees it (sticky header or cookie value).
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// The evidence behind the latest decision, in plain words.
    #[command(after_help = "Examples:\n  ringfence why checkout\n  ringfence why checkout -o json")]
    Why { workload: String },
    /// API tokens: create one for a person or a pipeline, list them, revoke one (admin only).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Incidents: every halted rollout opens one (its id is the rollout's); list, show,
    /// acknowledge and resolve them.
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// Follow-up items of the postmortems: add, list, assign, close.
    #[command(subcommand)]
    Followup(FollowupCommand),
    /// The blameless postmortem draft of a failed rollout, in Markdown (the latest failure's
    /// without ROLLOUT).
    #[command(
        after_help = "Examples:\n  ringfence postmortem checkout\n  ringfence postmortem checkout checkout-7 > INC-checkout-7.md\n  ringfence postmortem checkout checkout-7 --svg INC-checkout-7.svg"
    )]
    Postmortem {
        workload: String,
        rollout: Option<String>,
        /// Also write the chart of the new and the stable version's signals around the
        /// incident (SVG) to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// A failure-mode analysis of a workload's deployment path: a spec file alone, or a
    /// workload on the server (its spec, its plan at its traffic, its history and drills).
    /// Each finding has a severity, the field, the fix and the recommendation it serves.
    #[command(
        after_help = "Exit codes: 0 when nothing at --fail-on or above was found, 3 otherwise (so it can gate a pipeline).\n\nExamples:\n  ringfence lint examples/production.toml\n  ringfence lint checkout\n  ringfence lint checkout --rps 200 -o json\n  ringfence lint deploy/checkout.toml --sarif lint.sarif     # for a code-scanning UI\n  ringfence lint checkout --fail-on warning"
    )]
    Lint {
        /// A spec file (.toml), or the name of a workload on the server.
        target: String,
        /// Check the bakes at this many requests per second (default for a workload: its
        /// router's average since it started; a file alone: not checked).
        #[arg(long)]
        rps: Option<f64>,
        /// Also write the findings as SARIF 2.1.0 to this file (`-`: standard output, instead
        /// of the text).
        #[arg(long, value_name = "FILE")]
        sarif: Option<PathBuf>,
        /// The lowest severity that fails the command.
        #[arg(long, value_enum, default_value_t = drill::FailOn::Error)]
        fail_on: drill::FailOn,
    },
    /// Rehearse the mitigation: roll a drill release (the stable one's content) out to a
    /// capped share of users with a fault injected, check that it is detected and mitigated
    /// within the spec's `[drill]` targets, and record the report. Never promotes; opens no
    /// incident. Needs the deployer role.
    #[command(
        after_help = "Faults: error-rate[=SHARE] (the router answers 503), latency[=DURATION] (the router delays), crash (SIGKILL), hang (SIGSTOP), signal-outage (the analysis' counters unreadable: the rollout must hold), control-plane-down[=DURATION] (the workload's controller stops while the router fails half the drill's requests).\n\nExit codes with --wait: 0 passed, 10 failed or aborted, 11 timed out.\n\nExamples:\n  ringfence drill checkout --fault error-rate --wait\n  ringfence drill checkout --fault latency=300ms --weight 5 --wait\n  ringfence drill checkout --fault crash --outside-window --reason \"game day\"\n  ringfence drill checkout --abort"
    )]
    Drill {
        workload: String,
        /// The fault to inject.
        #[arg(long, required_unless_present = "abort")]
        fault: Option<String>,
        /// Percent of users on the drill release (capped by `[drill] max_weight`, its default).
        #[arg(long)]
        weight: Option<f64>,
        /// Run outside the workload's deployment windows.
        #[arg(long)]
        outside_window: bool,
        /// Why (recorded with the drill).
        #[arg(long, default_value = "")]
        reason: String,
        /// Abort the running drill: its users go back to the stable version.
        #[arg(long, conflicts_with_all = ["fault", "weight", "outside_window"])]
        abort: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// A workload's drills, newest first, with their reports.
    #[command(after_help = "Examples:\n  ringfence drills checkout\n  ringfence drills checkout -o json")]
    Drills { workload: String },
    /// Game day: which failure modes the workload's drills cover (and whether automatic
    /// mitigation relies on one they do not), the trend of times to detect and to mitigate.
    #[command(after_help = "Examples:\n  ringfence gameday checkout\n  ringfence gameday checkout --svg gameday.svg")]
    Gameday {
        workload: String,
        /// Also write the chart of times to detect and to mitigate (SVG) to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// DORA's five metrics of a workload over the last days, beside the 2024 report's clusters.
    #[command(
        after_help = "Examples:\n  ringfence dora checkout\n  ringfence dora checkout --days 90 -o json\n  ringfence dora checkout --svg dora.svg"
    )]
    Dora {
        workload: String,
        /// The window, in days back from now.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Also write the chart (deployments per day, change sizes) to this SVG file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum FollowupCommand {
    /// Add an improvement an incident's postmortem calls for.
    #[command(
        after_help = "Example:\n  ringfence followup add checkout --incident checkout-7 --title \"alert on p99 of the tax service\" \\\n      --owner bob --due-in 14d"
    )]
    Add {
        workload: String,
        /// The incident (its rollout's id).
        #[arg(long)]
        incident: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        owner: String,
        /// Due this long from now (`14d`).
        #[arg(long)]
        due_in: Option<String>,
    },
    /// A workload's items (`--open`: those not closed), overdue ones marked.
    #[command(after_help = "Example:\n  ringfence followup list checkout --open")]
    List {
        workload: String,
        #[arg(long)]
        open: bool,
    },
    /// Give an item an owner.
    #[command(after_help = "Example:\n  ringfence followup assign checkout fu-3 --owner carol")]
    Assign {
        workload: String,
        id: String,
        #[arg(long)]
        owner: String,
    },
    /// Close an item.
    #[command(after_help = "Example:\n  ringfence followup close checkout fu-3 --reason \"alert added in PR 412\"")]
    Close {
        workload: String,
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum IncidentCommand {
    /// A workload's incidents, newest first.
    #[command(after_help = "Example:\n  ringfence incident list checkout")]
    List { workload: String },
    /// One incident with its transitions.
    #[command(after_help = "Example:\n  ringfence incident show checkout checkout-7")]
    Show { workload: String, id: String },
    /// Take the incident: investigating becomes identified (deployer role).
    #[command(after_help = "Example:\n  ringfence incident ack checkout checkout-7 --reason \"on it (alice)\"")]
    Ack {
        workload: String,
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resolve it, once its mitigation is verified (deployer role). Without this, it resolves
    /// by itself when health has held for `[incident] confirm_after`.
    #[command(
        after_help = "Example:\n  ringfence incident resolve checkout checkout-7 --reason \"v2 stable for an hour\""
    )]
    Resolve {
        workload: String,
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once and stored nowhere (only a salted hash is kept).
    #[command(
        after_help = "Roles: viewer, deployer, approver, emergency-approver, flag-admin, reporter, router, admin; each on every workload, or on some with ROLE:W1,W2.\n\nExamples:\n  ringfence token create ci-checkout --role deployer:checkout --expires-in 90d\n  ringfence token create alice --role viewer --role approver:checkout,search\n  ringfence token create alertmanager --role reporter\n  (umask 077; ringfence token create edge-1 --role router | tail -n 1 > router.token)"
    )]
    Create {
        /// Who or what holds it: the actor of everything done with it.
        name: String,
        /// ROLE or ROLE:WORKLOAD,WORKLOAD; repeatable.
        #[arg(long = "role", required = true, value_name = "GRANT")]
        roles: Vec<String>,
        /// Valid for this long (e.g. 12h, 90d); forever when absent.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List the tokens (never their secrets).
    #[command(after_help = "Examples:\n  ringfence token list\n  ringfence token list -o json")]
    List,
    /// Revoke a token at once: its next call is refused.
    #[command(after_help = "Example:\n  ringfence token revoke 3fa9c2e1b4d0")]
    Revoke { id: String },
}

#[derive(Args, Debug)]
pub struct Verb {
    pub workload: String,
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until the rollout ends; exit 10 unless it completed.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 11).
    #[arg(long, default_value = "1h", value_parser = parse_dur)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "RINGFENCE_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Where the event log, logs and run files live.
    #[arg(long, env = "RINGFENCE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How often controller loops wake on their own.
    #[arg(long, env = "RINGFENCE_TICK", default_value = "100ms", value_parser = parse_dur)]
    pub tick: Duration,
    /// Leave replicas and routers running on a clean shutdown (they always survive a crash).
    #[arg(long, env = "RINGFENCE_KEEP_WORKLOADS")]
    pub keep_workloads: bool,
    /// A name the API answers to besides 127.0.0.1, localhost and [::1] (the `Host` a reverse
    /// proxy sends, e.g. deploy.example.com); repeatable. Requests naming any other host are
    /// refused (DNS rebinding).
    #[arg(long = "allowed-host", value_name = "HOST[:PORT]")]
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM); with --tls-key. Required to listen on
    /// an address other than loopback.
    #[arg(long, env = "RINGFENCE_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM; keep it readable by the server's user only).
    #[arg(long, env = "RINGFENCE_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the event log is: `sqlite` (events.db in the data directory, the default) or a
    /// PostgreSQL database, `postgres://USER@HOST:PORT/DB` (its password in
    /// --store-password-file, never in the URL).
    #[arg(long, env = "RINGFENCE_STORE", value_name = "sqlite|URL")]
    pub store: Option<String>,
    /// File holding the PostgreSQL password (mode 0600).
    #[arg(long, env = "RINGFENCE_STORE_PASSWORD_FILE", value_name = "PATH")]
    pub store_password_file: Option<PathBuf>,
    /// Run as one replica of several on the same PostgreSQL log, under this id (unique among
    /// them, e.g. the host name): each workload's controller runs on the replica holding its
    /// lease, any replica serves the API, and the others take over when one dies.
    #[arg(long, env = "RINGFENCE_REPLICA_ID", value_name = "ID")]
    pub replica_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct RouterArgs {
    /// Where users send traffic. Not needed when the listening socket is handed over in
    /// LISTEN_FDS (systemd socket activation; the server starts its routers this way).
    #[arg(long, env = "RINGFENCE_ROUTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin API (tables, stats, /metrics).
    #[arg(long, env = "RINGFENCE_ROUTER_ADMIN", default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// Persist the last table here and serve it again after a restart.
    #[arg(long, env = "RINGFENCE_ROUTER_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Write {"pid","listen","admin"} here once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Hand a copy of the users' socket to processes of this user that connect to a Unix
    /// socket at PATH (mode 0600): a ringfence server that adopts this router after its own
    /// restart keeps it there, so the address stays open, and connections wait instead of
    /// being refused, if this router exits. The server sets it for the routers it starts.
    /// PATH must be in a directory only this user can write to; a file there that is not a
    /// socket is left alone (the router then serves without the handover).
    #[arg(long, value_name = "PATH")]
    pub handover_socket: Option<PathBuf>,
    /// File holding the admin API's secret (read once at start, whitespace trimmed; must not be
    /// readable by group or others). Admin calls send it as `Authorization: Bearer <secret>`.
    #[arg(long, value_name = "PATH", conflicts_with = "insecure_admin")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin API without a secret: anyone who can connect to it can reroute all
    /// traffic. Only for a router run by hand for an experiment.
    #[arg(long)]
    pub insecure_admin: bool,
    /// Upstream timeout.
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    pub upstream_timeout: Duration,
    /// Threads serving users' connections, each with its own connections to upstreams, all
    /// accepting on the one socket. Default: one per CPU; at most 256.
    #[arg(long, env = "RINGFENCE_ROUTER_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Serve the router tier: every workload with `[router] kind = "tier"`, by host and path
    /// prefix, with tables fetched from this server's API (long-poll) and counters reported
    /// to it. Repeat for the replicas of a control plane: tables come from the first that
    /// answers, counters go to all.
    #[arg(long = "control-plane", value_name = "URL")]
    pub control_plane: Vec<String>,
    /// With --control-plane: the file holding an API token with the `router` role (mode 0600).
    #[arg(long, value_name = "PATH", requires = "control_plane")]
    pub api_token_file: Option<PathBuf>,
    /// With --control-plane: this router's name in `status` and the server's logs.
    #[arg(long, requires = "control_plane")]
    pub name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum FlagsCommand {
    /// The flags users are evaluating now, per rollout group, and the killed ones.
    #[command(after_help = "Example:\n  ringfence flags list checkout")]
    List { workload: String },
    /// Kill switch: turn a flag off for every user at once (audited; needs --reason).
    #[command(
        after_help = "Example:\n  ringfence flags kill checkout new-checkout --reason \"payments failing on the new path\""
    )]
    Kill {
        workload: String,
        flag: String,
        #[arg(long)]
        reason: String,
    },
    /// Release the kill switch: the flag follows its release's definition again.
    #[command(after_help = "Example:\n  ringfence flags restore checkout new-checkout --reason \"fixed in v7\"")]
    Restore {
        workload: String,
        flag: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process: the size does not matter
pub enum ReleaseCommand {
    /// Register an immutable release. The same version with other content is refused.
    #[command(
        after_help = "Examples:\n  ringfence release create checkout --version v2 --artifact registry/checkout@sha256:ab12 \\\n      --commit 3f9a2c1 --author alice --config LOG_LEVEL=info --config SAMPLE_ERROR_RATE=0\n  ringfence release create checkout --version v3 --migration m7 --migration-kind expand \\\n      --requires-schema users.email\n  ringfence release create checkout --version v5 --migration m8 --migration-kind contract \\\n      --removes users.email --after m7"
    )]
    Create {
        workload: String,
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "")]
        artifact: String,
        /// KEY=VALUE, repeatable: the configuration snapshot (environment of each replica).
        #[arg(long = "config", value_parser = parse_kv)]
        config: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        commit: String,
        #[arg(long, default_value = "")]
        author: String,
        #[arg(long, default_value = "")]
        message: String,
        /// When the change was committed, RFC 3339 (`git log -1 --format=%cI`): DORA's lead
        /// time for changes runs from it.
        #[arg(long)]
        committed_at: Option<String>,
        /// Flag key that guards the release's new code paths, repeatable.
        #[arg(long = "guarded-by")]
        guarded_by: Vec<String>,
        /// Id of the schema migration the release carries.
        #[arg(long)]
        migration: Option<String>,
        /// Flag definitions (flagd JSON file) users of this release evaluate over OFREP.
        #[arg(long)]
        flags: Option<PathBuf>,
        /// Refuse flags with any problem, even one flagd loads (otherwise: warnings).
        #[arg(long, requires = "flags")]
        strict: bool,
        /// The migration is additive: the previous release still works after it (the same as
        /// `--migration-kind expand`).
        #[arg(long, requires = "migration")]
        backward_compatible: bool,
        /// What the migration does to data: `expand` (additive), `contract` (removes what an
        /// earlier expand replaced; needs --removes and --after) or `irreversible` (never
        /// fallen back from blindly). Default: expand with --backward-compatible, else irreversible.
        #[arg(long, requires = "migration", value_parser = ["expand", "contract", "irreversible"])]
        migration_kind: Option<String>,
        /// A contract's removed schema element (`table.column`), repeatable.
        #[arg(long = "removes", requires = "migration")]
        removes: Vec<String>,
        /// A contract's expand: the migration of an earlier completed release it completes.
        #[arg(long, requires = "migration")]
        after: Option<String>,
        /// A schema element (`table.column`) this release's code needs, repeatable: a contract
        /// that removes it is refused while this release is the last known good.
        #[arg(long = "requires-schema")]
        requires_schema: Vec<String>,
        /// The release this one fixes (a hotfix): deploying it rolls a halted rollout of that
        /// release forward, replacing it.
        #[arg(long)]
        hotfix_for: Option<String>,
        /// The change's size since the release it follows: files changed.
        #[arg(long)]
        changed_files: Option<u64>,
        /// ... lines added and removed (compared with `environment.max_change_lines`).
        #[arg(long)]
        changed_lines: Option<u64>,
        /// ... commits.
        #[arg(long)]
        commits: Option<u64>,
    },
    /// Record a predeployment check about a release (code review, security scan, compliance,
    /// tests). Environments require theirs (`environment.requires`) before a deploy.
    #[command(
        after_help = "Examples:\n  ringfence release attest checkout v2 --kind code-review --source https://git.example/pr/81 \\\n      --subject sha256:ab12\n  ringfence release attest checkout v2 --kind security-scan --source trivy/run/77 --subject sha256:ab12 \\\n      --failed --detail \"CVE-2026-1234 in libfoo\""
    )]
    Attest {
        workload: String,
        version: String,
        /// What was checked: code-review, security-scan, compliance, tests, ...
        #[arg(long)]
        kind: String,
        /// Who or what checked it (a URL, a scanner's run).
        #[arg(long)]
        source: String,
        /// What was checked: the artifact, its digest, or the release's commit.
        #[arg(long)]
        subject: String,
        /// The check failed (default: passed).
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// List a workload's releases, oldest first.
    #[command(after_help = "Example:\n  ringfence release list checkout -o json")]
    List { workload: String },
    /// Show one release.
    #[command(after_help = "Example:\n  ringfence release show checkout v2")]
    Show { workload: String, version: String },
    /// Clear the hold a mitigation put on a release, so it may be deployed again. A mitigated
    /// release is held so that nothing deploys it again automatically; say why it is safe now.
    #[command(
        after_help = "Example:\n  ringfence release clear-hold checkout v3 --reason \"the payment timeout was the provider's outage (INC-231)\""
    )]
    ClearHold {
        workload: String,
        version: String,
        /// Why it may be deployed again (recorded with the event).
        #[arg(long)]
        reason: String,
    },
    /// Revoke a release: it never runs again (no deploy, no rollback to it). Not the stable
    /// version: deploy or roll back to another first.
    #[command(
        after_help = "Example:\n  ringfence release revoke checkout v3 --reason \"writes corrupt invoices (INC-231)\""
    )]
    Revoke {
        workload: String,
        version: String,
        /// Why it must never run again (recorded with the event).
        #[arg(long)]
        reason: String,
    },
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    ringfence_core::duration::parse(s).map(|d| d.std())
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, found {s:?}")),
    }
}

pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ringfence");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/share/ringfence");
    }
    PathBuf::from(".ringfence")
}

/// The server's warnings of an answer (bakes too short for the traffic), on stderr.
fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// A time as people read it (RFC 3339, UTC).
fn time(t: api::Timestamp) -> ringfence_core::Timestamp {
    ringfence_core::Timestamp(t.0)
}

fn print_json(v: &impl serde::Serialize) {
    outln!("{}", serde_json::to_string_pretty(v).expect("output serializes"));
}

async fn token_command(api: &ApiClient, t: &TokenCommand, json: bool) -> Result<ExitCode, CliError> {
    let show = |v: &api::Token| {
        let state = if let Some(r) = v.revoked_at {
            format!("revoked {}", time(r))
        } else if let Some(e) = v.expires_at {
            format!("expires {}", time(e))
        } else {
            "no expiry".into()
        };
        format!("{:<14} {:<20} {:<32} {}", v.id, v.name, v.grants.join(" "), state)
    };
    match t {
        TokenCommand::Create { name, roles, expires_in } => {
            let req = api::CreateToken { name: name.clone(), grants: roles.clone(), expires_in: expires_in.clone() };
            let v: api::CreatedToken = api.post("/v1/tokens", &req).await?;
            if json {
                print_json(&v);
            } else {
                outln!("{}", show(&v.view));
                outln!("token (shown once, stored nowhere; keep it in a secret store):");
                outln!("{}", v.token);
            }
        }
        TokenCommand::List => {
            let v: Vec<api::Token> = api.get("/v1/tokens").await?;
            if json {
                print_json(&v);
            } else {
                for t in &v {
                    outln!("{}", show(t));
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let v: api::Token = api.delete(&format!("/v1/tokens/{id}")).await?;
            if json {
                print_json(&v);
            } else {
                outln!("revoked: {}", show(&v));
            }
        }
    }
    Ok(ExitCode::Ok)
}

pub async fn run_client(cli: &Cli) -> Result<ExitCode, CliError> {
    let api = ApiClient::discover(&cli.server, cli.token_file.as_deref())?;
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Validate { files, strict } => validate(files, *strict, json),
        Command::Apply { file } => {
            let text = read_spec(file)?;
            let req = api::ApplySpec { spec: text, file: file.display().to_string() };
            let v: api::Applied = api.post("/v1/workloads", &req).await?;
            if json {
                print_json(&v);
            } else {
                if v.changed {
                    outln!("applied {}", v.workload);
                } else {
                    outln!("{} unchanged", v.workload);
                }
                print_warnings(&v.warnings);
            }
            Ok(ExitCode::Ok)
        }
        Command::Release(rc) => release(&api, rc, json).await,
        Command::Deploy { workload, version, wait, reason, emergency, incident, severity } => {
            let emergency = emergency.then(|| api::EmergencyClaim {
                incident: incident.clone().unwrap_or_default(),
                severity: severity.clone().unwrap_or_default(),
            });
            let req = api::Deploy { version: version.clone(), reason: reason.clone(), emergency };
            let v: api::Started = api.post(&format!("/v1/workloads/{workload}/deploy"), &req).await?;
            let mut id = v.rollout_id.clone();
            if json && !wait.wait {
                print_json(&v);
            } else if !json {
                if v.queued.is_empty() {
                    outln!("rollout {id} started: {workload} {version}");
                } else {
                    outln!("deployment of {workload} {version} queued; it starts by itself once it has:");
                    for w in &v.queued {
                        outln!("  - {w}");
                    }
                }
                print_warnings(&v.warnings);
            }
            if !wait.wait {
                return Ok(ExitCode::Ok);
            }
            let start = Instant::now();
            if id.is_empty() {
                id = wait_until_started(&api, workload, version, wait.timeout, json).await?;
            }
            wait_for(&api, workload, &id, wait.timeout.saturating_sub(start.elapsed()), json).await
        }
        Command::Approve(v) => govern(&api, "approve", v, json).await,
        Command::Reject(v) => govern(&api, "reject", v, json).await,
        Command::Parity { workload, against } => parity(&api, workload, against.as_deref(), json).await,
        Command::Freeze { lift, reason, .. } => {
            let path = if *lift { "/v1/line/restart" } else { "/v1/line/stop" };
            let v: api::LineChange = api.post(path, &api::Reason { reason: reason.clone() }).await?;
            if json {
                print_json(&v);
            } else if *lift {
                outln!(
                    "line restarted; resumed: {}",
                    if v.rollouts.is_empty() { "none".into() } else { v.rollouts.join(", ") }
                );
            } else {
                outln!(
                    "LINE STOPPED: no rollout starts or advances until `ringfence freeze --lift`; paused: {}",
                    if v.rollouts.is_empty() { "none".into() } else { v.rollouts.join(", ") }
                );
            }
            Ok(ExitCode::Ok)
        }
        Command::Status { workload: None, .. } => {
            let list: Vec<api::WorkloadSummary> = api.get("/v1/workloads").await?;
            if json {
                print_json(&list);
            } else {
                outln!("{:<24} {:<14} {:<12} {:<14} PHASE", "WORKLOAD", "STABLE", "RELEASE", "STATUS");
                for w in &list {
                    let r = w.rollout.as_ref();
                    outln!(
                        "{:<24} {:<14} {:<12} {:<14} {}",
                        w.name,
                        w.stable.as_deref().unwrap_or("-"),
                        r.map_or("-", |r| r.release.as_str()),
                        r.map_or("-", |r| r.status.as_str()),
                        r.map_or("-".into(), |r| format!("{}/{}", r.phase, r.phases))
                    );
                }
            }
            Ok(ExitCode::Ok)
        }
        Command::Status { workload: Some(w), watch } => {
            if !watch {
                let s: WorkloadStatus = api.get(&format!("/v1/workloads/{w}")).await?;
                if json {
                    print_json(&s);
                } else {
                    out!("{}", render_status(&s));
                }
                return Ok(ExitCode::Ok);
            }
            watch_status(&api, w, json).await
        }
        Command::Pause(v) => verb(&api, "pause", v, json).await,
        Command::Resume(v) => verb(&api, "resume", v, json).await,
        Command::Promote(v) => verb(&api, "promote", v, json).await,
        Command::Abort(v) => verb(&api, "abort", v, json).await,
        Command::Bypass(v) => verb(&api, "bypass", v, json).await,
        Command::Redeploy(v) => verb(&api, "redeploy", v, json).await,
        Command::Delete { workload, reason } => {
            let q = if reason.is_empty() {
                String::new()
            } else {
                format!("?reason={}", crate::http::encode_component(reason))
            };
            let v: api::Started = api.delete(&format!("/v1/workloads/{workload}{q}")).await?;
            if json {
                print_json(&v);
            } else {
                outln!("{workload} deleted: its instances and router are being stopped; its events remain");
            }
            Ok(ExitCode::Ok)
        }
        Command::Rollback { workload, to, reason, wait } => {
            let req = api::Rollback { to: to.clone(), reason: reason.clone() };
            let v: api::Started = api.post(&format!("/v1/workloads/{workload}/rollback"), &req).await?;
            let id = v.rollout_id.clone();
            if json && !wait.wait {
                print_json(&v);
            } else if !json {
                outln!("rollback of {workload} under way ({id})");
            }
            if wait.wait {
                // Waiting on a fall-back of a rollout in progress ends in `mitigated`, which is
                // what was asked for here; a fast-path rollback ends in `completed`.
                let code = wait_for(&api, workload, &id, wait.timeout, json).await?;
                let s: WorkloadStatus = api.get(&format!("/v1/workloads/{workload}")).await?;
                let ok = s.rollout.as_ref().is_some_and(|r| {
                    r.status == RolloutStatus::Completed
                        || (r.status == RolloutStatus::Mitigated
                            && r.decision.as_ref().is_some_and(|d| d.action == api::MitigationAction::ManualRollback))
                });
                return Ok(if ok { ExitCode::Ok } else { code });
            }
            Ok(ExitCode::Ok)
        }
        Command::Events { workload, after, all, follow } => events(&api, workload, *after, *all, *follow, json).await,
        Command::Flags(fc) => flags_command(&api, fc, json).await,
        Command::Plan { workload, rps } => {
            let q = rps.map(|r| format!("?rps={r}")).unwrap_or_default();
            use api::{PhaseNeeds, PlanAdvice};
            let p: PlanAdvice = api.get(&format!("/v1/workloads/{workload}/plan{q}")).await?;
            if json {
                print_json(&p);
                return Ok(ExitCode::Ok);
            }
            outln!(
                "at {:.1} req/s ({}), stable {} with {} errors; targets: errors x{}, latency x{}",
                p.rps,
                if p.measured { "measured" } else { "given" },
                p.stable.as_deref().unwrap_or("(none)"),
                ringfence_core::health::pct(p.stable_error_rate),
                p.target_error_ratio,
                p.target_latency_ratio
            );
            outln!("{:<14} {:>7} {:>9} {:>11} {:>11}  ADVICE", "PHASE", "WEIGHT", "BAKE", "NEEDED", "CATCHES IN");
            let mut short = false;
            let secs = |s: Option<f64>| s.map_or("never".into(), |n| format!("{n:.0}s"));
            for ph in &p.phases {
                short |= ph.warning.is_some();
                outln!(
                    "{:<14} {:>6}% {:>8.0}s {:>11} {:>11}  {}",
                    ph.name,
                    ph.weight,
                    ph.bake_s,
                    match ph.needs {
                        PhaseNeeds::Time => secs(ph.needed_s),
                        PhaseNeeds::MoreTraffic => "never".into(),
                        PhaseNeeds::GuardsOnly => "guards only".into(),
                    },
                    if ph.needs == PhaseNeeds::GuardsOnly { "-".into() } else { secs(ph.detect_s) },
                    ph.warning.as_deref().unwrap_or("ok")
                );
            }
            if p.power > 0.0 {
                outln!(
                    "NEEDED: for a release as good as the stable one to pass on the evidence (95% of the time); `status` counts it down."
                );
            }
            outln!(
                "CATCHES IN: the targets (errors x{}, latency x{}) caught with {:.0}% probability{}.",
                p.target_error_ratio,
                p.target_latency_ratio,
                if p.power > 0.0 { p.power * 100.0 } else { 80.0 },
                if p.phases.iter().filter(|ph| ph.needs != PhaseNeeds::GuardsOnly).count() > 1 {
                    "; in later phases, a regression that first appears there (one present from the start carries its evidence on)"
                } else {
                    ""
                }
            );
            if short && p.power > 0.0 {
                outln!(
                    "Bakes shorter than needed end pending: the phase extends until the evidence decides, then holds (never promotes)."
                );
            } else if short {
                outln!(
                    "This spec sets [health.analysis] power = 0: a phase passes when nothing is found by the end of its bake,\nso regressions smaller than what the bake can see may pass."
                );
            }
            Ok(ExitCode::Ok)
        }
        Command::Report { workload, user, message } => {
            let req = api::Report { user: user.clone(), message: message.clone() };
            let r: api::ReportAccepted = api.post(&format!("/v1/workloads/{workload}/reports"), &req).await?;
            if json {
                print_json(&r);
            } else {
                match (&r.group, &r.version) {
                    (Some(g), Some(v)) => outln!("report filed: {} is in group {g}, served by {v}", r.user),
                    _ => outln!("report filed: the router could not say which group {} is in", r.user),
                }
            }
            Ok(ExitCode::Ok)
        }
        Command::Why { workload } => {
            let w: Why = api.get(&format!("/v1/workloads/{workload}/why")).await?;
            if json {
                print_json(&w);
            } else {
                out!("{}", w.text);
                // The same, drawn and live, in the hub.
                let page = match &w.rollout {
                    Some(r) => format!(
                        "{}/ui/w/{}/r/{}",
                        api.base().trim_end_matches('/'),
                        crate::http::encode_component(workload),
                        crate::http::encode_component(&r.id)
                    ),
                    None => {
                        format!("{}/ui/w/{}", api.base().trim_end_matches('/'), crate::http::encode_component(workload))
                    }
                };
                if !w.text.ends_with('\n') {
                    outln!();
                }
                outln!("page: {page}");
            }
            Ok(ExitCode::Ok)
        }
        Command::Token(t) => token_command(&api, t, json).await,
        Command::Incident(c) => incident_command(&api, c, json).await,
        Command::Followup(c) => followup_command(&api, c, json).await,
        Command::Postmortem { workload, rollout, svg } => {
            let q =
                rollout.as_ref().map(|r| format!("?rollout={}", crate::http::encode_component(r))).unwrap_or_default();
            let p: api::Postmortem = api.get(&format!("/v1/workloads/{workload}/postmortem{q}")).await?;
            if let Some(path) = svg {
                let chart = api.get_text(&format!("/v1/workloads/{workload}/postmortem.svg{q}")).await?;
                std::fs::write(path, chart)
                    .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot write {}: {e}", path.display())))?;
            }
            if json {
                print_json(&p);
            } else {
                out!("{}", p.markdown);
            }
            Ok(ExitCode::Ok)
        }
        Command::Dora { workload, days, svg } => {
            let d: api::Dora = api.get(&format!("/v1/workloads/{workload}/dora?days={days}")).await?;
            if let Some(path) = svg {
                let chart = api.get_text(&format!("/v1/workloads/{workload}/dora.svg?days={days}")).await?;
                std::fs::write(path, chart)
                    .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot write {}: {e}", path.display())))?;
            }
            if json {
                print_json(&d);
            } else {
                print_dora(&d);
            }
            Ok(ExitCode::Ok)
        }
        Command::Lint { target, rps, sarif, fail_on } => {
            drill::lint(&api, target, *rps, sarif.as_deref(), *fail_on, json).await
        }
        Command::Drill { workload, fault, weight, outside_window, reason, abort, wait } => {
            let args = drill::DrillArgs {
                workload,
                fault: fault.as_deref(),
                weight: *weight,
                outside_window: *outside_window,
                reason,
                abort: *abort,
                wait: wait.wait,
                timeout: wait.timeout,
            };
            drill::drill(&api, &args, json).await
        }
        Command::Drills { workload } => drill::drills(&api, workload, json).await,
        Command::Gameday { workload, svg } => drill::gameday(&api, workload, svg.as_ref(), json).await,
        Command::Demo(_) | Command::Server(_) | Command::Router(_) | Command::SampleApp(_) | Command::Audit(_) => {
            unreachable!("run from main")
        }
    }
}

fn read_spec(file: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(file)
        .map_err(|e| CliError::new(ExitCode::Invalid, format!("cannot read spec file {}: {e}", file.display())))
}

fn validate(files: &[PathBuf], strict: bool, json: bool) -> Result<ExitCode, CliError> {
    let mut all = Vec::new();
    let mut failed = false;
    for f in files {
        if f.extension().is_some_and(|e| e == "json") {
            let (ok, report) = validate_flags(f, strict, json)?;
            failed |= !ok;
            all.push(report);
            continue;
        }
        let text = read_spec(f)?;
        match ringfence_core::spec::parse(&f.display().to_string(), &text) {
            Ok(spec) => {
                if !json {
                    outln!(
                        "{}: ok (workload {}, {} phases)",
                        f.display(),
                        spec.workload.name,
                        spec.rollout.phases.len()
                    );
                }
                all.push(json!({"file": f.display().to_string(), "valid": true, "errors": []}));
            }
            Err(errors) => {
                failed = true;
                if !json {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                }
                all.push(json!({"file": f.display().to_string(), "valid": false, "errors": errors}));
            }
        }
    }
    if json {
        print_json(&all);
    }
    Ok(if failed { ExitCode::Invalid } else { ExitCode::Ok })
}

/// Problems of a flag file, each as `FILE: PATH: MESSAGE (what it does)`.
fn flag_problems(file: &Path, problems: &[ringfence_flags::FlagError]) -> Vec<String> {
    problems.iter().map(|p| format!("{}: {p} ({})", file.display(), p.effect.describe())).collect()
}

/// Loads a flag file as flagd loads it: refused problems are errors, the others warnings
/// (errors too with `strict`). Whether it passed, and its JSON report.
fn validate_flags(f: &Path, strict: bool, json: bool) -> Result<(bool, serde_json::Value), CliError> {
    let text = std::fs::read_to_string(f)
        .map_err(|e| CliError::new(ExitCode::Invalid, format!("cannot read flag file {}: {e}", f.display())))?;
    // The bucketing the file records, or the one a release will record for it.
    let recorded = serde_json::from_str::<serde_json::Value>(&text).ok().is_some_and(|d| {
        d.get(ringfence_flags::SETTINGS_KEY).is_some_and(|s| s.get(ringfence_flags::FRACTIONAL_KEY).is_some())
    });
    let summary = |set: &ringfence_flags::FlagSet| match recorded {
        true => format!("{} flags, fractional {}", set.len(), set.bucketing()),
        false => format!("{} flags, fractional {} once released", set.len(), ringfence_flags::Bucketing::CURRENT),
    };
    let (errors, warnings, summary) = match ringfence_flags::FlagSet::parse_lenient(&text) {
        Err(errors) => (flag_problems(f, &errors), Vec::new(), String::new()),
        Ok((set, problems)) if strict => (flag_problems(f, &problems), Vec::new(), summary(&set)),
        Ok((set, problems)) => (Vec::new(), flag_problems(f, &problems), summary(&set)),
    };
    if !json {
        for e in &errors {
            eprintln!("{e}");
        }
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        if errors.is_empty() {
            let n = warnings.len();
            let w = if n == 0 { String::new() } else { format!(", {n} warning{}", if n == 1 { "" } else { "s" }) };
            outln!("{}: ok ({summary}{w})", f.display());
        }
    }
    let ok = errors.is_empty();
    Ok((ok, json!({"file": f.display().to_string(), "valid": ok, "errors": errors, "warnings": warnings})))
}

async fn release(api: &ApiClient, rc: &ReleaseCommand, json: bool) -> Result<ExitCode, CliError> {
    match rc {
        ReleaseCommand::Create {
            workload,
            version,
            artifact,
            config,
            commit,
            author,
            message,
            committed_at,
            guarded_by,
            migration,
            backward_compatible,
            migration_kind,
            removes,
            after,
            requires_schema,
            hotfix_for,
            flags,
            strict,
            changed_files,
            changed_lines,
            commits,
        } => {
            let flags = match flags {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        CliError::new(ExitCode::Invalid, format!("cannot read flag file {}: {e}", path.display()))
                    })?;
                    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                        CliError::new(
                            ExitCode::Invalid,
                            format!("{}:{}:{}: not JSON: {e}", path.display(), e.line(), e.column()),
                        )
                    })?;
                    // Loaded as flagd loads it; the server reports what flagd loads but cannot
                    // evaluate as warnings. --strict refuses those here.
                    match ringfence_flags::FlagSet::parse_lenient(&text) {
                        Err(errors) => {
                            return Err(CliError::new(ExitCode::Invalid, flag_problems(path, &errors).join("\n")));
                        }
                        Ok((_, problems)) if *strict && !problems.is_empty() => {
                            return Err(CliError::new(ExitCode::Invalid, flag_problems(path, &problems).join("\n")));
                        }
                        Ok(_) => {}
                    }
                    Some(doc)
                }
                None => None,
            };
            let req = ReleaseRequest {
                version: version.clone(),
                content: ReleaseContent {
                    artifact: artifact.clone(),
                    config: config.iter().cloned().collect::<BTreeMap<_, _>>(),
                    guarded_by: guarded_by.clone(),
                    migration: migration.as_ref().map(|id| Migration {
                        id: id.clone(),
                        backward_compatible: *backward_compatible,
                        kind: migration_kind.clone(),
                        removes: removes.clone(),
                        after: after.clone(),
                    }),
                    requires_schema: requires_schema.clone(),
                    hotfix_for: hotfix_for.clone(),
                    metadata: Metadata {
                        commit: commit.clone(),
                        author: author.clone(),
                        message: message.clone(),
                        committed_at: committed_at.clone(),
                        size: (changed_files.is_some() || changed_lines.is_some() || commits.is_some()).then(|| {
                            api::ChangeSize {
                                files: changed_files.unwrap_or(0),
                                lines: changed_lines.unwrap_or(0),
                                commits: commits.unwrap_or(0),
                            }
                        }),
                    },
                    flags,
                },
            };
            let v: api::ReleaseCreated = api.post(&format!("/v1/workloads/{workload}/releases"), &req).await?;
            if json {
                print_json(&v);
            } else {
                print_warnings(&v.warnings);
                let r = &v.release;
                if v.created {
                    outln!("release {} of {} registered ({})", r.version, r.workload, r.digest);
                } else {
                    outln!(
                        "release {} of {} already registered with the same content ({})",
                        r.version,
                        r.workload,
                        r.digest
                    );
                }
            }
            Ok(ExitCode::Ok)
        }
        ReleaseCommand::List { workload } => {
            let list: Vec<Release> = api.get(&format!("/v1/workloads/{workload}/releases")).await?;
            if json {
                print_json(&list);
            } else {
                outln!("{:<16} {:<26} {:<14} {:<12} ARTIFACT", "VERSION", "CREATED", "BY", "COMMIT");
                for r in list {
                    let mark = if r.revoked.is_some() {
                        " (revoked)"
                    } else if r.held.is_some() {
                        " (held)"
                    } else {
                        ""
                    };
                    outln!(
                        "{:<16} {:<26} {:<14} {:<12} {}",
                        format!("{}{mark}", r.version),
                        time(r.created_at),
                        r.created_by,
                        r.content.metadata.commit,
                        r.content.artifact
                    );
                }
            }
            Ok(ExitCode::Ok)
        }
        ReleaseCommand::ClearHold { workload, version, reason } => {
            let req = api::Reason { reason: reason.clone() };
            let v: api::Started =
                api.post(&format!("/v1/workloads/{workload}/releases/{version}/clear-hold"), &req).await?;
            if json {
                print_json(&v);
            } else {
                outln!("hold on {version} of {workload} cleared: it may be deployed again");
            }
            Ok(ExitCode::Ok)
        }
        ReleaseCommand::Attest { workload, version, kind, source, subject, failed, detail } => {
            let req = api::Attestation {
                kind: kind.clone(),
                source: source.clone(),
                subject: subject.clone(),
                passed: !failed,
                checked_at: None,
                detail: detail.clone(),
            };
            let v: api::GovernanceChange =
                api.post(&format!("/v1/workloads/{workload}/releases/{version}/attestations"), &req).await?;
            if json {
                print_json(&v);
            } else {
                for line in &v.recorded {
                    outln!("{line}");
                }
            }
            Ok(ExitCode::Ok)
        }
        ReleaseCommand::Revoke { workload, version, reason } => {
            let req = api::Reason { reason: reason.clone() };
            let v: api::Started =
                api.post(&format!("/v1/workloads/{workload}/releases/{version}/revoke"), &req).await?;
            if json {
                print_json(&v);
            } else {
                outln!("{version} of {workload} revoked: it never runs again");
            }
            Ok(ExitCode::Ok)
        }
        ReleaseCommand::Show { workload, version } => {
            let r: Release = api.get(&format!("/v1/workloads/{workload}/releases/{version}")).await?;
            if json {
                print_json(&r);
            } else {
                outln!("release   {} of {}", r.version, r.workload);
                outln!("digest    {}", r.digest);
                outln!("created   {} by {}", time(r.created_at), r.created_by);
                outln!("artifact  {}", r.content.artifact);
                outln!("commit    {}  author {}", r.content.metadata.commit, r.content.metadata.author);
                for (k, v) in &r.content.config {
                    outln!("config    {k}={v}");
                }
                if let Some(m) = &r.content.migration {
                    let kind = m
                        .kind
                        .clone()
                        .unwrap_or_else(|| if m.backward_compatible { "expand".into() } else { "irreversible".into() });
                    let removes = if m.removes.is_empty() {
                        String::new()
                    } else {
                        format!(", removes {}", m.removes.join(", "))
                    };
                    let after = m.after.as_ref().map(|a| format!(", after {a}")).unwrap_or_default();
                    outln!("migration {} ({kind}{removes}{after})", m.id);
                }
                if let Some(v) = &r.content.hotfix_for {
                    outln!("hotfix   for {v}");
                }
                if !r.content.requires_schema.is_empty() {
                    outln!("needs     {}", r.content.requires_schema.join(", "));
                }
                for f in &r.content.guarded_by {
                    outln!("guarded by flag {f}");
                }
                if let Some(h) = &r.held {
                    outln!(
                        "HELD      since rollout {} was mitigated ({}): `release clear-hold` to deploy it again",
                        h.rollout_id,
                        h.reason
                    );
                }
                if let Some(v) = &r.revoked {
                    outln!("REVOKED   by {} at {}: {}", v.actor, time(v.at), v.reason);
                }
            }
            Ok(ExitCode::Ok)
        }
    }
}

async fn verb(api: &ApiClient, name: &str, v: &Verb, json: bool) -> Result<ExitCode, CliError> {
    let req = api::Reason { reason: v.reason.clone() };
    let out: api::Started = api.post(&format!("/v1/workloads/{}/{name}", v.workload), &req).await?;
    if json {
        print_json(&out);
    } else {
        if out.rollout_id.is_empty() {
            outln!("{name}: {} (under way: `ringfence events {}` shows it)", v.workload, v.workload);
        } else {
            outln!("{name}: rollout {} of {}", out.rollout_id, v.workload);
        }
    }
    Ok(ExitCode::Ok)
}

/// `approve` and `reject`: prints what was recorded (a start too, when it was the last thing
/// a queued deployment waited for).
async fn govern(api: &ApiClient, name: &str, v: &Verb, json: bool) -> Result<ExitCode, CliError> {
    let req = api::Reason { reason: v.reason.clone() };
    let out: api::GovernanceChange = api.post(&format!("/v1/workloads/{}/{name}", v.workload), &req).await?;
    if json {
        print_json(&out);
    } else {
        for line in &out.recorded {
            outln!("{line}");
        }
    }
    Ok(ExitCode::Ok)
}

async fn parity(api: &ApiClient, workload: &str, against: Option<&str>, json: bool) -> Result<ExitCode, CliError> {
    let q = against.map(|a| format!("?against={}", crate::http::encode_component(a))).unwrap_or_default();
    let p: api::Parity = api.get(&format!("/v1/workloads/{workload}/parity{q}")).await?;
    if json {
        print_json(&p);
        return Ok(ExitCode::Ok);
    }
    let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
    outln!("{} ({}) against {} ({})", p.workload, v(&p.workload_version), p.against, v(&p.against_version));
    if p.differences.is_empty() {
        outln!("no difference beyond the version");
        return Ok(ExitCode::Ok);
    }
    let show = |x: &Option<serde_json::Value>| x.as_ref().map_or("(absent)".to_string(), |v| v.to_string());
    outln!("{:<8} {:<36} {:<28} {}", "AREA", "KEY", p.workload, p.against);
    for d in &p.differences {
        outln!("{:<8} {:<36} {:<28} {}", d.area, d.key, show(&d.workload), show(&d.against));
    }
    Ok(ExitCode::Ok)
}

/// A queued deployment: waits until its rollout starts (approvals, a window), showing what it
/// waits for, and returns the rollout's id.
async fn wait_until_started(
    api: &ApiClient,
    workload: &str,
    version: &str,
    timeout: Duration,
    json: bool,
) -> Result<String, CliError> {
    let start = Instant::now();
    let mut shown = None;
    loop {
        let st: api::WorkloadStatus = api.get(&format!("/v1/workloads/{workload}")).await?;
        match (&st.governance.queued, &st.rollout) {
            (Some(q), _) if q.version == version => {
                let now = format!("{} of {} approval(s)", q.approvals.len(), q.approvals_needed);
                if !json && shown.as_ref() != Some(&now) {
                    outln!(
                        "queued: {now}{}",
                        st.governance.closed.as_ref().map(|c| format!("; {c}")).unwrap_or_default()
                    );
                    shown = Some(now);
                }
            }
            (_, Some(r)) if r.release == version && r.status.is_active() => return Ok(r.id.clone()),
            (_, Some(r)) if r.release == version && st.governance.queued.is_none() => return Ok(r.id.clone()),
            _ => {
                return Err(CliError::new(
                    ExitCode::RolloutFailed,
                    format!(
                        "the queued deployment of {workload} {version} was dropped (`ringfence events {workload}` says why)"
                    ),
                ));
            }
        }
        if start.elapsed() > timeout {
            return Err(CliError::new(
                ExitCode::WaitTimeout,
                format!("the deployment of {workload} {version} is still queued after {timeout:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints progress until the rollout ends. Exit 0 if it completed, 10 otherwise.
pub async fn wait_for(
    api: &ApiClient,
    workload: &str,
    id: &str,
    timeout: Duration,
    json: bool,
) -> Result<ExitCode, CliError> {
    let start = Instant::now();
    let mut after = 0;
    loop {
        let evs = api.events_after(workload, after).await?;
        for e in &evs {
            after = e.seq;
            if !json && e.rollout_id() == Some(id) {
                outln!("{}", timeline_line(e));
            }
        }
        let r: Rollout = api.get(&format!("/v1/workloads/{workload}/rollouts/{id}")).await?;
        // Halted with exposure frozen (automatic fallback off, or a bypass on offer) is an end
        // for whoever waits: a person decides now, and a pipeline step must fail.
        if !r.status.is_active() || r.status == RolloutStatus::Halted {
            if json {
                print_json(&r);
            } else {
                outln!("rollout {id} {}", r.status.as_str());
            }
            return Ok(if r.status == RolloutStatus::Completed { ExitCode::Ok } else { ExitCode::RolloutFailed });
        }
        if start.elapsed() > timeout {
            return Err(CliError::new(
                ExitCode::WaitTimeout,
                format!("rollout {id} is still {} after {timeout:?}", r.status.as_str()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn timeline_line(e: &Event) -> String {
    let what = as_logged(e).map_or_else(|| format!("{} ({})", e.kind, e.reason), |c| explain::describe(&c));
    format!("{:>5}  {}  {:<12} {}", e.seq, time(e.at), e.actor, what)
}

/// Events shown by default: what a person cares about, not every controller step.
pub fn is_notable(e: &Event) -> bool {
    !as_logged(e).is_some_and(|c| {
        matches!(
            c.kind,
            EventKind::ActionIntended { .. } | EventKind::ActionSucceeded { .. } | EventKind::ReplicaStopped { .. }
        )
    })
}

/// An event as the log records it, for the core's words about it; `None` for a type this
/// build does not know (a newer server's), which is then shown by its type and reason.
pub fn as_logged(e: &Event) -> Option<ringfence_core::Event> {
    serde_json::from_value(serde_json::to_value(e).ok()?).ok()
}

async fn events(
    api: &ApiClient,
    workload: &str,
    after: u64,
    all: bool,
    follow: bool,
    json: bool,
) -> Result<ExitCode, CliError> {
    let mut after = after;
    loop {
        let evs = api.events_after(workload, after).await?;
        after = evs.last().map_or(after, |e| e.seq);
        // The same events in both formats: the controller's own intents and actions only
        // with --all.
        let shown: Vec<&Event> = evs.iter().filter(|e| all || is_notable(e)).collect();
        if json && !follow {
            print_json(&shown);
            return Ok(ExitCode::Ok);
        }
        for e in shown {
            if json {
                outln!("{}", serde_json::to_string(e).expect("events serialize"));
            } else {
                outln!("{}", timeline_line(e));
            }
        }
        if !follow {
            return Ok(ExitCode::Ok);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn watch_status(api: &ApiClient, workload: &str, json: bool) -> Result<ExitCode, CliError> {
    let tty = std::io::stdout().is_terminal() && !json;
    let mut last = String::new();
    loop {
        let s: WorkloadStatus = api.get(&format!("/v1/workloads/{workload}")).await?;
        if json {
            outln!("{}", serde_json::to_string(&s).expect("status serializes"));
        } else {
            let text = render_status(&s);
            if tty {
                out!("\x1b[2J\x1b[H{text}");
            } else if text != last {
                outln!("{text}");
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The status screen: who is stable, where the rollout is, how traffic splits.
pub fn render_status(s: &WorkloadStatus) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "workload   {} ({:?})", s.workload, s.criticality);
    let _ = writeln!(o, "stable     {}", s.stable.as_deref().unwrap_or("(none)"));
    if let Some(l) = &s.last_known_good {
        let _ = writeln!(o, "lkg        {} (since {}, rollout {})", l.version, time(l.at), l.rollout_id);
    }
    if let Some(p) = &s.pin {
        let _ = writeln!(o, "pinned     to {}: {}", p.version, p.reason);
    }
    if let Some(l) = &s.leader {
        let _ = writeln!(o, "leader     replica {} (lease token {})", l.replica, l.token);
    }
    if let Some(r) = &s.router {
        match &r.backend {
            Some(b) => {
                let _ = writeln!(
                    o,
                    "router     HAProxy backend {b}, users at http://{} (runtime API {})",
                    r.listen, r.admin
                );
            }
            None if r.kind == "tier" => {
                let _ = writeln!(o, "router     the router tier ({})", r.admin);
            }
            None => {
                let _ = writeln!(o, "router     http://{} (admin http://{})", r.listen, r.admin);
            }
        }
    }
    for t in &s.tier_routers {
        let _ = writeln!(
            o,
            "  edge     {} serves table {}, reported {} ago",
            t.name,
            t.generation,
            ringfence_core::duration::Dur::ms(t.reported_ms_ago)
        );
    }
    if let Some((generation, groups)) = &s.routes {
        let split: Vec<String> = groups
            .iter()
            .map(|g| {
                let fault = match g.fault {
                    Some(f) if f.error_bp > 0 => format!(" [DRILL: 503 on {}%]", f.error_bp as f64 / 100.0),
                    Some(f) if f.delay_ms > 0 => format!(" [DRILL: +{} ms]", f.delay_ms),
                    _ => String::new(),
                };
                format!(
                    "{} {} {}{fault}",
                    g.name,
                    g.version,
                    ringfence_core::health::pct(g.weight_bp as f64 / 10_000.0)
                )
            })
            .collect();
        let _ = writeln!(o, "traffic    {} (table {generation})", split.join(" | "));
    }
    let mut by_version: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in &s.replicas {
        by_version.entry(&r.version).or_default().push(r.endpoint.clone());
    }
    for (v, ports) in by_version {
        let _ = writeln!(o, "replicas   {v}: {}", ports.join(" "));
    }
    if let Some(w) = &s.warm {
        let _ = writeln!(
            o,
            "warm       {} (the old stack, no traffic: a rollback switches back to it; retired at {})",
            w.version,
            time(w.until)
        );
    }
    if let Some(r) = &s.rollout
        && let Some(phase) = r.current_phase()
    {
        let _ = writeln!(o, "rollout    {} of {}: {}", r.id, r.release, r.status.as_str().to_uppercase());
        if r.status.is_active() && r.status != RolloutStatus::Mitigating {
            let baked = r.baked_ms;
            let bake = phase.bake_ms.max(1);
            let frac = if r.stage == Stage::Baking { (baked as f64 / bake as f64).min(1.0) } else { 0.0 };
            let bar_len = 24;
            let filled = (frac * bar_len as f64).round() as usize;
            // Past its bake, a phase waits for evidence: say so instead of a full bar.
            let progress = if r.stage == Stage::Baking && baked >= bake {
                format!(
                    "bake of {} served; {} {:.0}s for the evidence to decide (pending signals below)",
                    phase.bake,
                    if r.held_since.is_some() { "held" } else { "extended" },
                    (baked - bake) as f64 / 1000.0
                )
            } else {
                format!("{:?} {:.1}s/{}", r.stage, baked as f64 / 1000.0, phase.bake)
            };
            let _ = writeln!(
                o,
                "phase      {}/{} {} at {}% [{}{}] {progress}",
                r.phase + 1,
                r.phases.len(),
                phase.name,
                phase.weight,
                "#".repeat(filled),
                ".".repeat(bar_len - filled),
            );
        }
        let plan: Vec<String> = r
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mark = if i < r.phase || r.status == RolloutStatus::Completed {
                    "✓"
                } else if i == r.phase {
                    "▶"
                } else {
                    " "
                };
                let ring = if p.segment.is_some() { " + chosen users" } else { "" };
                let shadow = p.shadow.map(|s| format!(" + copies of {s}%")).unwrap_or_default();
                format!("{mark} {} {}%{ring}{shadow}", p.name, p.weight)
            })
            .collect();
        let _ = writeln!(o, "plan       {}", plan.join("  →  "));
        if let Some(d) = &r.decision {
            let _ = writeln!(o, "decision   {:?}: {}", d.action, d.summary);
        }
        if let Some(v) = &r.last_verdict {
            let _ = writeln!(o, "verdict    {} ({} analysis, the last that decided something)", v.health, v.analyzer);
        }
    }
    if let Some(live) = &s.health {
        let v = &live.verdict;
        let level =
            v.model.as_ref().map(|m| format!("{:?}", m.level).to_lowercase()).unwrap_or_else(|| v.health.to_string());
        let _ =
            writeln!(o, "health     {level} now ({} analysis over {:.1}s)", v.analyzer, v.window_ms as f64 / 1000.0);
        for sig in &v.signals {
            let _ = writeln!(o, "  {:<9}  {:<22} {}", sig.health.to_string(), sig.signal, sig.detail);
        }
        if let Some(m) = &v.model {
            for c in &m.components {
                let _ = writeln!(o, "component  {} ({:?}): {}", c.name, c.criticality, c.health);
            }
        }
    }
    for n in &s.notifications_failing {
        let _ = writeln!(o, "notify     NOT DELIVERED: {n}");
    }
    for d in &s.drills {
        let what = match &d.report {
            None => format!("RUNNING since {} ({}% of users on {})", time(d.started_at), d.weight, d.version),
            Some(r) => format!(
                "{} {}{}",
                r.outcome,
                time(r.ended_at),
                r.time_to_detect_ms.map_or(String::new(), |t| format!(", detected in {:.1} s", t as f64 / 1000.0))
            ),
        };
        let _ = writeln!(o, "drill      {:<14} {:<10} {what} ({})", d.fault, d.trigger, d.id);
    }
    let g = &s.governance;
    if let Some(l) = &g.line {
        let _ =
            writeln!(o, "LINE       STOPPED by {} at {}: {} (`ringfence freeze --lift`)", l.by, time(l.at), l.reason);
    }
    if let Some(env) = &g.environment {
        let _ = writeln!(
            o,
            "env        {env}{}",
            g.after.as_ref().map(|a| format!(" (after {a}: `ringfence parity {}`)", s.workload)).unwrap_or_default()
        );
    }
    if let Some(c) = &g.closed {
        let _ = writeln!(
            o,
            "window     closed: {c}{}",
            g.next_open.map(|t| format!("; opens {}", time(t))).unwrap_or_default()
        );
    }
    if let Some(q) = &g.queued {
        let _ = writeln!(
            o,
            "queued     {}{} by {}: {} of {} approval(s){}",
            if q.emergency.is_some() { "EMERGENCY " } else { "" },
            q.version,
            q.requested_by,
            q.approvals.len(),
            q.approvals_needed,
            q.approvals.iter().map(|a| format!(" ✓ {}", a.by)).collect::<String>()
        );
        for w in &q.waiting_for {
            let _ = writeln!(o, "  waits    {w}");
        }
    }
    for a in &g.approvals {
        let _ = writeln!(
            o,
            "approved   {}by {} at {}{}",
            a.phase.map(|p| format!("phase {} ", p + 1)).unwrap_or_default(),
            a.by,
            time(a.at),
            if a.comment.is_empty() { String::new() } else { format!(": {}", a.comment) }
        );
    }
    if let Some(e) = &g.emergency {
        let _ = writeln!(o, "emergency  incident {} ({}): {}", e.incident, e.severity, e.justification);
    }
    for w in &g.owed {
        let _ = writeln!(
            o,
            "owed       {} of {}: {} (due {}){}",
            w.gate,
            w.version,
            w.outcome.as_deref().unwrap_or("pending").to_uppercase(),
            time(w.due),
            if w.detail.is_empty() { String::new() } else { format!(": {}", w.detail) }
        );
    }
    for a in &s.alerts_firing {
        let _ = writeln!(
            o,
            "alert      {} firing since {}{}",
            a.alertname,
            time(a.since),
            if a.summary.is_empty() { String::new() } else { format!(": {}", a.summary) }
        );
    }
    o
}

async fn flags_command(api: &ApiClient, fc: &FlagsCommand, json: bool) -> Result<ExitCode, CliError> {
    match fc {
        FlagsCommand::List { workload } => {
            let v: api::Flags = api.get(&format!("/v1/workloads/{workload}/flags")).await?;
            if json {
                print_json(&v);
                return Ok(ExitCode::Ok);
            }
            for g in &v.groups {
                outln!("group {} ({}, {}% of users):", g.group, g.version, g.weight_bp as f64 / 100.0);
                let defs = g.flags.as_ref().and_then(|f| f["flags"].as_object());
                for (key, def) in defs.into_iter().flatten() {
                    outln!(
                        "  {key:<28} {:<9} default {}",
                        def["state"].as_str().unwrap_or("?"),
                        def["defaultVariant"].as_str().unwrap_or("-")
                    );
                }
            }
            for (flag, k) in &v.killed {
                outln!("KILLED {flag} by {} at {}: {}", k.actor, time(k.at), k.reason);
            }
            Ok(ExitCode::Ok)
        }
        FlagsCommand::Kill { workload, flag, reason } => {
            let req = api::Reason { reason: reason.clone() };
            let v: api::FlagChange = api.post(&format!("/v1/workloads/{workload}/flags/{flag}/kill"), &req).await?;
            if json {
                print_json(&v);
            } else {
                let seq = v.seq.map_or("unchanged".into(), |s| s.to_string());
                outln!("flag {flag} of {workload} is OFF for every user (kill switch; event {seq})");
            }
            Ok(ExitCode::Ok)
        }
        FlagsCommand::Restore { workload, flag, reason } => {
            let req = api::Reason { reason: reason.clone() };
            let v: api::FlagChange = api.post(&format!("/v1/workloads/{workload}/flags/{flag}/restore"), &req).await?;
            if json {
                print_json(&v);
            } else {
                outln!("flag {flag} of {workload} follows its release again");
            }
            Ok(ExitCode::Ok)
        }
    }
}

async fn followup_command(api: &ApiClient, c: &FollowupCommand, json: bool) -> Result<ExitCode, CliError> {
    let show = |f: &api::FollowUp| {
        outln!(
            "{:<7} {:<6} {:<16} {:<12} {:<24} {}",
            f.id,
            if f.closed_at.is_some() {
                "closed"
            } else if f.overdue {
                "OVERDUE"
            } else {
                "open"
            },
            f.incident,
            if f.owner.is_empty() { "-" } else { f.owner.as_str() },
            f.due.map_or("-".to_string(), |d| time(d).to_string()),
            f.title
        );
        for (channel, reference) in &f.exported {
            outln!("        exported to {channel}: {reference}");
        }
    };
    let one = |f: api::FollowUp| {
        if json {
            print_json(&f);
        } else {
            show(&f);
        }
        Ok(ExitCode::Ok)
    };
    match c {
        FollowupCommand::Add { workload, incident, title, owner, due_in } => {
            let req = api::NewFollowUp {
                incident: incident.clone(),
                title: title.clone(),
                owner: owner.clone(),
                due_in: due_in.clone(),
            };
            one(api.post(&format!("/v1/workloads/{workload}/followups"), &req).await?)
        }
        FollowupCommand::List { workload, open } => {
            let list: Vec<api::FollowUp> = api.get(&format!("/v1/workloads/{workload}/followups")).await?;
            let list: Vec<_> = list.into_iter().filter(|f| !open || f.closed_at.is_none()).collect();
            if json {
                print_json(&list);
            } else {
                outln!("{:<7} {:<6} {:<16} {:<12} {:<24} TITLE", "ID", "STATE", "INCIDENT", "OWNER", "DUE");
                list.iter().for_each(show);
            }
            Ok(ExitCode::Ok)
        }
        FollowupCommand::Assign { workload, id, owner } => {
            let path = format!("/v1/workloads/{workload}/followups/{}/assign", crate::http::encode_component(id));
            one(api.post(&path, &api::AssignFollowUp { owner: owner.clone() }).await?)
        }
        FollowupCommand::Close { workload, id, reason } => {
            let path = format!("/v1/workloads/{workload}/followups/{}/close", crate::http::encode_component(id));
            one(api.post(&path, &api::Reason { reason: reason.clone() }).await?)
        }
    }
}

async fn incident_command(api: &ApiClient, c: &IncidentCommand, json: bool) -> Result<ExitCode, CliError> {
    let show = |i: &api::Incident| {
        outln!("incident {} ({}) of {}: {} {}", i.id, i.severity, i.workload, i.release, i.state.to_uppercase());
        outln!("  {}", i.summary);
        for t in &i.transitions {
            outln!("  {}  {:<13} {:<12} {}", time(t.at), t.state, t.by, t.note);
        }
        if let Some(u) = i.updates.last() {
            outln!("  last update {}: {}", time(u.at), u.stakeholders);
        }
        for (role, who) in
            [("commander", &i.commander), ("communications", &i.communications), ("escalation", &i.escalation)]
        {
            if !who.is_empty() {
                outln!("  {role}: {who}");
            }
        }
    };
    match c {
        IncidentCommand::List { workload } => {
            let list: Vec<api::Incident> = api.get(&format!("/v1/workloads/{workload}/incidents")).await?;
            if json {
                print_json(&list);
            } else {
                outln!("{:<20} {:<5} {:<14} {:<10} {:<24} SUMMARY", "ID", "SEV", "STATE", "RELEASE", "DETECTED");
                for i in &list {
                    outln!(
                        "{:<20} {:<5} {:<14} {:<10} {:<24} {}",
                        i.id,
                        i.severity,
                        i.state,
                        i.release,
                        time(i.detected_at),
                        i.summary
                    );
                }
            }
        }
        IncidentCommand::Show { workload, id } => {
            let path = format!("/v1/workloads/{workload}/incidents/{}", crate::http::encode_component(id));
            let i: api::Incident = api.get(&path).await?;
            if json {
                print_json(&i);
            } else {
                show(&i);
            }
        }
        IncidentCommand::Ack { workload, id, reason } | IncidentCommand::Resolve { workload, id, reason } => {
            let verb = if matches!(c, IncidentCommand::Ack { .. }) { "ack" } else { "resolve" };
            let path = format!("/v1/workloads/{workload}/incidents/{}/{verb}", crate::http::encode_component(id));
            let i: api::Incident = api.post(&path, &api::Reason { reason: reason.clone() }).await?;
            if json {
                print_json(&i);
            } else {
                show(&i);
            }
        }
    }
    Ok(ExitCode::Ok)
}

fn print_dora(d: &api::Dora) {
    outln!("DORA metrics of {} from {} to {}", d.workload, time(d.from), time(d.to));
    let row = |name: &str, m: &api::DoraMetric, fmt: &dyn Fn(f64) -> String| {
        outln!(
            "  {:<28} {:<14} {:<8} {}",
            name,
            m.value.map_or("-".to_string(), fmt),
            m.band.as_deref().unwrap_or(""),
            m.reference
        );
    };
    row("deployment frequency", &d.deployment_frequency, &|v| format!("{v:.2}/day"));
    row("lead time for changes", &d.lead_time, &|v| format!("{v:.1} h"));
    row("change fail rate", &d.change_fail_rate, &|v| format!("{:.0}%", v * 100.0));
    row("failed deployment recovery", &d.recovery_time, &|v| format!("{:.1} min", v * 60.0));
    row("deployment rework rate", &d.rework_rate, &|v| format!("{:.0}%", v * 100.0));
    outln!("  {} deployment(s) in the window", d.deployments.len());
}

#[cfg(test)]
mod tests {
    fn help(args: &[&str]) -> String {
        let mut argv = vec!["ringfence"];
        argv.extend_from_slice(args);
        argv.push("--help");
        super::command().try_get_matches_from(argv).expect_err("--help ends parsing").to_string()
    }

    #[test]
    fn commands_that_talk_to_no_server_do_not_offer_its_options() {
        for cmd in ["sample-app", "server", "router", "demo"] {
            let text = help(&[cmd]);
            for opt in ["--server", "--token-file", "--output"] {
                assert!(!text.contains(opt), "`{cmd} --help` offers {opt}:\n{text}");
            }
        }
        let validate = help(&["validate"]);
        assert!(validate.contains("--output") && !validate.contains("--server"), "{validate}");
        for cmd in [&["status"][..], &["deploy"], &["release", "create"], &["token", "create"]] {
            let text = help(cmd);
            assert!(text.contains("--server") && text.contains("--token-file"), "{cmd:?}:\n{text}");
        }
    }

    #[test]
    fn every_command_shows_an_example() {
        fn walk(cmd: &clap::Command, path: &mut Vec<String>, missing: &mut Vec<String>) {
            if cmd.get_subcommands().next().is_none() {
                let after = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                if !after.contains("Example") {
                    missing.push(path.join(" "));
                }
            }
            for sub in cmd.get_subcommands() {
                path.push(sub.get_name().to_string());
                walk(sub, path, missing);
                path.pop();
            }
        }
        let mut missing = Vec::new();
        walk(&super::command(), &mut Vec::new(), &mut missing);
        missing.retain(|m| m != "help" && !m.ends_with(" help"));
        assert!(missing.is_empty(), "commands without an example in --help: {missing:?}");
    }
}
