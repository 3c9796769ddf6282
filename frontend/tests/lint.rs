//! Build checks: a table of Dockerfiles and the warnings BuildKit gives for them (rule,
//! line, message), with the `check` directive and the `BUILDKIT_DOCKERFILE_CHECK` build
//! argument. The expectations are BuildKit's own (its linter tests and rule set, commit
//! 73ed6825).

use kiln_frontend::testing::FakeResolver;
use kiln_frontend::{ConvertError, ConvertOptions, LintWarning, convert};

const DIGEST: &str = "sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89";
const AMD64: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
const ARM64: &str = r#"{"architecture":"arm64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:bb"]}}"#;

fn resolver() -> FakeResolver {
    FakeResolver::default()
        .fallback(DIGEST, AMD64)
        .image("armonly", DIGEST, ARM64)
}

fn convert_with(
    dockerfile: &str,
    options: &ConvertOptions,
) -> Result<Vec<LintWarning>, ConvertError> {
    convert(dockerfile.as_bytes(), options, &resolver()).map(|c| c.warnings)
}

/// The warnings of `dockerfile` as `(rule, line, message)`, checking every stage.
fn warnings(dockerfile: &str) -> Vec<(&'static str, usize, String)> {
    let options = ConvertOptions {
        all_stages: true,
        ..ConvertOptions::default()
    };
    convert_with(dockerfile, &options)
        .unwrap_or_else(|e| panic!("{dockerfile}: {e}"))
        .into_iter()
        .map(|w| (w.rule.name, w.location.start_line, w.message))
        .collect()
}

/// A warning as `(rule, line, message)`.
type Expected = (&'static str, usize, &'static str);

