//! DUMP and RESTORE in Strand's own serialized form, and TIME, SAVE and SHUTDOWN.
//!
//! A DUMP payload is `ST`, a format version, the type, its elements, and a CRC-32 of all of
//! it. It moves a key between Strand instances (or back into the same one); it is not
//! Redis's RDB encoding, which describes Redis's internal encodings Strand does not have, so
//! RESTORE refuses a payload made by Redis with a clear error.

use super::db::{Db, cmd_err};
use super::{Args, K1, NOKEY, R, RF, Spec, W, data};
use crate::frame::Frame;
use crate::storage::node::{HASH_FIELD, Head, Kind, LIST_ITEM, SET_MEMBER, ZSET_ORDER};
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[
    data("dump", 2, R, K1, dump),
    data("restore", -4, W, K1, restore),
    data("time", 1, RF, NOKEY, time),
    data("save", 1, NO_MULTI, NOKEY, save),
    data("shutdown", -1, NO_MULTI, NOKEY, shutdown),
];

/// Commands a transaction may not hold (Redis's `no-multi`).
const NO_MULTI: &[&str] = &["readonly", "no-multi"];

const MAGIC: &[u8] = b"ST";
const VERSION: u8 = 1;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// The payload of `key`'s value, `None` when the key is absent.
pub fn serialize(db: &Db<'_>, key: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
    let Some(head) = db.head(key)? else { return Ok(None) };
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    match head.kind {
        Kind::String => {
            out.push(b's');
            put_bytes(&mut out, &head.value);
        }
        Kind::Hash | Kind::Set | Kind::List => {
            let (tag, node) = match head.kind {
                Kind::Hash => (b'h', HASH_FIELD),
                Kind::Set => (b'S', SET_MEMBER),
                _ => (b'l', LIST_ITEM),
            };
            out.push(tag);
            let items = db.all_elements(key, head.generation, node)?;
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for (sub, value) in items {
                match head.kind {
                    Kind::Hash => {
                        put_bytes(&mut out, &sub);
                        put_bytes(&mut out, &value);
                    }
                    Kind::Set => put_bytes(&mut out, &sub),
                    _ => put_bytes(&mut out, &value),
                }
            }
        }
        Kind::ZSet => {
            out.push(b'z');
            let items = db.all_elements(key, head.generation, ZSET_ORDER)?;
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for (sub, _) in items {
                if let Some((score, member)) = sub.split_first_chunk::<8>() {
                    put_bytes(&mut out, member);
                    out.extend_from_slice(
                        &crate::storage::node::from_sortable_f64(*score).to_bits().to_le_bytes(),
                    );
                }
            }
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(Some(out))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<usize> {
        usize::try_from(u32::from_le_bytes(*self.take(4)?.first_chunk::<4>()?)).ok()
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(*self.take(8)?.first_chunk::<8>()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()?;
        Some(self.take(n)?.to_vec())
    }
}

/// A decoded payload.
enum Value {
    String(Vec<u8>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Set(Vec<Vec<u8>>),
    List(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
}

fn deserialize(payload: &[u8]) -> Option<Value> {
    let (body, crc) = payload.split_last_chunk::<4>()?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) || !body.starts_with(MAGIC) {
        return None;
    }
    let mut r = Reader(body.get(MAGIC.len()..)?);
    if r.take(1)? != [VERSION] {
        return None;
    }
    let tag = *r.take(1)?.first()?;
    let value = match tag {
        b's' => Value::String(r.bytes()?),
        _ => {
            let n = r.u64()?;
            // Each element takes at least 4 bytes: a count larger than the payload is a lie.
            if n > body.len() as u64 {
                return None;
            }
            let n = usize::try_from(n).ok()?;
            match tag {
                b'h' => Value::Hash((0..n).map(|_| Some((r.bytes()?, r.bytes()?))).collect::<Option<_>>()?),
                b'S' => Value::Set((0..n).map(|_| r.bytes()).collect::<Option<_>>()?),
                b'l' => Value::List((0..n).map(|_| r.bytes()).collect::<Option<_>>()?),
                b'z' => Value::ZSet(
                    (0..n).map(|_| Some((r.bytes()?, f64::from_bits(r.u64()?)))).collect::<Option<_>>()?,
                ),
                _ => return None,
            }
        }
    };
    r.0.is_empty().then_some(value)
}

fn dump(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    Ok(Frame::from_option(serialize(db, &a.next_arg()?)?))
}

/// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]
fn restore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let ttl = a.integer()?;
    let payload = a.next_arg()?;
    let (mut replace, mut absttl) = (false, false);
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"REPLACE" => replace = true,
            b"ABSTTL" => absttl = true,
            // LRU/LFU hints: Strand does no eviction, so they are accepted and have no effect.
            b"IDLETIME" | b"FREQ" => {
                if a.integer()? < 0 {
                    return Err(cmd_err("ERR Invalid IDLETIME or FREQ value, must be >= 0"));
                }
            }
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    if ttl < 0 {
        return Err(cmd_err("ERR Invalid TTL value, must be >= 0"));
    }
    let value = deserialize(&payload).ok_or_else(|| {
        cmd_err("ERR DUMP payload version or checksum are wrong (Strand restores only payloads made by Strand's DUMP)")
    })?;
    if let Some(existing) = db.head_for_write(&key)? {
        if !replace {
            return Err(cmd_err("BUSYKEY Target key name already exists."));
        }
        db.delete_key(&key, &existing)?;
    }
    let ttl = ttl.unsigned_abs();
    let at = match (ttl, absttl) {
        (0, _) => 0,
        (t, true) => t,
        (t, false) => db.now_ms.saturating_add(t),
    };
    if at != 0 && at <= db.now_ms {
        return Ok(Frame::ok()); // already expired: nothing to create
    }
    match value {
        Value::String(v) => db.set_string(&key, &v, at, false)?,
        Value::Hash(pairs) => {
            let mut head = Head::collection(Kind::Hash);
            for (f, v) in pairs {
                if db.element(&key, head.generation, HASH_FIELD, &f)?.is_none() {
                    head.len += 1;
                }
                db.put_element(&key, head.generation, HASH_FIELD, &f, &v)?;
            }
            finish(db, &key, head, at)?;
        }
        Value::Set(members) => {
            let mut head = Head::collection(Kind::Set);
            for m in members {
                super::sets::add(db, &key, &mut head, &m)?;
            }
            finish(db, &key, head, at)?;
        }
        Value::List(items) => {
            let mut head = Head::collection(Kind::List);
            for v in items {
                super::lists::push(db, &key, &mut head, super::lists::End::Right, &v)?;
            }
            finish(db, &key, head, at)?;
        }
        Value::ZSet(items) => {
            let mut head = Head::collection(Kind::ZSet);
            for (m, s) in items {
                if s.is_nan() {
                    return Err(cmd_err("ERR Bad data format"));
                }
                super::zsets::put(db, &key, &mut head, &m, s)?;
            }
            finish(db, &key, head, at)?;
        }
    }
    Ok(Frame::ok())
}

fn finish(db: &mut Db<'_>, key: &[u8], mut head: Head, at: u64) -> Result<(), Abort> {
    head.expire_at_ms = at;
    db.store_collection(key, None, &head)
}

fn time(db: &mut Db<'_>, _: &mut Args) -> Result<Frame, Abort> {
    let micros = crate::storage::now_micros();
    let _ = db;
    Ok(Frame::Array(vec![
        Frame::bulk((micros / 1_000_000).to_string()),
        Frame::bulk((micros % 1_000_000).to_string()),
    ]))
}

/// SHUTDOWN: not from the data port. The engine stops on SIGTERM, from its supervisor or the
/// operator, which keep the family's roles right while it does.
fn shutdown(_: &mut Db<'_>, _: &mut Args) -> Result<Frame, Abort> {
    Err(cmd_err(
        "ERR SHUTDOWN is not available on the data port: stop the engine with SIGTERM (its supervisor or the Strand operator does)",
    ))
}

/// SAVE: every acknowledged write is already durable in the journal, so there is nothing
/// to save; answers OK without writing anything.
fn save(_: &mut Db<'_>, _: &mut Args) -> Result<Frame, Abort> {
    Ok(Frame::ok())
}
