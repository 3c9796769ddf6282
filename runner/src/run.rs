//! [`Runner::run`]: prepare, fork, stream output, wait, clean up.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, pipe2, read};

use crate::cgroup::{self, Cgroup, Hierarchy, HostFs};
use crate::error::{Error, Result};
use crate::plan::{self, Staged, container_path, cstring};
use crate::seccomp;
use crate::spec::{ExitStatus, Mount, NetworkMode, Security, Spec, Stdio, TerminalSize};
use crate::state;
use crate::stubs::{self, Stubs};
use crate::sys::process::{
    self, ChildFds, ExecArgs, Launch, REPORT_EXEC, REPORT_OP, REPORT_RLIMIT, REPORT_STEP, Step,
};
use crate::user;
use crate::view::RootView;

mod pump;

pub(crate) use pump::write_fd;
use pump::{Pumped, Stop, pump};

/// Docker's default capability set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DOCKER_DEFAULT_CAPABILITIES: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// Docker's default `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs containers. Cheap to share: one per process is enough.
#[derive(Debug, Clone)]
pub struct Runner {
    state_dir: PathBuf,
    hierarchy: Hierarchy,
    cgroup_parent: String,
}

/// Controls a running container from another thread: cancel it, signal it, resize its terminal.
///
/// Create one per run, pass it to [`Runner::run`], and keep a clone where the cancellation
/// comes from (it is `Send + Sync`).
#[derive(Debug, Clone)]
pub struct Handle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    wake_read: OwnedFd,
    wake_write: OwnedFd,
    requests: Mutex<Vec<Request>>,
    on_start: Mutex<Option<StartHook>>,
}

/// What [`Handle::on_start`] calls.
struct StartHook(Box<dyn FnOnce(u32) + Send>);

impl std::fmt::Debug for StartHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartHook")
    }
}

#[derive(Debug, Clone, Copy)]
enum Request {
    Cancel,
    Signal(Signal),
    Resize(TerminalSize),
}

