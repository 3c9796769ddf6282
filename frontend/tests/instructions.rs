//! Typed instructions: every instruction and flag, stage splitting, and BuildKit's errors
//! (cases ported from BuildKit's `instructions/parse_test.go` and `parse_heredoc_test.go`).

use std::time::Duration;

use kiln_frontend::{
    CacheSharing, Command, CommandKind, EnvList, Error, ErrorKind, Instruction, Lexer, MountType,
    NetworkMode, SecurityMode, SourceContent, SourcesAndDest, Stages, parse, parse_instruction,
    parse_stages,
};

fn stages(src: &str) -> Stages {
    let df = parse(src.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    parse_stages(&df).unwrap_or_else(|e| panic!("{e}"))
}

/// The single command of `FROM x\n<line>`.
fn command(line: &str) -> Command {
    let mut s = stages(&format!("FROM x\n{line}\n"));
    assert_eq!(s.stages[0].commands.len(), 1);
    s.stages[0].commands.remove(0)
}

/// Parses the first node of `src` as one instruction and returns the error.
fn instruction_error(src: &str) -> Error {
    let df = parse(src.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    match parse_instruction(&df.nodes[0], "Dockerfile") {
        Ok(i) => panic!("{src:?} parsed: {i:?}"),
        Err(e) => e,
    }
}

fn message(e: &Error) -> String {
    e.kind().to_string()
}

#[test]
fn exactly_one_argument() {
    for cmd in ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"] {
        let e = instruction_error(cmd);
        assert_eq!(message(&e), format!("{cmd} requires exactly one argument"));
        assert!(e.to_string().ends_with(&format!(
            "dockerfile parse error on line 1: {cmd} requires exactly one argument"
        )));
    }
}

#[test]
fn at_least_one_argument() {
    for cmd in [
        "ENV",
        "LABEL",
        "ONBUILD",
        "HEALTHCHECK",
        "EXPOSE",
        "VOLUME",
        "ARG",
    ] {
        let e = instruction_error(cmd);
        assert_eq!(message(&e), format!("{cmd} requires at least one argument"));
    }
    let e = instruction_error("SHELL []");
    assert_eq!(message(&e), "SHELL requires at least one argument");
}

#[test]
fn no_destination_argument() {
    for cmd in ["ADD", "COPY"] {
        let e = instruction_error(&format!("{cmd} arg1"));
        assert_eq!(
            message(&e),
            format!(
                "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
            )
        );
    }
    // BuildKit's copyEmptyWhitespace case.
    let e = instruction_error("COPY\t\n\t\tquux \\\n      bar");
    assert!(message(&e).contains("COPY requires at least two arguments"));
}

#[test]
fn error_cases() {
    for (src, want) in [
        (
            "ONBUILD FROM scratch",
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "ONBUILD MAINTAINER me",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        ("MAINTAINER --boo joe@example.com", "unknown flag: --boo"),
        (
            "ONBUILD ONBUILD RUN touch foobar",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("FOO bar", "unknown instruction: FOO (did you mean FROM?)"),
        ("foo bar", "unknown instruction: foo (did you mean from?)"),
        ("FROBNICATE x", "unknown instruction: FROBNICATE"),
        ("ENV =x", "ENV names can not be blank"),
        ("LABEL =x", "LABEL names can not be blank"),
        ("ARG =x", "ARG names can not be blank"),
        ("FROM", "FROM requires either one or three arguments"),
        ("FROM a b", "FROM requires either one or three arguments"),
        (
            "FROM a AS b c",
            "FROM requires either one or three arguments",
        ),
        (
            "FROM a AS B$",
            "invalid name for build stage: \"B$\", name can't start with a number or contain symbols",
        ),
        (
            "FROM --plaform=x a",
            "unknown flag: --plaform (did you mean platform?)",
        ),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        (
            "HEALTHCHECK CONNECT TCP 7000",
            "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)",
        ),
        (
            "HEALTHCHECK --interval=50ns CMD x",
            "Interval \"interval\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --timeout=-1s CMD x",
            "Interval \"timeout\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --start-period=soon CMD x",
            "time: invalid duration \"soon\"",
        ),
        (
            "HEALTHCHECK --retries=x CMD x",
            "strconv.ParseInt: parsing \"x\": invalid syntax",
        ),
        (
            "HEALTHCHECK --retries=-2 CMD x",
            "--retries cannot be negative (-2)",
        ),
        ("HEALTHCHECK --bogus=1 CMD x", "unknown flag: --bogus"),
        (
            "VOLUME [\"\"]",
            "VOLUME specified can not be an empty string",
        ),
        (
            "SHELL /bin/sh -c",
            "SHELL requires the arguments to be in JSON form",
        ),
        (
            "RUN --network=bridge true",
            "invalid network mode \"bridge\"",
        ),
        ("RUN --security=root true", "security \"root\" is not valid"),
        (
            "RUN --mount=type=tmp true",
            "unsupported mount type \"tmp\" (did you mean tmpfs?)",
        ),
        (
            "RUN --mount=from=$x,target=/a true",
            "'from' doesn't support variable expansion, define alias stage instead",
        ),
        ("RUN --mount true", "missing a value on flag: --mount"),
        (
            "RUN --network=none --network=host true",
            "duplicate flag specified: --network",
        ),
        (
            "COPY --link=maybe a b",
            "expecting boolean value for flag --link, not: maybe",
        ),
        ("COPY --from a b", "missing a value on flag: --from"),
        ("ADD --from=x a b", "unknown flag: --from"),
        ("COPY --checksum=sha256:x a b", "unknown flag: --checksum"),
        (
            "COPY /foo <<EOF\nEOF",
            "COPY cannot accept a heredoc as a destination",
        ),
        (
            "ADD /foo <<EOF\nEOF",
            "ADD cannot accept a heredoc as a destination",
        ),
        ("CMD --x=1 true", "unknown flag: --x"),
        (
            "RUN --device=a,b true",
            "invalid field 'b' must be a key=value pair",
        ),
        ("EXPOSE --x 80", "unknown flag: --x"),
    ] {
        let e = instruction_error(src);
        assert_eq!(message(&e), want, "{src:?}");
        assert!(matches!(e, Error::Instruction { .. }), "{src:?}");
    }
}

#[test]
fn error_locations_have_columns() {
    let df = parse(b"FROM x\n\n  COPY --form=a b c\n").unwrap();
    let e = parse_stages(&df).unwrap_err();
    let loc = e.location();
    assert_eq!((loc.start_line, loc.column), (3, Some(8)));
    assert_eq!(
        e.to_string(),
        "Dockerfile:3\n--------------------\n   3 | >>>   COPY --form=a b c\n--------------------\ndockerfile parse error on line 3: unknown flag: --form (did you mean from?)"
    );
    let e = parse_stages(&parse(b"FROM x\n\tfoo bar\n").unwrap()).unwrap_err();
    assert_eq!((e.line(), e.location().column), (2, Some(2)));
    assert_eq!(
        e.kind(),
        &ErrorKind::UnknownInstruction {
            instruction: "foo".into(),
            suggest: Some("from".into())
        }
    );
}

#[test]
fn stages_and_meta_args() {
    let s = stages(
        "# foo sets foo\nARG foo=bar\n# base defines first stage\nFROM busybox AS base\n# this is irrelevant\nARG foo\n# bar defines bar\n# baz is something else\nARG bar baz=123\nFROM --platform=$BUILDPLATFORM base\nRUN x\n",
    );
    assert_eq!(s.meta_args.len(), 1);
    assert_eq!(s.meta_args[0].key, "foo");
    assert_eq!(s.meta_args[0].value.as_deref(), Some("bar"));
    assert_eq!(s.meta_args[0].doc_comment, "sets foo");
    let base = &s.stages[0];
    assert_eq!(
        (base.name.as_str(), base.base_name.as_str()),
        ("base", "busybox")
    );
    assert_eq!(base.doc_comment, "defines first stage");
    assert_eq!(base.location.start_line, 4);
    let CommandKind::Arg(args) = &base.commands[0].kind else {
        panic!()
    };
    assert_eq!(
        (
            args[0].key.as_str(),
            args[0].value.as_ref(),
            args[0].doc_comment.as_str()
        ),
        ("foo", None, "")
    );
    let CommandKind::Arg(args) = &base.commands[1].kind else {
        panic!()
    };
    assert_eq!(args[0].doc_comment, "defines bar");
    assert_eq!(
        (args[1].key.as_str(), args[1].value.as_deref()),
        ("baz", Some("123"))
    );
    assert_eq!(args[1].doc_comment, "is something else");
    let second = &s.stages[1];
    assert_eq!(second.name, "");
    assert_eq!(second.platform, "$BUILDPLATFORM");
    assert_eq!(second.source_code, "FROM --platform=$BUILDPLATFORM base");
    assert_eq!(s.find("BASE"), Some(0));
    assert_eq!(s.find("nope"), None);
    // Stage names are lower-cased; the keyword and AS are case-insensitive.
    let s = stages("from x as Build\n");
    assert_eq!(s.stages[0].name, "build");
    assert_eq!(s.stages[0].orig_cmd, "from");
}

#[test]
fn env_and_label() {
    let c = command("ENV a=1 b=\"x y\" c=z\\ w");
    assert_eq!(c.name, "env");
    let CommandKind::Env(env) = c.kind else {
        panic!()
    };
    let pairs: Vec<(&str, &str, bool)> = env
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str(), p.no_delim))
        .collect();
    assert_eq!(
        pairs,
        [
            ("a", "1", false),
            ("b", "\"x y\"", false),
            ("c", "z\\ w", false)
        ]
    );
    let CommandKind::Env(env) = command("ENV PATH /usr/bin:$PATH").kind else {
        panic!()
    };
    assert_eq!(
        (env[0].key.as_str(), env[0].value.as_str(), env[0].no_delim),
        ("PATH", "/usr/bin:$PATH", true)
    );
    let CommandKind::Label(labels) = command("LABEL \"com.example\"=\"v 1\" other=2").kind else {
        panic!()
    };
    assert_eq!(labels.len(), 2);
    assert_eq!(labels[0].key, "\"com.example\"");
    // Values are expanded later, with the lexer.
    let value = Lexer::default()
        .process_word(&labels[0].value, &EnvList::default())
        .unwrap();
    assert_eq!(value, "v 1");
}

#[test]
fn copy_and_add_flags() {
    let c = command(
        "COPY --from=build --chown=1:2 --chmod=0755 --link --parents --exclude=*.md --exclude=tmp a b /dst/",
    );
    let CommandKind::Copy(copy) = c.kind else {
        panic!()
    };
    assert_eq!(copy.from, "build");
    assert_eq!((copy.chown.as_str(), copy.chmod.as_str()), ("1:2", "0755"));
    assert!(copy.link && copy.parents);
    assert_eq!(copy.exclude, ["*.md", "tmp"]);
    assert_eq!(copy.sources.source_paths, ["a", "b"]);
    assert_eq!(copy.sources.dest_path, "/dst/");

    let CommandKind::Copy(copy) = command("COPY [\"a b\", \"/c d\"]").kind else {
        panic!()
    };
    assert_eq!(copy.sources.source_paths, ["a b"]);
    assert!(!copy.link);

    let c = command(
        "ADD --chown=u --chmod=600 --link=false --keep-git-dir --checksum=sha256:abc --unpack=false --exclude=x https://e.x/a.tgz /",
    );
    let CommandKind::Add(add) = c.kind else {
        panic!()
    };
    assert_eq!(add.checksum, "sha256:abc");
    assert_eq!(
        (add.keep_git_dir, add.unpack, add.link),
        (Some(true), Some(false), false)
    );
    assert_eq!(add.exclude, ["x"]);
    assert_eq!(add.sources.source_paths, ["https://e.x/a.tgz"]);
    let CommandKind::Add(add) = command("ADD a b").kind else {
        panic!()
    };
    assert_eq!((add.keep_git_dir, add.unpack), (None, None));
}

#[test]
fn copy_heredocs() {
    let content = |path: &str, data: &str, expand: bool| SourceContent {
        path: path.into(),
        data: data.into(),
        expand,
    };
    for (src, want) in [
        (
            "COPY /foo /bar",
            SourcesAndDest {
                dest_path: "/bar".into(),
                source_paths: vec!["/foo".into()],
                source_contents: vec![],
            },
        ),
        (
            "COPY <<EOF /bar\nEOF",
            SourcesAndDest {
                dest_path: "/bar".into(),
                source_paths: vec![],
                source_contents: vec![content("EOF", "", true)],
            },
        ),
        (
            "COPY <<-EOF /bar\n\tTESTING\nEOF",
            SourcesAndDest {
                dest_path: "/bar".into(),
                source_paths: vec![],
                source_contents: vec![content("EOF", "TESTING\n", true)],
            },
        ),
        (
            "COPY <<'EOF' /bar\nTESTING\nEOF",
            SourcesAndDest {
                dest_path: "/bar".into(),
                source_paths: vec![],
                source_contents: vec![content("EOF", "TESTING\n", false)],
            },
        ),
        (
            "COPY <<EOF1 <<EOF2 /bar\nthis is the first file\nEOF1\nthis is the second file\nEOF2",
            SourcesAndDest {
                dest_path: "/bar".into(),
                source_paths: vec![],
                source_contents: vec![
                    content("EOF1", "this is the first file\n", true),
                    content("EOF2", "this is the second file\n", true),
                ],
            },
        ),
        (
            "COPY <<EOF foo.txt /bar\nthis is inline\nEOF",
            SourcesAndDest {
                dest_path: "/bar".into(),
                source_paths: vec!["foo.txt".into()],
                source_contents: vec![content("EOF", "this is inline\n", true)],
            },
        ),
        (
            "COPY <<EOF /quotes\n\"quotes\"\nEOF",
            SourcesAndDest {
                dest_path: "/quotes".into(),
                source_paths: vec![],
                source_contents: vec![content("EOF", "\"quotes\"\n", true)],
            },
        ),
    ] {
        let CommandKind::Copy(copy) = command(src).kind else {
            panic!()
        };
        assert_eq!(copy.sources, want, "{src:?}");
    }
}

#[test]
fn run_flags_and_forms() {
    let c = command(
        "RUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok,required --network=none --security=insecure --device=/dev/fuse make",
    );
    let CommandKind::Run(run) = c.kind else {
        panic!()
    };
    assert_eq!(run.network, NetworkMode::None);
    assert_eq!(run.security, SecurityMode::Insecure);
    assert_eq!(run.devices.len(), 1);
    assert_eq!(
        (run.devices[0].name.as_str(), run.devices[0].required),
        ("/dev/fuse", false)
    );
    assert_eq!(run.flags_used, ["device", "mount", "network", "security"]);
    assert_eq!(run.cmd.cmd_line, ["make"]);
    assert!(run.cmd.prepend_shell);
    let mut expand = |s: &str| Ok(s.to_string());
    let mounts = run.mounts(&mut expand).unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].kind, MountType::Cache);
    assert_eq!(mounts[0].cache_sharing, Some(CacheSharing::Locked));
    assert_eq!(mounts[1].kind, MountType::Secret);
    assert!(mounts[1].required);

    // Mount values are expanded by the converter's expander.
    let CommandKind::Run(run) = command("RUN --mount=type=cache,target=$DIR true").kind else {
        panic!()
    };
    let env = EnvList::from_entries(["DIR=/cache"]);
    let lexer = Lexer::default();
    let mut expand = |s: &str| lexer.process_word(s, &env);
    assert_eq!(run.mounts(&mut expand).unwrap()[0].target, "/cache");

    let CommandKind::Run(run) = command("RUN [\"echo\", \"a b\"]").kind else {
        panic!()
    };
    assert_eq!(run.cmd.cmd_line, ["echo", "a b"]);
    assert!(!run.cmd.prepend_shell);
    assert_eq!(
        (run.network, run.security),
        (NetworkMode::Default, SecurityMode::Sandbox)
    );
    assert!(run.flags_used.is_empty());

    let CommandKind::Run(run) = command("RUN <<EOF bash\necho $HOME\nEOF").kind else {
        panic!()
    };
    assert_eq!(run.cmd.cmd_line, ["<<EOF bash"]);
    assert_eq!(run.cmd.files.len(), 1);
    assert_eq!(
        (
            run.cmd.files[0].name.as_str(),
            run.cmd.files[0].data.as_str()
        ),
        ("EOF", "echo $HOME\n")
    );

    // BuildKit's TestRunCmdFlagsUsed.
    let CommandKind::Run(run) = command("RUN --mount=type=tmpfs,target=/foo/ echo hello").kind
    else {
        panic!()
    };
    assert_eq!(run.flags_used, ["mount"]);
}

