//! Nodes: how the Redis data model is laid out in the one ordered `data` table, after GT.M's
//! globals (a name with subscripts, each node journaled on its own).
//!
//! Every application key has one **head** node, holding its type, its expiry and — for a
//! string — its value, or — for a collection — its element count and generation. Each
//! element of a collection is a node of its own under the key's **element prefix** (the key
//! and the generation), so a change to one hash field, set member, sorted-set member or list
//! element writes (and journals, with before- and after-image) that node and the head at
//! most, never the whole collection. Keys with an expiry also have a node in the **expiry
//! index**, ordered by time, which the primary's expiry cycle walks.
//!
//! A collection deleted whole (DEL, expiry, an overwrite) loses its head at once, and — when
//! it is large — leaves its elements behind as **garbage**: one node naming its element
//! prefix, which the primary's reclaim cycle removes in bounded, journaled transactions. A
//! new collection of the same name gets a new generation, so it never meets the old elements;
//! deleting a collection of any size is thus one small transaction.
//!
//! ```text
//! head          'K' key                                   → type, expire_at_ms, payload
//! hash field    'E' len(key):u32be key generation:u64be 'h' field           → value
//! set member    'E' len(key):u32be key generation:u64be 's' member          → ""
//! zset score    'E' len(key):u32be key generation:u64be 'z' member          → score (f64 bits)
//! zset order    'E' len(key):u32be key generation:u64be 'o' sortable(score) member → ""
//! zset index    'E' len(key):u32be key generation:u64be 'r' level fence-key → elements, children
//! list element  'E' len(key):u32be key generation:u64be 'l' sortable(index) → value
//! garbage       'G' element-prefix                        → "" (elements to reclaim)
//! expiry index  'X' at_ms:u64be key                        → ""
//! system        __strand/…                                 → raw value (the engine's own)
//! ```
//!
//! Because the journal records nodes, rollback restores exactly what a transaction touched,
//! TTLs included, and [`describe`] turns any node back into words for the
//! unreplicated-transaction log.

/// The type of a key, as `TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Hash,
    Set,
    ZSet,
    List,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::String => b's',
            Kind::Hash => b'h',
            Kind::Set => b'S',
            Kind::ZSet => b'z',
            Kind::List => b'l',
        }
    }

    fn from_tag(tag: u8) -> Option<Kind> {
        Some(match tag {
            b's' => Kind::String,
            b'h' => Kind::Hash,
            b'S' => Kind::Set,
            b'z' => Kind::ZSet,
            b'l' => Kind::List,
            _ => return None,
        })
    }

    /// The name `TYPE` replies with.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::List => "list",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Kind> {
        [Kind::String, Kind::Hash, Kind::Set, Kind::ZSet, Kind::List]
            .into_iter()
            .find(|k| name.eq_ignore_ascii_case(k.name().as_bytes()))
    }
}

/// A key's head node, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub kind: Kind,
    /// Unix milliseconds at which the key expires; 0: never.
    pub expire_at_ms: u64,
    /// A string's value; empty for collections.
    pub value: Vec<u8>,
    /// A collection's element count.
    pub len: u64,
    /// A list's first element index (elements are `first .. first + len`).
    pub first: i64,
    /// A collection's generation: part of its element prefix, new for every collection
    /// created (so a new collection never meets a deleted one's unreclaimed elements).
    pub generation: u64,
}

/// A fresh generation: a per-process counter from a random start, so two collections of one
/// name (even created by different processes, after a failover) differ.
pub fn new_generation() -> u64 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            seed = (now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes();
        }
        AtomicU64::new(u64::from_be_bytes(seed))
    });
    next.fetch_add(1, Ordering::Relaxed)
}

const HEAD_FIXED: usize = 1 + 8;

impl Head {
    pub fn string(value: Vec<u8>, expire_at_ms: u64) -> Head {
        Head { kind: Kind::String, expire_at_ms, value, len: 0, first: 0, generation: 0 }
    }

    /// A new, empty collection, with a generation of its own.
    pub fn collection(kind: Kind) -> Head {
        Head { kind, expire_at_ms: 0, value: Vec::new(), len: 0, first: 0, generation: new_generation() }
    }

