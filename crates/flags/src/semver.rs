//! `sem_ver` as flagd defines it (docs/reference/custom-operations/semver-operation.md
//! and the flagd-testbed `semver.feature` vectors):
//!
//! - `=`, `!=`, `<`, `<=`, `>`, `>=` compare by SemVer 2.0.0 precedence
//!   (pre-release lower than release, build metadata ignored);
//! - `^` matches the major version, `~` matches major and minor;
//! - a leading `v`/`V` is ignored, partial versions are padded (`1` = `1.0.0`,
//!   `1.2` = `1.2.0`), a numeric context value is read as its decimal string;
//! - anything else (`2.0.0.0`, `not-a-version`, an unknown operator) is an
//!   error, which makes the targeting rule fall back to the default variant.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SemVerOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Major,
    Minor,
}

impl SemVerOp {
    pub(crate) fn parse(s: &str) -> Option<SemVerOp> {
        Some(match s {
            "=" => SemVerOp::Eq,
            "!=" => SemVerOp::Ne,
            "<" => SemVerOp::Lt,
            "<=" => SemVerOp::Le,
            ">" => SemVerOp::Gt,
            ">=" => SemVerOp::Ge,
            "^" => SemVerOp::Major,
            "~" => SemVerOp::Minor,
            _ => return None,
        })
    }

    pub(crate) const ALL: &'static str = "\"=\", \"!=\", \"<\", \"<=\", \">\", \">=\", \"^\" or \"~\"";

    pub(crate) fn apply(self, a: &Version<'_>, b: &Version<'_>) -> bool {
        let ord = a.cmp_precedence(b);
        match self {
            SemVerOp::Eq => ord == Ordering::Equal,
            SemVerOp::Ne => ord != Ordering::Equal,
            SemVerOp::Lt => ord == Ordering::Less,
            SemVerOp::Le => ord != Ordering::Greater,
            SemVerOp::Gt => ord == Ordering::Greater,
            SemVerOp::Ge => ord != Ordering::Less,
            SemVerOp::Major => a.major == b.major,
            SemVerOp::Minor => a.major == b.major && a.minor == b.minor,
        }
    }
}

/// A parsed version borrowing its pre-release identifiers from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version<'s> {
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) patch: u64,
    /// Dot-separated pre-release identifiers, empty when there are none.
    pub(crate) pre: &'s str,
}

/// An owned version, for literals pre-parsed at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedVersion {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Box<str>,
}

impl OwnedVersion {
    pub(crate) fn parse(s: &str) -> Option<OwnedVersion> {
        let v = Version::parse(s)?;
        Some(OwnedVersion { major: v.major, minor: v.minor, patch: v.patch, pre: v.pre.into() })
    }

    pub(crate) fn as_version(&self) -> Version<'_> {
        Version { major: self.major, minor: self.minor, patch: self.patch, pre: &self.pre }
    }
}

fn numeric(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

impl<'s> Version<'s> {
    pub(crate) fn parse(input: &'s str) -> Option<Version<'s>> {
        let s = input.strip_prefix(['v', 'V']).unwrap_or(input);
        let s = match s.split_once('+') {
            Some((v, build)) => {
                let ok = build.split('.').all(|id| !id.is_empty() && id.bytes().all(is_ident_byte));
                if !ok {
                    return None;
                }
                v
            }
            None => s,
        };
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p),
            None => (s, ""),
        };
        if s.contains('-') {
            let ok = pre.split('.').all(|id| {
                !id.is_empty()
                    && id.bytes().all(is_ident_byte)
                    && !(id.bytes().all(|b| b.is_ascii_digit()) && id.len() > 1 && id.starts_with('0'))
            });
            if !ok {
                return None;
            }
        }
        let mut parts = core.split('.');
        let major = numeric(parts.next()?)?;
        let minor = match parts.next() {
            Some(p) => numeric(p)?,
            None => 0,
        };
        let patch = match parts.next() {
            Some(p) => numeric(p)?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Version { major, minor, patch, pre })
    }

    pub(crate) fn cmp_precedence(&self, other: &Version<'_>) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| cmp_pre(self.pre, other.pre))
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let xn = x.bytes().all(|c| c.is_ascii_digit());
                let yn = y.bytes().all(|c| c.is_ascii_digit());
                let ord = match (xn, yn) {
                    // Numeric identifiers have no leading zeros: longer is larger.
                    (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let v = Version::parse("v1.2.3-rc.1+build.5").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.pre), (1, 2, 3, "rc.1"));
        assert_eq!(Version::parse("1").unwrap().cmp_precedence(&Version::parse("1.0.0").unwrap()), Ordering::Equal);
        for bad in
            ["", "v", "1.2.3.4", "01.2.3", "1..3", "a.b.c", "1.2.3-", "1.2.3+", "1.2.3-01", "-1.2.3", "1.2.3-a b"]
        {
            assert!(Version::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn precedence_follows_semver_spec() {
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for w in chain.windows(2) {
            let a = Version::parse(w[0]).unwrap();
            let b = Version::parse(w[1]).unwrap();
            assert_eq!(a.cmp_precedence(&b), Ordering::Less, "{} < {}", w[0], w[1]);
        }
    }
}
