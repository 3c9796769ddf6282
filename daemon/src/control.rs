//! The `Control` service: workers, disk usage, prune, solve, status, and the session tunnel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::{Stream, StreamExt as _};
use kiln_cache::{PruneOptions, PullOptions, Store, UsageEntry};
use kiln_llb::LoadedDefinition;
use kiln_solver::{Entitlements, Session, SessionConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::pb::control::control_server::Control;
use crate::pb::control::{
    BytesMessage, DiskUsageRequest, DiskUsageResponse, InfoRequest, InfoResponse,
    ListWorkersRequest, ListWorkersResponse, PruneRequest, SolveRequest, SolveResponse,
    StatusRequest, StatusResponse, UsageRecord,
};
use crate::pb::types::{BuildkitVersion, GcPolicy, WorkerRecord};
use crate::status::Builds;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the control service serves from.
pub(crate) struct ControlService {
    pub(crate) store: Arc<Store>,
    pub(crate) config: kiln_cache::Config,
    pub(crate) executor: Arc<dyn kiln_solver::Executor>,
    pub(crate) builds: Builds,
    /// The results of builds run as gateway clients.
    pub(crate) returns: crate::gateway::Returns,
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

/// One store entry as BuildKit's usage record: images are in use (prune never removes them).
fn usage_record(entry: &UsageEntry) -> UsageRecord {
    let (record_type, description) = match entry.kind {
        "image" => ("regular", format!("image {}", entry.id)),
        "exec.cachemount" => ("exec.cachemount", format!("cache mount {}", entry.id)),
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
    format!("{what}: {}", causes(err))
}

/// An error and its causes on one line, `: `-separated.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The prune request as the store's options: BuildKit's durations are in nanoseconds, its
/// filters those of `kiln prune` ([`PruneOptions::add_filter`]).
fn prune_options(request: &PruneRequest) -> Result<PruneOptions, Status> {
    let bytes = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let mut options = PruneOptions {
        all: request.all,
        keep_duration: u64::try_from(request.keep_duration)
            .ok()
            .filter(|v| *v > 0)
            .map(Duration::from_nanos),
        reserved_space: bytes(request.reserved_space),
        max_used_space: bytes(request.max_used_space),
        min_free_space: bytes(request.min_free_space),
        ..PruneOptions::default()
    };
    // BuildKit's keep-duration alone keeps what was used that recently: the rest goes.
    let limited = options.reserved_space.is_some()
        || options.max_used_space.is_some()
        || options.min_free_space.is_some();
    if !limited {
        options.older_than = options.keep_duration.take();
    }
    for filter in &request.filter {
        options
            .add_filter(filter)
            .map_err(|e| Status::invalid_argument(error_text("invalid prune request", &e)))?;
    }
    Ok(options)
}

/// The exporters of a request as kiln outputs. The attributes are BuildKit's, which kiln's
/// `--output` grammar shares (several image names go `;`-separated there).
fn outputs(request: &SolveRequest) -> Result<Vec<kiln_exporters::Output>, Status> {
    let mut exporters: Vec<(&str, Vec<(&String, &String)>)> = request
        .exporters
        .iter()
        .map(|e| (e.r#type.as_str(), e.attrs.iter().collect()))
        .collect();
    if exporters.is_empty() && !request.exporter_deprecated.is_empty() {
        exporters.push((
            request.exporter_deprecated.as_str(),
            request.exporter_attrs_deprecated.iter().collect(),
        ));
    }
    let mut outputs = Vec::new();
    for (kind, mut attrs) in exporters {
        if matches!(kind, "local" | "tar") {
            return Err(Status::unimplemented(format!(
                "the {kind} exporter sends its files through the client's session, which kiln does not serve yet"
            )));
        }
        attrs.sort();
        let mut text = format!("type={kind}");
        for (key, value) in attrs {
            text.push(',');
            text.push_str(key);
            text.push('=');
            if key == "name" {
                text.push_str(&value.replace(',', ";"));
            } else {
                text.push_str(value);
            }
        }
        outputs.push(
            kiln_exporters::parse_output(&text).map_err(|e| {
                Status::invalid_argument(error_text(&format!("exporter {kind}"), &e))
            })?,
        );
    }
    Ok(outputs)
}

/// BuildKit's entitlement names.
fn entitlements(names: &[String]) -> Result<Entitlements, Status> {
    let mut entitlements = Entitlements::default();
    for name in names {
        match name.as_str() {
            "network.host" => entitlements.network_host = true,
            "security.insecure" => entitlements.security_insecure = true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "invalid entitlement: {other}"
                )));
            }
        }
    }
    Ok(entitlements)
}

impl ControlService {
    /// Solves and exports one request; the progress goes to the build's log.
    async fn build(&self, request: SolveRequest) -> Result<SolveResponse, Status> {
        if !request.frontend.is_empty() {
            return Err(Status::unimplemented(format!(
                "frontend {:?}: kiln serves Definitions only so far (its Dockerfile frontend needs the client's session)",
                request.frontend
            )));
        }
        let definition = match request.definition.clone().filter(|d| !d.def.is_empty()) {
            Some(definition) => definition,
            // buildctl runs its build as a gateway client and returns the result to solve.
            None => self
                .returns
                .wait(&request.r#ref)
                .await
                .ok_or_else(|| Status::invalid_argument("the request has no Definition"))?
                .map_err(Status::unknown)?,
        };
        let definition = LoadedDefinition::from_definition(definition)
            .map_err(|e| Status::invalid_argument(error_text("invalid Definition", &e)))?;
        let outputs = outputs(&request)?;
        let entitlements = entitlements(&request.entitlements)?;
        let store = self.store.clone();
        let lease = blocking("taking a lease on the store", move || store.lease()).await?;
        let session = Session::new(
            SessionConfig {
                store: self.store.clone(),
                executor: self.executor.clone(),
                pull: PullOptions {
                    config: self.config.clone(),
                    prefer_local: true,
                    ..PullOptions::default()
                },
                locals: HashMap::<String, PathBuf>::new(),
                secrets: HashMap::new(),
                ssh: HashMap::new(),
                no_cache: false,
                entitlements,
                // Cache import and export through the daemon are still to come.
                cache_imports: Vec::new(),
            },
            None,
        );
        let progress = self.builds.get(&request.r#ref);
        let result = session
            .solve(&definition, progress)
            .await
            .map_err(|e| Status::unknown(causes(&e)))?;
        let store = self.store.clone();
        let registry = self.config.clone();
        let exported = tokio::task::spawn_blocking(move || {
            kiln_engine::export(&store, &result, &outputs, None, &registry, None)
        })
        .await
        .map_err(|e| Status::internal(format!("exporting: {e}")))?
        .map_err(|e| Status::unknown(error_text("failed to export", &e)))?;
        drop(lease);
        let mut response = SolveResponse::default();
        for made in exported {
            if let Some(digest) = made.image_digest {
                response
                    .exporter_response
                    .insert("containerimage.digest".to_owned(), digest.to_string());
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
        self.service.returns.forget(self.reference);
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

    type PruneStream = BoxStream<UsageRecord>;

    async fn prune(
        &self,
        request: Request<PruneRequest>,
    ) -> Result<Response<Self::PruneStream>, Status> {
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
        // Dropping the build on shutdown kills its processes and releases its lease.
        let result = tokio::select! {
            result = self.build(request) => result,
            _ = shutdown.wait_for(|s| *s) => Err(Status::unavailable("the daemon is shutting down")),
        };
        if let Err(status) = &result {
            tracing::info!(reference, error = status.message(), "solve failed");
        }
        result.map(Response::new)
    }

    type StatusStream = BoxStream<StatusResponse>;

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let progress = self.builds.get(&request.get_ref().r#ref);
        Ok(Response::new(Box::pin(progress.stream().map(Ok))))
    }

    type SessionStream = BoxStream<BytesMessage>;

    async fn session(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // The tunnel stays open while the client keeps it; kiln calls none of the client's
        // services yet, so what the client sends is read and dropped.
        let mut inbound = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        let held = futures::stream::once(async move {
            let drain = async { while let Some(Ok(_)) = inbound.next().await {} };
            tokio::select! {
                () = drain => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        })
        .filter_map(|()| async { None });
        Ok(Response::new(Box::pin(held)))
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
