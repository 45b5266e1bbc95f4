//! Journal records: the versioned, checksummed binary form of one committed transaction.
//!
//! Every committed transaction becomes exactly one record, stored in the journal table under
//! its journal sequence number, in the same redb commit that changes the data. A record holds
//! the before-image and after-image of every key the transaction touched, so an instance can
//! roll itself back (before-images, newest first) and replay forward (after-images).
//!
//! The byte layout is drawn in `docs/journal-format.md`. Decoding never trusts a length it
//! has not checked against the remaining input, and the CRC-32 (IEEE) over
//! every preceding byte is verified before any field is used.

use thiserror::Error;

/// Version of the record layout written by this binary. Readers accept every version up to it.
pub const RECORD_VERSION: u8 = 1;

/// Bytes in a record before its first key: version, kind, seqno, stream, stream seqno,
/// commit time, key count.
const HEADER_BYTES: usize = 1 + 1 + 8 + 1 + 8 + 8 + 4;
/// Fewest bytes one key can take: its length and the two image tags.
const KEY_BYTES_MIN: usize = 4 + 1 + 1;
/// Bytes after the last key: the checksum.
const TRAILER_BYTES: usize = 4;

/// Streams 0..=15: 0 is local updates, 1–15 are externally sourced SI streams (GT.M).
pub const STREAMS_MAX: u8 = 16;

/// What a journal record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// An application transaction (a mini-transaction or a MULTI/EXEC TP transaction).
    Update,
    /// The primary stopped commits and handed over to its standby (GemStone procedure).
    Failover,
    /// The on-disk format was upgraded; secondaries upgrade by replaying it.
    Upgrade,
    /// SI stream `stream` starts here, holding its source family's transactions up to
    /// `stream_seqno` (from a backup: `receiver start --updateresync`). No changes.
    StreamBase,
    /// SI stream `stream` resumes after `stream_seqno` without rolling back what this instance
    /// holds beyond it (`receiver start --noresync`). No changes.
    StreamResync,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Update => 0,
            RecordKind::Failover => 1,
            RecordKind::Upgrade => 2,
            RecordKind::StreamBase => 3,
            RecordKind::StreamResync => 4,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            0 => Ok(RecordKind::Update),
            1 => Ok(RecordKind::Failover),
            2 => Ok(RecordKind::Upgrade),
            3 => Ok(RecordKind::StreamBase),
            4 => Ok(RecordKind::StreamResync),
            other => Err(DecodeError::Kind { kind: other }),
        }
    }
}

/// A record's header fields (see [`Record::head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub kind: RecordKind,
    pub seqno: u64,
    pub stream: u8,
    pub stream_seqno: u64,
    pub commit_time_micros: u64,
}

impl Head {
    /// Reads the header fields, checking the version and the stream.
    fn read(r: &mut Reader<'_>) -> Result<Head, DecodeError> {
        let version = r.u8()?;
        if version == 0 || version > RECORD_VERSION {
            return Err(DecodeError::Version { version });
        }
        let kind = RecordKind::from_byte(r.u8()?)?;
        let seqno = r.u64()?;
        let stream = r.u8()?;
        if stream >= STREAMS_MAX {
            return Err(DecodeError::Stream { stream });
        }
        Ok(Head { kind, seqno, stream, stream_seqno: r.u64()?, commit_time_micros: r.u64()? })
    }
}

/// The body of an encoded record (all but its checksum), once the checksum is verified.
fn checked_body(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let body_len = bytes
        .len()
        .checked_sub(TRAILER_BYTES)
        .ok_or_else(|| DecodeError::Truncated { offset: 0, needed: TRAILER_BYTES - bytes.len() })?;
    let (body, trailer) = bytes.split_at(body_len);
    let stored = u32::from_le_bytes(
        trailer.try_into().map_err(|_| DecodeError::Truncated { offset: body_len, needed: TRAILER_BYTES })?,
    );
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(body)
}

/// One key touched by a transaction: its value before and after. `None` means absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub key: Vec<u8>,
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

