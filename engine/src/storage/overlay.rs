//! The overlay: every node written since the last checkpoint, versioned by journal seqno
//! (decision 0002, step 2).
//!
//! The journal is the write-ahead log, so the database file (the *base*) lags the journal:
//! it reflects the checkpoint seqno C, and everything committed after C lives here until a
//! checkpoint applies it. The overlay is a list of [`Generation`]s, oldest first: the last one
//! is *active* (the writer adds to it), the others are *frozen* (immutable, waiting for the
//! checkpointer). A reader pins a [`SuperVersion`] — the list as it stood — and reads a node at
//! a seqno S from the newest overlay version ≤ S, else from the base.
//!
//! Each node in a generation keeps every version written to it there, and the value it had
//! before the first of them (the transaction's before-image, free from the journal record).
//! That value is what makes a read correct when the base is *newer* than the reader's seqno:
//! a checkpoint may apply a generation to the base between a reader's pin and its base
//! snapshot, and a node whose every overlay version is above S then reads as it stood before
//! them, not as the base now holds it.
//!
//! The one rule callers keep: a reader opens its base snapshot inside [`Overlay::pin_with`],
//! and a generation is removed only after the base holds it ([`Overlay::checkpointed`]). Then
//! every generation the base snapshot already reflects is in the pinned list, so a node the
//! pinned list does not hold is unchanged in the base since the pinned checkpoint.
//!
//! Only the writer thread calls [`Overlay::apply`] and [`Overlay::freeze`]; the checkpointer
//! applies a frozen generation only once its last seqno is durable.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use smallvec::{SmallVec, smallvec};

use super::{Pairs, Range, StreamSeqnos};

/// One node's change in one transaction: its value before and after (`None`: absent).
#[derive(Debug, Clone, Copy)]
pub struct NodeChange<'a> {
    pub key: &'a [u8],
    pub before: Option<&'a [u8]>,
    pub after: Option<&'a [u8]>,
}

/// Bytes a version costs beyond its key and value (seqno, option, list slot).
const VERSION_OVERHEAD: usize = 32;

/// One version of a node: the transaction's seqno and the value it left (`None`: absent).
type Version = (u64, Option<Box<[u8]>>);

/// The versions of one node inside one generation.
#[derive(Debug)]
struct Versions {
    /// The node's value before this generation's first version of it.
    before: Option<Box<[u8]>>,
    /// `(seqno, value)` in ascending seqno order; most nodes have one version in a
    /// generation, kept inline (one allocation fewer per node written).
    list: SmallVec<[Version; 1]>,
}

/// The value a generation gives a node at a seqno.
enum AtSeqno<'a> {
    /// The newest version at or below the seqno.
    Version(Option<&'a [u8]>),
    /// Every version here is above the seqno: the node stood as before them.
    Before(Option<&'a [u8]>),
}

impl Versions {
    fn at(&self, seqno: u64) -> AtSeqno<'_> {
        let visible = self.list.partition_point(|(s, _)| *s <= seqno);
        match visible.checked_sub(1).and_then(|i| self.list.get(i)) {
            Some((_, value)) => AtSeqno::Version(value.as_deref()),
            None => AtSeqno::Before(self.before.as_deref()),
        }
    }
}

/// Most nodes a new generation makes room for up front (it takes the size of the one before).
/// The room is about 37 MiB of hash table at this cap, which the overlay's byte count does
/// not see (its pages become resident as nodes fill them, as they would by growing; an idle
/// generation holds the address space); a generation larger than this grows and rehashes
/// past it, three doublings at most at the default `--checkpoint-bytes`.
const GENERATION_NODES_PRESIZED_MAX: usize = 1 << 18;

/// A node's key in a generation's ordered set, with its first 16 bytes beside the pointer.
///
/// The B-tree compares a new key with tens of others; comparing slices behind pointers made
/// each comparison a cache miss and a `memcmp` call (a fifth of the writer's time applying a
/// replication backlog). Keys that differ in their first 16 bytes — head nodes, `'K'` and
/// the key — are ordered by the inline prefix alone. The order is the slices' own (a prefix
/// is the first bytes, big-endian, zero-padded: at the first byte where two padded
/// prefixes differ, either both keys have a byte, or the shorter one has ended, and a key
/// that ends first sorts first), so the set is searched by `&[u8]` as well. The derived
/// comparisons take the fields in order: the prefix, then the whole key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OrderKey {
    prefix: u128,
    key: Arc<[u8]>,
}

impl OrderKey {
    fn new(key: Arc<[u8]>) -> OrderKey {
        let mut head = [0u8; 16];
        for (slot, byte) in head.iter_mut().zip(key.iter()) {
            *slot = *byte;
        }
        OrderKey { prefix: u128::from_be_bytes(head), key }
    }
}

impl Borrow<[u8]> for OrderKey {
    fn borrow(&self) -> &[u8] {
        &self.key
    }
}

/// Nodes written during one stretch of seqnos, and the journal records that wrote them.
#[derive(Debug, Default)]
pub struct Generation {
    inner: RwLock<Inner>,
    bytes: AtomicUsize,
    /// Highest seqno of a record (or of changes given with [`Overlay::apply`]) here; 0 while
    /// empty. A transaction's node writes do not move it: it may still abort.
    last_seqno: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every node's versions, by node: point reads and writes (a hash lookup, where a B-tree
    /// search compares the key a hundred times).
    nodes: HashMap<Arc<[u8]>, Versions>,
    /// The same nodes in order: range reads and checkpoints.
    order: BTreeSet<OrderKey>,
    /// Encoded journal records by seqno, ascending.
    records: Vec<(u64, Vec<u8>)>,
    /// Last stream seqno of every stream as of this generation's last record.
    streams: StreamSeqnos,
}