#[test]
fn each_rule_reports_what_buildkit_reports() {
    let cases: &[(&str, &[Expected])] = &[
        // Casing of stage names and `AS`.
        (
            "\n# warning: stage name should be lowercase\nFROM scratch AS BadStageName\n\n# warning: 'as' should match 'FROM' cmd casing.\nFROM scratch as base2\n\nFROM scratch AS base3\n",
            &[
                (
                    "StageNameCasing",
                    3,
                    "Stage name 'BadStageName' should be lowercase",
                ),
                (
                    "FromAsCasing",
                    6,
                    "'as' and 'FROM' keywords' casing do not match",
                ),
            ],
        ),
        (
            "\nfrom scratch AS base\n\nfrom scratch as base2\n",
            &[(
                "FromAsCasing",
                2,
                "'AS' and 'from' keywords' casing do not match",
            )],
        ),
        // Empty continuation lines: the line the instruction ends on.
        (
            "\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n",
            &[("NoEmptyContinuation", 6, "Empty continuation line")],
        ),
        // Instruction casing against the majority (a tie is upper case).
        (
            "\n# warning: 'FROM' should be either lowercased or uppercased\nFrom scratch as base\nFROM scratch AS base2\n",
            &[(
                "ConsistentInstructionCasing",
                3,
                "Command 'From' should match the case of the command majority (uppercase)",
            )],
        ),
        (
            "\nFROM scratch\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n",
            &[(
                "ConsistentInstructionCasing",
                3,
                "Command 'copy' should match the case of the command majority (uppercase)",
            )],
        ),
        (
            "\nFROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy Dockerfile /baz\n",
            &[(
                "ConsistentInstructionCasing",
                2,
                "Command 'FROM' should match the case of the command majority (lowercase)",
            )],
        ),
        ("\nfrom scratch\ncopy Dockerfile /foo\n", &[]),
        // Stage names.
        (
            "\nFROM scratch AS b\nFROM scratch AS b\n",
            &[(
                "DuplicateStageName",
                3,
                "Duplicate stage name \"b\", stage names should be unique",
            )],
        ),
        (
            "\nFROM scratch AS scratch\nFROM scratch AS context\n",
            &[
                (
                    "ReservedStageName",
                    2,
                    "Stage name should not use the same name as reserved stage \"scratch\"",
                ),
                (
                    "ReservedStageName",
                    3,
                    "Stage name should not use the same name as reserved stage \"context\"",
                ),
            ],
        ),
        // Shell form of CMD and ENTRYPOINT, unless a SHELL is set (also in the base stage).
        (
            "\nFROM scratch\nCMD mycommand\nENTRYPOINT mycommand\n",
            &[
                (
                    "JSONArgsRecommended",
                    3,
                    "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
                ),
                (
                    "JSONArgsRecommended",
                    4,
                    "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals",
                ),
            ],
        ),
        (
            "\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nCMD mycommand\n",
            &[],
        ),
        (
            "\nFROM scratch\nMAINTAINER me@example.org\n",
            &[(
                "MaintainerDeprecated",
                3,
                "Maintainer instruction is deprecated in favor of using label",
            )],
        ),
        // Arguments of FROM.
        ("\nARG base=scratch\nFROM $base\nCOPY Dockerfile .\n", &[]),
        (
            "\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n",
            &[],
        ),
        (
            "\nARG tag=latest\nFROM busybox:${tag}${version} AS b\nCOPY Dockerfile .\n",
            &[(
                "UndefinedArgInFrom",
                3,
                "FROM argument 'version' is not declared",
            )],
        ),
        (
            "\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH}amd64 busybox\n",
            &[(
                "UndefinedArgInFrom",
                3,
                "FROM argument 'MYARCH' is not declared (did you mean MY_ARCH?)",
            )],
        ),
        (
            "\nARG BUSYBOX_VARIANT\nFROM busybox:stable${BUSYBOX_VARIANT}\n",
            &[],
        ),
        (
            "\nFROM --platform=$TARGETPLATFORM scratch\n",
            &[(
                "RedundantTargetPlatform",
                2,
                "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
            )],
        ),
        (
            "\nFROM --platform=${TARGETPLATFORM} scratch\n",
            &[(
                "RedundantTargetPlatform",
                2,
                "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior",
            )],
        ),
        (
            "\nFROM --platform=linux/amd64 scratch\n",
            &[(
                "FromPlatformFlagConstDisallowed",
                2,
                "FROM --platform flag should not use constant value \"linux/amd64\"",
            )],
        ),
        (
            "\nFROM --platform=linux/amd64 scratch AS my_amd64_stage\n",
            &[],
        ),
        // A relative WORKDIR without an absolute one before it (in the stage or its base).
        (
            "\nFROM scratch\nWORKDIR app/\nWORKDIR more\n",
            &[(
                "WorkdirRelativePath",
                3,
                "Relative workdir \"app/\" can have unexpected results if the base image changes",
            )],
        ),
        (
            "\nFROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n",
            &[],
        ),
        // Variables the converter expands (not RUN's: the shell expands those).
        ("\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n", &[]),
        (
            "\nFROM busybox AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n",
            &[],
        ),
        ("\nFROM busybox\nRUN echo $PATH $nothing\n", &[]),
        (
            "\nFROM busybox\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n",
            &[("UndefinedVar", 3, "Usage of undefined variable '$foo'")],
        ),
        (
            "\nFROM busybox\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n",
            &[(
                "UndefinedVar",
                6,
                "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)",
            )],
        ),
        (
            "\nFROM busybox\nENV PATH=$PAHT:/tmp/bin\n",
            &[(
                "UndefinedVar",
                3,
                "Usage of undefined variable '$PAHT' (did you mean $PATH?)",
            )],
        ),
        // The earlier of two CMDs (ENTRYPOINTs, HEALTHCHECKs) of a stage is the one ignored.
        (
            "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n",
            &[
                (
                    "MultipleInstructionsDisallowed",
                    3,
                    "Multiple ENTRYPOINT instructions should not be used in the same stage because only the last one will be used",
                ),
                (
                    "MultipleInstructionsDisallowed",
                    5,
                    "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
                ),
                (
                    "MultipleInstructionsDisallowed",
                    7,
                    "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used",
                ),
            ],
        ),
        (
            "\nFROM scratch AS a\nCMD [\"/myapp\"]\n\nFROM a AS b\nCMD [\"/myotherapp\"]\n",
            &[],
        ),
        (
            "\nFROM scratch\nENV testkey value\nLABEL key value\n",
            &[
                (
                    "LegacyKeyValueFormat",
                    3,
                    "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
                ),
                (
                    "LegacyKeyValueFormat",
                    4,
                    "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format",
                ),
            ],
        ),
        (
            "FROM scratch\nARG API_KEY\nENV DB_PASSWORD=x PUBLIC_KEY=y NODE_VERSION=22\n",
            &[
                (
                    "SecretsUsedInArgOrEnv",
                    2,
                    "Do not use ARG or ENV instructions for sensitive data (ARG \"API_KEY\")",
                ),
                (
                    "SecretsUsedInArgOrEnv",
                    3,
                    "Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")",
                ),
            ],
        ),
        // A base image of another platform than the build's.
        (
            "FROM armonly\n",
            &[(
                "InvalidBaseImagePlatform",
                1,
                "Base image armonly was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build",
            )],
        ),
    ];
    for (dockerfile, expected) in cases {
        let expected: Vec<(&str, usize, String)> = expected
            .iter()
            .map(|(rule, line, message)| (*rule, *line, (*message).to_owned()))
            .collect();
        assert_eq!(warnings(dockerfile), expected, "{dockerfile}");
    }
}

