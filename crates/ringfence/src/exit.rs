//! Exit codes, in one place. Documented in docs/cli.md; scripts and CI pipelines rely on them.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The command did what was asked.
    Ok = 0,
    /// Something failed that is not one of the cases below.
    Failure = 1,
    /// The command line itself is wrong (clap's own code).
    Usage = 2,
    /// Input was refused: an invalid spec, release or request.
    Invalid = 3,
    /// A workload, release or rollout does not exist.
    NotFound = 4,
    /// The request conflicts with the current state (a rollout in progress, a release that
    /// exists with other content, ...).
    Conflict = 5,
    /// The server could not be reached.
    Unreachable = 6,
    /// The server refused the caller: no token or an invalid one (401), or a token without
    /// the role the command needs (403).
    Denied = 7,
    /// A rollout that was waited on ended without completing: halted, mitigated or aborted.
    RolloutFailed = 10,
    /// Waiting on a rollout timed out before it ended.
    WaitTimeout = 11,
}

#[derive(Debug)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
}

impl CliError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> CliError {
        CliError { code, message: message.into() }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> CliError {
        CliError::new(ExitCode::Failure, format!("{e:#}"))
    }
}
