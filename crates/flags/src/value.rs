//! The value type the compiled JsonLogic evaluator works on, and the
//! JavaScript-style coercions JsonLogic is defined by (json-logic-js is the
//! reference implementation; flagd's providers follow it).
//!
//! Values borrow from the compiled rules and from the caller's [`Context`]
//! wherever they can, so the common targeting paths (`var`, `==`, `in`,
//! `starts_with`, `fractional`) allocate nothing.
//!
//! [`Context`]: crate::Context

use std::cmp::Ordering;
use std::fmt::{self, Write};

use serde_json::{Map, Value};

/// Every variant holds at most one word, so a `Val` (and a `Result<Val, _>`)
/// is 16 bytes and travels in registers: borrowed strings are `&String`
/// (a thin pointer) and owned strings and arrays are boxed (they are rare).
#[derive(Debug, Clone)]
#[allow(clippy::box_collection)] // deliberate: one word per variant keeps `Val` in registers
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a String),
    String(Box<String>),
    /// A borrowed JSON array or object (primitives are always normalised to
    /// the variants above).
    Json(&'a Value),
    /// A computed array.
    List(Box<Vec<Val<'a>>>),
    /// A computed object (only `{"var": ""}` at the root and `{"var": "$flagd"}`).
    Object(Box<Map<String, Value>>),
}

const _: () = assert!(std::mem::size_of::<Val<'static>>() == 16);

impl<'a> Val<'a> {
    #[inline]
    pub(crate) fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(s),
            Value::Array(_) | Value::Object(_) => Val::Json(v),
        }
    }

    #[inline]
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::String(s) => Some(s),
            _ => None,
        }
    }

    /// JsonLogic truthiness: JavaScript's, except that an empty array is falsy.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0 && !n.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::String(s) => !s.is_empty(),
            Val::Json(Value::Array(a)) => !a.is_empty(),
            Val::Json(_) => true,
            Val::List(l) => !l.is_empty(),
            Val::Object(_) => true,
        }
    }

    /// Number of items if this is an array.
    pub(crate) fn array_len(&self) -> Option<usize> {
        match self {
            Val::Json(Value::Array(a)) => Some(a.len()),
            Val::List(l) => Some(l.len()),
            _ => None,
        }
    }

    /// The items of an array (borrowed JSON items are converted, computed ones cloned).
    pub(crate) fn array_items(&self) -> Vec<Val<'a>> {
        match self {
            Val::Json(Value::Array(a)) => a.iter().map(Val::from_json).collect(),
            Val::List(l) => (**l).clone(),
            _ => Vec::new(),
        }
    }

    /// Converts to an owned JSON value.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => num_to_json(*n),
            Val::Str(s) => Value::String((*s).clone()),
            Val::String(s) => Value::String((**s).clone()),
            Val::Json(v) => (*v).clone(),
            Val::List(l) => Value::Array(l.iter().map(Val::to_json).collect()),
            Val::Object(m) => Value::Object((**m).clone()),
        }
    }

    /// JavaScript `ToNumber`.
    pub(crate) fn to_number(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Num(n) => *n,
            Val::Str(s) => str_to_number(s),
            Val::String(s) => str_to_number(s),
            Val::Json(Value::Array(a)) => match a.as_slice() {
                [] => 0.0,
                [x] => Val::from_json(x).prim_to_number_via_string(),
                _ => f64::NAN,
            },
            Val::List(l) => match l.as_slice() {
                [] => 0.0,
                [x] => x.prim_to_number_via_string(),
                _ => f64::NAN,
            },
            Val::Json(_) | Val::Object(_) => f64::NAN,
        }
    }

    /// `Number(String(x))` for one array element.
    fn prim_to_number_via_string(&self) -> f64 {
        match self {
            Val::Null => 0.0,
            Val::Num(n) => *n,
            _ => {
                let mut s = String::new();
                self.write_js(&mut s, true);
                str_to_number(&s)
            }
        }
    }

    /// Writes JavaScript's string conversion of the value. `null_as_empty`
    /// selects `Array.prototype.join` semantics (null → "") over `String()`
    /// (null → "null"); array elements always use join semantics.
    pub(crate) fn write_js<W: Write>(&self, out: &mut W, null_as_empty: bool) {
        let _ = match self {
            Val::Null if null_as_empty => Ok(()),
            Val::Null => out.write_str("null"),
            Val::Bool(true) => out.write_str("true"),
            Val::Bool(false) => out.write_str("false"),
            Val::Num(n) => write_js_number(out, *n),
            Val::Str(s) => out.write_str(s),
            Val::String(s) => out.write_str(s),
            Val::Json(Value::Array(a)) => {
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        let _ = out.write_char(',');
                    }
                    Val::from_json(item).write_js(out, true);
                }
                Ok(())
            }
            Val::List(l) => {
                for (i, item) in l.iter().enumerate() {
                    if i > 0 {
                        let _ = out.write_char(',');
                    }
                    item.write_js(out, true);
                }
                Ok(())
            }
            Val::Json(_) | Val::Object(_) => out.write_str("[object Object]"),
        };
    }

    pub(crate) fn to_js_string(&self) -> String {
        let mut s = String::new();
        self.write_js(&mut s, false);
        s
    }

    fn is_string(&self) -> bool {
        matches!(self, Val::Str(_) | Val::String(_))
    }

    fn is_compound(&self) -> bool {
        matches!(self, Val::Json(_) | Val::List(_) | Val::Object(_))
    }
}

