//! `kiln --host unix:///PATH` (`$KILN_HOST`): kiln's own CLI as the client of a `kiln daemon`
//! (issue 14): the build runs in the daemon's store, the context and secrets come from this
//! side through the session, local and tar outputs come back to it, and the progress is the
//! daemon's. Needs buildctl beside the workspace (the daemon helpers wait for it), root and
//! the test registry; skips saying why, or fails under `KILN_TEST_REQUIRE_ALL=1`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::daemon::{Daemon, DaemonSetup};
use crate::common::{assert_ok, context_with, text};
use crate::daemon::{IMAGE, kiln};

/// The bytes each of the client's directory syncs sent, from its debug log
/// (`directory sent name="NAME" bytes=N`), in the order they ended.
fn sent(output: &Output) -> Vec<(String, u64)> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| {
            let rest = line.split_once("directory sent name=\"")?.1;
            let (name, rest) = rest.split_once('"')?;
            let bytes = rest.trim().strip_prefix("bytes=")?.parse().ok()?;
            Some((name.to_owned(), bytes))
        })
        .collect()
}

/// The step numbers of a plain progress (`#N name`), and those it says were `CACHED`.
fn steps(progress: &str) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let mut all = BTreeSet::new();
    let mut cached = BTreeSet::new();
    for line in progress.lines() {
        let Some((number, rest)) = line
            .strip_prefix('#')
            .and_then(|l| l.split_once(' '))
            .and_then(|(n, rest)| Some((n.parse::<u32>().ok()?, rest)))
        else {
            continue;
        };
        all.insert(number);
        if rest == "CACHED" {
            cached.insert(number);
        }
    }
    (all, cached)
}

/// Client-side debug logging, without colours, for [`sent`].
const SYNC_LOG: &[(&str, &str)] = &[("KILN_LOG", "kiln_daemon::client=debug"), ("NO_COLOR", "1")];

#[test]
fn serial_kiln_host_builds_in_the_daemon_and_sends_only_what_changed() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let root = setup.root();
    // The client's own store: a build through the daemon never opens it.
    let client_root = dir.path().join("client-root");
    let context = dir.path().join("context");
    fs_err::create_dir_all(context.join("app/sub")).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE} AS build\n\
             COPY app/ /app/\n\
             RUN --mount=type=secret,id=token cat /run/secrets/token > /app/token \
             && ls /app > /app/listing\n\
             \n\
             FROM {IMAGE}\n\
             COPY --from=build /app/ /out/\n"
        ),
    )
    .unwrap();
    fs_err::write(context.join(".dockerignore"), "app/ignored.txt\n").unwrap();
    fs_err::write(context.join("app/main.txt"), "main\n").unwrap();
    fs_err::write(context.join("app/ignored.txt"), "not for the daemon\n").unwrap();
    fs_err::write(context.join("app/sub/deep.txt"), "deep\n").unwrap();
    let secret = dir.path().join("token");
    fs_err::write(&secret, "s3cret-from-the-client").unwrap();
    let secret_flag = format!("id=token,src={}", secret.display());
    let out = dir.path().join("out");
    let local = format!("type=local,dest={}", out.display());
    let context_arg = context.to_str().unwrap();

    let built = assert_ok(daemon.kiln(
        &client_root,
        &[
            "build",
            "--progress=plain",
            "--secret",
            &secret_flag,
            "-t",
            "kiln-host/app:1",
            "-o",
            &local,
            context_arg,
        ],
        SYNC_LOG,
    ));
    let progress = String::from_utf8_lossy(&built.stderr);
    assert!(
        progress.contains("[build 3/3] RUN --mount=type=secret"),
        "{progress}"
    );
    // The local output came back to this side, with the secret and without the ignored file.
    let read = |path: &str| fs_err::read_to_string(out.join(path)).unwrap();
    assert_eq!(read("out/token"), "s3cret-from-the-client");
    assert_eq!(read("out/listing"), "listing\nmain.txt\nsub\ntoken\n");
    assert_eq!(read("out/sub/deep.txt"), "deep\n");
    assert!(!out.join("out/ignored.txt").exists());
    // The first build sent the context's files.
    let first = sent(&built);
    assert!(
        first
            .iter()
            .any(|(name, bytes)| name == "context" && *bytes > 0),
        "{first:?}"
    );
    // The image is in the daemon's store; the client's store was not made.
    let images = String::from_utf8(assert_ok(kiln(&root, &["images"])).stdout).unwrap();
    assert!(
        images
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["kiln-host/app", "1"])),
        "{images}"
    );
    assert!(!client_root.exists());

    // Again through $KILN_HOST, a tar output this time: every step cached, no file sent.
    let archive = dir.path().join("out.tar");
    let tar = format!("type=tar,dest={}", archive.display());
    let host = format!("unix://{}", daemon.socket.display());
    let mut env = SYNC_LOG.to_vec();
    env.push(("KILN_HOST", &host));
    let again = assert_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&client_root)
            .args(["build", "--progress=plain", "--secret", &secret_flag])
            .args(["-t", "kiln-host/app:1", "-o", &tar, context_arg])
            .env_remove("KILN_CONFIG")
            .envs(env)
            .output()
            .unwrap(),
    );
    let progress = String::from_utf8_lossy(&again.stderr);
    let (all, cached) = steps(&progress);
    assert_eq!(all.len(), 5, "{progress}");
    assert_eq!(all, cached, "{progress}");
    let second = sent(&again);
    assert!(second.len() >= 2, "{progress}");
    assert!(second.iter().all(|(_, bytes)| *bytes == 0), "{second:?}");
    let member = assert_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(&archive)
            .arg("out/token")
            .output()
            .unwrap(),
    );
    assert_eq!(member.stdout, b"s3cret-from-the-client");
    assert!(!client_root.exists());

    // A Dockerfile error names its line, and the build fails.
    let bad = dir.path().join("bad");
    fs_err::create_dir_all(&bad).unwrap();
    fs_err::write(
        bad.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN true\nFROBNICATE now\n"),
    )
    .unwrap();
    let failed = daemon.kiln(
        &client_root,
        &["build", "--progress=plain", bad.to_str().unwrap()],
        &[],
    );
    let shown = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{shown}");
    assert!(shown.contains("Dockerfile:3"), "{shown}");
    assert!(shown.contains(">>> FROBNICATE now"), "{shown}");
    assert!(shown.contains("unknown instruction: FROBNICATE"), "{shown}");
    // The daemon goes on serving.
    assert_ok(daemon.buildctl(&["debug", "workers"]));
}

