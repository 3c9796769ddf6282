//! `kiln build CONTEXT` end to end for `ADD <git url>`, symbolic `--chmod`,
//! `COPY --parents` required paths, secrets as environment variables and
//! `RUN --mount=type=ssh` with a real `ssh-agent`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_testdata::{is_root, registry_up, skip};

mod common;
use common::{Killed, git_daemon, run_git};

fn mirror_config(dir: &Path) -> PathBuf {
    let path = dir.join("kiln.toml");
    fs_err::write(
        &path,
        "[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:5000\"]\n",
    )
    .unwrap();
    path
}

fn kiln_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--config")
        .arg(mirror_config(dir))
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    let mut t = String::from_utf8_lossy(&output.stdout).into_owned();
    t.push_str(&String::from_utf8_lossy(&output.stderr));
    t
}

/// Builds `dockerfile` in a fresh context holding `files`, exporting to `DIR/out`.
fn build(dir: &Path, dockerfile: &str, files: &[(&str, &str, u32)], extra: &[&str]) -> Output {
    build_env(dir, dockerfile, files, extra, &[])
}

fn build_env(
    dir: &Path,
    dockerfile: &str,
    files: &[(&str, &str, u32)],
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    use std::os::unix::fs::PermissionsExt as _;
    let context = dir.join("ctx");
    let _ = fs_err::remove_dir_all(&context);
    let _ = fs_err::remove_dir_all(dir.join("out"));
    fs_err::create_dir_all(&context).unwrap();
    for (name, data, mode) in files {
        let path = context.join(name);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(&path, data).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    let out = format!("type=local,dest={}", dir.join("out").display());
    let mut args = vec!["build", "--output", &out];
    args.extend_from_slice(extra);
    let context = context.to_string_lossy().into_owned();
    args.push(&context);
    kiln_env(dir, &args, env)
}

fn ready() -> bool {
    if !is_root() {
        skip("building needs root (namespaces, overlay mounts)");
        return false;
    }
    if !registry_up() {
        skip("the test registry is not serving 127.0.0.1:5000 (run scripts/test-env.sh)");
        return false;
    }
    true
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    fs_err::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn add_git_repositories() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repos/project");
    fs_err::create_dir_all(repo.join("sub")).unwrap();
    fs_err::write(repo.join("top.txt"), "top v1\n").unwrap();
    fs_err::write(repo.join("sub/inner.txt"), "inner v1\n").unwrap();
    run_git(&repo, &["init", "-q", "-b", "main"]);
    run_git(&repo, &["add", "."]);
    run_git(&repo, &["commit", "-qm", "one"]);
    run_git(&repo, &["tag", "v1"]);
    let v1 = run_git(&repo, &["rev-parse", "HEAD"]);
    fs_err::write(repo.join("top.txt"), "top v2\n").unwrap();
    run_git(&repo, &["commit", "-qam", "two"]);
    let (_daemon, port) = git_daemon(&dir.path().join("repos"));
    let url = format!("git://127.0.0.1:{port}/project");

    let dockerfile = format!(
        "FROM scratch\n\
         ADD {url}#v1:sub /from-tag/\n\
         ADD --keep-git-dir=true {url}#main /with-git/\n\
         ADD {url}?branch=main&keep-git-dir=false /branch/\n\
         ADD --checksum={short} {url}#v1 /checked/\n",
        short = &v1[..12]
    );
    let output = build(dir.path(), &dockerfile, &[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let out = dir.path().join("out");
    // A tag and a subdirectory: the subdirectory's files at the destination, no .git.
    assert_eq!(
        fs_err::read_to_string(out.join("from-tag/inner.txt")).unwrap(),
        "inner v1\n"
    );
    assert!(!out.join("from-tag/top.txt").exists());
    assert!(!out.join("from-tag/.git").exists());
    // --keep-git-dir keeps .git, at the branch's commit.
    assert_eq!(
        fs_err::read_to_string(out.join("with-git/top.txt")).unwrap(),
        "top v2\n"
    );
    assert!(out.join("with-git/.git/HEAD").is_file());
    assert_eq!(
        fs_err::read_to_string(out.join("branch/top.txt")).unwrap(),
        "top v2\n"
    );
    assert!(!out.join("branch/.git").exists());
    assert_eq!(
        fs_err::read_to_string(out.join("checked/top.txt")).unwrap(),
        "top v1\n"
    );

    // A checksum the ref does not resolve to fails the build, naming both.
    let wrong = format!("FROM scratch\nADD --checksum=0000000 {url}#v1 /x/\n");
    let output = build(dir.path(), &wrong, &[], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains(&format!("expected checksum to match 0000000, got {v1}")),
        "{}",
        text(&output)
    );
    // COPY of a git URL is refused before building.
    let copy = format!("FROM scratch\nCOPY {url}.git /x/\n");
    let output = build(dir.path(), &copy, &[], &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("source can't be a git ref for COPY"),
        "{}",
        text(&output)
    );
}

#[test]
fn symbolic_chmod_applies_to_each_file() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = "FROM busybox AS build\n\
         COPY --chmod=u+x,g-r,o= plain tool /sym/\n\
         ADD --chmod=a+X tree /tree/\n\
         COPY --chmod=640 plain /octal\n\
         RUN stat -c '%a %n' /sym/plain /sym/tool /tree/plain /tree/tool /octal > /modes\n\
         FROM scratch\n\
         COPY --from=build /modes /sym/ /\n";
    let files = [
        ("plain", "p", 0o644),
        ("tool", "t", 0o755),
        ("tree/plain", "p", 0o600),
        ("tree/tool", "t", 0o700),
    ];
    let output = build(dir.path(), dockerfile, &files, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let out = dir.path().join("out");
    // chmod(1) arithmetic on each file's own mode: 644 -> u+x 744 -> g-r 704 -> o= 700;
    // 755 -> 755 -> 715 -> 710. a+X adds execute only where some was set.
    assert_eq!(
        fs_err::read_to_string(out.join("modes")).unwrap(),
        "700 /sym/plain\n710 /sym/tool\n600 /tree/plain\n711 /tree/tool\n640 /octal\n"
    );
    assert_eq!(mode(&out.join("plain")), 0o700);
    assert_eq!(mode(&out.join("tool")), 0o710);
    let output = build(
        dir.path(),
        "FROM scratch\nCOPY --chmod=u+q plain /\n",
        &files,
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("invalid syntax"),
        "{}",
        text(&output)
    );
}

#[test]
fn copy_parents_required_paths() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("a/b/c/file", "f", 0o644),
        ("a/b/c/skip.log", "l", 0o644),
        ("a/b/other", "o", 0o644),
        ("a/top", "t", 0o644),
    ];
    let output = build(
        dir.path(),
        "FROM scratch\nCOPY --parents --exclude=**/*.log a/./b/c /keep/\n",
        &files,
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let out = dir.path().join("out");
    // Only the pattern's path, below the pivot, without what --exclude removes.
    assert!(out.join("keep/b/c/file").is_file());
    assert!(!out.join("keep/b/c/skip.log").exists());
    assert!(!out.join("keep/b/other").exists());
    assert!(!out.join("keep/top").exists());
    assert!(!out.join("keep/a").exists());
    // A literal path that is missing fails, as in BuildKit.
    let output = build(
        dir.path(),
        "FROM scratch\nCOPY --parents a/./b/missing /keep/\n",
        &files,
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("\"/a/b/missing\": not found"),
        "{}",
        text(&output)
    );
    // A wildcard is not required (it matches here).
    let output = build(
        dir.path(),
        "FROM scratch\nCOPY --parents a/./b/c* /wild/\n",
        &files,
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(dir.path().join("out/wild/b/c/file").is_file());
}

/// Whether any file under `dir` contains `needle`.
fn tree_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = fs_err::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                if let Ok(data) = fs_err::read(&path) {
                    if data.windows(needle.len()).any(|w| w == needle) {
                        return Some(path);
                    }
                }
            }
        }
    }
    None
}

