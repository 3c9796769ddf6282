//! The overlay on-disk format: whiteouts and opaque directories, in both of their spellings.
//!
//! overlayfs marks a deleted entry of a lower layer with a whiteout, a character device with
//! device number 0/0, and a directory that hides everything below it with the
//! `trusted.overlay.opaque` (or, mounted with `userxattr`, `user.overlay.opaque`) extended
//! attribute set to `y`. OCI image layers spell the same things as files: `.wh.NAME` deletes
//! `NAME`, and `.wh..wh..opq` inside a directory makes it opaque. Every crate that reads or
//! writes layers uses these constants and predicates.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

/// The OCI whiteout prefix: `.wh.NAME` deletes `NAME` of the layers below.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque marker: a directory holding it hides the layers below.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The extended attribute overlayfs reads (and kiln writes) to mark a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The opaque attribute of an overlay mounted with `userxattr`.
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
/// Both opaque attributes, in the order they are read.
pub const OPAQUE_XATTRS: [&str; 2] = [OPAQUE_XATTR, USER_OPAQUE_XATTR];

/// Whether `meta` (an `lstat`) is an overlayfs whiteout: a 0/0 character device.
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether an extended attribute is one of overlayfs' own (`trusted.overlay.*`: the opaque
/// marker, redirects), which mean something only in the layer that holds them: an overlay
/// mount hides them, and a copy or an archive of a layer leaves them out.
pub fn is_overlay_xattr(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"trusted.overlay.")
}

/// Whether `name` is an OCI marker (`.wh.NAME` or `.wh..wh..opq`), never part of a container's
/// view of the tree.
pub fn is_oci_marker(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())
}

/// The name an OCI whiteout marker `.wh.NAME` deletes; `None` for other names and for the
/// opaque marker.
pub fn oci_whiteout_target(name: &OsStr) -> Option<&OsStr> {
    if name.as_bytes() == OPAQUE_MARKER.as_bytes() {
        return None;
    }
    name.as_bytes()
        .strip_prefix(WHITEOUT_PREFIX.as_bytes())
        .map(OsStr::from_bytes)
}

/// The OCI whiteout marker name that deletes `name`: `.wh.NAME`.
pub fn oci_whiteout_name(name: &OsStr) -> OsString {
    let mut marker = OsString::from(WHITEOUT_PREFIX);
    marker.push(name);
    marker
}

/// Whether the directory `dir` (of one layer) is opaque: an opaque attribute set to `y`, or an
/// OCI `.wh..wh..opq` marker inside it. File systems without extended attributes, and
/// `trusted.*` attributes read without privilege, count as not set.
pub fn is_opaque(dir: &Path) -> io::Result<bool> {
    for name in OPAQUE_XATTRS {
        if has_opaque_xattr(dir, name)? {
            return Ok(true);
        }
    }
    Ok(fs_err::symlink_metadata(dir.join(OPAQUE_MARKER)).is_ok())
}

/// Whether the opaque attribute `name` of `dir` is `y` (unreadable attributes count as unset).
pub fn has_opaque_xattr(dir: &Path, name: &str) -> io::Result<bool> {
    match xattr::get(dir, name) {
        Ok(value) => Ok(value.as_deref() == Some(b"y".as_slice())),
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOTSUP | libc::EPERM | libc::EACCES | libc::ENODATA)
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_marker_names() {
        assert!(is_oci_marker(OsStr::new(".wh.x")));
        assert!(is_oci_marker(OsStr::new(OPAQUE_MARKER)));
        assert!(!is_oci_marker(OsStr::new("x.wh.")));
        assert_eq!(
            oci_whiteout_target(OsStr::new(".wh.x")),
            Some(OsStr::new("x"))
        );
        assert_eq!(oci_whiteout_target(OsStr::new(OPAQUE_MARKER)), None);
        assert_eq!(oci_whiteout_target(OsStr::new("x")), None);
        assert_eq!(
            oci_whiteout_name(OsStr::new("a b")),
            OsString::from(".wh.a b")
        );
    }

    #[test]
    fn opaque_by_marker_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_opaque(dir.path()).unwrap());
        fs_err::write(dir.path().join(OPAQUE_MARKER), "").unwrap();
        assert!(is_opaque(dir.path()).unwrap());
    }

    #[test]
    fn a_regular_file_is_no_whiteout() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs_err::write(&file, "").unwrap();
        assert!(!is_whiteout(&fs_err::symlink_metadata(&file).unwrap()));
    }
}
