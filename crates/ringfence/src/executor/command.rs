//! The command executor: the team's own hooks run the instances (`kind = "command"`).
//!
//! For fleets ringfence does not run itself: `deploy` makes a replica of a version run
//! wherever the team runs things (a container runtime, hosts over ssh, a Kubernetes
//! deployment, local processes) and says where it serves; `stop` takes it away; `status` says
//! whether it still runs. Readiness and probes are ringfence's own HTTP checks on the endpoint,
//! as for the process executor, so the rest of ringfence treats both alike.
//!
//! Each run of a hook gets the slot in its arguments and environment, runs in a process group
//! of its own with the spec's timeout (past it the whole group is killed), and writes its
//! output to a file rather than a pipe: a hook that leaves a background process behind (which
//! inherits its output) then cannot hold ringfence waiting. Every run is appended to the
//! workload's hook log, `logs/<workload>/hooks.log`; a failed run's last lines are in its error,
//! which the event log keeps.
//!
//! Instances are `cmd:<id>@<endpoint>`: the id the deploy hook printed (or one ringfence made),
//! and the endpoint, so that `stop` and `status` can name both to the hooks after a restart.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringfence_core::spec::{ExecutorSpec, HooksSpec};

use super::{ExecError, InstanceStatus, Replica, Slot, Started};
use crate::http::HttpClient;

/// The most of a hook's output read back (its tail): enough for `endpoint=` lines and an error.
const MAX_OUTPUT: u64 = 64 * 1024;

pub const PREFIX: &str = "cmd:";

#[derive(Clone)]
pub struct CommandExecutor {
    data_dir: PathBuf,
    run_dir: PathBuf,
    log_dir: PathBuf,
    ringfence: PathBuf,
    http: HttpClient,
    /// The last answer of `status` per instance, and when it was asked.
    statuses: Arc<Mutex<HashMap<String, Checked>>>,
}

#[derive(Debug, Clone)]
struct Checked {
    /// When `status` last answered; `None` before its first answer.
    at: Option<Instant>,
    status: InstanceStatus,
    running_check: bool,
}

/// What one run of a hook needs besides its command.
struct Run<'a> {
    hook: &'static str,
    slot: Slot<'a>,
    spec: &'a ExecutorSpec,
    hooks: &'a HooksSpec,
    /// The release's configuration (deploy only).
    config: Option<&'a BTreeMap<String, String>>,
    router: Option<&'a str>,
    instance: Option<&'a Instance>,
    port: Option<u16>,
    /// Secret values known to the caller (a release's), kept out of errors and the hook log.
    secrets: &'a [String],
}

/// A command instance as its id names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub endpoint: String,
}

impl Instance {
    pub fn parse(instance: &str) -> Option<Instance> {
        let rest = instance.strip_prefix(PREFIX)?;
        let (id, endpoint) = rest.rsplit_once('@')?;
        Some(Instance { id: id.into(), endpoint: endpoint.into() })
    }

    fn name(&self) -> String {
        format!("{PREFIX}{}@{}", self.id, self.endpoint)
    }
}

impl CommandExecutor {
    pub fn new(data_dir: &Path, ringfence: PathBuf, http: HttpClient) -> CommandExecutor {
        CommandExecutor {
            data_dir: data_dir.to_path_buf(),
            run_dir: data_dir.join("run"),
            log_dir: data_dir.join("logs"),
            ringfence,
            http,
            statuses: Arc::default(),
        }
    }

    pub fn hook_log(&self, workload: &str) -> PathBuf {
        self.log_dir.join(workload).join("hooks.log")
    }