#[test]
fn cmd_entrypoint_shell() {
    let CommandKind::Cmd(cmd) = command("CMD echo hi").kind else {
        panic!()
    };
    assert_eq!(
        (cmd.cmd_line.as_slice(), cmd.prepend_shell),
        (&["echo hi".to_string()][..], true)
    );
    let CommandKind::Cmd(cmd) = command("CMD []").kind else {
        panic!()
    };
    assert!(cmd.cmd_line.is_empty() && !cmd.prepend_shell);
    let CommandKind::Entrypoint(ep) = command("ENTRYPOINT [\"/bin/sh\", \"-c\"]").kind else {
        panic!()
    };
    assert_eq!(ep.cmd_line, ["/bin/sh", "-c"]);
    // Single quotes are not JSON: shell form.
    let CommandKind::Cmd(cmd) = command("CMD ['a']").kind else {
        panic!()
    };
    assert_eq!(cmd.cmd_line, ["['a']"]);
    let CommandKind::Shell(shell) = command("SHELL [\"powershell\", \"-command\"]").kind else {
        panic!()
    };
    assert_eq!(shell, ["powershell", "-command"]);
}

#[test]
fn healthcheck() {
    let CommandKind::Healthcheck(h) = command("HEALTHCHECK NONE").kind else {
        panic!()
    };
    assert_eq!(h.test, ["NONE"]);
    let CommandKind::Healthcheck(h) = command(
        "HEALTHCHECK --interval=5s --timeout=3s --start-period=1m --start-interval=500ms --retries=3 CMD curl -f http://localhost/",
    )
    .kind
    else {
        panic!()
    };
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(h.interval, Duration::from_secs(5));
    assert_eq!(h.timeout, Duration::from_secs(3));
    assert_eq!(h.start_period, Duration::from_secs(60));
    assert_eq!(h.start_interval, Duration::from_millis(500));
    assert_eq!(h.retries, 3);
    let CommandKind::Healthcheck(h) =
        command("HEALTHCHECK --interval=0s CMD [\"check\", \"x\"]").kind
    else {
        panic!()
    };
    assert_eq!(h.test, ["CMD", "check", "x"]);
    assert_eq!(h.interval, Duration::ZERO);
    let CommandKind::Healthcheck(h) = command("healthcheck cmd hello world").kind else {
        panic!()
    };
    assert_eq!(h.test, ["CMD-SHELL", "hello world"]);
    let CommandKind::Healthcheck(h) = command("HEALTHCHECK --interval=1ms CMD x").kind else {
        panic!()
    };
    assert_eq!(h.interval, Duration::from_millis(1));
}