impl Handle {
    /// A new handle.
    pub fn new() -> Result<Self> {
        let (wake_read, wake_write) =
            pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|source| Error::Syscall {
                call: "pipe2",
                source,
            })?;
        Ok(Self {
            inner: Arc::new(HandleInner {
                wake_read,
                wake_write,
                requests: Mutex::new(Vec::new()),
                on_start: Mutex::new(None),
            }),
        })
    }

    fn push(&self, request: Request) {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(request);
        let _ = nix::unistd::write(&self.inner.wake_write, b"x");
    }

    /// Calls `hook` with the host pid of the container's process (its PID 1) once its program
    /// has been executed (not when it could not be), from the thread in [`Runner::run`] (for a
    /// record of the running container). Until then, requests through the handle wait.
    pub fn on_start(&self, hook: impl FnOnce(u32) + Send + 'static) {
        *self
            .inner
            .on_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(StartHook(Box::new(hook)));
    }

    fn has_start_hook(&self) -> bool {
        self.inner
            .on_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    fn started(&self, pid: Pid) {
        let hook = self
            .inner
            .on_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let (Some(hook), Ok(pid)) = (hook, u32::try_from(pid.as_raw())) {
            (hook.0)(pid);
        }
    }

    /// Kills the whole container; [`Runner::run`] then returns [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.push(Request::Cancel);
    }

    /// Sends `signal` to the container's main process (through its init).
    pub fn signal(&self, signal: Signal) {
        self.push(Request::Signal(signal));
    }

    /// Changes the terminal size of a [`Stdio::Pty`] container.
    pub fn resize(&self, size: TerminalSize) {
        self.push(Request::Resize(size));
    }

    /// A guard that cancels the run when dropped: hold it in the future that awaits a
    /// `spawn_blocking`ed [`Runner::run`], so dropping the future kills the container.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            handle: Some(self.clone()),
        }
    }

    fn take(&self) -> Vec<Request> {
        let mut buf = [0u8; 64];
        while matches!(read(&self.inner.wake_read, &mut buf), Ok(n) if n > 0) {}
        std::mem::take(
            &mut *self
                .inner
                .requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Cancels its run when dropped, unless [`CancelOnDrop::disarm`]ed. See [`Handle::cancel_on_drop`].
#[derive(Debug)]
#[must_use = "the run is cancelled as soon as the guard is dropped"]
pub struct CancelOnDrop {
    handle: Option<Handle>,
}

impl CancelOnDrop {
    /// Keeps the run going after all (call it once the run has finished).
    pub fn disarm(mut self) {
        self.handle = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.cancel();
        }
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

fn syscall(call: &'static str) -> impl FnOnce(Errno) -> Error {
    move |source| Error::Syscall { call, source }
}

/// Removes what a run created on the host, on every exit path (including a panic in a sink).
struct Cleanup {
    /// The container's process (PID 1 of its namespace), until reaped.
    init: Option<Pid>,
    cgroup: Option<Cgroup>,
    bundle: PathBuf,
    /// Mount stubs to remove once the container is gone.
    stubs: Option<Stubs>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(init) = self.init.take() {
            // SIGKILL to PID 1 takes down its whole PID namespace; reaping it waits for that.
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
        }
        if let Some(stubs) = self.stubs.take() {
            stubs.remove();
        }
        if let Some(mut cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
        if let Err(err) = fs_err::remove_dir_all(&self.bundle) {
            tracing::warn!(error = %err, "cannot remove the container's runtime directory");
        }
    }
}

impl Runner {
    /// A runner keeping per-run files under `state_dir` and creating cgroups under `kiln/` in
    /// the hierarchy mounted at /sys/fs/cgroup. Secrets are staged in `state_dir`: keep it
    /// on a root-only tmpfs such as /run. It is created 0700 and refused if it is a symlink
    /// or belongs to another user; each run's files go in a fresh directory in it, removed
    /// when the run ends, and those of runs whose process died (kiln killed with SIGKILL)
    /// are removed by the first run of the next process.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            hierarchy: Hierarchy::detect(Path::new("/sys/fs/cgroup")),
            cgroup_parent: "kiln".to_owned(),
        }
    }

    /// Removes the files of runs whose process is gone (kiln killed with SIGKILL) from the
    /// state directory, as the first run of a process does, for callers that clean up without
    /// running anything (`kiln prune`). A state directory that is missing or fails the checks
    /// of [`Runner::new`] is left alone.
    pub fn sweep(&self) {
        if fs_err::symlink_metadata(&self.state_dir).is_ok_and(|m| m.is_dir())
            && state::prepare(&self.state_dir).is_ok()
        {
            state::sweep(&self.state_dir);
        }
    }

    /// Uses `name` (relative to the hierarchy's root, or to a spec's
    /// [`cgroup_parent`](Spec::cgroup_parent)) as the parent of per-run cgroups; those that
    /// runs of dead processes left there are removed by the first run of the next process.
    pub fn with_cgroup_parent(mut self, name: impl Into<String>) -> Self {
        self.cgroup_parent = name.into();
        self
    }

    /// Runs `spec` to completion, streaming its stdout and stderr to the sinks as they arrive,
    /// and returns how the main process ended. Blocking: from async code call it inside
    /// `spawn_blocking` (with `Send` sinks) and cancel through `handle`; hold
    /// [`Handle::cancel_on_drop`] in the awaiting future so that dropping it kills the container.
    ///
    /// When it returns — on success, failure, cancellation or a panic in a sink — every process
    /// of the container is gone, its mounts with it (they only ever existed in its mount
    /// namespace), and its cgroup and runtime directory are removed.
    ///
    /// The calling thread must stay alive until this returns (the container is tied to it
    /// with `PR_SET_PDEATHSIG`), which a blocking call guarantees.
    #[tracing::instrument(skip_all, fields(program = spec.args.first().map(String::as_str).unwrap_or("")))]
    pub fn run(
        &self,
        mut spec: Spec,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        handle: &Handle,
    ) -> Result<ExitStatus> {
        if spec.args.is_empty() {
            return Err(Error::EmptyArgs);
        }
        let started = Instant::now();
        let counter = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let cgroup_parent =
            cgroup::parent_path(spec.cgroup_parent.as_deref(), &self.cgroup_parent)?;
        state::prepare(&self.state_dir)?;
        state::sweep_once(&self.state_dir);
        cgroup::sweep_once(&self.hierarchy, &cgroup_parent);
        let bundle = state::create_bundle(&self.state_dir, counter)?;
        // The cgroup is named after the run, as its bundle: swept the same way after a crash.
        let id = bundle
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cleanup = Cleanup {
            init: None,
            cgroup: None,
            bundle: bundle.clone(),
            stubs: None,
        };

        let staged = stage(&spec, &bundle)?;
        let plan = plan::build(&spec, &staged)?;
        let restrict_devices = self.hierarchy.restricts_devices();
        let own_parent = spec.cgroup_parent.is_some();
        if !spec.resources.is_empty() || restrict_devices || own_parent {
            cleanup.cgroup = Some(Cgroup::create(
                HostFs,
                &self.hierarchy,
                &cgroup_parent,
                &id,
                &spec.resources,
                restrict_devices,
                own_parent,
            )?);
        }
        let layers = spec.rootfs.lookup_dirs();
        // Read before the container starts, so nothing changes the layers meanwhile.
        let view = RootView::unchanging(layers.clone());
        let user = user::resolve(&view, &spec.user)?;
        if spec.remove_mount_stubs {
            cleanup.stubs = Some(stubs::record(
                &view,
                &layers[0],
                &plan::mount_points(&plan.ops),
            ));
        }
        let launch = prepare_launch(&spec, &plan, &user, cleanup.cgroup.as_ref())?;

        // Standard streams.
        let mut slots = vec![-1; plan.slots.max(1)];
        let (error_read, error_write) = pipe2(OFlag::O_CLOEXEC).map_err(syscall("pipe2"))?;
        let dev_null = fs_err::File::open("/dev/null").map_err(Error::Prepare)?;
        let mut input: Option<OwnedFd> = None;
        let (outputs, child_fds, terminal): (Vec<(OwnedFd, bool)>, Vec<OwnedFd>, Option<OwnedFd>);
        let stdio = std::mem::take(&mut spec.stdio);
        match stdio {
            Stdio::Captured | Stdio::CapturedWithInput(_) => {
                let (out_read, out_write) = pipe2(OFlag::O_CLOEXEC).map_err(syscall("pipe2"))?;
                let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(syscall("pipe2"))?;
                let stdin = match stdio {
                    Stdio::CapturedWithInput(fd) => fd,
                    _ => OwnedFd::from(dev_null.into_parts().0),
                };
                outputs = vec![(out_read, false), (err_read, true)];
                child_fds = vec![stdin, out_write, err_write];
                terminal = None;
            }
            Stdio::Pty {
                size,
                input: pty_input,
            } => {
                let (master, slave) =
                    crate::sys::terminal::open_pty(size).map_err(syscall("openpty"))?;
                outputs = vec![(master.try_clone().map_err(Error::Prepare)?, false)];
                child_fds = vec![slave];
                terminal = Some(master);
                input = pty_input;
            }
        }
        let fds = ChildFds {
            stdin: child_fds[0].as_raw_fd(),
            stdout: child_fds.get(1).unwrap_or(&child_fds[0]).as_raw_fd(),
            stderr: child_fds.get(2).unwrap_or(&child_fds[0]).as_raw_fd(),
            error: error_write.as_raw_fd(),
        };

        let init = process::spawn(&launch, fds, &mut slots)
            .map_err(|(call, source)| Error::Syscall { call, source })?;
        cleanup.init = Some(init);
        drop(child_fds);
        drop(error_write);
        let exited_fd = process::pidfd_open(init).map_err(syscall("pidfd_open"))?;
        // With a start hook, the program must have been executed before the hook hears of it:
        // the error pipe closes on the exec, or brings the report of what failed before it.
        let early_report = handle.has_start_hook().then(|| {
            let report = read_report(&error_read);
            if report.is_none() {
                handle.started(init);
            }
            report
        });
        tracing::debug!(
            init = init.as_raw(),
            prepare_us = started.elapsed().as_micros() as u64,
            "container started"
        );

        let forked = started.elapsed();
        let deadline = spec.timeout.map(|t| started + t);
        let mut outcome = pump(
            outputs,
            &exited_fd,
            input.as_ref(),
            terminal.as_ref(),
            handle,
            deadline,
            &mut cleanup,
            stdout,
            stderr,
        );
        // Reap PID 1 if `pump` did not: that returns once every process of the container is gone.
        if let Some(init) = cleanup.init.take() {
            if outcome.is_err()
                || matches!(
                    outcome,
                    Ok(Pumped {
                        stopped: Some(_),
                        ..
                    })
                )
            {
                kill_container(Some(init));
            }
            let _ = waitpid(init, None);
        }
        let exited = started.elapsed();
        let report = early_report.unwrap_or_else(|| read_report(&error_read));
        if let (Ok(pumped), Some(report)) = (&outcome, report) {
            if pumped.stopped.is_none() {
                outcome = Err(report_error(report, &launch, &spec));
            }
        }
        drop(cleanup);
        tracing::debug!(
            prepare_us = forked.as_micros() as u64,
            container_us = (exited - forked).as_micros() as u64,
            cleanup_us = (started.elapsed() - exited).as_micros() as u64,
            "container finished"
        );
        let pumped = outcome?;
        match pumped.stopped {
            Some(Stop::Cancelled) => Err(Error::Cancelled),
            Some(Stop::TimedOut) => Err(Error::TimedOut {
                seconds: spec.timeout.map_or(0.0, |t| t.as_secs_f64()),
            }),
            None => pumped.status.ok_or(Error::NoStatus),
        }
    }
}

/// A program's arguments and environment as `execve` takes them.
pub(crate) fn exec_args(args: &[String], env: &[String]) -> Result<ExecArgs> {
    let strings = |field: &'static str, strings: &[String]| {
        strings
            .iter()
            .map(|s| cstring(field, s.as_bytes()))
            .collect::<Result<Vec<_>>>()
    };
    Ok(ExecArgs::new(strings("args", args)?, strings("env", env)?))
}

