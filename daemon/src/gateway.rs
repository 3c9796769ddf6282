//! The gateway API's `LLBBridge`, as far as BuildKit's client uses it on the control socket:
//! `buildctl build` runs its build function as a gateway client of its own build (its calls
//! carry the build's ref in `buildkit-controlapi-buildid`): `Ping`, `Solve` of its Definition,
//! `Return` of the result. `Control.Solve` of that ref, sent without a Definition, waits for
//! the returned result ([`Returns`]) and solves and exports it.
//!
//! A gateway `Solve` is lazy, as BuildKit's: the ref it answers carries its Definition, which
//! is solved when it is returned. A `Solve` of the `dockerfile.v0` frontend answers a ref
//! without a Definition: the frontend runs when the ref is returned, in the `Control.Solve`
//! that has the client's session (its Dockerfile and context come through it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kiln_llb::pb::Definition;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::pb::gateway::llb_bridge_server::LlbBridge;
use crate::pb::gateway::{
    PingRequest, PongResponse, Ref, Result as GatewayResult, ReturnRequest, ReturnResponse,
    SolveRequest, SolveResponse, result,
};
use crate::pb::moby::buildkit::v1::apicaps::ApiCap;

/// The gRPC metadata naming the build a gateway call belongs to.
const BUILD_ID: &str = "buildkit-controlapi-buildid";

/// The gateway capabilities kiln serves.
const FRONTEND_CAPS: &[&str] = &[
    "solve.base",
    "solve.inlinereturn",
    "return",
    "proto.refarray",
];

/// The LLB capabilities kiln's solver takes (it checks each field itself).
pub(crate) const LLB_CAPS: &[&str] = &[
    "source.image",
    "source.image.resolvemode",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.followpaths",
    "source.local.excludepatterns",
    "source.local.sharedkeyhint",
    "source.git",
    "source.git.keepgitdir",
    "source.git.fullurl",
    "source.git.subdir",
    "source.http",
    "source.http.checksum",
    "source.http.perm",
    "soruce.http.uidgid",
    "exec.meta.base",
    "exec.meta.network",
    "exec.meta.proxyenv",
    "exec.meta.security",
    "exec.meta.setsdefaultpath",
    "exec.meta.ulimit",
    "exec.meta.removemountstubs.recursive",
    "exec.mount.bind",
    "exec.mount.bind.readwrite-nooutput",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.tmpfs.size",
    "exec.mount.secret",
    "exec.mount.ssh",
    "exec.secretenv",
    "exec.validexitcode",
    "file.base",
    "file.rm.wildcard",
    "file.copy.includeexcludepatterns",
    "file.rm.nofollowsymlink",
    "file.copy.alwaysreplaceexistingdestpaths",
    "file.copy.modestring",
    "file.symlink.create",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "meta.exportcache",
    "mergeop",
    "diffop",
];

fn caps(ids: &[&str]) -> Vec<ApiCap> {
    ids.iter()
        .map(|id| ApiCap {
            id: (*id).to_owned(),
            enabled: true,
            ..ApiCap::default()
        })
        .collect()
}

/// What a build function returned to be built and exported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Build {
    /// A Definition.
    Definition(Definition),
    /// A frontend to run with these options.
    Frontend {
        /// The frontend's name.
        frontend: String,
        /// Its options (`FrontendOpt`).
        attrs: HashMap<String, String>,
    },
}

/// What a build function returned, or its error.
pub(crate) type Returned = Result<Build, String>;

/// The results build functions return, by build ref, for the `Control.Solve` waiting on each.
#[derive(Default, Clone)]
pub(crate) struct Returns {
    waiting: Arc<Mutex<HashMap<String, Slot>>>,
    /// Frontend solves by the ref they answered, with the build they belong to.
    frontends: Arc<Mutex<HashMap<String, (String, Build)>>>,
}

enum Slot {
    Waiting(oneshot::Sender<Returned>),
    Returned(Returned),
}

