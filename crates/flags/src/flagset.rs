//! Loading flagd flag definitions into a validated, compiled [`FlagSet`], and
//! evaluating its flags.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::bucketing::{FRACTIONAL_KEY, SETTINGS_KEY};
use crate::context::json_type;
use crate::hash::{FxBuild, KeyIndex, fast_eq};
use crate::logic::{Compiler, Env, Node, Path, Problem, Severity, number_text};
use crate::resolution::{ErrorCode, Reason, Resolution, ValueType};
use crate::value::{StackStr, Val};
use crate::{Bucketing, Context};

/// Variant lists longer than this get a hash index.
const VARIANT_INDEX_MIN: usize = 16;
/// Largest integer a double holds exactly; flagd's schema bounds number variants by it.
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// One problem found while loading flag definitions: where (a JSON path such
/// as `flags.new-ui.defaultVariant`), what was expected, and what it does when the
/// document is loaded the way flagd loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    /// Dotted JSON path, with `[i]` for array items; empty for the document itself.
    pub path: String,
    pub message: String,
    pub effect: Effect,
}

/// What a problem does to a document loaded the way flagd loads it ([`FlagSet::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Nothing can be loaded: the document is not JSON, has no `flags`, or names a bucketing
    /// this engine does not know. flagd refuses such a file too.
    Refused,
    /// The flag cannot be evaluated: it answers `PARSE_ERROR`, as flagd does (an unknown
    /// operator, a `$ref` to a missing evaluator, a `defaultVariant` that is not a variant...).
    /// The other flags work.
    ParseError,
    /// A flagd operator is misused (`ends_with` with one argument, `sem_ver` with an unknown
    /// operator...): where the rule reaches it, the flag answers its default variant with reason
    /// `DEFAULT`, as flagd does.
    DefaultVariant,
    /// Loaded as flagd loads it (a negative weight counts as 0, an unknown property is
    /// ignored, an unknown `state` means enabled...).
    Ignored,
}

impl Effect {
    /// The effect in words, for warnings.
    pub fn describe(self) -> &'static str {
        match self {
            Effect::Refused => "the document cannot be loaded",
            Effect::ParseError => "the flag answers PARSE_ERROR, as in flagd",
            Effect::DefaultVariant => "where evaluated, the rule falls back to the default variant, as in flagd",
            Effect::Ignored => "loaded as flagd loads it",
        }
    }
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl std::error::Error for FlagError {}

#[derive(Debug)]
struct Flag {
    key: String,
    enabled: bool,
    variants: Vec<(Box<str>, Value)>,
    variant_index: Option<HashMap<Box<str>, usize, FxBuild>>,
    default: Option<usize>,
    targeting: Option<Node>,
    /// Flag-set metadata merged with the flag's (flag wins).
    metadata: Map<String, Value>,
    value_type: Option<ValueType>,
    /// Lenient loading only: why this flag cannot be evaluated.
    broken: Option<Box<str>>,
}

impl Flag {
    #[inline]
    fn variant(&self, name: &str) -> Option<usize> {
        match &self.variant_index {
            Some(ix) => ix.get(name).copied(),
            None => self.variants.iter().position(|(n, _)| fast_eq(n, name)),
        }
    }

    fn default_resolution(&self, reason: Reason) -> Resolution<'_> {
        match self.default {
            Some(i) => Resolution {
                value: Some(&self.variants[i].1),
                variant: Some(&self.variants[i].0),
                reason,
                error: None,
                metadata: &self.metadata,
            },
            None => Resolution {
                value: None,
                variant: None,
                reason: Reason::Default,
                error: None,
                metadata: &self.metadata,
            },
        }
    }
}

/// A parsed, validated and compiled set of flags in flagd's flag-definition
/// format. Immutable once built; share it behind an `Arc` (or swap it
/// atomically) between threads.
#[derive(Debug)]
pub struct FlagSet {
    flags: Vec<Flag>,
    index: KeyIndex,
    metadata: Map<String, Value>,
    etag: String,
    bucketing: Bucketing,
}

