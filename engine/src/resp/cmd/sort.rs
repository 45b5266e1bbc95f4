//! SORT and SORT_RO over lists, sets and sorted sets, with BY and GET patterns (`*`
//! replaced by the element, `->field` reading a hash field, `#` the element itself).

use super::db::{Db, cmd_err};
use super::{Args, K1, R, Spec, W, data, parse_float};
use crate::frame::Frame;
use crate::storage::node::{HASH_FIELD, Head, Kind, SET_MEMBER, ZSET_ORDER};
use crate::storage::writer::Abort;

pub const SPECS: &[Spec] = &[data("sort", -2, W, K1, sort), data("sort_ro", -2, R, K1, sort_ro)];

fn sort(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    sort_generic(db, a, true)
}

fn sort_ro(db: &mut Db<'_>, a: &mut Args) -> Result<Frame, Abort> {
    sort_generic(db, a, false)
}

/// Looks up `pattern` for `element`: `None` when the key (or field) is absent.
// Patterns are sliced at positions found in them.
#[allow(clippy::indexing_slicing)]
fn lookup(db: &Db<'_>, pattern: &[u8], element: &[u8]) -> Result<Option<Vec<u8>>, Abort> {
    if pattern == b"#" {
        return Ok(Some(element.to_vec()));
    }
    let Some(star) = pattern.iter().position(|&c| c == b'*') else { return Ok(None) };
    // `key->field` reads a hash field; the arrow must come after the star.
    let (key_pattern, field) = match pattern.windows(2).rposition(|w| w == b"->") {
        Some(i) if i > star && i + 2 < pattern.len() => (&pattern[..i], Some(&pattern[i + 2..])),
        _ => (pattern, None),
    };
    let mut key = key_pattern[..star].to_vec();
    key.extend_from_slice(element);
    key.extend_from_slice(&key_pattern[star + 1..]);
    match (db.head(&key)?, field) {
        (Some(h), None) if h.kind == Kind::String => Ok(Some(h.value)),
        (Some(h), Some(f)) if h.kind == Kind::Hash => db.element(&key, h.generation, HASH_FIELD, f),
        _ => Ok(None),
    }
}

fn sort_generic(db: &mut Db<'_>, a: &mut Args, can_store: bool) -> Result<Frame, Abort> {
    let key = a.next_arg()?;
    let (mut by, mut limit, mut gets, mut desc, mut alpha, mut store) =
        (None, None, Vec::new(), false, false, None);
    while let Some(option) = a.option() {
        match option.as_slice() {
            b"ASC" => desc = false,
            b"DESC" => desc = true,
            b"ALPHA" => alpha = true,
            b"LIMIT" => limit = Some((a.integer()?, a.integer()?)),
            b"BY" => by = Some(a.next_arg()?),
            b"GET" => gets.push(a.next_arg()?),
            b"STORE" if can_store => store = Some(a.next_arg()?),
            _ => return Err(cmd_err("ERR syntax error")),
        }
    }
    let head = db.head(&key)?;
    let mut elements: Vec<Vec<u8>> = match &head {
        None => Vec::new(),
        Some(h) => match h.kind {
            Kind::List => super::lists::all(db, &key, h)?,
            Kind::Set => {
                db.all_elements(&key, h.generation, SET_MEMBER)?.into_iter().map(|(m, _)| m).collect()
            }
            Kind::ZSet => db
                .all_elements(&key, h.generation, ZSET_ORDER)?
                .into_iter()
                .filter_map(|(sub, _)| sub.get(8..).map(<[u8]>::to_vec))
                .collect(),
            _ => return Err(cmd_err(super::db::WRONGTYPE)),
        },
    };
    let no_sort = by.as_deref().is_some_and(|p| !p.contains(&b'*'));
    if !no_sort {
        // Each element with its sort key (the element itself, or what BY points at).
        let mut keyed = Vec::with_capacity(elements.len());
        for e in elements {
            let k = match &by {
                Some(p) => lookup(db, p, &e)?,
                None => Some(e.clone()),
            };
            keyed.push((e, k));
        }
        if alpha {
            keyed.sort_by(|x, y| x.1.cmp(&y.1).then_with(|| x.0.cmp(&y.0)));
        } else {
            let mut scored = Vec::with_capacity(keyed.len());
            for (e, k) in keyed {
                let score = match k {
                    None => 0.0,
                    Some(v) => parse_float(&v)
                        .ok_or_else(|| cmd_err("ERR One or more scores can't be converted into double"))?,
                };
                scored.push((e, score));
            }
            scored.sort_by(|x, y| x.1.total_cmp(&y.1).then_with(|| x.0.cmp(&y.0)));
            keyed = scored.into_iter().map(|(e, _)| (e, None)).collect();
        }
        if desc {
            keyed.reverse();
        }
        elements = keyed.into_iter().map(|(e, _)| e).collect();
    } else if desc && head.as_ref().is_some_and(|h| h.kind != Kind::Set) {
        elements.reverse();
    }
    if let Some((offset, count)) = limit {
        let start = usize::try_from(offset.max(0)).unwrap_or(usize::MAX).min(elements.len());
        let n = if count < 0 { elements.len() } else { usize::try_from(count).unwrap_or(usize::MAX) };
        elements = elements.into_iter().skip(start).take(n).collect();
    }
    let mut out: Vec<Option<Vec<u8>>> = Vec::new();
    for e in &elements {
        if gets.is_empty() {
            out.push(Some(e.clone()));
        }
        for g in &gets {
            out.push(lookup(db, g, e)?);
        }
    }
    match store {
        Some(dst) => {
            db.delete(&dst)?;
            let mut head = Head::collection(Kind::List);
            for v in &out {
                super::lists::push(
                    db,
                    &dst,
                    &mut head,
                    super::lists::End::Right,
                    v.as_deref().unwrap_or_default(),
                )?;
            }
            db.store_collection(&dst, None, &head)?;
            Ok(Frame::Integer(i64::try_from(out.len()).unwrap_or(i64::MAX)))
        }
        None => Ok(Frame::Array(out.into_iter().map(Frame::from_option).collect())),
    }
}
