//! What to run: the container spec and its parts.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::tmpfs::TmpfsOptions;

/// The root filesystem of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// A directory used as is (bind-mounted inside the container's mount namespace).
    Dir {
        /// The directory.
        path: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
    /// An overlayfs stack, mounted inside the container's mount namespace.
    Overlay {
        /// Read-only layer directories, topmost first (overlayfs `lowerdir` order).
        lowers: Vec<PathBuf>,
        /// The writable upper directory; every write of the process lands here.
        upper: PathBuf,
        /// overlayfs's work directory, on the same filesystem as `upper`.
        work: PathBuf,
        /// Mount it read-only (`docker run --read-only`).
        readonly: bool,
    },
}

impl Rootfs {
    /// Layer directories from the top down, the writable one first: where files are looked up
    /// on the host before the container exists.
    pub(crate) fn lookup_dirs(&self) -> Vec<PathBuf> {
        match self {
            Self::Dir { path, .. } => vec![path.clone()],
            Self::Overlay { lowers, upper, .. } => std::iter::once(upper.clone())
                .chain(lowers.iter().cloned())
                .collect(),
        }
    }
}

/// Network namespace mode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A fresh network namespace with only the loopback interface, brought up.
    #[default]
    None,
    /// Share the host's network namespace.
    Host,
    /// Join the network namespace bind-mounted on `namespace` — a
    /// [`net::Attachment`](crate::net::Attachment)'s, or another container's.
    Join {
        /// The namespace file.
        namespace: PathBuf,
        /// The /etc/hosts to mount instead of a generated one (the network keeps it).
        hosts: Option<PathBuf>,
    },
}

/// How far the process is confined beyond its namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// Docker's defaults: its 14 capabilities, its default seccomp profile, masked and
    /// read-only /proc and /sys paths, a read-only /sys, device rules where the cgroup
    /// hierarchy allows.
    #[default]
    Sandbox,
    /// BuildKit's `security.insecure` and `docker run --privileged`: every capability, no
    /// seccomp filter, no masked or read-only paths, a writable /sys, no device rules. Only
    /// for builds and runs explicitly allowed to do so.
    Insecure,
}

/// An extra mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Bind a host file or directory.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path inside the container.
        target: PathBuf,
        /// Make the bind read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path inside the container.
        target: PathBuf,
        /// Mount flags and tmpfs settings (size limit, mode, owner, ...).
        options: TmpfsOptions,
    },
    /// A secret: the bytes appear read-only as a file at `target` with the given mode and owner.
    /// They are staged in the runner's state directory (keep it on a tmpfs such as /run).
    Secret {
        /// Absolute path inside the container.
        target: PathBuf,
        /// Contents.
        data: Vec<u8>,
        /// File mode (permission bits).
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
    /// An overlayfs stack (for example a multi-layer snapshot), mounted inside the container's
    /// mount namespace like an overlay root filesystem, with the same relative-path options so
    /// that many layers fit.
    Overlay {
        /// Read-only layer directories, topmost first (overlayfs `lowerdir` order).
        lowers: Vec<PathBuf>,
        /// The writable upper directory and overlayfs's work directory (on the same filesystem
        /// as the upper); `None` for a read-only stack.
        upper_work: Option<(PathBuf, PathBuf)>,
        /// Absolute path inside the container.
        target: PathBuf,
        /// Make the mount read-only (always so without `upper_work`).
        readonly: bool,
    },
}

/// Resource limits, applied through a cgroup created for the run and removed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// Memory limit in bytes (swap is limited to the same total where the kernel allows).
    pub memory: Option<u64>,
    /// Maximum number of processes (tasks).
    pub pids: Option<u64>,
    /// Relative CPU weight, in cgroup v1 `cpu.shares` units (Docker's `--cpu-shares`, 2..=262144).
    pub cpu_shares: Option<u64>,
    /// CPU quota: `(quota, period)` in microseconds (Docker's `--cpu-quota`/`--cpu-period`).
    pub cpu_quota: Option<(u64, u64)>,
}

impl Resources {
    /// Whether any limit is set (otherwise no cgroup is created).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Terminal size for [`Stdio::Pty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl TerminalSize {
    /// The size of the terminal `fd` refers to, or `None` when it is not a terminal (or reports
    /// no size, as a fresh pseudo-terminal does).
    pub fn of(fd: impl std::os::fd::AsFd) -> Option<Self> {
        let size = crate::sys::terminal::winsize(&fd.as_fd()).ok()?;
        (size.ws_row > 0 && size.ws_col > 0).then_some(Self {
            rows: size.ws_row,
            cols: size.ws_col,
        })
    }
}