type Loaded = (FlagSet, Vec<Problem>);

impl FlagSet {
    /// Parses flag definitions the way flagd loads them: whatever flagd loads is loaded, and
    /// each flag answers as flagd answers it. A flag whose definition cannot be used answers
    /// `PARSE_ERROR` (the other flags work); a misused flagd operator makes its rule fall back to
    /// the default variant; a negative `fractional` weight counts as 0. Fails only when nothing
    /// can be loaded (not JSON, no `flags`, an unknown bucketing): every such problem is
    /// returned. [`FlagSet::parse_lenient`] returns the problems found in a loaded document too,
    /// [`FlagSet::parse_strict`] refuses a document with any problem.
    pub fn parse(json: &str) -> Result<FlagSet, Vec<FlagError>> {
        load(json).map(|(set, _)| set)
    }

    /// Parses flag definitions, refusing them if anything is wrong (whatever flagd would do):
    /// the error list holds every problem found, each with its JSON path.
    pub fn parse_strict(json: &str) -> Result<FlagSet, Vec<FlagError>> {
        let (set, problems) = load(json)?;
        if problems.is_empty() { Ok(set) } else { Err(problems.into_iter().map(to_error).collect()) }
    }

    /// Parses flag definitions as [`FlagSet::parse`] does, and returns the problems found
    /// alongside (warnings: each says what it does, [`FlagError::effect`]).
    pub fn parse_lenient(json: &str) -> Result<(FlagSet, Vec<FlagError>), Vec<FlagError>> {
        let (set, problems) = load(json)?;
        Ok((set, problems.into_iter().map(to_error).collect()))
    }

    /// The `fractional` bucketing of this set: the one its document records, or
    /// [`Bucketing::UNRECORDED`].
    pub fn bucketing(&self) -> Bucketing {
        self.bucketing
    }

    /// Evaluates the flag `key` for `ctx`. Never panics, whatever the context.
    pub fn evaluate<'a>(&'a self, key: &str, ctx: &Context) -> Resolution<'a> {
        let Some(i) = self.find(key) else {
            return Resolution::failed(
                ErrorCode::FlagNotFound,
                Cow::Owned(format!("flag \"{key}\" not found")),
                &self.metadata,
            );
        };
        let flag = &self.flags[i];
        if let Some(why) = &flag.broken {
            return Resolution::failed(ErrorCode::ParseError, Cow::Borrowed(why), &flag.metadata);
        }
        if !flag.enabled {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Disabled,
                error: None,
                metadata: &flag.metadata,
            };
        }
        let Some(rule) = &flag.targeting else { return flag.default_resolution(Reason::Static) };
        let env = Env { flag_key: &flag.key, ctx };
        let result = match rule.evaluate(&env) {
            Ok(v) => v,
            Err(_) => Val::Null,
        };
        let mut buf = StackStr::new();
        let name = match &result {
            Val::Null => return flag.default_resolution(Reason::Default),
            Val::Str(s) => Some(s.as_str()),
            Val::String(s) => Some(s.as_str()),
            Val::Bool(true) => Some("true"),
            Val::Bool(false) => Some("false"),
            Val::Num(n) => number_text(*n, &mut buf),
            _ => None,
        };
        match name.and_then(|n| flag.variant(n)) {
            Some(v) => Resolution {
                value: Some(&flag.variants[v].1),
                variant: Some(&flag.variants[v].0),
                reason: Reason::TargetingMatch,
                error: None,
                metadata: &flag.metadata,
            },
            None => {
                let what = match name {
                    Some(n) => format!("variant \"{n}\", which flag \"{key}\" does not define"),
                    None => format!("{}, not a variant name", describe_val(&result)),
                };
                Resolution::failed(ErrorCode::General, Cow::Owned(format!("targeting returned {what}")), &flag.metadata)
            }
        }
    }

    #[inline]
    fn find(&self, key: &str) -> Option<usize> {
        self.index.get(key, |i| self.flags[i].key.as_str())
    }

    /// Evaluates a boolean flag, returning `default` when it has no boolean value.
    pub fn bool_value(&self, key: &str, ctx: &Context, default: bool) -> bool {
        self.evaluate(key, ctx).value.and_then(Value::as_bool).unwrap_or(default)
    }

    /// The flag keys, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| f.key.as_str())
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// True when `key` is defined and `DISABLED` (OFREP bulk evaluation skips those, as flagd does).
    pub fn is_disabled(&self, key: &str) -> bool {
        self.find(key).is_some_and(|i| !self.flags[i].enabled)
    }

    /// The JSON type of the flag's variants.
    pub fn value_type(&self, key: &str) -> Option<ValueType> {
        self.find(key).and_then(|i| self.flags[i].value_type)
    }

    /// The flag-set metadata (the top-level `metadata` object).
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// A content hash of the definitions (SHA-256 of their canonical JSON,
    /// with the engine's evaluation-semantics version), for OFREP bulk `ETag`s.
    /// Formatting and key order do not change it.
    pub fn etag(&self) -> &str {
        &self.etag
    }
}

