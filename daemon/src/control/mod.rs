//! The `Control` service: workers, disk usage, prune, solve, status, and the session tunnel.
//!
//! A `Solve` is read in `requests.rs` (outputs, caches, entitlements), its frontend run in
//! `frontends.rs`, and the attestations it asks for (`attest:provenance`, `attest:sbom`, as
//! buildx and buildctl send them) in `attest.rs`; `build` here solves every platform and
//! exports the results with their attestations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::{Stream, StreamExt as _};
use kiln_cache::{PullOptions, Store, UsageEntry};
use kiln_llb::{LoadedDefinition, error_chain};
use kiln_solver::{Reporter, Session, SessionConfig};
use tonic::{Request, Response, Status, Streaming};

use self::requests::{
    Sent, cache_requests, entitlements, exporter_kind, outputs, prune_options, record_name,
};
use crate::gateway::Build;
use crate::pb::control::control_server::Control;
use crate::pb::control::{
    BytesMessage, DiskUsageRequest, DiskUsageResponse, InfoRequest, InfoResponse,
    ListWorkersRequest, ListWorkersResponse, PruneRequest, SolveRequest, SolveResponse,
    StatusRequest, StatusResponse, UsageRecord,
};
use crate::pb::types::{BuildkitVersion, GcPolicy, WorkerRecord};

