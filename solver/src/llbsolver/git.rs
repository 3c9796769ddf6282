//! Git sources: `git://REMOTE[#REF[:SUBDIR]]`, cloned with the `git` binary.
//!
//! The remote is fetched from `git.fullurl` when the Definition carries one (a URL with its own
//! scheme, such as `https://`), else from `git://REMOTE`. The cache key is the op digest plus
//! the commit the ref resolves to (`git ls-remote`), so a moved branch is fetched again and an
//! unchanged one is not. `.git` is kept only with `git.keepgitdir=true`, as in BuildKit.
//!
//! As in BuildKit, submodules are checked out (`git submodule update --init --recursive
//! --depth=1`) unless `git.skipsubmodules=true`, over the same transports as the repository
//! itself: the allowed protocols and hook settings reach the git processes that fetch them
//! through the environment, so a `.gitmodules` naming `file://`, a local path or `ext::` fails
//! the build. `git.fetchbycommit=true` takes the full commit in `git.checksum` without
//! resolving the ref; `git.mtime=commit` gives every file the commit's time. For HTTP remotes,
//! the session secrets `git.authheadersecret` and `git.authtokensecret` name (BuildKit's
//! `GIT_AUTH_HEADER` and `GIT_AUTH_TOKEN`, optionally suffixed `.HOST`) become an
//! `Authorization` header, passed to git in its environment.
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
use crate::error::Error;
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
    /// `git.skipsubmodules=true`: leave submodules out.
    skip_submodules: bool,
    /// `git.fetchbycommit=true`: `checksum` is the commit, fetched without resolving the ref.
    fetch_by_commit: bool,
    /// `git.mtime=commit`: every file gets the commit's time.
    commit_mtime: bool,
    /// `git.authheadersecret`: the secret whose value is an HTTP `Authorization` header.
    auth_header_secret: Option<String>,
    /// `git.authtokensecret`: the secret holding a token for HTTP basic authentication.
    auth_token_secret: Option<String>,
    config: Arc<SessionConfig>,
}

impl GitSource {
    pub(super) fn new(
        digest: String,
        source: &pb::SourceOp,
        config: Arc<SessionConfig>,
    ) -> Result<Self, String> {
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
        let commit_mtime = match source.attrs.get("git.mtime").map(String::as_str) {
            None | Some("" | "checkout") => false,
            Some("commit") => true,
            Some(other) => {
                return Err(format!(
                    "invalid git.mtime {other:?}: expected checkout or commit"
                ));
            }
        };
        let flag = |key: &str| source.attrs.get(key).is_some_and(|v| v == "true");
        Ok(Self {
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
            skip_submodules: flag("git.skipsubmodules"),
            fetch_by_commit: flag("git.fetchbycommit"),
            commit_mtime,
            auth_header_secret: non_empty_attr(source, "git.authheadersecret"),
            auth_token_secret: non_empty_attr(source, "git.authtokensecret"),
            config,
        })
    }

    /// The `http.<scope>.extraheader` setting that authenticates to an HTTP remote, from the
    /// first of BuildKit's secrets the session has: the header secret for the remote's host,
    /// the token secret for it, then the two without a host. A token becomes basic
    /// authentication as `x-access-token`; the scope is the remote itself (any github.com
    /// remote for a github.com one, as BuildKit does).
    fn auth(&self) -> Option<(String, String)> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let header = self.auth_header_secret.as_deref();
        let token = self.auth_token_secret.as_deref();
        let candidates = [
            header.map(|h| (format!("{h}.{host}"), false)),
            token.map(|t| (format!("{t}.{host}"), true)),
            header.map(|h| (h.to_owned(), false)),
            token.map(|t| (t.to_owned(), true)),
        ];
        let (value, is_token) = candidates
            .into_iter()
            .flatten()
            .find_map(|(name, is_token)| Some((self.config.secrets.get(&name)?, is_token)))?;
        let value = String::from_utf8_lossy(value);
        let header = if is_token {
            use base64::Engine as _;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{value}"));
            format!("Authorization: basic {encoded}")
        } else {
            format!("Authorization: {value}")
        };
        let scope = ["https://github.com/", "https://www.github.com/"]
            .into_iter()
            .find(|prefix| self.url.starts_with(prefix))
            .unwrap_or(&self.url);
        Some((format!("http.{scope}.extraheader"), header))
    }

    /// How git reaches the remote: the SSH agent and known hosts this source asks for.
    fn transport(&self) -> Result<Transport, Error> {
        let agent = match &self.ssh_id {
            None => None,
            // BuildKit's wording, with how to forward one.
            Some(id) => Some(
                self.config
                    .ssh
                    .get(id)
                    .cloned()
                    .ok_or_else(|| Error::NoSshAgent { id: id.clone() })?,
            ),
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
        Ok(Transport {
            agent,
            known_hosts,
            auth: self.auth(),
        })
    }
}

fn non_empty_attr(source: &pb::SourceOp, key: &str) -> Option<String> {
    source.attrs.get(key).filter(|v| !v.is_empty()).cloned()
}

