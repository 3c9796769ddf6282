//! [`exec`]: another process in a running container (`kiln exec`, health checks), and
//! [`parse_signal`] for `kiln kill -s` and `STOPSIGNAL`.
//!
//! # Overview
//!
//! 1. Before any fork, everything is read from the host: the container's namespaces
//!    (`/proc/PID/ns/{ipc,uts,net,pid,mnt}`, opened, and `user` where it has its own), its
//!    cgroups (`/proc/PID/cgroup`), its user database through `/proc/PID/root`, the `PATH`
//!    candidates, the seccomp program.
//! 2. A first child joins the cgroups and namespaces (see `sys::process::spawn_joined`) and
//!    forks the program into the container's PID namespace; it waits for it and exits with its
//!    code, which [`exec`] returns.
//! 3. The program gets Docker's default capabilities and seccomp profile (unless
//!    [`Security::Insecure`]), the container's root and the given user, directory and
//!    environment. A failure before the program runs comes back as [`Error::Setup`] or
//!    [`Error::Exec`], as for [`crate::Runner::run`].

use std::os::fd::{AsFd as _, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, pipe2};

use crate::cgroup::Hierarchy;
use crate::error::{Error, Result};
use crate::plan::{container_path, cstring};
use crate::run::{
    DOCKER_DEFAULT_CAPABILITIES, exec_args, exec_candidates, last_capability, read_report,
};
use crate::spec::{ExitStatus, Security, TerminalSize};
use crate::sys::process::{self, ChildFds, Launch, REPORT_EXEC, REPORT_STEP, Step};
use crate::view::RootView;

/// A process to start in a running container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// Program and arguments; a program without `/` is looked up in `PATH`.
    pub args: Vec<String>,
    /// Environment as `KEY=value` (`PATH` and `HOME` get Docker's defaults when absent).
    pub env: Vec<String>,
    /// Working directory inside the container (empty: `/`).
    pub cwd: PathBuf,
    /// `name`, `uid`, `name:group`, `uid:gid` (empty: root), from the container's /etc files.
    pub user: String,
    /// The container's confinement.
    pub security: Security,
    /// The container's `--cap-add`/`--cap-drop`.
    pub capabilities: crate::CapabilityChanges,
    /// A pseudo-terminal of this size for the process (`kiln exec -t`): its controlling
    /// terminal and all three of its streams. The `stdio` given to [`spawn_exec`] are then
    /// where the terminal's input comes from and its output goes to, relayed by
    /// [`ExecProcess::wait`].
    pub terminal: Option<TerminalSize>,
}

