//! `.dockerignore` files: the build context's exclude patterns.
//!
//! The file is read as Docker reads it (moby `patternmatcher/ignorefile`): one pattern per line,
//! lines starting with `#` are comments, surrounding spaces are trimmed, `!` negates, and each
//! pattern is cleaned like Go's `filepath.Clean` with a leading `/` removed. Matching (Go
//! `filepath.Match` syntax plus `**`) is done where the context is read; the converter passes
//! the patterns on, in the `local.excludepatterns` attribute of the context source, and matches
//! `COPY` sources against them only for the build check `CopyIgnoredFile`.

pub(crate) use kiln_llb::clean_path;

/// Parses the text of a `.dockerignore` file into exclude patterns.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean_path(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push(cleaned);
    }
    out
}

/// The ignore file used for `dockerfile`: `<Dockerfile>.dockerignore` beside it if present
/// (given as `specific`), else the context's `.dockerignore` (`general`).
pub fn select_dockerignore<'a>(
    specific: Option<&'a str>,
    general: Option<&'a str>,
) -> Option<&'a str> {
    specific.or(general)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_cleaned_like_docker() {
        let text =
            "\u{feff}# comment\n  *.log  \n\n!/keep/../keep.log\n/abs/./dir/\n**/tmp\n ! spaced\n";
        assert_eq!(
            parse_dockerignore(text),
            ["*.log", "!keep.log", "abs/dir", "**/tmp", "!spaced"]
        );
    }

    #[test]
    fn go_path_clean() {
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("a/../.."), "..");
        assert_eq!(clean_path("/../a//b/./c/"), "/a/b/c");
        assert_eq!(clean_path("./"), ".");
    }

    #[test]
    fn dockerfile_specific_file_wins() {
        assert_eq!(select_dockerignore(Some("a"), Some("b")), Some("a"));
        assert_eq!(select_dockerignore(None, Some("b")), Some("b"));
    }
}
