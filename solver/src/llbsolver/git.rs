//! Git sources: `git://REMOTE[#REF[:SUBDIR]]`, cloned with the `git` binary.
//!
//! The remote is fetched from `git.fullurl` when the Definition carries one (a URL with its own
//! scheme, such as `https://`), else from `git://REMOTE`. The cache key is the op digest plus
//! the commit the ref resolves to (`git ls-remote`), so a moved branch is fetched again and an
//! unchanged one is not. `.git` is kept only with `git.keepgitdir=true`, as in BuildKit.
//!
//! SSH remotes (`user@host:path`, `ssh://`) authenticate with the build's forwarded SSH agent,
//! as BuildKit's git source does (`source/git/source.go`, `util/gitutil/git_cli.go`, read as
//! the model): `git.mountsshsock=ID` names the agent (`kiln build --ssh ID[=SOCKET]`), which git
//! reaches through `SSH_AUTH_SOCK`; no agent for that id is an error before anything is fetched.
//! `ssh` runs with `-F /dev/null` (no client configuration) and, when the Definition carries
//! `git.knownsshhosts`, checks the server against those lines only; without them the host key
//! is not checked (`StrictHostKeyChecking=no`), as in BuildKit. Two differences from BuildKit,
//! which runs git in a daemon with no terminal and a throwaway home: `BatchMode=yes` so that ssh
//! never prompts for a password on the user's terminal, and, without known hosts,
//! `UserKnownHostsFile=/dev/null` so that the user's own `~/.ssh/known_hosts` is not written.
//! An `SSH_AUTH_SOCK` inherited from kiln's own environment is never passed on: only an agent
//! the build was given is used.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;

use super::local::LocalFilter;
use super::{Ref, SessionConfig, blocking, scratch_dir, snapshot_from_dir};
use crate::scheduler::{CacheMap, Op, OpContext, OpError};

pub(super) struct GitSource {
    digest: String,
    url: String,
    reference: String,
    subdir: String,
    keep_git_dir: bool,
    /// `git.checksum`: a prefix the resolved commit must have.
    checksum: String,
    /// `git.mountsshsock`: the id of the session's SSH agent that ssh remotes use.
    ssh_id: Option<String>,
    /// `git.knownsshhosts`: `known_hosts` lines the SSH server's key must match.
    known_hosts: Option<String>,
    config: Arc<SessionConfig>,
}

impl GitSource {
    pub(super) fn new(digest: String, source: &pb::SourceOp, config: Arc<SessionConfig>) -> Self {
        let rest = source
            .identifier
            .strip_prefix("git://")
            .unwrap_or(&source.identifier);
        let (remote, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        let url = source
            .attrs
            .get("git.fullurl")
            .filter(|u| !u.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("git://{remote}"));
        Self {
            digest,
            url,
            reference: reference.to_owned(),
            subdir: subdir.trim_matches('/').to_owned(),
            keep_git_dir: source
                .attrs
                .get("git.keepgitdir")
                .is_some_and(|v| v == "true"),
            checksum: source
                .attrs
                .get("git.checksum")
                .cloned()
                .unwrap_or_default(),
            ssh_id: non_empty_attr(source, "git.mountsshsock"),
            known_hosts: non_empty_attr(source, "git.knownsshhosts"),
            config,
        }
    }

    /// How git reaches the remote: the SSH agent and known hosts this source asks for.
    fn transport(&self) -> Result<Transport, OpError> {
        let agent = match &self.ssh_id {
            None => None,
            Some(id) => Some(self.config.ssh.get(id).cloned().ok_or_else(|| {
                // BuildKit's wording, with how to forward one.
                format!(
                    "no SSH key {id:?} forwarded from the client (pass `--ssh {id}` or `--ssh {id}=SOCKET`)"
                )
            })?),
        };
        let known_hosts = match &self.known_hosts {
            None => None,
            Some(lines) => {
                // In the store's scratch space: a killed build's copy goes with it.
                let mut file = tempfile::Builder::new()
                    .prefix("known-hosts-")
                    .tempfile_in(scratch_dir(&self.config.store)?)?;
                std::io::Write::write_all(&mut file, lines.as_bytes())?;
                if !lines.ends_with('\n') {
                    std::io::Write::write_all(&mut file, b"\n")?;
                }
                Some(file.into_temp_path())
            }
        };
        Ok(Transport { agent, known_hosts })
    }
}

fn non_empty_attr(source: &pb::SourceOp, key: &str) -> Option<String> {
    source.attrs.get(key).filter(|v| !v.is_empty()).cloned()
}

/// The SSH side of running git: an agent socket and a known-hosts file (removed when dropped).
struct Transport {
    agent: Option<PathBuf>,
    known_hosts: Option<tempfile::TempPath>,
}

impl Transport {
    /// BuildKit's `getGitSSHCommand`, with `BatchMode` and no writes to the user's known hosts.
    fn ssh_command(&self) -> String {
        let mut command = String::from("ssh -F /dev/null -o BatchMode=yes");
        match &self.known_hosts {
            Some(path) => {
                command.push_str(" -o UserKnownHostsFile=");
                command.push_str(&shell_quote(&path.to_string_lossy()));
            }
            None => {
                command.push_str(" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null");
            }
        }
        command
    }