/// Writes the generated /etc files and secrets into the bundle directory.
fn stage(spec: &Spec, bundle: &Path) -> Result<Staged> {
    let write = |name: &str, data: &[u8]| -> Result<PathBuf> {
        let path = bundle.join(name);
        state::write_new(&path, data, 0o644)?;
        Ok(path)
    };
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        spec.hostname
    );
    for (name, address) in &spec.extra_hosts {
        hosts.push_str(&format!("{address}\t{name}\n"));
    }
    let resolv = match &spec.resolv_conf {
        Some(text) => text.clone().into_bytes(),
        None => match fs_err::read("/etc/resolv.conf") {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(Error::Prepare(err)),
        },
    };
    let mut secrets = Vec::new();
    for mount in &spec.mounts {
        if let Mount::Secret {
            data,
            mode,
            uid,
            gid,
            ..
        } = mount
        {
            let path = bundle.join(format!("secret-{}", secrets.len()));
            // Written 0600 and adjusted through the descriptor, never through the path.
            let file = state::write_new(&path, data, 0o600)?;
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(*mode))
                .map_err(Error::Prepare)?;
            std::os::unix::fs::fchown(file.file(), Some(*uid), Some(*gid))
                .map_err(Error::Prepare)?;
            secrets.push(path);
        }
    }
    let rootfs_mountpoint = bundle.join("rootfs");
    fs_err::create_dir(&rootfs_mountpoint).map_err(Error::Prepare)?;
    let mut overlays = Vec::new();
    for mount in &spec.mounts {
        if let Mount::Overlay { .. } = mount {
            let path = bundle.join(format!("overlay-{}", overlays.len()));
            fs_err::create_dir(&path).map_err(Error::Prepare)?;
            overlays.push(path);
        }
    }
    Ok(Staged {
        rootfs_mountpoint,
        hosts: match &spec.network {
            NetworkMode::Join {
                hosts: Some(hosts), ..
            } => hosts.clone(),
            _ => write("hosts", hosts.as_bytes())?,
        },
        resolv_conf: write("resolv.conf", &resolv)?,
        hostname: write("hostname", format!("{}\n", spec.hostname).as_bytes())?,
        secrets,
        overlays,
    })
}

fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// The calling thread's effective capability set (`CapEff` in /proc/thread-self/status).
fn own_capabilities() -> Option<u64> {
    let status = fs_err::read_to_string("/proc/thread-self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Docker's `PATH` and `HOME` (and `TERM` with a terminal) where `env` lacks them.
pub(crate) fn default_env(env: &mut Vec<String>, home: &str, terminal: bool) {
    if env_value(env, "PATH").is_none() {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if env_value(env, "HOME").is_none() {
        env.push(format!("HOME={home}"));
    }
    if terminal && env_value(env, "TERM").is_none() {
        env.push("TERM=xterm".to_owned());
    }
}

/// The paths to try for `program`: itself when it has a `/`, else each `PATH` entry of `env`.
pub(crate) fn exec_candidates(program: &str, env: &[String]) -> Result<Vec<CString>> {
    if program.contains('/') {
        return Ok(vec![cstring("args", program.as_bytes())?]);
    }
    env_value(env, "PATH")
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| {
            cstring(
                "args",
                format!("{}/{program}", dir.trim_end_matches('/')).as_bytes(),
            )
        })
        .collect()
}

/// The highest capability number the kernel knows, read once per process.
pub(crate) fn last_capability() -> u32 {
    static LAST_CAPABILITY: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST_CAPABILITY.get_or_init(|| {
        fs_err::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

fn prepare_launch(
    spec: &Spec,
    plan: &plan::Plan,
    user: &user::ResolvedUser,
    cgroup: Option<&Cgroup>,
) -> Result<Launch> {
    let mut env = spec.env.clone();
    default_env(&mut env, &user.home, spec.stdio_is_terminal());
    let candidates = exec_candidates(&spec.args[0], &env)?;
    let cwd = container_path("cwd", &spec.cwd)?;
    let last_capability = last_capability();
    let capabilities = match spec.security {
        Security::Sandbox => spec.capabilities.apply(
            DOCKER_DEFAULT_CAPABILITIES
                .iter()
                .fold(0u64, |mask, cap| mask | 1 << cap),
            last_capability,
        ),
        // Every capability this process has (it may itself run without some).
        Security::Insecure => own_capabilities().unwrap_or_else(|| {
            (0..=last_capability.min(63)).fold(0u64, |mask, cap| mask | 1 << cap)
        }),
    };
    // The PID namespace is entered at the fork itself (see `sys::process::spawn`).
    let mut namespaces =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network == NetworkMode::None {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }
    let seccomp = match spec.security {
        Security::Sandbox => Some(seccomp::program(capabilities)?),
        Security::Insecure => None,
    };
    let join_network = match &spec.network {
        NetworkMode::Join { namespace, .. } => Some(cstring(
            "network namespace",
            namespace.as_os_str().as_bytes(),
        )?),
        NetworkMode::None | NetworkMode::Host => None,
    };
    Ok(Launch {
        ops: plan.ops.iter().chain(&plan.emulation).cloned().collect(),
        late_ops: plan.ops.len(),
        join_network,
        cgroup_procs: cgroup
            .map(|c| {
                c.procs
                    .iter()
                    .map(|p| cstring("cgroup path", p.as_os_str().as_bytes()))
                    .collect::<Result<_>>()
            })
            .transpose()?
            .unwrap_or_default(),
        namespaces,
        exec_candidates: candidates,
        exec_args: exec_args(&spec.args, &env)?,
        cwd: cstring("cwd", cwd.as_os_str().as_bytes())?,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
        capabilities,
        last_capability,
        rlimits: spec
            .ulimits
            .iter()
            .map(crate::Ulimit::rlimit)
            .collect::<Result<_>>()?,
        seccomp,
        terminal: spec.stdio_is_terminal(),
    })
}

/// Kills the container: SIGKILL to its init takes down the whole PID namespace.
fn kill_container(init: Option<Pid>) {
    if let Some(init) = init {
        let _ = kill(init, Signal::SIGKILL);
    }
}

pub(crate) fn read_report(error_read: &OwnedFd) -> Option<(u32, u32, i32)> {
    let mut buf = [0u8; 12];
    let mut len = 0;
    while len < buf.len() {
        match read(error_read, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    (len == 12).then(|| {
        (
            u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")),
            u32::from_ne_bytes(buf[4..8].try_into().expect("4 bytes")),
            i32::from_ne_bytes(buf[8..].try_into().expect("4 bytes")),
        )
    })
}

fn report_error((kind, index, errno): (u32, u32, i32), launch: &Launch, spec: &Spec) -> Error {
    let source = Errno::from_raw(errno);
    let program = &spec.args[0];
    match kind {
        REPORT_OP => Error::Setup {
            step: launch
                .ops
                .get(index as usize)
                .map_or_else(|| format!("step {index}"), plan::Op::describe),
            source,
        },
        REPORT_EXEC => Error::Exec {
            program: program.to_owned(),
            source,
        },
        REPORT_RLIMIT => Error::Setup {
            step: spec.ulimits.get(index as usize).map_or_else(
                || format!("set resource limit {index}"),
                |ulimit| format!("set the resource limit {ulimit}"),
            ),
            source,
        },
        REPORT_STEP => Error::Setup {
            step: Step::from_code(index)
                .map_or("unknown step", Step::describe)
                .to_owned(),
            source,
        },
        _ => Error::NoStatus,
    }
}

#[cfg(test)]
mod tests;