    /// The head node of a string: [`Head::encode`] of [`Head::string`] without the copy.
    pub fn encode_string(value: &[u8], expire_at_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_FIXED + value.len());
        out.push(Kind::String.tag());
        out.extend_from_slice(&expire_at_ms.to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        if self.kind == Kind::String {
            return Head::encode_string(&self.value, self.expire_at_ms);
        }
        let mut out = Vec::with_capacity(HEAD_FIXED + 24);
        out.push(self.kind.tag());
        out.extend_from_slice(&self.expire_at_ms.to_be_bytes());
        match self.kind {
            Kind::String => {}
            Kind::List => {
                out.extend_from_slice(&self.len.to_be_bytes());
                out.extend_from_slice(&self.generation.to_be_bytes());
                out.extend_from_slice(&self.first.to_be_bytes());
            }
            Kind::Hash | Kind::Set | Kind::ZSet => {
                out.extend_from_slice(&self.len.to_be_bytes());
                out.extend_from_slice(&self.generation.to_be_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Head> {
        let (&tag, rest) = bytes.split_first()?;
        let kind = Kind::from_tag(tag)?;
        let (at, rest) = rest.split_first_chunk::<8>()?;
        let expire_at_ms = u64::from_be_bytes(*at);
        let mut head = Head { kind, expire_at_ms, value: Vec::new(), len: 0, first: 0, generation: 0 };
        if kind == Kind::String {
            head.value = rest.to_vec();
            return Some(head);
        }
        let (len, rest) = rest.split_first_chunk::<8>()?;
        let (generation, rest) = rest.split_first_chunk::<8>()?;
        head.len = u64::from_be_bytes(*len);
        head.generation = u64::from_be_bytes(*generation);
        if kind == Kind::List {
            head.first = i64::from_be_bytes(*rest.first_chunk::<8>()?);
        }
        Some(head)
    }

    /// [`Head::decode`] of a node value the caller gives up: a string's value is the buffer
    /// itself, moved down over the fixed part, not a copy.
    pub fn decode_owned(mut bytes: Vec<u8>) -> Option<Head> {
        if bytes.first() != Some(&Kind::String.tag()) {
            return Head::decode(&bytes);
        }
        let at = bytes.get(1..HEAD_FIXED)?.first_chunk::<8>()?;
        let expire_at_ms = u64::from_be_bytes(*at);
        bytes.drain(..HEAD_FIXED);
        Some(Head::string(bytes, expire_at_ms))
    }

    /// Whether the key is logically gone at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms != 0 && self.expire_at_ms <= now_ms
    }
}

pub const HEAD: u8 = b'K';
pub const ELEMENT: u8 = b'E';
pub const GARBAGE: u8 = b'G';
pub const EXPIRY: u8 = b'X';

/// Element sub-tags.
pub const HASH_FIELD: u8 = b'h';
pub const SET_MEMBER: u8 = b's';
pub const ZSET_SCORE: u8 = b'z';
pub const ZSET_ORDER: u8 = b'o';
/// A sorted set's rank index (`resp::cmd::zindex`): derived counts over its order nodes.
pub const ZSET_RANK: u8 = b'r';
pub const LIST_ITEM: u8 = b'l';

pub fn head(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(HEAD);
    out.extend_from_slice(key);
    out
}

/// When an applied change of head node `node` (the source's `source_before` → `after`) meets
/// a local collection (`local`) of a generation the source did not know, the garbage node
/// that leaves the local elements to the reclaim cycle.
pub fn replaced_generation(
    node: &[u8],
    local: Option<&[u8]>,
    source_before: Option<&[u8]>,
    after: Option<&[u8]>,
) -> Option<Vec<u8>> {
    if !is_head(node) {
        return None;
    }
    let local = Head::decode(local?)?;
    if local.kind == Kind::String {
        return None;
    }
    let same = |h: Option<&[u8]>| {
        h.and_then(Head::decode).is_some_and(|h| h.kind != Kind::String && h.generation == local.generation)
    };
    if same(source_before) || same(after) {
        return None;
    }
    Some(garbage(user_key(node), local.generation))
}

/// Whether `node` is a key's head.
pub fn is_head(node: &[u8]) -> bool {
    node.first() == Some(&HEAD)
}

/// First node of the head range (every head node sorts in `[HEADS_START, HEADS_END)`).
pub const HEADS_START: &[u8] = b"K";
pub const HEADS_END: &[u8] = b"L";

/// The prefix under which every element node of generation `generation` of collection `key` lies.
pub fn elements(key: &[u8], generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len() + 8 + 1);
    out.push(ELEMENT);
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&generation.to_be_bytes());
    out
}

/// The prefix of the elements with sub-tag `tag`.
pub fn elements_of(key: &[u8], generation: u64, tag: u8) -> Vec<u8> {
    let mut out = elements(key, generation);
    out.push(tag);
    out
}

/// An element node: element `sub` under `tag`.
pub fn element(key: &[u8], generation: u64, tag: u8, sub: &[u8]) -> Vec<u8> {
    let mut out = elements_of(key, generation, tag);
    out.extend_from_slice(sub);
    out
}

/// The garbage node naming an element prefix whose elements the reclaim cycle removes.
pub fn garbage(key: &[u8], generation: u64) -> Vec<u8> {
    let mut out = vec![GARBAGE];
    out.extend_from_slice(&elements(key, generation));
    out
}

/// First node of the garbage range (every garbage node sorts in `[GARBAGE_START, GARBAGE_END)`).
pub const GARBAGE_START: &[u8] = b"G";
pub const GARBAGE_END: &[u8] = b"H";

pub fn expiry(at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(EXPIRY);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(key);
    out
}

pub const EXPIRY_START: &[u8] = b"X";

/// The smallest byte string greater than every string starting with `prefix` (`None`: there
/// is none, the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An f64 as 8 bytes whose byte order is the numbers' order (-inf < … < -0 = 0 < … < inf).
pub fn sortable_f64(x: f64) -> [u8; 8] {
    let x = if x == 0.0 { 0.0 } else { x }; // -0 sorts as 0
    let bits = x.to_bits();
    let bits = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
    bits.to_be_bytes()
}

pub fn from_sortable_f64(bytes: [u8; 8]) -> f64 {
    let bits = u64::from_be_bytes(bytes);
    let bits = if bits >> 63 == 1 { bits & !(1 << 63) } else { !bits };
    f64::from_bits(bits)
}

/// An i64 as 8 bytes in numeric byte order.
pub fn sortable_i64(x: i64) -> [u8; 8] {
    ((x as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn from_sortable_i64(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// How a node going from present (`before`) to present (`after`) changes the count of keys
/// (heads) and of keys with an expiry (expiry-index nodes).
pub fn count_delta(node: &[u8], before: bool, after: bool) -> (i64, i64) {
    let d = i64::from(after) - i64::from(before);
    match node.first() {
        Some(&HEAD) => (d, 0),
        Some(&EXPIRY) => (0, d),
        _ => (0, 0),
    }
}

/// The application key a node belongs to (WATCH and the lost-transaction log use it). A system
/// node is its own key.
pub fn user_key(node: &[u8]) -> &[u8] {
    match node.split_first() {
        Some((&HEAD, key)) => key,
        Some((&ELEMENT, rest)) => match rest.split_first_chunk::<4>() {
            Some((len, rest)) => {
                let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
                rest.get(..len).unwrap_or(rest)
            }
            None => rest,
        },
        Some((&EXPIRY, rest)) => rest.get(8..).unwrap_or_default(),
        Some((&GARBAGE, rest)) if rest.first() == Some(&ELEMENT) => user_key(rest),
        _ => node,
    }
}

/// A node in words: what it is, the key, the element it names (if any), and its value as an
/// application sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// `string`, `hash`, `set`, `zset`, `list` (a head), `hash-field`, `set-member`,
    /// `zset-member`, `zset-order`, `zset-index`, `list-element`, `expiry-index`, `system`.
    pub node: &'static str,
    pub key: Vec<u8>,
    /// The field, member or list index (as decimal text) the node names.
    pub element: Option<Vec<u8>>,
    /// The value an application sees: a string's value, a field's value, a score, a list
    /// element; the element count for a collection head.
    pub value: Option<Vec<u8>>,
    /// A head's expiry in Unix milliseconds (0: none).
    pub expire_at_ms: Option<u64>,
}

/// Describes `node` holding `value` (`None`: the node is absent).
pub fn describe(node: &[u8], value: Option<&[u8]>) -> Described {
    let key = user_key(node).to_vec();
    let mut d = Described {
        node: "system",
        key,
        element: None,
        value: value.map(<[u8]>::to_vec),
        expire_at_ms: None,
    };
    match node.first() {
        Some(&HEAD) => {
            let head = value.and_then(Head::decode);
            d.node = head.as_ref().map_or("head", |h| h.kind.name());
            d.expire_at_ms = head.as_ref().map(|h| h.expire_at_ms);
            d.value =
                head.map(|h| if h.kind == Kind::String { h.value } else { h.len.to_string().into_bytes() });
        }
        Some(&ELEMENT) => {
            let prefix = elements(&d.key, 0).len();
            let (tag, sub) = match node.get(prefix..).and_then(<[u8]>::split_first) {
                Some((&tag, sub)) => (tag, sub),
                None => (0, &[][..]),
            };
            match tag {
                HASH_FIELD => {
                    d.node = "hash-field";
                    d.element = Some(sub.to_vec());
                }
                SET_MEMBER => {
                    d.node = "set-member";
                    d.element = Some(sub.to_vec());
                    d.value = None;
                }
                ZSET_SCORE => {
                    d.node = "zset-member";
                    d.element = Some(sub.to_vec());
                    d.value = value.and_then(|v| v.first_chunk::<8>()).map(|b| {
                        crate::base::format_double(f64::from_bits(u64::from_be_bytes(*b))).into_bytes()
                    });
                }
                ZSET_ORDER => {
                    d.node = "zset-order";
                    d.element = sub.get(8..).map(<[u8]>::to_vec);
                    d.value = sub
                        .first_chunk::<8>()
                        .map(|b| crate::base::format_double(from_sortable_f64(*b)).into_bytes());
                }
                ZSET_RANK => {
                    d.node = "zset-index";
                    d.element = None;
                    d.value = None;
                }
                LIST_ITEM => {
                    d.node = "list-element";
                    d.element =
                        sub.first_chunk::<8>().map(|b| from_sortable_i64(*b).to_string().into_bytes());
                }
                _ => d.node = "element",
            }
        }
        Some(&GARBAGE) => {
            d.node = "garbage";
            d.value = None;
        }
        Some(&EXPIRY) => {
            d.node = "expiry-index";
            d.expire_at_ms =
                node.get(1..9).and_then(|b| b.first_chunk::<8>()).map(|b| u64::from_be_bytes(*b));
            d.value = None;
        }
        _ => {}
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        for head in [
            Head::string(b"v".to_vec(), 0),
            Head::string(Vec::new(), 1_700_000_000_000),
            Head { kind: Kind::List, expire_at_ms: 5, value: Vec::new(), len: 3, first: -7, generation: 12 },
            Head {
                kind: Kind::Hash,
                expire_at_ms: 0,
                value: Vec::new(),
                len: 9,
                first: 0,
                generation: u64::MAX,
            },
        ] {
            assert_eq!(Head::decode(&head.encode()), Some(head));
        }
        assert_eq!(Head::decode(b""), None);
        assert_eq!(Head::decode(b"q00000000"), None);
    }

    #[test]
    fn sortable_numbers_keep_their_order() {
        let xs = [f64::NEG_INFINITY, -1e300, -2.5, -0.0, 0.0, 1e-300, 2.5, 1e300, f64::INFINITY];
        for w in xs.windows(2) {
            assert!(sortable_f64(w[0]) <= sortable_f64(w[1]), "{} {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(from_sortable_f64(sortable_f64(x)), if x == 0.0 { 0.0 } else { x });
        }
        let is = [i64::MIN, -5, -1, 0, 1, 5, i64::MAX];
        for w in is.windows(2) {
            assert!(sortable_i64(w[0]) < sortable_i64(w[1]));
        }
        for i in is {
            assert_eq!(from_sortable_i64(sortable_i64(i)), i);
        }
    }

    #[test]
    fn nodes_name_their_key() {
        let key = b"user:\xff1";
        assert_eq!(user_key(&head(key)), key);
        assert_eq!(user_key(&element(key, 7, HASH_FIELD, b"name")), key);
        assert_eq!(user_key(&expiry(42, key)), key);
        assert_eq!(user_key(&garbage(key, 7)), key);
        assert_eq!(user_key(b"__strand/format"), b"__strand/format");
        // One key's elements never fall under another key's prefix.
        assert!(!element(b"ab", 1, HASH_FIELD, b"c").starts_with(&elements(b"a", 1)));
        assert!(!element(b"a", 2, HASH_FIELD, b"c").starts_with(&elements(b"a", 1)));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        let d = describe(&element(key, 3, HASH_FIELD, b"name"), Some(b"ann"));
        assert_eq!(
            (d.node, d.element.as_deref(), d.value.as_deref()),
            ("hash-field", Some(&b"name"[..]), Some(&b"ann"[..]))
        );
        // A local collection replaced by a source that did not know it becomes garbage.
        let coll = |g| Head { generation: g, ..Head::collection(Kind::Hash) }.encode();
        let (mine, theirs) = (coll(1), coll(2));
        assert_eq!(replaced_generation(&head(key), Some(&mine), None, Some(&theirs)), Some(garbage(key, 1)));
        assert_eq!(replaced_generation(&head(key), Some(&mine), Some(&mine), None), None);
        assert_eq!(replaced_generation(&head(key), Some(&mine), Some(&mine), Some(&mine)), None);
        assert_eq!(replaced_generation(&element(key, 1, HASH_FIELD, b"f"), Some(&mine), None, None), None);
        let d = describe(&head(b"k"), Some(&Head::string(b"v".to_vec(), 9).encode()));
        assert_eq!((d.node, d.value.as_deref(), d.expire_at_ms), ("string", Some(&b"v"[..]), Some(9)));
    }
}