#[test]
fn simple_instructions() {
    assert_eq!(
        command("WORKDIR /a b").kind,
        CommandKind::Workdir("/a b".into())
    );
    assert_eq!(
        command("USER 1000:1000").kind,
        CommandKind::User("1000:1000".into())
    );
    assert_eq!(
        command("STOPSIGNAL SIGKILL").kind,
        CommandKind::StopSignal("SIGKILL".into())
    );
    assert_eq!(
        command("MAINTAINER Jane <j@x>").kind,
        CommandKind::Maintainer("Jane <j@x>".into())
    );
    assert_eq!(
        command("EXPOSE 8080/udp 80 443/tcp").kind,
        CommandKind::Expose(vec!["443/tcp".into(), "80".into(), "8080/udp".into()])
    );
    assert_eq!(
        command("VOLUME /a /b").kind,
        CommandKind::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        command("VOLUME [\"/c\", \" /d \"]").kind,
        CommandKind::Volume(vec!["/c".into(), "/d".into()])
    );
    let c = command("ONBUILD RUN echo $X");
    assert_eq!(c.kind, CommandKind::Onbuild("RUN echo $X".into()));
    let c = command("onbuild COPY <<EOF /x\nhi\nEOF");
    assert_eq!(
        c.kind,
        CommandKind::Onbuild("COPY <<EOF /x\nhi\nEOF".into())
    );
    assert_eq!(c.code, "onbuild COPY <<EOF /x");
    assert_eq!((c.location.start_line, c.location.end_line), (2, 4));
}

