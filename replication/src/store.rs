//! The local blob store: `<root>/sha256/ab/<hex>`, staging in `<root>/staging`.
//!
//! Deleting a blob races with storing it again: the file under a digest's
//! name can be replaced (a new upload or fetch renames over it) at any
//! moment, and the node then records itself as a holder. Two rules make
//! deletion safe without a global lock:
//! - whoever stores a blob holds a [`BlobPin`] on its digest from before
//!   the rename until the cluster has recorded the copy (or refused to);
//! - [`BlobStore::delete_stale`] takes the digest's lock exclusively and,
//!   under it, looks at the file again and asks the caller again whether
//!   the blob is still unknown, then unlinks.
//!
//! So a delete either finishes before the rename (the new copy is then the
//! only one, and recorded) or starts after the record is visible (and
//! keeps the file). Locks are per digest and held for a stat and a lookup,
//! so pushes of other blobs never wait for the sweeper.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_common::{Digest, DigestAlgorithm};
use bytes::Bytes;
use sha2::Digest as _;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Bytes of chunks kept before they go to the file: few large writes, not
/// many small ones, whatever size the client's chunks are.
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("content does not match digest {expected} (computed {computed})")]
    DigestMismatch { expected: Digest, computed: Digest },
    #[error("range {start}-{end:?} is outside a blob of {size} bytes")]
    RangeInvalid { start: u64, end: Option<u64>, size: u64 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

/// A byte range as HTTP states it: `start-` or `start-end`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRange {
    pub start: u64,
    pub end: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    /// Per-digest locks between storing a blob and deleting it (see the
    /// module doc); shared by every clone of the store.
    locks: Arc<DigestLocks>,
}

/// One read-write lock per digest in use, dropped from the map when the
/// last holder lets go, so the map stays as small as the work in flight.
#[derive(Debug, Default)]
struct DigestLocks {
    map: Mutex<HashMap<Digest, Arc<tokio::sync::RwLock<()>>>>,
}

impl DigestLocks {
    fn entry(&self, digest: &Digest) -> Arc<tokio::sync::RwLock<()>> {
        self.map.lock().expect("digest locks").entry(digest.clone()).or_default().clone()
    }

    /// Forgets `digest`'s lock if no one holds or awaits it: the map and
    /// the caller (who no longer holds it) are the only references left.
    /// Counted under the map's mutex, where new users take their clone.
    fn release(&self, digest: &Digest, lock: &Arc<tokio::sync::RwLock<()>>) {
        let mut map = self.map.lock().expect("digest locks");
        if Arc::strong_count(lock) == 2 {
            map.remove(digest);
        }
    }
}

/// A digest's lock, held (one of the two guards); released, and forgotten
/// when unused, on drop.
struct DigestGuard {
    shared: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    exclusive: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
    lock: Arc<tokio::sync::RwLock<()>>,
    locks: Arc<DigestLocks>,
    digest: Digest,
}

impl Drop for DigestGuard {
    fn drop(&mut self) {
        // Unlock first, so the count below sees only the map and us.
        drop(self.shared.take());
        drop(self.exclusive.take());
        self.locks.release(&self.digest, &self.lock);
    }
}

/// Keeps the sweeper from deleting a digest's file while a copy of it is
/// being stored and recorded. Many pins of one digest may be held at once
/// (two clients pushing the same layer); only deletion waits for them.
#[must_use = "the pin protects the copy only while it is held"]
pub struct BlobPin {
    _guard: DigestGuard,
}

/// How much of a blob one mapping holds while it is sent: the bytes go
/// from the page cache to the socket with one copy (the kernel's), and a
/// node serving a large blob keeps at most a few windows mapped.
pub const MAP_WINDOW: u64 = 4 << 20;