#[test]
fn warnings_carry_their_rule_link_and_render_as_buildx() {
    let found = convert_with(
        "FROM scratch AS Base\nCOPY a /a\n",
        &ConvertOptions::default(),
    )
    .unwrap();
    assert_eq!(found.len(), 1);
    let warning = &found[0];
    assert_eq!(
        warning.rule.url,
        "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"
    );
    assert_eq!(warning.rule.description, "Stage names should be lowercase");
    assert_eq!(
        warning.short(),
        "StageNameCasing: Stage name 'Base' should be lowercase (line 1)"
    );
    assert_eq!(
        warning.render(b"FROM scratch AS Base\nCOPY a /a\n"),
        "\nWARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n\
         Stage name 'Base' should be lowercase\n\
         Dockerfile:1\n\
         --------------------\n   \
         1 | >>> FROM scratch AS Base\n   \
         2 |     COPY a /a\n   \
         3 |     \n\
         --------------------\n"
    );
}

#[test]
fn the_check_directive_and_build_argument_choose_the_rules() {
    let dockerfile = "FROM scratch as base\ncopy Dockerfile .\n";
    let rules = |text: &str, arg: Option<&str>| -> Result<Vec<&'static str>, String> {
        let mut options = ConvertOptions::default();
        if let Some(arg) = arg {
            options
                .build_args
                .insert("BUILDKIT_DOCKERFILE_CHECK".to_owned(), arg.to_owned());
        }
        convert_with(&format!("{text}{dockerfile}"), &options)
            .map(|w| w.into_iter().map(|w| w.rule.name).collect())
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        rules("", None).unwrap(),
        ["FromAsCasing", "ConsistentInstructionCasing"]
    );
    assert_eq!(rules("#check=skip=all\n", None).unwrap(), [""; 0]);
    assert_eq!(
        rules("#check=skip=ConsistentInstructionCasing\n", None).unwrap(),
        ["FromAsCasing"]
    );
    assert_eq!(
        rules(
            "# check=skip=ConsistentInstructionCasing,FromAsCasing\n",
            None
        )
        .unwrap(),
        [""; 0]
    );
    // error=true: the warnings fail the conversion, and come with the error.
    let error = convert(
        format!("#check=skip=ConsistentInstructionCasing;error=true\n{dockerfile}").as_bytes(),
        &ConvertOptions::default(),
        &resolver(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "lint violation found for rules: FromAsCasing"
    );
    let ConvertError::Lint {
        warnings: found, ..
    } = error
    else {
        panic!("not a lint error");
    };
    assert_eq!(found[0].location.start_line, 2);
    // error=true without warnings builds.
    assert!(
        rules("#check=skip=all;error=true\n", None)
            .unwrap()
            .is_empty()
    );
    // The build argument replaces the directive.
    assert_eq!(
        rules(
            "#check=skip=all\n",
            Some("skip=ConsistentInstructionCasing;error=true")
        ),
        Err("lint violation found for rules: FromAsCasing".to_owned())
    );
    assert!(
        rules("#check=error=true\n", Some("skip=all"))
            .unwrap()
            .is_empty()
    );
    // A `# check=` comment above a stage adds to the file's configuration for it.
    assert_eq!(
        rules(
            "FROM scratch AS First\n# check=skip=StageNameCasing\nFROM scratch AS Second\n",
            None
        )
        .unwrap()
        .into_iter()
        .filter(|r| *r == "StageNameCasing")
        .count(),
        1
    );
    // So does one above any instruction, for that instruction.
    assert_eq!(
        warnings("FROM scratch\n# check=skip=LegacyKeyValueFormat\nENV a b\nENV c d\n"),
        [(
            "LegacyKeyValueFormat",
            4,
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                .to_owned()
        )]
    );
    // Options that do not parse are errors, as BuildKit words them.
    assert_eq!(
        rules("#check=skip\n", None).unwrap_err(),
        "failed to parse check options: invalid check option \"skip\""
    );
    assert_eq!(
        rules("", Some("nonsense=1")).unwrap_err(),
        "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"nonsense\""
    );
}

