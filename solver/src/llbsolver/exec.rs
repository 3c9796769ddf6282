//! Exec ops: a process over an overlay of the root snapshot, through the [`Executor`].
//!
//! Besides snapshots, a step can see session data that never enters a layer or a cache key:
//! secrets as files (`SECRET` mounts) or environment variables (`secretenv`), and SSH agent
//! sockets (`SSH` mounts). An agent socket is not mounted directly: each mount gets its own
//! socket with the owner and mode the mount asks for, and a thread forwards its connections
//! to the agent for as long as the step runs.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;
use sha2::Digest as _;

use super::{Ref, SessionConfig, blocking, new_snapshot_key};
use crate::executor::{
    Entitlements, ExecMount, ExecNetwork, ExecRequest, ExecRootfs, ExecSecurity, ExecStatus,
    ExecUlimit,
};
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

/// The step's security mode, if the build's entitlements allow what it asks for; otherwise
/// BuildKit's refusal (`network.host is not allowed`, `security.insecure is not allowed`).
fn entitled(exec: &pb::ExecOp, allowed: Entitlements) -> Result<ExecSecurity, String> {
    if exec.network == pb::NetMode::Host as i32 && !allowed.network_host {
        return Err("network.host is not allowed".to_owned());
    }
    if exec.security == pb::SecurityMode::Insecure as i32 {
        if !allowed.security_insecure {
            return Err("security.insecure is not allowed".to_owned());
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

async fn run(
    ctx: OpContext,
    config: Arc<SessionConfig>,
    exec: pb::ExecOp,
    inputs: Vec<Ref>,
) -> Result<Vec<Ref>, OpError> {
    let security = entitled(&exec, config.entitlements)?;
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
        blocking(move || {
            // The work directory only where an overlay is mounted (a parent below).
            let mounts = store.prepare_upper(&active, parent.key())?;
            if !mounts.lowers.is_empty() {
                mounts.create_work()?;
            }
            Ok(mounts)
        })
        .await?
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
            readonly: root_mount.readonly,
        }
    };

    let mut mounts = Vec::new();
    // Locks on cache mount directories, held until the process has ended.
    let mut cache_locks = Vec::new();
    // Agent socket forwarders, stopped when the process has ended.
    let mut ssh_forwarders = Vec::new();
    // Writable bind mounts: their active snapshots, by mount index, removed unless committed.
    let mut writable: Vec<(usize, RemoveActive)> = Vec::new();
    for (index, m) in exec
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.dest != "/")
    {
        match pb::MountType::try_from(m.mount_type) {
            Ok(pb::MountType::Cache) => {
                let (mount, lock) = cache_mount(&config, &inputs, m).await?;
                mounts.push(mount);
                cache_locks.extend(lock);
            }
            Ok(pb::MountType::Bind) if !m.readonly => {
                let (mount, active) = writable_bind(&config, &inputs, m).await?;
                mounts.push(mount);
                writable.push((index, active));
            }
            Ok(pb::MountType::Ssh) => {
                if let Some((mount, forwarder)) = ssh_mount(&config, m)? {
                    mounts.push(mount);
                    ssh_forwarders.push(forwarder);
                }
            }
            _ => mounts.extend(mount(&config, &inputs, m)?),
        }
    }

    let mut env = meta.env.clone();
    env.extend(proxy_env(meta.proxy_env.as_ref()));
    for secret in &exec.secretenv {
        match config.secrets.get(&secret.id) {
            Some(data) => {
                // The environment travels as text: a secret of other bytes is refused, never
                // passed on altered.
                let Ok(value) = std::str::from_utf8(data) else {
                    return Err(format!(
                        "secret {} is not UTF-8 text, so it cannot be the environment variable {}",
                        secret.id, secret.name
                    )
                    .into());
                };
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != secret.name);
                env.push(format!("{}={value}", secret.name));
            }
            None if secret.optional => {}
            None => return Err(format!("secret {} not found", secret.id).into()),
        }
    }
    let request = ExecRequest {
        rootfs,
        mounts,
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
        network: match pb::NetMode::try_from(exec.network) {
            Ok(pb::NetMode::None) => ExecNetwork::None,
            _ => ExecNetwork::Host,
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
    drop(cache_locks);
    drop(ssh_forwarders);
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
    for (index, m) in exec.mounts.iter().enumerate() {
        let Ok(output) = usize::try_from(m.output) else {
            continue;
        };
        refs[output] = if m.dest == "/" {
            Ref::snapshot(key.as_str())
        } else {
            let Some(position) = writable.iter().position(|(i, _)| *i == index) else {
                return Err(
                    format!("the read-only mount at {} cannot have an output", m.dest).into(),
                );
            };
            let (_, active) = writable.swap_remove(position);
            let active_key = active
                .key
                .clone()
                .ok_or("writable mount without a snapshot")?;
            let mount_key = new_snapshot_key("exec");
            {
                let (store, mount_key) = (store.clone(), mount_key.clone());
                blocking(move || Ok(store.commit(&active_key, &mount_key)?)).await?;
            }
            active.disarm();
            Ref::snapshot(mount_key)
        };
    }
    // Writable mounts without an output: their changes are dropped with `writable`.
    Ok(refs)
}

/// A writable bind mount of another vertex's result: an overlay with a fresh upper, whose
/// changes become the mount's output (or are dropped when it has none). A path inside the
/// result (a selector, resolved inside it) is mounted as a scratch copy of that directory.
async fn writable_bind(
    config: &SessionConfig,
    inputs: &[Ref],
    m: &pb::Mount,
) -> Result<(ExecMount, RemoveActive), OpError> {
    let input = input_ref(inputs, m.input)?;
    if !m.selector.trim_start_matches('/').is_empty() {
        return writable_selection(config, &input, m).await;
    }
    let store = config.store.clone();
    let active = new_snapshot_key("active");
    let prepared = {
        let (store, active, parent) = (store.clone(), active.clone(), input.clone());
        blocking(move || {
            // The work directory only where an overlay is mounted (a parent below).
            let mounts = store.prepare_upper(&active, parent.key())?;
            if !mounts.lowers.is_empty() {
                mounts.create_work()?;
            }
            Ok(mounts)
        })
        .await?
    };
    let guard = RemoveActive {
        store,
        key: Some(active),
    };
    let target = PathBuf::from(&m.dest);
    let mount = if prepared.lowers.is_empty() {
        ExecMount::Bind {
            source: prepared.upper,
            target,
            readonly: false,
        }
    } else {
        ExecMount::Overlay {
            lowers: prepared.lowers,
            upper_work: Some((prepared.upper, prepared.work)),
            target,
            readonly: false,
        }
    };
    Ok((mount, guard))
}

/// A writable mount of the directory `m.selector` of `input`: a new snapshot holding a copy of
/// the merged directory (found inside the snapshot, links followed within it), bind-mounted
/// writable. Its output, if it has one, is that directory with the step's changes (BuildKit's
/// is the whole input with them; Dockerfile `rw` mounts never read it).
async fn writable_selection(
    config: &SessionConfig,
    input: &Ref,
    m: &pb::Mount,
) -> Result<(ExecMount, RemoveActive), OpError> {
    let lowers = input.lowers(&config.store)?;
    let seed = select_in_layers(&lowers, &m.selector)
        .map_err(|e| format!("mounting {:?} of a snapshot at {}: {e}", m.selector, m.dest))?;
    let store = config.store.clone();
    let active = new_snapshot_key("active");
    let scratch = super::scratch_dir(&store)?;
    let upper = {
        let (store, active) = (store.clone(), active.clone());
        blocking(move || {
            let mounts = store.prepare_upper(&active, None)?;
            Ok(mounts.upper)
        })
        .await?
    };
    let guard = RemoveActive {
        store,
        key: Some(active),
    };
    {
        let upper = upper.clone();
        blocking(move || seed_cache_dir(&scratch, &seed, &upper)).await?;
    }
    let mount = ExecMount::Bind {
        source: upper,
        target: PathBuf::from(&m.dest),
        readonly: false,
    };
    Ok((mount, guard))
}

/// An exec mount other than the root; `None` for an optional secret that is missing.
fn mount(
    config: &SessionConfig,
    inputs: &[Ref],
    m: &pb::Mount,
) -> Result<Option<ExecMount>, OpError> {
    let target = PathBuf::from(&m.dest);
    match pb::MountType::try_from(m.mount_type) {
        Ok(pb::MountType::Tmpfs) => Ok(Some(ExecMount::Tmpfs {
            target,
            size: m
                .tmpfs_opt
                .as_ref()
                .and_then(|t| u64::try_from(t.size).ok())
                .filter(|&s| s > 0),
            readonly: m.readonly,
        })),
        Ok(pb::MountType::Secret) => {
            let opt = m.secret_opt.clone().unwrap_or_default();
            let Some(data) = config.secrets.get(&opt.id).cloned() else {
                if opt.optional {
                    return Ok(None);
                }
                return Err(format!("secret {} not found", opt.id).into());
            };
            Ok(Some(ExecMount::Secret {
                target,
                data,
                mode: opt.mode,
                uid: opt.uid,
                gid: opt.gid,
            }))
        }
        Ok(pb::MountType::Bind) => {
            let input = input_ref(inputs, m.input)?;
            let lowers = input.lowers(&config.store)?;
            let selected = select_in_layers(&lowers, &m.selector).map_err(|e| {
                format!("mounting {:?} of a snapshot at {}: {e}", m.selector, m.dest)
            })?;
            // The selected paths were resolved through real directories of the layers only.
            // The layers are committed snapshots that no build step writes to, so nothing can
            // swap a link into them between this resolution and the mount.
            Ok(Some(match selected.as_slice() {
                [only] => ExecMount::Bind {
                    source: only.clone(),
                    target,
                    readonly: true,
                },
                _ => ExecMount::Overlay {
                    lowers: selected,
                    upper_work: None,
                    target,
                    readonly: true,
                },
            }))
        }
        _ => Err(format!(
            "mount type {} at {} is not supported yet",
            m.mount_type, m.dest
        )
        .into()),
    }
}

/// What a bind mount of `selector` of a snapshot with overlayfs layers `lowers` (topmost
/// first) mounts: for a directory, the layer directories that merge into it (mounted as a
/// read-only overlay of exactly those, it shows what the merged snapshot has there); for
/// anything else, the one host file. The selector is resolved inside the snapshot as BuildKit
/// does: links are followed with the snapshot as `/`, `..` stops at its root.
fn select_in_layers(lowers: &[PathBuf], selector: &str) -> Result<Vec<PathBuf>, String> {
    let resolved = kiln_fsutil::Root::layered(lowers.to_vec())
        .resolve(selector, true)
        .map_err(|e| e.to_string())?;
    match resolved.entry {
        Some(entry) => Ok(entry.layers),
        None => Err(format!(
            "{}: no such file or directory",
            resolved.path.display()
        )),
    }
}

/// Forwards connections on a socket of its own to an SSH agent socket until dropped.
struct SshForwarder {
    socket: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl SshForwarder {
    /// A socket with the given owner and mode, forwarding to `agent`. It lives in `scratch`
    /// (the store's scratch space, cleared by garbage collection after a killed build) when
    /// that path is short enough for a socket address, else in the system's temporary
    /// directory.
    fn start(scratch: &Path, agent: &Path, uid: u32, gid: u32, mode: u32) -> Result<Self, OpError> {
        use std::os::unix::fs::PermissionsExt as _;
        use std::os::unix::net::UnixListener;
        // `sun_path` holds 108 bytes with the final NUL.
        const SOCKET_PATH_MAX: usize = 107;
        let mut builder = tempfile::Builder::new();
        builder.prefix("ssh-");
        let added = "/ssh-XXXXXX/agent.sock".len();
        let dir = if scratch.as_os_str().len() + added <= SOCKET_PATH_MAX {
            builder.tempdir_in(scratch)?
        } else {
            builder.tempdir()?
        };
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket)
            .map_err(|e| format!("creating an SSH agent socket: {e}"))?;
        std::os::unix::fs::chown(&socket, Some(uid), Some(gid))?;
        fs_err::set_permissions(&socket, std::fs::Permissions::from_mode(mode & 0o777))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (stop, agent) = (stop.clone(), agent.to_owned());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let agent = agent.clone();
                    std::thread::spawn(move || forward(client, &agent));
                }
            })
        };
        Ok(Self {
            socket,
            stop,
            thread: Some(thread),
            _dir: dir,
        })
    }
}