/// Starts `spec` in the running container whose PID 1 is `pid` (on the host), with the
/// standard streams `stdio` (stdin, stdout, stderr): the descriptors are duplicated into the
/// process, so the caller may close its own once this returns.
pub fn spawn_exec(pid: u32, spec: &ExecSpec, stdio: [BorrowedFd<'_>; 3]) -> Result<ExecProcess> {
    if spec.args.is_empty() {
        return Err(Error::EmptyArgs);
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let mut namespaces: Vec<(OwnedFd, CloneFlags)> = Vec::new();
    // A container running under an emulator of kiln's own has a user namespace of its own
    // (see `emulation`): joined after the namespaces the host's owns, before its mount one.
    let same_user_namespace = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        match (fs_err::metadata(a), fs_err::metadata(b)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => true,
        }
    };
    let own_user = !same_user_namespace(&proc_dir.join("ns/user"), Path::new("/proc/self/ns/user"));
    let user = own_user.then_some(("user", CloneFlags::CLONE_NEWUSER));
    for (name, kind) in [
        Some(("ipc", CloneFlags::CLONE_NEWIPC)),
        Some(("uts", CloneFlags::CLONE_NEWUTS)),
        Some(("net", CloneFlags::CLONE_NEWNET)),
        Some(("pid", CloneFlags::CLONE_NEWPID)),
        user,
        Some(("mnt", CloneFlags::CLONE_NEWNS)),
    ]
    .into_iter()
    .flatten()
    {
        let path = proc_dir.join("ns").join(name);
        let fd = open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|source| Error::NoContainerProcess { pid, source })?;
        namespaces.push((fd, kind));
    }
    let cgroups = fs_err::read_to_string(proc_dir.join("cgroup")).map_err(Error::Prepare)?;
    let cgroup_procs = Hierarchy::detect(Path::new("/sys/fs/cgroup"))
        .procs_of(&cgroups)
        .into_iter()
        .filter(|path| path.exists())
        .map(|path| cstring("cgroup path", path.as_os_str().as_encoded_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let view = RootView::new(vec![proc_dir.join("root")]);
    let user = crate::user::resolve(&view, &spec.user)?;
    let mut env = spec.env.clone();
    crate::run::default_env(&mut env, &user.home, false);
    let capabilities = match spec.security {
        Security::Sandbox => spec.capabilities.apply(
            DOCKER_DEFAULT_CAPABILITIES
                .iter()
                .fold(0u64, |mask, cap| mask | 1 << cap),
            last_capability(),
        ),
        Security::Insecure => {
            (0..=last_capability().min(63)).fold(0u64, |mask, cap| mask | 1 << cap)
        }
    };
    let cwd = if spec.cwd.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        spec.cwd.clone()
    };
    let launch = Launch {
        ops: Vec::new(),
        late_ops: 0,
        cgroup_procs,
        namespaces: CloneFlags::empty(),
        // The container's network namespace is joined with its others (`/proc/PID/ns`).
        join_network: None,
        exec_candidates: exec_candidates(&spec.args[0], &env)?,
        exec_args: exec_args(&spec.args, &env)?,
        cwd: cstring(
            "cwd",
            container_path("cwd", &cwd)?.as_os_str().as_encoded_bytes(),
        )?,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        capabilities,
        last_capability: last_capability(),
        rlimits: Vec::new(),
        seccomp: match spec.security {
            Security::Sandbox => Some(crate::seccomp::program(capabilities)?),
            Security::Insecure => None,
        },
        terminal: spec.terminal.is_some(),
    };
    let syscall = |call: &'static str| move |source| Error::Syscall { call, source };
    let (error_read, error_write) = pipe2(OFlag::O_CLOEXEC).map_err(syscall("pipe2"))?;
    // With a terminal, the process's three streams are the slave side of a new one.
    let mut slave = None;
    let terminal = match spec.terminal {
        Some(size) => {
            // In the container's own devpts; a container without one gets a host terminal.
            let in_container = open(
                &proc_dir.join("root"),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .and_then(|root| crate::sys::terminal::open_pty_in(&root, size));
            let (master, pty_slave) = match in_container {
                Ok(pty) => pty,
                Err(err) => {
                    tracing::debug!(error = %err, "no terminal in the container's devpts");
                    crate::sys::terminal::open_pty(size).map_err(syscall("openpty"))?
                }
            };
            slave = Some(pty_slave);
            Some(TerminalRelay {
                master,
                input: stdio[0].try_clone_to_owned().map_err(Error::Prepare)?,
                output: stdio[1].try_clone_to_owned().map_err(Error::Prepare)?,
            })
        }
        None => None,
    };
    let streams = match &slave {
        Some(slave) => [slave.as_raw_fd(); 3],
        None => stdio.map(|fd| fd.as_raw_fd()),
    };
    let fds = ChildFds {
        stdin: streams[0],
        stdout: streams[1],
        stderr: streams[2],
        error: error_write.as_raw_fd(),
    };
    let child = process::spawn_joined(&launch, &namespaces, fds)
        .map_err(|(call, source)| Error::Syscall { call, source })?;
    drop(error_write);
    // Only the process holds the slave side from now on: its master reads EIO once it is gone.
    drop(slave);
    let mut process = ExecProcess {
        child: Some(child),
        exited: None,
        error_read,
        program: spec.args[0].clone(),
        terminal,
    };
    process.exited = Some(process::pidfd_open(child).map_err(syscall("pidfd_open"))?);
    Ok(process)
}

/// Runs `spec` in the running container whose PID 1 is `pid` (on the host), with the standard
/// streams `stdio` (stdin, stdout, stderr), and returns how it ended: its code, or 128 + N
/// when killed by signal N.
pub fn exec(pid: u32, spec: &ExecSpec, stdio: [BorrowedFd<'_>; 3]) -> Result<ExitStatus> {
    spawn_exec(pid, spec, stdio)?.wait()
}

/// A process started by [`spawn_exec`]; killed (with the program) when dropped unwaited.
#[derive(Debug)]
pub struct ExecProcess {
    /// The first child (outside the container's PID namespace), until reaped.
    child: Option<Pid>,
    exited: Option<OwnedFd>,
    error_read: OwnedFd,
    program: String,
    terminal: Option<TerminalRelay>,
}

/// The caller's side of a process's pseudo-terminal ([`ExecSpec::terminal`]).
#[derive(Debug)]
struct TerminalRelay {
    master: OwnedFd,
    /// Written to the terminal (the caller's stdin, or /dev/null).
    input: OwnedFd,
    /// Where the terminal's output goes (the caller's stdout).
    output: OwnedFd,
}

impl TerminalRelay {
    /// Copies input to the terminal and the terminal's output out until the process `exited`
    /// (a pidfd) and the terminal has nothing more to read. When the caller has blocked
    /// `SIGWINCH`, each one resizes the terminal to the size of the caller's own (its output's,
    /// else its input's), as `docker exec -t` does.
    fn run(&self, exited: &OwnedFd) -> Result<()> {
        let syscall = |call: &'static str| move |source| Error::Syscall { call, source };
        let winch = window_changes().map_err(syscall("signalfd"))?;
        let follow = || {
            TerminalSize::of(&self.output)
                .or_else(|| TerminalSize::of(&self.input))
                .map(crate::sys::terminal::to_winsize)
        };
        if let Some(size) = follow() {
            let _ = crate::sys::terminal::set_winsize(&self.master, &size);
        }
        let mut buf = vec![0u8; 32 * 1024];
        let (mut input_open, mut running) = (true, true);
        loop {
            let mut fds = vec![PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            if running {
                fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
            }
            if input_open {
                fds.push(PollFd::new(self.input.as_fd(), PollFlags::POLLIN));
            }
            if let Some(winch) = &winch {
                fds.push(PollFd::new(winch.as_fd(), PollFlags::POLLIN));
            }
            // Once the process is gone, only what the terminal still holds is read.
            let timeout = if running {
                PollTimeout::NONE
            } else {
                PollTimeout::ZERO
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(source) => {
                    return Err(Error::Syscall {
                        call: "poll",
                        source,
                    });
                }
            }
            let ready = |fd: BorrowedFd<'_>| {
                fds.iter().any(|p| {
                    p.as_fd().as_raw_fd() == fd.as_raw_fd()
                        && p.revents().is_some_and(|r| !r.is_empty())
                })
            };
            let (master_ready, exited_ready, input_ready, winch_ready) = (
                ready(self.master.as_fd()),
                running && ready(exited.as_fd()),
                input_open && ready(self.input.as_fd()),
                winch.as_ref().is_some_and(|w| ready(w.as_fd())),
            );
            drop(fds);
            if master_ready {
                match nix::unistd::read(&self.master, &mut buf) {
                    // EIO: no process holds the slave side any more.
                    Ok(0) | Err(nix::errno::Errno::EIO) => return Ok(()),
                    Ok(n) => {
                        if crate::run::write_fd(self.output.as_fd(), &buf[..n]).is_err() {
                            return Ok(());
                        }
                    }
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(source) => {
                        return Err(Error::Syscall {
                            call: "read",
                            source,
                        });
                    }
                }
            } else if !running {
                return Ok(());
            }
            if exited_ready {
                running = false;
            }
            if input_ready {
                match nix::unistd::read(&self.input, &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = crate::run::write_fd(self.master.as_fd(), &buf[..n]);
                    }
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    _ => input_open = false,
                }
            }
            if winch_ready && let Some(winch) = &winch {
                let _ = winch.read_signal();
                if let Some(size) = follow() {
                    let _ = crate::sys::terminal::set_winsize(&self.master, &size);
                }
            }
        }
    }
}

/// A descriptor that reads each `SIGWINCH`, when the calling thread blocks it (the caller's
/// choice: otherwise the signal keeps its default, ignored).
fn window_changes() -> nix::Result<Option<SignalFd>> {
    let mut blocked = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut blocked))?;
    if !blocked.contains(Signal::SIGWINCH) {
        return Ok(None);
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map(Some)
}

impl ExecProcess {
    /// Waits until the program ends; with a terminal, relays it meanwhile.
    pub fn wait(mut self) -> Result<ExitStatus> {
        if let (Some(terminal), Some(exited)) = (self.terminal.take(), &self.exited) {
            terminal.run(exited)?;
        }
        self.reap()
    }

    /// Waits at most `timeout`; `None` when the program still runs. A terminal is not relayed.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if let Some(exited) = &self.exited {
            let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(exited.as_fd(), PollFlags::POLLIN)];
            let ready =
                poll(&mut fds, PollTimeout::from(millis)).map_err(|source| Error::Syscall {
                    call: "poll",
                    source,
                })?;
            if ready == 0 {
                return Ok(None);
            }
        }
        self.reap().map(Some)
    }

    /// Kills the program (its first child, which the program dies with).
    pub fn kill(&self) {
        if let Some(child) = self.child {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        }
    }

    fn reap(&mut self) -> Result<ExitStatus> {
        let Some(child) = self.child else {
            return Err(Error::NoStatus);
        };
        let report = read_report(&self.error_read);
        let status = loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => break ExitStatus::Code(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => break ExitStatus::Signal(signal as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(source) => {
                    return Err(Error::Syscall {
                        call: "waitpid",
                        source,
                    });
                }
            }
        };
        self.child = None;
        match report {
            Some((REPORT_EXEC, _, errno)) => Err(Error::Exec {
                program: self.program.clone(),
                source: nix::errno::Errno::from_raw(errno),
            }),
            Some((REPORT_STEP, step, errno)) => Err(Error::Setup {
                step: Step::from_code(step)
                    .map_or("unknown step", Step::describe)
                    .to_owned(),
                source: nix::errno::Errno::from_raw(errno),
            }),
            Some(_) => Err(Error::NoStatus),
            None => Ok(status),
        }
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
    }
}

/// Sends `signal` to the process `pid` (a container's PID 1 on the host).
pub fn signal_process(pid: u32, signal: Signal) -> Result<()> {
    let pid = i32::try_from(pid).map_err(|_| Error::Syscall {
        call: "kill",
        source: nix::errno::Errno::ESRCH,
    })?;
    nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|source| Error::Syscall {
        call: "kill",
        source,
    })
}

/// A signal as docker takes it: `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let bad = || Error::InvalidSignal {
        signal: text.to_owned(),
    };
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("usr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("QUIT").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(
            parse_signal("SIGBOGUS").unwrap_err().to_string(),
            "Invalid signal: SIGBOGUS"
        );
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn exec_needs_a_live_container() {
        let spec = ExecSpec {
            args: vec!["true".into()],
            ..ExecSpec::default()
        };
        let (out, err) = (std::io::stdout(), std::io::stderr());
        let null = fs_err::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd as _;
        let stdio = [null.file().as_fd(), out.as_fd(), err.as_fd()];
        assert!(matches!(
            exec(u32::MAX, &spec, stdio),
            Err(Error::NoContainerProcess { .. })
        ));
    }
}
