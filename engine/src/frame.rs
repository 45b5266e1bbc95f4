//! RESP framing: parsing requests and encoding replies (RESP2, and RESP3 after `HELLO 3`).
//!
//! Parsing is resumable: [`parse_request`] returns `Ok(None)` when the buffer does not yet hold
//! a whole request ("read more"), which is never an error. Every length read from the wire is
//! checked against its limit before anything is allocated for it.

use crate::limits::{RESP_ARGS_MAX, RESP_BULK_BYTES_MAX, RESP_INLINE_BYTES_MAX};

/// Longest `*<n>` or `$<n>` header line we accept, without its CRLF.
const HEADER_LINE_BYTES_MAX: usize = 32;

/// A reply value. `Null` and `Map` render differently in RESP2 and RESP3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Simple(std::borrow::Cow<'static, str>),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    NullArray,
    Array(Vec<Frame>),
    Map(Vec<(Frame, Frame)>),
    /// A double, already in Redis's text form: a bulk string in RESP2, `,` in RESP3.
    Double(String),
    /// Pairs such as member and score: one flat array in RESP2, an array of two-element
    /// arrays in RESP3 (ZRANGE … WITHSCORES).
    Pairs(Vec<(Frame, Frame)>),
}

impl Frame {
    pub fn ok() -> Frame {
        Frame::Simple("OK".into())
    }

    /// An error reply; `message` starts with its code, e.g. "ERR syntax error".
    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error(message.into())
    }

    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    pub fn from_option(value: Option<Vec<u8>>) -> Frame {
        value.map_or(Frame::Null, Frame::Bulk)
    }

    /// Appends the wire form of this frame for protocol version `proto` (2 or 3).
    pub fn encode(&self, proto: u8, out: &mut Vec<u8>) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(s) => {
                // An error message must not break the line structure.
                let clean: String = s.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
                line(out, b'-', clean.as_bytes());
            }
            Frame::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Frame::Bulk(bytes) => {
                line(out, b'$', bytes.len().to_string().as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::NullArray if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(proto, out);
                }
            }
            Frame::Map(pairs) | Frame::Pairs(pairs) if proto < 3 => {
                line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Map(pairs) => {
                line(out, b'%', pairs.len().to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Pairs(pairs) => {
                line(out, b'*', pairs.len().to_string().as_bytes());
                for (k, v) in pairs {
                    out.extend_from_slice(b"*2\r\n");
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Double(text) if proto >= 3 => line(out, b',', text.as_bytes()),
            Frame::Double(text) => {
                line(out, b'$', text.len().to_string().as_bytes());
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

fn line(out: &mut Vec<u8>, prefix: u8, body: &[u8]) {
    out.push(prefix);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Input that cannot be a RESP request; the connection is answered and closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// A parsed request: its arguments and how many buffer bytes it used.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Parses one request from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, and `Ok(Some((args, used)))` otherwise;
/// `args` is empty for an empty request (a blank inline line or `*0`), which callers skip.
pub fn parse_request(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf),
        Some(_) => parse_inline(buf),
    }
}

fn parse_multibulk(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let Some((count, mut pos)) = header(buf, 0, b'*', "multibulk length")? else {
        return Ok(None);
    };
    if count <= 0 {
        return Ok(Some((Vec::new(), pos)));
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > RESP_ARGS_MAX {
        return Err(ProtocolError(format!("invalid multibulk length (max {RESP_ARGS_MAX})")));
    }
    let mut args = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let Some(&prefix) = buf.get(pos) else { return Ok(None) };
        if prefix != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                char::from(prefix).escape_default()
            )));
        }
        let Some((len, after)) = header(buf, pos, b'$', "bulk length")? else {
            return Ok(None);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= RESP_BULK_BYTES_MAX)
            .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
        let end = after + len;
        let Some(terminator) = buf.get(end..end + 2) else { return Ok(None) };
        if terminator != b"\r\n" {
            return Err(ProtocolError("bulk string not terminated by CRLF".into()));
        }
        let Some(bytes) = buf.get(after..end) else { return Ok(None) };
        args.push(bytes.to_vec());
        pos = end + 2;
    }
    Ok(Some((args, pos)))
}

/// Reads `<prefix><integer>\r\n` at `at`. `None` means the line is not complete yet.
fn header(buf: &[u8], at: usize, prefix: u8, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    debug_assert_eq!(buf.get(at), Some(&prefix));
    let rest = buf.get(at + 1..).unwrap_or_default();
    let window = rest.get(..rest.len().min(HEADER_LINE_BYTES_MAX + 2)).unwrap_or(rest);
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() > HEADER_LINE_BYTES_MAX {
            return Err(ProtocolError(format!("invalid {what}")));
        }
        return Ok(None);
    };
    match window.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProtocolError(format!("invalid {what}"))),
    }
    let digits = window
        .get(..cr)
        .and_then(|d| std::str::from_utf8(d).ok())
        .ok_or_else(|| ProtocolError(format!("invalid {what}")))?;
    let value: i64 = digits.parse().map_err(|_| ProtocolError(format!("invalid {what}")))?;
    Ok(Some((value, at + 1 + cr + 2)))
}

