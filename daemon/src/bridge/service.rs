//! The `LLBBridge` a frontend image calls: its solves, the files of their results, image
//! configurations, and the result it returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kiln_fsutil::Root;
use kiln_llb::LoadedDefinition;
use kiln_llb::pb::Definition;
use kiln_solver::{Ref, Reporter, Session, SourceMeta};
use tokio::sync::{OnceCell, watch};
use tonic::{Request, Response, Status};

use super::returned::returned_result;
use super::{caps, files};
use crate::pb::gateway::llb_bridge_server::LlbBridge;
use crate::pb::gateway::{
    EvaluateRequest, EvaluateResponse, ExecMessage, InputsRequest, InputsResponse,
    NewContainerRequest, NewContainerResponse, PingRequest, PongResponse, ReadDirRequest,
    ReadDirResponse, ReadFileRequest, ReadFileResponse, Ref as PbRef, ReleaseContainerRequest,
    ReleaseContainerResponse, ResolveImageConfigRequest, ResolveImageConfigResponse,
    ResolveSourceGitResponse, ResolveSourceHttpResponse, ResolveSourceImageResponse,
    ResolveSourceMetaRequest, ResolveSourceMetaResponse, Result as PbResult, ReturnRequest,
    ReturnResponse, SolveRequest, SolveResponse, StatFileRequest, StatFileResponse, WarnRequest,
    WarnResponse, result,
};
use crate::pb::types::WorkerRecord;

/// At most this many refs per frontend run: a frontend asking for more is refused.
pub(super) const MAX_REFS: usize = 4096;

/// At most this many bytes of Definitions are held for one frontend run.
const MAX_HELD_BYTES: usize = 512 << 20;

/// At most this many warnings are kept, each cut to [`MAX_WARNING_BYTES`].
const MAX_WARNINGS: usize = 1000;
const MAX_WARNING_BYTES: usize = 4 << 10;

/// What the frontend returned: its result refs' Definitions with the metadata, or its error.
#[derive(Debug, Clone)]
pub(crate) enum Returned {
    /// A result.
    Result {
        /// The default ref's Definition (`None`: the empty file system).
        definition: Option<Definition>,
        /// The result's metadata (`containerimage.config`, ...).
        metadata: HashMap<String, Vec<u8>>,
    },
    /// The frontend's error, with the source locations it named.
    Error(String),
    /// A ref answering a `Solve` of another frontend that a bridge deferring frontends
    /// (see [`Bridge::deferring_frontends`]) answered without running it: it runs now.
    Frontend {
        /// The frontend's name (`dockerfile.v0`, `gateway.v0`).
        frontend: String,
        /// Its options (`FrontendOpt`).
        attrs: HashMap<String, String>,
    },
}

/// One solve request of the frontend: its Definition, solved once when first needed, or a
/// deferred frontend's name and options.
#[derive(Default)]
struct Solved {
    definition: Option<(Definition, LoadedDefinition)>,
    frontend: Option<(String, HashMap<String, String>)>,
    result: OnceCell<Result<Ref, String>>,
}

/// Whose files a file request of the frontend (`ReadFile`, `ReadDir`, `StatFile`) reads.
#[derive(Clone, Copy)]
enum FilesOf {
    /// The solved result of the ref named.
    Result,
    /// A mount of the container named (its `...Container` call).
    Container,
}

/// The bridge of one frontend run.
pub(crate) struct Bridge {
    pub(super) session: Arc<Session>,
    pub(super) reporter: Arc<dyn Reporter>,
    pub(super) inputs: HashMap<String, Definition>,
    /// The platform the frontend builds for.
    pub(super) platform: kiln_llb::pb::Platform,
    /// How many frontends forwarded to this one.
    pub(super) depth: usize,
    /// The client session of the build, passed on to frontends it forwards to.
    pub(super) session_id: Option<String>,
    /// Solves image sources and reads their configurations.
    pub(super) resolver: Arc<dyn kiln_frontend::ImageMetaResolver + Send + Sync>,
    refs: Mutex<HashMap<String, Arc<Solved>>>,
    /// The bytes of the Definitions in `refs` (changed with `refs` locked).
    held_bytes: AtomicUsize,
    next_ref: AtomicU64,
    returned: watch::Sender<Option<Returned>>,
    warnings: Mutex<Vec<String>>,
    /// The frontend's containers.
    pub(super) containers: super::exec::Containers,
    /// Whether a `Solve` of a frontend is answered with a ref that runs it when returned
    /// (a gateway client of the control socket: its frontends read the client's session).
    defer_frontends: bool,
}

