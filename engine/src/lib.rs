//! kiln-engine: the in-process build wiring that every front door of kiln shares.
//!
//! The library crates meet through traits owned by their callers; this crate backs them:
//! the solver's [`Executor`](kiln_solver::Executor) with kiln-runner ([`RunnerExecutor`],
//! per-run state under [`RUNNER_STATE`]), the frontend's
//! [`ImageMetaResolver`](kiln_frontend::ImageMetaResolver) with the content store
//! ([`StoreResolver`]), and writes a solved [`Ref`](kiln_solver::Ref) to its outputs
//! ([`export`]). Data path: frontend → llb → solver → exporters, wired here once for every
//! front door (the CLI's `kiln build` today, a build service's `Solve` next).
//!
//! Where new code goes: wiring that every front door needs; a command's own flags and
//! rendering stay in `cli`.
//!
//! ```no_run
//! let executor = kiln_engine::executor(kiln_engine::RUNNER_STATE.into());
//! # drop(executor);
//! ```

mod cache;
mod error;
mod executor;
mod export;
mod resolver;

pub use cache::{add_inline_cache, export_cache, is_inline, open_cache_imports};
pub use error::Error;
pub use executor::{RUNNER_STATE, RunnerExecutor, executor};
pub use export::{export, export_platforms};
pub use resolver::StoreResolver;