/// How git reaches a remote: an SSH agent socket and a known-hosts file (removed when
/// dropped), and an HTTP authentication header.
struct Transport {
    agent: Option<PathBuf>,
    known_hosts: Option<tempfile::TempPath>,
    /// A git setting and its value (`http.URL.extraheader`, `Authorization: ...`), passed in
    /// the environment rather than on the command line, where any local user could read it.
    auth: Option<(String, String)>,
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
        if let Some((key, value)) = &self.auth {
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", key)
                .env("GIT_CONFIG_VALUE_0", value);
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
fn check_remote(url: &str) -> Result<(), Error> {
    let refuse = |reason: &'static str| -> Result<(), Error> {
        Err(Error::GitRemoteRefused {
            url: url.to_owned(),
            reason,
        })
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
fn check_reference(reference: &str) -> Result<(), Error> {
    if reference.starts_with('-') || reference.bytes().any(|b| b.is_ascii_control()) {
        return Err(Error::GitRefRefused {
            reference: reference.to_owned(),
        });
    }
    Ok(())
}

/// Runs git with `args`, returning its standard output; the error carries its standard error.
/// Only the allowed transports are usable, whatever the host's git configuration says.
fn git(transport: &Transport, args: &[&str], cwd: Option<&Path>) -> Result<String, Error> {
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
        .map_err(|error| Error::GitMissing { error })?;
    if !output.status.success() {
        return Err(Error::Git {
            command: args.first().copied().unwrap_or_default().to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn is_commit(reference: &str) -> bool {
    reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a ref of a remote names: its full name, the object it points at (an annotated tag's
/// own object), and the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    /// `refs/heads/main`, `refs/tags/v1`, ... (a commit names itself).
    name: String,
    /// The object the ref points at.
    object: String,
    /// The commit (the object, unless the ref is an annotated tag).
    commit: String,
}

/// The commit `reference` names at `url` (the remote's HEAD when it is empty).
fn resolve(transport: &Transport, url: &str, reference: &str) -> Result<String, Error> {
    resolve_ref(transport, url, reference).map(|r| r.commit)
}

/// What `reference` names at `url` (the remote's default branch when it is empty).
fn resolve_ref(transport: &Transport, url: &str, reference: &str) -> Result<Resolved, Error> {
    if is_commit(reference) {
        return Ok(Resolved {
            name: reference.to_owned(),
            object: reference.to_owned(),
            commit: reference.to_owned(),
        });
    }
    let wanted = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    // The peeled line of an annotated tag is listed only when asked for by name.
    let peeled = format!("{wanted}^{{}}");
    let listing = git(
        transport,
        &["ls-remote", "--symref", "--", url, wanted, &peeled],
        None,
    )?;
    pick_ref(&listing, wanted).ok_or_else(|| Error::GitRefNotFound {
        reference: wanted.to_owned(),
        url: url.to_owned(),
    })
}

/// The ref `wanted` in the output of `git ls-remote --symref`: an exact ref first, then a
/// branch, then a tag of that name (an annotated tag's commit is its peeled line); `HEAD`
/// is named by the branch it points at.
fn pick_ref(listing: &str, wanted: &str) -> Option<Resolved> {
    let refs: Vec<(&str, &str)> = listing
        .lines()
        .filter(|l| !l.starts_with("ref: "))
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let pick = |name: &str| refs.iter().find(|(_, r)| *r == name).map(|(c, _)| *c);
    let symref = |name: &str| {
        listing.lines().find_map(|l| {
            let (target, from) = l.strip_prefix("ref: ")?.split_once('\t')?;
            (from == name).then(|| target.to_owned())
        })
    };
    let (name, object) = [
        wanted.to_owned(),
        format!("refs/heads/{wanted}"),
        format!("refs/tags/{wanted}"),
    ]
    .into_iter()
    .find_map(|name| Some((pick(&name)?.to_owned(), name)))
    .map(|(object, name)| (name, object))?;
    // An annotated tag's commit is on the peeled line.
    let commit = pick(&format!("{name}^{{}}")).unwrap_or(&object).to_owned();
    let name = symref(&name).unwrap_or(name);
    (is_commit(&object) && is_commit(&commit)).then_some(Resolved {
        name,
        object,
        commit,
    })
}

/// `url`'s commit for `reference`, checked against `checksum` as BuildKit checks
/// `git.checksum`: a hexadecimal prefix of the commit.
///
/// With `fetch_by_commit` the checksum must be a whole commit, which is taken as it is (the ref
/// need not exist any more), as BuildKit's `git.fetchbycommit`.
fn resolve_checked(
    transport: &Transport,
    url: &str,
    reference: &str,
    checksum: &str,
    fetch_by_commit: bool,
) -> Result<String, Error> {
    check_remote(url)?;
    check_reference(reference)?;
    if !checksum.is_empty() && !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::GitChecksumSyntax {
            checksum: checksum.to_owned(),
        });
    }
    if fetch_by_commit && !is_commit(reference) {
        if checksum.is_empty() {
            return Err(Error::FetchByCommitWithoutChecksum);
        }
        if !is_commit(checksum) {
            return Err(Error::FetchByCommitPartialChecksum {
                checksum: checksum.to_owned(),
            });
        }
        return Ok(checksum.to_owned());
    }
    let commit = resolve(transport, url, reference)?;
    if !commit.starts_with(checksum) {
        return Err(Error::GitChecksum {
            checksum: checksum.to_owned(),
            commit,
        });
    }
    Ok(commit)
}

/// What BuildKit's `ResolveSourceMeta` tells of a git source, before anything is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitMeta {
    /// The full name of the ref it resolved (`refs/heads/main`, `refs/tags/v1`).
    pub reference: String,
    /// The object the ref points at: the commit, or an annotated tag's own object.
    pub checksum: String,
    /// The commit of an annotated tag (empty when `checksum` is the commit).
    pub commit_checksum: String,
}

impl GitSource {
    /// Resolves the source's ref at its remote, checked against `git.checksum` (a prefix of
    /// the commit or of an annotated tag's object).
    pub(super) async fn meta(&self) -> Result<GitMeta, Error> {
        check_remote(&self.url)?;
        check_reference(&self.reference)?;
        let transport = self.transport()?;
        let (url, reference, checksum) = (
            self.url.clone(),
            self.reference.clone(),
            self.checksum.clone(),
        );
        blocking(move || {
            let resolved = resolve_ref(&transport, &url, &reference)?;
            if !resolved.commit.starts_with(&checksum) && !resolved.object.starts_with(&checksum) {
                return Err(Error::GitChecksum {
                    checksum,
                    commit: resolved.commit,
                });
            }
            Ok(GitMeta {
                commit_checksum: if resolved.object == resolved.commit {
                    String::new()
                } else {
                    resolved.commit
                },
                reference: resolved.name,
                checksum: resolved.object,
            })
        })
        .await
    }
}

impl Op<Ref> for GitSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        let (digest, url, reference, checksum) = (
            self.digest.clone(),
            self.url.clone(),
            self.reference.clone(),
            self.checksum.clone(),
        );
        let fetch_by_commit = self.fetch_by_commit;
        let transport = self.transport();
        async move {
            let transport = transport?;
            let commit = blocking(move || {
                resolve_checked(&transport, &url, &reference, &checksum, fetch_by_commit)
            })
            .await?;
            Ok(CacheMap {
                outline: None,
                lineage: None,
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
        let (fetch_by_commit, skip_submodules, commit_mtime) = (
            self.fetch_by_commit,
            self.skip_submodules,
            self.commit_mtime,
        );
        let store = self.config.store.clone();
        let transport = self.transport();
        async move {
            let transport = transport?;
            Ok(blocking(move || {
                let t = &transport;
                let commit = resolve_checked(t, &url, &reference, &checksum, fetch_by_commit)?;
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
                if !skip_submodules {
                    // Each submodule's remote passes the same checks: the transports allowed
                    // above reach the git processes this one starts, through the environment.
                    git(
                        t,
                        &["submodule", "update", "--init", "--recursive", "--depth=1"],
                        Some(&dir),
                    )
                    .map_err(|error| Error::Submodules {
                        url: url.clone(),
                        error: Box::new(error),
                    })?;
                }
                if commit_mtime {
                    let time = git(t, &["log", "-1", "--format=%ct", &commit], Some(&dir))?;
                    let time: i64 = time.trim().parse().map_err(|_| Error::CommitTime {
                        time: time.clone(),
                        commit: commit.clone(),
                    })?;
                    set_times(&dir, filetime::FileTime::from_unix_time(time, 0))?;
                }
                let source = if subdir.is_empty() {
                    dir.clone()
                } else {
                    // Found inside the checkout: links followed with it as `/`, as BuildKit.
                    let resolved = kiln_fsutil::Root::new(&dir).resolve(&subdir, true);
                    match resolved.ok().and_then(|r| r.entry) {
                        Some(entry) if entry.metadata.is_dir() => entry.host,
                        _ => {
                            return Err(Error::GitSubdirectory {
                                subdir: subdir.clone(),
                                url: url.clone(),
                            });
                        }
                    }
                };
                // Without the repository, submodules' `.git` files (which point into it) go
                // too; git never lets a tracked path be named `.git`.
                let filter = if keep_git_dir {
                    LocalFilter::default()
                } else {
                    LocalFilter::excluding(&["**/.git"])
                };
                let selected = filter.select(&source)?;
                Ok(vec![snapshot_from_dir(
                    &store, &source, &selected, "git", None,
                )?])
            })
            .await?)
        }
        .boxed()
    }
}

/// Sets the access and modification times of everything below `dir` (not following links),
/// directories after their contents, as BuildKit's `git.mtime=commit` does.
fn set_times(dir: &Path, time: filetime::FileTime) -> std::io::Result<()> {
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        if fs_err::symlink_metadata(&path)?.is_dir() {
            set_times(&path, time)?;
        }
        filetime::set_symlink_file_times(&path, time, time)?;
    }
    filetime::set_symlink_file_times(dir, time, time)
}

#[cfg(test)]
mod tests;
