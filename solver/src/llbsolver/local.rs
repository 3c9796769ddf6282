//! Which files of a local source a build sees.
//!
//! # Overview
//!
//! A `local://NAME` source op carries attributes that narrow the directory down, with the
//! semantics of `.dockerignore` (Go `filepath.Match` per path segment, `**` for any number of
//! segments, `!` to re-include, a pattern matching a directory covers everything below it):
//!
//! 1. `local.includepattern` / `local.includepatterns` (a JSON array): only paths matching one
//!    of these (or below a match) are included; absent means everything.
//! 2. `local.followpaths` (a JSON array): these paths, and the targets of the symlinks among
//!    them, are included too (so `COPY link` brings the file the link points to).
//! 3. `local.excludepatterns` (a JSON array): matching paths are dropped, unless a later `!`
//!    pattern matches them again.
//!
//! [`LocalFilter::select`] walks the directory once and returns the selected paths in walk
//! order; the snapshot copy and the content digest both use that list, so a file outside the
//! selection changes neither.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};

use super::fileop::{PathPattern, expand, has_meta, path_segments as segments, resolve_in_root};

/// One `.dockerignore`-style pattern, with whether it re-includes (`!`).
#[derive(Clone, Debug)]
struct Pattern {
    path: PathPattern,
    negated: bool,
}

impl Pattern {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (negated, text) = match text.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, text),
        };
        Self::new(text.as_bytes(), negated)
    }

    fn new(text: &[u8], negated: bool) -> Option<Self> {
        let path = PathPattern::new(text);
        (!path.is_empty()).then_some(Self { path, negated })
    }
}

/// The selection a local source's attributes describe.
#[derive(Clone, Debug, Default)]
pub(super) struct LocalFilter {
    includes: Vec<Pattern>,
    follow: Vec<String>,
    excludes: Vec<Pattern>,
}

/// What a `local://NAME` source asks for: the directory's name, the client session that has
/// it, and the selection (the source op's attributes, as BuildKit sends them to the client's
/// file sync so that only selected files travel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalRequest {
    /// The local's name (`context`, `dockerfile`, ...).
    pub name: String,
    /// `local.session`: the client session the directory comes from, if the op names one.
    pub session: Option<String>,
    /// `local.sharedkeyhint`: what a client's earlier copy of this directory is known by.
    pub shared_key_hint: Option<String>,
    /// `local.includepattern(s)`: only these paths (and what is below them); empty = all.
    pub include_patterns: Vec<String>,
    /// `local.excludepatterns`, `.dockerignore` style.
    pub exclude_patterns: Vec<String>,
    /// `local.followpaths`: paths whose symlinks are followed to their targets.
    pub follow_paths: Vec<String>,
}

impl LocalRequest {
    /// The request of a `local://NAME` source op with these attributes.
    pub(super) fn from_attrs(name: &str, attrs: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut include_patterns = json_list(attrs, "local.includepattern")?;
        include_patterns.extend(json_list(attrs, "local.includepatterns")?);
        let text = |key: &str| attrs.get(key).filter(|v| !v.is_empty()).cloned();
        Ok(Self {
            name: name.to_owned(),
            session: text("local.session"),
            shared_key_hint: text("local.sharedkeyhint"),
            include_patterns,
            exclude_patterns: json_list(attrs, "local.excludepatterns")?,
            follow_paths: json_list(attrs, "local.followpaths")?,
        })
    }

    /// The paths below `root` this request selects, as a file sync lists them for the
    /// receiving side: each with the directories above it, parents before children, each
    /// directory's entries by name.
    pub fn select(&self, root: &Path) -> io::Result<Vec<PathBuf>> {
        let selected = LocalFilter::new(self).select(root)?;
        let mut listed: HashSet<PathBuf> = HashSet::new();
        let mut out = Vec::with_capacity(selected.len());
        for entry in selected {
            // A path selected below a directory that is not (`COPY src/main.rs`) comes with
            // the directories above it, which the walk order puts just before it.
            let mut missing: Vec<PathBuf> = entry
                .path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .take_while(|a| !listed.contains(*a))
                .map(Path::to_owned)
                .collect();
            missing.reverse();
            for dir in missing {
                listed.insert(dir.clone());
                out.push(dir);
            }
            if entry.is_dir {
                listed.insert(entry.path.clone());
            }
            out.push(entry.path);
        }
        Ok(out)
    }
}

/// Brings the directory of a local source to this host, for builds whose local sources are
/// not directories given up front: a daemon receives them from the client's session. The
/// directory it returns holds at least the selected files; the source selects from it again.
pub trait LocalDirs: Send + Sync {
    /// The directory of `request`, once its files are here.
    fn sync(
        &self,
        request: LocalRequest,
    ) -> futures::future::BoxFuture<
        'static,
        Result<PathBuf, Box<dyn std::error::Error + Send + Sync>>,
    >;
}

