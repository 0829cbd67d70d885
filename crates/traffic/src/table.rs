//! The routing table: what the controller pushes, and the pure rules that map a user to a group.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Buckets per workload. Weights are expressed in basis points of this range.
pub const BUCKETS: u32 = 10_000;

/// Upper bound of `BreakerConfig::window`, so a pushed table cannot make the router allocate
/// an unbounded outcome buffer per replica.
const MAX_BREAKER_WINDOW: u32 = 10_000;

/// Stable bucket of a user key for a workload, in `0..10_000`.
///
/// The workload is part of the hashed text so that one user does not land in the canary of
/// every workload at once.
pub fn bucket(workload: &str, user_key: &str) -> u32 {
    use std::io::Read as _;
    // The hash of "workload:key", streamed without building the string (the hot path runs
    // this per request); reading from byte slices cannot fail.
    let mut text = workload.as_bytes().chain(&b":"[..]).chain(user_key.as_bytes());
    let hash = murmur3::murmur3_32(&mut text, 0).unwrap_or(0);
    hash % BUCKETS
}

/// A complete routing table for one workload. The controller owns it; the router only serves it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RouteTable {
    /// Monotonic version chosen by the controller; lower generations are refused.
    #[serde(default)]
    pub generation: u64,
    pub workload: String,
    #[serde(default = "default_sticky_header")]
    pub sticky_header: String,
    #[serde(default = "default_sticky_cookie")]
    pub sticky_cookie: String,
    /// In bucket order: group 0 owns the lowest buckets. The controller lists the canary first
    /// so that raising its weight only ever adds users to it.
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// SHA-256 (hex) of the tokens OFREP clients must present; empty: OFREP is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flag_tokens: Vec<String>,
    /// A request header naming a version (`x-ringfence-pin: v2`) that sends the request to
    /// the group serving it, whatever the user's bucket: for debugging. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_header: Option<String>,
    /// The longest request body the router takes, in bytes: a longer one is answered 413 and
    /// never reaches a replica.
    #[serde(default = "default_max_request_body")]
    pub max_request_body: u64,
}

/// The request body limit when a workload sets none: 100 MiB, large enough for the uploads
/// a web service takes, small enough that no one streams without end through the router.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 100 * 1024 * 1024;

fn default_max_request_body() -> u64 {
    DEFAULT_MAX_REQUEST_BODY
}

/// A rollout group: one version of the workload behind a share of the buckets.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub version: String,
    /// Share of the buckets in basis points, `0..=10_000`.
    #[serde(default)]
    pub weight_bp: u32,
    #[serde(default)]
    pub upstreams: Vec<SocketAddr>,
    /// Flag definitions (flagd JSON) that this group's users evaluate over OFREP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<serde_json::Value>,
    /// Users this group takes whatever their bucket (a ring of chosen users), before any
    /// share of the buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    /// Share of requests, in basis points of the buckets, of which this group gets a copy
    /// (shadow traffic): the user is answered by their own group, the copy's answer is only
    /// counted. Requests with a body are not copied.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shadow_bp: u32,
    /// A fault injected on purpose into this group's requests, by the router itself: a
    /// mitigation drill. Never set outside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<GroupFault>,
}

/// What a drill does to a group's requests: answers a share of them with a 503 from the
/// router, and delays each by a fixed time. Both are counted for the group's version as if
/// its replicas had done it, so the analysis judges them like a real regression.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct GroupFault {
    /// Share of requests answered 503, in basis points.
    #[serde(default)]
    pub error_bp: u32,
    /// Added before each request is forwarded.
    #[serde(default)]
    pub delay_ms: u64,
}

