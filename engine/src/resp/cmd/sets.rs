//! Set commands. Each member is a node of its own (`storage::node`).

use std::collections::BTreeSet;

use super::db::{Db, cmd_err};
use super::hashes::random_pick;
use super::{Args, K1, KALL, NOKEY, R, RF, Spec, W, WF, data, parse_integer};
use crate::frame::Frame;
use crate::storage::node::{Head, Kind, SET_MEMBER};
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[
    data("sadd", -3, WF, K1, sadd),
    data("srem", -3, WF, K1, srem),
    data("smembers", 2, R, K1, smembers),
    data("sismember", 3, RF, K1, sismember),
    data("smismember", -3, RF, K1, smismember),
    data("scard", 2, RF, K1, scard),
    data("spop", -2, WF, K1, spop),
    data("srandmember", -2, R, K1, srandmember),
    data("smove", 4, WF, (1, 2, 1), smove),
    data("sinter", -2, R, KALL, sinter),
    data("sintercard", -3, R, NOKEY, sintercard),
    data("sinterstore", -3, W, KALL, sinterstore),
    data("sunion", -2, R, KALL, sunion),
    data("sunionstore", -3, W, KALL, sunionstore),
    data("sdiff", -2, R, KALL, sdiff),
    data("sdiffstore", -3, W, KALL, sdiffstore),
];

fn int(n: usize) -> Frame {
    Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Adds `member`; whether it is new.
pub fn add(db: &mut Db<'_>, key: &[u8], head: &mut Head, member: &[u8]) -> Result<bool, Abort> {
    if db.element(key, head.generation, SET_MEMBER, member)?.is_some() {
        return Ok(false);
    }
    db.put_element(key, head.generation, SET_MEMBER, member, b"")?;
    head.len += 1;
    Ok(true)
}

fn sadd(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (old, mut head) = db.open(&key, Kind::Set)?;
    let mut added = 0;
    for m in a.rest() {
        if add(db, &key, &mut head, &m)? {
            added += 1;
        }
    }
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(int(added))
}

fn srem(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let Some(old) = db.typed_for_write(&key, Kind::Set)? else { return Ok(Frame::Integer(0)) };
    let mut head = old.clone();
    let mut removed = 0;
    for m in a.rest() {
        if db.remove_element(&key, head.generation, SET_MEMBER, &m)? {
            head.len = head.len.saturating_sub(1);
            removed += 1;
        }
    }
    db.store_collection(&key, Some(&old), &head)?;
    Ok(int(removed))
}

/// Every member of a set (empty when absent; WRONGTYPE for another type).
pub fn members(db: &Db<'_>, key: &[u8]) -> Result<Vec<Vec<u8>>, Abort> {
    match db.typed(key, Kind::Set)? {
        Some(h) => Ok(db.all_elements(key, h.generation, SET_MEMBER)?.into_iter().map(|(m, _)| m).collect()),
        None => Ok(Vec::new()),
    }
}

fn is_member(db: &Db<'_>, key: &[u8], member: &[u8]) -> Result<bool, Abort> {
    match db.typed(key, Kind::Set)? {
        Some(h) => Ok(db.element(key, h.generation, SET_MEMBER, member)?.is_some()),
        None => Ok(false),
    }
}

fn smembers(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(Frame::Array(members(db, &a.next_arg()?)?.into_iter().map(Frame::Bulk).collect()))
}

fn sismember(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, m) = (a.next_arg()?, a.next_arg()?);
    Ok(Frame::Integer(i64::from(is_member(db, &key, &m)?)))
}

fn smismember(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let mut out = Vec::new();
    for m in a.rest() {
        out.push(Frame::Integer(i64::from(is_member(db, &key, &m)?)));
    }
    Ok(Frame::Array(out))
}

fn scard(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let len = db.typed(&a.next_arg()?, Kind::Set)?.map_or(0, |h| h.len);
    Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)))
}

fn spop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let count = match a.optional() {
        None => None,
        Some(c) => {
            let n =
                parse_integer(&c).ok_or_else(|| cmd_err("ERR value is out of range, must be positive"))?;
            if n < 0 {
                return Err(cmd_err("ERR value is out of range, must be positive"));
            }
            Some(n)
        }
    };
    a.finish()?;
    let Some(old) = db.typed_for_write(&key, Kind::Set)? else {
        return Ok(if count.is_some() { Frame::Array(Vec::new()) } else { Frame::Null });
    };
    let picked = random_pick(members(db, &key)?, Some(count.unwrap_or(1)))?;
    let mut head = old.clone();
    for m in &picked {
        db.remove_element(&key, head.generation, SET_MEMBER, m)?;
        head.len = head.len.saturating_sub(1);
    }
    db.store_collection(&key, Some(&old), &head)?;
    Ok(match count {
        None => Frame::from_option(picked.into_iter().next()),
        Some(_) => Frame::Array(picked.into_iter().map(Frame::Bulk).collect()),
    })
}

