//! cutfs: a FUSE passthrough over a backing directory that keeps everything not yet synced
//! apart from it, and on command forgets it all, as a power cut does.
//!
//! The backing directory holds exactly what a disk would hold after a power cut at that
//! moment:
//!
//! - **file data**: a write goes to an in-memory overlay of its file (extents, a new length, a
//!   truncation); `fsync`/`fdatasync` of the file applies the overlay to the backing file.
//!   Reads see the backing file with the overlay on top, so programs see their own writes.
//!   Files are opened with `FOPEN_DIRECT_IO`: the kernel's page cache holds nothing that
//!   could outlive a cut.
//! - **names**: a create, mkdir, mknod, unlink, rmdir or rename is done on the backing
//!   directory at once, and an undo record is kept (a removed or replaced file is kept under a
//!   hard link in a stash) until every directory it touched has been synced (`fsync` of the
//!   directory). A cut undoes the records still kept, newest first.
//!
//! [`Mount::cut`] is the power cut: every later request fails, every process that used the
//! filesystem is killed (SIGKILL), the undo records are applied, the overlays dropped and the
//! filesystem unmounted. Mounting the backing directory again is the reboot.
//!
//! Not emulated (docs/reliability.md): a write is all or nothing (no torn sectors within one
//! write request: requests are at most 128 KiB); a cut drops *every* unsynced write (a real
//! disk may keep any subset of them); metadata-only changes (mode, times) are applied at once;
//! a name change touching two directories becomes durable only once both are synced.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

/// The stash of removed and replaced files, in the backing directory (hidden from the mount).
const STASH: &str = ".cutfs-stash";
const ROOT: u64 = fuser::FUSE_ROOT_ID;
/// No caching of names or attributes by the kernel: sizes come from the overlays.
const TTL: Duration = Duration::ZERO;

/// What a cut did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Processes killed (they had used the filesystem).
    pub killed: usize,
    /// Files whose unsynced writes were dropped.
    pub files_dropped: usize,
    /// Bytes of unsynced writes dropped.
    pub bytes_dropped: u64,
    /// Name changes undone (their directory was not synced).
    pub names_undone: usize,
    /// Undo records that could not be applied (should be 0).
    pub undo_errors: usize,
}

/// A mounted cutfs.
pub struct Mount {
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl Mount {
    /// Mounts `backing` at `mountpoint` (both directories must exist). A stash left by an
    /// interrupted earlier cut is emptied first. Needs root (or fusermount3) and /dev/fuse.
    pub fn new(backing: &Path, mountpoint: &Path) -> io::Result<Mount> {
        detach_cutfs_at(mountpoint);
        let stash = backing.join(STASH);
        if stash.exists() {
            fs::remove_dir_all(&stash)?;
        }
        fs::create_dir_all(&stash)?;
        let state = Arc::new(Mutex::new(State::new(backing.to_path_buf())));
        let fs = CutFs { state: state.clone() };
        let options = [MountOption::FSName("cutfs".into()), MountOption::NoAtime];
        let session = fuser::spawn_mount2(fs, mountpoint, &options)?;
        Ok(Mount { state, session: Some(session), mountpoint: mountpoint.to_path_buf() })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Bytes written and not yet synced, over all files.
    pub fn unsynced_bytes(&self) -> u64 {
        lock(&self.state).files.values().map(Dirty::bytes).sum()
    }

    /// Name changes whose directories are not synced yet.
    pub fn unsynced_names(&self) -> usize {
        lock(&self.state).undo.len()
    }

    /// The power cut: nothing more is served, the processes that used the filesystem are
    /// killed, what was not synced is forgotten, and the filesystem is unmounted.
    pub fn cut(mut self) -> CutReport {
        let report = lock(&self.state).cut();
        // Detached at once, even while the killed processes are still exiting (their requests
        // fail); a plain unmount would find it busy.
        detach_cutfs_at(&self.mountpoint);
        self.session.take();
        report
    }

    /// A clean unmount, as at shutdown: everything written is kept (the overlays are applied,
    /// the names kept).
    pub fn unmount(mut self) -> io::Result<()> {
        lock(&self.state).sync_everything()?;
        self.session.take();
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() {
            detach_cutfs_at(&self.mountpoint);
            self.session.take();
        }
    }
}

/// Lazily unmounts every cutfs mount at `mountpoint` (one left by an earlier cut or a crashed
/// test included); other filesystems are left alone.
fn detach_cutfs_at(mountpoint: &Path) {
    let Ok(want) = fs::canonicalize(mountpoint).or_else(|_| Ok::<_, io::Error>(mountpoint.to_path_buf()))
    else {
        return;
    };
    loop {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        // Fields: id parent major:minor root mountpoint options ... - fstype source superopts
        let ours = info.lines().any(|l| {
            let mut halves = l.split(" - ");
            let (Some(a), Some(b)) = (halves.next(), halves.next()) else { return false };
            let at = a.split(' ').nth(4).map(unescape_mountinfo);
            let mut tail = b.split(' ');
            let (fstype, source) = (tail.next(), tail.next());
            at.as_deref() == Some(want.as_os_str())
                && fstype.is_some_and(|t| t.starts_with("fuse"))
                && source == Some("cutfs")
        });
        if !ours {
            return;
        }
        let Ok(c) = cstr(&want) else { return };
        // SAFETY: a valid C string; umount2(2) touches no memory of ours.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return;
        }
    }
}

/// Mount points in /proc/self/mountinfo escape space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'\\')
            && let Some(oct) = b.get(i + 1..i + 4).and_then(|o| std::str::from_utf8(o).ok())
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.extend(b.get(i));
        i += 1;
    }
    OsString::from(std::ffi::OsStr::from_bytes(&out))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes to one file since its last sync.