    pub(super) async fn ensure(&self, r: &Replica<'_>) -> Result<Started, ExecError> {
        let hooks = hooks_of(r.spec, r.version, r.replica)?;
        let slot = Slot { workload: r.workload, version: r.version, replica: r.replica };
        // A port the hook may use when it runs the instance on this machine (`{port}`).
        let port =
            super::free_port().map_err(|source| ExecError::Io { what: "cannot find a free port".into(), source })?;
        let run = Run {
            hook: "deploy",
            slot,
            spec: r.spec,
            hooks,
            config: Some(r.config),
            router: r.router,
            instance: None,
            port: Some(port),
            secrets: r.secrets,
        };
        let out = self.run(&run, &hooks.deploy).await?;
        let answer = parse_answer(&out).map_err(|why| ExecError::Hook {
            hook: "deploy",
            version: r.version.into(),
            replica: r.replica,
            why: format!("{why}; it printed: {}", tail(&out, 3)),
        })?;
        let instance = Instance {
            id: answer.instance.unwrap_or_else(|| format!("{}/{}/{}-{}", r.workload, r.version, r.replica, nonce())),
            endpoint: answer.endpoint,
        };
        let deadline = Instant::now() + r.spec.readiness.timeout.std();
        while !self.ready(&instance.endpoint, &r.spec.readiness.path).await {
            if Instant::now() >= deadline {
                // Not ready: it cannot take traffic; take it away again rather than leave it.
                let stop = Run { hook: "stop", instance: Some(&instance), config: None, port: None, ..run };
                let stopped = self.run(&stop, &hooks.stop).await;
                return Err(ExecError::Hook {
                    hook: "deploy",
                    version: r.version.into(),
                    replica: r.replica,
                    why: format!(
                        "{} was not ready within {} (GET {}){}",
                        instance.endpoint,
                        r.spec.readiness.timeout,
                        r.spec.readiness.path,
                        match stopped {
                            Ok(_) => "; stopped again".to_string(),
                            Err(e) => format!("; stopping it failed too: {e}"),
                        }
                    ),
                });
            }
            tokio::time::sleep(r.spec.readiness.interval.std()).await;
        }
        let name = instance.name();
        self.statuses.lock().expect("statuses lock").insert(
            name.clone(),
            Checked { at: Some(Instant::now()), status: InstanceStatus::Running, running_check: false },
        );
        Ok(Started { instance: name, endpoint: instance.endpoint, adopted: answer.adopted })
    }

    /// The last known status; a stale one is refreshed in the background, so a tick never
    /// waits on a hook.
    pub(super) fn status(&self, slot: Slot<'_>, instance: &str, spec: &ExecutorSpec) -> InstanceStatus {
        let Some(parsed) = Instance::parse(instance) else {
            return InstanceStatus::Exited(format!("not an instance of the command executor: {instance:?}"));
        };
        let Some(hooks) = spec.hooks.as_ref() else { return InstanceStatus::Running };
        let Some(status_hook) = hooks.status.clone() else { return InstanceStatus::Running };
        let mut statuses = self.statuses.lock().expect("statuses lock");
        let entry = statuses.entry(instance.to_string()).or_insert(Checked {
            at: None,
            status: InstanceStatus::Running,
            running_check: false,
        });
        if !entry.running_check && entry.at.is_none_or(|at| at.elapsed() >= hooks.status_every.std()) {
            entry.running_check = true;
            let me = self.clone();
            let (spec, hooks, name) = (spec.clone(), hooks.clone(), instance.to_string());
            let (workload, version, replica) = (slot.workload.to_string(), slot.version.to_string(), slot.replica);
            tokio::spawn(async move {
                let slot = Slot { workload: &workload, version: &version, replica };
                let run = Run {
                    hook: "status",
                    slot,
                    spec: &spec,
                    hooks: &hooks,
                    config: None,
                    router: None,
                    instance: Some(&parsed),
                    port: None,
                    secrets: &[],
                };
                let status = match me.run(&run, &status_hook).await {
                    Ok(_) => InstanceStatus::Running,
                    Err(ExecError::HookFailed { status, output, .. }) => {
                        InstanceStatus::Exited(format!("the status hook says it ended ({status}): {output}"))
                    }
                    // A hook that could not run or timed out says nothing about the instance.
                    Err(e) => {
                        tracing::warn!(workload, instance = name, error = %e, "status hook failed");
                        InstanceStatus::Running
                    }
                };
                let mut statuses = me.statuses.lock().expect("statuses lock");
                // A stop in the meantime removed the entry: it stays removed.
                if let Some(c) = statuses.get_mut(&name) {
                    *c = Checked { at: Some(Instant::now()), status, running_check: false };
                }
            });
        }
        entry.status.clone()
    }

    pub(super) async fn stop(
        &self,
        slot: Slot<'_>,
        instance: &str,
        spec: &ExecutorSpec,
        kind: super::StopKind,
    ) -> Result<(), ExecError> {
        let hooks = hooks_of(spec, slot.version, slot.replica)?;
        let Some(parsed) = Instance::parse(instance) else { return Ok(()) };
        let (hook, argv) = match (kind, &hooks.undo) {
            (super::StopKind::Undo, Some(undo)) => ("undo", undo),
            _ => ("stop", &hooks.stop),
        };
        let run = Run {
            hook,
            slot,
            spec,
            hooks,
            config: None,
            router: None,
            instance: Some(&parsed),
            port: None,
            secrets: &[],
        };
        self.run(&run, argv).await?;
        self.statuses.lock().expect("statuses lock").remove(instance);
        Ok(())
    }

