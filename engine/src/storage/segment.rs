//! Journal segments: the write-ahead log (decision 0002). Every group of transactions is
//! appended here and synced before anyone hears it committed; the database file catches up
//! from the overlay at checkpoints, and recovery replays what it had not yet caught up on.
//!
//! A segment is a header followed by frames, each holding one encoded journal record:
//!
//! ```text
//! header  magic "STRANDJL" | format u8 | 0 u8 ×3 | first_seqno u64le
//!         | creation-id length u16le | creation id | crc32(everything before) u32le
//! frame   length u32le | crc32(length ‖ body ‖ previous frame's stored crc) u32le | body
//! ```
//!
//! The first frame chains from the header's crc. Chaining makes a frame left over from an
//! older incarnation of the file (after a rollback cut it and new frames were written) fail
//! its check, and lets a reader tell a **torn tail** from **corruption**: a frame that fails
//! its check but is followed by one that passes (checked against the failed frame's stored
//! crc) was damaged after it was written, and the segment is refused; a frame that fails at
//! the end — cut short, or followed by nothing valid — was being written when the process or
//! the machine stopped, was never acknowledged, and is cut off by [`recover`].
//!
//! Segments are named by their first seqno (`00000000000000000001.sjl`), so a directory
//! listing sorts them in journal order. Creating one syncs the file and its directory
//! before anything is appended to it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

pub const MAGIC: [u8; 8] = *b"STRANDJL";
/// Version of the segment layout written by this binary.
pub const SEGMENT_FORMAT: u8 = 1;
/// Largest frame body accepted: a longer length field is damage, never a record.
pub const FRAME_BYTES_MAX: usize = 2 * 1024 * 1024 * 1024 - 1;
const FRAME_HEADER: usize = 8;
/// Suffix of a segment being created (see [`SegmentWriter::create`]).
pub const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug, Error)]
pub enum SegmentError {
    #[error("failed to {action} journal segment {path}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("journal segment {path} has no valid header ({reason})")]
    Header { path: PathBuf, reason: String },
    #[error(
        "journal segment {path} is damaged at byte {offset}: frame {frame} fails its checksum but a later frame passes (not a torn tail; `strand-engine ctl verify` names the seqno)"
    )]
    Corrupt { path: PathBuf, offset: u64, frame: u64 },
    #[error("journal segment {path} belongs to instance {found}, not {expected}")]
    Foreign { path: PathBuf, found: String, expected: String },
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SegmentError + 'p {
    move |source| SegmentError::Io { action, path: path.to_path_buf(), source }
}

/// The file name of the segment whose first record is `first_seqno`.
pub fn file_name(first_seqno: u64) -> String {
    format!("{first_seqno:020}.sjl")
}

/// The spare segment: blocks zero-filled and synced ahead of need (see [`prepare_spare`]).
/// Its name ends in [`TMP_SUFFIX`]: [`list`] ignores it and a start removes it.
const SPARE: &str = "spare.sjl.tmp";

/// Writes a zero-filled, synced file of `bytes` bytes in `dir`, whose blocks the next segment
/// takes over ([`SegmentWriter::create_from_spare`]). Appends into written blocks change no
/// file metadata, so a group's `fdatasync` is a data flush alone; appends into `fallocate`d
/// blocks convert their extents, which costs a filesystem journal commit per sync (on ext4
/// about twice the time, and it waits for every other file's ordered data). PostgreSQL
/// zero-fills its WAL segments for the same reason. On failure nothing is left behind.
pub fn prepare_spare(dir: &Path, bytes: u64) -> Result<PathBuf, SegmentError> {
    let path = dir.join(SPARE);
    let filled = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(zeros.len());
            file.write_all(zeros.get(..n).unwrap_or_default())?;
            left -= n as u64;
        }
        file.sync_data()
    })();
    if let Err(source) = filled {
        let _ = std::fs::remove_file(&path);
        return Err(SegmentError::Io { action: "prepare", path, source });
    }
    Ok(path)
}

