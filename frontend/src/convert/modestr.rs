//! Validation of symbolic `--chmod` values (`u+x,g=r`) with chmod(1)'s grammar, as BuildKit's
//! frontend checks them before passing them on as `modeStr`; the solver applies them.

/// Whether `spec` is clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]*))+` separated by `,`.
pub(super) fn is_valid(spec: &str) -> bool {
    !spec.is_empty()
        && spec.split(',').all(|clause| {
            let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
            if rest.is_empty() {
                return false;
            }
            let mut chars = rest.chars().peekable();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return false;
                }
                while chars.peek().is_some_and(|c| "rwxXstugo".contains(*c)) {
                    chars.next();
                }
            }
            true
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for good in [
            "u+x", "+x", "a-w", "u+x,g=r", "go=", "o=u", "u+r-w", "=rwX,+t",
        ] {
            assert!(is_valid(good), "{good}");
        }
        for bad in ["", "u", "u+q", "x", "u+x,", ",u+x", "+x;", "ug"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