impl Bridge {
    pub(crate) fn new(
        session: Arc<Session>,
        reporter: Arc<dyn Reporter>,
        inputs: HashMap<String, Definition>,
        platform: kiln_llb::pb::Platform,
        depth: usize,
        session_id: Option<String>,
        resolver: Arc<dyn kiln_frontend::ImageMetaResolver + Send + Sync>,
    ) -> Self {
        Self {
            session,
            reporter,
            inputs,
            platform,
            depth,
            session_id,
            resolver,
            refs: Mutex::default(),
            held_bytes: AtomicUsize::new(0),
            next_ref: AtomicU64::new(0),
            returned: watch::Sender::new(None),
            warnings: Mutex::default(),
            containers: super::exec::Containers::default(),
            defer_frontends: false,
        }
    }

    /// The bridge of a build's own gateway client (`buildctl build` on the control socket):
    /// a `Solve` of the `dockerfile.v0` or `gateway.v0` frontend answers a ref that runs the
    /// frontend when it is returned ([`Returned::Frontend`]), where the build has the
    /// client's session for its files and platforms.
    #[must_use]
    pub(crate) fn deferring_frontends(mut self) -> Self {
        self.defer_frontends = true;
        self
    }

    /// Waits until the frontend returns, and gives what it returned.
    pub(crate) async fn wait_returned(&self) -> Returned {
        let mut returned = self.returned.subscribe();
        let ready = returned.wait_for(Option::is_some).await;
        // The sender is this bridge's own field: it outlives the wait.
        ready.ok().and_then(|r| r.clone()).unwrap_or_else(|| {
            Returned::Error("the build ended without returning a result".to_owned())
        })
    }

    /// What the frontend returned, if it did.
    pub(super) fn returned(&self) -> Option<Returned> {
        self.returned.borrow().clone()
    }

    /// The warnings the frontend sent.
    pub(super) fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The workers the frontend is told about: this builder, for its one platform.
    pub(super) fn workers(&self) -> Vec<WorkerRecord> {
        vec![WorkerRecord {
            id: "kiln".to_owned(),
            platforms: vec![self.platform.clone()],
            ..WorkerRecord::default()
        }]
    }

    fn solved(&self, id: &str) -> Result<Arc<Solved>, Status> {
        self.refs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no such ref: {id}")))
    }

    /// The solved result of ref `id` (solving it on first use).
    pub(super) async fn solved_ref(&self, id: &str) -> Result<Ref, Status> {
        let solved = self.solved(id)?;
        self.solve_once(&solved).await
    }

