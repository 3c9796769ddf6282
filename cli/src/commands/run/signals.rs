//! Signals and the terminal of `kiln run`: until the container starts, a signal aborts kiln;
//! afterwards it goes on to the container's process (see the module `run`).

use std::os::fd::AsFd as _;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use kiln_runner::{Handle, Signal, TerminalSize};
use nix::sys::signal::SigSet;
use nix::sys::termios::{self, SetArg, Termios};

/// Signals kiln receives that go on to the container's process, as `docker run` does.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The size of kiln's own terminal (standard output's, else standard input's), if it has one.
pub(crate) fn own_terminal_size() -> Option<TerminalSize> {
    TerminalSize::of(std::io::stdout()).or_else(|| TerminalSize::of(std::io::stdin()))
}

/// Blocks the forwarded signals in this thread and the threads it starts later (the
/// container's processes unblock them), and with a terminal (`tty`) `SIGWINCH` too. Returns
/// the set for [`SignalRoute::start`].
pub(crate) fn block_signals(tty: bool) -> anyhow::Result<SigSet> {
    let mut set = SigSet::empty();
    for signal in FORWARDED {
        set.add(signal);
    }
    if tty {
        set.add(Signal::SIGWINCH);
    }
    set.thread_block().context("blocking signals")?;
    Ok(set)
}

/// kiln was ended by this signal before the container started.
#[derive(Debug)]
pub(super) struct Interrupted(pub(super) Signal);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Where the signals kiln receives go: before the container starts they abort kiln (and wake
/// a pull through `aborted`), afterwards they go to the container.
pub(crate) struct SignalRoute {
    /// The running container's handle, once it starts.
    handle: Arc<Mutex<Option<Handle>>>,
    /// The first aborting signal.
    pub(super) aborted: tokio::sync::watch::Sender<Option<Signal>>,
}

impl SignalRoute {
    /// Starts a thread that waits for the signals of `set` (blocked by [`block_signals`]).
    /// `SIGWINCH` resizes the container's terminal to kiln's terminal's new size, as
    /// `docker run -t` does.
    pub(crate) fn start(set: SigSet, tty: bool) -> anyhow::Result<Self> {
        let handle: Arc<Mutex<Option<Handle>>> = Arc::default();
        let aborted = tokio::sync::watch::Sender::new(None);
        let (target, abort) = (Arc::clone(&handle), aborted.clone());
        std::thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                while let Ok(signal) = set.wait() {
                    let target = target.lock().unwrap_or_else(PoisonError::into_inner);
                    match (&*target, signal) {
                        (Some(handle), Signal::SIGWINCH) => {
                            if tty && let Some(size) = own_terminal_size() {
                                tracing::debug!(rows = size.rows, cols = size.cols, "resizing");
                                handle.resize(size);
                            }
                        }
                        (None, Signal::SIGWINCH) => {}
                        (Some(handle), _) => {
                            tracing::debug!(%signal, "forwarding");
                            handle.signal(signal);
                        }
                        (None, _) => {
                            tracing::debug!(%signal, "aborting before the container starts");
                            abort.send_if_modified(|first| {
                                first.is_none() && first.replace(signal).is_none()
                            });
                        }
                    }
                }
            })
            .context("starting the signal thread")?;
        Ok(Self { handle, aborted })
    }

    /// Fails with [`Interrupted`] if a signal has aborted kiln.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        match *self.aborted.borrow() {
            Some(signal) => Err(Interrupted(signal).into()),
            None => Ok(()),
        }
    }

    /// From now on signals go to the container of `handle` (queued until it runs), unless
    /// one has aborted kiln already.
    pub(crate) fn attach(&self, handle: &Handle, tty: bool) -> anyhow::Result<()> {
        let mut target = self.handle.lock().unwrap_or_else(PoisonError::into_inner);
        self.check()?;
        if tty && let Some(size) = own_terminal_size() {
            // A resize before SIGWINCH was blocked went unnoticed: send the size once more.
            handle.resize(size);
        }
        *target = Some(handle.clone());
        Ok(())
    }
}

/// The terminal of standard input in raw mode (for `-it`), restored when dropped.
pub(crate) struct RawMode(Termios);

impl RawMode {
    pub(crate) fn enable() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}
