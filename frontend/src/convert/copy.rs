//! `COPY` and `ADD`: one file op copying from the context, another stage or image, URLs, git
//! repositories and inline heredoc files (or a merge under `--link`), with BuildKit's path
//! rules, `--chown`/`--chmod` and `--parents`, and the context paths the build reads. A new
//! `COPY` or `ADD` flag, or a new kind of source, goes here.

use kiln_llb::{
    Chown, CopyOptions, FileAction, GitOptions, HttpOptions, State, git_with, http_with, merge, pb,
    scratch,
};

use super::dispatch::Step;
use super::git;
use super::{ConvertError, ConvertErrorKind, at, unsupported};
use crate::dockerignore::clean_path;
use crate::error::Location;
use crate::instructions::{AddCommand, Command, CopyCommand, SourcesAndDest};
use crate::shell::Lexer;

impl Step<'_, '_> {
    /// The git source of `ADD <git url>`, as BuildKit's `dispatchCopy` makes it.
    fn git_source(
        &self,
        loc: &Location,
        params: &CopyParams,
        reference: &git::GitRef,
        name: &str,
    ) -> Result<State, ConvertError> {
        let mut keep = params.keep_git_dir;
        if let (Some(flag), Some(query)) = (keep, reference.keep_git_dir) {
            if flag != query {
                return Err(at(loc, ConvertErrorKind::InconsistentKeepGitDir));
            }
        }
        if reference.keep_git_dir.is_some() {
            keep = reference.keep_git_dir;
        }
        let mut checksum = params.checksum.clone();
        if !checksum.is_empty() && !reference.checksum.is_empty() && checksum != reference.checksum
        {
            return Err(at(
                loc,
                ConvertErrorKind::GitChecksumMismatch {
                    flag: checksum,
                    url: reference.checksum.clone(),
                },
            ));
        }
        if !reference.checksum.is_empty() {
            checksum = reference.checksum.clone();
        }
        let fragment = if reference.subdir.is_empty() {
            reference.reference.clone()
        } else {
            format!("{}:{}", reference.reference, reference.subdir)
        };
        Ok(git_with(
            &reference.remote,
            &fragment,
            GitOptions {
                keep_git_dir: keep.unwrap_or(false),
                checksum: (!checksum.is_empty()).then_some(checksum),
                skip_submodules: reference.submodules == Some(false),
                fetch_by_commit: reference.fetch_by_commit,
            },
        )
        .with_custom_name(name))
    }

