//! `RUN`: the exec op of an instruction, with its heredocs, its mounts (bind, cache, tmpfs,
//! secret, SSH; sources from stages, images or the context), secret environment variables,
//! network and security modes, and its history entry with the stage's build arguments. A new
//! `RUN` flag or mount type goes here.

use std::collections::BTreeMap;

use kiln_llb::{Chown, FileAction, MkdirOptions, MountOptions, State, pb, scratch};

use super::dispatch::Step;
use super::{COMMAND_KEY, ConvertError, ConvertErrorKind, at, set_env};
use crate::dockerignore::clean_path;
use crate::instructions::{Command, NetworkMode, RunCommand, SecurityMode};
use crate::mount::{CacheSharing, Mount, MountType};
use crate::parser::{chomp_heredoc_content, parse_heredoc};

impl Step<'_, '_> {
    /// `RUN`: an exec op on the stage's state, which becomes its root filesystem.
    pub(super) fn dispatch_run(
        &mut self,
        cmd: &Command,
        run: &RunCommand,
        sources: &[Option<usize>],
    ) -> Result<(), ConvertError> {
        let loc = &cmd.location;
        let mut custom = cmd.code.clone();
        let mut args = run.cmd.cmd_line.clone();
        let mut mounts: Vec<(String, State, MountOptions)> = Vec::new();
        if let Some(first) = run.cmd.files.first() {
            let heredoc = args
                .first()
                .and_then(|a| parse_heredoc(a).ok().flatten())
                .filter(|_| args.len() == 1 && run.cmd.prepend_shell);
            if heredoc.is_some() {
                let data = if first.chomp {
                    chomp_heredoc_content(&first.data)
                } else {
                    first.data.clone()
                };
                if data.starts_with("#!") {
                    let file = scratch()
                        .file(FileAction::mkfile(
                            &format!("/{}", first.name),
                            0o755,
                            data.as_bytes(),
                        ))
                        .with_custom_name("[internal] preparing inline document");
                    mounts.push((
                        "/dev/pipes/".to_owned(),
                        file,
                        MountOptions {
                            readonly: true,
                            selector: Some("/".to_owned()),
                            ..MountOptions::default()
                        },
                    ));
                    args = vec![format!("/dev/pipes/{}", first.name)];
                } else {
                    args = vec![data];
                }
                let trimmed = first.data.trim();
                let normalized = trimmed.replace("\r\n", "\n");
                let mut lines = normalized.split('\n');
                let mut summary = lines.next().unwrap_or_default().to_owned();
                if lines.next().is_some() {
                    summary.push_str("...");
                }
                custom.push_str(&format!(" ({summary})"));
            } else {
                let mut text = args.first().cloned().unwrap_or_default();
                for file in &run.cmd.files {
                    text.push('\n');
                    text.push_str(&file.data);
                    text.push_str(&file.name);
                }
                args = vec![text];
            }
        }
        if run.cmd.prepend_shell {
            args = self.with_shell(&args);
        }

        // Mounts, expanded against the stage environment.
        let env = self.d.env.clone();
        let lexer = *self.plan.lexer;
        let mut expand = |s: &str| lexer.process_word(s, &env);
        let parsed: Vec<Mount> = run.mounts(&mut expand).map_err(|e| at(loc, e))?;
        // Secrets exposed as environment variables: (id, variable, optional).
        let mut secret_envs: Vec<(String, String, bool)> = Vec::new();
        let mut ssh_count = 0usize;
        let mut first_ssh: Option<String> = None;
        for (i, mount) in parsed.iter().enumerate() {
            let mut state = match sources.get(i).copied().flatten() {
                Some(j) => self.source_state(j, loc, &mount.from, Some(&mount.target))?,
                None if mount.kind == MountType::Cache => scratch(),
                None => self.context.clone(),
            };
            let mut options = MountOptions::default();
            match mount.kind {
                MountType::Secret => {
                    let mut id = mount.cache_id.clone();
                    if !mount.source.is_empty() {
                        id = mount.source.clone();
                    }
                    if id.is_empty() {
                        if mount.target.is_empty() {
                            return Err(at(loc, ConvertErrorKind::SecretWithoutTarget));
                        }
                        id = mount
                            .target
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                    }
                    if let Some(name) = &mount.env {
                        secret_envs.push((id.clone(), name.clone(), !mount.required));
                        // With `env=` alone the secret is only in the environment.
                        if mount.target.is_empty() {
                            continue;
                        }
                    }
                    let target = if mount.target.is_empty() {
                        format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or_default())
                    } else {
                        mount.target.clone()
                    };
                    options.secret = Some(pb::SecretOpt {
                        id,
                        uid: mount.uid.unwrap_or(0),
                        gid: mount.gid.unwrap_or(0),
                        mode: mount.mode.unwrap_or(0o400),
                        optional: !mount.required,
                    });
                    mounts.push((target, scratch(), options));
                    continue;
                }
                MountType::Ssh => {
                    if !mount.source.is_empty() {
                        return Err(at(loc, ConvertErrorKind::SshSource));
                    }
                    // BuildKit's `AddSSHSocket`: socket targets default to
                    // `/run/buildkit/ssh_agent.N`, N counting the step's ssh mounts.
                    let target = if mount.target.is_empty() {
                        format!("/run/buildkit/ssh_agent.{ssh_count}")
                    } else {
                        mount.target.clone()
                    };
                    ssh_count += 1;
                    options.ssh = Some(pb::SshOpt {
                        id: mount.cache_id.clone(),
                        uid: mount.uid.unwrap_or(0),
                        gid: mount.gid.unwrap_or(0),
                        mode: mount.mode.unwrap_or(0o600),
                        optional: !mount.required,
                    });
                    first_ssh.get_or_insert_with(|| target.clone());
                    mounts.push((target, scratch(), options));
                    continue;
                }
                MountType::Tmpfs => {
                    state = scratch();
                    options.tmpfs = Some(mount.size_limit);
                }
                _ => {}
            }
            if mount.read_only {
                options.readonly = true;
            }
            if mount.kind == MountType::Cache {
                let sharing = match mount.cache_sharing {
                    Some(CacheSharing::Private) => pb::CacheSharingOpt::Private,
                    Some(CacheSharing::Locked) => pb::CacheSharingOpt::Locked,
                    _ => pb::CacheSharingOpt::Shared,
                };
                let id = if mount.cache_id.is_empty() {
                    clean_path(&mount.target)
                } else {
                    mount.cache_id.clone()
                };
                options.cache = Some((format!("/{id}"), sharing));
            }
            let target = if mount.target.starts_with('/') {
                clean_path(&mount.target)
            } else {
                clean_path(&format!("/{}/{}", self.d.cwd, mount.target))
            };
            if target == "/" {
                return Err(at(loc, ConvertErrorKind::InvalidMountTarget { target }));
            }
            let source = clean_path(&format!("/{}", mount.source));
            if source != "/" {
                options.selector = Some(source.clone());
            } else if mount.uid.is_some() || mount.gid.is_some() || mount.mode.is_some() {
                // BuildKit's setCacheUIDGID: the mount shows a `/cache` directory made with
                // the requested owner and mode on top of the source.
                let owner = Chown {
                    user: Some(pb::user_opt::User::ById(mount.uid.unwrap_or(0))),
                    group: Some(pb::user_opt::User::ById(mount.gid.unwrap_or(0))),
                };
                state = state
                    .file(FileAction::mkdir(
                        "/cache",
                        mount.mode.unwrap_or(0o755),
                        MkdirOptions {
                            owner: Some(owner),
                            ..MkdirOptions::default()
                        },
                    ))
                    .with_custom_name("[internal] settings cache mount permissions");
                options.selector = Some("/cache".to_owned());
            }
            // As in BuildKit, a mount without `from` reads its source from the context (a
            // cache without `from` starts empty instead; a tmpfs counts as reading `/`).
            if mount.kind != MountType::Cache && sources.get(i).copied().flatten().is_none() {
                self.context_paths.insert(source);
            }
            mounts.push((target, state, options));
        }