impl Generation {
    /// An empty generation with room for `nodes` nodes (capped), so that one as large as the
    /// last does not rehash its whole map each time it doubles.
    fn with_capacity(nodes: usize) -> Generation {
        let nodes = HashMap::with_capacity(nodes.min(GENERATION_NODES_PRESIZED_MAX));
        Generation { inner: RwLock::new(Inner { nodes, ..Inner::default() }), ..Generation::default() }
    }

    /// Nodes held here.
    fn nodes(&self) -> usize {
        self.read().nodes.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds transaction `seqno`'s changes (seqnos only grow).
    fn apply(&self, seqno: u64, changes: &[NodeChange<'_>]) {
        for change in changes {
            self.put(seqno, change.key, change.before, change.after);
        }
        self.last_seqno.fetch_max(seqno, Ordering::Release);
    }

    /// Writes `key` as of transaction `seqno` (at or above every seqno here); `before` is its
    /// value before the write, kept if this is the generation's first version of it. A second
    /// write of `key` by the same transaction replaces the first.
    pub fn put(&self, seqno: u64, key: &[u8], before: Option<&[u8]>, after: Option<&[u8]>) {
        let mut inner = self.write();
        let value = after.map(Box::<[u8]>::from);
        let mut added = VERSION_OVERHEAD + after.map_or(0, <[u8]>::len);
        let mut freed = 0;
        match inner.nodes.get_mut(key) {
            Some(versions) => match versions.list.last_mut() {
                Some((last, current)) if *last == seqno => {
                    freed = VERSION_OVERHEAD + current.as_ref().map_or(0, |v| v.len());
                    *current = value;
                }
                _ => versions.list.push((seqno, value)),
            },
            None => {
                added += key.len() + before.map_or(0, <[u8]>::len);
                let before = before.map(Box::<[u8]>::from);
                let key: Arc<[u8]> = key.into();
                inner.order.insert(OrderKey::new(Arc::clone(&key)));
                inner.nodes.insert(key, Versions { before, list: smallvec![(seqno, value)] });
            }
        }
        drop(inner);
        self.bytes.fetch_add(added, Ordering::Relaxed);
        self.release(freed);
    }

    /// Takes `n` bytes off the count (never below zero).
    fn release(&self, n: usize) {
        let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(n)));
    }

    /// Takes transaction `seqno`'s version of `key` out again (the transaction aborted): the
    /// node stands as before it, and is forgotten if that version was its only one here.
    pub fn unput(&self, seqno: u64, key: &[u8]) {
        let mut inner = self.write();
        let Some(versions) = inner.nodes.get_mut(key) else { return };
        let mut freed = 0;
        if versions.list.last().is_some_and(|(last, _)| *last == seqno)
            && let Some((_, value)) = versions.list.pop()
        {
            freed = VERSION_OVERHEAD + value.map_or(0, |v| v.len());
        }
        if versions.list.is_empty() {
            freed += key.len() + versions.before.as_ref().map_or(0, |v| v.len());
            inner.nodes.remove(key);
            inner.order.remove(key);
        }
        drop(inner);
        self.release(freed);
    }

    /// Adds transaction `seqno`'s encoded journal record (tests; the writer adds a group's
    /// records at once with [`Generation::add_records`]).
    #[cfg(test)]
    pub fn add_record(&self, seqno: u64, record: &[u8]) {
        self.add_records(seqno, std::iter::once(record.to_vec()));
    }

    /// Adds the encoded journal records of transactions `first`, `first + 1` …
    pub fn add_records(&self, first: u64, records: impl ExactSizeIterator<Item = Vec<u8>>) {
        let Some(last) = (records.len() as u64).checked_sub(1).map(|n| first + n) else { return };
        let mut inner = self.write();
        let mut added = 0;
        for (seqno, record) in (first..).zip(records) {
            added += record.len() + VERSION_OVERHEAD;
            inner.records.push((seqno, record));
        }
        // Counted under the lock: `discard_above` recounts under it from another thread.
        self.bytes.fetch_add(added, Ordering::Relaxed);
        drop(inner);
        self.last_seqno.fetch_max(last, Ordering::Release);
    }

    /// Records the stream seqnos as of this generation's last record.
    pub fn set_streams(&self, streams: StreamSeqnos) {
        self.write().streams = streams;
    }

    /// The stream seqnos as of this generation's last record.
    pub fn streams(&self) -> StreamSeqnos {
        self.read().streams
    }