/// One mapped window of a blob file, handed to the HTTP stack as the
/// owner of a `Bytes` (no copy into a user-space buffer). Blob files are
/// never written in place once committed (a commit is a rename, GC an
/// unlink), so a mapping never sees its file shrink.
struct Window(memmap2::Mmap);

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The bytes `[start, start + len)` of an open blob file, one mapped
/// window at a time.
pub fn mapped_stream(file: std::fs::File, start: u64, len: u64) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let file = std::sync::Arc::new(file);
    let end = start + len;
    futures::stream::unfold(start, move |at| {
        let file = file.clone();
        async move {
            if at >= end {
                return None;
            }
            let n = (end - at).min(MAP_WINDOW);
            // Mapping is a page-table change, not a read: cheap enough for
            // the async thread; the page faults happen as the socket sends.
            // SAFETY: see `Window`: a committed blob file is never truncated
            // or rewritten while it exists.
            let map = unsafe { memmap2::MmapOptions::new().offset(at).len(n as usize).map(&*file) };
            let item = map.map(|m| {
                let _ = m.advise(memmap2::Advice::Sequential);
                bytes::Bytes::from_owner(Window(m))
            });
            Some((item, at + n))
        }
    })
}

/// An open blob, positioned at the start of the requested range.
pub struct BlobReader {
    pub file: tokio::io::Take<File>,
    /// Size of the whole blob.
    pub size: u64,
    /// First byte served and how many.
    pub start: u64,
    pub len: u64,
}

/// Where a blob store rooted at `root` keeps a committed blob:
/// `<algorithm>/<first two hex digits>/<hex>`.
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join(digest.algorithm().name()).join(&hex[..2]).join(hex)
}

impl BlobStore {
    /// Opens (creating) the store and removes staging files left by a
    /// previous run: their upload sessions died with it.
    pub async fn open(root: &Path) -> Result<BlobStore, BlobError> {
        let staging = root.join("staging");
        if tokio::fs::try_exists(&staging).await.map_err(io(&staging))? {
            tokio::fs::remove_dir_all(&staging).await.map_err(io(&staging))?;
        }
        tokio::fs::create_dir_all(&staging).await.map_err(io(&staging))?;
        for alg in ["sha256", "sha512"] {
            let d = root.join(alg);
            tokio::fs::create_dir_all(&d).await.map_err(io(&d))?;
        }
        Ok(BlobStore { root: root.to_path_buf(), locks: Arc::default() })
    }

    async fn lock(&self, digest: &Digest, exclusive: bool) -> DigestGuard {
        let lock = self.locks.entry(digest);
        let (shared, exclusive) = if exclusive { (None, Some(lock.clone().write_owned().await)) } else { (Some(lock.clone().read_owned().await), None) };
        DigestGuard { shared, exclusive, lock, locks: self.locks.clone(), digest: digest.clone() }
    }

    /// Pins `digest` against deletion. Take it before committing a copy and
    /// hold it until the cluster has recorded (or refused) this node as a
    /// holder: from then on the sweeper sees the record and keeps the file.
    pub async fn pin(&self, digest: &Digest) -> BlobPin {
        BlobPin { _guard: self.lock(digest, false).await }
    }