#[derive(Debug, Default)]
struct Dirty {
    /// Written bytes by offset; extents never overlap.
    extents: BTreeMap<u64, Vec<u8>>,
    /// The file's length now, if it changed.
    len: Option<u64>,
    /// The smallest length it was truncated to: backing bytes from here on read as zeros.
    truncated: Option<u64>,
}

impl Dirty {
    fn bytes(&self) -> u64 {
        self.extents.values().map(|e| e.len() as u64).sum()
    }

    fn write(&mut self, offset: u64, data: &[u8], old_len: u64) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // Merge with every extent that overlaps or touches [offset, end).
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .filter(|(start, e)| **start + e.len() as u64 >= offset)
            .map(|(start, _)| *start)
            .collect();
        let mut start = offset;
        let mut stop = end;
        for s in &touching {
            let len = self.extents.get(s).map_or(0, |e| e.len() as u64);
            start = start.min(*s);
            stop = stop.max(s + len);
        }
        let mut merged = vec![0u8; usize::try_from(stop - start).unwrap_or(0)];
        for s in touching {
            if let Some(e) = self.extents.remove(&s) {
                let at = usize::try_from(s - start).unwrap_or(0);
                if let Some(dst) = merged.get_mut(at..at + e.len()) {
                    dst.copy_from_slice(&e);
                }
            }
        }
        let at = usize::try_from(offset - start).unwrap_or(0);
        if let Some(dst) = merged.get_mut(at..at + data.len()) {
            dst.copy_from_slice(data);
        }
        self.extents.insert(start, merged);
        self.len = Some(old_len.max(end));
    }

    fn truncate(&mut self, len: u64) {
        let starts: Vec<u64> = self.extents.range(..).map(|(s, _)| *s).collect();
        for s in starts {
            if s >= len {
                self.extents.remove(&s);
            } else if let Some(e) = self.extents.get_mut(&s) {
                e.truncate(usize::try_from(len - s).unwrap_or(usize::MAX));
            }
        }
        self.truncated = Some(self.truncated.map_or(len, |t| t.min(len)));
        self.len = Some(len);
    }

    /// The file's bytes [offset, offset+size) given the backing file `base` of length
    /// `base_len`.
    fn read(&self, base: &File, base_len: u64, offset: u64, size: u64) -> io::Result<Vec<u8>> {
        let len = self.len.unwrap_or(base_len);
        if offset >= len {
            return Ok(Vec::new());
        }
        let end = len.min(offset + size);
        let mut out = vec![0u8; usize::try_from(end - offset).unwrap_or(0)];
        // Backing bytes still valid: below the base length and below any truncation.
        let valid = base_len.min(self.truncated.unwrap_or(u64::MAX));
        if offset < valid {
            let n = usize::try_from(valid.min(end) - offset).unwrap_or(0);
            if let Some(buf) = out.get_mut(..n) {
                read_full(base, buf, offset)?;
            }
        }
        for (s, e) in self.extents.range(..end) {
            let e_end = s + e.len() as u64;
            if e_end <= offset {
                continue;
            }
            let from = offset.max(*s);
            let to = end.min(e_end);
            let src = e.get(usize::try_from(from - s).unwrap_or(0)..usize::try_from(to - s).unwrap_or(0));
            let dst = out.get_mut(
                usize::try_from(from - offset).unwrap_or(0)..usize::try_from(to - offset).unwrap_or(0),
            );
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
        }
        Ok(out)
    }

    /// Makes the backing file hold what was written: the sync.
    fn apply(&self, file: &File) -> io::Result<()> {
        if let Some(t) = self.truncated {
            file.set_len(t)?;
        }
        for (s, e) in &self.extents {
            file.write_all_at(e, *s)?;
        }
        if let Some(len) = self.len {
            file.set_len(len)?;
        }
        Ok(())
    }
}

