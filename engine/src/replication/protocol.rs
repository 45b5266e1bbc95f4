//! The replication wire protocol: framed, checksummed, authenticated. Versions one step apart
//! interoperate (the hot-standby upgrade has a newer standby replay an older primary's
//! stream, and later an older binary's data receive a newer primary's): version 2 adds the
//! `Upgrade` record (format change), which a version-1 binary refuses to apply.
//!
//! Frame: `u32 length` (of what follows) · `u8 kind` · payload · `u32 CRC-32` of kind and
//! payload. Control messages carry JSON payloads; a `Records` frame carries journal records
//! in their own (individually checksummed) binary form: `u32 count`, then `u32 len` + bytes
//! per record. The length is checked against [`FRAME_BYTES_MAX`] before anything is
//! allocated — except that once a stream runs, a `Records` frame holding one transaction
//! larger than that may reach [`RECORDS_FRAME_BYTES_MAX`] (what one journal record can be);
//! a bad checksum, an unknown kind or a short frame ends the connection.
//!
//! Handshake (the source connects to the receiver's replication address):
//! 1. source → `Hello` {protocol, mode, name, creation id, nonce_s, si, supplementary, term}
//! 2. receiver → `Challenge` {protocol, name, creation id, nonce_r,
//!    proof_r = HMAC-SHA256(secret, "strand-receiver" · nonce_s · nonce_r)}
//! 3. source verifies proof_r, then → `Auth` {proof_s = HMAC(secret, "strand-source" ·
//!    nonce_r · nonce_s), history, seqno, SI stream states}
//! 4. receiver verifies proof_s, negotiates (history.rs for BC, si.rs per stream for SI), may
//!    roll back, then → `Start` {from} or `Refuse` {code, message, common?, term?}. A source
//!    whose term is below what the receiver has seen for the family is refused (`stale_term`,
//!    with that term) before anything else, and turns read-only if it is a primary.
//! 5. source → `Records` / `Heartbeat` / `Streams` (a supplementary source's stream states,
//!    whenever they change, before the records that need them); receiver → `Ack` {seqno
//!    applied and durable, in the source's numbering}.
//!
//! Both ends prove knowledge of the shared secret without sending it; fresh nonces on both
//! sides make replayed proofs useless.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::storage::journal::Record;
use crate::storage::meta::{HistoryRecord, StreamState};
use crate::storage::seed::Node;

/// The protocol this binary speaks (1 for a normal build, 2 for `next-version`); peers one
/// step apart interoperate (crate::version).
pub const PROTOCOL_VERSION: u16 = crate::version::PROTOCOL;
/// Largest frame accepted.
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest `Records` frame, on a running stream only ([`read_stream_frame`]): one journal
/// record as large as a journal segment's frame holds (a transaction up to
/// `--max-txn-image-bytes`), with its count, length, kind and checksum. Frames are filled to
/// about [`BATCH_BYTES_TARGET`], so only such a record alone makes one this large.
pub const RECORDS_FRAME_BYTES_MAX: usize = crate::storage::segment::FRAME_BYTES_MAX + 64;
/// Most records sent in one `Records` frame.
pub const BATCH_RECORDS_MAX: usize = 1000;
/// Target size of one `Records` frame.
pub const BATCH_BYTES_TARGET: usize = 4 * 1024 * 1024;

