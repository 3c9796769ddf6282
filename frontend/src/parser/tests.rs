use super::*;

#[test]
fn words() {
    let cases: &[(&str, &[&str])] = &[
        ("foo", &["foo"]),
        ("foo bar", &["foo", "bar"]),
        ("foo\\ bar", &["foo\\ bar"]),
        ("foo=bar", &["foo=bar"]),
        ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
        ("foo bar \"abc xyz\"", &["foo", "bar", "\"abc xyz\""]),
        ("àöû", &["àöû"]),
        ("döner `\"kebab", &["döner", "`\"kebab"]),
        ("foo bar ''", &["foo", "bar", "''"]),
    ];
    for (input, want) in cases {
        let escape = if input.contains('`') { '`' } else { '\\' };
        assert_eq!(parse_words(input, escape), *want, "{input}");
    }
}

#[test]
fn flags() {
    assert_eq!(
        extract_flags("--a=1 --b=\"x y\" rest of line", '\\'),
        (
            "rest of line",
            vec!["--a=1".to_string(), "--b=x y".to_string()]
        )
    );
    assert_eq!(extract_flags("-- --x", '\\'), (" --x", vec![]));
    assert_eq!(extract_flags("--x --", '\\'), ("", vec!["--x".to_string()]));
    assert_eq!(extract_flags("-x", '\\'), ("-x", vec![]));
}

#[test]
fn directives() {
    assert_eq!(
        split_directive("escape = `  "),
        Some(("escape".to_string(), "`".to_string()))
    );
    assert_eq!(
        split_directive("escape=   "),
        Some(("escape".into(), " ".into()))
    );
    assert_eq!(split_directive("escape="), None);
    assert_eq!(split_directive("1x=y"), None);
}

#[test]
fn heredoc_words() {
    let h = parse_heredoc("<<EOF").unwrap().unwrap();
    assert_eq!(
        (h.name.as_str(), h.expand, h.chomp, h.file_descriptor),
        ("EOF", true, false, 0)
    );
    let h = parse_heredoc("3<<-'EOF'").unwrap().unwrap();
    assert_eq!(
        (h.name.as_str(), h.expand, h.chomp, h.file_descriptor),
        ("EOF", false, true, 3)
    );
    let h = parse_heredoc("<<E\"O\"F").unwrap().unwrap();
    assert_eq!((h.name.as_str(), h.expand), ("EOF", false));
    assert!(parse_heredoc("<<").unwrap().is_none());
    assert!(parse_heredoc("a<<EOF").unwrap().is_none());
    assert!(parse_heredoc("<<EOF<").unwrap().is_none());
    assert!(parse_heredoc("<<\"EOF").is_err());
}

#[test]
fn chomp() {
    assert_eq!(chomp_heredoc_content("\t\ta\n\tb\n c\n"), "a\nb\n c\n");
}
