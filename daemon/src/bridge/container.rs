//! Running a frontend image: its file system, its environment, the gRPC server on its
//! standard input and output, and what it returned.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;
use kiln_runner::{ExitStatus, Handle, NetworkMode, Rootfs, Runner, Spec, Stdio};
use kiln_solver::{Event, Reporter, Session};

use super::service::{Bridge, Returned, frontend_option_env};
use super::{FrontendResult, GatewayFrontend, IMAGE_CONFIG_KEY, PipeConn};
use crate::pb::gateway::llb_bridge_server::LlbBridgeServer;

/// Where BuildKit mounts a frontend's own Definition.
const METADATA_MOUNT: &str = "/run/config/buildkit/metadata/frontend.bin";

/// The label by which a frontend image asks for no network.
const NETWORK_NONE_LABEL: &str = "moby.buildkit.frontend.network.none";

/// The largest gRPC message either side may send (Definitions and file reads).
const MAX_MESSAGE: usize = 32 << 20;

/// How long a frontend whose connection ended may take to exit before it is killed.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How much of a frontend's stderr is kept for an error message.
const STDERR_TAIL: usize = 4 << 10;

/// Why a frontend image gave no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontendError {
    /// The image could not be pulled.
    #[error("failed to resolve frontend image {image}")]
    Pull {
        /// The image reference.
        image: String,
        /// Why.
        #[source]
        source: kiln_cache::Error,
    },
    /// The image's configuration could not be read.
    #[error("frontend image {image}: invalid image config: {message}")]
    Config {
        /// The image reference.
        image: String,
        /// Why.
        message: String,
    },
    /// The store could not give the frontend its file system.
    #[error("preparing the file system of frontend {image}")]
    Store {
        /// The image reference.
        image: String,
        /// Why.
        #[source]
        source: kiln_cache::Error,
    },
    /// The pipes to the frontend could not be made.
    #[error("connecting to frontend {image}")]
    Pipe {
        /// The image reference.
        image: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The container could not run.
    #[error("running frontend {image}")]
    Run {
        /// The image reference.
        image: String,
        /// Why.
        #[source]
        source: kiln_runner::Error,
    },
    /// The frontend ended without returning a result.
    #[error("frontend {image} exited without returning a result ({status}){stderr}")]
    NoResult {
        /// The image reference.
        image: String,
        /// How it ended.
        status: String,
        /// The end of its stderr, on lines of its own (empty if it wrote none).
        stderr: String,
    },
    /// The frontend returned a result, but its process then failed.
    #[error("frontend {image} failed after returning its result ({status}){stderr}")]
    Failed {
        /// The image reference.
        image: String,
        /// How it ended.
        status: String,
        /// The end of its stderr, on lines of its own (empty if it wrote none).
        stderr: String,
    },
    /// The frontend returned an error: its text, under the source lines it named.
    #[error("{message}")]
    Returned {
        /// The frontend's message.
        message: String,
    },
}

impl FrontendError {
    /// Whether the image could not be had at all (as opposed to failing when run).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Pull { .. })
    }
}

/// The frontend's stderr: its end kept for the error of a frontend that returns nothing, the
/// rest logged at debug level (as BuildKit, which leaves it to the daemon's log: frontends
/// print their errors there with Go stack traces, and return them to the build).
struct Stderr {
    tail: Arc<Mutex<Vec<u8>>>,
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        tracing::debug!(output = %String::from_utf8_lossy(buf), "frontend stderr");
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        tail.extend_from_slice(buf);
        let excess = tail.len().saturating_sub(STDERR_TAIL);
        tail.drain(..excess);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Removes the frontend's writable snapshot when the run ends, however it ends.
struct Snapshot {
    store: Arc<kiln_cache::Store>,
    key: String,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Err(error) = self.store.remove_snapshot(&self.key) {
            tracing::warn!(key = self.key, %error, "removing a frontend's file system");
        }
    }
}

fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

