//! Exec ops: a process over an overlay of the root snapshot, through the [`Executor`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;
use sha2::Digest as _;

use super::{Ref, SessionConfig, blocking, new_snapshot_key};
use crate::executor::{ExecMount, ExecNetwork, ExecRequest, ExecRootfs, ExecStatus};
use crate::scheduler::{CacheDep, CacheMap, Op, OpContext, OpError, ResourceClass};

/// How many lines of output a failed step shows.
const TAIL_LINES: usize = 20;

pub(super) struct ExecOp {
    digest: String,
    inputs: usize,
    exec: pb::ExecOp,
    config: Arc<SessionConfig>,
}

impl ExecOp {
    pub(super) fn new(
        digest: String,
        inputs: usize,
        exec: pb::ExecOp,
        config: Arc<SessionConfig>,
    ) -> Self {
        Self {
            digest,
            inputs,
            exec,
            config,
        }
    }
}

/// The last lines of a process's output, for the error of a failed step.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                if self.lines.len() == TAIL_LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            } else {
                self.partial.push(b);
            }
        }
    }

    fn render(&self) -> String {
        let mut lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        let partial = String::from_utf8_lossy(&self.partial);
        if !partial.is_empty() {
            lines.push(&partial);
        }
        let skip = lines.len().saturating_sub(TAIL_LINES);
        lines[skip..].join("\n")
    }
}

impl Op<Ref> for ExecOp {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        let map = CacheMap {
            digest: self.digest.clone(),
            deps: (0..self.inputs).map(|_| CacheDep::definition()).collect(),
        };
        async move { Ok(map) }.boxed()
    }

    fn exec(
        &self,
        ctx: OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let config = self.config.clone();
        let exec = self.exec.clone();
        async move { run(ctx, config, exec, inputs).await }.boxed()
    }

    fn resource_class(&self) -> ResourceClass {
        ResourceClass::Exec
    }
}

fn input_ref(inputs: &[Ref], index: i64) -> Result<Ref, OpError> {
    if index < 0 {
        return Ok(Ref::scratch());
    }
    usize::try_from(index)
        .ok()
        .and_then(|i| inputs.get(i).cloned())
        .ok_or_else(|| format!("mount refers to input {index}, which does not exist").into())
}

async fn run(
    ctx: OpContext,
    config: Arc<SessionConfig>,
    exec: pb::ExecOp,
    inputs: Vec<Ref>,
) -> Result<Vec<Ref>, OpError> {
    let meta = exec.meta.clone().unwrap_or_default();
    let root_mount = exec
        .mounts
        .iter()
        .find(|m| m.dest == "/")
        .ok_or("exec op has no root mount")?
        .clone();
    let root_ref = input_ref(&inputs, root_mount.input)?;

    // The root: an active snapshot on the root input; its upper becomes the output.
    let store = config.store.clone();
    let active = new_snapshot_key("active");
    let prepared = {
        let (store, active, parent) = (store.clone(), active.clone(), root_ref.clone());
        blocking(move || Ok(store.prepare(&active, parent.key())?)).await?
    };
    // Whatever happens from here on, the active snapshot must not outlive the step.
    let cleanup = RemoveActive {
        store: store.clone(),
        key: Some(active.clone()),
    };
    let rootfs = if prepared.lowers.is_empty() {
        ExecRootfs::Dir {
            path: prepared.upper.clone(),
            readonly: root_mount.readonly,
        }
    } else {
        ExecRootfs::Overlay {
            lowers: prepared.lowers.clone(),
            upper: prepared.upper.clone(),
            work: prepared.work.clone(),
        }
    };

    let mut mounts = Vec::new();
    for m in exec.mounts.iter().filter(|m| m.dest != "/") {
        mounts.push(mount(&config, &inputs, m)?);
    }

    let request = ExecRequest {
        rootfs,
        mounts,
        args: meta.args.clone(),
        env: meta.env.clone(),
        cwd: if meta.cwd.is_empty() {
            "/".to_owned()
        } else {
            meta.cwd.clone()
        },
        user: meta.user.clone(),
        hostname: meta.hostname.clone(),
        extra_hosts: meta
            .extra_hosts
            .iter()
            .map(|h| (h.host.clone(), h.ip.clone()))
            .collect(),
        network: match pb::NetMode::try_from(exec.network) {
            Ok(pb::NetMode::None) => ExecNetwork::None,
            _ => ExecNetwork::Host,
        },
    };

    let tail = Arc::new(Mutex::new(Tail::default()));
    let sink_tail = tail.clone();
    let sink_ctx = ctx.clone();
    let status = config
        .executor
        .run(
            request,
            Arc::new(move |stream, data| {
                sink_ctx.log(stream, data);
                sink_tail
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(data);
            }),
        )
        .await?;
    let valid = if meta.valid_exit_codes.is_empty() {
        vec![0]
    } else {
        meta.valid_exit_codes.clone()
    };
    let ok = matches!(status, ExecStatus::Code(c) if valid.contains(&c));
    if !ok {
        let how = match status {
            ExecStatus::Code(c) => format!("exit code: {c}"),
            ExecStatus::Signal(s) => format!("signal: {s}"),
        };
        let tail = tail.lock().unwrap_or_else(PoisonError::into_inner).render();
        let mut message = format!(
            "process \"{}\" did not complete successfully: {how}",
            meta.args.join(" ")
        );
        if !tail.is_empty() {
            message.push_str("\n\n");
            message.push_str(&tail);
        }
        return Err(message.into());
    }

    // Commit the root's upper as the output of the root mount.
    let key = new_snapshot_key("exec");
    {
        let (store, active, key) = (store.clone(), active.clone(), key.clone());
        blocking(move || Ok(store.commit(&active, &key)?)).await?;
    }
    cleanup.disarm();
    let outputs = exec
        .mounts
        .iter()
        .filter_map(|m| usize::try_from(m.output).ok())
        .max()
        .map_or(0, |m| m + 1);
    let mut refs = vec![Ref::scratch(); outputs];
    for m in &exec.mounts {
        let Ok(output) = usize::try_from(m.output) else {
            continue;
        };
        refs[output] = if m.dest == "/" {
            Ref::snapshot(key.as_str())
        } else {
            return Err(format!(
                "a writable mount at {} with an output is not supported yet",
                m.dest
            )
            .into());
        };
    }
    Ok(refs)
}

