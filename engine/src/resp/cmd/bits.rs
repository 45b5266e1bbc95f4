//! The bit commands on strings: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP and BITFIELD. A
//! string is one node (its head), so each reads or rewrites that one value; bits are numbered
//! from the most significant bit of the first byte, as in Redis.

use super::db::{Db, cmd_err};
use super::{Args, K1, R, RF, Spec, W, data, parse_integer};
use crate::frame::Frame;
use crate::storage::node::Kind;
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[
    data("setbit", 4, W, K1, setbit),
    data("getbit", 3, RF, K1, getbit),
    data("bitcount", -2, R, K1, bitcount),
    data("bitpos", -3, R, K1, bitpos),
    data("bitop", -4, W, (2, -1, 1), bitop),
    data("bitfield", -2, W, K1, bitfield),
    data("bitfield_ro", -2, RF, K1, bitfield_ro),
];

fn bit_offset(a: &mut Args) -> Result<u64, Abort> {
    let n = a.integer_or("ERR bit offset is not an integer or out of range")?;
    u64::try_from(n)
        .ok()
        .filter(|n| *n < 1 << 32)
        .ok_or_else(|| cmd_err("ERR bit offset is not an integer or out of range"))
}

fn setbit(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let offset = bit_offset(a)?;
    let bit = match a.next_arg()?.as_slice() {
        b"0" => 0u8,
        b"1" => 1u8,
        _ => return Err(cmd_err("ERR bit is not an integer or out of range")),
    };
    let byte = usize::try_from(offset / 8).unwrap_or(usize::MAX);
    super::check_value_len(byte.saturating_add(1))?;
    let mut value = db.get_string(&key)?.unwrap_or_default();
    if value.len() <= byte {
        value.resize(byte + 1, 0);
    }
    let mask = 0x80u8 >> (offset % 8);
    let old = value.get(byte).map_or(0, |b| u8::from(b & mask != 0));
    if let Some(b) = value.get_mut(byte) {
        if bit == 1 { *b |= mask } else { *b &= !mask }
    }
    db.set_string(&key, &value, 0, true)?;
    Ok(Frame::Integer(i64::from(old)))
}

fn getbit(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let offset = bit_offset(a)?;
    let value = db.get_string(&key)?.unwrap_or_default();
    let byte = usize::try_from(offset / 8).unwrap_or(usize::MAX);
    let bit = value.get(byte).map_or(0, |b| u8::from(b & (0x80u8 >> (offset % 8)) != 0));
    Ok(Frame::Integer(i64::from(bit)))
}

/// `[start end [BYTE|BIT]]` as a bit range over a string of `len` bytes: (first, last) bit,
/// or `None` when empty.
fn bit_range(a: &mut Args, len: usize, need_end: bool) -> Result<Option<(u64, u64)>, Abort> {
    let bits_total = (len as u64) * 8;
    let Some(start) = a.optional() else {
        return Ok((len > 0).then(|| (0, bits_total - 1)));
    };
    let start =
        parse_integer(&start).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?;
    let end = match a.optional() {
        Some(e) => {
            Some(parse_integer(&e).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?)
        }
        None if need_end => return Err(cmd_err("ERR syntax error")),
        None => None,
    };
    let unit_bits = match a.option().as_deref() {
        None | Some(b"BYTE") => false,
        Some(b"BIT") => true,
        Some(_) => return Err(cmd_err("ERR syntax error")),
    };
    a.finish()?;
    let total = i64::try_from(if unit_bits { bits_total } else { len as u64 }).unwrap_or(i64::MAX);
    let end = end.unwrap_or(total - 1);
    if start < 0 && end < 0 && start > end {
        return Ok(None); // as Redis 7.0: empty before the negative indexes are clamped
    }
    let norm = |x: i64| if x < 0 { (total + x).max(0) } else { x };
    let (s, e) = (norm(start), norm(end).min(total - 1));
    if total == 0 || s > e {
        return Ok(None);
    }
    let (s, e) = (s.unsigned_abs(), e.unsigned_abs());
    Ok(Some(if unit_bits { (s, e) } else { (s * 8, e * 8 + 7) }))
}

