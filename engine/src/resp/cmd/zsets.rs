//! Sorted-set commands. Each member has two nodes (`storage::node`): its score, and an order
//! node named by (score, member) whose byte order is Redis's order, so ranges by score and by
//! lex are a seek plus a walk (O(log n + m)). A set larger than `zindex::FANOUT` also keeps a
//! rank index (`zindex`), so ZRANK, ranges by rank, ZCOUNT and ZLEXCOUNT are a descent of it
//! (O(log n), plus m for the members returned).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::db::{Db, cmd_err};
use super::hashes::random_pick;
use super::lists::parse_timeout;
use super::sets::numkeys;
use super::{Args, K1, NOKEY, R, RF, Spec, W, WF, data, format_double, parse_float, parse_integer, zindex};
use crate::frame::Frame;
use crate::storage::node::{self, Head, Kind, SET_MEMBER, ZSET_ORDER, ZSET_SCORE};
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[
    data("zadd", -4, WF, K1, zadd),
    data("zincrby", 4, WF, K1, zincrby),
    data("zrem", -3, WF, K1, zrem),
    data("zcard", 2, RF, K1, zcard),
    data("zscore", 3, RF, K1, zscore),
    data("zmscore", -3, RF, K1, zmscore),
    data("zrank", 3, RF, K1, zrank),
    data("zrevrank", 3, RF, K1, zrevrank),
    data("zcount", 4, RF, K1, zcount),
    data("zlexcount", 4, RF, K1, zlexcount),
    data("zrange", -4, R, K1, zrange),
    data("zrangestore", -5, W, (1, 2, 1), zrangestore),
    data("zrevrange", -4, R, K1, zrevrange),
    data("zrangebyscore", -4, R, K1, zrangebyscore),
    data("zrevrangebyscore", -4, R, K1, zrevrangebyscore),
    data("zrangebylex", -4, R, K1, zrangebylex),
    data("zrevrangebylex", -4, R, K1, zrevrangebylex),
    data("zremrangebyrank", 4, W, K1, zremrangebyrank),
    data("zremrangebyscore", 4, W, K1, zremrangebyscore),
    data("zremrangebylex", 4, W, K1, zremrangebylex),
    data("zpopmin", -2, WF, K1, zpopmin),
    data("zpopmax", -2, WF, K1, zpopmax),
    data("bzpopmin", -3, WF, (1, -2, 1), bzpopmin),
    data("bzpopmax", -3, WF, (1, -2, 1), bzpopmax),
    data("zmpop", -4, W, NOKEY, zmpop),
    data("bzmpop", -5, W, NOKEY, bzmpop),
    data("zrandmember", -2, R, K1, zrandmember),
    data("zunion", -3, R, NOKEY, zunion),
    data("zinter", -3, R, NOKEY, zinter),
    data("zdiff", -3, R, NOKEY, zdiff),
    data("zunionstore", -4, W, K1, zunionstore),
    data("zinterstore", -4, W, K1, zinterstore),
    data("zdiffstore", -4, W, K1, zdiffstore),
    data("zintercard", -3, R, NOKEY, zintercard),
];

/// Members with their scores, in order.
type Scored = Vec<(Vec<u8>, f64)>;

fn double(x: f64) -> Frame {
    Frame::Double(format_double(x))
}

fn decode_score(bytes: &[u8]) -> f64 {
    bytes.first_chunk::<8>().map_or(0.0, |b| f64::from_bits(u64::from_be_bytes(*b)))
}

/// An order node's sub-key: sortable score, then the member.
pub(super) fn order_sub(score: f64, member: &[u8]) -> Vec<u8> {
    let mut sub = node::sortable_f64(score).to_vec();
    sub.extend_from_slice(member);
    sub
}

fn split_order(sub: &[u8]) -> Option<(f64, Vec<u8>)> {
    let (score, member) = sub.split_first_chunk::<8>()?;
    Some((node::from_sortable_f64(*score), member.to_vec()))
}

pub fn score(db: &Db<'_>, key: &[u8], generation: u64, member: &[u8]) -> Result<Option<f64>, Abort> {
    Ok(db.element(key, generation, ZSET_SCORE, member)?.map(|b| decode_score(&b)))
}

/// Sets `member`'s score; whether it is new.
pub fn put(db: &mut Db<'_>, key: &[u8], head: &mut Head, member: &[u8], new: f64) -> Result<bool, Abort> {
    let new = if new == 0.0 { 0.0 } else { new };
    let g = head.generation;
    let old = score(db, key, g, member)?;
    if old == Some(new) {
        return Ok(false);
    }
    if let Some(old) = old {
        let at = order_sub(old, member);
        db.remove_element(key, g, ZSET_ORDER, &at)?;
        zindex::removed(db, key, g, &at)?;
    } else {
        head.len += 1;
    }
    let at = order_sub(new, member);
    db.put_element(key, g, ZSET_ORDER, &at, b"")?;
    db.put_element(key, g, ZSET_SCORE, member, &new.to_bits().to_be_bytes())?;
    zindex::inserted(db, key, g, head.len, &at)?;
    Ok(old.is_none())
}

