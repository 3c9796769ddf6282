//! The solver's [`Executor`] seam, implemented with `kiln-runner`.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt as _};
use kiln_runner::net::{AttachOptions, Attachment, Bridge};
use kiln_runner::{
    ExecSpec, ExitStatus, Handle, Mount, NetworkMode, Rootfs, Runner, Security, Spec, Stdio,
    TerminalSize, TmpfsOptions, Ulimit,
};
use kiln_solver::{
    ExecControl, ExecIo, ExecMount, ExecNetwork, ExecRequest, ExecRootfs, ExecSecurity, ExecStatus,
    Executor, OpError, OutputSink, RunningContainer,
};

/// Where the runner keeps per-run files (bundles, staged secrets): root-only, under /run (a
/// tmpfs on most hosts), never a world-writable directory such as /dev/shm where another
/// user could plant the path first.
pub const RUNNER_STATE: &str = "/run/kiln/runner";

/// Where kiln keeps the state of its networks (leases, namespace and hosts files): root-only,
/// on the /run tmpfs, so that it goes with the links and rules at a reboot.
pub const NETWORK_STATE: &str = "/run/kiln/net";

/// kiln's default network (the bridge `kiln0`), for `kiln run` and the steps of builds.
pub fn default_network() -> Bridge {
    Bridge::default_network(NETWORK_STATE)
}

/// Runs exec steps in containers of kiln's own runtime.
pub struct RunnerExecutor {
    runner: Runner,
    network: Arc<NetworkPool>,
}

impl RunnerExecutor {
    /// An executor keeping per-run state under `state_dir`.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            runner: Runner::new(state_dir),
            network: Arc::new(NetworkPool {
                bridge: default_network(),
                idle: Mutex::default(),
            }),
        }
    }
}

/// Network namespaces on the default network for steps, reused from one step to the next as
/// BuildKit reuses its CNI namespaces: a step on the default network costs one attach only
/// when none is idle. A namespace goes back only after a sandboxed step (without
/// `CAP_NET_ADMIN` a step cannot change its interfaces, routes or rules) whose processes are
/// all gone; the pool's namespaces are released when the executor is dropped.
struct NetworkPool {
    bridge: Bridge,
    idle: Mutex<Vec<Attachment>>,
}

/// How many idle namespaces the pool keeps (about the number of steps that run at once).
const POOL_SIZE: usize = 8;

impl NetworkPool {
    fn take(&self) -> kiln_runner::Result<Attachment> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(attachment) => Ok(attachment),
            None => self.bridge.attach(AttachOptions {
                hostname: "kiln".to_owned(),
                ..AttachOptions::default()
            }),
        }
    }

    fn give_back(&self, attachment: Attachment) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < POOL_SIZE {
            idle.push(attachment);
        }
    }
}

