//! Incidents and DORA metrics from a known event history, with the figures worked out by hand.

use ringfence_core::command::{self, ErrorCode};
use ringfence_core::decision;
use ringfence_core::dora;
use ringfence_core::incident::{self, IncidentState};
use ringfence_core::release::{ReleaseContent, ReleaseRequest};
use ringfence_core::rollout::RolloutKind;
use ringfence_core::spec;
use ringfence_core::{Event, EventKind, Timestamp, World};

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
/// Mon 2026-11-30 00:00 UTC.
const T0: Timestamp = Timestamp(1_795_996_800_000);

struct H {
    world: World,
    seq: u64,
    log: Vec<Event>,
}

impl H {
    fn at(&mut self, at: Timestamp, actor: &str, kind: EventKind) {
        self.seq += 1;
        let e = Event { seq: self.seq, at, actor: actor.into(), reason: "test".into(), workload: "shop".into(), kind };
        self.world.apply(&e);
        self.log.push(e);
    }

    fn release(&mut self, at: Timestamp, version: &str, hotfix_for: Option<&str>) {
        let req = ReleaseRequest {
            version: version.into(),
            content: ReleaseContent { hotfix_for: hotfix_for.map(String::from), ..Default::default() },
        };
        let (e, _) = command::create_release(&self.world, "shop", &req, "alice", at).unwrap();
        self.at(at, "alice", e.unwrap());
    }

    fn start(&mut self, at: Timestamp, version: &str) -> String {
        let events = command::start_rollout(&self.world, "shop", version).unwrap();
        let id = events.last().and_then(|e| e.rollout_id()).unwrap().to_string();
        for e in events {
            self.at(at, "ci", e);
        }
        id
    }

    fn complete(&mut self, at: Timestamp, id: &str, version: &str) {
        self.at(at, "controller", EventKind::RolloutCompleted { rollout_id: id.into() });
        self.at(at, "controller", EventKind::LkgUpdated { version: version.into(), rollout_id: id.into() });
    }

    fn halt(&mut self, at: Timestamp, id: &str) {
        let r = self.world.workload("shop").unwrap().rollout(id).unwrap().clone();
        let d = decision::manual_rollback(&r, "oncall", "errors up");
        self.at(at, "controller", EventKind::RolloutHalted { rollout_id: id.into(), decision: Box::new(d) });
    }
}

/// v1 first deploy (1 h), v2 fails (halted after 10 min, mitigated 2 min later), v3 a hotfix
/// of v2 registered a day before it completes.
fn history() -> H {
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let text = spec::EXAMPLE.replacen("[mitigation]\n", "[incident]\nconfirm_after = \"30m\"\n\n[mitigation]\n", 1);
    let s = spec::parse("shop.toml", &text.replacen("name = \"checkout\"", "name = \"shop\"", 1)).unwrap();
    h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    h.release(T0, "v1", None);
    let r1 = h.start(T0, "v1");
    h.complete(T0.plus_ms(HOUR), &r1, "v1");
    h.release(T0.plus_ms(DAY), "v2", None);
    let r2 = h.start(T0.plus_ms(DAY), "v2");
    h.halt(T0.plus_ms(DAY + 10 * MIN), &r2);
    h.at(
        T0.plus_ms(DAY + 12 * MIN),
        "controller",
        EventKind::MitigationCompleted { rollout_id: r2.clone(), verified: true, detail: "back on v1".into() },
    );
    h.release(T0.plus_ms(DAY + HOUR), "v3", Some("v2"));
    let r3 = h.start(T0.plus_ms(2 * DAY), "v3");
    h.complete(T0.plus_ms(2 * DAY + HOUR), &r3, "v3");
    h
}

