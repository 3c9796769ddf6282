//! kiln's own client of a build daemon (`kiln --host unix:///PATH build`): the other end of
//! the control API this crate serves, speaking it as BuildKit's clients do, so that it drives
//! `kiln daemon` or any daemon with BuildKit's API.
//!
//! # Overview
//! 1. [`Client::connect`] dials the daemon ([`Host`]): its unix socket, or its TCP address with
//!    mutual TLS ([`TlsFiles`]: this client's certificate and key, the CA of the daemon's).
//! 2. [`Client::build`] opens a session (`Control.Session`) whose tunnel carries the services
//!    the daemon calls back (`attachables.rs`): the build's local directories
//!    (`FileSync.DiffCopy`, only the files the daemon's selection asks for), its secrets
//!    (`Secrets.GetSecret`), its SSH agents (`SSH`), and the exports it sends to this side
//!    (`FileSend.DiffCopy`: a directory, or an archive's bytes).
//! 3. It sends `Control.Solve` with the frontend and its attributes, the exporters and the
//!    cache options, and follows `Control.Status` meanwhile, turning the daemon's vertex
//!    updates back into the solver's progress [`Event`]s for the caller's [`Reporter`].
//! 4. The solve's answer is the exporters' response (`containerimage.digest`, ...); the
//!    session closes with the build.

mod attachables;
mod content;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use hyper_util::rt::TokioIo;
use kiln_solver::{Event, Reporter};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::TlsFiles;
use crate::pb::control::control_client::ControlClient;
use crate::pb::control::{
    CacheOptions, CacheOptionsEntry, DiskUsageRequest, Exporter, ListWorkersRequest, PruneRequest,
    SolveRequest, StatusRequest, StatusResponse,
};
use crate::session::{HEADER_ID, HEADER_METHOD, HEADER_NAME, HEADER_SHARED_KEY};

pub use crate::pb::control::UsageRecord;
pub use crate::pb::types::WorkerRecord;

/// Where a daemon is, as `--host` / `$KILN_HOST` name it (docker's `-H`): `unix:///PATH`, or
/// `tcp://HOST:PORT` (a daemon served with mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    text: String,
    place: Place,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Unix(PathBuf),
    /// `HOST:PORT`, and the host name the daemon's certificate must name.
    Tcp {
        authority: String,
        name: String,
    },
}

impl std::str::FromStr for Host {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, ClientError> {
        let invalid = || ClientError::Host {
            host: text.to_owned(),
        };
        let place = if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid());
            }
            Place::Unix(PathBuf::from(path))
        } else if let Some(authority) = text.strip_prefix("tcp://") {
            let authority = authority.trim_end_matches('/');
            let (name, port) = authority.rsplit_once(':').ok_or_else(invalid)?;
            let name = name.trim_start_matches('[').trim_end_matches(']');
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(invalid());
            }
            Place::Tcp {
                authority: authority.to_owned(),
                name: name.to_owned(),
            }
        } else {
            return Err(invalid());
        };
        Ok(Self {
            text: text.to_owned(),
            place,
        })
    }
}