/// Copies bytes both ways between a client and a new connection to the agent.
fn forward(client: std::os::unix::net::UnixStream, agent: &Path) {
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    let upstream = match UnixStream::connect(agent) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(agent = %agent.display(), error = %e, "connecting to the SSH agent");
            return;
        }
    };
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl Drop for SshForwarder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accepting thread so that it sees the stop flag.
        let _ = std::os::unix::net::UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An SSH agent socket mount: the session's agent for the mount's id (`default` when empty)
/// behind a forwarding socket with the mount's owner and mode; `None` when the mount is
/// optional and no agent was given for the id.
fn ssh_mount(
    config: &SessionConfig,
    m: &pb::Mount,
) -> Result<Option<(ExecMount, SshForwarder)>, OpError> {
    let opt = m.ssh_opt.clone().unwrap_or_default();
    let id = if opt.id.is_empty() {
        "default"
    } else {
        opt.id.as_str()
    };
    let Some(agent) = config.ssh.get(id) else {
        if opt.optional {
            return Ok(None);
        }
        return Err(format!(
            "no SSH key {id:?} forwarded from the client (pass `--ssh {id}` or `--ssh {id}=SOCKET`)"
        )
        .into());
    };
    let mode = if opt.mode == 0 { 0o600 } else { opt.mode };
    let forwarder = SshForwarder::start(
        &super::scratch_dir(&config.store)?,
        agent,
        opt.uid,
        opt.gid,
        mode,
    )?;
    let mount = ExecMount::Bind {
        source: forwarder.socket.clone(),
        target: PathBuf::from(&m.dest),
        readonly: false,
    };
    Ok(Some((mount, forwarder)))
}

