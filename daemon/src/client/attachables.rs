//! What a client serves the daemon through its session's tunnel: the other side of
//! `filesync.rs`, `filesend.rs`, `secrets.rs` and `sshforward.rs`.
//!
//! - `FileSync.DiffCopy`: a local directory by its `dir-name`, only the paths its selection
//!   (`include-patterns`, `exclude-patterns`, `followpaths`: the `.dockerignore` the daemon's
//!   frontend read) picks, sent by the daemon's own sender; the daemon asks only for the files
//!   it does not have yet.
//! - `FileSend.DiffCopy`: an export, told apart by its exporter's index
//!   (`buildkit-attachable-exporter-id`): a directory arrives as a file sync (fsutil packets,
//!   merged into the destination, owned by this process's user, as BuildKit's clients receive
//!   it), an archive as the call's bytes.
//! - `Secrets.GetSecret` and `SSH.CheckAgent`/`ForwardAgent`: the build's secrets and agents.
//! - `Content.Info`/`Read`/`Write`: the local caches' directories (`content.rs`).
//! - `Auth.Credentials`: registry credentials from this user's Docker config (as `docker login`
//!   wrote them, credential helpers included), for the daemon's pulls and pushes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use kiln_solver::LocalRequest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tonic::codegen::{BoxFuture, BoxStream, Service, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::server::{NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::ExportTarget;
use crate::filesync::{AbortOnDrop, NextPacket, Receiver, Sender, forward_packets};
use crate::pb::content::content_server::ContentServer;
use crate::pb::filesync::auth_server::{Auth, AuthServer};
use crate::pb::filesync::file_sync_server::{FileSync, FileSyncServer};
use crate::pb::filesync::{BytesMessage, CredentialsRequest, CredentialsResponse};
use crate::pb::fsutil::types::Packet;
use crate::pb::secrets::secrets_server::{Secrets, SecretsServer};
use crate::pb::secrets::{GetSecretRequest, GetSecretResponse};
use crate::pb::sshforward::ssh_server::{Ssh, SshServer};
use crate::pb::sshforward::{self, CheckAgentRequest, CheckAgentResponse};

/// The methods a client's session serves, as its `Session` call announces them.
pub(super) const METHODS: &[&str] = &[
    crate::filesync::DIFF_COPY,
    crate::filesend::FILE_SEND,
    crate::secrets::GET_SECRET,
    "/moby.sshforward.v1.SSH/CheckAgent",
    crate::sshforward::FORWARD_AGENT,
    crate::auth::CREDENTIALS,
    "/containerd.services.content.v1.Content/Info",
    "/containerd.services.content.v1.Content/Read",
    crate::content::WRITE,
];

/// What the session serves.
pub(super) struct Attachables {
    pub(super) locals: HashMap<String, PathBuf>,
    pub(super) secrets: HashMap<String, Vec<u8>>,
    pub(super) ssh: HashMap<String, PathBuf>,
    /// Where each exporter's delivery goes, by the exporter's index.
    pub(super) exports: Vec<Option<ExportTarget>>,
    /// The registry credentials the daemon may ask for.
    pub(super) credentials: kiln_cache::DockerConfigFile,
    /// The directories of local caches (OCI layouts) by store id (`local:DIR`).
    pub(super) cache_dirs: HashMap<String, PathBuf>,
}

/// The session's call and its server; both end when this is dropped.
pub(super) struct Serving {
    pump: Option<AbortOnDrop>,
    _server: AbortOnDrop,
}

impl Serving {
    pub(super) fn with(mut self, pump: tokio::task::JoinHandle<()>) -> Self {
        self.pump = Some(AbortOnDrop(pump));
        self
    }
}

/// The client's end of the tunnel, one connection for the server.
struct Tunnel(tokio::io::DuplexStream);

