//! A container over solved results that a client runs processes in (BuildKit's gateway
//! `NewContainer` and `ExecProcess`): the mounts are prepared as an exec step's, and each
//! process runs through the [`Executor`](crate::Executor) with the client's input.

use std::sync::{Arc, Mutex, PoisonError};

use kiln_llb::pb;

use super::{Prepared, entitled};
use crate::error::Error;
use crate::executor::{ExecIo, ExecStatus, OutputSink, RunningContainer};
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
    /// Held by the container's first process for as long as it runs.
    first: tokio::sync::Mutex<()>,
    /// The running container of the first process, once it has started.
    running: tokio::sync::watch::Sender<Option<RunningContainer>>,
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
            first: tokio::sync::Mutex::new(()),
            running: tokio::sync::watch::Sender::new(None),
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
    /// its output to `output`, and gives how it ended. The first process starts the
    /// container; one asked for while it runs joins it, sharing its mounts (as BuildKit's
    /// `Exec` beside its `Run`), and ends with it.
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
        let mut running = self.running.subscribe();
        loop {
            let current = *running.borrow_and_update();
            if let Some(container) = current {
                return self
                    .config
                    .executor
                    .exec_process(container, request, io, output)
                    .await;
            }
            if let Ok(_first) = self.first.try_lock() {
                return self.run_first(request, io, output).await;
            }
            // The first process is starting (or just ended): wait until it runs, or is gone.
            tokio::select! {
                _ = running.changed() => {}
                _ = self.first.lock() => {}
            }
        }
    }

    /// Runs the container's first process, telling the others where it runs meanwhile.
    async fn run_first(
        &self,
        request: crate::executor::ExecRequest,
        mut io: ExecIo,
        output: OutputSink,
    ) -> Result<ExecStatus, OpError> {
        let (started, starting) = tokio::sync::oneshot::channel();
        io.started = Some(started);
        let mut run = self.config.executor.run_process(request, io, output);
        // However it ends (also dropped), the next process starts the container anew.
        let _reset = ResetOnDrop(&self.running);
        tokio::select! {
            ended = &mut run => ended,
            started = starting => {
                if let Ok(container) = started {
                    self.running.send_replace(Some(container));
                }
                run.await
            }
        }
    }
}

/// Clears the running container when the first process's run ends.
struct ResetOnDrop<'a>(&'a tokio::sync::watch::Sender<Option<RunningContainer>>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}
