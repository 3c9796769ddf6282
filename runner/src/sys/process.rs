//! Forking into the namespaces, the container's init, and the final exec.
//!
//! # Why fork, and what the children may do
//!
//! The runner forks straight from the calling process (no re-exec of a helper binary), which
//! keeps the cost of a step to a couple of `fork`s. The caller may be a multi-threaded async
//! runtime, and after `fork` only the calling thread exists: any lock another thread held (in
//! the allocator, in `tracing`, in stdio) stays locked forever in the child. So everything the
//! children need — C strings, the `execve` pointer arrays, paths, the mount plan, the `PATH`
//! candidates, cgroup files — is computed before the fork ([`Launch`]), and the children only
//! make syscalls: they do not allocate, log or unwind; they report failures as fixed-size
//! records on a pipe and leave with `_exit`. We use glibc's `fork()` rather than a raw `clone`
//! so that glibc's own state stays consistent in the child (its fork handlers reset the
//! allocator's locks and the thread list that `setuid`/`setgid` broadcast to).
//!
//! # One process
//!
//! The container's process is forked by the caller's thread straight into a new PID namespace
//! (see [`spawn`]) and is PID 1 there, as under runc: `$$` is 1 and /proc/1 is the step's own
//! program, never a more privileged helper. It moves its descriptors to 0..=3 and closes every
//! other one (so it holds no other container's pipes), dies with the caller's thread
//! (`PR_SET_PDEATHSIG`), joins the cgroup, `unshare`s the mount, UTS, IPC and (unless `host`)
//! network namespaces, applies the mount plan, restores signal dispositions, starts a session
//! (and takes the terminal), sets its resource limits, installs the seccomp filter, drops to the container's capability
//! set, sets groups, gid and uid, and execs the program.
//!
//! The caller, outside the namespace, waits for it through a pidfd, forwards signals to it and
//! kills it on every exit path. When PID 1 exits the kernel kills whatever else is left in the
//! namespace, and the wait returns only once they are all gone, so nothing outlives a run.
//! Like any PID 1, the program only receives signals it has a handler for (SIGKILL from the
//! caller always works), and orphaned processes are reparented to it.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, setgid, setgroups, setsid, setuid};

use super::LinuxSys;
use crate::plan::{Op, apply};

/// Descriptor number of the error pipe inside the container's process.
const FD_ERROR: RawFd = 3;

/// Report kinds on the error pipe.
pub(crate) const REPORT_OP: u32 = 1;
pub(crate) const REPORT_STEP: u32 = 2;
pub(crate) const REPORT_EXEC: u32 = 3;
/// A `setrlimit` failed; the index is the limit's in [`Launch::rlimits`].
pub(crate) const REPORT_RLIMIT: u32 = 4;

/// Fixed steps outside the mount plan, as reported with [`REPORT_STEP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    Descriptors = 0,
    JoinCgroup = 1,
    Unshare = 2,
    Seccomp = 3,
    Setsid = 4,
    Terminal = 5,
    Chdir = 6,
    Capabilities = 7,
    Setgroups = 8,
    Setgid = 9,
    Setuid = 10,
    Signals = 11,
    Setns = 12,
    Fork = 13,
    JoinNetwork = 14,
}

impl Step {
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        const ALL: [Step; 15] = [
            Step::Descriptors,
            Step::JoinCgroup,
            Step::Unshare,
            Step::Seccomp,
            Step::Setsid,
            Step::Terminal,
            Step::Chdir,
            Step::Capabilities,
            Step::Setgroups,
            Step::Setgid,
            Step::Setuid,
            Step::Signals,
            Step::Setns,
            Step::Fork,
            Step::JoinNetwork,
        ];
        ALL.get(code as usize).copied()
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Descriptors => "arrange file descriptors",
            Self::JoinCgroup => "join the cgroup",
            Self::JoinNetwork => "join the network namespace",
            Self::Unshare => "create namespaces",
            Self::Seccomp => "install the seccomp filter",
            Self::Setsid => "start a session",
            Self::Terminal => "set the controlling terminal",
            Self::Chdir => "change to the working directory",
            Self::Capabilities => "set capabilities",
            Self::Setgroups => "set supplementary groups",
            Self::Setgid => "set the group id",
            Self::Setuid => "set the user id",
            Self::Signals => "reset signal handling",
            Self::Setns => "join the container's namespaces",
            Self::Fork => "fork into the container's PID namespace",
        }
    }
}