impl Host {
    /// Whether the daemon is reached over TCP (with mutual TLS).
    pub fn is_tcp(&self) -> bool {
        matches!(self.place, Place::Tcp { .. })
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a daemon could not be asked, or what it answered instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A `tcp://` host without the client's certificates.
    #[error(
        "--host {host}: a TCP daemon is served with mutual TLS; set KILN_CERT_PATH to a \
         directory with ca.pem, cert.pem and key.pem"
    )]
    NoCertificates {
        /// The host as given.
        host: String,
    },
    /// Not a host kiln knows how to reach.
    #[error("invalid --host {host:?}: expected unix:///PATH or tcp://HOST:PORT")]
    Host {
        /// The host as given.
        host: String,
    },
    /// A TLS file could not be read.
    #[error("reading {path}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing answers at the host.
    #[error("cannot connect to the kiln daemon at {host}")]
    Connect {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The daemon refused or failed the call; its message.
    #[error("{message}")]
    Daemon {
        /// The call's status code.
        code: tonic::Code,
        /// What the daemon said.
        message: String,
    },
    /// An image layout directory (`type=oci,tar=false`) could not be made or recorded.
    #[error("image layout {dir}")]
    ImageLayout {
        /// The layout directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local cache's directory could not be read or written.
    #[error("local cache {dir}")]
    LocalCache {
        /// The cache directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Daemon {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Where an export the daemon sends back goes on this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// A directory (`type=local`), made if missing; what it holds already is kept.
    Dir(PathBuf),
    /// A file (`type=tar|oci|docker`), replaced when the archive is complete.
    File(PathBuf),
    /// This process's standard output (`dest=-`).
    Stdout,
    /// An OCI layout directory (`type=oci|docker,tar=false`), made if missing: the daemon
    /// writes the image's blobs into it through this side's content store, and its
    /// `index.json` then names the image alone.
    Layout(PathBuf),
}

/// One exporter of a build: its type and attributes as the daemon takes them, and where its
/// result lands on this side, for those the daemon sends back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// `image`, `local`, `tar`, `oci`, `docker`, ...
    pub kind: String,
    /// The exporter's attributes (no `dest`: that stays here).
    pub attrs: BTreeMap<String, String>,
    /// Where the daemon's delivery goes.
    pub target: Option<ExportTarget>,
}

/// A build to run in a daemon.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The frontend (`dockerfile.v0`, `gateway.v0`), or empty to solve `definition`.
    pub frontend: String,
    /// The frontend's attributes (`filename`, `target`, `build-arg:NAME`, ...).
    pub frontend_attrs: BTreeMap<String, String>,
    /// A marshalled LLB Definition to solve instead of a frontend's.
    pub definition: Option<kiln_llb::pb::Definition>,
    /// The local directories the build reads, by name (`context`, `dockerfile`, ...).
    pub locals: HashMap<String, PathBuf>,
    /// What this side's directories are known by across builds, for the daemon to send only
    /// what changed since the last one.
    pub shared_key: String,
    /// The exporters.
    pub exports: Vec<Export>,
    /// `--cache-to` entries.
    pub cache_exports: Vec<kiln_cache::CacheOptionsEntry>,
    /// `--cache-from` entries.
    pub cache_imports: Vec<kiln_cache::CacheOptionsEntry>,
    /// `network.host`, `security.insecure`.
    pub entitlements: Vec<String>,
    /// The secrets the build's steps may read, by id.
    pub secrets: HashMap<String, Vec<u8>>,
    /// The SSH agents the build's steps may use: agent sockets by id.
    pub ssh: HashMap<String, PathBuf>,
}

/// A connection to a daemon.
pub struct Client {
    host: Host,
    control: ControlClient<Channel>,
}

/// A random id, as BuildKit's clients make them for builds and sessions.
fn new_id() -> String {
    kiln_solver::new_build_id()
}

/// The `type=local` caches of a build: this side's directories, served to the daemon as
/// content stores (`local:DIR`), as BuildKit's clients do.
struct LocalCaches {
    stores: HashMap<String, PathBuf>,
    /// Where exports go: the directory and the tag its `index.json` names the manifest by.
    exports: Vec<(PathBuf, String)>,
}