/// Forwards one stream's bytes to the sink.
struct SinkWriter {
    stream: u8,
    sink: OutputSink,
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.sink)(self.stream, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn spec(request: ExecRequest) -> Spec {
    let rootfs = match request.rootfs {
        ExecRootfs::Dir { path, readonly } => Rootfs::Dir { path, readonly },
        ExecRootfs::Overlay {
            lowers,
            upper,
            work,
            readonly,
        } => Rootfs::Overlay {
            lowers,
            upper,
            work,
            readonly,
        },
    };
    let mut spec = Spec::new(rootfs, request.args);
    spec.env = request.env;
    spec.cwd = PathBuf::from(request.cwd);
    spec.user = request.user;
    if !request.hostname.is_empty() {
        spec.hostname = request.hostname;
    }
    spec.extra_hosts = request.extra_hosts;
    spec.ulimits = request
        .ulimits
        .into_iter()
        .map(|u| Ulimit {
            name: u.name,
            soft: u.soft,
            hard: u.hard,
        })
        .collect();
    spec.cgroup_parent = request.cgroup_parent;
    spec.network = match request.network {
        ExecNetwork::None => NetworkMode::None,
        ExecNetwork::Host => NetworkMode::Host,
        // Joined in `run`, where the namespace is taken from the pool.
        ExecNetwork::Default => NetworkMode::None,
    };
    spec.security = match request.security {
        ExecSecurity::Sandbox => Security::Sandbox,
        ExecSecurity::Insecure => Security::Insecure,
    };
    spec.mounts = request
        .mounts
        .into_iter()
        .map(|m| match m {
            ExecMount::Bind {
                source,
                target,
                readonly,
            } => Mount::Bind {
                source,
                target,
                readonly,
            },
            ExecMount::Overlay {
                lowers,
                upper_work,
                target,
                readonly,
            } => Mount::Overlay {
                lowers,
                upper_work,
                target,
                readonly,
            },
            ExecMount::Tmpfs {
                target,
                size,
                readonly,
            } => {
                let options = TmpfsOptions::default().readonly(readonly);
                Mount::Tmpfs {
                    target,
                    options: match size {
                        Some(size) => options.size(size),
                        None => options,
                    },
                }
            }
            ExecMount::Secret {
                target,
                data,
                mode,
                uid,
                gid,
            } => Mount::Secret {
                target,
                data,
                mode,
                uid,
                gid,
            },
        })
        .collect();
    spec
}

impl RunnerExecutor {
    /// Runs `request`, with the input, terminal and controls of `io` if given.
    fn run_with(
        &self,
        request: ExecRequest,
        io: Option<ExecIo>,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
        let runner = self.runner.clone();
        let network = self.network.clone();
        async move {
            let handle = Handle::new()?;
            // Dropping this future (a failed sibling, Ctrl-C) kills the container.
            let guard = handle.cancel_on_drop();
            let on_default_network = request.network == ExecNetwork::Default;
            let emulator = match &request.platform {
                Some(platform) => emulator(platform).map_err(OpError::from)?,
                None => None,
            };
            let mut spec = spec(request);
            spec.emulator = emulator;
            let mut io = io;
            if let Some(started) = io.as_mut().and_then(|io| io.started.take()) {
                // Told once the program runs: more processes may join its namespaces then.
                handle.on_start(move |pid| {
                    let _ = started.send(RunningContainer(pid));
                });
            }
            let mut control = io.map(|io| {
                spec.stdio = match (io.tty, io.stdin) {
                    (Some((rows, cols)), input) => Stdio::Pty {
                        size: TerminalSize { rows, cols },
                        input,
                    },
                    (None, Some(input)) => Stdio::CapturedWithInput(input),
                    (None, None) => Stdio::Captured,
                };
                io.control
            });
            let controlled = handle.clone();
            let mut ran = tokio::task::spawn_blocking(move || {
                let mut stdout = SinkWriter {
                    stream: 1,
                    sink: output.clone(),
                };
                let mut stderr = SinkWriter {
                    stream: 2,
                    sink: output,
                };
                let attachment = if on_default_network {
                    let attachment = network.take()?;
                    spec.network = NetworkMode::Join {
                        namespace: attachment.namespace(),
                        hosts: None,
                    };
                    // The host's servers, without loopback ones.
                    spec.resolv_conf = Some(kiln_runner::net::host_resolv_conf(&[])?);
                    Some(attachment)
                } else {
                    None
                };
                let sandboxed = spec.security == Security::Sandbox;
                let status = runner.run(spec, &mut stdout, &mut stderr, &handle);
                if let Some(attachment) = attachment
                    && status.is_ok()
                    && sandboxed
                {
                    network.give_back(attachment);
                }
                status
            });
            // The controls go to the container for as long as it runs.
            let joined = match control.as_mut() {
                None => ran.await,
                Some(control) => loop {
                    tokio::select! {
                        joined = &mut ran => break joined,
                        Some(message) = control.recv() => apply_control(&controlled, message),
                    }
                },
            };
            let status =
                joined.map_err(|e| -> OpError { format!("exec task failed: {e}").into() })??;
            guard.disarm();
            Ok(match status {
                ExitStatus::Code(c) => ExecStatus::Code(c),
                ExitStatus::Signal(s) => ExecStatus::Signal(s),
            })
        }
        .boxed()
    }
}

/// Relays what a process writes on `read` to stream `stream` of `sink` until it is closed.
fn relay(read: OwnedFd, stream: u8, sink: OutputSink) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        #[expect(
            clippy::disallowed_types,
            reason = "a pipe has no path to name in errors"
        )]
        let mut read = std::fs::File::from(read);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match io::Read::read(&mut read, &mut buf) {
                Ok(0) => break,
                Ok(n) => sink(stream, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
}

/// Runs `request`'s process in the running container `container` (see
/// [`Executor::exec_process`]): its output relayed to `output`; dropped, it is killed.
fn exec_in(
    container: RunningContainer,
    request: ExecRequest,
    io: ExecIo,
    output: OutputSink,
) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
    async move {
        if io.tty.is_some() {
            return Err(OpError::from(
                "a terminal for a process beside the container's first one is not supported yet"
                    .to_owned(),
            ));
        }
        let spec = ExecSpec {
            args: request.args,
            env: request.env,
            cwd: PathBuf::from(request.cwd),
            user: request.user,
            security: match request.security {
                ExecSecurity::Sandbox => Security::Sandbox,
                ExecSecurity::Insecure => Security::Insecure,
            },
            capabilities: kiln_runner::CapabilityChanges::default(),
            terminal: None,
        };
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from);
        // Without input, a pipe already closed: it reads as empty.
        let stdin = match io.stdin {
            Some(stdin) => stdin,
            None => pipe()?.0,
        };
        let (out_read, out_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let mut process = {
            use std::os::fd::AsFd as _;
            kiln_runner::spawn_exec(
                container.0,
                &spec,
                [stdin.as_fd(), out_write.as_fd(), err_write.as_fd()],
            )?
        };
        drop((stdin, out_write, err_write));
        let relays = [
            relay(out_read, 1, output.clone()),
            relay(err_read, 2, output),
        ];
        // Its controls are not applied (a signal would reach the runner's first child, not the
        // program): dropped as they come.
        let mut control = io.control;
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiting = {
            let cancelled = cancelled.clone();
            tokio::task::spawn_blocking(move || {
                loop {
                    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                        // Dropping the process kills it.
                        return Err(kiln_runner::Error::Cancelled);
                    }
                    if let Some(status) =
                        process.wait_timeout(std::time::Duration::from_millis(100))?
                    {
                        return Ok(status);
                    }
                }
            })
        };
        let cancel_on_drop = CancelFlag(cancelled);
        tokio::pin!(waiting);
        let status = loop {
            tokio::select! {
                joined = &mut waiting => break joined,
                Some(_) = control.recv() => {}
            }
        };
        drop(cancel_on_drop);
        let status =
            status.map_err(|e| -> OpError { format!("exec task failed: {e}").into() })??;
        for relay in relays {
            let _ = relay.await;
        }
        Ok(match status {
            ExitStatus::Code(c) => ExecStatus::Code(c),
            ExitStatus::Signal(s) => ExecStatus::Signal(s),
        })
    }
    .boxed()
}

