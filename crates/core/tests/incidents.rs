//! Incidents and DORA metrics from a known event history, with the figures worked out by hand.

use ringfence_core::command::{self, ErrorCode};
use ringfence_core::decision;
use ringfence_core::dora;
use ringfence_core::incident::{self, IncidentState};
use ringfence_core::release::{ReleaseContent, ReleaseRequest};
use ringfence_core::rollout::RolloutKind;
use ringfence_core::spec;
use ringfence_core::totals::{BOUNDS_S, Totals};
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
        ticks_see_what_a_full_scan_sees(&self.world, at);
        if let Some(ws) = self.world.workload("shop") {
            let walked = Totals::walk(ws).plus(&ws.forgotten.totals);
            assert_eq!(ws.totals, walked, "the running counts after {:?}", self.log.last());
        }
    }

    fn release(&mut self, at: Timestamp, version: &str, hotfix_for: Option<&str>) {
        self.release_committed(at, version, hotfix_for, None);
    }

    fn release_committed(
        &mut self,
        at: Timestamp,
        version: &str,
        hotfix_for: Option<&str>,
        committed_at: Option<Timestamp>,
    ) {
        let mut content = ReleaseContent { hotfix_for: hotfix_for.map(String::from), ..Default::default() };
        content.metadata.committed_at = committed_at;
        let req = ReleaseRequest { version: version.into(), content };
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

/// A tick looks only at the incidents and follow-ups the fold keeps in its index; what it
/// finds due must be what a look at every incident and follow-up finds, now and later.
fn ticks_see_what_a_full_scan_sees(world: &World, at: Timestamp) {
    let Some(ws) = world.workload("shop") else { return };
    let mut full = ws.clone();
    full.incidents_astir = full.incidents.keys().cloned().collect();
    full.follow_ups_open = full.follow_ups.keys().cloned().collect();
    for now in [at, at.plus_ms(MIN), at.plus_ms(HOUR), at.plus_ms(25 * HOUR)] {
        let due = |ws: &ringfence_core::WorkloadState| {
            format!(
                "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
                incident::confirmed(ws, now),
                incident::updates_due(ws, now),
                incident::deliveries_due(ws, now),
                incident::reminders_due(ws, now),
                incident::follow_up_sends_due(ws, now),
            )
        };
        assert_eq!(due(ws), due(&full), "at {now}, with {:?} in the index", ws.incidents_astir);
    }
}

/// v1 first deploy (1 h), v2 fails (halted after 10 min, mitigated 2 min later), v3 a hotfix
/// of v2 committed 30 min before its registration, a day before it completes.
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
    h.release_committed(T0.plus_ms(DAY + HOUR), "v3", Some("v2"), Some(T0.plus_ms(DAY + 30 * MIN)));
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
fn the_running_counts_are_the_figures_worked_out_by_hand() {
    let h = history();
    let t = &h.world.workload("shop").unwrap().totals;
    let counts =
        |m: &std::collections::BTreeMap<String, u64>| m.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>();
    assert_eq!(counts(&t.outcomes), ["completed=2", "mitigated=1"]);
    assert_eq!(counts(&t.actions), ["manualrollback=1"], "the action as `/metrics` labels it");
    assert_eq!(t.halts, 1);
    // Halted 10 minutes after it started (the bucket up to 1,800 s), mitigated 2 minutes
    // later (up to 300 s).
    let bucket = |s: f64| BOUNDS_S.iter().position(|b| *b == s).unwrap();
    assert_eq!((t.detect.count, t.detect.sum_ms, t.detect.buckets[bucket(1800.0)]), (1, 10 * MIN, 1));
    assert_eq!((t.mitigate.count, t.mitigate.sum_ms, t.mitigate.buckets[bucket(300.0)]), (1, 2 * MIN, 1));
    assert_eq!(counts(&t.open), ["sev2=1"], "mitigated, not yet resolved");
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
    // Lead times 1 h (v1, from its registration: no commit time) and 24.5 h (v3, committed
    // 30 min before its registration a day before it completed): median 12.75 h.
    assert_eq!(d.lead_time.value, Some(12.75));
    let from: Vec<&str> = d.deployments.iter().map(|x| x.lead_time_from.as_str()).collect();
    assert_eq!(from, ["registration", "registration", "commit"]);
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

/// The example spec for "shop" with `incident` as its `[incident]` table and `extra` after it.
fn shop_spec(incident: &str, extra: &str) -> String {
    spec::EXAMPLE.replacen("name = \"checkout\"", "name = \"shop\"", 1).replacen(
        "[mitigation]\n",
        &format!("[incident]\n{incident}\n[mitigation]\n"),
        1,
    ) + extra
}

/// "shop" under `spec`: v1 deployed (an hour), v2 started at two hours; v2's rollout id.
fn v2_under_way(spec: &str) -> (H, String) {
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let s = spec::parse("shop.toml", spec).unwrap();
    h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    h.release(T0, "v1", None);
    let r1 = h.start(T0, "v1");
    h.complete(T0.plus_ms(HOUR), &r1, "v1");
    h.release(T0, "v2", None);
    let r2 = h.start(T0.plus_ms(2 * HOUR), "v2");
    (h, r2)
}

#[test]
fn updates_come_on_every_change_of_state_and_then_on_the_cadence_each_naming_the_next() {
    let (mut h, r2) = v2_under_way(&shop_spec("commander = \"alice\"\nescalation = \"#oncall\"\n", ""));
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

#[test]
fn follow_ups_go_to_the_tracker_once_and_overdue_ones_are_brought_up_until_closed() {
    let mut h = history();
    let channels = "\n[[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/hook\"\n\n\
                    [[notify]]\nname = \"issues\"\nkind = \"tracker\"\nurl = \"http://127.0.0.1:9/repos/o/r/issues\"\n";
    let text = spec::EXAMPLE.replacen("name = \"checkout\"", "name = \"shop\"", 1) + channels;
    let s = spec::parse("shop.toml", &text).unwrap();
    let t = T0.plus_ms(3 * DAY);
    h.at(t, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    let incident = h.world.workload("shop").unwrap().incidents.keys().next().unwrap().clone();
    let e =
        incident::follow_up(&h.world, "shop", &incident, "Alert on p99 latency", "bob", Some(t.plus_ms(DAY))).unwrap();
    h.at(t, "alice", e);
    let ws = h.world.workload("shop").unwrap();
    // The tracker gets the item at once; the stakeholders nothing until it is overdue.
    let due = incident::follow_up_sends_due(ws, t);
    let sends: Vec<(&str, usize)> = due.iter().map(|d| (d.channel.name.as_str(), d.message)).collect();
    assert_eq!(sends, [("issues", 0)]);
    assert_eq!(due[0].incident.as_ref().map(|i| i.release.as_str()), Some("v2"));
    assert!(incident::reminders_due(ws, t.plus_ms(HOUR)).is_empty(), "not overdue yet");
    assert!(incident::deliveries_due(ws, t).iter().all(|d| d.channel.name != "issues"), "no updates to a tracker");
    // A failed export is tried again after its backoff; a successful one never again.
    let failed = |m| EventKind::FollowUpSendFailed {
        id: "fu-1".into(),
        channel: "issues".into(),
        message: m,
        error: "503".into(),
    };
    h.at(t, "controller", failed(0));
    assert!(incident::follow_up_sends_due(h.world.workload("shop").unwrap(), t.plus_ms(1_500)).is_empty());
    assert_eq!(incident::follow_up_sends_due(h.world.workload("shop").unwrap(), t.plus_ms(2_000)).len(), 1);
    h.at(
        t.plus_ms(2_000),
        "controller",
        EventKind::FollowUpSent {
            id: "fu-1".into(),
            channel: "issues".into(),
            message: 0,
            attempts: 2,
            reference: "https://git.example/o/r/issues/7".into(),
        },
    );
    let ws = h.world.workload("shop").unwrap();
    assert_eq!(ws.follow_ups["fu-1"].exported["issues"], "https://git.example/o/r/issues/7");
    assert!(incident::follow_up_sends_due(ws, t.plus_ms(HOUR)).is_empty());
    // Overdue: a reminder at once, then one a day (`remind_every`) until it is closed.
    let late = t.plus_ms(DAY + MIN);
    let r = incident::reminders_due(ws, late);
    let [EventKind::FollowUpReminded { id, text }] = r.as_slice() else { panic!("{r:?}") };
    assert_eq!(id, "fu-1");
    assert!(
        text.contains("Alert on p99 latency") && text.contains("owner bob") && text.contains("overdue by 1m"),
        "{text}"
    );
    h.at(late, "controller", r[0].clone());
    let ws = h.world.workload("shop").unwrap();
    assert!(incident::reminders_due(ws, late.plus_ms(HOUR)).is_empty());
    let sends: Vec<(String, usize)> =
        incident::follow_up_sends_due(ws, late).iter().map(|d| (d.channel.name.clone(), d.message)).collect();
    assert_eq!(sends, [("ops".to_string(), 0)], "the reminder goes to the stakeholder channel only");
    assert_eq!(incident::reminders_due(ws, late.plus_ms(DAY)).len(), 1);
    h.at(late.plus_ms(HOUR), "bob", incident::close_follow_up(&h.world, "shop", "fu-1").unwrap());
    let ws = h.world.workload("shop").unwrap();
    assert!(incident::reminders_due(ws, late.plus_ms(2 * DAY)).is_empty(), "closed: no more reminders");
    assert!(incident::follow_up_sends_due(ws, late.plus_ms(2 * HOUR)).is_empty());
}

#[test]
fn users_read_versions_only_when_the_status_page_says_so() {
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let text = spec::EXAMPLE.replacen("name = \"checkout\"", "name = \"shop\"", 1)
        + "\n[status_page]\nshow_versions = true\ntitle = \"Shop\"\n";
    h.at(T0, "admin", command::apply_spec(&h.world, &spec::parse("shop.toml", &text).unwrap()).unwrap().unwrap());
    h.release(T0, "v1", None);
    let r1 = h.start(T0, "v1");
    h.complete(T0.plus_ms(HOUR), &r1, "v1");
    h.release(T0, "v2", None);
    let r2 = h.start(T0.plus_ms(2 * HOUR), "v2");
    h.halt(T0.plus_ms(2 * HOUR + MIN), &r2);
    let due = incident::updates_due(h.world.workload("shop").unwrap(), T0.plus_ms(2 * HOUR + MIN));
    let [EventKind::IncidentUpdated { users, .. }] = due.as_slice() else { panic!("{due:?}") };
    assert!(users.starts_with("Shop: We are investigating"), "{users}");
    assert!(users.contains("Affected release: v2; serving v1."), "{users}");
}

#[test]
fn update_and_reminder_cadences_under_a_minute_are_refused() {
    let text = spec::EXAMPLE.to_string()
        + "\n[incident]\nremind_every = \"30s\"\nupdate_every = [\"5m\", \"10s\", \"1h\", \"2h\"]\n";
    let e = format!("{:?}", spec::parse("w.toml", &text).unwrap_err());
    assert!(e.contains("incident.remind_every") && e.contains("incident.update_every[1]"), "{e}");
}

#[test]
fn the_postmortem_draws_the_new_and_the_stable_version_around_the_incident() {
    use ringfence_core::health::SignalSample;
    let mut h = history();
    let id = h.world.workload("shop").unwrap().incidents.keys().next().unwrap().clone();
    let halt = T0.plus_ms(DAY + 10 * MIN);
    let sample = |at: Timestamp, version: &str, requests, errors, p99_us, users| SignalSample {
        at,
        version: version.into(),
        span_ms: 1_000,
        requests,
        errors,
        p50_us: Some(2_000),
        p99_us: Some(p99_us),
        users: Some(users),
    };
    // Two one-second intervals up to the halt (v2 failing, v1 fine), one after it (only v1
    // serves): an interval counts by its start.
    let samples = vec![
        sample(halt.plus_ms(500), "v2", 10, 4, 9_000, 12),
        sample(Timestamp(halt.millis() - 1_000), "v2", 10, 3, 8_000, 8),
        sample(Timestamp(halt.millis() - 1_000), "v1", 90, 1, 4_000, 50),
        sample(halt.plus_ms(1_600), "v1", 100, 0, 3_000, 60),
    ];
    h.at(halt.plus_ms(2_000), "controller", EventKind::SignalsRecorded { rollout_id: id.clone(), samples });
    let ws = h.world.workload("shop").unwrap();
    let md = ringfence_core::postmortem::draft(ws, &h.log, None).unwrap();
    assert!(md.contains("## Signals"), "{md}");
    assert!(md.contains("| v2 | before the halt | 20 | 7 | 35.00% | 9.0 ms | 12 |"), "{md}");
    assert!(md.contains("| v1 | before the halt | 90 | 1 | 1.11% | 4.0 ms | 50 |"), "{md}");
    assert!(md.contains("| v1 | after the halt | 100 | 0 | 0.00% | 3.0 ms | 60 |"), "{md}");
    assert!(md.contains("- About 12 distinct users were sent to v2 before the halt."), "{md}");
    assert!(!md.contains("traffic recorded"), "samples stay out of the timeline: {md}");
    let svg = ringfence_core::postmortem::signals_svg(ws, &h.log, None).unwrap().expect("a chart");
    // Four panels (error rate, p99, p50, requests per second), a line for each version in each.
    assert_eq!(svg.matches("<polyline").count(), 8, "{svg}");
    assert!(svg.contains("p50 latency (ms)"), "{svg}");
    assert!(svg.contains("v2 (new)") && svg.contains("v1 (stable)") && svg.contains("halted"), "{svg}");
    assert!(svg.contains("v2 before the halt: 20 requests, 7 errors, worst p99 9.0 ms"), "{svg}");
    // A failed rollout with nothing recorded has no chart, and one that did not fail no postmortem.
    assert!(ringfence_core::postmortem::signals_svg(ws, &[], None).unwrap().is_none());
    let first = ws.rollouts[0].id.clone();
    assert!(ringfence_core::postmortem::signals_svg(ws, &h.log, Some(&first)).is_err());
}

#[test]
fn text_limits_count_characters_as_the_api_schema_does() {
    let h = history();
    let incident = h.world.workload("shop").unwrap().incidents.keys().next().unwrap().clone();
    // 300 characters of two bytes each: 600 bytes, within the documented 300-character limit.
    let title = "é".repeat(300);
    let owner = "ü".repeat(64);
    incident::follow_up(&h.world, "shop", &incident, &title, &owner, None).expect("300 characters are allowed");
    let long = "é".repeat(301);
    let e = incident::follow_up(&h.world, "shop", &incident, &long, "bob", None).unwrap_err();
    assert!(e.message.contains("1 to 300 characters"), "{}", e.message);
    let e = incident::follow_up(&h.world, "shop", &incident, "ok", &"ü".repeat(65), None).unwrap_err();
    assert!(e.message.contains("at most 64 characters"), "{}", e.message);
}

#[test]
fn a_tick_looks_only_at_incidents_with_work_left() {
    // Every event folded here also checks that the index finds what a full scan finds
    // (`ticks_see_what_a_full_scan_sees`, called by `H::at`).
    let channel = |name: &str| {
        format!("\n[[notify]]\nname = \"{name}\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/{name}\"\n")
    };
    let channels = |names: &[&str]| names.iter().map(|n| channel(n)).collect::<String>();
    let (mut h, r2) = v2_under_way(&shop_spec("confirm_after = \"30m\"\n", &channels(&["ops", "pager"])));
    let mut now = T0.plus_ms(2 * HOUR + MIN);
    h.halt(now, &r2);
    let astir = |h: &H| h.world.workload("shop").unwrap().incidents_astir.contains(&r2);
    assert!(astir(&h), "an open incident");

    // A controller that sends each update as it falls due, "ops" taking every message and
    // "pager" refusing every one until it is given up on.
    let tick = |h: &mut H, now: Timestamp| {
        for e in incident::confirmed(h.world.workload("shop").unwrap(), now) {
            h.at(now, "controller", e);
        }
        for e in incident::updates_due(h.world.workload("shop").unwrap(), now) {
            h.at(now, "controller", e);
        }
        for d in incident::deliveries_due(h.world.workload("shop").unwrap(), now) {
            let (channel, incident, update) = (d.channel.name.clone(), d.incident.id.clone(), d.update);
            let e = if channel == "ops" {
                EventKind::NotificationDelivered { channel, incident, update, attempts: 1 }
            } else {
                EventKind::NotificationFailed { channel, incident, update, error: "503".into() }
            };
            h.at(now, "controller", e);
        }
    };
    for _ in 0..3 * 60 {
        if now == T0.plus_ms(2 * HOUR + 4 * MIN) {
            let mitigated =
                EventKind::MitigationCompleted { rollout_id: r2.clone(), verified: true, detail: "ok".into() };
            h.at(now, "controller", mitigated);
        }
        tick(&mut h, now);
        now = now.plus_ms(MIN);
    }
    let ws = h.world.workload("shop").unwrap();
    let i = &ws.incidents[&r2];
    assert_eq!(i.state, IncidentState::Resolved, "confirmed 30 minutes after its mitigation");
    assert!(ws.deliveries.keys().any(|(c, _, _)| c == "pager"), "the pager was tried");
    assert!(
        ws.deliveries.iter().filter(|((c, _, _), _)| c == "pager").all(|(_, d)| d.attempts == incident::MAX_ATTEMPTS),
        "and given up on"
    );
    assert!(!astir(&h), "resolved, its last update sent to every channel or given up on: no work left");

    // A channel added later is owed the updates of the last day: the incident is back in the
    // index until they are delivered, and out again after.
    now = now.plus_ms(HOUR);
    let s = spec::parse("shop.toml", &shop_spec("confirm_after = \"30m\"\n", &channels(&["ops", "pager", "team"])))
        .unwrap();
    h.at(now, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    assert!(astir(&h));
    let owed = incident::deliveries_due(h.world.workload("shop").unwrap(), now);
    assert!(!owed.is_empty() && owed.iter().all(|d| d.channel.name == "team"), "{owed:?}");
    for d in owed {
        let e = EventKind::NotificationDelivered {
            channel: d.channel.name.clone(),
            incident: d.incident.id.clone(),
            update: d.update,
            attempts: 1,
        };
        h.at(now, "controller", e);
    }
    assert!(!astir(&h));

    // Follow-ups: only open ones are looked at.
    let e = incident::follow_up(&h.world, "shop", &r2, "Alert on p99 latency", "bob", Some(now.plus_ms(DAY))).unwrap();
    h.at(now, "alice", e);
    let id = h.world.workload("shop").unwrap().follow_ups.keys().next().unwrap().clone();
    assert!(h.world.workload("shop").unwrap().follow_ups_open.contains(&id));
    h.at(now.plus_ms(2 * DAY), "bob", EventKind::FollowUpClosed { id: id.clone() });
    assert!(!h.world.workload("shop").unwrap().follow_ups_open.contains(&id));
}

/// "shop" keeping 20 rollouts (`extra` added to its spec), through 60 rollouts an hour apart,
/// every third one failing: halted, mitigated, its updates delivered, resolved and the
/// resolution delivered; but the second one's incident is left open, and the fifth's
/// resolution is never written (an update owed). The log, and the rollouts' ids.
fn sixty_rollouts(extra: &str) -> (H, Vec<String>) {
    let channel = "\n[[notify]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/ops\"\n";
    let text = shop_spec("confirm_after = \"30m\"\n", &format!("{channel}\n[history]\nrollouts = 20\n{extra}"));
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let s = spec::parse("shop.toml", &text).unwrap();
    assert_eq!(s.history.rollouts, 20);
    h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    let send_what_is_due = |h: &mut H, at: Timestamp| {
        // The fifth's resolution is never written: its update stays owed.
        let resolving_fifth = |e: &EventKind| matches!(e, EventKind::IncidentUpdated { incident, state: IncidentState::Resolved, .. } if incident == "shop-5");
        for e in incident::updates_due(h.world.workload("shop").unwrap(), at) {
            if !resolving_fifth(&e) {
                h.at(at, "controller", e);
            }
        }
        for d in incident::deliveries_due(h.world.workload("shop").unwrap(), at) {
            let (channel, incident, update) = (d.channel.name.clone(), d.incident.id.clone(), d.update);
            h.at(at, "controller", EventKind::NotificationDelivered { channel, incident, update, attempts: 1 });
        }
    };
    let mut ids = Vec::new();
    for n in 1..=60u64 {
        let at = T0.plus_ms(n * HOUR);
        let v = format!("v{n}");
        h.release(at, &v, None);
        let id = h.start(at, &v);
        assert_eq!(id, format!("shop-{n}"), "numbered by count, whatever was let go");
        if n % 3 == 2 {
            h.halt(at.plus_ms(MIN), &id);
            let done = EventKind::MitigationCompleted { rollout_id: id.clone(), verified: true, detail: "ok".into() };
            h.at(at.plus_ms(2 * MIN), "controller", done);
            send_what_is_due(&mut h, at.plus_ms(2 * MIN));
            if n != 2 {
                h.at(at.plus_ms(3 * MIN), "oncall", incident::resolve(&h.world, "shop", &id).unwrap());
            }
            send_what_is_due(&mut h, at.plus_ms(3 * MIN));
        } else {
            h.complete(at.plus_ms(10 * MIN), &id, &v);
        }
        ids.push(id);
    }
    (h, ids)
}

#[test]
fn a_workload_keeps_its_newest_rollouts_and_lets_older_ones_go_still_counted() {
    let (h, ids) = sixty_rollouts("");
    let ws = h.world.workload("shop").unwrap();
    let kept: Vec<&str> = ws.rollouts.iter().map(|r| r.id.as_str()).collect();
    assert!(kept.len() <= 20 + 2 + 2, "the newest 20 (and a tenth more before a batch goes) and two: {kept:?}");
    assert!(kept.len() >= 22, "{kept:?}");
    assert_eq!(kept[0], "shop-2", "a rollout whose incident is open is kept, whatever its age");
    assert_eq!(kept[1], "shop-5", "and one whose incident still owes its resolution's update");
    assert!(ws.incidents_astir.contains("shop-5"));
    assert_eq!(ws.forgotten.rollouts as usize, 60 - kept.len());
    assert_eq!(ws.next_rollout_id(), "shop-61");
    for id in &ids {
        let found = ws.rollout(id).map(|r| r.id.as_str());
        assert_eq!(found.is_some(), kept.contains(&id.as_str()), "{id}");
        assert!(found.is_none_or(|f| f == id));
        assert_eq!(ws.forgot_rollout(id), found.is_none(), "{id}");
    }
    assert!(!ws.forgot_rollout("shop-61") && !ws.forgot_rollout("shop-0") && !ws.forgot_rollout("other-3"));
    assert!(ws.incidents.keys().all(|id| kept.contains(&id.as_str())), "an incident goes with its rollout");
    assert!(ws.deliveries.keys().all(|(_, subject, _)| kept.contains(&subject.as_str())), "and its deliveries");
    assert_eq!(ws.lkg.len(), 40, "every last-known-good entry stays: `rollback --to` and promotion ask for any");
    assert_eq!(ws.lkg().map(|e| e.version.as_str()), Some("v60"));
    assert!(ws.incidents.get("shop-2").is_some_and(|i| i.is_open()));
    // Nothing left the counts: 40 completed, 20 mitigated, 20 halts.
    assert_eq!(ws.totals.outcomes.get("completed"), Some(&40));
    assert_eq!(ws.totals.outcomes.get("mitigated"), Some(&20));
    assert_eq!(ws.totals.halts, 20);
    assert_eq!(ws.totals.open.get("sev2"), Some(&1));
    assert!(ws.totals.deliveries.get("ops").is_some_and(|(ok, _)| *ok >= 20));

    // The log has it all: folded again keeping everything, every rollout and incident is
    // there, with the same counts, and DORA over the whole window counts all 60.
    let mut whole = World::keeping_everything();
    for e in &h.log {
        whole.apply(e);
    }
    let all = whole.workload("shop").unwrap();
    assert_eq!(all.rollouts.len(), 60);
    assert_eq!(all.incidents.len(), 20);
    assert_eq!(all.totals, ws.totals);
    let end = T0.plus_ms(62 * HOUR);
    assert_eq!(dora::compute(all, T0, end).deployments.len(), 60);
    assert_eq!(dora::compute(ws, T0, end).deployments.len(), kept.len(), "the projection holds what it kept");
    // And a restart folds the same projection; it lets go in batches, the two kept for their
    // incidents not making every rollout's end a pass.
    let mut again = World::default();
    let mut passes = 0;
    for e in &h.log {
        let before = again.workload("shop").map(|ws| ws.forgotten.rollouts);
        again.apply(e);
        passes += usize::from(again.workload("shop").map(|ws| ws.forgotten.rollouts) != before);
    }
    assert_eq!(again.workload("shop"), h.world.workload("shop"));
    assert!(passes <= 15, "{passes} passes let {} rollouts go", ws.forgotten.rollouts);
}

/// Release `v` as its `release_created` event has it, found by what the projection kept of it.
fn from_log(h: &H, v: &str) -> ringfence_core::release::Release {
    let seq = h.world.workload("shop").unwrap().releases_let_go[v].seq;
    match h.log.iter().find(|e| e.seq == seq).map(|e| &e.kind) {
        Some(EventKind::ReleaseCreated { release }) => (**release).clone(),
        other => panic!("{v}: {other:?}"),
    }
}

#[test]
fn old_releases_are_let_go_and_read_back_from_the_log_to_run_again() {
    let (mut h, _) = sixty_rollouts("");
    let ws = h.world.workload("shop").unwrap().clone();
    let kept: Vec<&str> = ws.releases.keys().map(String::as_str).collect();
    for v in ["v1", "v2", "v4", "v5"] {
        assert!(kept.contains(&v), "{v}: deployed or replaced by a rollout kept for its incident: {kept:?}");
    }
    for n in 41..=60 {
        assert!(kept.contains(&format!("v{n}").as_str()), "v{n}: one of the newest 20 registered");
    }
    assert!(kept.len() < 40, "{} kept: {kept:?}", kept.len());
    assert_eq!(ws.releases.len() + ws.releases_let_go.len(), 60, "each release kept whole or as a stub");
    assert_eq!(ws.release_order.len(), 60);
    assert!(ws.releases.keys().all(|v| ws.release_seqs.contains_key(v)));
    let stub = ws.releases_let_go.get("v3").expect("v3 let go").clone();
    assert!(ws.has_release("v3") && !ws.has_release("v61"));

    // Registered again: the same content is still a no-op, other content still refused.
    let req = ReleaseRequest { version: "v3".into(), content: ReleaseContent::default() };
    let (event, again) = command::create_release(&h.world, "shop", &req, "bob", T0.plus_ms(70 * HOUR)).unwrap();
    assert!(event.is_none());
    assert_eq!(
        (again.digest.as_str(), again.created_at, again.created_by.as_str()),
        (stub.digest.as_str(), stub.created_at, "alice")
    );
    let other =
        ReleaseRequest { version: "v3".into(), content: ReleaseContent { artifact: "x".into(), ..Default::default() } };
    let e = command::create_release(&h.world, "shop", &other, "bob", T0.plus_ms(70 * HOUR)).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{e}");

    // Deployed again: not from the stub; from its `release_created` event, read back.
    let e = command::start_rollout(&h.world, "shop", "v3").unwrap_err();
    assert!(e.message.contains("let go"), "{e}");
    let v3 = from_log(&h, "v3");
    assert_eq!(v3.version, "v3");
    let mut forged = v3.clone();
    forged.content.artifact = "forged".into();
    forged.digest = forged.content.digest();
    let e =
        command::restoring(&h.world, "shop", Some(&forged), |w| command::start_rollout(w, "shop", "v3")).unwrap_err();
    assert!(e.message.contains("let go"), "content other than what was kept is not restored: {e}");
    let events = command::restoring(&h.world, "shop", Some(&v3), |w| command::start_rollout(w, "shop", "v3")).unwrap();
    assert!(matches!(&events[0], EventKind::ReleaseRestored { release } if **release == v3), "{events:?}");
    assert!(matches!(&events[1], EventKind::RolloutStarted { release, .. } if release == "v3"), "{events:?}");
    let at = T0.plus_ms(70 * HOUR);
    for e in events {
        h.at(at, "ci", e);
    }
    let ws = h.world.workload("shop").unwrap();
    assert_eq!(ws.releases.get("v3").map(|r| &**r), Some(&v3), "held whole again");
    assert!(!ws.releases_let_go.contains_key("v3"));
    assert_eq!(ws.release_seqs.get("v3"), Some(&stub.seq));
    let id = ws.active_rollout().map(|r| r.id.clone()).unwrap();
    h.complete(at.plus_ms(HOUR), &id, "v3");

    // A rollback to an old last known good reads it back the same way.
    let ws = h.world.workload("shop").unwrap().clone();
    let target = ws.lkg.iter().map(|e| e.version.clone()).find(|v| ws.releases_let_go.contains_key(v)).unwrap();
    let rb = from_log(&h, &target);
    let events = command::restoring(&h.world, "shop", Some(&rb), |w| {
        command::rollback_all(w, "shop", Some(&target), "oncall", "back")
    })
    .unwrap();
    assert!(matches!(&events[0], EventKind::ReleaseRestored { .. }), "{events:?}");
    for e in events {
        h.at(at.plus_ms(2 * HOUR), "oncall", e);
    }
    assert!(h.world.workload("shop").unwrap().releases.contains_key(&target));

    // The log folds to the same projection; folded keeping everything, nothing is let go.
    let mut again = World::default();
    for e in &h.log {
        again.apply(e);
    }
    assert_eq!(again.workload("shop"), h.world.workload("shop"));
    let mut whole = World::keeping_everything();
    for e in &h.log {
        whole.apply(e);
    }
    assert_eq!(whole.workload("shop").unwrap().releases.len(), 60);
    assert!(whole.workload("shop").unwrap().releases_let_go.is_empty());
}

/// A rollback with no target walks past a version an earlier rollback left, also once
/// `[history]` has let that rollback go.
#[test]
fn a_rollback_walks_past_what_a_rollback_let_go_had_left() {
    let (mut h, _) = sixty_rollouts("");
    // v60 stable; v59 failed; v58 the last known good before it.
    let at = T0.plus_ms(70 * HOUR);
    let rollback = |h: &mut H, to: Option<&str>, at: Timestamp| {
        let events = command::rollback_all(&h.world, "shop", to, "oncall", "slow").unwrap();
        let id = events.last().and_then(|e| e.rollout_id()).unwrap().to_string();
        let EventKind::RolloutStarted { release, .. } = events.last().unwrap() else { panic!("{events:?}") };
        let release = release.clone();
        for e in events {
            h.at(at, "oncall", e);
        }
        h.complete(at.plus_ms(MIN), &id, &release);
        (id, release)
    };
    let next = |h: &H| command::rollback_target(h.world.workload("shop").unwrap(), None).unwrap();
    let (id, back) = rollback(&mut h, None, at);
    assert_eq!(back, "v58");
    assert_eq!(next(&h), "v57", "not back to v60, which the rollback left");
    rollback(&mut h, Some("v57"), at.plus_ms(HOUR));
    assert_eq!(next(&h), "v55", "past v58 and v60, which the two rollbacks left (v56 failed)");
    // Thirty rollouts aborted since: the rollback is let go, and what it left is still known.
    for n in 61..=90u64 {
        let at = at.plus_ms((n - 59) * HOUR);
        let v = format!("v{n}");
        h.release(at, &v, None);
        h.start(at, &v);
        h.at(at.plus_ms(MIN), "oncall", command::abort(&h.world, "shop").unwrap());
    }
    let ws = h.world.workload("shop").unwrap();
    assert!(ws.forgot_rollout(&id), "{id} let go");
    assert_eq!(next(&h), "v55");
    let mut again = World::default();
    for e in &h.log {
        again.apply(e);
    }
    assert_eq!(command::rollback_target(again.workload("shop").unwrap(), None).unwrap(), "v55", "after a restart too");
}

#[test]
fn a_release_read_back_runs_on_the_kept_processes_and_moves_no_other_release() {
    let text = shop_spec("", "\n[history]\nrollouts = 20\n");
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let s = spec::parse("shop.toml", &text).unwrap();
    h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    let deploy = |h: &mut H, n: u64, version: &str, artifact: &str| {
        let at = T0.plus_ms(n * MIN);
        let req = ReleaseRequest {
            version: version.into(),
            content: ReleaseContent { artifact: artifact.into(), ..Default::default() },
        };
        let (e, _) = command::create_release(&h.world, "shop", &req, "alice", at).unwrap();
        h.at(at, "alice", e.unwrap());
        let id = h.start(at, version);
        h.complete(at, &id, version);
    };
    // y, then 30 releases of other builds: y is let go.
    deploy(&mut h, 1, "y", "app:shared");
    for n in 1..=30 {
        deploy(&mut h, n + 1, &format!("v{n}"), &format!("app:{n}"));
    }
    assert!(h.world.workload("shop").unwrap().releases_let_go.contains_key("y"));
    // z, the same build as y: its processes are its own, y's being gone.
    deploy(&mut h, 40, "z", "app:shared");
    assert_eq!(h.world.workload("shop").unwrap().runtime_of("z"), "z");
    // y read back and deployed: it runs on z's processes; z keeps them.
    let y = from_log(&h, "y");
    let events = command::restoring(&h.world, "shop", Some(&y), |w| command::start_rollout(w, "shop", "y")).unwrap();
    for e in events {
        h.at(T0.plus_ms(41 * MIN), "ci", e);
    }
    let ws = h.world.workload("shop").unwrap();
    assert_eq!((ws.runtime_of("z"), ws.runtime_of("y")), ("z".to_string(), "z".to_string()));
    let mut again = World::default();
    for e in &h.log {
        again.apply(e);
    }
    assert_eq!(again.workload("shop"), h.world.workload("shop"));
}

#[test]
fn a_bypass_is_kept_while_its_flags_are_off_until_it_is_escalated() {
    let text = shop_spec("", "\n[history]\nrollouts = 20\n").replacen(
        "[mitigation]\n",
        "[mitigation]\nbypass_approvers = [\"bob\"]\n",
        1,
    );
    let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
    let s = spec::parse("shop.toml", &text).unwrap();
    h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
    let settle = |h: &mut H, at: Timestamp| {
        for e in incident::updates_due(h.world.workload("shop").unwrap(), at) {
            h.at(at, "controller", e);
        }
    };
    h.release(T0, "v1", None);
    let r1 = h.start(T0, "v1");
    h.complete(T0.plus_ms(MIN), &r1, "v1");
    // v2 turns unhealthy; bob approves running it with its guard flag off.
    h.release(T0.plus_ms(2 * MIN), "v2", None);
    let bypassed = h.start(T0.plus_ms(2 * MIN), "v2");
    let r = h.world.workload("shop").unwrap().rollout(&bypassed).unwrap().clone();
    let mut d = decision::manual_rollback(&r, "controller", "errors up");
    d.action = decision::MitigationAction::Hold;
    d.bypass_flags = vec!["new-checkout".into()];
    h.at(
        T0.plus_ms(3 * MIN),
        "controller",
        EventKind::RolloutHalted { rollout_id: bypassed.clone(), decision: Box::new(d) },
    );
    for e in command::bypass(&h.world, "shop", "bob", "the rest works").unwrap() {
        h.at(T0.plus_ms(4 * MIN), "bob", e);
    }
    let done = EventKind::MitigationCompleted { rollout_id: bypassed.clone(), verified: true, detail: "ok".into() };
    h.at(T0.plus_ms(5 * MIN), "controller", done);
    h.complete(T0.plus_ms(6 * MIN), &bypassed, "v2");
    settle(&mut h, T0.plus_ms(6 * MIN));
    h.at(T0.plus_ms(7 * MIN), "oncall", incident::resolve(&h.world, "shop", &bypassed).unwrap());
    settle(&mut h, T0.plus_ms(7 * MIN));
    let rollouts = |h: &mut H, from: u64, at: Timestamp| {
        for n in from..from + 25 {
            let v = format!("v{n}");
            h.release(at, &v, None);
            let id = h.start(at, &v);
            h.complete(at, &id, &v);
        }
    };
    // Within `max_degraded` (an hour): kept, however many rollouts follow.
    rollouts(&mut h, 3, T0.plus_ms(10 * MIN));
    let ws = h.world.workload("shop").unwrap();
    assert!(ws.forgotten.rollouts > 0, "older rollouts were let go");
    assert!(ws.rollout(&bypassed).is_some(), "its flag is still off: kept");
    assert_eq!(command::degraded_too_long(&h.world, "shop", T0.plus_ms(30 * MIN)), None);
    // Past it, escalated once; then nothing is owed for it any more, and it goes.
    let late = T0.plus_ms(2 * HOUR);
    let escalated = command::degraded_too_long(&h.world, "shop", late).expect("escalated");
    assert!(matches!(&escalated, EventKind::DegradedTooLong { rollout_id, .. } if *rollout_id == bypassed));
    h.at(late, "controller", escalated);
    rollouts(&mut h, 28, late);
    let ws = h.world.workload("shop").unwrap();
    assert!(ws.rollout(&bypassed).is_none(), "escalated: let go like any other");
    assert!(ws.forgot_rollout(&bypassed));
    assert_eq!(command::degraded_too_long(&h.world, "shop", late.plus_ms(HOUR)), None, "and not escalated again");
}

#[test]
fn a_public_status_page_keeps_the_incidents_of_its_days() {
    let (h, _) = sixty_rollouts("\n[status_page]\npublic = true\n");
    let ws = h.world.workload("shop").unwrap();
    assert!(ws.forgotten.rollouts > 0, "healthy rollouts were let go");
    assert_eq!(ws.incidents.len(), 20, "every incident of the last 90 days stays for the page");
    assert!(ws.incidents.keys().all(|id| ws.rollout(id).is_some()), "with its rollout");
}

#[test]
fn a_public_status_page_keeps_an_incident_it_still_draws_on_some_day() {
    // shop-2 fails on day 0 and is resolved on day `resolved_day`; 30 rollouts follow on day
    // 95. The page draws an incident on every day from its detection to its resolution: one
    // resolved 85 days before is still drawn, one resolved 93 days before is not.
    for (resolved_day, kept) in [(10, true), (2, false)] {
        let text = shop_spec("", "\n[status_page]\npublic = true\n\n[history]\nrollouts = 20\n");
        let mut h = H { world: World::default(), seq: 0, log: Vec::new() };
        let s = spec::parse("shop.toml", &text).unwrap();
        h.at(T0, "admin", command::apply_spec(&h.world, &s).unwrap().unwrap());
        let write_updates = |h: &mut H, at: Timestamp| {
            for e in incident::updates_due(h.world.workload("shop").unwrap(), at) {
                h.at(at, "controller", e);
            }
        };
        h.release(T0, "v1", None);
        let id = h.start(T0, "v1");
        h.complete(T0.plus_ms(10 * MIN), &id, "v1");
        h.release(T0.plus_ms(HOUR), "v2", None);
        let bad = h.start(T0.plus_ms(HOUR), "v2");
        h.halt(T0.plus_ms(HOUR + MIN), &bad);
        let done = EventKind::MitigationCompleted { rollout_id: bad.clone(), verified: true, detail: "ok".into() };
        h.at(T0.plus_ms(HOUR + 2 * MIN), "controller", done);
        write_updates(&mut h, T0.plus_ms(HOUR + 2 * MIN));
        let resolved_at = T0.plus_ms(resolved_day * DAY);
        h.at(resolved_at, "oncall", incident::resolve(&h.world, "shop", &bad).unwrap());
        write_updates(&mut h, resolved_at);
        for n in 3..=32u64 {
            let at = T0.plus_ms(95 * DAY + n * HOUR);
            let v = format!("v{n}");
            h.release(at, &v, None);
            let id = h.start(at, &v);
            h.complete(at.plus_ms(10 * MIN), &id, &v);
        }
        let ws = h.world.workload("shop").unwrap();
        assert!(ws.forgotten.rollouts > 0, "rollouts were let go");
        assert_eq!(ws.rollout(&bad).is_some(), kept, "resolved on day {resolved_day}");
        assert_eq!(ws.incidents.contains_key(&bad), kept, "resolved on day {resolved_day}");
    }
}

#[test]
fn a_history_too_small_or_too_large_is_refused_with_its_field() {
    for n in ["19", "100001"] {
        let text = shop_spec("", &format!("\n[history]\nrollouts = {n}\n"));
        let e = format!("{:?}", spec::parse("shop.toml", &text).unwrap_err());
        assert!(e.contains("history.rollouts") && e.contains(n), "{e}");
    }
}
