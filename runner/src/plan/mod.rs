//! The mount plan: every filesystem step of a container's setup, computed before the fork.
//!
//! # Overview
//!
//! [`build`] turns a [`Spec`] into a list of [`Op`]s holding ready-made C strings, so the
//! forked init only walks the list and makes syscalls ([`apply`]). The steps, in order:
//!
//! 1. `umask 0`; make every mount private (`MS_REC | MS_PRIVATE` on `/`) so nothing propagates
//!    back to the host — all mounts below live and die with the container's mount namespace;
//! 2. mount the root filesystem: a recursive bind of the directory onto itself, or overlayfs
//!    (after `chdir` to the layers' common parent, so that the options name relative paths and
//!    stay within one page even for 100+ layers, as containerd does); in the sandbox it is
//!    nodev, every submount of the directory included (`mount_setattr` with `AT_RECURSIVE`),
//!    and a read-only root is made read-only below its top mount already;
//! 3. mount each [`Mount::Overlay`] on its own empty directory in the runner's state directory
//!    (the same relative-path trick, still inside the container's mount namespace); then clone
//!    every bind source's and overlay's mount tree (`open_tree`), detached;
//! 4. `pivot_root(".", ".")` inside the new root and detach the old root;
//! 5. /dev (a nodev tmpfs; the allowed device nodes are made in a scratch tmpfs on /proc and
//!    bound in one by one), devpts, shm, mqueue, fd links; /proc; /sys read-only;
//! 6. /etc/hosts, /etc/resolv.conf, /etc/hostname and the extra mounts, attached from the
//!    trees of step 3 (`move_mount`) — so their targets resolve inside the new root and a
//!    symlink in the image cannot point a mount at the host. Each tree is made nodev in the
//!    sandbox (read-only where asked), all its submounts included, before it is attached;
//!    tmpfs mounts are nodev. With the nodev root and /dev, no device file but the allowed
//!    ones opens anywhere, even without a device cgroup (as on cgroup v2);
//! 7. the read-only root's top mount if asked; Docker's masked /proc and /sys paths, and its
//!    read-only ones, read-only with every mount below them;
//! 8. hostname, loopback up (network `none`), the working directory, `umask 022`.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::error::{Error, Result};
use crate::spec::{Mount, NetworkMode, Rootfs, Security, Spec};
use crate::sys::{MountAttributes, Sys};

mod apply;
mod overlay;

pub(crate) use apply::apply;
use overlay::overlay_mount;

/// Paths the masked-path step hides (Docker's defaults, as runc applies them).
pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only (Docker's defaults).
pub(crate) const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices created in /dev: name, major, minor.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks created in /dev: link, target.
const DEV_LINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/core", "/proc/kcore"),
    ("/dev/ptmx", "pts/ptmx"),
];

/// One setup step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `umask(mode)`.
    Umask(u32),
    /// `mount(2)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
    /// An overlay of `lowers` (topmost first) mounted layer by layer with the new mount API,
    /// for stacks whose `mount(2)` options would not fit in a page.
    MountLayers {
        target: CString,
        lowers: Vec<CString>,
        upper_work: Option<(CString, CString)>,
        nodev: bool,
    },
    /// `chdir(path)`.
    Chdir(CString),
    /// Clones the mount tree at a host path into descriptor slot `slot`, for a later [`Op::Bind`].
    OpenSource { slot: usize, path: CString },
    /// Attaches the tree in `slot` at `target`, with `attributes` set on all of it first.
    Bind {
        slot: usize,
        target: CString,
        attributes: MountAttributes,
    },
    /// Sets and clears mount attributes on the mount at `path` (and every mount below it if
    /// `recursive`), its other flags left as they are.
    SetAttributes {
        path: CString,
        set: MountAttributes,
        clear: MountAttributes,
        recursive: bool,
    },
    /// `chdir(root)`, `pivot_root(".", ".")`, detach the old root, `chdir("/")`.
    PivotRoot(CString),
    /// `mkdir -p path` (mode 0755).
    MkdirAll(CString),
    /// `mkdir -p` of the parent, then create an empty file if missing.
    Touch(CString),
    /// A character device with mode 0666.
    Mknod {
        path: CString,
        major: u64,
        minor: u64,
    },
    /// `symlink(target, link)`.
    Symlink { target: CString, link: CString },
    /// Hide a path: bind /dev/null on a file, a read-only tmpfs on a directory; skip if absent.
    Mask(CString),
    /// Bind a path onto itself read-only, every mount below it included; skip if absent.
    ReadonlyPath(CString),
    /// `umount2(path, MNT_DETACH)`.
    Unmount(CString),
    /// `sethostname(name)`.
    SetHostname(CString),
    /// Bring `lo` up.
    LoopbackUp,
    /// Opens a host file read-only into descriptor slot `slot`.
    OpenFile { slot: usize, path: CString },
    /// Enters a new user namespace mapping every uid and gid to itself, with new mount and
    /// UTS namespaces owned by it.
    EnterUserNamespace,
    /// Writes `head`, the number of the descriptor in `slot`, and `tail` to `path` in one
    /// `write` (a `binfmt_misc` registration naming `/proc/self/fd/N`).
    WriteWithFd {
        path: CString,
        head: CString,
        slot: usize,
        tail: CString,
    },
    /// Closes the descriptor in `slot`.
    CloseSlot(usize),
}