impl LocalCaches {
    /// Serves each local cache's directory; an import is told the manifest its directory's
    /// `index.json` tags (`tag=`, default `latest`), or left out with a warning when there
    /// is none, as buildctl does.
    fn prepare(
        exports: &mut [kiln_cache::CacheOptionsEntry],
        imports: &mut Vec<kiln_cache::CacheOptionsEntry>,
    ) -> Result<Self, ClientError> {
        let tag = |entry: &kiln_cache::CacheOptionsEntry| {
            entry
                .attrs
                .get("tag")
                .cloned()
                .unwrap_or_else(|| "latest".to_owned())
        };
        let mut caches = Self {
            stores: HashMap::new(),
            exports: Vec::new(),
        };
        for export in exports.iter().filter(|e| e.kind == "local") {
            let Some(dest) = export.attrs.get("dest") else {
                continue;
            };
            let dir = PathBuf::from(dest);
            fs_err::create_dir_all(&dir).map_err(|e| ClientError::LocalCache {
                dir: dir.clone(),
                source: e.into(),
            })?;
            caches.stores.insert(format!("local:{dest}"), dir.clone());
            caches.exports.push((dir, tag(export)));
        }
        imports.retain_mut(|import| {
            if import.kind != "local" {
                return true;
            }
            let Some(src) = import.attrs.get("src").cloned() else {
                return true;
            };
            if import.attrs.get("digest").is_none_or(String::is_empty) {
                match kiln_cache::ImportedCache::tagged_manifest(Path::new(&src), &tag(import)) {
                    Ok(digest) => {
                        import.attrs.insert("digest".to_owned(), digest.to_string());
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = kiln_llb::error_chain(&error),
                            "local cache import at {src} skipped"
                        );
                        return false;
                    }
                }
            }
            caches
                .stores
                .insert(format!("local:{src}"), PathBuf::from(src));
            true
        });
        Ok(caches)
    }

    /// Tags the cache manifest the daemon wrote (its `cache.manifest` answer) in each export
    /// directory's `index.json`.
    fn record(&self, response: &HashMap<String, String>) -> Result<(), ClientError> {
        let Some(descriptor) = response.get("cache.manifest") else {
            return Ok(());
        };
        for (dir, tag) in &self.exports {
            let failed =
                |source: Box<dyn std::error::Error + Send + Sync>| ClientError::LocalCache {
                    dir: dir.clone(),
                    source,
                };
            let (media_type, digest, size) =
                descriptor_fields(descriptor.as_bytes()).map_err(&failed)?;
            let index = kiln_exporters::tagged_index(dir, tag, &media_type, &digest, size)
                .map_err(|e| failed(e.into()))?;
            write_layout_files(dir, &index).map_err(|e| failed(e.into()))?;
        }
        Ok(())
    }
}

