//! The key space and expiry: DEL, EXISTS, TYPE, RENAME, COPY, KEYS, SCAN, RANDOMKEY, DBSIZE,
//! TOUCH, FLUSHDB/FLUSHALL, OBJECT, the EXPIRE family, TTL and PERSIST; and the Redis glob
//! matcher behind KEYS and MATCH.
//!
//! Keys are kept in byte order, so a SCAN cursor is simply "the last key returned". Redis
//! clients expect cursors to be integers, so each connection maps small integer cursors to
//! the key they stand for (see `Connection`). A key present for the whole scan is returned
//! exactly once; keys are returned in order.

use std::ops::Bound;

use super::db::{Db, cmd_err};
use super::{Args, Command, K1, KALL, NOKEY, R, RF, Spec, W, WF, data};
use crate::frame::Frame;
use crate::limits::SCAN_COUNT_MAX;
use crate::storage::node::{self, Head, Kind};
use crate::storage::writer::Abort;

const SCAN_COUNT_DEFAULT: usize = 10;

pub const SPECS: &[Spec] = &[
    data("del", -2, W, KALL, del),
    data("unlink", -2, WF, KALL, del),
    data("exists", -2, RF, KALL, exists),
    data("touch", -2, RF, KALL, exists),
    data("type", 2, RF, K1, type_),
    data("rename", 3, W, (1, 2, 1), rename),
    data("renamenx", 3, WF, (1, 2, 1), renamenx),
    data("copy", -3, W, (1, 2, 1), copy),
    data("keys", 2, R, NOKEY, keys),
    data("randomkey", 1, R, NOKEY, randomkey),
    data("dbsize", 1, RF, NOKEY, dbsize),
    data("flushdb", -1, W, NOKEY, flushall),
    data("flushall", -1, W, NOKEY, flushall),
    data("object", -2, R, (2, 2, 1), object),
    data("move", 3, WF, K1, move_),
    data("swapdb", 3, WF, NOKEY, swapdb),
    data("expire", -3, WF, K1, expire),
    data("pexpire", -3, WF, K1, pexpire),
    data("expireat", -3, WF, K1, expireat),
    data("pexpireat", -3, WF, K1, pexpireat),
    data("ttl", 2, RF, K1, ttl),
    data("pttl", 2, RF, K1, pttl),
    data("expiretime", 2, RF, K1, expiretime),
    data("pexpiretime", 2, RF, K1, pexpiretime),
    data("persist", 2, WF, K1, persist),
    data("memory", -2, R, (2, 2, 1), memory),
];

