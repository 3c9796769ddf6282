//! Exec ops: a process over an overlay of the root snapshot, through the [`Executor`].
//!
//! Besides snapshots, a step can see session data that never enters a layer or a cache key:
//! secrets as files (`SECRET` mounts) or environment variables (`secretenv`), and SSH agent
//! sockets (`SSH` mounts). An agent socket is not mounted directly: each mount gets its own
//! socket with the owner and mode the mount asks for, and a thread forwards its connections
//! to the agent for as long as the step runs.

mod cache_mount;
mod container;
mod mounts;
mod ssh;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;

use kiln_cache::{Mounts, Store};

use self::cache_mount::cache_mount;
use self::mounts::{mount, writable_bind};
use self::ssh::ssh_mount;
use super::{ActiveSnapshot, Ref, SessionConfig, blocking};

pub use self::container::Container;
use crate::error::{Error, InputOf};
use crate::executor::{
    Entitlements, ExecMount, ExecNetwork, ExecRequest, ExecRootfs, ExecSecurity, ExecStatus,
    ExecUlimit,
};
use crate::scheduler::{CacheDep, CacheMap, Op, OpContext, OpError, ResourceClass};

/// How many lines of output a failed step shows.
const TAIL_LINES: usize = 20;

/// The longest line the tail keeps: a longer one (output without newlines, such as
/// `yes | tr -d '\n'`) is cut into lines of this length, so the tail never holds more than
/// `TAIL_LINES + 1` of them whatever a step writes.
const TAIL_LINE_MAX: usize = 4096;

pub(super) struct ExecOp {
    digest: String,
    inputs: usize,
    exec: pb::ExecOp,
    platform: Option<kiln_llb::Platform>,
    config: Arc<SessionConfig>,
    lineage: crate::Lineage,
}

impl ExecOp {
    pub(super) fn new(
        digest: String,
        inputs: usize,
        exec: pb::ExecOp,
        platform: Option<kiln_llb::Platform>,
        config: Arc<SessionConfig>,
    ) -> Self {
        Self {
            lineage: lineage(&exec),
            digest,
            inputs,
            exec,
            platform,
            config,
        }
    }
}

/// A process's lineage: its definition without its environment's values (nor its proxy
/// settings, which are not in its key), so that a miss after a build arg changed names it.
fn lineage(exec: &pb::ExecOp) -> crate::Lineage {
    use sha2::{Digest as _, Sha256};
    let mut bare = exec.clone();
    let mut facts = Vec::new();
    if let Some(meta) = &mut bare.meta {
        meta.proxy_env = None;
        for entry in &mut meta.env {
            let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            // Only told apart, never trusted: the first 8 bytes of a sha256 keep the history
            // small (it keeps one per variable per lineage).
            facts.push(crate::Fact::Env {
                name: name.to_owned(),
                value: hex::encode(&Sha256::digest(value.as_bytes())[..8]),
            });
            *entry = name.to_owned();
        }
    }
    facts.sort();
    let op = pb::Op {
        op: Some(pb::op::Op::Exec(bare)),
        ..pb::Op::default()
    };
    crate::Lineage {
        id: kiln_llb::op_digest(&op).to_string(),
        facts,
    }
}

/// The last lines of a process's output, for the error of a failed step.
struct Tail {
    lines: VecDeque<String>,
    split: crate::OutputLines,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            lines: VecDeque::new(),
            split: crate::OutputLines::new(TAIL_LINE_MAX),
        }
    }
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        let lines = &mut self.lines;
        self.split.push(data, |line| {
            if lines.len() == TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(String::from_utf8_lossy(line).into_owned());
        });
    }

    fn render(&self) -> String {
        let mut lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        let partial = String::from_utf8_lossy(self.split.partial());
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
            lineage: Some(self.lineage.clone()),
            outline: Some(crate::Outline {
                kind: "exec",
                fields: kiln_llb::outline::exec_fields(&self.exec),
            }),
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
        let platform = self.platform.clone();
        async move { run(ctx, config, exec, platform, inputs).await }.boxed()
    }

    fn resource_class(&self) -> ResourceClass {
        ResourceClass::Exec
    }
}

/// The result a mount names by input index.
fn input_ref(inputs: &[Ref], index: i64) -> Result<Ref, Error> {
    super::input_ref(inputs, index, InputOf::Mount)
}

/// A writable active snapshot on `parent` for an overlay mount: with overlayfs's work
/// directory where an overlay is mounted (a parent below).
async fn prepare_writable(
    store: &Arc<Store>,
    parent: &Ref,
) -> Result<(ActiveSnapshot, Mounts), Error> {
    let (store, parent) = (store.clone(), parent.clone());
    blocking(move || {
        let (active, mounts) = ActiveSnapshot::prepare(&store, parent.key())?;
        if !mounts.lowers.is_empty() {
            mounts.create_work()?;
        }
        Ok((active, mounts))
    })
    .await
}

