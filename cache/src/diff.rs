//! Layer writing: a directory (an overlay upper or a full tree) to a compressed OCI layer.
//!
//! # Overview
//! One streaming pass, no temporary copy of the uncompressed tar:
//! ```text
//! walk (sorted) -> tar::Builder -> sha256 (diff ID) -> compressor -> sha256 (blob digest) -> out
//! ```
//! 1. The directory is walked depth first, children sorted by name bytes, so the same tree
//!    always gives the same entry order.
//! 2. For an overlay upper, a 0/0 character device becomes a `.wh.NAME` entry and a directory
//!    with `trusted.overlay.opaque=y` is followed by a `.wh..wh..opq` entry; `trusted.overlay.*`
//!    xattrs are not copied.
//! 3. Owners, modes, xattrs (PAX `SCHILY.xattr.*`), symlinks and hard links (by device and
//!    inode) are kept; user and group names are left empty; mtimes are clamped to
//!    `source_date_epoch` when set.
//! 4. gzip is compressed in parallel blocks with `gzp` (pigz-style, a single gzip member, with
//!    fixed block size, so the output is byte-for-byte deterministic); zstd uses libzstd's
//!    worker threads.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};

use fs_err::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use gzp::ZWriter as _;
use kiln_llb::Digest;
use tar::{EntryType, Header};

use crate::error::Error;
use crate::hash::{HashWriter, Hasher};
use crate::store::Store;
use crate::unpack::{OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    Uncompressed,
    /// gzip at a level from 0 to 9. Level 1 is zlib's "quick" strategy (static Huffman
    /// codes): fastest, but it grows incompressible data by about 5%; level 2 does not.
    Gzip {
        /// The level (1 fastest, 9 smallest).
        level: u32,
    },
    /// zstd at a level from 1 to 22.
    Zstd {
        /// The level.
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Self::Gzip { level: 6 }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Self::Uncompressed => MEDIA_TYPE_LAYER_TAR,
            Self::Gzip { .. } => MEDIA_TYPE_LAYER_GZIP,
            Self::Zstd { .. } => MEDIA_TYPE_LAYER_ZSTD,
        }
    }
}

/// What kind of directory is being turned into a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffSource {
    /// An overlayfs upper directory: overlay whiteouts become OCI whiteouts.
    OverlayUpper,
    /// A plain directory, taken whole.
    Directory,
}

/// Options of [`write_layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    /// The compression.
    pub compression: Compression,
    /// Clamp mtimes to this time (seconds since the epoch), as `SOURCE_DATE_EPOCH` asks.
    pub source_date_epoch: Option<i64>,
    /// Compression threads (0: one per available core).
    pub threads: usize,
}

impl LayerOptions {
    fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

/// A written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar (the diff ID in the image config).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The OCI media type.
    pub media_type: &'static str,
}

/// A writer shared with the compressor thread, handed back when the compressor finishes.
struct Shared<W>(Arc<Mutex<HashWriter<W>>>);

impl<W: Write> Write for Shared<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

fn gzp_error(e: gzp::GzpError) -> Error {
    Error::Io(io::Error::other(e))
}

/// Writes `dir` as a layer to `out` in one pass. Returns the descriptor and `out`.
pub fn write_layer<W: Write + Send + 'static>(
    dir: &Path,
    source: DiffSource,
    options: &LayerOptions,
    out: W,
) -> Result<(LayerDescriptor, W), Error> {
    compress(options, out, |tar| write_tar(dir, source, options, tar))
}

/// The diff ID and uncompressed size of `dir` as a layer, from one walk that hashes the tar
/// stream and writes nothing: what an image stored under a name needs of a layer whose
/// compressed blob is made only when a push or an archive asks for it.
pub fn layer_diff_id(
    dir: &Path,
    source: DiffSource,
    source_date_epoch: Option<i64>,
) -> Result<(Digest, u64), Error> {
    let options = LayerOptions {
        compression: Compression::Uncompressed,
        source_date_epoch,
        threads: 1,
    };
    write_tar(dir, source, &options, &mut io::sink())
}

