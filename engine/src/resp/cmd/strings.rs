//! String commands, as Redis 7.0 replies to them.

use super::db::{Db, cmd_err};
use super::keys::{ExpireArg, parse_expire_option};
use super::{Args, K1, KALL, R, RF, Spec, W, WF, data, parse_float, parse_integer};
use crate::frame::Frame;
use crate::storage::node::Kind;
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[
    data("get", 2, RF, K1, get),
    data("set", -3, W, K1, set),
    data("setnx", 3, WF, K1, setnx),
    data("setex", 4, W, K1, setex),
    data("psetex", 4, W, K1, psetex),
    data("getset", 3, WF, K1, getset),
    data("getex", -2, WF, K1, getex),
    data("getdel", 2, WF, K1, getdel),
    data("mget", -2, RF, KALL, mget),
    data("mset", -3, W, (1, -1, 2), mset),
    data("msetnx", -3, W, (1, -1, 2), msetnx),
    data("incr", 2, WF, K1, incr),
    data("decr", 2, WF, K1, decr),
    data("incrby", 3, WF, K1, incrby),
    data("decrby", 3, WF, K1, decrby),
    data("incrbyfloat", 3, WF, K1, incrbyfloat),
    data("append", 3, WF, K1, append),
    data("strlen", 2, RF, K1, strlen),
    data("setrange", 4, W, K1, setrange),
    data("getrange", 4, R, K1, getrange),
    data("substr", 4, R, K1, getrange),
    data("lcs", -3, R, (1, 2, 1), lcs),
];

fn get(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(Frame::from_option(db.get_string(&a.next_arg()?)?))
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
fn set(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let value = a.next_arg()?;
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    let mut expire: Option<ExpireArg> = None;
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if expire.is_none() => keep_ttl = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if expire.is_none() && !keep_ttl => {
                expire = Some(parse_expire_option(&option, &a.next_arg().map_err(|_| syntax())?, "set")?);
            }
            _ => return Err(syntax()),
        }
    }
    let at = expire.map(|e| e.at_ms(db.now_ms)).transpose()?;
    // One read of the key for the whole command; an expired key is removed by it, as any
    // write that meets one does.
    let mut old = db.head_for_write(&key)?;
    let old_value = match (&mut old, get) {
        (Some(h), true) if h.kind != Kind::String => return Err(cmd_err(super::db::WRONGTYPE)),
        (Some(h), true) => Some(std::mem::take(&mut h.value)),
        _ => None,
    };
    let allowed = !(nx && old.is_some() || xx && old.is_none());
    if allowed {
        match (at, &old) {
            (Some(at), Some(h)) if at <= db.now_ms => db.delete_key(&key, h)?,
            (Some(at), None) if at <= db.now_ms => {}
            (at, old) => db.store_string(&key, old.as_ref(), &value, at.unwrap_or(0), keep_ttl)?,
        }
    }
    Ok(match (get, allowed) {
        (true, _) => Frame::from_option(old_value),
        (false, true) => Frame::ok(),
        (false, false) => Frame::Null,
    })
}

fn syntax() -> Abort {
    cmd_err("ERR syntax error")
}

fn setnx(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, value) = (a.next_arg()?, a.next_arg()?);
    if db.head(&key)?.is_some() {
        return Ok(Frame::Integer(0));
    }
    db.set_string(&key, &value, 0, false)?;
    Ok(Frame::Integer(1))
}

fn setex_with(db: &mut Db<'_>, a: &mut Args, unit: &[u8], name: &str) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let at = parse_expire_option(unit, &a.next_arg()?, name)?.at_ms(db.now_ms)?;
    let value = a.next_arg()?;
    db.set_string(&key, &value, at, false)?;
    Ok(Frame::ok())
}

fn setex(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    setex_with(db, a, b"EX", "setex")
}

fn psetex(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    setex_with(db, a, b"PX", "psetex")
}

fn getset(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, value) = (a.next_arg()?, a.next_arg()?);
    let old = db.get_string(&key)?;
    db.set_string(&key, &value, 0, false)?;
    Ok(Frame::from_option(old))
}

/// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]
fn getex(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (mut expire, mut persist) = (None, false);
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"PERSIST" if expire.is_none() && !persist => persist = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if expire.is_none() && !persist => {
                expire = Some(parse_expire_option(&option, &a.next_arg().map_err(|_| syntax())?, "getex")?);
            }
            _ => return Err(syntax()),
        }
    }
    let at = expire.map(|e| e.at_ms(db.now_ms)).transpose()?;
    let Some(head) = db.typed(&key, Kind::String)? else { return Ok(Frame::Null) };
    let value = head.value.clone();
    match at {
        Some(at) if at <= db.now_ms => {
            db.delete(&key)?;
        }
        Some(at) => super::keys::set_expiry(db, &key, head, at)?,
        None if persist && head.expire_at_ms != 0 => super::keys::set_expiry(db, &key, head, 0)?,
        None => {}
    }
    Ok(Frame::Bulk(value))
}

fn getdel(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let old = db.get_string(&key)?;
    if old.is_some() {
        db.delete(&key)?;
    }
    Ok(Frame::from_option(old))
}

fn mget(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let mut out = Vec::new();
    for key in a.rest() {
        // MGET answers nil for a key of another type rather than failing.
        out.push(Frame::from_option(db.head(&key)?.filter(|h| h.kind == Kind::String).map(|h| h.value)));
    }
    Ok(Frame::Array(out))
}

fn mset(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    for (key, value) in a.pairs()? {
        db.set_string(&key, &value, 0, false)?;
    }
    Ok(Frame::ok())
}

fn msetnx(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let pairs = a.pairs()?;
    for (key, _) in &pairs {
        if db.head(key)?.is_some() {
            return Ok(Frame::Integer(0));
        }
    }
    for (key, value) in pairs {
        db.set_string(&key, &value, 0, false)?;
    }
    Ok(Frame::Integer(1))
}

/// Adds `by` to an integer string, keeping its expiry.
fn incr_by(db: &mut Db<'_>, key: &[u8], by: i64) -> Result<Frame, Abort> {
    let current = match db.get_string(key)? {
        None => 0,
        Some(bytes) => {
            parse_integer(&bytes).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?
        }
    };
    let next = current.checked_add(by).ok_or_else(|| cmd_err("ERR increment or decrement would overflow"))?;
    db.set_string(key, next.to_string().as_bytes(), 0, true)?;
    Ok(Frame::Integer(next))
}

fn incr(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    incr_by(db, &a.next_arg()?, 1)
}

fn decr(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    incr_by(db, &a.next_arg()?, -1)
}

fn incrby(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let by = a.integer()?;
    incr_by(db, &key, by)
}

fn decrby(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let by = a.integer()?.checked_neg().ok_or_else(|| cmd_err("ERR decrement would overflow"))?;
    incr_by(db, &key, by)
}

fn incrbyfloat(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let by = a.float()?;
    let current = match db.get_string(&key)? {
        None => 0.0,
        Some(bytes) => parse_float(&bytes).ok_or_else(|| cmd_err("ERR value is not a valid float"))?,
    };
    let next = current + by;
    if !next.is_finite() {
        return Err(cmd_err("ERR increment would produce NaN or Infinity"));
    }
    // Shortest text that reads back as the same number, never in exponent form (Redis's
    // human-readable long double format).
    let text = format!("{next}");
    db.set_string(&key, text.as_bytes(), 0, true)?;
    Ok(Frame::Bulk(text.into_bytes()))
}

fn append(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, value) = (a.next_arg()?, a.next_arg()?);
    let mut current = db.get_string(&key)?.unwrap_or_default();
    super::check_value_len(current.len() + value.len())?;
    current.extend_from_slice(&value);
    db.set_string(&key, &current, 0, true)?;
    Ok(Frame::Integer(i64::try_from(current.len()).unwrap_or(i64::MAX)))
}

fn strlen(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let len = db.get_string(&a.next_arg()?)?.map_or(0, |v| v.len());
    Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)))
}

fn setrange(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let offset = a.integer()?;
    let value = a.next_arg()?;
    let offset = usize::try_from(offset).map_err(|_| cmd_err("ERR offset is out of range"))?;
    let current = db.get_string(&key)?;
    if value.is_empty() {
        let len = current.map_or(0, |v| v.len());
        return Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)));
    }
    super::check_value_len(offset.saturating_add(value.len()))?;
    let mut bytes = current.unwrap_or_default();
    if bytes.len() < offset + value.len() {
        bytes.resize(offset + value.len(), 0);
    }
    if let Some(target) = bytes.get_mut(offset..offset + value.len()) {
        target.copy_from_slice(&value);
    }
    db.set_string(&key, &bytes, 0, true)?;
    Ok(Frame::Integer(i64::try_from(bytes.len()).unwrap_or(i64::MAX)))
}

