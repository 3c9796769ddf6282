//! kiln-daemon: `kiln daemon`, a build service that speaks BuildKit's control API over gRPC, so
//! that BuildKit's own clients (`buildctl`, buildx's `remote` driver) drive kiln.
//!
//! Principal types: [`Daemon`] (the store, registry settings and executor a daemon builds
//! with), [`Address`] (where it listens: unix sockets, TCP with mutual TLS from [`TlsFiles`], or a
//! passed socket). [`Daemon::serve`] serves the `Control` service
//! (`moby.buildkit.v1.Control`: `ListWorkers`, `Info`, `DiskUsage`, `Prune`, `Solve`,
//! `Status`, `Session`) until a shutdown future resolves; [`shutdown_signal`] is the usual one
//! (SIGTERM or SIGINT).
//!
//! A frontend image (`# syntax=IMAGE`, `gateway.v0`) runs with the gateway API, `LLBBridge`,
//! served to it (`bridge`), and `kiln gateway-frontend` is kiln's own frontend as such an
//! image, the client side. `buildctl build` runs its build function as a gateway client on
//! the control socket: its calls go to the same bridge, made for its build (`gateway` routes
//! each call by the build it names), and the `Control.Solve` of that build exports what the
//! function returned.
//!
//! Place in the data path: a client's `Solve` carries an LLB Definition; the daemon solves it
//! with kiln-solver (backed by kiln-engine's runner executor) and exports the result with
//! kiln-engine's `export`, streaming the solver's progress events to the client's `Status`
//! call, with the attestations its `attest:provenance` / `attest:sbom` attributes ask for
//! (read by kiln-exporters as `kiln build`'s flags are). Nothing here builds by itself: it is
//! another front door beside the CLI.
//!
//! [`Client`] is the other end, kiln's own client (`kiln --host unix:///PATH build`): it runs
//! a [`BuildRequest`] in a daemon through `Control.Solve`, serving the build's directories,
//! secrets, SSH agents and returned exports on its session as BuildKit's clients do, and turns
//! `Control.Status` back into the solver's progress events.
//!
//! The protobuf messages and stubs in `pb` are generated from `proto/` (our own text,
//! wire-compatible with BuildKit's) and checked in; `tests/codegen.rs` regenerates them.
//!
//! Where new code goes: a call of BuildKit's control API into `control.rs` (its messages into
//! `proto/`, regenerated into `pb/`); a service the client serves through its session (its
//! files, secrets, SSH agents, exports sent back) in a module of its own beside `filesync.rs`,
//! `secrets.rs`, `sshforward.rs` and `filesend.rs`, called over `session.rs`'s
//! `ClientSession`, and its serving side for kiln's own client in `client/attachables.rs`; what frontend images are served and how they run into `bridge/`; the
//! built-in Dockerfile frontend's options into `frontend.rs`. Build wiring that `kiln build`
//! shares goes into kiln-engine, not here.
//!
//! ```no_run
//! # async fn serve() -> Result<(), kiln_daemon::Error> {
//! let address: kiln_daemon::Address = "unix:///run/kiln/kiln.sock".parse()?;
//! let daemon = kiln_daemon::Daemon::open("/var/lib/kiln", kiln_cache::Config::default())?;
//! daemon.serve(&address, kiln_daemon::shutdown_signal()).await
//! # }
//! ```

mod auth;
mod bridge;
mod client;
mod content;
mod control;
mod error;
mod filesend;
mod filesync;
mod frontend;
mod gateway;
mod lint;
mod locals;
mod pb;
mod secrets;
mod server;
mod session;
mod sshforward;
mod status;
#[cfg(test)]
mod tests;

pub use bridge::{
    FrontendError, FrontendResult, GatewayFrontend, IMAGE_CONFIG_KEY, SYNTAX_ARG, Syntax,
    frontend_option_env, serve_builtin_frontend,
};
pub use client::{
    BuildRequest, Client, ClientError, Export, ExportTarget, Host, PruneOptions, UsageRecord,
    WorkerRecord,
};
pub use error::Error;
pub use frontend::frontend_attrs;
pub use server::{Address, Daemon, Listener, MAX_MESSAGE_SIZE, TlsFiles, shutdown_signal};