/// Everything the children need, computed before the fork.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The mount plan's ops, then those applied after the resource limits (its step 9).
    pub(crate) ops: Vec<Op>,
    /// Where the ops applied after the resource limits begin in `ops`.
    pub(crate) late_ops: usize,
    pub(crate) cgroup_procs: Vec<CString>,
    pub(crate) namespaces: CloneFlags,
    /// A network namespace file to join (instead of a fresh namespace or the host's).
    pub(crate) join_network: Option<CString>,
    /// Paths to try with `execve`, in order (the `PATH` lookup, done ahead).
    pub(crate) exec_candidates: Vec<CString>,
    pub(crate) exec_args: ExecArgs,
    pub(crate) cwd: CString,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<Gid>,
    /// Capability bit mask for the bounding, permitted and effective sets.
    pub(crate) capabilities: u64,
    /// Highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`).
    pub(crate) last_capability: u32,
    /// Resource limits to set, in order.
    pub(crate) rlimits: Vec<crate::ulimit::Rlimit>,
    /// The seccomp filter to install, if any.
    pub(crate) seccomp: Option<std::sync::Arc<crate::seccomp::Program>>,
    pub(crate) terminal: bool,
}

/// Arguments and environment for `execve`, with the pointer arrays built ahead so the child
/// does not allocate them after the fork.
#[derive(Debug)]
pub(crate) struct ExecArgs {
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// Pointers into `argv`'s heap buffers (which do not move with the `Vec`), null-terminated.
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl ExecArgs {
    pub(crate) fn new(argv: Vec<CString>, envp: Vec<CString>) -> Self {
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        Self {
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            argv,
            envp,
        }
    }

    /// The arguments (for tests and diagnostics).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read through the pointer arrays")
    )]
    pub(crate) fn argv(&self) -> &[CString] {
        &self.argv
    }

    /// The environment (for tests and diagnostics).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read through the pointer arrays")
    )]
    pub(crate) fn envp(&self) -> &[CString] {
        &self.envp
    }
}

/// The descriptors init starts with (in the caller's numbering).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildFds {
    pub(crate) stdin: RawFd,
    pub(crate) stdout: RawFd,
    pub(crate) stderr: RawFd,
    pub(crate) error: RawFd,
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    // SAFETY: `fd` is one of the descriptors this process arranged at 0..=4 and keeps open
    // for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn record(a: u32, b: u32, c: i32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&a.to_ne_bytes());
    out[4..8].copy_from_slice(&b.to_ne_bytes());
    out[8..].copy_from_slice(&c.to_ne_bytes());
    out
}

fn fail(kind: u32, index: u32, err: Errno) -> ! {
    write_all(FD_ERROR, &record(kind, index, err as i32));
    exit(1)
}

fn fail_step(step: Step, err: Errno) -> ! {
    fail(REPORT_STEP, step as u32, err)
}

/// Moves this process into the cgroups of `launch` (a `0` written to each `cgroup.procs`),
/// from the host's mount namespace; the first failure is answered. Makes no allocation.
fn join_cgroups(launch: &Launch) -> Result<(), Errno> {
    for path in &launch.cgroup_procs {
        let fd = open(
            path.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        nix::unistd::write(&fd, b"0")?;
    }
    Ok(())
}

fn exit(code: i32) -> ! {
    // SAFETY: `_exit` ends the process at once without running atexit handlers or flushing
    // stdio buffers copied from the caller, which is what a forked child must do.
    unsafe { libc::_exit(code) }
}

/// The caller's own PID namespace, opened once: the thread that forks a container switches its
/// namespace for children back to it right after the fork.
static OWN_PID_NAMESPACE: OnceLock<nix::Result<OwnedFd>> = OnceLock::new();

/// Forks the container's process as PID 1 of a new PID namespace. In the parent returns its
/// pid; the child never returns.
///
/// `unshare(CLONE_NEWPID)` only changes the namespace the calling *thread*'s next children go
/// into, so the thread enters a fresh one, forks, and at once returns to its own with `setns`
/// — leaving it exactly as it was, with no intermediate process. Common signals are blocked on
/// the thread across the fork, so the child cannot be stopped half set up by a signal meant for
/// the caller; it resets its mask and dispositions before the exec.
pub(crate) fn spawn(
    launch: &Launch,
    fds: ChildFds,
    slots: &mut [RawFd],
) -> Result<Pid, (&'static str, Errno)> {
    let own = OWN_PID_NAMESPACE
        .get_or_init(|| {
            open(
                c"/proc/thread-self/ns/pid",
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        })
        .as_ref()
        .map_err(|err| ("open /proc/thread-self/ns/pid", *err))?;
    let saved_mask = block_signals()?;
    let forked = unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|err| ("unshare(CLONE_NEWPID)", err))
        .and_then(|()| {
            // SAFETY: the child only makes syscalls on data prepared before the fork (see the
            // module documentation) and always ends in `_exit` or `execve`.
            unsafe { fork() }.map_err(|err| ("fork", err))
        });
    if let Ok(ForkResult::Child) = forked {
        container_process(launch, fds, slots);
    }
    // Back to this thread's own namespaces and signal mask, whatever happened.
    let restored = setns(own, CloneFlags::CLONE_NEWPID);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved_mask), None);
    let child = match forked? {
        ForkResult::Parent { child } => child,
        ForkResult::Child => unreachable!("the child does not return"),
    };
    if let Err(err) = restored {
        // Should not happen (setns back to our own namespace); do not leave the child running.
        tracing::error!(error = %err, "cannot return to the process's PID namespace");
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(("setns(CLONE_NEWPID)", err));
    }
    Ok(child)
}