    fn apply(&self, command: &mut Command) {
        command
            .env("GIT_SSH_COMMAND", self.ssh_command())
            .env_remove("GIT_SSH")
            .env_remove("SSH_AUTH_SOCK");
        if let Some(agent) = &self.agent {
            command.env("SSH_AUTH_SOCK", agent);
        }
    }
}

/// `s` as one word for `sh` (git runs `GIT_SSH_COMMAND` through the shell).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The transports a remote may use (a Dockerfile's `git` sources allow no others).
const ALLOWED_PROTOCOLS: &str = "https:http:ssh:git";

/// Checks a remote from a Definition before git sees it: `https://`, `http://`, `ssh://`,
/// `git://` or scp-like `user@host:path` only, and nothing git could read as an option. Local
/// paths, `file://` and `ext::` (which runs a command) are refused.
fn check_remote(url: &str) -> Result<(), OpError> {
    let refuse = |why: &str| -> Result<(), OpError> {
        Err(format!("git remote {url:?} is not allowed: {why}").into())
    };
    if url.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if url.bytes().any(|b| b.is_ascii_control()) {
        return refuse("it contains control characters");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git") {
            return refuse("only https, http, ssh and git URLs are allowed");
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() || host.starts_with('-') || authority.starts_with('-') {
            return refuse("its host is missing or starts with `-`");
        }
        return Ok(());
    }
    if url.contains("::") {
        return refuse("remote helpers (`transport::address`) are not allowed");
    }
    // scp-like syntax: user@host:path, the host made of name characters.
    if let Some((user_host, path)) = url.split_once(':') {
        if let Some((user, host)) = user_host.split_once('@') {
            let name = |s: &str| {
                !s.is_empty()
                    && !s.starts_with('-')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            };
            if name(user) && name(host) && !path.is_empty() && !path.starts_with('-') {
                return Ok(());
            }
        }
    }
    refuse("only https, http, ssh and git URLs and user@host:path are allowed (no local paths)")
}

/// Checks a ref from a Definition: no option-like or control-character refs.
fn check_reference(reference: &str) -> Result<(), OpError> {
    if reference.starts_with('-') || reference.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("git ref {reference:?} is not allowed").into());
    }
    Ok(())
}

