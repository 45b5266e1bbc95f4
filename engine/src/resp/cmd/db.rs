//! The Redis data model over nodes (storage::node): typed access to keys, expiry, and the
//! element nodes of collections, for reads on a snapshot and writes inside the writer alike.
//!
//! Reads hide a key whose expiry has passed; only the primary removes it, as a journaled
//! transaction (the expiry cycle, or a write that meets it), so a secondary never expires a
//! key on its own and both sides agree node for node.

use std::ops::Bound;

use crate::storage::Pairs;
use crate::storage::node::{self, Head, Kind};
use crate::storage::writer::{Abort, TxnView};
use crate::storage::{Range, Snapshot};

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Node access: a committed snapshot (read-only) or a transaction inside the writer.
pub trait Kv {
    fn get(&self, node: &[u8]) -> Result<Option<Vec<u8>>, Abort>;
    fn range(&self, range: Range<'_>, rev: bool, limit: usize) -> Result<Pairs, Abort>;
    fn put(&mut self, node: &[u8], value: &[u8]) -> Result<(), Abort>;
    /// [`Kv::put`] of a value the caller gives up.
    fn put_owned(&mut self, node: &[u8], value: Vec<u8>) -> Result<(), Abort> {
        self.put(node, &value)
    }
    fn remove(&mut self, node: &[u8]) -> Result<bool, Abort>;
}

/// A snapshot as [`Kv`]: reads only.
pub struct ReadOnly<'s>(pub &'s Snapshot);

fn internal_write() -> Abort {
    Abort::Command("ERR internal error: a read command tried to write".into())
}

impl Kv for ReadOnly<'_> {
    fn get(&self, node: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
        Ok(self.0.get(node)?)
    }
    fn range(&self, range: Range<'_>, rev: bool, limit: usize) -> Result<Pairs, Abort> {
        Ok(self.0.range(range, rev, limit)?)
    }
    fn put(&mut self, _: &[u8], _: &[u8]) -> Result<(), Abort> {
        Err(internal_write())
    }
    fn remove(&mut self, _: &[u8]) -> Result<bool, Abort> {
        Err(internal_write())
    }
}

impl Kv for TxnView<'_, '_> {
    fn get(&self, node: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
        TxnView::get(self, node)
    }
    fn range(&self, range: Range<'_>, rev: bool, limit: usize) -> Result<Pairs, Abort> {
        TxnView::range(self, range, rev, limit)
    }
    fn put(&mut self, node: &[u8], value: &[u8]) -> Result<(), Abort> {
        TxnView::set(self, node, value)
    }
    fn put_owned(&mut self, node: &[u8], value: Vec<u8>) -> Result<(), Abort> {
        TxnView::set_owned(self, node, value)
    }
    fn remove(&mut self, node: &[u8]) -> Result<bool, Abort> {
        TxnView::delete(self, node)
    }
}

/// How many nodes one range read takes at a time when a command walks a whole collection.
const BATCH: usize = 1024;
/// How many nodes one range read takes where values may be large and bytes are budgeted.
const SMALL_BATCH: usize = 8;

/// Largest collection (in elements, and in bytes of its nodes) whose elements a delete removes
/// in its own transaction; a larger one's become garbage for the reclaim cycle (as Redis
/// frees large values lazily).
pub const INLINE_DELETE_MAX: u64 = 64;
pub const INLINE_DELETE_BYTES_MAX: usize = 64 * 1024;

/// The data model over a [`Kv`], at one instant.
pub struct Db<'a> {
    pub kv: &'a mut dyn Kv,
    /// Unix milliseconds this command runs at: expiry is judged against it.
    pub now_ms: u64,
    /// The store's key counts, where the data is the committed state (reads outside MULTI):
    /// DBSIZE is then O(1); inside a transaction it walks the heads.
    pub counts: Option<crate::storage::KeyCounts>,
}

pub fn cmd_err(message: impl Into<String>) -> Abort {
    Abort::Command(message.into())
}