#[test]
fn kiln_host_refuses_what_it_cannot_do_through_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .arg("--root")
            .arg(dir.path().join("root"))
            .args(args)
            .env_remove("KILN_HOST")
            .env_remove("KILN_CERT_PATH");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let socket = dir.path().join("none.sock");
    let host = format!("unix://{}", socket.display());
    // Commands that act on this machine's store or containers say so.
    for command in [&["images"][..], &["run", "busybox"], &["exec", "c", "true"]] {
        let mut args = vec!["--host", host.as_str()];
        args.extend_from_slice(command);
        let shown = run(&args, &[]);
        assert_eq!(
            shown,
            format!(
                "error: kiln {} works on this machine's store, not through a daemon; \
                 unset KILN_HOST or drop --host {host} to run it here\n",
                command[0]
            )
        );
    }
    let shown = run(&["ps"], &[("KILN_HOST", &host)]);
    assert!(
        shown.starts_with("error: kiln ps works on this machine's store"),
        "{shown}"
    );
    let shown = run(&["debug", "workers"], &[]);
    assert_eq!(
        shown,
        "error: kiln debug workers lists a daemon's workers: give its address with --host \
         (or $KILN_HOST); an in-process build has no workers to list\n"
    );
    // No daemon there; tcp:// not yet.
    let context = dir.path().to_str().unwrap();
    let shown = run(&["-H", &host, "build", context], &[]);
    assert!(
        shown.starts_with(&format!(
            "error: cannot connect to the kiln daemon at {host}\n"
        )),
        "{shown}"
    );
    let shown = run(&["--host", "tcp://127.0.0.1:1234", "build", context], &[]);
    assert_eq!(
        shown,
        "error: --host tcp://127.0.0.1:1234: a TCP daemon is served with mutual TLS; set \
         KILN_CERT_PATH to a directory with ca.pem, cert.pem and key.pem\n"
    );
    assert!(!Path::new(&dir.path().join("root")).exists());
}

