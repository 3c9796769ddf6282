//! Root-scoped path resolution for kiln, and the overlay on-disk format.
//!
//! Every path a build names — a bind or cache mount's `source`, an LLB mount selector, a
//! `COPY` source, a local context's include patterns, a git subdirectory, an archive member —
//! is resolved here, inside the root it belongs to, never on the host:
//!
//! - [`Root`] is a root file system on the host: one plain directory ([`Root::new`]) or
//!   overlayfs layer directories topmost first ([`Root::layered`]).
//! - [`Root::resolve`] follows symbolic links as the kernel does under
//!   `openat2(RESOLVE_IN_ROOT)`: an absolute target starts again at the root, `..` stops at
//!   it, at most [`MAX_SYMLINKS`] links. In a layered root, whiteouts hide, opaque directories
//!   stop the merge, and a directory's [`Entry::layers`] are the layer directories that merge
//!   into it (what a read-only overlay of that directory is made of).
//! - [`TreeCopy`] copies a tree as a layer keeps it (modes, owners, times, hard links, xattrs,
//!   special files; device nodes made or skipped, [`DeviceNodes`]): the one copier behind LLB
//!   copies, seeded cache mounts and the local exporter.
//! - [`overlay`] holds the whiteout and opaque markers and their predicates, in overlayfs and
//!   OCI spelling.
//! - [`mount_layers`] mounts an overlay of any number of layers (up to the kernel's
//!   [`MAX_LAYERS`]) with the new mount API, past the page-size limit of `mount(2)` options.
//!
//! This crate sits at the bottom of the workspace and depends on no other kiln crate: the
//! runner reads `/etc/passwd` of an image through it, the cache unpacks layers with it, and the
//! solver resolves mounts, copies and sources with it.
//!
//! Where new code goes: anything that turns a path from a build into a host path goes through
//! [`Root`] (`resolve.rs`), never a hand-written walk; tree copies through `copy.rs`; the overlay
//! marker format (whiteouts, opaque directories) lives in `overlay.rs` only; mounting overlays past
//! the options limit in `mount.rs`.
//!
//! ```
//! use std::path::Path;
//! use kiln_fsutil::Root;
//!
//! let dir = tempfile::tempdir()?;
//! fs_err::create_dir_all(dir.path().join("etc"))?;
//! fs_err::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n")?;
//! // A link to the host's `/` resolves to the root's own `/`.
//! fs_err::os::unix::fs::symlink("/", dir.path().join("hostroot"))?;
//!
//! let root = Root::new(dir.path());
//! let resolved = root.resolve("hostroot/../../etc/passwd", true)?;
//! assert_eq!(resolved.path, Path::new("/etc/passwd"));
//! assert_eq!(resolved.entry.unwrap().host, dir.path().join("etc/passwd"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod copy;
mod error;
mod mount;
pub mod overlay;
mod resolve;

pub use copy::{DeviceNodes, HardLinks, ModeFn, Owner, TreeCopy, lstat};
pub use error::Error;
pub use mount::{MAX_LAYERS, MOUNT_DATA_LIMIT, MountAttributes, MountLayersError, mount_layers};
pub use resolve::{Entry, MAX_SYMLINKS, Resolved, Root};
