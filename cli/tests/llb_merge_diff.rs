//! MergeOp and DiffOp through `kiln build --llb`: a diff holds only what changed above its
//! lower, deletions included, and merging it onto another base applies those deletions.

use std::path::Path;
use std::process::Command;

use kiln_llb::prost::Message as _;
use kiln_llb::{FileAction, State, diff, merge, scratch};
use kiln_testdata::{is_root, skip};

/// Solves `state` and returns the sorted paths of the exported result.
fn solve(work: &Path, name: &str, state: &State) -> Vec<String> {
    let def = work.join(format!("{name}.pb"));
    fs_err::write(&def, state.marshal().encode_to_vec()).unwrap();
    let out = work.join(name);
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(work.join("root"))
        .args(["build", "--progress=plain", "--llb"])
        .arg(&def)
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut names: Vec<String> = fs_err::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn diff_keeps_changes_and_deletions_and_merge_applies_them() {
    if !is_root() {
        skip("building needs root (overlay mounts)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lower =
        scratch().file(FileAction::mkfile("/a", 0o644, b"a").then_mkfile("/b", 0o644, b"b"));
    let upper = lower.file(FileAction::rm("/a", false).then_mkfile("/c", 0o600, b"c"));
    let changes = diff(&lower, &upper);

    // The diff alone: only the new file (the deletion is a whiteout, hidden in a view).
    assert_eq!(solve(work.path(), "diff", &changes), ["c"]);

    // Onto another base that has /a and /z: /a goes, /c comes, /z stays, /b never was there.
    let other =
        scratch().file(FileAction::mkfile("/a", 0o644, b"other").then_mkfile("/z", 0o644, b"z"));
    let merged = merge(&[other.clone(), changes]);
    assert_eq!(solve(work.path(), "merged", &merged), ["c", "z"]);
    let c = work.path().join("merged/c");
    assert_eq!(fs_err::read_to_string(&c).unwrap(), "c");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs_err::metadata(&c).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o600);

    // A merge stacks in order: the later input wins.
    let later = scratch().file(FileAction::mkfile("/z", 0o644, b"later"));
    assert_eq!(
        solve(work.path(), "stacked", &merge(&[other, later])),
        ["a", "z"]
    );
    assert_eq!(
        fs_err::read_to_string(work.path().join("stacked/z")).unwrap(),
        "later"
    );
}
