//! SSH agent socket mounts: a socket of the step's own, forwarding to the session's agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_llb::pb;

use crate::error::Error;
use crate::executor::ExecMount;
use crate::llbsolver::SessionConfig;

/// Forwards connections on a socket of its own to an SSH agent socket until dropped.
pub(super) struct SshForwarder {
    socket: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl SshForwarder {
    /// A socket with the given owner and mode, forwarding to `agent`. It lives in `scratch`
    /// (the store's scratch space, cleared by garbage collection after a killed build) when
    /// that path is short enough for a socket address, else in the system's temporary
    /// directory.
    fn start(scratch: &Path, agent: &Path, uid: u32, gid: u32, mode: u32) -> Result<Self, Error> {
        use std::os::unix::fs::PermissionsExt as _;
        use std::os::unix::net::UnixListener;
        // `sun_path` holds 108 bytes with the final NUL.
        const SOCKET_PATH_MAX: usize = 107;
        let mut builder = tempfile::Builder::new();
        builder.prefix("ssh-");
        let added = "/ssh-XXXXXX/agent.sock".len();
        let dir = if scratch.as_os_str().len() + added <= SOCKET_PATH_MAX {
            builder.tempdir_in(scratch)?
        } else {
            builder.tempdir()?
        };
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).map_err(|error| Error::SshSocket { error })?;
        std::os::unix::fs::chown(&socket, Some(uid), Some(gid))?;
        fs_err::set_permissions(&socket, std::fs::Permissions::from_mode(mode & 0o777))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (stop, agent) = (stop.clone(), agent.to_owned());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let agent = agent.clone();
                    std::thread::spawn(move || forward(client, &agent));
                }
            })
        };
        Ok(Self {
            socket,
            stop,
            thread: Some(thread),
            _dir: dir,
        })
    }
}

/// Copies bytes both ways between a client and a new connection to the agent.
fn forward(client: std::os::unix::net::UnixStream, agent: &Path) {
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    let upstream = match UnixStream::connect(agent) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(agent = %agent.display(), error = %e, "connecting to the SSH agent");
            return;
        }
    };
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl Drop for SshForwarder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accepting thread so that it sees the stop flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An SSH agent socket mount: the session's agent for the mount's id (`default` when empty)
/// behind a forwarding socket with the mount's owner and mode; `None` when the mount is
/// optional and no agent was given for the id.
pub(super) fn ssh_mount(
    config: &SessionConfig,
    m: &pb::Mount,
) -> Result<Option<(ExecMount, SshForwarder)>, Error> {
    let opt = m.ssh_opt.clone().unwrap_or_default();
    let id = if opt.id.is_empty() {
        "default"
    } else {
        opt.id.as_str()
    };
    let Some(agent) = config.ssh.get(id) else {
        if opt.optional {
            return Ok(None);
        }
        return Err(Error::NoSshAgent { id: id.to_owned() });
    };
    let mode = if opt.mode == 0 { 0o600 } else { opt.mode };
    let forwarder = SshForwarder::start(
        &crate::llbsolver::scratch_dir(&config.store)?,
        agent,
        opt.uid,
        opt.gid,
        mode,
    )?;
    let mount = ExecMount::Bind {
        source: forwarder.socket.clone(),
        target: PathBuf::from(&m.dest),
        readonly: false,
    };
    Ok(Some((mount, forwarder)))
}