#[test]
fn serial_kiln_host_du_prune_and_debug_workers_are_the_daemons() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let client_root = dir.path().join("client-root");
    let context = setup.context(&format!("FROM {IMAGE}\nRUN echo cached > /file\n"));
    assert_ok(daemon.kiln(
        &client_root,
        &["build", "-t", "kiln-host/du:1", context.to_str().unwrap()],
        &[],
    ));

    // `du` lists the daemon's records, as buildctl's: not in use is reclaimable.
    let du = |daemon: &Daemon| {
        let out = assert_ok(daemon.kiln(&client_root, &["du", "--format", "json"], &[]));
        let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut rows: Vec<(String, bool, u64)> =
            crate::prune_du::json_entries(&document, "entries")
                .into_iter()
                .map(|(id, _, reclaimable, size)| (id, !reclaimable, size))
                .collect();
        rows.sort();
        rows
    };
    let listed = du(daemon);
    assert_eq!(listed, crate::daemon::buildctl_du(daemon));
    assert!(listed.iter().any(|(_, in_use, _)| !in_use), "{listed:?}");
    let table =
        String::from_utf8(assert_ok(daemon.kiln(&client_root, &["du"], &[])).stdout).unwrap();
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("\nTotal:"), "{table}");

    // `prune -a -f` removes what is not in use, and says what.
    let pruned = assert_ok(daemon.kiln(
        &client_root,
        &["prune", "-a", "-f", "--format", "json"],
        &[],
    ));
    let document: serde_json::Value = serde_json::from_slice(&pruned.stdout).unwrap();
    let removed: BTreeSet<String> = crate::prune_du::json_entries(&document, "removed")
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    let reclaimable: BTreeSet<String> = listed
        .iter()
        .filter(|(_, in_use, _)| !in_use)
        .map(|(id, ..)| id.clone())
        .collect();
    assert_eq!(removed, reclaimable);
    let left = crate::daemon::buildctl_du(daemon);
    assert!(left.iter().all(|(_, in_use, _)| *in_use), "{left:?}");
    assert_eq!(du(daemon), left);

    // `debug workers`, as buildctl prints them.
    let workers =
        String::from_utf8(assert_ok(daemon.kiln(&client_root, &["debug", "workers"], &[])).stdout)
            .unwrap();
    let mut lines = workers.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["ID", "PLATFORMS"]
    );
    let worker: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert!(worker[0].starts_with("kiln-"), "{workers}");
    assert_eq!(worker[1], "linux/amd64");
    let verbose = String::from_utf8(
        assert_ok(daemon.kiln(&client_root, &["debug", "workers", "-v"], &[])).stdout,
    )
    .unwrap();
    assert!(
        verbose.contains(&format!("BuildKit:\tkiln {}", env!("CARGO_PKG_VERSION"))),
        "{verbose}"
    );
    assert!(!client_root.exists());
}

#[test]
fn serial_kiln_host_forwards_its_ssh_agent_and_pushes_what_it_names() {
    use crate::build_dockerfile_sources::{host_ssh_add, start_agent, which};
    if !crate::common::ready() {
        return;
    }
    if which("ssh-agent").is_none() || which("ssh-keygen").is_none() {
        return kiln_testdata::skip("openssh-client is not installed (run scripts/test-env.sh)");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    assert_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-host-key", "-f"])
            .arg(&key)
            .output()
            .unwrap(),
    );
    let agent_socket = dir.path().join("agent.sock");
    let _agent = start_agent(&agent_socket);
    assert_ok(
        Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent_socket)
            .output()
            .unwrap(),
    );
    let context = dir.path().join("context");
    let Some(ssh_add) = host_ssh_add(&context.join("host")) else {
        return kiln_testdata::skip("cannot copy the host's ssh-add and its libraries");
    };
    fs_err::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             RUN --mount=type=bind,source=host,target=/host --mount=type=ssh \
                 sh -c '{ssh_add} > /keys'\n"
        ),
    )
    .unwrap();
    let Some(daemon) = Daemon::start(dir.path(), &dir.path().join("root"), None) else {
        return;
    };
    let client_root = dir.path().join("client-root");
    let context_arg = context.to_str().unwrap();
    // The step lists the key of this side's agent, through the session.
    let out = dir.path().join("out");
    let ssh = format!("default={}", agent_socket.display());
    let local = format!("type=local,dest={}", out.display());
    assert_ok(daemon.kiln(
        &client_root,
        &["build", "--ssh", &ssh, "-o", &local, context_arg],
        &[],
    ));
    let keys = fs_err::read_to_string(out.join("keys")).unwrap();
    assert!(keys.contains("kiln-host-key"), "{keys}");

    // Pushed by the daemon: -q, --iidfile and --metadata-file name what the registry has
    // for the tag (with buildx's default provenance, the index of the image and its
    // attestation manifest).
    let tag = format!("host-{}", std::process::id());
    let image = format!("type=image,name=127.0.0.1:5000/kiln-test/daemon:{tag},push=true");
    let iidfile = dir.path().join("iid");
    let metadata = dir.path().join("metadata.json");
    let pushed = assert_ok(daemon.kiln(
        &client_root,
        &[
            "build",
            "-q",
            "--ssh",
            &ssh,
            "-o",
            &image,
            "--iidfile",
            iidfile.to_str().unwrap(),
            "--metadata-file",
            metadata.to_str().unwrap(),
            context_arg,
        ],
        &[],
    ));
    let digest = crate::daemon::registry_digest("kiln-test/daemon", &tag);
    assert_eq!(
        String::from_utf8_lossy(&pushed.stdout),
        format!("{digest}\n")
    );
    assert_eq!(fs_err::read_to_string(&iidfile).unwrap(), digest);
    let document: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&metadata).unwrap()).unwrap();
    assert_eq!(document["containerimage.digest"], digest.as_str());
    assert!(!client_root.exists());
}