pub fn remove(db: &mut Db<'_>, key: &[u8], head: &mut Head, member: &[u8]) -> Result<bool, Abort> {
    let g = head.generation;
    let Some(old) = score(db, key, g, member)? else { return Ok(false) };
    let at = order_sub(old, member);
    db.remove_element(key, g, ZSET_ORDER, &at)?;
    db.remove_element(key, g, ZSET_SCORE, member)?;
    zindex::removed(db, key, g, &at)?;
    head.len = head.len.saturating_sub(1);
    Ok(true)
}

/// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member …]
fn zadd(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let mut rest = a.rest().into_iter().peekable();
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) = (false, false, false, false, false, false);
    while let Some(word) = rest.peek() {
        match word.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            b"CH" => ch = true,
            b"INCR" => incr = true,
            _ => break,
        }
        rest.next();
    }
    let pairs: Vec<Vec<u8>> = rest.collect();
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(cmd_err("ERR syntax error"));
    }
    if nx && xx {
        return Err(cmd_err("ERR XX and NX options at the same time are not compatible"));
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err(cmd_err("ERR GT, LT, and/or NX options at the same time are not compatible"));
    }
    if incr && pairs.len() > 2 {
        return Err(cmd_err("ERR INCR option supports a single increment-element pair"));
    }
    let mut parsed = Vec::with_capacity(pairs.len() / 2);
    for (s, m) in super::pair_up(pairs) {
        let score = parse_float(&s).ok_or_else(|| cmd_err("ERR value is not a valid float"))?;
        parsed.push((score, m));
    }
    let (old, mut head) = db.open(&key, Kind::ZSet)?;
    let (mut added, mut changed) = (0i64, 0i64);
    let mut incr_result: Option<f64> = None;
    for (value, member) in parsed {
        let current = score(db, &key, head.generation, &member)?;
        if (nx && current.is_some()) || (xx && current.is_none()) {
            continue;
        }
        let target = match (incr, current) {
            (true, Some(c)) => c + value,
            _ => value,
        };
        if target.is_nan() {
            return Err(cmd_err("ERR resulting score is not a number (NaN)"));
        }
        if let Some(c) = current
            && ((gt && target <= c) || (lt && target >= c))
        {
            continue;
        }
        if put(db, &key, &mut head, &member, target)? {
            added += 1;
        } else if current.is_some_and(|c| c != target) {
            changed += 1;
        }
        incr_result = Some(target);
    }
    db.store_collection(&key, old.as_ref(), &head)?;
    if incr {
        return Ok(incr_result.map_or(Frame::Null, double));
    }
    Ok(Frame::Integer(if ch { added + changed } else { added }))
}

fn zincrby(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let by = a.float()?;
    let member = a.next_arg()?;
    let (old, mut head) = db.open(&key, Kind::ZSet)?;
    let next = score(db, &key, head.generation, &member)?.unwrap_or(0.0) + by;
    if next.is_nan() {
        return Err(cmd_err("ERR resulting score is not a number (NaN)"));
    }
    put(db, &key, &mut head, &member, next)?;
    db.store_collection(&key, old.as_ref(), &head)?;
    Ok(double(next))
}

fn zrem(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let Some(old) = db.typed_for_write(&key, Kind::ZSet)? else { return Ok(Frame::Integer(0)) };
    let mut head = old.clone();
    let mut n = 0;
    for m in a.rest() {
        if remove(db, &key, &mut head, &m)? {
            n += 1;
        }
    }
    db.store_collection(&key, Some(&old), &head)?;
    Ok(Frame::Integer(n))
}

fn zcard(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let len = db.typed(&a.next_arg()?, Kind::ZSet)?.map_or(0, |h| h.len);
    Ok(Frame::Integer(i64::try_from(len).unwrap_or(i64::MAX)))
}

fn zscore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let (key, m) = (a.next_arg()?, a.next_arg()?);
    let Some(head) = db.typed(&key, Kind::ZSet)? else { return Ok(Frame::Null) };
    Ok(score(db, &key, head.generation, &m)?.map_or(Frame::Null, double))
}

fn zmscore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let live = db.typed(&key, Kind::ZSet)?;
    let mut out = Vec::new();
    for m in a.rest() {
        out.push(match &live {
            Some(h) => score(db, &key, h.generation, &m)?.map_or(Frame::Null, double),
            None => Frame::Null,
        });
    }
    Ok(Frame::Array(out))
}

