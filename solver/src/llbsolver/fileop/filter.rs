//! The include and exclude patterns of a copy (`COPY --parents`, `COPY --exclude`), matched
//! as moby's `patternmatcher` matches them: relative to the copied source, `/`-separated
//! segments matched with Go's `filepath.Match`, `**` for any number of segments, and a pattern
//! matching a directory matching everything under it. Exclude patterns are applied in order,
//! `!` re-including what an earlier one excluded.
//!
//! [`select`] walks the source once and returns the relative paths to copy: every path an
//! include pattern selects (all of them without include patterns) that no exclude pattern
//! removes, plus the directories leading to them, which are copied as directories but without
//! their other contents.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use kiln_llb::{PathPattern, path_segments as segments};

/// The patterns of one copy.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    include: Vec<PathPattern>,
    /// Patterns with whether they re-include (`!`).
    exclude: Vec<(PathPattern, bool)>,
}

impl Filter {
    /// The filter of `include` and `exclude`, or `None` when both are empty.
    pub(super) fn new(include: &[String], exclude: &[String]) -> Option<Self> {
        if include.is_empty() && exclude.is_empty() {
            return None;
        }
        Some(Self {
            include: include
                .iter()
                .map(|p| PathPattern::new(p.as_bytes()))
                .collect(),
            exclude: exclude
                .iter()
                .map(|p| match p.strip_prefix('!') {
                    Some(rest) => (PathPattern::new(rest.as_bytes()), true),
                    None => (PathPattern::new(p.as_bytes()), false),
                })
                .collect(),
        })
    }

    fn included(&self, path: &[&[u8]]) -> bool {
        self.include.is_empty() || self.include.iter().any(|p| p.matches_or_parent(path))
    }

    fn may_include_below(&self, path: &[&[u8]]) -> bool {
        self.include.is_empty() || self.include.iter().any(|p| p.may_match_below(path))
    }

    fn excluded(&self, path: &[&[u8]]) -> bool {
        let mut excluded = false;
        for (pattern, negated) in &self.exclude {
            if pattern.matches_or_parent(path) {
                excluded = !negated;
            }
        }
        excluded
    }

    fn has_exceptions(&self) -> bool {
        self.exclude.iter().any(|(_, negated)| *negated)
    }
}

/// The paths below `root` (relative, without the root itself) that a copy with `filter` takes.
pub(super) fn select(root: &Path, filter: &Filter) -> io::Result<HashSet<PathBuf>> {
    let mut selected = HashSet::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let mut names: Vec<_> = fs_err::read_dir(root.join(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let rel = dir.join(&name);
            let segments = segments(&rel);
            let is_dir = fs_err::symlink_metadata(root.join(&rel))?.is_dir();
            let excluded = filter.excluded(&segments);
            let included = filter.included(&segments);
            if included && !excluded {
                // The path and the directories leading to it.
                let mut p = Some(rel.as_path());
                while let Some(q) = p.filter(|q| !q.as_os_str().is_empty()) {
                    if !selected.insert(q.to_owned()) {
                        break;
                    }
                    p = q.parent();
                }
            }
            let descend = is_dir
                && (!excluded || filter.has_exceptions())
                && (included || filter.may_include_below(&segments));
            if descend {
                pending.push(rel);
            }
        }
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> Filter {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Filter::new(&own(include), &own(exclude)).unwrap()
    }

    fn tree(paths: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for p in paths {
            let path = dir.path().join(p);
            if p.ends_with('/') {
                fs_err::create_dir_all(path).unwrap();
            } else {
                fs_err::create_dir_all(path.parent().unwrap()).unwrap();
                fs_err::write(path, "x").unwrap();
            }
        }
        dir
    }

    fn sorted(set: HashSet<PathBuf>) -> Vec<String> {
        let mut v: Vec<String> = set
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn include_patterns_take_paths_and_their_parents() {
        let t = tree(&["c/d/foo", "c/d/e/", "c2/d/e/baz", "x"]);
        let got = sorted(select(t.path(), &filter(&["c/d"], &[])).unwrap());
        assert_eq!(got, ["c", "c/d", "c/d/e", "c/d/foo"]);
        let got = sorted(select(t.path(), &filter(&["*/d/e"], &[])).unwrap());
        assert_eq!(
            got,
            ["c", "c/d", "c/d/e", "c2", "c2/d", "c2/d/e", "c2/d/e/baz"]
        );
        let got = sorted(select(t.path(), &filter(&["**/baz"], &[])).unwrap());
        assert_eq!(got, ["c2", "c2/d", "c2/d/e", "c2/d/e/baz"]);
        let got = sorted(select(t.path(), &filter(&["c/d/."], &[])).unwrap());
        assert_eq!(got, ["c", "c/d", "c/d/e", "c/d/foo"]);
    }

    #[test]
    fn names_that_are_not_utf8_are_matched_as_their_bytes() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt as _;
        let t = tree(&[]);
        for name in [&b"a\xff"[..], b"a\xfe", b"d\xff/x"] {
            let path = t.path().join(OsStr::from_bytes(name));
            fs_err::create_dir_all(path.parent().unwrap()).unwrap();
            fs_err::write(path, "x").unwrap();
        }
        let shown = |set: HashSet<PathBuf>| {
            let mut v: Vec<String> = set
                .iter()
                .map(|p| p.as_os_str().as_bytes().escape_ascii().to_string())
                .collect();
            v.sort();
            v
        };
        let got = shown(select(t.path(), &filter(&["a?", "d?"], &[])).unwrap());
        assert_eq!(got, ["a\\xfe", "a\\xff", "d\\xff", "d\\xff/x"]);
        let exclude_one = Filter::new(&[], &["a\u{fffd}".to_owned()]).unwrap();
        let got = shown(select(t.path(), &exclude_one).unwrap());
        assert_eq!(got, ["a\\xfe", "a\\xff", "d\\xff", "d\\xff/x"]);
        let got = shown(select(t.path(), &filter(&[], &["a*", "!a[^a]"])).unwrap());
        assert_eq!(got, ["a\\xfe", "a\\xff", "d\\xff", "d\\xff/x"]);
        let got = shown(select(t.path(), &filter(&[], &["a*", "d*/x"])).unwrap());
        assert_eq!(got, ["d\\xff"]);
    }

    #[test]
    fn exclude_patterns_with_exceptions() {
        let t = tree(&[
            "a.txt",
            "b.log",
            "logs/keep.log",
            "logs/drop.log",
            "src/main.rs",
        ]);
        let got = sorted(select(t.path(), &filter(&[], &["*.log", "logs"])).unwrap());
        assert_eq!(got, ["a.txt", "src", "src/main.rs"]);
        let got = sorted(select(t.path(), &filter(&[], &["**/*.log", "!logs/keep.log"])).unwrap());
        assert_eq!(
            got,
            ["a.txt", "logs", "logs/keep.log", "src", "src/main.rs"]
        );
        let got = sorted(select(t.path(), &filter(&["src", "*.txt"], &["src/*.rs"])).unwrap());
        assert_eq!(got, ["a.txt", "src"]);
    }
}
