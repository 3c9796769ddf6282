//! Helpers shared by the CLI end-to-end tests.

use std::path::Path;
use std::process::{Command, Output};

/// Writes the marshalled Definition `def` next to `out` and solves it with
/// `kiln --root ROOT build --llb DEF --output type=local,dest=OUT`.
pub(crate) fn build_llb(root: &Path, def: &[u8], out: &Path) -> Output {
    let file = out.with_extension("pb");
    fs_err::write(&file, def).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain", "--llb"])
        .arg(&file)
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .output()
        .unwrap()
}

/// Fails the test with kiln's standard error unless the command succeeded.
pub(crate) fn assert_ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
