//! `kiln build CONTEXT`: reads the Dockerfile (or kiln.yaml file) and `.dockerignore`, converts
//! them to LLB with `kiln_frontend::convert` (`kiln_frontend::convert_yaml`), resolving base images through the content store
//! (`kiln_engine::StoreResolver`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_cache::{PullOptions, Store};
use kiln_engine::StoreResolver;
use kiln_frontend::{ConvertOptions, Converted, NamedContext};
use kiln_llb::pb;

use crate::args::BuildArgs;

/// The Dockerfile of a build: where it is (`-` for standard input), and its bytes.
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) bytes: Vec<u8>,
}

/// Reads the Dockerfile of a build (`-f`, or `CONTEXT/Dockerfile`).
/// The build file of a context without `-f`: its `Dockerfile`, else its `kiln.yaml` (or
/// `kiln.yml`) when it has no Dockerfile.
fn default_file(context: &Path) -> PathBuf {
    let dockerfile = context.join("Dockerfile");
    if fs_err::symlink_metadata(&dockerfile).is_ok() {
        return dockerfile;
    }
    ["kiln.yaml", "kiln.yml"]
        .into_iter()
        .map(|name| context.join(name))
        .find(|path| path.is_file())
        .unwrap_or(dockerfile)
}

pub(super) fn read_dockerfile(args: &BuildArgs, context: &Path) -> anyhow::Result<Source> {
    let path = args.file.clone().unwrap_or_else(|| default_file(context));
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from standard input")?;
        return Ok(Source { path, bytes });
    }
    // A frontend image or command reads the file itself, if it needs one.
    let optional = args.frontend_exec.is_some() || args.frontend.as_deref() == Some("gateway.v0");
    let bytes = match fs_err::read(&path) {
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        read => read.context("reading the Dockerfile")?,
    };
    Ok(Source { path, bytes })
}

