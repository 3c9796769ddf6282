//! The run's loop after the fork: streaming output (and input, and a terminal's size) until
//! the process exits, while serving the handle's requests and the deadline.

use super::*;

pub(super) enum Stop {
    Cancelled,
    TimedOut,
}

pub(super) struct Pumped {
    pub(super) status: Option<ExitStatus>,
    pub(super) stopped: Option<Stop>,
}

/// Streams output until the container's process has exited (`exited` polls readable; it is
/// then reaped here) and every output is closed, serving the handle and the deadline.
#[expect(clippy::too_many_arguments, reason = "one internal call site")]
pub(super) fn pump(
    outputs: Vec<(OwnedFd, bool)>,
    exited: &OwnedFd,
    input: Option<&OwnedFd>,
    terminal: Option<&OwnedFd>,
    handle: &Handle,
    deadline: Option<Instant>,
    cleanup: &mut Cleanup,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Pumped> {
    let mut outputs: Vec<Option<(OwnedFd, bool)>> = outputs.into_iter().map(Some).collect();
    let mut running = true;
    let mut status = None;
    let mut input_open = input.is_some();
    let mut stopped = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !running && outputs.iter().all(Option::is_none) {
            break;
        }
        let mut pollfds = Vec::with_capacity(5);
        let mut kinds = Vec::with_capacity(5);
        for (index, output) in outputs.iter().enumerate() {
            if let Some((fd, _)) = output {
                pollfds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                kinds.push(index as i32);
            }
        }
        if running {
            pollfds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
            kinds.push(-1);
        }
        pollfds.push(PollFd::new(
            handle.inner.wake_read.as_fd(),
            PollFlags::POLLIN,
        ));
        kinds.push(-2);
        if let (true, Some(input)) = (input_open, input) {
            pollfds.push(PollFd::new(input.as_fd(), PollFlags::POLLIN));
            kinds.push(-3);
        }
        let timeout = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut pollfds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                return Err(Error::Syscall {
                    call: "poll",
                    source: err,
                });
            }
        }
        let ready: Vec<(i32, bool)> = pollfds
            .iter()
            .zip(&kinds)
            .map(|(p, k)| (*k, p.revents().is_some_and(|r| !r.is_empty())))
            .collect();
        drop(pollfds);
        if stopped.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            stopped = Some(Stop::TimedOut);
            kill_container(cleanup.init);
        }
        for (kind, is_ready) in ready {
            if !is_ready {
                continue;
            }
            match kind {
                -1 => {
                    running = false;
                    if let Some(pid) = cleanup.init.take() {
                        status = match waitpid(pid, None) {
                            Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus::Code(code)),
                            Ok(WaitStatus::Signaled(_, signal, _)) => {
                                Some(ExitStatus::Signal(signal as i32))
                            }
                            _ => None,
                        };
                    }
                }
                -2 => {
                    for request in handle.take() {
                        match request {
                            Request::Cancel => {
                                if stopped.is_none() {
                                    stopped = Some(Stop::Cancelled);
                                }
                                kill_container(cleanup.init);
                            }
                            Request::Signal(signal) => {
                                if let Some(init) = cleanup.init {
                                    let _ = kill(init, signal);
                                }
                            }
                            Request::Resize(size) => {
                                if let Some(terminal) = terminal {
                                    let _ = crate::sys::terminal::set_winsize(
                                        terminal,
                                        &crate::sys::terminal::to_winsize(size),
                                    );
                                }
                            }
                        }
                    }
                }
                -3 => {
                    let (Some(input), Some(terminal)) = (input, terminal) else {
                        continue;
                    };
                    match read(input, &mut buf) {
                        Ok(0) | Err(Errno::EIO) => input_open = false,
                        Ok(n) => {
                            let _ = write_fd(terminal.as_fd(), &buf[..n]);
                        }
                        Err(Errno::EINTR | Errno::EAGAIN) => {}
                        Err(_) => input_open = false,
                    }
                }
                index => {
                    let index = index as usize;
                    let Some((fd, is_stderr)) = &outputs[index] else {
                        continue;
                    };
                    let is_stderr = *is_stderr;
                    match read(fd, &mut buf) {
                        // A terminal's master reads EIO once no process holds the slave.
                        Ok(0) | Err(Errno::EIO) => outputs[index] = None,
                        Ok(n) => {
                            let (result, stream) = if is_stderr {
                                (
                                    stderr.write_all(&buf[..n]).and_then(|()| stderr.flush()),
                                    "stderr",
                                )
                            } else {
                                (
                                    stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()),
                                    "stdout",
                                )
                            };
                            result.map_err(|source| Error::Sink { stream, source })?;
                        }
                        Err(Errno::EINTR | Errno::EAGAIN) => {}
                        Err(err) => {
                            return Err(Error::Syscall {
                                call: "read",
                                source: err,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(Pumped { status, stopped })
}

pub(crate) fn write_fd(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
