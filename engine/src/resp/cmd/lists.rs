//! List commands. A list's head holds its length and the index of its first element; each
//! element is a node keyed by its index (`storage::node`), so a push or pop at either end
//! writes one element node and the head, and LINDEX, LSET and LRANGE cost O(log n + m).
//! Inserting or removing in the middle (LINSERT, LREM) renumbers the elements after the
//! change, as Redis's own O(n) for those commands.
//!
//! The blocking variants (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP) run here as their
//! non-blocking selves — which is what they do inside MULTI — and the connection hands one
//! that found nothing to the blocking server (`resp::blocking`), which retries it after
//! each commit until it is served or its timeout passes.

use std::ops::Bound;

use super::db::{Db, cmd_err};
use super::sets::numkeys;
use super::{Args, K1, NOKEY, R, RF, Spec, W, WF, data, parse_integer};
use crate::frame::Frame;
use crate::storage::node::{self, Head, Kind, LIST_ITEM};
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[
    data("lpush", -3, WF, K1, lpush),
    data("rpush", -3, WF, K1, rpush),
    data("lpushx", -3, WF, K1, lpushx),
    data("rpushx", -3, WF, K1, rpushx),
    data("lpop", -2, WF, K1, lpop),
    data("rpop", -2, WF, K1, rpop),
    data("llen", 2, RF, K1, llen),
    data("lindex", 3, R, K1, lindex),
    data("lset", 4, W, K1, lset),
    data("lrange", 4, R, K1, lrange),
    data("ltrim", 4, W, K1, ltrim),
    data("lrem", 4, W, K1, lrem),
    data("linsert", 5, W, K1, linsert),
    data("lpos", -3, R, K1, lpos),
    data("lmove", 5, W, (1, 2, 1), lmove),
    data("rpoplpush", 3, W, (1, 2, 1), rpoplpush),
    data("lmpop", -4, W, NOKEY, lmpop),
    data("blpop", -3, W, (1, -2, 1), blpop),
    data("brpop", -3, W, (1, -2, 1), brpop),
    data("blmove", 6, W, (1, 2, 1), blmove),
    data("brpoplpush", 4, W, (1, 2, 1), brpoplpush),
    data("blmpop", -5, W, NOKEY, blmpop),
];

/// Which end of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Left,
    Right,
}

fn parse_end(word: &[u8]) -> Result<End, Abort> {
    match word.to_ascii_uppercase().as_slice() {
        b"LEFT" => Ok(End::Left),
        b"RIGHT" => Ok(End::Right),
        _ => Err(cmd_err("ERR syntax error")),
    }
}

fn idx(i: i64) -> [u8; 8] {
    node::sortable_i64(i)
}

pub fn push(db: &mut Db<'_>, key: &[u8], head: &mut Head, end: End, value: &[u8]) -> Result<(), Abort> {
    super::check_value_len(value.len())?;
    let at = match end {
        End::Left => {
            head.first =
                head.first.checked_sub(1).ok_or_else(|| cmd_err("ERR list index space exhausted"))?;
            head.first
        }
        End::Right => head.first.saturating_add(i64::try_from(head.len).unwrap_or(i64::MAX)),
    };
    db.put_element(key, head.generation, LIST_ITEM, &idx(at), value)?;
    head.len += 1;
    Ok(())
}

/// Removes and returns the element at `end` (the list must not be empty).
pub fn pop(db: &mut Db<'_>, key: &[u8], head: &mut Head, end: End) -> Result<Option<Vec<u8>>, Abort> {
    if head.len == 0 {
        return Ok(None);
    }
    let at = match end {
        End::Left => head.first,
        End::Right => head.first + i64::try_from(head.len).unwrap_or(i64::MAX) - 1,
    };
    let value = db.element(key, head.generation, LIST_ITEM, &idx(at))?;
    db.remove_element(key, head.generation, LIST_ITEM, &idx(at))?;
    head.len -= 1;
    if end == End::Left {
        head.first += 1;
    }
    Ok(value)
}

fn push_generic(db: &mut Db<'_>, a: &mut Args, end: End, only_existing: bool) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (old, mut head) = db.open(&key, Kind::List)?;
    if only_existing && old.is_none() {
        return Ok(Frame::Integer(0));
    }
    for value in a.rest() {
        push(db, &key, &mut head, end, &value)?;
    }
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(Frame::Integer(i64::try_from(head.len).unwrap_or(i64::MAX)))
}

fn lpush(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    push_generic(db, a, End::Left, false)
}
fn rpush(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    push_generic(db, a, End::Right, false)
}
fn lpushx(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    push_generic(db, a, End::Left, true)
}
fn rpushx(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    push_generic(db, a, End::Right, true)
}

