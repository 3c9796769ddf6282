//! Issue 18: BuildKit's build checks. `kiln build --check` (`--call=check`) prints the
//! warnings as buildx does and exits 1 when there are some; a build lists them after its
//! progress; `# check=` and `BUILDKIT_DOCKERFILE_CHECK` choose the rules, and `error=true`
//! fails a build with warnings. Also `--call=targets`, and the entitlements a Dockerfile's
//! steps need, refused before any step runs.

use std::path::Path;
use std::process::Output;

use crate::build_dockerfile_sources::build;
use crate::common::{kiln_in, ready, text};

/// `kiln build ARGS DIR/ctx` with `dockerfile` as the context's Dockerfile, no output.
fn kiln_build(dir: &Path, dockerfile: &str, args: &[&str]) -> Output {
    let context = dir.join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let context = context.to_string_lossy().into_owned();
    all.push(&context);
    kiln_in(dir, &all, &[])
}

const TWO_WARNINGS: &str = "FROM scratch AS Base\nCOPY a /a\nCMD run it\n";

#[test]
fn check_prints_the_warnings_as_buildx_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let expected = "Check complete, 2 warnings have been found!\n\
        \n\
        WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n\
        Stage name 'Base' should be lowercase\n\
        Dockerfile:1\n\
        --------------------\n   \
        1 | >>> FROM scratch AS Base\n   \
        2 |     COPY a /a\n   \
        3 |     CMD run it\n\
        --------------------\n\
        \n\
        WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
        JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
        Dockerfile:3\n\
        --------------------\n   \
        1 |     FROM scratch AS Base\n   \
        2 |     COPY a /a\n   \
        3 | >>> CMD run it\n   \
        4 |     \n\
        --------------------\n";
    for flag in ["--check", "--call=check"] {
        let output = kiln_build(dir.path(), TWO_WARNINGS, &[flag]);
        assert_eq!(output.status.code(), Some(1), "{flag}: {}", text(&output));
        assert_eq!(String::from_utf8_lossy(&output.stdout), expected, "{flag}");
    }
    // Nothing to say: exit 0.
    let output = kiln_build(dir.path(), "FROM scratch\nCOPY a /a\n", &["--check"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Check complete, no warnings found.\n"
    );
    // Every stage is checked, not only those the target needs; with --target, its own.
    let stages = "FROM scratch AS unused\nENV a b\n\nFROM scratch\nCOPY a /a\n";
    let output = kiln_build(dir.path(), stages, &["--check"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("WARNING: LegacyKeyValueFormat"),
        "{}",
        text(&output)
    );
    // The directive skips rules; error=true reports the violation and fails.
    let output = kiln_build(
        dir.path(),
        &format!("# check=skip=StageNameCasing;error=true\n{TWO_WARNINGS}"),
        &["--check"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("Check complete, 1 warning has been found!\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("StageNameCasing"), "{stdout}");
    assert!(
        text(&output).contains("lint violation found for rules: JSONArgsRecommended"),
        "{}",
        text(&output)
    );
    // Unknown methods are refused.
    let output = kiln_build(dir.path(), TWO_WARNINGS, &["--call=frobnicate"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("invalid call method \"frobnicate\""),
        "{}",
        text(&output)
    );
}

#[test]
fn targets_lists_the_stages_with_their_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let output = kiln_build(
        dir.path(),
        "# build compiles the program\nFROM scratch AS build\n\nFROM scratch AS release\n",
        &["--call=targets"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "TARGET            DESCRIPTION\n\
         build             compiles the program\n\
         release (default) \n"
    );
}

#[test]
fn a_build_lists_its_warnings_and_error_true_fails_it() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = [("a", "a\n", 0o644)];
    let output = build(dir.path(), TWO_WARNINGS, &files, &["--progress=plain"]);
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "\n 2 warnings found:\n \
             - StageNameCasing: Stage name 'Base' should be lowercase (line 1)\n \
             - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)\n"
        ),
        "{stderr}"
    );
    assert_eq!(
        fs_err::read_to_string(dir.path().join("out/a")).unwrap(),
        "a\n"
    );
    // -q prints the image id only.
    let output = build(dir.path(), TWO_WARNINGS, &files, &["-q"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains("warning"), "{}", text(&output));
    // error=true: the warnings are listed and the build fails before it builds anything.
    let failing = format!("# check=error=true\n{TWO_WARNINGS}");
    let output = build(dir.path(), &failing, &files, &["--progress=plain"]);
    assert!(!output.status.success(), "{}", text(&output));
    let log = text(&output);
    assert!(log.contains(" 2 warnings found:\n"), "{log}");
    assert!(
        log.contains("lint violation found for rules: JSONArgsRecommended, StageNameCasing"),
        "{log}"
    );
    assert!(!dir.path().join("out/a").exists());
    // The build argument replaces the directive.
    let output = build(
        dir.path(),
        &failing,
        &files,
        &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        !text(&output).contains("warnings found"),
        "{}",
        text(&output)
    );
    // skip= leaves the other rules.
    let output = build(
        dir.path(),
        &format!("# check=skip=JSONArgsRecommended\n{TWO_WARNINGS}"),
        &files,
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(
            "\n 1 warning found:\n - StageNameCasing: Stage name 'Base' should be lowercase (line 2)\n"
        ),
        "{}",
        text(&output)
    );
}

/// The step number plain progress gives the step named `name`, if it showed one.
fn step_number(log: &str, name: &str) -> Option<String> {
    log.lines()
        .find(|l| l.starts_with('#') && l.ends_with(name))
        .and_then(|l| l.split_once(' '))
        .map(|(n, _)| n.to_owned())
}

#[test]
fn a_step_without_its_entitlement_stops_the_build_before_any_step_runs() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (flag, entitlement) in [
        ("--network=host", "network.host"),
        ("--security=insecure", "security.insecure"),
    ] {
        let dockerfile = format!(
            "FROM busybox\nRUN echo {entitlement} first > /first\nRUN {flag} cat /first > /second\n"
        );
        let output = build(dir.path(), &dockerfile, &[], &["--progress=plain"]);
        assert!(!output.status.success(), "{}", text(&output));
        let log = text(&output);
        assert!(
            log.contains(&format!("{entitlement} is not allowed")),
            "{log}"
        );
        // Not even the first step started: nothing ran, nothing was cached.
        assert_eq!(
            step_number(&log, &format!("RUN echo {entitlement} first > /first")),
            None,
            "{log}"
        );
        let output = build(
            dir.path(),
            &dockerfile,
            &[],
            &["--progress=plain", "--allow", entitlement],
        );
        assert!(output.status.success(), "{}", text(&output));
        let log = text(&output);
        let step = step_number(&log, &format!("RUN echo {entitlement} first > /first"))
            .unwrap_or_else(|| panic!("the first step ran: {log}"));
        assert!(
            !log.contains(&format!("\n{step} CACHED")),
            "the refused build ran the first step: {log}"
        );
        assert_eq!(
            fs_err::read_to_string(dir.path().join("out/second")).unwrap(),
            format!("{entitlement} first\n")
        );
    }
}

#[test]
fn warnings_found_before_a_conversion_error_are_listed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let summary =
        "\n 1 warning found:\n - StageNameCasing: Stage name 'Base' should be lowercase (line 1)\n";
    for flags in [&["--target", "nope"][..], &["--check", "--target", "nope"]] {
        let output = kiln_build(dir.path(), "FROM scratch AS Base\nCOPY a /a\n", flags);
        assert!(!output.status.success(), "{flags:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(summary), "{flags:?}: {stderr}");
        assert!(
            stderr.contains("target stage \"nope\" could not be found"),
            "{flags:?}: {stderr}"
        );
    }
}