/// An exec mount other than the root.
fn mount(config: &SessionConfig, inputs: &[Ref], m: &pb::Mount) -> Result<ExecMount, OpError> {
    let target = PathBuf::from(&m.dest);
    match pb::MountType::try_from(m.mount_type) {
        Ok(pb::MountType::Tmpfs) => Ok(ExecMount::Tmpfs {
            target,
            size: m
                .tmpfs_opt
                .as_ref()
                .and_then(|t| u64::try_from(t.size).ok())
                .filter(|&s| s > 0),
        }),
        Ok(pb::MountType::Secret) => {
            let opt = m.secret_opt.clone().unwrap_or_default();
            let data = config
                .secrets
                .get(&opt.id)
                .cloned()
                .ok_or_else(|| format!("secret {} not found", opt.id))?;
            Ok(ExecMount::Secret {
                target,
                data,
                mode: opt.mode,
                uid: opt.uid,
                gid: opt.gid,
            })
        }
        Ok(pb::MountType::Cache) => {
            let id = m
                .cache_opt
                .as_ref()
                .map(|c| c.id.clone())
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| m.dest.clone());
            let dir = config
                .store
                .root()
                .join("cache-mounts")
                .join(hex::encode(sha2::Sha256::digest(id.as_bytes())));
            fs_err::create_dir_all(&dir)?;
            Ok(ExecMount::Bind {
                source: dir,
                target,
                readonly: false,
            })
        }
        Ok(pb::MountType::Bind) => {
            let input = input_ref(inputs, m.input)?;
            let lowers = input.lowers(&config.store)?;
            let [only] = lowers.as_slice() else {
                return Err(format!(
                    "a bind mount of a {}-layer snapshot at {} is not supported yet",
                    lowers.len(),
                    m.dest
                )
                .into());
            };
            let selector = m.selector.trim_start_matches('/');
            Ok(ExecMount::Bind {
                source: only.join(selector),
                target,
                readonly: true,
            })
        }
        _ => Err(format!(
            "mount type {} at {} is not supported yet",
            m.mount_type, m.dest
        )
        .into()),
    }
}

/// Removes an active snapshot when dropped, unless disarmed.
struct RemoveActive {
    store: Arc<kiln_cache::Store>,
    key: Option<String>,
}

impl RemoveActive {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for RemoveActive {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Err(e) = self.store.remove_snapshot(&key) {
                tracing::warn!(snapshot = %key, error = %e, "removing an unfinished snapshot");
            }
        }
    }
}