const _: () = assert!(BATCH_BYTES_TARGET < FRAME_BYTES_MAX);
const _: () = assert!(RECORDS_FRAME_BYTES_MAX <= u32::MAX as usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Challenge = 2,
    Auth = 3,
    Start = 4,
    Refuse = 5,
    Records = 6,
    Heartbeat = 7,
    Ack = 8,
    History = 9,
    /// The source's SI stream states changed (BC from a supplementary instance).
    Streams = 10,
    /// Receiver → source, in place of `Start`: the source's journal does not reach back to
    /// what this receiver needs; send a snapshot (storage::seed).
    Seed = 11,
    /// Source → receiver: what the snapshot is of (`SeedHeader`).
    SeedHeader = 12,
    /// Source → receiver: a chunk of the snapshot's nodes.
    SeedNodes = 13,
    /// Source → receiver: the snapshot is complete (`SeedEnd`); the receiver then answers
    /// `Start` from the snapshot's seqno + 1, or `Refuse`.
    SeedEnd = 14,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Auth,
            4 => Kind::Start,
            5 => Kind::Refuse,
            6 => Kind::Records,
            7 => Kind::Heartbeat,
            8 => Kind::Ack,
            9 => Kind::History,
            10 => Kind::Streams,
            11 => Kind::Seed,
            12 => Kind::SeedHeader,
            13 => Kind::SeedNodes,
            14 => Kind::SeedEnd,
            _ => return None,
        })
    }
}

/// What the connecting side wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Stream journal records to the receiver.
    Source,
    /// Only learn the receiver's history and seqno (rollback -fetchresync).
    Query,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u16,
    pub mode: Mode,
    pub name: String,
    pub creation_id: String,
    pub nonce: String,
    /// The stream offered is SI (to a supplementary instance), not BC.
    #[serde(default)]
    pub si: bool,
    /// The connecting instance is supplementary.
    #[serde(default)]
    pub supplementary: bool,
    /// The source's family term: a receiver that has seen a higher one refuses the stream
    /// (`stale_term`); one that has seen a lower one adopts it.
    #[serde(default)]
    pub term: u64,
    /// The source's binary version (for messages naming both sides).
    #[serde(default)]
    pub binary_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    pub protocol: u16,
    /// The receiver's binary version (for messages naming both sides).
    #[serde(default)]
    pub binary_version: String,
    pub name: String,
    pub creation_id: String,
    pub nonce: String,
    pub proof: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Auth {
    pub proof: String,
    pub history: Vec<HistoryRecord>,
    pub seqno: u64,
    /// The source's SI stream states (a supplementary source of a BC stream), adopted by the
    /// receiver as far as it applies the source's journal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamState>,
    /// The first seqno the source's journal holds (0 from a source that does not say): a
    /// receiver that needs an earlier one refuses with `needs_reseed` before it changes
    /// anything.
    #[serde(default)]
    pub journal_first: u64,
    /// The source can send a snapshot (`Seed`) on this BC stream; a source that does not say
    /// cannot.
    #[serde(default)]
    pub snapshots: bool,
    /// The source can send a snapshot on this SI stream (a family's first stream into a
    /// supplementary instance holding nothing); kept apart from `snapshots`, which a receiver
    /// of an earlier release reads as "may be re-seeded" whatever the mode.
    #[serde(default)]
    pub si_snapshots: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub from: u64,
    /// Set when the receiver rolled back before starting.
    pub rolled_back_to: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refuse {
    pub code: String,
    pub message: String,
    pub common: Option<u64>,
    pub receiver_seqno: Option<u64>,
    /// With `stale_term`: the higher term the receiver has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seqno: u64,
    pub time_micros: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    pub seqno: u64,
}

/// A BC source's SI stream states, sent before the records that follow a change of them, so
/// the receiver adopts the family histories its records need without reconnecting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamsUpdate {
    pub streams: Vec<StreamState>,
}

/// A receiver's request for a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRequest {
    /// The first seqno the receiver needed (for the source's log).
    pub wanted: u64,
}

/// The end of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedEnd {
    /// Nodes sent.
    pub nodes: u64,
}

