//! Running a plan: each op through [`Sys`], in order, in the forked child (no allocation).

use super::*;

/// `mkdir -p`, using a stack buffer for the prefixes.
pub(super) fn mkdir_all(sys: &mut impl Sys, path: &CStr, parent_only: bool) -> nix::Result<()> {
    let bytes = path.to_bytes();
    let mut buf = [0u8; 4096];
    if bytes.len() >= buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    let end = if parent_only {
        bytes.iter().rposition(|b| *b == b'/').unwrap_or(0)
    } else {
        bytes.len()
    };
    for i in 1..=end {
        if i == end || bytes[i] == b'/' {
            buf[..i].copy_from_slice(&bytes[..i]);
            buf[i] = 0;
            let prefix = CStr::from_bytes_with_nul(&buf[..=i]).map_err(|_| Errno::EINVAL)?;
            match sys.mkdir(prefix, 0o755) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

/// Runs the plan. On failure returns the index of the failing op and the error. `slots` must
/// have room for [`Plan::slots`] descriptors.
pub(crate) fn apply(
    ops: &[Op],
    slots: &mut [RawFd],
    sys: &mut impl Sys,
) -> Result<(), (usize, Errno)> {
    for (index, op) in ops.iter().enumerate() {
        run_op(op, slots, sys).map_err(|err| (index, err))?;
    }
    Ok(())
}

pub(super) fn run_op(op: &Op, slots: &mut [RawFd], sys: &mut impl Sys) -> nix::Result<()> {
    let dot = c".";
    match op {
        Op::Umask(mode) => {
            sys.umask(*mode);
            Ok(())
        }
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => sys.mount(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Op::MountLayers {
            target,
            lowers,
            upper_work,
            nodev,
        } => sys.mount_layers(
            target,
            lowers,
            upper_work
                .as_ref()
                .map(|(u, w)| (u.as_c_str(), w.as_c_str())),
            *nodev,
        ),
        Op::Chdir(path) => sys.chdir(path),
        Op::OpenSource { slot, path } => {
            slots[*slot] = sys.clone_tree(path)?;
            Ok(())
        }
        Op::Bind {
            slot,
            target,
            attributes,
        } => {
            // Read-only and nodev before it is attached, submounts included: a bind of a
            // directory holding mounts must not leave writable ones or device files inside.
            if !attributes.is_empty() {
                sys.set_tree_attributes(slots[*slot], *attributes)?;
            }
            sys.attach_tree(slots[*slot], target)
        }
        Op::SetAttributes {
            path,
            set,
            clear,
            recursive,
        } => sys.set_mount_attributes(path, *set, *clear, *recursive),
        Op::PivotRoot(root) => {
            sys.chdir(root)?;
            sys.pivot_root(dot, dot)?;
            sys.umount_detach(dot)?;
            sys.chdir(c"/")
        }
        Op::MkdirAll(path) => mkdir_all(sys, path, false),
        Op::Touch(path) => {
            mkdir_all(sys, path, true)?;
            sys.create_file(path, 0o644)
        }
        Op::Mknod { path, major, minor } => sys.mknod_char(path, 0o666, *major, *minor),
        Op::Symlink { target, link } => sys.symlink(target, link),
        Op::Mask(path) => match sys.mount(Some(c"/dev/null"), path, None, MsFlags::MS_BIND, None) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::ENOTDIR) => sys.mount(
                Some(c"tmpfs"),
                path,
                Some(c"tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            ),
            Err(err) => Err(err),
        },
        Op::ReadonlyPath(path) => match sys.mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ) {
            Err(Errno::ENOENT) => Ok(()),
            Err(err) => Err(err),
            // Every mount below it too (a remount would change the top one only).
            Ok(()) => sys.set_mount_attributes(
                path,
                MountAttributes::MOUNT_ATTR_RDONLY,
                MountAttributes::empty(),
                true,
            ),
        },
        Op::Unmount(path) => sys.umount_detach(path),
        Op::SetHostname(name) => sys.sethostname(name),
        Op::LoopbackUp => sys.loopback_up(),
        Op::OpenFile { slot, path } => {
            slots[*slot] = sys.open_file(path)?;
            Ok(())
        }
        Op::EnterUserNamespace => sys.enter_user_namespace(),
        Op::WriteWithFd {
            path,
            head,
            slot,
            tail,
        } => sys.write_with_fd(path, head.to_bytes(), slots[*slot], tail.to_bytes()),
        Op::CloseSlot(slot) => sys.close(std::mem::replace(&mut slots[*slot], -1)),
    }
}
