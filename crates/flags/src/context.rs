//! The evaluation context: targeting key, attributes and the evaluation time.

use serde_json::{Map, Value};

use crate::ErrorCode;
use crate::hash::fast_eq;

/// What a flag is evaluated for: the subject (targeting key), its attributes,
/// and the time of evaluation.
///
/// Targeting rules see the attributes as the JsonLogic data object, plus
/// `targetingKey`, `$flagd.flagKey` (the flag being evaluated) and
/// `$flagd.timestamp`. The crate reads no clock: `$flagd.timestamp` is the
/// value given to [`Context::with_timestamp`] (Unix seconds), and `null` when
/// none was given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    pub(crate) targeting_key: Option<String>,
    /// Distinct names; a flat list is faster than a map for the few
    /// attributes a context carries.
    attributes: Vec<(String, Value)>,
    pub(crate) timestamp: Option<i64>,
}

/// Why a JSON evaluation context was rejected (OpenFeature `INVALID_CONTEXT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextError {
    /// Always [`ErrorCode::InvalidContext`].
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ContextError {}

impl Context {
    /// An empty context: no targeting key, no attributes, no timestamp.
    pub fn new() -> Context {
        Context::default()
    }

    /// Reads an OpenFeature/OFREP JSON context object (`{"targetingKey": "...", ...}`).
    /// `null` is an empty context. A `targetingKey` that is not a string is kept as the value
    /// rules see under `targetingKey`, as flagd does, but it is no targeting key: `fractional`
    /// without an explicit bucketing value then falls back to the default variant.
    pub fn from_json(value: Value) -> Result<Context, ContextError> {
        let mut map = match value {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(ContextError {
                    code: ErrorCode::InvalidContext,
                    message: format!("the evaluation context must be a JSON object, found {}", json_type(&other)),
                });
            }
        };
        let targeting_key = match map.remove("targetingKey") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                // Not a targeting key (OpenFeature's is a string), but rules may read it.
                map.insert("targetingKey".to_owned(), other);
                None
            }
        };
        Ok(Context { targeting_key, attributes: map.into_iter().collect(), timestamp: None })
    }

    /// Sets the targeting key (the subject's stable identifier).
    pub fn with_targeting_key(mut self, key: impl Into<String>) -> Context {
        self.targeting_key = Some(key.into());
        self
    }

    /// Adds or replaces one attribute. `targetingKey` sets the targeting key when it is a
    /// string; another value is kept for rules to read, as [`Context::from_json`] does.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Context {
        let name = name.into();
        let value = value.into();
        if name == "targetingKey" {
            self.attributes.retain(|(n, _)| n != "targetingKey");
            self.targeting_key = None;
            match value {
                Value::String(s) => self.targeting_key = Some(s),
                Value::Null => {}
                other => self.attributes.push((name, other)),
            }
            return self;
        }
        match self.attributes.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((name, value)),
        }
        self
    }

    /// Sets `$flagd.timestamp`, the evaluation time in Unix seconds.
    pub fn with_timestamp(mut self, unix_seconds: i64) -> Context {
        self.timestamp = Some(unix_seconds);
        self
    }

    /// The targeting key, when the context has one that is a string.
    pub fn targeting_key(&self) -> Option<&str> {
        self.targeting_key.as_deref()
    }

    /// One attribute by name.
    #[inline]
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes.iter().find(|(n, _)| fast_eq(n, name)).map(|(_, v)| v)
    }

    /// All attributes (a string targeting key is not one of them; another `targetingKey` value is).
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attributes.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
