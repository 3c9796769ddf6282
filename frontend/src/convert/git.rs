//! Git references in `ADD`, parsed as BuildKit's `dfgitutil.ParseGitRef` and
//! `gitutil.ParseURL` do (read as the model): `scheme://host/path[?query][#ref[:subdir]]` for
//! the `http`, `https`, `ssh` and `git` schemes (an `http(s)` URL only when its path ends in
//! `.git`), and scp-style `user@host:path[?query][#ref[:subdir]]`.

/// A parsed git reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GitRef {
    /// The URL without query and fragment.
    pub(super) remote: String,
    /// A commit, tag or branch; empty for the remote's default branch.
    pub(super) reference: String,
    /// The commit the reference must resolve to (`?checksum=`/`?commit=`).
    pub(super) checksum: String,
    /// A directory inside the repository, without leading `/`.
    pub(super) subdir: String,
    /// `?keep-git-dir=`.
    pub(super) keep_git_dir: Option<bool>,
    /// `?submodules=`.
    pub(super) submodules: Option<bool>,
    /// `?fetch-by-commit`.
    pub(super) fetch_by_commit: bool,
}

/// What a source of `ADD` is, as far as git is concerned.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a git reference (a local path or a plain URL).
    NotGit,
    /// A git reference.
    Git(GitRef),
    /// A git reference with an error (BuildKit's wording).
    Invalid(String),
}

/// Parses `source` as BuildKit's `ParseGitRef`.
pub(super) fn parse(source: &str) -> Parsed {
    if source.starts_with("./") || source.starts_with("../") {
        return Parsed::NotGit;
    }
    // `github.com/org/repo` is a git reference only for build contexts, never for ADD.
    if source.starts_with("github.com/") {
        return Parsed::NotGit;
    }
    let (remote, query, fragment) = if let Some(scheme) = scheme(source) {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ssh" | "git") {
            return Parsed::NotGit;
        }
        let (rest, fragment) = source.split_once('#').unwrap_or((source, ""));
        let (remote, query) = rest.split_once('?').unwrap_or((rest, ""));
        let after = &remote[scheme.len() + 3..];
        let path = after.find('/').map_or("", |i| &after[i..]);
        if matches!(scheme.as_str(), "http" | "https") && !path.ends_with(".git") {
            return Parsed::NotGit;
        }
        (remote, query, fragment)
    } else {
        match scp_style(source) {
            Some(parts) => parts,
            None => return Parsed::NotGit,
        }
    };
    let mut git = GitRef {
        remote: remote.to_owned(),
        ..GitRef::default()
    };
    if !fragment.is_empty() {
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        git.reference = reference.to_owned();
        git.subdir = clean_subdir(subdir);
    }
    match load_query(&mut git, query) {
        Ok(()) => Parsed::Git(git),
        Err(message) => Parsed::Invalid(message),
    }
}

/// The scheme of `s` when it starts with `[a-zA-Z0-9]+://`.
fn scheme(s: &str) -> Option<&str> {
    let end = s.find("://")?;
    let scheme = &s[..end];
    (!scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(scheme)
}

/// `^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$`: remote, query, fragment.
fn scp_style(s: &str) -> Option<(&str, &str, &str)> {
    // One or more of `[a-zA-Z0-9-]` and `also`.
    let word = |s: &str, also: u8| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == also)
    };
    let (user, rest) = s.split_once('@')?;
    if !word(user, b'_') {
        return None;
    }
    let (host, rest) = rest.split_once(':')?;
    if !word(host, b'.') {
        return None;
    }
    let (before_fragment, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (path, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let remote_len = s.len() - rest.len() + path.len();
    Some((&s[..remote_len], query, fragment))
}

/// Go's `strings.TrimPrefix(path.Join("/", subdir), "/")`.
fn clean_subdir(subdir: &str) -> String {
    kiln_llb::clean_path(&format!("/{subdir}"))[1..].to_owned()
}

/// Percent-decoding as Go's `url.QueryUnescape` (`+` is a space).
fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        // `%` and the two characters after it (not bytes: one may be longer).
                        let escape: String = s[i..].chars().take(3).collect();
                        format!("invalid URL escape {escape:?}")
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None => Ok(true),
        Some(v) => crate::mount::parse_bool(v).ok_or_else(|| format!("invalid {key} value: {v:?}")),
    }
}