fn describe_val(v: &Val<'_>) -> &'static str {
    match v {
        Val::Json(Value::Array(_)) | Val::List(_) => "an array",
        Val::Json(_) | Val::Object(_) => "an object",
        _ => "a value",
    }
}

fn to_error(p: Problem) -> FlagError {
    let effect = match p.severity {
        Severity::Fatal => Effect::ParseError,
        Severity::Operator => Effect::DefaultVariant,
        Severity::Lint => Effect::Ignored,
    };
    FlagError { path: p.path, message: p.message, effect }
}

fn doc_error(path: &str, message: impl Into<String>) -> Vec<FlagError> {
    vec![FlagError { path: path.to_owned(), message: message.into(), effect: Effect::Refused }]
}

/// The bucketing a document records (`"$ringfence": {"fractional": "v3"}`), or
/// [`Bucketing::UNRECORDED`]; unknown settings are reported.
fn read_settings(doc: &Map<String, Value>, problems: &mut Vec<Problem>) -> Result<Bucketing, Vec<FlagError>> {
    let Some(settings) = doc.get(SETTINGS_KEY) else { return Ok(Bucketing::UNRECORDED) };
    let Value::Object(settings) = settings else {
        return Err(doc_error(
            SETTINGS_KEY,
            format!("{SETTINGS_KEY} must be an object of ringfence settings, found {}", json_type(settings)),
        ));
    };
    for k in settings.keys().filter(|k| k.as_str() != FRACTIONAL_KEY) {
        problems.push(Problem {
            path: format!("{SETTINGS_KEY}.{k}"),
            message: format!("unknown ringfence setting; expected {FRACTIONAL_KEY}"),
            severity: Severity::Lint,
        });
    }
    match settings.get(FRACTIONAL_KEY) {
        None => Ok(Bucketing::UNRECORDED),
        Some(Value::String(v)) if Bucketing::parse(v).is_some() => Ok(Bucketing::parse(v).unwrap_or(Bucketing::V2)),
        Some(other) => Err(doc_error(
            &format!("{SETTINGS_KEY}.{FRACTIONAL_KEY}"),
            format!("the fractional bucketing must be \"v1\", \"v2\" or \"v3\", found {}", show(other)),
        )),
    }
}

/// The flags of the array form (`[{"key": "f", ...}]`, which flagd accepts) as the object form.
fn flags_from_array(items: &[Value], problems: &mut Vec<Problem>) -> Result<Map<String, Value>, Vec<FlagError>> {
    let mut out = Map::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(def) = item else {
            return Err(doc_error(
                &format!("flags[{i}]"),
                format!("a flag must be an object, found {}", json_type(item)),
            ));
        };
        let Some(Value::String(key)) = def.get("key") else {
            return Err(doc_error(&format!("flags[{i}].key"), "a flag of the array form needs a key (a string)"));
        };
        let mut def = def.clone();
        def.remove("key");
        if out.insert(key.clone(), Value::Object(def)).is_some() {
            problems.push(Problem {
                path: format!("flags[{i}].key"),
                message: format!("flag \"{key}\" is defined more than once; the last definition counts"),
                severity: Severity::Lint,
            });
        }
    }
    Ok(out)
}

