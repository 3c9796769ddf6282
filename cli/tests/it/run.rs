//! `kiln run` on images from the store (issue 7): the image config, docker's overrides and
//! exit codes, stdin, and the README demo (`scripts/demo.sh`).

use kiln_testdata::{is_root, skip};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub(super) fn kiln(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.arg("--root").arg(root);
    command
}

/// A store with busybox loaded from testdata, or `None` (skipped) when not root.
pub(super) fn store_with_busybox() -> Option<tempfile::TempDir> {
    if !is_root() {
        skip("needs root for namespaces and overlayfs");
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    let mut load = kiln(root.path());
    load.arg("load").arg(kiln_testdata::busybox_layout());
    assert!(load.status().unwrap().success());
    Some(root)
}

fn run(root: &Path, args: &[&str]) -> Output {
    let mut command = kiln(root);
    command.arg("run").arg("--rm").args(args);
    command.output().unwrap()
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_prints_the_output_and_returns_the_exit_code() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let out = run(root.path(), &["busybox", "echo", "hello", "world"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello world\n");

    let out = run(
        root.path(),
        &["busybox", "sh", "-c", "echo oops >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stderr), "oops\n");
    // Killed by SIGKILL: 128 + 9. The process is PID 1 of its namespace, so a signal it sends
    // itself is ignored (as under Docker); the kernel's CPU-time limit is not.
    let out = run(
        root.path(),
        &["busybox", "sh", "-c", "kill -9 $$; echo alive"],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "alive\n".to_owned())
    );
    let out = run(
        root.path(),
        &["busybox", "sh", "-c", "ulimit -t 1; while :; do :; done"],
    );
    assert_eq!(out.status.code(), Some(137));
    let out = run(root.path(), &["busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("cannot execute \"no-such-command\""),
        "{}",
        text(&out.stderr)
    );
    let out = run(root.path(), &["busybox", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126));
    // --rm leaves no container file system behind.
    let active = root.path().join("snapshots/active");
    assert_eq!(fs_err::read_dir(&active).unwrap().count(), 0);
}

#[test]
fn run_applies_overrides() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let env_file = root.path().join("env");
    fs_err::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let host = tempfile::tempdir().unwrap();
    fs_err::write(host.path().join("data.txt"), "from the host").unwrap();
    let volume = format!("{}:/data:ro", host.path().display());
    let out = run(
        root.path(),
        &[
            "-e",
            "A=1",
            "--env-file",
            env_file.to_str().unwrap(),
            "-w",
            "/tmp",
            "-u",
            "65534",
            "-v",
            &volume,
            "--tmpfs",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "echo $A $FROM_FILE $(pwd) $(id -u) $(cat /data/data.txt); \
             touch /data/x 2>/dev/null || echo read-only; \
             grep -c ' /scratch tmpfs' /proc/mounts",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "1 yes /tmp 65534 from the host\nread-only\n1\n"
    );
    let out = run(
        root.path(),
        &["--entrypoint", "/bin/echo", "busybox", "via", "entrypoint"],
    );
    assert_eq!(text(&out.stdout), "via entrypoint\n");

    let mut command = kiln(root.path());
    command
        .args(["run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "THROUGH STDIN\n");
}

#[test]
fn run_tmpfs_options_reach_the_mount() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    // Docker's defaults (noexec, no size limit), then size, mode, owner and exec as asked.
    let out = run(
        root.path(),
        &[
            "--tmpfs",
            "/plain",
            "--tmpfs",
            "/fast:size=1m,mode=1770,uid=65534,gid=65534,exec",
            "busybox",
            "sh",
            "-c",
            "stat -c '%a %u %g' /fast; df -k /fast | tail -1 | awk '{print $2}'; \
             for d in plain fast; do printf '#!/bin/sh\\necho $0: exec\\n' > /$d/s; chmod +x /$d/s; \
             /$d/s 2>/dev/null || echo $d: noexec; done; \
             head -c 2000000 /dev/zero > /fast/big 2>/dev/null || echo fast: full",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "1770 65534 65534\n1024\nplain: noexec\n/fast/s: exec\nfast: full\n"
    );
    // Read-only.
    let out = run(
        root.path(),
        &[
            "--tmpfs",
            "/ro:ro",
            "busybox",
            "sh",
            "-c",
            "touch /ro/x 2>/dev/null || echo read-only",
        ],
    );
    assert_eq!(text(&out.stdout), "read-only\n", "{}", text(&out.stderr));
}

#[test]
fn run_reports_bad_input_like_docker() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    // A relative host path (a bare name is a named volume, as docker's).
    let out = run(root.path(), &["-v", "./relative:/x", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("invalid volume specification: './relative:/x'"),
        "{}",
        text(&out.stderr)
    );
    // tmpfs options are checked before anything runs, as Docker does.
    for (spec, wanted) in [
        (
            "/t:size=1m,colour=red",
            "invalid tmpfs option \"colour=red\": unknown option",
        ),
        (
            "/t:size=lots",
            "invalid tmpfs option \"size=lots\": invalid value",
        ),
        ("t:size=1m", "the path must be absolute"),
    ] {
        let out = run(root.path(), &["--tmpfs", spec, "busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{spec}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid tmpfs specification: '{spec}'"))
                && stderr.contains(wanted),
            "{spec}: {stderr}"
        );
    }
    // Not in the store, and the registry has no such repository (or is down): 125.
    let out = run(root.path(), &["127.0.0.1:5000/kiln-test/absent:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr)
            .contains("unable to find image '127.0.0.1:5000/kiln-test/absent:1' locally"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_readme_demo_loads_builds_and_runs() {
    if !is_root() {
        skip("needs root for namespaces and overlayfs");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let script = kiln_testdata::root().join("../scripts/demo.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The message file, upper-cased by the first stage's RUN, printed by the image's CMD with
    // its ENV and WORKDIR.
    let message = fs_err::read_to_string(kiln_testdata::root().join("demo/message.txt")).unwrap();
    let expected = format!(
        "hello from kiln: {} (in /app)\n",
        message.trim().to_uppercase()
    );
    let stdout = text(&out.stdout);
    assert!(stdout.ends_with(&expected), "{stdout}");
    assert!(stdout.contains("Loaded image: docker.io/library/busybox:latest"));
}

#[test]
fn signals_to_kiln_reach_the_container() {
    use std::io::BufRead as _;

    let Some(root) = store_with_busybox() else {
        return;
    };
    let mut command = kiln(root.path());
    command
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(3));
}

/// `kiln ps` without containers: docker's header.
const PS_HEADER: &str = "CONTAINER ID   IMAGE   COMMAND   CREATED   STATUS   PORTS   NAMES\n";

#[test]
fn kept_containers_are_listed_and_removed() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let mut command = kiln(root.path());
    command.args([
        "run",
        "--name",
        "keeper",
        "busybox",
        "sh",
        "-c",
        "echo kept > /f",
    ]);
    assert!(command.status().unwrap().success());
    // The container's writes stay in its file system until `kiln rm`.
    let upper = root
        .path()
        .join("snapshots/active/container-keeper/upper/f");
    assert_eq!(fs_err::read_to_string(&upper).unwrap(), "kept\n");
    // Exited, so listed by `ps -a` only, in docker's columns.
    let mut ps = kiln(root.path());
    ps.arg("ps");
    assert_eq!(text(&ps.output().unwrap().stdout), PS_HEADER);
    let mut ps = kiln(root.path());
    ps.args(["ps", "-a"]);
    let listed = text(&ps.output().unwrap().stdout);
    let row = listed.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("   busybox   ")
            && row.contains("   Exited (0) ")
            && row.ends_with("   keeper"),
        "{listed}"
    );

    let mut again = kiln(root.path());
    again.args(["run", "--name", "keeper", "busybox", "true"]);
    let out = again.output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("Conflict. The container name \"/keeper\" is already in use"),
        "{}",
        text(&out.stderr)
    );

    let mut rm = kiln(root.path());
    rm.args(["rm", "keeper"]);
    assert_eq!(text(&rm.output().unwrap().stdout), "keeper\n");
    assert!(!upper.exists());
    let mut ps = kiln(root.path());
    ps.args(["ps", "-a"]);
    assert_eq!(text(&ps.output().unwrap().stdout), PS_HEADER);
    let mut rm = kiln(root.path());
    rm.args(["rm", "keeper"]);
    let out = rm.output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: No such container: keeper\n"
    );
}

/// A registry on 127.0.0.1 that accepts connections and never answers; returns its address
/// and a receiver told of each connection.
fn silent_registry() -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (connected, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            let _ = connected.send(());
        }
    });
    (address, receiver)
}

#[test]
fn a_signal_during_the_pull_ends_kiln_like_docker() {
    use nix::sys::signal::Signal;
    use std::time::{Duration, Instant};

    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let root = tempfile::tempdir().unwrap();
        let (registry, connected) = silent_registry();
        let mut child = kiln(root.path())
            .args([
                "run",
                "--rm",
                &format!("{registry}/stalled/image:1"),
                "true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The pull has begun once kiln talks to the registry.
        connected
            .recv_timeout(Duration::from_secs(30))
            .expect("kiln never contacted the registry");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        let sent = Instant::now();
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kiln still runs 10 s after {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = text(
            &std::io::Read::bytes(child.stderr.take().unwrap())
                .collect::<Result<Vec<u8>, _>>()
                .unwrap(),
        );
        assert_eq!(status.code(), Some(code), "{signal}: {stderr}");
        assert!(sent.elapsed() < Duration::from_secs(5), "{signal}");
        // Nothing of a container is left behind.
        let mut ps = kiln(root.path());
        ps.args(["ps", "-a"]);
        let out = ps.output().unwrap();
        assert_eq!(text(&out.stdout), PS_HEADER, "{}", text(&out.stderr));
    }
}

#[test]
fn privileged_lifts_the_sandbox() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let script =
        "grep -E '^Seccomp:' /proc/self/status; unshare -U true 2>/dev/null && echo unshared; true";
    let out = run(root.path(), &["busybox", "sh", "-c", script]);
    assert_eq!(text(&out.stdout), "Seccomp:\t2\n", "{}", text(&out.stderr));
    let out = run(
        root.path(),
        &["--privileged", "busybox", "sh", "-c", script],
    );
    assert_eq!(
        text(&out.stdout),
        "Seccomp:\t0\nunshared\n",
        "{}",
        text(&out.stderr)
    );
}

/// Bundle directories of kiln process `pid` in the runner's state directory.
fn bundles_of(pid: u32) -> Vec<std::path::PathBuf> {
    let Ok(entries) = fs_err::read_dir("/run/kiln/runner") else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{pid}-")))
        })
        .map(|e| e.path())
        .collect()
}

#[test]
fn state_of_a_killed_kiln_is_swept_by_the_next_run() {
    use std::io::BufRead as _;
    use std::os::unix::fs::MetadataExt as _;

    let Some(root) = store_with_busybox() else {
        return;
    };
    let mut command = kiln(root.path());
    command
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo ready; sleep 1000",
        ])
        .stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // The run's bundle: private, in a private state directory.
    let state = fs_err::metadata("/run/kiln/runner").unwrap();
    assert_eq!(state.mode() & 0o777, 0o700);
    let bundles = bundles_of(child.id());
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    assert_eq!(fs_err::metadata(&bundles[0]).unwrap().mode() & 0o777, 0o700);
    assert!(bundles[0].join("hosts").is_file());
    // SIGKILL: kiln cleans nothing up (the container dies with it, by its parent-death signal).
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(bundles[0].exists());
    // The next run of any kiln removes it.
    let out = run(root.path(), &["busybox", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !bundles[0].exists(),
        "{} is still there",
        bundles[0].display()
    );
}

#[test]
fn run_sets_ulimits_a_cgroup_parent_and_a_read_only_root_and_opens_no_device_in_a_volume() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let out = run(
        root.path(),
        &[
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "core=0",
            "busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn; ulimit -c",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1024\n2048\n0\n");
    // docker's wording for a name it does not know; nothing runs.
    let out = run(
        root.path(),
        &["--ulimit", "files=1", "busybox", "echo", "ran"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("invalid ulimit type: files"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");

    // A device made in a volume does not open (the null device, which even the v1 device
    // rules allow).
    let host = tempfile::tempdir().unwrap();
    let volume = format!("{}:/data", host.path().display());
    let out = run(
        root.path(),
        &[
            "-v",
            &volume,
            "busybox",
            "sh",
            "-c",
            "mknod /data/null c 1 3 && head -c 0 /data/null",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(host.path().join("null").exists());

    // --read-only: the root file system refuses writes, a --tmpfs in it does not.
    let out = run(
        root.path(),
        &[
            "--read-only",
            "--tmpfs",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "touch /x 2>/dev/null || echo root-ro; touch /scratch/x && echo tmpfs-rw",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "root-ro\ntmpfs-rw\n");

    let parent = format!("kiln-cli-test-{}", std::process::id());
    let out = run(
        root.path(),
        &[
            "--cgroup-parent",
            &parent,
            "busybox",
            "sh",
            "-c",
            "grep -E '^[0-9]+:pids:' /proc/self/cgroup | cut -d: -f3",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut removed = 0;
    for hierarchy in ["pids", "memory", "cpu", "devices", "unified"] {
        let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(&parent);
        if dir.join("kiln").is_dir() {
            fs_err::remove_dir(dir.join("kiln")).unwrap();
            fs_err::remove_dir(&dir).unwrap();
            removed += 1;
        }
    }
    if Path::new("/sys/fs/cgroup/pids").is_dir() {
        assert!(
            text(&out.stdout).starts_with(&format!("/{parent}/kiln/")),
            "{}",
            text(&out.stdout)
        );
        assert!(removed > 0);
    }
}