    /// A workload-level hook (see [`super::HookCall`]), run like the instance hooks.
    pub(super) async fn run_hook(&self, call: &super::HookCall<'_>) -> Result<String, ExecError> {
        let hooks = HooksSpec {
            deploy: Vec::new(),
            stop: Vec::new(),
            undo: None,
            scale: None,
            status: None,
            timeout: ringfence_core::duration::Dur::ms(call.timeout.as_millis() as u64),
            status_every: ringfence_core::duration::Dur::secs(2),
        };
        let run = Run {
            hook: call.hook,
            slot: Slot { workload: call.workload, version: call.version, replica: 0 },
            spec: call.spec,
            hooks: &hooks,
            config: Some(call.env),
            router: None,
            instance: None,
            port: None,
            secrets: &[],
        };
        self.run(&run, call.argv).await
    }

    async fn ready(&self, endpoint: &str, path: &str) -> bool {
        let url = format!("http://{endpoint}{path}");
        matches!(self.http.get(&url, Duration::from_millis(500)).await, Ok(r) if r.status.is_success())
    }

    /// Runs one hook to its end or its timeout; its output (both streams) on success.
    async fn run(&self, run: &Run<'_>, argv: &[String]) -> Result<String, ExecError> {
        let r = run;
        let hook_err = |why: String| ExecError::Hook {
            hook: r.hook,
            version: r.slot.version.into(),
            replica: r.slot.replica,
            why,
        };
        let env = crate::secrets::resolve_all(&self.data_dir, &r.spec.env).map_err(hook_err)?;
        let mut secrets = crate::secrets::values(&self.data_dir, &[&r.spec.env]);
        secrets.extend(r.secrets.iter().cloned());
        let subst = |arg: &str| {
            let mut a = arg
                .replace("{version}", r.slot.version)
                .replace("{replica}", &r.slot.replica.to_string())
                .replace("{workload}", r.slot.workload)
                .replace("{ringfence}", &self.ringfence.to_string_lossy());
            if let Some(p) = r.port {
                a = a.replace("{port}", &p.to_string());
            }
            if let Some(i) = r.instance {
                a = a.replace("{instance}", &i.id).replace("{endpoint}", &i.endpoint);
            }
            a
        };
        let argv: Vec<String> = argv.iter().map(|a| subst(a)).collect();
        let dir = self.run_dir.join(r.slot.workload);
        std::fs::create_dir_all(&dir)
            .map_err(|source| ExecError::Io { what: format!("cannot create {}", dir.display()), source })?;
        let out_path = dir.join(format!("{}.{}.{}-{}.out", r.slot.version, r.slot.replica, r.hook, nonce()));
        let out = std::fs::File::create(&out_path)
            .map_err(|source| ExecError::Io { what: format!("cannot create {}", out_path.display()), source })?;
        let err = out
            .try_clone()
            .map_err(|source| ExecError::Io { what: format!("cannot open {}", out_path.display()), source })?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(&env)
            .envs(r.config.into_iter().flatten())
            .env("RINGFENCE_HOOK", r.hook)
            .env("RINGFENCE_WORKLOAD", r.slot.workload)
            .env("RINGFENCE_VERSION", r.slot.version)
            .env("RINGFENCE_REPLICA", r.slot.replica.to_string())
            .env("RINGFENCE_BIN", &self.ringfence)
            .env("RINGFENCE_READINESS_PATH", &r.spec.readiness.path)
            .envs(r.port.map(|p| ("PORT", p.to_string())))
            .envs(r.instance.map(|i| ("RINGFENCE_INSTANCE", i.id.clone())))
            .envs(r.instance.map(|i| ("RINGFENCE_ENDPOINT", i.endpoint.clone())))
            .envs(r.router.map(|a| ("OFREP_ENDPOINT", format!("http://{a}"))))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: a Ctrl-C meant for the server does not reach what it deploys, and
            // a timeout reaches everything it started.
            .process_group(0)
            .kill_on_drop(false);
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&out_path);
                return Err(hook_err(format!("cannot run `{}`: {e}", argv[0])));
            }
        };
        let pid = child.id().unwrap_or(0);
        let waited = tokio::time::timeout(r.hooks.timeout.std(), child.wait()).await;
        // A hook may echo what it was given: its output is evidence, its secrets are not.
        let output = crate::secrets::redact(&read_tail(&out_path), &secrets);
        let _ = std::fs::remove_file(&out_path);
        let result = match waited {
            Err(_) => {
                if pid > 0 {
                    let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
                }
                let _ = child.wait().await;
                Err(hook_err(format!(
                    "`{}` did not finish within {} and was killed{}",
                    argv.join(" "),
                    r.hooks.timeout,
                    last_lines(&output)
                )))
            }
            Ok(Err(e)) => Err(hook_err(format!("cannot wait for `{}`: {e}", argv[0]))),
            Ok(Ok(status)) if status.success() => Ok(output.clone()),
            Ok(Ok(status)) => Err(ExecError::HookFailed {
                hook: r.hook,
                version: r.slot.version.into(),
                replica: r.slot.replica,
                status: status.to_string(),
                output: tail(&output, 5),
            }),
        };
        self.log(r, &argv, started.elapsed(), &result, &output);
        result
    }

    /// Appends one run to the workload's hook log; the log is evidence, not a condition of
    /// the run.
    fn log(&self, r: &Run<'_>, argv: &[String], took: Duration, result: &Result<String, ExecError>, output: &str) {
        use std::io::Write as _;
        let path = self.hook_log(r.slot.workload);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        let line = format!(
            "--- {} {} {} replica {}{} `{}` {:.3}s: {}\n{}{}",
            ringfence_core::Timestamp(crate::state::now().millis()),
            r.hook,
            r.slot.version,
            r.slot.replica,
            r.instance.map(|i| format!(" instance {}", i.name())).unwrap_or_default(),
            argv.join(" "),
            took.as_secs_f64(),
            outcome,
            output,
            if output.is_empty() || output.ends_with('\n') { "" } else { "\n" }
        );
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

fn hooks_of<'a>(spec: &'a ExecutorSpec, version: &str, replica: u32) -> Result<&'a HooksSpec, ExecError> {
    spec.hooks.as_ref().ok_or_else(|| ExecError::Hook {
        hook: "deploy",
        version: version.into(),
        replica,
        why: "the spec has no [executor.hooks]".into(),
    })
}