    /// Reads the solved result of ref `id` with `read`, on the blocking pool.
    async fn read_result<T: Send + 'static>(
        &self,
        id: &str,
        read: impl FnOnce(&Root) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let result = self.solved_ref(id).await?;
        let store = self.session.config().store.clone();
        blocking(move || read(&files::root_of(&store, &result)?)).await
    }

    /// Reads mount `index` of the container `id` with `read`, on the blocking pool: its
    /// files as its processes see them now (a process's writes included).
    async fn read_container<T: Send + 'static>(
        &self,
        id: &str,
        index: i32,
        read: impl FnOnce(&Root) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let container = self.containers.get(id)?;
        let index = usize::try_from(index)
            .map_err(|_| Status::invalid_argument(format!("invalid mount index {index}")))?;
        let layers = container
            .layers(index)
            .map_err(|e| Status::invalid_argument(kiln_llb::error_chain(&e)))?;
        blocking(move || read(&Root::layered(layers))).await
    }

    /// Reads with `read`, on the blocking pool, the files a request names: the result of ref
    /// `id`, or mount `mount_index` of the container `id`.
    async fn read_files<T: Send + 'static>(
        &self,
        of: FilesOf,
        id: &str,
        mount_index: i32,
        read: impl FnOnce(&Root) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        match of {
            FilesOf::Result => self.read_result(id, read).await,
            FilesOf::Container => self.read_container(id, mount_index, read).await,
        }
    }

    /// `ReadFile` of a ref's result or a container's mount.
    async fn read_file_of(
        &self,
        of: FilesOf,
        request: ReadFileRequest,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let data = self
            .read_files(of, &request.r#ref, request.mount_index, move |root| {
                files::read_file(root, &request.file_path, request.range)
            })
            .await?;
        Ok(Response::new(ReadFileResponse { data }))
    }

    /// `ReadDir` of a ref's result or a container's mount.
    async fn read_dir_of(
        &self,
        of: FilesOf,
        request: ReadDirRequest,
    ) -> Result<Response<ReadDirResponse>, Status> {
        let entries = self
            .read_files(of, &request.r#ref, request.mount_index, move |root| {
                files::read_dir(root, &request.dir_path, &request.include_pattern)
            })
            .await?;
        Ok(Response::new(ReadDirResponse { entries }))
    }

    /// `StatFile` of a ref's result or a container's mount.
    async fn stat_file_of(
        &self,
        of: FilesOf,
        request: StatFileRequest,
    ) -> Result<Response<StatFileResponse>, Status> {
        let stat = self
            .read_files(of, &request.r#ref, request.mount_index, move |root| {
                files::stat(root, &request.path)
            })
            .await?;
        Ok(Response::new(StatFileResponse { stat: Some(stat) }))
    }

    async fn solve_once(&self, solved: &Solved) -> Result<Ref, Status> {
        if let Some((frontend, _)) = &solved.frontend {
            return Err(Status::unimplemented(format!(
                "the result of frontend {frontend} is built when the build returns it, not read before"
            )));
        }
        let result = solved
            .result
            .get_or_init(|| async {
                match &solved.definition {
                    None => Ok(Ref::scratch()),
                    Some((_, loaded)) => self
                        .session
                        .solve(loaded, self.reporter.clone())
                        .await
                        .map_err(|e| kiln_llb::error_chain(&e)),
                }
            })
            .await;
        result.clone().map_err(Status::unknown)
    }

    fn add_ref(&self, solved: Solved) -> Result<String, Status> {
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        if refs.len() >= MAX_REFS {
            return Err(Status::resource_exhausted(format!(
                "a frontend may hold at most {MAX_REFS} refs"
            )));
        }
        let bytes = solved
            .definition
            .as_ref()
            .map_or(0, |(d, _)| prost::Message::encoded_len(d));
        let held = self
            .held_bytes
            .load(Ordering::Relaxed)
            .saturating_add(bytes);
        if held > MAX_HELD_BYTES {
            return Err(Status::resource_exhausted(format!(
                "a frontend may hold at most {MAX_HELD_BYTES} bytes of Definitions"
            )));
        }
        self.held_bytes.store(held, Ordering::Relaxed);
        let id = format!("ref-{}", self.next_ref.fetch_add(1, Ordering::Relaxed));
        refs.insert(id.clone(), Arc::new(solved));
        Ok(id)
    }

    /// A frontend's `Solve` of another frontend: `gateway.v0` runs the image `source` (as
    /// BuildKit's Dockerfile frontend does for a `# syntax=` line) and answers its result.
    async fn forward(&self, request: SolveRequest) -> Result<Response<SolveResponse>, Status> {
        if self.defer_frontends {
            return self.defer(request);
        }
        if request.frontend != crate::frontend::GATEWAY {
            return Err(Status::unimplemented(format!(
                "frontend {:?}: a frontend image may solve Definitions and gateway.v0 only",
                request.frontend
            )));
        }
        if self.depth + 1 >= super::MAX_FRONTEND_DEPTH {
            return Err(Status::failed_precondition(format!(
                "frontends forward to frontends more than {} deep",
                super::MAX_FRONTEND_DEPTH
            )));
        }
        let source = request
            .frontend_opt
            .get("source")
            .filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(|| Status::invalid_argument("no source specified for gateway"))?;
        let mut frontend = super::GatewayFrontend::new(source);
        frontend.options = request.frontend_opt.clone().into_iter().collect();
        frontend.inputs = request.frontend_inputs.clone();
        frontend.platform = self.platform.clone();
        frontend.session_id = self.session_id.clone();
        frontend.depth = self.depth + 1;
        let result = Box::pin(frontend.run(self.session.clone(), self.reporter.clone()))
            .await
            .map_err(|e| Status::unknown(kiln_llb::error_chain(&e)))?;
        let definition = result.definition.map(loaded).transpose()?;
        let def = definition.as_ref().map(|(d, _)| d.clone());
        let id = match def {
            None => String::new(),
            Some(_) => self.add_ref(Solved {
                definition,
                ..Solved::default()
            })?,
        };
        let mut metadata = result.metadata;
        if let Some(config) = result.config {
            metadata.insert(super::IMAGE_CONFIG_KEY.to_owned(), config);
        }
        Ok(solve_response(&request, id, def, metadata))
    }

    /// A `Solve` of a frontend by a bridge deferring them: its options are checked now, and
    /// the ref answered runs it when returned.
    fn defer(&self, request: SolveRequest) -> Result<Response<SolveResponse>, Status> {
        match request.frontend.as_str() {
            crate::frontend::DOCKERFILE => {
                for (_, attrs) in crate::frontend::per_platform(&request.frontend_opt)? {
                    crate::frontend::convert_options(&attrs)?;
                }
            }
            crate::frontend::GATEWAY => {}
            other => {
                return Err(Status::unimplemented(format!(
                    "frontend {other:?}: kiln has the built-in {} and {}",
                    crate::frontend::DOCKERFILE,
                    crate::frontend::GATEWAY
                )));
            }
        }
        let id = self.add_ref(Solved {
            frontend: Some((request.frontend.clone(), request.frontend_opt.clone())),
            ..Solved::default()
        })?;
        Ok(solve_response(&request, id, None, HashMap::new()))
    }

    /// What returning ref `id` with `metadata` gives: its Definition (`None` for the empty
    /// ref), or the deferred frontend it answered.
    pub(super) fn returned_ref(
        &self,
        id: &str,
        metadata: HashMap<String, Vec<u8>>,
    ) -> Result<Returned, String> {
        if id.is_empty() {
            return Ok(Returned::Result {
                definition: None,
                metadata,
            });
        }
        let solved = self.solved(id).map_err(|s| s.message().to_owned())?;
        Ok(match &solved.frontend {
            Some((frontend, attrs)) => Returned::Frontend {
                frontend: frontend.clone(),
                attrs: attrs.clone(),
            },
            None => Returned::Result {
                definition: solved.definition.as_ref().map(|(d, _)| d.clone()),
                metadata,
            },
        })
    }

    fn resolve_image(
        &self,
        reference: String,
        platform: Option<kiln_llb::pb::Platform>,
    ) -> impl Future<Output = Result<kiln_frontend::ResolvedImage, Status>> + use<> {
        let resolver = self.resolver.clone();
        let platform = platform.unwrap_or_else(|| self.platform.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                resolver
                    .resolve(&reference, &platform)
                    .map_err(|e| Status::unknown(format!("{reference}: {e}")))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        }
    }
}

