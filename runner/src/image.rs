//! `kiln run`: turning an image's config plus Docker-style overrides into a [`Spec`].

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::spec::{Rootfs, Spec};

/// The parts of an OCI image config that decide what `kiln run` executes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=value`).
    pub env: Vec<String>,
    /// `WorkingDir` (empty means `/`).
    pub working_dir: String,
    /// `User` (empty means root).
    pub user: String,
}

/// `docker run` options that override the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOverrides {
    /// `--entrypoint`: replaces the image's Entrypoint and resets its Cmd; `Some(vec![])`
    /// (`--entrypoint ""`) clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the image name: replace Cmd.
    pub args: Vec<String>,
    /// `-e KEY=value`: set or replace a variable (a bare `KEY` removes it).
    pub env: Vec<String>,
    /// `-w`: working directory.
    pub workdir: Option<String>,
    /// `-u`: user.
    pub user: Option<String>,
    /// `-h`: hostname.
    pub hostname: Option<String>,
}

/// Builds the spec `docker run` semantics give for `config` with `overrides` over `rootfs`.
/// Everything else in the spec keeps [`Spec::new`]'s defaults, for the caller to adjust.
pub fn run_spec(config: &ImageConfig, overrides: &RunOverrides, rootfs: Rootfs) -> Result<Spec> {
    let entrypoint = overrides.entrypoint.as_ref().unwrap_or(&config.entrypoint);
    let cmd: &[String] = if !overrides.args.is_empty() {
        &overrides.args
    } else if overrides.entrypoint.is_some() {
        &[]
    } else {
        &config.cmd
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    let mut env = config.env.clone();
    for entry in &overrides.env {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        if entry.contains('=') {
            env.push(entry.clone());
        }
    }
    let workdir = overrides
        .workdir
        .clone()
        .unwrap_or_else(|| config.working_dir.clone());
    let mut spec = Spec::new(rootfs, args);
    spec.env = env;
    spec.cwd = PathBuf::from(if workdir.is_empty() { "/" } else { &workdir });
    spec.user = overrides
        .user
        .clone()
        .unwrap_or_else(|| config.user.clone());
    if let Some(hostname) = &overrides.hostname {
        spec.hostname = hostname.clone();
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn config() -> ImageConfig {
        ImageConfig {
            entrypoint: v(&["/entry.sh"]),
            cmd: v(&["serve", "--port", "80"]),
            env: v(&["PATH=/bin", "MODE=prod"]),
            working_dir: "/app".to_owned(),
            user: "app".to_owned(),
        }
    }

    fn rootfs() -> Rootfs {
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: false,
        }
    }

    #[test]
    fn image_defaults() {
        let spec = run_spec(&config(), &RunOverrides::default(), rootfs()).unwrap();
        assert_eq!(spec.args, v(&["/entry.sh", "serve", "--port", "80"]));
        assert_eq!(spec.env, v(&["PATH=/bin", "MODE=prod"]));
        assert_eq!(spec.cwd, PathBuf::from("/app"));
        assert_eq!(spec.user, "app");
    }

    #[test]
    fn args_replace_cmd_only() {
        let o = RunOverrides {
            args: v(&["debug"]),
            ..RunOverrides::default()
        };
        assert_eq!(
            run_spec(&config(), &o, rootfs()).unwrap().args,
            v(&["/entry.sh", "debug"])
        );
    }

    #[test]
    fn entrypoint_resets_cmd() {
        let o = RunOverrides {
            entrypoint: Some(v(&["/bin/sh"])),
            ..RunOverrides::default()
        };
        assert_eq!(
            run_spec(&config(), &o, rootfs()).unwrap().args,
            v(&["/bin/sh"])
        );
        let o = RunOverrides {
            entrypoint: Some(v(&["/bin/sh"])),
            args: v(&["-c", "id"]),
            ..RunOverrides::default()
        };
        assert_eq!(
            run_spec(&config(), &o, rootfs()).unwrap().args,
            v(&["/bin/sh", "-c", "id"])
        );
        let o = RunOverrides {
            entrypoint: Some(vec![]),
            ..RunOverrides::default()
        };
        assert!(matches!(
            run_spec(&config(), &o, rootfs()),
            Err(Error::NoCommand)
        ));
        let o = RunOverrides {
            entrypoint: Some(vec![]),
            args: v(&["ls"]),
            ..RunOverrides::default()
        };
        assert_eq!(run_spec(&config(), &o, rootfs()).unwrap().args, v(&["ls"]));
    }

    #[test]
    fn env_workdir_user_overrides() {
        let o = RunOverrides {
            env: v(&["MODE=dev", "EXTRA=1", "PATH"]),
            workdir: Some("/tmp/w".to_owned()),
            user: Some("1000:1000".to_owned()),
            hostname: Some("box".to_owned()),
            ..RunOverrides::default()
        };
        let spec = run_spec(&config(), &o, rootfs()).unwrap();
        assert_eq!(spec.env, v(&["MODE=dev", "EXTRA=1"]));
        assert_eq!(spec.cwd, PathBuf::from("/tmp/w"));
        assert_eq!(spec.user, "1000:1000");
        assert_eq!(spec.hostname, "box");
    }

    #[test]
    fn empty_config_without_args_fails() {
        let err =
            run_spec(&ImageConfig::default(), &RunOverrides::default(), rootfs()).unwrap_err();
        assert!(err.to_string().starts_with("no command specified"));
    }
}
