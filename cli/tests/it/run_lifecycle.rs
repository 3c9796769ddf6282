//! Detached containers and their lifecycle (issue 21): `kiln run -d`, `ps`, `logs`, `exec`,
//! `stop`, `kill`, `rm`, `inspect`, restart policies, health checks and named volumes, with
//! real processes in real namespaces.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use super::run::{kiln, store_with_busybox, text};

/// Runs `kiln ARGS` in the store at `root`.
fn k(root: &Path, args: &[&str]) -> Output {
    kiln(root).args(args).output().unwrap()
}

/// `kiln run -d ARGS`: the new container's ID.
fn detach(root: &Path, args: &[&str]) -> String {
    let out = kiln(root).args(["run", "-d"]).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "{id:?}");
    id
}

/// `kiln inspect NAME` as JSON.
fn inspect(root: &Path, name: &str) -> serde_json::Value {
    let out = k(root, &["inspect", name]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list[0].clone()
}

/// Waits (up to a minute) until `check` holds for the container's `inspect` JSON.
fn wait_until(root: &Path, name: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = inspect(root, name);
        if check(&value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {what}: {value:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes every container of the store when dropped, so no supervisor outlives a test.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ids = text(&k(self.0, &["ps", "-aq", "--no-trunc"]).stdout);
        for id in ids.lines() {
            let _ = k(self.0, &["rm", "-f", id]);
        }
    }
}

fn ps(root: &Path, args: &[&str]) -> Vec<Vec<String>> {
    let out = k(root, &[&["ps"], args].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[test]
fn lifecycle_detached_container_runs_logs_execs_and_stops() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    let script = "echo started; echo warning >&2; echo from-inside > /tmp/f; \
                  trap 'echo got TERM; exit 3' TERM; while true; do sleep 0.1; done";
    let id = detach(root, &["--name", "web", "busybox", "sh", "-c", script]);
    wait_until(root, "web", "running", |v| v["State"]["Running"] == true);
    let rows = ps(root, &[]);
    assert_eq!(
        rows[0],
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ]
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1][0], id[..12]);
    assert_eq!(rows[1][1], "busybox");
    assert!(rows[1][4].starts_with("Up "), "{rows:?}");
    assert_eq!(rows[1].last().unwrap(), "web");
    assert_eq!(
        text(&k(root, &["ps", "-q"]).stdout),
        format!("{}\n", &id[..12])
    );

    // The name is taken.
    let out = kiln(root)
        .args(["run", "-d", "--name", "web", "busybox", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains(&format!(
            "Conflict. The container name \"/web\" is already in use by container \"{id}\""
        )),
        "{}",
        text(&out.stderr)
    );

    // exec sees the container's files and processes, and returns the command's code.
    wait_until(root, "web", "writing", |_| {
        k(root, &["exec", "web", "cat", "/tmp/f"]).status.success()
    });
    let out = k(root, &["exec", "web", "cat", "/tmp/f"]);
    assert_eq!(text(&out.stdout), "from-inside\n");
    let out = k(root, &["exec", "web", "ps", "-o", "pid,args"]);
    let processes = text(&out.stdout);
    assert!(
        processes
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sh -c echo started")),
        "{processes}"
    );
    let out = k(
        root,
        &[
            "exec",
            "-e",
            "X=5",
            "-w",
            "/tmp",
            "web",
            "sh",
            "-c",
            "pwd; exit $X",
        ],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(5), "/tmp\n".to_owned())
    );
    let out = k(root, &["exec", "web", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));

    // stop: SIGTERM reaches the trap, whose exit code is the container's.
    let out = k(root, &["stop", "web"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "web\n".to_owned())
    );
    let state = &inspect(root, "web")["State"];
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["ExitCode"], 3);
    assert!(ps(root, &[]).len() == 1);
    let rows = ps(root, &["-a"]);
    assert!(rows[1][4].starts_with("Exited (3) "), "{rows:?}");

    // Logs survive the container, each stream to its own.
    let out = k(root, &["logs", "web"]);
    assert_eq!(text(&out.stdout), "started\ngot TERM\n");
    assert_eq!(text(&out.stderr), "warning\n");
    let out = k(root, &["logs", "--tail", "1", "-t", "web"]);
    let line = text(&out.stdout);
    assert!(line.ends_with("Z got TERM\n"), "{line:?}");
    let out = k(root, &["exec", "web", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not running"),
        "{}",
        text(&out.stderr)
    );

    let out = k(root, &["rm", "web"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "web\n".to_owned())
    );
    assert!(!root.join("containers").join(&id).exists());
    assert!(!root.join("snapshots/active/container-web").exists());
    let out = k(root, &["logs", "web"]);
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: No such container: web\n"
    );
}