#[test]
fn single_instruction_api() {
    let df = parse(b"FROM alpine AS base\nRUN true\n").unwrap();
    let Instruction::Stage(stage) = parse_instruction(&df.nodes[0], "Dockerfile").unwrap() else {
        panic!()
    };
    assert_eq!(stage.name, "base");
    let Instruction::Command(cmd) = parse_instruction(&df.nodes[1], "Dockerfile").unwrap() else {
        panic!()
    };
    assert_eq!(cmd.name, "run");
}

#[test]
fn every_instruction_with_odd_arguments_does_not_panic() {
    // BuildKit's TestNilLinter shape: every keyword with assorted arguments.
    for keyword in kiln_frontend::INSTRUCTIONS {
        for args in [
            "foo=bar", "a", "a b", "a b c", "0 0", "", "[]", "[\"a\"]", "--x a",
        ] {
            let src = format!("FROM busybox\n{keyword} {args}\n");
            if let Ok(df) = parse(src.as_bytes()) {
                let _ = parse_stages(&df);
            }
        }
    }
}

#[test]
fn documented_error_rendering() {
    let df = parse(b"FROM x\nfrobnicate x\n").unwrap();
    let e = parse_stages(&df).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:2\n--------------------\n   2 | >>> frobnicate x\n--------------------\ndockerfile parse error on line 2: unknown instruction: frobnicate"
    );
}