impl Op {
    /// Human description, used in errors.
    pub(crate) fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Self::Umask(mode) => format!("umask {mode:o}"),
            Self::Mount {
                source,
                target,
                fstype,
                ..
            } => format!(
                "mount {} ({}) on {}",
                source.as_ref().map_or_else(|| "none".to_owned(), s),
                fstype.as_ref().map_or_else(|| "bind/remount".to_owned(), s),
                s(target)
            ),
            Self::MountLayers { target, lowers, .. } => {
                format!(
                    "mount an overlay of {} layers on {}",
                    lowers.len(),
                    s(target)
                )
            }
            Self::Chdir(path) => format!("chdir {}", s(path)),
            Self::OpenSource { path, .. } => format!("open mount source {}", s(path)),
            Self::Bind { target, .. } => format!("bind mount on {}", s(target)),
            Self::SetAttributes { path, .. } => format!("set the mount attributes of {}", s(path)),
            Self::PivotRoot(root) => format!("pivot_root to {}", s(root)),
            Self::MkdirAll(path) => format!("create directory {}", s(path)),
            Self::Touch(path) => format!("create file {}", s(path)),
            Self::Mknod { path, .. } => format!("create device {}", s(path)),
            Self::Symlink { link, .. } => format!("create symlink {}", s(link)),
            Self::Mask(path) => format!("mask {}", s(path)),
            Self::ReadonlyPath(path) => format!("make {} read-only", s(path)),
            Self::Unmount(path) => format!("unmount {}", s(path)),
            Self::SetHostname(name) => format!("set hostname {}", s(name)),
            Self::LoopbackUp => "bring up the loopback interface".to_owned(),
            Self::OpenFile { path, .. } => format!("open {}", s(path)),
            Self::EnterUserNamespace => {
                "enter a user namespace mapping every id to itself".to_owned()
            }
            Self::WriteWithFd { path, .. } => format!("write to {}", s(path)),
            Self::CloseSlot(_) => "close a descriptor".to_owned(),
        }
    }
}

/// The computed plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) ops: Vec<Op>,
    /// Number of descriptor slots [`Op::OpenSource`] and [`Op::OpenFile`] use.
    pub(crate) slots: usize,
    /// Step 9, applied after the process's resource limits are set (raising a hard limit
    /// takes a capability the user namespace does not have): see [`emulation_ops`].
    pub(crate) emulation: Vec<Op>,
}

/// Host-side files the runner generated for this container.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    /// Where an overlay root is mounted (an empty directory).
    pub(crate) rootfs_mountpoint: PathBuf,
    pub(crate) hosts: PathBuf,
    pub(crate) resolv_conf: PathBuf,
    pub(crate) hostname: PathBuf,
    /// One staged file per [`Mount::Secret`], in order.
    pub(crate) secrets: Vec<PathBuf>,
    /// One empty directory per [`Mount::Overlay`], in order: where it is first mounted.
    pub(crate) overlays: Vec<PathBuf>,
}

pub(crate) fn cstring(field: &'static str, bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::NulByte { field })
}

fn cpath(field: &'static str, path: &Path) -> Result<CString> {
    cstring(field, path.as_os_str().as_bytes())
}

fn lit(s: &str) -> CString {
    CString::new(s).expect("literal without NUL")
}

