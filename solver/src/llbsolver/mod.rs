//! LLB on the scheduler: each op of a loaded Definition becomes a [`Vertex`] whose result is a
//! snapshot reference in the cache crate's store.
//!
//! # Overview
//!
//! 1. [`Session::graph`] checks every op of a [`LoadedDefinition`] against what kiln can honour
//!    (`validate` tables each field and attribute: used, refused by name, or harmless to
//!    ignore) and turns it into a vertex: source ops
//!    (`docker-image://`, `local://` narrowed by its include/exclude/follow attributes, see
//!    `local`), exec ops, file ops, merge and diff ops. Scratch (an input index of -1) is the
//!    empty reference. An op is cached under a digest of the op without its inputs and without
//!    `local.unique` (`cache_digest`); the scheduler mixes in the inputs' keys, and a local
//!    source's key is a checksum of exactly the files it selects.
//! 2. [`Session::solve`] runs the graph on the session's [`Scheduler`] and returns the
//!    reference that the Definition's terminal names.
//! 3. Results are cached in the store as cache records: each of the scheduler's keys names
//!    the output snapshots, which garbage collection then keeps. File ops key the inputs they
//!    only copy from by a checksum of the copied paths too (see `checksum`). The scheduler's
//!    key history (why vertices missed) is kept beside the records ([`load_history`]).
//!
//! Exec ops run through the [`Executor`] seam on an overlay of their root snapshot, with
//! secret, tmpfs, read-only bind and cache mounts (cache mounts persist in the store and honour
//! the shared / private / locked sharing modes); file, merge and diff ops run in-process on
//! merged views (see `view`).

mod checksum;
mod exec;
mod file;
pub(crate) mod fileop;
mod git;
mod http;
mod local;
mod local_checksums;

pub use exec::Container;
pub use git::GitMeta;
pub use http::HttpMeta;
pub use local::{LocalDirs, LocalRequest};
mod merge;
mod source;
mod store_cache;
#[cfg(test)]
mod tests;
mod validate;

use store_cache::StoreCache;
pub use store_cache::load_history;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::FutureExt;
use kiln_cache::{BuildKeys, KeyNode, Store};
use kiln_llb::{LoadedDefinition, pb};

use crate::cache_key::CacheKey;
use crate::error::{BuildError, Error, InputOf, LlbError};
use crate::executor::Executor;
use crate::scheduler::{Edge, Graph, Op, OpError, Reporter, Scheduler, SolvedGraph, Vertex};

/// A solved result: a committed snapshot in the store, or nothing (scratch).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ref(Option<Arc<str>>);

impl Ref {
    /// The empty file system.
    pub fn scratch() -> Self {
        Self(None)
    }

    /// The committed snapshot with this key.
    pub fn snapshot(key: impl Into<Arc<str>>) -> Self {
        Self(Some(key.into()))
    }

    /// The snapshot key, or `None` for scratch.
    pub fn key(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The layer directories of this result, topmost first.
    pub fn lowers(&self, store: &Store) -> Result<Vec<PathBuf>, kiln_cache::Error> {
        match self.key() {
            Some(key) => store.lowers(key),
            None => Ok(Vec::new()),
        }
    }
}

/// What a source resolves to before it is fetched ([`Session::resolve_source_meta`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMeta {
    /// A git source's ref.
    Git(GitMeta),
    /// An HTTP source's file.
    Http(HttpMeta),
}

/// Everything a build needs from outside the graph.
pub struct SessionConfig {
    /// The store for images, snapshots and cache records.
    pub store: Arc<Store>,
    /// Runs exec steps.
    pub executor: Arc<dyn Executor>,
    /// How images are pulled.
    pub pull: kiln_cache::PullOptions,
    /// Local sources by name (`--local context=DIR`).
    pub locals: HashMap<String, PathBuf>,
    /// Brings the local sources not in `locals` (a daemon's client sends them); without it,
    /// such a source is an error.
    pub local_dirs: Option<Arc<dyn LocalDirs>>,
    /// Secrets by id (`--secret id=...`).
    pub secrets: HashMap<String, Vec<u8>>,
    /// SSH agent sockets by id (`--ssh default=SOCKET`), for `RUN --mount=type=ssh` and git
    /// sources over SSH.
    pub ssh: HashMap<String, PathBuf>,
    /// Ignore cached results (`--no-cache`).
    pub no_cache: bool,
    /// What steps may ask for beyond the sandbox (`--allow`).
    pub entitlements: crate::executor::Entitlements,
    /// Caches to import results from (`--cache-from`), asked in order when the store has
    /// nothing under a key.
    pub cache_imports: Vec<Arc<kiln_cache::CacheSource>>,
}