    /// Where uploads and fetches in progress live; emptied at every start.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// The filesystem the store is on. Blocking (a `statvfs`): call it off
    /// the async workers.
    pub fn disk_use(&self) -> std::io::Result<crate::protocol::DiskUse> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(std::io::Error::from)?;
        let unit = st.fragment_size() as u64;
        let total = st.blocks() as u64 * unit;
        Ok(crate::protocol::DiskUse {
            total_bytes: total,
            used_bytes: total.saturating_sub(st.blocks_free() as u64 * unit),
            available_bytes: st.blocks_available() as u64 * unit,
        })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    /// The blob's size, if this node holds it.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let p = self.path_of(digest);
        match tokio::fs::metadata(&p).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// Opens the blob for reading `range` (the whole blob without one).
    pub async fn open_read(&self, digest: &Digest, range: Option<BlobRange>) -> Result<Option<BlobReader>, BlobError> {
        let p = self.path_of(digest);
        let mut file = match File::open(&p).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&p)(e)),
        };
        let size = file.metadata().await.map_err(io(&p))?.len();
        let (start, len) = match range {
            None => (0, size),
            Some(r) => {
                let end = r.end.unwrap_or(size.saturating_sub(1)).min(size.saturating_sub(1));
                if r.start >= size || r.end.is_some_and(|e| e < r.start) {
                    return Err(BlobError::RangeInvalid { start: r.start, end: r.end, size });
                }
                (r.start, end - r.start + 1)
            }
        };
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await.map_err(io(&p))?;
        }
        Ok(Some(BlobReader { file: file.take(len), size, start, len }))
    }

    /// Every blob held here, with its size and when its file was written.
    pub async fn list(&self) -> Result<Vec<(Digest, u64, std::time::SystemTime)>, BlobError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<(Digest, u64, std::time::SystemTime)>, BlobError> {
            let mut out = Vec::new();
            for alg in ["sha256", "sha512"] {
                let dir = root.join(alg);
                for shard in std::fs::read_dir(&dir).map_err(io(&dir))? {
                    let shard = shard.map_err(io(&dir))?.path();
                    if !shard.is_dir() {
                        continue;
                    }
                    for f in std::fs::read_dir(&shard).map_err(io(&shard))? {
                        let f = f.map_err(io(&shard))?;
                        let Ok(digest) = format!("{alg}:{}", f.file_name().to_string_lossy()).parse::<Digest>() else { continue };
                        let meta = f.metadata().map_err(io(&f.path()))?;
                        out.push((digest, meta.len(), meta.modified().map_err(io(&f.path()))?));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| BlobError::Io { path: self.root.clone(), source: std::io::Error::other(e) })?
    }

    /// Re-hashes a stored blob; true when its content matches its name.
    pub async fn verify(&self, digest: &Digest) -> Result<bool, BlobError> {
        let path = self.path_of(digest);
        let d = digest.clone();
        let p = path.clone();
        let hex =
            tokio::task::spawn_blocking(move || hash_file(&p, d.algorithm())).await.map_err(|e| io(&path)(std::io::Error::other(e)))?.map_err(io(&path))?;
        Ok(hex == digest.hex())
    }

    /// Moves a bad copy aside (for a post-mortem), out of the store.
    pub async fn quarantine(&self, digest: &Digest) -> Result<PathBuf, BlobError> {
        let dir = self.root.join("quarantine");
        tokio::fs::create_dir_all(&dir).await.map_err(io(&dir))?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let dest = dir.join(format!("{}-{}-{stamp}", digest.algorithm().name(), digest.hex()));
        tokio::fs::rename(self.path_of(digest), &dest).await.map_err(io(&dest))?;
        Ok(dest)
    }

    /// Removes the local copy; true if there was one. Waits for pinned
    /// copies to be recorded first, so it never removes a copy a commit
    /// has just put in place without the caller having seen it.
    pub async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let _guard = self.lock(digest, true).await;
        self.unlink(digest).await
    }

    /// Removes the local copy if its file was last written no later than
    /// `written_by` and `still_unknown()` (asked with no copy of `digest`
    /// being stored or recorded meanwhile) says the cluster does not know
    /// the blob; true if it removed one. The sweeper's delete: a copy put
    /// in place since the caller last looked is fresh, or recorded, and stays.
    pub async fn delete_stale(&self, digest: &Digest, written_by: SystemTime, still_unknown: impl FnOnce() -> bool) -> Result<bool, BlobError> {
        let _guard = self.lock(digest, true).await;
        let p = self.path_of(digest);
        let modified = match tokio::fs::metadata(&p).await {
            Ok(m) => m.modified().map_err(io(&p))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&p)(e)),
        };
        if modified > written_by || !still_unknown() {
            return Ok(false);
        }
        self.unlink(digest).await
    }

    async fn unlink(&self, digest: &Digest) -> Result<bool, BlobError> {
        let p = self.path_of(digest);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// A new, empty staging file to stream a blob into. It is created (so
    /// the name is ours) but not held open: the first write opens it.
    pub async fn create_staging(&self) -> Result<StagingBlob, BlobError> {
        let name = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        let path = self.root.join("staging").join(name);
        File::options().write(true).create_new(true).open(&path).await.map_err(io(&path))?;
        Ok(StagingBlob {
            guard: StagingGuard { path: Some(path) },
            file: None,
            pending: Vec::new(),
            pending_bytes: 0,
            writing: None,
            sha256: sha2::Sha256::new(),
            len: 0,
            broken: false,
        })
    }
}

