//! [`Sys`] over the real kernel.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{
    ForkResult, chdir, fork, mkdir, pipe2, pivot_root, read, sethostname, symlinkat, write,
};

use super::{MountAttributes, Sys};

/// The real system calls.
pub(crate) struct LinuxSys;

/// `AT_RECURSIVE` of `<linux/fcntl.h>`: the call applies to the whole mount tree.
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `mount_setattr(dirfd, path, flags, {attr_set: set, attr_clr: clear})`.
fn mount_setattr(
    dirfd: RawFd,
    path: &CStr,
    flags: libc::c_uint,
    set: MountAttributes,
    clear: MountAttributes,
) -> nix::Result<()> {
    /// `struct mount_attr` of `<linux/mount.h>` (libc has no definition).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set.bits(),
        attr_clr: clear.bits(),
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads a NUL-terminated path and `size` bytes of `attr`, both alive
    // for the call (nix has no wrapper).
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits)
}

impl Sys for LinuxSys {
    fn umask(&mut self, bits: u32) {
        nix::sys::stat::umask(mode(bits));
    }

    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: MsFlags,
        data: Option<&CStr>,
    ) -> nix::Result<()> {
        mount(source, target, fstype, flags, data)
    }

    fn mount_layers(
        &mut self,
        target: &CStr,
        lowers: &[CString],
        upper_work: Option<(&CStr, &CStr)>,
        nodev: bool,
    ) -> nix::Result<()> {
        let attributes = kiln_fsutil::MountAttributes {
            readonly: false,
            nodev,
        };
        kiln_fsutil::mount_layers(target, lowers, upper_work, attributes).map_err(|e| e.errno)
    }

    fn umount_detach(&mut self, target: &CStr) -> nix::Result<()> {
        umount2(target, MntFlags::MNT_DETACH)
    }

    fn mkdir(&mut self, path: &CStr, bits: u32) -> nix::Result<()> {
        mkdir(path, mode(bits))
    }

    fn create_file(&mut self, path: &CStr, bits: u32) -> nix::Result<()> {
        match open(
            path,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            mode(bits),
        ) {
            Ok(fd) => {
                drop(fd);
                Ok(())
            }
            // A directory (or anything else that cannot be opened for writing) already exists.
            Err(Errno::EISDIR) => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn mknod_char(&mut self, path: &CStr, bits: u32, major: u64, minor: u64) -> nix::Result<()> {
        mknod(path, SFlag::S_IFCHR, mode(bits), makedev(major, minor))
    }

    fn symlink(&mut self, target: &CStr, link: &CStr) -> nix::Result<()> {
        symlinkat(target, nix::fcntl::AT_FDCWD, link)
    }

    fn chdir(&mut self, path: &CStr) -> nix::Result<()> {
        chdir(path)
    }

    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> nix::Result<()> {
        pivot_root(new_root, put_old)
    }

    fn clone_tree(&mut self, path: &CStr) -> nix::Result<RawFd> {
        const OPEN_TREE_CLONE: libc::c_uint = 1;
        let flags = OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint;
        // SAFETY: open_tree reads a NUL-terminated path and returns a new descriptor (nix has
        // no wrapper for the new mount API).
        let fd =
            unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        if fd < 0 {
            Err(Errno::last())
        } else {
            Ok(fd as RawFd)
        }
    }

    fn set_tree_attributes(&mut self, fd: RawFd, attributes: MountAttributes) -> nix::Result<()> {
        mount_setattr(
            fd,
            c"",
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            attributes,
            MountAttributes::empty(),
        )
    }

    fn set_mount_attributes(
        &mut self,
        path: &CStr,
        set: MountAttributes,
        clear: MountAttributes,
        recursive: bool,
    ) -> nix::Result<()> {
        let flags = if recursive { AT_RECURSIVE } else { 0 };
        mount_setattr(libc::AT_FDCWD, path, flags, set, clear)
    }

    fn attach_tree(&mut self, fd: RawFd, target: &CStr) -> nix::Result<()> {
        const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
        // SAFETY: move_mount reads two NUL-terminated paths; `fd` is a tree from `clone_tree`.
        let result = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        let result = if result < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        };
        // SAFETY: `fd` came from `clone_tree` and is not used again.
        unsafe { libc::close(fd) };
        result
    }

    fn sethostname(&mut self, name: &CStr) -> nix::Result<()> {
        sethostname(OsStr::from_bytes(name.to_bytes()))
    }

    fn loopback_up(&mut self) -> nix::Result<()> {
        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the interface named in `req` and writes its flags into the
        // union; `req` is a valid, live ifreq and the socket is open.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(Errno::last());
        }
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union, so reading it is valid.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    fn open_file(&mut self, path: &CStr) -> nix::Result<RawFd> {
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(fd.into_raw_fd())
    }

    fn enter_user_namespace(&mut self) -> nix::Result<()> {
        let mut uid_map = Buffer::new();
        let mut gid_map = Buffer::new();
        let pid = nix::unistd::getpid().as_raw();
        for (buffer, file) in [(&mut uid_map, b"/uid_map"), (&mut gid_map, b"/gid_map")] {
            buffer.push(b"/proc/")?;
            buffer.push_number(pid as u64)?;
            buffer.push(file)?;
            buffer.push(b"\0")?;
        }
        let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC)?;
        // SAFETY: the helper only makes syscalls on the buffers above and ends in `_exit`.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(ready_write);
                let mut byte = [0u8];
                let told = loop {
                    match read(&ready_read, &mut byte) {
                        Err(Errno::EINTR) => {}
                        other => break other == Ok(1),
                    }
                };
                let mut code = 0;
                if told {
                    for map in [&uid_map, &gid_map] {
                        let written = CStr::from_bytes_with_nul(map.bytes())
                            .map_err(|_| Errno::EINVAL)
                            .and_then(|path| {
                                open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                            })
                            .and_then(|fd| write(&fd, b"0 0 4294967295\n"));
                        if let Err(err) = written {
                            code = err as i32;
                            break;
                        }
                    }
                } else {
                    code = Errno::ECANCELED as i32;
                }
                // SAFETY: ends the helper without running the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(ready_read);
                let unshared = unshare(
                    CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS,
                );
                if unshared.is_ok() {
                    // The helper gives up, and the wait below returns, if this fails.
                    let _ = write(&ready_write, b"1");
                }
                drop(ready_write);
                let status = loop {
                    match waitpid(child, None) {
                        Err(Errno::EINTR) => {}
                        other => break other,
                    }
                };
                unshared?;
                match status? {
                    WaitStatus::Exited(_, 0) => Ok(()),
                    WaitStatus::Exited(_, code) => Err(Errno::from_raw(code)),
                    _ => Err(Errno::ECHILD),
                }
            }
        }
    }

    fn write_with_fd(
        &mut self,
        path: &CStr,
        head: &[u8],
        fd: RawFd,
        tail: &[u8],
    ) -> nix::Result<()> {
        let mut line = Buffer::new();
        line.push(head)?;
        line.push_number(fd as u64)?;
        line.push(tail)?;
        let file = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        let written = write(&file, line.bytes())?;
        if written == line.bytes().len() {
            Ok(())
        } else {
            Err(Errno::EIO)
        }
    }

    fn close(&mut self, fd: RawFd) -> nix::Result<()> {
        nix::unistd::close(fd)
    }
}

/// Bytes assembled on the stack (the forked child must not allocate).
struct Buffer {
    bytes: [u8; 512],
    len: usize,
}

impl Buffer {
    fn new() -> Self {
        Self {
            bytes: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> nix::Result<()> {
        let end = self.len + bytes.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(Errno::ENAMETOOLONG)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn push_number(&mut self, mut number: u64) -> nix::Result<()> {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (number % 10) as u8;
            number /= 10;
            if number == 0 {
                break;
            }
        }
        self.push(&digits[start..])
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
