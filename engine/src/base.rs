//! The smallest pieces every layer uses: error chains, hex, and a constant-time compare.
//! Nothing here imports from the rest of the engine.

/// Renders an error and its sources as one line: "a: b: c".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

const HEX_DIGITS: [u8; 16] = *b"0123456789abcdef";

/// The two lower-case hex digits of a byte.
fn hex_pair(b: u8) -> [u8; 2] {
    let digit = |n: u8| HEX_DIGITS.get(usize::from(n)).copied().unwrap_or(b'0');
    [digit(b >> 4), digit(b & 0x0f)]
}

/// Lower-case hex of any bytes (keys and values in JSON, digests on the wire).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&b| hex_pair(b)).map(char::from).collect()
}

/// [`hex`] appended to a buffer.
pub fn hex_to(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.extend_from_slice(&hex_pair(b));
    }
}

/// Compares secrets without an early exit that would leak how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A double as Redis 7.0 writes it (`d2string`): `inf`, `-inf`, `nan`, integers without a
/// fraction, anything else as C's `%.17g`.
pub fn format_double(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    if x.fract() == 0.0 && x.abs() < 4.611_686_018_427_388e18 {
        return format!("{}", x as i64);
    }
    format_g(x, 17)
}

/// C's `%.{precision}g`.
pub fn format_g(x: f64, precision: usize) -> String {
    let p = precision.max(1);
    let sci = format!("{:.*e}", p - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let p_i = i64::try_from(p).unwrap_or(17);
    if exp < -4 || exp >= p_i {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = usize::try_from(p_i - 1 - exp).unwrap_or(0);
        trim_fraction(&format!("{x:.decimals$}")).to_owned()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
        assert_eq!(hex(&[]), "");
        let mut out = b"x".to_vec();
        hex_to(&mut out, &all);
        assert_eq!(out, format!("x{expected}").into_bytes());
    }

    #[test]
    fn doubles_print_as_redis_prints_them() {
        for (x, want) in [
            (1.5, "1.5"),
            (3.0, "3"),
            (-0.0, "-0"),
            (0.1, "0.10000000000000001"),
            (1e20, "1e+20"),
            (1.5e-7, "1.4999999999999999e-07"),
            (f64::INFINITY, "inf"),
            (123456.789, "123456.789"),
        ] {
            assert_eq!(format_double(x), want, "{x}");
        }
    }
}