#[test]
fn a_failed_rollout_opens_one_incident_whose_states_are_validated_and_timed() {
    let mut h = history();
    let ws = h.world.workload("shop").unwrap();
    assert_eq!(ws.incidents.len(), 1, "one incident: v2's");
    let i = ws.incidents.values().next().unwrap().clone();
    assert_eq!(
        (i.release.as_str(), i.severity, i.state),
        ("v2", 2, IncidentState::Monitoring),
        "high criticality: sev2"
    );
    assert_eq!(i.detected_at, T0.plus_ms(DAY + 10 * MIN));
    assert_eq!(i.mitigated_at, Some(T0.plus_ms(DAY + 12 * MIN)));
    // Halting again (an escalation, a second decision) opens no second incident.
    h.halt(T0.plus_ms(DAY + 13 * MIN), &i.rollout_id);
    assert_eq!(h.world.workload("shop").unwrap().incidents.len(), 1);
    // Monitoring: resolved by a person, or by the controller once health held 30 min.
    let ws = h.world.workload("shop").unwrap();
    assert!(incident::confirmed(ws, T0.plus_ms(DAY + 20 * MIN)).is_empty());
    assert_eq!(incident::confirmed(ws, T0.plus_ms(DAY + 43 * MIN)).len(), 1);
    let e = incident::acknowledge(&h.world, "shop", "nope").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let ack = incident::acknowledge(&h.world, "shop", &i.id).unwrap();
    h.at(T0.plus_ms(DAY + 15 * MIN), "oncall", ack);
    assert!(incident::acknowledge(&h.world, "shop", &i.id).is_err(), "once");
    let done = incident::resolve(&h.world, "shop", &i.id).unwrap();
    h.at(T0.plus_ms(DAY + 50 * MIN), "oncall", done);
    let i = h.world.workload("shop").unwrap().incidents[&i.id].clone();
    assert_eq!(i.state, IncidentState::Resolved);
    let states: Vec<_> = i.transitions.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(states, ["investigating", "monitoring", "monitoring", "resolved"], "acknowledged while monitoring");
    assert_eq!(incident::resolve(&h.world, "shop", &i.id).unwrap_err().code, ErrorCode::Conflict);
}

#[test]
fn an_incident_is_not_resolved_before_its_mitigation_is_verified() {
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let s = spec::parse("shop.toml", &spec::EXAMPLE.replacen("name = \"checkout\"", "name = \"shop\"", 1)).unwrap();
    h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    h.release(T0, "v1", None);
    let r1 = h.start(T0, "v1");
    h.complete(T0.plus_ms(HOUR), &r1, "v1");
    h.release(T0, "v2", None);
    let r2 = h.start(T0.plus_ms(2 * HOUR), "v2");
    h.halt(T0.plus_ms(2 * HOUR + MIN), &r2);
    let e = incident::resolve(&h.world, "shop", &r2).unwrap_err();
    assert!(e.message.contains("not verified"), "{e}");
    h.at(
        T0.plus_ms(2 * HOUR + 2 * MIN),
        "controller",
        EventKind::MitigationCompleted { rollout_id: r2.clone(), verified: false, detail: "probes fail".into() },
    );
    let i = &h.world.workload("shop").unwrap().incidents[&r2];
    assert_eq!((i.state, i.severity), (IncidentState::Investigating, 1), "unverified: one level worse");
}

