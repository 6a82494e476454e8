//! Usernames: RFC 8265 UsernameCasePreserved over RFC 8264's IdentifierClass,
//! plus a mixed-script rule, so that names a person cannot tell apart cannot
//! both exist.
//!
//! * Width mapping: fullwidth and halfwidth forms become their ordinary
//!   forms (`ａｌｉｃｅ` is `alice`), then NFC.
//! * IdentifierClass (RFC 8264 §4.2): ASCII printable characters, letters,
//!   digits and combining marks; no spaces, controls, symbols or punctuation
//!   outside ASCII, and no character with a compatibility decomposition
//!   ("HasCompat": `𝐚`, `ⓐ`, `ﬁ`, `Ⅳ`, `²` — each would look like, or
//!   NFKC-fold into, another name).
//! * One script, or one of the combinations people write (Latin with Han,
//!   Hiragana and Katakana; Latin with Han and Bopomofo; Latin with Han and
//!   Hangul), as UTS #39's "highly restrictive" level: `аlice` with a
//!   Cyrillic `а` is refused. Digits and ASCII punctuation belong to every
//!   script.
//!
//! Uniqueness compares the lower-cased form (`username-{lower-cased}`).

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_script::{Script, UnicodeScript};

/// Why a username is refused, for people.
pub type Refusal = &'static str;

fn width_map(c: char) -> char {
    let cp = c as u32;
    if (0xFF01..=0xFF5E).contains(&cp)
        || (0xFF61..=0xFFDC).contains(&cp)
        || (0xFFE0..=0xFFEE).contains(&cp)
    {
        let mut n = c.nfkc();
        match (n.next(), n.next()) {
            (Some(one), None) => one,
            _ => c,
        }
    } else {
        c
    }
}

/// IdentifierClass's letters, digits and marks (LetterDigits, RFC 8264 §9.1).
fn letter_digit(c: char) -> bool {
    use GeneralCategory::*;
    matches!(
        c.general_category(),
        LowercaseLetter
            | UppercaseLetter
            | OtherLetter
            | DecimalNumber
            | ModifierLetter
            | NonspacingMark
            | SpacingMark
    )
}

fn has_compat(c: char) -> bool {
    let mut n = c.nfkc();
    !(n.next() == Some(c) && n.next().is_none())
}

/// Prepares `input` for storage and comparison, or says why it is refused.
pub fn prepare(input: &str) -> Result<String, Refusal> {
    let mapped: String = input.trim().chars().map(width_map).collect();
    let name: String = mapped.nfc().collect();
    let n = name.chars().count();
    if n == 0 || n > 64 {
        return Err("usernames are 1 to 64 characters");
    }
    for c in name.chars() {
        if c.is_whitespace() || c.is_control() {
            return Err("usernames cannot contain spaces or control characters");
        }
        if c.is_ascii() {
            continue;
        }
        if has_compat(c) {
            return Err(
                "usernames cannot contain styled or compatibility characters (such as 𝐚, ⓐ, ﬁ, Ⅳ or ²): type the plain letters",
            );
        }
        if !letter_digit(c) {
            return Err("usernames can hold letters, digits and ASCII punctuation only");
        }
    }
    if mixed_scripts(&name) {
        return Err(
            "usernames cannot mix alphabets (such as Latin and Cyrillic letters that look alike)",
        );
    }
    Ok(name)
}

/// Whether `name` mixes scripts beyond what UTS #39's highly restrictive
/// level allows.
fn mixed_scripts(name: &str) -> bool {
    let mut scripts: Vec<Script> = Vec::new();
    for c in name.chars() {
        let s = c.script();
        // Common and Inherited (digits, punctuation, combining marks) go with any.
        if matches!(s, Script::Common | Script::Inherited | Script::Unknown) {
            continue;
        }
        if !scripts.contains(&s) {
            scripts.push(s);
        }
    }
    if scripts.len() <= 1 {
        return false;
    }
    let allowed: [&[Script]; 3] = [
        &[
            Script::Latin,
            Script::Han,
            Script::Hiragana,
            Script::Katakana,
        ],
        &[Script::Latin, Script::Han, Script::Bopomofo],
        &[Script::Latin, Script::Han, Script::Hangul],
    ];
    !allowed
        .iter()
        .any(|set| scripts.iter().all(|s| set.contains(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_width_maps() {
        assert_eq!(prepare("  Alice ").unwrap(), "Alice");
        assert_eq!(prepare("ａｌｉｃｅ").unwrap(), "alice");
        assert_eq!(prepare("josé").unwrap(), "josé");
        assert_eq!(prepare("jose\u{301}").unwrap(), "josé", "NFC");
        assert!(
            prepare("\"><img/src=x/onerror=alert(1)>").is_ok(),
            "ASCII punctuation"
        );
        assert!(prepare("Ярослав").is_ok(), "one script");
        assert!(prepare("田中たろう").is_ok(), "Han with Hiragana");
        assert!(prepare("kim민수").is_ok(), "Latin with Hangul");
        assert!(prepare("user_42.ops-team").is_ok());
    }

    #[test]
    fn names_equal_under_nfkc_are_refused() {
        for name in ["𝐚𝐥𝐢𝐜𝐞", "ⓐⓛⓘⓒⓔ", "ﬁnance", "userⅣ", "x²", "ａｌｉｃｅ²"]
        {
            assert!(prepare(name).is_err(), "{name} accepted");
        }
    }

    #[test]
    fn mixed_scripts_are_refused() {
        // A Cyrillic а before Latin "lice".
        assert!(prepare("\u{430}lice").is_err());
        assert!(prepare("pаypal").is_err(), "a Cyrillic а inside");
        assert!(prepare("ΑΒCD").is_err(), "Greek and Latin");
    }

    #[test]
    fn spaces_controls_symbols_and_invisibles_are_refused() {
        for name in [
            "a b",
            "a\tb",
            "a\u{200b}b",
            "a\u{202e}b",
            "a\u{ad}b",
            "a€",
            "a♥",
            "a—b",
            "",
            "x".repeat(65).as_str(),
        ] {
            assert!(prepare(name).is_err(), "{name:?} accepted");
        }
    }
}