impl Returns {
    /// Waits for the result of build `reference`; `None` if the client went without one. The
    /// caller forgets `reference` when its solve ends.
    pub(crate) async fn wait(&self, reference: &str) -> Option<Returned> {
        let receiver = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            match waiting.remove(reference) {
                Some(Slot::Returned(returned)) => return Some(returned),
                _ => {
                    let (sender, receiver) = oneshot::channel();
                    waiting.insert(reference.to_owned(), Slot::Waiting(sender));
                    receiver
                }
            }
        };
        receiver.await.ok()
    }

    /// Hands the result of build `reference` to its waiting `Control.Solve`, or keeps it for one
    /// that comes later.
    fn put(&self, reference: &str, returned: Returned) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.remove(reference) {
            Some(Slot::Waiting(sender)) => {
                let _ = sender.send(returned);
            }
            _ => {
                waiting.insert(reference.to_owned(), Slot::Returned(returned));
            }
        }
    }

    /// Drops what is kept for `reference` (its `Control.Solve` ended).
    pub(crate) fn forget(&self, reference: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(reference);
        self.frontends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (build, _)| build != reference);
    }

    /// Keeps the frontend solve answered as ref `id` of build `reference`.
    fn put_frontend(&self, reference: &str, id: &str, build: Build) {
        self.frontends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), (reference.to_owned(), build));
    }

    /// The frontend solve answered as ref `id` of build `reference`.
    fn frontend(&self, reference: &str, id: &str) -> Option<Build> {
        self.frontends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .filter(|(build, _)| build == reference)
            .map(|(_, b)| b.clone())
    }
}

/// The `LLBBridge` service.
pub(crate) struct GatewayService {
    pub(crate) returns: Returns,
    next_ref: AtomicU64,
}

impl GatewayService {
    pub(crate) fn new(returns: Returns) -> Self {
        Self {
            returns,
            next_ref: AtomicU64::new(0),
        }
    }
}

fn build_id<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .metadata()
        .get(BUILD_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Status::invalid_argument(format!("the call names no build ({BUILD_ID})")))
}

/// What a returned result builds: one ref, with its Definition or answered by a frontend
/// solve of the same build (a result by platform is not exported yet).
fn returned_build(returns: &Returns, reference: &str, result: GatewayResult) -> Returned {
    match result.result {
        Some(result::Result::Ref(Ref { def: Some(def), .. })) => Ok(Build::Definition(def)),
        Some(result::Result::Ref(Ref { id, def: None })) if !id.is_empty() => returns
            .frontend(reference, &id)
            .ok_or_else(|| format!("the build returned an unknown ref {id:?}")),
        Some(result::Result::Ref(Ref { def: None, .. })) | None => {
            Err("the build returned an empty result".to_owned())
        }
        Some(result::Result::RefDeprecated(_)) => {
            Err("the build returned a ref without its Definition".to_owned())
        }
        Some(result::Result::Refs(_) | result::Result::RefsDeprecated(_)) => Err(
            "the build returned a result per platform, which kiln does not export yet".to_owned(),
        ),
    }
}

#[tonic::async_trait]
impl LlbBridge for GatewayService {
    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let reference = build_id(&request)?;
        let request = request.into_inner();
        if !request.frontend.is_empty() {
            match request.frontend.as_str() {
                // Checked now, run when returned (see the module's documentation).
                crate::frontend::DOCKERFILE => {
                    for (_, attrs) in crate::frontend::per_platform(&request.frontend_opt)? {
                        crate::frontend::convert_options(&attrs)?;
                    }
                }
                crate::frontend::GATEWAY => {}
                other => {
                    return Err(Status::unimplemented(format!(
                        "frontend {other:?}: kiln has the built-in {} and {}",
                        crate::frontend::DOCKERFILE,
                        crate::frontend::GATEWAY
                    )));
                }
            }
            let id = format!("kiln-{}", self.next_ref.fetch_add(1, Ordering::Relaxed));
            self.returns.put_frontend(
                &reference,
                &id,
                Build::Frontend {
                    frontend: request.frontend,
                    attrs: request.frontend_opt,
                },
            );
            return Ok(Response::new(SolveResponse {
                r#ref: id.clone(),
                result: Some(GatewayResult {
                    result: Some(result::Result::Ref(Ref { id, def: None })),
                    metadata: HashMap::new(),
                }),
            }));
        }
        let definition = request
            .definition
            .filter(|d| !d.def.is_empty())
            .ok_or_else(|| Status::invalid_argument("the request has no Definition"))?;
        kiln_llb::LoadedDefinition::from_definition(definition.clone()).map_err(|e| {
            Status::invalid_argument(crate::control::error_text("invalid Definition", &e))
        })?;
        let id = format!("kiln-{}", self.next_ref.fetch_add(1, Ordering::Relaxed));
        Ok(Response::new(SolveResponse {
            r#ref: id.clone(),
            result: Some(GatewayResult {
                result: Some(result::Result::Ref(Ref {
                    id,
                    def: Some(definition),
                })),
                metadata: HashMap::new(),
            }),
        }))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PongResponse>, Status> {
        Ok(Response::new(PongResponse {
            frontend_api_caps: caps(FRONTEND_CAPS),
            llb_caps: caps(LLB_CAPS),
            workers: Vec::new(),
        }))
    }