/// Pops up to `count` elements from `end` of `key` (a live list).
fn pop_many(db: &mut Db<'_>, key: &[u8], old: &Head, end: End, count: u64) -> Result<Vec<Vec<u8>>, Abort> {
    let mut head = old.clone();
    let mut out = Vec::new();
    for _ in 0..count.min(old.len) {
        if let Some(v) = pop(db, key, &mut head, end)? {
            out.push(v);
        }
    }
    db.store_collection(key, Some(old), &head)?;
    Ok(out)
}

fn pop_generic(db: &mut Db<'_>, a: &mut Args, end: End) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let count = match a.optional() {
        None => None,
        Some(c) => match parse_integer(&c) {
            Some(n) if n >= 0 => Some(n.unsigned_abs()),
            _ => return Err(cmd_err("ERR value is out of range, must be positive")),
        },
    };
    if a.remaining() > 0 {
        return Err(cmd_err(format!(
            "ERR wrong number of arguments for '{}' command",
            if end == End::Left { "lpop" } else { "rpop" }
        )));
    }
    let Some(old) = db.typed_for_write(&key, Kind::List)? else {
        return Ok(if count.is_some() { Frame::NullArray } else { Frame::Null });
    };
    match count {
        None => Ok(Frame::from_option(pop_many(db, &key, &old, end, 1)?.into_iter().next())),
        Some(0) => Ok(Frame::Array(Vec::new())),
        Some(n) => Ok(Frame::Array(pop_many(db, &key, &old, end, n)?.into_iter().map(Frame::Bulk).collect())),
    }
}

fn lpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    pop_generic(db, a, End::Left)
}
fn rpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    pop_generic(db, a, End::Right)
}

fn llen(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let len = db.typed(&a.next_arg()?, Kind::List)?.map_or(0, |h| h.len);
    Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)))
}

/// Redis's index range for lists and sorted sets (LRANGE, LTRIM, ZRANGE…): negative
/// indexes count from the end, the start is clamped to 0, the end to the last element; the
/// range is empty (`None`) when the start passes the end or the list.
pub fn index_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let n = i64::try_from(len).ok()?;
    let s = if start < 0 { (n + start).max(0) } else { start };
    let e = if end < 0 { n + end } else { end };
    if s > e || s >= n {
        return None;
    }
    let e = e.min(n - 1);
    Some((usize::try_from(s).ok()?, usize::try_from(e).ok()?))
}

/// A Redis index (negative from the end) as an element index, if inside the list.
fn position(head: &Head, index: i64) -> Option<i64> {
    let len = i64::try_from(head.len).ok()?;
    let i = if index < 0 { len + index } else { index };
    (0..len).contains(&i).then_some(head.first + i)
}

fn lindex(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let index = a.integer()?;
    let Some(head) = db.typed(&key, Kind::List)? else { return Ok(Frame::Null) };
    match position(&head, index) {
        Some(at) => Ok(Frame::from_option(db.element(&key, head.generation, LIST_ITEM, &idx(at))?)),
        None => Ok(Frame::Null),
    }
}

fn lset(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let index = a.integer()?;
    let value = a.next_arg()?;
    let Some(head) = db.typed_for_write(&key, Kind::List)? else { return Err(cmd_err("ERR no such key")) };
    let at = position(&head, index).ok_or_else(|| cmd_err("ERR index out of range"))?;
    super::check_value_len(value.len())?;
    db.put_element(&key, head.generation, LIST_ITEM, &idx(at), &value)?;
    Ok(Frame::ok())
}

/// Elements `start..=end` (list positions, already clamped), in order.
fn range(db: &Db<'_>, key: &[u8], head: &Head, start: usize, end: usize) -> Result<Vec<Vec<u8>>, Abort> {
    let from = head.first + i64::try_from(start).unwrap_or(i64::MAX);
    let want = end - start + 1;
    let mut out = Vec::with_capacity(want.min(4096));
    let mut next = from;
    while out.len() < want {
        let at = idx(next);
        let batch = db.elements(
            key,
            head.generation,
            LIST_ITEM,
            Bound::Included(&at),
            false,
            (want - out.len()).min(1024),
        )?;
        if batch.is_empty() {
            break;
        }
        next += i64::try_from(batch.len()).unwrap_or(i64::MAX);
        out.extend(batch.into_iter().map(|(_, v)| v));
    }
    Ok(out)
}

