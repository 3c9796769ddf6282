//! kiln-solver: schedules an LLB graph in parallel and never runs the same work twice.
//!
//! The core is [`Scheduler`], generic over an [`Op`] and its result type, with no knowledge of
//! LLB op kinds: it computes cache keys ([`CacheMap`]: an op digest plus its inputs' keys or
//! content digests), looks them up in a [`CacheStore`], runs what is missing with bounded
//! parallelism, shares equal vertices between concurrent solves, and reports progress as
//! [`Event`]s to a [`Reporter`]. Each vertex has a definition-based key and content-based
//! keys (a source's content, the paths a copy reads), and a hit on any of them counts; why a
//! vertex missed is kept as a [`MissReason`] in the key [`History`]. The LLB op implementations (image and local sources, exec,
//! file, merge, diff) sit beside it in [`Session`] and reach the process runtime through the
//! [`Executor`] trait owned here, which `cli` adapts to `kiln-runner`. Data path: an `llb`
//! Definition in, snapshots in `kiln-cache` out.
//!
//! Where new code goes: the scheduler (`scheduler/`) knows no LLB op: a new LLB op or source is
//! an `Op` implementation under `llbsolver/` (`exec/`, `file.rs` with `fileop/`, `merge.rs`,
//! `source.rs`, `git.rs`, `http.rs`, `local.rs`), and each field it reads gets its decision in
//! `llbsolver/validate.rs`. Failures are [`Error`] variants (`error.rs`). Execution goes through
//! the [`Executor`] seam, which the CLI implements; results are snapshot keys, which the solver
//! never exports.
//!
//! ```
//! use std::sync::Arc;
//! use futures::future::{BoxFuture, FutureExt};
//! use kiln_solver::{CacheMap, Edge, Graph, NoReporter, Op, OpContext, OpError, Scheduler, Vertex};
//!
//! struct Const(u64);
//! impl Op<u64> for Const {
//!     fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<u64>, OpError>> {
//!         let digest = format!("const:{}", self.0);
//!         async move { Ok(CacheMap { digest, deps: vec![], lineage: None }) }.boxed()
//!     }
//!     fn exec(&self, _: OpContext, _: Vec<u64>) -> BoxFuture<'static, Result<Vec<u64>, OpError>> {
//!         let v = self.0;
//!         async move { Ok(vec![v]) }.boxed()
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut graph = Graph::new();
//! graph.add(Vertex {
//!     digest: "a".into(),
//!     name: "const 7".into(),
//!     inputs: vec![],
//!     op: Arc::new(Const(7)),
//!     ignore_cache: false,
//! });
//! let scheduler = Scheduler::builder().build();
//! let target = Edge { vertex: "a".into(), output: 0 };
//! let result = scheduler.solve(Arc::new(graph), target, Arc::new(NoReporter)).await.unwrap();
//! assert_eq!(result, 7);
//! # });
//! ```

mod cache_key;
mod error;
mod executor;
mod history;
mod lines;
mod llbsolver;
mod record;
mod scheduler;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cache_key::CacheKey;
pub use error::{BuildError, Error, InputOf, LlbError, SelectError};
pub use executor::{
    Entitlements, ExecControl, ExecIo, ExecMount, ExecNetwork, ExecRequest, ExecRootfs,
    ExecSecurity, ExecStatus, ExecUlimit, Executor, OutputSink, RunningContainer,
};
pub use history::{
    DefinitionChange, Fact, FileChange, History, Lineage, MissReason, MissRecord, Outline,
};
pub use lines::OutputLines;
pub use llbsolver::fileop::{
    FileError, Owner, copy, filepath_match, mkdir, mkfile, resolve_owner, rm, symlink,
};
pub use llbsolver::{
    Container, GitMeta, HttpMeta, LocalDirs, LocalRequest, Ref, Session, SessionConfig, SourceMeta,
    load_history,
};
pub use record::{
    BuildRecord, BuildStatus, PhaseRecord, Recorder, StepRecord, StepStatus, millis, new_build_id,
};

pub use scheduler::{
    CacheDep, CacheMap, CacheStore, ContentDigestFn, Edge, Event, Graph, NoCache, NoReporter, Op,
    OpContext, OpError, Phase, Reporter, ResourceClass, Scheduler, SchedulerBuilder, SharedWork,
    SolveError, SolvedGraph, SolvedVertex, SourceContent, Vertex,
};
