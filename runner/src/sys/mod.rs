//! The system-call layer: the only place in kiln that uses `unsafe`.
//!
//! Mount and filesystem steps of the container setup go through the small [`Sys`] trait, so the
//! plan that drives them ([`crate::plan`]) runs against a recording fake in unit tests without
//! privileges. [`LinuxSys`] is the real implementation; [`process`] holds the fork/init/exec
//! code that runs in the new namespaces.
#![expect(
    unsafe_code,
    reason = "fork, ioctl, capset and signal dispositions have no safe wrapper"
)]

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use nix::mount::MsFlags;

#[cfg(test)]
pub(crate) mod fake;
mod linux;
pub(crate) mod process;
pub(crate) mod terminal;

pub(crate) use linux::LinuxSys;

bitflags::bitflags! {
    /// `MOUNT_ATTR_*` of `<linux/mount.h>`, for `mount_setattr(2)` (libc has no definitions).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct MountAttributes: u64 {
        /// Writes are refused.
        const MOUNT_ATTR_RDONLY = 0x1;
        /// Device files on the mount cannot be opened.
        const MOUNT_ATTR_NODEV = 0x4;
    }
}

/// The filesystem and namespace calls that container setup makes. Every method maps to one or
/// two syscalls; implementations must not allocate (the real one runs in a forked child).
pub(crate) trait Sys {
    /// `umask(mode)`.
    fn umask(&mut self, mode: u32);
    /// `mount(2)`.
    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: MsFlags,
        data: Option<&CStr>,
    ) -> nix::Result<()>;
    /// An overlay of `lowers` (topmost first) at `target`, mounted layer by layer with the new
    /// mount API (see [`kiln_fsutil::mount_layers`]).
    fn mount_layers(
        &mut self,
        target: &CStr,
        lowers: &[CString],
        upper_work: Option<(&CStr, &CStr)>,
        nodev: bool,
    ) -> nix::Result<()>;
    /// `umount2(target, MNT_DETACH)`.
    fn umount_detach(&mut self, target: &CStr) -> nix::Result<()>;
    /// `mkdir(path, mode)`.
    fn mkdir(&mut self, path: &CStr, mode: u32) -> nix::Result<()>;
    /// Creates an empty regular file if nothing exists at `path`.
    fn create_file(&mut self, path: &CStr, mode: u32) -> nix::Result<()>;
    /// `mknod(path, S_IFCHR | mode, makedev(major, minor))`.
    fn mknod_char(&mut self, path: &CStr, mode: u32, major: u64, minor: u64) -> nix::Result<()>;
    /// `symlink(target, link)`.
    fn symlink(&mut self, target: &CStr, link: &CStr) -> nix::Result<()>;
    /// `chdir(path)`.
    fn chdir(&mut self, path: &CStr) -> nix::Result<()>;
    /// `pivot_root(new_root, put_old)`.
    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> nix::Result<()>;
    /// `open_tree(path, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mount tree at
    /// `path`, still attachable after the old root is gone.
    fn clone_tree(&mut self, path: &CStr) -> nix::Result<RawFd>;
    /// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attributes)`: sets `attributes`
    /// (read-only, nodev) on the detached tree `fd`, every submount in it included (a
    /// `MS_REMOUNT | MS_REC` remount changes the top mount only), before anything can see it
    /// without them.
    fn set_tree_attributes(&mut self, fd: RawFd, attributes: MountAttributes) -> nix::Result<()>;
    /// `mount_setattr(AT_FDCWD, path, flags, ..)`: sets `set` and clears `clear` on the mount at
    /// `path`, and with `recursive` (`AT_RECURSIVE`) on every mount below it too. Unlike a bind
    /// remount it leaves the mount's other flags as they are.
    fn set_mount_attributes(
        &mut self,
        path: &CStr,
        set: MountAttributes,
        clear: MountAttributes,
        recursive: bool,
    ) -> nix::Result<()>;
    /// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`, then closes `fd`.
    fn attach_tree(&mut self, fd: RawFd, target: &CStr) -> nix::Result<()>;
    /// `sethostname(name)`.
    fn sethostname(&mut self, name: &CStr) -> nix::Result<()>;
    /// Sets the loopback interface up (`SIOCSIFFLAGS` with `IFF_UP`).
    fn loopback_up(&mut self) -> nix::Result<()>;
    /// `open(path, O_RDONLY | O_CLOEXEC)`.
    fn open_file(&mut self, path: &CStr) -> nix::Result<RawFd>;
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS)`, with the new user namespace's
    /// uid and gid maps (every id to itself) written by a helper process left in the current
    /// one: writing a map takes `CAP_SETUID` in the parent namespace, which the caller no longer
    /// has once it is inside the new one.
    fn enter_user_namespace(&mut self) -> nix::Result<()>;
    /// Opens `path` for writing and writes `head`, the decimal number `fd`, and `tail` in a
    /// single `write`.
    fn write_with_fd(
        &mut self,
        path: &CStr,
        head: &[u8],
        fd: RawFd,
        tail: &[u8],
    ) -> nix::Result<()>;
    /// `close(fd)`.
    fn close(&mut self, fd: RawFd) -> nix::Result<()>;
}