    async fn r#return(
        &self,
        request: Request<ReturnRequest>,
    ) -> Result<Response<ReturnResponse>, Status> {
        let reference = build_id(&request)?;
        let request = request.into_inner();
        let returned = match (request.error, request.result) {
            (Some(error), _) if error.code != 0 => Err(error.message),
            (_, Some(result)) => returned_build(&self.returns, &reference, result),
            (_, None) => Err("the build returned no result".to_owned()),
        };
        self.returns.put(&reference, returned);
        Ok(Response::new(ReturnResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(op: &[u8]) -> Definition {
        Definition {
            def: vec![op.to_vec()],
            ..Definition::default()
        }
    }

    #[tokio::test]
    async fn a_result_reaches_its_solve_whichever_comes_first() {
        let returns = Returns::default();
        // Returned before the solve waits.
        returns.put("early", Ok(Build::Definition(definition(b"a"))));
        assert_eq!(
            returns.wait("early").await,
            Some(Ok(Build::Definition(definition(b"a"))))
        );
        // The solve waits first.
        let waiting = tokio::spawn({
            let returns = returns.clone();
            async move { returns.wait("late").await }
        });
        tokio::task::yield_now().await;
        while returns
            .waiting
            .lock()
            .unwrap()
            .get("late")
            .is_none_or(|slot| !matches!(slot, Slot::Waiting(_)))
        {
            tokio::task::yield_now().await;
        }
        returns.put("late", Err("boom".to_owned()));
        assert_eq!(waiting.await.unwrap(), Some(Err("boom".to_owned())));
        assert!(returns.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn only_a_single_ref_with_its_definition_or_frontend_is_exported() {
        let returns = Returns::default();
        let frontend = Build::Frontend {
            frontend: "dockerfile.v0".to_owned(),
            attrs: HashMap::new(),
        };
        returns.put_frontend("build-1", "kiln-7", frontend.clone());
        let by_frontend = |reference: &str| {
            returned_build(
                &returns,
                reference,
                GatewayResult {
                    result: Some(result::Result::Ref(Ref {
                        id: "kiln-7".to_owned(),
                        def: None,
                    })),
                    metadata: HashMap::new(),
                },
            )
        };
        assert_eq!(by_frontend("build-1"), Ok(frontend));
        // Another build cannot return it.
        assert_eq!(
            by_frontend("build-2"),
            Err("the build returned an unknown ref \"kiln-7\"".to_owned())
        );
        returns.forget("build-1");
        assert!(by_frontend("build-1").is_err());

        let with_def = GatewayResult {
            result: Some(result::Result::Ref(Ref {
                id: "r".to_owned(),
                def: Some(definition(b"a")),
            })),
            metadata: HashMap::new(),
        };
        assert_eq!(
            returned_build(&returns, "b", with_def),
            Ok(Build::Definition(definition(b"a")))
        );
        let by_id = GatewayResult {
            result: Some(result::Result::RefDeprecated("r".to_owned())),
            metadata: HashMap::new(),
        };
        assert_eq!(
            returned_build(&returns, "b", by_id),
            Err("the build returned a ref without its Definition".to_owned())
        );
        assert_eq!(
            returned_build(&returns, "b", GatewayResult::default()),
            Err("the build returned an empty result".to_owned())
        );
    }
}
