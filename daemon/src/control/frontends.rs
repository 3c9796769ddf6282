//! What a request's frontend makes of it: the built-in Dockerfile frontend's conversion, the
//! result of a frontend image (`# syntax=`, `gateway.v0`), the build a gateway client
//! (`buildctl build`) returns on the control socket, and the build checks alone
//! (`requestid=frontend.lint`).

use std::collections::HashMap;
use std::sync::Arc;

use kiln_cache::PullOptions;
use kiln_llb::error_chain;
use kiln_solver::Session;
use tonic::Status;

use super::ControlService;
use crate::gateway::Build;
use crate::pb::control::{SolveRequest, SolveResponse};

impl ControlService {
    /// Converts `attrs` with the built-in Dockerfile frontend, reading the Dockerfile and its
    /// context through the client's session `session`.
    async fn convert(
        &self,
        session: &str,
        pull: &PullOptions,
        attrs: &HashMap<String, String>,
    ) -> Result<crate::frontend::Frontend<crate::frontend::ConvertedDockerfile>, Status> {
        // A session that is not there is the build's error, before any file is asked for.
        self.sessions.get(session).await?;
        let locals = crate::locals::SessionLocals::new(
            self.sessions.clone(),
            session.to_owned(),
            self.store.clone(),
        );
        crate::frontend::convert(self.store.clone(), pull.clone(), &locals, attrs).await
    }

    /// What the frontend `frontend` makes of `attrs`: the built-in Dockerfile frontend's
    /// conversion (with the Dockerfile it read), or the result of the frontend image it names
    /// (`# syntax=`, `gateway.v0`), which solves through a session of `frontend_session`.
    pub(super) async fn frontend_result(
        &self,
        request: &SolveRequest,
        frontend: &str,
        attrs: &HashMap<String, String>,
        pull: &PullOptions,
        progress: &Arc<crate::status::Progress>,
        frontend_session: impl Fn() -> Session,
    ) -> Result<(kiln_frontend::Converted, Option<Vec<u8>>), Status> {
        let syntax = match frontend {
            crate::frontend::DOCKERFILE => {
                match self.convert(&request.session, pull, attrs).await? {
                    crate::frontend::Frontend::Dockerfile((converted, dockerfile)) => {
                        Err((*converted, Some(dockerfile)))
                    }
                    crate::frontend::Frontend::Forward(syntax) => Ok(syntax),
                }
            }
            crate::frontend::GATEWAY => Ok(crate::bridge::Syntax {
                image: attrs
                    .get("source")
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .ok_or_else(|| Status::invalid_argument("no source specified for gateway"))?,
                cmdline: attrs.get("cmdline").cloned(),
            }),
            other => {
                return Err(Status::unimplemented(format!(
                    "frontend {other:?}: kiln has the built-in {} and {}",
                    crate::frontend::DOCKERFILE,
                    crate::frontend::GATEWAY
                )));
            }
        };
        let converted = match syntax {
            Err(converted) => converted,
            Ok(syntax) => {
                // The frontend image solves through a session of the build's own
                // (secrets are fetched for the Definition it returns).
                let session = Arc::new(frontend_session());
                let mut frontend = syntax.frontend(attrs.clone().into_iter().collect());
                frontend.session_id = Some(request.session.clone());
                if syntax.cmdline.is_none() {
                    frontend.options.remove("cmdline");
                }
                match frontend.run(session, progress.clone()).await {
                    Ok(result) => (
                        result.into_converted().map_err(|message| {
                            Status::unknown(format!("frontend {}: {message}", syntax.image))
                        })?,
                        None,
                    ),
                    Err(error) if error.is_unavailable() && syntax.is_stock_dockerfile() => {
                        tracing::warn!(
                            error = error_chain(&error),
                            "using the built-in Dockerfile frontend instead"
                        );
                        // Told it was chosen, the built-in frontend does not forward.
                        let mut attrs = attrs.clone();
                        attrs.insert("cmdline".to_owned(), syntax.image.clone());
                        match self.convert(&request.session, pull, &attrs).await? {
                            crate::frontend::Frontend::Dockerfile((converted, dockerfile)) => {
                                (*converted, Some(dockerfile))
                            }
                            crate::frontend::Frontend::Forward(_) => {
                                return Err(Status::internal("the frontend forwarded twice"));
                            }
                        }
                    }
                    Err(error) => return Err(Status::unknown(error_chain(&error))),
                }
            }
        };
        Ok(converted)
    }

    /// The build a gateway client (`buildctl build`) returns, with the image configuration
    /// it returned (`containerimage.config`) for the exporter: its calls are served by a
    /// bridge over `session`, registered under the build's ref, until it returns.
    pub(super) async fn gateway_client(
        &self,
        request: &SolveRequest,
        session: Arc<Session>,
        progress: &Arc<crate::status::Progress>,
        pull: &PullOptions,
    ) -> Result<(Build, Option<kiln_frontend::ImageConfig>), Status> {
        let resolver = Arc::new(kiln_engine::StoreResolver::new(
            self.store.clone(),
            pull.clone(),
            tokio::runtime::Handle::current(),
        ));
        let bridge = Arc::new(
            crate::bridge::Bridge::new(
                session,
                progress.clone(),
                HashMap::new(),
                kiln_llb::Platform::host().to_pb(),
                0,
                (!request.session.is_empty()).then(|| request.session.clone()),
                resolver,
            )
            .deferring_frontends(),
        );
        self.gateways.register(&request.r#ref, bridge.clone());
        match bridge.wait_returned().await {
            crate::bridge::Returned::Result {
                definition,
                metadata,
            } => {
                let config = match metadata.get(crate::bridge::IMAGE_CONFIG_KEY) {
                    Some(bytes) => Some(serde_json::from_slice(bytes).map_err(|e| {
                        Status::invalid_argument(format!(
                            "the result's {} is not an image config: {e}",
                            crate::bridge::IMAGE_CONFIG_KEY
                        ))
                    })?),
                    None => None,
                };
                Ok((Build::Definition(definition.unwrap_or_default()), config))
            }
            crate::bridge::Returned::Frontend { frontend, attrs } => {
                Ok((Build::Frontend { frontend, attrs }, None))
            }
            crate::bridge::Returned::Error(message) => Err(Status::unknown(message)),
        }
    }

    /// The build checks of the client's Dockerfile (`requestid=frontend.lint`), as BuildKit's
    /// lint result.
    pub(super) async fn lint(
        &self,
        session: &str,
        attrs: &HashMap<String, String>,
        pull: &PullOptions,
    ) -> Result<SolveResponse, Status> {
        self.sessions.get(session).await?;
        let locals = crate::locals::SessionLocals::new(
            self.sessions.clone(),
            session.to_owned(),
            self.store.clone(),
        );
        let (dockerfile, options) = match crate::frontend::read(&locals, attrs).await? {
            crate::frontend::Frontend::Dockerfile(read) => read,
            crate::frontend::Frontend::Forward(syntax) => {
                return Err(Status::unimplemented(format!(
                    "the build checks of a Dockerfile for the frontend image {} are not supported",
                    syntax.image
                )));
            }
        };
        let file_name = options.file_name.clone();
        let converted = crate::frontend::convert_read(
            self.store.clone(),
            pull.clone(),
            dockerfile.clone(),
            *options,
        )
        .await?;
        Ok(SolveResponse {
            exporter_response: crate::lint::lint_result(
                &dockerfile,
                &file_name,
                converted.map(|c| c.warnings),
            ),
        })
    }
}
