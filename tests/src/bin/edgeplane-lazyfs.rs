//! `edgeplane-lazyfs BACKING MOUNTPOINT`: a FUSE passthrough
//! that can lose what was never fsynced, as a power cut does (the idea of
//! LazyFS, in a few hundred lines).
//!
//! A SIGKILL leaves the page cache intact, so a test that kills etcd never
//! sees a missing fsync. Here every write goes through to `BACKING` at once
//! (so readers, bbolt's mmap included, see it), but the bytes it overwrote
//! and the length the file had are kept in memory until the file is fsynced
//! (`fsync`, `fdatasync`, or a write through an `O_SYNC`/`O_DSYNC` handle).
//!
//! - SIGUSR1 is the power cut: unmount, then put back every page and length
//!   not fsynced since it changed, exit 0. Stop every process that uses the
//!   mount first (they are "off" too). stderr says what was dropped.
//! - SIGTERM or SIGINT is a clean stop: unmount and keep everything.
//! - SIGUSR2: from now on fsync returns success and forgets nothing, as on
//!   a disk whose volatile write cache ignores flushes: the next power cut
//!   puts every file back as it was at this signal. A test proves with it
//!   that its check sees lost writes.
//!
//! File data only, like LazyFS's default: creating, renaming and removing
//! files and directories are durable at once (no directory fsync is
//! modelled). Needs root (it mounts with the mount syscall and
//! `allow_other`, so agents started with another group id may use it).
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::libc;

const PAGE: u64 = 4096;
const TTL: Duration = Duration::from_secs(1);

/// What a file looked like when it was last fsynced, for the bytes changed
/// since: its length then and the pre-image of every page written over.
#[derive(Debug, Default)]
struct Unsynced {
    synced_len: u64,
    /// Page index -> its bytes at the last fsync (up to `synced_len`).
    pages: BTreeMap<u64, Vec<u8>>,
}

impl Unsynced {
    fn new(synced_len: u64) -> Self {
        Unsynced {
            synced_len,
            pages: BTreeMap::new(),
        }
    }

    /// Keeps the pre-image of every page of `[off, off + len)` that lies
    /// below the synced length and is not kept yet. Call before changing
    /// those bytes.
    fn save(&mut self, file: &File, off: u64, len: u64) -> io::Result<()> {
        let end = off.saturating_add(len).min(self.synced_len);
        if off >= end {
            return Ok(());
        }
        let mut page = off / PAGE;
        while page * PAGE < end {
            if let std::collections::btree_map::Entry::Vacant(v) = self.pages.entry(page) {
                let start = page * PAGE;
                let stop = (start + PAGE).min(self.synced_len);
                let mut buf = vec![0u8; (stop - start) as usize];
                let mut got = 0;
                while got < buf.len() {
                    match file.read_at(&mut buf[got..], start + got as u64)? {
                        0 => break, // past the end: the rest reads as zeros
                        n => got += n,
                    }
                }
                v.insert(buf);
            }
            page += 1;
        }
        Ok(())
    }

    /// The power cut: the file as it was at its last fsync. Returns the
    /// bytes put back and the bytes cut off its end.
    fn restore(&self, file: &File) -> io::Result<(u64, u64)> {
        let len = file.metadata()?.len();
        let mut put_back = 0;
        for (page, bytes) in &self.pages {
            file.write_all_at(bytes, page * PAGE)?;
            put_back += bytes.len() as u64;
        }
        file.set_len(self.synced_len)?;
        file.sync_all()?;
        Ok((put_back, len.saturating_sub(self.synced_len)))
    }
}

struct Open {
    ino: u64,
    file: File,
    /// Opened `O_SYNC` or `O_DSYNC`: each write is durable when it returns.
    sync_writes: bool,
}