/// Up to `limit` (member, score) from the low end (or the high end with `rev`) of a set of
/// `len` members, after skipping `skip`: a descent of the rank index to the first, then a
/// walk.
fn by_rank(
    db: &Db<'_>,
    key: &[u8],
    head: &Head,
    rev: bool,
    skip: usize,
    limit: usize,
) -> Result<Scored, Abort> {
    let (len, g) = (head.len, head.generation);
    let skip = skip as u64;
    if skip >= len || limit == 0 {
        return Ok(Vec::new());
    }
    let rank = if rev { len - 1 - skip } else { skip };
    let Some(first) = zindex::select(db, key, g, rank)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut from = Bound::Included(first);
    while out.len() < limit {
        let bound = match &from {
            Bound::Included(s) => Bound::Included(s.as_slice()),
            Bound::Excluded(s) => Bound::Excluded(s.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let want = (limit - out.len()).min(1024);
        let batch = db.elements(key, g, ZSET_ORDER, bound, rev, want)?;
        let done = batch.len() < want;
        let Some(last) = batch.last().map(|(s, _)| s.clone()) else { break };
        out.extend(
            batch.iter().filter_map(|(sub, _)| split_order(sub)).map(|(score, member)| (member, score)),
        );
        if done {
            break;
        }
        from = Bound::Excluded(last);
    }
    Ok(out)
}

/// A score bound: value and whether it is exclusive.
#[derive(Debug, Clone, Copy)]
struct ScoreBound {
    value: f64,
    exclusive: bool,
}

fn parse_score_bound(bytes: &[u8]) -> Result<ScoreBound, Abort> {
    let err = || cmd_err("ERR min or max is not a float");
    let (exclusive, text) = match bytes.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let value = parse_float(text).ok_or_else(err)?;
    Ok(ScoreBound { value, exclusive })
}

impl ScoreBound {
    fn above_min(self, x: f64) -> bool {
        if self.exclusive { x > self.value } else { x >= self.value }
    }
    fn below_max(self, x: f64) -> bool {
        if self.exclusive { x < self.value } else { x <= self.value }
    }
}

/// A lex bound: `-`, `+`, `[member`, `(member`.
#[derive(Debug, Clone)]
enum LexBound {
    Min,
    Max,
    Incl(Vec<u8>),
    Excl(Vec<u8>),
}

fn parse_lex_bound(bytes: &[u8]) -> Result<LexBound, Abort> {
    match bytes.split_first() {
        Some((b'-', [])) => Ok(LexBound::Min),
        Some((b'+', [])) => Ok(LexBound::Max),
        Some((b'[', rest)) => Ok(LexBound::Incl(rest.to_vec())),
        Some((b'(', rest)) => Ok(LexBound::Excl(rest.to_vec())),
        _ => Err(cmd_err("ERR min or max not valid string range item")),
    }
}

fn lex_above_min(min: &LexBound, m: &[u8]) -> bool {
    match min {
        LexBound::Min => true,
        LexBound::Max => false,
        LexBound::Incl(b) => m >= b.as_slice(),
        LexBound::Excl(b) => m > b.as_slice(),
    }
}

fn lex_below_max(max: &LexBound, m: &[u8]) -> bool {
    match max {
        LexBound::Min => false,
        LexBound::Max => true,
        LexBound::Incl(b) => m <= b.as_slice(),
        LexBound::Excl(b) => m < b.as_slice(),
    }
}

/// A range to walk: by score or by lex, between two bounds given low-to-high.
#[derive(Debug, Clone)]
enum Span {
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

impl Span {
    /// A span by lex (`[a`, `(a`, `-`, `+`) or by score (`1.5`, `(1.5`, `-inf`) from its bounds.
    fn parse(lex: bool, lo: &[u8], hi: &[u8]) -> Result<Span, Abort> {
        Ok(if lex {
            Span::Lex(parse_lex_bound(lo)?, parse_lex_bound(hi)?)
        } else {
            Span::Score(parse_score_bound(lo)?, parse_score_bound(hi)?)
        })
    }

    fn contains(&self, score: f64, member: &[u8]) -> bool {
        match self {
            Span::Score(min, max) => min.above_min(score) && max.below_max(score),
            Span::Lex(min, max) => lex_above_min(min, member) && lex_below_max(max, member),
        }
    }

    /// Whether an element is past the end of the span in walking direction.
    fn past(&self, score: f64, member: &[u8], rev: bool) -> bool {
        match (self, rev) {
            (Span::Score(_, max), false) => !max.below_max(score),
            (Span::Score(min, _), true) => !min.above_min(score),
            (Span::Lex(_, max), false) => !lex_below_max(max, member),
            (Span::Lex(min, _), true) => !lex_above_min(min, member),
        }
    }
}

/// Elements in `span`, walking up (or down with `rev`), skipping `offset`, at most `limit`.
fn by_span(
    db: &Db<'_>,
    key: &[u8],
    generation: u64,
    span: &Span,
    rev: bool,
    offset: usize,
    limit: usize,
) -> Result<Scored, Abort> {
    // Seek to where the span starts: by score exactly; by lex within the score of the
    // first (or last) element, as all members of a lex range share one score.
    let start: Option<(Vec<u8>, bool)> = match (span, rev) {
        (Span::Score(min, _), false) => Some((node::sortable_f64(min.value).to_vec(), true)),
        (Span::Score(_, max), true) => {
            node::prefix_end(&node::sortable_f64(max.value)).map(|end| (end, false))
        }
        (Span::Lex(bound, _), false) | (Span::Lex(_, bound), true) => {
            let edge = db.elements(key, generation, ZSET_ORDER, Bound::Unbounded, rev, 1)?;
            match (edge.first().and_then(|(s, _)| split_order(s)), bound) {
                (Some((score, _)), LexBound::Incl(m) | LexBound::Excl(m)) => {
                    Some((order_sub(score, m), true))
                }
                _ => None,
            }
        }
    };
    let mut out = Vec::new();
    let mut skipped = 0usize;
    // The bound to continue from: (sub, inclusive).
    let mut cursor = start;
    loop {
        let from = match &cursor {
            Some((s, true)) => Bound::Included(s.as_slice()),
            Some((s, false)) => Bound::Excluded(s.as_slice()),
            None => Bound::Unbounded,
        };
        let batch = db.elements(key, generation, ZSET_ORDER, from, rev, 256)?;
        let Some(last) = batch.last().map(|(s, _)| s.clone()) else { break };
        for (sub, _) in batch {
            let Some((score, member)) = split_order(&sub) else { continue };
            if !span.contains(score, &member) {
                if span.past(score, &member, rev) {
                    return Ok(out);
                }
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if out.len() == limit {
                return Ok(out);
            }
            out.push((member, score));
        }
        cursor = Some((last, false));
    }
    Ok(out)
}

fn reply_range(items: Vec<(Vec<u8>, f64)>, with_scores: bool) -> Frame {
    if with_scores {
        Frame::Pairs(items.into_iter().map(|(m, s)| (Frame::Bulk(m), double(s))).collect())
    } else {
        Frame::Array(items.into_iter().map(|(m, _)| Frame::Bulk(m)).collect())
    }
}

/// What ZRANGE and its relatives select.
struct RangeQuery {
    by: By,
    rev: bool,
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Rank,
    Score,
    Lex,
}

/// Runs a range query on `key`; `a_min`/`a_max` as given (for REV, max first).
fn run_range(db: &Db<'_>, key: &[u8], q: &RangeQuery, first: &[u8], second: &[u8]) -> Result<Scored, Abort> {
    match q.by {
        By::Rank => {
            let start =
                parse_integer(first).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?;
            let stop = parse_integer(second)
                .ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?;
            let Some(head) = db.typed(key, Kind::ZSet)? else { return Ok(Vec::new()) };
            let len = usize::try_from(head.len).unwrap_or(usize::MAX);
            let Some((s, e)) = super::lists::index_range(start, stop, len) else { return Ok(Vec::new()) };
            by_rank(db, key, &head, q.rev, s, e - s + 1)
        }
        By::Score | By::Lex => {
            let (lo, hi) = if q.rev { (second, first) } else { (first, second) };
            let span = Span::parse(q.by == By::Lex, lo, hi)?;
            let Some(head) = db.typed(key, Kind::ZSet)? else { return Ok(Vec::new()) };
            let (offset, count) = q.limit.unwrap_or((0, -1));
            if offset < 0 {
                return Ok(Vec::new());
            }
            let limit = if count < 0 { usize::MAX } else { usize::try_from(count).unwrap_or(usize::MAX) };
            by_span(
                db,
                key,
                head.generation,
                &span,
                q.rev,
                usize::try_from(offset).unwrap_or(usize::MAX),
                limit,
            )
        }
    }
}

fn parse_range_options(a: &mut Args, mut q: RangeQuery, generic: bool) -> Result<RangeQuery, Abort> {
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"WITHSCORES" => q.with_scores = true,
            b"LIMIT" => {
                let offset = a.integer()?;
                let count = a.integer()?;
                q.limit = Some((offset, count));
            }
            b"BYSCORE" if generic && q.by == By::Rank => q.by = By::Score,
            b"BYLEX" if generic && q.by == By::Rank => q.by = By::Lex,
            b"REV" if generic => q.rev = true,
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    if q.limit.is_some() && q.by == By::Rank {
        return Err(cmd_err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if q.with_scores && q.by == By::Lex {
        return Err(cmd_err("ERR syntax error, WITHSCORES not supported in combination with BYLEX"));
    }
    Ok(q)
}

fn range_command(db: &mut Db<'_>, a: &mut Args, by: By, rev: bool, generic: bool) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (first, second) = (a.next_arg()?, a.next_arg()?);
    let q = parse_range_options(a, RangeQuery { by, rev, limit: None, with_scores: false }, generic)?;
    let items = run_range(db, &key, &q, &first, &second)?;
    Ok(reply_range(items, q.with_scores))
}

fn zrange(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    range_command(db, a, By::Rank, false, true)
}
fn zrevrange(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    range_command(db, a, By::Rank, true, false)
}
fn zrangebyscore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    range_command(db, a, By::Score, false, false)
}
fn zrevrangebyscore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    range_command(db, a, By::Score, true, false)
}
fn zrangebylex(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    range_command(db, a, By::Lex, false, false)
}
fn zrevrangebylex(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    range_command(db, a, By::Lex, true, false)
}

/// Replaces `dst` with a sorted set of `items`; its size.
fn store_zset(
    db: &mut Db<'_>,
    dst: &[u8],
    items: impl IntoIterator<Item = (Vec<u8>, f64)>,
) -> Result<usize, Abort> {
    db.delete(dst)?;
    let mut head = Head::collection(Kind::ZSet);
    for (m, s) in items {
        put(db, dst, &mut head, &m, s)?;
    }
    db.store_collection(dst, None, &head)?;
    Ok(usize::try_from(head.len).unwrap_or(usize::MAX))
}

fn zrangestore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let dst = a.next_arg()?;
    let src = a.next_arg()?;
    let (first, second) = (a.next_arg()?, a.next_arg()?);
    let q = parse_range_options(
        a,
        RangeQuery { by: By::Rank, rev: false, limit: None, with_scores: false },
        true,
    )?;
    if q.with_scores {
        return Err(cmd_err("ERR syntax error"));
    }
    let items = run_range(db, &src, &q, &first, &second)?;
    Ok(Frame::Integer(i64::try_from(store_zset(db, &dst, items)?).unwrap_or(i64::MAX)))
}

fn rank(db: &mut Db<'_>, a: &mut Args, rev: bool) -> Result<Frame, Abort> {
    let (key, member) = (a.next_arg()?, a.next_arg()?);
    let Some(head) = db.typed(&key, Kind::ZSet)? else { return Ok(Frame::Null) };
    let Some(s) = score(db, &key, head.generation, &member)? else { return Ok(Frame::Null) };
    let before = zindex::count_before(db, &key, head.generation, &order_sub(s, &member))?;
    let r = if rev { head.len.saturating_sub(before + 1) } else { before };
    Ok(Frame::Integer(i64::try_from(r).unwrap_or(i64::MAX)))
}

fn zrank(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    rank(db, a, false)
}
fn zrevrank(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    rank(db, a, true)
}

/// Where a span's bound falls among the order nodes.
enum Edge {
    Start,
    At(Vec<u8>),
    End,
}

impl Span {
    /// The span as a half-open range of order subs `[low, high)`; a lex span lies within the
    /// score of the set's first member (`score`), as all members of a lex range share one.
    fn edges(&self, score: f64) -> (Edge, Edge) {
        let at_or_end = |s: Option<Vec<u8>>| s.map_or(Edge::End, Edge::At);
        let after = |m: &[u8]| {
            let mut s = order_sub(score, m);
            s.push(0);
            Edge::At(s)
        };
        match self {
            Span::Score(min, max) => {
                let lo = node::sortable_f64(min.value);
                let hi = node::sortable_f64(max.value);
                let low =
                    if min.exclusive { at_or_end(node::prefix_end(&lo)) } else { Edge::At(lo.to_vec()) };
                let high =
                    if max.exclusive { Edge::At(hi.to_vec()) } else { at_or_end(node::prefix_end(&hi)) };
                (low, high)
            }
            Span::Lex(min, max) => {
                let low = match min {
                    LexBound::Min => Edge::Start,
                    LexBound::Max => Edge::End,
                    LexBound::Incl(m) => Edge::At(order_sub(score, m)),
                    LexBound::Excl(m) => after(m),
                };
                let high = match max {
                    LexBound::Min => Edge::Start,
                    LexBound::Max => Edge::End,
                    LexBound::Incl(m) => after(m),
                    LexBound::Excl(m) => Edge::At(order_sub(score, m)),
                };
                (low, high)
            }
        }
    }
}

/// ZCOUNT and ZLEXCOUNT: the difference of two ranks (O(log n)).
fn count_span(db: &mut Db<'_>, a: &mut Args, lex: bool) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (lo, hi) = (a.next_arg()?, a.next_arg()?);
    let span = Span::parse(lex, &lo, &hi)?;
    let Some(head) = db.typed(&key, Kind::ZSet)? else { return Ok(Frame::Integer(0)) };
    let first = db.elements(&key, head.generation, ZSET_ORDER, Bound::Unbounded, false, 1)?;
    let score = first.first().and_then(|(s, _)| split_order(s)).map_or(0.0, |(score, _)| score);
    let (low, high) = span.edges(score);
    let position = |db: &Db<'_>, edge: &Edge| -> Result<u64, Abort> {
        match edge {
            Edge::Start => Ok(0),
            Edge::End => Ok(head.len),
            Edge::At(sub) => zindex::count_before(db, &key, head.generation, sub),
        }
    };
    let n = position(db, &high)?.saturating_sub(position(db, &low)?);
    Ok(Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn zcount(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    count_span(db, a, false)
}
fn zlexcount(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    count_span(db, a, true)
}

fn remove_items(db: &mut Db<'_>, key: &[u8], old: &Head, items: &[(Vec<u8>, f64)]) -> Result<Frame, Abort> {
    if items.len() as u64 == old.len {
        // Every member: the key goes, its nodes reclaimed like a DEL's.
        db.delete_key(key, old)?;
        return Ok(Frame::Integer(i64::try_from(items.len()).unwrap_or(i64::MAX)));
    }
    let mut head = old.clone();
    for (m, _) in items {
        remove(db, key, &mut head, m)?;
    }
    db.store_collection(key, Some(old), &head)?;
    Ok(Frame::Integer(i64::try_from(items.len()).unwrap_or(i64::MAX)))
}

fn zremrangebyrank(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (start, stop) = (a.integer()?, a.integer()?);
    let Some(old) = db.typed_for_write(&key, Kind::ZSet)? else { return Ok(Frame::Integer(0)) };
    let len = usize::try_from(old.len).unwrap_or(usize::MAX);
    let Some((s, e)) = super::lists::index_range(start, stop, len) else { return Ok(Frame::Integer(0)) };
    let items = by_rank(db, &key, &old, false, s, e - s + 1)?;
    remove_items(db, &key, &old, &items)
}

fn remrange_span(db: &mut Db<'_>, a: &mut Args, lex: bool) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (lo, hi) = (a.next_arg()?, a.next_arg()?);
    let span = Span::parse(lex, &lo, &hi)?;
    let Some(old) = db.typed_for_write(&key, Kind::ZSet)? else { return Ok(Frame::Integer(0)) };
    let items = by_span(db, &key, old.generation, &span, false, 0, usize::MAX)?;
    remove_items(db, &key, &old, &items)
}

fn zremrangebyscore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    remrange_span(db, a, false)
}
fn zremrangebylex(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    remrange_span(db, a, true)
}

/// Pops up to `count` from the low (or, with `max`, the high) end of `key`.
fn pop(db: &mut Db<'_>, key: &[u8], old: &Head, max: bool, count: usize) -> Result<Scored, Abort> {
    let items = by_rank(db, key, old, max, 0, count)?;
    remove_items(db, key, old, &items)?;
    Ok(items)
}

fn zpop(db: &mut Db<'_>, a: &mut Args, max: bool) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let count = match a.optional() {
        None => None,
        Some(c) => match parse_integer(&c) {
            Some(n) if n >= 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Err(cmd_err("ERR value is out of range, must be positive")),
        },
    };
    if a.remaining() > 0 {
        return Err(cmd_err("ERR syntax error"));
    }
    let Some(old) = db.typed_for_write(&key, Kind::ZSet)? else { return Ok(Frame::Array(Vec::new())) };
    let items = match count {
        Some(0) => return Ok(Frame::Array(Vec::new())),
        Some(n) => pop(db, &key, &old, max, n)?,
        None => pop(db, &key, &old, max, 1)?,
    };
    Ok(match count {
        // RESP2, or a single pop: one flat array; RESP3 with a count: pairs.
        Some(_) => Frame::Pairs(items.into_iter().map(|(m, s)| (Frame::Bulk(m), double(s))).collect()),
        None => Frame::Array(items.into_iter().flat_map(|(m, s)| [Frame::Bulk(m), double(s)]).collect()),
    })
}

fn zpopmin(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    zpop(db, a, false)
}
fn zpopmax(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    zpop(db, a, true)
}

/// BZPOPMIN/BZPOPMAX key… timeout: `[key, member, score]`, or a null array.
fn bzpop(db: &mut Db<'_>, a: &mut Args, max: bool) -> Result<Frame, Abort> {
    let mut keys = a.rest();
    let timeout = keys.pop().unwrap_or_default();
    parse_timeout(&timeout)?;
    for key in &keys {
        if let Some(old) = db.typed_for_write(key, Kind::ZSet)?
            && let Some((m, s)) = pop(db, key, &old, max, 1)?.into_iter().next()
        {
            return Ok(Frame::Array(vec![Frame::Bulk(key.clone()), Frame::Bulk(m), double(s)]));
        }
    }
    Ok(Frame::NullArray)
}

fn bzpopmin(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    bzpop(db, a, false)
}
fn bzpopmax(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    bzpop(db, a, true)
}

fn mpop_options(a: &mut Args) -> Result<(bool, usize), Abort> {
    let max = match a.option().as_deref() {
        Some(b"MIN") => false,
        Some(b"MAX") => true,
        _ => return Err(cmd_err("ERR syntax error")),
    };
    Ok((max, usize::try_from(super::lists::mpop_count(a)?).unwrap_or(usize::MAX)))
}

fn mpop(db: &mut Db<'_>, keys: &[Vec<u8>], max: bool, count: usize) -> Result<Frame, Abort> {
    for key in keys {
        if let Some(old) = db.typed_for_write(key, Kind::ZSet)? {
            let items = pop(db, key, &old, max, count)?;
            let nested =
                items.into_iter().map(|(m, s)| Frame::Array(vec![Frame::Bulk(m), double(s)])).collect();
            return Ok(Frame::Array(vec![Frame::Bulk(key.clone()), Frame::Array(nested)]));
        }
    }
    Ok(Frame::NullArray)
}

fn zmpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let keys = numkeys(a)?;
    let (max, count) = mpop_options(a)?;
    mpop(db, &keys, max, count)
}

fn bzmpop(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    parse_timeout(&a.next_arg()?)?;
    let keys = numkeys(a)?;
    let (max, count) = mpop_options(a)?;
    mpop(db, &keys, max, count)
}

/// Every (member, score) of a sorted set, or of a set (score 1), as ZUNION and friends read
/// their inputs.
fn members_of(db: &Db<'_>, key: &[u8]) -> Result<Scored, Abort> {
    match db.head(key)? {
        None => Ok(Vec::new()),
        Some(h) if h.kind == Kind::ZSet => Ok(db
            .all_elements(key, h.generation, ZSET_SCORE)?
            .into_iter()
            .map(|(m, v)| (m, decode_score(&v)))
            .collect()),
        Some(h) if h.kind == Kind::Set => {
            Ok(db.all_elements(key, h.generation, SET_MEMBER)?.into_iter().map(|(m, _)| (m, 1.0)).collect())
        }
        Some(_) => Err(cmd_err(super::db::WRONGTYPE)),
    }
}

fn zrandmember(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let count = match a.optional() {
        None => None,
        Some(c) => {
            Some(parse_integer(&c).ok_or_else(|| cmd_err("ERR value is not an integer or out of range"))?)
        }
    };
    let with_scores = match a.option() {
        None => false,
        Some(o) if o.as_slice() == b"WITHSCORES" && count.is_some() => true,
        Some(_) => return Err(cmd_err("ERR syntax error")),
    };
    a.finish()?;
    if db.typed(&key, Kind::ZSet)?.is_none() {
        return Ok(if count.is_some() { Frame::Array(Vec::new()) } else { Frame::Null });
    }
    if count.is_some_and(|c| c < -(i64::MAX / 2)) {
        return Err(cmd_err("ERR value is out of range"));
    }
    let picked = random_pick(members_of(db, &key)?, count)?;
    Ok(match count {
        None => Frame::from_option(picked.into_iter().next().map(|(m, _)| m)),
        Some(_) if with_scores => {
            Frame::Pairs(picked.into_iter().map(|(m, s)| (Frame::Bulk(m), double(s))).collect())
        }
        Some(_) => Frame::Array(picked.into_iter().map(|(m, _)| Frame::Bulk(m)).collect()),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

fn aggregate(how: Aggregate, a: f64, b: f64) -> f64 {
    match how {
        Aggregate::Sum => {
            let s = a + b;
            // Redis: (+inf) + (-inf) is 0, not NaN.
            if s.is_nan() { 0.0 } else { s }
        }
        Aggregate::Min => a.min(b),
        Aggregate::Max => a.max(b),
    }
}

/// Parses `numkeys key… [WEIGHTS w…] [AGGREGATE …] [WITHSCORES]` and computes the result,
/// ordered as Redis orders a sorted set.
fn combine(db: &Db<'_>, a: &mut Args, op: SetOp, allow_withscores: bool) -> Result<(Scored, bool), Abort> {
    let keys = match numkeys(a) {
        Err(Abort::Command(m)) if m.contains("should be greater than 0") => {
            return Err(cmd_err(format!("ERR at least 1 input key is needed for '{}' command", a.command())));
        }
        other => other?,
    };
    let mut weights = vec![1.0; keys.len()];
    let mut how = Aggregate::Sum;
    let mut with_scores = false;
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"WEIGHTS" if op != SetOp::Diff => {
                for w in weights.iter_mut() {
                    let arg = a.next_arg().map_err(|_| cmd_err("ERR syntax error"))?;
                    *w = parse_float(&arg).ok_or_else(|| cmd_err("ERR weight value is not a float"))?;
                }
            }
            b"AGGREGATE" if op != SetOp::Diff => {
                how = match a.option().as_deref() {
                    Some(b"SUM") => Aggregate::Sum,
                    Some(b"MIN") => Aggregate::Min,
                    Some(b"MAX") => Aggregate::Max,
                    _ => return Err(cmd_err("ERR syntax error")),
                };
            }
            b"WITHSCORES" if allow_withscores => with_scores = true,
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    let mut inputs = Vec::with_capacity(keys.len());
    for k in &keys {
        inputs.push(members_of(db, k)?);
    }
    let mut acc: BTreeMap<Vec<u8>, f64> = BTreeMap::new();
    for (i, items) in inputs.iter().enumerate() {
        let w = weights.get(i).copied().unwrap_or(1.0);
        let weighted = |s: f64| {
            let x = s * w;
            if x.is_nan() { 0.0 } else { x }
        };
        match op {
            SetOp::Union => {
                for (m, s) in items {
                    let x = weighted(*s);
                    acc.entry(m.clone()).and_modify(|v| *v = aggregate(how, *v, x)).or_insert(x);
                }
            }
            SetOp::Inter if i == 0 => {
                acc = items.iter().map(|(m, s)| (m.clone(), weighted(*s))).collect();
            }
            SetOp::Inter => {
                let these: BTreeMap<&[u8], f64> =
                    items.iter().map(|(m, s)| (m.as_slice(), weighted(*s))).collect();
                acc.retain(|m, _| these.contains_key(m.as_slice()));
                for (m, v) in acc.iter_mut() {
                    if let Some(x) = these.get(m.as_slice()) {
                        *v = aggregate(how, *v, *x);
                    }
                }
            }
            SetOp::Diff if i == 0 => acc = items.iter().cloned().collect(),
            SetOp::Diff => {
                for (m, _) in items {
                    acc.remove(m);
                }
            }
        }
    }
    let mut out: Vec<(Vec<u8>, f64)> = acc.into_iter().collect();
    out.sort_by(|x, y| x.1.total_cmp(&y.1).then_with(|| x.0.cmp(&y.0)));
    Ok((out, with_scores))
}

fn read_op(db: &mut Db<'_>, a: &mut Args, op: SetOp) -> Result<Frame, Abort> {
    let (items, with_scores) = combine(db, a, op, true)?;
    Ok(reply_range(items, with_scores))
}

fn zunion(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    read_op(db, a, SetOp::Union)
}
fn zinter(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    read_op(db, a, SetOp::Inter)
}
fn zdiff(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    read_op(db, a, SetOp::Diff)
}

fn store_op(db: &mut Db<'_>, a: &mut Args, op: SetOp) -> Result<Frame, Abort> {
    let dst = a.next_arg()?;
    let (items, _) = combine(db, a, op, false)?;
    Ok(Frame::Integer(i64::try_from(store_zset(db, &dst, items)?).unwrap_or(i64::MAX)))
}

fn zunionstore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    store_op(db, a, SetOp::Union)
}
fn zinterstore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    store_op(db, a, SetOp::Inter)
}
fn zdiffstore(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    store_op(db, a, SetOp::Diff)
}

fn zintercard(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    let keys = match numkeys(a) {
        Err(Abort::Command(m)) if m.contains("should be greater than 0") => {
            return Err(cmd_err("ERR at least 1 input key is needed for 'zintercard' command"));
        }
        other => other?,
    };
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
    let mut inputs = Vec::with_capacity(keys.len());
    for k in &keys {
        inputs.push(members_of(db, k)?);
    }
    let mut iter = inputs.into_iter();
    let mut acc: std::collections::BTreeSet<Vec<u8>> =
        iter.next().unwrap_or_default().into_iter().map(|(m, _)| m).collect();
    for items in iter {
        let these: std::collections::BTreeSet<Vec<u8>> = items.into_iter().map(|(m, _)| m).collect();
        acc.retain(|m| these.contains(m));
    }
    let n = acc.len();
    Ok(Frame::Integer(i64::try_from(if limit > 0 { n.min(limit) } else { n }).unwrap_or(i64::MAX)))
}
