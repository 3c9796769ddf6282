//! Frontend images (`# syntax=IMAGE`, BuildKit's `gateway.v0`): kiln runs the image in its
//! sandbox and serves it BuildKit's gateway API, `LLBBridge`, over the container's standard
//! input and output, as BuildKit does. The frontend solves Definitions through the build's
//! own solver session (`Solve`, lazily, `Evaluate` to force), reads the files of their results
//! (`ReadFile`, `ReadDir`, `StatFile`), resolves image configurations, and `Return`s its
//! result: a Definition with its image configuration, which the caller then solves and
//! exports as it would the built-in frontend's.
//!
//! The frontend is untrusted: it runs with the runner's sandbox (seccomp, capabilities,
//! masked paths), without network unless the build allows the host network and the image
//! does not ask for none, and with bounded messages and refs; a frontend that exits without
//! returning is an error with the end of what it wrote to stderr.
//!
//! ```no_run
//! # async fn run(session: std::sync::Arc<kiln_solver::Session>) -> Result<(), kiln_daemon::FrontendError> {
//! let frontend = kiln_daemon::GatewayFrontend::new("docker/dockerfile:1");
//! let result = frontend.run(session, std::sync::Arc::new(kiln_solver::NoReporter)).await?;
//! println!("{} bytes of image config", result.config.map_or(0, |c| c.len()));
//! # Ok(())
//! # }
//! ```

mod client;
mod container;
mod errors;
mod files;
mod service;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use kiln_llb::pb::{Definition, Platform};
use kiln_solver::{Reporter, Session};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

pub use client::serve_builtin_frontend;
pub use container::FrontendError;
pub use service::frontend_option_env;

/// The metadata key of the image configuration in a frontend's result.
pub const IMAGE_CONFIG_KEY: &str = "containerimage.config";

/// A frontend image to run.
#[derive(Debug, Clone)]
pub struct GatewayFrontend {
    /// The image reference (`docker/dockerfile:1`).
    pub source: String,
    /// The options it gets (`BUILDKIT_FRONTEND_OPT_n=KEY=VALUE`): `filename`, `target`,
    /// `build-arg:NAME`, ... as BuildKit's clients send them.
    pub options: BTreeMap<String, String>,
    /// Definitions given to the frontend as inputs (`Inputs`), by name.
    pub inputs: HashMap<String, Definition>,
    /// The platform it builds for.
    pub platform: Platform,
    /// How many frontends forwarded to this one (`Solve` with `gateway.v0`).
    depth: usize,
}

/// Frontends may forward to frontends (a `# syntax=` line read by a frontend image) at most
/// this deep: a frontend forwarding to itself ends here.
pub(crate) const MAX_FRONTEND_DEPTH: usize = 4;

/// What a frontend returned.
#[derive(Debug, Clone, Default)]
pub struct FrontendResult {
    /// The result's Definition; `None` for the empty file system.
    pub definition: Option<Definition>,
    /// The image configuration (`containerimage.config`), if the frontend made one.
    pub config: Option<Vec<u8>>,
    /// All of the result's metadata.
    pub metadata: HashMap<String, Vec<u8>>,
    /// The warnings the frontend sent (`file:line: text` where it named a place).
    pub warnings: Vec<String>,
}

impl GatewayFrontend {
    /// The frontend `source`, without options, building for linux/amd64.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            options: BTreeMap::new(),
            inputs: HashMap::new(),
            platform: Platform {
                os: "linux".to_owned(),
                architecture: "amd64".to_owned(),
                ..Platform::default()
            },
            depth: 0,
        }
    }

    /// Pulls the frontend image, runs it against `session` until it returns, and gives its
    /// result. The frontend's own solves report to `reporter`.
    pub async fn run(
        &self,
        session: Arc<Session>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<FrontendResult, FrontendError> {
        container::run(self, session, reporter).await
    }
}

/// Two pipes as one connection: what the other side writes is read from `output`, what this
/// side writes goes to `input` (a frontend's standard output and input).
pub(crate) struct PipeConn {
    output: pipe::Receiver,
    input: pipe::Sender,
}

impl PipeConn {
    /// The pipes' read end `output` and write end `input`, made non-blocking.
    pub(crate) fn new(output: OwnedFd, input: OwnedFd) -> std::io::Result<Self> {
        Ok(Self {
            output: pipe::Receiver::from_owned_fd(output)?,
            input: pipe::Sender::from_owned_fd(input)?,
        })
    }
}

impl AsyncRead for PipeConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.output).poll_read(cx, buf)
    }
}

impl AsyncWrite for PipeConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.input).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.input).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.input).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for PipeConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}