fn bit_at(value: &[u8], i: u64) -> bool {
    value.get(usize::try_from(i / 8).unwrap_or(usize::MAX)).is_some_and(|b| b & (0x80u8 >> (i % 8)) != 0)
}

fn bitcount(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let value = db.get_string(&key)?.unwrap_or_default();
    let n = match bit_range(a, value.len(), true)? {
        None => 0,
        Some((s, e)) => (s..=e).filter(|&i| bit_at(&value, i)).count(),
    };
    Ok(Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn bitpos(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let want = match a.next_arg()?.as_slice() {
        b"0" => false,
        b"1" => true,
        _ => return Err(cmd_err("ERR The bit argument must be 1 or 0.")),
    };
    let explicit_end = a.remaining() >= 2;
    let Some(head) = db.typed(&key, Kind::String)? else {
        return Ok(Frame::Integer(if want { -1 } else { 0 }));
    };
    let value = head.value;
    let Some((s, e)) = bit_range(a, value.len(), false)? else { return Ok(Frame::Integer(-1)) };
    match (s..=e).find(|&i| bit_at(&value, i) == want) {
        Some(i) => Ok(Frame::Integer(i64::try_from(i).unwrap_or(i64::MAX))),
        // Looking for a clear bit without an explicit end: the string is taken as padded
        // with zeros on the right, as Redis does.
        None if !want && !explicit_end => Ok(Frame::Integer(i64::try_from(e + 1).unwrap_or(i64::MAX))),
        None => Ok(Frame::Integer(-1)),
    }
}

/// BITOP AND|OR|XOR|NOT destkey key [key …]: the result's length, the longest input's (a
/// missing key is an empty string); an empty result deletes destkey.
fn bitop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let op = a.next_arg()?.to_ascii_uppercase();
    let dest = a.next_arg()?;
    let keys = a.rest();
    if !matches!(op.as_slice(), b"AND" | b"OR" | b"XOR" | b"NOT") {
        return Err(cmd_err("ERR syntax error"));
    }
    if op == b"NOT" && keys.len() != 1 {
        return Err(cmd_err("ERR BITOP NOT must be called with a single source key."));
    }
    let mut values = Vec::with_capacity(keys.len());
    for k in &keys {
        values.push(db.get_string(k)?.unwrap_or_default());
    }
    let len = values.iter().map(Vec::len).max().unwrap_or(0);
    let byte = |v: &Vec<u8>, i: usize| v.get(i).copied().unwrap_or(0);
    let result: Vec<u8> = (0..len)
        .map(|i| {
            let mut it = values.iter().map(|v| byte(v, i));
            let first = it.next().unwrap_or(0);
            match op.as_slice() {
                b"AND" => it.fold(first, |acc, b| acc & b),
                b"OR" => it.fold(first, |acc, b| acc | b),
                b"XOR" => it.fold(first, |acc, b| acc ^ b),
                _ => !first,
            }
        })
        .collect();
    if result.is_empty() {
        db.delete(&dest)?;
    } else {
        db.set_string(&dest, &result, 0, false)?;
    }
    Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)))
}

/// A BITFIELD type: signedness and width.
#[derive(Debug, Clone, Copy)]
struct Field {
    signed: bool,
    bits: u32,
}

fn parse_field(bytes: &[u8]) -> Result<Field, Abort> {
    let err = || {
        cmd_err(
            "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
        )
    };
    let (signed, digits) = match bytes.split_first() {
        Some((b'i' | b'I', d)) => (true, d),
        Some((b'u' | b'U', d)) => (false, d),
        _ => return Err(err()),
    };
    let bits: u32 = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or_else(err)?;
    if bits == 0 || bits > 64 || (!signed && bits == 64) {
        return Err(err());
    }
    Ok(Field { signed, bits })
}