/// Blocks [`blocked_signals`] in the calling thread, so that a child forked now starts with
/// them blocked; answers the thread's mask from before, to restore once the child is forked.
fn block_signals() -> Result<SigSet, (&'static str, Errno)> {
    let mut saved = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&blocked_signals()),
        Some(&mut saved),
    )
    .map_err(|err| ("pthread_sigmask", err))?;
    Ok(saved)
}

fn blocked_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(signal);
    }
    set
}

/// Moves `fds` to 0..=3 and closes everything else.
fn arrange_fds(fds: ChildFds) -> nix::Result<()> {
    let wanted = [fds.stdin, fds.stdout, fds.stderr, fds.error];
    let floor = wanted.iter().copied().max().unwrap_or(0) + 1;
    let mut high = [0; 4];
    for (slot, fd) in high.iter_mut().zip(wanted) {
        // SAFETY: `fd` is a descriptor the caller opened and keeps open across the fork.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        *slot = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(floor))?;
    }
    for (target, fd) in high.iter().enumerate() {
        // SAFETY: `dup2` onto a small fixed number; whatever was there is ours to replace.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            return Err(Errno::last());
        }
    }
    // SAFETY: closes every descriptor from 4 up; none of them is used by this process again.
    if unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: 3 was just set up by `dup2` above.
    let error = unsafe { BorrowedFd::borrow_raw(FD_ERROR) };
    fcntl(error, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Ends a forked child with `_exit(127)` if a panic unwinds through it, so that unwinding can
/// never return into the caller's code in the child. The child functions never return, so
/// this only drops during unwinding.
struct ExitOnUnwind;

impl Drop for ExitOnUnwind {
    fn drop(&mut self) {
        exit(127)
    }
}

fn container_process(launch: &Launch, fds: ChildFds, slots: &mut [RawFd]) -> ! {
    let _guard = ExitOnUnwind;
    if let Err(err) = arrange_fds(fds) {
        // The error pipe may not be at 3 yet: write to where the caller put it.
        write_all(
            fds.error,
            &record(REPORT_STEP, Step::Descriptors as u32, err as i32),
        );
        exit(1);
    }
    // Die with the caller's thread, which blocks in `run` until we are gone. (Our parent is
    // outside the PID namespace, so `getppid` reads 0 and cannot tell whether it already died;
    // the caller also kills us by pid on every exit path.)
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Err(err) = join_cgroups(launch) {
        fail_step(Step::JoinCgroup, err);
    }
    if let Some(path) = &launch.join_network {
        // Opened in the host's mount namespace, before the container gets its own.
        let joined = open(
            path.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| setns(fd, CloneFlags::CLONE_NEWNET));
        if let Err(err) = joined {
            fail_step(Step::JoinNetwork, err);
        }
    }
    if let Err(err) = unshare(launch.namespaces) {
        fail_step(Step::Unshare, err);
    }
    let (setup, late) = launch.ops.split_at(launch.late_ops.min(launch.ops.len()));
    if let Err((index, err)) = apply(setup, slots, &mut LinuxSys) {
        fail(REPORT_OP, index as u32, err);
    }
    // The cloned mount trees in `slots` were closed when they were attached.
    if let Err(err) = reset_signals() {
        fail_step(Step::Signals, err);
    }
    if let Err(err) = setsid() {
        fail_step(Step::Setsid, err);
    }
    if launch.terminal {
        take_terminal();
    }
    if let Err(err) = nix::unistd::chdir(launch.cwd.as_c_str()) {
        fail_step(Step::Chdir, err);
    }
    // After the setup, which opens descriptors and writes files a low limit could refuse;
    // before the capabilities go, as raising a hard limit takes CAP_SYS_RESOURCE.
    for (index, limit) in launch.rlimits.iter().enumerate() {
        if let Err(err) = nix::sys::resource::setrlimit(limit.resource, limit.soft, limit.hard) {
            fail(REPORT_RLIMIT, index as u32, err);
        }
    }
    // An emulator of kiln's own: the user namespace comes last, once nothing is left to do
    // that takes a capability in the host's namespace.
    if let Err((index, err)) = apply(late, slots, &mut LinuxSys) {
        fail(REPORT_OP, (setup.len() + index) as u32, err);
    }
    confine_and_exec(launch)
}

/// The last steps of every container process, a container's own or one joined to it: the
/// seccomp filter, the capabilities, the groups and ids, then the program.
fn confine_and_exec(launch: &Launch) -> ! {
    // The filter goes on while the process still has CAP_SYS_ADMIN: without no_new_privs
    // (which Docker and BuildKit leave off, so setuid programs keep working) the kernel
    // refuses it to a process without that capability. This is where runc puts it in that
    // case; the profile allows every call that follows (capset, prctl, setgroups, setgid,
    // setuid, execve).
    if let Some(program) = &launch.seccomp {
        if let Err(err) = install_seccomp(program.instructions()) {
            fail_step(Step::Seccomp, err);
        }
    }
    if let Err(err) = set_capabilities(launch.capabilities, launch.last_capability) {
        fail_step(Step::Capabilities, err);
    }
    if let Err(err) = setgroups(&launch.groups) {
        fail_step(Step::Setgroups, err);
    }
    if let Err(err) = setgid(Gid::from_raw(launch.gid)) {
        fail_step(Step::Setgid, err);
    }
    // Without SECBIT_KEEP_CAPS, a non-zero uid clears the permitted and effective sets, as
    // Docker's non-root users have it; root keeps Docker's default set.
    if let Err(err) = setuid(Uid::from_raw(launch.uid)) {
        fail_step(Step::Setuid, err);
    }
    // Changing credentials cleared the parent-death signal; set it again.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    exec(launch)
}

/// Forks a process that joins a running container — its cgroups (`launch.cgroup_procs`) and
/// the namespaces `namespaces` (descriptors of `/proc/PID/ns/*`, the mount namespace last) —
/// and forks again so that the program runs inside its PID namespace, with the container's
/// confinement (seccomp, capabilities, user) as [`container_process`] sets it. The first child
/// stays in the caller's PID namespace, waits for the second and exits with its code (128 + N
/// when killed by signal N). Returns the first child's pid; neither child returns.
pub(crate) fn spawn_joined(
    launch: &Launch,
    namespaces: &[(OwnedFd, CloneFlags)],
    fds: ChildFds,
) -> Result<Pid, (&'static str, Errno)> {
    let saved_mask = block_signals()?;
    // SAFETY: the child only makes syscalls on data prepared before the fork (see the module
    // documentation) and always ends in `_exit` or `execve`.
    let forked = unsafe { fork() };
    if let Ok(ForkResult::Child) = forked {
        joining_process(launch, namespaces, fds);
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved_mask), None);
    match forked.map_err(|err| ("fork", err))? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => unreachable!("the child does not return"),
    }
}