/// A held lock on a cache mount directory (released when dropped).
type CacheLock = Box<dyn Send>;

/// How many fresh directories a `private` cache mount tries before giving up.
const MAX_PRIVATE_DIRS: usize = 64;

/// A cache mount: a directory in the store per id (the mount target when no id is given),
/// kept across builds. Sharing modes, enforced with `flock` so they hold between kiln
/// processes too:
/// - `shared`: any number of steps use the directory at once; no lock.
/// - `locked`: a step takes the directory exclusively; a second one waits for it.
/// - `private`: a step takes the directory exclusively; when it is busy, the step takes the
///   next free one of `ID-1`, `ID-2`, ... (kept too, for later private users).
///
/// A directory kiln creates starts as a copy of the mount's input at its selector (`from` and
/// `source`, resolved inside that snapshot), owner and mode included: that is how the
/// frontend's `uid`, `gid` and `mode` arrive (a `/cache` directory made with them).
async fn cache_mount(
    config: &SessionConfig,
    inputs: &[Ref],
    m: &pb::Mount,
) -> Result<(ExecMount, Option<CacheLock>), OpError> {
    let seed = if m.input < 0 {
        Vec::new()
    } else {
        let lowers = input_ref(inputs, m.input)?.lowers(&config.store)?;
        if lowers.is_empty() {
            Vec::new()
        } else {
            select_in_layers(&lowers, &m.selector).map_err(|e| {
                format!(
                    "the source {:?} of the cache mount at {}: {e}",
                    m.selector, m.dest
                )
            })?
        }
    };
    let scratch = super::scratch_dir(&config.store)?;
    let opt = m.cache_opt.clone().unwrap_or_default();
    let id = Some(opt.id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| m.dest.clone());
    let name = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    let store = config.store.clone();
    let sharing = pb::CacheSharingOpt::try_from(opt.sharing).unwrap_or(pb::CacheSharingOpt::Shared);
    let (dir, lock) = blocking(move || {
        // The store hands the directory out under the build's lease: a prune leaves it alone.
        let open = |name: &str| -> Result<PathBuf, OpError> {
            let dir = store.cache_mount_dir(name)?;
            if dir.created {
                seed_cache_dir(&scratch, &seed, &dir.path)?;
            }
            Ok(dir.path)
        };
        let base = open(&name)?;
        match sharing {
            pb::CacheSharingOpt::Shared => Ok((base, None)),
            pb::CacheSharingOpt::Locked => {
                let lock = lock_dir(&base, nix::fcntl::FlockArg::LockExclusive)?
                    .ok_or("locking a cache mount")?;
                Ok((base, Some(lock)))
            }
            pb::CacheSharingOpt::Private => {
                for n in 0..MAX_PRIVATE_DIRS {
                    let dir = if n == 0 {
                        base.clone()
                    } else {
                        open(&format!("{name}-{n}"))?
                    };
                    if let Some(lock) = lock_dir(&dir, nix::fcntl::FlockArg::LockExclusiveNonblock)?
                    {
                        return Ok((dir, Some(lock)));
                    }
                }
                Err(
                    format!("all {MAX_PRIVATE_DIRS} private cache directories of {id:?} are busy")
                        .into(),
                )
            }
        }
    })
    .await?;
    let mount = ExecMount::Bind {
        source: dir,
        target: PathBuf::from(&m.dest),
        readonly: m.readonly,
    };
    Ok((mount, lock))
}