#[test]
fn serial_kiln_host_builds_over_tcp_with_its_certificate() {
    if !kiln_testdata::is_root() {
        return kiln_testdata::skip("needs root to run the daemon's builds");
    }
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    for path in [&ours, &theirs] {
        fs_err::create_dir_all(path).unwrap();
    }
    let (certs, other) = (
        crate::daemon::certificates(&ours),
        crate::daemon::certificates(&theirs),
    );
    let file = |name: &str| certs.join("daemon").join(name).display().to_string();
    let port = crate::common::free_port();
    let Some(daemon) = Daemon::start_with(
        dir.path(),
        &dir.path().join("root"),
        None,
        &[
            "--addr",
            &format!("tcp://127.0.0.1:{port}"),
            "--tlscert",
            &file("cert.pem"),
            "--tlskey",
            &file("key.pem"),
            "--tlscacert",
            &file("ca.pem"),
        ],
    ) else {
        return;
    };
    let context = context_with(dir.path(), "FROM scratch\nCOPY greeting /out/\n");
    fs_err::write(context.join("greeting"), "over mutual TLS\n").unwrap();
    let dest = dir.path().join("dest");
    let over_tcp = |cert_path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(dir.path().join("client-root"))
            .args(["--host", &format!("tcp://127.0.0.1:{port}"), "build"])
            .arg("-o")
            .arg(format!("type=local,dest={}", dest.display()))
            .arg(&context)
            .env("KILN_CERT_PATH", cert_path)
            .env_remove("KILN_HOST")
            .output()
            .unwrap()
    };
    assert_ok(over_tcp(&certs.join("client")));
    assert_eq!(
        fs_err::read_to_string(dest.join("out/greeting")).unwrap(),
        "over mutual TLS\n"
    );
    // A certificate another CA signed is refused in the handshake.
    let refused = over_tcp(&other.join("client"));
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("error: cannot connect to the kiln daemon at tcp://127.0.0.1:"),
        "{}",
        text(&refused)
    );
    // The daemon goes on serving.
    assert_ok(daemon.buildctl(&["debug", "workers"]));
}