/// Every element, in order.
pub fn all(db: &Db<'_>, key: &[u8], head: &Head) -> Result<Vec<Vec<u8>>, Abort> {
    if head.len == 0 {
        return Ok(Vec::new());
    }
    range(db, key, head, 0, usize::try_from(head.len - 1).unwrap_or(usize::MAX))
}

fn lrange(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (start, end) = (a.integer()?, a.integer()?);
    let Some(head) = db.typed(&key, Kind::List)? else { return Ok(Frame::Array(Vec::new())) };
    let Some((s, e)) = index_range(start, end, usize::try_from(head.len).unwrap_or(usize::MAX)) else {
        return Ok(Frame::Array(Vec::new()));
    };
    Ok(Frame::Array(range(db, &key, &head, s, e)?.into_iter().map(Frame::Bulk).collect()))
}

fn ltrim(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (start, end) = (a.integer()?, a.integer()?);
    let Some(old) = db.typed_for_write(&key, Kind::List)? else { return Ok(Frame::ok()) };
    let len = usize::try_from(old.len).unwrap_or(usize::MAX);
    let keep = index_range(start, end, len);
    if keep.is_none() {
        // Trimmed to nothing: the key goes, its elements reclaimed like a DEL's.
        db.delete_key(&key, &old)?;
        return Ok(Frame::ok());
    }
    let mut head = old.clone();
    let (s, e) = keep.map_or((len, len), |(s, e)| (s, e + 1));
    // Remove what lies outside [s, e): no element moves.
    for i in (0..s).chain(e..len) {
        db.remove_element(
            &key,
            old.generation,
            LIST_ITEM,
            &idx(old.first + i64::try_from(i).unwrap_or(i64::MAX)),
        )?;
    }
    head.first = old.first + i64::try_from(s).unwrap_or(0);
    head.len = u64::try_from(e.saturating_sub(s)).unwrap_or(0);
    db.store_collection(&key, Some(&old), &head)?;
    Ok(Frame::ok())
}

/// Replaces a list's elements with `items`, writing only the nodes that change.
fn rewrite(
    db: &mut Db<'_>,
    key: &[u8],
    old: &Head,
    before: &[Vec<u8>],
    items: &[Vec<u8>],
) -> Result<(), Abort> {
    let mut head = old.clone();
    for (i, item) in items.iter().enumerate() {
        if before.get(i) != Some(item) {
            db.put_element(
                key,
                old.generation,
                LIST_ITEM,
                &idx(old.first + i64::try_from(i).unwrap_or(i64::MAX)),
                item,
            )?;
        }
    }
    for i in items.len()..before.len() {
        db.remove_element(
            key,
            old.generation,
            LIST_ITEM,
            &idx(old.first + i64::try_from(i).unwrap_or(i64::MAX)),
        )?;
    }
    head.len = items.len() as u64;
    db.store_collection(key, Some(old), &head)
}

fn lrem(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let count = a.integer()?;
    let value = a.next_arg()?;
    let Some(old) = db.typed_for_write(&key, Kind::List)? else { return Ok(Frame::Integer(0)) };
    let items = all(db, &key, &old)?;
    let mut keep = vec![true; items.len()];
    let mut removed = 0i64;
    let limit = if count == 0 { i64::MAX } else { count.saturating_abs() };
    let order: Box<dyn Iterator<Item = usize>> =
        if count < 0 { Box::new((0..items.len()).rev()) } else { Box::new(0..items.len()) };
    for i in order {
        if removed == limit {
            break;
        }
        if items.get(i) == Some(&value) {
            if let Some(k) = keep.get_mut(i) {
                *k = false;
            }
            removed += 1;
        }
    }
    if removed > 0 {
        let new: Vec<Vec<u8>> =
            items.iter().zip(&keep).filter(|(_, k)| **k).map(|(v, _)| v.clone()).collect();
        rewrite(db, &key, &old, &items, &new)?;
    }
    Ok(Frame::Integer(removed))
}

fn linsert(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let after = match a.option().as_deref() {
        Some(b"BEFORE") => false,
        Some(b"AFTER") => true,
        _ => return Err(cmd_err("ERR syntax error")),
    };
    let (pivot, value) = (a.next_arg()?, a.next_arg()?);
    super::check_value_len(value.len())?;
    let Some(old) = db.typed_for_write(&key, Kind::List)? else { return Ok(Frame::Integer(0)) };
    let items = all(db, &key, &old)?;
    let Some(at) = items.iter().position(|v| *v == pivot) else { return Ok(Frame::Integer(-1)) };
    let at = if after { at + 1 } else { at };
    let mut new = items.clone();
    new.insert(at, value);
    rewrite(db, &key, &old, &items, &new)?;
    Ok(Frame::Integer(i64::try_from(new.len()).unwrap_or(i64::MAX)))
}

