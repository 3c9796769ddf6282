//! The crate's error type.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Everything that can go wrong while preparing, running or cleaning up a container.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec has no process arguments.
    #[error("the process has no arguments")]
    EmptyArgs,
    /// A string in the spec contains a NUL byte, so it cannot be passed to the kernel.
    #[error("{field} contains a NUL byte")]
    NulByte {
        /// Which part of the spec.
        field: &'static str,
    },
    /// A path in the spec must be absolute.
    #[error("{field} must be an absolute path: {path}")]
    RelativePath {
        /// Which part of the spec.
        field: &'static str,
        /// The offending path.
        path: PathBuf,
    },
    /// A tmpfs option that is unknown, has an invalid value or is not supported.
    #[error("invalid tmpfs option {option:?}: {reason}")]
    TmpfsOption {
        /// The option as given.
        option: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tmpfs asks for device files (`dev`) in the sandbox, whose only guard against opening
    /// devices is that every file system is mounted `nodev`.
    #[error(
        "the tmpfs at {target} cannot allow device files (`dev`) in the sandbox: that needs insecure mode"
    )]
    TmpfsDevices {
        /// The mount's target.
        target: PathBuf,
    },
    /// The overlay stack has no lower layer.
    #[error("an overlay root filesystem needs at least one lower directory")]
    NoLowerDirs,
    /// More layers than one overlay can stack.
    #[error("{count} layers are more than the {limit} one overlay can stack")]
    TooManyLayers {
        /// The number of layers.
        count: usize,
        /// The kernel's limit.
        limit: usize,
    },
    /// The user named in the spec is not in the root filesystem's /etc/passwd.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UnknownUser {
        /// The user as written in the spec.
        user: String,
    },
    /// The group named in the spec is not in the root filesystem's /etc/group.
    #[error("unable to find group {group}: no matching entries in group file")]
    UnknownGroup {
        /// The group as written in the spec.
        group: String,
    },
    /// The image config and overrides leave nothing to run.
    #[error("no command specified: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    /// Reading or writing a file on the host failed (the error names the path).
    #[error("cannot prepare the container")]
    Prepare(#[source] io::Error),
    /// The runner's state directory cannot be used safely.
    #[error("refusing the runner state directory {path}: {reason}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// Creating a private directory failed.
    #[error("cannot create the directory {path}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// A cgroup file operation failed.
    #[error("cgroup setup failed at {path}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A ulimit is not `name=soft[:hard]`.
    #[error("invalid ulimit argument: {argument}")]
    UlimitArgument {
        /// The text given.
        argument: String,
    },
    /// A ulimit names no resource docker knows.
    #[error("invalid ulimit type: {name}")]
    UlimitType {
        /// The name given.
        name: String,
    },
    /// A ulimit value is not a number, or `-1` for unlimited.
    #[error("invalid ulimit value {value:?}: not a number")]
    UlimitValue {
        /// The value given.
        value: String,
    },
    /// A ulimit's soft limit is above its hard one.
    #[error(
        "ulimit soft limit must be less than or equal to hard limit: {}",
        if *soft == -1 { format!("soft: -1 (unlimited), hard: {hard}") } else { format!("{soft} > {hard}") }
    )]
    UlimitOrder {
        /// The soft limit (`-1`: unlimited).
        soft: i64,
        /// The hard limit.
        hard: i64,
    },
    /// The spec's cgroup parent cannot be used.
    #[error("invalid cgroup parent {parent:?}: {reason}")]
    CgroupParent {
        /// The parent as given.
        parent: String,
        /// Why.
        reason: &'static str,
    },
    /// A resource limit needs a cgroup v2 controller the hierarchy does not offer (on a
    /// hybrid host, the v1 hierarchies hold it).
    #[error(
        "cannot apply the {controller} limit: the cgroup v2 hierarchy at {path} has no {controller} controller"
    )]
    CgroupController {
        /// `memory`, `pids` or `cpu`.
        controller: &'static str,
        /// The hierarchy's mount point.
        path: PathBuf,
    },
    /// A system call made by the runner itself (not the container) failed.
    #[error("{call} failed")]
    Syscall {
        /// The call.
        call: &'static str,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// A step of the container's setup (inside the new namespaces) failed.
    #[error("container setup failed: {step}")]
    Setup {
        /// What the step was doing.
        step: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// The process could not be executed.
    #[error("cannot execute {program:?}")]
    Exec {
        /// The program (first argument).
        program: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Building the seccomp filter failed.
    #[error("cannot build the seccomp filter: {what}")]
    Seccomp {
        /// The step that failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<libseccomp::error::SeccompError>,
    },
    /// libseccomp exported something that is not a whole number of BPF instructions.
    #[error("the exported seccomp filter is {len} bytes, not whole BPF instructions")]
    SeccompProgram {
        /// Its length.
        len: usize,
    },
    /// The container stopped without reporting the main process's status.
    #[error("the container's init exited without reporting a status")]
    NoStatus,
    /// Writing the process's output to a sink failed.
    #[error("writing the process's {stream} failed")]
    Sink {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The run was cancelled through its [`Handle`](crate::Handle); the container was killed.
    #[error("the run was cancelled")]
    Cancelled,
    /// The run exceeded its timeout; the container was killed.
    #[error("the run timed out after {seconds:.1}s")]
    TimedOut {
        /// The timeout in seconds.
        seconds: f64,
    },
    /// `--cap-add`/`--cap-drop` named no capability.
    #[error("unknown capability: {name:?}")]
    UnknownCapability {
        /// The name.
        name: String,
    },
    /// A signal name or number that is no signal.
    #[error("Invalid signal: {signal}")]
    InvalidSignal {
        /// The text.
        signal: String,
    },
    /// The container's process is gone (or never was).
    #[error("the container's process {pid} is not running")]
    NoContainerProcess {
        /// Its pid.
        pid: u32,
        /// The cause.
        #[source]
        source: Errno,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