/// The hex digest of a file's content, with `alg`, off the async threads' hands.
fn hash_file(path: &Path, alg: DigestAlgorithm) -> std::io::Result<String> {
    fn run<H: sha2::Digest>(mut h: H, f: &mut std::fs::File) -> std::io::Result<String> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(f, &mut buf)?;
            if n == 0 {
                return Ok(hex::encode(h.finalize()));
            }
            h.update(&buf[..n]);
        }
    }
    let mut f = std::fs::File::open(path)?;
    match alg {
        DigestAlgorithm::Sha256 => run(sha2::Sha256::new(), &mut f),
        DigestAlgorithm::Sha512 => run(sha2::Sha512::new(), &mut f),
    }
}

/// Removes a staging file that was not committed, however its owner ends.
struct StagingGuard {
    path: Option<PathBuf>,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // Best effort and cheap (an unlink); a leftover is removed at the next start.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A blob being written: hashed as it streams in.
///
/// Chunks are kept as they arrived (`Bytes` shared with the network
/// buffers that received them) until about [`WRITE_BUFFER`] of them are
/// waiting, then handed to the kernel in one vectored write on the
/// blocking pool: no copy into a buffer of ours, no async worker waiting
/// on the disk. One such write runs while the next chunks gather (at most
/// two write buffers held); a flush waits for both.
///
/// The file is open only between the first write and
/// [`StagingBlob::park`]: an upload session waiting for its client's next
/// chunk then holds a path and a hash state, not a descriptor and a
/// megabyte of chunks, so idle sessions cannot exhaust either.
pub struct StagingBlob {
    guard: StagingGuard,
    file: Option<std::fs::File>,
    /// Chunks hashed and counted in `len` but not yet in the file.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    /// The write on the blocking pool, while it runs; it hands the
    /// descriptor back. Kept here, not in the flush that started it, so a
    /// flush dropped half way (a client gone mid-request) leaves the next
    /// one to wait for it: bytes land in order and none is claimed early.
    writing: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>>,
    sha256: sha2::Sha256,
    len: u64,
    /// A write or flush failed: the hash may cover bytes the file lacks, so
    /// this blob must never be committed.
    broken: bool,
}

/// Chunks waiting for one vectored write at most; also the kernel's limit
/// of slices per `writev` (IOV_MAX), so tiny chunks cost few system calls
/// and little bookkeeping.
const MAX_PENDING_CHUNKS: usize = 1024;

/// Writes every byte of `chunks` to `file`, as few `writev` calls as the
/// kernel takes.
fn write_all_chunks(file: &mut std::fs::File, chunks: &[Bytes]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut slices: Vec<std::io::IoSlice<'_>> = chunks.iter().filter(|c| !c.is_empty()).map(|c| std::io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts the disk writing `[start, start + len)` of `file` and returns
/// without waiting. The sync at commit then finds most of the blob already
/// on its way to the disk instead of all of it: the disk works while later
/// bytes arrive, and a 512 MiB copy no longer ends in one long sync.
fn start_writeback(file: &std::fs::File, start: u64, len: u64) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a system call on a descriptor `file` holds open, with no
    // memory passed. A failure only leaves the work to the sync at commit.
    unsafe { libc::sync_file_range(file.as_raw_fd(), start as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE) };
}

impl StagingBlob {
    /// Where the bytes are being written; readers may follow along up to
    /// what [`StagingBlob::flush`] reported.
    pub fn path(&self) -> &Path {
        self.guard.path.as_deref().expect("staging path is set until commit")
    }

    /// Pushes waiting chunks to the file; returns how many bytes the file holds.
    pub async fn flush(&mut self) -> Result<u64, BlobError> {
        self.start_write().await?;
        self.settle().await?;
        Ok(self.len)
    }

    /// Waits for the running write, if any, and takes its descriptor back.
    async fn settle(&mut self) -> Result<(), BlobError> {
        if self.broken {
            return Err(self.broken_error());
        }
        let Some(writing) = self.writing.as_mut() else { return Ok(()) };
        let written = writing.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.writing = None;
        match written {
            Ok(file) => {
                self.file = Some(file);
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(io(self.path())(e))
            }
        }
    }

