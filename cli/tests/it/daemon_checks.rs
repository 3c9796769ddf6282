//! The build checks through `kiln daemon` (issue 14): `kiln --host … build --check` prints
//! what the in-process `kiln build --check` prints, with its exit code, and buildctl's
//! `--opt requestid=frontend.lint` gets BuildKit's lint result (`result.json`, `result.txt`,
//! `result.statuscode`). Needs buildctl, root and the test registry; skips saying why, or
//! fails under `KILN_TEST_REQUIRE_ALL=1`.

use std::path::Path;
use std::process::Output;

use crate::common::daemon::{Daemon, DaemonSetup};
use crate::common::text;
use crate::daemon::{IMAGE, buildctl_dockerfile, kiln};

/// Standard output and exit code.
fn printed(output: &Output) -> (String, Option<i32>) {
    (
        String::from_utf8(output.stdout.clone()).unwrap(),
        output.status.code(),
    )
}

/// `kiln build --check CONTEXT` in process (its own store at `root`) and through `daemon`.
fn both(daemon: &Daemon, root: &Path, client_root: &Path, context: &Path) -> [Output; 2] {
    let context = context.to_str().unwrap();
    [
        kiln(root, &["build", "--check", context]),
        daemon.kiln(client_root, &["build", "--check", context], &[]),
    ]
}

#[test]
fn serial_daemon_runs_the_build_checks_for_buildctl_and_kiln_host() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let (root, client_root) = (
        dir.path().join("local-root"),
        dir.path().join("client-root"),
    );
    let context = setup.context(&format!("FROM {IMAGE} AS Base\nRUN true\nCMD run it\n"));

    let [local, remote] = both(daemon, &root, &client_root, &context);
    let (report, code) = printed(&local);
    assert_eq!(code, Some(1), "{}", text(&local));
    assert!(
        report
            .starts_with("Check complete, 2 warnings have been found!\n\nWARNING: StageNameCasing"),
        "{report}"
    );
    assert!(report.contains("JSONArgsRecommended"), "{report}");
    assert_eq!(
        printed(&remote),
        (report.clone(), Some(1)),
        "{}",
        text(&remote)
    );

    // buildctl's subrequest: the lint result in the response.
    let metadata = dir.path().join("lint.json");
    let linted = buildctl_dockerfile(
        daemon,
        &context,
        &[
            "--opt",
            "requestid=frontend.lint",
            "--metadata-file",
            metadata.to_str().unwrap(),
        ],
    );
    assert!(linted.status.success(), "{}", text(&linted));
    let response: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&metadata).unwrap()).unwrap();
    let rules: Vec<&str> = response["result.json"]["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"))
        .iter()
        .map(|w| w["ruleName"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["StageNameCasing", "JSONArgsRecommended"]);
    assert_eq!(
        response["result.json"]["warnings"][0]["detail"],
        "Stage name 'Base' should be lowercase"
    );
    assert_eq!(response["result.statuscode"], "1");
    assert_eq!(
        response["result.txt"].as_str().unwrap(),
        report
            .strip_prefix("Check complete, 2 warnings have been found!\n")
            .unwrap()
    );

    // A Dockerfile the checks like: the same answer both ways, and success.
    fs_err::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE} AS base\nCMD [\"true\"]\n"),
    )
    .unwrap();
    let [local, remote] = both(daemon, &root, &client_root, &context);
    assert_eq!(
        printed(&local),
        ("Check complete, no warnings found.\n".to_owned(), Some(0)),
        "{}",
        text(&local)
    );
    assert_eq!(printed(&remote), printed(&local), "{}", text(&remote));

    // A Dockerfile that does not convert fails both ways with its error.
    fs_err::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nNOPE x\n"),
    )
    .unwrap();
    let [local, remote] = both(daemon, &root, &client_root, &context);
    assert!(!local.status.success());
    assert!(!remote.status.success());
    assert!(
        text(&remote).contains("unknown instruction: NOPE"),
        "{}",
        text(&remote)
    );
    assert!(
        text(&local).contains("unknown instruction: NOPE"),
        "{}",
        text(&local)
    );
}