impl Db<'_> {
    /// The key's head, `None` if absent or expired.
    pub fn head(&self, key: &[u8]) -> Result<Option<Head>, Abort> {
        if crate::storage::format::is_system_key(key) {
            return Ok(self.kv.get(key)?.map(|v| Head::string(v, 0)));
        }
        Ok(self.raw_head(key)?.filter(|h| !h.expired(self.now_ms)))
    }

    fn raw_head(&self, key: &[u8]) -> Result<Option<Head>, Abort> {
        match self.kv.get(&node::head(key))? {
            None => Ok(None),
            Some(bytes) => Head::decode_owned(bytes).map(Some).ok_or_else(|| {
                cmd_err(format!("ERR key {} has an unreadable head node", String::from_utf8_lossy(key)))
            }),
        }
    }

    /// The key's head if it has type `kind`; `WRONGTYPE` if it has another.
    pub fn typed(&self, key: &[u8], kind: Kind) -> Result<Option<Head>, Abort> {
        match self.head(key)? {
            Some(h) if h.kind != kind => Err(cmd_err(WRONGTYPE)),
            other => Ok(other),
        }
    }

    /// Before a write to `key`: removes it if it has expired (a journaled removal, as Redis
    /// propagates a DEL), then returns its live head.
    pub fn head_for_write(&mut self, key: &[u8]) -> Result<Option<Head>, Abort> {
        if crate::storage::format::is_system_key(key) {
            return Err(cmd_err(format!(
                "ERR {} belongs to the engine (keys under {} are written only through its admin API)",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(crate::storage::format::SYSTEM_PREFIX)
            )));
        }
        match self.raw_head(key)? {
            Some(h) if h.expired(self.now_ms) => {
                self.delete_key(key, &h)?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// [`Db::head_for_write`] with a type check.
    pub fn typed_for_write(&mut self, key: &[u8], kind: Kind) -> Result<Option<Head>, Abort> {
        match self.head_for_write(key)? {
            Some(h) if h.kind != kind => Err(cmd_err(WRONGTYPE)),
            other => Ok(other),
        }
    }

    /// Opens `key` as a collection of `kind` for writing: its live head as stored (`None`
    /// when absent) and the head to update (a new, empty one when absent).
    pub fn open(&mut self, key: &[u8], kind: Kind) -> Result<(Option<Head>, Head), Abort> {
        let old = self.typed_for_write(key, kind)?;
        let head = old.clone().unwrap_or_else(|| Head::collection(kind));
        Ok((old, head))
    }

    /// Writes `key`'s head, keeping the expiry index in step with `old` (the head it replaces).
    pub fn put_head(&mut self, key: &[u8], old: Option<&Head>, new: &Head) -> Result<(), Abort> {
        self.put_head_node(key, old.map_or(0, |h| h.expire_at_ms), new.expire_at_ms, new.encode())
    }

    /// Writes `key`'s encoded head, moving its expiry node from `old_at` to `new_at`.
    fn put_head_node(&mut self, key: &[u8], old_at: u64, new_at: u64, encoded: Vec<u8>) -> Result<(), Abort> {
        if old_at != new_at {
            if old_at != 0 {
                self.kv.remove(&node::expiry(old_at, key))?;
            }
            if new_at != 0 {
                self.kv.put(&node::expiry(new_at, key), b"")?;
            }
        }
        self.kv.put_owned(&node::head(key), encoded)
    }

    /// Writes a collection's head after its element count changed; removes the key when the
    /// collection became empty (Redis never keeps an empty collection), with any node its
    /// elements leave behind (a sorted set's rank index).
    pub fn store_collection(&mut self, key: &[u8], old: Option<&Head>, new: &Head) -> Result<(), Abort> {
        if new.len == 0 {
            if let Some(old) = old {
                self.remove_elements(key, old.generation)?;
                self.remove_head(key, old)?;
            }
            return Ok(());
        }
        if old.is_some_and(|o| {
            o.len == new.len
                && o.first == new.first
                && o.expire_at_ms == new.expire_at_ms
                && o.generation == new.generation
        }) {
            return Ok(());
        }
        self.put_head(key, old, new)
    }

    fn remove_head(&mut self, key: &[u8], head: &Head) -> Result<(), Abort> {
        if head.expire_at_ms != 0 {
            self.kv.remove(&node::expiry(head.expire_at_ms, key))?;
        }
        self.kv.remove(&node::head(key))?;
        Ok(())
    }

    /// Removes `key` whole: its head, its expiry index node, and its elements — at once for a
    /// collection of at most [`INLINE_DELETE_MAX`] elements and [`INLINE_DELETE_BYTES_MAX`]
    /// bytes; a larger one's elements become
    /// garbage (one node), which the primary's reclaim cycle removes in bounded transactions,
    /// so deleting a collection of any size is one small transaction.
    pub fn delete_key(&mut self, key: &[u8], head: &Head) -> Result<(), Abort> {
        self.delete_key_as(key, head, false)
    }

    /// [`Db::delete_key`], with `lazily`: every collection's elements become garbage, however
    /// small (FLUSHALL: its transaction then grows with the keys, not their elements).
    pub fn delete_key_as(&mut self, key: &[u8], head: &Head, lazily: bool) -> Result<(), Abort> {
        if head.kind != Kind::String && lazily {
            self.kv.put(&node::garbage(key, head.generation), b"")?;
        } else if head.kind != Kind::String {
            // Two nodes per sorted-set member (and an index): up to three nodes an element.
            let small = head.len <= INLINE_DELETE_MAX
                && self.prefix_within(
                    &node::elements(key, head.generation),
                    usize::try_from(INLINE_DELETE_MAX * 3).unwrap_or(usize::MAX),
                    INLINE_DELETE_BYTES_MAX,
                )?;
            if small {
                self.remove_elements(key, head.generation)?;
            } else {
                self.kv.put(&node::garbage(key, head.generation), b"")?;
            }
        }
        self.remove_head(key, head)
    }

    /// Whether the nodes under `prefix` number at most `max_nodes` and take at most
    /// `max_bytes` (names and values), read a few at a time so a large value is never read
    /// beside many others.
    fn prefix_within(&self, prefix: &[u8], max_nodes: usize, max_bytes: usize) -> Result<bool, Abort> {
        let end = node::prefix_end(prefix);
        let (mut nodes, mut bytes) = (0usize, 0usize);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let lower = after.as_deref().map_or(Bound::Included(prefix), Bound::Excluded);
            let batch = self.kv.range((lower, end_bound(end.as_deref())), false, SMALL_BATCH)?;
            let done = batch.len() < SMALL_BATCH;
            for (n, v) in &batch {
                nodes += 1;
                bytes += n.len() + v.len();
                if nodes > max_nodes || bytes > max_bytes {
                    return Ok(false);
                }
            }
            if done {
                return Ok(true);
            }
            after = batch.into_iter().last().map(|(n, _)| n);
        }
    }

    /// Removes every element node of generation `generation` of `key`.
    fn remove_elements(&mut self, key: &[u8], generation: u64) -> Result<(), Abort> {
        self.remove_under(&node::elements(key, generation), usize::MAX, usize::MAX)?;
        Ok(())
    }

    /// Removes nodes under `prefix`, in order, until `max_nodes` nodes or `max_bytes` bytes
    /// (names and values) are gone; (nodes removed, bytes removed, whether none is left). With
    /// a byte budget it reads a few nodes at a time, as values can be large.
    fn remove_under(
        &mut self,
        prefix: &[u8],
        max_nodes: usize,
        max_bytes: usize,
    ) -> Result<(usize, usize, bool), Abort> {
        let end = node::prefix_end(prefix);
        let batch_size = if max_bytes == usize::MAX { BATCH } else { SMALL_BATCH };
        let (mut removed, mut bytes) = (0usize, 0usize);
        loop {
            if removed >= max_nodes || bytes >= max_bytes {
                return Ok((removed, bytes, false));
            }
            let want = (max_nodes - removed).min(batch_size);
            let batch = self.kv.range((Bound::Included(prefix), end_bound(end.as_deref())), false, want)?;
            let emptied = batch.len() < want;
            for (n, v) in batch {
                if bytes >= max_bytes {
                    return Ok((removed, bytes, false));
                }
                bytes = bytes.saturating_add(n.len() + v.len());
                self.kv.remove(&n)?;
                removed += 1;
            }
            if emptied {
                return Ok((removed, bytes, true));
            }
        }
    }

    /// One step of the reclaim cycle: removes element nodes of deleted collections, garbage
    /// in key order, until `max_nodes` nodes or `max_bytes` bytes (names and values) are
    /// removed, and each garbage node whose elements are all gone. Returns how many element
    /// nodes it removed, and whether garbage is left.
    pub fn reclaim(&mut self, max_nodes: usize, max_bytes: usize) -> Result<(usize, bool), Abort> {
        let (mut removed, mut bytes) = (0usize, 0usize);
        loop {
            let next = self.kv.range(
                (Bound::Included(node::GARBAGE_START), Bound::Excluded(node::GARBAGE_END)),
                false,
                1,
            )?;
            let Some((garbage, _)) = next.into_iter().next() else { return Ok((removed, false)) };
            let prefix = garbage.get(1..).unwrap_or_default();
            let (n, b, emptied) = self.remove_under(
                prefix,
                max_nodes.saturating_sub(removed),
                max_bytes.saturating_sub(bytes),
            )?;
            (removed, bytes) = (removed + n, bytes + b);
            if !emptied {
                return Ok((removed, true));
            }
            self.kv.remove(&garbage)?;
        }
    }

    /// Removes `key` if it is live; whether it was.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Abort> {
        match self.head_for_write(key)? {
            Some(h) => {
                self.delete_key(key, &h)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A string key's value (`WRONGTYPE` for another type).
    pub fn get_string(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
        Ok(self.typed(key, Kind::String)?.map(|h| h.value))
    }

    /// Sets a string value, replacing whatever `key` held. `keep_ttl`: keep a live key's
    /// expiry; otherwise the key gets `expire_at_ms` (0: none).
    pub fn set_string(
        &mut self,
        key: &[u8],
        value: &[u8],
        expire_at_ms: u64,
        keep_ttl: bool,
    ) -> Result<(), Abort> {
        crate::resp::cmd::check_value_len(value.len())?;
        let old = self.head_for_write(key)?;
        self.store_string(key, old.as_ref(), value, expire_at_ms, keep_ttl)
    }

    /// [`Db::set_string`] over `old`, the head [`Db::head_for_write`] just gave for `key`.
    pub fn store_string(
        &mut self,
        key: &[u8],
        old: Option<&Head>,
        value: &[u8],
        expire_at_ms: u64,
        keep_ttl: bool,
    ) -> Result<(), Abort> {
        crate::resp::cmd::check_value_len(value.len())?;
        let at = match (old, keep_ttl) {
            (Some(h), true) => h.expire_at_ms,
            _ => expire_at_ms,
        };
        let mut old_at = old.map_or(0, |h| h.expire_at_ms);
        if let Some(h) = old.filter(|h| h.kind != Kind::String) {
            self.delete_key(key, h)?;
            old_at = 0;
        }
        self.put_head_node(key, old_at, at, Head::encode_string(value, at))
    }

    /// One element node's value (`generation`: the collection's, from its head).
    pub fn element(
        &self,
        key: &[u8],
        generation: u64,
        tag: u8,
        sub: &[u8],
    ) -> Result<Option<Vec<u8>>, Abort> {
        self.kv.get(&node::element(key, generation, tag, sub))
    }

    pub fn put_element(
        &mut self,
        key: &[u8],
        generation: u64,
        tag: u8,
        sub: &[u8],
        value: &[u8],
    ) -> Result<(), Abort> {
        self.kv.put(&node::element(key, generation, tag, sub), value)
    }

    pub fn remove_element(
        &mut self,
        key: &[u8],
        generation: u64,
        tag: u8,
        sub: &[u8],
    ) -> Result<bool, Abort> {
        self.kv.remove(&node::element(key, generation, tag, sub))
    }

    /// Up to `limit` elements of `key` (generation `generation`) under `tag`, as (sub,
    /// value), starting at `from` (a bound on the sub: `Unbounded` is the first, or with
    /// `rev` the last) and walking up, or down with `rev`.
    pub fn elements(
        &self,
        key: &[u8],
        generation: u64,
        tag: u8,
        from: Bound<&[u8]>,
        rev: bool,
        limit: usize,
    ) -> Result<Pairs, Abort> {
        let span = if rev { (Bound::Unbounded, from) } else { (from, Bound::Unbounded) };
        self.elements_between(key, generation, tag, span, rev, limit)
    }

    /// Up to `limit` elements of `key` under `tag` whose subs lie between `lo` and `hi`, as
    /// (sub, value), in order (from the high end with `rev`).
    pub fn elements_between(
        &self,
        key: &[u8],
        generation: u64,
        tag: u8,
        (lo, hi): (Bound<&[u8]>, Bound<&[u8]>),
        rev: bool,
        limit: usize,
    ) -> Result<Pairs, Abort> {
        let prefix = node::elements_of(key, generation, tag);
        let end = node::prefix_end(&prefix);
        let full = |sub: &[u8]| [prefix.as_slice(), sub].concat();
        let (lo_node, hi_node) = (lo.map(full), hi.map(full));
        let lower = match &lo_node {
            Bound::Included(n) => Bound::Included(n.as_slice()),
            Bound::Excluded(n) => Bound::Excluded(n.as_slice()),
            Bound::Unbounded => Bound::Included(prefix.as_slice()),
        };
        let upper = match &hi_node {
            Bound::Included(n) => Bound::Included(n.as_slice()),
            Bound::Excluded(n) => Bound::Excluded(n.as_slice()),
            Bound::Unbounded => end_bound(end.as_deref()),
        };
        let skip = prefix.len();
        Ok(self
            .kv
            .range((lower, upper), rev, limit)?
            .into_iter()
            .map(|(n, v)| (n.get(skip..).unwrap_or_default().to_vec(), v))
            .collect())
    }

    /// Every element of `key` under `tag` (collections larger than a batch are read in
    /// batches).
    pub fn all_elements(&self, key: &[u8], generation: u64, tag: u8) -> Result<Pairs, Abort> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let from = match out.last() {
                Some((s, _)) => Bound::Excluded(s.as_slice()),
                None => Bound::Unbounded,
            };
            let batch = self.elements(key, generation, tag, from, false, BATCH)?;
            let done = batch.len() < BATCH;
            out.extend(batch);
            if done {
                return Ok(out);
            }
        }
    }

    /// Live keys in order after `after` (exclusive), up to `limit` heads visited; returns
    /// the keys with their heads and whether more heads follow.
    pub fn keys_after(&self, after: Option<&[u8]>, limit: usize) -> Result<KeysPage, Abort> {
        let after_node = after.map(node::head);
        let lower = match after_node.as_deref() {
            Some(n) => Bound::Excluded(n),
            None => Bound::Included(node::HEADS_START),
        };
        let batch = self.kv.range((lower, Bound::Excluded(node::HEADS_END)), false, limit)?;
        let last = if batch.len() == limit {
            batch.last().map(|(n, _)| n.get(1..).unwrap_or_default().to_vec())
        } else {
            None
        };
        let keys = batch
            .into_iter()
            .filter_map(|(n, v)| {
                let head = Head::decode(&v)?;
                (!head.expired(self.now_ms)).then(|| (n.get(1..).unwrap_or_default().to_vec(), head))
            })
            .collect();
        Ok((keys, last))
    }

    /// Every live key (KEYS, FLUSHALL), in batches.
    pub fn all_keys(&self) -> Result<Vec<(Vec<u8>, Head)>, Abort> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (keys, last) = self.keys_after(after.as_deref(), BATCH)?;
            out.extend(keys);
            match last {
                Some(l) => after = Some(l),
                None => return Ok(out),
            }
        }
    }

    /// Heads present, expired or not (DBSIZE counts what Redis would still hold).
    pub fn count_keys(&self) -> Result<u64, Abort> {
        if let Some(c) = self.counts {
            return Ok(c.keys);
        }
        let mut n = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let lower_node = after.as_deref().map(node::head);
            let lower = match lower_node.as_deref() {
                Some(x) => Bound::Excluded(x),
                None => Bound::Included(node::HEADS_START),
            };
            let batch = self.kv.range((lower, Bound::Excluded(node::HEADS_END)), false, BATCH)?;
            n += batch.len() as u64;
            if batch.len() < BATCH {
                return Ok(n);
            }
            after = batch.last().map(|(k, _)| k.get(1..).unwrap_or_default().to_vec());
        }
    }
}

/// Live keys with their heads, and the key to resume after (`None`: no more).
pub type KeysPage = (Vec<(Vec<u8>, Head)>, Option<Vec<u8>>);

fn end_bound(end: Option<&[u8]>) -> Bound<&[u8]> {
    match end {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    }
}