fn read_full(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => break,
            Ok(n) => {
                buf = buf.get_mut(n..).unwrap_or_default();
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A name change not yet durable, and how to take it back.
#[derive(Debug)]
enum Undo {
    /// A file, node or directory created at `path`.
    Created { path: PathBuf, dir: bool },
    /// The file or directory at `path` removed; it waits in the stash at `stash`.
    Removed { path: PathBuf, stash: PathBuf },
    /// `from` renamed to `to`; what `to` named before waits at `replaced`.
    Renamed { from: PathBuf, to: PathBuf, replaced: Option<PathBuf> },
}

#[derive(Debug)]
struct Pending {
    undo: Undo,
    /// Directories (relative paths) still to be synced before it is durable.
    dirs: Vec<PathBuf>,
}

struct Node {
    /// Relative path in the backing directory; `None` once removed (still open).
    path: Option<PathBuf>,
}

struct Handle {
    ino: u64,
    file: File,
}

struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    files: HashMap<u64, Dirty>,
    undo: Vec<Pending>,
    stash_seq: u64,
    /// Thread ids of every caller, for the cut.
    callers: HashSet<u32>,
    cut: bool,
}

impl State {
    fn new(backing: PathBuf) -> State {
        let mut s = State {
            backing,
            nodes: HashMap::new(),
            by_path: HashMap::new(),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            files: HashMap::new(),
            undo: Vec::new(),
            stash_seq: 0,
            callers: HashSet::new(),
            cut: false,
        };
        s.nodes.insert(ROOT, Node { path: Some(PathBuf::new()) });
        s.by_path.insert(PathBuf::new(), ROOT);
        s
    }

    fn real(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn path_of(&self, ino: u64) -> Result<PathBuf, i32> {
        self.nodes.get(&ino).and_then(|n| n.path.clone()).ok_or(libc::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, i32> {
        if parent == ROOT && name == OsStr::new(STASH) {
            return Err(libc::ENOENT);
        }
        Ok(self.path_of(parent)?.join(name))
    }

    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(i) = self.by_path.get(rel) {
            return *i;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node { path: Some(rel.to_path_buf()) });
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    fn attr(&self, ino: u64, meta: &fs::Metadata) -> FileAttr {
        let kind = kind_of(meta.file_type());
        let size = self.files.get(&ino).and_then(|d| d.len).unwrap_or(meta.len());
        let t = |secs: i64, nsecs: i64| {
            UNIX_EPOCH + Duration::new(u64::try_from(secs).unwrap_or(0), u32::try_from(nsecs).unwrap_or(0))
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t(meta.atime(), meta.atime_nsec()),
            mtime: t(meta.mtime(), meta.mtime_nsec()),
            ctime: t(meta.ctime(), meta.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm: u16::try_from(meta.mode() & 0o7777).unwrap_or(0o644),
            nlink: u32::try_from(meta.nlink()).unwrap_or(1),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: u32::try_from(meta.rdev()).unwrap_or(0),
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of `ino`: from its path, or (removed but open) from a handle.
    fn getattr(&self, ino: u64) -> Result<FileAttr, i32> {
        let meta = match self.nodes.get(&ino).and_then(|n| n.path.clone()) {
            Some(p) => fs::symlink_metadata(self.real(&p)).map_err(errno)?,
            None => self
                .handles
                .values()
                .find(|h| h.ino == ino)
                .ok_or(libc::ENOENT)?
                .file
                .metadata()
                .map_err(errno)?,
        };
        Ok(self.attr(ino, &meta))
    }

    fn entry(&mut self, rel: &Path) -> Result<FileAttr, i32> {
        let meta = fs::symlink_metadata(self.real(rel)).map_err(errno)?;
        let ino = self.ino_for(rel);
        Ok(self.attr(ino, &meta))
    }

    fn stash_path(&mut self) -> PathBuf {
        self.stash_seq += 1;
        PathBuf::from(STASH).join(self.stash_seq.to_string())
    }

    fn record(&mut self, undo: Undo, dirs: Vec<PathBuf>) {
        self.undo.push(Pending { undo, dirs });
    }

    /// A path now names another object (or nothing): its inode is forgotten.
    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.by_path.remove(rel)
            && let Some(n) = self.nodes.get_mut(&ino)
        {
            n.path = None;
        }
    }

    /// `from` (and everything under it) is now called `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        let affected: Vec<(PathBuf, u64)> =
            self.by_path.iter().filter(|(p, _)| p.starts_with(from)).map(|(p, i)| (p.clone(), *i)).collect();
        for (p, ino) in affected {
            self.by_path.remove(&p);
            let rest = p.strip_prefix(from).map(Path::to_path_buf).unwrap_or_default();
            let new = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            self.by_path.insert(new.clone(), ino);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.path = Some(new);
            }
        }
    }

    fn dirty(&mut self, ino: u64) -> &mut Dirty {
        self.files.entry(ino).or_default()
    }

    fn sync_file(&mut self, ino: u64, fh: Option<u64>) -> Result<(), i32> {
        let Some(d) = self.files.remove(&ino) else { return Ok(()) };
        let result = match fh
            .and_then(|fh| self.handles.get(&fh))
            .or_else(|| self.handles.values().find(|h| h.ino == ino))
        {
            Some(h) => d.apply(&h.file),
            None => match self.nodes.get(&ino).and_then(|n| n.path.clone()) {
                Some(p) => OpenOptions::new().write(true).open(self.real(&p)).and_then(|f| d.apply(&f)),
                None => Ok(()), // removed and closed: nothing can read it any more
            },
        };
        result.map_err(errno)
    }

    fn sync_dir(&mut self, rel: &Path) {
        for p in &mut self.undo {
            p.dirs.retain(|d| d != rel);
        }
        let (durable, kept): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.undo).into_iter().partition(|p| p.dirs.is_empty());
        self.undo = kept;
        for p in durable {
            let stashed = match p.undo {
                Undo::Removed { stash, .. } => Some(stash),
                Undo::Renamed { replaced, .. } => replaced,
                Undo::Created { .. } => None,
            };
            if let Some(s) = stashed {
                let real = self.real(&s);
                let _ = fs::remove_dir_all(&real).or_else(|_| fs::remove_file(&real));
            }
        }
    }

    fn sync_everything(&mut self) -> io::Result<()> {
        let inos: Vec<u64> = self.files.keys().copied().collect();
        for ino in inos {
            self.sync_file(ino, None).map_err(io::Error::from_raw_os_error)?;
        }
        let dirs: Vec<PathBuf> = self.undo.iter().flat_map(|p| p.dirs.clone()).collect();
        for d in dirs {
            self.sync_dir(&d);
        }
        Ok(())
    }

    fn cut(&mut self) -> CutReport {
        self.cut = true;
        let mut report = CutReport::default();
        // Kill the callers first, so nothing is written meanwhile (our own threads excepted:
        // a test that looked at the mount is not a victim).
        let own: HashSet<u32> = fs::read_dir("/proc/self/task")
            .map(|d| {
                d.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
            })
            .unwrap_or_default();
        for tid in self.callers.drain() {
            // 0 is a request the kernel made itself (kill(0) would signal our process group).
            if tid <= 1 || own.contains(&tid) {
                continue;
            }
            let Ok(pid) = libc::pid_t::try_from(tid) else { continue };
            // SAFETY: kill(2) with a thread id signals its whole process; no memory is shared.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                report.killed += 1;
            }
        }
        report.files_dropped = self.files.len();
        report.bytes_dropped = self.files.values().map(Dirty::bytes).sum();
        self.files.clear();
        while let Some(p) = self.undo.pop() {
            report.names_undone += 1;
            let ok = match p.undo {
                Undo::Created { path, dir } => {
                    let real = self.real(&path);
                    if dir { fs::remove_dir_all(&real) } else { fs::remove_file(&real) }
                }
                Undo::Removed { path, stash } => fs::rename(self.real(&stash), self.real(&path)),
                Undo::Renamed { from, to, replaced } => fs::rename(self.real(&to), self.real(&from))
                    .and_then(|()| match replaced {
                        Some(s) => fs::rename(self.real(&s), self.real(&to)),
                        None => Ok(()),
                    }),
            };
            if ok.is_err() {
                report.undo_errors += 1;
            }
        }
        let _ = fs::remove_dir_all(self.backing.join(STASH));
        report
    }
}

fn kind_of(t: fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_socket() {
        FileType::Socket
    } else if t.is_fifo() {
        FileType::NamedPipe
    } else if t.is_char_device() {
        FileType::CharDevice
    } else if t.is_block_device() {
        FileType::BlockDevice
    } else {
        FileType::RegularFile
    }
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn cstr(p: &Path) -> Result<std::ffi::CString, i32> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)
}

/// The FUSE side: every request takes the state's lock, so a cut is atomic with respect to
/// them.
struct CutFs {
    state: Arc<Mutex<State>>,
}

impl CutFs {
    /// The state for a request: none once cut (the request fails with EIO).
    fn begin(&self, req: &Request<'_>) -> Result<MutexGuard<'_, State>, i32> {
        let mut s = lock(&self.state);
        if s.cut {
            return Err(libc::EIO);
        }
        s.callers.insert(req.pid());
        Ok(s)
    }
}

macro_rules! tri {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => {
                $reply.error(code);
                return;
            }
        }
    };
}