/// BuildKit's `GitRef.loadQuery`.
fn load_query(git: &mut GitRef, query: &str) -> Result<(), String> {
    if query.is_empty() {
        return Ok(());
    }
    let mut values: Vec<(String, Vec<String>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (unescape(k)?, unescape(v)?);
        match values.iter_mut().find(|(key, _)| *key == k) {
            Some((_, list)) => list.push(v),
            None => values.push((k, vec![v])),
        }
    }
    let (mut tag, mut branch) = (String::new(), String::new());
    for (key, list) in &values {
        if list.len() > 1 {
            return Err(format!("query {key:?} has multiple values"));
        }
        let value = list.first().filter(|v| !v.is_empty()).map(String::as_str);
        if value.is_none()
            && !matches!(
                key.as_str(),
                "submodules" | "keep-git-dir" | "fetch-by-commit"
            )
        {
            return Err(format!("query {key:?} has no value"));
        }
        let v = value.unwrap_or_default();
        match key.as_str() {
            "ref" => {
                if !git.reference.is_empty() && git.reference != v {
                    return Err(format!("ref conflicts: {:?} vs {v:?}", git.reference));
                }
                git.reference = v.to_owned();
            }
            "tag" => tag = v.to_owned(),
            "branch" => branch = v.to_owned(),
            "subdir" => {
                if !git.subdir.is_empty() && git.subdir != v {
                    return Err(format!("subdir conflicts: {:?} vs {v:?}", git.subdir));
                }
                git.subdir = v.to_owned();
            }
            "checksum" | "commit" => git.checksum = v.to_owned(),
            "keep-git-dir" => git.keep_git_dir = Some(parse_bool(key, value)?),
            "submodules" => git.submodules = Some(parse_bool(key, value)?),
            "fetch-by-commit" => git.fetch_by_commit = parse_bool(key, value)?,
            "mtime" => {
                if !matches!(v, "checkout" | "commit") {
                    return Err(format!(
                        "invalid mtime value: {v:?} (must be \"checkout\" or \"commit\")"
                    ));
                }
            }
            _ => return Err(format!("unexpected query {key:?}")),
        }
    }
    if !tag.is_empty() {
        if !tag.starts_with("refs/tags/") {
            tag = format!("refs/tags/{tag}");
        }
        if !git.reference.is_empty() && git.reference != tag {
            return Err(format!("ref conflicts: {:?} vs {tag:?}", git.reference));
        }
        git.reference = tag.clone();
    }
    if !branch.is_empty() {
        if !tag.is_empty() {
            return Err("branch conflicts with tag".to_owned());
        }
        if !branch.starts_with("refs/heads/") {
            branch = format!("refs/heads/{branch}");
        }
        if !git.reference.is_empty() && git.reference != branch {
            return Err(format!("ref conflicts: {:?} vs {branch:?}", git.reference));
        }
        git.reference = branch;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(s: &str) -> GitRef {
        match parse(s) {
            Parsed::Git(g) => g,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn urls_like_buildkit() {
        let g = git("https://github.com/foo/bar.git#baz/qux:quux/quuz");
        assert_eq!(g.remote, "https://github.com/foo/bar.git");
        assert_eq!(
            (g.reference.as_str(), g.subdir.as_str()),
            ("baz/qux", "quux/quuz")
        );
        let g = git("git@github.com:foo/bar.git#main:/sub/../dir/");
        assert_eq!(g.remote, "git@github.com:foo/bar.git");
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("main", "dir"));
        let g = git("git://127.0.0.1:9418/project");
        assert_eq!(
            (g.remote.as_str(), g.reference.as_str()),
            ("git://127.0.0.1:9418/project", "")
        );
        let g = git("https://host/r.git?tag=v1&keep-git-dir&checksum=abc");
        assert_eq!(g.reference, "refs/tags/v1");
        assert_eq!(g.keep_git_dir, Some(true));
        assert_eq!(g.checksum, "abc");
        assert_eq!(g.remote, "https://host/r.git");
        let g = git("ssh://git@host/r.git?branch=dev&submodules=false");
        assert_eq!(g.reference, "refs/heads/dev");
        assert_eq!(g.submodules, Some(false));
    }

    #[test]
    fn not_git() {
        for s in [
            "https://example.com/file.tar.gz",
            "http://example.com/repo",
            "./local",
            "src/dir",
            "github.com/foo/bar",
            "ftp://host/x.git",
            "a@b",
        ] {
            assert!(matches!(parse(s), Parsed::NotGit), "{s}");
        }
    }

    #[test]
    fn invalid_queries() {
        let e = |s: &str| match parse(s) {
            Parsed::Invalid(m) => m,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(e("https://h/r.git?bogus=1"), "unexpected query \"bogus\"");
        assert_eq!(e("https://h/r.git?ref="), "query \"ref\" has no value");
        assert_eq!(
            e("https://h/r.git?tag=a&branch=b"),
            "branch conflicts with tag"
        );
        // A `?` after `#` belongs to the fragment.
        assert_eq!(git("https://h/r.git#v2?tag=v1").reference, "v2?tag=v1");
        assert_eq!(
            e("https://h/r.git?ref=a&ref=b"),
            "query \"ref\" has multiple values"
        );
        assert_eq!(
            e("https://h/r.git?keep-git-dir=maybe"),
            "invalid keep-git-dir value: \"maybe\""
        );
    }
}