fn joining_process(launch: &Launch, namespaces: &[(OwnedFd, CloneFlags)], fds: ChildFds) -> ! {
    let _guard = ExitOnUnwind;
    let fail_early = |step: Step, err: Errno| -> ! {
        // The error pipe is not at 3 yet: write to where the caller put it.
        write_all(fds.error, &record(REPORT_STEP, step as u32, err as i32));
        exit(1)
    };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The cgroup files are the host's: join them before the mount namespace.
    if let Err(err) = join_cgroups(launch) {
        fail_early(Step::JoinCgroup, err);
    }
    for (fd, kind) in namespaces {
        if let Err(err) = setns(fd, *kind) {
            fail_early(Step::Setns, err);
        }
    }
    if let Err(err) = arrange_fds(fds) {
        fail_early(Step::Descriptors, err);
    }
    // SAFETY: as above, the grandchild only makes syscalls and ends in `_exit` or `execve`.
    match unsafe { fork() } {
        Err(err) => fail_step(Step::Fork, err),
        Ok(ForkResult::Child) => joined_program(launch),
        Ok(ForkResult::Parent { child }) => {
            // Only the program writes to the error pipe from now on.
            let _ = nix::unistd::close(FD_ERROR);
            loop {
                match waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => exit(code),
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => {
                        exit(128 + signal as i32)
                    }
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => exit(1),
                }
            }
        }
    }
}