impl Filesystem for CutFs {
    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.child(parent, name));
        let attr = tri!(reply, s.entry(&rel));
        reply.entry(&TTL, &attr, 0);
    }

    fn getattr(&mut self, req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let s = tri!(reply, self.begin(req));
        let attr = tri!(reply, s.getattr(ino));
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = tri!(reply, self.begin(req));
        let path = s.nodes.get(&ino).and_then(|n| n.path.clone()).map(|p| s.real(&p));
        if let Some(mode) = mode
            && let Some(p) = &path
        {
            tri!(reply, fs::set_permissions(p, fs::Permissions::from_mode(mode & 0o7777)).map_err(errno));
        }
        if (uid.is_some() || gid.is_some())
            && let Some(p) = &path
        {
            tri!(reply, std::os::unix::fs::lchown(p, uid, gid).map_err(errno));
        }
        if let Some(size) = size {
            s.dirty(ino).truncate(size);
        }
        let _ = (atime, mtime); // times are not tracked: applied by nobody, read from the backing file
        let attr = tri!(reply, s.getattr(ino));
        reply.attr(&TTL, &attr);
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.child(parent, name));
        let parent_rel = tri!(reply, s.path_of(parent));
        let c = tri!(reply, cstr(&s.real(&rel)));
        // SAFETY: a valid C string; mknod(2) touches no memory of ours.
        if unsafe { libc::mknod(c.as_ptr(), mode & !umask, libc::dev_t::from(rdev)) } != 0 {
            reply.error(errno(io::Error::last_os_error()));
            return;
        }
        s.record(Undo::Created { path: rel.clone(), dir: false }, vec![parent_rel]);
        let attr = tri!(reply, s.entry(&rel));
        reply.entry(&TTL, &attr, 0);
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.child(parent, name));
        let parent_rel = tri!(reply, s.path_of(parent));
        tri!(reply, fs::create_dir(s.real(&rel)).map_err(errno));
        let _ = fs::set_permissions(s.real(&rel), fs::Permissions::from_mode(mode & !umask & 0o7777));
        s.record(Undo::Created { path: rel.clone(), dir: true }, vec![parent_rel]);
        let attr = tri!(reply, s.entry(&rel));
        reply.entry(&TTL, &attr, 0);
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.child(parent, name));
        let parent_rel = tri!(reply, s.path_of(parent));
        let stash = s.stash_path();
        tri!(reply, fs::hard_link(s.real(&rel), s.real(&stash)).map_err(errno));
        if let Err(e) = fs::remove_file(s.real(&rel)) {
            let _ = fs::remove_file(s.real(&stash));
            reply.error(errno(e));
            return;
        }
        s.forget_path(&rel);
        s.record(Undo::Removed { path: rel, stash }, vec![parent_rel]);
        reply.ok();
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.child(parent, name));
        let parent_rel = tri!(reply, s.path_of(parent));
        let real = s.real(&rel);
        let empty = tri!(reply, fs::read_dir(&real).map_err(errno)).next().is_none();
        if !empty {
            reply.error(libc::ENOTEMPTY);
            return;
        }
        let stash = s.stash_path();
        tri!(reply, fs::rename(&real, s.real(&stash)).map_err(errno));
        s.forget_path(&rel);
        s.record(Undo::Removed { path: rel, stash }, vec![parent_rel]);
        reply.ok();
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            reply.error(libc::EINVAL); // RENAME_NOREPLACE / EXCHANGE: not needed by our programs
            return;
        }
        let mut s = tri!(reply, self.begin(req));
        let from = tri!(reply, s.child(parent, name));
        let to = tri!(reply, s.child(newparent, newname));
        let dirs = {
            let a = tri!(reply, s.path_of(parent));
            let b = tri!(reply, s.path_of(newparent));
            if a == b { vec![a] } else { vec![a, b] }
        };
        let replaced = match fs::symlink_metadata(s.real(&to)) {
            Ok(meta) => {
                let stash = s.stash_path();
                let r = if meta.is_dir() {
                    fs::rename(s.real(&to), s.real(&stash))
                } else {
                    fs::hard_link(s.real(&to), s.real(&stash))
                };
                tri!(reply, r.map_err(errno));
                Some(stash)
            }
            Err(_) => None,
        };
        if let Err(e) = fs::rename(s.real(&from), s.real(&to)) {
            if let Some(st) = &replaced
                && !s.real(&to).exists()
            {
                let _ = fs::rename(s.real(st), s.real(&to));
            }
            reply.error(errno(e));
            return;
        }
        s.forget_path(&to);
        s.moved(&from, &to);
        s.record(Undo::Renamed { from, to, replaced }, dirs);
        reply.ok();
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.path_of(ino));
        let real = s.real(&rel);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&real)
            .or_else(|_| OpenOptions::new().read(true).open(&real));
        let file = tri!(reply, file.map_err(errno));
        if flags & libc::O_TRUNC != 0 {
            s.dirty(ino).truncate(0);
        }
        let fh = s.next_fh;
        s.next_fh += 1;
        s.handles.insert(fh, Handle { ino, file });
        reply.opened(fh, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.child(parent, name));
        let parent_rel = tri!(reply, s.path_of(parent));
        let real = s.real(&rel);
        let existed = real.exists();
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            opts.create_new(true);
        }
        let file = tri!(reply, opts.open(&real).map_err(errno));
        if !existed {
            s.record(Undo::Created { path: rel.clone(), dir: false }, vec![parent_rel]);
        }
        let attr = tri!(reply, s.entry(&rel));
        if flags & libc::O_TRUNC != 0 {
            s.dirty(attr.ino).truncate(0);
        }
        let fh = s.next_fh;
        s.next_fh += 1;
        s.handles.insert(fh, Handle { ino: attr.ino, file });
        let attr = tri!(reply, s.getattr(attr.ino));
        reply.created(&TTL, &attr, 0, fh, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn read(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let s = tri!(reply, self.begin(req));
        let h = tri!(reply, s.handles.get(&fh).ok_or(libc::EBADF));
        let base_len = tri!(reply, h.file.metadata().map_err(errno)).len();
        let offset = tri!(reply, u64::try_from(offset).map_err(|_| libc::EINVAL));
        let empty = Dirty::default();
        let d = s.files.get(&ino).unwrap_or(&empty);
        let data = tri!(reply, d.read(&h.file, base_len, offset, u64::from(size)).map_err(errno));
        reply.data(&data);
    }

    fn write(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = tri!(reply, self.begin(req));
        let h = tri!(reply, s.handles.get(&fh).ok_or(libc::EBADF));
        let base_len = tri!(reply, h.file.metadata().map_err(errno)).len();
        let len = s.files.get(&ino).and_then(|d| d.len).unwrap_or(base_len);
        let offset = if flags & libc::O_APPEND != 0 {
            len
        } else {
            tri!(reply, u64::try_from(offset).map_err(|_| libc::EINVAL))
        };
        s.dirty(ino).write(offset, data, len);
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            tri!(reply, s.sync_file(ino, Some(fh)));
        }
        reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX));
    }

    fn flush(&mut self, req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        let _s = tri!(reply, self.begin(req));
        reply.ok(); // close(2) makes nothing durable
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = lock(&self.state);
        let Some(h) = s.handles.remove(&fh) else {
            reply.ok();
            return;
        };
        // The last handle of a removed file: its unsynced writes can never be read again.
        let removed = s.nodes.get(&h.ino).is_some_and(|n| n.path.is_none());
        if removed && !s.handles.values().any(|o| o.ino == h.ino) {
            s.files.remove(&h.ino);
        }
        reply.ok();
    }

    fn fsync(&mut self, req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut s = tri!(reply, self.begin(req));
        tri!(reply, s.sync_file(ino, Some(fh)));
        reply.ok();
    }

    fn opendir(&mut self, req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let s = tri!(reply, self.begin(req));
        tri!(reply, s.path_of(ino));
        reply.opened(0, 0);
    }

    fn readdir(&mut self, req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.path_of(ino));
        let mut entries: Vec<(u64, FileType, OsString)> =
            vec![(ino, FileType::Directory, ".".into()), (ino, FileType::Directory, "..".into())];
        let read = tri!(reply, fs::read_dir(s.real(&rel)).map_err(errno));
        let mut names: Vec<(OsString, FileType)> = read
            .flatten()
            .filter(|e| !(ino == ROOT && e.file_name() == OsStr::new(STASH)))
            .map(|e| (e.file_name(), e.file_type().map(kind_of).unwrap_or(FileType::RegularFile)))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names {
            let child = s.ino_for(&rel.join(&name));
            entries.push((child, kind, name));
        }
        let skip = usize::try_from(offset).unwrap_or(0);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(ino, i64::try_from(i + 1).unwrap_or(i64::MAX), kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut s = tri!(reply, self.begin(req));
        let rel = tri!(reply, s.path_of(ino));
        s.sync_dir(&rel);
        reply.ok();
    }

    fn statfs(&mut self, req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let s = tri!(reply, self.begin(req));
        let c = tri!(reply, cstr(&s.backing));
        // SAFETY: statvfs(2) fills the struct we pass; zeroed is a valid initial value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a valid out pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            reply.error(errno(io::Error::last_os_error()));
            return;
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            u32::try_from(st.f_bsize).unwrap_or(4096),
            u32::try_from(st.f_namemax).unwrap_or(255),
            u32::try_from(st.f_frsize).unwrap_or(4096),
        );
    }

    fn access(&mut self, req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        let s = tri!(reply, self.begin(req));
        tri!(reply, s.path_of(ino));
        reply.ok();
    }
}