/// The `.dockerignore` patterns: `<Dockerfile>.dockerignore` beside the Dockerfile wins over
/// `CONTEXT/.dockerignore`.
fn read_excludes(dockerfile: &Path, context: &Path) -> anyhow::Result<Vec<String>> {
    let read = |p: PathBuf| -> anyhow::Result<Option<String>> {
        match fs_err::read_to_string(&p) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let specific = match dockerfile.file_name() {
        Some(name) if dockerfile != Path::new("-") => {
            let mut name = name.to_os_string();
            name.push(".dockerignore");
            read(dockerfile.with_file_name(name))?
        }
        _ => None,
    };
    let general = read(context.join(".dockerignore"))?;
    Ok(
        kiln_frontend::select_dockerignore(specific.as_deref(), general.as_deref())
            .map(kiln_frontend::parse_dockerignore)
            .unwrap_or_default(),
    )
}

/// Parses `--build-arg NAME=VALUE` (a bare `NAME` takes the value from the environment).
fn build_args(args: &BuildArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for text in &args.build_arg {
        match text.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg {text:?}: expected NAME=VALUE"),
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(text) {
                    out.insert(text.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// Parses `--label KEY=VALUE` as buildx does (a bare `KEY` is an empty value).
fn labels(args: &BuildArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for text in &args.label {
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        if key.is_empty() {
            bail!("invalid key-value pair {text:?}: empty key");
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

/// The `--add-host` entries; `host-gateway` is the gateway of the network RUN steps use.
fn extra_hosts(args: &BuildArgs) -> anyhow::Result<Vec<(String, IpAddr)>> {
    crate::args::add_hosts(&args.add_host, kiln_runner::net::DEFAULT_GATEWAY.0.into())
}

/// Parses `--network`, as buildx takes it.
fn network(args: &BuildArgs) -> anyhow::Result<pb::NetMode> {
    match args.network.as_str() {
        "" | "default" => Ok(pb::NetMode::Unset),
        "none" => Ok(pb::NetMode::None),
        "host" => Ok(pb::NetMode::Host),
        other => {
            bail!("network mode {other:?} not supported by kiln; hint: use default, none or host")
        }
    }
}

/// Parses `--shm-size` (a size as docker takes it; 0 or absent: the executor's default).
fn shm_size(args: &BuildArgs) -> anyhow::Result<u64> {
    let Some(text) = &args.shm_size else {
        return Ok(0);
    };
    kiln_cache::parse_size(text)
        .with_context(|| format!("invalid argument {text:?} for \"--shm-size\" flag"))
}

/// A `--build-context` directory: the local source it becomes and the directory.
pub(super) struct NamedLocal {
    pub(super) name: String,
    pub(super) dir: PathBuf,
}

/// Parses `--build-context NAME=VALUE` as buildx does: `docker-image://REF` is an image, a
/// path a directory (the local source NAME); the other sources buildx takes are refused.
pub(super) fn named_contexts(
    args: &BuildArgs,
) -> anyhow::Result<(BTreeMap<String, NamedContext>, Vec<NamedLocal>)> {
    let mut contexts = BTreeMap::new();
    let mut locals = Vec::new();
    for text in &args.build_context {
        let (name, value) = text
            .split_once('=')
            .filter(|(name, value)| !name.is_empty() && !value.is_empty())
            .with_context(|| format!("invalid context value: {text}, expected key=value"))?;
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            NamedContext::Image(reference.to_owned())
        } else if value.contains("://") || value.starts_with("git@") {
            bail!(
                "--build-context {text}: kiln takes a directory or docker-image://REF \
                 (oci-layout://, git and URL contexts are not supported yet)"
            );
        } else {
            if name == "context" || name == "dockerfile" {
                bail!("--build-context {text}: the name {name:?} is the build's own context");
            }
            let dir =
                fs_err::canonicalize(value).with_context(|| format!("--build-context {text}"))?;
            if !dir.is_dir() {
                bail!(
                    "--build-context {text}: {} is not a directory",
                    dir.display()
                );
            }
            locals.push(NamedLocal {
                name: name.to_owned(),
                dir,
            });
            NamedContext::Local(name.to_owned())
        };
        contexts.insert(name.to_owned(), context);
    }
    Ok((contexts, locals))
}

/// The build context directory named on the command line.
pub(super) fn context_dir(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    let Some(context) = &args.context else {
        bail!("kiln build needs a CONTEXT directory (or --llb FILE)");
    };
    fs_err::canonicalize(context).context("opening the build context")
}

/// The platforms `--platform` names, each once, in order (this host's without the flag).
pub(super) fn platforms(args: &BuildArgs) -> anyhow::Result<Vec<kiln_llb::Platform>> {
    let mut platforms = Vec::new();
    for text in args
        .platform
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
    {
        let platform = kiln_llb::Platform::parse(text)?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    if platforms.is_empty() {
        platforms.push(kiln_llb::Platform::host());
    }
    Ok(platforms)
}

/// The conversion options `args` ask for (for the first platform), for the Dockerfile `source` in `context`.
pub(super) fn options(
    args: &BuildArgs,
    source: &Source,
    context: &Path,
) -> anyhow::Result<ConvertOptions> {
    let platform = platforms(args)?.remove(0);
    Ok(ConvertOptions {
        platform: platform.to_pb(),
        build_platform: kiln_llb::Platform::host().to_pb(),
        target: args.target.clone(),
        build_args: build_args(args)?,
        excludes: read_excludes(&source.path, context)?,
        file_name: source
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".to_owned()),
        ulimits: args
            .ulimit
            .iter()
            .map(|u| pb::Ulimit {
                name: u.name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect(),
        cgroup_parent: args.cgroup_parent.clone(),
        labels: labels(args)?,
        extra_hosts: extra_hosts(args)?,
        network: network(args)?,
        shm_size: shm_size(args)?,
        no_cache_stages: args.no_cache_filter.clone(),
        named_contexts: named_contexts(args)?.0,
        ..ConvertOptions::default()
    })
}

/// Converts the Dockerfile `source` with the built-in frontend into a Definition and an
/// image configuration.
pub(super) fn convert(
    source: &Source,
    options: &ConvertOptions,
    store: Arc<Store>,
    pull: &PullOptions,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Converted> {
    let resolver = StoreResolver::new(store, pull.clone(), runtime.handle().clone());
    if kiln_frontend::is_kiln_yaml(&options.file_name, &source.bytes) {
        return Ok(kiln_frontend::convert_yaml(
            &source.bytes,
            options,
            &resolver,
        )?);
    }
    Ok(kiln_frontend::convert(&source.bytes, options, &resolver)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::build::parse_build_args as parse;

    #[test]
    fn build_args_and_ignore_files() {
        let args = parse(&["--build-arg", "A=1", "--build-arg", "B=x=y", "ctx"]);
        let parsed = build_args(&args).unwrap();
        assert_eq!(parsed["A"], "1");
        assert_eq!(parsed["B"], "x=y");
        assert!(build_args(&parse(&["--build-arg", "=v", "ctx"])).is_err());

        let parsed = labels(&parse(&["--label", "a=1=2", "--label", "bare", "ctx"])).unwrap();
        assert_eq!(parsed["a"], "1=2");
        assert_eq!(parsed["bare"], "");
        let err = labels(&parse(&["--label", "=v", "ctx"])).unwrap_err();
        assert_eq!(err.to_string(), "invalid key-value pair \"=v\": empty key");

        let hosts = |argv: &[&str]| {
            let mut full = Vec::new();
            for host in argv {
                full.extend(["--add-host", host]);
            }
            full.push("ctx");
            extra_hosts(&parse(&full)).map_err(|e| format!("{e:#}"))
        };
        let parsed = hosts(&["a:10.0.0.1", "b=[2001:db8::1]", "c=10.0.0.2,10.0.0.3"]).unwrap();
        let shown: Vec<String> = parsed.iter().map(|(h, ip)| format!("{h} {ip}")).collect();
        assert_eq!(
            shown,
            ["a 10.0.0.1", "b 2001:db8::1", "c 10.0.0.2", "c 10.0.0.3"]
        );
        assert_eq!(network(&parse(&["ctx"])).unwrap(), pb::NetMode::Unset);
        assert_eq!(
            network(&parse(&["--network=none", "ctx"])).unwrap(),
            pb::NetMode::None
        );
        assert_eq!(
            network(&parse(&["--network", "bridge", "ctx"]))
                .unwrap_err()
                .to_string(),
            "network mode \"bridge\" not supported by kiln; hint: use default, none or host"
        );

        assert_eq!(shm_size(&parse(&["ctx"])).unwrap(), 0);
        assert_eq!(
            shm_size(&parse(&["--shm-size", "128m", "ctx"])).unwrap(),
            128 << 20
        );
        assert_eq!(
            shm_size(&parse(&["--shm-size=lots", "ctx"]))
                .unwrap_err()
                .to_string(),
            "invalid argument \"lots\" for \"--shm-size\" flag"
        );

        for bad in ["nohost", "=1.2.3.4", "a:", "a=not-an-ip"] {
            let err = hosts(&[bad]).unwrap_err();
            assert!(err.starts_with(&format!("invalid host {bad}")), "{err}");
        }

        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join(".dockerignore"), "general\n").unwrap();
        let dockerfile = dir.path().join("app.Dockerfile");
        assert_eq!(read_excludes(&dockerfile, dir.path()).unwrap(), ["general"]);
        fs_err::write(
            dir.path().join("app.Dockerfile.dockerignore"),
            "/specific/\n",
        )
        .unwrap();
        assert_eq!(
            read_excludes(&dockerfile, dir.path()).unwrap(),
            ["specific"]
        );
    }
}
