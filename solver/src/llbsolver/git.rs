//! Git sources: `git://REMOTE[#REF[:SUBDIR]]`, cloned with the `git` binary.
//!
//! The remote is fetched from `git.fullurl` when the Definition carries one (a URL with its own
//! scheme, such as `https://`), else from `git://REMOTE`. The cache key is the op digest plus
//! the commit the ref resolves to (`git ls-remote`), so a moved branch is fetched again and an
//! unchanged one is not. `.git` is kept only with `git.keepgitdir=true`, as in BuildKit.

use std::path::Path;
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
            config,
        }
    }
}

/// Runs git with `args`, returning its standard output; the error carries its standard error.
fn git(args: &[&str], cwd: Option<&Path>) -> Result<String, OpError> {
    let mut command = Command::new("git");
    command.args(args).env("GIT_TERMINAL_PROMPT", "0");
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
fn resolve(url: &str, reference: &str) -> Result<String, OpError> {
    if is_commit(reference) {
        return Ok(reference.to_owned());
    }
    let wanted = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    let listing = git(&["ls-remote", url, wanted], None)?;
    // Prefer an exact ref, then a branch or a tag of that name (a peeled tag's commit first).
    let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    let pick = |name: &str| refs.iter().find(|(_, r)| *r == name).map(|(c, _)| *c);
    pick(&format!("refs/tags/{wanted}^{{}}"))
        .or_else(|| pick(wanted))
        .or_else(|| pick(&format!("refs/heads/{wanted}")))
        .or_else(|| pick(&format!("refs/tags/{wanted}")))
        .map(str::to_owned)
        .ok_or_else(|| format!("git ref {wanted:?} not found in {url}").into())
}

/// `url`'s commit for `reference`, checked against `checksum` as BuildKit checks
/// `git.checksum`: a hexadecimal prefix of the commit.
fn resolve_checked(url: &str, reference: &str, checksum: &str) -> Result<String, OpError> {
    if !checksum.is_empty() && !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            format!("invalid checksum {checksum} for Git URL, expected hex commit hash").into(),
        );
    }
    let commit = resolve(url, reference)?;
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
        async move {
            let commit = blocking(move || resolve_checked(&url, &reference, &checksum)).await?;
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
        async move {
            blocking(move || {
                let commit = resolve_checked(&url, &reference, &checksum)?;
                let work = tempfile::Builder::new()
                    .prefix("git-")
                    .tempdir_in(scratch_dir(&store)?)?;
                let dir = work.path().join("checkout");
                let dir_str = dir.to_string_lossy().into_owned();
                git(&["init", "--quiet", &dir_str], None)?;
                git(&["remote", "add", "origin", &url], Some(&dir))?;
                // A named ref is fetched shallowly; a bare commit may not be fetchable by id,
                // so then the whole history comes.
                if is_commit(&reference) {
                    git(&["fetch", "--quiet", "origin"], Some(&dir))?;
                } else {
                    git(
                        &["fetch", "--quiet", "--depth", "1", "origin", &commit],
                        Some(&dir),
                    )
                    .or_else(|_| git(&["fetch", "--quiet", "origin"], Some(&dir)))?;
                }
                git(&["checkout", "--quiet", "--detach", &commit], Some(&dir))?;
                let source = if subdir.is_empty() {
                    dir.clone()
                } else {
                    let sub = dir.join(&subdir);
                    let inside = fs_err::canonicalize(&sub)
                        .ok()
                        .is_some_and(|p| p.starts_with(&dir));
                    if !inside || !sub.is_dir() {
                        return Err(format!("{subdir:?} is not a directory in {url}").into());
                    }
                    sub
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
