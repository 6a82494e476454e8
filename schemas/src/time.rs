//! RFC 3339 timestamps in UTC with millisecond precision, without a clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, written as RFC 3339 UTC with milliseconds
/// (`2026-11-26T06:09:54.123Z`). This crate never reads the clock: callers pass
/// the time in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampParseError(pub String);

impl fmt::Display for TimestampParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an RFC 3339 timestamp: {}", self.0)
    }
}

impl std::error::Error for TimestampParseError {}

impl Timestamp {
    pub const fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub const fn plus_seconds(self, seconds: i64) -> Self {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(1000)))
    }

    pub const fn plus_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }
}

// Days from civil date and back: Howard Hinnant's algorithms (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

fn digits(s: &[u8], start: usize, len: usize) -> Option<i64> {
    let part = s.get(start..start + len)?;
    let mut v = 0i64;
    for &b in part {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(b - b'0');
    }
    Some(v)
}

impl FromStr for Timestamp {
    type Err = TimestampParseError;

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`); fractions
    /// below a millisecond are truncated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TimestampParseError(s.chars().take(64).collect());
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return Err(err());
        }
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(err());
        }
        let (y, mo, d) = (
            digits(b, 0, 4).ok_or_else(err)?,
            digits(b, 5, 2).ok_or_else(err)?,
            digits(b, 8, 2).ok_or_else(err)?,
        );
        let (h, mi, se) = (
            digits(b, 11, 2).ok_or_else(err)?,
            digits(b, 14, 2).ok_or_else(err)?,
            digits(b, 17, 2).ok_or_else(err)?,
        );
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || se > 60 {
            return Err(err());
        }
        if d > month_days[(mo - 1) as usize] {
            return Err(err());
        }
        let mut i = 19;
        let mut ms = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    ms = ms * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return Err(err());
            }
            for _ in n..3 {
                ms *= 10;
            }
        }
        let offset_secs = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let oh = digits(b, i + 1, 2).ok_or_else(err)?;
                let om = digits(b, i + 4, 2).ok_or_else(err)?;
                if oh > 23 || om > 59 {
                    return Err(err());
                }
                let off = oh * 3600 + om * 60;
                if *sign == b'+' { off } else { -off }
            }
            _ => return Err(err()),
        };
        let secs =
            days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset_secs;
        Ok(Timestamp(secs * 1000 + ms))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let t = Timestamp::from_unix_millis(1_795_673_394_123);
        let s = t.to_string();
        assert_eq!(s, "2026-11-26T06:09:54.123Z");
        assert_eq!(s.parse::<Timestamp>(), Ok(t));
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let a: Timestamp = "2026-11-26T07:09:54.1+01:00".parse().unwrap_or_default();
        assert_eq!(a.to_string(), "2026-11-26T06:09:54.100Z");
        let b: Timestamp = "2024-02-29T00:00:00Z".parse().unwrap_or_default();
        assert_eq!(b.to_string(), "2024-02-29T00:00:00.000Z");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-11-26 06:09:54",
            "2026-11-26T06:09:54.Z",
            "2026-11-26T06:09:54+0100",
            "yesterday",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad} should not parse");
        }
    }
}
