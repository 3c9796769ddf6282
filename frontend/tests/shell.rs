//! Shell-word expansion against BuildKit's lexer test tables and the cases of its `lex_test.go`.

mod common {
    pub(crate) mod shell_tables;
}

use std::collections::{BTreeMap, BTreeSet};

use common::shell_tables::{ENV_VAR_CASES, WORDS_CASES};
use kiln_frontend::{EmptyEnv, EnvList, ExpandErrorKind, Lexer};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn env_var_table() {
    let env = EnvList::from_entries(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lexer = Lexer::new('\\');
    assert!(ENV_VAR_CASES.len() > 200);
    for (input, want) in ENV_VAR_CASES {
        let got = lexer.process_word(input, &env);
        if *want == "error" {
            assert!(got.is_err(), "{input:?} must fail, got {got:?}");
        } else {
            assert_eq!(got.as_deref(), Ok(*want), "input {input:?}");
        }
    }
}

#[test]
fn words_table() {
    let lexer = Lexer::new('\\');
    assert!(WORDS_CASES.len() > 20);
    for (env, input, want) in WORDS_CASES {
        let env = EnvList::from_entries(env.iter());
        let got = match lexer.process_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_string()],
        };
        assert_eq!(got, *want, "input {input:?}");
    }
}

#[test]
fn mandatory_env_vars() {
    let lexer = Lexer::default();
    let set_env = EnvList::from_entries(["VAR=plain", "ARG=x"]);
    let empty_env = EnvList::from_entries(["VAR=", "ARG=x"]);
    let unset_env = EnvList::from_entries(["ARG=x"]);

    let no_empty = "${VAR:?message here$ARG}";
    let no_unset = "${VAR?message here$ARG}";

    assert_eq!(lexer.process_word(no_empty, &set_env).unwrap(), "plain");
    for env in [&empty_env, &unset_env] {
        let err = lexer.process_word(no_empty, env).unwrap_err();
        assert!(err.to_string().contains("message herex"), "{err}");
        assert_eq!(
            err.kind(),
            &ExpandErrorKind::Required {
                name: "VAR".into(),
                message: "message herex".into()
            }
        );
    }
    assert_eq!(lexer.process_word(no_unset, &set_env).unwrap(), "plain");
    assert_eq!(lexer.process_word(no_unset, &empty_env).unwrap(), "");
    let err = lexer.process_word(no_unset, &unset_env).unwrap_err();
    assert!(err.to_string().contains("message herex"), "{err}");

    // Default messages.
    let err = lexer.process_word("${X?}", &EmptyEnv).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to process \"${X?}\": X: is not allowed to be unset"
    );
    let err = lexer
        .process_word("${NULL:?}", &EnvList::from_entries(["NULL="]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to process \"${NULL:?}\": NULL: is not allowed to be empty"
    );
}

/// `(input, env, expected or None for an error, matched, unmatched)` from BuildKit's
/// `TestProcessWithMatches`.
type MatchCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    &'static [&'static str],
    &'static [&'static str],
);

const FOO_BAR: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];

