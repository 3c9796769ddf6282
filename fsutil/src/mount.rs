//! Overlay mounts of any depth: the one place kiln mounts overlayfs with the new mount API.
//!
//! `mount(2)` copies at most one page of options, so an overlay given as
//! `lowerdir=A:B:…` stops at a few dozen layers (80-odd snapshot paths fill 4,095 bytes). The
//! new mount API has no such limit: `fsopen("overlay")`, one `fsconfig(lowerdir+)` per layer
//! (Linux ≥ 6.8), `fsmount` and `move_mount`. The kernel's own limit remains: at most
//! [`MAX_LAYERS`] lower layers in one overlay.
//!
//! [`mount_layers`] allocates nothing, so the runner may call it in a forked child; callers
//! build the NUL-terminated paths beforehand. The store's views and the runner's root and
//! overlay mounts use it when their option string does not fit in [`MOUNT_DATA_LIMIT`].

use std::ffi::CStr;

use nix::errno::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

/// The kernel copies at most one page of `mount(2)` options (less the terminating NUL).
pub const MOUNT_DATA_LIMIT: usize = 4095;

/// The most lower layers one overlay may have (`OVL_MAX_STACK` in the kernel).
pub const MAX_LAYERS: usize = 500;

/// Which step of an overlay mount failed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountLayersError {
    /// `fsopen`, `lowerdir+`, `upperdir`, `workdir`, `create`, `fsmount` or `move_mount`.
    pub step: &'static str,
    /// Index of the lower layer for `lowerdir+`.
    pub layer: Option<usize>,
    /// The error.
    pub errno: Errno,
}

impl std::fmt::Display for MountLayersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.step, self.layer) {
            ("lowerdir+", Some(i)) => write!(f, "overlay lower layer {i}: {}", self.errno)?,
            (step, _) => write!(f, "overlay {step}: {}", self.errno)?,
        }
        if self.step == "fsopen" || (self.step == "lowerdir+" && self.errno == Errno::EINVAL) {
            write!(
                f,
                " (overlays of many layers need Linux 6.8 or later, which takes layers one by one)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for MountLayersError {}

/// Whether a mount is read-only, and whether device files open on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountAttributes {
    /// `MOUNT_ATTR_RDONLY`.
    pub readonly: bool,
    /// `MOUNT_ATTR_NODEV`.
    pub nodev: bool,
}

/// Mounts an overlay of `lowers` (topmost first) with an optional writable upper and work
/// directory at `target`. Allocates nothing.
pub fn mount_layers(
    target: &CStr,
    lowers: &[impl AsRef<CStr>],
    upper_work: Option<(&CStr, &CStr)>,
    attributes: MountAttributes,
) -> Result<(), MountLayersError> {
    let fail = |step, layer| {
        move |e: rustix::io::Errno| MountLayersError {
            step,
            layer,
            errno: Errno::from_raw(e.raw_os_error()),
        }
    };
    if lowers.len() > MAX_LAYERS {
        return Err(MountLayersError {
            step: "lowerdir+",
            layer: Some(MAX_LAYERS),
            errno: Errno::E2BIG,
        });
    }
    let fs = fsopen(c"overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(fail("fsopen", None))?;
    for (i, lower) in lowers.iter().enumerate() {
        fsconfig_set_string(&fs, c"lowerdir+", lower.as_ref())
            .map_err(fail("lowerdir+", Some(i)))?;
    }
    if let Some((upper, work)) = upper_work {
        fsconfig_set_string(&fs, c"upperdir", upper).map_err(fail("upperdir", None))?;
        fsconfig_set_string(&fs, c"workdir", work).map_err(fail("workdir", None))?;
    }
    fsconfig_create(&fs).map_err(fail("create", None))?;
    let mut flags = MountAttrFlags::empty();
    if attributes.readonly {
        flags |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    if attributes.nodev {
        flags |= MountAttrFlags::MOUNT_ATTR_NODEV;
    }
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, flags).map_err(fail("fsmount", None))?;
    move_mount(
        &mnt,
        c"",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(fail("move_mount", None))
}
