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

mod caps;
mod client;
mod container;
mod errors;
mod exec;
mod files;
mod returned;
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
pub(crate) use exec::ExecStream;
#[cfg(test)]
pub(crate) use exec::tests as exec_tests;
pub use service::frontend_option_env;
pub(crate) use service::{Bridge, Returned};

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
    /// The client session its local sources come from (`BUILDKIT_SESSION_ID`, which the
    /// frontend writes into them); `None` for a build without one (the locals are the
    /// builder's own).
    pub session_id: Option<String>,
    /// How many frontends forwarded to this one (`Solve` with `gateway.v0`).
    depth: usize,
}

/// Frontends may forward to frontends (a `# syntax=` line read by a frontend image) at most
/// this deep: a frontend forwarding to itself ends here.
pub(crate) const MAX_FRONTEND_DEPTH: usize = 4;

/// The build argument that names a frontend image, as BuildKit's.
pub const SYNTAX_ARG: &str = "BUILDKIT_SYNTAX";

/// A frontend image a build asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    /// The image reference.
    pub image: String,
    /// The whole `syntax` value (the image, then the frontend's own arguments); `None` for a
    /// frontend named by `gateway.v0` with `source=IMAGE`.
    pub cmdline: Option<String>,
}

impl Syntax {
    /// The frontend image a build file asks for: the `BUILDKIT_SYNTAX` build argument wins
    /// over the file's `syntax` directive, as in BuildKit.
    pub fn of(build_args: &BTreeMap<String, String>, file: &[u8]) -> Option<Self> {
        let cmdline = match build_args.get(SYNTAX_ARG) {
            Some(value) => value.trim().to_owned(),
            None => kiln_frontend::detect_syntax(file)?.value,
        };
        let image = cmdline.split_whitespace().next()?.to_owned();
        Some(Self {
            image,
            cmdline: Some(cmdline),
        })
    }

    /// Whether the image is BuildKit's stock Dockerfile frontend (`docker/dockerfile`, any
    /// tag or digest), which the built-in frontend stands in for when it cannot be pulled.
    pub fn is_stock_dockerfile(&self) -> bool {
        let normalized = kiln_llb::normalize_image_ref(&self.image);
        let name = normalized.split('@').next().unwrap_or_default();
        let name = match name.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => name,
        };
        name == "docker.io/docker/dockerfile"
    }

    /// The frontend to run for this syntax with the options `attrs`: told it was chosen (as
    /// BuildKit forwards a `# syntax=` build, so that it does not forward again).
    pub fn frontend(&self, attrs: BTreeMap<String, String>) -> GatewayFrontend {
        let mut frontend = GatewayFrontend::new(&self.image);
        frontend.options = attrs;
        if let Some(cmdline) = &self.cmdline {
            frontend
                .options
                .insert("cmdline".to_owned(), cmdline.clone());
        }
        frontend
            .options
            .insert("source".to_owned(), self.image.clone());
        frontend
    }
}

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

impl FrontendResult {
    /// The result as the built-in frontend gives one: its Definition (empty for the empty
    /// file system) and its image configuration (an empty one if it returned none).
    pub fn into_converted(self) -> Result<kiln_frontend::Converted, String> {
        let config = match &self.config {
            Some(bytes) => {
                serde_json::from_slice(bytes).map_err(|e| format!("invalid image config: {e}"))?
            }
            None => kiln_frontend::ImageConfig::default(),
        };
        Ok(kiln_frontend::Converted {
            definition: self.definition.unwrap_or_default(),
            config,
            // A frontend image's warnings come with its result (`warnings`), shown as it sends them.
            warnings: Vec::new(),
        })
    }
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
            session_id: None,
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
    /// Told when the connection is dropped (it ended).
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for PipeConn {
    fn drop(&mut self) {
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

impl PipeConn {
    /// The pipes' read end `output` and write end `input`, made non-blocking.
    pub(crate) fn new(output: OwnedFd, input: OwnedFd) -> std::io::Result<Self> {
        Ok(Self {
            output: pipe::Receiver::from_owned_fd(output)?,
            input: pipe::Sender::from_owned_fd(input)?,
            closed: None,
        })
    }

    /// Sends on `closed` when the connection is dropped.
    pub(crate) fn on_close(mut self, closed: tokio::sync::oneshot::Sender<()>) -> Self {
        self.closed = Some(closed);
        self
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_argument_wins_over_the_directive() {
        let file = b"# syntax=docker/dockerfile:1.7 --flag\nFROM busybox\n";
        assert_eq!(
            Syntax::of(&BTreeMap::new(), file),
            Some(Syntax {
                image: "docker/dockerfile:1.7".to_owned(),
                cmdline: Some("docker/dockerfile:1.7 --flag".to_owned()),
            })
        );
        let args = BTreeMap::from([(SYNTAX_ARG.to_owned(), " reg/fe:2 ".to_owned())]);
        assert_eq!(
            Syntax::of(&args, file).map(|s| s.image),
            Some("reg/fe:2".to_owned())
        );
        assert_eq!(Syntax::of(&BTreeMap::new(), b"FROM busybox\n"), None);
        let empty = BTreeMap::from([(SYNTAX_ARG.to_owned(), "  ".to_owned())]);
        assert_eq!(Syntax::of(&empty, file), None);
        let frontend = Syntax::of(&BTreeMap::new(), file)
            .unwrap()
            .frontend(BTreeMap::from([("target".to_owned(), "app".to_owned())]));
        assert_eq!(frontend.source, "docker/dockerfile:1.7");
        assert_eq!(frontend.options["cmdline"], "docker/dockerfile:1.7 --flag");
        assert_eq!(frontend.options["source"], "docker/dockerfile:1.7");
        assert_eq!(frontend.options["target"], "app");
    }

    #[test]
    fn the_stock_frontend_is_known_by_any_spelling() {
        let stock = |image: &str| {
            Syntax {
                image: image.to_owned(),
                cmdline: None,
            }
            .is_stock_dockerfile()
        };
        for image in [
            "docker/dockerfile",
            "docker/dockerfile:1",
            "docker.io/docker/dockerfile:1.7-labs",
            "docker/dockerfile@sha256:0e49dff8ac8ed9eb3d7788808095d032a0311807d6c24fdf138edffbc22ce8ea",
        ] {
            assert!(stock(image), "{image}");
        }
        for image in [
            "docker/dockerfile-upstream:1",
            "127.0.0.1:5000/docker/dockerfile:1",
            "example/dockerfile:1",
        ] {
            assert!(!stock(image), "{image}");
        }
    }
}
