//! The seam between the solver and a process runtime.
//!
//! The solver owns this trait (the shape of BuildKit's `executor.Executor`); the `kiln` binary
//! implements it with `kiln-runner`, and tests implement it with fakes. Nothing here starts a
//! process.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::OpError;

/// The root filesystem of an exec step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecRootfs {
    /// A directory used as it is.
    Dir {
        /// The directory.
        path: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
    /// An overlayfs stack: read-only lowers (topmost first) and a writable upper.
    Overlay {
        /// Read-only layer directories, topmost first.
        lowers: Vec<PathBuf>,
        /// Where every write lands: the step's output layer.
        upper: PathBuf,
        /// overlayfs's work directory, on the same filesystem as `upper`.
        work: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
}

/// An extra mount of an exec step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecMount {
    /// A host directory or file (for LLB: another vertex's output, or a cache mount).
    Bind {
        /// The host path.
        source: PathBuf,
        /// The absolute path inside the container.
        target: PathBuf,
        /// Read-only.
        readonly: bool,
    },
    /// An overlayfs stack (a multi-layer snapshot), read-only or with a writable upper.
    Overlay {
        /// Read-only layer directories, topmost first.
        lowers: Vec<PathBuf>,
        /// The writable upper and overlayfs's work directory; `None` for a read-only stack.
        upper_work: Option<(PathBuf, PathBuf)>,
        /// The absolute path inside the container.
        target: PathBuf,
        /// Read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// The absolute path inside the container.
        target: PathBuf,
        /// Size limit in bytes.
        size: Option<u64>,
        /// Read-only.
        readonly: bool,
    },
    /// A secret file, never stored in any layer.
    Secret {
        /// The absolute path inside the container.
        target: PathBuf,
        /// The bytes.
        data: Vec<u8>,
        /// File mode.
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
}

/// The network of an exec step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecNetwork {
    /// Only loopback.
    #[default]
    None,
    /// The executor's default network (LLB's unset mode, BuildKit's CNI network): a network
    /// namespace of the step's own with outbound access, away from the host's loopback.
    Default,
    /// The host's network.
    Host,
}

/// How far an exec step is confined (LLB's `SecurityMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecSecurity {
    /// The default sandbox.
    #[default]
    Sandbox,
    /// BuildKit's insecure mode: all capabilities, no seccomp, no masked paths. Only reached
    /// when the build holds the `security.insecure` entitlement.
    Insecure,
}

/// What a build is allowed beyond the sandbox (buildx's `--allow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// `network.host`: steps may ask for the host's network.
    pub network_host: bool,
    /// `security.insecure`: steps may ask for insecure mode.
    pub security_insecure: bool,
}

/// What to run and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    /// The root filesystem.
    pub rootfs: ExecRootfs,
    /// Extra mounts, in order.
    pub mounts: Vec<ExecMount>,
    /// Program and arguments.
    pub args: Vec<String>,
    /// Environment as `KEY=value`.
    pub env: Vec<String>,
    /// Working directory, created if missing.
    pub cwd: String,
    /// User as in a Dockerfile's `USER` (empty: root).
    pub user: String,
    /// Hostname.
    pub hostname: String,
    /// Extra /etc/hosts entries as `(name, address)`.
    pub extra_hosts: Vec<(String, String)>,
    /// Network mode.
    pub network: ExecNetwork,
    /// Sandbox or insecure.
    pub security: ExecSecurity,
    /// Resource limits of the process (LLB's `Meta.ulimit`), in order.
    pub ulimits: Vec<ExecUlimit>,
    /// The cgroup the process's cgroup goes below (LLB's `Meta.cgroupParent`).
    pub cgroup_parent: Option<String>,
    /// The platform the process is built for (LLB's `Op.platform`); `None`: the host's.
    pub platform: Option<kiln_llb::Platform>,
}

/// A resource limit of an exec step's process (BuildKit's `Ulimit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecUlimit {
    /// docker's name for the resource (`nofile`, `nproc`, ...).
    pub name: String,
    /// The soft limit (`-1`: unlimited).
    pub soft: i64,
    /// The hard limit (`-1`: unlimited).
    pub hard: i64,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Receives a process's output as it comes: stream 1 is stdout, 2 is stderr.
pub type OutputSink = Arc<dyn Fn(u8, &[u8]) + Send + Sync>;

/// What steers a process while it runs, sent by whoever talks to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecControl {
    /// Send the process this signal (its number).
    Signal(i32),
    /// Its terminal has a new size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
}

/// The standard input and controls of a process that a client talks to (a process in a
/// frontend's container), unlike a build step's, which reads nothing.
#[derive(Debug)]
pub struct ExecIo {
    /// What the process reads on its standard input (`None`: nothing, `/dev/null`).
    pub stdin: Option<OwnedFd>,
    /// Run it on a pseudo-terminal of this size (rows, columns): its output is the
    /// terminal's, all on stream 1.
    pub tty: Option<(u16, u16)>,
    /// Signals and terminal sizes while it runs.
    pub control: tokio::sync::mpsc::UnboundedReceiver<ExecControl>,
    /// Told the running container once the process has started in a new one
    /// ([`Executor::run_process`]): more processes may join it meanwhile.
    pub started: Option<tokio::sync::oneshot::Sender<RunningContainer>>,
}

/// A container whose first process runs (its PID on the host), which more processes may
/// join ([`Executor::exec_process`]) until that process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningContainer(pub u32);

/// Runs exec steps. Dropping the returned future must kill the process and clean up after it.
pub trait Executor: Send + Sync + 'static {
    /// Runs the request to completion and returns how the process ended.
    fn run(
        &self,
        request: ExecRequest,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>>;

    /// Runs the request as [`run`](Self::run) does, with the standard input, terminal and
    /// controls of `io`. An executor that cannot refuses.
    fn run_process(
        &self,
        request: ExecRequest,
        io: ExecIo,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
        let _ = (request, io, output);
        Box::pin(futures::future::ready(Err(OpError::from(
            "this executor runs no processes with input".to_owned(),
        ))))
    }

    /// Runs the process of `request` (its arguments, environment, working directory, user
    /// and security; its mounts are the container's) in the running container `container`,
    /// beside its first process, with the standard input of `io` (its controls and terminal
    /// may be refused). An executor that cannot refuses.
    fn exec_process(
        &self,
        container: RunningContainer,
        request: ExecRequest,
        io: ExecIo,
        output: OutputSink,
    ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
        let _ = (container, request, io, output);
        Box::pin(futures::future::ready(Err(OpError::from(
            "this executor runs no process beside another one".to_owned(),
        ))))
    }

    /// Whether exec steps built for `platform` run here; the error says why not and what
    /// would make them run. Without emulation, only what the host runs.
    fn platform_support(&self, platform: &kiln_llb::Platform) -> Result<(), String> {
        let host = kiln_llb::Platform::host();
        if host.runs(platform) {
            Ok(())
        } else {
            Err(format!(
                "this executor runs {host} steps only, not {platform}"
            ))
        }
    }
}
