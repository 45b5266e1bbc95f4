//! The read cache: recently read nodes of the database file, so that a point read that the
//! overlay does not answer need not descend redb's B-tree (decision 0003, "A read cache").
//!
//! Its entries are the base's values (or its knowledge that a node is absent) as of one
//! state of the file. Any commit that changes the file's data (a checkpoint, an SI or BC
//! apply in the file, a system write, a rollback in the file) or puts another file in place
//! is a *base change*: it starts a new cache, empty, and the old one is dropped with its last
//! reader. A reader uses the cache only if its read transaction reads exactly the state the
//! cache belongs to — no base change was under way when it looked, nor began while it took
//! the file and opened its transaction (see [`ReadCache::open`]) — so a cache holds the values
//! of one state only and never answers a reader of another.
//!
//! Readers of one base state share its read transaction too ([`ReadCache::open`] keeps the
//! first one begun in a steady state, and a base change drops it): beginning one per command
//! took redb's transaction tracker's lock twice and about 8 % of a point read's user time
//! (decision 0003, "One read transaction per base state").
//!
//! The cache is bounded in bytes and split into shards, each behind its own lock (readers on
//! every worker thread share it). A shard is a table of sets of three ways, each set one
//! cache line holding its ways' tags and entries: a hit reads that line and the entry, where
//! a hash set read its control bytes, its bucket and the entry — three misses to memory that
//! took most of a hit's time (decision 0003, "One read transaction per base state"). A node
//! goes into a free way of its set, or takes the place of the set's ways in turn. A shard whose
//! entries would pass their share of the bound (large values) is emptied and starts over; the
//! hot nodes come back at their next read. A reader that opened its
//! snapshot before a base change goes on filling the old cache until it is done (one
//! command, or one pipeline's reads): for that moment two caches can be alive.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Shards of the cache (a power of two).
const SHARDS: usize = 64;
/// What one entry costs beyond its key and value (its header, the allocation's own).
const ENTRY_OVERHEAD_BYTES: usize = 24;
/// Ways of a set: with their tags, one cache line.
const WAYS: usize = 3;
/// The share of a shard's bytes its table of sets takes (one in this many); entries have the
/// rest. With values of up to about 200 bytes the table fills before the entries' share.
const TABLE_SHARE: usize = 8;

/// The cache of one base state. Readers whose transaction reads that state hold it.
pub struct Cache {
    /// Set when a base change begins: the file no longer holds this cache's state (read by
    /// the debug builds' check of the shared view, `Snapshot::base_get`).
    superseded: std::sync::atomic::AtomicBool,
    shards: [Mutex<Shard>; SHARDS],
    shard_bytes_max: usize,
    /// Seeded at random for each cache, so that no one can choose keys that collide.
    hasher: foldhash::fast::RandomState,
    counts: Arc<Counts>,
}

/// Lookups that found their node and lookups that did not, over every cache so far; per
/// shard, each on its own cache line, so that readers on different cores do not share one.
struct Counts([ShardCounts; SHARDS]);

impl Default for Counts {
    fn default() -> Counts {
        Counts(std::array::from_fn(|_| ShardCounts::default()))
    }
}

#[derive(Default)]
#[repr(align(64))]
struct ShardCounts {
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Shard {
    /// Allocated at the first insert (a power of two of them, or none).
    sets: Vec<Set>,
    /// The entries' bytes, as [`Cache::insert`] counts them.
    bytes: usize,
}

/// Three ways of the table: their tags (bits of the node's hash; 0 for a free way) and
/// entries, in one cache line.
#[derive(Default)]
#[repr(C, align(64))]
struct Set {
    tags: [u32; WAYS],
    /// The way a node takes in this set when none is free.
    next: u32,
    entries: [Option<Entry>; WAYS],
}

/// Where a node goes: its shard, its set in the shard's table, and its tag.
#[derive(Clone, Copy)]
struct Place {
    shard: usize,
    set: usize,
    tag: u32,
}

/// A node and its value in one allocation, so that a lookup touches one place in memory
/// besides its set: the key's length (4 bytes, little-endian), the key, whether the node is
/// present (1 byte), its value.
struct Entry(Box<[u8]>);

impl Entry {
    fn new(node: &[u8], value: Option<&[u8]>) -> Option<Entry> {
        let key_len = u32::try_from(node.len()).ok()?;
        let mut bytes = Vec::with_capacity(5 + node.len() + value.map_or(0, <[u8]>::len));
        bytes.extend_from_slice(&key_len.to_le_bytes());
        bytes.extend_from_slice(node);
        bytes.push(u8::from(value.is_some()));
        bytes.extend_from_slice(value.unwrap_or_default());
        Some(Entry(bytes.into_boxed_slice()))
    }