/// What the deploy hook printed.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    endpoint: String,
    instance: Option<String>,
    adopted: bool,
}

fn parse_answer(output: &str) -> Result<Answer, String> {
    let mut endpoint = None;
    let mut instance = None;
    let mut adopted = false;
    for line in output.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("endpoint=") {
            endpoint = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("instance=") {
            instance = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("adopted=") {
            adopted = v.trim() == "true";
        }
    }
    let endpoint = endpoint.ok_or("it printed no `endpoint=HOST:PORT` line")?;
    let (host, port) = endpoint.rsplit_once(':').ok_or(format!("endpoint {endpoint:?} is not HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) || endpoint.contains(['/', '@', ' ']) {
        return Err(format!("endpoint {endpoint:?} is not HOST:PORT"));
    }
    if let Some(id) = &instance {
        let ok = !id.is_empty()
            && id.len() <= 200
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'));
        if !ok {
            return Err(format!("instance {id:?} must be 1 to 200 of A-Z a-z 0-9 . _ - : /"));
        }
    }
    Ok(Answer { endpoint, instance, adopted })
}

fn nonce() -> String {
    use rand::Rng as _;
    format!("{:08x}", rand::rng().random::<u32>())
}

fn read_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_OUTPUT {
        use std::io::Seek as _;
        let _ = f.seek(std::io::SeekFrom::Start(len - MAX_OUTPUT));
    }
    let mut bytes = Vec::new();
    let _ = f.take(MAX_OUTPUT).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn tail(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() { "(nothing)".into() } else { lines[start..].join(" | ") }
}

fn last_lines(output: &str) -> String {
    if output.trim().is_empty() { String::new() } else { format!("; last output: {}", tail(output, 5)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_answer_needs_an_endpoint_and_a_plain_instance_id() {
        let a = parse_answer("starting\nendpoint=127.0.0.1:8080\ninstance=web-1\n").expect("valid");
        assert_eq!(a, Answer { endpoint: "127.0.0.1:8080".into(), instance: Some("web-1".into()), adopted: false });
        assert!(parse_answer("endpoint=10.0.0.7:80\nadopted=true").expect("valid").adopted);
        for (out, says) in [
            ("ready", "no `endpoint=HOST:PORT`"),
            ("endpoint=localhost", "not HOST:PORT"),
            ("endpoint=host:0", "not HOST:PORT"),
            ("endpoint=h:80/x", "not HOST:PORT"),
            ("endpoint=h:80\ninstance=a b", "must be 1 to 200"),
            ("endpoint=h:80\ninstance=a@b", "must be 1 to 200"),
        ] {
            let e = parse_answer(out).expect_err(out);
            assert!(e.contains(says), "{out:?}: {e}");
        }
    }

    #[test]
    fn an_instance_name_carries_its_endpoint() {
        let i = Instance { id: "checkout/v2/0-1a2b3c4d".into(), endpoint: "[::1]:8080".into() };
        assert_eq!(Instance::parse(&i.name()), Some(i.clone()));
        assert_eq!(Instance::parse("proc:12:34"), None);
    }
}
