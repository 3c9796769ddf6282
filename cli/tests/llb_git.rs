//! Git sources through `kiln build --llb`, against `git daemon` on 127.0.0.1: a tag, a branch
//! with a subdirectory, `.git` left out, and a moved branch fetched again.
use kiln_llb::git;
use kiln_llb::prost::Message as _;
use kiln_testdata::{is_root, skip};

mod common;
use common::{assert_ok, build_llb, git_daemon, run_git};

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
