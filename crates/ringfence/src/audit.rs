//! `ringfence audit`: checks the event log's hash chain and signed digests, and exports the
//! log as JSON Lines. Offline, on the data directory (or any copy of the log), without a
//! server: the log is opened read-only, so it may run beside one (docs/audit.md).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ringfence_core::Timestamp;
use ringfence_store::audit::{self, AuditError, Report};

use crate::exit::{CliError, ExitCode};

const VERIFY_HELP: &str = "\
Every event is chained to the one before it by its hash, and digests of the chain are signed \
with the key beside the log (audit.key). Without --public-key the digests are checked with the \
audit.pub beside the log, which whoever can rewrite the log can replace too: keep a copy of it \
elsewhere and give that one.

Exit codes: 0 intact, 3 tampering found (every finding is printed), 1 the log could not be \
checked (missing, unreadable, no public key).

Examples:
  ringfence audit verify
  ringfence audit verify --data-dir /var/lib/ringfence --public-key ~/ringfence-audit.pub
  ringfence audit verify --log /backups/events.db --public-key ~/ringfence-audit.pub -o json";

const EXPORT_HELP: &str = "\
One JSON object per line: each event (record \"event\": seq, at in ms, actor, reason, workload, \
type, rollout_id, body, hash), then with --digests each signed digest that covers any of them \
(record \"digest\"). Token salts and hashes are redacted, as the API redacts them. The export \
says nothing about integrity: run `ringfence audit verify` for that.

Examples:
  ringfence audit export > events.jsonl
  ringfence audit export --data-dir /var/lib/ringfence --digests --out /backups/audit.jsonl
  ringfence audit export --after 1200 | jq -c 'select(.type == \"rollout_halted\")'";

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check that no event was changed, reordered or removed since it was written.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Write the event log as JSON Lines (one object per event, with its hash).
    #[command(after_help = EXPORT_HELP)]
    Export(ExportArgs),
}

/// Which log: the data directory's, or a file.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// The server's data directory; its event log is DIR/events.db. Default: the server's
    /// default data directory.
    #[arg(long = "data-dir", visible_alias = "data", value_name = "DIR", env = "RINGFENCE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The event log file itself (a copy, a backup); it takes precedence over --data-dir
    /// (which may come from $RINGFENCE_DATA_DIR).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    // These commands talk to no server: the global client options are taken here, hidden and
    // ignored, so `--help` does not offer them (cli.rs' NOT_CLIENTS does the same for
    // top-level commands; these are one level down, out of its reach).
    #[arg(id = "server", long = "server", hide = true, num_args = 1)]
    _server: Option<String>,
    #[arg(id = "token_file", long = "token-file", hide = true, num_args = 1)]
    _token_file: Option<String>,
}

