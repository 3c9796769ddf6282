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