/// The longest delay a drill may add: past it, a request is better failed than held.
pub const MAX_FAULT_DELAY_MS: u64 = 60_000;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A ring of chosen users: those whose key is listed or starts with a listed prefix, and the
/// requests that carry a header with one of the listed values (staff, testers).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// User keys, as the sticky header or cookie carries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Prefixes of user keys (`staff-`, `qa-`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// A request header, with `values`: a request carrying it with one of them is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// A targeting rule over the user key, as flags write them (flagd's JsonLogic, the key as
    /// `{"var": "targetingKey"}`), in JSON: the users it is true for are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rule, compiled once per segment (with the flag engine), on first use.
    #[serde(skip)]
    compiled: CompiledRule,
}

/// A segment's rule as the flag engine runs it: one boolean flag whose targeting is the rule.
#[derive(Clone, Default)]
struct CompiledRule(std::sync::Arc<std::sync::OnceLock<Option<ringfence_flags::FlagSet>>>);

impl PartialEq for CompiledRule {
    /// A cache of the rule's text, which the segments compare.
    fn eq(&self, _: &CompiledRule) -> bool {
        true
    }
}

impl Eq for CompiledRule {}

impl std::fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledRule")
    }
}

/// The most users and prefixes one segment lists, so a table stays small to check per request.
pub const MAX_SEGMENT_ENTRIES: usize = 1_000;

/// The longest rule a segment takes.
pub const MAX_SEGMENT_RULE: usize = 4_096;

/// The flag document that runs a segment's rule: `true` for the users it picks.
fn rule_document(rule: &str) -> String {
    format!(
        r#"{{"flags":{{"segment":{{"state":"ENABLED","variants":{{"in":true,"out":false}},"defaultVariant":"out","targeting":{{"if":[{rule},"in","out"]}}}}}}}}"#
    )
}

impl Segment {
    /// Whether a user key is in the segment (by key alone: what OFREP and `assign` know).
    pub fn has_user(&self, key: &str) -> bool {
        self.users.iter().any(|u| u == key)
            || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
            || self.rule_matches(key)
    }

    fn rule_matches(&self, key: &str) -> bool {
        let Some(rule) = &self.rule else { return false };
        let set = self.compiled.0.get_or_init(|| ringfence_flags::FlagSet::parse_strict(&rule_document(rule)).ok());
        set.as_ref().is_some_and(|set| {
            let ctx = ringfence_flags::Context::new().with_targeting_key(key);
            set.evaluate("segment", &ctx).value == Some(&serde_json::Value::Bool(true))
        })
    }

    /// Whether a request is in the segment: its user key, or the segment's header.
    pub fn has(&self, key: &str, header: impl Fn(&str) -> Option<String>) -> bool {
        self.has_user(key) || self.header.as_deref().and_then(header).is_some_and(|v| self.values.contains(&v))
    }

    /// What is wrong with it, if anything: `(field, message)`, the field relative to it.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.header.is_none() && !self.values.is_empty() {
            return Some(("header", "values without a header: name the header that carries them".into()));
        }
        if self.users.is_empty() && self.prefixes.is_empty() && self.header.is_none() && self.rule.is_none() {
            return Some((
                "users",
                "a segment names users, prefixes of user keys, a rule over the user key or a header; this one none"
                    .into(),
            ));
        }
        if let Some(rule) = &self.rule {
            if rule.len() > MAX_SEGMENT_RULE {
                return Some(("rule", format!("at most {MAX_SEGMENT_RULE} characters, found {}", rule.len())));
            }
            if let Err(problems) =
                serde_json::from_str::<serde_json::Value>(rule).map_err(|e| e.to_string()).and_then(|_| {
                    ringfence_flags::FlagSet::parse_strict(&rule_document(rule))
                        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
                })
            {
                return Some(("rule", format!("expected a targeting rule in flagd's JSON (JsonLogic): {problems}")));
            }
        }
        if self.users.len() + self.prefixes.len() > MAX_SEGMENT_ENTRIES {
            return Some(("users", format!("at most {MAX_SEGMENT_ENTRIES} users and prefixes together")));
        }
        for (field, list) in [("users", &self.users), ("prefixes", &self.prefixes), ("values", &self.values)] {
            if let Some(bad) = list.iter().find(|v| v.is_empty() || v.len() > 256 || !is_header_value(v)) {
                return Some((field, format!("{bad:?}: expected 1 to 256 visible characters")));
            }
        }
        match (&self.header, self.values.is_empty()) {
            (Some(h), _) if !is_header_name(h) => Some(("header", format!("{h:?} is not a valid HTTP header name"))),
            (Some(_), true) => Some(("values", "a segment's header needs the values that put a request in".into())),
            _ => None,
        }
    }
}