    /// The key's end (and the presence byte's place).
    fn key_end(&self) -> usize {
        let len = self.0.first_chunk::<4>().map_or(0, |n| u32::from_le_bytes(*n));
        4 + len as usize
    }

    fn key(&self) -> &[u8] {
        self.0.get(4..self.key_end()).unwrap_or_default()
    }

    /// What it counts against the bound (as [`Cache::insert`] reckons it).
    fn cost(&self) -> usize {
        self.0.len() - 5 + ENTRY_OVERHEAD_BYTES
    }

    fn value(&self) -> Option<&[u8]> {
        let at = self.key_end();
        match self.0.get(at) {
            Some(1) => self.0.get(at + 1..),
            _ => None,
        }
    }
}

impl Cache {
    fn new(bytes_max: usize, counts: Arc<Counts>) -> Cache {
        let shards = std::array::from_fn(|_| Mutex::new(Shard { sets: Vec::new(), bytes: 0 }));
        let hasher = foldhash::fast::RandomState::default();
        Cache { superseded: Default::default(), shards, shard_bytes_max: bytes_max / SHARDS, hasher, counts }
    }

    /// Whether a base change has begun since this cache's state was current.
    pub fn superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Sets of one shard's table: a power of two, its bytes within the table's share.
    fn sets_per_shard(&self) -> usize {
        let sets = (self.shard_bytes_max / TABLE_SHARE / std::mem::size_of::<Set>()).max(1);
        1 << sets.ilog2()
    }

    /// The entries' share of a shard's bytes.
    fn shard_entry_bytes_max(&self) -> usize {
        self.shard_bytes_max - self.shard_bytes_max / TABLE_SHARE
    }

    /// Where `node` goes. The shard from the middle bits of its hash, the set from the low
    /// ones, the tag from the top ones (never 0). Truncation is the point.
    fn place(&self, node: &[u8]) -> Place {
        let hash = self.hasher.hash_one(node);
        Place { shard: (hash >> 32) as usize % SHARDS, set: hash as usize, tag: ((hash >> 40) as u32) | 1 }
    }

    fn shard(&self, at: usize) -> &Mutex<Shard> {
        let [first, ..] = &self.shards;
        self.shards.get(at).unwrap_or(first)
    }

    /// The node's value as cached: `Some(None)` when it is known to be absent, `None` when
    /// the cache does not hold it.
    pub fn get(&self, node: &[u8]) -> Option<Option<Vec<u8>>> {
        let place = self.place(node);
        let found = {
            let shard = self.shard(place.shard).lock().unwrap_or_else(PoisonError::into_inner);
            let set = shard.sets.len().checked_sub(1).and_then(|mask| shard.sets.get(place.set & mask));
            set.and_then(|set| {
                set.tags
                    .iter()
                    .zip(&set.entries)
                    .find_map(|(tag, entry)| entry.as_ref().filter(|e| *tag == place.tag && e.key() == node))
            })
            .map(|entry| entry.value().map(<[u8]>::to_vec))
        };
        let [first, ..] = &self.counts.0;
        let counts = self.counts.0.get(place.shard).unwrap_or(first);
        let counter = if found.is_some() { &counts.hits } else { &counts.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Bytes the cache holds, as it counts them: the tables and the entries.
    fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock().unwrap_or_else(PoisonError::into_inner);
                shard.bytes + shard.sets.len() * std::mem::size_of::<Set>()
            })
            .sum()
    }