#[test]
fn lifecycle_stop_honours_the_stop_signal_and_the_timeout() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    // The stop signal (here USR1) goes first.
    detach(
        root,
        &[
            "--name",
            "usr1",
            "--stop-signal",
            "SIGUSR1",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got USR1; exit 7' USR1; echo ready; while true; do sleep 0.1; done",
        ],
    );
    // A process that ignores SIGTERM is killed after the timeout.
    detach(
        root,
        &[
            "--name",
            "stubborn",
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    for name in ["usr1", "stubborn"] {
        wait_until(root, name, "ready", |_| {
            text(&k(root, &["logs", name]).stdout) == "ready\n"
        });
    }
    assert_eq!(inspect(root, "usr1")["Config"]["StopSignal"], "SIGUSR1");
    let out = k(root, &["stop", "usr1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(inspect(root, "usr1")["State"]["ExitCode"], 7);
    assert_eq!(
        text(&k(root, &["logs", "usr1"]).stdout),
        "ready\ngot USR1\n"
    );

    let out = k(root, &["stop", "-t", "1", "stubborn"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(inspect(root, "stubborn")["State"]["ExitCode"], 137);
}

#[test]
fn lifecycle_kill_sends_signals_and_rm_needs_force() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    let id = detach(
        root,
        &[
            "--name",
            "target",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got HUP' HUP; echo ready; while true; do sleep 0.1; done",
        ],
    );
    wait_until(root, "target", "ready", |_| {
        text(&k(root, &["logs", "target"]).stdout) == "ready\n"
    });
    let out = k(root, &["kill", "-s", "HUP", "target"]);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "target\n".to_owned())
    );
    wait_until(root, "target", "signalled", |_| {
        text(&k(root, &["logs", "target"]).stdout) == "ready\ngot HUP\n"
    });
    assert_eq!(inspect(root, "target")["State"]["Running"], true);

    let out = k(root, &["rm", "target"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: cannot remove container \"/target\": container is running: \
         stop the container before removing or force remove\n"
    );
    let out = k(root, &["rm", "-f", &id[..12]]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ps(root, &["-a"]).len(), 1);
    assert!(!root.join("snapshots/active/container-target").exists());
    let out = k(root, &["kill", "target"]);
    assert_eq!(out.status.code(), Some(1));
    // Nothing of the container is left running.
    let left = std::process::Command::new("pgrep")
        .args(["-f", "echo got HUP"])
        .output()
        .unwrap();
    assert_eq!(text(&left.stdout), "");

    // A command that cannot be executed: docker's 127, and a container that never started.
    let out = kiln(root)
        .args([
            "run",
            "-d",
            "--name",
            "broken",
            "busybox",
            "no-such-command",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot execute \"no-such-command\""),
        "{}",
        text(&out.stderr)
    );
    let state = &inspect(root, "broken")["State"];
    assert_eq!(state["Status"], "created");
    assert_eq!(state["ExitCode"], 127);
    assert_eq!(state["StartedAt"], "0001-01-01T00:00:00Z");
}

#[test]
fn lifecycle_restart_on_failure_counts() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    detach(
        root,
        &[
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            "echo run; exit 4",
        ],
    );
    wait_until(root, "flaky", "done restarting", |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 2
    });
    let value = inspect(root, "flaky");
    assert_eq!(value["State"]["ExitCode"], 4);
    assert_eq!(
        value["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 2})
    );
    // The first run and two restarts, all in one log.
    assert_eq!(text(&k(root, &["logs", "flaky"]).stdout), "run\nrun\nrun\n");
    let out = kiln(root)
        .args(["run", "-d", "--restart", "always:2", "busybox", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr)
            .contains("maximum retry count cannot be used with restart policy 'always'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lifecycle_healthcheck_becomes_healthy() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    detach(
        root,
        &[
            "--name",
            "checked",
            "--health-cmd",
            "test -f /tmp/ready && echo fine",
            "--health-interval",
            "100ms",
            "--health-retries",
            "1000",
            "busybox",
            "sh",
            "-c",
            "sleep 1; touch /tmp/ready; sleep 1000",
        ],
    );
    wait_until(root, "checked", "healthy", |v| {
        v["State"]["Health"]["Status"] == "healthy"
    });
    let health = &inspect(root, "checked")["State"]["Health"];
    let log = health["Log"].as_array().unwrap();
    let last = log.last().unwrap();
    assert_eq!(last["ExitCode"], 0);
    assert_eq!(last["Output"], "fine\n");
    assert_eq!(health["FailingStreak"], 0);
    let rows = ps(root, &[]);
    assert!(rows[1][4].ends_with(" (healthy)"), "{rows:?}");

    // A check that outlives its timeout fails, and its process is killed.
    detach(
        root,
        &[
            "--name",
            "slow",
            "--health-cmd",
            "sleep 7777",
            "--health-interval",
            "100ms",
            "--health-timeout",
            "200ms",
            "--health-retries",
            "2",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    wait_until(root, "slow", "unhealthy", |v| {
        v["State"]["Health"]["Status"] == "unhealthy"
    });
    let health = &inspect(root, "slow")["State"]["Health"];
    assert_eq!(health["Log"][0]["ExitCode"], -1);
    assert_eq!(
        health["Log"][0]["Output"],
        "Health check exceeded timeout (200ms)"
    );
    let out = k(root, &["exec", "slow", "ps", "-o", "args"]);
    let sleeping = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("sleep 7777"))
        .count();
    // At most the check running now, never one per past check.
    assert!(sleeping <= 1, "{}", text(&out.stdout));
    let rows = ps(root, &[]);
    assert!(
        rows.iter().any(|r| r[4].ends_with(" (unhealthy)")),
        "{rows:?}"
    );
}

#[test]
fn lifecycle_named_volume_persists_across_containers() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let out = k(
        root,
        &[
            "run",
            "--rm",
            "-v",
            "shared:/data",
            "busybox",
            "sh",
            "-c",
            "echo kept > /data/f",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = k(
        root,
        &[
            "run",
            "--rm",
            "-v",
            "shared:/data:ro",
            "busybox",
            "cat",
            "/data/f",
        ],
    );
    assert_eq!(text(&out.stdout), "kept\n");
    assert_eq!(text(&k(root, &["volume", "ls", "-q"]).stdout), "shared\n");
    let out = k(root, &["volume", "inspect", "shared"]);
    let volumes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(volumes[0]["Name"], "shared");
    let mountpoint = volumes[0]["Mountpoint"].as_str().unwrap().to_owned();
    assert_eq!(
        fs_err::read_to_string(Path::new(&mountpoint).join("f")).unwrap(),
        "kept\n"
    );
    // A new volume gets the image's files at its path, as docker's; an existing one keeps its
    // own.
    let out = k(
        root,
        &[
            "run",
            "--rm",
            "-v",
            "etc:/etc",
            "busybox",
            "sh",
            "-c",
            "grep -c ^root: /etc/passwd; echo mine > /etc/mine",
        ],
    );
    assert_eq!(text(&out.stdout), "1\n", "{}", text(&out.stderr));
    let out = k(
        root,
        &[
            "run",
            "--rm",
            "-v",
            "etc:/srv",
            "busybox",
            "ls",
            "/srv/mine",
            "/srv/passwd",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "/srv/mine\n/srv/passwd\n",
        "{}",
        text(&out.stderr)
    );
    let out = k(
        root,
        &[
            "run",
            "--rm",
            "-v",
            "fresh:/srv",
            "busybox",
            "ls",
            "-A",
            "/srv",
        ],
    );
    assert_eq!(text(&out.stdout), "", "{}", text(&out.stderr));
    let out = k(root, &["volume", "rm", "shared"]);
    assert_eq!(text(&out.stdout), "shared\n");
    assert!(!Path::new(&mountpoint).exists());
    let out = k(root, &["volume", "rm", "shared"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: get shared: no such volume\n"
    );
}

#[test]
fn lifecycle_a_killed_supervisor_leaves_an_exited_container() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    let id = detach(root, &["--name", "orphan", "busybox", "sleep", "1000"]);
    wait_until(root, "orphan", "running", |v| v["State"]["Running"] == true);
    let pid = inspect(root, "orphan")["State"]["Pid"].as_u64().unwrap();
    let record: serde_json::Value = serde_json::from_slice(
        &fs_err::read(root.join("containers").join(&id).join("config.json")).unwrap(),
    )
    .unwrap();
    let supervisor = record["State"]["Keeper"]["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(supervisor).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(root, "orphan", "exited", |v| {
        v["State"]["Status"] == "exited"
    });
    assert_eq!(inspect(root, "orphan")["State"]["ExitCode"], 255);
    let rows = ps(root, &["-a"]);
    assert!(rows[1][4].starts_with("Exited (255) "), "{rows:?}");
    // The container's process went with its supervisor, and its mounts with its namespace.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the container's process {pid} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(root.to_str().unwrap()), "{mounts}");
    let out = k(root, &["rm", "orphan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn lifecycle_logs_follow_until_the_container_ends() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    let id = detach(
        root,
        &[
            "busybox",
            "sh",
            "-c",
            "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second >&2; echo third",
        ],
    );
    wait_until(root, &id, "writing", |_| {
        text(&k(root, &["logs", &id]).stdout) == "first\n"
    });
    let follower = kiln(root)
        .args(["logs", "-f", &id[..12]])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = k(root, &["exec", &id, "touch", "/tmp/go"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // `logs -f` ends with the container, with everything it wrote.
    let out = follower.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "first\nthird\n");
    assert_eq!(text(&out.stderr), "second\n");
    let rows = ps(root, &["-a", "--no-trunc"]);
    assert_eq!(rows[1][0], id);
}

#[test]
fn lifecycle_the_image_s_healthcheck_and_stopsignal_apply() {
    let Some(root) = store_with_busybox() else {
        return;
    };
    let root = root.path();
    let _cleanup = Cleanup(root);
    let context = tempfile::tempdir().unwrap();
    fs_err::write(
        context.path().join("Dockerfile"),
        "FROM busybox\n\
         HEALTHCHECK --interval=100ms --retries=1000 CMD test -e /tmp/up\n\
         STOPSIGNAL SIGUSR2\n\
         CMD [\"sh\", \"-c\", \"trap 'exit 12' USR2; sleep 0.5; touch /tmp/up; while true; do sleep 0.1; done\"]\n",
    )
    .unwrap();
    let out = k(
        root,
        &[
            "build",
            "-q",
            "-t",
            "checked",
            context.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    detach(root, &["--name", "app", "checked"]);
    wait_until(root, "app", "healthy", |v| {
        v["State"]["Health"]["Status"] == "healthy"
    });
    let value = inspect(root, "app");
    assert_eq!(value["Config"]["StopSignal"], "SIGUSR2");
    assert_eq!(
        value["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -e /tmp/up"])
    );
    let out = k(root, &["stop", "app"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(inspect(root, "app")["State"]["ExitCode"], 12);
}
