//! Hash commands. Each field is a node of its own (`storage::node`), so HSET of one field
//! writes and journals that field and at most the key's head (its field count).

use super::db::{Db, cmd_err};
use super::keys::random_u64;
use super::{Args, K1, R, RF, Spec, WF, data, format_double, parse_float, parse_integer};
use crate::frame::Frame;
use crate::storage::Pairs;
use crate::storage::node::{HASH_FIELD, Head, Kind};
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[
    data("hset", -4, WF, K1, hset),
    data("hmset", -4, WF, K1, hmset),
    data("hsetnx", 4, WF, K1, hsetnx),
    data("hget", 3, RF, K1, hget),
    data("hmget", -3, RF, K1, hmget),
    data("hdel", -3, WF, K1, hdel),
    data("hlen", 2, RF, K1, hlen),
    data("hstrlen", 3, RF, K1, hstrlen),
    data("hexists", 3, RF, K1, hexists),
    data("hkeys", 2, R, K1, hkeys),
    data("hvals", 2, R, K1, hvals),
    data("hgetall", 2, R, K1, hgetall),
    data("hincrby", 4, WF, K1, hincrby),
    data("hincrbyfloat", 4, WF, K1, hincrbyfloat),
    data("hrandfield", -2, R, K1, hrandfield),
];

/// Sets `field`; whether it is new.
fn put(db: &mut Db<'_>, key: &[u8], head: &mut Head, field: &[u8], value: &[u8]) -> Result<bool, Abort> {
    super::check_value_len(value.len())?;
    let new = db.element(key, head.generation, HASH_FIELD, field)?.is_none();
    db.put_element(key, head.generation, HASH_FIELD, field, value)?;
    if new {
        head.len += 1;
    }
    Ok(new)
}

fn hset(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let pairs = a.pairs()?;
    let (old, mut head) = db.open(&key, Kind::Hash)?;
    let mut added = 0;
    for (field, value) in pairs {
        if put(db, &key, &mut head, &field, &value)? {
            added += 1;
        }
    }
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(Frame::Integer(added))
}

fn hmset(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let pairs = a.pairs()?;
    let (old, mut head) = db.open(&key, Kind::Hash)?;
    for (field, value) in pairs {
        put(db, &key, &mut head, &field, &value)?;
    }
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(Frame::ok())
}

fn hsetnx(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, field, value) = (a.next_arg()?, a.next_arg()?, a.next_arg()?);
    let (old, mut head) = db.open(&key, Kind::Hash)?;
    if db.element(&key, head.generation, HASH_FIELD, &field)?.is_some() {
        return Ok(Frame::Integer(0));
    }
    put(db, &key, &mut head, &field, &value)?;
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(Frame::Integer(1))
}

/// A field's value, `None` when the key or field is absent.
fn field(db: &Db<'_>, key: &[u8], field: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
    match db.typed(key, Kind::Hash)? {
        Some(h) => db.element(key, h.generation, HASH_FIELD, field),
        None => Ok(None),
    }
}

fn hget(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, f) = (a.next_arg()?, a.next_arg()?);
    Ok(Frame::from_option(field(db, &key, &f)?))
}

fn hmget(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let live = db.typed(&key, Kind::Hash)?;
    let mut out = Vec::new();
    for f in a.rest() {
        out.push(Frame::from_option(match &live {
            Some(h) => db.element(&key, h.generation, HASH_FIELD, &f)?,
            None => None,
        }));
    }
    Ok(Frame::Array(out))
}

fn hdel(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let Some(old) = db.typed_for_write(&key, Kind::Hash)? else { return Ok(Frame::Integer(0)) };
    let mut head = old.clone();
    let mut removed = 0;
    for f in a.rest() {
        if db.remove_element(&key, head.generation, HASH_FIELD, &f)? {
            head.len = head.len.saturating_sub(1);
            removed += 1;
        }
    }
    db.store_collection(&key, Some(&old), &head)?;
    Ok(Frame::Integer(removed))
}

fn hlen(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let len = db.typed(&a.next_arg()?, Kind::Hash)?.map_or(0, |h| h.len);
    Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)))
}

fn hstrlen(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, f) = (a.next_arg()?, a.next_arg()?);
    let len = field(db, &key, &f)?.map_or(0, |v| v.len());
    Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)))
}

fn hexists(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, f) = (a.next_arg()?, a.next_arg()?);
    Ok(Frame::Integer(i64::from(field(db, &key, &f)?.is_some())))
}