struct State {
    fsync_lies: bool,
    /// The power is cut (or the disk stopped): every request that would
    /// look a file up, change one or sync one fails with EIO from now on.
    off: bool,
    /// Backing `(st_dev, st_ino)` -> FUSE inode, numbered from 2 (the root
    /// is 1); never reused, so a backing inode number the file system
    /// reuses after an unlink gets a new one. `st_dev` too, because a tmpfs
    /// mounted inside the backing directory has inodes of its own.
    inos: HashMap<(u64, u64), u64>,
    keys: HashMap<u64, (u64, u64)>,
    next_ino: u64,
    /// FUSE inode -> backing path.
    paths: HashMap<u64, PathBuf>,
    files: HashMap<u64, Open>,
    dirs: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    unsynced: HashMap<u64, Unsynced>,
    next_fh: u64,
}

impl State {
    fn ino_of(&mut self, m: &Metadata) -> u64 {
        let key = (m.dev(), m.ino());
        if let Some(ino) = self.inos.get(&key) {
            return *ino;
        }
        self.next_ino += 1;
        self.inos.insert(key, self.next_ino);
        self.keys.insert(self.next_ino, key);
        self.next_ino
    }

    /// Removes `path` (a directory when `dir`) from the backing directory,
    /// and forgets what it knew of it; a file another hard link still
    /// holds keeps its number.
    fn remove(&mut self, path: PathBuf, dir: bool) -> Result<(), Errno> {
        let m = std::fs::symlink_metadata(&path)?;
        let ino = self.ino_of(&m);
        if dir {
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        if dir || m.nlink() <= 1 {
            self.gone(ino);
        } else if self.paths.get(&ino) == Some(&path) {
            self.paths.remove(&ino);
        }
        Ok(())
    }

    /// `ino` is gone from the backing directory: forget its number, its
    /// path and its unsynced data.
    fn gone(&mut self, ino: u64) {
        if let Some(key) = self.keys.remove(&ino) {
            self.inos.remove(&key);
        }
        self.paths.remove(&ino);
        self.unsynced.remove(&ino);
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// Looks `path` up: its attributes, and its inode remembered.
    fn entry(&mut self, path: PathBuf) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(&path)?;
        let ino = self.ino_of(&m);
        self.paths.insert(ino, path);
        Ok(attr(ino, &m))
    }

    fn open(&mut self, ino: u64, file: File, flags: i32) -> u64 {
        self.next_fh += 1;
        let sync_writes = flags & (libc::O_SYNC | libc::O_DSYNC) != 0;
        self.files.insert(
            self.next_fh,
            Open {
                ino,
                file,
                sync_writes,
            },
        );
        self.next_fh
    }

    /// Before `[off, off + len)` of `fh`'s file changes.
    fn before_change(&mut self, fh: u64, off: u64, len: u64) -> Result<(), Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        let open = self.files.get(&fh).ok_or(Errno::EBADF)?;
        let u = match self.unsynced.entry(open.ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Unsynced::new(open.file.metadata()?.len()))
            }
        };
        u.save(&open.file, off, len)?;
        Ok(())
    }

    fn synced(&mut self, fh: u64, datasync: bool) -> Result<(), Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        let open = self.files.get(&fh).ok_or(Errno::EBADF)?;
        if datasync {
            open.file.sync_data()?;
        } else {
            open.file.sync_all()?;
        }
        if !self.fsync_lies {
            let ino = open.ino;
            self.unsynced.remove(&ino);
        }
        Ok(())
    }

    /// The power cut, after the unmount: every file back to its last fsync.
    fn drop_unsynced(&mut self) -> String {
        let (mut files, mut put_back, mut cut, mut failed) = (0, 0, 0, Vec::new());
        for (ino, u) in std::mem::take(&mut self.unsynced) {
            let Some(path) = self.paths.get(&ino) else {
                continue; // removed: nothing to put back
            };
            let same = std::fs::symlink_metadata(path)
                .is_ok_and(|m| self.keys.get(&ino) == Some(&(m.dev(), m.ino())));
            if !same {
                continue;
            }
            match OpenOptions::new()
                .write(true)
                .read(true)
                .open(path)
                .and_then(|f| u.restore(&f))
            {
                Ok((p, c)) => {
                    files += 1;
                    put_back += p;
                    cut += c;
                }
                Err(e) => failed.push(format!("{}: {e}", path.display())),
            }
        }
        let mut s = format!(
            "power cut: the unsynced data of {files} file(s) dropped: {put_back} byte(s) put back as they were, {cut} byte(s) cut off their ends"
        );
        if !failed.is_empty() {
            s.push_str(&format!("; FAILED for {}", failed.join(", ")));
        }
        s
    }
}