/// Circuit-breaker settings, applied to every upstream replica of the table.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(default)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Number of most recent outcomes in the rolling window.
    pub window: u32,
    /// The breaker opens when the window is full and its success rate is below this.
    pub min_success_rate: f64,
    /// First open period; doubles on each consecutive re-trip, capped at 30 s.
    pub open_for_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { consecutive_failures: 5, window: 20, min_success_rate: 0.5, open_for_ms: 2_000 }
    }
}

fn default_sticky_header() -> String {
    "x-user-id".to_owned()
}

fn default_sticky_cookie() -> String {
    "rf_user".to_owned()
}

/// Why a table was refused. `field` is a path into the table (`groups[1].upstreams`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TableError {
    pub field: String,
    pub message: String,
}

impl TableError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> TableError {
        TableError { field: field.into(), message: message.into() }
    }
}

impl RouteTable {
    /// The group owning `bucket`: groups own consecutive ranges in list order.
    pub fn group_for_bucket(&self, bucket: u32) -> Option<&Group> {
        group_index_for_bucket(self.groups.iter().map(|g| g.weight_bp), bucket).map(|i| &self.groups[i])
    }

    /// Whether any request is routed by more than its bucket (a segment or the pin header).
    pub fn routes_by_request(&self) -> bool {
        self.pin_header.is_some() || self.groups.iter().any(|g| g.segment.is_some())
    }

    /// The group of a request: the version its pin header names, else the first group whose
    /// segment it is in, else the group owning its user's bucket. `header` reads a request
    /// header by name (none for OFREP and `assign`, which know the user key alone).
    pub fn group_index(&self, key: &str, header: impl Fn(&str) -> Option<String>) -> Option<usize> {
        if let Some(pinned) = self.pin_header.as_deref().and_then(&header)
            && let Some(i) = self.groups.iter().position(|g| g.version == pinned)
        {
            return Some(i);
        }
        if let Some(i) = self.groups.iter().position(|g| g.segment.as_ref().is_some_and(|s| s.has(key, &header))) {
            return Some(i);
        }
        group_index_for_bucket(self.groups.iter().map(|g| g.weight_bp), bucket(&self.workload, key))
    }