/// A decoded journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordKind,
    /// Journal sequence number on this instance: 1, 2, 3… with no holes.
    pub seqno: u64,
    /// Stream the transaction came from (0 = generated on this instance's family).
    pub stream: u8,
    /// The transaction's seqno within its stream; equal to `seqno` for stream 0 until SI
    /// replication assigns otherwise.
    pub stream_seqno: u64,
    /// Commit time, microseconds since the Unix epoch, as stamped by the originating instance.
    pub commit_time_micros: u64,
    /// Keys in ascending byte order, each at most once.
    pub changes: Vec<KeyChange>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("journal record is truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("journal record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error(
        "journal record version {version} is newer than this binary understands ({RECORD_VERSION}); upgrade the binary"
    )]
    Version { version: u8 },
    #[error("journal record has unknown kind {kind}")]
    Kind { kind: u8 },
    #[error("journal record has stream {stream}, outside 0..{STREAMS_MAX}")]
    Stream { stream: u8 },
    #[error("journal record has unknown image tag {tag}")]
    ImageTag { tag: u8 },
    #[error("journal record has {extra} trailing bytes after its last key")]
    Trailing { extra: usize },
}

impl Record {
    /// Encodes the record and appends its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let changes =
            self.changes.iter().map(|c| (c.key.as_slice(), c.before.as_deref(), c.after.as_deref()));
        Record::encode_parts(self.header(), changes)
    }

    /// The record's fields but its changes.
    pub fn header(&self) -> Head {
        Head {
            kind: self.kind,
            seqno: self.seqno,
            stream: self.stream,
            stream_seqno: self.stream_seqno,
            commit_time_micros: self.commit_time_micros,
        }
    }

    /// [`Record::encode`] of a record given as its head and its changes `(key, before,
    /// after)`, in key order, without building it.
    pub fn encode_parts<'c>(
        head: Head,
        changes: impl ExactSizeIterator<Item = (&'c [u8], Option<&'c [u8]>, Option<&'c [u8]>)> + Clone,
    ) -> Vec<u8> {
        assert!(head.stream < STREAMS_MAX, "stream out of range is a programmer error");
        let images: usize = changes
            .clone()
            .map(|(key, before, after)| {
                4 + key.len() + 5 + before.map_or(0, <[u8]>::len) + 5 + after.map_or(0, <[u8]>::len)
            })
            .sum();
        let mut out = Vec::with_capacity(HEADER_BYTES + images + TRAILER_BYTES);
        out.push(RECORD_VERSION);
        out.push(head.kind.to_byte());
        out.extend_from_slice(&head.seqno.to_le_bytes());
        out.push(head.stream);
        out.extend_from_slice(&head.stream_seqno.to_le_bytes());
        out.extend_from_slice(&head.commit_time_micros.to_le_bytes());
        let count =
            u32::try_from(changes.len()).expect("key count is bounded by MULTI_BYTES_MAX / 1 byte per key");
        out.extend_from_slice(&count.to_le_bytes());
        for (key, before, after) in changes {
            put_bytes(&mut out, key);
            put_image(&mut out, before);
            put_image(&mut out, after);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes only a record's header (no key is copied), verifying its checksum first: what
    /// trimming reads of each record it takes off.
    pub fn head(bytes: &[u8]) -> Result<Head, DecodeError> {
        Head::read(&mut Reader { bytes: checked_body(bytes)?, offset: 0 })
    }

    /// Decodes a record, verifying its checksum before reading any field.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader { bytes: checked_body(bytes)?, offset: 0 };
        let Head { kind, seqno, stream, stream_seqno, commit_time_micros } = Head::read(&mut r)?;
        let count = r.u32()?;
        // Each key needs at least KEY_BYTES_MIN; never trust a count that could not fit in what
        // is left, or a corrupt count would make us allocate without bound.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > r.remaining() / KEY_BYTES_MIN {
            return Err(DecodeError::Truncated {
                offset: r.offset,
                needed: count.saturating_mul(KEY_BYTES_MIN),
            });
        }
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            let key = r.bytes()?.to_vec();
            let before = r.image()?;
            let after = r.image()?;
            changes.push(KeyChange { key, before, after });
        }
        if r.remaining() != 0 {
            return Err(DecodeError::Trailing { extra: r.remaining() });
        }
        Ok(Record { kind, seqno, stream, stream_seqno, commit_time_micros, changes })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("key and value sizes are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_image(out: &mut Vec<u8>, image: Option<&[u8]>) {
    match image {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.offset.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or_else(|| {
            DecodeError::Truncated { offset: self.offset, needed: n.saturating_sub(self.remaining()) }
        })?;
        let slice = self
            .bytes
            .get(self.offset..end)
            .ok_or(DecodeError::Truncated { offset: self.offset, needed: n })?;
        self.offset = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let offset = self.offset;
        self.take(N)?.try_into().map_err(|_| DecodeError::Truncated { offset, needed: N })
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        self.take(len)
    }

    fn image(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?.to_vec())),
            tag => Err(DecodeError::ImageTag { tag }),
        }
    }
}