/// The answer to a `Query` hello (sent in place of `Start`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryAnswer {
    pub history: Vec<HistoryRecord>,
    pub seqno: u64,
    /// Whether the answering instance is supplementary (it then has no SI family of its own).
    #[serde(default)]
    pub supplementary: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("frame checksum mismatch (corrupted in transit)")]
    Checksum,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected { expected: Kind, got: Kind },
    #[error("malformed {kind:?} frame: {reason}")]
    Malformed { kind: Kind, reason: String },
    #[error("{0}")]
    Version(String),
    #[error("authentication failed: the peer does not know the replication secret")]
    Auth,
    #[error("this instance's history changed; negotiating again")]
    HistoryChanged,
    #[error("{0}")]
    NeedsReseed(String),
    #[error("refused by the receiver: {message} ({code})")]
    Refused {
        code: String,
        message: String,
        common: Option<u64>,
        receiver_seqno: Option<u64>,
        term: Option<u64>,
    },
}

impl ProtocolError {
    /// A failure at this end that is not the protocol's: a local error, a stop, a timeout.
    pub fn other(message: impl std::fmt::Display) -> Self {
        ProtocolError::Io(std::io::Error::other(message.to_string()))
    }
}

pub async fn write_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    kind: Kind,
    payload: &[u8],
) -> Result<(), ProtocolError> {
    let len = 1 + payload.len() + 4;
    let max = if kind == Kind::Records { RECORDS_FRAME_BYTES_MAX } else { FRAME_BYTES_MAX };
    if len > max {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&u32::try_from(len).map_err(|_| ProtocolError::TooLarge(len))?.to_le_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(payload);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind as u8]);
    hasher.update(payload);
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    w.write_all(&buf).await?;
    Ok(())
}

pub async fn write_json<W: AsyncWriteExt + Unpin, T: Serialize>(
    w: &mut W,
    kind: Kind,
    value: &T,
) -> Result<(), ProtocolError> {
    let payload =
        serde_json::to_vec(value).map_err(|e| ProtocolError::Malformed { kind, reason: e.to_string() })?;
    write_frame(w, kind, &payload).await
}

pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<(Kind, Vec<u8>), ProtocolError> {
    read_frame_within(r, false).await
}

/// [`read_frame`] on a running stream (after the handshake): a `Records` frame may be as
/// large as [`RECORDS_FRAME_BYTES_MAX`].
pub async fn read_stream_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<(Kind, Vec<u8>), ProtocolError> {
    read_frame_within(r, true).await
}

async fn read_frame_within<R: AsyncReadExt + Unpin>(
    r: &mut R,
    large_records: bool,
) -> Result<(Kind, Vec<u8>), ProtocolError> {
    let closed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof { ProtocolError::Closed } else { e.into() }
    };
    let mut head = [0u8; 5];
    r.read_exact(&mut head[..4]).await.map_err(closed)?;
    let len = usize::try_from(u32::from_le_bytes([head[0], head[1], head[2], head[3]])).unwrap_or(usize::MAX);
    if len > RECORDS_FRAME_BYTES_MAX || (len > FRAME_BYTES_MAX && !large_records) {
        return Err(ProtocolError::TooLarge(len));
    }
    if len < 5 {
        return Err(ProtocolError::Malformed {
            kind: Kind::Hello,
            reason: format!("frame of {len} bytes is too short"),
        });
    }
    // The kind first: only a `Records` frame may pass the common limit.
    r.read_exact(&mut head[4..]).await.map_err(closed)?;
    let kind_byte = head[4];
    if len > FRAME_BYTES_MAX && kind_byte != Kind::Records as u8 {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut rest = vec![0u8; len - 1];
    r.read_exact(&mut rest).await.map_err(closed)?;
    let (payload, crc) = rest.split_at(len - 5);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| ProtocolError::Checksum)?);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind_byte]);
    hasher.update(payload);
    if hasher.finalize() != stored {
        return Err(ProtocolError::Checksum);
    }
    let kind = Kind::from_u8(kind_byte).ok_or(ProtocolError::UnknownKind(kind_byte))?;
    rest.truncate(len - 5);
    Ok((kind, rest))
}

