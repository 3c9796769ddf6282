//! Git sources through `kiln build --llb`, against `git daemon` on 127.0.0.1: a tag, a branch
//! with a subdirectory, `.git` left out, a moved branch fetched again, submodules (and their
//! transports), fetch by commit and commit times.
use std::os::unix::fs::MetadataExt as _;

use kiln_llb::prost::Message as _;
use kiln_llb::{GitOptions, git, git_with, pb};
use kiln_testdata::{is_root, skip};

use crate::common::{assert_ok, build_llb, git_daemon, run_git, text};

#[test]
fn git_sources_clone_refs_and_subdirectories() {
    if !is_root() {
        skip("exporting results needs root (overlay views)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repos/project");
    fs_err::create_dir_all(repo.join("sub")).unwrap();
    fs_err::write(repo.join("a"), "first\n").unwrap();
    fs_err::write(repo.join("sub/b"), "in sub\n").unwrap();
    run_git(&repo, &["init", "-q", "-b", "main"]);
    run_git(&repo, &["add", "."]);
    run_git(&repo, &["commit", "-qm", "one"]);
    run_git(&repo, &["tag", "v1"]);
    let (_daemon, port) = git_daemon(&work.path().join("repos"));
    let url = format!("git://127.0.0.1:{port}/project");
    let store = work.path().join("store");

    // A tag: the tree without .git.
    let out = work.path().join("tag");
    assert_ok(build_llb(
        &store,
        &git(&url, "v1").marshal().encode_to_vec(),
        &out,
    ));
    assert_eq!(fs_err::read_to_string(out.join("a")).unwrap(), "first\n");
    assert_eq!(
        fs_err::read_to_string(out.join("sub/b")).unwrap(),
        "in sub\n"
    );
    assert!(!out.join(".git").exists());

    // A branch's subdirectory.
    let def = git(&url, "main:sub").marshal().encode_to_vec();
    let out = work.path().join("sub");
    assert_ok(build_llb(&store, &def, &out));
    assert_eq!(fs_err::read_to_string(out.join("b")).unwrap(), "in sub\n");
    assert!(!out.join("a").exists());

    // The branch moves: the next build fetches the new commit; an unmoved one is cached.
    let again = assert_ok(build_llb(&store, &def, &work.path().join("again")));
    assert!(String::from_utf8_lossy(&again.stderr).contains("CACHED"));
    fs_err::write(repo.join("sub/b"), "moved\n").unwrap();
    run_git(&repo, &["commit", "-qam", "two"]);
    let out = work.path().join("moved");
    assert_ok(build_llb(&store, &def, &out));
    assert_eq!(fs_err::read_to_string(out.join("b")).unwrap(), "moved\n");
}

#[test]
fn hostile_git_remotes_and_refs_are_refused_without_running_anything() {
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("pwned");
    let host_repo = work.path().join("host-repo");
    fs_err::create_dir_all(&host_repo).unwrap();
    run_git(&host_repo, &["init", "-q", "-b", "main"]);
    fs_err::write(host_repo.join("secret"), "host file\n").unwrap();
    run_git(&host_repo, &["add", "."]);
    run_git(&host_repo, &["commit", "-qm", "secret"]);
    let store = work.path().join("store");
    let touch = format!("touch {}", marker.display());
    for (url, reference) in [
        (format!("file://{}", host_repo.display()), "main".to_owned()),
        (format!("ssh://-oProxyCommand={touch}/repo"), String::new()),
        (format!("--upload-pack={touch}"), String::new()),
        (
            "git://127.0.0.1:1/repo".to_owned(),
            format!("--upload-pack={touch}"),
        ),
        (format!("{}", host_repo.display()), "main".to_owned()),
    ] {
        let out = work.path().join("out");
        let result = build_llb(
            &store,
            &git(&url, &reference).marshal().encode_to_vec(),
            &out,
        );
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{url} {reference}: built");
        assert!(
            stderr.contains("is not allowed"),
            "{url} {reference}: {stderr}"
        );
        assert!(!marker.exists(), "{url} {reference}: ran a command");
        assert!(
            !out.join("secret").exists(),
            "{url} {reference}: read the host repository"
        );
    }
}

/// A repository at `dir` with `files`, committed on `main`.
fn repository(dir: &std::path::Path, files: &[(&str, &str)]) {
    fs_err::create_dir_all(dir).unwrap();
    for (name, content) in files {
        fs_err::write(dir.join(name), content).unwrap();
    }
    run_git(dir, &["init", "-q", "-b", "main"]);
    run_git(dir, &["add", "."]);
    run_git(dir, &["commit", "-qm", "files"]);
}

fn options() -> GitOptions {
    GitOptions::default()
}

#[test]
fn submodules_are_checked_out_recursively_unless_skipped() {
    if !is_root() {
        skip("exporting results needs root (overlay views)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repos = work.path().join("repos");
    fs_err::create_dir_all(&repos).unwrap();
    let (_daemon, port) = git_daemon(&repos);
    let base = format!("git://127.0.0.1:{port}");
    repository(&repos.join("inner"), &[("inner.txt", "from inner\n")]);
    repository(&repos.join("lib"), &[("lib.txt", "from lib\n")]);
    let lib = repos.join("lib");
    run_git(
        &lib,
        &["submodule", "add", "-q", &format!("{base}/inner"), "inner"],
    );
    run_git(&lib, &["commit", "-qm", "inner"]);
    let project = repos.join("project");
    repository(&project, &[("a.txt", "from project\n")]);
    // A relative URL, resolved against the project's own remote (here, at setup, its
    // directory; in the build, the git daemon).
    run_git(
        &project,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            "../lib",
            "lib",
        ],
    );
    run_git(&project, &["commit", "-qm", "lib"]);
    let url = format!("{base}/project");
    let store = work.path().join("store");

    let out = work.path().join("all");
    assert_ok(build_llb(
        &store,
        &git(&url, "main").marshal().encode_to_vec(),
        &out,
    ));
    let read = |path: &str| fs_err::read_to_string(out.join(path)).unwrap();
    assert_eq!(read("a.txt"), "from project\n");
    assert_eq!(read("lib/lib.txt"), "from lib\n");
    assert_eq!(read("lib/inner/inner.txt"), "from inner\n");
    for git_dir in [".git", "lib/.git", "lib/inner/.git"] {
        assert!(!out.join(git_dir).exists(), "{git_dir} left in");
    }

    // With .git: the submodules are repositories that git can read.
    let out = work.path().join("keep");
    let keep = GitOptions {
        keep_git_dir: true,
        ..options()
    };
    assert_ok(build_llb(
        &store,
        &git_with(&url, "main", keep).marshal().encode_to_vec(),
        &out,
    ));
    assert!(out.join(".git").is_dir());
    assert!(out.join("lib/inner/.git").is_file());
    assert_eq!(
        run_git(&out.join("lib/inner"), &["log", "-1", "--format=%s"]),
        "files"
    );

    // Skipped: the submodule directories stay empty.
    let out = work.path().join("skipped");
    let skipped = GitOptions {
        skip_submodules: true,
        ..options()
    };
    assert_ok(build_llb(
        &store,
        &git_with(&url, "main", skipped).marshal().encode_to_vec(),
        &out,
    ));
    assert_eq!(
        fs_err::read_to_string(out.join("a.txt")).unwrap(),
        "from project\n"
    );
    assert_eq!(fs_err::read_dir(out.join("lib")).unwrap().count(), 0);
}

#[test]
fn submodules_use_only_the_allowed_transports() {
    if !is_root() {
        skip("exporting results needs root (overlay views)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let host_repo = work.path().join("host-repo");
    repository(&host_repo, &[("secret", "host file\n")]);
    let repos = work.path().join("repos");
    let evil = repos.join("evil");
    repository(&evil, &[("a.txt", "a\n")]);
    run_git(
        &evil,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &format!("file://{}", host_repo.display()),
            "sub",
        ],
    );
    run_git(&evil, &["commit", "-qm", "sub"]);
    let (_daemon, port) = git_daemon(&repos);
    let out = work.path().join("out");
    let result = build_llb(
        &work.path().join("store"),
        &git(&format!("git://127.0.0.1:{port}/evil"), "main")
            .marshal()
            .encode_to_vec(),
        &out,
    );
    let stderr = text(&result);
    assert!(!result.status.success(), "built: {stderr}");
    assert!(
        stderr.contains("failed to update submodules for git://127.0.0.1:")
            && stderr.contains("transport 'file' not allowed"),
        "{stderr}"
    );
    assert!(!out.join("sub/secret").exists());
}

/// `definition` with the attribute `key=value` added to its only op.
fn with_attr(definition: pb::Definition, key: &str, value: &str) -> Vec<u8> {
    let mut op = pb::Op::decode(definition.def[0].as_slice()).unwrap();
    let Some(pb::op::Op::Source(source)) = &mut op.op else {
        panic!("not a source");
    };
    source.attrs.insert(key.to_owned(), value.to_owned());
    let terminal = pb::Op {
        inputs: vec![pb::Input {
            digest: kiln_llb::op_digest(&op).to_string(),
            index: 0,
        }],
        ..Default::default()
    };
    pb::Definition {
        def: vec![kiln_llb::marshal_op(&op), kiln_llb::marshal_op(&terminal)],
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn fetch_by_commit_and_commit_times() {
    if !is_root() {
        skip("exporting results needs root (overlay views)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repos = work.path().join("repos");
    let repo = repos.join("project");
    fs_err::create_dir_all(&repo).unwrap();
    fs_err::write(repo.join("a.txt"), "first\n").unwrap();
    run_git(&repo, &["init", "-q", "-b", "main"]);
    run_git(&repo, &["add", "."]);
    // A known commit time.
    let commit = std::process::Command::new("git")
        .args(["-c", "user.email=test@kiln", "-c", "user.name=kiln"])
        .args(["commit", "-qm", "one"])
        .env("GIT_COMMITTER_DATE", "2001-02-03T04:05:06Z")
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(commit.success());
    let first = run_git(&repo, &["rev-parse", "HEAD"]);
    fs_err::write(repo.join("a.txt"), "second\n").unwrap();
    run_git(&repo, &["commit", "-qam", "two"]);
    let (_daemon, port) = git_daemon(&repos);
    let url = format!("git://127.0.0.1:{port}/project");
    let store = work.path().join("store");

    // The branch has moved on, and a ref that no longer exists: the pinned commit either way.
    for reference in ["main", "gone"] {
        let pinned = GitOptions {
            checksum: Some(first.clone()),
            fetch_by_commit: true,
            ..options()
        };
        let out = work.path().join(format!("pinned-{reference}"));
        assert_ok(build_llb(
            &store,
            &git_with(&url, reference, pinned).marshal().encode_to_vec(),
            &out,
        ));
        assert_eq!(
            fs_err::read_to_string(out.join("a.txt")).unwrap(),
            "first\n"
        );
    }
    // Without it, the moved branch does not match the checksum.
    let checked = GitOptions {
        checksum: Some(first.clone()),
        ..options()
    };
    let result = build_llb(
        &store,
        &git_with(&url, "main", checked).marshal().encode_to_vec(),
        &work.path().join("checked"),
    );
    assert!(!result.status.success());
    assert!(
        text(&result).contains(&format!("expected checksum to match {first}")),
        "{}",
        text(&result)
    );

    // git.mtime=commit: every file and directory has the commit's time.
    let out = work.path().join("mtime");
    let def = with_attr(git(&url, &first).marshal(), "git.mtime", "commit");
    assert_ok(build_llb(&store, &def, &out));
    assert_eq!(
        fs_err::metadata(out.join("a.txt")).unwrap().mtime(),
        981173106
    );
    // The default is the checkout's time.
    let out = work.path().join("checkout");
    assert_ok(build_llb(
        &store,
        &git(&url, &first).marshal().encode_to_vec(),
        &out,
    ));
    assert_ne!(
        fs_err::metadata(out.join("a.txt")).unwrap().mtime(),
        981173106
    );
}