/// A path the filter selected, relative to the local directory.
#[derive(Clone, Debug)]
pub(super) struct Selected {
    /// Relative path, as the directory names it (any bytes but `/` and NUL).
    pub(super) path: PathBuf,
    /// Whether it is a directory (copied as a directory, its selected contents follow).
    pub(super) is_dir: bool,
    /// Its `lstat`, taken during the walk.
    pub(super) meta: std::fs::Metadata,
}

fn json_list(attrs: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, String> {
    match attrs.get(key) {
        None => Ok(Vec::new()),
        Some(text) if text.trim().is_empty() => Ok(Vec::new()),
        Some(text) => parse_json_strings(text)
            .ok_or_else(|| format!("attribute {key} is not a JSON array of strings: {text:?}")),
    }
}

/// Parses a JSON array of strings (the only JSON these attributes hold).
fn parse_json_strings(text: &str) -> Option<Vec<String>> {
    let mut chars = text.trim().chars().peekable();
    if chars.next()? != '[' {
        return None;
    }
    let mut out = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.next()? {
            ']' => break,
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            'r' => s.push('\r'),
                            'b' => s.push('\u{8}'),
                            'f' => s.push('\u{c}'),
                            'u' => {
                                let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                                s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                            }
                            other => s.push(other),
                        },
                        c => s.push(c),
                    }
                }
                out.push(s);
            }
            _ => return None,
        }
    }
    chars.all(char::is_whitespace).then_some(out)
}

impl LocalFilter {
    /// The filter of a source op's attributes.
    #[cfg(test)]
    pub(super) fn from_attrs(attrs: &BTreeMap<String, String>) -> Result<Self, String> {
        Ok(Self::new(&LocalRequest::from_attrs("", attrs)?))
    }

    /// The filter of a request's patterns.
    pub(super) fn new(request: &LocalRequest) -> Self {
        let parse_all = |texts: &[String]| texts.iter().filter_map(|t| Pattern::parse(t)).collect();
        Self {
            includes: parse_all(&request.include_patterns),
            follow: request.follow_paths.clone(),
            excludes: parse_all(&request.exclude_patterns),
        }
    }

    /// Everything except what matches one of `patterns`.
    pub(super) fn excluding(patterns: &[&str]) -> Self {
        Self {
            excludes: patterns.iter().filter_map(|p| Pattern::parse(p)).collect(),
            ..Self::default()
        }
    }

    /// Selects the paths below `root`, parents before children, sorted by name.
    pub(super) fn select(&self, root: &Path) -> io::Result<Vec<Selected>> {
        let mut includes = self.includes.clone();
        if !self.follow.is_empty() {
            for pattern in &self.follow {
                includes.extend(Pattern::parse(pattern));
                // A wildcard follows every path it matches (as BuildKit's `FollowLinks`), so
                // `COPY sub/l*` brings what the matched links lead to.
                let paths = if has_meta(pattern.as_bytes()) {
                    expand(root, &Path::new("/").join(pattern))?
                        .iter()
                        .filter_map(|p| p.strip_prefix(root).ok())
                        .map(|p| p.to_string_lossy().into_owned())
                        .collect()
                } else {
                    vec![pattern.clone()]
                };
                for path in &paths {
                    follow_links(root, path, &mut includes)?;
                }
            }
        }
        let has_negation = self.excludes.iter().any(|p| p.negated);
        let mut out = Vec::new();
        self.walk(root, &mut PathBuf::new(), &includes, has_negation, &mut out)?;
        Ok(out)
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &mut PathBuf,
        includes: &[Pattern],
        has_negation: bool,
        out: &mut Vec<Selected>,
    ) -> io::Result<()> {
        let mut names: Vec<OsString> = fs_err::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let meta = fs_err::symlink_metadata(&path)?;
            let is_dir = meta.is_dir();
            rel.push(name);
            let segments = segments(rel);
            let included =
                includes.is_empty() || includes.iter().any(|p| p.path.matches_or_parent(&segments));
            let excluded = self.excluded(&segments);
            if included && !excluded {
                out.push(Selected {
                    path: rel.clone(),
                    is_dir,
                    meta,
                });
                if is_dir {
                    self.walk(&path, rel, includes, has_negation, out)?;
                }
            } else if is_dir {
                let could_include =
                    included || includes.iter().any(|p| p.path.may_match_below(&segments));
                if could_include && (!excluded || has_negation) {
                    self.walk(&path, rel, includes, has_negation, out)?;
                }
            }
            rel.pop();
        }
        Ok(())
    }

    /// `.dockerignore` exclusion: the last matching pattern decides.
    fn excluded(&self, path: &[&[u8]]) -> bool {
        let mut excluded = false;
        for pattern in &self.excludes {
            if pattern.negated == excluded && pattern.path.matches_or_parent(path) {
                excluded = !pattern.negated;
            }
        }
        excluded
    }
}