/// Where one journal record stands in the streams: what SI negotiation and rollback planning
/// read of a supplementary instance's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEntry {
    pub seqno: u64,
    pub stream: u8,
    pub stream_seqno: u64,
    /// The stream's `stream_base` record: it stands for every family transaction up to
    /// `stream_seqno`, loaded from a backup, which no rollback can take off.
    pub base: bool,
}

impl StreamEntry {
    pub fn of(record: &Record) -> StreamEntry {
        StreamEntry {
            seqno: record.seqno,
            stream: record.stream,
            stream_seqno: record.stream_seqno,
            base: record.kind == RecordKind::StreamBase,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Record {
        Record {
            kind: RecordKind::Update,
            seqno: 7,
            stream: 0,
            stream_seqno: 7,
            commit_time_micros: 1_700_000_000_000_000,
            changes: vec![
                KeyChange { key: b"a".to_vec(), before: None, after: Some(b"1".to_vec()) },
                KeyChange { key: b"b".to_vec(), before: Some(b"x".to_vec()), after: None },
            ],
        }
    }

    #[test]
    fn head_reads_the_header_and_checks_the_checksum() {
        let r = sample();
        let bytes = r.encode();
        let head = Record::head(&bytes).unwrap();
        assert_eq!(
            head,
            Head {
                kind: r.kind,
                seqno: r.seqno,
                stream: r.stream,
                stream_seqno: r.stream_seqno,
                commit_time_micros: r.commit_time_micros
            }
        );
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(matches!(Record::head(&bad), Err(DecodeError::Checksum { .. })));
        assert!(Record::head(&bytes[..3]).is_err());
    }

    #[test]
    fn roundtrip() {
        let record = sample();
        assert_eq!(Record::decode(&record.encode()), Ok(record));
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = sample().encode();
        for i in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            if let Some(byte) = corrupt.get_mut(i / 8) {
                *byte ^= 1 << (i % 8);
            }
            assert!(Record::decode(&corrupt).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn newer_version_is_refused_with_advice() {
        let mut bytes = sample().encode();
        bytes[0] = RECORD_VERSION + 1;
        let body_len = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&crc.to_le_bytes());
        let err = Record::decode(&bytes).expect_err("newer version must be refused");
        assert!(err.to_string().contains("upgrade the binary"), "{err}");
    }

    fn arb_image() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn roundtrip_any(
            seqno in 1u64..,
            stream in 0u8..STREAMS_MAX,
            stream_seqno in any::<u64>(),
            time in any::<u64>(),
            changes in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..32), arb_image(), arb_image()), 0..8),
        ) {
            let record = Record {
                kind: RecordKind::Update, seqno, stream, stream_seqno, commit_time_micros: time,
                changes: changes.into_iter()
                    .map(|(key, before, after)| KeyChange { key, before, after }).collect(),
            };
            prop_assert_eq!(Record::decode(&record.encode()), Ok(record));
        }
    }
}
