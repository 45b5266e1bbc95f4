//! The rank index of a sorted set: counted fences over its order nodes, so that ZRANK, ranges
//! by rank, ZCOUNT and ZLEXCOUNT cost O(log n) (plus m for the elements returned) instead of
//! a walk from one end.
//!
//! The order nodes (`storage::node`) keep the members in Redis's order but carry no counts.
//! Above them the index keeps *fences*, nodes of their own under the key's element prefix
//! (tag `r`), journaled, replicated and rolled back like any other node:
//!
//! ```text
//! fence   'E' len(key) key 'r' level:u8 fence-key  → elements:u64be children:u64be
//! ```
//!
//! A fence at level 1 covers the order nodes from its fence key up to the next level-1
//! fence; a fence at level k > 1 covers the level-(k-1) fences from its key up to the next
//! level-k fence. Its value counts the elements under it and its children (at level 1 the
//! two are equal). Every level has a fence at the empty key (below every order node), the
//! top level has only that one (the root, counting the whole set), and every fence key at
//! level k > 1 is also a fence key at level k-1, so the fences nest like a B-tree's nodes.
//!
//! - A rank descends from the root: at each level it walks the children of the fence it
//!   chose (at most [`FANOUT`] + 1 of them), adding the counts of those before its target.
//! - Inserting an order node adds one to the fence covering it at every level; a fence that
//!   then has more than [`FANOUT`] children splits at its middle child, and a root that
//!   splits gets a new root above it.
//! - Removing an order node subtracts one on the same path; a fence left empty is removed
//!   (its parent's first child passes the parent its key, so keys keep nesting), except the
//!   fences at the empty key.
//!
//! A set of at most [`FANOUT`] members has no index (a walk of it is as cheap as a descent);
//! one is built when it grows past that. The index is derived data: `ZSET_RANK` nodes never
//! appear in a reply, and [`check`] proves it agrees with the order nodes in the tests.

use std::ops::Bound;

use super::db::{Db, cmd_err};
use crate::storage::node::{ZSET_ORDER, ZSET_RANK};
use crate::storage::writer::Abort;

/// The most children a fence keeps before it splits (and the size of a set that gets an
/// index). Each level of a descent reads at most this many fences.
pub const FANOUT: u64 = 128;

#[derive(Debug, Clone, PartialEq)]
struct Fence {
    key: Vec<u8>,
    elements: u64,
    children: u64,
}

fn sub(level: u8, fence_key: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(1 + fence_key.len());
    s.push(level);
    s.extend_from_slice(fence_key);
    s
}

fn corrupt(key: &[u8], what: &str) -> Abort {
    cmd_err(format!(
        "ERR the rank index of sorted set {} is inconsistent ({what}); `strand ctl verify` checks the journal against the data",
        String::from_utf8_lossy(key)
    ))
}

fn decode(key: &[u8], level: u8, sub: &[u8], value: &[u8]) -> Result<Fence, Abort> {
    match (sub.split_first(), value.split_first_chunk::<8>()) {
        (Some((&l, fence_key)), Some((elements, rest))) if l == level && rest.len() == 8 => {
            let children = rest.first_chunk::<8>().map_or(0, |c| u64::from_be_bytes(*c));
            Ok(Fence { key: fence_key.to_vec(), elements: u64::from_be_bytes(*elements), children })
        }
        _ => Err(corrupt(key, &format!("a fence at level {level} is unreadable"))),
    }
}

fn write(db: &mut Db<'_>, key: &[u8], generation: u64, level: u8, f: &Fence) -> Result<(), Abort> {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&f.elements.to_be_bytes());
    value[8..].copy_from_slice(&f.children.to_be_bytes());
    db.put_element(key, generation, ZSET_RANK, &sub(level, &f.key), &value)
}