/// Sets its flag when dropped (the waiting thread then kills the process).
struct CancelFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Signals or resizes the container of `handle`.
fn apply_control(handle: &Handle, message: ExecControl) {
    match message {
        ExecControl::Signal(number) => {
            // A number that is no signal here is dropped, as a signal to nothing.
            if let Ok(signal) = kiln_runner::Signal::try_from(number) {
                handle.signal(signal);
            }
        }
        ExecControl::Resize { rows, cols } => handle.resize(TerminalSize { rows, cols }),
    }
}

impl Executor for RunnerExecutor {
    fn run(
        &self,
        request: ExecRequest,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
        self.run_with(request, None, output)
    }

    fn run_process(
        &self,
        request: ExecRequest,
        io: ExecIo,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
        self.run_with(request, Some(io), output)
    }

    fn exec_process(
        &self,
        container: RunningContainer,
        request: ExecRequest,
        io: ExecIo,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
        exec_in(container, request, io, output)
    }

    fn platform_support(&self, platform: &kiln_llb::Platform) -> Result<(), String> {
        runnable(platform)
    }
}

/// Whether kiln's runtime runs `platform`'s binaries here: the host's platform, and those
/// QEMU user emulation is registered for; the error says why not and what to install.
pub fn runnable(platform: &kiln_llb::Platform) -> Result<(), String> {
    emulator(platform).map(|_| ())
}

/// The emulator of kiln's own that a process built for `platform` runs under here: `None`
/// where the host runs it itself or has QEMU registered for it; the error says why it cannot
/// run and what to install.
pub fn emulator(
    platform: &kiln_llb::Platform,
) -> Result<Option<kiln_runner::emulation::Emulator>, String> {
    if kiln_llb::Platform::host().runs(platform) {
        return Ok(None);
    }
    kiln_runner::emulation::emulator_for(&platform.architecture)
}

/// Shares one executor between sessions.
pub fn executor(state_dir: PathBuf) -> Arc<dyn Executor> {
    Arc::new(RunnerExecutor::new(state_dir))
}
