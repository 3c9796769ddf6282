//! A container over solved results that a client runs processes in (BuildKit's gateway
//! `NewContainer` and `ExecProcess`): the mounts are prepared as an exec step's, and each
//! process runs through the [`Executor`](crate::Executor) with the client's input.

use std::sync::{Arc, Mutex, PoisonError};

use kiln_llb::pb;

use super::{Prepared, entitled};
use crate::error::Error;
use crate::executor::{ExecIo, ExecStatus, OutputSink};
use crate::llbsolver::{Ref, Session, SessionConfig};
use crate::scheduler::OpError;

/// A container: mounts of solved results, over which processes run one after another until
/// it is dropped. What a process writes to the root or to a writable mount is there for the
/// next one, and is removed with the container.
pub struct Container {
    config: Arc<SessionConfig>,
    network: i32,
    hostname: String,
    extra_hosts: Vec<pb::HostIp>,
    prepared: Mutex<Prepared>,
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("network", &self.network)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A container with `mounts` (one at `/`), each showing the result paired with it
    /// (its `input` is ignored), on the network `network` (LLB's `NetMode`), with the host
    /// name `hostname` (empty: the default) and the extra /etc/hosts entries `extra_hosts`.
    pub async fn new_container(
        &self,
        mounts: Vec<(pb::Mount, Ref)>,
        network: i32,
        hostname: String,
        extra_hosts: Vec<pb::HostIp>,
    ) -> Result<Container, Error> {
        let config = self.config().clone();
        let mut inputs = Vec::with_capacity(mounts.len());
        let mounts: Vec<pb::Mount> = mounts
            .into_iter()
            .map(|(mut mount, result)| {
                mount.input = i64::try_from(inputs.len()).unwrap_or(i64::MAX);
                inputs.push(result);
                mount
            })
            .collect();
        // Asked before anything is prepared, as for a step.
        entitled(
            &pb::ExecOp {
                network,
                ..pb::ExecOp::default()
            },
            config.entitlements,
        )
        .map_err(|entitlement| Error::NotEntitled { entitlement })?;
        let prepared = Prepared::new(&config, &mounts, &inputs).await?;
        Ok(Container {
            config,
            network,
            hostname,
            extra_hosts,
            prepared: Mutex::new(prepared),
            running: tokio::sync::Mutex::new(()),
        })
    }
}

impl Container {
    /// The host directories of the container's mount `index` (its index among the mounts it
    /// was made with), topmost layer first: its files as its processes see them, their writes
    /// included. A tmpfs or a secret is refused (only the processes see those).
    pub fn layers(&self, index: usize) -> Result<Vec<std::path::PathBuf>, Error> {
        self.prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .layers(index)
    }

    /// Runs the process `meta` (with the secrets `secretenv` in its environment, in the
    /// security mode `security`, LLB's `SecurityMode`) with the input and controls of `io`,
    /// its output to `output`, and gives how it ended. A container runs one process at a
    /// time: another one asked for meanwhile is refused.
    pub async fn run(
        &self,
        mut meta: pb::Meta,
        secretenv: &[pb::SecretEnv],
        security: i32,
        io: ExecIo,
        output: OutputSink,
    ) -> Result<ExecStatus, OpError> {
        let security = entitled(
            &pb::ExecOp {
                network: self.network,
                security,
                ..pb::ExecOp::default()
            },
            self.config.entitlements,
        )
        .map_err(|entitlement| Error::NotEntitled { entitlement })?;
        let _running = self.running.try_lock().map_err(|_| Error::ContainerBusy)?;
        if meta.hostname.is_empty() {
            meta.hostname.clone_from(&self.hostname);
        }
        meta.extra_hosts
            .splice(0..0, self.extra_hosts.iter().cloned());
        let request = self
            .prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .request(&self.config, &meta, secretenv, self.network, security)?;
        self.config.executor.run_process(request, io, output).await
    }
}
