//! Exec ops: [`State::run`] starts an [`ExecState`], whose mounts (bind, cache, tmpfs, secret,
//! SSH), process settings and outputs are built into one `pb::ExecOp`. A new mount kind or
//! process setting goes here.

use std::sync::{Arc, OnceLock};

use super::{CUSTOM_NAME, Inputs, Node, State, caps, default_platform};
use crate::pb;

impl State {
    /// Starts an exec op running `args` with this state as its root filesystem.
    pub fn run<I, S>(&self, args: I) -> ExecState
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let meta = pb::Meta {
            args: args.into_iter().map(Into::into).collect(),
            env: self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: self.cwd.clone().unwrap_or_else(|| "/".to_owned()),
            user: self.user.clone().unwrap_or_default(),
            ..Default::default()
        };
        ExecState {
            base: self.clone(),
            meta,
            mounts: vec![("/".to_owned(), self.clone(), MountOptions::default())],
            network: pb::NetMode::Unset,
            security: pb::SecurityMode::Sandbox,
            secret_env: Vec::new(),
            metadata: caps(["exec.meta.base", "exec.mount.bind"]),
            node: OnceLock::new(),
        }
    }
}

/// Options of a mount added with [`ExecState::with_mount`].
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Mount read-only; the mount then produces no output.
    pub readonly: bool,
    /// Mount this path of the state instead of its root.
    pub selector: Option<String>,
    /// A cache mount with this id and sharing mode instead of a bind mount.
    pub cache: Option<(String, pb::CacheSharingOpt)>,
    /// A tmpfs mount (the state is ignored) with this size limit in bytes (0: no limit).
    pub tmpfs: Option<i64>,
    /// A secret mount (the state is ignored).
    pub secret: Option<pb::SecretOpt>,
    /// An SSH agent socket mount (the state is ignored).
    pub ssh: Option<pb::SshOpt>,
}

/// An exec op under construction; [`ExecState::root`] and [`ExecState::get_mount`] give its
/// outputs.
#[derive(Debug)]
pub struct ExecState {
    base: State,
    meta: pb::Meta,
    mounts: Vec<(String, State, MountOptions)>,
    network: pb::NetMode,
    security: pb::SecurityMode,
    secret_env: Vec<pb::SecretEnv>,
    metadata: pb::OpMetadata,
    node: OnceLock<BuiltExec>,
}

/// A finished exec node and the output index of each writable mount, by destination.
type BuiltExec = (Arc<Node>, Vec<(String, i64)>);

impl ExecState {
    /// Adds a mount of `state` at `dest` (replacing an earlier mount there).
    pub fn with_mount(mut self, dest: &str, state: State, options: MountOptions) -> Self {
        self.mounts.retain(|(d, _, _)| d != dest);
        self.mounts.push((dest.to_owned(), state, options));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        self.meta.env.retain(|e| !e.starts_with(&prefix));
        self.meta.env.push(format!("{key}={value}"));
        self
    }

    /// Sets the working directory of the process.
    pub fn cwd(mut self, dir: &str) -> Self {
        self.meta.cwd = dir.to_owned();
        self
    }

    /// Sets the user of the process.
    pub fn user(mut self, user: &str) -> Self {
        self.meta.user = user.to_owned();
        self
    }

