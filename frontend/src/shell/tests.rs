use super::*;

#[test]
fn error_on_unset_refuses_bare_references_only() {
    let lexer = Lexer::default().error_on_unset(true);
    let env = EnvList::from_entries(["SET=v"]);
    for (word, want) in [
        ("$SET ${SET}", "v v"),
        ("${NO:-d}", "d"),
        ("${NO:+x}", ""),
        ("${NO-d}", "d"),
        ("\\$NO", "$NO"),
    ] {
        assert_eq!(lexer.process_word(word, &env).unwrap(), want, "{word}");
    }
    for word in ["$NO", "a${NO}b", "${NO#x}", "${NO%x}", "${NO/a/b}"] {
        let err = lexer.process_word(word, &env).unwrap_err();
        let ExpandError::Failed { kind, .. } = err;
        assert_eq!(
            kind,
            ExpandErrorKind::Undefined { name: "NO".into() },
            "{word}"
        );
    }
    // Without the option an unset name is empty, as in a Dockerfile.
    assert_eq!(
        Lexer::default().process_word("a${NO}b", &env).unwrap(),
        "ab"
    );
}

#[test]
fn pattern_to_regex() {
    for (pattern, want) in [
        ("*", "^.*"),
        ("?", "^."),
        ("\\*", "^\\*"),
        (
            "(()[]{\\}^$.\\*\\?|\\\\",
            "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\",
        ),
    ] {
        assert_eq!(
            shell_pattern_to_regex(pattern, true, true)
                .unwrap()
                .as_str(),
            want
        );
    }
    for bad in ["\\", "\\x", "\\\\\\"] {
        assert!(shell_pattern_to_regex(bad, true, true).is_err(), "{bad}");
    }
}

#[test]
fn reverse_patterns() {
    for (pattern, want) in [
        ("a\\*c", "c\\*a"),
        ("\\\\\\ab", "b\\a\\\\"),
        ("ab\\", "\\ba"),
        ("👽\\🚀🖖", "🖖\\🚀👽"),
        ("\\\\b", "b\\\\"),
        ("", ""),
    ] {
        assert_eq!(reverse_pattern(pattern), want, "{pattern}");
    }
}