    /// Forgets every version and record above `seqno` (a group that failed to become durable).
    pub fn discard_above(&self, seqno: u64) {
        let mut inner = self.write();
        inner.nodes.retain(|_, versions| {
            versions.list.retain(|(s, _)| *s <= seqno);
            !versions.list.is_empty()
        });
        let Inner { nodes, order, .. } = &mut *inner;
        order.retain(|key| nodes.contains_key(&key.key));
        inner.records.retain(|(s, _)| *s <= seqno);
        let held: usize = inner
            .nodes
            .iter()
            .map(|(k, v)| {
                k.len()
                    + v.before.as_ref().map_or(0, |b| b.len())
                    + v.list
                        .iter()
                        .map(|(_, x)| VERSION_OVERHEAD + x.as_ref().map_or(0, |x| x.len()))
                        .sum::<usize>()
            })
            .sum::<usize>()
            + inner.records.iter().map(|(_, r)| r.len() + VERSION_OVERHEAD).sum::<usize>();
        self.bytes.store(held, Ordering::Relaxed);
        drop(inner);
        let _ =
            self.last_seqno.fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(last.min(seqno)));
    }

    /// A copy holding only the versions and records at or below `seqno`, with `streams` as
    /// its stream seqnos (a rollback to `seqno`); the nodes whose every version lies above
    /// `seqno` are left out. Keys are shared with this generation, values copied.
    fn copy_upto(&self, seqno: u64, streams: StreamSeqnos) -> Generation {
        let inner = self.read();
        let mut copy =
            Inner { nodes: HashMap::with_capacity(inner.nodes.len()), streams, ..Inner::default() };
        let (mut bytes, mut last) = (0, 0);
        for OrderKey { key, .. } in &inner.order {
            let Some(versions) = inner.nodes.get(key) else { continue };
            let list: SmallVec<[Version; 1]> =
                versions.list.iter().take_while(|(s, _)| *s <= seqno).cloned().collect();
            let Some((newest, _)) = list.last() else { continue };
            last = last.max(*newest);
            bytes += key.len()
                + versions.before.as_ref().map_or(0, |b| b.len())
                + list
                    .iter()
                    .map(|(_, v)| VERSION_OVERHEAD + v.as_ref().map_or(0, |v| v.len()))
                    .sum::<usize>();
            copy.order.insert(OrderKey::new(Arc::clone(key)));
            copy.nodes.insert(Arc::clone(key), Versions { before: versions.before.clone(), list });
        }
        let kept = inner.records.partition_point(|(s, _)| *s <= seqno);
        copy.records = inner.records.get(..kept).unwrap_or_default().to_vec();
        bytes += copy.records.iter().map(|(_, r)| r.len() + VERSION_OVERHEAD).sum::<usize>();
        last = last.max(copy.records.last().map_or(0, |(s, _)| *s));
        Generation {
            inner: RwLock::new(copy),
            bytes: AtomicUsize::new(bytes),
            last_seqno: AtomicU64::new(last),
        }
    }

    /// Approximate memory the generation holds.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Highest seqno applied here (0 while empty): the checkpoint seqno once the base holds it.
    pub fn last_seqno(&self) -> u64 {
        self.last_seqno.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        let inner = self.read();
        inner.nodes.is_empty() && inner.records.is_empty()
    }

    /// Calls `f` with every node's last value here, in node order: what a checkpoint writes.
    pub fn try_for_each_last<E>(
        &self,
        mut f: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let inner = self.read();
        for OrderKey { key, .. } in &inner.order {
            let Some(versions) = inner.nodes.get(key) else { continue };
            let last = versions.list.last().map_or(versions.before.as_deref(), |(_, v)| v.as_deref());
            f(key, last)?;
        }
        Ok(())
    }

    /// Calls `f` with every record here, in seqno order: what a checkpoint appends.
    pub fn try_for_each_record<E>(&self, mut f: impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<(), E> {
        for (seqno, record) in &self.read().records {
            f(*seqno, record)?;
        }
        Ok(())
    }

    /// The first node of this generation inside `(lo, hi)`: the lowest, or with `rev` the highest.
    fn edge(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>, rev: bool) -> Option<Vec<u8>> {
        let inner = self.read();
        let mut range = inner.order.range::<[u8], _>((lo, hi));
        let key = if rev { range.next_back() } else { range.next() };
        key.map(|k| k.key.to_vec())
    }
}

/// The overlay's generations as one reader pinned them.
#[derive(Debug)]
pub struct SuperVersion {
    /// Oldest first; the last is the active one as of the pin.
    generations: Vec<Arc<Generation>>,
    /// The seqno the base reflected when this list was published.
    checkpoint_seqno: u64,
}

impl SuperVersion {
    /// The seqno the base reflected when this list was published; a reader's seqno is at
    /// least this.
    pub fn checkpoint_seqno(&self) -> u64 {
        self.checkpoint_seqno
    }

    /// `key` as of `seqno`: `Some(value)` when the overlay decides it (`value` `None`: absent),
    /// `None` when it holds no version of `key` and the base decides.
    pub fn get(&self, key: &[u8], seqno: u64) -> Option<Option<Vec<u8>>> {
        let mut before: Option<Option<Vec<u8>>> = None;
        for generation in self.generations.iter().rev() {
            let inner = generation.read();
            let Some(versions) = inner.nodes.get(key) else { continue };
            match versions.at(seqno) {
                AtSeqno::Version(value) => return Some(value.map(<[u8]>::to_vec)),
                // An older generation may still hold a version at or below `seqno`.
                AtSeqno::Before(value) => before = Some(value.map(<[u8]>::to_vec)),
            }
        }
        before
    }