/// `kiln --host … build --cache-to type=local,dest=DIR` writes the cache into this side's
/// directory (served to the daemon as a content store, as buildctl serves it), and another
/// daemon with another store builds from `--cache-from type=local,src=DIR` running no step.
#[test]
fn serial_kiln_host_exports_and_imports_a_local_cache_in_its_own_directory() {
    if !crate::common::ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    let marker = format!("host-cache-{}-{}", std::process::id(), fastrand::u64(..));
    fs_err::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN echo {marker} > /first\nRUN cat /first /first > /second\n"),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let client_root = dir.path().join("client-root");
    let daemon_dirs = [dir.path().join("one"), dir.path().join("two")];
    for daemon_dir in &daemon_dirs {
        fs_err::create_dir_all(daemon_dir).unwrap();
    }
    let Some(first) = Daemon::start(&daemon_dirs[0], &daemon_dirs[0].join("root"), None) else {
        return;
    };
    let to = format!("type=local,dest={},mode=max", cache.display());
    let context_arg = context.to_str().unwrap();
    assert_ok(first.kiln(
        &client_root,
        &["build", "--progress=plain", "--cache-to", &to, context_arg],
        &[],
    ));
    drop(first);
    // The same layout `kiln build --cache-to type=local` writes in-process: index.json tags
    // the cache manifest `latest`, and its blobs are there.
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(cache.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "latest",
        "{index}"
    );
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    assert!(
        cache
            .join("blobs/sha256")
            .join(manifest.trim_start_matches("sha256:"))
            .is_file()
    );
    assert!(cache.join("oci-layout").is_file());

    let Some(second) = Daemon::start(&daemon_dirs[1], &daemon_dirs[1].join("root"), None) else {
        return;
    };
    let from = format!("type=local,src={}", cache.display());
    let out = dir.path().join("out");
    let built = assert_ok(second.kiln(
        &client_root,
        &[
            "build",
            "--progress=plain",
            "--cache-from",
            &from,
            "-o",
            &format!("type=local,dest={}", out.display()),
            context_arg,
        ],
        &[],
    ));
    let progress = String::from_utf8_lossy(&built.stderr);
    let runs: Vec<&str> = progress
        .lines()
        .filter(|l| l.contains("RUN "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!runs.is_empty(), "{progress}");
    for run in runs {
        assert!(progress.contains(&format!("{run} CACHED")), "{progress}");
    }
    assert_eq!(
        fs_err::read_to_string(out.join("second")).unwrap(),
        format!("{marker}\n{marker}\n")
    );
    assert!(!client_root.exists());
}

#[test]
fn serial_kiln_host_traces_and_draws_the_build_from_the_daemon_s_progress() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let context = setup.context(&format!(
        "FROM {IMAGE}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n"
    ));
    fs_err::write(context.join("a.txt"), "a\n").unwrap();
    let trace = dir.path().join("trace.json");
    let dot = dir.path().join("graph.dot");
    let built = assert_ok(daemon.kiln(
        &dir.path().join("client-root"),
        &[
            "build",
            "--progress=plain",
            "--trace",
            trace.to_str().unwrap(),
            "--dot",
            dot.to_str().unwrap(),
            context.to_str().unwrap(),
        ],
        &[],
    ));
    // The summary under the plain progress, as an in-process build's.
    let progress = String::from_utf8_lossy(&built.stderr);
    let summary: Vec<&str> = progress
        .lines()
        .filter(|l| l.starts_with("#summary "))
        .collect();
    assert!(
        summary
            .first()
            .is_some_and(|l| l.ends_with("steps cached (0%)")),
        "{progress}"
    );
    // The trace: each step's phases, as the daemon reported them.
    let trace: serde_json::Value = serde_json::from_slice(&fs_err::read(&trace).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let phases = |part: &str| -> Vec<(String, Option<u64>)> {
        let tid = &events
            .iter()
            .find(|e| {
                e["name"] == "thread_name" && e["args"]["name"].as_str().unwrap().contains(part)
            })
            .unwrap_or_else(|| panic!("no step {part:?}: {trace:#}"))["tid"];
        events
            .iter()
            .filter(|e| e["cat"] == "phase" && &e["tid"] == tid)
            .filter(|e| e["name"] != "queued" && e["name"] != "running")
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_owned();
                (name, e["args"]["bytes"].as_u64())
            })
            .collect()
    };
    let names = |part: &str| -> Vec<String> { phases(part).into_iter().map(|p| p.0).collect() };
    assert_eq!(names("RUN cat"), ["mounts", "run", "commit"]);
    assert_eq!(names("COPY a.txt"), ["files"]);
    // The context's one file the COPY reads, checksummed and sent, with its bytes.
    assert_eq!(
        phases("load build context"),
        [
            ("checksum".to_owned(), Some(2)),
            ("transfer".to_owned(), Some(2))
        ]
    );
    // The graph: every step ran, each drawn from its inputs.
    let dot = fs_err::read_to_string(&dot).unwrap();
    let node = |part: &str| -> String {
        dot.lines()
            .find(|l| l.contains("[label=") && l.contains(part))
            .unwrap_or_else(|| panic!("no node {part:?}: {dot}"))
            .trim()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    let (copy, run) = (node("COPY a.txt"), node("RUN cat"));
    assert!(dot.contains(&format!("  {copy} -> {run};\n")), "{dot}");
    assert!(
        dot.contains(&format!("  {} -> {copy};\n", node(IMAGE))),
        "{dot}"
    );
    assert_eq!(
        dot.matches("fillcolor=\"palegreen\"").count(),
        dot.matches("[label=").count(),
        "{dot}"
    );
}