#[test]
fn dora_metrics_match_the_figures_worked_out_by_hand() {
    let h = history();
    let ws = h.world.workload("shop").unwrap();
    let d = dora::compute(ws, T0, T0.plus_ms(7 * DAY));
    let ids: Vec<(&str, &str, bool, bool)> =
        d.deployments.iter().map(|x| (x.version.as_str(), x.outcome.as_str(), x.failed, x.rework)).collect();
    assert_eq!(
        ids,
        vec![("v1", "completed", false, false), ("v2", "mitigated", true, false), ("v3", "completed", false, true)]
    );
    // Two completed in seven days.
    assert!((d.deployment_frequency.value.unwrap() - 2.0 / 7.0).abs() < 1e-9);
    assert_eq!(d.deployment_frequency.band, Some("high"), "daily to weekly");
    // Lead times 1 h (v1) and 24 h (v3, registered a day before it completed): median 12.5 h.
    assert_eq!(d.lead_time.value, Some(12.5));
    assert_eq!(d.lead_time.band, Some("elite"));
    assert!((d.change_fail_rate.value.unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert!((d.recovery_time.value.unwrap() - 2.0 / 60.0).abs() < 1e-9, "2 minutes");
    assert_eq!(d.recovery_time.band, Some("elite"));
    assert!((d.rework_rate.value.unwrap() - 1.0 / 3.0).abs() < 1e-9, "v3 is a hotfix");
    // A window that holds only v1.
    let d = dora::compute(ws, T0, T0.plus_ms(DAY));
    assert_eq!(d.deployments.len(), 1);
    assert_eq!(d.change_fail_rate.value, Some(0.0));
    assert_eq!(d.recovery_time.value, None);
    let _ = RolloutKind::Deploy;
}

#[test]
fn every_failed_rollout_has_a_postmortem_whose_timeline_and_figures_match_the_log() {
    let mut h = history();
    let id = h.world.workload("shop").unwrap().incidents.keys().next().unwrap().clone();
    let ack = incident::acknowledge(&h.world, "shop", &id).unwrap();
    h.at(T0.plus_ms(DAY + 11 * MIN), "oncall", ack);
    let ws = h.world.workload("shop").unwrap();
    let md = ringfence_core::postmortem::draft(ws, &h.log, None).unwrap();
    assert!(md.starts_with("# Postmortem (draft): shop v2"), "{md}");
    assert!(md.contains("| time to detect (rollout start to halt) | 10.0 min |"), "{md}");
    assert!(md.contains("| time to mitigate (halt to verified mitigation) | 2.0 min |"), "{md}");
    // The timeline is the log's: the start, the halt, the mitigation, the acknowledgement.
    let timeline: Vec<&str> = md.lines().filter(|l| l.starts_with("- 2026-")).collect();
    assert_eq!(timeline.len(), 4, "{md}");
    assert!(timeline[0].contains("2026-12-01T00:00:00.000Z — ci — rollout shop-2 started"), "{timeline:?}");
    assert!(timeline[1].contains("00:10:00.000Z — controller — HALTED"), "{timeline:?}");
    assert!(timeline[2].contains("00:12:00.000Z — controller — mitigation"), "{timeline:?}");
    assert!(timeline[3].contains("00:11:00.000Z — oncall — incident shop-2 acknowledged"), "{timeline:?}");
    assert!(md.contains("time to restore | not resolved yet"), "{md}");
    assert!(md.contains("ManualRollback"), "{md}");
    assert!(md.contains("Blameless"), "{md}");
    // A rollout that did not fail has none.
    let first = ws.rollouts[0].id.clone();
    let e = ringfence_core::postmortem::draft(ws, &[], Some(&first)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
}

#[test]
fn updates_come_on_every_change_of_state_and_then_on_the_cadence_each_naming_the_next() {
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let text = spec::EXAMPLE.replacen("name = \"checkout\"", "name = \"shop\"", 1).replacen(
        "[mitigation]\n",
        "[incident]\ncommander = \"alice\"\nescalation = \"#oncall\"\n\n[mitigation]\n",
        1,
    );
    let s = spec::parse("shop.toml", &text).unwrap();
    h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    h.release(T0, "v1", None);
    let r1 = h.start(T0, "v1");
    h.complete(T0.plus_ms(HOUR), &r1, "v1");
    h.release(T0, "v2", None);
    let r2 = h.start(T0.plus_ms(2 * HOUR), "v2");
    let t = T0.plus_ms(2 * HOUR + MIN);
    h.halt(t, &r2);
    let mut sent = Vec::new();
    // A controller tick every minute for two hours, the mitigation after 3 minutes and the
    // resolution after 70.
    for m in 0..=120u64 {
        let now = t.plus_ms(m * MIN);
        if m == 3 {
            h.at(
                now,
                "controller",
                EventKind::MitigationCompleted { rollout_id: r2.clone(), verified: true, detail: "ok".into() },
            );
        }
        if m == 70 {
            let e = incident::resolve(&h.world, "shop", &r2).unwrap();
            h.at(now, "oncall", e);
        }
        for e in incident::updates_due(h.world.workload("shop").unwrap(), now) {
            sent.push((m, e.clone()));
            h.at(now, "controller", e);
        }
    }
    let times: Vec<u64> = sent.iter().map(|(m, _)| *m).collect();
    // sev2 (high): every 30 minutes. Opened at 0, mitigated at 3, then 33 and 63 on the
    // cadence, resolved at 70, then nothing.
    assert_eq!(times, vec![0, 3, 33, 63, 70]);
    let EventKind::IncidentUpdated { stakeholders, users, next_at, state, .. } = &sent[0].1 else { panic!() };
    assert_eq!(*state, IncidentState::Investigating);
    assert_eq!(*next_at, Some(t.plus_ms(30 * MIN)));
    assert!(
        stakeholders.contains("[sev2] shop v2")
            && stakeholders.contains("Commander: alice")
            && stakeholders.contains("#oncall"),
        "{stakeholders}"
    );
    assert!(stakeholders.contains(&format!("Next update by {}", t.plus_ms(30 * MIN))), "{stakeholders}");
    assert!(users.contains("We are investigating") && !users.contains("v2"), "{users}");
    let EventKind::IncidentUpdated { next_at, state, users, .. } = &sent[4].1 else { panic!() };
    assert_eq!((*state, *next_at), (IncidentState::Resolved, None));
    assert!(!users.contains("Next update"), "{users}");
}

#[test]
fn the_dora_chart_draws_each_day_and_says_in_words_what_it_shows() {
    let h = history();
    let d = dora::compute(h.world.workload("shop").unwrap(), T0, T0.plus_ms(7 * DAY));
    let svg = dora::svg(&d);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<desc id=\"d\">3 deployments from"), "{svg}");
    assert!(svg.contains("1 failed") && svg.contains("change fail rate 33%"), "{svg}");
    // Day 0 and day 2 completed (green), day 1 failed (red).
    assert_eq!(svg.matches("fill=\"#1a7f37\"").count(), 2, "{svg}");
    assert_eq!(svg.matches("fill=\"#b3261e\"").count(), 1, "{svg}");
}