/// MEMORY USAGE key [SAMPLES n]: the bytes the key's nodes take in storage (node names and
/// values; a collection of more than `SAMPLES` × 100 elements is estimated from its first
/// ones). Other MEMORY subcommands describe Redis's keyspace in its allocator's memory; Strand
/// keeps its data in its storage file.
fn memory(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let sub = a.option().unwrap_or_default();
    if sub.as_slice() != b"USAGE" {
        return Err(cmd_err(format!(
            "ERR MEMORY {} is not supported: Strand keeps data in its storage file, not in its allocator's memory (MEMORY USAGE is)",
            String::from_utf8_lossy(&sub)
        )));
    }
    let key = a.next_arg()?;
    let mut samples = 5usize;
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"SAMPLES" => samples = usize::try_from(a.integer()?.max(0)).unwrap_or(5),
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    let Some(head) = db.head(&key)? else { return Ok(Frame::Null) };
    let head_bytes = node::head(&key).len() + head.encode().len();
    let mut bytes = head_bytes as u64;
    if head.kind != Kind::String {
        let limit = if samples == 0 { usize::MAX } else { samples.saturating_mul(100) };
        let prefix = node::elements(&key, head.generation);
        let end = node::prefix_end(&prefix);
        let upper = match end.as_deref() {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let sample = db.kv.range((Bound::Included(prefix.as_slice()), upper), false, limit)?;
        let sampled: u64 = sample.iter().map(|(n, v)| (n.len() + v.len()) as u64).sum();
        let nodes = sample.len() as u64;
        // A sorted set keeps two nodes per member; other collections one.
        let total_nodes = if head.kind == Kind::ZSet { head.len * 2 } else { head.len };
        bytes += (sampled * total_nodes.max(nodes)).checked_div(nodes).unwrap_or(0);
    }
    Ok(Frame::Integer(i64::try_from(bytes).unwrap_or(i64::MAX)))
}

fn int(n: u64) -> Frame {
    Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn del(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let mut n = 0;
    for key in a.rest() {
        if db.delete(&key)? {
            n += 1;
        }
    }
    Ok(int(n))
}

fn exists(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let mut n = 0;
    for key in a.rest() {
        if db.head(&key)?.is_some() {
            n += 1;
        }
    }
    Ok(int(n))
}

fn type_(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let kind = db.head(&a.next_arg()?)?.map_or("none", |h| h.kind.name());
    Ok(Frame::Simple(kind.into()))
}

/// Copies `from`'s value (head and elements, expiry included) to `to`, which must be absent;
/// a copied collection gets a generation of its own.
fn copy_key(db: &mut Db<'_>, from: &[u8], head: &Head, to: &[u8]) -> Result<(), Abort> {
    let mut copy = head.clone();
    if head.kind != Kind::String {
        copy.generation = node::new_generation();
        let prefix = node::elements(from, head.generation);
        let prefix_len = prefix.len();
        let end = node::prefix_end(&prefix);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let lower = match after.as_deref() {
                Some(n) => Bound::Excluded(n),
                None => Bound::Included(prefix.as_slice()),
            };
            let upper = match end.as_deref() {
                Some(e) => Bound::Excluded(e),
                None => Bound::Unbounded,
            };
            let batch = db.kv.range((lower, upper), false, 1024)?;
            let done = batch.len() < 1024;
            for (n, v) in &batch {
                let mut target = node::elements(to, copy.generation);
                target.extend_from_slice(n.get(prefix_len..).unwrap_or_default());
                db.kv.put(&target, v)?;
            }
            after = batch.last().map(|(n, _)| n.clone());
            if done {
                break;
            }
        }
    }
    db.put_head(to, None, &copy)
}

fn rename_with(db: &mut Db<'_>, a: &mut Args, nx: bool) -> Result<Frame, Abort> {
    let (from, to) = (a.next_arg()?, a.next_arg()?);
    let Some(head) = db.head_for_write(&from)? else { return Err(cmd_err("ERR no such key")) };
    if from == to {
        return Ok(if nx { Frame::Integer(0) } else { Frame::ok() });
    }
    match db.head_for_write(&to)? {
        Some(_) if nx => return Ok(Frame::Integer(0)),
        Some(existing) => db.delete_key(&to, &existing)?,
        None => {}
    }
    copy_key(db, &from, &head, &to)?;
    db.delete_key(&from, &head)?;
    Ok(if nx { Frame::Integer(1) } else { Frame::ok() })
}

fn rename(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    rename_with(db, a, false)
}

fn renamenx(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    rename_with(db, a, true)
}

/// COPY source destination [DB 0] [REPLACE]
fn copy(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (from, to) = (a.next_arg()?, a.next_arg()?);
    let mut replace = false;
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"REPLACE" => replace = true,
            b"DB" => {
                if a.integer()? != 0 {
                    return Err(cmd_err("ERR DB index is out of range (Strand has one database, 0)"));
                }
            }
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    if from == to {
        return Err(cmd_err("ERR source and destination objects are the same"));
    }
    let Some(head) = db.head_for_write(&from)? else { return Ok(Frame::Integer(0)) };
    if let Some(existing) = db.head_for_write(&to)? {
        if !replace {
            return Ok(Frame::Integer(0));
        }
        db.delete_key(&to, &existing)?;
    }
    copy_key(db, &from, &head, &to)?;
    Ok(Frame::Integer(1))
}

fn keys(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let pattern = a.next_arg()?;
    let all = pattern.as_slice() == b"*";
    Ok(Frame::Array(
        db.all_keys()?
            .into_iter()
            .filter(|(k, _)| all || glob_match(&pattern, k))
            .map(|(k, _)| Frame::Bulk(k))
            .collect(),
    ))
}

/// RANDOMKEY in O(log n): a random point between the first and the last key (past their
/// common prefix), then the live key just after or just before it, one or the other at
/// random. Like Redis's (a random hash bucket) it is not exactly uniform: a key after a wide
/// gap is likelier. Only when every key tried has expired does it walk the key space.
fn randomkey(db: &mut Db<'_>, _: &mut Args) -> Result<Frame, Abort> {
    let heads = |lo: Bound<&[u8]>, hi: Bound<&[u8]>, rev: bool, n: usize| db.kv.range((lo, hi), rev, n);
    let start = Bound::Included(node::HEADS_START);
    let end = Bound::Excluded(node::HEADS_END);
    let (Some((first, _)), Some((last, _))) =
        (heads(start, end, false, 1)?.pop(), heads(start, end, true, 1)?.pop())
    else {
        return Ok(Frame::Null);
    };
    let common = first.iter().zip(&last).take_while(|(a, b)| a == b).count();
    let word = |k: &[u8]| {
        let mut w = [0u8; 8];
        for (i, b) in k.iter().skip(common).take(8).enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = *b;
            }
        }
        u64::from_be_bytes(w)
    };
    let (lo, hi) = (word(&first), word(&last));
    for _ in 0..8 {
        let r = lo + random_u64() % (hi - lo).saturating_add(1).max(1);
        let mut target = first.get(..common).unwrap_or_default().to_vec();
        target.extend_from_slice(&r.to_be_bytes());
        let candidates = if random_u64().is_multiple_of(2) {
            heads(Bound::Included(&target), end, false, 16)?
        } else {
            heads(start, Bound::Included(&target), true, 16)?
        };
        for (n, v) in candidates {
            if Head::decode(&v).is_some_and(|h| !h.expired(db.now_ms)) {
                return Ok(Frame::Bulk(n.get(1..).unwrap_or_default().to_vec()));
            }
        }
    }
    let keys = db.all_keys()?;
    if keys.is_empty() {
        return Ok(Frame::Null);
    }
    let i = usize::try_from(random_u64() % keys.len() as u64).unwrap_or(0);
    Ok(Frame::from_option(keys.into_iter().nth(i).map(|(k, _)| k)))
}