mod attest;
mod frontends;
mod requests;
use crate::status::Builds;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the control service serves from.
pub(crate) struct ControlService {
    pub(crate) store: Arc<Store>,
    pub(crate) config: kiln_cache::Config,
    pub(crate) executor: Arc<dyn kiln_solver::Executor>,
    pub(crate) builds: Builds,
    /// The bridges of the builds run as gateway clients.
    pub(crate) gateways: crate::gateway::Gateways,
    /// The clients' open sessions.
    pub(crate) sessions: crate::session::Sessions,
    /// What every build's scheduler shares: one bound on the steps running at once (the
    /// cores), and a step that concurrent builds both need runs once.
    pub(crate) shared_work: Arc<kiln_solver::SharedWork>,
    /// Turns true when the daemon shuts down: builds are cancelled, streams end.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

/// kiln's name and version, as `Info` and `ListWorkers` report them.
fn version() -> BuildkitVersion {
    BuildkitVersion {
        package: "kiln".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        revision: String::new(),
        dockerfile_version: String::new(),
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// A Unix time in seconds as a protobuf timestamp.
fn seconds(time: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_secs(time))
}

/// One store entry as BuildKit's usage record: images are in use (prune never removes them),
/// as are the local sources a running build holds.
fn usage_record(entry: &UsageEntry) -> UsageRecord {
    let (record_type, description) = match entry.kind {
        "image" => ("regular", format!("image {}", entry.id)),
        "exec.cachemount" => ("exec.cachemount", format!("cache mount {}", entry.id)),
        "source.local" => ("source.local", entry.description.clone()),
        _ => ("regular", String::new()),
    };
    UsageRecord {
        id: entry.id.clone(),
        in_use: !entry.reclaimable(),
        size: i64::try_from(entry.size).unwrap_or(i64::MAX),
        last_used_at: Some(seconds(entry.last_used)),
        record_type: record_type.to_owned(),
        description,
        ..UsageRecord::default()
    }
}

/// A blocking store call off the async workers; a failure is an internal error naming what
/// failed.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, kiln_cache::Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("{what}: {e}")))?
        .map_err(|e| Status::internal(error_text(what, &e)))
}

/// An error with its causes, one line as BuildKit's errors are.
pub(crate) fn error_text(what: &str, err: &(dyn std::error::Error + 'static)) -> String {
    format!("{what}: {}", error_chain(err))
}

impl ControlService {
    /// Solves and exports one request, the build `id`; the progress goes to the build's log.
    async fn build(
        &self,
        request: SolveRequest,
        recorder: Arc<kiln_solver::Recorder>,
        id: &str,
    ) -> Result<SolveResponse, Status> {
        // An invalid attestation request fails the build before anything runs, as BuildKit's.
        let requested = attest::requested(&request.frontend_attrs)?;
        let build = if !request.frontend.is_empty() {
            Some(Build::Frontend {
                frontend: request.frontend.clone(),
                attrs: request.frontend_attrs.clone(),
            })
        } else if let Some(definition) = request.definition.clone().filter(|d| !d.def.is_empty()) {
            Some(Build::Definition(definition))
        } else {
            // buildctl runs its build as a gateway client: its calls wait for the bridge.
            self.gateways.expect(&request.r#ref);
            None
        };
        let scratch = self
            .store
            .scratch_dir()
            .and_then(|dir| tempfile::tempdir_in(dir).map_err(Into::into))
            .map_err(|e| Status::internal(format!("making a scratch directory: {e}")))?;
        let (outputs, deliveries) = outputs(&request, scratch.path())?;
        let entitlements = entitlements(&request.entitlements)?;
        let (cache_exports, cache_imports, local_caches) =
            cache_requests(&request, scratch.path())?;
        // Registries are reached with the credentials of the client that asked for the build,
        // and an image name is always resolved by its registry, as BuildKit does: an image
        // another client pulled into the store serves only a client the registry lets read it.
        let credentials: Arc<dyn kiln_cache::Credentials> = Arc::new(
            crate::auth::SessionCredentials::new(self.sessions.clone(), request.session.clone()),
        );
        let pull = PullOptions {
            config: self.config.clone(),
            prefer_local: false,
            credentials: credentials.clone(),
            ..PullOptions::default()
        };
        let store = self.store.clone();
        let lease = blocking("taking a lease on the store", move || store.lease()).await?;
        // A local cache to import is fetched from the client first (one it cannot give is
        // then skipped with a warning, as one that cannot be read).
        for local in local_caches.iter().filter(|l| l.digest.is_some()) {
            let client = self.sessions.get(&request.session).await?;
            let digest = local.digest.as_ref().expect("filtered");
            if let Err(status) =
                crate::content::import(&client, &local.client_dir, digest, &local.layout).await
            {
                tracing::warn!(error = status.message(), "local cache import skipped");
            }
        }
        let (cache_imports, unreadable) =
            kiln_engine::open_cache_imports(&cache_imports, &pull).await;
        for error in unreadable {
            // As BuildKit: a cache that cannot be read does not stop the build.
            tracing::warn!(error = error_chain(&error), "cache import skipped");
        }
        let local_dirs = (!request.session.is_empty()).then(|| {
            Arc::new(crate::locals::SessionLocals::new(
                self.sessions.clone(),
                request.session.clone(),
                self.store.clone(),
            )) as Arc<dyn kiln_solver::LocalDirs>
        });
        let progress = self.builds.get(&request.r#ref);
        // `no-cache` without stage names, from the control request or the frontend's solve.
        let mut no_cache = crate::frontend::no_cache_all(&request.frontend_attrs);
        let new_session = |secrets, ssh, no_cache| {
            Session::sharing(
                SessionConfig {
                    store: self.store.clone(),
                    executor: self.executor.clone(),
                    pull: pull.clone(),
                    locals: HashMap::<String, PathBuf>::new(),
                    local_dirs: local_dirs.clone(),
                    secrets,
                    ssh,
                    no_cache,
                    entitlements,
                    cache_imports: cache_imports.clone(),
                },
                self.shared_work.clone(),
            )
        };
        let (build, returned_config) = match build {
            Some(build) => (build, None),
            None => {
                let session = Arc::new(new_session(HashMap::new(), HashMap::new(), no_cache));
                self.gateway_client(&request, session, &progress, &pull)
                    .await?
            }
        };
        // A subrequest answers with data and builds nothing: the build checks alone.
        let (frontend, attrs) = match &build {
            Build::Frontend { frontend, attrs } => (frontend.as_str(), attrs),
            Build::Definition(_) => ("", &request.frontend_attrs),
        };
        // What the provenance names: the frontend that made the LLB, and its attributes.
        let provenance_frontend = (frontend.to_owned(), attrs.clone());
        match attrs.get("requestid").map(String::as_str) {
            None | Some("") => {}
            Some(crate::lint::LINT_REQUEST) if frontend == crate::frontend::DOCKERFILE => {
                return self.lint(&request.session, attrs, &pull).await;
            }
            Some(other) => {
                return Err(Status::unimplemented(format!(
                    "request {other:?} is not supported: kiln's {} frontend answers {}",
                    crate::frontend::DOCKERFILE,
                    crate::lint::LINT_REQUEST
                )));
            }
        }
        // A Dockerfile build for several platforms (`platform=A,B`) is converted once per
        // platform, and the graphs are solved together, as `kiln build --platform A,B`.
        let mut converted_all = Vec::new();
        let mut dockerfile = None;
        match build {
            Build::Definition(definition) => {
                converted_all.push((None, definition, returned_config));
            }
            Build::Frontend { frontend, attrs } => {
                no_cache |= crate::frontend::no_cache_all(&attrs);
                for (platform, attrs) in crate::frontend::per_platform(&attrs)? {
                    let (converted, read) = self
                        .frontend_result(&request, &frontend, &attrs, &pull, &progress, || {
                            new_session(HashMap::new(), HashMap::new(), no_cache)
                        })
                        .await?;
                    dockerfile = dockerfile.or(read);
                    converted_all.push((platform, converted.definition, Some(converted.config)));
                }
            }
        }
        let several = converted_all.len() > 1;
        let mut builds = Vec::with_capacity(converted_all.len());
        for (platform, definition, image_config) in converted_all {
            // A build of `scratch` alone has no ops: its result is the empty file system.
            let definition =
                if definition.def.is_empty() {
                    None
                } else {
                    Some(LoadedDefinition::from_definition(definition).map_err(|e| {
                        Status::invalid_argument(error_text("invalid Definition", &e))
                    })?)
                };
            builds.push((platform, definition, image_config));
        }
        // What the steps read from the client: secrets up front, SSH agents forwarded.
        let (mut secrets, mut ssh, mut _forwarders) = (HashMap::new(), HashMap::new(), None);
        if !request.session.is_empty() {
            let (mut secret_ids, mut ssh_ids) = (Default::default(), Default::default());
            for definition in builds.iter().filter_map(|(_, d, _)| d.as_ref()) {
                secret_ids = &secret_ids | &crate::secrets::secret_ids(definition);
                ssh_ids = &ssh_ids | &crate::sshforward::ssh_ids(definition);
            }
            if !secret_ids.is_empty() || !ssh_ids.is_empty() {
                let client = self.sessions.get(&request.session).await?;
                secrets = crate::secrets::fetch(&client, secret_ids).await?;
                let (sockets, forwarders) =
                    crate::sshforward::forward(client, ssh_ids, scratch.path()).await?;
                ssh = sockets;
                _forwarders = Some(forwarders);
            }
        }
        let session = new_session(secrets, ssh, no_cache);
        // One session solves every platform: a vertex they share runs once.
        let keyed = !cache_exports.is_empty();
        let solves = builds.iter().map(|(_, definition, _)| {
            // The steps' events are noted for the build's record (`kiln history`, `kiln
            // explain`) on their way to the progress.
            let (session, progress) = (&session, recorder.clone() as Arc<dyn Reporter>);
            async move {
                match definition {
                    Some(definition) if keyed => session.solve_keyed(definition, progress).await,
                    Some(definition) => session
                        .solve(definition, progress)
                        .await
                        .map(|result| (result, None)),
                    None => Ok((kiln_solver::Ref::scratch(), None)),
                }
            }
        });
        let solved = futures::future::try_join_all(solves)
            .await
            .map_err(|e| Status::unknown(error_chain(&e)))?;
        let facts = attest::request_facts(
            &provenance_frontend.0,
            &provenance_frontend.1,
            builds
                .iter()
                .filter_map(|(_, definition, _)| definition.as_ref()),
            dockerfile,
        );
        // The provenance's run: the build's id and its times so far.
        let run = recorder.finish(
            id.to_owned(),
            String::new(),
            kiln_solver::BuildStatus::Completed,
            Vec::new(),
        );
        let attestations = kiln_engine::attestations(&requested, facts, &run);
        let mut keys: Option<kiln_cache::BuildKeys> = None;
        let mut results = Vec::with_capacity(solved.len());
        // Each platform's LLB, for its provenance.
        let mut definitions = Vec::with_capacity(solved.len());
        // Each platform's own keys, for its image's inline cache.
        let mut platform_keys = Vec::with_capacity(solved.len());
        for ((platform, definition, image_config), (result, more)) in builds.into_iter().zip(solved)
        {
            definitions.push(definition);
            platform_keys.push(more.clone());
            match (&mut keys, more) {
                (Some(keys), Some(more)) => keys.merge(more),
                (keys @ None, more) => *keys = more,
                (Some(_), None) => {}
            }
            results.push((platform, result, image_config));
        }
        let inline_wanted = cache_exports.iter().any(kiln_engine::is_inline);
        let inline = keys.clone().filter(|_| inline_wanted);
        let pull = kiln_cache::PullOptions {
            config: self.config.clone(),
            credentials,
            ..kiln_cache::PullOptions::default()
        };
        let refs: Vec<&kiln_solver::Ref> = results.iter().map(|(_, r, _)| r).collect();
        kiln_engine::realize_results(&self.store, &refs, &outputs, requested.sbom, &pull)
            .await
            .map_err(|e| Status::unknown(error_text("failed to export", &e)))?;
        let store = self.store.clone();
        let registry = pull.clone();
        let exported = tokio::task::spawn_blocking(move || {
            let llb: Vec<Option<&kiln_llb::pb::Definition>> = definitions
                .iter()
                .map(|d| d.as_ref().map(LoadedDefinition::definition))
                .collect();
            if several {
                let results: Vec<_> = results
                    .into_iter()
                    .map(|(platform, result, config)| {
                        (
                            platform.unwrap_or_else(kiln_llb::Platform::host),
                            result,
                            config,
                        )
                    })
                    .collect();
                let inline: Vec<Option<&kiln_cache::BuildKeys>> = platform_keys
                    .iter()
                    .map(|k| k.as_ref().filter(|_| inline_wanted))
                    .collect();
                kiln_engine::export_platforms_inline(
                    &store,
                    &results,
                    &outputs,
                    &registry,
                    attestations,
                    &llb,
                    &inline,
                )
            } else {
                let (_, result, image_config) = results.remove(0);
                kiln_engine::export(
                    &store,
                    &result,
                    &outputs,
                    image_config.as_ref(),
                    &registry,
                    inline.as_ref(),
                    attestations,
                    llb.first().copied().flatten(),
                )
            }
        })
        .await
        .map_err(|e| Status::internal(format!("exporting: {e}")))?
        .map_err(|e| Status::unknown(error_text("failed to export", &e)))?;
        let mut cache_manifest = None;
        if let Some(keys) = &keys {
            for export in cache_exports.iter().filter(|r| !kiln_engine::is_inline(r)) {
                let mut exported = kiln_engine::export_cache(&self.store, keys, export, &pull)
                    .await
                    .map_err(|e| {
                        Status::unknown(error_text("failed to export the build cache", &e))
                    });
                // A local cache is sent on to the client's directory.
                let local = local_caches.iter().find(|l| {
                    l.digest.is_none()
                        && matches!(&export.destination,
                            kiln_cache::CacheDestination::Local { dest, .. } if *dest == l.layout)
                });
                if let (Ok(()), Some(local)) = (&exported, local) {
                    let client = self.sessions.get(&request.session).await?;
                    exported = crate::content::export(
                        &client,
                        &local.client_dir,
                        &local.layout,
                        &local.tag,
                    )
                    .await
                    .map(|descriptor| cache_manifest = Some(descriptor))
                    .map_err(|status| {
                        Status::new(
                            status.code(),
                            format!("failed to export the build cache: {}", status.message()),
                        )
                    });
                }
                match exported {
                    Ok(()) => {}
                    Err(error) if export.ignore_error => {
                        tracing::warn!(error = error.message(), "cache export failed");
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        let mut image_descriptor = None;
        if !deliveries.is_empty() {
            let client = self.sessions.get(&request.session).await?;
            for delivery in &deliveries {
                let sent = match delivery.how {
                    Sent::Dir => {
                        crate::filesend::send_dir(&client, delivery.exporter, &delivery.path).await
                    }
                    Sent::File => {
                        crate::filesend::send_file(&client, delivery.exporter, &delivery.path).await
                    }
                    Sent::Store => {
                        let kind = exporter_kind(&request, delivery.exporter);
                        image_descriptor = Some(
                            crate::content::export_image(&client, kind, &delivery.path)
                                .await
                                .map_err(|status| {
                                    Status::new(
                                        status.code(),
                                        format!("failed to send the export: {}", status.message()),
                                    )
                                })?,
                        );
                        continue;
                    }
                };
                sent.map_err(|e| Status::unknown(error_text("failed to send the export", &e)))?;
            }
        }
        drop(scratch);
        drop(lease);
        let mut response = SolveResponse::default();
        if let Some(descriptor) = cache_manifest {
            // BuildKit's clients record it in the cache directory's index.json.
            response
                .exporter_response
                .insert("cache.manifest".to_owned(), descriptor);
        }
        if let Some(descriptor) = image_descriptor {
            // BuildKit's clients record it in the export directory's index.json.
            response
                .exporter_response
                .insert("containerimage.descriptor".to_owned(), descriptor);
        }
        for made in exported {
            if let Some(digest) = made.image_digest {
                response
                    .exporter_response
                    .insert("containerimage.digest".to_owned(), digest.to_string());
            }
            if let Some(digest) = made.config_digest {
                response.exporter_response.insert(
                    "containerimage.config.digest".to_owned(),
                    digest.to_string(),
                );
            }
            if !made.names.is_empty() {
                response
                    .exporter_response
                    .insert("image.name".to_owned(), made.names.join(","));
            }
        }
        Ok(response)
    }
}

/// Ends a build's progress and forgets its gateway result when its `Solve` ends, however it
/// ends.
struct Finished<'a> {
    service: &'a ControlService,
    reference: &'a str,
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.service.builds.finish(self.reference);
        self.service.gateways.forget(self.reference);
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn disk_usage(
        &self,
        _request: Request<DiskUsageRequest>,
    ) -> Result<Response<DiskUsageResponse>, Status> {
        let store = self.store.clone();
        let usage = blocking("measuring disk usage", move || store.du()).await?;
        Ok(Response::new(DiskUsageResponse {
            record: usage.entries.iter().map(usage_record).collect(),
        }))
    }

    async fn prune(
        &self,
        request: Request<PruneRequest>,
    ) -> Result<Response<BoxStream<UsageRecord>>, Status> {
        let options = prune_options(request.get_ref())?;
        let store = self.store.clone();
        let removed = blocking("pruning the build cache", move || {
            let before: HashMap<String, UsageEntry> = store
                .du()?
                .entries
                .into_iter()
                .map(|e| (e.id.clone(), e))
                .collect();
            let report = store.prune(&options)?;
            // What killed builds left outside the store: the runner's per-run files.
            kiln_runner::Runner::new(kiln_engine::RUNNER_STATE).sweep();
            Ok(report
                .removed_records
                .iter()
                .chain(&report.gc.removed_cache_mounts)
                .chain(&report.gc.removed_local_sources)
                .map(|id| match before.get(id) {
                    Some(entry) => usage_record(entry),
                    None => UsageRecord {
                        id: id.clone(),
                        record_type: "regular".to_owned(),
                        ..UsageRecord::default()
                    },
                })
                .collect::<Vec<_>>())
        })
        .await?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            removed.into_iter().map(Ok),
        ))))
    }

    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let request = request.into_inner();
        let reference = request.r#ref.clone();
        tracing::info!(
            reference,
            ops = request.definition.as_ref().map_or(0, |d| d.def.len()),
            frontend = request.frontend,
            session = request.session,
            "solve"
        );
        let mut shutdown = self.shutdown.clone();
        // Also when the caller goes and this call is dropped: its Status streams end.
        let _finished = Finished {
            service: self,
            reference: &reference,
        };
        let recorder = Arc::new(kiln_solver::Recorder::new(
            self.builds.get(&reference) as Arc<dyn Reporter>
        ));
        let (name, build_args) = record_name(&request.frontend_attrs);
        // The client's ref names the build, as BuildKit's history does, when it is one.
        let id = if !reference.is_empty()
            && reference.len() <= 64
            && reference
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            reference.clone()
        } else {
            kiln_solver::new_build_id()
        };
        // Dropping the build on shutdown kills its processes and releases its lease.
        let result = tokio::select! {
            result = self.build(request, recorder.clone(), &id) => result,
            _ = shutdown.wait_for(|s| *s) => Err(Status::unavailable("the daemon is shutting down")),
        };
        if let Err(status) = &result {
            tracing::info!(reference, error = status.message(), "solve failed");
        }
        let status = match &result {
            Ok(_) => kiln_solver::BuildStatus::Completed,
            Err(_) => kiln_solver::BuildStatus::Failed,
        };
        let record = recorder.finish(id, name, status, build_args);
        let store = self.store.clone();
        let stored = blocking("recording the build", move || {
            store.put_build_record(
                &record.id,
                &record.to_json(),
                kiln_cache::BuildHistoryLimits::default(),
            )
        })
        .await;
        if let Err(status) = stored {
            tracing::warn!(error = status.message(), "the build was not recorded");
        }
        result.map(Response::new)
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<BoxStream<StatusResponse>>, Status> {
        let progress = self.builds.get(&request.get_ref().r#ref);
        Ok(Response::new(Box::pin(progress.stream().map(Ok))))
    }

    async fn session(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<BoxStream<BytesMessage>>, Status> {
        let metadata = request.metadata().clone();
        let stream =
            self.sessions
                .attach(&metadata, request.into_inner(), self.shutdown.clone())?;
        Ok(Response::new(stream))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        let host = hostname();
        let labels = [
            ("org.mobyproject.buildkit.worker.executor", "kiln"),
            ("org.mobyproject.buildkit.worker.hostname", host.as_str()),
            ("org.mobyproject.buildkit.worker.snapshotter", "overlayfs"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let store = self.store.clone();
        let disk_size = blocking("measuring the disk", move || store.disk_size()).await?;
        let bytes = |space: Option<kiln_cache::DiskSpace>| {
            space.map_or(0, |s| i64::try_from(s.bytes(disk_size)).unwrap_or(i64::MAX))
        };
        let gc_policy = self
            .config
            .gc
            .policies(disk_size)
            .into_iter()
            .map(|p| GcPolicy {
                all: p.all,
                keep_duration: p
                    .keep_duration
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
                filters: p.filters.iter().map(|f| format!("type=={f}")).collect(),
                reserved_space: bytes(p.reserved_space),
                max_used_space: bytes(p.max_used_space),
                min_free_space: bytes(p.min_free_space),
            })
            .collect();
        Ok(Response::new(ListWorkersResponse {
            record: vec![WorkerRecord {
                id: format!("kiln-{host}"),
                labels,
                platforms: vec![kiln_llb::pb::Platform {
                    os: "linux".to_owned(),
                    architecture: "amd64".to_owned(),
                    ..kiln_llb::pb::Platform::default()
                }],
                gc_policy,
                buildkit_version: Some(version()),
                cdi_devices: Vec::new(),
            }],
        }))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            buildkit_version: Some(version()),
        }))
    }
}