    /// Starts writing the waiting chunks, once the write before has ended,
    /// and returns without waiting for this one: the caller receives the
    /// next chunks while the disk takes these.
    async fn start_write(&mut self) -> Result<(), BlobError> {
        self.settle().await?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = self.file.take();
        let chunks = std::mem::take(&mut self.pending);
        let (start, len) = (self.len - self.pending_bytes as u64, self.pending_bytes as u64);
        self.pending_bytes = 0;
        let path = self.path().to_path_buf();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => std::fs::File::options().append(true).open(&path)?,
            };
            write_all_chunks(&mut file, &chunks)?;
            start_writeback(&file, start, len);
            Ok(file)
        }));
        Ok(())
    }

    /// Flushes and closes the file, keeping the hash state and the length:
    /// the next write reopens it and appends. Returns the bytes held.
    pub async fn park(&mut self) -> Result<u64, BlobError> {
        let written = self.flush().await;
        self.file = None;
        written
    }

    /// The blob holds a descriptor or chunks not yet written: between a
    /// write and [`StagingBlob::park`].
    pub fn is_open(&self) -> bool {
        self.file.is_some() || !self.pending.is_empty() || self.writing.is_some()
    }

    /// A write failed earlier: the blob can only be thrown away.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn broken_error(&self) -> BlobError {
        io(self.path())(std::io::Error::other("an earlier write to this staging file failed"))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `chunk` (hashed now, in the file by the next flush).
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        if self.broken {
            return Err(self.broken_error());
        }
        self.sha256.update(&chunk);
        self.len += chunk.len() as u64;
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        if self.pending_bytes >= WRITE_BUFFER || self.pending.len() >= MAX_PENDING_CHUNKS {
            self.start_write().await?;
        }
        Ok(())
    }

    /// Verifies the content against `expected` and moves it into place.
    /// On a mismatch the staging file is removed and nothing is stored.
    /// The stored file's mtime is the commit's time: the sweeper's grace
    /// period runs from when a copy was put in place, not from when its
    /// last byte arrived (a parked upload may be finished much later).
    /// Hold a [`BlobStore::pin`] on `expected` across the commit and the
    /// record of the copy.
    pub async fn commit(mut self, store: &BlobStore, expected: &Digest) -> Result<u64, BlobError> {
        let path = self.path().to_path_buf();
        self.flush().await?;
        // A parked file was flushed, not synced: open it again to sync.
        let file = self.file.take();
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => f,
                None => std::fs::File::options().append(true).open(&p)?,
            };
            file.set_modified(SystemTime::now())?;
            file.sync_all()
        })
        .await
        .map_err(|e| io(&path)(std::io::Error::other(e)))?
        .map_err(io(&path))?;
        let computed = match expected.algorithm() {
            DigestAlgorithm::Sha256 => format!("sha256:{}", hex::encode(self.sha256.finalize())),
            // sha512 is rare: hash the file again rather than every upload twice.
            alg => {
                let p = path.clone();
                let hex = tokio::task::spawn_blocking(move || hash_file(&p, alg)).await.map_err(|e| io(&path)(std::io::Error::other(e)))?.map_err(io(&path))?;
                format!("{}:{hex}", alg.name())
            }
        };
        let computed: Digest = computed.parse().expect("a computed digest is well formed");
        if &computed != expected {
            return Err(BlobError::DigestMismatch { expected: expected.clone(), computed });
        }
        let dest = store.path_of(expected);
        let parent = dest.parent().expect("blob paths have a parent").to_path_buf();
        tokio::fs::create_dir_all(&parent).await.map_err(io(&parent))?;
        tokio::fs::rename(&path, &dest).await.map_err(io(&dest))?;
        self.guard.path = None;
        // The rename is durable only once the directory is.
        let dir = parent.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| io(&parent)(std::io::Error::other(e)))?
            .map_err(io(&parent))?;
        Ok(self.len)
    }
}