/// The step's security mode, if the build's entitlements allow what it asks for; otherwise
/// the entitlement it lacks (BuildKit refuses with `network.host is not allowed`,
/// `security.insecure is not allowed`). [`Session::graph`](super::Session::graph) asks this
/// of every exec op when the Definition is loaded, so nothing runs in a build that would be
/// refused; the step asks again for its mode.
pub(super) fn entitled(
    exec: &pb::ExecOp,
    allowed: Entitlements,
) -> Result<ExecSecurity, &'static str> {
    if exec.network == pb::NetMode::Host as i32 && !allowed.network_host {
        return Err("network.host");
    }
    if exec.security == pb::SecurityMode::Insecure as i32 {
        if !allowed.security_insecure {
            return Err("security.insecure");
        }
        return Ok(ExecSecurity::Insecure);
    }
    Ok(ExecSecurity::Sandbox)
}

/// The proxy settings as environment variables, upper and lower case, as BuildKit sets them.
fn proxy_env(proxy: Option<&pb::ProxyEnv>) -> Vec<String> {
    let Some(proxy) = proxy else {
        return Vec::new();
    };
    [
        ("HTTP_PROXY", &proxy.http_proxy),
        ("HTTPS_PROXY", &proxy.https_proxy),
        ("FTP_PROXY", &proxy.ftp_proxy),
        ("NO_PROXY", &proxy.no_proxy),
        ("ALL_PROXY", &proxy.all_proxy),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .flat_map(|(name, value)| {
        [
            format!("{name}={value}"),
            format!("{}={value}", name.to_ascii_lowercase()),
        ]
    })
    .collect()
}

/// A process's file system, prepared: the root over an active snapshot on the root input,
/// the other mounts, and what must last as long as the process does (the writable mounts'
/// snapshots, the cache mounts' locks, the agent forwarders). Dropped, the snapshots not
/// committed are removed.
pub(super) struct Prepared {
    pub(super) rootfs: ExecRootfs,
    pub(super) mounts: Vec<ExecMount>,
    /// The index in the op's mounts of each of `mounts`.
    sources: Vec<usize>,
    /// The index in the op's mounts of the root.
    root_index: usize,
    /// The root's active snapshot: its upper is the root's output.
    root: ActiveSnapshot,
    /// Writable bind mounts: their active snapshots, by mount index.
    writable: Vec<(usize, ActiveSnapshot)>,
    /// Locks on cache mount directories.
    cache_locks: Vec<cache_mount::CacheLock>,
    /// Agent socket forwarders.
    ssh_forwarders: Vec<ssh::SshForwarder>,
}

impl Prepared {
    /// Prepares the mounts `mounts` (one of them at `/`), whose inputs are `inputs`.
    pub(super) async fn new(
        config: &SessionConfig,
        mounts: &[pb::Mount],
        inputs: &[Ref],
    ) -> Result<Self, Error> {
        let (root_index, root_mount) = mounts
            .iter()
            .enumerate()
            .find(|(_, m)| m.dest == "/")
            .ok_or(Error::NoRootMount)?;
        let root_ref = input_ref(inputs, root_mount.input)?;

        // The root: an active snapshot on the root input; its upper becomes the output.
        // Whatever happens from here on, the active snapshot does not outlive the process.
        let (root, prepared) = prepare_writable(&config.store, &root_ref).await?;
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
                readonly: root_mount.readonly,
            }
        };
        let mut this = Self {
            rootfs,
            mounts: Vec::new(),
            sources: Vec::new(),
            root_index,
            root,
            writable: Vec::new(),
            cache_locks: Vec::new(),
            ssh_forwarders: Vec::new(),
        };
        for (index, m) in mounts.iter().enumerate().filter(|(_, m)| m.dest != "/") {
            match pb::MountType::try_from(m.mount_type) {
                Ok(pb::MountType::Cache) => {
                    let (mount, lock) = cache_mount(config, inputs, m).await?;
                    this.mounts.push(mount);
                    this.cache_locks.extend(lock);
                }
                Ok(pb::MountType::Bind) if !m.readonly => {
                    let (mount, active) = writable_bind(config, inputs, m).await?;
                    this.mounts.push(mount);
                    this.writable.push((index, active));
                }
                Ok(pb::MountType::Ssh) => {
                    if let Some((mount, forwarder)) = ssh_mount(config, m)? {
                        this.mounts.push(mount);
                        this.ssh_forwarders.push(forwarder);
                    }
                }
                _ => this.mounts.extend(mount(config, inputs, m)?),
            }
            this.sources.resize(this.mounts.len(), index);
        }
        Ok(this)
    }

    /// The host directories of the op's mount `index` (its layers, topmost first), to read
    /// its files as the process sees them; a tmpfs or secret is only in the process's view.
    pub(super) fn layers(&self, index: usize) -> Result<Vec<PathBuf>, Error> {
        if index == self.root_index {
            return Ok(match &self.rootfs {
                ExecRootfs::Dir { path, .. } => vec![path.clone()],
                ExecRootfs::Overlay { lowers, upper, .. } => {
                    std::iter::once(upper).chain(lowers).cloned().collect()
                }
            });
        }
        let position = self
            .sources
            .iter()
            .position(|source| *source == index)
            .ok_or(Error::NoSuchMount { index })?;
        match &self.mounts[position] {
            ExecMount::Bind { source, .. } => Ok(vec![source.clone()]),
            ExecMount::Overlay {
                lowers, upper_work, ..
            } => Ok(upper_work
                .iter()
                .map(|(upper, _)| upper)
                .chain(lowers)
                .cloned()
                .collect()),
            ExecMount::Tmpfs { .. } => Err(Error::UnreadableMount {
                index,
                kind: "tmpfs",
            }),
            ExecMount::Secret { .. } => Err(Error::UnreadableMount {
                index,
                kind: "secret",
            }),
        }
    }

    /// The request to run the process `meta` on these mounts.
    pub(super) fn request(
        &self,
        config: &SessionConfig,
        meta: &pb::Meta,
        secretenv: &[pb::SecretEnv],
        network: i32,
        security: ExecSecurity,
    ) -> Result<ExecRequest, Error> {
        let mut env = meta.env.clone();
        env.extend(proxy_env(meta.proxy_env.as_ref()));
        for secret in secretenv {
            match config.secrets.get(&secret.id) {
                Some(data) => {
                    // The environment travels as text: a secret of other bytes is refused,
                    // never passed on altered.
                    let Ok(value) = std::str::from_utf8(data) else {
                        return Err(Error::SecretNotText {
                            id: secret.id.clone(),
                            name: secret.name.clone(),
                        });
                    };
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != secret.name);
                    env.push(format!("{}={value}", secret.name));
                }
                None if secret.optional => {}
                None => {
                    return Err(Error::SecretNotFound {
                        id: secret.id.clone(),
                    });
                }
            }
        }
        Ok(ExecRequest {
            rootfs: self.rootfs.clone(),
            mounts: self.mounts.clone(),
            args: meta.args.clone(),
            env,
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
            network: match pb::NetMode::try_from(network) {
                Ok(pb::NetMode::None) => ExecNetwork::None,
                Ok(pb::NetMode::Host) => ExecNetwork::Host,
                _ => ExecNetwork::Default,
            },
            security,
            ulimits: meta
                .ulimit
                .iter()
                .map(|u| ExecUlimit {
                    name: u.name.clone(),
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            cgroup_parent: (!meta.cgroup_parent.is_empty()).then(|| meta.cgroup_parent.clone()),
            platform: None,
        })
    }
}