    /// Remembers what the base holds for `node` (`None`: it is absent).
    pub fn insert(&self, node: &[u8], value: Option<&[u8]>) {
        let cost = node.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD_BYTES;
        if cost > self.shard_entry_bytes_max() / 16 {
            // A few large values would push out everything else.
            return;
        }
        let Some(entry) = Entry::new(node, value) else { return };
        let place = self.place(node);
        let mut shard = self.shard(place.shard).lock().unwrap_or_else(PoisonError::into_inner);
        if shard.sets.is_empty() {
            shard.sets = std::iter::repeat_with(Set::default).take(self.sets_per_shard()).collect();
        }
        let mask = shard.sets.len() - 1;
        let Some(set) = shard.sets.get(place.set & mask) else { return };
        let held = |e: &Option<Entry>| e.as_ref().is_some_and(|e| e.key() == node);
        if set.tags.iter().zip(&set.entries).any(|(tag, e)| *tag == place.tag && held(e)) {
            return;
        }
        let free = set.entries.iter().position(Option::is_none);
        let way = free.unwrap_or(set.next as usize % WAYS);
        let replaced = set.entries.get(way).and_then(Option::as_ref).map_or(0, Entry::cost);
        if (shard.bytes + cost).saturating_sub(replaced) > self.shard_entry_bytes_max() {
            for set in &mut shard.sets {
                *set = Set::default();
            }
            shard.bytes = 0;
        }
        let Some(set) = shard.sets.get_mut(place.set & mask) else { return };
        if free.is_none() {
            set.next = ((way + 1) % WAYS) as u32;
        }
        let (Some(tag), Some(slot)) = (set.tags.get_mut(way), set.entries.get_mut(way)) else { return };
        let replaced = slot.replace(entry).map_or(0, |old| old.cost());
        *tag = place.tag;
        shard.bytes = (shard.bytes + cost).saturating_sub(replaced);
    }

    /// Nodes held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock().unwrap_or_else(PoisonError::into_inner);
                shard.sets.iter().flat_map(|set| &set.entries).filter(|e| e.is_some()).count()
            })
            .sum()
    }
}

/// The cache of the current base state, the view of the file that its readers share (`V`:
/// a read transaction), and the base changes under way.
pub struct ReadCache<V> {
    state: Mutex<State<V>>,
    counts: Arc<Counts>,
}

/// What the read cache holds and how it has served (the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Point reads of the base that the cache answered, since start.
    pub hits: u64,
    /// Point reads of the base that it did not (and that read the file), since start.
    pub misses: u64,
    /// Bytes it holds now.
    pub bytes: u64,
}

struct State<V> {
    /// Counts base changes begun; a reader's view is good only if it is the same after its
    /// transaction opened as before.
    changes: u64,
    /// Base changes begun and not yet ended.
    changing: usize,
    /// Counts the calls to [`ReadCache::forget_view`] (each after a commit that changed no
    /// data), whether or not a view was held: a view opened across one may predate that
    /// commit, and is not shared.
    forgets: u64,
    /// `None` when the cache is off (a bound of 0).
    current: Option<Arc<Cache>>,
    /// The view of the file in its current state that readers share: the first one opened
    /// since the last base change ended or view was let go, with neither happening while
    /// it opened.
    view: Option<Arc<V>>,
    bytes_max: usize,
}

impl<V> std::fmt::Debug for ReadCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("ReadCache")
            .field("bytes_max", &state.bytes_max)
            .field("changes", &state.changes)
            .field("changing", &state.changing)
            .finish_non_exhaustive()
    }
}

impl<V> ReadCache<V> {
    /// A cache of at most `bytes_max` bytes of nodes (0: none).
    pub fn new(bytes_max: usize) -> ReadCache<V> {
        let counts = Arc::new(Counts::default());
        let state = State { changes: 0, changing: 0, forgets: 0, current: None, view: None, bytes_max };
        let cache = ReadCache { state: Mutex::new(state), counts };
        cache.set_bytes_max(bytes_max);
        cache
    }

    /// A new, empty cache (none with a bound of 0).
    fn fresh(&self, bytes_max: usize) -> Option<Arc<Cache>> {
        (bytes_max > 0).then(|| Arc::new(Cache::new(bytes_max, Arc::clone(&self.counts))))
    }

