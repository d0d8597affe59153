//! Go's `time.Duration` text form, which kube-proxy's flags and config file
//! use (`"1s"`, `"500ms"`, `"1m30s"`, `"24h0m0s"`).
//!
//! Operators copy values between kube-proxy and Sluice, and `--write-config-to`
//! must produce a file kube-proxy itself would accept, so parsing follows
//! `time.ParseDuration` and printing follows `Duration.String()` exactly.
//! Negative durations, which Go accepts, are refused here: no kube-proxy
//! setting allows one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from or written as Go's text form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

/// Why a duration did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: \"1s\", \"500ms\", \"1m30s\", \"2h\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, u128); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 0), // never matches: Go has no day unit; listed so "1d" names the unit
];

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        parse(input).map(GoDuration)
    }
}

/// Parses Go's duration syntax: a sequence of decimal numbers, each with an
/// optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`); `"0"`
/// alone is zero. A leading `+` is allowed, a `-` is not.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    if rest.starts_with('-') {
        return Err(err("must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (value, unit_rest) = number(rest).ok_or_else(|| err("expected a number"))?;
        let unit_len = unit_rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(unit_rest.len());
        let unit = &unit_rest[..unit_len];
        if unit.is_empty() {
            return Err(err("missing unit"));
        }
        let scale = (UNITS.iter())
            .find(|(name, scale)| *name == unit && *scale > 0)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| err("unknown unit (use ns, us, ms, s, m or h)"))?;
        nanos += value.scaled(scale).ok_or_else(|| err("overflow"))?;
        rest = &unit_rest[unit_len..];
    }
    let nanos = u64::try_from(nanos).map_err(|_| err("overflow"))?;
    Ok(Duration::from_nanos(nanos))
}

/// A decimal number with an optional fraction.
struct Decimal<'a> {
    whole: u128,
    fraction: &'a str,
}

impl Decimal<'_> {
    /// The number times `scale` nanoseconds, fraction truncated like Go.
    fn scaled(&self, scale: u128) -> Option<u128> {
        let mut nanos = self.whole.checked_mul(scale)?;
        let mut divisor: u128 = 1;
        let mut frac: u128 = 0;
        for digit in self.fraction.bytes().take(30) {
            frac = frac * 10 + u128::from(digit - b'0');
            divisor *= 10;
        }
        nanos = nanos.checked_add(frac * scale / divisor)?;
        Some(nanos)
    }
}

/// Splits a leading `123.45` off `text`; `None` when there are no digits.
fn number(text: &str) -> Option<(Decimal<'_>, &str)> {
    let int_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let mut whole: u128 = 0;
    for digit in text[..int_len].bytes() {
        whole = whole
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
    }
    let mut rest = &text[int_len..];
    let mut fraction = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_len = (after_dot.find(|c: char| !c.is_ascii_digit())).unwrap_or(after_dot.len());
        fraction = &after_dot[..frac_len];
        rest = &after_dot[frac_len..];
    }
    if int_len == 0 && fraction.is_empty() {
        return None;
    }
    Some((Decimal { whole, fraction }, rest))
}

/// Go's `Duration.String()`: `"0s"`, `"1.5µs"`, `"500ms"`, `"1m30s"`,
/// `"24h0m0s"`.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (scale, unit) = match nanos {
            n if n < 1_000 => (1, "ns"),
            n if n < 1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{unit}", fixed(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = fixed(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / scale` with the fraction's trailing zeros removed.
fn fixed(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(self.0))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<Duration> for GoDuration {
    fn from(duration: Duration) -> Self {
        Self(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("1s", 1_000_000_000),
            ("+1s", 1_000_000_000),
            ("500ms", 500_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("2h22m", 8_520_000_000_000),
            ("1h0m0s", 3_600_000_000_000),
            ("100us", 100_000),
            ("100µs", 100_000),
            ("3ns", 3),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("24h0m0s", 86_400_000_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse(text), Ok(Duration::from_nanos(nanos)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        for text in ["", "1", "s", "1x", "-1s", "1d", "1s2", ".s", "1..5s"] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
        }
        assert!(parse("-1s").unwrap_err().to_string().contains("negative"));
        assert!(
            parse("1d")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (3, "3ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (900_000_000_000, "15m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (86_400_000_000_000, "24h0m0s"),
        ];
        for (nanos, text) in cases {
            let duration = Duration::from_nanos(nanos);
            assert_eq!(format(duration), text);
            assert_eq!(parse(text), Ok(duration), "round trip {text}");
        }
    }
}
