//! Delivering incident updates to the `[[notify]]` channels: a signed JSON webhook (Standard
//! Webhooks, its `webhook-id` the update's idempotency key) or a Slack-compatible incoming
//! webhook. Which deliveries are due, and their retries, are the core's
//! (`incident::deliveries_due`); each outcome is an event, so a restart resumes where the log
//! says.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use ringfence_core::incident::{Due, FollowUpDue};
use ringfence_core::spec::{Audience, NotifyKind, NotifySpec};

use crate::http::HttpClient;

/// The id a receiver deduplicates on: the same for every try of one update to one channel.
pub fn idempotency_key(workload: &str, due: &Due) -> String {
    format!("rf.{workload}.{}.{}.{}", due.incident.id, due.update, due.channel.name)
}

pub async fn deliver(http: &HttpClient, data_dir: &Path, workload: &str, due: &Due) -> Result<(), String> {
    let u = due.incident.updates.get(due.update).ok_or("the update is gone")?;
    let text = match due.channel.audience {
        Audience::Stakeholders => &u.stakeholders,
        Audience::Users => &u.users,
    };
    let key = idempotency_key(workload, due);
    if due.channel.kind == NotifyKind::Email {
        let subject =
            format!("[{}] {workload}: incident {} {}", due.incident.severity_name(), due.incident.id, u.state.as_str());
        return email(&due.channel, &key, &subject, text).await;
    }
    let body = match due.channel.kind {
        NotifyKind::Slack | NotifyKind::Email | NotifyKind::Tracker => serde_json::json!({ "text": text }),
        NotifyKind::Webhook => serde_json::json!({
            "type": "incident.updated",
            "workload": workload,
            "incident": due.incident.id,
            "update": due.update,
            "severity": due.incident.severity_name(),
            "state": u.state.as_str(),
            "text": text,
            "at": u.at.millis(),
            "next_at": u.next_at.map(|t| t.millis()),
        }),
    }
    .to_string();
    let signed = match (&due.channel.kind, &due.channel.secret) {
        (NotifyKind::Webhook, Some(secret)) => {
            let secret = crate::secrets::resolve(data_dir, secret)?;
            crate::webhook::sign_with_id(&secret, &key, body.as_bytes())?
        }
        _ => Vec::new(),
    };
    let mut headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("idempotency-key", key.as_str()));
    let resp = http
        .request(Method::POST, &due.channel.url, &headers, Some(Bytes::from(body)), Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status.is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {}", due.channel.url, resp.status.as_u16()))
    }
}

/// A follow-up item to an issue tracker (its answer's link or id for the new issue comes
/// back), or a reminder of an overdue one to a stakeholder channel (an empty answer).
pub async fn send_follow_up(
    http: &HttpClient,
    data_dir: &Path,
    workload: &str,
    due: &FollowUpDue,
) -> Result<String, String> {
    let f = &due.follow_up;
    let c = &due.channel;
    let key =
        format!("rf.{workload}.{}.{}.{}", ringfence_core::incident::follow_up_subject(&f.id), due.message, c.name);
    let reminder = || f.reminders.get(due.message).map(|r| r.text.as_str()).ok_or("the reminder is gone");
    let body = match c.kind {
        NotifyKind::Email => {
            let subject = format!("[follow-up overdue] {workload}: {} {}", f.id, f.title);
            return email(c, &key, &subject, reminder()?).await.map(|()| String::new());
        }
        NotifyKind::Tracker => {
            let mut body = format!(
                "A follow-up of incident {} of {workload}, from its blameless postmortem \
                 (`ringfence postmortem {workload} {}`).\n\n",
                f.incident, f.incident
            );
            if let Some(i) = &due.incident {
                body.push_str(&format!(
                    "- Incident: {} ({}), release {}: {}\n- Detected: {}\n",
                    i.id,
                    i.severity_name(),
                    i.release,
                    i.summary,
                    i.detected_at
                ));
            }
            if !f.owner.is_empty() {
                body.push_str(&format!("- Owner: {}\n", f.owner));
            }
            if let Some(d) = f.due {
                body.push_str(&format!("- Due: {d}\n"));
            }
            body.push_str(&format!("- ringfence id: {workload}/{} (created by {})\n", f.id, f.created_by));
            serde_json::json!({
                "title": f.title,
                "body": body,
                "labels": ["ringfence", "postmortem", workload],
            })
        }
        NotifyKind::Slack => serde_json::json!({ "text": reminder()? }),
        NotifyKind::Webhook => serde_json::json!({
            "type": "followup.overdue",
            "workload": workload,
            "follow_up": f.id,
            "incident": f.incident,
            "title": f.title,
            "owner": f.owner,
            "due": f.due.map(|t| t.millis()),
            "reminder": due.message,
            "text": reminder()?,
        }),
    }
    .to_string();
    let secret = c.secret.as_deref().map(|s| crate::secrets::resolve(data_dir, s)).transpose()?;
    let signed = match (&c.kind, &secret) {
        (NotifyKind::Webhook, Some(secret)) => crate::webhook::sign_with_id(secret, &key, body.as_bytes())?,
        _ => Vec::new(),
    };
    let bearer = match (&c.kind, &secret) {
        (NotifyKind::Tracker, Some(token)) => Some(format!("Bearer {token}")),
        _ => None,
    };
    let mut headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("idempotency-key", key.as_str()));
    headers.push(("accept", "application/json"));
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let resp = http
        .request(Method::POST, &c.url, &headers, Some(Bytes::from(body)), Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status.is_success() {
        return Err(format!("{} answered {}", c.url, resp.status.as_u16()));
    }
    if c.kind != NotifyKind::Tracker {
        return Ok(String::new());
    }
    Ok(tracker_reference(&resp.body).unwrap_or_else(|| format!("created ({})", resp.status.as_u16())))
}

/// The link or id an issue tracker answered a created issue with: GitHub's `html_url`,
/// GitLab's `web_url`, or a plain `url`, `key` (Jira) or `id`. Bounded, printable only.
fn tracker_reference(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let found = ["html_url", "web_url", "url", "key", "id"].iter().find_map(|k| match v.get(k)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })?;
    Some(found.chars().filter(|c| !c.is_control()).take(512).collect())
}

/// An email channel's mail: one per message, its Message-ID the message's idempotency key.
pub async fn email(c: &NotifySpec, key: &str, subject: &str, text: &str) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let (starttls, rest) = match c.url.strip_prefix("smtp+starttls://") {
        Some(rest) => (true, rest),
        None => (false, c.url.strip_prefix("smtp://").unwrap_or(&c.url)),
    };
    let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{}: the port is not a number", c.url))?),
        None => (rest.trim_end_matches('/'), if starttls { 587 } else { 25 }),
    };
    let from = c.from.as_deref().unwrap_or_default();
    let mut mail = Message::builder()
        .from(from.parse().map_err(|e| format!("from {from:?}: {e}"))?)
        .subject(subject)
        .message_id(Some(format!("<{key}@ringfence>")));
    for to in &c.to {
        mail = mail.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    let mail = mail.body(text.to_string()).map_err(|e| format!("cannot build the mail: {e}"))?;
    let transport = if starttls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| format!("{}: {e}", c.url))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
    }
    .port(port)
    .timeout(Some(Duration::from_secs(10)))
    .build();
    transport.send(mail).await.map(|_| ()).map_err(|e| format!("{}: {e}", c.url))
}
