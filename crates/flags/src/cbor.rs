//! The deterministic CBOR encoding `fractional` hashes in its v3 bucketing (flagd ADR
//! "Harden Hashing Consistency And Add Support For Non-string Attributes in Fractional
//! Evaluation", `docs/architecture-decisions/fractional-non-string-rand-units.md`):
//! RFC 8949 §4.2.1 core deterministic encoding, after a number normalization.
//!
//! - integers: major type 0 (unsigned) or 1 (negative), shortest head;
//! - numbers without a fractional part in `[-2^63, 2^64 - 1]` are integers (so `1.0` is `1`,
//!   and `-0.0` is `0`); any other number is a float in its shortest exact form
//!   (half, single or double precision);
//! - strings: major type 3, UTF-8; arrays: major type 4; objects: major type 5 with the keys
//!   sorted by their encoded bytes (for string keys: shorter first, then bytewise);
//! - `false`, `true`, `null`: simple values 20, 21, 22.
//!
//! The encoder writes into a [`Sink`], so a value is hashed as it is encoded, without a buffer.

use serde_json::{Map, Value};

use crate::value::Val;

/// Where encoded bytes go: the streaming hash, or a buffer in tests.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for crate::hash::Murmur3 {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
}

const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// The head of a data item: major type and argument, in the shortest form.
#[inline]
pub(crate) fn head<S: Sink>(out: &mut S, major: u8, n: u64) {
    let mt = major << 5;
    if n < 24 {
        out.put(&[mt | n as u8]);
    } else if n <= 0xff {
        out.put(&[mt | 24, n as u8]);
    } else if n <= 0xffff {
        let b = (n as u16).to_be_bytes();
        out.put(&[mt | 25, b[0], b[1]]);
    } else if n <= 0xffff_ffff {
        let b = (n as u32).to_be_bytes();
        out.put(&[mt | 26, b[0], b[1], b[2], b[3]]);
    } else {
        let b = n.to_be_bytes();
        out.put(&[mt | 27, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
}

/// A text string.
#[inline]
pub(crate) fn text<S: Sink>(out: &mut S, s: &str) {
    head(out, TEXT, s.len() as u64);
    out.put(s.as_bytes());
}

/// The head of an array of `n` items.
#[inline]
pub(crate) fn array_head<S: Sink>(out: &mut S, n: usize) {
    head(out, ARRAY, n as u64);
}

fn unsigned<S: Sink>(out: &mut S, n: u64) {
    head(out, UNSIGNED, n);
}

fn negative<S: Sink>(out: &mut S, n: i64) {
    // -1 - n, which for a negative i64 is its bitwise complement: no overflow at i64::MIN.
    head(out, NEGATIVE, !(n as u64));
}

/// 2^64 and -2^63 as doubles (both exact).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

/// A number, normalized: integral values in `[-2^63, 2^64 - 1]` as integers, others as the
/// shortest float that holds them exactly.
pub(crate) fn number<S: Sink>(out: &mut S, x: f64) {
    if x.fract() == 0.0 && (MINUS_TWO_POW_63..TWO_POW_64).contains(&x) {
        if x >= 0.0 {
            unsigned(out, x as u64);
        } else {
            negative(out, x as i64);
        }
        return;
    }
    float(out, x);
}

fn float<S: Sink>(out: &mut S, x: f64) {
    if x.is_nan() {
        out.put(&[0xf9, 0x7e, 0x00]);
    } else if let Some(h) = to_f16_exact(x) {
        let b = h.to_be_bytes();
        out.put(&[0xf9, b[0], b[1]]);
    } else if f64::from(x as f32) == x {
        let b = (x as f32).to_bits().to_be_bytes();
        out.put(&[0xfa, b[0], b[1], b[2], b[3]]);
    } else {
        let b = x.to_bits().to_be_bytes();
        out.put(&[0xfb, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
}

/// The IEEE 754 half-precision bits of `x` when `x` is exactly representable in half precision.
fn to_f16_exact(x: f64) -> Option<u16> {
    let bits = x.to_bits();
    let sign = ((bits >> 63) as u16) << 15;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp == 0x7ff {
        // Infinities (NaN is handled by the caller).
        return (frac == 0).then_some(sign | 0x7c00);
    }
    if exp == 0 {
        // Zero (a double subnormal is far below the smallest half).
        return (frac == 0).then_some(sign);
    }
    let e = exp - 1023;
    if e > 15 {
        return None;
    }
    if e >= -14 {
        // A normal half: 10 bits of fraction.
        if frac & ((1u64 << 42) - 1) != 0 {
            return None;
        }
        return Some(sign | (((e + 15) as u16) << 10) | (frac >> 42) as u16);
    }
    // A subnormal half: m * 2^-24 with m in 1..=1023.
    let full = (1u64 << 52) | frac;
    let shift = (28 - e) as u32;
    if shift >= 64 || full & ((1u64 << shift) - 1) != 0 {
        return None;
    }
    let m = full >> shift;
    (1..=1023).contains(&m).then_some(sign | m as u16)
}

fn json_number<S: Sink>(out: &mut S, n: &serde_json::Number) {
    if let Some(u) = n.as_u64() {
        unsigned(out, u);
    } else if let Some(i) = n.as_i64() {
        if i >= 0 { unsigned(out, i as u64) } else { negative(out, i) }
    } else {
        number(out, n.as_f64().unwrap_or(f64::NAN));
    }
}

/// A JSON value, integers exactly as written.
pub(crate) fn json<S: Sink>(out: &mut S, v: &Value) {
    match v {
        Value::Null => out.put(&[0xf6]),
        Value::Bool(false) => out.put(&[0xf4]),
        Value::Bool(true) => out.put(&[0xf5]),
        Value::Number(n) => json_number(out, n),
        Value::String(s) => text(out, s),
        Value::Array(items) => {
            array_head(out, items.len());
            for item in items {
                json(out, item);
            }
        }
        Value::Object(m) => object(out, m),
    }
}

fn object<S: Sink>(out: &mut S, m: &Map<String, Value>) {
    head(out, MAP, m.len() as u64);
    let mut keys: Vec<&String> = m.keys().collect();
    // The order of the encoded keys: a longer string has a larger head.
    keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
    for k in keys {
        text(out, k);
        json(out, &m[k.as_str()]);
    }
}

/// A value computed by a rule.
pub(crate) fn val<S: Sink>(out: &mut S, v: &Val<'_>) {
    match v {
        Val::Null => out.put(&[0xf6]),
        Val::Bool(false) => out.put(&[0xf4]),
        Val::Bool(true) => out.put(&[0xf5]),
        Val::Num(x) => number(out, *x),
        Val::Str(s) => text(out, s),
        Val::String(s) => text(out, s),
        Val::Json(j) => json(out, j),
        Val::List(items) => {
            array_head(out, items.len());
            for item in items.iter() {
                val(out, item);
            }
        }
        Val::Object(m) => object(out, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: &Value) -> String {
        let mut out = Vec::new();
        json(&mut out, v);
        hex::encode(out)
    }

    fn num(x: f64) -> String {
        let mut out = Vec::new();
        number(&mut out, x);
        hex::encode(out)
    }

    #[test]
    fn rfc_8949_appendix_a_examples() {
        // Values from RFC 8949 Appendix A, in preferred serialization.
        assert_eq!(enc(&json!(0)), "00");
        assert_eq!(enc(&json!(23)), "17");
        assert_eq!(enc(&json!(24)), "1818");
        assert_eq!(enc(&json!(100)), "1864");
        assert_eq!(enc(&json!(1000)), "1903e8");
        assert_eq!(enc(&json!(1_000_000)), "1a000f4240");
        assert_eq!(enc(&json!(1_000_000_000_000u64)), "1b000000e8d4a51000");
        assert_eq!(enc(&json!(u64::MAX)), "1bffffffffffffffff");
        assert_eq!(enc(&json!(-1)), "20");
        assert_eq!(enc(&json!(-10)), "29");
        assert_eq!(enc(&json!(-100)), "3863");
        assert_eq!(enc(&json!(-1000)), "3903e7");
        assert_eq!(enc(&json!(i64::MIN)), "3b7fffffffffffffff");
        assert_eq!(num(1.1), "fb3ff199999999999a");
        assert_eq!(num(1.5), "f93e00");
        assert_eq!(num(65504.5), "fa477fe080");
        assert_eq!(num(100000.5), "fa47c35040");
        assert_eq!(num(3.402_823_466_385_288_6e38), "fa7f7fffff");
        assert_eq!(num(1.0e300), "fb7e37e43c8800759c");
        assert_eq!(num(5.960_464_477_539_063e-8), "f90001");
        assert_eq!(num(0.000_061_035_156_25), "f90400");
        assert_eq!(num(-4.1), "fbc010666666666666");
        assert_eq!(num(f64::INFINITY), "f97c00");
        assert_eq!(num(f64::NEG_INFINITY), "f9fc00");
        assert_eq!(num(f64::NAN), "f97e00");
        assert_eq!(enc(&json!(false)), "f4");
        assert_eq!(enc(&json!(true)), "f5");
        assert_eq!(enc(&json!(null)), "f6");
        assert_eq!(enc(&json!("")), "60");
        assert_eq!(enc(&json!("a")), "6161");
        assert_eq!(enc(&json!("IETF")), "6449455446");
        assert_eq!(enc(&json!("\u{00fc}")), "62c3bc");
        assert_eq!(enc(&json!("\u{6c34}")), "63e6b0b4");
        assert_eq!(enc(&json!([])), "80");
        assert_eq!(enc(&json!([1, 2, 3])), "83010203");
        assert_eq!(enc(&json!([1, [2, 3], [4, 5]])), "8301820203820405");
        assert_eq!(enc(&json!({})), "a0");
        assert_eq!(enc(&json!({"a": 1, "b": [2, 3]})), "a26161016162820203");
        assert_eq!(
            enc(&json!({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"})),
            "a56161614161626142616361436164614461656145"
        );
    }

    #[test]
    fn numbers_are_normalized() {
        // Integral doubles are integers; -0.0 is 0.
        assert_eq!(num(1.0), "01");
        assert_eq!(num(-0.0), "00");
        assert_eq!(num(-2.0), "21");
        assert_eq!(enc(&json!(1.0)), enc(&json!(1)));
        assert_eq!(enc(&json!(9_007_199_254_740_992.0)), enc(&json!(9_007_199_254_740_992u64)));
        // 2^63 fits an unsigned integer; -2^63 a negative one; 2^64 and 1e20 stay floats.
        assert_eq!(num(9_223_372_036_854_775_808.0), "1b8000000000000000");
        assert_eq!(num(-9_223_372_036_854_775_808.0), "3b7fffffffffffffff");
        assert_eq!(num(TWO_POW_64), "fa5f800000");
        assert_eq!(num(1e20), "fb4415af1d78b58c40");
    }

    #[test]
    fn object_keys_sort_by_their_encoding() {
        // Shorter keys first, then bytewise, whatever the order in the input.
        assert_eq!(enc(&json!({"aa": 2, "z": 1})), "a2617a0162616102");
        assert_eq!(enc(&json!({"aaa": 1, "\u{ff}": 2})), enc(&json!({"\u{ff}": 2, "aaa": 1})));
        // "ÿ" is two bytes, so it sorts before the three-byte "aaa".
        assert!(enc(&json!({"aaa": 1, "\u{ff}": 2})).starts_with("a262c3bf02"));
    }

    #[test]
    fn half_precision_is_exact_or_not_used() {
        for (x, h) in
            [(1.0f64, 0x3c00u16), (65504.0, 0x7bff), (-2.0, 0xc000), (0.5, 0x3800), (5.960_464_477_539_063e-8, 1)]
        {
            assert_eq!(to_f16_exact(x), Some(h), "{x}");
        }
        for x in [65505.0, 1.1, 1e-9, 3.0e-8, 1.0 + 1.0 / 2048.0] {
            assert_eq!(to_f16_exact(x), None, "{x}");
        }
    }
}