/// A random number for RANDOMKEY and the random-member commands (not for secrets).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return crate::storage::now_micros();
    }
    u64::from_le_bytes(bytes)
}

fn dbsize(db: &mut Db<'_>, _: &mut Args) -> Result<Frame, Abort> {
    Ok(int(db.count_keys()?))
}

/// FLUSHALL / FLUSHDB [ASYNC|SYNC]: removes every key (a journaled transaction like any
/// other, so it replicates and rolls back).
fn flushall(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    match a.option().as_deref() {
        None | Some(b"ASYNC") | Some(b"SYNC") => {}
        Some(_) => return Err(cmd_err("ERR syntax error")),
    }
    a.finish()?;
    // Every key's head goes; every collection's elements become garbage for the reclaim
    // cycle, so FLUSHALL journals the heads (and string values), not every element.
    loop {
        let batch = db.kv.range(
            (Bound::Included(node::HEADS_START), Bound::Excluded(node::HEADS_END)),
            false,
            1024,
        )?;
        if batch.is_empty() {
            return Ok(Frame::ok());
        }
        for (n, v) in batch {
            let key = n.get(1..).unwrap_or_default();
            match node::Head::decode(&v) {
                Some(head) => db.delete_key_as(key, &head, true)?,
                None => {
                    db.kv.remove(&n)?;
                }
            }
        }
    }
}