/// Prepares a flag document to be stored in a release: the bucketing recorded (the current one
/// when the document records none, see [`crate::record_bucketing`]) and `flags` in the object
/// form (the array form, `[{"key": ...}]`, becomes `{key: ...}`). Returns the bucketing the
/// document records. Call it on a document [`FlagSet::parse`] accepts.
pub fn prepare_document(doc: &mut Value) -> Option<Bucketing> {
    if let Some(Value::Array(items)) = doc.get("flags") {
        let mut ignored = Vec::new();
        if let Ok(map) = flags_from_array(items, &mut ignored) {
            doc["flags"] = Value::Object(map);
        }
    }
    crate::record_bucketing(doc)
}

fn load(json: &str) -> Result<Loaded, Vec<FlagError>> {
    let root: Value = serde_json::from_str(json).map_err(|e| doc_error("", format!("invalid JSON: {e}")))?;
    let Value::Object(doc) = &root else {
        return Err(doc_error("", format!("flag definitions must be a JSON object, found {}", json_type(&root))));
    };
    let mut problems: Vec<Problem> = Vec::new();
    let from_array;
    let flags_json = match doc.get("flags") {
        Some(Value::Object(f)) => f,
        Some(Value::Array(items)) => {
            from_array = flags_from_array(items, &mut problems)?;
            &from_array
        }
        Some(other) => {
            return Err(doc_error(
                "flags",
                format!("flags must be an object of flag definitions, found {}", json_type(other)),
            ));
        }
        None => return Err(doc_error("", "missing required property \"flags\"")),
    };

    let top = Path::Root("");
    for key in doc.keys() {
        if !matches!(key.as_str(), "flags" | "$evaluators" | "metadata" | "$schema" | "$comment" | SETTINGS_KEY) {
            problems.push(Problem {
                path: Path::Key(&top, key).render(),
                message: format!(
                    "unknown top-level property; expected flags, $evaluators, metadata, $schema or {SETTINGS_KEY}"
                ),
                severity: Severity::Lint,
            });
        }
    }
    let bucketing = read_settings(doc, &mut problems)?;
    let evaluators = match doc.get("$evaluators") {
        None | Some(Value::Null) => None,
        Some(Value::Object(e)) => Some(e),
        Some(other) => {
            return Err(doc_error(
                "$evaluators",
                format!("$evaluators must be an object of named rules, found {}", json_type(other)),
            ));
        }
    };
    let set_metadata = read_metadata(doc.get("metadata"), &Path::Root("metadata"), &mut problems);

    let mut compiler = Compiler::new(evaluators, bucketing);
    let mut keys: Vec<&String> = flags_json.keys().collect();
    keys.sort();
    let mut flags = Vec::with_capacity(keys.len());
    for key in keys {
        let (p0, c0) = (problems.len(), compiler.problems.len());
        let mut flag = load_flag(key, &flags_json[key.as_str()], &set_metadata, &mut compiler, &mut problems);
        // The fatal problems recorded while loading this flag (its own first,
        // then those of evaluators it pulled in) make it unusable.
        let prefix = format!("flags.{key}");
        let new: Vec<&Problem> = problems[p0..]
            .iter()
            .chain(compiler.problems[c0..].iter())
            .filter(|p| p.severity == Severity::Fatal)
            .collect();
        let first = new.iter().find(|p| p.path.starts_with(&prefix)).or(new.first());
        if let Some(p) = first {
            let why = if p.path.is_empty() { p.message.clone() } else { format!("{}: {}", p.path, p.message) };
            flag.broken = Some(format!("invalid flag definition: {why}").into());
            flag.targeting = None;
        } else if flag.broken.is_some() {
            flag.targeting = None;
        }
        flags.push(flag);
    }
    compiler.compile_all_evaluators();
    problems.append(&mut compiler.problems);
    problems.sort_by(|a, b| a.path.cmp(&b.path));

    let index = KeyIndex::new(flags.iter().map(|f| f.key.as_str()));
    let etag = etag_of(&root);
    Ok((FlagSet { flags, index, metadata: set_metadata, etag, bucketing }, problems))
}