    /// Checks everything the router relies on, so that serving a table never fails later.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.workload.trim().is_empty() {
            return Err(TableError::new("workload", "must not be empty"));
        }
        if !is_header_name(&self.sticky_header) {
            return Err(TableError::new(
                "sticky_header",
                format!("{:?} is not a valid HTTP header name", self.sticky_header),
            ));
        }
        if self.sticky_cookie.is_empty() || !self.sticky_cookie.bytes().all(is_cookie_name_byte) {
            return Err(TableError::new(
                "sticky_cookie",
                format!("{:?} is not a valid cookie name", self.sticky_cookie),
            ));
        }

        if self.max_request_body == 0 {
            return Err(TableError::new("max_request_body", "must be at least 1 byte"));
        }
        for (i, t) in self.flag_tokens.iter().enumerate() {
            if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TableError::new(format!("flag_tokens[{i}]"), "must be a SHA-256 digest in hex"));
            }
        }
        if let Some(h) = &self.pin_header
            && !is_header_name(h)
        {
            return Err(TableError::new("pin_header", format!("{h:?} is not a valid HTTP header name")));
        }
        for (i, group) in self.groups.iter().enumerate() {
            if let Some((field, message)) = group.segment.as_ref().and_then(Segment::problem) {
                return Err(TableError::new(format!("groups[{i}].segment.{field}"), message));
            }
        }
        for (i, group) in self.groups.iter().enumerate() {
            if let Some(flags) = &group.flags
                && let Err(errors) = ringfence_flags::FlagSet::parse(&flags.to_string())
            {
                let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
                return Err(TableError::new(format!("groups[{i}].flags"), first));
            }
        }

        let mut names = HashSet::new();
        let mut total: u64 = 0;
        for (i, group) in self.groups.iter().enumerate() {
            let at = |field: &str| format!("groups[{i}].{field}");
            if group.name.is_empty() {
                return Err(TableError::new(at("name"), "must not be empty"));
            }
            // Names and versions are echoed in response headers.
            if !is_header_value(&group.name) {
                return Err(TableError::new(
                    at("name"),
                    format!("{:?} must be visible ASCII (it is sent in a header)", group.name),
                ));
            }
            if !names.insert(group.name.as_str()) {
                return Err(TableError::new(at("name"), format!("group name {:?} is used more than once", group.name)));
            }
            if group.version.is_empty() || !is_header_value(&group.version) {
                return Err(TableError::new(
                    at("version"),
                    format!("group {:?}: version {:?} must be non-empty visible ASCII", group.name, group.version),
                ));
            }
            if group.weight_bp > BUCKETS {
                return Err(TableError::new(
                    at("weight_bp"),
                    format!("group {:?}: {} is above {BUCKETS}", group.name, group.weight_bp),
                ));
            }
            if let Some(f) = group.fault
                && (f.error_bp > BUCKETS || f.delay_ms > MAX_FAULT_DELAY_MS)
            {
                return Err(TableError::new(
                    at("fault"),
                    format!(
                        "group {:?}: a fault's error_bp is at most {BUCKETS} and its delay_ms at most {MAX_FAULT_DELAY_MS}, found {} and {}",
                        group.name, f.error_bp, f.delay_ms
                    ),
                ));
            }
            if group.shadow_bp > BUCKETS {
                return Err(TableError::new(
                    at("shadow_bp"),
                    format!("group {:?}: {} is above {BUCKETS}", group.name, group.shadow_bp),
                ));
            }
            if group.weight_bp > 0 && group.upstreams.is_empty() {
                return Err(TableError::new(
                    at("upstreams"),
                    format!("group {:?} has weight {} but no upstreams", group.name, group.weight_bp),
                ));
            }
            let mut seen = HashSet::new();
            for addr in &group.upstreams {
                if !seen.insert(addr) {
                    return Err(TableError::new(
                        at("upstreams"),
                        format!("group {:?} lists {addr} more than once", group.name),
                    ));
                }
            }
            total += u64::from(group.weight_bp);
        }
        if !self.groups.is_empty() && total != u64::from(BUCKETS) {
            return Err(TableError::new(
                "groups",
                format!("weight_bp of all groups must sum to {BUCKETS}, got {total}"),
            ));
        }

        let breaker = &self.breaker;
        if breaker.consecutive_failures == 0 {
            return Err(TableError::new("breaker.consecutive_failures", "must be at least 1"));
        }
        if breaker.window == 0 || breaker.window > MAX_BREAKER_WINDOW {
            return Err(TableError::new(
                "breaker.window",
                format!("must be in 1..={MAX_BREAKER_WINDOW}, got {}", breaker.window),
            ));
        }
        if !(0.0..=1.0).contains(&breaker.min_success_rate) {
            return Err(TableError::new(
                "breaker.min_success_rate",
                format!("must be in 0.0..=1.0, got {}", breaker.min_success_rate),
            ));
        }
        if breaker.open_for_ms == 0 {
            return Err(TableError::new("breaker.open_for_ms", "must be at least 1"));
        }
        Ok(())
    }
}

/// Index of the group owning `bucket`, given the weights in list order.
pub fn group_index_for_bucket(weights: impl IntoIterator<Item = u32>, bucket: u32) -> Option<usize> {
    let mut end: u64 = 0;
    for (i, weight) in weights.into_iter().enumerate() {
        end += u64::from(weight);
        if u64::from(bucket) < end {
            return Some(i);
        }
    }
    None
}