fn object(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let sub = a.option().unwrap_or_default();
    if sub.as_slice() == b"HELP" {
        return Ok(Frame::Array(
            [
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>",
                "    Strand keeps every type as journaled nodes; it reports no Redis encoding.",
                "REFCOUNT <key>",
                "    Always 1: every key's value is its own nodes.",
                "FREQ <key>, IDLETIME <key>",
                "    Not kept by Strand (it has no LRU/LFU eviction).",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|l| Frame::Simple((*l).into()))
            .collect(),
        ));
    }
    let key = a.next_arg()?;
    a.finish()?;
    if db.head(&key)?.is_none() {
        return Ok(Frame::Null);
    }
    match sub.as_slice() {
        // Every key's value is its own nodes, referenced by that key alone.
        b"REFCOUNT" => Ok(Frame::Integer(1)),
        b"ENCODING" | b"FREQ" | b"IDLETIME" => Err(cmd_err(format!(
            "ERR OBJECT {} is not available: Strand keeps every type as journaled nodes, without Redis's object encodings or eviction counters",
            String::from_utf8_lossy(&sub)
        ))),
        _ => Err(cmd_err(format!(
            "ERR unknown subcommand '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&sub).to_ascii_lowercase()
        ))),
    }
}

fn move_(_: &mut Db<'_>, _: &mut Args) -> Result<Frame, Abort> {
    Err(cmd_err("ERR MOVE is not supported: Strand has one database, 0"))
}

fn swapdb(_: &mut Db<'_>, _: &mut Args) -> Result<Frame, Abort> {
    Err(cmd_err("ERR SWAPDB is not supported: Strand has one database, 0"))
}

/// An expiry as a command gave it.
#[derive(Debug, Clone, Copy)]
pub struct ExpireArg {
    value: i64,
    /// Milliseconds per unit.
    unit_ms: i64,
    absolute: bool,
    command: &'static str,
}

impl ExpireArg {
    /// The absolute time in Unix milliseconds; Redis's error when it overflows.
    pub fn at_ms(self, now_ms: u64) -> Result<u64, Abort> {
        let invalid = || cmd_err(format!("ERR invalid expire time in '{}' command", self.command));
        let ms = self.value.checked_mul(self.unit_ms).ok_or_else(invalid)?;
        let at = if self.absolute {
            ms
        } else {
            ms.checked_add(i64::try_from(now_ms).map_err(|_| invalid())?).ok_or_else(invalid)?
        };
        // A time before the epoch is simply in the past.
        Ok(u64::try_from(at.max(1)).unwrap_or(1))
    }
}

/// Parses the value of SET/GETEX's EX|PX|EXAT|PXAT (must be positive).
pub fn parse_expire_option(option: &[u8], value: &[u8], command: &str) -> Result<ExpireArg, Abort> {
    let command: &'static str = match command {
        "set" => "set",
        "getex" => "getex",
        "setex" => "setex",
        "psetex" => "psetex",
        _ => "set",
    };
    let n =
        super::parse_integer(value).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?;
    if n <= 0 {
        return Err(cmd_err(format!("ERR invalid expire time in '{command}' command")));
    }
    let (unit_ms, absolute) = match option.to_ascii_uppercase().as_slice() {
        b"EX" => (1000, false),
        b"PX" => (1, false),
        b"EXAT" => (1000, true),
        _ => (1, true),
    };
    Ok(ExpireArg { value: n, unit_ms, absolute, command })
}

/// Gives a live key a new expiry (0: none), keeping the expiry index in step.
pub fn set_expiry(db: &mut Db<'_>, key: &[u8], head: Head, at_ms: u64) -> Result<(), Abort> {
    let mut new = head.clone();
    new.expire_at_ms = at_ms;
    db.put_head(key, Some(&head), &new)
}

