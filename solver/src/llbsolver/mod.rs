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
mod git;
mod http;
mod local;
mod merge;
mod source;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use kiln_cache::{CacheRecord, Store};
use kiln_llb::{LoadedDefinition, pb};

use crate::executor::Executor;
use crate::history::History;
use crate::scheduler::{
    CacheKey, CacheStore, Edge, Graph, Op, OpError, Reporter, Scheduler, SolveError, Vertex,
};

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
    /// SSH agent sockets by id (`--ssh default=SOCKET`), for `RUN --mount=type=ssh` and git
    /// sources over SSH.
    pub ssh: HashMap<String, PathBuf>,
    /// Ignore cached results (`--no-cache`).
    pub no_cache: bool,
    /// What steps may ask for beyond the sandbox (`--allow`).
    pub entitlements: crate::executor::Entitlements,
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
        let platform = validate::Platform {
            os: self.config.pull.os.clone(),
            architecture: self.config.pull.architecture.clone(),
        };
        for op in definition.ops() {
            let digest = op.digest();
            let Some(body) = op.body() else {
                continue; // the terminal op: it only names the result
            };
            validate::check_op(op, &platform)?;
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
                pb::op::Op::Source(source) => {
                    source::source_op(cache_digest, source, self.config.clone())?
                }
                pb::op::Op::Exec(exec) => Arc::new(exec::ExecOp::new(
                    cache_digest,
                    inputs.len(),
                    exec.clone(),
                    self.config.clone(),
                )),
                pb::op::Op::File(file) => Arc::new(file::FileOp::new(
                    cache_digest,
                    inputs.len(),
                    file.clone(),
                    self.config.clone(),
                )),
                pb::op::Op::Merge(merge) => Arc::new(merge::MergeOp::new(
                    cache_digest,
                    inputs.len(),
                    merge.clone(),
                    self.config.clone(),
                )),
                pb::op::Op::Diff(diff) => Arc::new(merge::DiffOp::new(
                    cache_digest,
                    inputs.len(),
                    *diff,
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
    /// A source op attribute kiln cannot read.
    #[error("op {digest}: {message}")]
    BadAttribute {
        /// The op digest.
        digest: String,
        /// What is wrong with it.
        message: String,
    },
    /// A field kiln refuses rather than build something other than it asks (see `validate`).
    #[error("op {digest}: {field} is not supported: {reason}")]
    Refused {
        /// The op digest.
        digest: String,
        /// The field or attribute.
        field: String,
        /// Why.
        reason: String,
    },
    /// A source attribute kiln does not know.
    #[error("op {digest}: unknown attribute {key:?} for {scheme} sources")]
    UnknownAttribute {
        /// The op digest.
        digest: String,
        /// The source's scheme.
        scheme: &'static str,
        /// The attribute.
        key: String,
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

/// Where scratch space for views lives: inside the store, on the same file system, in this
/// process's own directory (garbage collection removes it once the process is gone).
fn scratch_dir(store: &Store) -> Result<PathBuf, OpError> {
    Ok(store.scratch_dir()?)
}

/// The name of the scheduler's key history (how ops were keyed, why vertices missed) among
/// the store's documents.
const HISTORY_DOCUMENT: &str = "cache-key-history";

/// Where older versions kept the history: read once, then moved into the store's database.
fn legacy_history_file(store: &Store) -> PathBuf {
    store.root().join("cache-history.json")
}

/// The cache key history of the builds made with `store`: how each op was keyed and why
/// vertices missed the cache (what `kiln explain` shows).
pub fn load_history(store: &Store) -> History {
    match store.document(HISTORY_DOCUMENT) {
        Ok(Some(bytes)) => History::from_json(&bytes),
        Ok(None) => fs_err::read(legacy_history_file(store))
            .map_or_else(|_| History::default(), |b| History::from_json(&b)),
        Err(error) => {
            tracing::warn!(%error, "reading the cache key history");
            History::default()
        }
    }
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
            let Some(record) = store.cache_record(&id)? else {
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

    fn load_history(&self) -> History {
        load_history(&self.store)
    }

    fn save_history(&self, history: &mut History) {
        // Merged into the stored history under the database's lock: what other builds saved
        // meanwhile stays, and this build's entries are added.
        let legacy = legacy_history_file(&self.store);
        let saved = self.store.update_document(HISTORY_DOCUMENT, |stored| {
            let stored = match stored {
                Some(bytes) => History::from_json(bytes),
                None => fs_err::read(&legacy)
                    .map_or_else(|_| History::default(), |b| History::from_json(&b)),
            };
            history.merge_into(stored);
            (history.to_json(), ())
        });
        if let Err(error) = saved {
            tracing::warn!(%error, "saving the cache key history");
            return;
        }
        history.mark_saved();
        if let Err(error) = fs_err::remove_file(&legacy) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "removing the old cache key history file");
            }
        }
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

/// Makes a committed snapshot from the selected paths of a host directory (a local source).
/// Everything is owned by root, as BuildKit's local sources are.
fn snapshot_from_dir(
    store: &Store,
    dir: &Path,
    selected: &[local::Selected],
    prefix: &str,
) -> Result<Ref, OpError> {
    let active = new_snapshot_key("active");
    let mounts = store.prepare_upper(&active, None)?;
    let copied = copy_selected(dir, &mounts.upper, selected);
    if let Err(e) = copied {
        let _ = store.remove_snapshot(&active);
        return Err(e);
    }
    let key = new_snapshot_key(prefix);
    store.commit(&active, &key)?;
    Ok(Ref::snapshot(key))
}

/// Copies the selected paths (parents listed before children) from `src` to the empty `dest`.
/// Paths are the directory's own names, whatever their bytes.
fn copy_selected(src: &Path, dest: &Path, selected: &[local::Selected]) -> Result<(), OpError> {
    use crate::fileop::{CopyPaths, DeviceNodes};
    let owner = Some(crate::fileop::Owner { uid: 0, gid: 0 });
    let options = pb::FileActionCopy {
        mode: -1,
        follow_symlink: false,
        dir_copy_contents: true,
        create_dest_path: true,
        timestamp: -1,
        ..Default::default()
    };
    let mut done_dirs = std::collections::HashSet::new();
    for entry in selected {
        let rel = entry.path.as_path();
        if rel.ancestors().skip(1).any(|a| done_dirs.contains(a)) {
            continue; // copied with its directory
        }
        let path = Path::new("/").join(rel);
        if entry.is_dir {
            let all_below = selected
                .iter()
                .filter(|s| s.path.starts_with(rel) && s.path != entry.path)
                .count();
            if all_below == count_below(&src.join(rel))? {
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
                crate::fileop::copy_with(src, dest, paths, &options, owner, DeviceNodes::Create)?;
                done_dirs.insert(rel.to_owned());
                continue;
            }
            // Some of its contents are left out: the directory alone, then what is selected.
            let mode = std::os::unix::fs::MetadataExt::mode(&fs_err::metadata(src.join(rel))?);
            crate::fileop::mkdir_path(dest, &path, mode & 0o7777, true, owner, None)?;
            continue;
        }
        let paths = CopyPaths {
            src: &path,
            dest: &path,
        };
        crate::fileop::copy_with(src, dest, paths, &options, owner, DeviceNodes::Create)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use kiln_llb::{CopyOptions, FileAction, State};

    use super::*;
    use crate::history::MissReason;
    use crate::scheduler::Event;

    #[test]
    fn concurrent_history_saves_keep_every_entry() {
        let root = tempfile::tempdir().unwrap();
        // A history file of an older version is taken over.
        let mut legacy = History::default();
        legacy.next_generation();
        legacy.record_miss("legacy", MissReason::NoRecord);
        fs_err::write(root.path().join("cache-history.json"), legacy.to_json()).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let path = root.path().to_owned();
                std::thread::spawn(move || {
                    // Its own store on the same root, as another process would have.
                    let cache = StoreCache {
                        store: Arc::new(Store::open(path).unwrap()),
                    };
                    let mut history = cache.load_history();
                    for i in 0..40 {
                        history.next_generation();
                        history.record_miss(&format!("v{t}-{i}"), MissReason::NoRecord);
                        cache.save_history(&mut history);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let store = Store::open(root.path()).unwrap();
        let history = load_history(&store);
        for t in 0..2 {
            for i in 0..40 {
                assert!(
                    history.miss(&format!("v{t}-{i}")).is_some(),
                    "v{t}-{i} lost"
                );
            }
        }
        assert!(history.miss("legacy").is_some());
        assert!(!root.path().join("cache-history.json").exists());
    }

    /// Whether this process can make overlay mounts; says why not when it cannot.
    pub(super) fn can_mount(what: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("KILN_TEST_REQUIRE_ALL").is_none(),
            "{what} needs root"
        );
        #[expect(clippy::print_stderr, reason = "a skipped test says why")]
        {
            eprintln!("skipped: {what} needs root");
        }
        false
    }

    struct NoExec;
    impl Executor for NoExec {
        fn run(
            &self,
            _: crate::ExecRequest,
            _: crate::OutputSink,
        ) -> BoxFuture<'static, Result<crate::ExecStatus, OpError>> {
            async { Err("no exec in these tests".into()) }.boxed()
        }
    }

    #[derive(Default)]
    pub(super) struct Recorder(Mutex<Vec<Event>>);
    impl Reporter for Recorder {
        fn event(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }
    impl Recorder {
        /// The digest of the vertex that started with this name.
        fn digest(&self, name: &str) -> Arc<str> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .find_map(|e| match e {
                    Event::Started { vertex, name: n } if n == name => Some(vertex.clone()),
                    _ => None,
                })
                .unwrap()
        }

        pub(super) fn names(&self, cached: bool) -> Vec<String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter_map(|e| match e {
                    Event::Cached { name, .. } if cached => Some(name.clone()),
                    Event::Started { name, .. } if !cached => Some(name.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    pub(super) fn session(store: &Path, locals: &[(&str, &Path)]) -> Session {
        let mut config = config(store, &[]);
        config.locals = locals
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_path_buf()))
            .collect();
        Session::new(config, None)
    }

    /// A session configuration on the store at `store` with these secrets and no executor.
    pub(super) fn config(store: &Path, secrets: &[(&str, &str)]) -> SessionConfig {
        SessionConfig {
            store: Arc::new(Store::open(store).unwrap()),
            executor: Arc::new(NoExec),
            pull: kiln_cache::PullOptions::default(),
            locals: HashMap::new(),
            secrets: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            ssh: HashMap::new(),
            no_cache: false,
            entitlements: Default::default(),
        }
    }

    /// A Definition of `op` alone (it has no inputs), with `metadata` for it.
    pub(super) fn definition(op: pb::Op, metadata: Option<pb::OpMetadata>) -> LoadedDefinition {
        let digest = kiln_llb::op_digest(&op);
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: digest.to_string(),
                index: 0,
            }],
            ..Default::default()
        };
        LoadedDefinition::from_definition(pb::Definition {
            def: vec![kiln_llb::marshal_op(&op), kiln_llb::marshal_op(&terminal)],
            metadata: metadata
                .map(|m| (digest.to_string(), m))
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    pub(super) async fn solve(session: &Session, state: &State, recorder: &Arc<Recorder>) -> Ref {
        let bytes = kiln_llb::prost::Message::encode_to_vec(&state.marshal());
        let definition = LoadedDefinition::from_bytes(&bytes).unwrap();
        session.solve(&definition, recorder.clone()).await.unwrap()
    }

    /// The files of a result: path to content (directories as `/`).
    pub(super) fn tree(session: &Session, result: &Ref) -> BTreeMap<String, String> {
        let store = &session.config().store;
        store
            .with_snapshot(result.key(), |root| {
                let mut files = BTreeMap::new();
                let mut stack = vec![root.to_owned()];
                while let Some(dir) = stack.pop() {
                    for entry in fs_err::read_dir(&dir).unwrap() {
                        let path = entry.unwrap().path();
                        let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                        if path.is_dir() {
                            files.insert(format!("{rel}/"), String::new());
                            stack.push(path);
                        } else {
                            files.insert(rel.into_owned(), fs_err::read_to_string(&path).unwrap());
                        }
                    }
                }
                files
            })
            .unwrap()
    }

    fn copy_a(local: &State) -> State {
        kiln_llb::scratch().file(FileAction::copy(local, "/a", "/a", CopyOptions::default()))
    }

    #[tokio::test]
    async fn the_same_files_under_another_definition_hit_and_changes_have_reasons() {
        if !can_mount("solving file ops") {
            return;
        }
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join("a"), "alpha").unwrap();
        fs_err::write(context.path().join("b"), "beta").unwrap();
        let ctx = context.path();

        let first = session(store.path(), &[("one", ctx)]);
        let recorder = Arc::new(Recorder::default());
        let one = copy_a(&kiln_llb::local("one"));
        let result = solve(&first, &one, &recorder).await;
        assert_eq!(tree(&first, &result)["a"], "alpha");
        assert_eq!(
            recorder.names(false).len(),
            2,
            "the source and the copy ran"
        );

        // Another process, the same directory under another name (another definition):
        // the copy is found by its content-based key, and the directory is not even copied.
        let second = session(store.path(), &[("two", ctx)]);
        let recorder = Arc::new(Recorder::default());
        let two = copy_a(&kiln_llb::local("two"));
        let again = solve(&second, &two, &recorder).await;
        assert_eq!(recorder.names(false), Vec::<String>::new());
        assert_eq!(recorder.names(true).len(), 1);
        assert_eq!(again, result);

        // An unrelated file changes: the source runs again (and says which file changed),
        // the copy is found by a checksum of exactly the file it copies.
        fs_err::write(context.path().join("b"), "BETA").unwrap();
        let third = session(store.path(), &[("two", ctx)]);
        let recorder = Arc::new(Recorder::default());
        solve(&third, &two, &recorder).await;
        assert_eq!(recorder.names(false), ["local://two"]);
        assert_eq!(recorder.names(true).len(), 1, "the copy");
        let history = load_history(&third.config().store);
        let reasons: Vec<&MissReason> = history.misses().values().map(|m| &m.reason).collect();
        assert!(
            matches!(reasons[..], [MissReason::ContentChanged { file: Some(f), old, new }]
                if f == "b" && old != new),
            "{reasons:?}"
        );

        // The copied file changes: both run, and the copy says its input changed.
        fs_err::write(context.path().join("a"), "ALPHA").unwrap();
        let fourth = session(store.path(), &[("two", ctx)]);
        let recorder = Arc::new(Recorder::default());
        let result = solve(&fourth, &two, &recorder).await;
        assert_eq!(tree(&fourth, &result)["a"], "ALPHA");
        assert_eq!(recorder.names(false).len(), 2);
        let history = load_history(&fourth.config().store);
        let reasons: Vec<&MissReason> = history.misses().values().map(|m| &m.reason).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons.iter().any(|r| matches!(r,
                MissReason::ContentChanged { file: Some(f), .. } if f == "a")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| matches!(r,
                MissReason::InputChanged { input: 0, vertex, .. } if **vertex == *recorder.digest("local://two"))),
            "{reasons:?}"
        );
    }
}
