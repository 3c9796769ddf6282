//! Shell patterns with Go's `filepath.Match` semantics: `*` and `?` never match `/`, `[...]`
//! classes with ranges and `^` negation, `\` escapes; and `/`-separated path patterns made of
//! them, as `.dockerignore` and a copy's include and exclude patterns use: the solver matches
//! files with them, the Dockerfile frontend its build checks' `COPY` sources.
//!
//! Names are bytes (a file name need not be UTF-8). As in Go, literals compare exactly and
//! `?` or a class takes one character, a byte that is not part of a UTF-8 character counting
//! as one character (U+FFFD for a class).

/// One character of a pattern or name: a UTF-8 character, or a byte that is not part of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Char(char),
    Byte(u8),
}

impl Unit {
    /// The character a class compares (U+FFFD for a stray byte, as Go decodes it).
    fn char(self) -> char {
        match self {
            Self::Char(c) => c,
            Self::Byte(_) => char::REPLACEMENT_CHARACTER,
        }
    }
}

fn units(bytes: &[u8]) -> Vec<Unit> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().chars().map(Unit::Char));
        out.extend(chunk.invalid().iter().map(|&b| Unit::Byte(b)));
    }
    out
}

const STAR: Unit = Unit::Char('*');
const QUESTION: Unit = Unit::Char('?');
const OPEN: Unit = Unit::Char('[');
const CLOSE: Unit = Unit::Char(']');
const ESCAPE: Unit = Unit::Char('\\');
const DASH: Unit = Unit::Char('-');
const SLASH: Unit = Unit::Char('/');

/// Whether `name` matches `pattern`, as Go's `filepath.Match` (`*`, `?`, `[...]` classes, `\\`
/// escapes; `*` does not cross `/`). A malformed pattern (an unclosed class) matches nothing.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let p = units(pattern);
    let n = units(name);
    // Iterative matcher with a single backtrack point for the last `*`, as in glob matching.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                STAR => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                QUESTION if n[ni] != SLASH => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                OPEN => {
                    if let Some((ok, next)) = class(&p, pi, n[ni].char()) {
                        if ok && n[ni] != SLASH {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    } else {
                        return false;
                    }
                }
                ESCAPE if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                ESCAPE if pi + 1 < p.len() => {}
                c if c == n[ni] && c != QUESTION => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Backtrack: let the last `*` eat one more character, but never a `/`.
        match star {
            Some((sp, sn)) if n[sn] != SLASH => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|&c| c == STAR)
}

/// Matches `c` against the class starting at `p[start] == '['`; returns whether it matched and
/// the index after the class, or `None` for an unclosed class.
fn class(p: &[Unit], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some(Unit::Char('^' | '!')));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *p.get(i)?;
        if lo == CLOSE && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == ESCAPE {
            i += 1;
            lo = *p.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&DASH) && p.get(i + 1).is_some_and(|&h| h != CLOSE) {
            hi = *p.get(i + 1)?;
            if hi == ESCAPE {
                hi = *p.get(i + 2)?;
                i += 1;
            }
            i += 2;
        }
        if lo.char() <= c && c <= hi.char() {
            matched = true;
        }
    }
}

/// Whether `s` has any pattern metacharacter.
pub fn has_meta(s: &[u8]) -> bool {
    s.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// The `/`-separated segments of a relative path, as [`PathPattern`] matches them.
pub fn segments(path: &std::path::Path) -> Vec<&[u8]> {
    use std::os::unix::ffi::OsStrExt as _;
    path.as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .collect()
}

/// A `/`-separated pattern of a relative path (moby's `patternmatcher`): each segment matched
/// with [`matches`], `**` for any number of segments, empty and `.` segments dropped.
#[derive(Clone, Debug)]
pub struct PathPattern {
    segments: Vec<Vec<u8>>,
}

impl PathPattern {
    /// The pattern `text`.
    pub fn new(text: &[u8]) -> Self {
        Self {
            segments: text
                .split(|&b| b == b'/')
                .filter(|s| !s.is_empty() && *s != b".")
                .map(<[u8]>::to_vec)
                .collect(),
        }
    }

    /// Whether the pattern has no segment (it matches nothing).
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether the pattern matches exactly the path of `path`'s segments.
    pub fn matches(&self, path: &[&[u8]]) -> bool {
        !self.is_empty() && match_segments(&self.segments, path)
    }

    /// Whether the pattern matches `path` or one of its parents.
    pub fn matches_or_parent(&self, path: &[&[u8]]) -> bool {
        (1..=path.len()).any(|n| self.matches(&path[..n]))
    }

    /// Whether something below the directory `dir` could match.
    pub fn may_match_below(&self, dir: &[&[u8]]) -> bool {
        !self.is_empty() && prefix_may_match(&self.segments, dir)
    }
}

fn match_segments(pattern: &[Vec<u8>], path: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == b"**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => matches(first, name) && match_segments(rest, path_rest),
            None => false,
        },
    }
}

/// Whether the directory `dir` is a possible prefix of a path the pattern matches.
fn prefix_may_match(pattern: &[Vec<u8>], dir: &[&[u8]]) -> bool {
    match (pattern.split_first(), dir.split_first()) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some((first, _)), Some(_)) if first == b"**" => true,
        (Some((first, rest)), Some((name, dir_rest))) => {
            matches(first, name) && prefix_may_match(rest, dir_rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt as _;

    use super::{PathPattern, matches, segments};

    #[test]
    fn go_filepath_match_cases() {
        // Cases from Go's documented filepath.Match behaviour.
        let cases = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[", "a", false),
            ("*x", "xxx", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                matches(pattern.as_bytes(), name.as_bytes()),
                want,
                "{pattern:?} vs {name:?}"
            );
        }
    }

    #[test]
    fn names_that_are_not_utf8_match_byte_for_byte() {
        let cases: [(&[u8], &[u8], bool); 10] = [
            (b"*.txt", b"caf\xe9.txt", true),
            (b"caf?.txt", b"caf\xe9.txt", true),
            (b"caf\xe9*", b"caf\xe9.txt", true),
            (b"caf\xe9*", b"caf\xe8.txt", false),
            (b"a\xff", b"a\xfe", false),
            (b"a\xff", b"a\xff", true),
            // A stray byte is one character, a UTF-8 character too.
            (b"a??", b"a\xc3\xc3", true),
            (b"a??", b"a\xc3\xa9", false),
            (b"a[^a]b", b"a\xffb", true),
            (b"a[a-z]b", b"a\xffb", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                matches(pattern, name),
                want,
                "{:?} vs {:?}",
                pattern.escape_ascii().to_string(),
                name.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn path_patterns_match_segments_of_any_bytes() {
        let path: &[&[u8]] = &[b"d\xff", b"sub", b"x\xfe.rs"];
        assert!(PathPattern::new(b"d\xff").matches_or_parent(path));
        assert!(!PathPattern::new(b"d\xfe").matches_or_parent(path));
        assert!(PathPattern::new(b"**/*.rs").matches(path));
        assert!(PathPattern::new(b"d?/sub").may_match_below(&path[..1]));
        assert!(!PathPattern::new(b"").matches_or_parent(path));
        assert_eq!(
            segments(std::path::Path::new(std::ffi::OsStr::from_bytes(
                b"a\xff//b"
            ))),
            [b"a\xff".as_slice(), b"b"]
        );
    }
}