/// A build session: the configuration and the scheduler that solves its graphs.
pub struct Session {
    config: Arc<SessionConfig>,
    scheduler: Scheduler<Ref>,
}

impl Session {
    /// A session whose scheduler caches results in the store.
    pub fn new(config: SessionConfig, max_parallel_exec: Option<usize>) -> Self {
        let mut builder = Self::builder(&config);
        if let Some(n) = max_parallel_exec {
            builder = builder.max_parallel_exec(n);
        }
        Self {
            config: Arc::new(config),
            scheduler: builder.build(),
        }
    }

    /// A session whose scheduler shares `shared` with other sessions' (a daemon's builds):
    /// one bound on the steps running at once, and a step two of them need runs once.
    pub fn sharing(config: SessionConfig, shared: Arc<crate::SharedWork>) -> Self {
        let scheduler = Self::builder(&config).shared(shared).build();
        Self {
            config: Arc::new(config),
            scheduler,
        }
    }

    fn builder(config: &SessionConfig) -> crate::SchedulerBuilder<Ref> {
        Scheduler::builder().cache(Arc::new(StoreCache {
            store: config.store.clone(),
            imports: config.cache_imports.clone(),
            pull: config.pull.clone(),
        }))
    }

    /// The session's configuration.
    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.config
    }

    /// What the git or HTTP source `source` resolves to before it is fetched (BuildKit's
    /// `ResolveSourceMeta`): a git ref's commit, an HTTP file's digest; `None` for sources of
    /// other kinds.
    pub async fn resolve_source_meta(
        &self,
        source: &pb::SourceOp,
    ) -> Result<Option<SourceMeta>, Error> {
        let refuse = |message| Error::SourceAttribute {
            identifier: source.identifier.clone(),
            message,
        };
        let identifier = &source.identifier;
        if identifier.starts_with("git://") {
            let git =
                git::GitSource::new(String::new(), source, self.config.clone()).map_err(refuse)?;
            return Ok(Some(SourceMeta::Git(git.meta().await?)));
        }
        if identifier.starts_with("http://") || identifier.starts_with("https://") {
            let http = http::HttpSource::new(String::new(), source, self.config.clone())
                .map_err(refuse)?;
            return Ok(Some(SourceMeta::Http(http.meta().await?)));
        }
        Ok(None)
    }

    /// Turns a loaded Definition into a scheduler graph.
    pub fn graph(&self, definition: &LoadedDefinition) -> Result<Graph<Ref>, LlbError> {
        let mut graph = Graph::new();
        for op in definition.ops() {
            let digest = op.digest();
            let Some(body) = op.body() else {
                continue; // the terminal op: it only names the result
            };
            validate::check_op(op, self.config.executor.as_ref())?;
            // As BuildKit's `ValidateEntitlements`: a step the build may not run fails the
            // whole Definition before any step runs.
            if let pb::op::Op::Exec(exec) = body {
                exec::entitled(exec, self.config.entitlements).map_err(|entitlement| {
                    LlbError::NotEntitled {
                        digest: digest.to_string(),
                        entitlement,
                    }
                })?;
            }
            let name = definition
                .metadata(&digest)
                .and_then(|m| m.description.get("llb.customname").cloned())
                .unwrap_or_else(|| describe(body));
            let ignore_cache = self.config.no_cache
                || definition.metadata(&digest).is_some_and(|m| m.ignore_cache);
            let inputs: Vec<Edge> = op
                .inputs()
                .iter()
                .map(|e| Edge {
                    vertex: e.digest.to_string().into(),
                    output: e.index,
                })
                .collect();
            let cache_digest = cache_digest(op.op());
            let op_impl: Arc<dyn Op<Ref>> = match body {
                pb::op::Op::Source(source) => source::source_op(
                    cache_digest,
                    source,
                    op.op().platform.as_ref(),
                    self.config.clone(),
                )?,
                pb::op::Op::Exec(exec) => Arc::new(exec::ExecOp::new(
                    cache_digest,
                    inputs.len(),
                    exec.clone(),
                    op.op().platform.as_ref().map(kiln_llb::Platform::from_pb),
                    self.config.clone(),
                )),
                pb::op::Op::File(file) => Arc::new(file::FileOp::new(
                    cache_digest,
                    inputs.len(),
                    file.clone(),
                    self.config.clone(),
                )),
                pb::op::Op::Merge(merge) => Arc::new(merge::LayerOp::new(
                    cache_digest,
                    inputs.len(),
                    merge::Layers::Merge(merge.clone()),
                    self.config.clone(),
                )),
                pb::op::Op::Diff(diff) => Arc::new(merge::LayerOp::new(
                    cache_digest,
                    inputs.len(),
                    merge::Layers::Diff(*diff),
                    self.config.clone(),
                )),
                other => {
                    return Err(LlbError::Unsupported {
                        digest: digest.to_string(),
                        kind: describe(other),
                    });
                }
            };
            graph.add(Vertex {
                digest: digest.to_string().into(),
                name,
                inputs,
                op: op_impl,
                ignore_cache,
            });
        }
        Ok(graph)
    }

    /// Solves a loaded Definition and returns its result.
    pub async fn solve(
        &self,
        definition: &LoadedDefinition,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Ref, BuildError> {
        let graph = self.graph(definition)?;
        Ok(self
            .scheduler
            .solve(Arc::new(graph), result_edge(definition), reporter)
            .await?)
    }

    /// Solves a loaded Definition and returns its result with the cache keys of the build,
    /// for a cache export (`None` if they could not all be known).
    pub async fn solve_keyed(
        &self,
        definition: &LoadedDefinition,
        reporter: Arc<dyn Reporter>,
    ) -> Result<(Ref, Option<BuildKeys>), BuildError> {
        let graph = self.graph(definition)?;
        let (result, solved) = self
            .scheduler
            .solve_keyed(Arc::new(graph), result_edge(definition), reporter)
            .await?;
        Ok((result, solved.and_then(build_keys)))
    }
}