/// A container path made absolute and normalised lexically (`..` cannot climb above `/`).
pub(crate) fn container_path(field: &'static str, path: &Path) -> Result<PathBuf> {
    if !path.is_absolute() {
        return Err(Error::RelativePath {
            field,
            path: path.to_owned(),
        });
    }
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Builds the plan for `spec`; `staged` names the files the runner wrote for it.
pub(crate) fn build(spec: &Spec, staged: &Staged) -> Result<Plan> {
    let mut ops = vec![
        Op::Umask(0),
        Op::Mount {
            source: None,
            target: lit("/"),
            fstype: None,
            flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            data: None,
        },
    ];
    let readonly_root = match &spec.rootfs {
        Rootfs::Dir { readonly, .. } | Rootfs::Overlay { readonly, .. } => *readonly,
    };
    // Without a device cgroup (cgroup v2 takes eBPF), device files are kept from opening by
    // `nodev` on every mount the process gets — the root filesystem, /dev, binds, overlays,
    // tmpfs — but the allowed devices, bound into /dev from a scratch tmpfs below.
    let sandboxed = spec.security == Security::Sandbox;
    let (nodev, nodev_attribute) = if sandboxed {
        (MsFlags::MS_NODEV, MountAttributes::MOUNT_ATTR_NODEV)
    } else {
        (MsFlags::empty(), MountAttributes::empty())
    };
    let root = match &spec.rootfs {
        Rootfs::Dir { path, .. } => {
            if !path.is_absolute() {
                return Err(Error::RelativePath {
                    field: "rootfs",
                    path: path.clone(),
                });
            }
            let path = cpath("rootfs", path)?;
            ops.push(Op::Mount {
                source: Some(path.clone()),
                target: path.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None,
            });
            // The directory's own submounts come along with it: nodev, and for a read-only
            // root read-only from the start, all of them. The top mount stays writable until
            // the mount points are made in it (step 7).
            let readonly = if readonly_root {
                MountAttributes::MOUNT_ATTR_RDONLY
            } else {
                MountAttributes::empty()
            };
            if !(readonly | nodev_attribute).is_empty() {
                ops.push(Op::SetAttributes {
                    path: path.clone(),
                    set: readonly | nodev_attribute,
                    clear: MountAttributes::empty(),
                    recursive: true,
                });
            }
            if readonly_root {
                ops.push(Op::SetAttributes {
                    path: path.clone(),
                    set: MountAttributes::empty(),
                    clear: MountAttributes::MOUNT_ATTR_RDONLY,
                    recursive: false,
                });
            }
            path
        }
        Rootfs::Overlay {
            lowers,
            upper,
            work,
            ..
        } => {
            // A fresh overlay has no submounts: a read-only one is its top mount (step 7).
            let target = cpath("rootfs", &staged.rootfs_mountpoint)?;
            overlay_mount(&mut ops, lowers, Some((upper, work)), target.clone(), nodev)?;
            target
        }
    };

    // Bind sources, opened on the host side of the pivot.
    let mut binds: Vec<(usize, CString, MountAttributes, bool)> = Vec::new(); // slot, target, attributes, is_dir
    let mut slots = 0;
    let mut add_bind = |ops: &mut Vec<Op>,
                        source: &Path,
                        target: &Path,
                        readonly: bool,
                        is_dir: bool|
     -> Result<()> {
        ops.push(Op::OpenSource {
            slot: slots,
            path: cpath("mount source", source)?,
        });
        let target = container_path("mount target", target)?;
        let readonly = if readonly {
            MountAttributes::MOUNT_ATTR_RDONLY
        } else {
            MountAttributes::empty()
        };
        binds.push((
            slots,
            cpath("mount target", &target)?,
            readonly | nodev_attribute,
            is_dir,
        ));
        slots += 1;
        Ok(())
    };
    add_bind(
        &mut ops,
        &staged.hosts,
        Path::new("/etc/hosts"),
        false,
        false,
    )?;
    add_bind(
        &mut ops,
        &staged.resolv_conf,
        Path::new("/etc/resolv.conf"),
        false,
        false,
    )?;
    add_bind(
        &mut ops,
        &staged.hostname,
        Path::new("/etc/hostname"),
        false,
        false,
    )?;
    let mut secrets = staged.secrets.iter();
    let mut overlays = staged.overlays.iter();
    let mut tmpfs = Vec::new();
    // Extra mounts keep their relative order: record them as (bind index | tmpfs) in sequence.
    let mut order = Vec::new();
    for mount in &spec.mounts {
        match mount {
            Mount::Bind {
                source,
                target,
                readonly,
            } => {
                let is_dir = fs_err::metadata(source).map_err(Error::Prepare)?.is_dir();
                add_bind(&mut ops, source, target, *readonly, is_dir)?;
                order.push(None);
            }
            Mount::Secret { target, .. } => {
                let source = secrets.next().expect("one staged file per secret");
                add_bind(&mut ops, source, target, true, false)?;
                order.push(None);
            }
            Mount::Overlay {
                lowers,
                upper_work,
                target,
                readonly,
            } => {
                let mountpoint = overlays.next().expect("one staged directory per overlay");
                let upper_work = upper_work.as_ref().map(|(u, w)| (u.as_path(), w.as_path()));
                let readonly = *readonly || upper_work.is_none();
                if let ([lower], None) = (&lowers[..], upper_work) {
                    // overlayfs needs two lower layers without an upper: bind the only one.
                    if !lower.is_absolute() {
                        return Err(Error::RelativePath {
                            field: "overlay lower dir",
                            path: lower.clone(),
                        });
                    }
                    add_bind(&mut ops, lower, target, true, true)?;
                } else {
                    let staged_target = cpath("overlay mount point", mountpoint)?;
                    overlay_mount(
                        &mut ops,
                        lowers,
                        upper_work,
                        staged_target,
                        MsFlags::empty(),
                    )?;
                    add_bind(&mut ops, mountpoint, target, readonly, true)?;
                }
                order.push(None);
            }
            Mount::Tmpfs { target, options } => {
                let target = container_path("tmpfs target", target)?;
                let flags = options.flags();
                if sandboxed && !flags.contains(MsFlags::MS_NODEV) {
                    return Err(Error::TmpfsDevices { target });
                }
                let data = options
                    .data()
                    .map(|d| cstring("tmpfs options", d.as_bytes()))
                    .transpose()?;
                tmpfs.push((cpath("tmpfs target", &target)?, flags, data));
                order.push(Some(tmpfs.len() - 1));
            }
        }
    }

    // The emulator of [`Spec::emulator`], opened from the host before the pivot hides it.
    let emulator_slot = spec.emulator.is_some().then(|| {
        slots += 1;
        slots - 1
    });
    if let (Some(slot), Some(emulator)) = (emulator_slot, &spec.emulator) {
        ops.push(Op::OpenFile {
            slot,
            path: cpath("emulator", &emulator.path)?,
        });
    }

    ops.push(Op::PivotRoot(root));

    // /proc, /dev, /sys.
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let fs = |ops: &mut Vec<Op>, fstype: &str, target: &str, flags: MsFlags, data: Option<&str>| {
        ops.push(Op::MkdirAll(lit(target)));
        ops.push(Op::Mount {
            source: Some(lit(fstype)),
            target: lit(target),
            fstype: Some(lit(fstype)),
            flags,
            data: data.map(lit),
        });
    };
    fs(
        &mut ops,
        "tmpfs",
        "/dev",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | nodev,
        Some("mode=755,size=65536k"),
    );
    if sandboxed {
        // The nodes are made in a tmpfs on /proc (not yet mounted: no directory is left
        // behind), bound one by one into the nodev /dev, and the tmpfs is detached.
        fs(
            &mut ops,
            "tmpfs",
            "/proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=700,size=64k"),
        );
        for (name, major, minor) in DEVICES {
            let (staged, node) = (lit(&format!("/proc/{name}")), lit(&format!("/dev/{name}")));
            ops.push(Op::Mknod {
                path: staged.clone(),
                major: *major,
                minor: *minor,
            });
            ops.push(Op::Touch(node.clone()));
            ops.push(Op::Mount {
                source: Some(staged),
                target: node,
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None,
            });
        }
        ops.push(Op::Unmount(lit("/proc")));
    } else {
        for (name, major, minor) in DEVICES {
            ops.push(Op::Mknod {
                path: lit(&format!("/dev/{name}")),
                major: *major,
                minor: *minor,
            });
        }
    }
    fs(&mut ops, "proc", "/proc", nosuid_nodev_noexec, None);
    fs(
        &mut ops,
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    );
    for (link, target) in DEV_LINKS {
        ops.push(Op::Symlink {
            target: lit(target),
            link: lit(link),
        });
    }
    fs(
        &mut ops,
        "tmpfs",
        "/dev/shm",
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    );
    fs(&mut ops, "mqueue", "/dev/mqueue", nosuid_nodev_noexec, None);
    let sysfs_readonly = if sandboxed {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    fs(
        &mut ops,
        "sysfs",
        "/sys",
        nosuid_nodev_noexec | sysfs_readonly,
        None,
    );

    // Generated /etc files and extra mounts, in spec order.
    let mut binds = binds.into_iter();
    for _ in 0..3 {
        let (slot, target, attributes, _) = binds.next().expect("three /etc binds");
        ops.push(Op::Touch(target.clone()));
        ops.push(Op::Bind {
            slot,
            target,
            attributes,
        });
    }
    for entry in order {
        match entry {
            None => {
                let (slot, target, attributes, is_dir) = binds.next().expect("one bind per mount");
                ops.push(if is_dir {
                    Op::MkdirAll(target.clone())
                } else {
                    Op::Touch(target.clone())
                });
                ops.push(Op::Bind {
                    slot,
                    target,
                    attributes,
                });
            }
            Some(index) => {
                let (target, flags, data) = tmpfs[index].clone();
                ops.push(Op::MkdirAll(target.clone()));
                ops.push(Op::Mount {
                    source: Some(lit("tmpfs")),
                    target,
                    fstype: Some(lit("tmpfs")),
                    flags,
                    data,
                });
            }
        }
    }

    let cwd = container_path("cwd", &spec.cwd)?;
    if readonly_root {
        // Create the working directory while the root is still writable.
        ops.push(Op::MkdirAll(cpath("cwd", &cwd)?));
        // The top mount only: what lies below it came read-only with the root (step 2) or
        // was mounted here with its own flags.
        ops.push(Op::SetAttributes {
            path: lit("/"),
            set: MountAttributes::MOUNT_ATTR_RDONLY,
            clear: MountAttributes::empty(),
            recursive: false,
        });
    }
    if sandboxed {
        for path in MASKED_PATHS {
            ops.push(Op::Mask(lit(path)));
        }
        for path in READONLY_PATHS {
            ops.push(Op::ReadonlyPath(lit(path)));
        }
    }
    ops.push(Op::SetHostname(cstring(
        "hostname",
        spec.hostname.as_bytes(),
    )?));
    if spec.network == NetworkMode::None {
        ops.push(Op::LoopbackUp);
    }
    if !readonly_root {
        ops.push(Op::MkdirAll(cpath("cwd", &cwd)?));
    }
    ops.push(Op::Umask(0o022));
    let emulation = match (emulator_slot, &spec.emulator) {
        (Some(slot), Some(emulator)) => emulation_ops(slot, emulator)?,
        _ => Vec::new(),
    };
    Ok(Plan {
        ops,
        slots,
        emulation,
    })
}

/// Step 9, for a [`Spec::emulator`]: a user namespace mapping every id to itself (with its own
/// mount and UTS namespaces, so that mounts and the hostname stay the step's to change), its
/// own `binfmt_misc` instance on /proc/sys/fs/binfmt_misc, and the emulator, opened in `slot`
/// before the pivot, registered there with the `F` flag through `/proc/self/fd`: the kernel
/// opens it at once, so it runs every binary of the architecture in the container's root.
fn emulation_ops(slot: usize, emulator: &crate::emulation::Emulator) -> Result<Vec<Op>> {
    let head = format!("{}/proc/self/fd/", emulator.registration_head());
    Ok(vec![
        Op::EnterUserNamespace,
        Op::Mount {
            source: Some(lit("binfmt_misc")),
            target: lit(BINFMT_MISC_TARGET),
            fstype: Some(lit("binfmt_misc")),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: None,
        },
        Op::WriteWithFd {
            path: lit(&format!("{BINFMT_MISC_TARGET}/register")),
            head: cstring("binfmt_misc registration", head.as_bytes())?,
            slot,
            // F: open the emulator now; P: keep the program's argv[0] (QEMU reads AT_FLAGS).
            tail: lit(":FP"),
        },
        Op::CloseSlot(slot),
    ])
}

/// Where a step with an emulator of kiln's own gets its `binfmt_misc` instance.
const BINFMT_MISC_TARGET: &str = "/proc/sys/fs/binfmt_misc";

/// The mount points the plan creates if missing (each `mkdir -p` or file creation directly
/// followed by a mount on the same path): where stubs can appear in the root filesystem.
pub(crate) fn mount_points(ops: &[Op]) -> Vec<PathBuf> {
    ops.windows(2)
        .filter_map(|pair| match pair {
            [
                Op::MkdirAll(path) | Op::Touch(path),
                Op::Mount { target, .. } | Op::Bind { target, .. },
            ] if path == target => {
                Some(PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes())))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