#[test]
fn only_the_stages_a_build_needs_are_checked_unless_all_are_asked_for() {
    let dockerfile = "FROM scratch AS unused\nENV a b\n\nFROM scratch\nCOPY x /x\n";
    let built = convert_with(dockerfile, &ConvertOptions::default()).unwrap();
    assert!(built.is_empty(), "{built:?}");
    assert_eq!(
        warnings(dockerfile),
        [(
            "LegacyKeyValueFormat",
            2,
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
                .to_owned()
        )]
    );
}

#[test]
fn base_names_must_be_valid_with_the_default_arguments_alone() {
    let check = |dockerfile: &str, arg: (&str, &str)| {
        let mut options = ConvertOptions::default();
        options
            .build_args
            .insert(arg.0.to_owned(), arg.1.to_owned());
        convert_with(dockerfile, &options)
            .unwrap()
            .into_iter()
            .map(|w| (w.rule.name, w.location.start_line, w.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        check(
            "\nARG VERSION\nFROM busybox:$VERSION\n",
            ("VERSION", "latest")
        ),
        [(
            "InvalidDefaultArgInFrom",
            3,
            "Default value for ARG busybox:$VERSION results in empty or invalid base image name"
                .to_owned()
        )]
    );
    assert_eq!(
        check("\nARG IMAGE\nFROM $IMAGE\n", ("IMAGE", "busybox:latest")),
        [(
            "InvalidDefaultArgInFrom",
            3,
            "Default value for ARG $IMAGE results in empty or invalid base image name".to_owned()
        )]
    );
    assert!(
        check(
            "\nARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n",
            ("VERSION", "1")
        )
        .is_empty()
    );
}

#[test]
fn many_warnings_take_linear_time() {
    // 40,000 instructions with a warning each, each reported once though dispatched twice.
    let mut dockerfile = String::from("FROM scratch\n");
    for i in 0..40_000 {
        dockerfile.push_str(&format!("LABEL key{i} value\n"));
    }
    let start = std::time::Instant::now();
    let found = warnings(&dockerfile);
    let elapsed = start.elapsed();
    assert_eq!(found.len(), 40_000);
    assert_eq!(found[39_999].1, 40_001);
    assert!(
        elapsed < std::time::Duration::from_secs(20),
        "took {elapsed:?}"
    );
}

#[test]
fn copying_what_dockerignore_leaves_out_is_reported() {
    let options = ConvertOptions {
        excludes: vec!["secrets".to_owned(), "*.log".to_owned()],
        ..ConvertOptions::default()
    };
    let found: Vec<_> = convert_with(
        "FROM scratch AS base\nCOPY secrets/key.pem app.log ok.txt /\nADD ./debug.log /\n\
         FROM scratch\nCOPY --from=base secrets /\n",
        &options,
    )
    .unwrap()
    .into_iter()
    .map(|w| (w.rule.name, w.location.start_line, w.message))
    .collect();
    assert_eq!(
        found,
        [
            (
                "CopyIgnoredFile",
                2,
                "Attempting to Copy file \"secrets/key.pem\" that is excluded by .dockerignore"
                    .to_owned()
            ),
            (
                "CopyIgnoredFile",
                2,
                "Attempting to Copy file \"app.log\" that is excluded by .dockerignore".to_owned()
            ),
            (
                "CopyIgnoredFile",
                3,
                "Attempting to Add file \"debug.log\" that is excluded by .dockerignore".to_owned()
            ),
        ]
    );
}
