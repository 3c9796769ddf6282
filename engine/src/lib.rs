//! kiln-engine: the in-process build wiring that every front door of kiln shares.
//!
//! The library crates meet through traits owned by their callers; this crate backs them:
//! the solver's [`Executor`](kiln_solver::Executor) with kiln-runner ([`RunnerExecutor`],
//! per-run state under [`RUNNER_STATE`]), the frontend's
//! [`ImageMetaResolver`](kiln_frontend::ImageMetaResolver) with the content store
//! ([`StoreResolver`]), writes a solved [`Ref`](kiln_solver::Ref) to its outputs
//! ([`export`]) with the attestations a build asked for ([`attestations`], from what it says
//! of its request and its record), and opens and writes BuildKit's remote cache
//! ([`open_cache_imports`], [`export_cache`], [`add_inline_cache`]). Data path: frontend →
//! llb → solver → exporters, wired here once for every front door (the CLI's `kiln build`,
//! kiln-daemon's `Solve`).
//!
//! Where new code goes: wiring that every front door needs (a library's trait backed by
//! another library, an output or cache destination both `kiln build` and `kiln daemon` offer),
//! one module per concern beside `executor.rs`, `resolver.rs`, `export.rs`, `attest.rs` and
//! `cache.rs`; a command's own flags and rendering stay in `cli`, the gRPC side in
//! kiln-daemon.
//!
//! ```no_run
//! let executor = kiln_engine::executor(kiln_engine::RUNNER_STATE.into());
//! # drop(executor);
//! ```

mod attest;
mod cache;
mod error;
mod executor;
mod export;
mod resolver;

pub use attest::attestations;
pub use cache::{add_inline_cache, export_cache, is_inline, open_cache_imports};
pub use error::Error;
pub use executor::{
    NETWORK_STATE, RUNNER_STATE, RunnerExecutor, default_network, emulator, executor, runnable,
};
pub use export::{export, export_platforms_inline, realize_results};
pub use resolver::StoreResolver;