/// The index's height: its root's level, 0 when the set has no index.
fn height(db: &Db<'_>, key: &[u8], generation: u64) -> Result<u8, Abort> {
    let last = db.elements(key, generation, ZSET_RANK, Bound::Unbounded, true, 1)?;
    Ok(last.first().and_then(|(s, _)| s.first().copied()).unwrap_or(0))
}

/// The fence at `level` covering `at` (an order sub, or a fence key): the last whose key is
/// not above it.
fn covering(db: &Db<'_>, key: &[u8], generation: u64, level: u8, at: &[u8]) -> Result<Fence, Abort> {
    let bound = sub(level, at);
    let found = db.elements(key, generation, ZSET_RANK, Bound::Included(&bound), true, 1)?;
    match found.first() {
        Some((s, v)) if s.first() == Some(&level) => decode(key, level, s, v),
        _ => Err(corrupt(key, &format!("no fence at level {level} at the empty key"))),
    }
}

/// Up to `limit` fences at `level`, from `from` (inclusive, or exclusive) upward.
fn fences(
    db: &Db<'_>,
    key: &[u8],
    generation: u64,
    level: u8,
    from: Bound<&[u8]>,
    limit: usize,
) -> Result<Vec<Fence>, Abort> {
    let start = match from {
        Bound::Included(k) | Bound::Excluded(k) => sub(level, k),
        Bound::Unbounded => vec![level],
    };
    let from = match from {
        Bound::Excluded(_) => Bound::Excluded(start.as_slice()),
        _ => Bound::Included(start.as_slice()),
    };
    let mut out = Vec::new();
    for (s, v) in db.elements(key, generation, ZSET_RANK, from, false, limit)? {
        if s.first() != Some(&level) {
            break;
        }
        out.push(decode(key, level, &s, &v)?);
    }
    Ok(out)
}

/// After order node `at` was written into a set that now has `len` members.
pub fn inserted(db: &mut Db<'_>, key: &[u8], generation: u64, len: u64, at: &[u8]) -> Result<(), Abort> {
    let mut top = height(db, key, generation)?;
    if top == 0 {
        if len <= FANOUT {
            return Ok(());
        }
        return build(db, key, generation);
    }
    let mut leaf = None;
    for level in 1..=top {
        let mut f = covering(db, key, generation, level, at)?;
        f.elements += 1;
        if level == 1 {
            f.children += 1;
        }
        write(db, key, generation, level, &f)?;
        if level == 1 {
            leaf = Some(f);
        }
    }
    match leaf {
        Some(f) if f.children > FANOUT => split(db, key, generation, 1, f, &mut top),
        _ => Ok(()),
    }
}

/// Builds the index of a set that has none, bottom up: a level-1 fence every `FANOUT / 2`
/// order nodes (the first at the empty key), then levels above it likewise, up to one root.
fn build(db: &mut Db<'_>, key: &[u8], generation: u64) -> Result<(), Abort> {
    const HALF: u64 = FANOUT / 2;
    let mut below: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut current = Fence { key: Vec::new(), elements: 0, children: 0 };
    let mut after: Option<Vec<u8>> = None;
    loop {
        let from = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let batch = db.elements(key, generation, ZSET_ORDER, from, false, 1024)?;
        let done = batch.len() < 1024;
        for (sub, _) in batch {
            if current.children == HALF {
                write(db, key, generation, 1, &current)?;
                below.push((current.key, current.elements));
                current = Fence { key: sub.clone(), elements: 0, children: 0 };
            }
            current.elements += 1;
            current.children += 1;
            after = Some(sub);
        }
        if done {
            break;
        }
    }
    write(db, key, generation, 1, &current)?;
    below.push((current.key, current.elements));
    let mut level = 1u8;
    while below.len() > 1 {
        level = level.checked_add(1).ok_or_else(|| corrupt(key, "too many levels"))?;
        let mut next = Vec::new();
        for chunk in below.chunks(HALF as usize) {
            let Some((first, _)) = chunk.first() else { continue };
            let f = Fence {
                key: first.clone(),
                elements: chunk.iter().map(|(_, n)| n).sum(),
                children: chunk.len() as u64,
            };
            write(db, key, generation, level, &f)?;
            next.push((f.key, f.elements));
        }
        below = next;
    }
    Ok(())
}