const MATCH_CASES: &[MatchCase] = &[
    ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
    (
        "x ${UNUSED}",
        &[("DUMMY", "dummy")],
        Some("x "),
        &[],
        &["UNUSED"],
    ),
    ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
    (
        "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
        FOO_BAR,
        Some("xxx  ccc"),
        &["FOO", "BAR"],
        &["BAZ"],
    ),
    (
        "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
        FOO_BAR,
        Some("xxx bbb ccc"),
        &["FOO", "BAR"],
        &["BAZ"],
    ),
    ("${FOO:-}", FOO_BAR, Some("xxx"), &["FOO"], &[]),
    ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
    (
        "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
        FOO_BAR,
        Some("aaa bbb "),
        &["FOO", "BAR"],
        &["BAZ"],
    ),
    (
        "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
        FOO_BAR,
        Some("aaa  "),
        &["FOO", "BAR"],
        &["BAZ"],
    ),
    ("${FOO?aaa}", FOO_BAR, Some("xxx"), &["FOO"], &[]),
    ("${BAR?bbb}", FOO_BAR, Some(""), &["BAR"], &[]),
    ("${BAZ?ccc}", FOO_BAR, None, &[], &[]),
    ("${FOO:?aaa}", FOO_BAR, Some("xxx"), &["FOO"], &[]),
    ("${BAR:?bbb}", FOO_BAR, None, &[], &[]),
    ("${BAZ:?ccc}", FOO_BAR, None, &[], &[]),
    ("${BAZ:?}", FOO_BAR, None, &[], &[]),
    ("${FOO=aaa}", FOO_BAR, None, &[], &[]),
    ("${FOO=:aaa}", FOO_BAR, None, &[], &[]),
    ("${FOO=}", &[], None, &[], &[]),
    (
        "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
        &[("FOO", "()[]{}^$.*?|\\x")],
        Some("x"),
        &["FOO"],
        &[],
    ),
    (
        "${FOO%%\\**}",
        &[("FOO", "xx**")],
        Some("xx"),
        &["FOO"],
        &[],
    ),
    ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
    ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
    (
        "${FOO#$BAR}",
        &[("FOO", "xxyy"), ("BAR", "x")],
        Some("xyy"),
        &["FOO", "BAR"],
        &[],
    ),
    (
        "${FOO#$BAR}",
        &[("FOO", "xxyy"), ("BAR", "")],
        Some("xxyy"),
        &["FOO", "BAR"],
        &[],
    ),
    ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
    ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
    ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
    ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
    (
        "${ABC:-.}${FOO%x}${ABC:-.}",
        &[("FOO", "xxyy")],
        Some(".xxyy."),
        &["FOO"],
        &["ABC"],
    ),
    (
        "${FOO%%\\**\\*}",
        &[("FOO", "a***yy*")],
        Some("a"),
        &["FOO"],
        &[],
    ),
    ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
    (
        "${FOO%%$BAR}",
        &[("FOO", "xxyy"), ("BAR", "")],
        Some("xxyy"),
        &["FOO", "BAR"],
        &[],
    ),
    ("${FOO:#}", &[], None, &[], &[]),
    ("${FOO:##}", &[], None, &[], &[]),
    ("${FOO:%}", &[], None, &[], &[]),
    ("${FOO:%%}", &[], None, &[], &[]),
    (
        "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
        Some("/foo.*/*.txt - /foo..*.txt"),
        &["FOO", "NEEDLE"],
        &[],
    ),
    (
        "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
        Some("/tmp/bar.txt - /bar.txt"),
        &["FOO", "NEEDLE"],
        &[],
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
        &[
            ("FOO", "/a/foo/b/c.txt"),
            ("NEEDLE", "/?/"),
            ("REPLACEMENT", "/"),
        ],
        Some("/foo/b/c.txt - /foo/c.txt"),
        &["FOO", "NEEDLE", "REPLACEMENT"],
        &[],
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT}",
        &[
            ("FOO", "http://google.de"),
            ("NEEDLE", "http://"),
            ("REPLACEMENT", "https://"),
        ],
        Some("https://google.de"),
        &["FOO", "NEEDLE", "REPLACEMENT"],
        &[],
    ),
    (
        "${FOO//\\//\\/}",
        &[("FOO", "/tmp/foo.txt")],
        Some("\\/tmp\\/foo.txt"),
        &["FOO"],
        &[],
    ),
    (
        "${FOO/$BAR/ww}",
        &[("FOO", "xxyy"), ("BAR", "")],
        Some("wwxxyy"),
        &["FOO", "BAR"],
        &[],
    ),
    ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
    ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
    ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
    ("${FOO///}", &[], Some(""), &[], &["FOO"]),
];

#[test]
fn process_with_matches() {
    let lexer = Lexer::default();
    for (input, env, want, matched, unmatched) in MATCH_CASES {
        let env = map(env);
        let got = lexer.process(input, &env);
        let Some(want) = want else {
            assert!(got.is_err(), "{input:?} must fail, got {got:?}");
            continue;
        };
        let got = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got.word, *want, "{input:?}");
        assert_eq!(got.matched, set(matched), "matched of {input:?}");
        assert_eq!(got.unmatched, set(unmatched), "unmatched of {input:?}");
    }
}

#[test]
fn process_with_matches_platform() {
    let release =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let lexer = Lexer::default();
    let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        lexer.process_word(release, &map(&pairs)).unwrap()
    };
    assert_eq!(
        with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
        "something-v1.2.3.linux-arm-v7.tar.gz"
    );
    assert_eq!(
        with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]),
        "something-v1.2.3.linux-arm64.tar.gz"
    );
    assert_eq!(
        with(&[("TARGETARCH", "arm64")]),
        "something-v1.2.3.linux-arm64.tar.gz"
    );
}

