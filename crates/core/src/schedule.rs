//! Deployment windows and freezes: when a rollout may start or advance (`[schedule]`).
//!
//! Windows and recurring freezes are wall-clock times in the schedule's time zone, so
//! "Mon-Fri 09:00-17:00" means nine to five on the office clock in winter and in summer. The
//! rule is read off that clock: at an instant, the gate is open when some window covers the
//! local time (or there are no windows) and no freeze covers the instant. Deny beats allow.
//!
//! Daylight saving falls out of the rule: a window inside the hour skipped in spring is empty
//! that day, one inside the hour repeated in autumn is open both times round, and a window that
//! straddles a transition is as long as the clock says (an hour shorter or longer).
//!
//! Pure like the rest of the core: time comes in as a [`Timestamp`], and the zone rules are
//! the IANA database bundled into the binary (jiff's `tzdb-bundle-always`) rather than
//! `/usr/share/zoneinfo`, so every machine and every test reads the same rules and nothing
//! opens a file.

use std::collections::BTreeSet;
use std::fmt;

use jiff::civil::{Date, Time};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::time::Timestamp;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// How far ahead `next_open` and the end of a recurring freeze are looked for.
const HORIZON_MS: i64 = 366 * DAY_MS;
/// Searches move forward a week at a time, so a gate that opens tomorrow morning costs a
/// week of boundaries, not a year's.
const CHUNK_MS: i64 = 7 * DAY_MS;
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_DAY_NAMES: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const WINDOW_EXAMPLE: &str = "Mon-Fri 09:00-17:00";
const FREEZE_EXAMPLE: &str = "Fri 15:00-24:00";
const INSTANT_EXAMPLE: &str = "2026-12-20T00:00:00+01:00";

/// `[schedule]`: when rollouts may start or advance. The default is always open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// IANA time zone the windows and recurring freezes are read in, e.g. `Europe/Paris`.
    pub timezone: String,
    /// When rollouts may start or advance, e.g. `Mon-Fri 09:00-17:00`. Empty: at any time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
    /// What starting or advancing outside a window does.
    pub outside: Outside,
    /// Times nothing may start or advance, even inside a window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freezes: Vec<Freeze>,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule { timezone: "UTC".into(), windows: Vec::new(), outside: Outside::Wait, freezes: Vec::new() }
    }
}

/// What starting or advancing a rollout outside the windows (or in a freeze) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outside {
    /// Hold, and go on by itself when the gate opens.
    #[default]
    Wait,
    /// Refuse, saying why and when the gate opens next.
    Refuse,
}

/// `[[schedule.freezes]]`: one-off (`from`, `to`) or recurring (`every`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// Start of a one-off freeze, RFC 3339 with its offset (quoted, or a TOML datetime).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "instant_text")]
    pub from: Option<String>,
    /// End of a one-off freeze (excluded): the gate may open at this instant.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "instant_text")]
    pub to: Option<String>,
    /// A recurring freeze in the schedule's time zone, written like a window: `Fri 15:00-24:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Shown to whoever the freeze stops.
    #[serde(default)]
    pub reason: String,
}

/// Whether a rollout may start or advance now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    Open,
    Closed {
        /// In the user's terms: the freezes that apply and their ends, or the windows missed.
        why: String,
        /// The first instant at or after the question where a window is open and no freeze
        /// applies, looked for up to 366 days ahead; `None` if there is none.
        next_open: Option<Timestamp>,
    },
}

impl Gate {
    pub fn is_open(&self) -> bool {
        matches!(self, Gate::Open)
    }
}

impl Schedule {
    /// Nothing to check: no windows and no freezes (whatever the time zone).
    pub fn is_always_open(&self) -> bool {
        self.windows.is_empty() && self.freezes.is_empty()
    }

    /// Whether the section can be left out of a serialized spec.
    pub fn is_default(&self) -> bool {
        *self == Schedule::default()
    }

    /// Every problem, as (field path, message naming the value and what is expected).
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        self.compile().map(|_| ())
    }

    /// Whether a rollout may start or advance at `now`, and if not why and until when.
    ///
    /// A schedule that does not validate is closed with its problems as the reason: the spec
    /// parser refuses such a schedule, so this only guards against one built by hand, and a
    /// safety gate that cannot be read should not let changes through.
    pub fn check(&self, now: Timestamp) -> Gate {
        if self.is_always_open() {
            return Gate::Open;
        }
        match self.compile() {
            Ok(c) => c.check(clamp(now.0)),
            Err(problems) => Gate::Closed { why: invalid(&problems), next_open: None },
        }
    }

    /// Whether the gate was open at every instant from `from` to `to`, both included (in
    /// either order). An approval given at `from` still holds at `to` only if no window closed
    /// and no freeze began in between. False for a schedule that does not validate.
    pub fn open_throughout(&self, from: Timestamp, to: Timestamp) -> bool {
        if self.is_always_open() {
            return true;
        }
        let Ok(c) = self.compile() else { return false };
        let (a, b) = (clamp(from.0.min(to.0)), clamp(from.0.max(to.0)));
        c.open_at(a) && c.first_after(a, b, |t| !c.open_at(t)).is_none()
    }

    /// `t` on the schedule's clock for messages: `Mon 2026-12-07 09:00 CET`. UTC when the time
    /// zone is unknown.
    pub fn format_time(&self, t: Timestamp) -> String {
        let zone = lookup_zone(&self.timezone).unwrap_or(TimeZone::UTC);
        format_in(&zone, clamp(t.0))
    }

    /// Parses the text fields once, collecting every problem rather than the first.
    fn compile(&self) -> Result<Compiled, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let zone = match lookup_zone(&self.timezone) {
            Some(zone) => zone,
            None => {
                problems.push((
                    "schedule.timezone".to_string(),
                    format!(
                        "{:?}: unknown time zone; expected an IANA name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\"",
                        self.timezone
                    ),
                ));
                TimeZone::UTC
            }
        };
        let zone_name = zone.iana_name().unwrap_or(self.timezone.trim()).to_string();

        let mut windows = Vec::new();
        for (i, text) in self.windows.iter().enumerate() {
            match Rule::parse(text, WINDOW_EXAMPLE) {
                Ok(rule) => windows.push(rule),
                Err(msg) => problems.push((format!("schedule.windows[{i}]"), msg)),
            }
        }

        let mut freezes = Vec::new();
        for (i, f) in self.freezes.iter().enumerate() {
            let field = |name: &str| format!("schedule.freezes[{i}].{name}");
            if f.reason.trim().is_empty() {
                problems.push((
                    field("reason"),
                    format!(
                        "{:?}: expected a reason, e.g. \"year-end freeze\": it is shown to whoever the freeze stops",
                        f.reason
                    ),
                ));
            }
            let reason = f.reason.trim().to_string();
            match (&f.from, &f.to, &f.every) {
                (None, None, None) => problems.push((
                    format!("schedule.freezes[{i}]"),
                    format!(
                        "expected `from` and `to` (a one-off freeze, e.g. from = {INSTANT_EXAMPLE:?}) or `every` (a recurring one, e.g. every = {FREEZE_EXAMPLE:?})"
                    ),
                )),
                (None, None, Some(every)) => match Rule::parse(every, FREEZE_EXAMPLE) {
                    Ok(rule) => freezes.push(CompiledFreeze { reason, kind: FreezeKind::Every(rule) }),
                    Err(msg) => problems.push((field("every"), msg)),
                },
                (_, _, Some(every)) => problems.push((
                    field("every"),
                    format!(
                        "{every:?}: a freeze is either one-off (`from` and `to`) or recurring (`every`), not both: split it in two"
                    ),
                )),
                (from, to, None) => {
                    let from_at = match from {
                        Some(text) => parse_instant(text).map_err(|m| problems.push((field("from"), m))).ok(),
                        None => {
                            problems.push((
                                field("from"),
                                format!("a one-off freeze needs `from` as well as `to`, e.g. {INSTANT_EXAMPLE:?}"),
                            ));
                            None
                        }
                    };
                    let to_at = match to {
                        Some(text) => parse_instant(text).map_err(|m| problems.push((field("to"), m))).ok(),
                        None => {
                            problems.push((
                                field("to"),
                                "a one-off freeze needs `to` as well as `from`: when the freeze ends".to_string(),
                            ));
                            None
                        }
                    };
                    if let (Some(from_at), Some(to_at)) = (from_at, to_at) {
                        if from_at >= to_at {
                            problems.push((
                                field("to"),
                                format!(
                                    "{:?} is not after `from` ({:?}): a freeze must end after it starts",
                                    to.as_deref().unwrap_or_default(),
                                    from.as_deref().unwrap_or_default()
                                ),
                            ));
                        } else {
                            freezes.push(CompiledFreeze { reason, kind: FreezeKind::Once { from: from_at, to: to_at } });
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Compiled::new(zone, zone_name, windows, freezes))
    }
}

fn invalid(problems: &[(String, String)]) -> String {
    let list: Vec<String> = problems.iter().map(|(field, msg)| format!("{field}: {msg}")).collect();
    format!("the schedule is invalid: {}", list.join("; "))
}

/// The bundled database, not `jiff::tz::db()`: see the module comment. Names are matched
/// without regard to case; `Etc/Unknown` is jiff's placeholder, not a place.
fn lookup_zone(name: &str) -> Option<TimeZone> {
    let zone = TimeZoneDatabase::bundled().get(name.trim()).ok()?;
    (!zone.is_unknown()).then_some(zone)
}

fn parse_instant(text: &str) -> Result<i64, String> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| format!("{text:?}: expected an RFC 3339 time with its offset, e.g. {INSTANT_EXAMPLE:?}"))
}