/// Removes segments left half-created by a crash (their names end in [`TMP_SUFFIX`]; they
/// never held a record).
pub fn remove_unfinished(dir: &Path) -> Result<(), SegmentError> {
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
            std::fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
        }
    }
    Ok(())
}

/// The segments in `dir`, as (first seqno, path), in journal order.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SegmentError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".sjl")) else { continue };
        if stem.len() == 20
            && let Ok(first) = stem.parse::<u64>()
        {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn header(first_seqno: u64, creation_id: &str) -> Vec<u8> {
    let id = creation_id.as_bytes();
    let mut out = Vec::with_capacity(8 + 4 + 8 + 2 + id.len() + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[SEGMENT_FORMAT, 0, 0, 0]);
    out.extend_from_slice(&first_seqno.to_le_bytes());
    out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(id.get(..usize::from(u16::MAX)).unwrap_or(id));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn frame_crc(len: u32, body: &[u8], previous: u32) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(body);
    h.update(&previous.to_le_bytes());
    h.finalize()
}

/// Appends `body` as a frame after one whose stored crc is `previous`; the new frame's crc.
fn encode_frame(out: &mut Vec<u8>, body: &[u8], previous: u32) -> u32 {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = frame_crc(len, body, previous);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    crc
}

fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync the directory of", dir))
}

/// What reading a segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub first_seqno: u64,
    pub creation_id: String,
    /// Every valid frame's body, in order.
    pub frames: Vec<Vec<u8>>,
    /// Bytes of the header and the valid frames: where the next frame goes.
    pub valid_len: u64,
    /// Bytes past `valid_len` (a torn tail) that [`recover`] cuts off.
    pub torn_bytes: u64,
    /// The last valid frame's crc (the header's when there is none): the next frame's chain.
    pub last_crc: u32,
}

/// Parses a segment's bytes: the header, then frames up to the first that fails. A failing
/// frame followed by a valid one is corruption.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Contents, SegmentError> {
    let bad = |reason: &str| SegmentError::Header { path: path.to_path_buf(), reason: reason.to_owned() };
    let (magic, rest) = bytes.split_first_chunk::<8>().ok_or_else(|| bad("shorter than a header"))?;
    if *magic != MAGIC {
        return Err(bad("wrong magic"));
    }
    let (version, rest) = rest.split_first_chunk::<4>().ok_or_else(|| bad("shorter than a header"))?;
    if version[0] == 0 || version[0] > SEGMENT_FORMAT {
        return Err(bad(&format!("segment format {} (this binary reads 1 to {SEGMENT_FORMAT})", version[0])));
    }
    let (first, rest) = rest.split_first_chunk::<8>().ok_or_else(|| bad("shorter than a header"))?;
    let (id_len, rest) = rest.split_first_chunk::<2>().ok_or_else(|| bad("shorter than a header"))?;
    let id_len = usize::from(u16::from_le_bytes(*id_len));
    let id = rest.get(..id_len).ok_or_else(|| bad("shorter than a header"))?;
    let header_len = 8 + 4 + 8 + 2 + id_len;
    let header_crc = le32(rest, id_len).ok_or_else(|| bad("shorter than a header"))?;
    if crc32fast::hash(bytes.get(..header_len).unwrap_or_default()) != header_crc {
        return Err(bad("header checksum mismatch"));
    }
    let mut contents = Contents {
        first_seqno: u64::from_le_bytes(*first),
        creation_id: String::from_utf8_lossy(id).into_owned(),
        frames: Vec::new(),
        valid_len: (header_len + 4) as u64,
        torn_bytes: 0,
        last_crc: header_crc,
    };
    let mut at = header_len + 4;
    while at < bytes.len() {
        match check_frame(bytes, at, contents.last_crc) {
            Some((body, crc, next)) => {
                contents.frames.push(body.to_vec());
                contents.last_crc = crc;
                at = next;
            }
            None => {
                // Damage, or a torn tail? A frame that fits and is followed by one that
                // passes against the failed frame's stored crc was written whole: damage.
                if let Some((len, stored)) = frame_fields(bytes, at) {
                    let next = at + FRAME_HEADER + len;
                    if next < bytes.len() && check_frame(bytes, next, stored).is_some() {
                        return Err(SegmentError::Corrupt {
                            path: path.to_path_buf(),
                            offset: at as u64,
                            frame: contents.frames.len() as u64,
                        });
                    }
                }
                break;
            }
        }
        contents.valid_len = at as u64;
    }
    contents.torn_bytes = bytes.len() as u64 - contents.valid_len;
    Ok(contents)
}