fn all(db: &Db<'_>, key: &[u8]) -> Result<Pairs, Abort> {
    match db.typed(key, Kind::Hash)? {
        Some(h) => db.all_elements(key, h.generation, HASH_FIELD),
        None => Ok(Vec::new()),
    }
}

fn hkeys(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(Frame::Array(all(db, &a.next_arg()?)?.into_iter().map(|(f, _)| Frame::Bulk(f)).collect()))
}

fn hvals(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(Frame::Array(all(db, &a.next_arg()?)?.into_iter().map(|(_, v)| Frame::Bulk(v)).collect()))
}

fn hgetall(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(Frame::Map(
        all(db, &a.next_arg()?)?.into_iter().map(|(f, v)| (Frame::Bulk(f), Frame::Bulk(v))).collect(),
    ))
}

fn hincrby(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, f) = (a.next_arg()?, a.next_arg()?);
    let by = a.integer()?;
    let (old, mut head) = db.open(&key, Kind::Hash)?;
    let current = match db.element(&key, head.generation, HASH_FIELD, &f)? {
        None => 0,
        Some(v) => parse_integer(&v).ok_or_else(|| cmd_err("ERR hash value is not an integer"))?,
    };
    let next = current.checked_add(by).ok_or_else(|| cmd_err("ERR increment or decrement would overflow"))?;
    put(db, &key, &mut head, &f, next.to_string().as_bytes())?;
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(Frame::Integer(next))
}

fn hincrbyfloat(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, f) = (a.next_arg()?, a.next_arg()?);
    let by = a.float()?;
    if !by.is_finite() {
        return Err(cmd_err("ERR value is NaN or Infinity"));
    }
    let (old, mut head) = db.open(&key, Kind::Hash)?;
    let current = match db.element(&key, head.generation, HASH_FIELD, &f)? {
        None => 0.0,
        Some(v) => parse_float(&v).ok_or_else(|| cmd_err("ERR hash value is not a float"))?,
    };
    let next = current + by;
    if !next.is_finite() {
        return Err(cmd_err("ERR increment would produce NaN or Infinity"));
    }
    let text = format!("{next}");
    put(db, &key, &mut head, &f, text.as_bytes())?;
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(Frame::Bulk(text.into_bytes()))
}

/// HRANDFIELD key [count [WITHVALUES]]
fn hrandfield(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let count = match a.optional() {
        None => None,
        Some(c) => {
            Some(parse_integer(&c).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?)
        }
    };
    let with_values = match a.option() {
        None => false,
        Some(o) if o.as_slice() == b"WITHVALUES" && count.is_some() => true,
        Some(_) => return Err(cmd_err("ERR syntax error")),
    };
    a.finish()?;
    let items = all(db, &key)?;
    let picked = random_pick(items, count)?;
    let Some(count) = count else {
        return Ok(Frame::from_option(picked.into_iter().next().map(|(f, _)| f)));
    };
    let _ = count;
    if with_values {
        return Ok(Frame::Pairs(picked.into_iter().map(|(f, v)| (Frame::Bulk(f), Frame::Bulk(v))).collect()));
    }
    Ok(Frame::Array(picked.into_iter().map(|(f, _)| Frame::Bulk(f)).collect()))
}

/// Redis's random-member rules: no count → one; count ≥ 0 → that many distinct (at most all);
/// count < 0 → |count| with repeats.
pub fn random_pick<T: Clone>(mut items: Vec<T>, count: Option<i64>) -> Result<Vec<T>, Abort> {
    let n = items.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let pick = |n: usize| usize::try_from(random_u64() % n as u64).unwrap_or(0);
    match count {
        None => Ok(vec![items.swap_remove(pick(n))]),
        Some(c) if c >= 0 => {
            let want = usize::try_from(c).unwrap_or(usize::MAX).min(n);
            // Partial Fisher–Yates.
            for i in 0..want {
                let j = i + pick(n - i);
                items.swap(i, j);
            }
            items.truncate(want);
            Ok(items)
        }
        Some(c) => {
            let want = usize::try_from(c.unsigned_abs()).unwrap_or(usize::MAX);
            if want > 10_000_000 {
                return Err(cmd_err("ERR value is out of range"));
            }
            Ok((0..want).filter_map(|_| items.get(pick(n)).cloned()).collect())
        }
    }
}

/// A score or float as a reply.
pub fn double(x: f64) -> Frame {
    Frame::Bulk(format_double(x).into_bytes())
}