pub(super) async fn run(
    frontend: &GatewayFrontend,
    session: Arc<Session>,
    reporter: Arc<dyn Reporter>,
) -> Result<FrontendResult, FrontendError> {
    let image = frontend.source.clone();
    let config = session.config().clone();
    // The frontend runs at once: its image's layers are fetched now.
    let pull = kiln_cache::PullOptions {
        os: frontend.platform.os.clone(),
        architecture: frontend.platform.architecture.clone(),
        lazy: false,
        ..config.pull.clone()
    };
    // A vertex of its own per frontend run (a frontend may forward to the same image).
    let vertex: Arc<str> = format!("frontend:{:016x}:{image}", fastrand::u64(..)).into();
    let name = format!("[frontend] {image}");
    reporter.event(Event::Started {
        vertex: vertex.clone(),
        name: name.clone(),
    });
    let started = std::time::Instant::now();
    let outcome = run_container(frontend, &session, &reporter, &pull).await;
    reporter.event(match &outcome {
        Ok(_) => Event::Completed {
            vertex,
            name,
            duration: started.elapsed(),
        },
        Err(error) => Event::Failed {
            vertex,
            name,
            error: error.to_string(),
        },
    });
    outcome
}

async fn run_container(
    frontend: &GatewayFrontend,
    session: &Arc<Session>,
    reporter: &Arc<dyn Reporter>,
    pull: &kiln_cache::PullOptions,
) -> Result<FrontendResult, FrontendError> {
    let image = frontend.source.clone();
    let store = session.config().store.clone();
    // Pulled on a blocking thread: the pull's future is not `Send` for every lifetime, which a
    // frontend forwarding to another one (inside a boxed gRPC handler) would need.
    let pulled = tokio::task::spawn_blocking({
        let (store, image, pull) = (store.clone(), image.clone(), pull.clone());
        move || {
            tokio::runtime::Handle::current().block_on(kiln_cache::pull(store, &image, &pull, &()))
        }
    })
    .await
    .map_err(|join| FrontendError::Pipe {
        image: image.clone(),
        source: std::io::Error::other(join.to_string()),
    })?
    .map_err(|source| FrontendError::Pull {
        image: image.clone(),
        source,
    })?;
    let image_config: kiln_frontend::ImageConfig = store
        .read_blob(&pulled.image.config)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|message| FrontendError::Config {
            image: image.clone(),
            message,
        })?;
    let store_error = |source| FrontendError::Store {
        image: image.clone(),
        source,
    };
    let _lease = store.lease().map_err(store_error)?;
    let top = store.image_snapshot(&pulled.image).map_err(store_error)?;
    let snapshot = Snapshot {
        store: store.clone(),
        key: format!("frontend-{:016x}", fastrand::u64(..)),
    };
    let mounts = store
        .prepare(&snapshot.key, top.map(|t| t.to_string()).as_deref())
        .map_err(store_error)?;

    // The frontend's own Definition, where BuildKit puts it.
    let reference = if pulled.image.config_id {
        image.clone()
    } else {
        format!(
            "{}@{}",
            kiln_llb::normalize_image_ref(&image),
            pulled.image.manifest
        )
    };
    let own_definition = kiln_llb::image_for(&reference, frontend.platform.clone()).marshal();
    let resolver = Arc::new(kiln_engine::StoreResolver::new(
        store.clone(),
        pull.clone(),
        tokio::runtime::Handle::current(),
    ));
    let bridge = Arc::new(Bridge::new(
        session.clone(),
        reporter.clone(),
        frontend.inputs.clone(),
        frontend.platform.clone(),
        frontend.depth,
        frontend.session_id.clone(),
        resolver,
    ));

    let cfg = &image_config.config;
    let mut env = cfg.env.clone();
    env.extend(frontend_option_env(&frontend.options));
    let session_id = frontend
        .session_id
        .clone()
        .unwrap_or_else(|| format!("kiln-{:016x}", fastrand::u64(..)));
    env.push(format!("BUILDKIT_SESSION_ID={session_id}"));
    let workers = serde_json::json!([{
        "ID": "kiln",
        "Labels": {},
        "Platforms": [{
            "os": frontend.platform.os,
            "architecture": frontend.platform.architecture,
        }],
    }]);
    env.push(format!("BUILDKIT_WORKERS={workers}"));
    env.push("BUILDKIT_EXPORTEDPRODUCT=kiln".to_owned());
    let args = cfg
        .entrypoint
        .clone()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| vec!["/run".to_owned()]);
    let mut spec = Spec::new(
        Rootfs::Overlay {
            lowers: mounts.lowers,
            upper: mounts.upper,
            work: mounts.work,
            readonly: false,
        },
        args,
    );
    spec.env = env;
    if !cfg.working_dir.is_empty() {
        spec.cwd = cfg.working_dir.clone().into();
    }
    // No network, unless the build may use the host's and the image does not refuse it.
    let refuses = cfg
        .labels
        .get(NETWORK_NONE_LABEL)
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "T" | "TRUE" | "True"));
    spec.network = if session.config().entitlements.network_host && !refuses {
        NetworkMode::Host
    } else {
        NetworkMode::None
    };
    spec.mounts.push(kiln_runner::Mount::Secret {
        target: METADATA_MOUNT.into(),
        data: kiln_llb::prost::Message::encode_to_vec(&own_definition),
        mode: 0o400,
        uid: 0,
        gid: 0,
    });

    let pipe_error = |source| FrontendError::Pipe {
        image: image.clone(),
        source,
    };
    let (stdin_read, stdin_write) = pipe_pair().map_err(pipe_error)?;
    let (stdout_read, stdout_write) = pipe_pair().map_err(pipe_error)?;
    spec.stdio = Stdio::CapturedWithInput(stdin_read);
    let (on_close, closed) = tokio::sync::oneshot::channel();
    let conn = PipeConn::new(stdout_read, stdin_write)
        .map_err(pipe_error)?
        .on_close(on_close);
    let service = LlbBridgeServer::new(bridge.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    // One connection, and the server stays up until it is aborted below (an ended stream of
    // connections would make it shut the connection down).
    let incoming = futures::stream::once(async { Ok::<_, std::io::Error>(conn) })
        .chain(futures::stream::pending());
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(incoming);
    let server = crate::filesync::AbortOnDrop(tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::debug!(%error, "the frontend's gRPC server ended");
        }
    }));

    let handle = Handle::new().map_err(|source| FrontendError::Run {
        image: image.clone(),
        source,
    })?;
    // A build that is dropped (cancelled) kills its frontend.
    let _cancel = handle.cancel_on_drop();
    let tail = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = Stderr { tail: tail.clone() };
    let watchdog = handle.clone();
    let mut ran = tokio::task::spawn_blocking(move || {
        let runner = Runner::new(kiln_engine::RUNNER_STATE);
        #[expect(
            clippy::disallowed_types,
            reason = "a pipe has no path to name in errors"
        )]
        let mut stdout = std::fs::File::from(stdout_write);
        runner.run(spec, &mut stdout, &mut stderr, &handle)
    });
    // A frontend whose connection ended (it closed its output, or sent what is not gRPC) has
    // a moment to exit, then is killed: it can no longer return anything.
    let mut killed = false;
    let ran = tokio::select! {
        ran = &mut ran => ran,
        _ = closed => match tokio::time::timeout(CLOSE_GRACE, &mut ran).await {
            Ok(ran) => ran,
            Err(_) => {
                killed = true;
                watchdog.cancel();
                ran.await
            }
        },
    };
    drop(server);
    let tail = || {
        let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim_end();
        if text.is_empty() {
            String::new()
        } else {
            format!(":\n{text}")
        }
    };
    // As BuildKit: an error the frontend returned comes first, then a failure of its process,
    // then the result it returned.
    let returned = bridge.returned();
    if let Some(Returned::Error(message)) = returned {
        return Err(FrontendError::Returned { message });
    }
    let status = match ran {
        Ok(Ok(ExitStatus::Code(0))) => None,
        Ok(Ok(ExitStatus::Code(code))) => Some(format!("exit code {code}")),
        Ok(Ok(ExitStatus::Signal(signal))) => Some(format!("killed by signal {signal}")),
        Ok(Err(kiln_runner::Error::Cancelled)) if killed => {
            Some("killed: its connection to the builder had ended".to_owned())
        }
        Ok(Err(source)) => {
            return Err(FrontendError::Run {
                image: image.clone(),
                source,
            });
        }
        Err(join) => {
            return Err(FrontendError::Pipe {
                image: image.clone(),
                source: std::io::Error::other(join.to_string()),
            });
        }
    };
    match (returned, status) {
        (Some(Returned::Result { .. }), Some(status)) => Err(FrontendError::Failed {
            image,
            status,
            stderr: tail(),
        }),
        (
            Some(Returned::Result {
                definition,
                mut metadata,
            }),
            None,
        ) => Ok(FrontendResult {
            definition,
            config: metadata.remove(IMAGE_CONFIG_KEY),
            metadata,
            warnings: bridge.warnings(),
        }),
        (_, status) => Err(FrontendError::NoResult {
            image,
            status: status.unwrap_or_else(|| "exit code 0".to_owned()),
            stderr: tail(),
        }),
    }
}