/// LPOS key element [RANK rank] [COUNT num] [MAXLEN len]
fn lpos(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let value = a.next_arg()?;
    let (mut rank, mut count, mut maxlen): (i64, Option<i64>, i64) = (1, None, 0);
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"RANK" => {
                rank = a.integer()?;
                if rank == 0 {
                    return Err(cmd_err(
                        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                    ));
                }
            }
            b"COUNT" => {
                let n = a.integer()?;
                if n < 0 {
                    return Err(cmd_err("ERR COUNT can't be negative"));
                }
                count = Some(n);
            }
            b"MAXLEN" => {
                maxlen = a.integer()?;
                if maxlen < 0 {
                    return Err(cmd_err("ERR MAXLEN can't be negative"));
                }
            }
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    let Some(head) = db.typed(&key, Kind::List)? else {
        return Ok(if count.is_some() { Frame::Array(Vec::new()) } else { Frame::Null });
    };
    let items = all(db, &key, &head)?;
    let n = items.len();
    let order: Box<dyn Iterator<Item = usize>> =
        if rank < 0 { Box::new((0..n).rev()) } else { Box::new(0..n) };
    let mut skip = rank.saturating_abs() - 1;
    let want = match count {
        Some(0) => usize::MAX,
        Some(c) => usize::try_from(c).unwrap_or(usize::MAX),
        None => 1,
    };
    let mut found = Vec::new();
    for (scanned, i) in order.enumerate() {
        if maxlen > 0 && i64::try_from(scanned).unwrap_or(i64::MAX) >= maxlen {
            break;
        }
        if items.get(i) == Some(&value) {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(Frame::Integer(i64::try_from(i).unwrap_or(i64::MAX)));
            if found.len() == want {
                break;
            }
        }
    }
    Ok(match count {
        Some(_) => Frame::Array(found),
        None => found.into_iter().next().unwrap_or(Frame::Null),
    })
}

/// Moves one element from `src`'s `from` end to `dst`'s `to` end.
fn move_one(db: &mut Db<'_>, src: &[u8], dst: &[u8], from: End, to: End) -> Result<Frame, Abort> {
    let Some(src_old) = db.typed_for_write(src, Kind::List)? else { return Ok(Frame::Null) };
    // The destination's type is checked before anything moves.
    db.typed_for_write(dst, Kind::List)?;
    let mut src_head = src_old.clone();
    let Some(value) = pop(db, src, &mut src_head, from)? else { return Ok(Frame::Null) };
    if src == dst {
        // A rotation: one head, stored once, so a one-element list keeps its key and expiry.
        push(db, src, &mut src_head, to, &value)?;
        db.store_collection(src, Some(&src_old), &src_head)?;
        return Ok(Frame::Bulk(value));
    }
    db.store_collection(src, Some(&src_old), &src_head)?;
    let (dst_old, mut dst_head) = db.open(dst, Kind::List)?;
    push(db, dst, &mut dst_head, to, &value)?;
    db.store_collection(dst, dst_old.as_ref(), &dst_head)?;
    Ok(Frame::Bulk(value))
}

fn lmove(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (src, dst) = (a.next_arg()?, a.next_arg()?);
    let (from, to) = (parse_end(&a.next_arg()?)?, parse_end(&a.next_arg()?)?);
    move_one(db, &src, &dst, from, to)
}

fn rpoplpush(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (src, dst) = (a.next_arg()?, a.next_arg()?);
    move_one(db, &src, &dst, End::Right, End::Left)
}

/// `[LEFT|RIGHT] [COUNT n]` after the keys of LMPOP/BLMPOP.
fn mpop_options(a: &mut Args) -> Result<(End, u64), Abort> {
    let end = parse_end(&a.next_arg()?)?;
    Ok((end, mpop_count(a)?))
}

/// The `[COUNT n]` that ends LMPOP, ZMPOP and their blocking forms (default 1).
pub fn mpop_count(a: &mut Args) -> Result<u64, Abort> {
    let mut count = None;
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"COUNT" if count.is_none() => {
                let n = a.integer_or("ERR count should be greater than 0")?;
                if n <= 0 {
                    return Err(cmd_err("ERR count should be greater than 0"));
                }
                count = Some(n.unsigned_abs());
            }
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    Ok(count.unwrap_or(1))
}