/// Reads a metadata object: string, number and boolean values only.
fn read_metadata(v: Option<&Value>, path: &Path<'_>, problems: &mut Vec<Problem>) -> Map<String, Value> {
    let mut out = Map::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, val) in m {
                match val {
                    Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                        out.insert(k.clone(), val.clone());
                    }
                    other => problems.push(Problem {
                        path: Path::Key(path, k).render(),
                        message: format!(
                            "metadata values must be strings, numbers or booleans, found {}",
                            json_type(other)
                        ),
                        severity: Severity::Lint,
                    }),
                }
            }
        }
        Some(other) => problems.push(Problem {
            path: path.render(),
            message: format!("metadata must be an object, found {}", json_type(other)),
            severity: Severity::Lint,
        }),
    }
    out
}

fn load_flag<'j>(
    key: &'j str,
    v: &'j Value,
    set_metadata: &Map<String, Value>,
    compiler: &mut Compiler<'j>,
    problems: &mut Vec<Problem>,
) -> Flag {
    let flags_root = Path::Root("flags");
    let path = Path::Key(&flags_root, key);
    let mut flag = Flag {
        key: key.to_owned(),
        enabled: true,
        variants: Vec::new(),
        variant_index: None,
        default: None,
        targeting: None,
        metadata: set_metadata.clone(),
        value_type: None,
        broken: None,
    };
    let mut fatal = |p: &Path<'_>, message: String| {
        problems.push(Problem { path: p.render(), message, severity: Severity::Fatal });
    };
    if key.is_empty() {
        fatal(&path, "a flag key must not be empty".into());
    }
    let Value::Object(def) = v else {
        fatal(&path, format!("a flag definition must be an object, found {}", json_type(v)));
        return flag;
    };
    let mut lints = Vec::new();
    for k in def.keys() {
        if !matches!(k.as_str(), "state" | "variants" | "defaultVariant" | "targeting" | "metadata") {
            lints.push(Problem {
                path: Path::Key(&path, k).render(),
                message: "unknown flag property; expected state, variants, defaultVariant, targeting or metadata"
                    .into(),
                severity: Severity::Lint,
            });
        }
    }

    // state
    let state_path = Path::Key(&path, "state");
    match def.get("state") {
        None => {}
        Some(Value::String(s)) if s == "ENABLED" => {}
        Some(Value::String(s)) if s == "DISABLED" => flag.enabled = false,
        // flagd disables only "DISABLED"; any other state is enabled.
        Some(Value::String(s)) => lints.push(Problem {
            path: state_path.render(),
            message: format!("state must be \"ENABLED\" or \"DISABLED\", found \"{s}\" (read as ENABLED)"),
            severity: Severity::Lint,
        }),
        Some(other) => fatal(&state_path, format!("state must be \"ENABLED\" or \"DISABLED\", found {}", show(other))),
    }

    // variants (flagd's schema defaults them to {"true": true, "false": false})
    let variants_path = Path::Key(&path, "variants");
    match def.get("variants") {
        None => {
            flag.variants = vec![("true".into(), Value::Bool(true)), ("false".into(), Value::Bool(false))];
            flag.value_type = Some(ValueType::Boolean);
        }
        Some(Value::Object(m)) if m.is_empty() => lints.push(Problem {
            path: variants_path.render(),
            message: "variants must define at least one variant".into(),
            severity: Severity::Lint,
        }),
        Some(Value::Object(m)) => {
            let mut first: Option<(&str, ValueType)> = None;
            let mut mixed = false;
            for (name, value) in m {
                let vp = Path::Key(&variants_path, name);
                let Some(t) = ValueType::of(value) else {
                    fatal(
                        &vp,
                        format!(
                            "a variant value must be a boolean, string, number or object, found {}",
                            json_type(value)
                        ),
                    );
                    continue;
                };
                if let Value::Number(n) = value {
                    let too_big = n.as_i64().map(|i| i.unsigned_abs() > MAX_SAFE_INTEGER).unwrap_or(false)
                        || n.as_u64().is_some_and(|u| u > MAX_SAFE_INTEGER);
                    if too_big {
                        lints.push(Problem {
                            path: vp.render(),
                            message: format!(
                                "integer {n} is outside the safe range ±{MAX_SAFE_INTEGER} (JSON numbers are doubles: \
                                 many clients cannot read it exactly)"
                            ),
                            severity: Severity::Lint,
                        });
                    }
                }
                match first {
                    None => first = Some((name, t)),
                    Some((first_name, ft)) if ft != t => {
                        mixed = true;
                        lints.push(Problem {
                            path: vp.render(),
                            message: format!(
                                "all variants should have the same type: \"{first_name}\" is a {}, \"{name}\" is a {} \
                                 (a typed evaluation of the other type answers TYPE_MISMATCH)",
                                ft.as_str(),
                                t.as_str()
                            ),
                            severity: Severity::Lint,
                        });
                    }
                    Some(_) => {}
                }
                flag.variants.push((name.as_str().into(), value.clone()));
            }
            flag.value_type = if mixed { None } else { first.map(|(_, t)| t) };
        }
        Some(other) => fatal(
            &variants_path,
            format!("variants must be an object mapping names to values, found {}", json_type(other)),
        ),
    }
    if flag.variants.len() > VARIANT_INDEX_MIN {
        flag.variant_index = Some(flag.variants.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect());
    }

    // defaultVariant (optional: without it the caller's code default applies)
    let dv_path = Path::Key(&path, "defaultVariant");
    match def.get("defaultVariant") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => match flag.variant(name) {
            Some(i) => flag.default = Some(i),
            None if def.get("variants").is_some_and(|v| !v.is_object()) => {}
            None => {
                let names: Vec<&str> = flag.variants.iter().map(|(n, _)| n.as_ref()).collect();
                fatal(&dv_path, format!("defaultVariant \"{name}\" is not one of the variants ({})", names.join(", ")));
            }
        },
        Some(other) => {
            fatal(&dv_path, format!("defaultVariant must be a variant name (a string) or null, found {}", show(other)))
        }
    }

    // metadata
    let own = read_metadata(def.get("metadata"), &Path::Key(&path, "metadata"), &mut lints);
    for (k, v) in own {
        flag.metadata.insert(k, v);
    }
    problems.append(&mut lints);

    // targeting
    let t_path = Path::Key(&path, "targeting");
    match def.get("targeting") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(rule @ Value::Object(_)) => match compiler.compile_rule(rule, &t_path) {
            Ok(node) => flag.targeting = Some(node),
            Err(_) => flag.broken = Some("invalid flag definition: targeting could not be compiled".into()),
        },
        Some(other) => problems.push(Problem {
            path: t_path.render(),
            message: format!("targeting must be a JsonLogic rule (an object), found {}", show(other)),
            severity: Severity::Fatal,
        }),
    }
    flag
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Number(_) | Value::Bool(_) | Value::Null => v.to_string(),
        other => json_type(other).to_owned(),
    }
}

/// Bump when evaluation semantics change, so OFREP clients refetch. (The bucketing a
/// document records is part of the document, so it is in the hash already.)
const ENGINE_TAG: &str = "ringfence-flags/2";

fn etag_of(root: &Value) -> String {
    let mut h = Sha256::new();
    h.update(ENGINE_TAG.as_bytes());
    h.update(b"\n");
    canonical(root, &mut h);
    hex::encode(&h.finalize()[..16])
}

/// Feeds a canonical serialization: object keys sorted, no whitespace.
fn canonical(v: &Value, h: &mut Sha256) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            h.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                h.update(Value::String(k.clone()).to_string().as_bytes());
                h.update(b":");
                canonical(&m[k.as_str()], h);
            }
            h.update(b"}");
        }
        Value::Array(a) => {
            h.update(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                canonical(x, h);
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}