/// A BITFIELD offset: `N`, or `#N` (N times the field's width).
fn parse_field_offset(bytes: &[u8], field: Field) -> Result<u64, Abort> {
    let err = || cmd_err("ERR bit offset is not an integer or out of range");
    let (times, digits) = match bytes.split_first() {
        Some((b'#', d)) => (u64::from(field.bits), d),
        _ => (1, bytes),
    };
    let n = parse_integer(digits).and_then(|n| u64::try_from(n).ok()).ok_or_else(err)?;
    let offset = n.checked_mul(times).ok_or_else(err)?;
    let limit = (crate::limits::VALUE_BYTES_MAX as u64) * 8;
    if offset.checked_add(u64::from(field.bits)).is_none_or(|end| end > limit) {
        return Err(err());
    }
    Ok(offset)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Debug)]
enum FieldOp {
    Get(Field, u64),
    Set(Field, u64, i64, Overflow),
    Incr(Field, u64, i64, Overflow),
}

fn get_bits(value: &[u8], offset: u64, bits: u32) -> u64 {
    (0..u64::from(bits)).fold(0u64, |acc, i| (acc << 1) | u64::from(bit_at(value, offset + i)))
}

fn set_bits(value: &mut [u8], offset: u64, bits: u32, x: u64) {
    for i in 0..u64::from(bits) {
        let bit = (x >> (u64::from(bits) - 1 - i)) & 1;
        let at = offset + i;
        if let Some(b) = value.get_mut(usize::try_from(at / 8).unwrap_or(usize::MAX)) {
            let mask = 0x80u8 >> (at % 8);
            if bit == 1 { *b |= mask } else { *b &= !mask }
        }
    }
}

/// A field's value as a signed or unsigned number (sign-extended), in an i128 so both fit.
fn read_field(value: &[u8], offset: u64, f: Field) -> i128 {
    let raw = get_bits(value, offset, f.bits);
    if f.signed && f.bits < 64 && raw & (1 << (f.bits - 1)) != 0 {
        i128::from(raw) - (1i128 << f.bits)
    } else if f.signed {
        i128::from(raw as i64)
    } else {
        i128::from(raw)
    }
}

/// `value + incr` stored in field `f` under `overflow`: the stored number, or `None` when
/// FAIL refuses it. Arithmetic in i128 has room for every sum of an i64 and a 64-bit field.
fn fit(f: Field, value: i128, incr: i128, overflow: Overflow) -> Option<i128> {
    let (min, max) = if f.signed {
        (-(1i128 << (f.bits - 1)), (1i128 << (f.bits - 1)) - 1)
    } else {
        (0, (1i128 << f.bits) - 1)
    };
    let sum = value + incr;
    if (min..=max).contains(&sum) {
        return Some(sum);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if sum > max { max } else { min }),
        Overflow::Wrap => {
            let span = 1i128 << f.bits;
            let wrapped = sum.rem_euclid(span);
            Some(if f.signed && wrapped > max { wrapped - span } else { wrapped })
        }
    }
}

fn parse_field_ops(a: &mut Args, read_only: bool) -> Result<Vec<FieldOp>, Abort> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    while let Some(word) = a.optional() {
        let word = word.to_ascii_uppercase();
        if read_only && word != b"GET" {
            return Err(cmd_err("ERR BITFIELD_RO only supports the GET subcommand"));
        }
        match word.as_slice() {
            b"GET" => {
                let f = parse_field(&a.next_arg()?)?;
                ops.push(FieldOp::Get(f, parse_field_offset(&a.next_arg()?, f)?));
            }
            b"SET" | b"INCRBY" => {
                let f = parse_field(&a.next_arg()?)?;
                let offset = parse_field_offset(&a.next_arg()?, f)?;
                let n = parse_integer(&a.next_arg()?)
                    .ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?;
                ops.push(if word == b"SET" {
                    FieldOp::Set(f, offset, n, overflow)
                } else {
                    FieldOp::Incr(f, offset, n, overflow)
                });
            }
            b"OVERFLOW" => {
                overflow = match a.next_arg()?.to_ascii_uppercase().as_slice() {
                    b"WRAP" => Overflow::Wrap,
                    b"SAT" => Overflow::Sat,
                    b"FAIL" => Overflow::Fail,
                    _ => return Err(cmd_err("ERR Invalid OVERFLOW type specified")),
                };
            }
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    Ok(ops)
}

/// Runs parsed BITFIELD operations on `value` in order: one reply each.
fn run_field_ops(value: &mut [u8], ops: &[FieldOp]) -> Vec<Frame> {
    let int = |x: i128| Frame::Integer(i64::try_from(x).unwrap_or(i64::MAX));
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match *op {
            FieldOp::Get(f, offset) => out.push(int(read_field(value, offset, f))),
            FieldOp::Set(f, offset, n, overflow) => {
                let old = read_field(value, offset, f);
                // Redis takes an unsigned field's new value as the u64 of its argument.
                let new = if f.signed { i128::from(n) } else { i128::from(n as u64) };
                match fit(f, new, 0, overflow) {
                    Some(x) => {
                        set_bits(value, offset, f.bits, x as u64);
                        out.push(int(old));
                    }
                    None => out.push(Frame::Null),
                }
            }
            FieldOp::Incr(f, offset, n, overflow) => {
                let old = read_field(value, offset, f);
                match fit(f, old, i128::from(n), overflow) {
                    Some(x) => {
                        set_bits(value, offset, f.bits, x as u64);
                        out.push(int(x));
                    }
                    None => out.push(Frame::Null),
                }
            }
        }
    }
    out
}