    pub fn stats(&self) -> CacheStats {
        let current = self.state().current.clone();
        let (mut hits, mut misses) = (0, 0);
        for counts in &self.counts.0 {
            hits += counts.hits.load(Ordering::Relaxed);
            misses += counts.misses.load(Ordering::Relaxed);
        }
        let bytes = current.map_or(0, |c| c.bytes() as u64);
        CacheStats { hits, misses, bytes }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the bound; the cache starts over empty.
    pub fn set_bytes_max(&self, bytes_max: usize) {
        let fresh = self.fresh(bytes_max);
        let mut state = self.state();
        state.bytes_max = bytes_max;
        state.current = fresh;
    }

    /// The view of the file in place now, and the cache of the state it reads — `None` when
    /// that is not certain (a base change was under way, or began meanwhile) or the cache is
    /// off. In a steady state that is the view its readers share; otherwise, or if there is
    /// none yet, `open` takes the file in place and opens a view of it (both inside, so that
    /// neither can come from before a change this does not see), and the view is shared from
    /// then on if no change was under way or began meanwhile.
    pub fn open<E>(&self, open: impl FnOnce() -> Result<V, E>) -> (Option<Arc<Cache>>, Result<Arc<V>, E>) {
        let before = {
            let state = self.state();
            if state.changing == 0
                && let Some(view) = &state.view
            {
                return (state.current.clone(), Ok(Arc::clone(view)));
            }
            (state.changing == 0).then(|| (state.changes, state.forgets, state.current.clone()))
        };
        let opened = open().map(Arc::new);
        let mut state = self.state();
        let Some((changes, forgets, cache)) =
            before.filter(|(changes, _, _)| state.changing == 0 && state.changes == *changes)
        else {
            return (None, opened);
        };
        debug_assert_eq!(state.changes, changes);
        if let Ok(view) = &opened
            && state.view.is_none()
            && state.forgets == forgets
        {
            state.view = Some(Arc::clone(view));
        }
        (cache, opened)
    }

    /// Marks a base change as under way until the guard is dropped (after the commit that
    /// makes it, whether or not that succeeded); then the cache starts over empty.
    /// The shared view goes at once (its last reader drops it), so that the change's commit
    /// does not find the state before it still read.
    pub fn change(&self) -> BaseChange<'_, V> {
        let view = {
            let mut state = self.state();
            state.changes += 1;
            state.changing += 1;
            if let Some(cache) = &state.current {
                cache.superseded.store(true, Ordering::Release);
            }
            state.view.take()
        };
        drop(view);
        BaseChange { cache: self }
    }

    /// Lets go of the shared view after a commit that changed no data (a journal trim, the
    /// metadata): the next reader opens one that sees it. The cache stays, as the data did.
    /// redb reuses the pages such a commit freed only once no read transaction from before
    /// it is left.
    pub fn forget_view(&self) {
        let view = {
            let mut state = self.state();
            state.forgets += 1;
            state.view.take()
        };
        drop(view);
    }
}

/// A base change under way (see [`ReadCache::change`]).
#[must_use = "the change ends when the guard is dropped"]
pub struct BaseChange<'a, V> {
    cache: &'a ReadCache<V>,
}

