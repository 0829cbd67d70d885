//! Schema migrations of stored events, as pure rewrites of an event's JSON body, so every
//! store adapter (SQLite here, PostgreSQL next) upgrades a log the same way.
//!
//! A log is upgraded in place, in one transaction, when a newer server opens it; the SQLite
//! adapter first keeps a copy of the old file beside it (`events.db.schema-N`), so going back
//! to the older release stays possible. A log written by a newer schema is refused, never
//! read half-understood.
//!
//! History:
//! - 1 → 2: replicas are named in executor-neutral terms. `replica_started` had `pid` and
//!   `port`; it has `instance` (the executor's id) and `endpoint` (`host:port`).
//!   `replica_stopped` and `replica_exited` had `pid`; they have `instance`. The process
//!   executor's ids are `proc:<pid>:<start time>`; upgraded ones are `proc:<pid>` (the start
//!   time was not recorded), which that executor reads as "this pid, start time unknown".
//! - 2 → 3: the audit trail (`audit.rs`). Events gain a `hash` column, computed for the
//!   existing rows in order when the log is upgraded, and the log a `digests` table. No body
//!   changes; the store signs a first digest over the upgraded chain right away.

use serde_json::{Map, Value};

/// The schema this build writes.
pub const CURRENT: i64 = 3;

/// The event types whose bodies changed at some version, for a store to select the rows to
/// rewrite instead of reading the whole log.
pub const REWRITTEN_TYPES: &[&str] = &["replica_started", "replica_stopped", "replica_exited"];

/// The body of an event of schema `from` rewritten for [`CURRENT`], or `None` when it needs
/// no change. An error names what could not be read.
pub fn upgrade(from: i64, body: &str) -> Result<Option<String>, String> {
    let mut v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(obj) = v.as_object_mut() else { return Err("not a JSON object".into()) };
    let mut changed = false;
    if from < 2 {
        changed |= v1_to_v2(obj)?;
    }
    Ok(changed.then(|| v.to_string()))
}

fn v1_to_v2(obj: &mut Map<String, Value>) -> Result<bool, String> {
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !REWRITTEN_TYPES.contains(&ty.as_str()) {
        return Ok(false);
    }
    let pid = obj.remove("pid").and_then(|p| p.as_u64()).ok_or_else(|| format!("{ty} without a numeric `pid`"))?;
    obj.insert("instance".into(), Value::String(format!("proc:{pid}")));
    if ty == "replica_started" {
        let port =
            obj.remove("port").and_then(|p| p.as_u64()).ok_or_else(|| format!("{ty} without a numeric `port`"))?;
        obj.insert("endpoint".into(), Value::String(format!("127.0.0.1:{port}")));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use ringfence_core::EventKind;

    use super::*;

    fn up(body: &str) -> EventKind {
        let new = upgrade(1, body).unwrap().expect("rewritten");
        serde_json::from_str(&new).unwrap()
    }

    #[test]
    fn replicas_of_schema_1_read_as_instances() {
        assert_eq!(
            up(r#"{"type":"replica_started","version":"v1","replica":0,"pid":24612,"port":37747,"adopted":false}"#),
            EventKind::ReplicaStarted {
                version: "v1".into(),
                replica: 0,
                instance: "proc:24612".into(),
                endpoint: "127.0.0.1:37747".into(),
                adopted: false
            }
        );
        assert_eq!(
            up(r#"{"type":"replica_stopped","version":"v1","replica":1,"pid":5}"#),
            EventKind::ReplicaStopped { version: "v1".into(), replica: 1, instance: "proc:5".into() }
        );
        assert_eq!(
            up(r#"{"type":"replica_exited","version":"v2","replica":0,"pid":6,"status":"exit status: 4"}"#),
            EventKind::ReplicaExited {
                version: "v2".into(),
                replica: 0,
                instance: "proc:6".into(),
                status: "exit status: 4".into()
            }
        );
    }

    #[test]
    fn other_events_and_current_bodies_are_left_alone() {
        assert_eq!(upgrade(1, r#"{"type":"rollout_paused","rollout_id":"a-1"}"#).unwrap(), None);
        assert_eq!(
            upgrade(2, r#"{"type":"replica_stopped","version":"v1","replica":1,"instance":"x"}"#).unwrap(),
            None
        );
    }

    #[test]
    fn a_damaged_body_is_an_error_that_says_what() {
        let err = upgrade(1, r#"{"type":"replica_started","version":"v1","replica":0,"pid":"x"}"#).unwrap_err();
        assert!(err.contains("replica_started without a numeric `pid`"), "{err}");
        assert!(upgrade(1, "nope").unwrap_err().contains("not JSON"));
    }
}
