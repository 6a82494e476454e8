//! RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! Bodies are serialised once, at append, with [`to_canonical`] and stored as those
//! exact bytes; the audit Merkle leaves hash them. authlog's events carry no
//! fractional numbers, so the one part of JCS that needs the ECMAScript number
//! printer is refused rather than approximated: integers up to 2^53 are written as
//! JCS writes them, anything else is an error.

use std::fmt::Write;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalError {
    /// A number JCS would print through the ECMAScript double formatter.
    UnsupportedNumber(String),
}

impl std::fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CanonicalError::UnsupportedNumber(n) => write!(
                f,
                "canonical JSON: {n} is not an integer in the range ±2^53; authlog event bodies carry integers only"
            ),
        }
    }
}

impl std::error::Error for CanonicalError {}

const MAX_SAFE: u64 = (1 << 53) - 1;

/// Writes `value` as RFC 8785 canonical JSON.
pub fn to_canonical(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = String::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out.into_bytes())
}

fn write_value(value: &Value, out: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE {
                    return Err(CanonicalError::UnsupportedNumber(n.to_string()));
                }
                let _ = write!(out, "{u}");
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE {
                    return Err(CanonicalError::UnsupportedNumber(n.to_string()));
                }
                let _ = write!(out, "{i}");
            } else {
                // A float: JCS prints integral doubles without a fraction ("1.0" -> "1").
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_SAFE as f64 {
                    let _ = write!(out, "{}", f as i64);
                } else {
                    return Err(CanonicalError::UnsupportedNumber(n.to_string()));
                }
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Members sorted by the UTF-16 code units of their names (RFC 8785 §3.2.3).
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{9}' => out.push_str("\\t"),
            '\u{a}' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\u{d}' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_canonical(v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_members_by_utf16_code_units() {
        // RFC 8785 §3.2.3's sorting example.
        let v = json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{80}": "Control",
            "\u{f6}": "Latin Small Letter O With Diaeresis"
        });
        let keys: Vec<String> = canon(&v)
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|m| m.split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            vec![
                "\"\\r\"",
                "\"1\"",
                "\"\u{80}\"",
                "\"\u{f6}\"",
                "\"\u{20ac}\"",
                "\"\u{1f600}\"",
                "\"\u{fb33}\""
            ]
        );
    }

    #[test]
    fn escapes_like_jcs() {
        let v = json!({"s": "a\"b\\c\u{1}\n\u{2028}é", "n": null, "t": true, "a": [1, -2, 3.0]});
        assert_eq!(
            canon(&v),
            "{\"a\":[1,-2,3],\"n\":null,\"s\":\"a\\\"b\\\\c\\u0001\\n\u{2028}é\",\"t\":true}"
        );
    }

    #[test]
    fn refuses_numbers_that_need_the_double_printer() {
        assert!(to_canonical(&json!(1.5)).is_err());
        assert!(to_canonical(&json!(u64::MAX)).is_err());
        assert!(to_canonical(&json!(9_007_199_254_740_991u64)).is_ok());
    }

    #[test]
    fn is_stable_under_reparse() {
        let v = json!({"b": {"y": 1, "x": [true, {"q": "é", "p": 2}]}, "a": ""});
        let once = to_canonical(&v).unwrap();
        let again = to_canonical(&serde_json::from_slice(&once).unwrap()).unwrap();
        assert_eq!(once, again);
    }
}
