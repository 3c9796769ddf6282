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

/// Every path below `dir`, sorted: directories with a trailing `/`, files as `path=content`.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs_err::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs_err::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(format!("{rel}={}", fs_err::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_diff_exported_alone_holds_its_changes_without_its_deletions() {
    if !is_root() {
        skip("building needs root (overlay mounts)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let lower = scratch().file(
        FileAction::mkdir("/d/e", 0o755, parents_opts())
            .then_mkfile("/d/old", 0o644, b"old")
            .then_mkfile("/d/keep", 0o644, b"keep")
            .then_mkfile("/d/e/old", 0o644, b"old")
            .then_mkfile("/top", 0o644, b"top"),
    );
    // Deletions inside directories the diff layer holds (d, d/e) and at the root.
    let upper = lower.file(
        FileAction::rm("/d/old", false)
            .then_rm("/d/e/old", false)
            .then_rm("/top", false)
            .then_mkfile("/d/new", 0o644, b"new")
            .then_mkfile("/d/e/x", 0o644, b"x"),
    );
    let changes = diff(&lower, &upper);
    let alone = ["d/", "d/e/", "d/e/x=x", "d/new=new"];
    solve(work.path(), "alone", &changes);
    assert_eq!(tree(&work.path().join("alone")), alone);

    // Built on (a writable view above the diff) the deletions stay absent too.
    let built_on = changes.file(FileAction::mkfile("/d/more", 0o644, b"more"));
    solve(work.path(), "built-on", &built_on);
    assert_eq!(
        tree(&work.path().join("built-on")),
        ["d/", "d/e/", "d/e/x=x", "d/more=more", "d/new=new"]
    );

    // Merged onto a tree that has the deleted paths, the deletions still apply.
    let base = scratch().file(
        FileAction::mkdir("/d/e", 0o755, parents_opts())
            .then_mkfile("/d/old", 0o644, b"base")
            .then_mkfile("/d/e/old", 0o644, b"base")
            .then_mkfile("/d/other", 0o644, b"other")
            .then_mkfile("/top", 0o644, b"base"),
    );
    solve(work.path(), "merged", &merge(&[base, changes]));
    assert_eq!(
        tree(&work.path().join("merged")),
        ["d/", "d/e/", "d/e/x=x", "d/new=new", "d/other=other"]
    );

    // A diff of unrelated trees: what `upper` lacks is a whiteout, absent when exported alone.
    let unrelated_lower = scratch().file(
        FileAction::mkdir("/d", 0o755, Default::default())
            .then_mkfile("/d/old", 0o644, b"old")
            .then_mkfile("/d/keep", 0o644, b"keep"),
    );
    let unrelated_upper = scratch().file(
        FileAction::mkdir("/d", 0o755, Default::default())
            .then_mkfile("/d/keep", 0o644, b"keep")
            .then_mkfile("/d/new", 0o644, b"new"),
    );
    solve(
        work.path(),
        "unrelated",
        &diff(&unrelated_lower, &unrelated_upper),
    );
    assert_eq!(tree(&work.path().join("unrelated")), ["d/", "d/new=new"]);
}

/// `mkdir -p`.
fn parents_opts() -> kiln_llb::MkdirOptions {
    kiln_llb::MkdirOptions {
        make_parents: true,
        ..Default::default()
    }
}