/// `definition` with its loaded form, or the frontend's error that it is not valid.
fn loaded(definition: Definition) -> Result<(Definition, LoadedDefinition), Status> {
    let loaded = LoadedDefinition::from_definition(definition.clone()).map_err(|e| {
        Status::invalid_argument(crate::control::error_text("invalid Definition", &e))
    })?;
    Ok((definition, loaded))
}

/// The answer to `request`: the ref `id` (with its Definition `def` where the client takes
/// one), in the form the client asked for.
fn solve_response(
    request: &SolveRequest,
    id: String,
    def: Option<Definition>,
    metadata: HashMap<String, Vec<u8>>,
) -> Response<SolveResponse> {
    Response::new(SolveResponse {
        r#ref: if request.allow_result_return {
            String::new()
        } else {
            id.clone()
        },
        result: Some(PbResult {
            result: Some(if request.allow_result_array_ref {
                result::Result::Ref(PbRef { id, def })
            } else {
                result::Result::RefDeprecated(id)
            }),
            metadata,
        }),
    })
}

/// Blocks the sync file readers off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

#[tonic::async_trait]
impl LlbBridge for Arc<Bridge> {
    async fn resolve_image_config(
        &self,
        request: Request<ResolveImageConfigRequest>,
    ) -> Result<Response<ResolveImageConfigResponse>, Status> {
        let request = request.into_inner();
        if request.resolver_type != 0 {
            return Err(Status::unimplemented(
                "kiln resolves images from registries only (not OCI layouts)",
            ));
        }
        let resolved = self
            .resolve_image(request.r#ref.clone(), request.platform)
            .await?;
        Ok(Response::new(ResolveImageConfigResponse {
            digest: resolved.digest,
            config: resolved.config,
            r#ref: request.r#ref,
        }))
    }

    async fn resolve_source_meta(
        &self,
        request: Request<ResolveSourceMetaRequest>,
    ) -> Result<Response<ResolveSourceMetaResponse>, Status> {
        let request = request.into_inner();
        let source = request
            .source
            .ok_or_else(|| Status::invalid_argument("source is required"))?;
        if let Some(reference) = source.identifier.strip_prefix("docker-image://") {
            let resolved = self
                .resolve_image(reference.to_owned(), request.platform)
                .await?;
            return Ok(Response::new(ResolveSourceMetaResponse {
                source: Some(source),
                image: Some(ResolveSourceImageResponse {
                    digest: resolved.digest,
                    config: resolved.config,
                }),
                ..ResolveSourceMetaResponse::default()
            }));
        }
        if request.git.is_some_and(|git| git.return_object) {
            return Err(Status::unimplemented(
                "kiln gives a git source's checksums, not its commit and tag objects",
            ));
        }
        let meta = self
            .session
            .resolve_source_meta(&source)
            .await
            .map_err(|e| Status::unknown(kiln_llb::error_chain(&e)))?;
        let mut response = ResolveSourceMetaResponse {
            source: Some(source),
            ..ResolveSourceMetaResponse::default()
        };
        match meta {
            Some(SourceMeta::Git(git)) => {
                response.git = Some(ResolveSourceGitResponse {
                    checksum: git.checksum,
                    r#ref: git.reference,
                    commit_checksum: git.commit_checksum,
                    ..ResolveSourceGitResponse::default()
                });
            }
            Some(SourceMeta::Http(http)) => {
                response.http = Some(ResolveSourceHttpResponse {
                    checksum: http.digest,
                    filename: http.filename,
                    last_modified: http
                        .last_modified
                        .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                });
            }
            None => {
                let identifier = response.source.map(|s| s.identifier).unwrap_or_default();
                return Err(Status::unimplemented(format!(
                    "kiln resolves the metadata of image, git and http sources, not {identifier:?}"
                )));
            }
        }
        Ok(Response::new(response))
    }

    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let mut request = request.into_inner();
        if !request.frontend.is_empty() {
            return self.forward(request).await;
        }
        let definition = request
            .definition
            .take()
            .filter(|d| !d.def.is_empty())
            .map(loaded)
            .transpose()?;
        let def = definition.as_ref().map(|(d, _)| d.clone());
        let solved = Solved {
            definition,
            ..Solved::default()
        };
        if request.evaluate {
            self.solve_once(&solved).await?;
        }
        // The empty result has no ref (the client takes an empty id as scratch).
        let id = if def.is_none() {
            String::new()
        } else {
            self.add_ref(solved)?
        };
        Ok(solve_response(&request, id, def, HashMap::new()))
    }

