//! The flags of `kiln build` read before the build opens its store: which flags go together,
//! what the build makes (its outputs and attestations) and what it is given (its locals,
//! secrets, SSH agents, entitlements and `--llb` Definition).

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kiln_exporters::{AttestationRequest, Output};
use kiln_llb::LoadedDefinition;

use super::{attest, check, dockerfile};
use crate::args::BuildArgs;

/// Refuses the flags that do not go together; the `--call` the build answers.
pub(super) fn call(args: &BuildArgs) -> anyhow::Result<check::Call> {
    if args.llb.is_some() && (!args.ulimit.is_empty() || args.cgroup_parent.is_some()) {
        bail!(
            "--ulimit and --cgroup-parent apply to the RUN steps of a Dockerfile; \
             an LLB Definition sets its own in each exec op (Meta.ulimit, Meta.cgroupParent)"
        );
    }
    if args.llb.is_some() {
        let given: Vec<&str> = [
            ("--label", !args.label.is_empty()),
            ("--add-host", !args.add_host.is_empty()),
            ("--network", args.network != "default"),
            ("--shm-size", args.shm_size.is_some()),
            ("--no-cache-filter", !args.no_cache_filter.is_empty()),
            ("--build-context", !args.build_context.is_empty()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !given.is_empty() {
            bail!(
                "{} apply to a Dockerfile build; an LLB Definition sets its own in its ops",
                given.join(", ")
            );
        }
    }
    let call = check::Call::from_args(args)?;
    if call != check::Call::Build && args.llb.is_some() {
        bail!(
            "--call={} reads a Dockerfile; an LLB Definition has no build checks or targets",
            if args.check { "check" } else { &args.call }
        );
    }
    Ok(call)
}

/// What a build makes and what it is given, as its flags say.
pub(super) struct Inputs {
    /// `-o`, `-t` and `--push`.
    pub(super) outputs: Vec<Output>,
    /// `--provenance`, `--sbom` and `--attest`.
    pub(super) attest: AttestationRequest,
    /// The context directory of a Dockerfile build (none for an LLB Definition).
    pub(super) context: Option<PathBuf>,
    /// The local sources by name: the context, the named contexts and `--local`.
    pub(super) locals: HashMap<String, PathBuf>,
    pub(super) secrets: HashMap<String, Vec<u8>>,
    /// The SSH agents' sockets by id.
    pub(super) ssh: HashMap<String, PathBuf>,
    pub(super) entitlements: kiln_solver::Entitlements,
}

impl Inputs {
    pub(super) fn read(args: &BuildArgs) -> anyhow::Result<Self> {
        if args.no_cache && !args.no_cache_filter.is_empty() {
            bail!("--no-cache and --no-cache-filter cannot currently be used together");
        }
        let outputs = kiln_exporters::outputs_from_args(&args.output, &args.tag, args.push)?;
        let attest = attest::requested(args, attest::pushes(&outputs))?;
        let mut locals = HashMap::new();
        let context = match &args.llb {
            Some(_) => None,
            None => Some(dockerfile::context_dir(args)?),
        };
        if let Some(dir) = &context {
            locals.insert("context".to_owned(), dir.clone());
            for named in dockerfile::named_contexts(args)?.1 {
                locals.insert(named.name, named.dir);
            }
        }
        add_locals(args, &mut locals)?;
        Ok(Self {
            outputs,
            attest,
            context,
            locals,
            secrets: secrets(args)?,
            ssh: ssh_agents(args)?,
            entitlements: parse_entitlements(&args.allow)?,
        })
    }
}

/// Adds the local sources of `--local NAME=DIR` to `locals`.
pub(super) fn add_locals(
    args: &BuildArgs,
    locals: &mut HashMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for local in &args.local {
        let (name, dir) = pair("--local", local)?;
        let dir = fs_err::canonicalize(dir).with_context(|| format!("local source {name}"))?;
        locals.insert(name.to_owned(), dir);
    }
    Ok(())
}

/// The secrets of `--secret`, by id.
pub(super) fn secrets(args: &BuildArgs) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    args.secret.iter().map(|s| parse_secret(s)).collect()
}

/// The SSH agents of `--ssh`, by id.
pub(super) fn ssh_agents(args: &BuildArgs) -> anyhow::Result<HashMap<String, PathBuf>> {
    args.ssh.iter().map(|s| parse_ssh(s)).collect()
}

/// Parses `NAME=VALUE`.
fn pair<'a>(flag: &str, text: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .with_context(|| format!("invalid {flag} {text:?}: expected NAME=VALUE"))
}