/// Milliseconds into jiff's range (years -9999 to 9999), so no conversion below can fail on
/// an absurd timestamp.
fn clamp(ms: i64) -> i64 {
    ms.clamp(jiff::Timestamp::MIN.as_millisecond(), jiff::Timestamp::MAX.as_millisecond())
}

/// `ms` must be clamped; the fallback only keeps this total.
fn jts(ms: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 { jiff::Timestamp::MIN } else { jiff::Timestamp::MAX })
}

fn format_in(zone: &TimeZone, ms: i64) -> String {
    let ts = jts(ms);
    let dt = zone.to_datetime(ts);
    let info = zone.to_offset_info(ts);
    let weekday = DAY_NAMES[dt.weekday().to_monday_zero_offset().clamp(0, 6) as usize];
    format!(
        "{weekday} {:04}-{:02}-{:02} {:02}:{:02} {}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        info.abbreviation()
    )
}

/// A window or recurring freeze: days of the week and a span of minutes of the day.
#[derive(Debug, Clone)]
struct Rule {
    /// As written (trimmed), for messages: users recognise their own text.
    text: String,
    /// Bit 0 is Monday: the days the span starts on.
    days: u8,
    /// Minutes since midnight, 0..1440.
    start: u32,
    /// 1..=1440 after `start`, or 0..`start` when the span crosses midnight into the next day.
    end: u32,
}

impl Rule {
    /// `DAYS HH:MM-HH:MM`. Days: `Mon`..`Sun` (or full names, any case), ranges `Mon-Fri`
    /// (`Fri-Mon` wraps over the weekend), lists `Mon,Wed`. Spaces around `-` are tolerated.
    fn parse(raw: &str, example: &str) -> Result<Rule, String> {
        let text = raw.trim();
        let expected = || format!("{raw:?}: expected DAYS HH:MM-HH:MM, e.g. {example:?}");
        // Days are letters and times start with a digit: split there, so "Mon-Fri 09:00 - 17:00"
        // reads as well as the canonical form.
        let Some(split) = text.find(|c: char| c.is_ascii_digit()) else { return Err(expected()) };
        let (days_text, times_text) = text.split_at(split);
        let days_text = days_text.trim();
        if days_text.is_empty() {
            return Err(format!(
                "{raw:?}: expected the days before the times, e.g. {example:?}, or \"Mon-Sun 09:00-17:00\" for every day"
            ));
        }

        let mut days = 0u8;
        for item in days_text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(expected());
            }
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let day = |name: &str| {
                let name = name.trim();
                day_index(name).ok_or_else(|| {
                    format!(
                        "{raw:?}: unknown day {name:?}; expected Mon, Tue, Wed, Thu, Fri, Sat or Sun, a range such as Mon-Fri or a list such as Mon,Wed"
                    )
                })
            };
            let (first, last) = (day(first)?, day(last)?);
            let mut d = first;
            loop {
                days |= 1 << d;
                if d == last {
                    break;
                }
                d = (d + 1) % 7;
            }
        }

        let times: String = times_text.chars().filter(|c| !c.is_whitespace()).collect();
        let Some((start_text, end_text)) = times.split_once('-') else { return Err(expected()) };
        let (Some((sh, sm)), Some((eh, em))) = (clock(start_text), clock(end_text)) else {
            return Err(expected());
        };
        for (text, h, m) in [(start_text, sh, sm), (end_text, eh, em)] {
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(format!(
                    "{raw:?}: {text} is not a time of day; expected 00:00 to 23:59, or 24:00 as an end"
                ));
            }
        }
        if sh == 24 {
            return Err(format!(
                "{raw:?}: 24:00 is only an end; to start at midnight write 00:00 on the day that starts"
            ));
        }
        let (start, end) = (sh * 60 + sm, eh * 60 + em);
        if start == end {
            return Err(format!(
                "{raw:?}: starts and ends at {start_text}, which is empty; for a whole day write 00:00-24:00"
            ));
        }
        Ok(Rule { text: text.split_whitespace().collect::<Vec<_>>().join(" "), days, start, end })
    }

    fn on(&self, weekday: u8) -> bool {
        self.days & (1 << weekday) != 0
    }

    /// Whether the wall clock reading (weekday, milliseconds since local midnight) is inside.
    fn covers(&self, weekday: u8, ms: i64) -> bool {
        let (start, end) = (i64::from(self.start) * MINUTE_MS, i64::from(self.end) * MINUTE_MS);
        if self.start < self.end {
            self.on(weekday) && start <= ms && ms < end
        } else {
            // Crossing midnight: the evening of a listed day, or the early hours after one.
            (self.on(weekday) && ms >= start) || (self.on((weekday + 6) % 7) && ms < end)
        }
    }

    /// The minutes of the day at which the rule can switch on or off.
    fn edges(&self) -> [u32; 2] {
        [self.start % 1440, self.end % 1440]
    }
}