/// Writes the layer `blob` (plain, gzip or zstd) to `out` compressed as `options` say, the
/// tar stream unchanged (so the diff ID stays), as BuildKit's `force-compression` converts
/// existing layers. Returns the descriptor and `out`.
pub fn recompress_layer<W: Write + Send + 'static>(
    blob: impl std::io::Read,
    options: &LayerOptions,
    out: W,
) -> Result<(LayerDescriptor, W), Error> {
    let mut plain = crate::unpack::decompress(blob)?;
    compress(options, out, |tar| {
        let mut hashing = HashWriter {
            inner: tar,
            hasher: Hasher::default(),
        };
        io::copy(&mut plain, &mut hashing)?;
        hashing.flush()?;
        Ok(hashing.hasher.finish())
    })
}

/// Runs `tar`, which writes an uncompressed layer and returns its diff ID and size, through the
/// compressor `options` name into `out`, hashing the blob on the way.
fn compress<W: Write + Send + 'static>(
    options: &LayerOptions,
    out: W,
    tar: impl FnOnce(&mut dyn Write) -> Result<(Digest, u64), Error>,
) -> Result<(LayerDescriptor, W), Error> {
    let shared = Arc::new(Mutex::new(HashWriter {
        inner: out,
        hasher: Hasher::default(),
    }));
    let sink = Shared(Arc::clone(&shared));
    let diff = match options.compression {
        Compression::Uncompressed => {
            let mut sink = sink;
            tar(&mut sink)?
        }
        Compression::Gzip { level } => {
            let mut z: gzp::par::compress::ParCompress<'static, gzp::deflate::Gzip, _> =
                gzp::par::compress::ParCompressBuilder::new()
                    .num_threads(options.thread_count())
                    .map_err(gzp_error)?
                    .compression_level(gzp::Compression::new(level.min(9)))
                    .from_writer(sink);
            let diff = tar(&mut z);
            let finished = z.finish().map_err(gzp_error);
            let diff = diff?;
            finished?;
            diff
        }
        Compression::Zstd { level } => {
            let mut z = zstd::stream::write::Encoder::new(sink, level)?;
            let threads = u32::try_from(options.thread_count()).unwrap_or(1);
            if threads > 1 {
                z.multithread(threads)?;
            }
            let diff = tar(&mut z)?;
            z.finish()?;
            diff
        }
    };
    let writer = Arc::try_unwrap(shared)
        .ok()
        .expect("the compressor released its writer")
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let (digest, size) = writer.hasher.finish();
    Ok((
        LayerDescriptor {
            digest,
            size,
            diff_id: diff.0,
            uncompressed_size: diff.1,
            media_type: options.compression.media_type(),
        },
        writer.inner,
    ))
}

impl Store {
    /// Writes `dir` as a layer blob into the store and records it.
    pub fn write_layer(
        &self,
        dir: &Path,
        source: DiffSource,
        options: &LayerOptions,
    ) -> Result<LayerDescriptor, Error> {
        let writer = self.writer()?;
        let (layer, writer) = write_layer(dir, source, options, writer)?;
        let (digest, _) = writer.commit(Some(&layer.digest))?;
        self.record_blob(&digest, layer.size, Some(layer.media_type))?;
        Ok(layer)
    }

    /// Writes the stored layer blob `blob`, whose tar stream has the diff ID `diff_id`, again,
    /// compressed as `options` say (its tar stream, and so its diff ID, unchanged), into the
    /// store and records it. A blob whose tar stream is not `diff_id` is refused, and nothing
    /// is stored.
    pub fn recompress_layer(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        options: &LayerOptions,
    ) -> Result<LayerDescriptor, Error> {
        let file = fs_err::File::open(self.blob_path(blob))?;
        let writer = self.writer()?;
        let (layer, writer) = recompress_layer(file, options, writer)?;
        if layer.diff_id != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("diff ID of layer {blob}"),
                expected: *diff_id,
                computed: layer.diff_id,
            });
        }
        let (digest, _) = writer.commit(Some(&layer.digest))?;
        self.record_blob(&digest, layer.size, Some(layer.media_type))?;
        Ok(layer)
    }
}

/// Writes the tar stream into `out`; returns the diff ID and the uncompressed size.
fn write_tar(
    dir: &Path,
    source: DiffSource,
    options: &LayerOptions,
    out: &mut dyn Write,
) -> Result<(Digest, u64), Error> {
    let hashing = HashWriter {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: Hasher::default(),
    };
    let mut walker = Walker {
        builder: tar::Builder::new(hashing),
        source,
        epoch: options.source_date_epoch,
        links: HashMap::new(),
    };
    walker.dir(dir, Path::new(""))?;
    let mut hashing = walker.builder.into_inner()?;
    hashing.flush()?;
    Ok(hashing.hasher.finish())
}