/// The media type, digest and size of an OCI descriptor in JSON.
fn descriptor_fields(
    json: &[u8],
) -> Result<(String, kiln_cache::Digest, u64), Box<dyn std::error::Error + Send + Sync>> {
    let descriptor: serde_json::Value = serde_json::from_slice(json)?;
    let digest: kiln_cache::Digest = descriptor["digest"].as_str().unwrap_or_default().parse()?;
    Ok((
        descriptor["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        digest,
        descriptor["size"].as_u64().unwrap_or_default(),
    ))
}

/// Writes an OCI layout's `oci-layout` and then its `index.json` (`index`) into `dir`, each
/// whole or not at all.
fn write_layout_files(dir: &Path, index: &[u8]) -> std::io::Result<()> {
    for (name, bytes) in [
        ("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#[..]),
        ("index.json", index),
    ] {
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.persist(dir.join(name)).map_err(|e| e.error)?;
    }
    Ok(())
}

/// Records the image the daemon wrote into this side's export store (its
/// `containerimage.descriptor` answer: base64 of the descriptor's JSON) in the layout
/// directory `dir`: an `index.json` naming it alone, under its first name (`image.name`), as
/// `kiln build --output type=oci,tar=false` writes it.
fn record_image_layout(dir: &Path, response: &HashMap<String, String>) -> Result<(), ClientError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::ImageLayout {
        dir: dir.to_owned(),
        source,
    };
    let encoded = response
        .get("containerimage.descriptor")
        .ok_or_else(|| failed("the daemon did not say which image it wrote".into()))?;
    let json = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
        .map_err(|e| failed(e.into()))?;
    let (media_type, digest, size) = descriptor_fields(&json).map_err(failed)?;
    let name = response
        .get("image.name")
        .and_then(|names| names.split(',').find(|n| !n.is_empty()));
    let index = kiln_exporters::layout_index(&media_type, &digest, size, name)
        .map_err(|e| failed(e.into()))?;
    write_layout_files(dir, &index).map_err(|e| failed(e.into()))
}

fn entry(entry: &kiln_cache::CacheOptionsEntry) -> CacheOptionsEntry {
    CacheOptionsEntry {
        r#type: entry.kind.clone(),
        attrs: entry
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A gRPC channel to the daemon's unix socket `socket`.
pub(crate) async fn connect_unix(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    Endpoint::from_static("http://kiln.sock")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
}

impl Client {
    /// Connects to the daemon at `host`; a TCP daemon with the certificate, key and CA of
    /// `tls` (the CA the daemon's certificate is signed by).
    pub async fn connect(host: &Host, tls: Option<&TlsFiles>) -> Result<Self, ClientError> {
        let failed = |source| ClientError::Connect {
            host: host.to_string(),
            source,
        };
        let channel = match &host.place {
            Place::Unix(socket) => connect_unix(socket).await.map_err(failed)?,
            Place::Tcp { authority, name } => {
                use tonic::transport::{Certificate, ClientTlsConfig, Identity};
                let tls = tls.ok_or_else(|| ClientError::NoCertificates {
                    host: host.to_string(),
                })?;
                let read = |path: &PathBuf| {
                    fs_err::read(path).map_err(|source| ClientError::TlsFile {
                        path: path.clone(),
                        source,
                    })
                };
                let config = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
                    .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
                    .domain_name(name.clone());
                Endpoint::from_shared(format!("https://{authority}"))
                    .and_then(|e| e.tls_config(config))
                    .map_err(failed)?
                    .connect()
                    .await
                    .map_err(failed)?
            }
        };
        let control = ControlClient::new(channel)
            .max_decoding_message_size(crate::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::MAX_MESSAGE_SIZE);
        Ok(Self {
            host: host.clone(),
            control,
        })
    }

    /// The daemon's address.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Runs `request` in the daemon, its progress to `reporter`; returns the exporters'
    /// response.
    pub async fn build(
        &self,
        request: BuildRequest,
        reporter: Arc<dyn Reporter>,
    ) -> Result<HashMap<String, String>, ClientError> {
        let session_id = new_id();
        let reference = new_id();
        let mut request = request;
        let mut caches =
            LocalCaches::prepare(&mut request.cache_exports, &mut request.cache_imports)?;
        // An image layout is written through the content store `export` (one per build, as
        // BuildKit's clients serve it), the other exports through their exporter's index.
        let mut layout = None;
        let targets = request
            .exports
            .iter()
            .map(|e| match &e.target {
                Some(ExportTarget::Layout(dir)) => {
                    layout = Some(dir.clone());
                    None
                }
                target => target.clone(),
            })
            .collect();
        if let Some(dir) = &layout {
            fs_err::create_dir_all(dir).map_err(|e| ClientError::ImageLayout {
                dir: dir.clone(),
                source: e.into(),
            })?;
            caches
                .stores
                .insert(crate::content::EXPORT_STORE.to_owned(), dir.clone());
        }
        let services = attachables::Attachables {
            locals: request.locals,
            secrets: request.secrets,
            ssh: request.ssh,
            exports: targets,
            credentials: kiln_cache::DockerConfigFile::from_env(),
            cache_dirs: caches.stores.clone(),
        };
        let _session = self
            .open_session(&session_id, &request.shared_key, services)
            .await?;
        let cache =
            (!request.cache_exports.is_empty() || !request.cache_imports.is_empty()).then(|| {
                CacheOptions {
                    exports: request.cache_exports.iter().map(entry).collect(),
                    imports: request.cache_imports.iter().map(entry).collect(),
                    ..CacheOptions::default()
                }
            });
        let solve = SolveRequest {
            r#ref: reference.clone(),
            definition: request.definition,
            session: session_id,
            frontend: request.frontend,
            frontend_attrs: request.frontend_attrs.into_iter().collect(),
            cache,
            entitlements: request.entitlements,
            exporters: request
                .exports
                .into_iter()
                .map(|e| Exporter {
                    r#type: e.kind,
                    attrs: e.attrs.into_iter().collect(),
                })
                .collect(),
            enable_session_exporter: false,
            ..SolveRequest::default()
        };
        let mut control = self.control.clone();
        let mut status_control = self.control.clone();
        let status = async move {
            let Ok(response) = status_control
                .status(StatusRequest { r#ref: reference })
                .await
            else {
                return;
            };
            let mut stream = response.into_inner();
            let mut progress = StatusEvents::new(reporter);
            while let Ok(Some(update)) = stream.message().await {
                progress.update(update);
            }
        };
        let (solved, ()) = tokio::join!(control.solve(solve), status);
        let response = solved?.into_inner().exporter_response;
        caches.record(&response)?;
        if let Some(dir) = &layout {
            record_image_layout(dir, &response)?;
        }
        Ok(response)
    }

    /// Opens a session serving `services`; it closes when the returned guard is dropped.
    async fn open_session(
        &self,
        id: &str,
        shared_key: &str,
        services: attachables::Attachables,
    ) -> Result<attachables::Serving, ClientError> {
        let (ours, theirs) = tokio::io::duplex(4 * crate::session::CHUNK);
        let (read_half, mut write_half) = tokio::io::split(theirs);
        let outgoing =
            crate::session::pump_out(read_half).map(|message| message.unwrap_or_default());
        let mut call = tonic::Request::new(outgoing);
        let metadata = call.metadata_mut();
        let value = |text: &str| {
            AsciiMetadataValue::try_from(text).map_err(|_| ClientError::Daemon {
                code: tonic::Code::InvalidArgument,
                message: format!("{text:?} cannot be sent as a session header"),
            })
        };
        metadata.insert(HEADER_ID, value(id)?);
        metadata.insert(HEADER_NAME, value("kiln")?);
        metadata.insert(HEADER_SHARED_KEY, value(shared_key)?);
        for method in attachables::METHODS {
            metadata.append(HEADER_METHOD, AsciiMetadataValue::from_static(method));
        }
        let serving = attachables::serve(services, ours);
        let mut control = self.control.clone();
        let inbound = control.session(call).await?.into_inner();
        let pump = tokio::spawn(async move {
            crate::session::pump_in(inbound, &mut write_half).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut write_half).await;
        });
        Ok(serving.with(pump))
    }

    /// The daemon's disk usage records (`Control.DiskUsage`).
    pub async fn disk_usage(&self) -> Result<Vec<UsageRecord>, ClientError> {
        let mut control = self.control.clone();
        Ok(control
            .disk_usage(DiskUsageRequest::default())
            .await?
            .into_inner()
            .record)
    }

    /// Prunes the daemon's build cache (`Control.Prune`); returns what was removed.
    pub async fn prune(&self, request: PruneOptions) -> Result<Vec<UsageRecord>, ClientError> {
        let mut control = self.control.clone();
        let bytes = |v: Option<u64>| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let mut stream = control
            .prune(PruneRequest {
                filter: request.filters,
                all: request.all,
                keep_duration: request
                    .keep_duration
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
                reserved_space: bytes(request.reserved_space),
                max_used_space: bytes(request.max_used_space),
                min_free_space: bytes(request.min_free_space),
            })
            .await?
            .into_inner();
        let mut removed = Vec::new();
        while let Some(record) = stream.message().await? {
            removed.push(record);
        }
        Ok(removed)
    }

    /// The daemon's workers (`Control.ListWorkers`).
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, ClientError> {
        let mut control = self.control.clone();
        Ok(control
            .list_workers(ListWorkersRequest::default())
            .await?
            .into_inner()
            .record)
    }
}

/// What to prune, as `buildctl prune` asks it.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Everything, not only what nothing refers to.
    pub all: bool,
    /// `until=DURATION`, `type=TYPE`.
    pub filters: Vec<String>,
    /// Keep what was used this recently.
    pub keep_duration: Option<Duration>,
    /// Bytes always allowed to keep.
    pub reserved_space: Option<u64>,
    /// Bytes at most to keep.
    pub max_used_space: Option<u64>,
    /// Bytes to leave free.
    pub min_free_space: Option<u64>,
}

/// Turns the daemon's `Status` updates back into progress events: each vertex's inputs and
/// start once, then how it ended (cached, done or failed), its output, and each of its
/// statuses that ended as a phase (with its bytes; kiln's daemon reports its ops' phases so).
struct StatusEvents {
    reporter: Arc<dyn Reporter>,
    /// Per vertex: whether its start was reported, whether its end was.
    seen: HashMap<String, (bool, bool)>,
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|t| SystemTime::try_from(*t).ok())
}

/// The instant of this process's clock that was the wall-clock time `at` (now, for a time
/// to come).
fn instant(at: Option<SystemTime>) -> Option<Instant> {
    let ago = SystemTime::now().duration_since(at?).unwrap_or_default();
    let now = Instant::now();
    Some(now.checked_sub(ago).unwrap_or(now))
}

impl StatusEvents {
    fn new(reporter: Arc<dyn Reporter>) -> Self {
        Self {
            reporter,
            seen: HashMap::new(),
        }
    }

    fn update(&mut self, update: StatusResponse) {
        for vertex in update.vertexes {
            let digest: Arc<str> = Arc::from(vertex.digest.as_str());
            if !self.seen.contains_key(&vertex.digest) {
                self.reporter.inputs(&digest, &vertex.inputs);
            }
            let (started, ended) = self.seen.entry(vertex.digest.clone()).or_default();
            if *ended || vertex.started.is_none() {
                continue;
            }
            let name = vertex.name.clone();
            if vertex.cached && vertex.completed.is_some() {
                *ended = true;
                self.reporter.event(Event::Cached {
                    vertex: digest,
                    name,
                });
                continue;
            }
            if !*started {
                *started = true;
                self.reporter.event(Event::Started {
                    vertex: digest.clone(),
                    name: name.clone(),
                });
            }
            let Some(completed) = time(vertex.completed.as_ref()) else {
                continue;
            };
            *ended = true;
            if vertex.error.is_empty() {
                let duration = time(vertex.started.as_ref())
                    .and_then(|s| completed.duration_since(s).ok())
                    .unwrap_or_default();
                self.reporter.event(Event::Completed {
                    vertex: digest,
                    name,
                    duration,
                });
            } else {
                self.reporter.event(Event::Failed {
                    vertex: digest,
                    name,
                    error: vertex.error,
                });
            }
        }
        for status in update.statuses {
            let (Some(started), Some(ended)) = (
                instant(time(status.started.as_ref())),
                instant(time(status.completed.as_ref())),
            ) else {
                continue;
            };
            let name = match status.name.is_empty() {
                true => status.id,
                false => status.name,
            };
            self.reporter.event(Event::Phase {
                vertex: Arc::from(status.vertex.as_str()),
                name: name.into(),
                started,
                ended,
                bytes: (status.total > 0).then(|| u64::try_from(status.current).unwrap_or(0)),
            });
        }
        for log in update.logs {
            self.reporter.event(Event::Log {
                vertex: Arc::from(log.vertex.as_str()),
                stream: u8::try_from(log.stream).unwrap_or(1),
                data: log.msg,
            });
        }
    }
}

#[cfg(test)]
mod tests;
