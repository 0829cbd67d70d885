//! Human durations in specs: `500ms`, `30s`, `5m`, `1h30m`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in whole milliseconds, written and read as a human string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Dur(pub u64);

impl Dur {
    pub const fn ms(ms: u64) -> Dur {
        Dur(ms)
    }

    pub const fn secs(s: u64) -> Dur {
        Dur(s * 1000)
    }

    pub fn as_ms(self) -> u64 {
        self.0
    }

    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

/// Parses `1h30m`, `90s`, `250ms`, `0`. Units: ms, s, m, h, d.
pub fn parse(text: &str) -> Result<Dur, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Dur(0));
    }
    if s.is_empty() {
        return Err("expected a duration such as \"30s\", \"5m\" or \"1h30m\", found an empty string".into());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("expected a number in duration {text:?} (like \"30s\" or \"1h30m\")"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("number too large in duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!("missing unit in duration {text:?}: use ms, s, m, h or d"));
            }
            other => {
                return Err(format!("unknown unit {other:?} in duration {text:?}: use ms, s, m, h or d"));
            }
        };
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    Ok(Dur(total))
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            if ms < 1000 {
                return write!(f, "{ms}ms");
            }
            return write!(f, "{:.1}s", ms as f64 / 1000.0);
        }
        let mut s = ms / 1000;
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.0.is_multiple_of(1000) {
            s.serialize_str(&format!("{}ms", self.0))
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, ms, shown) in [
            ("0", 0, "0s"),
            ("250ms", 250, "250ms"),
            ("30s", 30_000, "30s"),
            ("5m", 300_000, "5m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("1m500ms", 60_500, "60.5s"),
        ] {
            let d = parse(text).unwrap();
            assert_eq!(d.0, ms, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn rejects_bad_text() {
        for bad in ["", "s", "10", "10x", "ten seconds", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
