//! Terminal window sizes (`TIOCGWINSZ`, `TIOCSWINSZ`), for the spec's terminal size and the
//! pseudo-terminal of a run.

use std::os::fd::AsRawFd;

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, nix::pty::Winsize);
nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, nix::pty::Winsize);

/// A terminal's window size (`TIOCGWINSZ`).
pub(crate) fn winsize(terminal: &impl AsRawFd) -> nix::Result<nix::pty::Winsize> {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` struct, which `size` is.
    unsafe { tiocgwinsz(terminal.as_raw_fd(), &raw mut size) }?;
    Ok(size)
}

/// Sets a terminal's window size (`TIOCSWINSZ`).
pub(crate) fn set_winsize(terminal: &impl AsRawFd, size: &nix::pty::Winsize) -> nix::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `winsize` struct, which `size` points to.
    unsafe { tiocswinsz(terminal.as_raw_fd(), size) }.map(drop)
}
