//! The server: where the daemon listens, what it serves with, and its shutdown.
//!
//! # Overview
//! 1. [`Daemon::open`] opens the store and makes the runner-backed executor.
//! 2. [`Daemon::listen`] makes a [`Listener`] per address: for `unix:///PATH` it removes a
//!    stale socket (one nobody answers on), binds the unix socket and makes it `0660` (and gives
//!    it the configured group); for `fd://` it takes the listening socket the service manager
//!    passed (systemd socket activation, `LISTEN_FDS`/`LISTEN_PID`), whose mode and group are
//!    the socket unit's; for `tcp://HOST:PORT` it binds a TCP socket, which needs mutual TLS
//!    ([`Daemon::tls`]): a client without a certificate signed by the given CA is refused in
//!    the handshake, as buildkitd does with `--tlscacert`.
//! 3. [`Daemon::serve_on`] serves the `Control` service on all of them with bounded message
//!    sizes, and tells the service manager it is ready (`READY=1` on `NOTIFY_SOCKET`, if set).
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
use crate::gateway::Gateways;
use crate::pb::control::control_server::ControlServer;
use crate::pb::gateway::llb_bridge_server::LlbBridgeServer;
use crate::status::Builds;

/// The largest gRPC message the daemon takes or sends (BuildKit's default limit too).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// How long a shutdown waits for clients to close their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where the daemon listens: `unix:///PATH`, `tcp://HOST:PORT`, or `fd://`, the socket the
/// service manager passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// A TCP socket on this `HOST:PORT` (served with mutual TLS only).
    Tcp(String),
    /// The listening unix socket passed by the service manager (systemd socket activation:
    /// the first of `LISTEN_FDS`, fd 3), as BuildKit's `fd://`.
    Activated,
}

/// The PEM files of mutual TLS, as buildkitd's `--tlscert`, `--tlskey` and `--tlscacert`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that clients' certificates must be signed by.
    pub ca: PathBuf,
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if text == "fd://" {
            return Ok(Self::Activated);
        }
        let bad = || Error::Address {
            addr: text.to_owned(),
        };
        if let Some(path) = text.strip_prefix("unix://") {
            return match path.starts_with('/') {
                true => Ok(Self::Unix(PathBuf::from(path))),
                false => Err(bad()),
            };
        }
        let host_port = text.strip_prefix("tcp://").ok_or_else(bad)?;
        // HOST:PORT with a numeric port, the host a name, an IPv4 address or `[IPv6]`.
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(host_port.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

/// A listening socket the daemon serves on, made by [`Daemon::listen`].
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    /// The socket file the daemon created (and removes when it stops); `None` for a socket
    /// the service manager passed, which outlives the daemon, and for TCP.
    created: Option<PathBuf>,
}

#[derive(Debug)]
enum Socket {
    Unix(std::os::unix::net::UnixListener),
    /// Served with the daemon's TLS configuration.
    Tcp(std::net::TcpListener),
}

