//! `kiln daemon` in a test: started on a socket in a temporary directory and waited for,
//! with BuildKit's client (`buildctl`) and kiln's own (`kiln --host`) pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kiln_testdata::skip;

use super::{context_with, mirror_config, text};

/// BuildKit's client: `KILN_BUILDCTL`, else `../shared/tools/buildctl` beside the workspace.
pub(crate) fn buildctl_path() -> Option<PathBuf> {
    let path = std::env::var_os("KILN_BUILDCTL").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/buildctl"),
        PathBuf::from,
    );
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!(
            "BuildKit's client is not at {} (set KILN_BUILDCTL)",
            path.display()
        ));
        None
    }
}

/// A `kiln daemon` on a socket in a temporary directory; stopped with SIGTERM when dropped.
pub(crate) struct Daemon {
    child: Option<Child>,
    pub(crate) socket: PathBuf,
    pub(crate) buildctl: PathBuf,
}

impl Daemon {
    /// Starts `kiln --root ROOT [--config CONFIG] daemon --addr unix://DIR/kiln.sock` and
    /// waits for its socket.
    pub(crate) fn start(dir: &Path, root: &Path, config: Option<&Path>) -> Option<Self> {
        Self::start_with(dir, root, config, &[])
    }

    /// [`Daemon::start`] with more `kiln daemon` arguments (more addresses, TLS files).
    pub(crate) fn start_with(
        dir: &Path,
        root: &Path,
        config: Option<&Path>,
        args: &[&str],
    ) -> Option<Self> {
        Self::start_with_env(dir, root, config, args, &[])
    }

    /// [`Daemon::start_with`] with `env` added to the daemon's environment.
    pub(crate) fn start_with_env(
        dir: &Path,
        root: &Path,
        config: Option<&Path>,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Option<Self> {
        let buildctl = buildctl_path()?;
        let socket = dir.join("kiln.sock");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command.arg("--root").arg(root).env_remove("KILN_CONFIG");
        command.envs(env.iter().copied());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("daemon")
            .arg("--addr")
            .arg(format!("unix://{}", socket.display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut daemon = Self {
            child: Some(child),
            socket,
            buildctl,
        };
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&daemon.socket).is_ok() {
                return Some(daemon);
            }
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                let output = daemon.child.take().unwrap().wait_with_output().unwrap();
                panic!("kiln daemon exited with {status}: {}", text(&output));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kiln daemon did not listen on {}", daemon.socket.display());
    }

    /// `buildctl --addr unix://SOCKET`, for more arguments.
    pub(crate) fn buildctl_command(&self) -> Command {
        let mut command = Command::new(&self.buildctl);
        command
            .arg("--addr")
            .arg(format!("unix://{}", self.socket.display()));
        command
    }

    /// Runs `buildctl --addr unix://SOCKET ARGS`.
    pub(crate) fn buildctl(&self, args: &[&str]) -> Output {
        self.buildctl_command().args(args).output().unwrap()
    }

    /// Runs `kiln --root CLIENT_ROOT --host unix://SOCKET ARGS` with `env` added: kiln's own
    /// client of this daemon (its store at `CLIENT_ROOT` is not to be touched).
    pub(crate) fn kiln(&self, client_root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .arg("--root")
            .arg(client_root)
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env_remove("KILN_CONFIG")
            .env_remove("KILN_HOST");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    /// Sends SIGTERM and waits for the daemon to exit; returns its output.
    pub(crate) fn stop(mut self) -> Output {
        self.terminate().unwrap()
    }

    fn terminate(&mut self) -> Option<Output> {
        let child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        Some(child.wait_with_output().unwrap())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A test's daemon in a temporary directory `DIR`, its store at `DIR/root`; the daemon stops
/// before the directory is removed.
pub(crate) struct DaemonSetup {
    /// Stopped first.
    pub(crate) daemon: Daemon,
    /// Removed last.
    pub(crate) dir: tempfile::TempDir,
}

impl DaemonSetup {
    /// Starts a daemon for a test that `ready` says can run here; `None` (the test skips,
    /// saying why) where it cannot or buildctl is missing.
    pub(crate) fn start(ready: fn() -> bool) -> Option<Self> {
        Self::start_with(ready, |_| None)
    }

    /// [`DaemonSetup::start`] with the test registry as docker.io's mirror
    /// ([`mirror_config`]), so that `busybox:latest` is the test registry's.
    pub(crate) fn start_mirrored(ready: fn() -> bool) -> Option<Self> {
        Self::start_with(ready, |dir| Some(mirror_config(dir)))
    }

    fn start_with(ready: fn() -> bool, config: fn(&Path) -> Option<PathBuf>) -> Option<Self> {
        if !ready() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let daemon = Daemon::start(dir.path(), &dir.path().join("root"), config.as_deref())?;
        Some(Self { daemon, dir })
    }

    /// The daemon's store.
    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A build context `DIR/context` holding `dockerfile`.
    pub(crate) fn context(&self, dockerfile: &str) -> PathBuf {
        context_with(self.dir.path(), dockerfile)
    }
}
