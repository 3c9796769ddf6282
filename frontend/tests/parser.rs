//! Parser behaviour: heredocs, directives, continuations, line numbers, errors with
//! `Dockerfile:LINE` and BuildKit's wording, and robustness on hostile input.

use std::time::{Duration, Instant};

use kiln_frontend::{Dockerfile, Error, ErrorKind, Heredoc, Lexer, Parser, parse, parse_stages};

fn ok(src: &str) -> Dockerfile {
    parse(src.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(src: &str) -> Error {
    match parse(src.as_bytes()) {
        Ok(df) => panic!("parsed but must fail:\n{}", df.dump()),
        Err(e) => e,
    }
}

fn heredoc(name: &str, content: &str, expand: bool, chomp: bool, fd: u64) -> Heredoc {
    Heredoc {
        name: name.into(),
        file_descriptor: fd,
        expand,
        chomp,
        content: content.into(),
    }
}

#[test]
fn extracts_heredocs_like_buildkit() {
    // Ported from BuildKit's TestParseExtractsHeredoc.
    let src = r#"
FROM alpine:3.6
ENV NAME=me
RUN ls
USER <<INVALID
INVALID
RUN <<EMPTY
EMPTY
RUN 3<<EMPTY2
EMPTY2
RUN "<<NOHEREDOC"
RUN <<INDENT
	foo
	bar
INDENT
RUN <<-UNINDENT
	baz
	quux
UNINDENT
RUN <<-UNINDENT2
	baz
	quux
	UNINDENT2
RUN <<-EXPAND
	expand $NAME
EXPAND
RUN <<-'NOEXPAND'
	don't expand $NAME
NOEXPAND
RUN <<COPY
echo hello world
echo foo bar
COPY
RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT
RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT
COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2
COPY <<EOF /quotes
"foo"
'bar'
EOF
COPY <<X <<Y /dest
Y
X
X
Y
RUN <<COMPLEX python3
print('hello world')
COMPLEX
COPY <<file.txt /dest
hello world
file.txt
RUN <<eo'f'
echo foo
eof
RUN <<eo\'f
echo foo
eo'f
RUN <<'e'o\'f
echo foo
eo'f
RUN <<'one two'
echo bar
one two
RUN <<$EOF
$EOF
RUN <<  EOF
EOF
RUN <<  EOF  > foo
EOF
	"#;
    let want: Vec<Vec<Heredoc>> = vec![
        vec![],
        vec![],
        vec![],
        vec![],
        vec![heredoc("EMPTY", "", true, false, 0)],
        vec![heredoc("EMPTY2", "", true, false, 3)],
        vec![],
        vec![heredoc("INDENT", "\tfoo\n\tbar\n", true, false, 0)],
        vec![heredoc("UNINDENT", "\tbaz\n\tquux\n", true, true, 0)],
        vec![heredoc("UNINDENT2", "\tbaz\n\tquux\n", true, true, 0)],
        vec![heredoc("EXPAND", "\texpand $NAME\n", true, true, 0)],
        vec![heredoc(
            "NOEXPAND",
            "\tdon't expand $NAME\n",
            false,
            true,
            0,
        )],
        vec![heredoc(
            "COPY",
            "echo hello world\necho foo bar\n",
            true,
            false,
            0,
        )],
        vec![heredoc(
            "COMMENT",
            "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            true,
            false,
            0,
        )],
        vec![heredoc("MOUNT", "echo hello\n", true, false, 0)],
        vec![
            heredoc("FILE1", "content 1\n", true, false, 0),
            heredoc("FILE2", "content 2\n", true, false, 0),
        ],
        vec![heredoc("EOF", "\"foo\"\n'bar'\n", true, false, 0)],
        vec![
            heredoc("X", "Y\n", true, false, 0),
            heredoc("Y", "X\n", true, false, 0),
        ],
        vec![heredoc("COMPLEX", "print('hello world')\n", true, false, 0)],
        vec![heredoc("file.txt", "hello world\n", true, false, 0)],
        vec![heredoc("eof", "echo foo\n", false, false, 0)],
        vec![heredoc("eo'f", "echo foo\n", true, false, 0)],
        vec![heredoc("eo'f", "echo foo\n", false, false, 0)],
        vec![heredoc("one two", "echo bar\n", false, false, 0)],
        vec![heredoc("$EOF", "", true, false, 0)],
        vec![heredoc("EOF", "", true, false, 0)],
        vec![heredoc("EOF", "", true, false, 0)],
    ];
    let df = ok(src);
    assert_eq!(df.nodes.len(), want.len() + 1);
    for (i, want) in want.iter().enumerate() {
        let node = &df.nodes[i + 1];
        assert_eq!(&node.heredocs, want, "node {i}: {}", node.original);
    }
}

#[test]
fn json_form_has_no_heredocs() {
    let df = ok("FROM alpine\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n");
    assert!(df.nodes.iter().all(|n| n.heredocs.is_empty()));
    assert_eq!(df.nodes.len(), 4);
}

#[test]
fn heredoc_lines_and_onbuild() {
    let df =
        ok("FROM x\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN a <<-A 3<<B\n\tx\n\tA\ny\nB\nCMD done\n");
    let onbuild = &df.nodes[1];
    assert_eq!((onbuild.start_line, onbuild.end_line), (2, 4));
    assert_eq!(
        onbuild.heredocs,
        vec![heredoc("EOF", "echo hi\n", true, false, 0)]
    );
    let run = &df.nodes[2];
    assert_eq!((run.start_line, run.end_line), (5, 9));
    assert_eq!(
        run.heredocs,
        vec![
            heredoc("A", "\tx\n", true, true, 0),
            heredoc("B", "y\n", true, false, 3)
        ]
    );
    assert_eq!(df.nodes[3].start_line, 10);
    // CRLF bodies keep their line endings; the delimiter still matches.
    let df = ok("FROM x\r\nRUN <<EOF\r\na\r\nEOF\r\n");
    assert_eq!(df.nodes[1].heredocs[0].content, "a\r\n");
    // Heredoc markers are ignored where heredocs are not allowed.
    let df = ok("FROM x\nLABEL a=<<EOF\nEOF\n");
    assert_eq!(df.nodes.len(), 3);
}

#[test]
fn unterminated_heredoc() {
    let e = err("FROM x\nRUN <<EOF\necho hi\n");
    assert_eq!(e.kind(), &ErrorKind::UnterminatedHeredoc);
    assert_eq!(e.line(), 2);
    assert_eq!(e.location().end_line, 3);
    let text = e.to_string();
    assert!(text.starts_with("Dockerfile:2\n"), "{text}");
    assert!(text.contains(">>> RUN <<EOF"), "{text}");
    assert!(text.ends_with("unterminated heredoc"), "{text}");
    // The second of two heredocs is missing.
    let e = err("FROM x\nCOPY <<A <<B /d\na\nA\n");
    assert_eq!(e.kind(), &ErrorKind::UnterminatedHeredoc);
}

#[test]
fn line_that_does_not_lex_has_no_heredocs() {
    // As in BuildKit: an open quote on the line means no heredoc is looked for.
    let df = ok("FROM x\nRUN <<EOF'\nCMD x\n");
    assert!(df.nodes[1].heredocs.is_empty());
    assert_eq!(df.nodes.len(), 3);
}

#[test]
fn line_numbers_skip_comments_and_continuations() {
    let src = "# syntax=docker/dockerfile:1\n\n# comment\nFROM busybox\n\n\nRUN echo \\\n  # inner comment\n\n  hello \\\n  world\n# trailing\nCMD x";
    let df = ok(src);
    let spans: Vec<(usize, usize)> = df
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(spans, [(4, 4), (7, 11), (13, 13)]);
    assert_eq!(df.nodes[1].args, ["echo   hello   world"]);
    assert_eq!(df.nodes[1].source.len(), 5);
    assert_eq!(df.nodes[0].comments, ["comment"]);
    // One warning for the empty continuation line; a directive is no warning.
    assert_eq!(df.warnings.len(), 1, "{:?}", df.warnings);
    assert!(
        df.warnings[0]
            .short
            .contains("Empty continuation line found in: RUN echo")
    );
}

#[test]
fn empty_continuation_warnings_like_buildkit() {
    let src = "\nFROM alpine:3.6\n\nRUN valid \\\n    continuation\n\nRUN something \\\n\n    following \\\n\n    more\n\nRUN another \\\n\n    thing\n\nRUN non-indented \\\n# this is a comment\n   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n\t";
    let df = ok(src);
    assert_eq!(df.warnings.len(), 2);
    assert!(
        df.warnings[0]
            .short
            .contains("RUN something     following     more")
    );
    assert!(df.warnings[1].short.contains("RUN another     thing"));
    let detail = df.warnings[0].detail.as_deref().unwrap();
    assert!(detail.contains("will become errors in a future release"));
}

#[test]
fn directives() {
    let df =
        ok("# syntax = docker/dockerfile:1.7\n# check=skip=all\n#escape=`\nFROM x\nRUN a `\n  b\n");
    assert_eq!(df.escape, '`');
    assert_eq!(df.directive("syntax"), Some("docker/dockerfile:1.7"));
    assert_eq!(df.directive("check"), Some("skip=all"));
    assert_eq!(df.nodes[1].args, ["a   b"]);
    // The check directive is the build checks' configuration, not a warning of the parser.
    assert!(df.warnings.is_empty(), "{:?}", df.warnings);
    // Directives after a blank line, a comment or an instruction are plain comments.
    for src in [
        "\n# escape=`\nFROM x\nRUN a \\\n b",
        "# hello\n# escape=`\nFROM x\nRUN a \\\n b",
        "FROM x\n# escape=`\nRUN a \\\n b",
    ] {
        let df = ok(src);
        assert_eq!(df.escape, '\\', "{src}");
        assert_eq!(df.nodes.last().unwrap().args, ["a  b"], "{src}");
    }
    // Unknown directives end the directive block.
    let df = ok("# foo=bar\n# escape=`\nFROM x\n");
    assert_eq!(df.escape, '\\');
    // Backslash stays literal with a backtick escape (Windows paths).
    let df = ok("# escape=`\nFROM x\nCOPY C:\\a\\ C:\\b\\\n");
    assert_eq!(df.nodes[1].args, ["C:\\a\\", "C:\\b\\"]);
}

#[test]
fn directive_errors() {
    let e = err("# escape=`\n# escape=\\\nFROM x\n");
    assert_eq!(
        e.kind(),
        &ErrorKind::DuplicateDirective {
            name: "escape".into()
        }
    );
    assert_eq!(e.line(), 2);
    assert!(
        e.to_string()
            .ends_with("only one escape parser directive can be used")
    );
    let e = err("# escape=x\nFROM x\n");
    assert_eq!(
        e.to_string().lines().last().unwrap(),
        "invalid escape token 'x' does not match ` or \\"
    );
    assert_eq!(e.line(), 1);
}

#[test]
fn bom_and_case_insensitive_keywords() {
    let df = ok("\u{feff}from x\nrUn echo\n");
    assert_eq!(df.dump(), "(from \"x\")\n(run \"echo\")");
    assert_eq!(df.nodes[1].keyword, "rUn");
}

#[test]
fn errors_name_file_line_and_source() {
    let e = Parser::new()
        .file_name("build/Containerfile")
        .parse(b"FROM x\nENV PATH\n")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "build/Containerfile:2\n--------------------\n   2 | >>> ENV PATH\n--------------------\nENV must have two arguments"
    );
    let loc = e.location();
    assert_eq!(
        (loc.file.as_str(), loc.start_line, loc.end_line),
        ("build/Containerfile", 2, 2)
    );
    assert_eq!(loc.source, ["ENV PATH"]);

    let e = err("FROM x\nRUN [\"a\", 1]\n");
    assert_eq!(e.kind(), &ErrorKind::NotStringArray);
    assert!(
        e.to_string()
            .contains("when using JSON array syntax, arrays must be comprised of strings only")
    );

    let e = err("FROM x\nLABEL a=b c\n");
    assert_eq!(
        e.to_string().lines().last().unwrap(),
        "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );

    // Multi-line instructions show every line.
    let e = err("FROM x\nENV \\\n  PATH\n");
    assert_eq!((e.location().start_line, e.location().end_line), (2, 3));
    assert!(e.to_string().contains("   3 | >>>   PATH\n"), "{e}");
}

#[test]
fn strict_utf8_refuses_instructions_and_heredocs_but_not_comments_that_are_not_utf8() {
    let parse = |src: &[u8]| Parser::new().strict_utf8().parse(src);
    // A comment may have any bytes.
    let df = parse(b"# caf\xe9\nFROM x\n").unwrap();
    assert_eq!(df.nodes.len(), 1);
    // An instruction may not: LLB carries it as text, so it is refused, not altered.
    let e = parse(b"FROM x\nCOPY caf\xe9.txt /\n").unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotUtf8);
    let loc = e.location();
    assert_eq!((loc.start_line, loc.end_line, loc.column), (2, 2, Some(9)));
    assert_eq!(loc.source, ["COPY caf\u{fffd}.txt /"]);
    assert!(
        e.to_string()
            .ends_with("an instruction or heredoc line that is not UTF-8 text"),
        "{e}"
    );
    // Nor a continuation line, nor a heredoc's content.
    let e = parse(b"FROM x\nRUN echo \\\n  \xff\n").unwrap_err();
    assert_eq!(
        (e.kind(), e.location().start_line),
        (&ErrorKind::NotUtf8, 3)
    );
    let e = parse(b"FROM x\nCOPY <<EOF /f\nok\n\xfe\nEOF\n").unwrap_err();
    assert_eq!(
        (e.kind(), e.location().start_line),
        (&ErrorKind::NotUtf8, 4)
    );
}

#[test]
fn files_without_instructions() {
    for src in ["", "\n\n", "# only\n# comments\n", "   \n\t\n", "\u{feff}"] {
        let e = err(src);
        assert_eq!(e.kind(), &ErrorKind::NoInstructions, "{src:?}");
        assert!(e.to_string().starts_with("Dockerfile:"), "{e}");
        assert!(e.to_string().ends_with("file with no instructions"), "{e}");
    }
}

#[test]
fn lone_continuation_is_an_empty_instruction() {
    // BuildKit parses a lone `\` as an instruction without keyword; the instruction parser
    // rejects it.
    let df = ok("\\\n");
    assert_eq!(df.dump(), "(\"\")");
    let e = parse_stages(&df).unwrap_err();
    assert!(e.to_string().ends_with("unknown instruction: "), "{e}");
}

#[test]
fn onbuild_chains() {
    let df = ok("FROM x\nONBUILD ONBUILD RUN a\n");
    assert_eq!(df.dump(), "(from \"x\")\n(onbuild (onbuild (run \"a\")))");
    // A chain far too deep for any real file is rejected, not a stack overflow.
    let e = err(&format!("FROM x\n{}RUN a\n", "ONBUILD ".repeat(8000)));
    assert_eq!(e.kind(), &ErrorKind::OnbuildChaining);
    assert_eq!(e.line(), 2);
}

#[test]
fn only_comments_and_args() {
    let df = ok("# comment\nARG A=1\n# another\nARG B\n");
    let stages = parse_stages(&df).unwrap();
    assert!(stages.stages.is_empty());
    assert_eq!(stages.meta_args.len(), 2);
}

#[test]
fn invalid_utf8_is_replaced() {
    let df = parse(b"FROM x\nRUN echo \xff\xfe\n").unwrap();
    assert_eq!(df.nodes[1].args, ["echo \u{fffd}\u{fffd}"]);
}

#[test]
fn long_lines() {
    // BuildKit's scanner limit: a line of 65535 bytes is accepted, one byte more is not.
    let fits = format!("FROM x\nLABEL a={}\n", "b".repeat(65535 - "LABEL a=".len()));
    assert!(parse(fits.as_bytes()).is_ok());
    let over = format!("FROM x\nLABEL a={}\n", "b".repeat(65536 - "LABEL a=".len()));
    assert!(parse(over.as_bytes()).is_err());
    let start = Instant::now();
    let huge = format!("FROM x\nLABEL test={}\n", "a".repeat(10 << 20));
    let e = parse(huge.as_bytes()).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(e.line(), 2);
    assert!(
        e.to_string()
            .ends_with("dockerfile line greater than max allowed size of 65535")
    );
    // The rendered error does not carry the whole line.
    assert!(e.to_string().len() < 1000);
}

#[test]
fn many_lines_are_linear() {
    // ~4 MB of instructions, continuations and heredocs parses in linear time.
    let mut src = String::from("FROM busybox\n");
    let unit = "RUN echo a \\\n  b \\\n  # c\n  d\nENV A=1 B=\"2 3\"\nCOPY <<EOF /x\nline\nEOF\n";
    while src.len() < 4 << 20 {
        src.push_str(unit);
    }
    let start = Instant::now();
    let df = ok(&src);
    let stages = parse_stages(&df).unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_eq!(stages.stages[0].commands.len(), df.nodes.len() - 1);
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses, splits into stages and expands every argument; must never panic.
fn exercise(input: &[u8]) {
    let Ok(df) = parse(input) else { return };
    let _ = df.dump();
    let _ = parse_stages(&df);
    let lexer = Lexer::new(df.escape);
    let env = kiln_frontend::EnvList::from_entries(["A=1", "PATH=/bin"]);
    for node in &df.nodes {
        for arg in &node.args {
            let _ = lexer.process_words(arg, &env);
            let _ = lexer.process(arg, &env);
        }
    }
}

const ALPHABET: &[u8] = b"\\`'\"$ {}:-+?#%/<>=[],\t\n\r aAzZ09*.-\xc3\xa9\xff";

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(8) {
        let pos = if data.is_empty() {
            0
        } else {
            rng.below(data.len())
        };
        match rng.below(4) {
            0 if !data.is_empty() => {
                data.remove(pos);
            }
            1 => data.insert(pos, ALPHABET[rng.below(ALPHABET.len())]),
            2 if !data.is_empty() => data[pos] = (rng.next() & 0xff) as u8,
            _ => {
                let len = rng.below(16).min(data.len() - pos.min(data.len()));
                let chunk: Vec<u8> = data[pos..pos + len].to_vec();
                let at = if data.is_empty() {
                    0
                } else {
                    rng.below(data.len())
                };
                data.splice(at..at, chunk);
            }
        }
    }
}

fn golden_inputs() -> Vec<Vec<u8>> {
    ["positive", "negative"]
        .iter()
        .flat_map(|k| kiln_testdata::parser_golden(k))
        .map(|d| fs_err::read(d.join("Dockerfile")).unwrap())
        .collect()
}

fn fuzz_rounds(rounds: usize, seed: u64) {
    let corpus = golden_inputs();
    let mut rng = Rng(seed);
    for _ in 0..rounds {
        match rng.below(3) {
            0 => {
                let len = rng.below(512);
                let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
                exercise(&bytes);
            }
            1 => {
                let len = rng.below(256);
                let mut text = b"FROM x\nRUN ".to_vec();
                text.extend((0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]));
                exercise(&text);
            }
            _ => {
                let mut data = corpus[rng.below(corpus.len())].clone();
                mutate(&mut rng, &mut data);
                exercise(&data);
            }
        }
    }
}

#[test]
fn no_panic_on_random_and_mutated_input() {
    fuzz_rounds(3_000, 0x9e37_79b9_7f4a_7c15);
}

#[test]
#[ignore = "long-running; run with --run-ignored only"]
fn no_panic_on_random_and_mutated_input_long() {
    let seed = std::env::var("KILN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    fuzz_rounds(2_000_000, seed);
}
