//! Delivering incident updates to the `[[notify]]` channels: a signed JSON webhook (Standard
//! Webhooks, its `webhook-id` the update's idempotency key) or a Slack-compatible incoming
//! webhook. Which deliveries are due, and their retries, are the core's
//! (`incident::deliveries_due`); each outcome is an event, so a restart resumes where the log
//! says.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use ringfence_core::incident::Due;
use ringfence_core::spec::{Audience, NotifyKind};

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
        return email(due, &key, &subject, text).await;
    }
    let body = match due.channel.kind {
        NotifyKind::Slack | NotifyKind::Email => serde_json::json!({ "text": text }),
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

/// An email channel's mail: one per update, its Message-ID the update's idempotency key.
pub async fn email(due: &Due, key: &str, subject: &str, text: &str) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let c = &due.channel;
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
