//! LLB on the scheduler: each op of a loaded Definition becomes a [`Vertex`] whose result is a
//! snapshot reference in the cache crate's store.
//!
//! # Overview
//!
//! 1. [`Session::graph`] turns every op of a [`LoadedDefinition`] into a vertex: source ops
//!    (`docker-image://`, `local://`), exec ops and file ops. Scratch (an input index of -1) is
//!    the empty reference.
//! 2. [`Session::solve`] runs the graph on the session's [`Scheduler`] and returns the
//!    reference that the Definition's terminal names.
//! 3. Results are cached in the store as cache records: the scheduler's key names the output
//!    snapshots, which garbage collection then keeps.
//!
//! Exec ops run through the [`Executor`] seam on an overlay of their root snapshot; file ops
//! run in-process on merged views (see `view`).

mod exec;
mod file;
mod source;
mod view;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use kiln_cache::{CacheRecord, Store};
use kiln_llb::{LoadedDefinition, pb};

use crate::executor::Executor;
use crate::scheduler::{
    CacheKey, CacheStore, Edge, Graph, Op, OpError, Reporter, Scheduler, SolveError, Vertex,
};

pub use view::export_local;

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
    /// Secrets by id (`--secret id=...`).
    pub secrets: HashMap<String, Vec<u8>>,
    /// Ignore cached results (`--no-cache`).
    pub no_cache: bool,
}

/// A build session: the configuration and the scheduler that solves its graphs.
pub struct Session {
    config: Arc<SessionConfig>,
    scheduler: Scheduler<Ref>,
}

impl Session {
    /// A session whose scheduler caches results in the store.
    pub fn new(config: SessionConfig, max_parallel_exec: Option<usize>) -> Self {
        let config = Arc::new(config);
        let mut builder = Scheduler::builder().cache(Arc::new(StoreCache {
            store: config.store.clone(),
        }));
        if let Some(n) = max_parallel_exec {
            builder = builder.max_parallel_exec(n);
        }
        Self {
            config,
            scheduler: builder.build(),
        }
    }

    /// The session's configuration.
    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.config
    }

    /// Turns a loaded Definition into a scheduler graph.
    pub fn graph(&self, definition: &LoadedDefinition) -> Result<Graph<Ref>, LlbError> {
        let mut graph = Graph::new();
        for op in definition.ops() {
            let digest = op.digest();
            let Some(body) = op.body() else {
                continue; // the terminal op: it only names the result
            };
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
            let op_impl: Arc<dyn Op<Ref>> = match body {
                pb::op::Op::Source(source) => {
                    source::source_op(digest.to_string(), source, self.config.clone())?
                }
                pb::op::Op::Exec(exec) => Arc::new(exec::ExecOp::new(
                    digest.to_string(),
                    inputs.len(),
                    exec.clone(),
                    self.config.clone(),
                )),
                pb::op::Op::File(file) => Arc::new(file::FileOp::new(
                    digest.to_string(),
                    inputs.len(),
                    file.clone(),
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
        let result = definition.result();
        let target = Edge {
            vertex: result.digest.to_string().into(),
            output: result.index,
        };
        Ok(self
            .scheduler
            .solve(Arc::new(graph), target, reporter)
            .await?)
    }
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

/// Why a Definition cannot be turned into a graph.
#[derive(Debug, thiserror::Error)]
pub enum LlbError {
    /// An op kind kiln does not run yet.
    #[error("op {digest}: {kind} ops are not supported")]
    Unsupported {
        /// The op digest.
        digest: String,
        /// What it is.
        kind: String,
    },
    /// A source identifier kiln does not know.
    #[error("op {digest}: unsupported source {identifier:?}")]
    UnsupportedSource {
        /// The op digest.
        digest: String,
        /// The identifier.
        identifier: String,
    },
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Definition could not be turned into a graph.
    #[error(transparent)]
    Graph(#[from] LlbError),
    /// Solving failed.
    #[error(transparent)]
    Solve(#[from] SolveError),
}

/// A unique name for a new snapshot.
fn new_snapshot_key(prefix: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{now:x}-{:016x}", fastrand::u64(..))
}

/// Runs blocking work on the blocking pool, turning a panic or cancellation into an error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OpError> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| -> OpError { format!("blocking task failed: {e}").into() })?
}

/// Where scratch space for views lives: inside the store, on the same file system.
fn scratch_dir(store: &Store) -> Result<PathBuf, OpError> {
    let dir = store.root().join("tmp");
    fs_err::create_dir_all(&dir)?;
    Ok(dir)
}

/// The scheduler's cache, kept as cache records in the store.
struct StoreCache {
    store: Arc<Store>,
}

impl CacheStore<Ref> for StoreCache {
    fn load(&self, key: &CacheKey) -> BoxFuture<'static, Result<Option<Vec<Ref>>, OpError>> {
        let store = self.store.clone();
        let id = key.to_string();
        blocking(move || {
            let Some(record) = store.cache_records()?.into_iter().find(|r| r.id == id) else {
                return Ok(None);
            };
            let mut refs = Vec::with_capacity(record.snapshots.len());
            for key in &record.snapshots {
                if key.is_empty() {
                    refs.push(Ref::scratch());
                } else if store.snapshot(key)?.is_some() {
                    refs.push(Ref::snapshot(key.as_str()));
                } else {
                    return Ok(None); // pruned: run again
                }
            }
            Ok(Some(refs))
        })
        .boxed()
    }

    fn save(&self, key: &CacheKey, outputs: &[Ref]) -> BoxFuture<'static, Result<(), OpError>> {
        let store = self.store.clone();
        let id = key.to_string();
        let snapshots: Vec<String> = outputs
            .iter()
            .map(|r| r.key().unwrap_or_default().to_owned())
            .collect();
        blocking(move || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            store.put_cache_record(&CacheRecord {
                id,
                description: String::new(),
                blobs: Vec::new(),
                snapshots,
                size: 0,
                created: now,
                last_used: now,
            })?;
            Ok(())
        })
        .boxed()
    }
}

/// Makes a committed snapshot from a host directory tree (a local source).
fn snapshot_from_dir(store: &Store, dir: &Path, prefix: &str) -> Result<Ref, OpError> {
    let active = new_snapshot_key("active");
    let mounts = store.prepare(&active, None)?;
    let action = pb::FileActionCopy {
        src: "/".into(),
        dest: "/".into(),
        mode: -1,
        follow_symlink: true,
        dir_copy_contents: true,
        create_dest_path: true,
        timestamp: -1,
        ..Default::default()
    };
    let copied = crate::fileop::copy(
        dir,
        &mounts.upper,
        &action,
        Some(crate::fileop::Owner { uid: 0, gid: 0 }),
    );
    if let Err(e) = copied {
        let _ = store.remove_snapshot(&active);
        return Err(e.into());
    }
    let key = new_snapshot_key(prefix);
    store.commit(&active, &key)?;
    Ok(Ref::snapshot(key))
}