/// JSON has no NaN or infinities: those become null.
pub(crate) fn num_to_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null)
    }
}

/// JavaScript `Number(string)`: trimmed, empty → 0, otherwise a decimal
/// literal (or `Infinity`), anything else → NaN.
pub(crate) fn str_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned == "Infinity" {
        return if t.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    // Rust accepts "inf"/"nan"/"infinity"; JavaScript does not.
    if !unsigned.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// JavaScript's number-to-string for the cases that matter here: integral
/// values print without a fraction, everything else as the shortest
/// round-trip decimal.
pub(crate) fn write_js_number<W: Write>(out: &mut W, n: f64) -> fmt::Result {
    if n.is_nan() {
        out.write_str("NaN")
    } else if n.is_infinite() {
        out.write_str(if n > 0.0 { "Infinity" } else { "-Infinity" })
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        write!(out, "{}", n as i128)
    } else {
        write!(out, "{n}")
    }
}

/// JavaScript loose equality (`==`).
pub(crate) fn loose_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Null, _) | (_, Val::Null) => false,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        _ if a.is_string() && b.is_string() => a.as_str() == b.as_str(),
        (Val::Bool(_), _) => loose_eq(&Val::Num(a.to_number()), b),
        (_, Val::Bool(_)) => loose_eq(a, &Val::Num(b.to_number())),
        (Val::Num(x), _) if b.is_string() => *x == b.to_number(),
        (_, Val::Num(y)) if a.is_string() => a.to_number() == *y,
        // Both compound: JavaScript compares references, never equal here.
        _ if a.is_compound() && b.is_compound() => false,
        // One compound, one primitive: compare through ToPrimitive (a string).
        _ if a.is_compound() => loose_eq(&Val::String(Box::new(a.to_js_string())), b),
        _ => loose_eq(a, &Val::String(Box::new(b.to_js_string()))),
    }
}

/// JavaScript strict equality (`===`).
pub(crate) fn strict_eq(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        _ if a.is_string() && b.is_string() => a.as_str() == b.as_str(),
        _ => false,
    }
}

/// JavaScript's abstract relational comparison; `None` when incomparable (NaN).
pub(crate) fn compare(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    let pa = if a.is_compound() { Val::String(Box::new(a.to_js_string())) } else { a.clone() };
    let pb = if b.is_compound() { Val::String(Box::new(b.to_js_string())) } else { b.clone() };
    if let (Some(x), Some(y)) = (pa.as_str(), pb.as_str()) {
        return Some(cmp_str(x, y));
    }
    pa.to_number().partial_cmp(&pb.to_number())
}

/// JavaScript compares strings by UTF-16 code units.
pub(crate) fn cmp_str(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A fixed-size stack buffer implementing `fmt::Write`; overflows are reported
/// as errors so callers can fall back to the heap.
pub(crate) struct StackStr {
    buf: [u8; 40],
    len: usize,
}

impl StackStr {
    pub(crate) fn new() -> Self {
        StackStr { buf: [0; 40], len: 0 }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