/// The edge a Definition's terminal names.
fn result_edge(definition: &LoadedDefinition) -> Edge {
    let result = definition.result();
    Edge {
        vertex: result.digest.to_string().into(),
        output: result.index,
    }
}

/// A solved graph as the store's plain [`BuildKeys`]: digests for keys, snapshot keys for
/// results.
fn build_keys(solved: SolvedGraph<Ref>) -> Option<BuildKeys> {
    let nodes = solved
        .vertices
        .into_iter()
        .map(|vertex| {
            Some(KeyNode {
                key: cache_key_digest(&vertex.key)?,
                alternatives: vertex
                    .alternatives
                    .iter()
                    .map(cache_key_digest)
                    .collect::<Option<Vec<_>>>()?,
                inputs: vertex.inputs,
                outputs: vertex
                    .outputs
                    .map(|outputs| outputs.iter().map(|r| r.key().map(str::to_owned)).collect()),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(BuildKeys {
        nodes,
        target: solved.target,
        more_targets: Vec::new(),
    })
}

/// A cache key as the store names content: a sha256 digest.
fn cache_key_digest(key: &CacheKey) -> Option<kiln_cache::Digest> {
    kiln_cache::Digest::from_hex(&hex::encode(key.as_bytes())).ok()
}

/// The digest that keys an op in the cache: the op without its input digests (the scheduler
/// mixes in the inputs' own cache keys), without `local.unique`, which only makes a local
/// source's op digest differ per invocation, and without an exec's proxy settings, which
/// BuildKit keeps out of the key too (a proxy does not change what a step makes).
fn cache_digest(op: &pb::Op) -> String {
    let mut op = op.clone();
    op.inputs.clear();
    match &mut op.op {
        Some(pb::op::Op::Source(source)) => {
            source.attrs.remove("local.unique");
        }
        Some(pb::op::Op::Exec(exec)) => {
            if let Some(meta) = &mut exec.meta {
                meta.proxy_env = None;
            }
        }
        _ => {}
    }
    kiln_llb::op_digest(&op).to_string()
}

/// A short description of an op, for progress when the Definition gives no name.
fn describe(op: &pb::op::Op) -> String {
    match op {
        pb::op::Op::Source(s) => s.identifier.clone(),
        pb::op::Op::Exec(e) => e
            .meta
            .as_ref()
            .map(|m| m.args.join(" "))
            .unwrap_or_default(),
        pb::op::Op::File(_) => "file".to_owned(),
        pb::op::Op::Build(_) => "build".to_owned(),
        pb::op::Op::Merge(_) => "merge".to_owned(),
        pb::op::Op::Diff(_) => "diff".to_owned(),
        pb::op::Op::Passthrough(_) => "passthrough".to_owned(),
    }
}

/// A unique name for a new snapshot.
fn new_snapshot_key(prefix: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{now:x}-{:016x}", fastrand::u64(..))
}

/// The cache map of an op keyed by its definition alone: its digest and, for each of its
/// `inputs`, the input's definition-based key.
fn definition_map(
    digest: &str,
    inputs: usize,
) -> futures::future::BoxFuture<'static, Result<crate::CacheMap<Ref>, OpError>> {
    let map = crate::CacheMap {
        outline: None,
        lineage: None,
        digest: digest.to_owned(),
        deps: (0..inputs).map(|_| crate::CacheDep::definition()).collect(),
    };
    async move { Ok(map) }.boxed()
}

/// Runs blocking work on the blocking pool, turning a panic or cancellation into an error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::Blocking)?
}

/// Where scratch space for views lives: inside the store, on the same file system, in this
/// process's own directory (garbage collection removes it once the process is gone).
fn scratch_dir(store: &Store) -> Result<PathBuf, Error> {
    Ok(store.scratch_dir()?)
}

/// The result an op, a mount or a file action names by input index among `inputs`: scratch
/// for a negative index.
fn input_ref(inputs: &[Ref], index: i64, by: InputOf) -> Result<Ref, Error> {
    if index < 0 {
        return Ok(Ref::scratch());
    }
    usize::try_from(index)
        .ok()
        .and_then(|i| inputs.get(i).cloned())
        .ok_or(Error::MissingInput { by, index })
}

/// An active snapshot being written: removed when dropped unless committed, so that no
/// failure or cancellation leaves it behind.
struct ActiveSnapshot {
    store: Arc<Store>,
    key: String,
    committed: bool,
}

impl ActiveSnapshot {
    /// A new active snapshot on `parent` (`None`: empty), with its directories.
    fn prepare(
        store: &Arc<Store>,
        parent: Option<&str>,
    ) -> Result<(Self, kiln_cache::Mounts), Error> {
        let key = new_snapshot_key("active");
        let mounts = store.prepare_upper(&key, parent)?;
        let active = Self {
            store: store.clone(),
            key,
            committed: false,
        };
        Ok((active, mounts))
    }

    /// Commits it as a new snapshot named after `prefix`.
    fn commit(mut self, prefix: &str) -> Result<Ref, Error> {
        let key = new_snapshot_key(prefix);
        self.store.commit(&self.key, &key)?;
        self.committed = true;
        Ok(Ref::snapshot(key))
    }
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(error) = self.store.remove_snapshot(&self.key) {
            tracing::warn!(snapshot = %self.key, %error, "removing an unfinished snapshot");
        }
    }
}

/// Files a new snapshot of a local directory takes from an earlier snapshot of it, by a hard
/// link instead of a copy: those that have not changed since that snapshot copied them (a
/// committed snapshot never changes, and a link is the same file, owner, mode and times).
pub(super) struct Reuse {
    /// The earlier snapshot's directory.
    pub(super) from: PathBuf,
    /// The relative paths of the regular files it has as they are now.
    pub(super) files: std::collections::HashSet<PathBuf>,
}

/// Makes a committed snapshot from the selected paths of a host directory (a local source).
/// Everything is owned by root, as BuildKit's local sources are. With `reuse`, unchanged
/// files are linked from an earlier snapshot of the directory: the snapshot is the same.
fn snapshot_from_dir(
    store: &Arc<Store>,
    dir: &Path,
    selected: &[local::Selected],
    prefix: &str,
    reuse: Option<&Reuse>,
) -> Result<Ref, Error> {
    let (active, mounts) = ActiveSnapshot::prepare(store, None)?;
    copy_selected(dir, &mounts.upper, selected, reuse)?;
    active.commit(prefix)
}

/// Links `rel` from the earlier snapshot `reuse` into `dest`; `false` when it cannot (gone
/// from that snapshot, a link on the way, the file system's link limit): then it is copied.
fn link_reused(reuse: &Reuse, rel: &Path, dest: &Path) -> bool {
    let Ok(found) = kiln_fsutil::Root::new(&reuse.from).resolve(rel, false) else {
        return false;
    };
    let Some(entry) = found.entry.as_ref().filter(|e| e.metadata.is_file()) else {
        return false;
    };
    // Only the entry at that very path: no link of the earlier snapshot is followed.
    found.relative() == rel && fs_err::hard_link(&entry.host, dest.join(rel)).is_ok()
}

/// Copies the selected paths (parents listed before children) from `src` to the empty `dest`,
/// linking the files `reuse` names instead. Paths are the directory's own names, whatever
/// their bytes.
fn copy_selected(
    src: &Path,
    dest: &Path,
    selected: &[local::Selected],
    reuse: Option<&Reuse>,
) -> Result<(), Error> {
    use fileop::{CopyPaths, DeviceNodes};
    let owner = Some(fileop::Owner { uid: 0, gid: 0 });
    let options = pb::FileActionCopy {
        mode: -1,
        follow_symlink: false,
        dir_copy_contents: true,
        create_dest_path: true,
        timestamp: -1,
        ..Default::default()
    };
    // Entries before this index were copied with their directory.
    let mut copied_to = 0;
    // Directories made one by one to link files into, whose times are set last (the copy of
    // a whole directory keeps its times).
    let mut timed = Vec::new();
    for (i, entry) in selected.iter().enumerate() {
        if i < copied_to {
            continue;
        }
        let rel = entry.path.as_path();
        let path = Path::new("/").join(rel);
        if entry.is_dir {
            // What is below a directory follows it in the list (parents come first).
            let all_below = selected[i + 1..]
                .iter()
                .take_while(|s| s.path.starts_with(rel))
                .count();
            // A directory with extended attributes is copied whole, which keeps them.
            let links_below = reuse.is_some_and(|r| {
                selected[i + 1..=i + all_below]
                    .iter()
                    .any(|s| r.files.contains(&s.path))
            }) && xattr::list(src.join(rel))
                .is_ok_and(|mut names| names.next().is_none());
            let whole = all_below == count_below(&src.join(rel))?;
            if whole && links_below {
                timed.push(entry);
            }
            if whole && !links_below {
                // Into its parent, so the directory keeps its own mode.
                let mut parent = path
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .as_os_str()
                    .to_owned();
                parent.push("/");
                let paths = CopyPaths {
                    src: &path,
                    dest: Path::new(&parent),
                };
                let options = pb::FileActionCopy {
                    dir_copy_contents: false,
                    ..options.clone()
                };
                fileop::copy_with(src, dest, paths, &options, owner, DeviceNodes::Create)?;
                copied_to = i + 1 + all_below;
                continue;
            }
            // Some of its contents are left out: the directory alone, then what is selected.
            let mode = std::os::unix::fs::MetadataExt::mode(&fs_err::metadata(src.join(rel))?);
            fileop::mkdir_path(dest, &path, mode & 0o7777, true, owner, None)?;
            continue;
        }
        if reuse.is_some_and(|r| r.files.contains(rel) && link_reused(r, rel, dest)) {
            continue;
        }
        let paths = CopyPaths {
            src: &path,
            dest: &path,
        };
        fileop::copy_with(src, dest, paths, &options, owner, DeviceNodes::Create)?;
    }
    // Deepest first: setting a directory's times does not change its parent's.
    for entry in timed.iter().rev() {
        let at = dest.join(&entry.path);
        filetime::set_symlink_file_times(
            &at,
            filetime::FileTime::from_last_access_time(&entry.meta),
            filetime::FileTime::from_last_modification_time(&entry.meta),
        )
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("setting the times of {}: {e}", at.display()),
            )
        })?;
    }
    Ok(())
}

/// How many paths are below a directory (not following links).
fn count_below(dir: &Path) -> std::io::Result<usize> {
    let mut count = 0;
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        count += 1;
        if entry.file_type()?.is_dir() {
            count += count_below(&entry.path())?;
        }
    }
    Ok(count)
}