struct Walker<'a> {
    builder: tar::Builder<HashWriter<BufWriter<&'a mut dyn Write>>>,
    source: DiffSource,
    epoch: Option<i64>,
    /// (device, inode) of multiply linked files already written, to their archive path.
    links: HashMap<(u64, u64), PathBuf>,
}

fn sorted_children(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs_err::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

impl Walker<'_> {
    fn mtime(&self, meta: &std::fs::Metadata) -> u64 {
        let t = meta.mtime();
        let t = match self.epoch {
            Some(epoch) => t.min(epoch),
            None => t,
        };
        u64::try_from(t).unwrap_or(0)
    }

    fn header(&self, meta: &std::fs::Metadata, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid().into());
        h.set_gid(meta.gid().into());
        h.set_mtime(self.mtime(meta));
        h.set_size(0);
        h
    }

    fn xattrs(&mut self, path: &Path) -> Result<(), Error> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let names = match xattr::list(path) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return Ok(()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("listing xattrs of {}: {e}", path.display()),
                )
                .into());
            }
        };
        for name in names {
            if kiln_fsutil::overlay::is_overlay_xattr(&name) {
                continue;
            }
            let Some(text) = name.to_str() else {
                return Err(Error::XattrName {
                    path: path.to_owned(),
                    name,
                });
            };
            if let Some(value) = xattr::get(path, &name)? {
                pax.push((format!("SCHILY.xattr.{text}"), value));
            }
        }
        if !pax.is_empty() {
            pax.sort();
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        Ok(())
    }

    fn dir(&mut self, abs: &Path, rel: &Path) -> Result<(), Error> {
        for name in sorted_children(abs)? {
            let child_abs = abs.join(&name);
            let child_rel = rel.join(&name);
            self.entry(&child_abs, &child_rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &Path) -> Result<(), Error> {
        let meta = fs_err::symlink_metadata(abs)?;
        let ft = meta.file_type();
        if self.source == DiffSource::OverlayUpper && kiln_fsutil::overlay::is_whiteout(&meta) {
            let mut name = OsString::from(WHITEOUT_PREFIX);
            name.push(rel.file_name().unwrap_or_default());
            let mut h = self.header(&meta, EntryType::Regular);
            h.set_mode(0);
            self.builder
                .append_data(&mut h, rel.with_file_name(name), io::empty())?;
            return Ok(());
        }
        if ft.is_dir() {
            self.xattrs(abs)?;
            let mut h = self.header(&meta, EntryType::Directory);
            self.builder.append_data(&mut h, rel, io::empty())?;
            if self.source == DiffSource::OverlayUpper
                && xattr::get(abs, OVERLAY_OPAQUE_XATTR)?.as_deref() == Some(b"y".as_slice())
            {
                let mut h = self.header(&meta, EntryType::Regular);
                h.set_mode(0);
                self.builder
                    .append_data(&mut h, rel.join(OPAQUE_MARKER), io::empty())?;
            }
            return self.dir(abs, rel);
        }
        if ft.is_socket() {
            tracing::debug!(path = %abs.display(), "socket not archived");
            return Ok(());
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = self.header(&meta, EntryType::Link);
                self.builder.append_link(&mut h, rel, first)?;
                return Ok(());
            }
            self.links.insert(key, rel.to_owned());
        }
        self.xattrs(abs)?;
        if ft.is_symlink() {
            let target = fs_err::read_link(abs)?;
            let mut h = self.header(&meta, EntryType::Symlink);
            self.builder.append_link(&mut h, rel, target)?;
        } else if ft.is_file() {
            let file = fs_err::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(abs)?;
            let mut h = self.header(&meta, EntryType::Regular);
            h.set_size(meta.len());
            self.builder.append_data(&mut h, rel, file)?;
        } else {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let mut h = self.header(&meta, kind);
            if kind != EntryType::Fifo {
                let rdev = meta.rdev();
                h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
                h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
            }
            self.builder.append_data(&mut h, rel, io::empty())?;
        }
        Ok(())
    }
}