    /// Up to `limit` nodes of `range` as of `seqno`, forwards or with `rev` backwards: the
    /// overlay merged over `base`, which must iterate the base's nodes of the same range in
    /// the same direction.
    pub fn range<E>(
        &self,
        seqno: u64,
        range: Range<'_>,
        rev: bool,
        limit: usize,
        base: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
    ) -> Result<Pairs, E> {
        let mut out = Vec::new();
        let (mut lo, mut hi) = (range.0.map(<[u8]>::to_vec), range.1.map(<[u8]>::to_vec));
        let mut base = base.peekable();
        let mut overlay = self.edge(&lo, &hi, rev);
        while out.len() < limit {
            let mut shadowed = None;
            if let Some(Err(_)) = base.peek()
                && let Some(Err(e)) = base.next()
            {
                return Err(e);
            }
            let base_key = match base.peek() {
                Some(Ok((key, _))) => Some(key.as_slice()),
                _ => None,
            };
            let overlay_first = match (&overlay, base_key) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(o), Some(b)) => {
                    if o.as_slice() == b {
                        shadowed = base.next(); // the overlay decides this node
                        true
                    } else {
                        (o.as_slice() < b) != rev
                    }
                }
            };
            if !overlay_first {
                if let Some(Ok(pair)) = base.next() {
                    out.push(pair);
                }
                continue;
            }
            let Some(key) = overlay.take() else { break };
            match self.get(&key, seqno) {
                Some(Some(value)) => out.push((key.clone(), value)),
                Some(None) => {}
                None => out.extend(shadowed.and_then(Result::ok)),
            }
            if rev {
                hi = Bound::Excluded(key);
            } else {
                lo = Bound::Excluded(key);
            }
            overlay = self.edge(&lo, &hi, rev);
        }
        Ok(out)
    }

    /// The first node any generation holds inside `(lo, hi)`.
    fn edge(&self, lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>, rev: bool) -> Option<Vec<u8>> {
        let (lo, hi) = (lo.as_ref().map(Vec::as_slice), hi.as_ref().map(Vec::as_slice));
        self.generations
            .iter()
            .filter_map(|g| g.edge(lo, hi, rev))
            .reduce(|a, b| if (b < a) != rev { b } else { a })
    }

    /// Bytes every generation holds.
    pub fn bytes(&self) -> usize {
        self.generations.iter().map(|g| g.bytes()).sum()
    }

    /// Encoded journal records with seqnos in `from..=to`, oldest first.
    pub fn records(&self, from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
        self.records_within(from, to, usize::MAX)
    }

    /// [`SuperVersion::records`], stopping after the record that brings their bytes to
    /// `bytes_max` (at least one record, however large).
    pub fn records_within(&self, from: u64, to: u64, bytes_max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let Ok(()) = self.visit_records(from, to, |seqno, record| {
            if !out.is_empty() && bytes >= bytes_max {
                return Ok(false);
            }
            bytes = bytes.saturating_add(record.len());
            out.push((seqno, record.to_vec()));
            Ok::<bool, std::convert::Infallible>(true)
        });
        out
    }

    /// Calls `f` with the encoded records with seqnos in `from..=to`, oldest first, until it
    /// says `false`.
    pub fn visit_records<E>(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, E>,
    ) -> Result<(), E> {
        for generation in &self.generations {
            let inner = generation.read();
            let start = inner.records.partition_point(|(s, _)| *s < from);
            for (seqno, record) in inner.records.get(start..).unwrap_or_default() {
                if *seqno > to || !f(*seqno, record)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The first `Some` that `f` gives going back through the records the overlay holds,
    /// from the one at `upto` (or the last below it).
    pub fn rfind_record<R>(&self, upto: u64, mut f: impl FnMut(u64, &[u8]) -> Option<R>) -> Option<R> {
        for generation in self.generations.iter().rev() {
            let inner = generation.read();
            let end = inner.records.partition_point(|(s, _)| *s <= upto);
            for (seqno, record) in inner.records.get(..end).unwrap_or_default().iter().rev() {
                if let Some(found) = f(*seqno, record) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// Every node any generation holds a version of, once each, in node order.
    pub fn node_keys(&self) -> Vec<Vec<u8>> {
        let mut keys = std::collections::BTreeSet::new();
        for generation in &self.generations {
            keys.extend(generation.read().order.iter().map(|k| k.key.to_vec()));
        }
        keys.into_iter().collect()
    }

    /// Bytes of the journal records the overlay holds.
    pub fn record_bytes(&self) -> u64 {
        self.generations
            .iter()
            .map(|g| g.read().records.iter().map(|(_, r)| r.len() as u64 + 8).sum::<u64>())
            .sum()
    }

    /// The seqno of the oldest record the overlay holds.
    pub fn first_record_seqno(&self) -> Option<u64> {
        self.generations.iter().find_map(|g| g.read().records.first().map(|(s, _)| *s))
    }
}

/// The overlay rolled back, made by [`Overlay::rolled_back`] and published by
/// [`Overlay::install`].
pub struct RolledBack {
    /// The list it was made from.
    from: Arc<SuperVersion>,
    generations: Vec<Arc<Generation>>,
}

/// The published overlay.
#[derive(Debug)]
pub struct Overlay {
    current: RwLock<Arc<SuperVersion>>,
}

impl Overlay {
    /// An empty overlay over a base at `checkpoint_seqno`.
    pub fn new(checkpoint_seqno: u64) -> Overlay {
        let first = SuperVersion { generations: vec![Arc::default()], checkpoint_seqno };
        Overlay { current: RwLock::new(Arc::new(first)) }
    }

    fn current(&self) -> Arc<SuperVersion> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn publish(&self, change: impl FnOnce(&SuperVersion) -> SuperVersion) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = Arc::new(change(&current));
    }

    /// Pins the current list and, before any generation can leave it, calls `open` (which
    /// opens the reader's base snapshot).
    pub fn pin_with<R>(&self, open: impl FnOnce() -> R) -> (Arc<SuperVersion>, R) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let opened = open();
        (current.clone(), opened)
    }

    /// Adds transaction `seqno`'s changes to the active generation (writer only).
    pub fn apply(&self, seqno: u64, changes: &[NodeChange<'_>]) {
        self.active().apply(seqno, changes);
    }

    /// The generation the writer adds to.
    pub fn active(&self) -> Arc<Generation> {
        self.current().generations.last().cloned().unwrap_or_default()
    }

    /// How many generations wait for the checkpointer.
    pub fn frozen(&self) -> usize {
        self.current().generations.len().saturating_sub(1)
    }

    /// Starts over, empty, above a base that now reflects `checkpoint_seqno` (writer only,
    /// after it changed the base itself with nothing in the overlay: a rollback, a metadata
    /// change, an applied batch of replicated records).
    pub fn reset(&self, checkpoint_seqno: u64) {
        self.publish(|_| SuperVersion { generations: vec![Arc::default()], checkpoint_seqno });
    }

    /// Runs `change`, which changes the base, with the list locked against readers, and if
    /// it succeeds starts over, empty, above a base at `checkpoint_seqno`, and runs `then`
    /// before the lock is let go (writer only, with the checkpointer paused: a rollback in
    /// the file that also drops every record the overlay holds, and publishes its seqno in
    /// `then`). No reader pins the old list over the changed base, or the new list before
    /// `then`. Neither closure may touch the overlay.
    pub fn reset_with<E>(
        &self,
        checkpoint_seqno: u64,
        change: impl FnOnce() -> Result<(), E>,
        then: impl FnOnce(),
    ) -> Result<(), E> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        change()?;
        *current = Arc::new(SuperVersion { generations: vec![Arc::default()], checkpoint_seqno });
        then();
        Ok(())
    }

    /// Freezes the active generation and starts a new one (writer only); returns the frozen
    /// generation for the checkpointer, or `None` when the active one is empty.
    pub fn freeze(&self) -> Option<Arc<Generation>> {
        let active = self.active();
        if active.is_empty() {
            return None;
        }
        // Made before taking the list's lock: only the writer adds to the active generation
        // and freezes it, so it is still the last one below.
        let next = Arc::new(Generation::with_capacity(active.nodes()));
        let mut frozen = None;
        self.publish(|sv| {
            let mut generations = sv.generations.clone();
            if generations.last().is_some_and(|g| Arc::ptr_eq(g, &active)) {
                generations.push(next);
                frozen = Some(active);
            }
            SuperVersion { generations, checkpoint_seqno: sv.checkpoint_seqno }
        });
        frozen
    }

    /// The overlay rolled back to `seqno`, at or above the checkpoint, ready for
    /// [`Overlay::install`] (writer only, with the checkpointer paused, so that no one else
    /// changes the list meanwhile): every generation holding versions or records above
    /// `seqno` is replaced by a copy without them — dropped if nothing is left, unless it is
    /// the active one — so a reader that pinned the list before reads on as it did.
    /// `streams`: the stream seqnos as of `seqno`, which the generation that now ends there
    /// checkpoints. The copies are made here, outside the list's lock.
    pub fn rolled_back(&self, seqno: u64, streams: StreamSeqnos) -> RolledBack {
        let from = self.current();
        let count = from.generations.len();
        let mut generations: Vec<Arc<Generation>> = Vec::with_capacity(count);
        for (i, g) in from.generations.iter().enumerate() {
            let active = i + 1 == count;
            if !active && g.last_seqno() <= seqno {
                generations.push(Arc::clone(g));
                continue;
            }
            let copy = g.copy_upto(seqno, streams);
            if active || !copy.is_empty() {
                generations.push(Arc::new(copy));
            }
        }
        RolledBack { from, generations }
    }

    /// Publishes a list made by [`Overlay::rolled_back`]; false, changing nothing, if the
    /// list changed since it was made.
    pub fn install(&self, rolled_back: RolledBack) -> bool {
        let mut installed = false;
        self.publish(|now| {
            if !std::ptr::eq(now, &*rolled_back.from) {
                return SuperVersion {
                    generations: now.generations.clone(),
                    checkpoint_seqno: now.checkpoint_seqno,
                };
            }
            installed = true;
            SuperVersion { generations: rolled_back.generations, checkpoint_seqno: now.checkpoint_seqno }
        });
        installed
    }

    /// The oldest frozen generation: the next one to checkpoint.
    pub fn oldest_frozen(&self) -> Option<Arc<Generation>> {
        let sv = self.current();
        // The last generation is the active one.
        if sv.generations.len() > 1 { sv.generations.first().cloned() } else { None }
    }

    /// Drops `generation` once the base holds it (and records its last seqno as the
    /// checkpoint). Returns false, changing nothing, unless it is the oldest frozen one.
    pub fn checkpointed(&self, generation: &Arc<Generation>) -> bool {
        let mut removed = false;
        self.publish(|sv| {
            let mut generations = sv.generations.clone();
            let mut checkpoint_seqno = sv.checkpoint_seqno;
            if generations.len() > 1 && generations.first().is_some_and(|g| Arc::ptr_eq(g, generation)) {
                generations.remove(0);
                checkpoint_seqno = checkpoint_seqno.max(generation.last_seqno());
                removed = true;
            }
            SuperVersion { generations, checkpoint_seqno }
        });
        removed
    }

    /// Bytes every generation holds (the writer stops taking groups past a bound).
    pub fn bytes(&self) -> usize {
        self.current().bytes()
    }

    /// Whether the overlay holds nothing: the base is all there is.
    pub fn is_empty(&self) -> bool {
        self.current().generations.iter().all(|g| g.is_empty())
    }

    /// The seqno the base reflects.
    pub fn checkpoint_seqno(&self) -> u64 {
        self.current().checkpoint_seqno
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn change<'a>(key: &'a [u8], before: Option<&'a [u8]>, after: Option<&'a [u8]>) -> NodeChange<'a> {
        NodeChange { key, before, after }
    }

    type Pair = (Vec<u8>, Vec<u8>);

    fn no_base() -> std::iter::Empty<Result<Pair, ()>> {
        std::iter::empty()
    }

    #[test]
    fn a_read_sees_the_newest_version_at_or_below_its_seqno() {
        let overlay = Overlay::new(0);
        overlay.apply(1, &[change(b"k", None, Some(b"one"))]);
        overlay.apply(2, &[change(b"k", Some(b"one"), Some(b"two"))]);
        overlay.apply(3, &[change(b"k", Some(b"two"), None)]);
        let sv = overlay.current();
        assert_eq!(sv.get(b"k", 0), Some(None), "before the first version: its before-image");
        assert_eq!(sv.get(b"k", 1), Some(Some(b"one".to_vec())));
        assert_eq!(sv.get(b"k", 2), Some(Some(b"two".to_vec())));
        assert_eq!(sv.get(b"k", 3), Some(None), "deleted");
        assert_eq!(sv.get(b"other", 3), None, "not in the overlay: the base decides");
    }

    #[test]
    fn a_node_only_written_above_the_seqno_reads_as_before_even_when_the_base_moved_on() {
        let overlay = Overlay::new(0);
        overlay.apply(1, &[change(b"k", Some(b"base"), Some(b"new"))]);
        let (sv, ()) = overlay.pin_with(|| ());
        // The base now holds "new" (a checkpoint), but a reader at 0 must see "base".
        assert_eq!(sv.get(b"k", 0), Some(Some(b"base".to_vec())));
        let base = vec![Ok::<_, ()>((b"k".to_vec(), b"new".to_vec()))];
        let pairs = sv.range(0, (Bound::Unbounded, Bound::Unbounded), false, 10, base.into_iter());
        assert_eq!(pairs, Ok(vec![(b"k".to_vec(), b"base".to_vec())]));
    }

    #[test]
    fn freezing_and_checkpointing_move_generations_in_order() {
        let overlay = Overlay::new(5);
        assert!(overlay.freeze().is_none(), "an empty active generation stays");
        overlay.apply(6, &[change(b"a", None, Some(b"1"))]);
        let first = overlay.freeze().expect("frozen");
        overlay.apply(7, &[change(b"b", None, Some(b"2"))]);
        let second = overlay.freeze().expect("frozen");
        assert!(!overlay.checkpointed(&second), "only the oldest may leave");
        assert_eq!(overlay.oldest_frozen().map(|g| Arc::ptr_eq(&g, &first)), Some(true));
        assert!(overlay.checkpointed(&first));
        assert_eq!(overlay.checkpoint_seqno(), 6);
        assert!(overlay.checkpointed(&second));
        assert_eq!(overlay.checkpoint_seqno(), 7);
        assert!(overlay.oldest_frozen().is_none());
        assert_eq!(overlay.current().get(b"a", 7), None, "checkpointed nodes are read from the base");
    }

    #[test]
    fn a_range_merges_overlay_and_base_both_ways_with_a_limit() {
        let overlay = Overlay::new(0);
        overlay.apply(1, &[change(b"b", Some(b"old"), None), change(b"c", None, Some(b"C"))]);
        let sv = overlay.current();
        let base = || vec![Ok::<_, ()>((b"a".to_vec(), b"A".to_vec())), Ok((b"b".to_vec(), b"old".to_vec()))];
        let all = (Bound::Unbounded, Bound::Unbounded);
        let forward = sv.range(1, all, false, 10, base().into_iter());
        assert_eq!(forward, Ok(vec![(b"a".to_vec(), b"A".to_vec()), (b"c".to_vec(), b"C".to_vec())]));
        let backward = sv.range(1, all, true, 1, base().into_iter().rev());
        assert_eq!(backward, Ok(vec![(b"c".to_vec(), b"C".to_vec())]));
        assert_eq!(sv.range(1, all, false, 0, no_base()), Ok(vec![]));
        let failing = vec![Err::<Pair, _>("disk")];
        assert_eq!(sv.range(1, all, false, 10, failing.into_iter()), Err("disk"));
    }

    #[test]
    fn an_undone_write_and_a_discarded_group_leave_no_trace() {
        let overlay = Overlay::new(0);
        let active = overlay.active();
        active.put(1, b"k", None, Some(b"one"));
        active.add_record(1, b"r1");
        active.put(2, b"k", Some(b"one"), Some(b"two"));
        active.put(2, b"k", Some(b"two"), Some(b"three"));
        assert_eq!(overlay.current().get(b"k", 2), Some(Some(b"three".to_vec())), "one version per seqno");
        active.unput(2, b"k");
        active.put(2, b"new", None, Some(b"n"));
        active.unput(2, b"new");
        let sv = overlay.current();
        assert_eq!(sv.get(b"k", u64::MAX), Some(Some(b"one".to_vec())));
        assert_eq!(sv.get(b"new", u64::MAX), None, "a node only the undone write made is gone");
        active.put(2, b"k", Some(b"one"), None);
        active.add_record(2, b"r2");
        active.discard_above(1);
        assert_eq!(sv.get(b"k", u64::MAX), Some(Some(b"one".to_vec())));
        assert_eq!(sv.records(1, 9), vec![(1, b"r1".to_vec())]);
        assert_eq!(active.last_seqno(), 1);
    }

    #[test]
    fn undone_and_discarded_writes_give_their_bytes_back() {
        let overlay = Overlay::new(0);
        let active = overlay.active();
        active.put(1, b"kept", None, Some(b"value"));
        active.add_record(1, b"record");
        let held = active.bytes();
        active.put(2, b"k", Some(b"old"), Some(b"one"));
        active.put(2, b"k", Some(b"one"), Some(b"two"));
        active.unput(2, b"k");
        assert_eq!(active.bytes(), held, "an aborted transaction holds nothing");
        active.put(3, b"k", None, Some(&[0; 1000]));
        active.add_record(3, &[0; 1000]);
        assert!(active.bytes() > held + 2000);
        active.discard_above(1);
        assert_eq!(active.bytes(), held, "a discarded group holds nothing");
    }

    #[test]
    fn records_are_read_across_generations_by_seqno() {
        let overlay = Overlay::new(0);
        for seqno in 1..=3 {
            overlay.active().add_record(seqno, &[u8::try_from(seqno).unwrap_or(0)]);
            overlay.active().put(seqno, b"k", None, Some(b"v"));
            overlay.freeze();
        }
        let sv = overlay.current();
        assert_eq!(sv.records(2, 9), vec![(2, vec![2]), (3, vec![3])]);
        // A byte budget stops after the record that reaches it, and never gives nothing.
        assert_eq!(sv.records_within(1, 9, 2), vec![(1, vec![1]), (2, vec![2])]);
        assert_eq!(sv.records_within(2, 9, 0), vec![(2, vec![2])]);
        assert_eq!(sv.records_within(4, 9, 10), Vec::<(u64, Vec<u8>)>::new());
        assert_eq!(sv.records(1, 1), vec![(1, vec![1])]);
        assert_eq!(sv.first_record_seqno(), Some(1));
        assert_eq!(overlay.frozen(), 3);
        overlay.reset(3);
        assert_eq!(overlay.frozen(), 0);
        assert_eq!(overlay.checkpoint_seqno(), 3);
        assert_eq!(overlay.current().first_record_seqno(), None);
    }

    #[test]
    fn a_rollback_within_the_overlay_leaves_pinned_readers_their_list() {
        let overlay = Overlay::new(0);
        for seqno in 1..=4u64 {
            let value = [u8::try_from(seqno).unwrap_or(0)];
            let before = [u8::try_from(seqno - 1).unwrap_or(0)];
            let before = (seqno > 1).then_some(&before[..]);
            overlay.active().add_record(seqno, &value);
            overlay.apply(seqno, &[change(b"k", before, Some(&value))]);
            if seqno == 1 || seqno == 3 {
                overlay.freeze(); // generations [1], [2, 3], [4]
            }
        }
        let (old, ()) = overlay.pin_with(|| ());
        let rolled_back = overlay.rolled_back(2, [2; 16]);
        assert!(overlay.install(rolled_back));
        assert_eq!(old.get(b"k", 4), Some(Some(vec![4])), "a reader pinned before reads on");
        let now = overlay.current();
        assert_eq!(now.get(b"k", 4), Some(Some(vec![2])), "versions past 2 are gone");
        assert_eq!(now.records(1, 9), vec![(1, vec![1]), (2, vec![2])]);
        assert_eq!(overlay.frozen(), 2, "the first generation, and the copy of the second");
        assert_eq!(now.generations.iter().map(|g| g.last_seqno()).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert!(overlay.active().is_empty(), "the active generation held only rolled-off versions");
        assert_eq!(overlay.active().streams(), [2; 16]);
        let stale = overlay.rolled_back(1, [1; 16]);
        overlay.freeze();
        overlay.apply(3, &[change(b"k", Some(&[2]), Some(&[3]))]);
        overlay.freeze();
        assert!(!overlay.install(stale), "a list made before a change is refused");
    }

    #[test]
    fn a_reset_with_a_failed_change_leaves_the_list_and_a_good_one_starts_over() {
        let overlay = Overlay::new(3);
        overlay.active().add_record(4, &[4]);
        overlay.apply(4, &[change(b"k", None, Some(b"v"))]);
        let mut ran = false;
        assert_eq!(overlay.reset_with(2, || Err("no"), || ran = true), Err("no"));
        assert!(!ran, "nothing is published after a failed change");
        assert_eq!(overlay.current().get(b"k", 4), Some(Some(b"v".to_vec())), "the list is as it was");
        assert_eq!(overlay.checkpoint_seqno(), 3);
        let old = overlay.current();
        assert_eq!(overlay.reset_with(2, || Ok::<(), ()>(()), || ran = true), Ok(()));
        assert!(ran);
        assert!(overlay.is_empty());
        assert_eq!(overlay.checkpoint_seqno(), 2);
        assert_eq!(old.get(b"k", 4), Some(Some(b"v".to_vec())), "a reader pinned before reads on");
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        /// A transaction: (node, new value or delete) pairs.
        Txn(Vec<(u8, Option<u8>)>),
        /// Everything written so far becomes durable.
        Sync,
        Freeze,
        /// Checkpoint the oldest frozen generation, if durable.
        Checkpoint,
        /// Everything becomes durable, then the overlay rolls back by up to `back`
        /// transactions (not below the checkpoint), as a rollback within the overlay does.
        Rollback {
            back: u8,
        },
        /// A reader pins, then `checkpoints` more generations it holds reach the base before
        /// it opens its base snapshot, then it reads at a seqno chosen by `pick`.
        Read {
            checkpoints: u8,
            pick: u16,
            lo: u8,
            hi: u8,
            rev: bool,
            limit: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let write = (0u8..12, proptest::option::of(any::<u8>()));
        prop_oneof![
            4 => proptest::collection::vec(write, 1..4).prop_map(Op::Txn),
            2 => Just(Op::Sync),
            1 => Just(Op::Freeze),
            1 => Just(Op::Checkpoint),
            1 => (0u8..6).prop_map(|back| Op::Rollback { back }),
            3 => (0u8..3, any::<u16>(), 0u8..13, 0u8..13, any::<bool>(), 0u8..8)
                .prop_map(|(checkpoints, pick, lo, hi, rev, limit)| Op::Read { checkpoints, pick, lo, hi, rev, limit }),
        ]
    }

    type Nodes = BTreeMap<Vec<u8>, Vec<u8>>;

    /// Applies the oldest frozen generation to `base` if it is durable.
    fn checkpoint(overlay: &Overlay, base: &mut Nodes, durable: u64) {
        let Some(generation) = overlay.oldest_frozen() else { return };
        if generation.last_seqno() > durable {
            return;
        }
        let applied: Result<(), ()> = generation.try_for_each_last(|key, value| {
            match value {
                Some(v) => base.insert(key.to_vec(), v.to_vec()),
                None => base.remove(key),
            };
            Ok(())
        });
        assert_eq!(applied, Ok(()));
        assert!(overlay.checkpointed(&generation));
    }

    proptest! {
        /// The ordered set's keys sort exactly as their bytes do: zero bytes, a key that is a
        /// prefix of another, and keys that differ only past the inline 16 bytes included.
        #[test]
        fn order_keys_sort_as_their_bytes(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8), any::<u8>()], 0..40),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8), any::<u8>()], 0..40),
            shared in 0usize..24,
        ) {
            // Often a long common prefix, as a collection's element nodes have.
            let b: Vec<u8> = a.iter().take(shared).chain(b.iter()).copied().collect();
            let (ka, kb) = (OrderKey::new(a.as_slice().into()), OrderKey::new(b.as_slice().into()));
            prop_assert_eq!(ka.cmp(&kb), a.as_slice().cmp(b.as_slice()));
            prop_assert_eq!(ka == kb, a == b);
        }

        /// Reads at any seqno between the pinned checkpoint and the durable seqno equal the
        /// model's state at that seqno, while generations freeze, checkpoints run and the
        /// overlay rolls back — including checkpoints between a reader's pin and its base
        /// snapshot.
        #[test]
        fn reads_match_a_model_while_checkpoints_run(ops in proptest::collection::vec(op(), 1..80)) {
            let overlay = Overlay::new(0);
            let mut base = Nodes::new();
            // The model: the whole state after each seqno (index = seqno).
            let mut states = vec![Nodes::new()];
            let mut durable = 0u64;
            for op in ops {
                match op {
                    Op::Txn(writes) => {
                        let mut state = states.last().cloned().unwrap_or_default();
                        let seqno = states.len() as u64;
                        // Per node: its value before the transaction and after it.
                        let mut changes: BTreeMap<Vec<u8>, [Option<Vec<u8>>; 2]> = BTreeMap::new();
                        for (node, value) in writes {
                            let key = vec![node];
                            let before = state.get(&key).cloned();
                            let after = value.map(|v| vec![v]);
                            match &after {
                                Some(v) => state.insert(key.clone(), v.clone()),
                                None => state.remove(&key),
                            };
                            changes.entry(key).or_insert([before, None])[1] = after;
                        }
                        let list: Vec<NodeChange<'_>> = changes
                            .iter()
                            .map(|(k, [b, a])| change(k, b.as_deref(), a.as_deref()))
                            .collect();
                        overlay.apply(seqno, &list);
                        states.push(state);
                    }
                    Op::Sync => durable = states.len() as u64 - 1,
                    Op::Freeze => { overlay.freeze(); }
                    Op::Checkpoint => checkpoint(&overlay, &mut base, durable),
                    Op::Rollback { back } => {
                        let last = states.len() as u64 - 1;
                        let to = last.saturating_sub(u64::from(back)).max(overlay.checkpoint_seqno());
                        let rolled_back = overlay.rolled_back(to, [to; 16]);
                        prop_assert!(overlay.install(rolled_back));
                        states.truncate(to as usize + 1);
                        durable = to;
                        prop_assert_eq!(overlay.active().streams(), [to; 16]);
                        prop_assert!(overlay.current().generations.iter().all(|g| g.last_seqno() <= to));
                    }
                    Op::Read { checkpoints, pick, lo, hi, rev, limit } => {
                        let (sv, ()) = overlay.pin_with(|| ());
                        // Generations the reader holds may reach the base before it opens it.
                        for _ in 0..checkpoints {
                            checkpoint(&overlay, &mut base, durable);
                        }
                        let snapshot = base.clone();
                        let floor = sv.checkpoint_seqno();
                        prop_assert!(floor <= durable);
                        let seqno = floor + u64::from(pick) % (durable - floor + 1);
                        let state = &states[seqno as usize];
                        for node in 0u8..12 {
                            let key = vec![node];
                            let got = sv.get(&key, seqno).unwrap_or_else(|| snapshot.get(&key).cloned());
                            prop_assert_eq!(got.as_ref(), state.get(&key), "node {} at seqno {}", node, seqno);
                        }
                        let (lo, hi) = (vec![lo.min(hi)], vec![lo.max(hi)]);
                        let bounds = (Bound::Included(lo.as_slice()), Bound::Excluded(hi.as_slice()));
                        let in_base = snapshot.range::<[u8], _>(bounds).map(|(k, v)| Ok::<_, ()>((k.clone(), v.clone())));
                        let limit = usize::from(limit);
                        let got = if rev {
                            sv.range(seqno, bounds, true, limit, in_base.rev().collect::<Vec<_>>().into_iter())
                        } else {
                            sv.range(seqno, bounds, false, limit, in_base.collect::<Vec<_>>().into_iter())
                        };
                        let model = state.range::<[u8], _>(bounds).map(|(k, v)| (k.clone(), v.clone()));
                        let want: Pairs = if rev { model.rev().take(limit).collect() } else { model.take(limit).collect() };
                        prop_assert_eq!(got, Ok(want));
                    }
                }
            }
        }
    }
}