fn expire_generic(
    db: &mut Db<'_>,
    a: &mut Args,
    unit_ms: i64,
    absolute: bool,
    command: &'static str,
) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let value = a.integer()?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    while let Some(option) = a.optional() {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => return Err(cmd_err(format!("ERR Unsupported option {}", String::from_utf8_lossy(&option)))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(cmd_err("ERR NX and XX, GT or LT options at the same time are not compatible"));
    }
    if gt && lt {
        return Err(cmd_err("ERR GT and LT options at the same time are not compatible"));
    }
    let arg = ExpireArg { value, unit_ms, absolute, command };
    let ms = value
        .checked_mul(unit_ms)
        .ok_or_else(|| cmd_err(format!("ERR invalid expire time in '{command}' command")))?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(i64::try_from(db.now_ms).unwrap_or(i64::MAX))
            .ok_or_else(|| cmd_err(format!("ERR invalid expire time in '{command}' command")))?
    };
    let _ = arg;
    let Some(head) = db.head_for_write(&key)? else { return Ok(Frame::Integer(0)) };
    let current = head.expire_at_ms;
    let at_u = u64::try_from(at.max(0)).unwrap_or(0);
    let refused = (nx && current != 0)
        || (xx && current == 0)
        || (gt && (current == 0 || at_u <= current))
        || (lt && current != 0 && at_u >= current);
    if refused {
        return Ok(Frame::Integer(0));
    }
    if at <= i64::try_from(db.now_ms).unwrap_or(i64::MAX) {
        db.delete_key(&key, &head)?;
    } else {
        set_expiry(db, &key, head, at_u)?;
    }
    Ok(Frame::Integer(1))
}

fn expire(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    expire_generic(db, a, 1000, false, "expire")
}
fn pexpire(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    expire_generic(db, a, 1, false, "pexpire")
}
fn expireat(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    expire_generic(db, a, 1000, true, "expireat")
}
fn pexpireat(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    expire_generic(db, a, 1, true, "pexpireat")
}

/// TTL family: -2 absent, -1 no expiry, else the value `f` makes of the expiry.
fn ttl_with(db: &mut Db<'_>, a: &mut Args, f: impl Fn(u64, u64) -> i64) -> Result<Frame, Abort> {
    Ok(Frame::Integer(match db.head(&a.next_arg()?)? {
        None => -2,
        Some(h) if h.expire_at_ms == 0 => -1,
        Some(h) => f(h.expire_at_ms, db.now_ms),
    }))
}

fn ttl(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    ttl_with(db, a, |at, now| i64::try_from((at.saturating_sub(now) + 500) / 1000).unwrap_or(i64::MAX))
}
fn pttl(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    ttl_with(db, a, |at, now| i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX))
}
fn expiretime(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    ttl_with(db, a, |at, _| i64::try_from(at / 1000).unwrap_or(i64::MAX))
}
fn pexpiretime(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    ttl_with(db, a, |at, _| i64::try_from(at).unwrap_or(i64::MAX))
}

fn persist(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    match db.head_for_write(&key)? {
        Some(h) if h.expire_at_ms != 0 => {
            set_expiry(db, &key, h, 0)?;
            Ok(Frame::Integer(1))
        }
        _ => Ok(Frame::Integer(0)),
    }
}

/// What a SCAN-family command walks.
#[derive(Debug, Clone)]
pub enum ScanTarget {
    /// SCAN: the key space, optionally only keys of one type.
    Keys(Option<Kind>),
    /// HSCAN, SSCAN, ZSCAN: the elements of one key.
    Elements(Vec<u8>, Kind),
}

pub fn parse_scan(a: &mut Args) -> Result<Command, Frame> {
    let cursor = parse_cursor(&a.next_arg()?)?;
    let (pattern, count, kind) = parse_scan_options(a, true)?;
    Ok(Command::Scan { cursor, pattern, count, target: ScanTarget::Keys(kind) })
}