impl LogArgs {
    /// The log file these options name.
    pub fn log_file(&self) -> PathBuf {
        match &self.log {
            Some(file) => file.clone(),
            None => self.data_dir.clone().unwrap_or_else(crate::cli::default_data_dir).join(ringfence_store::LOG_FILE),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: LogArgs,
    /// The public key to check the digests with (64 hex digits, or 32 raw bytes): your own
    /// copy of audit.pub. Default: the audit.pub beside the log.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: LogArgs,
    /// Only the events after this one.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub after: u64,
    /// Write to this file (created private, 0600; replaced if it exists) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Add the signed digests covering the exported events, after them.
    #[arg(long)]
    pub digests: bool,
}

/// Runs an audit command. `json`: the global `-o json`.
pub fn run(cmd: &AuditCommand, json: bool) -> Result<ExitCode, CliError> {
    match cmd {
        AuditCommand::Verify(args) => verify(args, json),
        AuditCommand::Export(args) => export(args),
    }
}

fn failed(e: AuditError) -> CliError {
    CliError::new(ExitCode::Failure, e.to_string())
}

fn verify(args: &VerifyArgs, json: bool) -> Result<ExitCode, CliError> {
    let log = args.source.log_file();
    let report = audit::verify(&log, args.public_key.as_deref()).map_err(failed)?;
    let text = if json {
        let mut t = serde_json::to_string_pretty(&report).expect("the report serializes");
        t.push('\n');
        t
    } else {
        render(&report)
    };
    print(&text)?;
    Ok(if report.intact { ExitCode::Ok } else { ExitCode::Invalid })
}

/// The report as people read it: the verdict first, then each finding, or what is proven and
/// what is only chained.
pub fn render(r: &Report) -> String {
    let what = format!(
        "{}, {} event{}, {} digest{}",
        r.log.display(),
        r.events,
        if r.events == 1 { "" } else { "s" },
        r.digests,
        if r.digests == 1 { "" } else { "s" }
    );
    let mut out = String::new();
    if r.intact {
        out.push_str(&format!("intact: {what}\n"));
    } else {
        let n = r.findings.len();
        out.push_str(&format!("TAMPERED: {what}: {n} finding{}\n", if n == 1 { "" } else { "s" }));
        for f in &r.findings {
            out.push_str(&format!("  {}\n", f.message));
        }
    }
    if r.events == 0 && r.last_seq == 0 {
        out.push_str("  the log is empty\n");
    }
    // After a finding, what still matches proves little about the rest: the findings say it.
    if let Some(s) = r.signed.filter(|_| r.intact) {
        let key = r.public_key.as_ref().map(|k| format!(" with key {}", k.key_id)).unwrap_or_default();
        let events = if s.through_seq == 1 { "event 1".to_string() } else { format!("events 1 to {}", s.through_seq) };
        out.push_str(&format!("  {events}: proven by digest {}, signed {}{key}\n", s.digest, Timestamp(s.signed_at)));
    }
    if let Some(c) = r.chained_only.filter(|_| r.intact) {
        let events =
            if c.first == c.last { format!("event {}", c.first) } else { format!("events {} to {}", c.first, c.last) };
        out.push_str(&format!(
            "  {events}: chained only; no signed digest covers {} yet, so removing {} from the end would go unnoticed\n",
            if c.first == c.last { "it" } else { "them" },
            if c.first == c.last { "it" } else { "them" },
        ));
    }
    match &r.public_key {
        Some(k) if k.beside_log => out.push_str(&format!(
            "  public key: {} ({}), beside the log: whoever can rewrite the log can replace it; keep a copy elsewhere and give it with --public-key\n",
            k.path.display(),
            k.key_id
        )),
        Some(k) => out.push_str(&format!("  public key: {} ({})\n", k.path.display(), k.key_id)),
        None => {}
    }
    out
}

fn export(args: &ExportArgs) -> Result<ExitCode, CliError> {
    let log = args.source.log_file();
    match &args.out {
        Some(file) => {
            // Private: the log is the server user's alone (datadir.rs), and so is a copy of it.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(file)
                .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot create {}: {e}", file.display())))?;
            let mut w = std::io::BufWriter::new(f);
            let summary = audit::export(&log, args.after, args.digests, &mut w).map_err(|e| match e {
                AuditError::Write(e) => {
                    CliError::new(ExitCode::Failure, format!("cannot write {}: {e}", file.display()))
                }
                e => failed(e),
            })?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot write {}: {e}", file.display())))?;
            let range = match (summary.first_seq, summary.last_seq) {
                (Some(a), Some(b)) => format!(" ({a} to {b})"),
                _ => String::new(),
            };
            eprintln!(
                "exported {} event{}{range} and {} digest{} from {} to {}",
                summary.events,
                if summary.events == 1 { "" } else { "s" },
                summary.digests,
                if summary.digests == 1 { "" } else { "s" },
                log.display(),
                file.display()
            );
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            match audit::export(&log, args.after, args.digests, &mut w) {
                Ok(_) => {}
                // A reader that went away (`| head`) has what it wanted, as with the client
                // commands' output.
                Err(AuditError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::Ok),
                Err(AuditError::Write(e)) => {
                    return Err(CliError::new(ExitCode::Failure, format!("cannot write the output: {e}")));
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }
    Ok(ExitCode::Ok)
}

/// Writes the whole output at once; a closed stdout ends it quietly.
fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::new(ExitCode::Failure, format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<crate::cli::Cli, clap::Error> {
        let mut argv = vec!["ringfence"];
        argv.extend_from_slice(args);
        let m = crate::cli::command().try_get_matches_from(argv)?;
        <crate::cli::Cli as clap::FromArgMatches>::from_arg_matches(&m)
    }

    fn help(args: &[&str]) -> String {
        let mut argv = args.to_vec();
        argv.push("--help");
        parse(&argv).expect_err("--help ends parsing").to_string()
    }

    #[test]
    fn the_audit_commands_offer_no_server_options_and_show_examples() {
        for cmd in ["verify", "export"] {
            let text = help(&["audit", cmd]);
            assert!(text.contains("Examples:") && text.contains("--data-dir") && text.contains("--log"), "{text}");
            for opt in ["--server", "--token-file"] {
                assert!(!text.contains(opt), "`audit {cmd} --help` offers {opt}:\n{text}");
            }
        }
        assert!(help(&["audit", "verify"]).contains("--public-key"));
        // A stray client option changes nothing.
        assert!(parse(&["audit", "verify", "--server", "http://x", "--data", "/tmp/d"]).is_ok());
    }

    #[test]
    fn the_log_is_found_as_the_server_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let args = LogArgs { data_dir: Some(dir.path().to_owned()), log: None, _server: None, _token_file: None };
        assert_eq!(args.log_file(), dir.path().join("events.db"));
        let args = LogArgs { log: Some(PathBuf::from("/x/copy.db")), ..args };
        assert_eq!(args.log_file(), PathBuf::from("/x/copy.db"), "--log wins over $RINGFENCE_DATA_DIR");
    }

    #[test]
    fn a_report_reads_as_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            let mut s = ringfence_store::Store::open(&path).unwrap();
            let e = ringfence_core::NewEvent {
                at: Timestamp(1),
                actor: "t".into(),
                reason: "r".into(),
                workload: "w".into(),
                kind: ringfence_core::EventKind::RolloutPaused { rollout_id: "w-1".into() },
            };
            s.append_now(vec![e.clone(), e.clone()]).unwrap();
            s.append_now(vec![e]).unwrap();
        }
        let verify_args = |public_key| VerifyArgs {
            source: LogArgs { data_dir: Some(dir.path().to_owned()), log: None, _server: None, _token_file: None },
            public_key,
        };
        let r = audit::verify(&path, None).unwrap();
        let text = render(&r);
        assert!(text.starts_with("intact: ") && text.contains("3 events, 1 digest"), "{text}");
        assert!(text.contains("events 1 to 2: proven by digest 1"), "{text}");
        assert!(text.contains("event 3: chained only"), "{text}");
        assert!(text.contains("beside the log"), "{text}");
        assert_eq!(verify(&verify_args(None), false).unwrap(), ExitCode::Ok);

        rusqlite::Connection::open(&path).unwrap().execute("UPDATE events SET reason = 'x' WHERE seq = 2", []).unwrap();
        let text = render(&audit::verify(&path, None).unwrap());
        assert!(
            text.starts_with("TAMPERED: ") && text.contains("\n  event 2 was changed after it was written\n"),
            "{text}"
        );
        assert_eq!(verify(&verify_args(None), true).unwrap(), ExitCode::Invalid);
        let err = verify(&verify_args(Some(dir.path().join("mine.pub"))), false).unwrap_err();
        assert_eq!(err.code, ExitCode::Failure);
        assert!(err.message.contains("mine.pub"), "{}", err.message);
    }
}