fn kind(ft: std::fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_fifo() {
        FileType::NamedPipe
    } else if ft.is_socket() {
        FileType::Socket
    } else if ft.is_block_device() {
        FileType::BlockDevice
    } else if ft.is_char_device() {
        FileType::CharDevice
    } else {
        FileType::RegularFile
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32)
}

fn attr(ino: u64, m: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind(m.file_type()),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

/// Open flags for the backing file: the access mode (always readable, to
/// keep pre-images) and what changes durability; the kernel handled
/// create, truncate and append already.
fn backing_options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true)
        .write(flags & libc::O_ACCMODE != libc::O_RDONLY);
    o.custom_flags(flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME));
    o
}

struct LazyFs(Arc<Mutex<State>>);

impl LazyFs {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Replies to a request that answers nothing but success or an errno.
fn answer(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn to_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.state();
        match s.child(parent, name).and_then(|p| s.entry(p)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.state();
        let m = match fh.and_then(|fh| s.files.get(&fh.0)) {
            Some(open) => open.file.metadata().map_err(Errno::from),
            None => s
                .path(ino)
                .and_then(|p| std::fs::symlink_metadata(p).map_err(Errno::from)),
        };
        match m {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let r = (|| -> Result<Metadata, Errno> {
            let path = s.path(ino)?;
            if let Some(size) = size {
                // A handle of our own for the truncate when the kernel gave
                // none, so its pre-image is kept all the same.
                let own = match fh {
                    Some(fh) if s.files.contains_key(&fh.0) => None,
                    _ => {
                        let f = OpenOptions::new().read(true).write(true).open(&path)?;
                        Some(s.open(ino.0, f, 0))
                    }
                };
                let fh = own.or(fh.map(|f| f.0)).ok_or(Errno::EBADF)?;
                let old = s.files[&fh].file.metadata()?.len();
                let r = s
                    .before_change(fh, size.min(old), old.saturating_sub(size))
                    .and_then(|()| Ok(s.files[&fh].file.set_len(size)?));
                if let Some(own) = own {
                    s.files.remove(&own);
                }
                r?;
            }
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid)?;
            }
            if atime.is_some() || mtime.is_some() {
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(to_time(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(to_time(t));
                }
                File::open(&path)?.set_times(times)?;
            }
            Ok(std::fs::symlink_metadata(&path)?)
        })();
        match r {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let r = s.child(parent, name).and_then(|p| {
            std::fs::create_dir(&p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & !umask & 0o7777))?;
            s.entry(p)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.state();
        answer(
            reply,
            s.child(parent, name).and_then(|p| s.remove(p, false)),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.state();
        answer(reply, s.child(parent, name).and_then(|p| s.remove(p, true)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let r = (|| -> Result<(), Errno> {
            // RENAME_NOREPLACE (tempfile's persist_noclobber): the check and
            // the rename are one step here, under the lock.
            let noreplace = fuser::RenameFlags::RENAME_NOREPLACE;
            if !(flags - noreplace).is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = s.child(parent, name)?;
            let to = s.child(newparent, newname)?;
            if flags.contains(noreplace) && std::fs::symlink_metadata(&to).is_ok() {
                return Err(Errno::EEXIST);
            }
            std::fs::rename(&from, &to)?;
            // The replaced target is gone; everything under `from` moved.
            let gone: Vec<u64> = s
                .paths
                .iter()
                .filter(|(_, p)| **p == to)
                .map(|(i, _)| *i)
                .collect();
            for ino in gone {
                s.gone(ino);
            }
            for p in s.paths.values_mut() {
                if let Ok(rest) = p.strip_prefix(&from) {
                    *p = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                }
            }
            Ok(())
        })();
        answer(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        let r = s
            .path(ino)
            .and_then(|p| Ok(backing_options(flags.0).open(p)?));
        match r {
            Ok(f) => {
                let fh = s.open(ino.0, f, flags.0);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.state();
        let r = (|| -> Result<(FileAttr, u64), Errno> {
            let path = s.child(parent, name)?;
            let existed = std::fs::symlink_metadata(&path).is_ok();
            let mut o = backing_options(flags);
            o.create(true).mode(mode & !umask & 0o7777);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
            o.write(true); // create needs a writable open
            let f = o.open(&path)?;
            let a = s.entry(path)?;
            if !existed {
                // A new file: none of its data was ever synced.
                s.unsynced.insert(a.ino.0, Unsynced::new(0));
            }
            let fh = s.open(a.ino.0, f, flags);
            if flags & libc::O_TRUNC != 0 && existed {
                let len = s.files[&fh].file.metadata()?.len();
                s.before_change(fh, 0, len)?;
                s.files[&fh].file.set_len(0)?;
            }
            Ok((a, fh))
        })();
        match r {
            Ok((a, fh)) => {
                reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.state();
        let Some(open) = s.files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match open.file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(e.into()),
            }
        }
        reply.data(&buf[..got]);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.state();
        let r = (|| -> Result<(), Errno> {
            s.before_change(fh.0, offset, data.len() as u64)?;
            let open = s.files.get(&fh.0).ok_or(Errno::EBADF)?;
            open.file.write_all_at(data, offset)?;
            if open.sync_writes {
                s.synced(fh.0, true)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        answer(reply, self.state().synced(fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        let r = (|| -> Result<Vec<(u64, FileType, OsString)>, Errno> {
            let path = s.path(ino)?;
            let mut out = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (ino.0, FileType::Directory, OsString::from("..")),
            ];
            for e in std::fs::read_dir(&path)? {
                let e = e?;
                let m = e.metadata()?;
                let ino = s.ino_of(&m);
                out.push((ino, kind(m.file_type()), e.file_name()));
            }
            Ok(out)
        })();
        match r {
            Ok(entries) => {
                s.next_fh += 1;
                let fh = s.next_fh;
                s.dirs.insert(fh, entries);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.state();
        let Some(entries) = s.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.state().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.state().path(ino);
        answer(
            reply,
            r.and_then(|p| Ok(File::open(p).and_then(|f| f.sync_all())?)),
        );
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        // The file system the backing path is on (a tmpfs mounted inside
        // the backing directory reports its own size).
        let path = match self.state().path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match nix::sys::statvfs::statvfs(&path) {
            Ok(v) => reply.statfs(
                v.blocks(),
                v.blocks_free(),
                v.blocks_available(),
                v.files(),
                v.files_free(),
                v.block_size() as u32,
                v.name_max() as u32,
                v.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let r = (|| -> Result<(), Errno> {
            s.before_change(fh.0, offset, length)?;
            let open = s.files.get(&fh.0).ok_or(Errno::EBADF)?;
            nix::fcntl::fallocate(
                &open.file,
                nix::fcntl::FallocateFlags::from_bits_truncate(mode),
                offset as libc::off_t,
                length as libc::off_t,
            )
            .map_err(|e| Errno::from_i32(e as i32))
        })();
        answer(reply, r);
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("edgeplane-lazyfs: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let usage = || io::Error::other("usage: edgeplane-lazyfs BACKING MOUNTPOINT");
    let mut args = std::env::args_os().skip(1);
    let backing = PathBuf::from(args.next().ok_or_else(usage)?);
    let mountpoint = PathBuf::from(args.next().ok_or_else(usage)?);
    if args.next().is_some() {
        return Err(usage());
    }
    let root = std::fs::metadata(&backing)?;
    let root_key = (root.dev(), root.ino());
    let state = Arc::new(Mutex::new(State {
        fsync_lies: false,
        off: false,
        inos: HashMap::from([(root_key, INodeNo::ROOT.0)]),
        keys: HashMap::from([(INodeNo::ROOT.0, root_key)]),
        next_ino: INodeNo::ROOT.0,
        paths: HashMap::from([(INodeNo::ROOT.0, backing.clone())]),
        files: HashMap::new(),
        dirs: HashMap::new(),
        unsynced: HashMap::new(),
        next_fh: 0,
    }));
    // Signals wait here; the session's threads inherit the mask.
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGTERM,
        Signal::SIGINT,
    ] {
        set.add(s);
    }
    set.thread_block().map_err(io::Error::from)?;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName(format!("lazyfs:{}", backing.display())),
        fuser::MountOption::Subtype("edgeplane-lazyfs".into()),
    ];
    cfg.acl = fuser::SessionACL::All;
    // Never joined: the process exits under it (see below).
    let _session = fuser::spawn_mount(LazyFs(state.clone()), &mountpoint, &cfg)?;
    eprintln!(
        "edgeplane-lazyfs: {} on {}",
        backing.display(),
        mountpoint.display()
    );
    let sig = loop {
        match set.wait().map_err(io::Error::from)? {
            Signal::SIGUSR2 => {
                state.lock().unwrap_or_else(|p| p.into_inner()).fsync_lies = true;
                eprintln!("edgeplane-lazyfs: fsync lies from now on");
            }
            sig => break sig,
        }
    };
    // The disk goes off under the lock: no request changes a file after
    // this, whoever still holds one open, so the power cut's restore
    // cannot race a write. Then a lazy unmount and exit, without waiting
    // for the session to drain: a process that still uses the mount (a
    // child the test did not kill) would hold a clean unmount forever; on
    // exit the kernel ends its requests with ENOTCONN, as a dead disk.
    let said = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.off = true;
        if sig == Signal::SIGUSR1 {
            s.drop_unsynced()
        } else {
            "stopped, every write kept".to_string()
        }
    };
    let unmounted = std::process::Command::new("umount")
        .arg("-l")
        .arg(&mountpoint)
        .status();
    eprintln!("edgeplane-lazyfs: {said}");
    match unmounted {
        Ok(s) if s.success() => std::process::exit(0),
        Ok(s) => Err(io::Error::other(format!(
            "umount -l {}: {s}",
            mountpoint.display()
        ))),
        Err(e) => Err(io::Error::other(format!(
            "umount -l {}: {e}",
            mountpoint.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    fn file_with(dir: &Path, bytes: &[u8]) -> File {
        let path = dir.join("f");
        std::fs::write(&path, bytes).unwrap();
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap()
    }

    #[test]
    fn restore_puts_back_overwritten_pages_and_the_synced_length() {
        let dir = tempfile::tempdir().unwrap();
        let synced: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8).collect();
        let f = file_with(dir.path(), &synced);
        let mut u = Unsynced::new(synced.len() as u64);
        // Overwrite across a page boundary, then extend, then shrink.
        u.save(&f, PAGE - 10, 20).unwrap();
        f.write_all_at(&[0xee; 20], PAGE - 10).unwrap();
        u.save(&f, synced.len() as u64, 5000).unwrap();
        f.write_all_at(&[0xaa; 5000], synced.len() as u64).unwrap();
        u.save(&f, 2 * PAGE, u64::MAX / 2).unwrap();
        f.set_len(2 * PAGE).unwrap();
        assert_eq!(
            u.pages.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        u.restore(&f).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), synced);
    }

    #[test]
    fn a_new_file_restores_to_empty_and_a_page_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = file_with(dir.path(), b"");
        let mut u = Unsynced::new(0);
        u.save(&f, 0, 10).unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        assert!(u.pages.is_empty(), "nothing below the synced length");
        u.restore(&f).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 0);

        let f = file_with(dir.path(), b"abcdef");
        let mut u = Unsynced::new(6);
        u.save(&f, 0, 3).unwrap();
        f.write_all_at(b"XYZ", 0).unwrap();
        u.save(&f, 0, 6).unwrap(); // the page's first pre-image stays
        f.write_all_at(b"123456", 0).unwrap();
        u.restore(&f).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"abcdef");
    }
}