fn day_index(name: &str) -> Option<u8> {
    let lower = name.to_ascii_lowercase();
    (0..7u8).find(|&i| DAY_NAMES[i as usize].eq_ignore_ascii_case(name) || FULL_DAY_NAMES[i as usize] == lower)
}

/// `H:MM` or `HH:MM`, unchecked for range (so the message can say which part is wrong).
fn clock(text: &str) -> Option<(u32, u32)> {
    let (h, m) = text.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || h.len() > 2 || !digits(m) || m.len() != 2 {
        return None;
    }
    Some((h.parse().ok()?, m.parse().ok()?))
}

#[derive(Debug, Clone)]
enum FreezeKind {
    /// Milliseconds since the epoch; `to` excluded.
    Once {
        from: i64,
        to: i64,
    },
    Every(Rule),
}

#[derive(Debug, Clone)]
struct CompiledFreeze {
    reason: String,
    kind: FreezeKind,
}

/// A validated schedule, ready to be asked about instants.
struct Compiled {
    zone: TimeZone,
    zone_name: String,
    windows: Vec<Rule>,
    /// The windows leave no minute of the week uncovered: only freezes can close the gate.
    /// Knowing it keeps the window edges out of the searches, so `open_throughout` over a long
    /// span is not a walk over every day of it.
    windows_cover_week: bool,
    freezes: Vec<CompiledFreeze>,
    /// Minutes of the day at which some window or recurring freeze can switch. Empty when
    /// only one-off freezes matter: then the wall clock does not.
    edges: Vec<u32>,
}

impl Compiled {
    fn new(zone: TimeZone, zone_name: String, windows: Vec<Rule>, freezes: Vec<CompiledFreeze>) -> Compiled {
        let window_edges: BTreeSet<u32> = windows.iter().flat_map(Rule::edges).collect();
        // On a given day coverage only changes at an edge, so probing midnight and each edge of
        // each day decides it.
        let windows_cover_week = windows.is_empty()
            || (0..7u8).all(|d| {
                std::iter::once(&0)
                    .chain(&window_edges)
                    .all(|&m| windows.iter().any(|w| w.covers(d, i64::from(m) * MINUTE_MS)))
            });
        let mut edges: BTreeSet<u32> = BTreeSet::new();
        if !windows_cover_week {
            edges.extend(&window_edges);
        }
        for f in &freezes {
            if let FreezeKind::Every(rule) = &f.kind {
                edges.extend(rule.edges());
            }
        }
        Compiled { zone, zone_name, windows, windows_cover_week, freezes, edges: edges.into_iter().collect() }
    }

    /// The wall clock at `t`: weekday (Monday 0) and milliseconds since local midnight.
    fn local(&self, t: i64) -> (u8, i64) {
        let dt = self.zone.to_datetime(jts(t));
        let weekday = dt.weekday().to_monday_zero_offset().clamp(0, 6) as u8;
        let ms = ((i64::from(dt.hour()) * 60 + i64::from(dt.minute())) * 60 + i64::from(dt.second())) * 1000
            + i64::from(dt.millisecond());
        (weekday, ms)
    }

    fn in_window(&self, weekday: u8, ms: i64) -> bool {
        self.windows_cover_week || self.windows.iter().any(|w| w.covers(weekday, ms))
    }

    fn freeze_applies(f: &CompiledFreeze, t: i64, weekday: u8, ms: i64) -> bool {
        match &f.kind {
            FreezeKind::Once { from, to } => *from <= t && t < *to,
            FreezeKind::Every(rule) => rule.covers(weekday, ms),
        }
    }

    fn open_at(&self, t: i64) -> bool {
        let (weekday, ms) = self.local(t);
        self.in_window(weekday, ms) && !self.freezes.iter().any(|f| Compiled::freeze_applies(f, t, weekday, ms))
    }

    fn check(&self, now: i64) -> Gate {
        let (weekday, ms) = self.local(now);
        let mut why = Vec::new();
        for f in self.freezes.iter().filter(|f| Compiled::freeze_applies(f, now, weekday, ms)) {
            let when = match &f.kind {
                FreezeKind::Once { to, .. } => format!("until {}", format_in(&self.zone, *to)),
                FreezeKind::Every(rule) => {
                    let end = self.first_after(now, now.saturating_add(HORIZON_MS), |t| {
                        let (weekday, ms) = self.local(t);
                        !rule.covers(weekday, ms)
                    });
                    match end {
                        Some(end) => format!("{} {}, until {}", rule.text, self.zone_name, format_in(&self.zone, end)),
                        None => format!("{} {}", rule.text, self.zone_name),
                    }
                }
            };
            why.push(format!("frozen: {} ({when})", f.reason));
        }
        if !self.in_window(weekday, ms) {
            let windows: Vec<&str> = self.windows.iter().map(|w| w.text.as_str()).collect();
            why.push(format!("outside the deployment windows ({} {})", windows.join(", "), self.zone_name));
        }
        if why.is_empty() {
            return Gate::Open;
        }
        let next_open = self.first_after(now, now.saturating_add(HORIZON_MS), |t| self.open_at(t));
        Gate::Closed { why: why.join("; "), next_open: next_open.map(Timestamp) }
    }

    /// The first instant in (`after`, `until`] where `pred` holds, given that `pred` depends
    /// only on the wall clock and the one-off freezes: it is then constant between two of the
    /// instants `boundaries` lists, so only those need asking.
    fn first_after(&self, after: i64, until: i64, pred: impl Fn(i64) -> bool) -> Option<i64> {
        let until = clamp(until);
        // Without wall-clock edges the only boundaries are the one-off freezes: one pass.
        let chunk = if self.edges.is_empty() { i64::MAX } else { CHUNK_MS };
        let mut lo = after;
        while lo < until {
            let hi = lo.saturating_add(chunk).min(until);
            if let Some(t) = self.boundaries(lo, hi).into_iter().find(|&t| pred(t)) {
                return Some(t);
            }
            lo = hi;
        }
        None
    }