/// A frame's length and stored crc at `at`, if its header and body fit in `bytes`.
fn frame_fields(bytes: &[u8], at: usize) -> Option<(usize, u32)> {
    let len = usize::try_from(le32(bytes, at)?).ok()?;
    let stored = le32(bytes, at + 4)?;
    if len > FRAME_BYTES_MAX || at + FRAME_HEADER + len > bytes.len() {
        return None;
    }
    Some((len, stored))
}

/// The little-endian u32 at `at`, if there.
fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(*bytes.get(at..)?.first_chunk::<4>()?))
}

/// The frame at `at` if it passes its check chained from `previous`: (body, its crc, the
/// offset after it).
fn check_frame(bytes: &[u8], at: usize, previous: u32) -> Option<(&[u8], u32, usize)> {
    let (len, stored) = frame_fields(bytes, at)?;
    let body = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
    (frame_crc(len as u32, body, previous) == stored).then_some((body, stored, at + FRAME_HEADER + len))
}

/// Reads the segment at `path` (see [`parse`]).
pub fn read(path: &Path) -> Result<Contents, SegmentError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_err("read", path))?;
    parse(path, &bytes)
}

/// Cuts the segment at `path`, read as `contents`, after its first `keep` frames and syncs
/// the cut (a rollback takes the frames past its target off the journal). A torn tail is
/// cut with them; a segment holding no more than `keep` frames and no tail is left as it is.
pub fn keep_frames(path: &Path, contents: &Contents, keep: usize) -> Result<(), SegmentError> {
    if contents.frames.len() <= keep && contents.torn_bytes == 0 {
        return Ok(());
    }
    let framed = |frames: &[Vec<u8>]| frames.iter().map(|f| (FRAME_HEADER + f.len()) as u64).sum::<u64>();
    let header_end = contents.valid_len - framed(&contents.frames);
    let len = header_end + framed(contents.frames.get(..keep).unwrap_or(&contents.frames));
    let file = OpenOptions::new().write(true).open(path).map_err(io_err("open", path))?;
    file.set_len(len).map_err(io_err("cut back", path))?;
    file.sync_data().map_err(io_err("sync", path))
}

/// Opens the segment at `path` for appending after recovery: checks it belongs to instance
/// `creation_id`, cuts off a torn tail (and syncs the cut), and returns its contents and a
/// writer positioned after its last valid frame.
pub fn recover(path: &Path, creation_id: &str) -> Result<(Contents, SegmentWriter), SegmentError> {
    let contents = read(path)?;
    if contents.creation_id != creation_id {
        return Err(SegmentError::Foreign {
            path: path.to_path_buf(),
            found: contents.creation_id,
            expected: creation_id.to_owned(),
        });
    }
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err("open", path))?;
    if contents.torn_bytes > 0 {
        file.set_len(contents.valid_len).map_err(io_err("cut the torn tail of", path))?;
        file.sync_data().map_err(io_err("sync", path))?;
    }
    file.seek(SeekFrom::Start(contents.valid_len)).map_err(io_err("seek in", path))?;
    let writer = SegmentWriter {
        buf: Vec::new(),
        file: Arc::new(file),
        path: path.to_path_buf(),
        len: contents.valid_len,
        last_crc: contents.last_crc,
        first_seqno: contents.first_seqno,
        written: contents.valid_len,
        allocated: 0,
    };
    Ok((contents, writer))
}