/// Runs git with `args`, returning its standard output; the error carries its standard error.
/// Only the allowed transports are usable, whatever the host's git configuration says.
fn git(transport: &Transport, args: &[&str], cwd: Option<&Path>) -> Result<String, OpError> {
    let mut command = Command::new("git");
    command
        .args(["-c", "protocol.allow=never"])
        .args(
            ALLOWED_PROTOCOLS
                .split(':')
                .flat_map(|p| ["-c".to_owned(), format!("protocol.{p}.allow=always")]),
        )
        .args(["-c", "core.hooksPath=/dev/null"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("GIT_PROTOCOL_FROM_USER", "0");
    transport.apply(&mut command);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let output = command
        .output()
        .map_err(|e| format!("running git (is it installed?): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "git {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn is_commit(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `reference` names at `url` (the remote's HEAD when it is empty).
fn resolve(transport: &Transport, url: &str, reference: &str) -> Result<String, OpError> {
    if is_commit(reference) {
        return Ok(reference.to_owned());
    }
    let wanted = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    let listing = git(transport, &["ls-remote", "--", url, wanted], None)?;
    // Prefer an exact ref, then a branch or a tag of that name (a peeled tag's commit first).
    let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    let pick = |name: &str| refs.iter().find(|(_, r)| *r == name).map(|(c, _)| *c);
    pick(&format!("refs/tags/{wanted}^{{}}"))
        .or_else(|| pick(wanted))
        .or_else(|| pick(&format!("refs/heads/{wanted}")))
        .or_else(|| pick(&format!("refs/tags/{wanted}")))
        .filter(|commit| is_commit(commit))
        .map(str::to_owned)
        .ok_or_else(|| format!("git ref {wanted:?} not found in {url}").into())
}

/// `url`'s commit for `reference`, checked against `checksum` as BuildKit checks
/// `git.checksum`: a hexadecimal prefix of the commit.
fn resolve_checked(
    transport: &Transport,
    url: &str,
    reference: &str,
    checksum: &str,
) -> Result<String, OpError> {
    check_remote(url)?;
    check_reference(reference)?;
    if !checksum.is_empty() && !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            format!("invalid checksum {checksum} for Git URL, expected hex commit hash").into(),
        );
    }
    let commit = resolve(transport, url, reference)?;
    if !commit.starts_with(checksum) {
        return Err(format!("expected checksum to match {checksum}, got {commit}").into());
    }
    Ok(commit)
}

impl Op<Ref> for GitSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        let (digest, url, reference, checksum) = (
            self.digest.clone(),
            self.url.clone(),
            self.reference.clone(),
            self.checksum.clone(),
        );
        let transport = self.transport();
        async move {
            let transport = transport?;
            let commit =
                blocking(move || resolve_checked(&transport, &url, &reference, &checksum)).await?;
            Ok(CacheMap {
                digest: format!("{digest}:{commit}"),
                deps: Vec::new(),
            })
        }
        .boxed()
    }

    fn exec(&self, _: OpContext, _: Vec<Ref>) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let (url, reference, subdir) = (
            self.url.clone(),
            self.reference.clone(),
            self.subdir.clone(),
        );
        let keep_git_dir = self.keep_git_dir;
        let checksum = self.checksum.clone();
        let store = self.config.store.clone();
        let transport = self.transport();
        async move {
            let transport = transport?;
            blocking(move || {
                let t = &transport;
                let commit = resolve_checked(t, &url, &reference, &checksum)?;
                let work = tempfile::Builder::new()
                    .prefix("git-")
                    .tempdir_in(scratch_dir(&store)?)?;
                let dir = work.path().join("checkout");
                let dir_str = dir.to_string_lossy().into_owned();
                git(t, &["init", "--quiet", &dir_str], None)?;
                git(t, &["remote", "add", "--", "origin", &url], Some(&dir))?;
                // A named ref is fetched shallowly; a bare commit may not be fetchable by id,
                // so then the whole history comes.
                if is_commit(&reference) {
                    git(t, &["fetch", "--quiet", "origin"], Some(&dir))?;
                } else {
                    git(
                        t,
                        &["fetch", "--quiet", "--depth", "1", "origin", &commit],
                        Some(&dir),
                    )
                    .or_else(|_| git(t, &["fetch", "--quiet", "origin"], Some(&dir)))?;
                }
                git(t, &["checkout", "--quiet", "--detach", &commit], Some(&dir))?;
                let source = if subdir.is_empty() {
                    dir.clone()
                } else {
                    // Found inside the checkout: links followed with it as `/`, as BuildKit.
                    let resolved = kiln_fsutil::Root::new(&dir).resolve(&subdir, true);
                    match resolved.ok().and_then(|r| r.entry) {
                        Some(entry) if entry.metadata.is_dir() => entry.host,
                        _ => {
                            return Err(format!("{subdir:?} is not a directory in {url}").into());
                        }
                    }
                };
                if !keep_git_dir {
                    fs_err::remove_dir_all(dir.join(".git"))?;
                }
                let everything = LocalFilter::from_attrs(&Default::default())?;
                let selected = everything.select(&source)?;
                Ok(vec![snapshot_from_dir(&store, &source, &selected, "git")?])
            })
            .await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh` makes of `word`: the quoting must give back the text unchanged.
    fn through_shell(word: &str) -> String {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {word}"))
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn only_dockerfile_remotes_are_allowed() {
        for ok in [
            "https://github.com/moby/buildkit.git",
            "http://127.0.0.1:9418/repo",
            "ssh://git@github.com/moby/buildkit.git",
            "git://127.0.0.1:9418/project",
            "git@github.com:moby/buildkit.git",
        ] {
            assert!(check_remote(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "file:///etc",
            "/etc",
            "./repo",
            "--upload-pack=touch /tmp/pwned",
            "-oProxyCommand=x",
            "ssh://-oProxyCommand=touch%20x/repo",
            "ssh://user@-oProxyCommand=x/repo",
            "git:///etc",
            "fd::3",
            "git@-oProxyCommand=x:repo",
            "user@host:-repo",
            "https://host/a\nb",
            "ftp://host/repo",
        ] {
            let err = check_remote(bad).expect_err(bad).to_string();
            assert!(err.contains("is not allowed"), "{bad}: {err}");
        }
        assert!(check_reference("main").is_ok());
        assert!(check_reference("--upload-pack=x").is_err());
        assert!(check_reference("a\nb").is_err());
    }

    #[test]
    fn quoted_paths_survive_the_shell() {
        for path in [
            "/tmp/plain",
            "/tmp/with space",
            "/tmp/it's",
            "/tmp/$HOME `x` \\ \"q\"",
        ] {
            assert_eq!(through_shell(&shell_quote(path)), path);
        }
    }

    #[test]
    fn ssh_checks_host_keys_only_with_known_hosts() {
        let without = Transport {
            agent: None,
            known_hosts: None,
        };
        assert_eq!(
            without.ssh_command(),
            "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        );
        let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let expected = format!(
            "ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={}",
            file.display()
        );
        let with = Transport {
            agent: None,
            known_hosts: Some(file),
        };
        // The path is quoted for the shell; unquoted it reads the same for a plain path.
        assert_eq!(with.ssh_command().replace('\'', ""), expected);
    }
}