impl tonic::transport::server::Connected for Tunnel {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for Tunnel {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tunnel {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serves `services` on the tunnel's end `io`.
pub(super) fn serve(services: Attachables, io: tokio::io::DuplexStream) -> Serving {
    let max = crate::MAX_MESSAGE_SIZE;
    let files = FileSyncServer::new(LocalDirs {
        dirs: services.locals,
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let secrets = SecretsServer::new(SecretStore {
        secrets: services.secrets,
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let ssh = SshServer::new(Agents {
        sockets: services.ssh,
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let exports = FileSendService {
        targets: Arc::new(services.exports),
    };
    let content = ContentServer::new(super::content::LayoutStores {
        dirs: services.cache_dirs,
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let auth = AuthServer::new(DockerCredentials(Arc::new(services.credentials)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    // One connection, and the server stays up until it is aborted (an ended stream of
    // connections would make it shut the connection down).
    let incoming = futures::stream::once(async { Ok::<_, std::io::Error>(Tunnel(io)) })
        .chain(futures::stream::pending());
    let server = tonic::transport::Server::builder()
        .add_service(files)
        .add_service(exports)
        .add_service(secrets)
        .add_service(ssh)
        .add_service(auth)
        .add_service(content)
        .serve_with_incoming(incoming);
    Serving {
        _server: AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::debug!(%error, "the session's server ended");
            }
        })),
        pump: None,
    }
}

/// The values of `key`, URL-decoded when the sender marked them (`KEY-encoded`), as
/// BuildKit's file sync reads them.
fn list(metadata: &MetadataMap, key: &str) -> Vec<String> {
    let encoded = metadata
        .get(format!("{key}-encoded").as_str())
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
    metadata
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                form_urlencoded::parse(format!("={v}").as_bytes())
                    .next()
                    .map_or_else(String::new, |(_, value)| value.into_owned())
            } else {
                v.to_owned()
            }
        })
        .collect()
}

/// The response of a sync call: what its worker sends.
fn packets(outgoing: mpsc::UnboundedReceiver<Packet>) -> BoxStream<Packet> {
    Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing).map(Ok))
}

/// A call's packets for a blocking worker, and the task that reads them.
fn incoming(stream: Streaming<Packet>) -> (NextPacket, AbortOnDrop) {
    let (forward, mut queue) = mpsc::channel(64);
    let reader = AbortOnDrop(forward_packets(stream, forward));
    (Box::new(move || queue.blocking_recv()), reader)
}

struct LocalDirs {
    dirs: HashMap<String, PathBuf>,
}

#[tonic::async_trait]
impl FileSync for LocalDirs {
    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<BoxStream<Packet>>, Status> {
        let metadata = request.metadata();
        let name = list(metadata, "dir-name").into_iter().next();
        let Some((name, dir)) = name.and_then(|n| self.dirs.get(&n).map(|d| (n, d.clone()))) else {
            return Err(Status::not_found(format!(
                "no access allowed to dir {:?}",
                list(metadata, "dir-name").join(",")
            )));
        };
        let selection = LocalRequest {
            name,
            include_patterns: list(metadata, "include-patterns"),
            exclude_patterns: list(metadata, "exclude-patterns"),
            follow_paths: list(metadata, "followpaths"),
            ..LocalRequest::default()
        };
        let (next, reader) = incoming(request.into_inner());
        let (outgoing, response) = mpsc::unbounded_channel();
        tokio::task::spawn_blocking(move || {
            let _reader = reader;
            let mut sender = Sender { outgoing, next };
            let sent = match selection.select(&dir) {
                Ok(paths) => sender.run_selected(&dir, paths),
                Err(error) => sender.run_failed(error.into()),
            };
            match sent {
                Ok(bytes) => tracing::debug!(name = selection.name, bytes, "directory sent"),
                Err(error) => tracing::debug!(%error, name = selection.name, "sending failed"),
            }
        });
        Ok(Response::new(packets(response)))
    }
}

/// `FileSend.DiffCopy`, whose messages are fsutil packets or bytes by the export it carries:
/// served by hand, as the generated server decodes one message type only.
#[derive(Clone)]
struct FileSendService {
    targets: Arc<Vec<Option<ExportTarget>>>,
}

impl NamedService for FileSendService {
    const NAME: &'static str = "moby.filesync.v1.FileSend";
}

impl<B> Service<http::Request<B>> for FileSendService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let targets = self.targets.clone();
        Box::pin(async move {
            if request.uri().path() != crate::filesend::FILE_SEND {
                return Ok(Status::unimplemented(request.uri().path().to_owned()).into_http());
            }
            let index = request
                .headers()
                .get(crate::filesend::EXPORTER_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let target = index.and_then(|i| targets.get(i).cloned().flatten());
            let max = Some(crate::MAX_MESSAGE_SIZE);
            Ok(match target {
                Some(ExportTarget::Dir(dir)) => {
                    let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
                    tonic::server::Grpc::new(codec)
                        .apply_max_message_size_config(max, max)
                        .streaming(ReceiveDir(dir), request)
                        .await
                }
                Some(target) => {
                    let codec = tonic_prost::ProstCodec::<BytesMessage, BytesMessage>::default();
                    tonic::server::Grpc::new(codec)
                        .apply_max_message_size_config(max, max)
                        .streaming(ReceiveFile(target), request)
                        .await
                }
                None => Status::invalid_argument(format!(
                    "the client has no export {}",
                    index.map_or_else(|| "without an index".to_owned(), |i| i.to_string())
                ))
                .into_http(),
            })
        })
    }
}

/// A directory export into its destination.
struct ReceiveDir(PathBuf);

impl StreamingService<Packet> for ReceiveDir {
    type Response = Packet;
    type ResponseStream = BoxStream<Packet>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Packet>>) -> Self::Future {
        let dest = self.0.clone();
        Box::pin(async move {
            let (next, reader) = incoming(request.into_inner());
            let (outgoing, response) = mpsc::unbounded_channel();
            let owner = (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
            tokio::task::spawn_blocking(move || {
                let _reader = reader;
                let received = Receiver {
                    dest,
                    outgoing,
                    next,
                    merge: true,
                    owner: Some(owner),
                }
                .run();
                if let Err(error) = received {
                    tracing::debug!(%error, "receiving the export failed");
                }
            });
            Ok(Response::new(packets(response)))
        })
    }
}

/// An archive export into its file (or standard output).
struct ReceiveFile(ExportTarget);

/// Writes the archive's bytes as they come; the file takes its place once complete.
fn write_archive(
    target: &ExportTarget,
    mut chunks: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    match target {
        ExportTarget::File(path) => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            fs_err::create_dir_all(parent)?;
            let mut file = tempfile::NamedTempFile::new_in(parent)?;
            while let Some(chunk) = chunks.blocking_recv() {
                file.write_all(&chunk)?;
            }
            file.as_file().sync_all()?;
            file.persist(path).map_err(|e| e.error)?;
        }
        // Written through the content store, never sent as an archive.
        ExportTarget::Layout(dir) => {
            return Err(std::io::Error::other(format!(
                "the image layout {} is not an archive",
                dir.display()
            )));
        }
        ExportTarget::Stdout | ExportTarget::Dir(_) => {
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = chunks.blocking_recv() {
                out.write_all(&chunk)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

impl StreamingService<BytesMessage> for ReceiveFile {
    type Response = BytesMessage;
    type ResponseStream = BoxStream<BytesMessage>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<BytesMessage>>) -> Self::Future {
        let target = self.0.clone();
        Box::pin(async move {
            let mut stream = request.into_inner();
            let (chunks, queue) = mpsc::channel::<Vec<u8>>(8);
            // The call ends (its response stream) once the file is complete, or with why not.
            let (done, response) = mpsc::channel::<Result<BytesMessage, Status>>(1);
            tokio::spawn(async move {
                let writing = tokio::task::spawn_blocking(move || write_archive(&target, queue));
                let mut failed = None;
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            if chunks.send(message.data).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            failed = Some(status);
                            break;
                        }
                    }
                }
                drop(chunks);
                let written = writing.await.map_err(std::io::Error::other).and_then(|r| r);
                let result = match (failed, written) {
                    (Some(status), _) => Err(status),
                    (None, Err(error)) => Err(Status::internal(format!(
                        "writing the export on the client: {error}"
                    ))),
                    (None, Ok(())) => return,
                };
                let _ = done.send(result.map(|()| BytesMessage::default())).await;
            });
            Ok(Response::new(
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(response))
                    as BoxStream<BytesMessage>,
            ))
        })
    }
}

struct SecretStore {
    secrets: HashMap<String, Vec<u8>>,
}

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.secrets.get(id) {
            Some(data) => Ok(Response::new(GetSecretResponse { data: data.clone() })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

/// The credentials of this user's Docker config, read when the daemon asks.
struct DockerCredentials(Arc<kiln_cache::DockerConfigFile>);

#[tonic::async_trait]
impl Auth for DockerCredentials {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        use kiln_cache::oci_client::secrets::RegistryAuth;
        let host = request.into_inner().host;
        let file = self.0.clone();
        // The file is read and credential helpers run on a blocking thread.
        let auth = tokio::task::spawn_blocking(move || file.for_host(&host))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(kiln_llb::error_chain(&e)))?;
        let (username, secret) = match auth {
            RegistryAuth::Anonymous => (String::new(), String::new()),
            RegistryAuth::Basic(username, password) => (username, password),
            RegistryAuth::Bearer(token) => (String::new(), token),
        };
        Ok(Response::new(CredentialsResponse { username, secret }))
    }
}

struct Agents {
    sockets: HashMap<String, PathBuf>,
}

impl Agents {
    fn socket(&self, id: &str) -> Result<&PathBuf, Status> {
        let id = if id.is_empty() { "default" } else { id };
        self.sockets
            .get(id)
            .ok_or_else(|| Status::not_found(format!("unset ssh forward key {id}")))
    }
}

#[tonic::async_trait]
impl Ssh for Agents {
    async fn check_agent(
        &self,
        request: Request<CheckAgentRequest>,
    ) -> Result<Response<CheckAgentResponse>, Status> {
        self.socket(&request.get_ref().id)?;
        Ok(Response::new(CheckAgentResponse {}))
    }

    async fn forward_agent(
        &self,
        request: Request<Streaming<sshforward::BytesMessage>>,
    ) -> Result<Response<BoxStream<sshforward::BytesMessage>>, Status> {
        let id = request
            .metadata()
            .get(crate::sshforward::SSH_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let socket = self.socket(&id)?;
        let agent = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
            Status::unavailable(format!("connecting to ssh agent {}: {e}", socket.display()))
        })?;
        let (mut from_agent, mut to_agent) = agent.into_split();
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if to_agent.write_all(&message.data).await.is_err() {
                    break;
                }
            }
            let _ = to_agent.shutdown().await;
        });
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut buffer = vec![0; crate::session::CHUNK];
            loop {
                match from_agent.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let message = sshforward::BytesMessage {
                            data: buffer[..n].to_vec(),
                        };
                        if sender.send(Ok(message)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