#[test]
fn secrets_as_environment_variables() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    let value = "s3cret-0f-kiln-7d1e";
    fs_err::write(&secret, value).unwrap();
    let dockerfile = "FROM busybox AS build\n\
         RUN --mount=type=secret,id=tok,env=TOKEN,required \
             sh -c 'echo ${#TOKEN} > /len; echo \"$TOKEN\" | md5sum > /sum; test ! -e /run/secrets/tok && echo nofile > /file'\n\
         RUN --mount=type=secret,id=absent,env=ABSENT sh -c 'echo \"[${ABSENT-unset}]\" > /absent'\n\
         FROM scratch\n\
         COPY --from=build /len /sum /file /absent /\n";
    let secret_arg = format!("id=tok,src={}", secret.display());
    let output = build(dir.path(), dockerfile, &[], &["--secret", &secret_arg]);
    assert!(output.status.success(), "{}", text(&output));
    let out = dir.path().join("out");
    assert_eq!(
        fs_err::read_to_string(out.join("len")).unwrap(),
        format!("{}\n", value.len())
    );
    let md5 = Command::new("sh")
        .arg("-c")
        .arg(format!("echo '{value}' | md5sum"))
        .output()
        .unwrap();
    assert_eq!(
        fs_err::read_to_string(out.join("sum")).unwrap(),
        String::from_utf8_lossy(&md5.stdout)
    );
    assert_eq!(
        fs_err::read_to_string(out.join("file")).unwrap(),
        "nofile\n"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("absent")).unwrap(),
        "[unset]\n"
    );
    // Not in any layer, snapshot, cache record or the exported files.
    assert_eq!(
        tree_contains(&dir.path().join("root"), value.as_bytes()),
        None
    );
    assert_eq!(tree_contains(&out, value.as_bytes()), None);
    // Not in the image configuration either.
    let oci = dir.path().join("oci");
    let output = kiln_env(
        dir.path(),
        &[
            "build",
            "--secret",
            &secret_arg,
            "--output",
            &format!("type=oci,dest={},tar=false", oci.display()),
            dir.path().join("ctx").to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(oci.join("index.json").is_file());
    assert_eq!(tree_contains(&oci, value.as_bytes()), None);
    // Not in the cache key: another value reuses the cached step.
    fs_err::write(&secret, "another value, longer").unwrap();
    let output = build(dir.path(), dockerfile, &[], &["--secret", &secret_arg]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(dir.path().join("out/len")).unwrap(),
        format!("{}\n", value.len())
    );
    // A required secret that was not given is an error naming it.
    let output = build(
        dir.path(),
        "FROM busybox\nRUN --mount=type=secret,id=missing,env=M,required true\n",
        &[],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("secret missing not found"),
        "{}",
        text(&output)
    );
}

/// Copies the host's `ssh-add` and the libraries it loads into `dest` (same paths), so a step
/// can run it through the host's dynamic loader with `dest` mounted at `/host`; returns the
/// command line running `ssh-add -l` that way.
fn host_ssh_add(dest: &Path) -> Option<String> {
    let ssh_add = which("ssh-add")?;
    let ldd = Command::new("ldd").arg(&ssh_add).output().ok()?;
    let mut files = vec![ssh_add.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from)
        {
            files.push(path);
        }
    }
    let mut dirs: Vec<String> = Vec::new();
    let mut loader = None;
    for file in &files {
        let real = fs_err::canonicalize(file).ok()?;
        let inside = dest.join(file.strip_prefix("/").ok()?);
        fs_err::create_dir_all(inside.parent()?).ok()?;
        fs_err::copy(&real, &inside).ok()?;
        let name = file.file_name()?.to_string_lossy().into_owned();
        if name.starts_with("ld-linux") {
            loader = Some(file.to_string_lossy().into_owned());
        } else if file != &ssh_add {
            let parent = file.parent()?.to_string_lossy().into_owned();
            if !dirs.contains(&parent) {
                dirs.push(parent);
            }
        }
    }
    let loader = loader?;
    let mut command = vec![
        format!("/host{loader}"),
        "--library-path".to_owned(),
        dirs.iter()
            .map(|d| format!("/host{d}"))
            .collect::<Vec<_>>()
            .join(":"),
        format!("/host{}", ssh_add.display()),
    ];
    command.push("-l".to_owned());
    Some(command.join(" "))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn ssh_agent_is_forwarded() {
    if !ready() {
        return;
    }
    if which("ssh-agent").is_none() || which("ssh-keygen").is_none() {
        return skip("openssh-client is not installed (run scripts/test-env.sh)");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let socket = dir.path().join("agent.sock");
    let _agent = Killed(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added));
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();

    let host = dir.path().join("ctx-host");
    let Some(ssh_add) = host_ssh_add(&host) else {
        return skip("cannot copy the host's ssh-add and its libraries");
    };
    let dockerfile = format!(
        "FROM busybox AS build\n\
         RUN --mount=type=bind,source=host,target=/host \
             --mount=type=ssh \
             sh -c 'echo \"$SSH_AUTH_SOCK\" > /sock; {ssh_add} > /keys; stat -c \"%a %u\" $SSH_AUTH_SOCK > /perm'\n\
         RUN --mount=type=bind,source=host,target=/host \
             --mount=type=ssh,id=deploy,target=/agent,uid=1000,mode=0660,required \
             sh -c '{ssh_add} > /deploy-keys; stat -c \"%a %u\" /agent > /deploy-perm'\n\
         FROM scratch\n\
         COPY --from=build /sock /keys /perm /deploy-keys /deploy-perm /\n"
    );
    // The context holds the host's ssh-add under host/.
    let context = dir.path().join("ctx");
    let _ = fs_err::remove_dir_all(&context);
    fs_err::create_dir_all(&context).unwrap();
    fs_err::rename(&host, context.join("host")).unwrap();
    fs_err::write(context.join("Dockerfile"), &dockerfile).unwrap();
    let out = dir.path().join("out");
    let socket_text = socket.to_string_lossy().into_owned();
    let deploy = format!("deploy={socket_text}");
    let output = kiln_env(
        dir.path(),
        &[
            "build",
            "--ssh",
            "default",
            "--ssh",
            &deploy,
            "--output",
            &format!("type=local,dest={}", out.display()),
            context.to_str().unwrap(),
        ],
        &[("SSH_AUTH_SOCK", &socket_text)],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(out.join("sock")).unwrap(),
        "/run/buildkit/ssh_agent.0\n"
    );
    let keys = fs_err::read_to_string(out.join("keys")).unwrap();
    assert!(
        keys.contains(&fingerprint) && keys.contains("kiln-test-key"),
        "{keys}"
    );
    assert_eq!(fs_err::read_to_string(out.join("perm")).unwrap(), "600 0\n");
    let keys = fs_err::read_to_string(out.join("deploy-keys")).unwrap();
    assert!(keys.contains(&fingerprint), "{keys}");
    assert_eq!(
        fs_err::read_to_string(out.join("deploy-perm")).unwrap(),
        "660 1000\n"
    );

    // A required agent that was not given is an error naming its id.
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh,id=github,required true\n",
    )
    .unwrap();
    let output = kiln_env(
        dir.path(),
        &["build", "--ssh", &deploy, context.to_str().unwrap()],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no SSH key \"github\" forwarded from the client"),
        "{}",
        text(&output)
    );
    // An optional one is simply absent.
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh,id=github sh -c 'test ! -e /run/buildkit/ssh_agent.0'\n",
    )
    .unwrap();
    let output = kiln_env(dir.path(), &["build", context.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn bind_mount_of_a_subpath_of_a_multi_layer_stage() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `base` has three layers: busybox, then two steps; `a` is deleted by the last one.
    let dockerfile = "FROM busybox AS base\n\
         RUN mkdir -p /data/keep && echo one > /data/keep/a && echo x > /data/other\n\
         RUN echo two > /data/keep/b && rm /data/keep/a && mkdir /data/keep/sub\n\
         FROM busybox AS use\n\
         RUN --mount=type=bind,from=base,source=/data/keep,target=/m \
             sh -c 'ls -A /m > /listing; cat /m/b > /content'\n\
         RUN --mount=type=bind,from=base,source=data,target=/whole \
             sh -c 'ls -A /whole > /whole-listing'\n\
         FROM scratch\n\
         COPY --from=use /listing /content /whole-listing /\n";
    let output = build(dir.path(), dockerfile, &[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let out = dir.path().join("out");
    // Only the selected directory, as merged: `a` is gone, `b` and `sub` are there.
    assert_eq!(
        fs_err::read_to_string(out.join("listing")).unwrap(),
        "b\nsub\n"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("content")).unwrap(),
        "two\n"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("whole-listing")).unwrap(),
        "keep\nother\n"
    );
}
