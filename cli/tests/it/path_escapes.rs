//! `kiln build` end to end: no path a build names may reach the host. Each test plants a
//! marker file in a host directory outside the build context and a symbolic link (to `/` or
//! to that directory) where the build reads or writes, and checks that the build sees its own
//! tree only: links resolve with the context or snapshot as `/`, as in BuildKit.

use std::path::Path;
use std::process::Output;

use crate::common::{git_daemon, kiln_in, ready, run_git, text};

/// A host directory outside every build tree, holding `marker`.
fn host_dir() -> tempfile::TempDir {
    let host = tempfile::tempdir().unwrap();
    fs_err::write(host.path().join("marker"), "host").unwrap();
    host
}

/// Builds `dockerfile` in `DIR/ctx`, which holds `inside` and a link `hostroot -> /`,
/// exporting to `DIR/out`.
fn build(dir: &Path, dockerfile: &str) -> Output {
    let context = dir.join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("inside"), "context file").unwrap();
    fs_err::os::unix::fs::symlink("/", context.join("hostroot")).unwrap();
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    let out = format!("type=local,dest={}", dir.join("out").display());
    kiln_in(
        dir,
        &["build", "--output", &out, context.to_str().unwrap()],
        &[],
    )
}

/// A listing of names from the context only (it holds no `etc`, `proc`, `usr`, ...).
fn assert_context_listing(listing: &str) {
    assert!(listing.lines().any(|l| l == "hostroot"), "{listing}");
    for name in listing.lines() {
        assert!(
            ["Dockerfile", "hostroot", "inside"].contains(&name),
            "{name} is not in the context: {listing}"
        );
    }
}

fn read(dir: &Path, name: &str) -> String {
    fs_err::read_to_string(dir.join("out").join(name)).unwrap()
}

#[test]
fn read_only_bind_of_a_context_link_to_host_root_mounts_the_context() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let marker = host.path().join("marker");
    let dockerfile = format!(
        "FROM busybox AS run\n\
         RUN --mount=type=bind,source=hostroot,target=/h \
             sh -c 'ls -A /h > /listing; if test -e /h{m}; then echo escaped; else echo confined; fi > /seen'\n\
         FROM scratch\n\
         COPY --from=run /listing /seen /\n",
        m = marker.display()
    );
    let output = build(dir.path(), &dockerfile);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read(dir.path(), "seen"), "confined\n");
    // The context's own root (as much of it as the mount's source transferred), never the
    // host's `/`.
    assert_context_listing(&read(dir.path(), "listing"));
}

#[test]
fn writable_bind_of_a_context_link_to_host_root_never_writes_the_host() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let dockerfile = format!(
        "FROM busybox AS run\n\
         RUN --mount=type=bind,source=hostroot,target=/h,rw \
             sh -c 'ls -A /h > /listing; mkdir -p /h{d} && echo written > /h{d}/written \
                    && echo written > /h{d}/marker && cat /h{d}/marker > /wrote'\n\
         FROM scratch\n\
         COPY --from=run /listing /wrote /\n",
        d = host.path().display()
    );
    let output = build(dir.path(), &dockerfile);
    assert!(output.status.success(), "{}", text(&output));
    // The step wrote into its own copy of the context's root...
    assert_context_listing(&read(dir.path(), "listing"));
    assert_eq!(read(dir.path(), "wrote"), "written\n");
    // ...and nothing on the host.
    assert!(!host.path().join("written").exists());
    assert_eq!(
        fs_err::read_to_string(host.path().join("marker")).unwrap(),
        "host"
    );
    assert!(!dir.path().join("ctx/written").exists());
}

#[test]
fn bind_selector_with_dotdot_and_absolute_link_stays_in_single_and_multi_layer_snapshots() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let m = host.path().join("marker");
    // `base` has several layers; `single` one (a FileOp on scratch).
    let dockerfile = format!(
        "FROM busybox AS base\n\
         RUN mkdir -p /data && ln -s / /data/hostroot && ln -s {h} /data/hostdir\n\
         RUN echo layered > /data/file\n\
         FROM scratch AS single\n\
         COPY hostroot /\n\
         FROM busybox AS use\n\
         RUN --mount=type=bind,from=base,source=/data/hostroot/../../../data,target=/a \
             --mount=type=bind,from=base,source=data/hostroot,target=/b \
             --mount=type=bind,from=single,source=../hostroot/..,target=/c \
             sh -c 'cat /a/file > /seen; for d in /a /b /c; do \
                    if test -e $d{m} || test -e $d/data/hostdir/marker; then echo escaped; else echo confined; fi; \
                    done >> /seen; ls -A /c > /single'\n\
         FROM scratch\n\
         COPY --from=use /seen /single /\n",
        h = host.path().display(),
        m = m.display()
    );
    let output = build(dir.path(), &dockerfile);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        read(dir.path(), "seen"),
        "layered\nconfined\nconfined\nconfined\n"
    );
    // `single` holds what was copied through the context's link to `/`: the context's own.
    assert_context_listing(&read(dir.path(), "single"));
}