#[test]
fn env_list_last_definition_wins() {
    let env = EnvList::from_entries(["foo=bar", "car=hat", "car=bike", "bare"]);
    let lexer = Lexer::default();
    assert_eq!(
        lexer.process_word("$foo $car [$bare]", &env).unwrap(),
        "bar bike []"
    );
    let pairs: Vec<(String, String)> = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
    assert_eq!(lexer.process_word("$a", &pairs).unwrap(), "2");
}

#[test]
fn backtick_escape() {
    let env = map(&[("X", "1")]);
    let lexer = Lexer::new('`');
    // A backslash is an ordinary character (Windows paths) and the backtick escapes.
    assert_eq!(
        lexer.process_word("C:\\dir\\$X", &env).unwrap(),
        "C:\\dir\\1"
    );
    assert_eq!(lexer.process_word("`$X", &env).unwrap(), "$X");
    assert_eq!(lexer.process_word("\"a`\"b\"", &env).unwrap(), "a\"b");
    assert_eq!(lexer.process_words("a` b c", &env).unwrap(), ["a b", "c"]);
}

#[test]
fn raw_modes_and_skip_unset() {
    let env = map(&[("SET", "v")]);
    let lexer = Lexer::default().raw_quotes(true).skip_unset_env(true);
    assert_eq!(
        lexer
            .process_word(
                "'a' \"$SET\" $UNSET ${UNSET} ${UNSET:-d} ${UNSET/a/b}",
                &env
            )
            .unwrap(),
        "'a' \"v\" $UNSET ${UNSET} ${UNSET:-d} ${UNSET/a/b}"
    );
    let lexer = Lexer::default().raw_escapes(true);
    assert_eq!(
        lexer.process_word("a\\ b\\$SET", &env).unwrap(),
        "a\\ b\\$SET"
    );
    let lexer = Lexer::default().skip_process_quotes(true);
    assert_eq!(lexer.process_word("'$SET'", &env).unwrap(), "'v'");
}

#[test]
fn heredoc_markers_are_kept() {
    let lexer = Lexer::default();
    assert_eq!(
        lexer.process_words("cat <<  EOF > a<b", &EmptyEnv).unwrap(),
        ["cat", "<<  EOF", ">", "a<b"]
    );
}

#[test]
fn error_messages() {
    let lexer = Lexer::default();
    let e = |s: &str| lexer.process_word(s, &EmptyEnv).unwrap_err().to_string();
    assert_eq!(
        e("'abc"),
        "failed to process \"'abc\": unexpected end of statement while looking for matching single-quote"
    );
    assert_eq!(
        e("\"abc"),
        "failed to process \"\\\"abc\": unexpected end of statement while looking for matching double-quote"
    );
    assert_eq!(
        e("${a"),
        "failed to process \"${a\": syntax error: missing '}'"
    );
    assert_eq!(
        e("${}"),
        "failed to process \"${}\": syntax error: bad substitution"
    );
    assert_eq!(
        e("${a:=b}"),
        "failed to process \"${a:=b}\": unsupported modifier (:=) in substitution"
    );
    assert_eq!(
        e("${a/b"),
        "failed to process \"${a/b\": syntax error: missing '/' in ${}"
    );
    assert_eq!(
        e("${a#\\x}"),
        "failed to process \"${a#\\\\x}\": invalid pattern (\\x) in substitution: invalid escape '\\x'"
    );
}

#[test]
fn long_input_is_linear() {
    // 1 MiB of mixed text and variables expands quickly (no quadratic behaviour).
    let unit = "ab $X \"q $X\" 'lit' ${X:-d} \\$ ";
    let input = unit.repeat((1 << 20) / unit.len());
    let env = map(&[("X", "val")]);
    let start = std::time::Instant::now();
    let words = Lexer::default().process_words(&input, &env).unwrap();
    assert_eq!(words.len(), 6 * ((1 << 20) / unit.len()));
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let lexer = Lexer::default();
    let ok = format!("{}x{}", "${a:-".repeat(100), "}".repeat(100));
    assert_eq!(lexer.process_word(&ok, &EmptyEnv).unwrap(), "x");
    let deep = format!("{}x{}", "${a:-".repeat(100_000), "}".repeat(100_000));
    let err = lexer.process_word(&deep, &EmptyEnv).unwrap_err();
    assert!(
        err.to_string().contains("nested deeper than"),
        "{}",
        &err.to_string()[..100]
    );
    let quoted = "\"${a:-".repeat(100_000);
    assert!(lexer.process_word(&quoted, &EmptyEnv).is_err());
}
