//! The store: content-addressed blobs on disk plus the metadata database, under one root.
//!
//! Layout of the root directory:
//! ```text
//! blobs/sha256/<hex>     immutable blobs, named by their digest
//! ingest/                blobs being written (temporary files, renamed into blobs/ when verified)
//! snapshots/             unpacked layers and active snapshots (see `Snapshotter`)
//! meta.redb              the metadata database
//! meta.lock              locked by the process that has the metadata database open
//! meta.waiting           shared-locked by processes waiting for the metadata database
//! gc.lock                exclusively locked by garbage collection (one at a time)
//! tmp/<owner>/           scratch space of a running process (`Store::scratch_dir`), and the
//!                        list of the directories where it makes files outside the store
//!                        (`Store::temp_file_beside`)
//! cache-mounts/          the directories of `RUN --mount=type=cache` (`Store::cache_mount_dir`)
//! local-checksums/       the solver's file checksums of local sources from earlier builds
//! ```
//!
//! Temporary names carry their process's tag (see the `lease` module), so garbage collection
//! removes what a killed process left and nothing a running one is writing.
//!
//! A blob is written to a temporary file in `ingest/`, fsynced, checked against its expected
//! digest and only then renamed to `blobs/sha256/<hex>` (and the directory fsynced), so a crash at
//! any moment leaves either no blob or a whole, correct one. Two writers of the same blob both
//! rename a complete, identical file into place, which is harmless. Metadata is committed only
//! after the data it names is on disk; records whose loss is harmless (blob, snapshot and
//! cache records) are committed lazily and made durable in batches (see the `meta` module),
//! images durably at once.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_llb::Digest;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::hash::Hasher;
use crate::lease::{Held, Holder, Lease, Leases, Owner};
use crate::limits::UnpackLimits;
use crate::meta::{self, Commit, Meta};

/// A blob's metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Size in bytes.
    pub size: u64,
    /// The media type it was stored under, if known.
    pub media_type: Option<String>,
    /// When it was last used (seconds since the Unix epoch).
    pub last_used: u64,
}

/// A named image: a manifest plus everything it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The full normalised name (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The manifest digest; while the manifest is [`ImageRecord::pending`], the config digest.
    pub manifest: Digest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The index the manifest was selected from, if the name resolved to one.
    pub index: Option<Digest>,
    /// The config blob.
    pub config: Digest,
    /// The compressed layer blobs, bottom first; while the manifest is pending, only those
    /// that exist (see [`PendingManifest::blobs`]).
    pub layers: Vec<Digest>,
    /// The uncompressed layer digests from the config, bottom first.
    pub diff_ids: Vec<Digest>,
    /// The chain ID of the top layer's snapshot, once unpacked.
    pub chain_id: Option<Digest>,
    /// Unpacked size in bytes (sum of the uncompressed layers).
    pub size: u64,
    /// The config's `created` time (RFC 3339), if any.
    pub created: Option<String>,
    /// When it was last used (seconds since the Unix epoch).
    pub last_used: u64,
    /// An image stored under a name by a build (`kiln build -t`) has layers that are
    /// snapshots, not blobs: its manifest (which names compressed blobs) is made when a push,
    /// a save or an export first needs it, as `docker build -t` makes no compressed blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingManifest>,
    /// The image's ID is its config digest, as docker's IMAGE ID, not its manifest digest:
    /// true for an image stored with a pending manifest, and it stays so once the manifest
    /// is made, so the ID a build printed does not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_id: bool,
}

impl ImageRecord {
    /// The ID `kiln images` and `kiln build -q` show: the config digest of an image built
    /// with its manifest pending ([`ImageRecord::config_id`]), else the manifest digest.
    pub fn id(&self) -> Digest {
        if self.config_id {
            self.config
        } else {
            self.manifest
        }
    }
}

/// What an image stored with its layers as snapshots needs to make its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingManifest {
    /// Per layer (bottom first), the blob it already has (a base image's layer), if any.
    pub blobs: Vec<Option<Digest>>,
    /// The compression of the blobs still to write.
    pub compression: crate::diff::Compression,
    /// The `SOURCE_DATE_EPOCH` the layers' mtimes are clamped to (already so in the
    /// snapshots, and in the diff IDs).
    pub source_date_epoch: Option<i64>,
    /// OCI media types (`true`) or docker's.
    pub oci_mediatypes: bool,
}