/// Splits fence `f` at `level` at its middle child, and its parent in turn while one has
/// too many children; a root that splits gets a new root.
fn split(
    db: &mut Db<'_>,
    key: &[u8],
    generation: u64,
    mut level: u8,
    mut f: Fence,
    top: &mut u8,
) -> Result<(), Abort> {
    loop {
        let half = usize::try_from(f.children / 2).unwrap_or(usize::MAX);
        let (upper_key, below) = if level == 1 {
            let walk = db.elements(key, generation, ZSET_ORDER, Bound::Included(&f.key), false, half + 1)?;
            let (k, _) =
                walk.get(half).ok_or_else(|| corrupt(key, "a fence counts more elements than it has"))?;
            (k.clone(), half as u64)
        } else {
            let kids = fences(db, key, generation, level - 1, Bound::Included(&f.key), half + 1)?;
            let k = kids.get(half).ok_or_else(|| corrupt(key, "a fence counts more children than it has"))?;
            (k.key.clone(), kids.iter().take(half).map(|c| c.elements).sum())
        };
        let upper = Fence {
            key: upper_key,
            elements: f.elements.checked_sub(below).ok_or_else(|| corrupt(key, "fence counts disagree"))?,
            children: f.children - half as u64,
        };
        let lower = Fence { key: f.key, elements: below, children: half as u64 };
        if level == *top {
            let up = level.checked_add(1).ok_or_else(|| corrupt(key, "too many levels"))?;
            write(db, key, generation, up, &Fence { key: Vec::new(), elements: f.elements, children: 1 })?;
            *top = up;
        }
        write(db, key, generation, level, &lower)?;
        write(db, key, generation, level, &upper)?;
        let mut parent = covering(db, key, generation, level + 1, &upper.key)?;
        parent.children += 1;
        write(db, key, generation, level + 1, &parent)?;
        if parent.children <= FANOUT {
            return Ok(());
        }
        level += 1;
        f = parent;
    }
}

/// After order node `at` was removed.
pub fn removed(db: &mut Db<'_>, key: &[u8], generation: u64, at: &[u8]) -> Result<(), Abort> {
    let top = height(db, key, generation)?;
    if top == 0 {
        return Ok(());
    }
    let mut leaf = None;
    for level in 1..=top {
        let mut f = covering(db, key, generation, level, at)?;
        f.elements = f.elements.checked_sub(1).ok_or_else(|| corrupt(key, "a fence counts no element"))?;
        if level == 1 {
            f.children = f.elements;
        }
        write(db, key, generation, level, &f)?;
        if level == 1 {
            leaf = Some(f);
        }
    }
    match leaf {
        Some(f) if f.elements == 0 && !f.key.is_empty() => drop_empty(db, key, generation, 1, &f.key, top),
        _ => Ok(()),
    }
}

/// Removes the empty fence at `level` with key `k` (never the empty key): its parent loses a
/// child, or — where it was the parent's first child, sharing its key — the parent takes the
/// next child's key, or goes too when it had no other child.
fn drop_empty(
    db: &mut Db<'_>,
    key: &[u8],
    generation: u64,
    mut level: u8,
    k: &[u8],
    top: u8,
) -> Result<(), Abort> {
    loop {
        db.remove_element(key, generation, ZSET_RANK, &sub(level, k))?;
        let mut parent = covering(db, key, generation, level + 1, k)?;
        if parent.key != k {
            parent.children =
                parent.children.checked_sub(1).ok_or_else(|| corrupt(key, "a fence counts no child"))?;
            return write(db, key, generation, level + 1, &parent);
        }
        if parent.children > 1 {
            // The next child takes over the key, at every level above that shares it.
            let next = fences(db, key, generation, level, Bound::Excluded(k), 1)?;
            let next =
                next.first().ok_or_else(|| corrupt(key, "a fence's next child is missing"))?.key.clone();
            parent.children =
                parent.children.checked_sub(1).ok_or_else(|| corrupt(key, "a fence counts no child"))?;
            let mut above = level + 1;
            let mut f = parent;
            loop {
                db.remove_element(key, generation, ZSET_RANK, &sub(above, k))?;
                f.key = next.clone();
                write(db, key, generation, above, &f)?;
                if above == top {
                    return Ok(());
                }
                let p = covering(db, key, generation, above + 1, k)?;
                if p.key != k {
                    return Ok(());
                }
                above += 1;
                f = p;
            }
        }
        if parent.elements != 0 {
            return Err(corrupt(key, "a fence with one empty child counts elements"));
        }
        level += 1;
    }
}

