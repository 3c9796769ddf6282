//! What the daemon can fail with.

use std::path::PathBuf;

/// An error of the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--addr` is not a supported address.
    #[error("unsupported address {addr:?}: expected unix:///PATH, tcp://HOST:PORT or fd://")]
    Address {
        /// The address as given.
        addr: String,
    },
    /// The store could not be opened.
    #[error("opening the store at {root}")]
    Store {
        /// The store's root.
        root: PathBuf,
        /// Why.
        #[source]
        source: kiln_cache::Error,
    },
    /// The socket could not be made or bound.
    #[error("listening on {path}")]
    Listen {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `fd://` was asked for but the service manager passed no socket.
    #[error(
        "fd:// needs a socket passed by the service manager (LISTEN_FDS, LISTEN_PID), and none was"
    )]
    NotActivated,
    /// The passed descriptor is not a listening unix stream socket.
    #[error("the socket passed by the service manager")]
    Activated {
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("another daemon is listening on {path}")]
    InUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// A TCP address without mutual TLS.
    #[error(
        "tcp://{addr} needs mutual TLS: give --tlscert, --tlskey and --tlscacert (a client must show a certificate the CA signed)"
    )]
    TcpWithoutTls {
        /// The address.
        addr: String,
    },
    /// A TLS certificate or key could not be read.
    #[error("reading {path}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("serving the control API")]
    Serve(#[source] tonic::transport::Error),
}