async fn run(
    ctx: OpContext,
    config: Arc<SessionConfig>,
    exec: pb::ExecOp,
    platform: Option<kiln_llb::Platform>,
    inputs: Vec<Ref>,
) -> Result<Vec<Ref>, OpError> {
    let security = entitled(&exec, config.entitlements)
        .map_err(|entitlement| Error::NotEntitled { entitlement })?;
    let meta = exec.meta.clone().unwrap_or_default();
    let phase = ctx.phase("mounts");
    let prepared = Prepared::new(&config, &exec.mounts, &inputs).await?;
    let mut request = prepared.request(&config, &meta, &exec.secretenv, exec.network, security)?;
    request.platform = platform;
    drop(phase);
    let Prepared {
        root: active,
        mut writable,
        cache_locks,
        ssh_forwarders,
        ..
    } = prepared;

    let tail = Arc::new(Mutex::new(Tail::default()));
    let sink_tail = tail.clone();
    let sink_ctx = ctx.clone();
    let phase = ctx.phase("run");
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
    drop(phase);
    drop(cache_locks);
    drop(ssh_forwarders);
    let valid = if meta.valid_exit_codes.is_empty() {
        vec![0]
    } else {
        meta.valid_exit_codes.clone()
    };
    let ok = matches!(status, ExecStatus::Code(c) if valid.contains(&c));
    if !ok {
        return Err(Error::ProcessFailed {
            args: meta.args.join(" "),
            status,
            tail: tail.lock().unwrap_or_else(PoisonError::into_inner).render(),
        }
        .into());
    }

    // Commit the root's upper as the output of the root mount.
    let _commit = ctx.phase("commit");
    let root = blocking(move || active.commit("exec")).await?;
    let outputs = exec
        .mounts
        .iter()
        .filter_map(kiln_llb::mount_output)
        .max()
        .map_or(0, |m| m + 1);
    let mut refs = vec![Ref::scratch(); outputs];
    for (index, m) in exec.mounts.iter().enumerate() {
        let Some(output) = kiln_llb::mount_output(m) else {
            continue;
        };
        refs[output] = if m.dest == "/" {
            root.clone()
        } else {
            let Some(position) = writable.iter().position(|(i, _)| *i == index) else {
                return Err(Error::ReadOnlyOutput {
                    dest: m.dest.clone(),
                }
                .into());
            };
            let (_, active) = writable.swap_remove(position);
            blocking(move || active.commit("exec")).await?
        };
    }
    // Writable mounts without an output: their changes are dropped with `writable`.
    Ok(refs)
}