/// The order sub `n` places after `from` (inclusive) in the order nodes.
fn nth_from(
    db: &Db<'_>,
    key: &[u8],
    generation: u64,
    from: &[u8],
    mut n: u64,
) -> Result<Option<Vec<u8>>, Abort> {
    let mut cursor = Bound::Included(from.to_vec());
    loop {
        let want = usize::try_from(n.saturating_add(1)).unwrap_or(usize::MAX).min(1024);
        let bound = match &cursor {
            Bound::Included(c) => Bound::Included(c.as_slice()),
            Bound::Excluded(c) => Bound::Excluded(c.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let walk = db.elements(key, generation, ZSET_ORDER, bound, false, want)?;
        let got = walk.len() as u64;
        if n < got {
            return Ok(walk.into_iter().nth(usize::try_from(n).unwrap_or(usize::MAX)).map(|(s, _)| s));
        }
        match walk.into_iter().last() {
            Some((s, _)) if got == want as u64 => cursor = Bound::Excluded(s),
            _ => return Ok(None),
        }
        n -= got;
    }
}

/// The order sub of the member at (0-based, lowest first) rank `rank`; `None` past the end.
pub fn select(db: &Db<'_>, key: &[u8], generation: u64, rank: u64) -> Result<Option<Vec<u8>>, Abort> {
    let top = height(db, key, generation)?;
    let mut from: Vec<u8> = Vec::new();
    let mut rest = rank;
    for level in (1..top).rev() {
        let mut chosen = None;
        for kid in fences(db, key, generation, level, Bound::Included(&from), FANOUT as usize + 1)? {
            if rest < kid.elements {
                chosen = Some(kid.key);
                break;
            }
            rest -= kid.elements;
        }
        match chosen {
            Some(k) => from = k,
            None => return Ok(None),
        }
    }
    nth_from(db, key, generation, &from, rest)
}

/// How many members sort before order sub `at` (a member's rank, given its order sub).
pub fn count_before(db: &Db<'_>, key: &[u8], generation: u64, at: &[u8]) -> Result<u64, Abort> {
    let top = height(db, key, generation)?;
    let mut from: Vec<u8> = Vec::new();
    let mut before = 0u64;
    // The children of the fence chosen at the level above are the first fences from its
    // key; those with a key not above `at` are all among them, as the next fence above is
    // above it. Only those are read.
    for level in (1..top).rev() {
        let (lo, hi) = (sub(level, &from), sub(level, at));
        let kids = db.elements_between(
            key,
            generation,
            ZSET_RANK,
            (Bound::Included(&lo), Bound::Included(&hi)),
            false,
            FANOUT as usize + 1,
        )?;
        let Some(((last, _), earlier)) = kids.split_last() else {
            return Err(corrupt(key, "a level has no fence at the empty key"));
        };
        for (s, v) in earlier {
            before += decode(key, level, s, v)?.elements;
        }
        from = last.get(1..).unwrap_or_default().to_vec();
    }
    // The members under the chosen level-1 fence that sort before `at` (at most FANOUT when
    // there is an index; a set without one has at most FANOUT members).
    let mut cursor = Bound::Included(from);
    loop {
        let lo = match &cursor {
            Bound::Included(c) => Bound::Included(c.as_slice()),
            Bound::Excluded(c) => Bound::Excluded(c.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let walk =
            db.elements_between(key, generation, ZSET_ORDER, (lo, Bound::Excluded(at)), false, 1024)?;
        let full = walk.len() == 1024;
        before += walk.len() as u64;
        match walk.into_iter().last() {
            Some((s, _)) if full => cursor = Bound::Excluded(s),
            _ => return Ok(before),
        }
    }
}

/// Checks `key`'s index against its order nodes: every count, the nesting of keys, at most
/// [`FANOUT`] children a fence, one root counting `len`. For tests; walks everything.
pub fn check(db: &Db<'_>, key: &[u8], generation: u64, len: u64) -> Result<(), String> {
    let err = |e: Abort| format!("{e:?}");
    let order: Vec<Vec<u8>> = {
        let mut all = Vec::new();
        let mut from: Option<Vec<u8>> = None;
        loop {
            let b = from.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let batch = db.elements(key, generation, ZSET_ORDER, b, false, 1024).map_err(err)?;
            let done = batch.len() < 1024;
            from = batch.last().map(|(s, _)| s.clone());
            all.extend(batch.into_iter().map(|(s, _)| s));
            if done {
                break all;
            }
        }
    };
    if order.len() as u64 != len {
        return Err(format!("{} order nodes, head says {len}", order.len()));
    }
    let top = height(db, key, generation).map_err(err)?;
    if top == 0 {
        return if len <= FANOUT { Ok(()) } else { Err(format!("{len} members and no index")) };
    }
    let mut below: Vec<(Vec<u8>, u64)> = order.into_iter().map(|s| (s, 1)).collect();
    for level in 1..=top {
        let fs = fences(db, key, generation, level, Bound::Unbounded, usize::MAX).map_err(err)?;
        if fs.first().is_none_or(|f| !f.key.is_empty()) {
            return Err(format!("level {level} has no fence at the empty key"));
        }
        if level == top && fs.len() != 1 {
            return Err(format!("the top level {level} has {} fences", fs.len()));
        }
        let mut next_below = Vec::new();
        for (i, f) in fs.iter().enumerate() {
            let end = fs.get(i + 1).map(|n| n.key.as_slice());
            let kids: Vec<&(Vec<u8>, u64)> = below
                .iter()
                .filter(|(k, _)| k.as_slice() >= f.key.as_slice() && end.is_none_or(|e| k.as_slice() < e))
                .collect();
            let elements: u64 = kids.iter().map(|(_, n)| n).sum();
            if f.elements != elements || f.children != kids.len() as u64 {
                return Err(format!(
                    "level {level} fence {:?}: counts {}/{}, has {elements}/{}",
                    f.key,
                    f.elements,
                    f.children,
                    kids.len()
                ));
            }
            if f.children > FANOUT {
                return Err(format!("level {level} fence {:?} has {} children", f.key, f.children));
            }
            if f.elements == 0 && !f.key.is_empty() {
                return Err(format!("level {level} fence {:?} is empty", f.key));
            }
            if level > 1 && kids.first().is_none_or(|(k, _)| *k != f.key) {
                return Err(format!("level {level} fence {:?} is not a fence below", f.key));
            }
            next_below.push((f.key.clone(), f.elements));
        }
        below = next_below;
    }
    if below.first().map(|(_, n)| *n) != Some(len) {
        return Err("the root does not count every member".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::db::{Db, Kv};
    use super::super::zsets::{self, order_sub};
    use super::*;
    use crate::storage::node::{Head, Kind};
    use crate::storage::{Pairs, Range};

    #[derive(Default)]
    struct Memory(BTreeMap<Vec<u8>, Vec<u8>>);

    impl Kv for Memory {
        fn get(&self, node: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
            Ok(self.0.get(node).cloned())
        }
        fn range(&self, range: Range<'_>, rev: bool, limit: usize) -> Result<Pairs, Abort> {
            let r = self.0.range::<[u8], _>(range).map(|(k, v)| (k.clone(), v.clone()));
            Ok(if rev { r.rev().take(limit).collect() } else { r.take(limit).collect() })
        }
        fn put(&mut self, node: &[u8], value: &[u8]) -> Result<(), Abort> {
            self.0.insert(node.to_vec(), value.to_vec());
            Ok(())
        }
        fn remove(&mut self, node: &[u8]) -> Result<bool, Abort> {
            Ok(self.0.remove(node).is_some())
        }
    }

    const KEY: &[u8] = b"z";

    /// Applies `ops` (member, Some(score) to add or move, None to remove) and checks the
    /// index against a model after each `every`-th and at the end, and every rank query.
    fn run(ops: &[(u16, Option<i8>)], every: usize) {
        let mut kv = Memory::default();
        let mut db = Db { kv: &mut kv, now_ms: 0, counts: None };
        let mut head = Head::collection(Kind::ZSet);
        let mut model: BTreeMap<Vec<u8>, f64> = BTreeMap::new();
        for (i, (m, op)) in ops.iter().enumerate() {
            let member = format!("m{m}").into_bytes();
            match op {
                Some(s) => {
                    zsets::put(&mut db, KEY, &mut head, &member, f64::from(*s)).expect("put");
                    model.insert(member, f64::from(*s));
                }
                None => {
                    zsets::remove(&mut db, KEY, &mut head, &member).expect("remove");
                    model.remove(&member);
                }
            }
            if i % every == 0 {
                check(&db, KEY, head.generation, head.len).unwrap_or_else(|e| panic!("after op {i}: {e}"));
            }
        }
        check(&db, KEY, head.generation, head.len).expect("at the end");
        let mut order: Vec<Vec<u8>> = model.iter().map(|(m, s)| order_sub(*s, m)).collect();
        order.sort();
        for (rank, sub) in order.iter().enumerate() {
            assert_eq!(count_before(&db, KEY, head.generation, sub).expect("count"), rank as u64);
            assert_eq!(select(&db, KEY, head.generation, rank as u64).expect("select").as_ref(), Some(sub));
        }
        assert_eq!(select(&db, KEY, head.generation, order.len() as u64).expect("select past the end"), None);
        let mut past = order.last().cloned().unwrap_or_default();
        past.push(0);
        assert_eq!(count_before(&db, KEY, head.generation, &past).expect("count"), order.len() as u64);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Any mix of adds, score changes (ties included) and removals keeps every count.
        #[test]
        fn counts_follow_any_changes(ops in proptest::collection::vec(
            (0u16..700, prop_oneof![3 => (-20i8..20).prop_map(Some), 1 => Just(None)]),
            0..3000,
        )) {
            run(&ops, 97);
        }
    }

    /// A set large enough for three levels, grown and shrunk in a scrambled order.
    #[test]
    fn three_levels_grow_and_shrink() {
        let scramble = |i: u32| u32::try_from(u64::from(i) * 7_919 % 40_009).unwrap_or(0);
        let mut kv = Memory::default();
        let mut db = Db { kv: &mut kv, now_ms: 0, counts: None };
        let mut head = Head::collection(Kind::ZSet);
        for i in 0..40_000u32 {
            let m = scramble(i);
            zsets::put(&mut db, KEY, &mut head, &m.to_be_bytes(), f64::from(m % 97)).expect("put");
        }
        assert_eq!(height(&db, KEY, head.generation).expect("height"), 3);
        check(&db, KEY, head.generation, head.len).expect("grown");
        for i in (0..40_000u32).step_by(3) {
            zsets::remove(&mut db, KEY, &mut head, &scramble(i).to_be_bytes()).expect("remove");
        }
        check(&db, KEY, head.generation, head.len).expect("shrunk");
        // Most of the rest, so that whole fences empty at every level.
        for i in (0..40_000u32).filter(|i| i % 3 != 0 && i % 50 != 1) {
            zsets::remove(&mut db, KEY, &mut head, &scramble(i).to_be_bytes()).expect("remove");
        }
        check(&db, KEY, head.generation, head.len).expect("nearly emptied");
        let mut order: Vec<Vec<u8>> = (0..40_000u32)
            .filter(|i| i % 3 != 0 && i % 50 == 1)
            .map(scramble)
            .map(|m| order_sub(f64::from(m % 97), &m.to_be_bytes()))
            .collect();
        order.sort();
        for rank in (0..order.len()).step_by(7) {
            assert_eq!(count_before(&db, KEY, head.generation, &order[rank]).expect("count"), rank as u64);
            assert_eq!(
                select(&db, KEY, head.generation, rank as u64).expect("select").as_ref(),
                Some(&order[rank])
            );
        }
    }

    /// An index built at once over a set far larger than one fence.
    #[test]
    fn a_large_set_is_indexed_bottom_up() {
        let mut kv = Memory::default();
        let mut db = Db { kv: &mut kv, now_ms: 0, counts: None };
        let generation = 9;
        let mut order = Vec::new();
        for i in 0..20_000u32 {
            let sub = order_sub(f64::from(i % 13), &i.to_be_bytes());
            db.put_element(KEY, generation, ZSET_ORDER, &sub, b"").expect("put");
            order.push(sub);
        }
        order.sort();
        inserted(&mut db, KEY, generation, 20_000, &order[0]).expect("build");
        check(&db, KEY, generation, 20_000).expect("consistent");
        assert_eq!(height(&db, KEY, generation).expect("height"), 3);
        for rank in (0..order.len()).step_by(997) {
            assert_eq!(count_before(&db, KEY, generation, &order[rank]).expect("count"), rank as u64);
        }
    }

    /// A queue (add at the high end, pop the low end) neither leaks fences nor loses counts.
    #[test]
    fn a_sliding_window_keeps_the_index_small() {
        let mut kv = Memory::default();
        let mut db = Db { kv: &mut kv, now_ms: 0, counts: None };
        let mut head = Head::collection(Kind::ZSet);
        for i in 0..20_000u32 {
            zsets::put(&mut db, KEY, &mut head, &i.to_be_bytes(), f64::from(i)).expect("put");
            if i >= 1_000 {
                zsets::remove(&mut db, KEY, &mut head, &(i - 1_000).to_be_bytes()).expect("remove");
            }
        }
        check(&db, KEY, head.generation, head.len).expect("consistent");
        let fences = db
            .elements(KEY, head.generation, ZSET_RANK, Bound::Unbounded, false, usize::MAX)
            .expect("fences");
        assert!(fences.len() < 40, "{} fences for 1,000 members", fences.len());
        assert_eq!(
            select(&db, KEY, head.generation, 0).expect("select"),
            Some(order_sub(19_000.0, &19_000u32.to_be_bytes()))
        );
    }

    /// Emptying an indexed set leaves no node behind.
    #[test]
    fn an_emptied_set_leaves_nothing() {
        let mut kv = Memory::default();
        {
            let mut db = Db { kv: &mut kv, now_ms: 0, counts: None };
            let mut head = Head::collection(Kind::ZSet);
            for i in 0..500u32 {
                zsets::put(&mut db, KEY, &mut head, &i.to_be_bytes(), 1.0).expect("put");
            }
            db.store_collection(KEY, None, &head).expect("store");
            let old = head.clone();
            for i in 0..500u32 {
                zsets::remove(&mut db, KEY, &mut head, &i.to_be_bytes()).expect("remove");
            }
            db.store_collection(KEY, Some(&old), &head).expect("store");
        }
        assert!(kv.0.is_empty(), "{} nodes left", kv.0.len());
    }
}
