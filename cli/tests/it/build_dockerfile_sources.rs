//! `kiln build CONTEXT` end to end for `ADD <git url>` (over `git daemon` and over a real
//! `sshd` with the agent given by `--ssh`), symbolic `--chmod`, `COPY --parents` required paths,
//! secrets as environment variables and `RUN --mount=type=ssh` with a real `ssh-agent`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_testdata::{is_root, skip};

use crate::common::{Killed, git_daemon, kiln_in, ready, run_git, text};

/// Builds `dockerfile` in a fresh context holding `files`, exporting to `DIR/out`.
pub(crate) fn build(
    dir: &Path,
    dockerfile: &str,
    files: &[(&str, &str, u32)],
    extra: &[&str],
) -> Output {
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
    kiln_in(dir, &args, env)
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
    // A secret that is not text cannot be an environment variable: refused, not altered.
    let binary = dir.path().join("binary");
    fs_err::write(&binary, b"\xff\xfe\x00key").unwrap();
    let output = build(
        dir.path(),
        "FROM busybox\nRUN --mount=type=secret,id=bin,env=BIN true\n",
        &[],
        &["--secret", &format!("id=bin,src={}", binary.display())],
    );
    assert!(!output.status.success());
    assert!(
        text(&output)
            .contains("secret bin is not UTF-8 text, so it cannot be the environment variable BIN"),
        "{}",
        text(&output)
    );
    // Not in any layer, snapshot, cache record or the exported files.
    assert_eq!(
        tree_contains(&dir.path().join("root"), value.as_bytes()),
        None
    );
    assert_eq!(tree_contains(&out, value.as_bytes()), None);
    // Not in the image configuration either.
    let oci = dir.path().join("oci");
    let output = kiln_in(
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
pub(crate) fn host_ssh_add(dest: &Path) -> Option<String> {
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

pub(crate) fn which(name: &str) -> Option<PathBuf> {
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
    let output = kiln_in(
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
    let output = kiln_in(
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
    let output = kiln_in(dir.path(), &["build", context.to_str().unwrap()], &[]);
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

/// An `sshd` on 127.0.0.1 serving repositories by path to the current user, who logs in with
/// a key held by a test `ssh-agent`; a second agent holds no key.
struct SshServer {
    _sshd: Killed,
    _agents: [Killed; 2],
    /// The agent holding the authorized key.
    agent: PathBuf,
    /// An agent without keys.
    empty_agent: PathBuf,
    /// The server's host key, as a `known_hosts` key (`TYPE BASE64`).
    host_key: String,
    /// A key that is not the server's, in the same form.
    other_key: String,
    /// The login name (the current user: sshd serves only existing accounts).
    user: String,
}

/// Starts an agent on `socket`, waiting for the socket to appear.
pub(crate) fn start_agent(socket: &Path) -> Killed {
    let agent = Killed(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(socket)
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
    agent
}

fn keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
    let public = fs_err::read_to_string(path.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `sshd` can listen on 127.0.0.1:`port` (nothing else does).
fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Starts `sshd` in `dir` listening on 127.0.0.1 at each of `ports`.
fn start_sshd(dir: &Path, ports: &[u16]) -> SshServer {
    let host_key = keygen(&dir.join("host_key"));
    keygen(&dir.join("user_key"));
    let other_key = keygen(&dir.join("other_key"));
    fs_err::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
    let mut config = String::new();
    for port in ports {
        config.push_str(&format!("ListenAddress 127.0.0.1:{port}\n"));
    }
    config.push_str(&format!(
        "HostKey {dir}/host_key\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         StrictModes no\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         PidFile none\n",
        dir = dir.display()
    ));
    fs_err::write(dir.join("sshd_config"), config).unwrap();
    // sshd refuses to start without its privilege separation directory.
    fs_err::create_dir_all("/run/sshd").unwrap();
    let sshd = Killed(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if ports
            .iter()
            .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let agent = dir.join("agent.sock");
    let empty_agent = dir.join("empty-agent.sock");
    let agents = [start_agent(&agent), start_agent(&empty_agent)];
    let added = Command::new("ssh-add")
        .arg(dir.join("user_key"))
        .env("SSH_AUTH_SOCK", &agent)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added));
    let user = Command::new("id").arg("-un").output().unwrap();
    SshServer {
        _sshd: sshd,
        _agents: agents,
        agent,
        empty_agent,
        host_key,
        other_key,
        user: String::from_utf8_lossy(&user.stdout).trim().to_owned(),
    }
}

/// A git source for `url` with the attributes BuildKit's `llb.Git` gives an SSH remote and
/// `known_hosts` as `git.knownsshhosts`.
fn ssh_git_definition(url: &str, fragment: &str, known_hosts: &str) -> Vec<u8> {
    use kiln_llb::pb;
    use kiln_llb::prost::Message as _;
    let (_, rest) = url.split_once("://").unwrap();
    let host_path = rest.split_once('@').unwrap().1;
    let (host_port, path) = host_path.split_at(host_path.find('/').unwrap());
    let host = host_port.split(':').next().unwrap();
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("git.fullurl".to_owned(), url.to_owned());
    attrs.insert("git.mountsshsock".to_owned(), "default".to_owned());
    attrs.insert("git.knownsshhosts".to_owned(), known_hosts.to_owned());
    let source = pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: format!("git://{host}{path}#{fragment}"),
            attrs,
        })),
        ..Default::default()
    };
    let terminal = pb::Op {
        inputs: vec![pb::Input {
            digest: kiln_llb::op_digest(&source).to_string(),
            index: 0,
        }],
        ..Default::default()
    };
    pb::Definition {
        def: vec![
            kiln_llb::marshal_op(&source),
            kiln_llb::marshal_op(&terminal),
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

/// `ADD` of `user@host:path` and `ssh://` repositories through a real `sshd`, authenticated by
/// the agent given with `--ssh`; `git.knownsshhosts` checks the server's key. Serial: the
/// scp-style form has no port, so the server also listens on 127.0.0.1:22 when it is free.
#[test]
fn serial_add_git_over_ssh() {
    if !is_root() {
        return skip("sshd serves logins only when run as root");
    }
    if which("ssh-agent").is_none() || !Path::new("/usr/sbin/sshd").exists() {
        return skip("openssh-client or openssh-server is not installed (run scripts/test-env.sh)");
    }
    // `user@host:path` remotes always use port 22: that form is left out where a system sshd
    // already listens there.
    let scp_form = port_free(22);
    if !scp_form {
        #[allow(clippy::print_stderr, reason = "the test says what it leaves out")]
        {
            eprintln!("127.0.0.1:22 is taken: the `user@host:path` form is not tested");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repos/project.git");
    fs_err::create_dir_all(repo.join("sub")).unwrap();
    fs_err::write(repo.join("top.txt"), "top v1\n").unwrap();
    fs_err::write(repo.join("sub/inner.txt"), "inner v1\n").unwrap();
    run_git(&repo, &["init", "-q", "-b", "main"]);
    run_git(&repo, &["add", "."]);
    run_git(&repo, &["commit", "-qm", "one"]);
    run_git(&repo, &["tag", "v1"]);
    fs_err::write(repo.join("top.txt"), "top v2\n").unwrap();
    run_git(&repo, &["commit", "-qam", "two"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ports: &[u16] = if scp_form { &[22, port] } else { &[port] };
    let server = start_sshd(dir.path(), ports);
    let user = &server.user;
    let path = repo.display();
    let scp = format!("{user}@127.0.0.1:{path}");
    let url = format!("ssh://{user}@127.0.0.1:{port}{path}");
    let agent = format!("default={}", server.agent.display());

    let scp_line = if scp_form {
        format!("ADD {scp}#v1:sub /scp/\n")
    } else {
        String::new()
    };
    let dockerfile = format!(
        "FROM scratch\n{scp_line}\
         ADD {url}#main /url/\n\
         ADD --keep-git-dir=true {url}?tag=v1 /kept/\n"
    );
    let output = build(dir.path(), &dockerfile, &[], &["--ssh", &agent]);
    assert!(output.status.success(), "{}", text(&output));
    let out = dir.path().join("out");
    if scp_form {
        assert_eq!(
            fs_err::read_to_string(out.join("scp/inner.txt")).unwrap(),
            "inner v1\n"
        );
        assert!(!out.join("scp/top.txt").exists());
        assert!(!out.join("scp/.git").exists());
    }
    assert_eq!(
        fs_err::read_to_string(out.join("url/top.txt")).unwrap(),
        "top v2\n"
    );
    assert!(!out.join("url/.git").exists());
    assert_eq!(
        fs_err::read_to_string(out.join("kept/top.txt")).unwrap(),
        "top v1\n"
    );
    assert!(out.join("kept/.git/HEAD").is_file());

    // Without --ssh: BuildKit's error, even with an agent in kiln's own environment.
    let one = format!("FROM scratch\nADD {url}#main /url/\n");
    let agent_env = server.agent.to_string_lossy().into_owned();
    let output = build_env(
        dir.path(),
        &one,
        &[],
        &["--no-cache"],
        &[("SSH_AUTH_SOCK", &agent_env)],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no SSH key \"default\" forwarded from the client"),
        "{}",
        text(&output)
    );
    // The agent given is the one used: one without the key is refused by the server, even
    // with the right agent in kiln's environment.
    let empty = format!("default={}", server.empty_agent.display());
    let output = build_env(
        dir.path(),
        &one,
        &[],
        &["--no-cache", "--ssh", &empty],
        &[("SSH_AUTH_SOCK", &agent_env)],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("Permission denied (publickey)"),
        "{}",
        text(&output)
    );

    // git.knownsshhosts: the server's key is accepted, another key is refused.
    let known = format!("[127.0.0.1]:{port} {}", server.host_key);
    let def = ssh_git_definition(&url, "main:sub", &known);
    let kiln_root = dir.path().join("llb-root");
    let llb_out = dir.path().join("known");
    let run = |def: &[u8], out: &Path| {
        let file = out.with_extension("pb");
        fs_err::write(&file, def).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&kiln_root)
            .args(["build", "--progress=plain", "--ssh", &agent, "--llb"])
            .arg(&file)
            .arg("--output")
            .arg(format!("type=local,dest={}", out.display()))
            .output()
            .unwrap()
    };
    let output = run(&def, &llb_out);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(llb_out.join("inner.txt")).unwrap(),
        "inner v1\n"
    );
    let wrong = format!("[127.0.0.1]:{port} {}", server.other_key);
    let def = ssh_git_definition(&url, "main:sub", &wrong);
    let output = run(&def, &dir.path().join("unknown"));
    assert!(!output.status.success());
    assert!(
        text(&output).contains("Host key verification failed"),
        "{}",
        text(&output)
    );
}
