//! Pseudo-terminals and their window sizes (`openpty`, `TIOCGWINSZ`, `TIOCSWINSZ`), for the
//! terminal of a run and of a process joined to a running container.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::pty::Winsize;

use crate::spec::TerminalSize;

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, Winsize);
nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, Winsize);

/// A terminal's window size (`TIOCGWINSZ`).
pub(crate) fn winsize(terminal: &impl AsRawFd) -> nix::Result<Winsize> {
    let mut size = to_winsize(TerminalSize { rows: 0, cols: 0 });
    // SAFETY: TIOCGWINSZ writes one `winsize` struct, which `size` is.
    unsafe { tiocgwinsz(terminal.as_raw_fd(), &raw mut size) }?;
    Ok(size)
}

/// Sets a terminal's window size (`TIOCSWINSZ`).
pub(crate) fn set_winsize(terminal: &impl AsRawFd, size: &Winsize) -> nix::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `winsize` struct, which `size` points to.
    unsafe { tiocswinsz(terminal.as_raw_fd(), size) }.map(drop)
}

/// The kernel's form of a terminal size.
pub(crate) fn to_winsize(size: TerminalSize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A new pseudo-terminal of `size`: its master and slave sides, both close-on-exec (the
/// slave reaches a process as its standard streams, duplicated).
pub(crate) fn open_pty(size: TerminalSize) -> nix::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(Some(&to_winsize(size)), None)?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok((pty.master, pty.slave))
}

/// A new pseudo-terminal of `size` in the devpts instance of a running container whose root
/// `root` is (a descriptor of `/proc/PID/root`), so that the process sees it as its
/// `/dev/pts/N`, as in `docker exec -t`: master and slave, both close-on-exec.
///
/// The container's files are its own to change, so the walk follows no symbolic link and
/// stays in its root (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), and what it
/// opens must be a `ptmx` device; the slave comes from the master itself (`TIOCGPTPEER`),
/// never from a path.
pub(crate) fn open_pty_in(
    root: &impl AsRawFd,
    size: TerminalSize,
) -> nix::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd as _;

    // SAFETY: `open_how` is plain integers, for which zero is valid (and the kernel's default).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let path = c"dev/pts/ptmx";
    // SAFETY: openat2 reads a NUL-terminated path and one `open_how` of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the descriptor was just opened and is owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let stat = nix::sys::stat::fstat(&master)?;
    // The multiplexer is character device 5:2 in every devpts instance.
    if stat.st_mode & libc::S_IFMT != libc::S_IFCHR || stat.st_rdev != libc::makedev(5, 2) {
        return Err(nix::errno::Errno::ENOTTY);
    }
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int; TIOCGPTPEER takes open flags and returns a new
    // descriptor or -1.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &raw const unlock) < 0 {
            return Err(nix::errno::Errno::last());
        }
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: as above, a fresh descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_winsize(&master, &to_winsize(size))?;
    Ok((master, slave))
}
