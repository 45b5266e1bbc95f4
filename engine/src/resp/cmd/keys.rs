//! Key-space commands: SCAN (with MATCH and COUNT) and the Redis glob matcher.
//!
//! Keys are kept in byte order, so a SCAN cursor is simply "the last key returned". Redis
//! clients expect cursors to be integers, so each connection maps small integer cursors to
//! the key they stand for (see `Connection`). A key present for the whole scan is returned
//! exactly once; keys are returned in order.

use super::{Args, Command};
use crate::frame::Frame;
use crate::limits::SCAN_COUNT_MAX;

const SCAN_COUNT_DEFAULT: usize = 10;

pub fn parse_scan(a: &mut Args) -> Result<Command, Frame> {
    let cursor_bytes = a.next_arg()?;
    let cursor = std::str::from_utf8(&cursor_bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Frame::error("ERR invalid cursor"))?;
    let (mut pattern, mut count) = (None, SCAN_COUNT_DEFAULT);
    while let Some(option) = a.optional() {
        match option.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(a.next_arg()?),
            b"COUNT" => {
                let n = a.integer()?;
                count = usize::try_from(n).ok().filter(|n| (1..=SCAN_COUNT_MAX).contains(n)).ok_or_else(
                    || Frame::error(format!("ERR COUNT must be between 1 and {SCAN_COUNT_MAX}")),
                )?;
            }
            b"TYPE" => {
                // Every Strand value is a string; any other type matches nothing.
                let kind = a.next_arg()?;
                if !kind.eq_ignore_ascii_case(b"string") {
                    pattern = Some(b"\x00strand-no-match\x00".to_vec());
                }
            }
            _ => return Err(Frame::error("ERR syntax error")),
        }
    }
    Ok(Command::Scan { cursor, pattern, count })
}

/// Redis glob matching: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, and `\` escapes.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, text index it matched to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, text.get(t).copied().unwrap_or(0)),
            Some(b'\\') if p + 1 < pattern.len() => (pattern.get(p + 1) == text.get(t)).then_some(p + 2),
            Some(&c) => (Some(&c) == text.get(t)).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern.get(p..).unwrap_or_default().iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`; returns the index after
/// the class on a match.
fn match_class(pattern: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(i) {
            None => return None, // unterminated class matches nothing
            Some(b']') => break,
            Some(b'\\') => {
                if pattern.get(i + 1) == Some(&c) {
                    matched = true;
                }
                i += 2;
            }
            Some(&lo)
                if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') =>
            {
                let hi = pattern.get(i + 2).copied().unwrap_or(lo);
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                if (lo..=hi).contains(&c) {
                    matched = true;
                }
                i += 3;
            }
            Some(&x) => {
                if x == c {
                    matched = true;
                }
                i += 1;
            }
        }
    }
    (matched != negate).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:1", true),
            ("user:*", "usr:1", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("h*o*x", "hellox", true),
            ("h*o*x", "hellx", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("[", "[", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), *want, "{p} vs {t}");
        }
    }
}