/// Redis's start/end clamping for GETRANGE and LRANGE-like indexes: `None` when empty.
pub fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    let mut s = if start < 0 { n + start } else { start };
    let mut e = if end < 0 { n + end } else { end };
    s = s.max(0);
    e = e.max(0);
    if e >= n {
        e = n - 1;
    }
    if s > e || n == 0 {
        return None;
    }
    Some((usize::try_from(s).ok()?, usize::try_from(e).ok()?))
}

fn getrange(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (start, end) = (a.integer()?, a.integer()?);
    let value = db.get_string(&key)?.unwrap_or_default();
    if start < 0 && end < 0 && start > end {
        return Ok(Frame::bulk(""));
    }
    Ok(Frame::Bulk(match clamp_range(start, end, value.len()) {
        Some((s, e)) => value.get(s..=e).unwrap_or_default().to_vec(),
        None => Vec::new(),
    }))
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]
// The dynamic-programming table is indexed by loop counters bounded by its own dimensions.
#[allow(clippy::indexing_slicing)]
fn lcs(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (k1, k2) = (a.next_arg()?, a.next_arg()?);
    let (mut len_only, mut idx, mut min_len, mut with_len) = (false, false, 0i64, false);
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"LEN" => len_only = true,
            b"IDX" => idx = true,
            b"WITHMATCHLEN" => with_len = true,
            b"MINMATCHLEN" => min_len = a.integer()?.max(0),
            _ => return Err(syntax()),
        }
    }
    if len_only && idx {
        return Err(cmd_err("ERR If you want both the length and indexes, please just use IDX."));
    }
    let x = db.head(&k1)?;
    let y = db.head(&k2)?;
    if x.as_ref().is_some_and(|h| h.kind != Kind::String)
        || y.as_ref().is_some_and(|h| h.kind != Kind::String)
    {
        return Err(cmd_err("ERR The specified keys must contain string values"));
    }
    let (a_s, b_s) = (x.map(|h| h.value).unwrap_or_default(), y.map(|h| h.value).unwrap_or_default());
    let (n, m) = (a_s.len(), b_s.len());
    if (n + 1).saturating_mul(m + 1) > 64 * 1024 * 1024 {
        return Err(cmd_err("ERR Insufficient memory, transient memory for LCS exceeds the engine's limit"));
    }
    // dp[i][j]: LCS length of a[..i], b[..j].
    let w = m + 1;
    let mut dp = vec![0u32; (n + 1) * w];
    for i in 1..=n {
        for j in 1..=m {
            dp[i * w + j] = if a_s[i - 1] == b_s[j - 1] {
                dp[(i - 1) * w + j - 1] + 1
            } else {
                dp[(i - 1) * w + j].max(dp[i * w + j - 1])
            };
        }
    }
    let total = dp[n * w + m];
    if len_only {
        return Ok(Frame::Integer(i64::from(total)));
    }
    // Walk back, collecting the sequence and the matching ranges (last first, as Redis).
    let (mut i, mut j) = (n, m);
    let mut seq = Vec::with_capacity(total as usize);
    let mut matches: Vec<((usize, usize), (usize, usize))> = Vec::new();
    let mut current: Option<((usize, usize), (usize, usize))> = None;
    while i > 0 && j > 0 {
        if a_s[i - 1] == b_s[j - 1] {
            seq.push(a_s[i - 1]);
            let (ai, bj) = (i - 1, j - 1);
            current = match current {
                Some(((a0, a1), (b0, b1))) if a0 == ai + 1 && b0 == bj + 1 => Some(((ai, a1), (bj, b1))),
                Some(done) => {
                    matches.push(done);
                    Some(((ai, ai), (bj, bj)))
                }
                None => Some(((ai, ai), (bj, bj))),
            };
            i -= 1;
            j -= 1;
        } else if dp[(i - 1) * w + j] > dp[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    matches.extend(current);
    seq.reverse();
    if !idx {
        return Ok(Frame::Bulk(seq));
    }
    let int = |v: usize| Frame::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    let list = matches
        .into_iter()
        .filter(|((a0, a1), _)| i64::try_from(a1 - a0 + 1).unwrap_or(i64::MAX) >= min_len)
        .map(|((a0, a1), (b0, b1))| {
            let mut item = vec![Frame::Array(vec![int(a0), int(a1)]), Frame::Array(vec![int(b0), int(b1)])];
            if with_len {
                item.push(int(a1 - a0 + 1));
            }
            Frame::Array(item)
        })
        .collect();
    Ok(Frame::Map(vec![
        (Frame::bulk("matches"), Frame::Array(list)),
        (Frame::bulk("len"), Frame::Integer(i64::from(total))),
    ]))
}