pub fn parse<T: for<'de> Deserialize<'de>>(kind: Kind, payload: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|e| ProtocolError::Malformed { kind, reason: e.to_string() })
}

/// Reads a frame of any kind but `Refuse`, which becomes an error.
pub async fn read_reply<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<(Kind, Vec<u8>), ProtocolError> {
    let (kind, payload) = read_frame(r).await?;
    if kind == Kind::Refuse {
        let refuse: Refuse = parse(kind, &payload)?;
        return Err(ProtocolError::Refused {
            code: refuse.code,
            message: refuse.message,
            common: refuse.common,
            receiver_seqno: refuse.receiver_seqno,
            term: refuse.term,
        });
    }
    Ok((kind, payload))
}

/// Reads a frame that must be of `expected` kind (a `Refuse` becomes an error).
pub async fn expect<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    expected: Kind,
) -> Result<T, ProtocolError> {
    let (kind, payload) = if expected == Kind::Refuse { read_frame(r).await? } else { read_reply(r).await? };
    if kind != expected {
        return Err(ProtocolError::Unexpected { expected, got: kind });
    }
    parse(kind, &payload)
}

pub fn encode_records(records: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = records.iter().map(|r| 4 + r.len()).sum();
    let mut out = Vec::with_capacity(4 + total);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

pub fn decode_records(payload: &[u8]) -> Result<Vec<Record>, ProtocolError> {
    let bad = |reason: String| ProtocolError::Malformed { kind: Kind::Records, reason };
    let mut rest = payload;
    let mut take = |n: usize| -> Result<&[u8], ProtocolError> {
        if rest.len() < n {
            return Err(bad(format!("needed {n} more bytes")));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad("count".into()))?) as usize;
    let mut out = Vec::with_capacity(count.min(BATCH_RECORDS_MAX));
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad("length".into()))?) as usize;
        let bytes = take(len)?;
        out.push(Record::decode(bytes).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// A chunk of snapshot nodes: `u32 count`, then `u32 len` + key and `u32 len` + value each.
pub fn encode_nodes(nodes: &[Node]) -> Vec<u8> {
    let total: usize = nodes.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(4 + total);
    out.extend_from_slice(&(nodes.len() as u32).to_le_bytes());
    for (k, v) in nodes {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

pub fn decode_nodes(payload: &[u8]) -> Result<Vec<Node>, ProtocolError> {
    fn bad(reason: String) -> ProtocolError {
        ProtocolError::Malformed { kind: Kind::SeedNodes, reason }
    }
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], ProtocolError> {
        if rest.len() < n {
            return Err(bad(format!("needed {n} more bytes")));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn length(rest: &mut &[u8]) -> Result<usize, ProtocolError> {
        let bytes: [u8; 4] = take(rest, 4)?.try_into().map_err(|_| bad("length".into()))?;
        Ok(u32::from_le_bytes(bytes) as usize)
    }
    let mut rest = payload;
    let count = length(&mut rest)?;
    // Each node takes at least 8 bytes: a count beyond that is a lie, not an allocation.
    let mut out = Vec::with_capacity(count.min(payload.len() / 8));
    for _ in 0..count {
        let klen = length(&mut rest)?;
        let key = take(&mut rest, klen)?.to_vec();
        let vlen = length(&mut rest)?;
        let value = take(&mut rest, vlen)?.to_vec();
        out.push((key, value));
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the last node", rest.len())));
    }
    Ok(out)
}

/// A fresh random nonce (hex).
pub fn nonce() -> String {
    let mut bytes = [0u8; 32];
    // getrandom failing means the OS has no randomness; a zero nonce still fails closed
    // against replay only weakly, so log loudly.
    if getrandom::fill(&mut bytes).is_err() {
        tracing::error!("no randomness available for a replication nonce");
    }
    crate::base::hex(&bytes)
}

pub fn proof(secret: &[u8], label: &str, first: &str, second: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(label.as_bytes());
    mac.update(first.as_bytes());
    mac.update(second.as_bytes());
    crate::base::hex(&mac.finalize().into_bytes())
}

pub fn verify(secret: &[u8], label: &str, first: &str, second: &str, presented: &str) -> bool {
    crate::base::constant_time_eq(proof(secret, label, first, second).as_bytes(), presented.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_roundtrip_and_corruption_is_caught() {
        let mut buf = Vec::new();
        write_json(&mut buf, Kind::Ack, &Ack { seqno: 7 }).await.unwrap();
        let (kind, payload) = read_frame(&mut buf.as_slice()).await.unwrap();
        assert_eq!(kind, Kind::Ack);
        assert_eq!(parse::<Ack>(kind, &payload).unwrap().seqno, 7);
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(read_frame(&mut bad.as_slice()).await.is_err(), "flip at {i} unnoticed");
        }
        let huge = ((FRAME_BYTES_MAX + 1) as u32).to_le_bytes();
        assert!(matches!(read_frame(&mut huge.as_slice()).await, Err(ProtocolError::TooLarge(_))));
        assert!(matches!(read_frame(&mut &buf[..buf.len() - 1]).await, Err(ProtocolError::Closed)));
    }

    /// On a running stream a `Records` frame may pass the common limit (one large
    /// transaction); no other kind may, nor may it before the stream runs, and the length is
    /// judged before the body is read.
    #[tokio::test]
    async fn only_a_streams_records_frame_may_be_large() {
        let payload = vec![7u8; FRAME_BYTES_MAX + 10];
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Records, &payload).await.unwrap();
        let (kind, got) = read_stream_frame(&mut buf.as_slice()).await.unwrap();
        assert_eq!((kind, got.len()), (Kind::Records, payload.len()));
        assert!(got == payload);
        assert!(matches!(read_frame(&mut buf.as_slice()).await, Err(ProtocolError::TooLarge(_))));
        buf[4] ^= 0x01;
        assert!(read_stream_frame(&mut buf.as_slice()).await.is_err(), "a flipped kind is caught");
        let mut other = Vec::new();
        assert!(matches!(
            write_frame(&mut other, Kind::Heartbeat, &payload).await,
            Err(ProtocolError::TooLarge(_))
        ));
        // A large Heartbeat header, its body never sent: refused on the kind alone.
        let mut head = ((FRAME_BYTES_MAX + 1) as u32).to_le_bytes().to_vec();
        head.push(Kind::Heartbeat as u8);
        assert!(matches!(read_stream_frame(&mut head.as_slice()).await, Err(ProtocolError::TooLarge(_))));
        let beyond = ((RECORDS_FRAME_BYTES_MAX + 1) as u32).to_le_bytes();
        assert!(matches!(read_stream_frame(&mut beyond.as_slice()).await, Err(ProtocolError::TooLarge(_))));
    }

    #[test]
    fn nodes_roundtrip_and_bad_chunks_are_refused() {
        let nodes: Vec<Node> = vec![(b"a".to_vec(), b"1".to_vec()), (b"key".to_vec(), Vec::new())];
        let bytes = encode_nodes(&nodes);
        assert_eq!(decode_nodes(&bytes).unwrap(), nodes);
        for cut in 0..bytes.len() {
            assert!(decode_nodes(&bytes[..cut]).is_err(), "a chunk cut at {cut} was taken");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_nodes(&long).is_err());
        let mut lying = bytes;
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_nodes(&lying).is_err());
    }

    #[test]
    fn proofs_depend_on_secret_and_nonces() {
        let p = proof(b"s", "strand-source", "a", "b");
        assert!(verify(b"s", "strand-source", "a", "b", &p));
        assert!(!verify(b"t", "strand-source", "a", "b", &p));
        assert!(!verify(b"s", "strand-receiver", "a", "b", &p));
        assert!(!verify(b"s", "strand-source", "b", "a", &p));
    }
}