/// Makes the terminal on fd 0 (a pseudo-terminal's slave side) the controlling terminal of
/// this process, a session leader.
fn take_terminal() {
    // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is the terminal's slave side.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        fail_step(Step::Terminal, Errno::last());
    }
}

/// The program of [`spawn_joined`], inside the container's namespaces.
fn joined_program(launch: &Launch) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Err(err) = reset_signals() {
        fail_step(Step::Signals, err);
    }
    if launch.terminal {
        if let Err(err) = setsid() {
            fail_step(Step::Setsid, err);
        }
        take_terminal();
    }
    if let Err(err) = nix::unistd::chdir(launch.cwd.as_c_str()) {
        fail_step(Step::Chdir, err);
    }
    confine_and_exec(launch)
}

/// `execve`s the first candidate that exists; reports the first real error otherwise.
fn exec(launch: &Launch) -> ! {
    let mut first_error = Errno::ENOENT;
    for candidate in &launch.exec_candidates {
        let args = &launch.exec_args;
        // SAFETY: all three are NUL-terminated strings, and the two arrays are null-terminated
        // arrays of pointers into `args`, which outlives the call (see `ExecArgs::new`).
        unsafe {
            libc::execve(
                candidate.as_ptr(),
                args.argv_ptrs.as_ptr(),
                args.envp_ptrs.as_ptr(),
            )
        };
        let err = Errno::last();
        if err != Errno::ENOENT && err != Errno::ENOTDIR && first_error == Errno::ENOENT {
            first_error = err;
        }
    }
    fail(REPORT_EXEC, 0, first_error)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, program)`.
fn install_seccomp(program: &[libc::sock_filter]) -> nix::Result<()> {
    let len = u16::try_from(program.len()).map_err(|_| Errno::E2BIG)?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel reads `len` instructions from `filter`, which points into `program`,
    // alive for the call; it copies the program and keeps no pointer to it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &raw const fprog,
        )
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `pidfd_open(pid, 0)`: a descriptor that polls readable once `pid` has exited.
pub(crate) fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Unblocks all signals and sets every disposition back to the default (an ignored SIGPIPE,
/// for example, would otherwise survive the exec).
fn reset_signals() -> nix::Result<()> {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code.
        unsafe {
            nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl)?;
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// `struct __user_cap_header_struct` (libc does not export it).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability outside `mask` from the bounding set, then sets the effective and
/// permitted sets to `mask` and clears the inheritable set.
fn set_capabilities(mask: u64, last: u32) -> nix::Result<()> {
    for cap in 0..=last {
        if mask & (1 << cap) == 0 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
                return Err(Errno::last());
            }
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = (mask & 0xffff_ffff) as u32;
    let high = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, which is what we pass.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_pointer_arrays_are_null_terminated_and_point_at_the_strings() {
        let args = ExecArgs::new(vec![c"/bin/sh".into(), c"-c".into()], vec![c"A=1".into()]);
        assert_eq!(args.argv_ptrs.len(), 3);
        assert!(args.argv_ptrs[2].is_null() && args.envp_ptrs[1].is_null());
        assert_eq!(args.argv_ptrs[1], args.argv()[1].as_ptr());
        assert_eq!(args.envp_ptrs[0], args.envp()[0].as_ptr());
        // Moving the struct keeps the strings where the pointers say.
        let moved = Box::new(args);
        // SAFETY: the pointer is non-null and points at a live CString owned by `moved`.
        let first = unsafe { std::ffi::CStr::from_ptr(moved.argv_ptrs[0]) };
        assert_eq!(first, c"/bin/sh");
    }
}
