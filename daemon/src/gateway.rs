//! The gateway API's `LLBBridge` on the control socket: `buildctl build` (and buildx with a
//! remote builder) runs its build function as a gateway client of its own build, each call
//! naming the build in the gRPC metadata `buildkit-controlapi-buildid`. The `Control.Solve`
//! of that build, sent without a Definition or frontend, makes the build's [`Bridge`] (the
//! same one a frontend image is served) and registers it here; every call is handed to the
//! bridge of the build it names, and the `Control.Solve` solves and exports what the client
//! returns.
//!
//! As BuildKit's forwarder, a call may come before its build's `Control.Solve` (the client
//! sends both at once): a call naming a build that is not there waits for it
//! [`REGISTER_WAIT`], then is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiln_llb::pb::Definition;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::bridge::Bridge;
use crate::pb::gateway::llb_bridge_server::LlbBridge;
use crate::pb::gateway::{
    EvaluateRequest, EvaluateResponse, ExecMessage, InputsRequest, InputsResponse,
    NewContainerRequest, NewContainerResponse, PingRequest, PongResponse, ReadDirRequest,
    ReadDirResponse, ReadFileRequest, ReadFileResponse, ReleaseContainerRequest,
    ReleaseContainerResponse, ResolveImageConfigRequest, ResolveImageConfigResponse,
    ResolveSourceMetaRequest, ResolveSourceMetaResponse, ReturnRequest, ReturnResponse,
    SolveRequest, SolveResponse, StatFileRequest, StatFileResponse, WarnRequest, WarnResponse,
};

/// The gRPC metadata naming the build a gateway call belongs to.
pub(crate) const BUILD_ID: &str = "buildkit-controlapi-buildid";

/// How long a call naming an unknown build waits for its `Control.Solve` (BuildKit's too).
pub(crate) const REGISTER_WAIT: Duration = Duration::from_secs(3);

/// What a build builds and exports.
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

/// Where a build's bridge comes: empty until its `Control.Solve` has made it.
type Slot = watch::Sender<Option<Arc<Bridge>>>;

/// The bridges of the builds run as gateway clients, by build id. A build whose
/// `Control.Solve` started but whose bridge is not made yet has an empty slot: its calls wait.
#[derive(Default, Clone)]
pub(crate) struct Gateways {
    builds: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Gateways {
    /// Tells calls naming `id` that its bridge is coming: they wait for it.
    pub(crate) fn expect(&self, id: &str) {
        self.lock()
            .entry(id.to_owned())
            .or_insert_with(|| watch::Sender::new(None));
    }

    /// Serves the calls naming `id` with `bridge`.
    pub(crate) fn register(&self, id: &str, bridge: Arc<Bridge>) {
        self.lock()
            .entry(id.to_owned())
            .or_insert_with(|| watch::Sender::new(None))
            .send_replace(Some(bridge));
    }

    /// Forgets build `id` (its `Control.Solve` ended): calls waiting for it are refused.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.builds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bridge of the build `request` names.
    async fn bridge<T>(&self, request: &Request<T>) -> Result<Arc<Bridge>, Status> {
        let id = request
            .metadata()
            .get(BUILD_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(format!("the call names no build ({BUILD_ID})"))
            })?
            .to_owned();
        let unknown = || {
            Status::not_found(format!(
                "no build {id:?} runs on this daemon (a gateway client's build starts with its Control.Solve)"
            ))
        };
        let deadline = tokio::time::Instant::now() + REGISTER_WAIT;
        let mut slot = loop {
            if let Some(slot) = self.lock().get(&id) {
                break slot.subscribe();
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unknown());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let bridge = slot
            .wait_for(Option::is_some)
            .await
            .map_err(|_| unknown())?
            .clone();
        bridge.ok_or_else(unknown)
    }
}

/// `LLBBridge`, each call forwarded to the bridge of the build it names.
macro_rules! forward {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        #[tonic::async_trait]
        impl LlbBridge for Gateways {
            $(
                async fn $method(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    let bridge = self.bridge(&request).await?;
                    LlbBridge::$method(&bridge, request).await
                }
            )*
        }
    };
}

forward! {
    resolve_image_config(ResolveImageConfigRequest) -> ResolveImageConfigResponse;
    resolve_source_meta(ResolveSourceMetaRequest) -> ResolveSourceMetaResponse;
    solve(SolveRequest) -> SolveResponse;
    read_file(ReadFileRequest) -> ReadFileResponse;
    read_dir(ReadDirRequest) -> ReadDirResponse;
    stat_file(StatFileRequest) -> StatFileResponse;
    evaluate(EvaluateRequest) -> EvaluateResponse;
    ping(PingRequest) -> PongResponse;
    r#return(ReturnRequest) -> ReturnResponse;
    inputs(InputsRequest) -> InputsResponse;
    warn(WarnRequest) -> WarnResponse;
    new_container(NewContainerRequest) -> NewContainerResponse;
    release_container(ReleaseContainerRequest) -> ReleaseContainerResponse;
    exec_process(tonic::Streaming<ExecMessage>) -> crate::bridge::ExecStream;
}

#[cfg(test)]
mod tests;
