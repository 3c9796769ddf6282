//! The README demo script, run as a user would run it (with the binary under test).

use std::process::Command;

#[test]
fn readme_demo_builds_and_runs_the_image() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("KILN_TEST_REQUIRE_ALL").is_none(),
            "the demo needs root (namespaces, overlayfs)"
        );
        #[expect(clippy::print_stderr, reason = "a skipped test says why")]
        {
            eprintln!("skipped: the demo needs root");
        }
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", root.path())
        // No registry is needed: the base image is loaded from testdata.
        .env_remove("KILN_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some("hello from kiln: BUILT IN TWO STAGES (in /app)"),
        "{stdout}"
    );
}