/// Pops from the first non-empty list of `keys`: `[key, [elements]]`, or a null array.
fn mpop(db: &mut Db<'_>, keys: &[Vec<u8>], end: End, count: u64) -> Result<Frame, Abort> {
    for key in keys {
        if let Some(old) = db.typed_for_write(key, Kind::List)? {
            let popped = pop_many(db, key, &old, end, count)?;
            return Ok(Frame::Array(vec![
                Frame::Bulk(key.clone()),
                Frame::Array(popped.into_iter().map(Frame::Bulk).collect()),
            ]));
        }
    }
    Ok(Frame::NullArray)
}

fn lmpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let keys = numkeys(a)?;
    let (end, count) = mpop_options(a)?;
    mpop(db, &keys, end, count)
}

/// Parses a blocking command's timeout in seconds (a float), as milliseconds (0: forever).
pub fn parse_timeout(bytes: &[u8]) -> Result<u64, Abort> {
    let secs = super::parse_float(bytes)
        .filter(|s| s.is_finite())
        .ok_or_else(|| cmd_err("ERR timeout is not a float or out of range"))?;
    if secs < 0.0 {
        return Err(cmd_err("ERR timeout is negative"));
    }
    let ms = (secs * 1000.0).ceil();
    if ms > 1e15 {
        return Err(cmd_err("ERR timeout is out of range"));
    }
    Ok(ms as u64)
}

/// BLPOP/BRPOP key… timeout: `[key, element]` from the first non-empty list, or null.
fn bpop(db: &mut Db<'_>, a: &mut Args, end: End) -> Result<Frame, Abort> {
    let mut keys = a.rest();
    let timeout = keys.pop().unwrap_or_default();
    parse_timeout(&timeout)?;
    for key in &keys {
        if let Some(old) = db.typed_for_write(key, Kind::List)? {
            let popped = pop_many(db, key, &old, end, 1)?;
            if let Some(v) = popped.into_iter().next() {
                return Ok(Frame::Array(vec![Frame::Bulk(key.clone()), Frame::Bulk(v)]));
            }
        }
    }
    Ok(Frame::NullArray)
}

fn blpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    bpop(db, a, End::Left)
}
fn brpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    bpop(db, a, End::Right)
}

fn blmove(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (src, dst) = (a.next_arg()?, a.next_arg()?);
    let (from, to) = (parse_end(&a.next_arg()?)?, parse_end(&a.next_arg()?)?);
    parse_timeout(&a.next_arg()?)?;
    move_one(db, &src, &dst, from, to)
}

fn brpoplpush(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (src, dst) = (a.next_arg()?, a.next_arg()?);
    parse_timeout(&a.next_arg()?)?;
    move_one(db, &src, &dst, End::Right, End::Left)
}

fn blmpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    parse_timeout(&a.next_arg()?)?;
    let keys = numkeys(a)?;
    let (end, count) = mpop_options(a)?;
    mpop(db, &keys, end, count)
}

/// A blocking command's arguments (after its name) with the keys it waits on replaced by
/// `keys` (a subset, in order): how a waiter is served from the keys that hold what it pops
/// when others now hold another type, as Redis serves the key that became ready.
pub fn with_blocking_keys(name: &str, args: &[Vec<u8>], keys: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" => {
            let mut out = keys.to_vec();
            out.push(args.last()?.clone());
            Some(out)
        }
        "blmpop" | "bzmpop" => {
            let n = usize::try_from(parse_integer(args.get(1)?)?).ok()?;
            let mut out = vec![args.first()?.clone(), keys.len().to_string().into_bytes()];
            out.extend_from_slice(keys);
            out.extend_from_slice(args.get(2 + n..)?);
            Some(out)
        }
        _ => None,
    }
}

/// The keys a blocking command waits on and its timeout in milliseconds (0: forever), or
/// `None` for a command that never blocks. Arguments are after the command name.
pub fn blocking_keys(name: &str, args: &[Vec<u8>]) -> Option<(Vec<Vec<u8>>, u64)> {
    let timeout = |b: Option<&Vec<u8>>| b.and_then(|t| parse_timeout(t).ok());
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" => {
            let (last, keys) = args.split_last()?;
            Some((keys.to_vec(), timeout(Some(last))?))
        }
        "blmove" => Some((vec![args.first()?.clone()], timeout(args.get(4))?)),
        "brpoplpush" => Some((vec![args.first()?.clone()], timeout(args.get(2))?)),
        "blmpop" | "bzmpop" => {
            let t = timeout(args.first())?;
            let n = usize::try_from(parse_integer(args.get(1)?)?).ok()?;
            Some((args.get(2..2 + n)?.to_vec(), t))
        }
        _ => None,
    }
}