/// Parses `id=ID,src=PATH` or `id=ID,env=VAR` into the secret's bytes.
fn parse_secret(text: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut data = None;
    for part in text.split(',') {
        let (k, v) = pair("--secret", part)?;
        match k {
            "id" => id = Some(v.to_owned()),
            "src" | "source" => {
                data = Some(fs_err::read(v).with_context(|| format!("reading secret {v}"))?);
            }
            "env" => {
                data = Some(
                    std::env::var(v)
                        .with_context(|| format!("secret environment variable {v} is not set"))?
                        .into_bytes(),
                );
            }
            "type" => {}
            _ => bail!("unexpected key {k:?} in --secret {text:?}"),
        }
    }
    let id = id.with_context(|| format!("--secret {text:?} has no id=..."))?;
    let data = match data {
        Some(d) => d,
        None => std::env::var(&id)
            .map(String::into_bytes)
            .with_context(|| format!("--secret {text:?} has no src=... or env=..."))?,
    };
    Ok((id, data))
}

/// Parses `--ssh default|ID[=SOCKET|KEY[,KEY...]]` (docker buildx's form) into the id and the
/// agent socket; without a path, the agent is `$SSH_AUTH_SOCK`. Key files would need an agent
/// run by kiln itself, which it does not have: they are refused with a hint.
fn parse_ssh(text: &str) -> anyhow::Result<(String, PathBuf)> {
    let (id, paths) = match text.split_once('=') {
        Some((id, paths)) => (id, paths),
        None => (text, ""),
    };
    if id.is_empty() {
        bail!("invalid --ssh {text:?}: expected default|ID[=SOCKET]");
    }
    let paths: Vec<&str> = paths.split(',').filter(|p| !p.is_empty()).collect();
    let socket = match paths.as_slice() {
        [] => std::env::var_os("SSH_AUTH_SOCK")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .with_context(|| {
                format!(
                    "--ssh {text:?}: invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set"
                )
            })?,
        [one] => PathBuf::from(one),
        _ => bail!(
            "--ssh {text:?}: SSH key files are not supported (kiln cannot run an SSH agent in-process); \
             hint: load the keys with `ssh-add` into an ssh-agent and pass --ssh {id}=$SSH_AUTH_SOCK"
        ),
    };
    use std::os::unix::fs::FileTypeExt as _;
    let meta = fs_err::metadata(&socket).with_context(|| format!("--ssh {text:?}"))?;
    if !meta.file_type().is_socket() {
        bail!(
            "--ssh {text:?}: {} is not an agent socket; SSH key files are not supported (kiln cannot run an SSH agent in-process); \
             hint: load the key with `ssh-add` into an ssh-agent and pass --ssh {id}=$SSH_AUTH_SOCK",
            socket.display()
        );
    }
    Ok((id.to_owned(), socket))
}

/// The LLB Definition of `--llb` (`-`: standard input).
pub(super) fn read_definition(path: &Path) -> anyhow::Result<LoadedDefinition> {
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Definition from standard input")?;
        buf
    } else {
        fs_err::read(path)?
    };
    LoadedDefinition::from_bytes(&bytes)
        .with_context(|| format!("loading the LLB Definition {}", path.display()))
}

/// `--allow` values, as buildx names them.
pub(super) fn parse_entitlements(values: &[String]) -> anyhow::Result<kiln_solver::Entitlements> {
    let mut entitlements = kiln_solver::Entitlements::default();
    for value in values {
        match value.as_str() {
            "network.host" => entitlements.network_host = true,
            "security.insecure" => entitlements.security_insecure = true,
            other => anyhow::bail!("invalid entitlement: {other}"),
        }
    }
    Ok(entitlements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        fs_err::write(&file, "s3cret").unwrap();
        let (id, data) = parse_secret(&format!("id=tok,src={}", file.display())).unwrap();
        assert_eq!(
            (id.as_str(), data.as_slice()),
            ("tok", b"s3cret".as_slice())
        );
        let err = parse_secret("src=/nowhere").unwrap_err().to_string();
        assert!(err.contains("reading secret /nowhere"), "{err}");
        let err = parse_secret("id=x,bogus=1").unwrap_err().to_string();
        assert_eq!(err, "unexpected key \"bogus\" in --secret \"id=x,bogus=1\"");
    }

    #[test]
    fn ssh_agents_are_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (id, path) = parse_ssh(&format!("deploy={}", socket.display())).unwrap();
        assert_eq!((id.as_str(), path.as_path()), ("deploy", socket.as_path()));
        // A key file is refused, saying why.
        let key = dir.path().join("id_ed25519");
        fs_err::write(&key, "key").unwrap();
        let err = parse_ssh(&format!("default={}", key.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kiln cannot run an SSH agent in-process"),
            "{err}"
        );
        let err = parse_ssh("default=/a,/b").unwrap_err().to_string();
        assert!(err.contains("SSH key files are not supported"), "{err}");
        assert!(parse_ssh("=x").is_err());
    }
}