impl<V> Drop for BaseChange<'_, V> {
    fn drop(&mut self) {
        let mut state = self.cache.state();
        state.changing -= 1;
        if state.changing == 0 {
            state.current = self.cache.fresh(state.bytes_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::Cell;
    use std::convert::Infallible;

    /// A read cache whose views are numbered in the order they were opened.
    struct Files {
        cache: ReadCache<u32>,
        opened: Cell<u32>,
    }

    impl Files {
        fn new(bytes_max: usize) -> Files {
            Files { cache: ReadCache::new(bytes_max), opened: Cell::new(0) }
        }

        /// What a reader gets: the cache, and the number of its view of the file.
        fn open_both(&self) -> (Option<Arc<Cache>>, u32) {
            let (cache, view) = self.cache.open(|| {
                self.opened.set(self.opened.get() + 1);
                Ok::<_, Infallible>(self.opened.get())
            });
            (cache, view.map_or(0, |v| *v))
        }

        /// Whether a reader gets a cache, and the number of its view of the file.
        fn open(&self) -> (bool, u32) {
            let (cache, view) = self.open_both();
            (cache.is_some(), view)
        }

        /// The cache a reader gets in a steady state (no change under way).
        fn cache(&self) -> Arc<Cache> {
            self.open_both().0.expect("a steady state has a cache")
        }
    }

    #[test]
    fn a_view_opened_in_a_steady_state_shares_its_cache() {
        let files = Files::new(1 << 20);
        let first = files.cache();
        first.insert(b"k", Some(b"v"));
        first.insert(b"gone", None);
        let second = files.cache();
        assert_eq!(second.get(b"k"), Some(Some(b"v".to_vec())));
        assert_eq!(second.get(b"gone"), Some(None));
        assert_eq!(second.get(b"other"), None);
        let stats = files.cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 1));
        assert!(stats.bytes > 0);
        drop(files.cache.change());
        assert_eq!(files.cache.stats().bytes, 0, "a base change empties it");
        assert_eq!(files.cache.stats().hits, 2, "the counts go on");
    }

    #[test]
    fn readers_of_one_state_share_its_view_and_a_change_drops_it() {
        let cache = ReadCache::new(1 << 20);
        let (_, first) = cache.open(|| Ok::<_, Infallible>(1));
        let first = first.unwrap_or_else(|e| match e {});
        let (_, again) = cache.open(|| -> Result<u32, Infallible> { panic!("the shared view is reused") });
        assert!(again.is_ok_and(|v| Arc::ptr_eq(&v, &first)));
        assert_eq!(Arc::strong_count(&first), 2, "the reader's and the cache's");
        let change = cache.change();
        assert_eq!(Arc::strong_count(&first), 1, "the change dropped it at once: its reader alone holds it");
        // Opened while the change is under way: not shared, and not kept.
        let (_, during) = cache.open(|| Ok::<_, Infallible>(2));
        assert!(during.is_ok_and(|v| Arc::strong_count(&v) == 1));
        drop(change);
        let (_, after) = cache.open(|| Ok::<_, Infallible>(3));
        assert_eq!(after.map(|v| *v), Ok(3));
        // Forgotten after a commit that changed no data: the next reader opens another, and
        // the cache stays.
        cache.forget_view();
        let (_, forgotten) = cache.open(|| Ok::<_, Infallible>(5));
        assert_eq!(forgotten.map(|v| *v), Ok(5));
        // A failed open is not kept: the next reader tries again.
        drop(cache.change());
        let (_, failed) = cache.open(|| Err::<u32, &str>("the file is gone"));
        assert_eq!(failed.map(|v| *v), Err("the file is gone"));
        let (_, next) = cache.open(|| Ok::<_, &str>(4));
        assert_eq!(next.map(|v| *v), Ok(4));
    }

    #[test]
    fn a_base_change_starts_a_new_cache() {
        let files = Files::new(1 << 20);
        let old = files.cache();
        old.insert(b"k", Some(b"old"));
        drop(files.cache.change());
        assert_eq!(files.cache().get(b"k"), None);
        // A reader of the old state may still fill the old cache: no one else reads it.
        old.insert(b"k2", Some(b"old"));
        assert_eq!(files.cache().get(b"k2"), None);
    }

    #[test]
    fn no_cache_or_shared_view_while_a_change_is_under_way_or_begins_during_the_open() {
        let files = Files::new(1 << 20);
        let change = files.cache.change();
        assert_eq!(files.open(), (false, 1), "a change under way");
        drop(change);
        let mut begun = None;
        let (during, view) = files.cache.open(|| {
            begun = Some(files.cache.change());
            files.opened.set(2);
            Ok::<_, Infallible>(2)
        });
        assert!(during.is_none(), "a change begun while the view opened");
        assert!(view.is_ok_and(|v| Arc::strong_count(&v) == 1), "nor is that view shared");
        drop(begun);
        // Two changes overlapping: the cache comes back only when both have ended.
        let first = files.cache.change();
        let second = files.cache.change();
        drop(first);
        assert_eq!(files.open(), (false, 3), "one change still under way");
        drop(second);
        let (cache, view) = files.open();
        assert!(cache);
        assert_eq!(files.open().1, view, "shared from now on");
    }

    #[test]
    fn a_view_opened_across_a_forget_is_not_shared_but_keeps_the_cache() {
        // A trim commits and lets the shared view go while a reader's transaction opens: that
        // transaction may predate the trim, and shared it would keep redb from reusing the
        // pages the trim freed until the next base change.
        let files = Files::new(1 << 20);
        let (cache, view) = files.cache.open(|| {
            files.cache.forget_view();
            Ok::<_, Infallible>(1)
        });
        assert!(cache.is_some(), "no data changed: the cache stands");
        assert!(view.is_ok_and(|v| Arc::strong_count(&v) == 1), "the view is its reader's alone");
        files.opened.set(1);
        let (cache, view) = files.open();
        assert!(cache);
        assert_eq!((view, files.open().1), (2, 2), "the next one is shared");
    }

    #[test]
    fn a_bound_of_zero_turns_the_cache_off_but_not_the_shared_view() {
        let files = Files::new(0);
        assert_eq!(files.open(), (false, 1));
        assert_eq!(files.open(), (false, 1));
        drop(files.cache.change());
        assert_eq!(files.open(), (false, 2));
        files.cache.set_bytes_max(1 << 20);
        assert!(files.open().0);
    }

    #[test]
    fn an_entry_holds_its_node_and_value() {
        for (node, value) in [
            (&b"Kkey"[..], Some(&b"value"[..])),
            (b"Kkey", Some(b"")),
            (b"Kkey", None),
            (b"", Some(b"\x01")),
            (b"", None),
        ] {
            let entry = Entry::new(node, value).expect("a small node");
            assert_eq!(entry.key(), node);
            assert_eq!(entry.value(), value);
        }
        let cache = Cache::new(1 << 20, Arc::default());
        cache.insert(b"Ka", Some(b"1"));
        cache.insert(b"Kab", None);
        cache.insert(b"K", Some(b""));
        assert_eq!(cache.get(b"Ka"), Some(Some(b"1".to_vec())));
        assert_eq!(cache.get(b"Kab"), Some(None));
        assert_eq!(cache.get(b"K"), Some(Some(Vec::new())));
        assert_eq!(cache.get(b"Kb"), None);
    }

    #[test]
    fn a_full_shard_starts_over_and_the_bound_holds() {
        let bytes_max = 1 << 20;
        let cache = Cache::new(bytes_max, Arc::default());
        for i in 0..30_000u32 {
            cache.insert(format!("key:{i:08}").as_bytes(), Some(&[7u8; 20]));
        }
        let held: usize =
            cache.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes).sum();
        assert!(held <= bytes_max, "{held} bytes held");
        assert!(cache.len() > 5_000, "{} nodes held", cache.len());
        // A value too large for its shard is not kept.
        cache.insert(b"big", Some(&vec![0u8; bytes_max / SHARDS]));
        assert_eq!(cache.get(b"big"), None);
    }

    #[test]
    fn a_full_set_gives_its_ways_up_in_turn_and_counts_what_it_holds() {
        // One set per shard, so every node of a shard shares it.
        let bytes_max = SHARDS * (2 * TABLE_SHARE * std::mem::size_of::<Set>() - 1);
        let cache = Cache::new(bytes_max, Arc::default());
        assert_eq!(cache.sets_per_shard(), 1);
        let in_shard: Vec<Vec<u8>> = (0u32..)
            .map(|i| format!("n{i}").into_bytes())
            .filter(|n| cache.place(n).shard == 0)
            .take(WAYS + 2)
            .collect();
        for node in &in_shard {
            cache.insert(node, Some(node));
            cache.insert(node, Some(b"a second insert of a node is ignored"));
        }
        // Nodes 0 and 1 gave their ways to the last two; the rest are held.
        for (i, node) in in_shard.iter().enumerate() {
            let expected = (i >= 2).then(|| Some(node.clone()));
            assert_eq!(cache.get(node), expected, "node {i}");
        }
        assert_eq!(cache.len(), WAYS);
        let entries: usize = in_shard[2..].iter().map(|n| 2 * n.len() + ENTRY_OVERHEAD_BYTES).sum();
        assert_eq!(cache.bytes(), entries + std::mem::size_of::<Set>(), "its entries and its one set");
    }

    proptest::proptest! {
        /// Whatever it keeps and gives up, a hit is the node's value (the base state's, which
        /// a cache never sees change), and the bound holds.
        #[test]
        fn a_hit_is_what_was_inserted(
            ops in proptest::collection::vec((0u16..400, proptest::bool::ANY), 1..600),
        ) {
            let bytes_max = 1 << 17;
            let cache = Cache::new(bytes_max, Arc::default());
            let mut first: std::collections::HashMap<u16, Option<Vec<u8>>> = std::collections::HashMap::new();
            for (node, insert) in ops {
                let key = format!("key:{node}").into_bytes();
                // A node's value is its own (absent for some), from 0 to 300 bytes.
                let value = (node % 7 != 0).then(|| vec![u8::try_from(node % 251).unwrap_or(0); usize::from(node) * 3 % 301]);
                if insert {
                    cache.insert(&key, value.as_deref());
                    first.entry(node).or_insert(value);
                } else if let Some(hit) = cache.get(&key) {
                    proptest::prop_assert_eq!(Some(&hit), first.get(&node));
                }
            }
            proptest::prop_assert!(cache.bytes() <= bytes_max, "{} bytes held", cache.bytes());
        }
    }
}