    pub(super) fn dispatch_copy(
        &mut self,
        cmd: &Command,
        params: &CopyParams,
        from: Option<State>,
    ) -> Result<(), ConvertError> {
        let loc = &cmd.location;
        let expand = |s: &str| self.expand(s, loc);
        let dest_raw = expand(&params.sources.dest_path)?;
        let chown_spec = expand(&params.chown)?;
        let chmod_spec = expand(&params.chmod)?;
        let mut srcs = Vec::new();
        for s in &params.sources.source_paths {
            srcs.push(expand(s)?);
        }
        let dest = dest_path(&self.d.cwd, &dest_raw);
        let owner = (!chown_spec.is_empty()).then(|| chown(&chown_spec));
        let (mode, mode_str) = chmod_option(&chmod_spec).map_err(|kind| at(loc, kind))?;
        // What every source's copy shares.
        let copied = CopyOptions {
            owner,
            mode,
            mode_str,
            create_dest_path: true,
            exclude_patterns: params.exclude.clone(),
            ..CopyOptions::default()
        };
        if !params.checksum.is_empty() {
            if !params.is_add {
                return Err(at(loc, ConvertErrorKind::ChecksumForCopy));
            }
            if srcs.len() != 1 {
                return Err(at(loc, ConvertErrorKind::ChecksumMultipleSources));
            }
            let remote = matches!(git::parse(&srcs[0]), git::Parsed::Git(_))
                || srcs[0].starts_with("http://")
                || srcs[0].starts_with("https://");
            if !remote {
                return Err(at(loc, ConvertErrorKind::ChecksumNeedsRemote));
            }
        }
        let mut message = if params.is_add { "ADD" } else { "COPY" }.to_owned();
        if params.parents {
            message.push_str(" --parents");
        }
        if !chown_spec.is_empty() {
            message.push_str(&format!(" --chown={chown_spec}"));
        }
        if !chmod_spec.is_empty() {
            message.push_str(&format!(" --chmod={chmod_spec}"));
        }
        let name = self.op_name(&cmd.code, false);
        let source = from.clone().unwrap_or_else(|| self.context.clone());
        let mut action: Option<FileAction> = None;
        let push =
            |action: &mut Option<FileAction>, state: &State, src: &str, opts: CopyOptions| {
                *action = Some(match action.take() {
                    None => FileAction::copy(state, src, &dest, opts),
                    Some(a) => a.then_copy(state, src, &dest, opts),
                });
            };
        for src in &srcs {
            message.push_str(&format!(" {src}"));
            match git::parse(src) {
                git::Parsed::Invalid(message) => {
                    return Err(at(loc, ConvertErrorKind::InvalidGitRef { message }));
                }
                git::Parsed::Git(reference) => {
                    if !params.is_add {
                        return Err(at(loc, ConvertErrorKind::GitForCopy));
                    }
                    let repo = self.git_source(loc, params, &reference, &name)?;
                    push(&mut action, &repo, "/", copied.clone());
                    // As in BuildKit, an ADD source that is not an http(s) URL counts as a
                    // context path, even a git one.
                    if from.is_none() && !src.starts_with("http://") && !src.starts_with("https://")
                    {
                        self.context_paths.insert(clean_path(&format!("/{src}")));
                    }
                    continue;
                }
                git::Parsed::NotGit => {}
            }
            let is_url = src.starts_with("http://") || src.starts_with("https://");
            if is_url {
                if !params.is_add {
                    return Err(at(loc, ConvertErrorKind::UrlForCopy));
                }
                let path_part = src
                    .split_once("://")
                    .map(|(_, r)| r)
                    .unwrap_or(src)
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default();
                let base = path_part
                    .split_once('/')
                    .map(|(_, p)| p.rsplit('/').next().unwrap_or_default())
                    .unwrap_or_default();
                let file = if base.is_empty() || base == "." {
                    "__unnamed__".to_owned()
                } else {
                    base.to_owned()
                };
                let checksum =
                    if params.checksum.is_empty() {
                        None
                    } else {
                        Some(params.checksum.parse().map_err(|_| {
                            unsupported(loc, &format!("checksum {}", params.checksum))
                        })?)
                    };
                let http = http_with(
                    src,
                    HttpOptions {
                        checksum,
                        filename: Some(file.clone()),
                        chmod: None,
                    },
                )
                .with_custom_name(&name);
                push(
                    &mut action,
                    &http,
                    &file,
                    CopyOptions {
                        attempt_unpack_docker_compatibility: params.unpack.unwrap_or(false),
                        ..copied.clone()
                    },
                );
                continue;
            }
            // A context path `.dockerignore` leaves out is the build check `CopyIgnoredFile`.
            if from.is_none() && crate::lint::ignored_by(&self.plan.options.excludes, src) {
                let command = if params.is_add { "Add" } else { "Copy" };
                self.plan.linter.run(
                    &crate::lint::COPY_IGNORED_FILE,
                    loc,
                    format!(
                        "Attempting to {command} file {:?} that is excluded by .dockerignore",
                        kiln_llb::clean_path(src)
                    ),
                );
            }
            let mut src_path = src.clone();
            let mut include = Vec::new();
            let mut required = Vec::new();
            if params.parents {
                let (parent, pattern) = match src.split_once("/./") {
                    Some((p, pat)) => (p.to_owned(), pat.to_owned()),
                    None => ("/".to_owned(), src.clone()),
                };
                // `NormalizePath` keeps an absolute pattern as written (`/a/b/.`).
                let pattern = if pattern.starts_with('/') {
                    pattern
                } else {
                    normalize_path("/", &pattern, false)
                };
                // Only a path without wildcards must exist (BuildKit's `requiredPaths`).
                if !contains_wildcards(&parent) && !contains_wildcards(&pattern) {
                    required.push(normalize_path("/", &format!("{parent}/{pattern}"), false));
                }
                src_path = parent;
                include.push(pattern.trim_start_matches('/').to_owned());
            }
            let normalized = normalize_path("/", &src_path, false);
            if from.is_none() {
                self.context_paths.insert(clean_path(&format!("/{src}")));
            }
            push(
                &mut action,
                &source,
                &normalized,
                CopyOptions {
                    follow_symlink: true,
                    dir_copy_contents: true,
                    attempt_unpack_docker_compatibility: params.unpack.unwrap_or(params.is_add),
                    allow_wildcard: true,
                    allow_empty_wildcard: true,
                    include_patterns: include,
                    required_paths: required,
                    ..copied.clone()
                },
            );
        }
        for content in &params.sources.source_contents {
            message.push_str(&format!(" <<{}", content.path));
            let data = if content.expand {
                Lexer::new('\\')
                    .skip_process_quotes(true)
                    .process_word(&content.data, &self.d.env)
                    .map_err(|e| at(loc, e))?
            } else {
                content.data.clone()
            };
            // Relative to the root, as the scratch state's working directory is `/`.
            let inline_path = clean_path(&format!("/{}", content.path));
            let file = scratch()
                .file(FileAction::mkfile(&inline_path, 0o644, data.as_bytes()))
                .with_custom_name("[internal] preparing inline document");
            push(&mut action, &file, &inline_path, copied.clone());
        }
        message.push_str(&format!(" {}", params.sources.dest_path));
        let Some(action) = action else {
            return Ok(());
        };
        if params.link && chmod_spec.is_empty() {
            let copied = scratch()
                .platform(self.d.state.platform_or_host())
                .file(action)
                .with_custom_name(&name);
            // The merge shows as `LINK <instruction>` under the same counter.
            self.d.cmd_index -= 1;
            let link_name = {
                let text = name
                    .split_once("] ")
                    .map(|(head, rest)| format!("{head}] LINK {rest}"))
                    .unwrap_or_else(|| format!("LINK {name}"));
                self.d.cmd_index += 1;
                text
            };
            self.d.state = merge(&[self.d.state.clone(), copied]).with_custom_name(&link_name);
        } else {
            self.d.state = self.d.state.file(action).with_custom_name(&name);
        }
        self.d.history(format!("{message} # buildkit"), true);
        Ok(())
    }
}

