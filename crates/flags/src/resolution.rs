//! The result of evaluating one flag, shaped after OpenFeature / OFREP.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Map, Value};

/// Why a flag resolved the way it did (OpenFeature resolution reasons).
///
/// `fractional` assignments report `TargetingMatch`, as flagd does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No targeting rule: the default variant.
    Static,
    /// The targeting rule returned null (or a flagd custom operator failed),
    /// or the flag has no default variant: the default variant, or no value.
    Default,
    /// The targeting rule selected a variant.
    TargetingMatch,
    /// The flag is disabled: no value (the caller's code default applies).
    Disabled,
    /// See [`Resolution::error`].
    Error,
}

impl Reason {
    /// The OpenFeature spelling, e.g. `TARGETING_MATCH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::Default => "DEFAULT",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OpenFeature / OFREP error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No flag with that key (OFREP: HTTP 404).
    FlagNotFound,
    /// The flag's definition could not be used (only for flags loaded with
    /// [`FlagSet::parse_lenient`](crate::FlagSet::parse_lenient)).
    ParseError,
    /// The value is not of the type the caller asked for ([`Resolution::expect_type`]).
    TypeMismatch,
    /// Reserved for the server; the engine follows flagd, where a `fractional`
    /// without a targeting key falls back to the default variant instead.
    TargetingKeyMissing,
    /// The evaluation context is malformed ([`Context::from_json`](crate::Context::from_json)).
    InvalidContext,
    /// Anything else, e.g. targeting returned a variant the flag does not define.
    General,
}

impl ErrorCode {
    /// The OpenFeature spelling, e.g. `FLAG_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An evaluation error: its code and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolutionError<'a> {
    pub code: ErrorCode,
    pub message: Cow<'a, str>,
}

/// The JSON type of a flag's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Boolean,
    String,
    Number,
    Object,
}

impl ValueType {
    /// The type an OpenFeature client asks for, by the name of its typed call (`boolean`,
    /// `string`, `integer`, `float`, `object`): integers and floats are both numbers here.
    pub fn from_client_name(name: &str) -> Option<ValueType> {
        Some(match name {
            "boolean" => ValueType::Boolean,
            "string" => ValueType::String,
            "integer" | "float" => ValueType::Number,
            "object" => ValueType::Object,
            _ => return None,
        })
    }

    pub(crate) fn of(v: &Value) -> Option<ValueType> {
        match v {
            Value::Bool(_) => Some(ValueType::Boolean),
            Value::String(_) => Some(ValueType::String),
            Value::Number(_) => Some(ValueType::Number),
            Value::Object(_) => Some(ValueType::Object),
            Value::Null | Value::Array(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Boolean => "boolean",
            ValueType::String => "string",
            ValueType::Number => "number",
            ValueType::Object => "object",
        }
    }
}

/// The outcome of one evaluation. It borrows from the [`FlagSet`](crate::FlagSet)
/// (and the flag key), so producing it allocates nothing on success paths.
///
/// - success: `value` and `variant` set, `error` is `None`;
/// - value-less success (flag `DISABLED`, or no `defaultVariant`): `value` and
///   `variant` are `None`, `error` is `None`: the caller uses its code default;
/// - failure: `reason` is [`Reason::Error`], `error` says why, no value.
///
/// `metadata` is the flag-set metadata merged with the flag's own (the flag's
/// keys win), as flagd returns it; for an unknown flag, the flag-set metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<'a> {
    pub value: Option<&'a Value>,
    pub variant: Option<&'a str>,
    pub reason: Reason,
    pub error: Option<ResolutionError<'a>>,
    pub metadata: &'a Map<String, Value>,
}

impl<'a> Resolution<'a> {
    pub(crate) fn failed(code: ErrorCode, message: Cow<'a, str>, metadata: &'a Map<String, Value>) -> Self {
        Resolution {
            value: None,
            variant: None,
            reason: Reason::Error,
            error: Some(ResolutionError { code, message }),
            metadata,
        }
    }

    /// True when evaluation succeeded (possibly without a value).
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }

    /// Turns a value of another type into a `TYPE_MISMATCH` error, as an
    /// OpenFeature provider does for a typed evaluation.
    pub fn expect_type(self, expected: ValueType) -> Resolution<'a> {
        match self.value.and_then(ValueType::of) {
            Some(actual) if actual != expected => Resolution::failed(
                ErrorCode::TypeMismatch,
                Cow::Owned(format!("the flag's value is a {}, not a {}", actual.as_str(), expected.as_str())),
                self.metadata,
            ),
            _ => self,
        }
    }
}