    /// Sets the hostname of the container.
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.meta.hostname = hostname.to_owned();
        self
    }

    /// Adds an `/etc/hosts` entry of the process (BuildKit's `AddExtraHost`).
    pub fn add_extra_host(mut self, host: &str, ip: &str) -> Self {
        self.meta.extra_hosts.push(pb::HostIp {
            host: host.to_owned(),
            ip: ip.to_owned(),
        });
        self
    }

    /// Sets the network mode.
    pub fn network(mut self, mode: pb::NetMode) -> Self {
        self.network = mode;
        self
    }

    /// Sets the security mode.
    pub fn security(mut self, mode: pb::SecurityMode) -> Self {
        self.security = mode;
        self
    }

    /// Exposes secret `id` as the environment variable `name` of the process (`secretenv`);
    /// `optional` leaves it unset when the secret is missing.
    pub fn secret_env(mut self, id: &str, name: &str, optional: bool) -> Self {
        self.secret_env.push(pb::SecretEnv {
            id: id.to_owned(),
            name: name.to_owned(),
            optional,
        });
        self.metadata.caps.insert("exec.secretenv".to_owned(), true);
        self
    }

    /// Adds a resource limit of the process (BuildKit's `AddUlimit`): `name` as docker's
    /// `--ulimit` (`nofile`, `nproc`, ...), `-1` for unlimited.
    pub fn add_ulimit(mut self, name: &str, soft: i64, hard: i64) -> Self {
        self.meta.ulimit.push(pb::Ulimit {
            name: name.to_owned(),
            soft,
            hard,
        });
        self.metadata
            .caps
            .insert("exec.meta.ulimit".to_owned(), true);
        self
    }

    /// Puts the process's cgroup below `parent` (BuildKit's `WithCgroupParent`).
    pub fn cgroup_parent(mut self, parent: &str) -> Self {
        self.meta.cgroup_parent = parent.to_owned();
        self
    }

    /// Exit codes that count as success (default: only 0).
    pub fn valid_exit_codes(mut self, codes: &[i32]) -> Self {
        self.meta.valid_exit_codes = codes.to_vec();
        self
    }

    /// Removes empty mount-point stubs left in the root filesystem, recursively.
    pub fn remove_mount_stubs_recursive(mut self, remove: bool) -> Self {
        self.meta.remove_mount_stubs_recursive = remove;
        self
    }

    /// Names the op (`llb.customname`).
    pub fn with_custom_name(mut self, name: &str) -> Self {
        self.metadata
            .description
            .insert(CUSTOM_NAME.to_owned(), name.to_owned());
        self
    }

    /// The root filesystem after the process ran.
    pub fn root(&self) -> State {
        self.get_mount("/")
            .expect("an exec op always has a writable root mount")
    }

    /// The filesystem mounted at `dest` after the process ran, if that mount is writable.
    pub fn get_mount(&self, dest: &str) -> Option<State> {
        let (node, outputs) = self.node.get_or_init(|| self.build());
        let index = outputs.iter().find(|(d, _)| d == dest)?.1;
        Some(self.base.derive(Arc::clone(node), index))
    }

    fn build(&self) -> BuiltExec {
        // As BuildKit's exec op: filesystem mounts sorted by destination, then secret and then
        // SSH mounts in the order they were added.
        let group = |m: &&(String, State, MountOptions)| {
            if m.2.secret.is_some() {
                1
            } else if m.2.ssh.is_some() {
                2
            } else {
                0
            }
        };
        let mut mounts: Vec<&(String, State, MountOptions)> = self.mounts.iter().collect();
        mounts.sort_by(|a, b| {
            group(a).cmp(&group(b)).then_with(|| {
                if group(a) == 0 {
                    a.0.cmp(&b.0)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
        });
        let mut inputs = Inputs::default();
        let mut outputs = Vec::new();
        let mut pb_mounts = Vec::with_capacity(mounts.len());
        let mut metadata = self.metadata.clone();
        for (dest, state, options) in mounts {
            let mut mount = pb::Mount {
                dest: dest.clone(),
                selector: options.selector.clone().unwrap_or_default(),
                readonly: options.readonly,
                output: -1,
                ..Default::default()
            };
            if let Some(secret) = &options.secret {
                mount.input = -1;
                mount.mount_type = pb::MountType::Secret.into();
                mount.secret_opt = Some(secret.clone());
                metadata.caps.insert("exec.mount.secret".to_owned(), true);
            } else if let Some(ssh) = &options.ssh {
                mount.input = -1;
                mount.mount_type = pb::MountType::Ssh.into();
                mount.ssh_opt = Some(ssh.clone());
                metadata.caps.insert("exec.mount.ssh".to_owned(), true);
            } else if let Some(size) = options.tmpfs {
                mount.input = -1;
                mount.mount_type = pb::MountType::Tmpfs.into();
                mount.tmpfs_opt = Some(pb::TmpfsOpt { size });
                metadata.caps.insert("exec.mount.tmpfs".to_owned(), true);
            } else if let Some((id, sharing)) = &options.cache {
                mount.input = inputs.index(state);
                mount.mount_type = pb::MountType::Cache.into();
                mount.cache_opt = Some(pb::CacheOpt {
                    id: id.clone(),
                    sharing: (*sharing).into(),
                });
                metadata.caps.insert("exec.mount.cache".to_owned(), true);
            } else {
                mount.input = inputs.index(state);
                if !options.readonly {
                    mount.output = outputs.len() as i64;
                    outputs.push((dest.clone(), mount.output));
                }
                if !mount.selector.is_empty() {
                    metadata.caps.insert("exec.mount.selector".to_owned(), true);
                }
            }
            pb_mounts.push(mount);
        }
        let exec = pb::ExecOp {
            meta: Some(self.meta.clone()),
            mounts: pb_mounts,
            network: self.network.into(),
            security: self.security.into(),
            secretenv: self.secret_env.clone(),
            ..Default::default()
        };
        let node = Node {
            op: pb::Op {
                platform: Some(self.base.platform.clone().unwrap_or_else(default_platform)),
                constraints: Some(pb::WorkerConstraints::default()),
                op: Some(pb::op::Op::Exec(exec)),
                ..Default::default()
            },
            inputs: inputs.list,
            metadata,
        };
        (Arc::new(node), outputs)
    }
}