/// Fills the new cache directory `dir` with the merged directory made of the layer directories
/// `seed` (topmost first; none leaves it empty) and gives it that directory's owner and mode.
fn seed_cache_dir(scratch: &Path, seed: &[PathBuf], dir: &Path) -> Result<(), OpError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let Some(top) = seed.first() else {
        return Ok(());
    };
    let meta = fs_err::symlink_metadata(top)?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", top.display()).into());
    }
    let view = kiln_cache::View {
        lowers: seed.to_vec(),
        writable: None,
    };
    kiln_cache::with_views(scratch, &[view], |points| {
        kiln_fsutil::TreeCopy::default().copy_contents(
            &points[0],
            dir,
            &mut kiln_fsutil::HardLinks::new(),
        )
    })??;
    std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid()))?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Ok(())
}

/// Takes `flock` on `DIR.lock`; `None` when a non-blocking attempt finds it held.
fn lock_dir(dir: &Path, how: nix::fcntl::FlockArg) -> Result<Option<CacheLock>, OpError> {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))?
        .into_file();
    match nix::fcntl::Flock::lock(file, how) {
        Ok(lock) => Ok(Some(Box::new(lock))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::executor::{Executor, OutputSink};

    struct NoExecutor;

    impl Executor for NoExecutor {
        fn run(
            &self,
            _: ExecRequest,
            _: OutputSink,
        ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
            async { Err("not used".into()) }.boxed()
        }
    }

    fn config(root: &Path) -> SessionConfig {
        SessionConfig {
            store: Arc::new(kiln_cache::Store::open(root).unwrap()),
            executor: Arc::new(NoExecutor),
            pull: kiln_cache::PullOptions::default(),
            locals: HashMap::new(),
            secrets: HashMap::new(),
            ssh: HashMap::new(),
            no_cache: false,
            entitlements: Entitlements::default(),
        }
    }

    #[test]
    fn host_network_and_insecure_mode_need_their_entitlements() {
        let exec = |network: pb::NetMode, security: pb::SecurityMode| pb::ExecOp {
            network: network as i32,
            security: security as i32,
            ..Default::default()
        };
        let none = Entitlements::default();
        let all = Entitlements {
            network_host: true,
            security_insecure: true,
        };
        let plain = exec(pb::NetMode::Unset, pb::SecurityMode::Sandbox);
        assert_eq!(entitled(&plain, none), Ok(ExecSecurity::Sandbox));
        let host = exec(pb::NetMode::Host, pb::SecurityMode::Sandbox);
        assert_eq!(
            entitled(&host, none),
            Err("network.host is not allowed".to_owned())
        );
        assert_eq!(entitled(&host, all), Ok(ExecSecurity::Sandbox));
        let insecure = exec(pb::NetMode::None, pb::SecurityMode::Insecure);
        assert_eq!(
            entitled(&insecure, none),
            Err("security.insecure is not allowed".to_owned())
        );
        // One entitlement does not stand in for the other.
        let only_host = Entitlements {
            network_host: true,
            ..none
        };
        assert!(entitled(&insecure, only_host).is_err());
        assert_eq!(entitled(&insecure, all), Ok(ExecSecurity::Insecure));
    }

    fn cache(id: &str, sharing: pb::CacheSharingOpt) -> pb::Mount {
        pb::Mount {
            dest: "/cache".into(),
            mount_type: pb::MountType::Cache as i32,
            input: -1,
            cache_opt: Some(pb::CacheOpt {
                id: id.into(),
                sharing: sharing as i32,
            }),
            ..Default::default()
        }
    }

    fn source(mount: &ExecMount) -> PathBuf {
        match mount {
            ExecMount::Bind { source, .. } => source.clone(),
            other => panic!("not a bind mount: {other:?}"),
        }
    }

    #[test]
    fn selector_in_layers_shows_the_merged_directory_only() {
        let root = tempfile::tempdir().unwrap();
        let layer = |name: &str| {
            let dir = root.path().join(name);
            fs_err::create_dir_all(&dir).unwrap();
            dir
        };
        // Topmost first: top, middle, bottom.
        let (top, middle, bottom) = (layer("top"), layer("middle"), layer("bottom"));
        for (dir, file) in [(&top, "t"), (&middle, "m"), (&bottom, "b")] {
            fs_err::create_dir_all(dir.join("app/src")).unwrap();
            fs_err::write(dir.join("app/src").join(file), file).unwrap();
        }
        fs_err::create_dir_all(middle.join("other")).unwrap();
        let lowers = vec![top.clone(), middle.clone(), bottom.clone()];
        assert_eq!(
            select_in_layers(&lowers, "app/src").unwrap(),
            [
                top.join("app/src"),
                middle.join("app/src"),
                bottom.join("app/src")
            ]
        );
        // A layer without the path is skipped.
        assert_eq!(
            select_in_layers(&lowers, "other").unwrap(),
            [middle.join("other")]
        );
        // A file on the path in an upper layer hides the directories below it.
        fs_err::create_dir_all(top.join("data")).unwrap();
        fs_err::write(middle.join("data"), "file").unwrap();
        fs_err::create_dir_all(bottom.join("data")).unwrap();
        assert_eq!(
            select_in_layers(&lowers, "data").unwrap(),
            [top.join("data")]
        );
        // A file is mounted on its own.
        assert_eq!(
            select_in_layers(&lowers, "app/src/t").unwrap(),
            [top.join("app/src/t")]
        );
        assert_eq!(
            select_in_layers(&lowers, "nowhere").unwrap_err(),
            "/nowhere: no such file or directory"
        );
        assert!(select_in_layers(&lowers, "../x").is_err());
        // `..` and links resolve inside the snapshot, never on the host.
        assert_eq!(
            select_in_layers(&lowers, "/../../other").unwrap(),
            [middle.join("other")]
        );
        let host = tempfile::tempdir().unwrap();
        fs_err::write(host.path().join("marker"), "host").unwrap();
        fs_err::os::unix::fs::symlink("/", top.join("hostroot")).unwrap();
        fs_err::os::unix::fs::symlink(host.path(), middle.join("hostdir")).unwrap();
        assert_eq!(
            select_in_layers(&lowers, "hostroot/app/../other").unwrap(),
            [middle.join("other")]
        );
        assert_eq!(
            select_in_layers(&lowers, "hostroot").unwrap(),
            [top.clone(), middle.clone(), bottom.clone()]
        );
        assert!(select_in_layers(&lowers, "hostdir/marker").is_err());
        // One layer: the same resolution.
        assert_eq!(
            select_in_layers(&lowers[..1], "hostroot/app/src").unwrap(),
            [top.join("app/src")]
        );
        assert!(select_in_layers(&lowers[1..2], "hostdir/marker").is_err());

        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("KILN_TEST_REQUIRE_ALL").is_none_or(|v| v != "1"),
                "whiteouts and opaque directories need root"
            );
            return;
        }
        // A whiteout in the middle layer hides the bottom layer's directory.
        let wiped = [top.join("gone"), middle.join("gone"), bottom.join("gone")];
        fs_err::create_dir_all(&wiped[0]).unwrap();
        nix::sys::stat::mknod(
            &wiped[1],
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs_err::create_dir_all(&wiped[2]).unwrap();
        assert_eq!(
            select_in_layers(&lowers, "gone").unwrap(),
            [wiped[0].clone()]
        );
        // An opaque directory on the path in the middle layer: top and middle only.
        for dir in &lowers {
            fs_err::create_dir_all(dir.join("opq/sub")).unwrap();
        }
        xattr::set(middle.join("opq"), kiln_fsutil::overlay::OPAQUE_XATTR, b"y").unwrap();
        assert_eq!(
            select_in_layers(&lowers, "opq/sub").unwrap(),
            [top.join("opq/sub"), middle.join("opq/sub")]
        );
    }

    #[tokio::test]
    async fn cache_mount_sharing_modes() {
        let root = tempfile::tempdir().unwrap();
        let config = config(root.path());
        let shared = pb::CacheSharingOpt::Shared;
        let private = pb::CacheSharingOpt::Private;
        let locked = pb::CacheSharingOpt::Locked;

        // Shared: the same directory for everyone, and for the next build (it persists).
        let (a, lock_a) = cache_mount(&config, &[], &cache("x", shared))
            .await
            .unwrap();
        let (b, _) = cache_mount(&config, &[], &cache("x", shared))
            .await
            .unwrap();
        assert!(lock_a.is_none());
        assert_eq!(source(&a), source(&b));
        fs_err::write(source(&a).join("kept"), "1").unwrap();
        let (again, _) = cache_mount(&config, &[], &cache("x", shared))
            .await
            .unwrap();
        assert!(source(&again).join("kept").is_file());
        // Another id is another directory.
        let (other, _) = cache_mount(&config, &[], &cache("y", shared))
            .await
            .unwrap();
        assert_ne!(source(&other), source(&a));

        // Private: a busy directory sends the next user to a fresh one; freed, it is reused.
        let (p1, lock1) = cache_mount(&config, &[], &cache("p", private))
            .await
            .unwrap();
        let (p2, lock2) = cache_mount(&config, &[], &cache("p", private))
            .await
            .unwrap();
        assert_ne!(source(&p1), source(&p2));
        drop(lock1);
        let (p3, _lock3) = cache_mount(&config, &[], &cache("p", private))
            .await
            .unwrap();
        assert_eq!(source(&p3), source(&p1));
        drop(lock2);

        // Locked: the second user waits until the first lets go.
        let (l1, lock_l1) = cache_mount(&config, &[], &cache("l", locked))
            .await
            .unwrap();
        let config = Arc::new(config);
        let waiter = {
            let config = config.clone();
            tokio::spawn(async move {
                cache_mount(&config, &[], &cache("l", locked))
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "a locked cache mount waits");
        drop(lock_l1);
        let (l2, _) = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiter gets the lock once it is free")
            .unwrap();
        assert_eq!(source(&l1), source(&l2));
    }
}

#[cfg(test)]
mod request_tests {
    use std::sync::Mutex;

    use super::*;
    use crate::executor::{Executor, OutputSink};
    use crate::llbsolver::tests::{Recorder, definition};
    use crate::llbsolver::{Session, SessionConfig};

    /// Records each request and lets the process succeed.
    #[derive(Default)]
    struct Recording(Arc<Mutex<Vec<ExecRequest>>>);

    impl Executor for Recording {
        fn run(
            &self,
            request: ExecRequest,
            _: OutputSink,
        ) -> BoxFuture<'static, Result<ExecStatus, OpError>> {
            self.0.lock().unwrap().push(request);
            async { Ok(ExecStatus::Code(0)) }.boxed()
        }
    }

    /// A step on a scratch root with a proxy and a read-only 1 MiB tmpfs.
    fn step(proxy: &str) -> pb::Op {
        pb::Op {
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec!["true".into()],
                    env: vec!["A=1".into()],
                    proxy_env: Some(pb::ProxyEnv {
                        http_proxy: proxy.into(),
                        no_proxy: "localhost".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                mounts: vec![
                    pb::Mount {
                        input: -1,
                        dest: "/".into(),
                        output: 0,
                        ..Default::default()
                    },
                    pb::Mount {
                        input: -1,
                        dest: "/t".into(),
                        output: -1,
                        readonly: true,
                        mount_type: pb::MountType::Tmpfs.into(),
                        tmpfs_opt: Some(pb::TmpfsOpt { size: 1 << 20 }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn proxies_reach_the_environment_but_not_the_cache_key() {
        let store = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let session = || {
            Session::new(
                SessionConfig {
                    store: Arc::new(kiln_cache::Store::open(store.path()).unwrap()),
                    executor: Arc::new(Recording(seen.clone())),
                    pull: kiln_cache::PullOptions::default(),
                    locals: Default::default(),
                    secrets: Default::default(),
                    ssh: Default::default(),
                    no_cache: false,
                    entitlements: Entitlements::default(),
                },
                None,
            )
        };
        let recorder = Arc::new(Recorder::default());
        session()
            .solve(&definition(step("http://proxy:3128"), None), recorder)
            .await
            .unwrap();
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].env,
            [
                "A=1",
                "HTTP_PROXY=http://proxy:3128",
                "http_proxy=http://proxy:3128",
                "NO_PROXY=localhost",
                "no_proxy=localhost",
            ]
        );
        assert_eq!(
            requests[0].mounts,
            [ExecMount::Tmpfs {
                target: "/t".into(),
                size: Some(1 << 20),
                readonly: true,
            }]
        );
        // Another proxy makes the same result: the step is cached, not run again.
        let recorder = Arc::new(Recorder::default());
        session()
            .solve(
                &definition(step("http://other:8080"), None),
                recorder.clone(),
            )
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1, "not run again");
        assert_eq!(recorder.names(true), ["true"]);
    }
}
