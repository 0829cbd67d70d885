//! Time as plain data. The core never asks the system for the time; callers pass it in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms.min(i64::MAX as u64) as i64))
    }

    pub fn minus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(ms.min(i64::MAX as u64) as i64))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0).max(0) as u64
    }
}

/// An RFC 3339 time with an offset (`2026-11-22T10:25:06Z`, `2026-11-22T11:25:06+01:00`).
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    let t: jiff::Timestamp =
        s.trim().parse().map_err(|_| format!("expected an RFC 3339 time such as 2026-11-22T10:25:06Z, found {s:?}"))?;
    Ok(Timestamp(t.as_millisecond()))
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T10:25:06.123Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, (sod / 60) % 60, sod % 60)
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_795_343_106_123).to_string(), "2026-11-22T10:25:06.123Z");
        assert_eq!(Timestamp(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_rfc3339_with_any_offset() {
        assert_eq!(parse_rfc3339("2026-11-22T10:25:06.123Z"), Ok(Timestamp(1_795_343_106_123)));
        assert_eq!(parse_rfc3339("2026-11-22T11:25:06.123+01:00"), Ok(Timestamp(1_795_343_106_123)));
        let e = parse_rfc3339("yesterday").unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("yesterday"), "{e}");
    }

    #[test]
    fn since_saturates() {
        assert_eq!(Timestamp(10).since(Timestamp(4)), 6);
        assert_eq!(Timestamp(4).since(Timestamp(10)), 0);
    }
}