/// The parts of `COPY` and `ADD` the copy logic needs.
pub(super) struct CopyParams {
    sources: SourcesAndDest,
    chown: String,
    chmod: String,
    link: bool,
    parents: bool,
    exclude: Vec<String>,
    is_add: bool,
    checksum: String,
    unpack: Option<bool>,
    keep_git_dir: Option<bool>,
}

impl CopyParams {
    pub(super) fn from_copy(copy: &CopyCommand) -> Self {
        Self {
            sources: copy.sources.clone(),
            chown: copy.chown.clone(),
            chmod: copy.chmod.clone(),
            link: copy.link,
            parents: copy.parents,
            exclude: copy.exclude.clone(),
            is_add: false,
            checksum: String::new(),
            unpack: None,
            keep_git_dir: None,
        }
    }

    pub(super) fn from_add(add: &AddCommand) -> Self {
        Self {
            sources: add.sources.clone(),
            chown: add.chown.clone(),
            chmod: add.chmod.clone(),
            link: add.link,
            parents: false,
            exclude: add.exclude.clone(),
            is_add: true,
            checksum: add.checksum.clone(),
            unpack: add.unpack,
            keep_git_dir: add.keep_git_dir,
        }
    }
}

/// `--chmod`: an octal mode, or a symbolic one passed on as `modeStr` (BuildKit's rules: a
/// value that looks numeric but is not octal up to 07777 is an invalid chmod parameter).
fn chmod_option(spec: &str) -> Result<(Option<i32>, Option<String>), ConvertErrorKind> {
    if spec.is_empty() {
        return Ok((None, None));
    }
    let invalid = || ConvertErrorKind::InvalidChmod {
        value: spec.to_owned(),
    };
    if let Ok(m) = u32::from_str_radix(spec, 8) {
        if m > 0o7777 {
            return Err(invalid());
        }
        return Ok((Some(m as i32), None));
    }
    if spec.as_bytes()[0].is_ascii_digit() {
        return Err(invalid());
    }
    if kiln_llb::ModeSet::parse(spec).is_err() {
        return Err(ConvertErrorKind::InvalidModeString {
            message: "invalid syntax".to_owned(),
        });
    }
    Ok((None, Some(spec.to_owned())))
}

/// BuildKit's `containsWildcards`: `*`, `?` or `[` not escaped by `\`.
fn contains_wildcards(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' | b'?' | b'[' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

/// BuildKit's `NormalizePath(parent, path, keepSlash)` for Linux paths (cleaned, as the LLB
/// copy source path is cleaned when marshalled).
fn normalize_path(parent: &str, path: &str, keep_slash: bool) -> String {
    let mut out = if path.starts_with('/') {
        clean_path(path)
    } else {
        clean_path(&format!("/{parent}/{path}"))
    };
    if keep_slash {
        if path.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if path.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

/// A destination of `COPY`/`ADD` relative to the working directory.
fn dest_path(cwd: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        return normalize_path("/", dest, true);
    }
    let dest = if dest == "." || dest.is_empty() {
        "./"
    } else {
        dest
    };
    normalize_path(cwd, dest, true)
}

/// `user[:group]` as a file op owner (numbers are ids).
pub(super) fn chown(spec: &str) -> Chown {
    let one = |s: &str| match s.parse::<u32>() {
        Ok(id) => pb::user_opt::User::ById(id),
        Err(_) => pb::user_opt::User::ByName(pb::NamedUserOpt {
            name: s.to_owned(),
            input: -1,
        }),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    Chown {
        user: Some(one(user)),
        group: group.map(one),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::dispatch::normalize_workdir;

    #[test]
    fn paths_normalise_like_buildkit() {
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/app", "sub"), "/app/sub");
        assert_eq!(dest_path("/app", "sub/"), "/app/sub/");
        assert_eq!(dest_path("/", "/dst2/"), "/dst2/");
        assert_eq!(dest_path("/", "/"), "/");
        assert_eq!(normalize_path("/", "dir/", false), "/dir");
        assert_eq!(normalize_workdir("/test1", "test2"), "/test1/test2");
        assert_eq!(normalize_workdir("/a", "/b/../c"), "/c");
    }
}