fn parse_inline(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let Some(newline) = buf.iter().take(RESP_INLINE_BYTES_MAX + 1).position(|&b| b == b'\n') else {
        if buf.len() > RESP_INLINE_BYTES_MAX {
            return Err(ProtocolError("too big inline request".into()));
        }
        return Ok(None);
    };
    let line = buf.get(..newline).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_inline(line)?;
    Ok(Some((args, newline + 1)))
}

/// Splits an inline command line on whitespace, honouring "double" and 'single' quotes.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while line.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let Some(&first) = line.get(i) else { break };
        let mut arg = Vec::new();
        if first == b'"' || first == b'\'' {
            i += 1;
            loop {
                match line.get(i) {
                    None => return Err(ProtocolError("unbalanced quotes in request".into())),
                    Some(&c) if c == first => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if first == b'"' => {
                        if let Some(&next) = line.get(i + 1) {
                            arg.push(match next {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                other => other,
                            });
                        }
                        i += 2;
                    }
                    Some(&c) => {
                        arg.push(c);
                        i += 1;
                    }
                }
            }
            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                return Err(ProtocolError("unbalanced quotes in request".into()));
            }
        } else {
            while let Some(&c) = line.get(i) {
                if c.is_ascii_whitespace() {
                    break;
                }
                arg.push(c);
                i += 1;
            }
        }
        args.push(arg);
    }
    if args.len() > RESP_ARGS_MAX {
        return Err(ProtocolError("too many arguments in inline request".into()));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_whole_and_partial() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(parse_request(req), Ok(Some((args(&["GET", "k"]), req.len()))));
        for cut in 0..req.len() {
            assert_eq!(parse_request(&req[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn inline_with_quotes() {
        assert_eq!(parse_request(b"SET k \"a b\\n\"\r\n"), Ok(Some((args(&["SET", "k", "a b\n"]), 15))));
        assert!(parse_request(b"SET \"k\r\n").is_err());
    }

    #[test]
    fn limits_are_checked_before_allocation() {
        let huge = format!("*1\r\n${}\r\n", RESP_BULK_BYTES_MAX + 1);
        assert_eq!(parse_request(huge.as_bytes()), Err(ProtocolError("invalid bulk length".into())));
        let many = format!("*{}\r\n", RESP_ARGS_MAX + 1);
        assert!(parse_request(many.as_bytes()).is_err());
        assert!(parse_request(b"*1\r\n$-5\r\n").is_err());
        assert!(parse_request(b"*x\r\n").is_err());
        assert!(parse_request(b"*1\r\n:5\r\n").is_err());
        assert!(parse_request(b"*1\r\n$1\r\nab\r\n").is_err());
        let long_header = format!("*{}", "1".repeat(64));
        assert!(parse_request(long_header.as_bytes()).is_err());
    }

    #[test]
    fn encodes_resp2_and_resp3() {
        let mut out = Vec::new();
        Frame::Null.encode(2, &mut out);
        Frame::Null.encode(3, &mut out);
        Frame::Map(vec![(Frame::bulk("a"), Frame::Integer(1))]).encode(2, &mut out);
        Frame::Map(vec![(Frame::bulk("a"), Frame::Integer(1))]).encode(3, &mut out);
        Frame::error("ERR bad\r\nthing").encode(2, &mut out);
        assert_eq!(out, b"$-1\r\n_\r\n*2\r\n$1\r\na\r\n:1\r\n%1\r\n$1\r\na\r\n:1\r\n-ERR bad  thing\r\n");
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_request(&bytes);
        }

        #[test]
        fn roundtrips_any_args(a in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let mut req = format!("*{}\r\n", a.len()).into_bytes();
            for arg in &a {
                req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                req.extend_from_slice(arg);
                req.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(parse_request(&req), Ok(Some((a, req.len()))));
        }
    }
}