/// BITFIELD key [GET type offset] [SET type offset value] [INCRBY type offset increment]
/// [OVERFLOW WRAP|SAT|FAIL] …
fn bitfield(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let ops = parse_field_ops(a, false)?;
    let writes = ops.iter().any(|op| !matches!(op, FieldOp::Get(..)));
    if !writes {
        let mut value = db.get_string(&key)?.unwrap_or_default();
        return Ok(Frame::Array(run_field_ops(&mut value, &ops)));
    }
    // The string grows to hold the highest field written, as Redis's does, before any runs.
    let end = ops
        .iter()
        .filter_map(|op| match op {
            FieldOp::Set(f, o, ..) | FieldOp::Incr(f, o, ..) => Some(o + u64::from(f.bits)),
            FieldOp::Get(..) => None,
        })
        .max()
        .unwrap_or(0);
    let bytes = usize::try_from(end.div_ceil(8)).unwrap_or(usize::MAX);
    super::check_value_len(bytes)?;
    let mut value = db.get_string(&key)?.unwrap_or_default();
    if value.len() < bytes {
        value.resize(bytes, 0);
    }
    let out = run_field_ops(&mut value, &ops);
    db.set_string(&key, &value, 0, true)?;
    Ok(Frame::Array(out))
}

fn bitfield_ro(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let ops = parse_field_ops(a, true)?;
    let mut value = db.get_string(&key)?.unwrap_or_default();
    Ok(Frame::Array(run_field_ops(&mut value, &ops)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_fit_as_redis_fits_them() {
        let u8f = Field { signed: false, bits: 8 };
        let i8f = Field { signed: true, bits: 8 };
        assert_eq!(fit(u8f, 250, 10, Overflow::Wrap), Some(4));
        assert_eq!(fit(u8f, 250, 10, Overflow::Sat), Some(255));
        assert_eq!(fit(u8f, 250, 10, Overflow::Fail), None);
        assert_eq!(fit(u8f, 5, -10, Overflow::Sat), Some(0));
        assert_eq!(fit(u8f, 5, -10, Overflow::Wrap), Some(251));
        assert_eq!(fit(i8f, 120, 10, Overflow::Wrap), Some(-126));
        assert_eq!(fit(i8f, -120, -10, Overflow::Sat), Some(-128));
        let i64f = Field { signed: true, bits: 64 };
        assert_eq!(fit(i64f, i128::from(i64::MAX), 1, Overflow::Wrap), Some(i128::from(i64::MIN)));
        let mut v = vec![0u8; 2];
        set_bits(&mut v, 4, 8, 0xAB);
        assert_eq!(v, [0x0A, 0xB0]);
        assert_eq!(read_field(&v, 4, u8f), 0xAB);
        assert_eq!(read_field(&v, 4, i8f), 0xAB - 256);
    }
}