fn srandmember(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let count = match a.optional() {
        None => None,
        Some(c) => {
            Some(parse_integer(&c).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?)
        }
    };
    a.finish()?;
    let picked = random_pick(members(db, &key)?, count)?;
    Ok(match count {
        None => Frame::from_option(picked.into_iter().next()),
        Some(_) => Frame::Array(picked.into_iter().map(Frame::Bulk).collect()),
    })
}

fn smove(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (src, dst, m) = (a.next_arg()?, a.next_arg()?, a.next_arg()?);
    let Some(src_old) = db.typed_for_write(&src, Kind::Set)? else { return Ok(Frame::Integer(0)) };
    let (dst_old, mut dst_head) = db.open(&dst, Kind::Set)?;
    if src == dst {
        return Ok(Frame::Integer(i64::from(
            db.element(&src, src_old.generation, SET_MEMBER, &m)?.is_some(),
        )));
    }
    if !db.remove_element(&src, src_old.generation, SET_MEMBER, &m)? {
        return Ok(Frame::Integer(0));
    }
    let mut src_head = src_old.clone();
    src_head.len = src_head.len.saturating_sub(1);
    db.store_collection(&src, Some(&src_old), &src_head)?;
    add(db, &dst, &mut dst_head, &m)?;
    db.store_collection(&dst, dst_old.as_ref(), &dst_head)?;
    Ok(Frame::Integer(1))
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

fn combine(db: &Db<'_>, keys: &[Vec<u8>], op: Op) -> Result<BTreeSet<Vec<u8>>, Abort> {
    // Type-check every key first, as Redis does.
    let mut sets = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(members(db, k)?);
    }
    let mut sets = sets.into_iter();
    let mut acc: BTreeSet<Vec<u8>> = sets.next().unwrap_or_default().into_iter().collect();
    for s in sets {
        let s: BTreeSet<Vec<u8>> = s.into_iter().collect();
        match op {
            Op::Inter => acc.retain(|m| s.contains(m)),
            Op::Union => acc.extend(s),
            Op::Diff => acc.retain(|m| !s.contains(m)),
        }
    }
    Ok(acc)
}

fn reply(set: BTreeSet<Vec<u8>>) -> Frame {
    Frame::Array(set.into_iter().map(Frame::Bulk).collect())
}

fn sinter(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(reply(combine(db, &a.rest(), Op::Inter)?))
}
fn sunion(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(reply(combine(db, &a.rest(), Op::Union)?))
}
fn sdiff(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(reply(combine(db, &a.rest(), Op::Diff)?))
}

/// Replaces `dst` (whatever it held) with a set of `members`; removes it when empty.
pub fn store_set(
    db: &mut Db<'_>,
    dst: &[u8],
    members: impl IntoIterator<Item = Vec<u8>>,
) -> Result<usize, Abort> {
    db.delete(dst)?;
    let mut head = Head::collection(Kind::Set);
    for m in members {
        add(db, dst, &mut head, &m)?;
    }
    db.store_collection(dst, None, &head)?;
    Ok(usize::try_from(head.len).unwrap_or(usize::MAX))
}

fn store(db: &mut Db<'_>, a: &mut Args, op: Op) -> Result<Frame, Abort> {
    let dst = a.next_arg()?;
    let set = combine(db, &a.rest(), op)?;
    Ok(int(store_set(db, &dst, set)?))
}

fn sinterstore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    store(db, a, Op::Inter)
}
fn sunionstore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    store(db, a, Op::Union)
}
fn sdiffstore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    store(db, a, Op::Diff)
}

/// Parses `numkeys key… ` as SINTERCARD, ZUNION and friends take them.
pub fn numkeys(a: &mut Args) -> Result<Vec<Vec<u8>>, Abort> {
    let n = a.integer_or("ERR numkeys should be greater than 0")?;
    if n <= 0 {
        return Err(cmd_err("ERR numkeys should be greater than 0"));
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n > a.remaining() {
        return Err(cmd_err("ERR Number of keys can't be greater than number of args"));
    }
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(a.next_arg()?);
    }
    Ok(keys)
}

fn sintercard(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let keys = numkeys(a)?;
    let mut limit = 0usize;
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"LIMIT" => {
                let n = a.next_arg().map_err(|_| cmd_err("ERR syntax error"))?;
                let n = parse_integer(&n).ok_or_else(|| cmd_err("ERR LIMIT can't be negative"))?;
                limit = usize::try_from(n).map_err(|_| cmd_err("ERR LIMIT can't be negative"))?;
            }
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    let n = combine(db, &keys, Op::Inter)?.len();
    Ok(int(if limit > 0 { n.min(limit) } else { n }))
}