        // As BuildKit: the build's shared memory size is a tmpfs on /dev/shm, after the step's
        // own mounts.
        if self.plan.options.shm_size > 0 {
            mounts.push((
                "/dev/shm".to_owned(),
                scratch(),
                MountOptions {
                    tmpfs: Some(i64::try_from(self.plan.options.shm_size).unwrap_or(i64::MAX)),
                    ..MountOptions::default()
                },
            ));
        }

        // As BuildKit's `withSecretEnvMask`: secret variables show as `****` in the op's name.
        let name = if secret_envs.is_empty() {
            self.op_name(&custom, true)
        } else {
            let saved = self.d.env.clone();
            for (_, variable, _) in &secret_envs {
                set_env(&mut self.d.env, variable, "****");
            }
            let name = self.op_name(&custom, true);
            self.d.env = saved;
            name
        };
        let mut exec = self.d.state.run(args.clone());
        exec = exec.remove_mount_stubs_recursive(true);
        for (dest, state, options) in mounts {
            exec = exec.with_mount(&dest, state, options);
        }
        for (id, name, optional) in &secret_envs {
            exec = exec.secret_env(id, name, *optional);
        }
        // As BuildKit's exec op does: the first agent socket is `SSH_AUTH_SOCK` unless the
        // environment sets it already.
        if let Some(socket) = first_ssh {
            if crate::shell::Env::get(&self.d.env, "SSH_AUTH_SOCK").is_none() {
                exec = exec.env("SSH_AUTH_SOCK", &socket);
            }
        }
        match run.network {
            // As BuildKit: the build's network mode is the stage's, which `RUN --network`
            // overrides.
            NetworkMode::Default => match self.plan.options.network {
                pb::NetMode::Unset => {}
                forced => exec = exec.network(forced),
            },
            NetworkMode::None => exec = exec.network(pb::NetMode::None),
            NetworkMode::Host => exec = exec.network(pb::NetMode::Host),
        }
        if run.security == SecurityMode::Insecure {
            exec = exec.security(pb::SecurityMode::Insecure);
        }
        for ulimit in &self.plan.options.ulimits {
            exec = exec.add_ulimit(&ulimit.name, ulimit.soft, ulimit.hard);
        }
        if let Some(parent) = &self.plan.options.cgroup_parent {
            exec = exec.cgroup_parent(parent);
        }
        for (host, ip) in &self.plan.options.extra_hosts {
            exec = exec.add_extra_host(&host.to_lowercase(), &ip.to_string());
        }
        let code = cmd.code.clone();
        // As BuildKit's `IsNoCache`: the steps of a stage the build names run again.
        let ignore_cache = self
            .plan
            .options
            .no_cache_stages
            .iter()
            .any(|stage| stage.eq_ignore_ascii_case(&self.stage.name));
        self.d.state = exec.root().with_metadata(|m| {
            m.description.insert(COMMAND_KEY.to_owned(), code);
            m.description.insert(kiln_llb::CUSTOM_NAME.to_owned(), name);
            m.caps.insert("exec.meta.setsdefaultpath".to_owned(), true);
            if ignore_cache {
                m.ignore_cache = true;
                m.caps.insert("meta.ignorecache".to_owned(), true);
            }
        });

        // History: `RUN |N K=V ... args`, the stage's arguments first.
        let mut build_env: Vec<String> = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (key, value) in &self.d.build_args {
            let v = crate::shell::Env::get(&self.d.env, key)
                .map(str::to_owned)
                .or_else(|| value.clone())
                .unwrap_or_default();
            let entry = format!("{key}={v}");
            match seen.get(key) {
                Some(&i) => build_env[i] = entry,
                None => {
                    seen.insert(key.clone(), build_env.len());
                    build_env.push(entry);
                }
            }
        }
        let mut parts = Vec::new();
        if !build_env.is_empty() {
            parts.push(format!("|{}", build_env.len()));
            parts.extend(build_env);
        }
        parts.extend(args);
        self.d
            .history(format!("RUN {} # buildkit", parts.join(" ")), true);
        Ok(())
    }
}
