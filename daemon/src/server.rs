//! The server: where the daemon listens, what it serves with, and its shutdown.
//!
//! # Overview
//! 1. [`Daemon::open`] opens the store and makes the runner-backed executor.
//! 2. [`Daemon::listen`] makes the [`Listener`]: for `unix:///PATH` it removes a stale socket
//!    (one nobody answers on), binds the unix socket and makes it `0660` (and gives it the
//!    configured group); for `fd://` it takes the listening socket the service manager passed
//!    (systemd socket activation, `LISTEN_FDS`/`LISTEN_PID`), whose mode and group are the
//!    socket unit's.
//! 3. [`Daemon::serve_on`] serves the `Control` service on it with bounded message sizes, and
//!    tells the service manager it is ready (`READY=1` on `NOTIFY_SOCKET`, if set).
//! 4. When the shutdown future resolves the server stops accepting connections, the builds in
//!    progress are cancelled (their solve is dropped, which kills their processes and releases
//!    their leases), open `Status` and `Session` streams end; after the connections close (or
//!    a grace period) the socket the daemon bound is removed (a passed one is left to the
//!    service manager) and the runner's per-run files are swept.

use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kiln_cache::Store;
use tokio::sync::watch;

use crate::control::ControlService;
use crate::error::Error;
use crate::gateway::{GatewayService, Returns};
use crate::pb::control::control_server::ControlServer;
use crate::pb::gateway::llb_bridge_server::LlbBridgeServer;
use crate::status::Builds;

/// The largest gRPC message the daemon takes or sends (BuildKit's default limit too).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// How long a shutdown waits for clients to close their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where the daemon listens: `unix:///PATH`, or `fd://`, the socket the service manager passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// The listening unix socket passed by the service manager (systemd socket activation:
    /// the first of `LISTEN_FDS`, fd 3), as BuildKit's `fd://`.
    Activated,
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if text == "fd://" {
            return Ok(Self::Activated);
        }
        match text.strip_prefix("unix://") {
            Some(path) if path.starts_with('/') => Ok(Self::Unix(PathBuf::from(path))),
            _ => Err(Error::Address {
                addr: text.to_owned(),
            }),
        }
    }
}

/// A listening socket the daemon serves on, made by [`Daemon::listen`].
#[derive(Debug)]
pub struct Listener {
    socket: std::os::unix::net::UnixListener,
    /// The socket file the daemon created (and removes when it stops); `None` for a socket
    /// the service manager passed, which outlives the daemon.
    created: Option<PathBuf>,
}

/// A build daemon: the store it builds in, the registry settings of `kiln.toml`, and the
/// executor of its steps.
pub struct Daemon {
    store: Arc<Store>,
    config: kiln_cache::Config,
    executor: Arc<dyn kiln_solver::Executor>,
    socket_group: Option<u32>,
}

impl Daemon {
    /// A daemon building in the store at `root` with the settings of `config`.
    pub fn open(root: impl Into<PathBuf>, config: kiln_cache::Config) -> Result<Self, Error> {
        let root = root.into();
        let store = Store::open(&root).map_err(|source| Error::Store { root, source })?;
        Ok(Self {
            store: Arc::new(store),
            config,
            executor: kiln_engine::executor(kiln_engine::RUNNER_STATE.into()),
            socket_group: None,
        })
    }

    /// Gives the socket to the group `gid` (its members may then build), instead of the
    /// daemon's own group.
    #[must_use]
    pub fn socket_group(mut self, gid: u32) -> Self {
        self.socket_group = Some(gid);
        self
    }

    /// Makes the socket to serve on at `address` (see the module's overview). Call it before
    /// starting threads: taking a passed socket removes `LISTEN_FDS` and `LISTEN_PID` from the
    /// environment, so that the build steps do not inherit them.
    pub fn listen(&self, address: &Address) -> Result<Listener, Error> {
        let listener = match address {
            Address::Unix(path) => Listener {
                socket: bind(path, self.socket_group)?,
                created: Some(path.clone()),
            },
            Address::Activated => Listener {
                socket: activated()?,
                created: None,
            },
        };
        listener
            .socket
            .set_nonblocking(true)
            .map_err(|source| Error::Listen {
                path: listener.path(),
                source,
            })?;
        Ok(listener)
    }