#[test]
fn copy_through_a_context_link_to_host_root_copies_nothing_from_the_host() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let dockerfile = format!(
        "FROM scratch\nCOPY hostroot{}/marker /\n",
        host.path().display()
    );
    let output = build(dir.path(), &dockerfile);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("not found"), "{}", text(&output));
    assert!(!dir.path().join("out/marker").exists());

    let dir = tempfile::tempdir().unwrap();
    let output = build(dir.path(), "FROM scratch\nCOPY hostroot/etc/passwd /\n");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(!dir.path().join("out/passwd").exists());
}

#[test]
fn local_context_with_a_link_to_host_root_transfers_the_link_only() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = build(dir.path(), "FROM scratch\nCOPY . /\n");
    assert!(output.status.success(), "{}", text(&output));
    let out = dir.path().join("out");
    let link = fs_err::symlink_metadata(out.join("hostroot")).unwrap();
    assert!(link.file_type().is_symlink(), "the link stays a link");
    assert_eq!(
        fs_err::read_link(out.join("hostroot")).unwrap(),
        Path::new("/")
    );
    assert_eq!(read(dir.path(), "inside"), "context file");
    let names: Vec<_> = fs_err::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "only the context: {names:?}");
}

#[test]
fn cache_mount_from_source_through_a_link_is_seeded_inside_the_stage_only() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let dockerfile = format!(
        "FROM busybox AS src\n\
         RUN mkdir -p /seed && echo seeded > /seed/f && ln -s / /seed/hostroot && ln -s /seed /link\n\
         FROM busybox AS use\n\
         RUN --mount=type=cache,id=linked,from=src,source=link/hostroot/seed,target=/c \
             sh -c 'cat /c/f > /seen; if test -e /c/hostroot{m}; then echo escaped; else echo confined; fi >> /seen'\n\
         RUN --mount=type=cache,id=owned,uid=1234,gid=5678,mode=0750,target=/o \
             stat -c '%u %g %a' /o > /owner\n\
         RUN --mount=type=cache,id=plain,target=/p stat -c '%u %g %a' /p > /plain\n\
         FROM scratch\n\
         COPY --from=use /seen /owner /plain /\n",
        m = host.path().join("marker").display()
    );
    let output = build(dir.path(), &dockerfile);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read(dir.path(), "seen"), "seeded\nconfined\n");
    assert_eq!(read(dir.path(), "owner"), "1234 5678 750\n");
    assert_eq!(read(dir.path(), "plain"), "0 0 755\n");

    // A source whose link leads to a host directory finds nothing in the stage.
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM busybox AS src\n\
         RUN ln -s {h} /hostdir\n\
         FROM busybox\n\
         RUN --mount=type=cache,id=host,from=src,source=hostdir,target=/c ls /c\n",
        h = host.path().display()
    );
    let output = build(dir.path(), &dockerfile);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("no such file or directory"),
        "{}",
        text(&output)
    );
}

#[test]
fn add_git_subdirectory_through_a_link_resolves_inside_the_checkout() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = host_dir();
    let repo = dir.path().join("repos/project");
    fs_err::create_dir_all(repo.join("sub")).unwrap();
    fs_err::write(repo.join("sub/inner.txt"), "inner\n").unwrap();
    // Absolute links: to the checkout's `sub` (as `/sub`), and to a host directory.
    fs_err::os::unix::fs::symlink("/sub", repo.join("link")).unwrap();
    fs_err::os::unix::fs::symlink(host.path(), repo.join("hostdir")).unwrap();
    run_git(&repo, &["init", "-q", "-b", "main"]);
    run_git(&repo, &["add", "."]);
    run_git(&repo, &["commit", "-qm", "one"]);
    let (_daemon, port) = git_daemon(&dir.path().join("repos"));
    let url = format!("git://127.0.0.1:{port}/project");

    let output = build(
        dir.path(),
        &format!("FROM scratch\nADD {url}#main:link /linked/\n"),
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read(dir.path(), "linked/inner.txt"), "inner\n");

    let dir2 = tempfile::tempdir().unwrap();
    let output = build(
        dir2.path(),
        &format!("FROM scratch\nADD {url}#main:hostdir /h/\n"),
    );
    assert!(!output.status.success(), "{}", text(&output));
    assert!(!dir2.path().join("out/h/marker").exists());
}