/// A build daemon: the store it builds in, the registry settings of `kiln.toml`, and the
/// executor of its steps.
pub struct Daemon {
    store: Arc<Store>,
    config: kiln_cache::Config,
    executor: Arc<dyn kiln_solver::Executor>,
    socket_group: Option<u32>,
    tls: Option<tonic::transport::ServerTlsConfig>,
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
            tls: None,
        })
    }

    /// Serves TCP addresses with mutual TLS: the daemon shows the certificate and key of
    /// `files`, and takes only clients whose certificate the CA of `files` signed.
    pub fn tls(mut self, files: &TlsFiles) -> Result<Self, Error> {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let read = |path: &Path| {
            fs_err::read(path).map_err(|source| Error::TlsFile {
                path: path.to_owned(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
        let ca = Certificate::from_pem(read(&files.ca)?);
        self.tls = Some(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(ca)
                // A client that never finishes its handshake does not hold a connection.
                .timeout(Duration::from_secs(10)),
        );
        Ok(self)
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
                socket: Socket::Unix(bind(path, self.socket_group)?),
                created: Some(path.clone()),
            },
            Address::Activated => Listener {
                socket: Socket::Unix(activated()?),
                created: None,
            },
            Address::Tcp(host_port) => {
                if self.tls.is_none() {
                    return Err(Error::TcpWithoutTls {
                        addr: host_port.clone(),
                    });
                }
                let socket = std::net::TcpListener::bind(host_port.as_str()).map_err(|source| {
                    Error::Listen {
                        path: PathBuf::from(format!("tcp://{host_port}")),
                        source,
                    }
                })?;
                Listener {
                    socket: Socket::Tcp(socket),
                    created: None,
                }
            }
        };
        let nonblocking = match &listener.socket {
            Socket::Unix(socket) => socket.set_nonblocking(true),
            Socket::Tcp(socket) => socket.set_nonblocking(true),
        };
        nonblocking.map_err(|source| Error::Listen {
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
        self.serve_on(vec![self.listen(address)?], shutdown).await
    }

    /// Serves the control API on `listeners` until `shutdown` resolves, then cleans up (see
    /// the module's overview).
    pub async fn serve_on(
        &self,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let mut incoming = Vec::new();
        let mut created = Vec::new();
        for listener in listeners {
            let path = listener.path();
            let listen_error = |source| Error::Listen {
                path: path.clone(),
                source,
            };
            let accepted = match listener.socket {
                Socket::Unix(socket) => Incoming::Unix(
                    tokio::net::UnixListener::from_std(socket).map_err(listen_error)?,
                ),
                Socket::Tcp(socket) => {
                    Incoming::Tcp(tokio::net::TcpListener::from_std(socket).map_err(listen_error)?)
                }
            };
            tracing::info!(socket = %path.display(), "serving the control API");
            incoming.push(accepted);
            created.extend(listener.created);
        }
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "telling the service manager the daemon is ready");
        }
        let (cancel, cancelled) = watch::channel(false);
        let gateways = Gateways::default();
        let gateway = LlbBridgeServer::new(gateways.clone())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let service = ControlService {
            gateways,
            store: self.store.clone(),
            config: self.config.clone(),
            executor: self.executor.clone(),
            builds: Builds::default(),
            sessions: crate::session::Sessions::default(),
            shared_work: kiln_solver::SharedWork::for_cores(),
            shutdown: cancelled,
        };
        let control = ControlServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let (stopping, _) = watch::channel(false);
        let stop = {
            let stopped = stopping.subscribe();
            move || {
                let mut stopped = stopped.clone();
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }
            }
        };
        let mut servers = Vec::new();
        for accepted in incoming {
            let mut builder = tonic::transport::Server::builder();
            let server: futures::future::BoxFuture<'_, Result<(), tonic::transport::Error>> =
                match accepted {
                    Incoming::Unix(listener) => Box::pin(
                        builder
                            .add_service(control.clone())
                            .add_service(gateway.clone())
                            .serve_with_incoming_shutdown(
                                tokio_stream::wrappers::UnixListenerStream::new(listener),
                                stop(),
                            ),
                    ),
                    Incoming::Tcp(listener) => {
                        let tls = self.tls.clone().ok_or_else(|| Error::TcpWithoutTls {
                            addr: listener
                                .local_addr()
                                .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
                        })?;
                        Box::pin(
                            builder
                                .tls_config(tls)
                                .map_err(Error::Serve)?
                                .add_service(control.clone())
                                .add_service(gateway.clone())
                                .serve_with_incoming_shutdown(
                                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                                    stop(),
                                ),
                        )
                    }
                };
            servers.push(server);
        }
        let mut servers = futures::future::try_join_all(servers);
        let result = tokio::select! {
            // Before a shutdown, a server only ends by failing.
            result = &mut servers => result.map(drop).map_err(Error::Serve),
            () = shutdown => {
                tracing::info!("shutting down: cancelling builds");
                cancel.send_replace(true);
                stopping.send_replace(true);
                tokio::select! {
                    result = &mut servers => result.map(drop).map_err(Error::Serve),
                    () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                        tracing::warn!("clients kept their connections open: closing them");
                        Ok(())
                    }
                }
            }
        };
        for path in created {
            remove_socket(&path);
        }
        kiln_runner::Runner::new(kiln_engine::RUNNER_STATE).sweep();
        kiln_engine::default_network().sweep();
        result
    }
}

impl Listener {
    /// The socket's path, `tcp://ADDRESS:PORT`, or `fd://` for a passed socket without a path.
    fn path(&self) -> PathBuf {
        match &self.socket {
            Socket::Unix(socket) => socket
                .local_addr()
                .ok()
                .and_then(|addr| addr.as_pathname().map(Path::to_owned))
                .unwrap_or_else(|| PathBuf::from("fd://")),
            Socket::Tcp(socket) => socket.local_addr().map_or_else(
                |_| PathBuf::from("tcp://"),
                |addr| PathBuf::from(format!("tcp://{addr}")),
            ),
        }
    }
}

/// A listener in the async runtime.
enum Incoming {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
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
    fn addresses_are_unix_sockets_tcp_or_passed() {
        assert_eq!(
            "unix:///run/kiln/kiln.sock".parse::<Address>().unwrap(),
            Address::Unix(PathBuf::from("/run/kiln/kiln.sock"))
        );
        assert_eq!("fd://".parse::<Address>().unwrap(), Address::Activated);
        assert_eq!(
            "tcp://0.0.0.0:1234".parse::<Address>().unwrap(),
            Address::Tcp("0.0.0.0:1234".to_owned())
        );
        assert_eq!(
            "tcp://[::1]:1234".parse::<Address>().unwrap(),
            Address::Tcp("[::1]:1234".to_owned())
        );
        for bad in [
            "unix://relative.sock",
            "/run/kiln.sock",
            "fd://3",
            "tcp://0.0.0.0",
            "tcp://:1234",
            "tcp://host:http",
            "tcp://host:70000",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "unsupported address {bad:?}: expected unix:///PATH, tcp://HOST:PORT or fd://"
                )
            );
        }
    }
}
