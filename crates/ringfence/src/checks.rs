//! Predeployment checks ringfence runs itself (`[[environment.checks]]`): a command, or a
//! webhook signed by the Standard Webhooks scheme. Either way the result is an attestation of
//! the check's name about the release's artifact; the core decides what it allows.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use ringfence_core::governance::Attestation;
use ringfence_core::release::Release;
use ringfence_core::spec::CheckSpec;

use crate::http::HttpClient;

/// The longest detail kept from a check's output or answer.
const MAX_DETAIL: usize = 512;

fn clip(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(MAX_DETAIL) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Runs `check` about `release` of `workload`; never fails: what went wrong is a failed
/// attestation that says so.
pub async fn run(
    http: &HttpClient,
    data_dir: &Path,
    workload: &str,
    release: &Release,
    check: &CheckSpec,
) -> Attestation {
    let (source, result) = match (&check.command, &check.webhook) {
        (Some(cmd), _) => {
            (format!("ringfence check `{}`", cmd.join(" ")), command(cmd, workload, release, check).await)
        }
        (None, Some(url)) => {
            (format!("ringfence check {url}"), webhook(http, data_dir, url, workload, release, check).await)
        }
        (None, None) => ("ringfence check".to_string(), Err("neither a command nor a webhook".to_string())),
    };
    let (passed, detail) = match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Attestation {
        kind: check.name.clone(),
        source,
        subject: release.content.artifact.clone(),
        passed,
        checked_at: None,
        detail: clip(&detail),
    }
}

async fn command(cmd: &[String], workload: &str, release: &Release, check: &CheckSpec) -> Result<String, String> {
    let mut c = tokio::process::Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("RINGFENCE_WORKLOAD", workload)
        .env("RINGFENCE_VERSION", &release.version)
        .env("RINGFENCE_ARTIFACT", &release.content.artifact)
        .env("RINGFENCE_COMMIT", &release.content.metadata.commit)
        .env("RINGFENCE_CHECK", &check.name)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(check.timeout.std(), c.output())
        .await
        .map_err(|_| format!("did not finish within {}", check.timeout))?
        .map_err(|e| format!("cannot run `{}`: {e}", cmd[0]))?;
    let last =
        |b: &[u8]| String::from_utf8_lossy(b).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
    if out.status.success() {
        Ok(last(&out.stdout))
    } else {
        let why = last(&out.stderr);
        Err(format!("exited with {}{}", out.status, if why.is_empty() { String::new() } else { format!(": {why}") }))
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    passed: bool,
    #[serde(default)]
    detail: String,
}

async fn webhook(
    http: &HttpClient,
    data_dir: &Path,
    url: &str,
    workload: &str,
    release: &Release,
    check: &CheckSpec,
) -> Result<String, String> {
    let secret = crate::secrets::resolve(data_dir, check.secret.as_deref().unwrap_or_default())?;
    let body = serde_json::json!({
        "type": "ringfence.check",
        "check": check.name,
        "workload": workload,
        "version": release.version,
        "artifact": release.content.artifact,
        "commit": release.content.metadata.commit,
        "digest": release.digest,
    })
    .to_string();
    let signed = crate::webhook::sign(&secret, body.as_bytes())?;
    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let timeout = check.timeout.std().min(Duration::from_secs(3600));
    let resp =
        http.request(Method::POST, url, &headers, Some(Bytes::from(body)), timeout).await.map_err(|e| e.to_string())?;
    if !resp.status.is_success() {
        return Err(format!("{url} answered {}", resp.status.as_u16()));
    }
    let answer: Answer = serde_json::from_slice(&resp.body).map_err(|e| {
        format!("{url} answered {} but not `{{\"passed\": bool, \"detail\": \"...\"}}`: {e}", resp.status.as_u16())
    })?;
    if answer.passed { Ok(answer.detail) } else { Err(answer.detail) }
}
