//! A validating JSON scanner for one object, returning its top-level fields
//! as raw text.
//!
//! Every client message is checked for being well-formed JSON before it is
//! forwarded, and that check is the router's largest per-message cost.
//! serde_json's generic path (deserialize the envelope, skip the rest) spent
//! most of its time in visitor machinery; this scanner walks the bytes once,
//! checks the full grammar of RFC 8259 (strings with their escapes and
//! surrogate pairs, numbers, literals, nesting up to [`MAX_DEPTH`]), and
//! hands back each top-level `(key, value)` as the exact source text.
//! Like serde_json it refuses numbers beyond an f64's range.
//! The unit tests check it against serde_json on valid and broken inputs.

use std::fmt;
use std::ops::Range;

/// Deepest nesting accepted, as serde_json's default recursion limit.
pub const MAX_DEPTH: usize = 128;

/// Why the text is not one well-formed JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

/// Scans `text`, which must be exactly one JSON object (whitespace around
/// it allowed), calling `field(key, value)` for each top-level member with
/// their raw source text (`key` with its quotes).
pub fn scan_object<'a>(
    text: &'a str,
    mut field: impl FnMut(&'a str, &'a str) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.skip_ws();
    if s.peek() != Some(b'{') {
        return Err(s.err("expected a JSON object"));
    }
    s.members(1, |key, value| field(&text[key], &text[value]))?;
    s.skip_ws();
    if s.i != s.b.len() {
        return Err(s.err("trailing characters after the object"));
    }
    Ok(())
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }

    fn err(&self, what: &'static str) -> ScanError {
        ScanError {
            offset: self.i.min(self.b.len()),
            what,
        }
    }

    fn err_before(&self, what: &'static str) -> ScanError {
        ScanError {
            offset: self.i.saturating_sub(1).min(self.b.len()),
            what,
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), ScanError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.members(depth, |_, _| Ok(()))
    }

    /// The members of the object whose `{` is at the cursor, through its
    /// `}`; `member(key, value)` gets each one's byte ranges (the key with
    /// its quotes). Values nested inside are at `depth`.
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(Range<usize>, Range<usize>) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            let key_start = self.i;
            self.string()?;
            let key = key_start..self.i;
            self.skip_ws();
            self.expect(b':', "expected ':'")?;
            self.skip_ws();
            let value_start = self.i;
            self.value(depth)?;
            member(key, value_start..self.i)?;
            self.skip_ws();
            match self.next() {
                Some(b',') => {}
                Some(b'}') => return Ok(()),
                _ => return Err(self.err_before("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.i += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            self.value(depth)?;
            self.skip_ws();
            match self.next() {
                Some(b',') => {}
                Some(b']') => return Ok(()),
                _ => return Err(self.err_before("expected ',' or ']'")),
            }
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), ScanError> {
        let start = self.i;
        self.number_syntax()?;
        // RFC 8259 allows any magnitude, but a number beyond f64 (1e400)
        // fails in serde_json and most sinks' parsers: refuse it here.
        // Only an exponent or a very long mantissa can get there.
        let text = &self.b[start..self.i];
        let may_overflow = text.len() > 300 || text.iter().any(|&c| c == b'e' || c == b'E');
        if may_overflow {
            let value: f64 = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(f64::INFINITY);
            if value.is_infinite() {
                return Err(ScanError {
                    offset: start,
                    what: "number out of range",
                });
            }
        }
        Ok(())
    }

    fn number_syntax(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(())
    }

    /// A string, from its opening quote to past its closing one. The input
    /// is a `&str`, so its bytes are valid UTF-8 already.
    fn string(&mut self) -> Result<(), ScanError> {
        self.expect(b'"', "expected a string")?;
        loop {
            self.skip_plain();
            match self.next() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.err_before("control character in a string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    /// Skips plain string characters: everything but `"`, `\\` and control
    /// characters. Eight bytes at a time while none of them is special,
    /// since strings are most of a message's bytes.
    fn skip_plain(&mut self) {
        let (b, mut i) = (self.b, self.i);
        while let Some(chunk) = b.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            if has_special_byte(word) {
                break;
            }
            i += 8;
        }
        while let Some(&c) = b.get(i) {
            if is_special(c) {
                break;
            }
            i += 1;
        }
        self.i = i;
    }

    fn escape(&mut self) -> Result<(), ScanError> {
        match self.next() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(()),
            Some(b'u') => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by a low one.
                        if !self.b[self.i..].starts_with(b"\\u") {
                            return Err(self.err("lone surrogate in a string"));
                        }
                        self.i += 2;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(self.err("lone surrogate in a string")),
                        }
                    }
                    0xDC00..=0xDFFF => Err(self.err("lone surrogate in a string")),
                    _ => Ok(()),
                }
            }
            _ => Err(self.err_before("invalid escape in a string")),
        }
    }

    fn hex4(&mut self) -> Result<u16, ScanError> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("invalid \\u escape"))?;
        let mut unit = 0u16;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            unit = unit * 16 + v as u16;
        }
        self.i += 4;
        Ok(unit)
    }
}

fn is_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

/// Whether any byte of `word` is `"`, `\\` or below 0x20, by the classic
/// SWAR tests ("has a zero byte" after xor, "has a byte less than n"):
/// exact for the question "any?", which is all that is asked.
fn has_special_byte(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let less_than = |v: u64, n: u8| v.wrapping_sub(ONES * n as u64) & !v & HIGH;
    let quote = less_than(word ^ (ONES * b'"' as u64), 1);
    let backslash = less_than(word ^ (ONES * b'\\' as u64), 1);
    let control = less_than(word, 0x20);
    (quote | backslash | control) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Result<Vec<(String, String)>, ScanError> {
        let mut out = Vec::new();
        scan_object(text, |k, v| {
            out.push((k.to_string(), v.to_string()));
            Ok(())
        })?;
        Ok(out)
    }

    /// serde_json's verdict: is `text` one well-formed JSON object?
    fn serde_says_object(text: &str) -> bool {
        matches!(
            serde_json::from_str::<serde_json::Value>(text),
            Ok(serde_json::Value::Object(_))
        )
    }

    #[test]
    fn returns_raw_top_level_fields() {
        let got = fields(r#" { "a" : 1 , "b\"":{"x":[1,2,{}]}, "c":"s\n" } "#).unwrap();
        assert_eq!(
            got,
            [
                ("\"a\"".into(), "1".into()),
                ("\"b\\\"\"".into(), r#"{"x":[1,2,{}]}"#.into()),
                ("\"c\"".into(), r#""s\n""#.into()),
            ]
        );
        assert_eq!(fields("{}").unwrap(), []);
    }

    #[test]
    fn agrees_with_serde_json() {
        let cases = [
            r#"{"a":1}"#,
            r#"{"a":-0.5e+10,"b":true,"c":false,"d":null,"e":[],"f":{}}"#,
            r#"{"a":"\u00e9\ud83d\ude00\/\b\f\n\r\t"}"#,
            r#"{"a":"é ✓ 😀"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e400}"#,
            r#"{"a":1e308}"#,
            r#"{"a":1e-400}"#,
            r#"{"a":123456789012345678901234567890}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a" 1}"#,
            r#"{"a":1"b":2}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":1}}"#,
            r#"{"a":1} x"#,
            r#"{"a":"unterminated}"#,
            r#"{a:1}"#,
            "[1]",
            "\"s\"",
            "1",
            "",
            "{",
            " {\"a\" : [ { } , [ ] ] } \n",
        ];
        for text in cases {
            assert_eq!(fields(text).is_ok(), serde_says_object(text), "{text:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(fields(&ok).is_ok());
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(fields(&deep).unwrap_err().what, "nested too deeply");
        let hostile = format!("{{\"a\":{}", "[".repeat(1_000_000));
        assert!(fields(&hostile).is_err());
    }

    #[test]
    fn swar_test_matches_the_byte_test() {
        let samples = [
            b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']',
        ];
        for &x in &samples {
            for pos in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[pos] = x;
                let word = u64::from_le_bytes(bytes);
                assert_eq!(has_special_byte(word), is_special(x), "{x:#x} at {pos}");
            }
        }
    }

    #[test]
    fn errors_say_where() {
        let err = fields(r#"{"a":1 x}"#).unwrap_err();
        assert_eq!(err.to_string(), "expected ',' or '}' at byte 7");
    }
}