    async fn read_file(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        self.read_file_of(FilesOf::Result, request.into_inner())
            .await
    }

    async fn read_dir(
        &self,
        request: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        self.read_dir_of(FilesOf::Result, request.into_inner())
            .await
    }

    async fn stat_file(
        &self,
        request: Request<StatFileRequest>,
    ) -> Result<Response<StatFileResponse>, Status> {
        self.stat_file_of(FilesOf::Result, request.into_inner())
            .await
    }

    async fn read_file_container(
        &self,
        request: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        self.read_file_of(FilesOf::Container, request.into_inner())
            .await
    }

    async fn read_dir_container(
        &self,
        request: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        self.read_dir_of(FilesOf::Container, request.into_inner())
            .await
    }

    async fn stat_file_container(
        &self,
        request: Request<StatFileRequest>,
    ) -> Result<Response<StatFileResponse>, Status> {
        self.stat_file_of(FilesOf::Container, request.into_inner())
            .await
    }

    async fn evaluate(
        &self,
        request: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        self.solved_ref(&request.into_inner().r#ref).await?;
        Ok(Response::new(EvaluateResponse {}))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PongResponse>, Status> {
        Ok(Response::new(PongResponse {
            frontend_api_caps: caps::frontend(),
            llb_caps: caps::llb(),
            workers: self.workers(),
        }))
    }

    async fn r#return(
        &self,
        request: Request<ReturnRequest>,
    ) -> Result<Response<ReturnResponse>, Status> {
        let request = request.into_inner();
        let returned = match (request.error, request.result) {
            (Some(error), _) if error.code != 0 => Returned::Error(super::errors::describe(&error)),
            (_, Some(result)) => match returned_result(self, result) {
                Ok(returned) => returned,
                Err(message) => return Err(Status::invalid_argument(message)),
            },
            (_, None) => Returned::Result {
                definition: None,
                metadata: HashMap::new(),
            },
        };
        let first = self.returned.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(returned);
            true
        });
        if !first {
            return Err(Status::failed_precondition(
                "the result was returned already",
            ));
        }
        Ok(Response::new(ReturnResponse {}))
    }

    async fn inputs(
        &self,
        _request: Request<InputsRequest>,
    ) -> Result<Response<InputsResponse>, Status> {
        Ok(Response::new(InputsResponse {
            definitions: self.inputs.clone(),
        }))
    }

    async fn new_container(
        &self,
        request: Request<NewContainerRequest>,
    ) -> Result<Response<NewContainerResponse>, Status> {
        super::exec::new_container(self, request.into_inner()).await?;
        Ok(Response::new(NewContainerResponse {}))
    }

    async fn release_container(
        &self,
        request: Request<ReleaseContainerRequest>,
    ) -> Result<Response<ReleaseContainerResponse>, Status> {
        self.containers
            .release(&request.into_inner().container_id)?;
        Ok(Response::new(ReleaseContainerResponse {}))
    }

    async fn exec_process(
        &self,
        request: Request<tonic::Streaming<ExecMessage>>,
    ) -> Result<Response<super::exec::ExecStream>, Status> {
        Ok(Response::new(super::exec::exec_process(
            self.clone(),
            request.into_inner(),
        )))
    }

    async fn warn(&self, request: Request<WarnRequest>) -> Result<Response<WarnResponse>, Status> {
        let request = request.into_inner();
        let short = &request.short[..request.short.len().min(MAX_WARNING_BYTES)];
        let mut text = String::from_utf8_lossy(short).into_owned();
        if let Some(line) = super::errors::first_line(request.info.as_ref(), &request.ranges) {
            text = format!("{line}: {text}");
        }
        let mut warnings = self.warnings.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded like the refs: a frontend cannot grow the builder's memory without end.
        if warnings.len() < MAX_WARNINGS {
            warnings.push(text);
        }
        Ok(Response::new(WarnResponse {}))
    }
}

/// The options a frontend gets, as the environment of its process
/// (`BUILDKIT_FRONTEND_OPT_n=KEY=VALUE`, as BuildKit passes them).
pub fn frontend_option_env(options: &BTreeMap<String, String>) -> Vec<String> {
    options
        .iter()
        .enumerate()
        .map(|(i, (k, v))| format!("BUILDKIT_FRONTEND_OPT_{i}={k}={v}"))
        .collect()
}