/// The largest append buffer a segment writer keeps for the next group.
const APPEND_BUFFER_KEPT: usize = 16 * 1024 * 1024;

/// Bytes of zeros a segment writer writes ahead of its appends at a time
/// ([`SegmentWriter::zero_ahead`]).
const ZERO_AHEAD: usize = 1 << 20;

static ZEROS: [u8; ZERO_AHEAD] = [0; ZERO_AHEAD];

/// Appends frames to one segment.
#[derive(Debug)]
pub struct SegmentWriter {
    /// The previous append's buffer, reused.
    buf: Vec<u8>,
    /// Shared with [`SyncHandle`]s, which sync it from another thread.
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    last_crc: u32,
    first_seqno: u64,
    /// Bytes from the start that hold frames or written zeros: an append below it changes
    /// no file metadata.
    written: u64,
    /// Zeros are written only below this: the blocks `fallocate` reserved (so they take no
    /// space the segment did not hold already); 0 once a zero-fill failed.
    allocated: u64,
}

impl SegmentWriter {
    /// Creates segment `first_seqno` of instance `creation_id` in `dir` (which must not hold
    /// it yet), with its header written and synced, and the directory synced.
    ///
    /// The header is written and synced under a temporary name that [`list`] ignores, then
    /// renamed into place: a crash midway leaves no segment without a whole header.
    ///
    /// With `preallocate`, the file's blocks up to that size are allocated at once
    /// (`fallocate`, best effort): an `fdatasync` after an append then has no file size to
    /// record, which makes each group's sync cheaper. The allocated tail reads as zeros,
    /// which no frame passes: a reader sees it as a torn tail.
    pub fn create(
        dir: &Path,
        first_seqno: u64,
        creation_id: &str,
        preallocate: u64,
    ) -> Result<SegmentWriter, SegmentError> {
        let path = dir.join(file_name(first_seqno));
        if path.exists() {
            // Made by an attempt whose directory sync failed: harmless while it holds no frame.
            if !read(&path).is_ok_and(|c| c.frames.is_empty() && c.first_seqno == first_seqno) {
                return Err(SegmentError::Io {
                    action: "create",
                    path,
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a segment of that name holds records",
                    ),
                });
            }
        }
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", file_name(first_seqno)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let head = header(first_seqno, creation_id);
        file.write_all(&head).map_err(io_err("write the header of", &tmp))?;
        let mut allocated = 0;
        if preallocate > head.len() as u64 {
            use std::os::fd::AsRawFd;
            let len = libc::off_t::try_from(preallocate).unwrap_or(libc::off_t::MAX);
            // SAFETY: fallocate on a file descriptor this function owns and keeps open.
            let done = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
            if done == 0 {
                allocated = preallocate;
            } else {
                tracing::debug!(path = %tmp.display(), error = %io::Error::last_os_error(), "segment not preallocated");
            }
        }
        let mut writer = SegmentWriter::put_in_place(dir, file, &tmp, path, &head, first_seqno)?;
        writer.allocated = allocated;
        Ok(writer)
    }

    /// Syncs `file` (written under the name `from`, its header `head` first), renames it to
    /// `path` and syncs the directory: the segment exists, whole, from then on.
    fn put_in_place(
        dir: &Path,
        file: File,
        from: &Path,
        path: PathBuf,
        head: &[u8],
        first_seqno: u64,
    ) -> Result<SegmentWriter, SegmentError> {
        file.sync_data().map_err(io_err("sync", from))?;
        std::fs::rename(from, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(dir)?;
        let last_crc = head.last_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c));
        Ok(SegmentWriter {
            buf: Vec::new(),
            file: Arc::new(file),
            path,
            len: head.len() as u64,
            last_crc,
            first_seqno,
            written: head.len() as u64,
            allocated: 0,
        })
    }

    /// Appends `bodies` as frames with one write (not yet synced); the segment's length after.
    pub fn append<B: AsRef<[u8]>>(&mut self, bodies: &[B]) -> Result<u64, SegmentError> {
        // One buffer kept across groups: a large buffer freed per group makes the allocator
        // consolidate its free lists every time (seen in a profile of the writer).
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        out.reserve(bodies.iter().map(|b| b.as_ref().len() + FRAME_HEADER).sum());
        let mut crc = self.last_crc;
        for body in bodies {
            let body = body.as_ref();
            if body.len() > FRAME_BYTES_MAX {
                return Err(SegmentError::Io {
                    action: "append to",
                    path: self.path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "a record larger than a frame"),
                });
            }
            crc = encode_frame(&mut out, body, crc);
        }
        let written = (&*self.file).write_all(&out).map_err(io_err("append to", &self.path));
        let len = out.len() as u64;
        if out.capacity() <= APPEND_BUFFER_KEPT {
            self.buf = out;
        }
        written?;
        self.len += len;
        self.last_crc = crc;
        self.written = self.written.max(self.len);
        self.zero_ahead();
        Ok(self.len)
    }

    /// Writes zeros past the appends, [`ZERO_AHEAD`] bytes at a time within the allocated
    /// blocks, before the appends reach them. An append into `fallocate`d blocks makes its
    /// `fdatasync` record the blocks as written in the file's extent map too (about twice
    /// the sync, decision 0003); into written zeros the sync is a flush of the data alone.
    /// The zeros reach the disk with the next sync, once per [`ZERO_AHEAD`] bytes of frames.
    /// A reader sees them as a torn tail. Best effort: after a failure it stops.
    fn zero_ahead(&mut self) {
        use std::os::unix::fs::FileExt;
        if self.written >= self.allocated || self.written - self.len >= ZERO_AHEAD as u64 / 2 {
            return;
        }
        let n = usize::try_from(self.allocated - self.written).unwrap_or(ZERO_AHEAD).min(ZERO_AHEAD);
        match self.file.write_all_at(ZEROS.get(..n).unwrap_or_default(), self.written) {
            Ok(()) => self.written += n as u64,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "cannot zero-fill ahead of the appends");
                self.allocated = 0;
            }
        }
    }

    /// Makes everything appended so far durable (`fdatasync`).
    pub fn sync(&self) -> Result<(), SegmentError> {
        self.file.sync_data().map_err(io_err("sync", &self.path))
    }

    /// A handle that syncs what was appended so far from another thread, while this writer
    /// appends the next group (whose frames the sync may then also cover).
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle { file: Arc::clone(&self.file), path: self.path.clone() }
    }

    /// [`SegmentWriter::create`] over the blocks of a spare made by [`prepare_spare`]: the
    /// header is written and synced into it, and it is renamed into place.
    pub fn create_from_spare(
        dir: &Path,
        spare: &Path,
        first_seqno: u64,
        creation_id: &str,
    ) -> Result<SegmentWriter, SegmentError> {
        let path = dir.join(file_name(first_seqno));
        if path.exists() {
            return Err(SegmentError::Io {
                action: "create",
                path,
                source: io::Error::new(io::ErrorKind::AlreadyExists, "the segment exists"),
            });
        }
        let mut file =
            OpenOptions::new().read(true).write(true).open(spare).map_err(io_err("open", spare))?;
        let head = header(first_seqno, creation_id);
        file.write_all(&head).map_err(io_err("write the header of", spare))?;
        SegmentWriter::put_in_place(dir, file, spare, path, &head, first_seqno)
    }

    /// The segment's size in bytes: its header and every frame appended.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// The chain value the next frame starts from (with [`SegmentWriter::bytes`], where to
    /// [`SegmentWriter::cut_back`] to).
    pub fn last_crc(&self) -> u32 {
        self.last_crc
    }

    /// Cuts the segment back to `len` bytes, ending in a frame whose crc is `last_crc`, and
    /// syncs the cut: what a group that failed to append or sync leaves behind is gone, so
    /// the next group's frames follow the last durable one.
    pub fn cut_back(&mut self, len: u64, last_crc: u32) -> Result<(), SegmentError> {
        self.file.set_len(len).map_err(io_err("cut back", &self.path))?;
        (&*self.file).seek(SeekFrom::Start(len)).map_err(io_err("seek in", &self.path))?;
        self.file.sync_data().map_err(io_err("sync", &self.path))?;
        self.len = len;
        self.last_crc = last_crc;
        // The blocks past the cut are gone: no zeros are written there.
        self.written = len;
        self.allocated = 0;
        Ok(())
    }

    pub fn first_seqno(&self) -> u64 {
        self.first_seqno
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// See [`SegmentWriter::sync_handle`].
pub struct SyncHandle {
    file: Arc<File>,
    path: PathBuf,
}

impl SyncHandle {
    /// [`SegmentWriter::sync`].
    pub fn sync(&self) -> Result<(), SegmentError> {
        self.file.sync_data().map_err(io_err("sync", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: &str = "c0ffee";

    fn bodies(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("record {i} ").repeat(i % 7 + 1).into_bytes()).collect()
    }

    /// A segment's bytes holding `frames`, and the file length after each frame.
    fn segment(frames: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = header(1, ID);
        let mut crc = u32::from_le_bytes(out[out.len() - 4..].try_into().unwrap_or_default());
        let mut ends = Vec::new();
        for f in frames {
            crc = encode_frame(&mut out, f, crc);
            ends.push(out.len());
        }
        (out, ends)
    }

    #[test]
    fn written_frames_read_back_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = SegmentWriter::create(dir.path(), 1, ID, 0).expect("create");
        let written = bodies(50);
        w.append(&written[..20]).expect("append");
        w.append(&written[20..]).expect("append");
        w.sync().expect("sync");
        let (contents, mut again) = recover(w.path(), ID).expect("recover");
        assert_eq!(contents.frames, written);
        assert_eq!((contents.torn_bytes, contents.first_seqno), (0, 1));
        again.append(&[b"after reopen".to_vec()]).expect("append");
        assert_eq!(read(w.path()).expect("read").frames.len(), 51);
        assert_eq!(list(dir.path()).expect("list"), vec![(1, dir.path().join(file_name(1)))]);
        assert!(SegmentWriter::create(dir.path(), 1, ID, 0).is_err(), "a segment is never created twice");
        assert!(matches!(recover(w.path(), "other"), Err(SegmentError::Foreign { .. })));
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_goes_on_from_the_last_whole_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bytes, ends) = segment(&bodies(10));
        let path = dir.path().join(file_name(1));
        std::fs::write(&path, &bytes[..ends[6] + 5]).expect("write");
        let (contents, mut w) = recover(&path, ID).expect("recover");
        assert_eq!((contents.frames.len(), contents.torn_bytes), (7, 5));
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), ends[6] as u64);
        w.append(&[b"next".to_vec()]).expect("append");
        let again = read(&path).expect("read");
        assert_eq!(again.frames.len(), 8);
        assert_eq!(again.frames[7], b"next");
    }

    #[test]
    fn damage_followed_by_a_valid_frame_is_refused() {
        let (mut bytes, ends) = segment(&bodies(10));
        bytes[ends[3] + FRAME_HEADER + 2] ^= 0x10; // inside frame 4's body
        let err = parse(Path::new("s"), &bytes).expect_err("damage");
        assert!(matches!(err, SegmentError::Corrupt { frame: 4, .. }), "{err}");
        // The same damage in the last frame is indistinguishable from a torn write.
        let (mut bytes, ends) = segment(&bodies(10));
        bytes[ends[8] + FRAME_HEADER] ^= 0x01;
        assert_eq!(parse(Path::new("s"), &bytes).expect("torn").frames.len(), 9);
    }

    #[test]
    fn a_frame_from_an_older_incarnation_fails_the_chain() {
        // Frames 0..5 written, the file cut after frame 2 (a rollback), two new frames
        // written: the old frames 3 and 4 that follow them on disk never read back.
        let old = bodies(5);
        let (bytes, ends) = segment(&old);
        let (fresh, fresh_ends) = segment(&[old[0].clone(), old[1].clone(), old[2].clone(), b"new".to_vec()]);
        let mut mixed = fresh[..fresh_ends[3]].to_vec();
        mixed.extend_from_slice(&bytes[ends[3]..]);
        let contents = parse(Path::new("s"), &mixed).expect("parse");
        assert_eq!(contents.frames.len(), 4);
        assert_eq!(contents.frames[3], b"new");
    }

    #[test]
    fn a_crash_while_creating_leaves_no_segment_in_the_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A crash before the rename: a half-written temporary file, ignored and removed.
        std::fs::write(dir.path().join(format!("{}{TMP_SUFFIX}", file_name(7))), b"STRAND").expect("write");
        assert!(list(dir.path()).expect("list").is_empty());
        remove_unfinished(dir.path()).expect("remove");
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
        // A crash after the rename but before any frame: creating it again replaces it.
        drop(SegmentWriter::create(dir.path(), 7, ID, 4096).expect("create"));
        let mut again = SegmentWriter::create(dir.path(), 7, ID, 4096).expect("create again");
        again.append(&[b"one"]).expect("append");
        again.sync().expect("sync");
        // One holding a frame is never replaced.
        assert!(SegmentWriter::create(dir.path(), 7, ID, 4096).is_err());
        assert_eq!(read(&dir.path().join(file_name(7))).expect("read").frames, vec![b"one".to_vec()]);
    }

    #[test]
    fn a_segment_made_from_a_spare_holds_its_frames_and_a_zero_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spare = prepare_spare(dir.path(), 64 * 1024).expect("prepare");
        assert!(list(dir.path()).expect("list").is_empty(), "a spare is no segment");
        let mut w = SegmentWriter::create_from_spare(dir.path(), &spare, 5, ID).expect("create");
        assert!(!spare.exists(), "the spare became the segment");
        let written = bodies(10);
        w.append(&written).expect("append");
        w.sync().expect("sync");
        let contents = read(w.path()).expect("read");
        assert_eq!((contents.first_seqno, &contents.frames), (5, &written));
        assert_eq!(contents.torn_bytes, 64 * 1024 - w.bytes(), "the zeros are a torn tail, not damage");
        let (_, mut again) = recover(w.path(), ID).expect("recover");
        again.append(&[b"after".to_vec()]).expect("append");
        again.sync().expect("sync");
        assert_eq!(read(w.path()).expect("read").frames.len(), 11);
        // A segment of that name already there is never written over.
        let spare = prepare_spare(dir.path(), 4096).expect("prepare");
        assert!(SegmentWriter::create_from_spare(dir.path(), &spare, 5, ID).is_err());
        assert_eq!(read(w.path()).expect("read").frames.len(), 11);
        remove_unfinished(dir.path()).expect("remove");
        assert!(!spare.exists(), "a start removes a spare");
    }

    #[test]
    fn zeros_are_written_ahead_of_the_appends_within_the_allocated_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allocated = 3 * ZERO_AHEAD as u64 / 2;
        let mut w = SegmentWriter::create(dir.path(), 1, ID, allocated).expect("create");
        assert_eq!(w.written, w.bytes(), "nothing is zero-filled before the first append");
        let mut frames = Vec::new();
        let body = vec![7u8; 4000];
        while w.bytes() < allocated + 8192 {
            w.append(&[&body]).expect("append");
            frames.push(body.clone());
            assert!(w.written >= w.bytes(), "the zeros never reach below the frames");
            assert!(w.written <= allocated.max(w.bytes()), "zeros past the allocated blocks");
            if w.bytes() < allocated - ZERO_AHEAD as u64 / 2 {
                assert!(w.written - w.bytes() >= ZERO_AHEAD as u64 / 2, "too little zero-filled ahead");
            }
        }
        w.sync().expect("sync");
        let on_disk = std::fs::metadata(w.path()).expect("stat").len();
        assert_eq!(on_disk, w.bytes(), "the appends went on past the allocated blocks");
        assert_eq!(read(w.path()).expect("read").frames, frames);
        // A cut frees the blocks past it: no zeros are written there any more.
        let (len, crc) = (w.bytes(), w.last_crc());
        w.append(&[&body]).expect("append");
        w.cut_back(len, crc).expect("cut");
        w.append(&[&body]).expect("append");
        assert_eq!(w.written, w.bytes());
    }

    #[test]
    fn a_preallocated_segment_reads_its_zero_tail_as_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = SegmentWriter::create(dir.path(), 1, ID, 64 * 1024).expect("create");
        let written = bodies(10);
        w.append(&written).expect("append");
        w.sync().expect("sync");
        let on_disk = std::fs::metadata(w.path()).expect("stat").len();
        assert!(on_disk >= 64 * 1024, "the file was preallocated ({on_disk} bytes)");
        let contents = read(w.path()).expect("read");
        assert_eq!(contents.frames, written);
        assert_eq!(contents.valid_len, w.bytes());
        assert_eq!(contents.torn_bytes, on_disk - w.bytes(), "the zeros are a torn tail, not damage");
        let (_, mut again) = recover(w.path(), ID).expect("recover");
        again.append(&[b"after".to_vec()]).expect("append");
        again.sync().expect("sync");
        assert_eq!(read(w.path()).expect("read").frames.len(), 11);
    }

    #[test]
    fn a_bad_header_is_refused() {
        let (bytes, _) = segment(&bodies(1));
        for cut in [0, 7, 20] {
            assert!(matches!(parse(Path::new("s"), &bytes[..cut]), Err(SegmentError::Header { .. })));
        }
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        assert!(matches!(parse(Path::new("s"), &flipped), Err(SegmentError::Header { .. })));
    }

    proptest! {
        /// Any prefix of a valid segment, followed by any garbage, reads back as the longest
        /// run of whole frames inside the prefix — or is refused as damaged, never misread.
        #[test]
        fn any_prefix_plus_garbage_recovers_the_longest_valid_prefix(
            n in 0usize..40,
            cut in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let frames = bodies(n);
            let (bytes, ends) = segment(&frames);
            let start = header(1, ID).len();
            let cut = start + cut.index(bytes.len() - start + 1);
            let mut damaged = bytes[..cut].to_vec();
            damaged.extend_from_slice(&garbage);
            // Garbage may happen to continue the original bytes (a body's last byte): what
            // counts is how far the damaged file still agrees with the original.
            let same = damaged.iter().zip(&bytes).take_while(|(a, b)| a == b).count();
            let whole = ends.iter().filter(|e| **e <= same).count();
            match parse(Path::new("s"), &damaged) {
                Ok(c) => {
                    prop_assert_eq!(&c.frames[..whole], &frames[..whole]);
                    // Garbage passing a chained crc32 check is a 2^-32 event.
                    prop_assert_eq!(c.frames.len(), whole);
                    prop_assert_eq!(c.valid_len as usize, if whole == 0 { start } else { ends[whole - 1] });
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}