/// Adds to `includes` every symlink on the way of `path` (relative to `root`) and the path
/// through where each leads.
fn follow_links(root: &Path, path: &str, includes: &mut Vec<Pattern>) -> io::Result<()> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for n in 1..=segments.len() {
        let prefix = segments[..n].join("/");
        if let Some(target) = resolve_in_root(root, Path::new(&prefix))? {
            includes.extend(Pattern::parse(&prefix));
            let mut through = target.into_os_string().into_vec();
            through.push(b'/');
            through.extend_from_slice(segments[n..].join("/").as_bytes());
            includes.extend(Pattern::new(&through, false));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "a.txt",
            "b.log",
            "src/main.rs",
            "src/keep.log",
            "src/deep/x.rs",
            "docs/readme.md",
            "node_modules/m/index.js",
        ] {
            let path = dir.path().join(file);
            fs_err::create_dir_all(path.parent().unwrap()).unwrap();
            fs_err::write(path, file).unwrap();
        }
        std::os::unix::fs::symlink("docs/readme.md", dir.path().join("link")).unwrap();
        dir
    }

    fn selected(filter: &LocalFilter, root: &Path) -> Vec<String> {
        filter
            .select(root)
            .unwrap()
            .into_iter()
            .map(|s| s.path.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn json_lists_parse_with_escapes_and_reject_garbage() {
        assert_eq!(
            parse_json_strings(r#"[ "a", "b\"c", "\u0041" ]"#),
            Some(vec!["a".into(), "b\"c".into(), "A".into()])
        );
        assert_eq!(parse_json_strings("[]"), Some(vec![]));
        assert_eq!(parse_json_strings("a,b"), None);
        assert_eq!(parse_json_strings(r#"["a"] x"#), None);
        assert!(LocalFilter::from_attrs(&attrs(&[("local.excludepatterns", "nope")])).is_err());
    }

    #[test]
    fn no_attributes_select_everything() {
        let dir = tree();
        let filter = LocalFilter::from_attrs(&BTreeMap::new()).unwrap();
        assert_eq!(
            selected(&filter, dir.path()),
            [
                "a.txt",
                "b.log",
                "docs",
                "docs/readme.md",
                "link",
                "node_modules",
                "node_modules/m",
                "node_modules/m/index.js",
                "src",
                "src/deep",
                "src/deep/x.rs",
                "src/keep.log",
                "src/main.rs",
            ]
        );
    }

    #[test]
    fn excludes_follow_dockerignore_rules_with_double_star_and_negation() {
        let dir = tree();
        let filter = LocalFilter::from_attrs(&attrs(&[(
            "local.excludepatterns",
            r#"["**/*.log", "node_modules", "!src/keep.log", "src/deep/*.rs"]"#,
        )]))
        .unwrap();
        assert_eq!(
            selected(&filter, dir.path()),
            [
                "a.txt",
                "docs",
                "docs/readme.md",
                "link",
                "src",
                "src/deep",
                "src/keep.log",
                "src/main.rs",
            ]
        );
    }

    #[test]
    fn a_request_lists_the_directories_above_what_it_selects() {
        let dir = tree();
        let request = LocalRequest {
            include_patterns: vec!["src/deep/*.rs".into(), "docs".into(), "b.log".into()],
            exclude_patterns: vec!["docs/*.md".into()],
            ..LocalRequest::default()
        };
        let listed: Vec<String> = request
            .select(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            listed,
            ["b.log", "docs", "src", "src/deep", "src/deep/x.rs"]
        );
    }

    #[test]
    fn includes_select_matches_and_what_is_below_them() {
        let dir = tree();
        let filter = LocalFilter::from_attrs(&attrs(&[
            ("local.includepattern", r#"["src/*.rs", "docs"]"#),
            ("local.excludepatterns", r#"["docs/*.md"]"#),
        ]))
        .unwrap();
        assert_eq!(selected(&filter, dir.path()), ["docs", "src/main.rs"]);
    }

    #[test]
    fn follow_paths_bring_symlink_targets() {
        let dir = tree();
        let filter =
            LocalFilter::from_attrs(&attrs(&[("local.followpaths", r#"["link", "a.txt"]"#)]))
                .unwrap();
        assert_eq!(
            selected(&filter, dir.path()),
            ["a.txt", "docs/readme.md", "link"]
        );
        // A link in the middle of a path: the link and the path through its target.
        std::os::unix::fs::symlink("src", dir.path().join("code")).unwrap();
        let filter =
            LocalFilter::from_attrs(&attrs(&[("local.followpaths", r#"["code/main.rs"]"#)]))
                .unwrap();
        assert_eq!(selected(&filter, dir.path()), ["code", "src/main.rs"]);
        // A wildcard: every link it matches brings its target.
        std::os::unix::fs::symlink("deep", dir.path().join("src/ldeep")).unwrap();
        std::os::unix::fs::symlink("main.rs", dir.path().join("src/lmain")).unwrap();
        let filter =
            LocalFilter::from_attrs(&attrs(&[("local.followpaths", r#"["src/l*"]"#)])).unwrap();
        assert_eq!(
            selected(&filter, dir.path()),
            [
                "src/deep",
                "src/deep/x.rs",
                "src/ldeep",
                "src/lmain",
                "src/main.rs"
            ]
        );
    }
}