    /// Every instant in (`lo`, `hi`], sorted, at which the gate can change: where the wall
    /// clock reads an edge minute (twice in a repeated hour: both readings), where the clock
    /// jumps (a transition can skip over an edge, and then the change happens at the jump),
    /// and the ends of the one-off freezes.
    fn boundaries(&self, lo: i64, hi: i64) -> Vec<i64> {
        let mut out = Vec::new();
        for f in &self.freezes {
            if let FreezeKind::Once { from, to } = f.kind {
                out.extend([from, to].into_iter().filter(|&t| lo < t && t <= hi));
            }
        }
        if !self.edges.is_empty() {
            // One civil day of margin either side: around a repeated hour, instants and local
            // dates are not in the same order.
            let first = self.zone.to_datetime(jts(lo)).date();
            let last = self.zone.to_datetime(jts(hi)).date();
            let mut day: Date = first.yesterday().unwrap_or(first);
            let last = last.tomorrow().unwrap_or(last);
            while day <= last {
                for &m in &self.edges {
                    let Ok(time) = Time::new((m / 60) as i8, (m % 60) as i8, 0, 0) else { continue };
                    let ambiguous = self.zone.to_ambiguous_timestamp(day.to_datetime(time));
                    // In a skipped hour both readings are real instants though the clock never
                    // shows them: asking about extra instants is harmless, missing one is not.
                    for t in [ambiguous.earlier(), ambiguous.later()].into_iter().flatten() {
                        let t = t.as_millisecond();
                        if lo < t && t <= hi {
                            out.push(t);
                        }
                    }
                }
                match day.tomorrow() {
                    Ok(next) => day = next,
                    Err(_) => break,
                }
            }
            for transition in self.zone.following(jts(lo)) {
                let t = transition.timestamp().as_millisecond();
                if t > hi {
                    break;
                }
                out.push(t);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `from` and `to` as text whether written `"2026-12-20T00:00:00+01:00"` or as a bare TOML
/// datetime, which TOML users write without thinking and serde would otherwise refuse as
/// "invalid type: map". A datetime without an offset is kept as text and refused by
/// `validate` with the expected form.
fn instant_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an RFC 3339 time with its offset, e.g. {INSTANT_EXAMPLE:?}")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let dt = toml::value::Datetime::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(Some(dt.to_string()))
        }
        // `null` in JSON, as for any other optional field.
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Text)
        }
    }
    d.deserialize_any(Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instant from RFC 3339 text.
    fn at(text: &str) -> Timestamp {
        Timestamp(text.parse::<jiff::Timestamp>().unwrap().as_millisecond())
    }

    fn schedule(zone: &str, windows: &[&str]) -> Schedule {
        Schedule {
            timezone: zone.into(),
            windows: windows.iter().map(|w| w.to_string()).collect(),
            ..Schedule::default()
        }
    }

    fn every(rule: &str, reason: &str) -> Freeze {
        Freeze { every: Some(rule.into()), reason: reason.into(), ..Freeze::default() }
    }

    fn once(from: &str, to: &str, reason: &str) -> Freeze {
        Freeze { from: Some(from.into()), to: Some(to.into()), reason: reason.into(), ..Freeze::default() }
    }

    fn open(s: &Schedule, t: &str) -> bool {
        s.check(at(t)).is_open()
    }

    fn closed(s: &Schedule, t: &str) -> (String, Option<Timestamp>) {
        match s.check(at(t)) {
            Gate::Closed { why, next_open } => (why, next_open),
            Gate::Open => panic!("expected closed at {t}"),
        }
    }

    fn problems(s: &Schedule) -> Vec<(String, String)> {
        s.validate().expect_err("expected problems")
    }

    #[derive(Debug, Deserialize)]
    struct Doc {
        schedule: Schedule,
    }

    #[test]
    fn the_default_is_always_open_in_utc_and_waits() {
        let s = Schedule::default();
        assert!(s.is_always_open() && s.is_default());
        assert_eq!((s.timezone.as_str(), s.outside), ("UTC", Outside::Wait));
        assert!(s.validate().is_ok());
        assert_eq!(s.check(Timestamp(0)), Gate::Open);
        assert!(s.open_throughout(Timestamp(i64::MIN), Timestamp(i64::MAX)));
        let doc: Doc = toml::from_str("[schedule]\n").unwrap();
        assert_eq!(doc.schedule, s);
    }

    #[test]
    fn the_documented_section_parses_and_round_trips() {
        let text = r#"
[schedule]
timezone = "Europe/Paris"
windows = ["Mon-Fri 09:00-17:00", "Sat 10:00-12:00"]
outside = "refuse"
[[schedule.freezes]]
from = "2026-12-20T00:00:00+01:00"
to = "2027-01-04T00:00:00+01:00"
reason = "year-end freeze"
[[schedule.freezes]]
every = "Fri 15:00-24:00"
reason = "no Friday afternoon deploys"
"#;
        let s = toml::from_str::<Doc>(text).unwrap().schedule;
        assert_eq!(s.outside, Outside::Refuse);
        assert_eq!((s.windows.len(), s.freezes.len()), (2, 2));
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert!(!s.is_always_open());
        let back = toml::to_string(&s).unwrap();
        assert_eq!(toml::from_str::<Schedule>(&back).unwrap(), s, "{back}");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
        let null = r#"{"freezes": [{"from": null, "every": "Fri 15:00-24:00", "reason": "r"}]}"#;
        assert_eq!(serde_json::from_str::<Schedule>(null).unwrap().freezes[0].from, None);
    }

    #[test]
    fn unknown_fields_and_bad_outside_are_refused() {
        assert!(toml::from_str::<Doc>("[schedule]\nwindow = [\"Mon 09:00-17:00\"]\n").is_err());
        assert!(toml::from_str::<Doc>("[schedule]\noutside = \"later\"\n").is_err());
        let err = toml::from_str::<Doc>("[[schedule.freezes]]\nevery = \"Fri 15:00-24:00\"\nwhy = \"x\"\n");
        assert!(err.unwrap_err().to_string().contains("why"));
    }

    #[test]
    fn bare_toml_datetimes_are_taken_as_written() {
        let text =
            "[[schedule.freezes]]\nfrom = 2026-12-20T00:00:00+01:00\nto = 2027-01-04T00:00:00Z\nreason = \"r\"\n";
        let s = toml::from_str::<Doc>(text).unwrap().schedule;
        assert_eq!(s.freezes[0].from.as_deref(), Some("2026-12-20T00:00:00+01:00"));
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        // Without an offset it parses, and validation says what is missing.
        let local = text.replace("+01:00", "");
        let s = toml::from_str::<Doc>(&local).unwrap().schedule;
        let p = problems(&s);
        assert_eq!(p[0].0, "schedule.freezes[0].from");
        assert!(p[0].1.contains("\"2026-12-20T00:00:00\"") && p[0].1.contains("offset"), "{p:?}");
        assert!(toml::from_str::<Doc>("[[schedule.freezes]]\nfrom = 12\n").is_err());
    }

    #[test]
    fn office_hours_on_the_local_clock_in_winter_and_summer() {
        let s = schedule("Europe/Paris", &["Mon-Fri 09:00-17:00"]);
        // Winter, UTC+1.
        assert!(!open(&s, "2026-12-07T08:59:59.999+01:00"));
        assert!(open(&s, "2026-12-07T09:00:00+01:00"));
        assert!(open(&s, "2026-12-07T16:59:59.999+01:00"));
        assert!(!open(&s, "2026-12-07T17:00:00+01:00"));
        // Summer, UTC+2: the same local hours, other UTC hours.
        assert!(!open(&s, "2026-06-01T06:59:59Z"));
        assert!(open(&s, "2026-06-01T07:00:00Z"));
        assert!(open(&s, "2026-06-01T07:30:00Z") && !open(&s, "2026-12-07T07:30:00Z"));
        assert!(open(&s, "2026-06-01T14:59:59Z"));
        assert!(!open(&s, "2026-06-01T15:00:00Z"));
        // Weekend.
        assert!(!open(&s, "2026-06-06T12:00:00+02:00"));
        let (why, _) = closed(&s, "2026-06-06T12:00:00+02:00");
        assert_eq!(why, "outside the deployment windows (Mon-Fri 09:00-17:00 Europe/Paris)");
    }

    #[test]
    fn several_windows_any_one_opens() {
        let s = schedule("UTC", &["Mon-Fri 09:00-17:00", "Sat 10:00-12:00", "mon,WED 20:00 - 21:00"]);
        assert!(s.validate().is_ok());
        assert!(open(&s, "2026-06-06T11:00:00Z")); // Saturday
        assert!(!open(&s, "2026-06-06T12:00:00Z"));
        assert!(open(&s, "2026-06-03T20:30:00Z")); // Wednesday evening
        assert!(!open(&s, "2026-06-04T20:30:00Z")); // Thursday evening
        let (why, next) = closed(&s, "2026-06-06T12:00:00Z");
        assert_eq!(
            why,
            "outside the deployment windows (Mon-Fri 09:00-17:00, Sat 10:00-12:00, mon,WED 20:00 - 21:00 UTC)"
        );
        assert_eq!(next, Some(at("2026-06-08T09:00:00Z")));
    }

    #[test]
    fn windows_crossing_midnight_belong_to_the_day_they_start() {
        let s = schedule("UTC", &["Fri 22:00-02:00"]);
        // 2026-06-05 is a Friday.
        assert!(!open(&s, "2026-06-05T21:59:00Z"));
        assert!(open(&s, "2026-06-05T22:00:00Z"));
        assert!(open(&s, "2026-06-06T00:00:00Z"));
        assert!(open(&s, "2026-06-06T01:59:59.999Z"));
        assert!(!open(&s, "2026-06-06T02:00:00Z"));
        assert!(!open(&s, "2026-06-06T23:00:00Z")); // Saturday night is not listed
        assert!(!open(&s, "2026-06-05T01:00:00Z")); // nor is Thursday night
        assert_eq!(closed(&s, "2026-06-06T02:00:00Z").1, Some(at("2026-06-12T22:00:00Z")));
        // Sunday night runs into Monday: the week wraps.
        let s = schedule("UTC", &["Sun 23:00-01:00"]);
        assert!(open(&s, "2026-06-08T00:30:00Z"));
        assert!(!open(&s, "2026-06-09T00:30:00Z"));
        // An end at midnight is the same as 24:00.
        let s = schedule("UTC", &["Fri 22:00-00:00"]);
        assert!(open(&s, "2026-06-05T23:59:00Z") && !open(&s, "2026-06-06T00:00:00Z"));
        let s = schedule("UTC", &["Sat-Sun 00:00-24:00"]);
        assert!(open(&s, "2026-06-06T00:00:00Z") && open(&s, "2026-06-07T23:59:59Z"));
        assert!(!open(&s, "2026-06-08T00:00:00Z") && !open(&s, "2026-06-05T23:59:59Z"));
    }

    #[test]
    fn day_ranges_wrap_and_lists_mix() {
        let s = schedule("UTC", &["Fri-Mon 12:00-13:00", "Wednesday 12:00-13:00"]);
        assert!(s.validate().is_ok());
        // 2026-06-01 is a Monday.
        let days: Vec<bool> = (1..=7).map(|d| open(&s, &format!("2026-06-{d:02}T12:30:00Z"))).collect();
        assert_eq!(days, [true, false, true, false, true, true, true]);
    }

    #[test]
    fn next_open_crosses_the_weekend_and_spring_forward() {
        let s = schedule("Europe/Paris", &["Mon-Fri 09:00-17:00"]);
        // Friday 2026-03-27 17:00 CET; the clocks go forward on Sunday 29 March: Monday's
        // 09:00 is 07:00 UTC, no longer 08:00.
        let (_, next) = closed(&s, "2026-03-27T17:00:00+01:00");
        assert_eq!(next, Some(at("2026-03-30T07:00:00Z")));
        assert!(open(&s, "2026-03-30T09:00:00+02:00"));
        // Before opening on a weekday, the same day.
        assert_eq!(closed(&s, "2026-03-31T06:00:00+02:00").1, Some(at("2026-03-31T09:00:00+02:00")));
    }

    #[test]
    fn the_skipped_hour_of_spring() {
        // In Paris on Sunday 2026-03-29 the clock goes from 02:00 to 03:00 (01:00 UTC).
        let s = schedule("Europe/Paris", &["Sun 02:00-03:00"]);
        // The window never shows on the clock that day: the next one is a week later.
        let (_, next) = closed(&s, "2026-03-29T00:00:00+01:00");
        assert_eq!(next, Some(at("2026-04-05T02:00:00+02:00")));
        assert!(!open(&s, "2026-03-29T01:30:00Z"));
        // A window that begins inside the gap opens when the clock jumps into it.
        let s = schedule("Europe/Paris", &["Sun 02:30-04:00"]);
        let (_, next) = closed(&s, "2026-03-29T00:00:00+01:00");
        assert_eq!(next, Some(at("2026-03-29T01:00:00Z")));
        assert!(open(&s, "2026-03-29T03:00:00+02:00"));
        assert!(!open(&s, "2026-03-29T04:00:00+02:00"));
        // A window over the jump is an hour shorter: 01:00-04:00 lasts two hours.
        let s = schedule("Europe/Paris", &["Sun 01:00-04:00"]);
        assert!(s.open_throughout(at("2026-03-29T01:00:00+01:00"), at("2026-03-29T03:59:59.999+02:00")));
        assert!(!open(&s, "2026-03-29T02:00:00Z")); // 04:00 CEST
    }

    #[test]
    fn the_repeated_hour_of_autumn() {
        // In Paris on Sunday 2026-10-25 the clock goes from 03:00 back to 02:00 (01:00 UTC):
        // 02:00-03:00 is read twice, from 00:00 to 02:00 UTC.
        let s = schedule("Europe/Paris", &["Sun 02:00-03:00"]);
        assert!(!open(&s, "2026-10-24T23:59:59Z"));
        assert!(open(&s, "2026-10-25T00:00:00Z"));
        assert!(open(&s, "2026-10-25T00:59:59Z"));
        assert!(open(&s, "2026-10-25T01:00:00Z"));
        assert!(open(&s, "2026-10-25T01:59:59.999Z"));
        assert!(!open(&s, "2026-10-25T02:00:00Z"));
        assert!(s.open_throughout(at("2026-10-25T00:00:00Z"), at("2026-10-25T01:59:59.999Z")));
        assert!(!s.open_throughout(at("2026-10-25T00:00:00Z"), at("2026-10-25T02:00:00Z")));
        assert_eq!(closed(&s, "2026-10-24T22:00:00Z").1, Some(at("2026-10-25T00:00:00Z")));
        // A window ending inside the repeated hour: closes at the first 02:30, opens again
        // when the clock goes back, closes at the second 02:30.
        let s = schedule("Europe/Paris", &["Sun 00:00-02:30"]);
        assert!(open(&s, "2026-10-25T00:29:00Z"));
        assert!(!open(&s, "2026-10-25T00:30:00Z"));
        assert_eq!(closed(&s, "2026-10-25T00:30:00Z").1, Some(at("2026-10-25T01:00:00Z")));
        assert!(open(&s, "2026-10-25T01:29:00Z"));
        assert!(!open(&s, "2026-10-25T01:30:00Z"));
        // A window starting inside the repeated hour opens at both readings of its start.
        let s = schedule("Europe/Paris", &["Sun 02:30-04:00"]);
        assert!(open(&s, "2026-10-25T00:30:00Z"));
        assert!(!open(&s, "2026-10-25T01:00:00Z")); // back to 02:00
        assert_eq!(closed(&s, "2026-10-25T01:00:00Z").1, Some(at("2026-10-25T01:30:00Z")));
        assert!(s.open_throughout(at("2026-10-25T01:30:00Z"), at("2026-10-25T02:59:59Z")));
        // Office hours on that Monday are 09:00 CET again, 08:00 UTC.
        let s = schedule("Europe/Paris", &["Mon-Fri 09:00-17:00"]);
        assert_eq!(closed(&s, "2026-10-23T17:00:00+02:00").1, Some(at("2026-10-26T08:00:00Z")));
    }

    #[test]
    fn a_recurring_freeze_beats_a_window() {
        let mut s = schedule("Europe/Paris", &["Mon-Fri 09:00-17:00"]);
        s.freezes.push(every("Fri 15:00-24:00", "no Friday afternoon deploys"));
        assert!(s.validate().is_ok());
        // Friday 2026-12-11.
        assert!(open(&s, "2026-12-11T14:59:00+01:00"));
        let (why, next) = closed(&s, "2026-12-11T15:00:00+01:00");
        assert_eq!(
            why,
            "frozen: no Friday afternoon deploys (Fri 15:00-24:00 Europe/Paris, until Sat 2026-12-12 00:00 CET)"
        );
        assert_eq!(next, Some(at("2026-12-14T09:00:00+01:00")));
        // Frozen and outside the windows: both are said, the freeze first.
        let (why, _) = closed(&s, "2026-12-11T18:00:00+01:00");
        assert!(why.starts_with("frozen: no Friday") && why.contains("; outside the deployment windows"), "{why}");
        // Thursday afternoon is fine.
        assert!(open(&s, "2026-12-10T16:00:00+01:00"));
        // With no windows, only the freeze closes.
        let mut s = Schedule { timezone: "Europe/Paris".into(), ..Schedule::default() };
        s.freezes.push(every("Fri 15:00-24:00", "no Friday afternoon deploys"));
        assert!(open(&s, "2026-12-12T03:00:00+01:00"));
        assert_eq!(closed(&s, "2026-12-11T23:00:00+01:00").1, Some(at("2026-12-12T00:00:00+01:00")));
    }

    #[test]
    fn a_one_off_freeze_beats_a_window_and_names_its_end() {
        let mut s = schedule("Europe/Paris", &["Mon-Fri 09:00-17:00"]);
        s.freezes.push(once("2026-12-20T00:00:00+01:00", "2027-01-04T00:00:00+01:00", "year-end freeze"));
        assert!(open(&s, "2026-12-18T10:00:00+01:00"));
        let (why, next) = closed(&s, "2026-12-21T10:00:00+01:00");
        assert_eq!(why, "frozen: year-end freeze (until Mon 2027-01-04 00:00 CET)");
        assert_eq!(next, Some(at("2027-01-04T09:00:00+01:00")));
        // The end is excluded, the start included.
        let mut s = Schedule::default();
        s.freezes.push(once("2026-12-20T00:00:00Z", "2026-12-21T00:00:00Z", "r"));
        assert!(!open(&s, "2026-12-20T00:00:00Z"));
        assert!(open(&s, "2026-12-21T00:00:00Z"));
        assert_eq!(closed(&s, "2026-12-20T12:00:00Z").1, Some(at("2026-12-21T00:00:00Z")));
    }

    #[test]
    fn next_open_skips_a_freeze_that_covers_the_next_window() {
        let mut s = schedule("UTC", &["Mon-Fri 09:00-17:00"]);
        // Monday 2026-06-08 is frozen all day, and Tuesday until noon.
        s.freezes.push(once("2026-06-08T00:00:00Z", "2026-06-09T12:00:00Z", "migration"));
        let (why, next) = closed(&s, "2026-06-05T17:00:00Z");
        assert_eq!(why, "outside the deployment windows (Mon-Fri 09:00-17:00 UTC)");
        assert_eq!(next, Some(at("2026-06-09T12:00:00Z")));
        // Overlapping freezes: the gate opens when the last one ends.
        s.freezes.push(every("Tue 00:00-14:00", "Tuesday mornings"));
        assert_eq!(closed(&s, "2026-06-05T17:00:00Z").1, Some(at("2026-06-09T14:00:00Z")));
        let (why, _) = closed(&s, "2026-06-09T10:00:00Z");
        assert_eq!(
            why,
            "frozen: migration (until Tue 2026-06-09 12:00 UTC); frozen: Tuesday mornings (Tue 00:00-14:00 UTC, until Tue 2026-06-09 14:00 UTC)"
        );
    }

    #[test]
    fn never_open_has_no_next_open() {
        let mut s = schedule("UTC", &["Mon 09:00-17:00"]);
        s.freezes.push(every("Mon 00:00-24:00", "Mondays"));
        let (_, next) = closed(&s, "2026-06-08T10:00:00Z");
        assert_eq!(next, None);
        // A freeze longer than the search.
        let mut s = Schedule::default();
        s.freezes.push(once("2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "moratorium"));
        let (why, next) = closed(&s, "2026-06-08T10:00:00Z");
        assert_eq!((why.as_str(), next), ("frozen: moratorium (until Sat 2028-01-01 00:00 UTC)", None));
        // A freeze that never ends says so without an end.
        let mut s = Schedule::default();
        s.freezes.push(every("Mon-Sun 00:00-24:00", "always"));
        assert_eq!(closed(&s, "2026-06-08T10:00:00Z"), ("frozen: always (Mon-Sun 00:00-24:00 UTC)".into(), None));
    }

    #[test]
    fn open_throughout_voids_what_a_closing_window_interrupts() {
        let s = schedule("UTC", &["Mon-Fri 09:00-17:00"]);
        let (mon10, mon16) = (at("2026-06-08T10:00:00Z"), at("2026-06-08T16:00:00Z"));
        assert!(s.open_throughout(mon10, mon16));
        assert!(s.open_throughout(mon16, mon10)); // either order
        assert!(s.open_throughout(mon10, mon10));
        assert!(!s.open_throughout(mon10, at("2026-06-08T17:00:00Z"))); // the end is included
        assert!(s.open_throughout(mon10, at("2026-06-08T16:59:59.999Z")));
        assert!(!s.open_throughout(mon10, at("2026-06-09T10:00:00Z"))); // closed overnight
        assert!(!s.open_throughout(at("2026-06-08T08:00:00Z"), mon10)); // closed at the start
        // Back-to-back windows are one opening.
        let joined = schedule("UTC", &["Mon 09:00-12:00", "Mon 12:00-17:00"]);
        assert!(joined.open_throughout(mon10, mon16));
        // A short freeze in between voids it.
        let mut frozen = s.clone();
        frozen.freezes.push(once("2026-06-08T12:00:00Z", "2026-06-08T12:05:00Z", "incident"));
        assert!(!frozen.open_throughout(mon10, mon16));
        assert!(frozen.open_throughout(at("2026-06-08T12:05:00Z"), mon16));
        let mut recurring = s.clone();
        recurring.freezes.push(every("Mon 13:00-13:01", "standup"));
        assert!(!recurring.open_throughout(mon10, mon16));
        // Windows that cover the whole week never close, however long the span.
        let week = schedule("Europe/Paris", &["Mon-Sun 00:00-24:00"]);
        assert!(week.open_throughout(Timestamp(i64::MIN), Timestamp(i64::MAX)));
        let split = schedule("Europe/Paris", &["Mon-Sun 12:00-00:00", "Mon-Sun 00:00-12:00"]);
        assert!(split.open_throughout(at("2000-01-01T00:00:00Z"), at("2100-01-01T00:00:00Z")));
    }

    /// The searches ask only about boundary instants; a scan of every minute must agree.
    /// Each zone comes with the local minutes around its transitions, and the instants asked
    /// about are near its 2026 transitions: Paris and New York (an hour at 02:00), Lord Howe
    /// (half an hour), Santiago (at midnight, so the skipped and repeated hours touch two
    /// dates), Kolkata (a half-hour offset and no transitions).
    #[test]
    fn agrees_with_a_minute_by_minute_scan() {
        // A fixed xorshift: the same cases on every run, no dependency.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // Local minutes around each zone's transitions; each list ends with 1440, only an end.
        let zones: [(&str, &[u64]); 5] = [
            ("Europe/Paris", &[0, 120, 150, 180, 540, 1020, 1440]),
            ("America/New_York", &[0, 60, 120, 150, 180, 540, 1440]),
            ("Australia/Lord_Howe", &[0, 90, 105, 120, 135, 150, 1440]),
            ("America/Santiago", &[0, 30, 60, 540, 1380, 1410, 1440]),
            ("Asia/Kolkata", &[0, 330, 345, 540, 1020, 1440]),
        ];
        let clock = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
        let start_of_2026 = at("2026-01-01T00:00:00Z");
        for case in 0..500 {
            let (zone, minutes) = zones[case % zones.len()];
            let tz = lookup_zone(zone).unwrap();
            // The zone's next transition from a random day of 2026, or that day (Kolkata).
            let day = start_of_2026.0 + next(365) as i64 * DAY_MS;
            let near = tz.following(jts(day)).next().map_or(day, |t| t.timestamp().as_millisecond());
            let rule = |next: &mut dyn FnMut(u64) -> u64| loop {
                let (a, b) = (next(7) as usize, next(7) as usize);
                let (start, end) =
                    (minutes[next(minutes.len() as u64 - 1) as usize], minutes[next(minutes.len() as u64) as usize]);
                if start != end {
                    return format!("{}-{} {}-{}", DAY_NAMES[a], DAY_NAMES[b], clock(start), clock(end));
                }
            };
            let mut s = Schedule { timezone: zone.into(), ..Schedule::default() };
            for _ in 0..1 + next(2) {
                s.windows.push(rule(&mut next));
            }
            for _ in 0..next(3) {
                if next(2) == 0 {
                    s.freezes.push(every(&rule(&mut next), "r"));
                } else {
                    let from = near + (next(48) as i64 - 24) * 30 * MINUTE_MS;
                    let to = from + (1 + next(12) as i64) * 30 * MINUTE_MS;
                    s.freezes.push(once(&jts(from).to_string(), &jts(to).to_string(), "r"));
                }
            }
            let c = s.compile().unwrap_or_else(|p| panic!("{s:?}: {p:?}"));
            let now = near + (next(96) as i64 - 72) * 15 * MINUTE_MS;
            // Next open, looked for over three days.
            let scan = (0..=3 * 1440).map(|k| now + k * MINUTE_MS).find(|&t| c.open_at(t));
            match (s.check(Timestamp(now)), scan) {
                (Gate::Open, scan) => assert_eq!(scan, Some(now), "{s:?} at {}", jts(now)),
                (Gate::Closed { next_open, .. }, Some(t)) => {
                    assert_eq!(next_open, Some(Timestamp(t)), "{s:?} at {}", jts(now));
                }
                (Gate::Closed { next_open, .. }, None) => {
                    assert!(next_open.is_none_or(|t| t.0 > now + 3 * DAY_MS), "{s:?} at {}: {next_open:?}", jts(now))
                }
            }
            // Open throughout spans of up to a day, from where it is open if it opens soon.
            let from = scan.unwrap_or(now);
            let until = from + next(1440) as i64 * MINUTE_MS;
            let scan = (0..=(until - from) / MINUTE_MS).all(|k| c.open_at(from + k * MINUTE_MS));
            assert_eq!(
                s.open_throughout(Timestamp(from), Timestamp(until)),
                scan,
                "{s:?} {}..{}",
                jts(from),
                jts(until)
            );
        }
    }

    #[test]
    fn absurd_instants_do_not_panic() {
        let mut s = schedule("Europe/Paris", &["Mon-Fri 09:00-17:00"]);
        s.freezes.push(every("Fri 15:00-24:00", "f"));
        s.freezes.push(once("2026-12-20T00:00:00+01:00", "2027-01-04T00:00:00+01:00", "y"));
        for t in [i64::MIN, -1, 0, i64::MAX] {
            let _ = s.check(Timestamp(t));
            let _ = s.format_time(Timestamp(t));
        }
        assert!(!s.open_throughout(Timestamp(i64::MIN), Timestamp(i64::MAX)));
    }

    #[test]
    fn times_are_shown_on_the_schedules_clock() {
        let s = schedule("Europe/Paris", &[]);
        assert_eq!(s.format_time(at("2026-12-07T08:00:00Z")), "Mon 2026-12-07 09:00 CET");
        assert_eq!(s.format_time(at("2026-06-07T08:00:00Z")), "Sun 2026-06-07 10:00 CEST");
        assert_eq!(Schedule::default().format_time(at("2026-12-07T08:00:00Z")), "Mon 2026-12-07 08:00 UTC");
        assert_eq!(schedule("Nowhere/Land", &[]).format_time(Timestamp(0)), "Thu 1970-01-01 00:00 UTC");
        // Zone names are matched without regard to case and shown canonically.
        let s = schedule("europe/paris", &["Mon 09:00-10:00"]);
        assert!(s.validate().is_ok());
        assert!(closed(&s, "2026-06-09T09:00:00+02:00").0.ends_with("Europe/Paris)"));
    }

    #[test]
    fn validation_names_the_field_the_value_and_what_is_expected() {
        let mut s = schedule("Europe/Pariss", &["Mon-Fri 09:00-17:00", "Mon-Fri 9-17"]);
        s.freezes.push(once("2027-01-04T00:00:00+01:00", "2026-12-20T00:00:00+01:00", "backwards"));
        let p = problems(&s);
        assert_eq!(
            p,
            vec![
                (
                    "schedule.timezone".to_string(),
                    "\"Europe/Pariss\": unknown time zone; expected an IANA name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\"".to_string()
                ),
                (
                    "schedule.windows[1]".to_string(),
                    "\"Mon-Fri 9-17\": expected DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 09:00-17:00\"".to_string()
                ),
                (
                    "schedule.freezes[0].to".to_string(),
                    "\"2026-12-20T00:00:00+01:00\" is not after `from` (\"2027-01-04T00:00:00+01:00\"): a freeze must end after it starts".to_string()
                ),
            ]
        );
        // An invalid schedule is closed, and says why.
        let (why, next) = closed(&s, "2026-06-08T10:00:00Z");
        assert!(why.starts_with("the schedule is invalid: schedule.timezone: "), "{why}");
        assert_eq!(next, None);
        assert!(!s.open_throughout(Timestamp(0), Timestamp(1)));
    }

    #[test]
    fn malformed_windows_say_what_is_wrong() {
        let cases = [
            ("", "expected DAYS HH:MM-HH:MM"),
            ("Mon-Fri", "expected DAYS HH:MM-HH:MM"),
            ("09:00-17:00", "expected the days before the times"),
            ("Mnd 09:00-17:00", "unknown day \"Mnd\""),
            ("Mon-Fry 09:00-17:00", "unknown day \"Fry\""),
            ("Mon,,Wed 09:00-17:00", "expected DAYS HH:MM-HH:MM"),
            ("Mon 09:00", "expected DAYS HH:MM-HH:MM"),
            ("Mon 09:00-17:00-18:00", "expected DAYS HH:MM-HH:MM"),
            ("Mon 9h-17h", "expected DAYS HH:MM-HH:MM"),
            ("Mon 09:0-17:00", "expected DAYS HH:MM-HH:MM"),
            ("Mon 25:00-26:00", "25:00 is not a time of day"),
            ("Mon 09:60-17:00", "09:60 is not a time of day"),
            ("Mon 09:00-24:30", "24:30 is not a time of day"),
            ("Mon 24:00-02:00", "24:00 is only an end"),
            ("Mon 09:00-09:00", "for a whole day write 00:00-24:00"),
            ("Mon 999999999999:00-10:00", "expected DAYS HH:MM-HH:MM"),
        ];
        for (text, says) in cases {
            let s = schedule("UTC", &[text]);
            let p = problems(&s);
            assert_eq!(p.len(), 1, "{text:?}: {p:?}");
            assert_eq!(p[0].0, "schedule.windows[0]");
            assert!(p[0].1.starts_with(&format!("{text:?}: ")), "{text:?}: {}", p[0].1);
            assert!(p[0].1.contains(says), "{text:?}: {}", p[0].1);
        }
        for fine in [
            "Mon-Sun 00:00-24:00",
            "sat 9:00-17:00",
            "Fri 22:00-02:00",
            "Mon , Wed 09:00 - 10:00",
            "Sun-Sun 01:00-02:00",
        ] {
            assert!(schedule("UTC", &[fine]).validate().is_ok(), "{fine}");
        }
    }

    #[test]
    fn malformed_freezes_say_what_is_wrong() {
        let field_says = |f: Freeze, field: &str, says: &str| {
            let s = Schedule { freezes: vec![f], ..Schedule::default() };
            let p = problems(&s);
            assert!(p.iter().any(|(k, m)| k == field && m.contains(says)), "{field} {says:?}: {p:?}");
        };
        field_says(Freeze { reason: "r".into(), ..Freeze::default() }, "schedule.freezes[0]", "`every`");
        field_says(every("Fri 15:00-24:00", " "), "schedule.freezes[0].reason", "expected a reason");
        field_says(every("Fri 3pm-midnight", "r"), "schedule.freezes[0].every", "e.g. \"Fri 15:00-24:00\"");
        let mut both = once("2026-12-20T00:00:00Z", "2026-12-21T00:00:00Z", "r");
        both.every = Some("Fri 15:00-24:00".into());
        field_says(both, "schedule.freezes[0].every", "not both");
        let mut half = once("2026-12-20T00:00:00Z", "", "r");
        half.to = None;
        field_says(half.clone(), "schedule.freezes[0].to", "needs `to`");
        half.to = half.from.take();
        field_says(half, "schedule.freezes[0].from", "needs `from`");
        field_says(
            once("2026-12-20", "2026-12-21T00:00:00Z", "r"),
            "schedule.freezes[0].from",
            "\"2026-12-20\": expected an RFC 3339",
        );
        field_says(
            once("2026-12-20T00:00:00Z", "2026-12-20T00:00:00Z", "r"),
            "schedule.freezes[0].to",
            "must end after",
        );
        // Offsets are honoured when comparing: 00:30+01:00 is before 00:00Z.
        field_says(
            once("2026-12-20T00:00:00Z", "2026-12-20T00:30:00+01:00", "r"),
            "schedule.freezes[0].to",
            "not after",
        );
    }
}
