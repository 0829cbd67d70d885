//! Webhooks signed by the Standard Webhooks scheme (HMAC-SHA256 over `id.timestamp.body`, in
//! the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers), with the scheme's
//! own library. Outgoing ones are signed; incoming ones are verified, refused when their
//! timestamp is more than five minutes off, and refused when their id was seen before (a
//! replay of a captured request).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// How long an id is remembered: longer than the scheme's timestamp tolerance (five minutes
/// either way), so a replay is refused for its id until its timestamp alone refuses it.
const REMEMBER: Duration = Duration::from_secs(11 * 60);
/// Ids remembered at most: past this, incoming webhooks are refused rather than forgetting
/// ids early (a flood must not open the door to replays).
const MAX_IDS: usize = 100_000;

/// The shortest key accepted: the scheme's secrets are 24 to 64 random bytes.
const MIN_KEY_BYTES: usize = 24;

fn webhook(secret: &str) -> Result<standardwebhooks::Webhook, String> {
    let bytes = secret.strip_prefix("whsec_").map_or(secret.len(), |b64| b64.trim_end_matches('=').len() * 3 / 4);
    if bytes < MIN_KEY_BYTES {
        return Err(format!(
            "the webhook secret is {bytes} bytes; use at least {MIN_KEY_BYTES} random bytes (`whsec_` and base64, as the scheme writes them)"
        ));
    }
    // `whsec_<base64>` as the scheme serializes secrets; any other text is the key itself.
    let hook = if secret.starts_with("whsec_") {
        standardwebhooks::Webhook::new(secret)
    } else {
        standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec())
    };
    hook.map_err(|e| format!("the webhook secret cannot be used: {e}"))
}

/// The headers that sign `body` for delivery now.
pub fn sign(secret: &str, body: &[u8]) -> Result<Vec<(&'static str, String)>, String> {
    sign_with_id(secret, &format!("msg_{}", hex::encode(rand::random::<[u8; 16]>())), body)
}

/// [`sign`] with the message's id given: the same on every try of one message, so a receiver
/// can deduplicate retries.
pub fn sign_with_id(secret: &str, id: &str, body: &[u8]) -> Result<Vec<(&'static str, String)>, String> {
    let id = id.to_string();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let signature = webhook(secret)?.sign(&id, ts, body).map_err(|e| format!("cannot sign: {e}"))?;
    Ok(vec![("webhook-id", id), ("webhook-timestamp", ts.to_string()), ("webhook-signature", signature)])
}

/// Ids of the incoming webhooks accepted lately.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, Instant>>,
}

impl ReplayGuard {
    /// Verifies an incoming webhook: signature, timestamp, and an id not seen before.
    pub fn verify(&self, secret: &str, body: &[u8], headers: &HeaderMap) -> Result<(), String> {
        webhook(secret)?.verify(body, headers).map_err(|e| format!("the webhook signature does not verify: {e}"))?;
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if id.is_empty() || id.len() > 256 {
            return Err("webhook-id: expected 1 to 256 characters".into());
        }
        let mut seen = self.seen.lock().expect("replay guard lock");
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < REMEMBER);
        if seen.contains_key(id) {
            return Err(format!("webhook {id} was already received: a replay is refused"));
        }
        if seen.len() >= MAX_IDS {
            return Err("too many webhooks in the last minutes: try again later".into());
        }
        seen.insert(id.to_string(), now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// The scheme's own test vector: our secret handling signs as every implementation does.
    #[test]
    fn signs_as_the_scheme_says() {
        let sig = webhook("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .unwrap()
            .sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .unwrap();
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn verifies_once_and_refuses_a_replay_a_forgery_and_a_stale_timestamp() {
        let guard = ReplayGuard::default();
        let body = br#"{"kind":"tests"}"#;
        let key = "a-secret-of-at-least-24-bytes";
        let signed = headers(&sign(key, body).unwrap());
        guard.verify(key, body, &signed).expect("a fresh, signed webhook");
        let again = guard.verify(key, body, &signed).unwrap_err();
        assert!(again.contains("replay"), "{again}");
        let forged = guard
            .verify("another-secret-of-24-bytes", body, &headers(&sign(key, br#"{"kind":"x"}"#).unwrap()))
            .unwrap_err();
        assert!(forged.contains("does not verify"), "{forged}");
        let tampered = headers(&sign(key, body).unwrap());
        assert!(guard.verify(key, br#"{"kind":"tests","passed":true}"#, &tampered).is_err());
        let old = webhook(key).unwrap().sign("msg_old", 1_000_000, body).unwrap();
        let stale = headers(&[
            ("webhook-id", "msg_old".into()),
            ("webhook-timestamp", "1000000".into()),
            ("webhook-signature", old),
        ]);
        let e = guard.verify(key, body, &stale).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        assert!(guard.verify(key, body, &HeaderMap::new()).is_err(), "unsigned");
        let short = sign("short", body).unwrap_err();
        assert!(short.contains("at least 24"), "{short}");
        assert!(guard.verify("", body, &signed).is_err(), "an empty key verifies nothing");
    }
}
