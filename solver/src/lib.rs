//! kiln-solver: schedules an LLB graph in parallel and never runs the same work twice.
//!
//! It will own the scheduler (generic over an `Op` and its `CacheMap`, with no knowledge of LLB
//! op kinds), the LLB op implementations (source, exec, file, merge, diff), cache keys (op digest,
//! inputs' keys and content checksums of local files) and progress events emitted through a
//! `Reporter` trait. It reaches the process runtime through an `Executor` trait it owns; `cli`
//! adapts `kiln-runner` to it. Data path: `llb` Definition in, snapshots in `kiln-cache` out.