/// How the process's standard streams are connected.
#[derive(Debug, Default)]
pub enum Stdio {
    /// stdin is /dev/null; stdout and stderr are captured separately and streamed to the sinks.
    #[default]
    Captured,
    /// stdin reads from the given file descriptor (for example the caller's own stdin); stdout
    /// and stderr are captured.
    CapturedWithInput(OwnedFd),
    /// A pseudo-terminal is the process's controlling terminal and all three streams; bytes
    /// read from `input` are written to it and its output goes to the stdout sink.
    Pty {
        /// Initial size (change it later with [`Handle::resize`](crate::Handle::resize)).
        size: TerminalSize,
        /// Where the terminal's input comes from (for example the caller's stdin in raw mode).
        input: Option<OwnedFd>,
    },
}

/// Everything needed to run one process in a container.
#[derive(Debug)]
pub struct Spec {
    /// Root filesystem.
    pub rootfs: Rootfs,
    /// Program and arguments; a program without `/` is looked up in the container's `PATH`.
    pub args: Vec<String>,
    /// Environment as `KEY=value`; `PATH` and `HOME` get Docker's defaults when absent.
    pub env: Vec<String>,
    /// Working directory inside the container, created if missing.
    pub cwd: PathBuf,
    /// `name`, `uid`, `name:group`, `uid:gid` (Docker's `USER`), resolved against the rootfs's
    /// /etc/passwd and /etc/group. Empty means root.
    pub user: String,
    /// Hostname (also written to /etc/hostname and /etc/hosts).
    pub hostname: String,
    /// Extra /etc/hosts entries as `(name, address)`.
    pub extra_hosts: Vec<(String, String)>,
    /// Contents of /etc/resolv.conf; `None` copies the host's.
    pub resolv_conf: Option<String>,
    /// Network mode.
    pub network: NetworkMode,
    /// Sandbox or insecure (privileged).
    pub security: Security,
    /// `--cap-add`/`--cap-drop` over the sandbox's capabilities.
    pub capabilities: crate::CapabilityChanges,
    /// Extra mounts, applied in order after the standard ones.
    pub mounts: Vec<Mount>,
    /// Resource limits.
    pub resources: Resources,
    /// Resource limits of the process (`setrlimit`), as `docker run --ulimit`; others are
    /// inherited from the caller.
    pub ulimits: Vec<crate::Ulimit>,
    /// The cgroup to put the run's cgroup in, relative to the hierarchy's root (LLB's
    /// `cgroupParent`, `docker run --cgroup-parent`): the run then goes to
    /// `<parent>/kiln/<run>` instead of `kiln/<run>`, in every controller hierarchy on cgroup
    /// v1, so that the limits an administrator set on the parent apply. `None`: `kiln/<run>`,
    /// and only where a limit or the device rules need a cgroup.
    pub cgroup_parent: Option<String>,
    /// Standard streams.
    pub stdio: Stdio,
    /// Kill the container after this long.
    pub timeout: Option<Duration>,
    /// After the run, remove the mount points the setup had to create in the root filesystem
    /// (/etc/hosts, /proc, extra mount targets and their new parents) wherever they are still
    /// an empty file or directory, so they stay out of a build step's layer. On by default;
    /// turn it off for runs that share one writable root directory concurrently, since one
    /// run's cleanup would remove the stubs another is about to mount on.
    pub remove_mount_stubs: bool,
    /// An emulator to register for this container alone: its processes then run in a user
    /// namespace mapping every id to itself, with their own `binfmt_misc` instance (see
    /// [`crate::emulation`]). `None` (the default) for binaries the host runs itself.
    pub emulator: Option<crate::emulation::Emulator>,
}

impl Spec {
    /// A spec with Docker-like defaults: cwd `/`, root, hostname `kiln`, network `none`.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        Self {
            rootfs,
            args,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: String::new(),
            hostname: "kiln".to_owned(),
            extra_hosts: Vec::new(),
            resolv_conf: None,
            network: NetworkMode::None,
            security: Security::Sandbox,
            capabilities: crate::CapabilityChanges::default(),
            mounts: Vec::new(),
            resources: Resources::default(),
            ulimits: Vec::new(),
            cgroup_parent: None,
            stdio: Stdio::Captured,
            timeout: None,
            remove_mount_stubs: true,
            emulator: None,
        }
    }
}

impl Spec {
    /// Whether the process gets a terminal.
    pub(crate) fn stdio_is_terminal(&self) -> bool {
        matches!(self.stdio, Stdio::Pty { .. })
    }
}

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }

    /// The exit code as Docker reports it: the code, or 128 + the signal number.
    pub fn docker_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sizes_are_read_from_terminals_only() {
        let size = nix::pty::Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let expected = Some(TerminalSize {
            rows: 33,
            cols: 101,
        });
        assert_eq!(TerminalSize::of(&pty.slave), expected);
        assert_eq!(TerminalSize::of(&pty.master), expected);
        let (read_end, _write_end) = nix::unistd::pipe().unwrap();
        assert_eq!(TerminalSize::of(&read_end), None);
    }
}