/// An HTTP header name: a non-empty RFC 9110 token (case does not matter: names are compared
/// without it).
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value the router can send as it is: visible ASCII and spaces, no control bytes.
fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
}

/// RFC 6265 cookie-name (an RFC 7230 token).
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn table(canary_bp: u32) -> RouteTable {
        RouteTable {
            generation: 1,
            workload: "checkout".into(),
            sticky_header: default_sticky_header(),
            sticky_cookie: default_sticky_cookie(),
            groups: vec![
                Group {
                    name: "canary".into(),
                    version: "v2".into(),
                    weight_bp: canary_bp,
                    upstreams: vec![addr(2)],
                    flags: None,
                    segment: None,
                    shadow_bp: 0,
                    fault: None,
                },
                Group {
                    name: "stable".into(),
                    version: "v1".into(),
                    weight_bp: BUCKETS - canary_bp,
                    upstreams: vec![addr(1)],
                    flags: None,
                    segment: None,
                    shadow_bp: 0,
                    fault: None,
                },
            ],
            breaker: BreakerConfig::default(),
            flag_tokens: vec![],
            pin_header: None,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
        }
    }

    #[test]
    fn bucket_is_stable_and_in_range() {
        assert_eq!(bucket("checkout", "alice"), bucket("checkout", "alice"));
        for i in 0..10_000 {
            assert!(bucket("w", &i.to_string()) < BUCKETS);
        }
        // The hash is murmur3 x86_32 with seed 0 of "workload:key"; pin it so that other
        // implementations (HAProxy/nginx adapters, the controller) can reproduce it.
        let expected = murmur3::murmur3_32(&mut "checkout:alice".as_bytes(), 0).unwrap() % BUCKETS;
        assert_eq!(bucket("checkout", "alice"), expected);
        // Streamed over the parts, for every alignment of the ':' in the 4-byte blocks.
        for w in ["", "a", "ab", "abc", "abcd", "checkout"] {
            for k in ["", "x", "user-1", "user-12", "0123456789abcdef"] {
                let whole = murmur3::murmur3_32(&mut format!("{w}:{k}").as_bytes(), 0).unwrap() % BUCKETS;
                assert_eq!(bucket(w, k), whole, "{w:?} {k:?}");
            }
        }
        // The workload is part of the hashed text.
        let differs = (0..100).any(|i| {
            let key = format!("user-{i}");
            bucket("a", &key) != bucket("b", &key)
        });
        assert!(differs);
    }

    #[test]
    fn groups_own_consecutive_ranges_in_list_order() {
        let t = table(500);
        assert_eq!(t.group_for_bucket(0).unwrap().name, "canary");
        assert_eq!(t.group_for_bucket(499).unwrap().name, "canary");
        assert_eq!(t.group_for_bucket(500).unwrap().name, "stable");
        assert_eq!(t.group_for_bucket(9_999).unwrap().name, "stable");
        assert_eq!(t.group_for_bucket(10_000), None);

        let mut zero = table(0);
        assert_eq!(zero.group_for_bucket(0).unwrap().name, "stable");
        zero.groups.clear();
        assert_eq!(zero.group_for_bucket(0), None);
    }

    #[test]
    fn raising_canary_weight_never_moves_a_user_out_of_the_canary() {
        let keys: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
        let steps = [0, 1, 100, 500, 1_000, 2_500, 5_000, 7_500, 9_999, 10_000];
        for pair in steps.windows(2) {
            let (before, after) = (table(pair[0]), table(pair[1]));
            let mut in_canary = 0;
            for key in &keys {
                let b = bucket(&before.workload, key);
                let was = &before.group_for_bucket(b).unwrap().name;
                let now = &after.group_for_bucket(b).unwrap().name;
                if was == "canary" {
                    in_canary += 1;
                    assert_eq!(now, "canary", "{key} left the canary going {pair:?}");
                }
            }
            // The split is roughly honoured: within 2 points of the weight on 5000 keys.
            let share = f64::from(in_canary) / keys.len() as f64;
            let want = f64::from(pair[0]) / f64::from(BUCKETS);
            assert!((share - want).abs() < 0.02, "share {share} for weight {want}");
        }
    }

    #[track_caller]
    fn check_invalid(edit: impl FnOnce(&mut RouteTable), field: &str, needle: &str) {
        let mut t = table(1_000);
        edit(&mut t);
        let err = t.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(needle), "{err:?} should mention {needle:?}");
    }

    #[test]
    fn validation() {
        table(1_000).validate().unwrap();
        table(0).validate().unwrap();
        let mut empty = table(0);
        empty.groups.clear();
        empty.validate().unwrap();

        check_invalid(|t| t.workload.clear(), "workload", "empty");
        check_invalid(|t| t.sticky_header = "bad header".into(), "sticky_header", "bad header");
        check_invalid(|t| t.sticky_header = String::new(), "sticky_header", "");
        check_invalid(|t| t.groups[0].version = "v1\r\nx: y".into(), "groups[0].version", "v1");
        check_invalid(|t| t.groups[0].name = "canäry".into(), "groups[0].name", "can");
        // Header names are compared without case: any case is a valid name.
        let mut upper = table(1_000);
        upper.sticky_header = "X-User-Id".into();
        assert_eq!(upper.validate(), Ok(()));
        check_invalid(|t| t.sticky_cookie = "a=b".into(), "sticky_cookie", "a=b");
        check_invalid(|t| t.groups[1].name = "canary".into(), "groups[1].name", "canary");
        check_invalid(|t| t.groups[0].name.clear(), "groups[0].name", "empty");
        check_invalid(|t| t.groups[0].version.clear(), "groups[0].version", "canary");
        check_invalid(|t| t.groups[1].version = "v\n1".into(), "groups[1].version", "stable");
        check_invalid(|t| t.groups[0].weight_bp = 20_000, "groups[0].weight_bp", "canary");
        check_invalid(|t| t.groups[0].upstreams.clear(), "groups[0].upstreams", "canary");
        check_invalid(|t| t.groups[1].upstreams.push(addr(1)), "groups[1].upstreams", "127.0.0.1:1");
        check_invalid(|t| t.groups[0].weight_bp = 1, "groups", "9001");
        check_invalid(|t| t.breaker.consecutive_failures = 0, "breaker.consecutive_failures", "1");
        check_invalid(|t| t.breaker.window = 0, "breaker.window", "got 0");
        check_invalid(|t| t.breaker.min_success_rate = f64::NAN, "breaker.min_success_rate", "NaN");
        check_invalid(|t| t.breaker.min_success_rate = 1.5, "breaker.min_success_rate", "1.5");
        check_invalid(|t| t.breaker.open_for_ms = 0, "breaker.open_for_ms", "1");

        // A weight-0 group may have no upstreams (a drained ring).
        let mut drained = table(0);
        drained.groups[0].upstreams.clear();
        drained.validate().unwrap();
    }

    #[test]
    fn a_pin_then_a_segment_then_the_bucket_decide_the_group() {
        let mut t = table(0);
        let staff = Segment {
            users: vec!["alice".into()],
            prefixes: vec!["qa-".into()],
            header: Some("x-ring".into()),
            values: vec!["staff".into()],
            ..Default::default()
        };
        t.groups[0].segment = Some(staff);
        t.pin_header = Some("x-ringfence-pin".into());
        t.validate().unwrap();
        let none = |_: &str| None;
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string())
        };
        // At 0% only the segment reaches the canary.
        assert_eq!(t.group_index("alice", none), Some(0));
        assert_eq!(t.group_index("qa-7", none), Some(0));
        assert_eq!(t.group_index("bob", headers(&[("x-ring", "staff")])), Some(0));
        assert_eq!(t.group_index("bob", headers(&[("x-ring", "public")])), Some(1));
        assert_eq!(t.group_index("bob", none), Some(1));
        // The pin header wins, for a version in the table only.
        assert_eq!(t.group_index("alice", headers(&[("x-ringfence-pin", "v1")])), Some(1));
        assert_eq!(t.group_index("bob", headers(&[("x-ringfence-pin", "v2")])), Some(0));
        assert_eq!(t.group_index("bob", headers(&[("x-ringfence-pin", "v9")])), Some(1));
        // Without a pin header in the table, the header means nothing.
        t.pin_header = None;
        assert_eq!(t.group_index("bob", headers(&[("x-ringfence-pin", "v2")])), Some(1));
        // Every user of the segment stays in the canary as its share grows.
        let grown = RouteTable { groups: table(5_000).groups, ..t.clone() };
        assert_eq!(
            grown.group_index("bob", headers(&[("x-ring", "staff")])),
            Some(1),
            "the grown table has no segment"
        );
        assert!(t.routes_by_request() && !table(100).routes_by_request());
    }

    #[test]
    fn a_segments_rule_targets_users_as_flags_do() {
        let staff = Segment {
            rule: Some(r#"{"or": [{"ends_with": [{"var": "targetingKey"}, "@example.com"]}, {"in": [{"var": "targetingKey"}, ["qa-1", "qa-2"]]}]}"#.into()),
            ..Default::default()
        };
        assert_eq!(staff.problem(), None);
        for (key, inside) in
            [("ada@example.com", true), ("qa-2", true), ("qa-3", false), ("bob@example.org", false), ("", false)]
        {
            assert_eq!(staff.has_user(key), inside, "{key}");
        }
        // Compiled once, on first use; a clone shares it and compares equal.
        assert_eq!(staff.clone(), staff);
    }

    #[test]
    fn a_segment_that_selects_nothing_or_anything_is_refused() {
        let seg = |s: Segment| move |t: &mut RouteTable| t.groups[0].segment = Some(s);
        check_invalid(seg(Segment::default()), "groups[0].segment.users", "none");
        check_invalid(
            seg(Segment { header: Some("x-ring".into()), ..Default::default() }),
            "groups[0].segment.values",
            "needs the values",
        );
        check_invalid(
            seg(Segment { values: vec!["staff".into()], ..Default::default() }),
            "groups[0].segment.header",
            "without a header",
        );
        check_invalid(
            seg(Segment { prefixes: vec![String::new()], ..Default::default() }),
            "groups[0].segment.prefixes",
            "1 to 256",
        );
        check_invalid(
            seg(Segment { users: (0..1_001).map(|i| i.to_string()).collect(), ..Default::default() }),
            "groups[0].segment.users",
            "at most 1000",
        );
        check_invalid(
            seg(Segment { rule: Some(r#"{"starts_with": [{"var": "targetingKey"}"#.into()), ..Default::default() }),
            "groups[0].segment.rule",
            "JsonLogic",
        );
        check_invalid(|t| t.pin_header = Some("bad header".into()), "pin_header", "bad header");
        check_invalid(|t| t.groups[0].shadow_bp = 10_001, "groups[0].shadow_bp", "canary");
        check_invalid(
            |t| t.groups[0].fault = Some(GroupFault { error_bp: 10_001, delay_ms: 0 }),
            "groups[0].fault",
            "canary",
        );
        check_invalid(
            |t| t.groups[0].fault = Some(GroupFault { error_bp: 0, delay_ms: 60_001 }),
            "groups[0].fault",
            "canary",
        );
    }

    #[test]
    fn serde_defaults() {
        let t: RouteTable = serde_json::from_str(r#"{"workload": "w"}"#).unwrap();
        assert_eq!(t.sticky_header, "x-user-id");
        assert_eq!(t.sticky_cookie, "rf_user");
        assert_eq!(t.breaker, BreakerConfig::default());
        assert_eq!(t.generation, 0);
        t.validate().unwrap();

        let t = table(300);
        let back: RouteTable = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
