//! Build cache of `kiln build --llb` across invocations: a rebuild with an unchanged context is
//! served from the cache although BuildKit's `local.unique` makes the local source's op digest
//! differ, touching a context file outside the copied paths changes nothing, and changing a
//! copied file runs the copies again.

use kiln_testdata::{is_root, skip};
use std::path::Path;
use std::process::Command;

/// Builds vector 069 (`COPY dir /dst`, `COPY dir/ /dst2/`); returns the progress output.
fn build(root: &Path, context: &Path, out: &Path) -> String {
    let def = kiln_testdata::llb_vectors_dir().join("069-copy-dir-copies-contents/def.pb");
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain", "--llb"])
        .arg(def)
        .arg("--local")
        .arg(format!("context={}", context.display()))
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    text
}

/// How many steps the progress shows as served from the cache.
fn cached_steps(progress: &str) -> usize {
    progress
        .lines()
        .filter(|l| l.starts_with('#') && l.ends_with(" CACHED"))
        .count()
}

/// How many steps the progress shows as run.
fn ran_steps(progress: &str) -> usize {
    progress
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" DONE "))
        .count()
}

#[test]
fn unchanged_and_unrelated_changes_hit_the_cache_and_copied_changes_miss() {
    if !is_root() {
        skip("building needs root (overlay mounts)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let context = work.path().join("context");
    fs_err::create_dir_all(context.join("dir/sub")).unwrap();
    fs_err::write(context.join("dir/a"), "A").unwrap();
    fs_err::write(context.join("dir/sub/b"), "B").unwrap();
    fs_err::write(context.join("unrelated"), "1").unwrap();

    // Context load and both copies run.
    let first = build(&root, &context, &work.path().join("out1"));
    assert_eq!((ran_steps(&first), cached_steps(&first)), (3, 0), "{first}");

    // The last copy is cached, so nothing below it runs at all, and every step is listed
    // cached (as BuildKit lists them).
    let second = build(&root, &context, &work.path().join("out2"));
    assert_eq!(
        (ran_steps(&second), cached_steps(&second)),
        (0, 3),
        "{second}"
    );

    fs_err::write(context.join("unrelated"), "2").unwrap();
    let third = build(&root, &context, &work.path().join("out3"));
    assert_eq!(
        (ran_steps(&third), cached_steps(&third)),
        (0, 3),
        "a file outside the copied paths changes nothing:\n{third}"
    );

    fs_err::write(context.join("dir/a"), "changed").unwrap();
    let out = work.path().join("out4");
    let fourth = build(&root, &context, &out);
    assert_eq!(
        (ran_steps(&fourth), cached_steps(&fourth)),
        (3, 0),
        "{fourth}"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("dst/a")).unwrap(),
        "changed"
    );
    assert_eq!(fs_err::read_to_string(out.join("dst2/sub/b")).unwrap(), "B");
    assert!(!out.join("unrelated").exists());
}