/// A build cache record: the blobs and snapshots one cached step result keeps alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The cache key.
    pub id: String,
    /// A human description (the step).
    pub description: String,
    /// Blobs kept alive by this record.
    pub blobs: Vec<Digest>,
    /// Snapshots (keys) kept alive by this record.
    pub snapshots: Vec<String>,
    /// Size in bytes attributed to this record.
    pub size: u64,
    /// When it was created (seconds since the Unix epoch).
    pub created: u64,
    /// When it was last used (seconds since the Unix epoch).
    pub last_used: u64,
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A cache mount's directory, from [`Store::cache_mount_dir`].
#[derive(Debug, Clone)]
pub struct CacheMountDir {
    /// `cache-mounts/<name>` under the store root.
    pub path: PathBuf,
    /// Made by this call: the caller fills it (a mount's `from` directory) before anyone uses it.
    pub created: bool,
}

/// The content store and metadata database under one root directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    pub(crate) meta: Arc<Meta>,
    /// This store's lease (see [`Store::lease`]).
    pub(crate) holder: Holder,
    pub(crate) unpack_limits: UnpackLimits,
}

impl Store {
    /// Opens (creating if needed) the store at `root` (a relative path is taken from the
    /// current directory, once: the snapshot directories are handed to mounts as absolute
    /// paths).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = std::path::absolute(root.into())?;
        for dir in [
            "blobs/sha256",
            "ingest",
            "snapshots/committed",
            "snapshots/active",
        ] {
            fs_err::create_dir_all(root.join(dir))?;
        }
        // Snapshots may hold device nodes from images: only root may reach them.
        fs_err::set_permissions(
            root.join("snapshots"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let meta = Arc::new(Meta::open(&root)?);
        let holder = Holder {
            meta: Arc::clone(&meta),
            leases: Arc::new(Leases::default()),
        };
        Ok(Self {
            root,
            meta,
            holder,
            unpack_limits: UnpackLimits::default(),
        })
    }

    /// Sets the limits applied to every layer this store unpacks (see [`UnpackLimits`]).
    #[must_use]
    pub fn with_unpack_limits(mut self, limits: UnpackLimits) -> Self {
        self.unpack_limits = limits;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is present on disk.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob into memory (manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        match fs_err::read(self.blob_path(digest)) {
            Ok(data) => Ok(data),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound { digest: *digest })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<fs_err::File, Error> {
        match fs_err::File::open(self.blob_path(digest)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound { digest: *digest })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Starts writing a blob; finish with [`BlobWriter::commit`]. Hold a [`Lease`] until the
    /// blob is named by an image or cache record, or garbage collection may remove it.
    pub fn writer(&self) -> Result<BlobWriter, Error> {
        let dir = self.root.join("ingest");
        let file = tempfile::Builder::new()
            .prefix(&format!("blob-{}-", Owner::current().tag()))
            .tempfile_in(&dir)
            .map_err(|e| creating_in("file", &dir, e))?;
        Ok(BlobWriter {
            file: Some(file),
            hasher: Hasher::default(),
            blobs_dir: self.root.join("blobs/sha256"),
            holder: self.holder.clone(),
        })
    }

    /// Writes a whole blob from memory, verified against `expected` if given.
    pub fn write_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest, Error> {
        let mut w = self.writer()?;
        w.write_all(data)?;
        Ok(w.commit(expected)?.0)
    }

    /// Writes a whole blob from memory, verified against `digest`, and records it in the
    /// metadata with its `media_type`: a manifest, config or index made or fetched whole.
    pub fn put_blob(
        &self,
        data: &[u8],
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<(), Error> {
        self.write_blob(data, Some(digest))?;
        self.record_blob(digest, data.len() as u64, media_type)
    }

    /// Records a blob in the metadata (after it is on disk).
    pub fn record_blob(
        &self,
        digest: &Digest,
        size: u64,
        media_type: Option<&str>,
    ) -> Result<(), Error> {
        let record = BlobRecord {
            size,
            media_type: media_type.map(str::to_owned),
            last_used: now(),
        };
        self.meta.write_with(Commit::Lazy, |tx| {
            tx.put(meta::BLOBS, &digest.to_string(), &record)
        })
    }

    /// Stores an image record (its blobs and snapshot must already be in the store).
    pub fn put_image(&self, record: &ImageRecord) -> Result<(), Error> {
        self.meta
            .write(|tx| tx.put(meta::IMAGES, &record.name, record))
    }

    /// Looks an image up by full name. Under a lease, the lease holds the image's content
    /// from the same moment (so removing the name later does not take it away).
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, Error> {
        if !self.has_lease() {
            return self.meta.get(meta::IMAGES, name);
        }
        let (image, added) = self.meta.write_with(Commit::Lazy, |tx| {
            let Some(image) = tx.get::<ImageRecord>(meta::IMAGES, name)? else {
                return Ok((None, None));
            };
            let mut items: Vec<Held> = [image.manifest, image.config]
                .into_iter()
                .chain(image.index)
                .chain(image.layers.iter().copied())
                .map(Held::Blob)
                .collect();
            items.extend(image.chain_id.map(|c| Held::Snapshot(c.to_string())));
            let added = self.holder.missing(&items);
            if let Some((id, missing)) = &added {
                Holder::add_in(tx, id, missing)?;
            }
            Ok((Some(image), added))
        })?;
        if let Some((id, missing)) = added {
            self.holder.added(&id, missing);
        }
        Ok(image)
    }

    /// Whether a [`Lease`] of this store is alive.
    pub(crate) fn has_lease(&self) -> bool {
        self.holder.is_leased()
    }

    /// Every record of `table`, in key order.
    pub(crate) fn records<T: DeserializeOwned>(&self, table: meta::Table) -> Result<Vec<T>, Error> {
        Ok(self.meta.list(table)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every image, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, Error> {
        self.records(meta::IMAGES)
    }

    /// Removes an image name (its content goes at the next garbage collection).
    pub fn remove_image(&self, name: &str) -> Result<bool, Error> {
        self.meta.write(|tx| tx.remove(meta::IMAGES, name))
    }

    /// Stores a build cache record. Like snapshot and blob records it is committed lazily: a
    /// crash may lose it (the step then runs again), see [`Store::flush`].
    pub fn put_cache_record(&self, record: &CacheRecord) -> Result<(), Error> {
        let added = self.holder.missing(&[Held::Record(record.id.clone())]);
        self.meta.write_with(Commit::Lazy, |tx| {
            if let Some((id, missing)) = &added {
                Holder::add_in(tx, id, missing)?;
            }
            tx.put(meta::CACHE_RECORDS, &record.id, record)
        })?;
        if let Some((id, missing)) = added {
            self.holder.added(&id, missing);
        }
        Ok(())
    }

    /// Looks one build cache record up by id. Under a lease, the lease holds the record
    /// (and so its blobs and snapshots) before it is looked up, so a prune cannot take away a
    /// result this build found.
    pub fn cache_record(&self, id: &str) -> Result<Option<CacheRecord>, Error> {
        self.holder.hold(&[Held::Record(id.to_owned())])?;
        self.meta.get(meta::CACHE_RECORDS, id)
    }

    /// Marks a build cache record as used now (for least-recently-used pruning). Returns whether
    /// it exists.
    pub fn touch_cache_record(&self, id: &str) -> Result<bool, Error> {
        self.meta.write_with(Commit::Lazy, |tx| {
            match tx.get::<CacheRecord>(meta::CACHE_RECORDS, id)? {
                Some(mut record) => {
                    record.last_used = now();
                    tx.put(meta::CACHE_RECORDS, id, &record)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    /// Makes every record written so far durable: syncs the data they name, then commits.
    /// Records are also flushed when the process stops using the store for a moment, at least
    /// every second while it is busy, when another process wants the store, and when the
    /// `Store` is dropped; call this where a crash right afterwards must not lose them.
    pub fn flush(&self) -> Result<(), Error> {
        self.meta.flush()
    }

    /// Every build cache record.
    pub fn cache_records(&self) -> Result<Vec<CacheRecord>, Error> {
        self.records(meta::CACHE_RECORDS)
    }

    /// Every blob record.
    pub fn blob_records(&self) -> Result<Vec<(Digest, BlobRecord)>, Error> {
        self.meta
            .list::<BlobRecord>(meta::BLOBS)?
            .into_iter()
            .map(|(k, v)| Ok((k.parse()?, v)))
            .collect()
    }

    /// Takes a lease (or joins this store's live one): while it lives, everything this store
    /// writes or looks up — snapshots, blobs, cache records, images, cache mounts — is held
    /// from garbage collection in any process, and a collection running meanwhile removes
    /// nothing of it. The lease is void once this process is gone, so what a killed build held
    /// goes at the next collection (see the `lease` module).
    pub fn lease(&self) -> Result<Lease, Error> {
        self.holder.lease()
    }

    /// Takes the exclusive garbage collection lock, waiting at most `timeout`.
    pub(crate) fn gc_lock(&self, timeout: Duration) -> Result<Flock<OwnedFd>, Error> {
        let path = self.root.join("gc.lock");
        let start = Instant::now();
        loop {
            let file = fs_err::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?
                .into_file()
                .into();
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(Error::StoreBusy { path });
                }
                Err((_, errno)) => {
                    return Err(
                        io::Error::other(format!("locking {}: {errno}", path.display())).into(),
                    );
                }
            }
        }
    }

    /// The directory of the cache mount `name` (`cache-mounts/<name>`, for
    /// `RUN --mount=type=cache`), made if missing. Under a lease it is held first, so a prune
    /// leaves it alone while this process uses it; without one a prune may remove it.
    pub fn cache_mount_dir(&self, name: &str) -> Result<CacheMountDir, Error> {
        let valid = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && !name.ends_with(".lock")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(Error::InvalidCacheMount {
                name: name.to_owned(),
            });
        }
        self.holder.hold(&[Held::CacheMount(name.to_owned())])?;
        let path = self.root.join("cache-mounts").join(name);
        let created = !path.exists();
        fs_err::create_dir_all(&path)?;
        Ok(CacheMountDir { path, created })
    }

    /// A document another crate keeps in the store (the solver's cache key history), if any.
    pub fn document(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.meta
            .write_with(Commit::Lazy, |tx| tx.get_raw(meta::DOCUMENTS, name))
    }

    /// Replaces the document `name` with what `update` makes of its current bytes, in one
    /// transaction of the metadata database: updates by concurrent processes apply one after
    /// the other, none is lost. Committed lazily, like cache records.
    pub fn update_document<T>(
        &self,
        name: &str,
        update: impl FnOnce(Option<&[u8]>) -> (Vec<u8>, T),
    ) -> Result<T, Error> {
        self.meta.write_with(Commit::Lazy, |tx| {
            let current = tx.get_raw(meta::DOCUMENTS, name)?;
            let (bytes, out) = update(current.as_deref());
            tx.put_raw(meta::DOCUMENTS, name, &bytes)?;
            Ok(out)
        })
    }

    /// This process's scratch directory in the store (`tmp/<owner tag>`), on the store's file
    /// system: temporary directories made in it are removed by garbage collection once this
    /// process is gone.
    pub fn scratch_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.root.join("tmp").join(Owner::current().tag());
        fs_err::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A new temporary file beside `dest`, outside the store (an export written whole before
    /// it is renamed over `dest`; its directory is made if missing). It is named
    /// `.NAME.tmp-<owner tag>-XXXXXX` and removed when dropped; its directory is listed in this
    /// process's scratch directory first, so if the process is killed before either, garbage
    /// collection removes the file once the process is gone.
    pub fn temp_file_beside(&self, dest: &Path) -> Result<tempfile::NamedTempFile, Error> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fs_err::create_dir_all(&parent)?;
        let parent = fs_err::canonicalize(&parent)?;
        // The name's bytes as they are (a name need not be UTF-8).
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(dest.file_name().unwrap_or("output".as_ref()));
        prefix.push(outside_marker(&Owner::current().tag()));
        let mut line = parent.as_os_str().as_encoded_bytes().to_vec();
        line.push(0);
        fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch_dir()?.join(OUTSIDE_LIST))?
            .write_all(&line)?;
        tempfile::Builder::new()
            .prefix(&prefix)
            .tempfile_in(&parent)
            .map_err(|e| creating_in("file", &parent, e).into())
    }
}

/// The file in a process's scratch directory that lists the directories outside the store in
/// which it makes temporary files ([`Store::temp_file_beside`]), each path ended by a NUL.
pub(crate) const OUTSIDE_LIST: &str = "outside-temporaries";

/// What the name of every temporary file the owner tagged `tag` makes outside the store
/// contains: `.NAME` then this, then random characters.
pub(crate) fn outside_marker(tag: &str) -> String {
    format!(".tmp-{tag}-")
}

/// A blob being written: bytes go to a temporary file and into a running digest.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<tempfile::NamedTempFile>,
    hasher: Hasher,
    blobs_dir: PathBuf,
    holder: Holder,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.clone().finish().1
    }

    /// Copies everything from `reader` into the blob.
    pub fn copy_from(&mut self, reader: &mut impl Read) -> Result<u64, Error> {
        Ok(io::copy(reader, self)?)
    }

    /// Syncs the data, verifies it against `expected` (if given) and moves it into place.
    /// Returns the digest and size. On a mismatch nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), Error> {
        let file = self.file.take().expect("a blob writer is committed once");
        let (digest, size) = std::mem::take(&mut self.hasher).finish();
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    what: "blob".to_owned(),
                    expected: *expected,
                    computed: digest,
                });
            }
        }
        // Held before it is found or renamed into place: a collection either sees the lease
        // holding it or has finished with this name (see the `gc` module).
        self.holder.hold(&[Held::Blob(digest)])?;
        let target = self.blobs_dir.join(digest.hex());
        if target.is_file() {
            return Ok((digest, size));
        }
        file.as_file().sync_all().map_err(|e| {
            io::Error::new(e.kind(), format!("syncing {}: {e}", file.path().display()))
        })?;
        file.persist(&target).map_err(|e| {
            io::Error::new(
                e.error.kind(),
                format!("renaming a blob to {}: {}", target.display(), e.error),
            )
        })?;
        fs_err::File::open(&self.blobs_dir)?.sync_all()?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .expect("a committed writer is not written to");
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// The error `e` of making a temporary `what` (`file`, `directory`) in `parent`, naming both.
pub(crate) fn creating_in(what: &str, parent: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("creating a {what} in {}: {e}", parent.display()),
    )
}