    /// Serves the control API on `address` until `shutdown` resolves, then cleans up: the
    /// same as [`Daemon::listen`] and [`Daemon::serve_on`].
    pub async fn serve(
        &self,
        address: &Address,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        self.serve_on(self.listen(address)?, shutdown).await
    }

    /// Serves the control API on `listener` until `shutdown` resolves, then cleans up (see the
    /// module's overview).
    pub async fn serve_on(
        &self,
        listener: Listener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let path = listener.path();
        let Listener { socket, created } = listener;
        let listener =
            tokio::net::UnixListener::from_std(socket).map_err(|source| Error::Listen {
                path: path.clone(),
                source,
            })?;
        tracing::info!(socket = %path.display(), "serving the control API");
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "telling the service manager the daemon is ready");
        }
        let (cancel, cancelled) = watch::channel(false);
        let returns = Returns::default();
        let gateway = LlbBridgeServer::new(GatewayService::new(returns.clone()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let service = ControlService {
            returns,
            store: self.store.clone(),
            config: self.config.clone(),
            executor: self.executor.clone(),
            builds: Builds::default(),
            sessions: crate::session::Sessions::default(),
            sync_dirs: crate::locals::SyncDirs::default(),
            shutdown: cancelled,
        };
        let control = ControlServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let (stopping, mut stopped) = watch::channel(false);
        let server = tonic::transport::Server::builder()
            .add_service(control)
            .add_service(gateway)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                tracing::info!("shutting down: cancelling builds");
                cancel.send_replace(true);
                stopping.send_replace(true);
            });
        let result = tokio::select! {
            result = server => result.map_err(Error::Serve),
            () = async {
                let _ = stopped.wait_for(|s| *s).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("clients kept their connections open: closing them");
                Ok(())
            }
        };
        if let Some(path) = created {
            remove_socket(&path);
        }
        kiln_runner::Runner::new(kiln_engine::RUNNER_STATE).sweep();
        kiln_engine::default_network().sweep();
        result
    }
}

impl Listener {
    /// The socket's path, or `fd://` for a passed socket without one.
    fn path(&self) -> PathBuf {
        self.socket
            .local_addr()
            .ok()
            .and_then(|addr| addr.as_pathname().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("fd://"))
    }
}

/// The first listening socket the service manager passed (`LISTEN_FDS`, `LISTEN_PID`): the
/// sd_listen_fds protocol of the `listenfd` crate, which checks that the descriptor is a
/// listening unix stream socket.
fn activated() -> Result<std::os::unix::net::UnixListener, Error> {
    match listenfd::ListenFd::from_env().take_unix_listener(0) {
        Ok(Some(socket)) => Ok(socket),
        Ok(None) => Err(Error::NotActivated),
        Err(source) => Err(Error::Activated { source }),
    }
}

/// Binds the socket at `path`, `0660`, owned by `group` if given. A socket file nobody
/// answers on is what a killed daemon left: it is replaced; one that answers is in use.
fn bind(path: &Path, group: Option<u32>) -> Result<std::os::unix::net::UnixListener, Error> {
    let listen_error = |source| Error::Listen {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::InUse {
                path: path.to_owned(),
            });
        }
        fs_err::remove_file(path).map_err(listen_error)?;
    }
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent).map_err(listen_error)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(listen_error)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(listen_error)?;
    }
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen_error)?;
    Ok(listener)
}

fn remove_socket(path: &Path) {
    if let Err(e) = fs_err::remove_file(path) {
        tracing::warn!(error = %e, "removing the socket");
    }
}

/// Resolves on SIGTERM or SIGINT, the signals that stop the daemon.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot watch for SIGTERM and SIGINT: only killing stops the daemon");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unix_sockets() {
        assert_eq!(
            "unix:///run/kiln/kiln.sock".parse::<Address>().unwrap(),
            Address::Unix(PathBuf::from("/run/kiln/kiln.sock"))
        );
        assert_eq!("fd://".parse::<Address>().unwrap(), Address::Activated);
        for bad in [
            "tcp://0.0.0.0:1234",
            "unix://relative.sock",
            "/run/kiln.sock",
            "fd://3",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("unsupported address {bad:?}: expected unix:///PATH or fd://")
            );
        }
    }
}
