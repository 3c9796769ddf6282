//! The session tunnel: a client's `Control.Session` call carries a second gRPC connection in
//! its byte stream, on which the *client* serves (file sync, secrets, ...) and the daemon calls.
//!
//! # Overview
//! 1. The client opens `Control.Session` with its session id, shared key and the methods it
//!    serves in the `X-Docker-Expose-Session-*` metadata (BuildKit's names).
//! 2. [`Sessions::attach`] joins the call's two message streams into one byte pipe (an in-memory
//!    duplex, pumped both ways) and makes a lazily connecting HTTP/2 gRPC channel over it: the
//!    daemon is that connection's client.
//! 3. The session is known by its id until the client closes the call (or the daemon shuts
//!    down); builds find it with [`Sessions::get`], which waits a while for a session that is
//!    still being opened, as a client opens it alongside its `Solve`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::pb::control::BytesMessage;

pub(crate) const HEADER_ID: &str = "x-docker-expose-session-uuid";
pub(crate) const HEADER_SHARED_KEY: &str = "x-docker-expose-session-sharedkey";
pub(crate) const HEADER_METHOD: &str = "x-docker-expose-session-grpc-method";
pub(crate) const HEADER_NAME: &str = "x-docker-expose-session-name";

/// How long a build waits for the session its request names.
const SESSION_WAIT: Duration = Duration::from_secs(10);

/// The bytes one tunnel message carries at most.
pub(crate) const CHUNK: usize = 32 << 10;

/// An open client session.
pub(crate) struct ClientSession {
    /// The session id the client chose.
    pub(crate) id: String,
    /// What the client's files are known by across its sessions (its working directory's key).
    pub(crate) shared_key: String,
    /// The gRPC methods the client serves, `/package.Service/Method`, lowercase.
    methods: HashSet<String>,
    /// The connection to the client's services.
    pub(crate) channel: Channel,
}

impl ClientSession {
    /// Whether the client serves `method` (`/package.Service/Method`).
    pub(crate) fn supports(&self, method: &str) -> bool {
        self.methods.contains(&method.to_ascii_lowercase())
    }
}

/// The open sessions by id.
#[derive(Clone)]
pub(crate) struct Sessions {
    open: Arc<Mutex<HashMap<String, Arc<ClientSession>>>>,
    /// Bumped whenever a session opens, for [`Sessions::get`] to look again.
    opened: watch::Sender<u64>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            open: Arc::default(),
            opened: watch::channel(0).0,
        }
    }
}

pub(crate) type MessageStream =
    Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send + 'static>>;

/// A session's id with the `PREFIX:` BuildKit's LLB may put before it removed.
fn bare_id(id: &str) -> &str {
    match id.split_once(':') {
        Some((_, rest)) if !rest.is_empty() => rest,
        _ => id,
    }
}

impl Sessions {
    /// Opens the session a `Control.Session` call carries; the returned stream is what the
    /// daemon sends back through the call. The session closes when the client ends the call
    /// or `shutdown` turns true.
    pub(crate) fn attach(
        &self,
        metadata: &MetadataMap,
        inbound: Streaming<BytesMessage>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<MessageStream, Status> {
        let header = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let id = header(HEADER_ID);
        if id.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the session call has no {HEADER_ID} header"
            )));
        }
        let methods = metadata
            .get_all(HEADER_METHOD)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
        // The daemon's end of the pipe is the HTTP/2 client's connection; the call's messages
        // are pumped through the other end.
        let (ours, theirs) = tokio::io::duplex(4 * CHUNK);
        let channel = one_connection(ours, "http://session", "a session carries one connection");
        let session = Arc::new(ClientSession {
            id: id.clone(),
            shared_key: header(HEADER_SHARED_KEY),
            methods,
            channel,
        });
        let (read_half, write_half) = tokio::io::split(theirs);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), session.clone());
        self.opened.send_modify(|n| *n += 1);
        tracing::debug!(session = id, "session opened");
        // Inbound: the client's bytes into the pipe, until the client ends the call.
        let sessions = self.clone();
        tokio::spawn(async move {
            let mut write_half = write_half;
            tokio::select! {
                () = pump_in(inbound, &mut write_half) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
            let _ = write_half.shutdown().await;
            sessions.close(&session);
            tracing::debug!(session = session.id, "session closed");
        });
        // Outbound: the pipe's bytes to the client, as the call's response messages.
        Ok(pump_out(read_half))
    }

    fn close(&self, session: &Arc<ClientSession>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            open.remove(&session.id);
        }
    }

    /// The open session `id`, waiting a while for one that is being opened.
    pub(crate) async fn get(&self, id: &str) -> Result<Arc<ClientSession>, Status> {
        let id = bare_id(id);
        let mut opened = self.opened.subscribe();
        let found = tokio::time::timeout(SESSION_WAIT, async {
            loop {
                if let Some(session) = self
                    .open
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(id)
                {
                    return session.clone();
                }
                if opened.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        found.map_err(|_| Status::not_found(format!("no active session for {id}")))
    }
}

/// Writes the bytes of a tunnel's incoming messages into its pipe until the call ends (or
/// the pipe closes).
pub(crate) async fn pump_in<W>(mut inbound: Streaming<BytesMessage>, pipe: &mut W)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = inbound.next().await {
        if pipe.write_all(&message.data).await.is_err() {
            break;
        }
    }
}

/// The bytes read from a tunnel's pipe, as the call's outgoing messages.
pub(crate) fn pump_out<R>(mut pipe: R) -> MessageStream
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut buffer = vec![0; CHUNK];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = BytesMessage {
                        data: buffer[..n].to_vec(),
                    };
                    if sender.send(Ok(message)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

/// An HTTP/2 channel over the one connection `io` (a second connect fails with `refused`).
pub(crate) fn one_connection<IO>(io: IO, uri: &'static str, refused: &'static str) -> Channel
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut io = Some(io);
    let connector = tower::service_fn(move |_| {
        let io = io.take();
        async move {
            io.map(TokioIo::new)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotConnected, refused))
        }
    });
    Endpoint::from_static(uri).connect_with_connector_lazy(connector)
}