pub fn parse_element_scan(a: &mut Args, kind: Kind) -> Result<Command, Frame> {
    let key = a.key()?;
    let cursor = parse_cursor(&a.next_arg()?)?;
    let (pattern, count, _) = parse_scan_options(a, false)?;
    Ok(Command::Scan { cursor, pattern, count, target: ScanTarget::Elements(key, kind) })
}

/// One step of a SCAN-family command from `after` (exclusive): the reply items, and where
/// the next step resumes (`None`: the walk is complete).
pub fn scan_step(
    db: &Db<'_>,
    target: &ScanTarget,
    after: Option<&[u8]>,
    pattern: Option<&[u8]>,
    count: usize,
) -> Result<(Vec<Frame>, Option<Vec<u8>>), Abort> {
    let matches = |x: &[u8]| pattern.is_none_or(|p| glob_match(p, x));
    match target {
        ScanTarget::Keys(kind) => {
            let (keys, last) = db.keys_after(after, count)?;
            let items = keys
                .into_iter()
                .filter(|(k, h)| kind.is_none_or(|t| h.kind == t) && matches(k))
                .map(|(k, _)| Frame::Bulk(k))
                .collect();
            Ok((items, last))
        }
        ScanTarget::Elements(key, kind) => {
            let Some(head) = db.typed(key, *kind)? else { return Ok((Vec::new(), None)) };
            let tag = match kind {
                Kind::Hash => node::HASH_FIELD,
                Kind::Set => node::SET_MEMBER,
                _ => node::ZSET_SCORE,
            };
            let from = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let mut batch = db.elements(key, head.generation, tag, from, false, count + 1)?;
            let more = batch.len() > count;
            batch.truncate(count);
            let last = if more { batch.last().map(|(m, _)| m.clone()) } else { None };
            let mut items = Vec::new();
            for (m, v) in batch {
                if !matches(&m) {
                    continue;
                }
                items.push(Frame::Bulk(m));
                match kind {
                    Kind::Hash => items.push(Frame::Bulk(v)),
                    Kind::ZSet => {
                        let score =
                            v.first_chunk::<8>().map_or(0.0, |b| f64::from_bits(u64::from_be_bytes(*b)));
                        items.push(Frame::Bulk(crate::base::format_double(score).into_bytes()));
                    }
                    _ => {}
                }
            }
            Ok((items, last))
        }
    }
}

pub fn parse_cursor(bytes: &[u8]) -> Result<u64, Frame> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Frame::error("ERR invalid cursor"))
}

/// A SCAN's MATCH pattern, COUNT and TYPE.
pub type ScanOptions = (Option<Vec<u8>>, usize, Option<Kind>);

/// MATCH, COUNT and (for SCAN) TYPE.
pub fn parse_scan_options(a: &mut Args, with_type: bool) -> Result<ScanOptions, Frame> {
    let (mut pattern, mut count, mut kind) = (None, SCAN_COUNT_DEFAULT, None);
    while let Some(option) = a.optional() {
        match option.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(a.next_arg()?),
            b"COUNT" => {
                let n = a.integer()?;
                if n < 1 {
                    return Err(Frame::error("ERR syntax error"));
                }
                count = usize::try_from(n).unwrap_or(SCAN_COUNT_MAX).min(SCAN_COUNT_MAX);
            }
            b"TYPE" if with_type => {
                let name = a.next_arg()?;
                // An unknown type matches nothing, as in Redis.
                kind = Some(Kind::from_name(&name).unwrap_or(Kind::String));
                if Kind::from_name(&name).is_none() {
                    pattern = Some(b"\x00strand-no-match\x00".to_vec());
                }
            }
            _ => return Err(Frame::error("ERR syntax error")),
        }
    }
    Ok((pattern, count, kind))
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
