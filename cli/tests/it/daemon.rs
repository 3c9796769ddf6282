//! `kiln daemon` driven by BuildKit's own client, `buildctl` (unmodified, from
//! `../shared/tools/`, or `KILN_BUILDCTL`): the socket it makes, `debug workers`, `du` and
//! `prune` against the store, and its cleanup on SIGTERM (issue 14).
//!
//! Needs buildctl (and, for the store's contents, the test registry and root); skips saying
//! why, or fails under `KILN_TEST_REQUIRE_ALL=1`.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kiln_testdata::{is_root, registry_up, skip};

use crate::common::daemon::{Daemon, DaemonSetup, buildctl_path};
use crate::common::{assert_ok, context_with, free_port, text};

pub(crate) const IMAGE: &str = "127.0.0.1:5000/library/busybox:latest";

/// `buildctl du --format '{{json .}}'` as (ID, in use, size), sorted.
pub(crate) fn buildctl_du(daemon: &Daemon) -> Vec<(String, bool, u64)> {
    let out = assert_ok(daemon.buildctl(&["du", "--format", "{{json .}}"]));
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rows: Vec<(String, bool, u64)> = records
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["inUse"].as_bool().unwrap(),
                r["size"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `kiln du --format json` as (ID, not reclaimable, size), sorted, to compare with buildctl's.
fn kiln_du(root: &Path) -> Vec<(String, bool, u64)> {
    let out = assert_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(root)
            .args(["du", "--format", "json"])
            .output()
            .unwrap(),
    );
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rows: Vec<(String, bool, u64)> = crate::prune_du::json_entries(&document, "entries")
        .into_iter()
        .map(|(id, _, reclaimable, size)| (id, !reclaimable, size))
        .collect();
    rows.sort();
    rows
}

pub(crate) fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("KILN_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn serial_daemon_socket_is_0660_lists_its_worker_and_goes_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let Some(daemon) = Daemon::start(dir.path(), &dir.path().join("root"), None) else {
        return;
    };
    let meta = fs_err::metadata(&daemon.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let workers = assert_ok(daemon.buildctl(&["debug", "workers"]));
    let workers = String::from_utf8(workers.stdout).unwrap();
    let mut lines = workers.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["ID", "PLATFORMS"]
    );
    let worker: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert!(worker[0].starts_with("kiln-"), "{workers}");
    assert_eq!(worker[1], "linux/amd64");
    let verbose =
        String::from_utf8(assert_ok(daemon.buildctl(&["debug", "workers", "-v"])).stdout).unwrap();
    assert!(
        verbose.contains(&format!("BuildKit:\tkiln {}", env!("CARGO_PKG_VERSION"))),
        "{verbose}"
    );
    // BuildKit's default policies, as kiln applies them without a `[gc]` table.
    assert!(
        verbose.contains("type==exec.cachemount") && verbose.contains("GC Policy rule#3"),
        "{verbose}"
    );
    let info = String::from_utf8(assert_ok(daemon.buildctl(&["debug", "info"])).stdout).unwrap();
    assert_eq!(
        info.trim_end(),
        format!("BuildKit: kiln {}", env!("CARGO_PKG_VERSION"))
    );

    // A second daemon on the same socket refuses to start.
    let second = kiln(
        &dir.path().join("root"),
        &[
            "daemon",
            "--addr",
            &format!("unix://{}", daemon.socket.display()),
        ],
    );
    assert!(!second.status.success());
    assert!(
        text(&second).contains("another daemon is listening on"),
        "{}",
        text(&second)
    );

    let socket = daemon.socket.clone();
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert!(!socket.exists(), "the socket is left behind");
}

#[test]
fn daemon_refuses_an_address_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = kiln(&root, &["daemon", "--addr", "http://127.0.0.1:1234"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "unsupported address \"http://127.0.0.1:1234\": expected unix:///PATH, tcp://HOST:PORT or fd://"
        ),
        "{}",
        text(&out)
    );
    // TCP is served with mutual TLS only.
    let out = kiln(&root, &["daemon", "--addr", "tcp://127.0.0.1:1234"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "tcp://127.0.0.1:1234 needs mutual TLS: give --tlscert, --tlskey and --tlscacert"
        ),
        "{}",
        text(&out)
    );
    let out = kiln(&root, &["daemon", "--tlscert", "cert.pem"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--tlskey <FILE>"), "{}", text(&out));
}

/// Makes certificates for a daemon on 127.0.0.1 and its clients with the Kubernetes example's
/// `create-certs.sh` (a copy in `dir`): `dir/.certs/{daemon,client}/{ca,cert,key}.pem`, each
/// call with a CA of its own.
pub(crate) fn certificates(dir: &Path) -> PathBuf {
    certificates_for(dir, "127.0.0.1")
}

/// [`certificates`] for a server at the address or DNS name `server`.
pub(crate) fn certificates_for(dir: &Path, server: &str) -> PathBuf {
    let script = dir.join("create-certs.sh");
    fs_err::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes/create-certs.sh"),
        &script,
    )
    .unwrap();
    assert_ok(
        Command::new("bash")
            .arg(&script)
            .arg(server)
            .output()
            .unwrap(),
    );
    dir.join(".certs")
}

#[test]
fn serial_daemon_serves_tcp_to_clients_with_a_certificate_of_its_ca_only() {
    if !is_root() {
        skip("needs root to run the build's step");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    for path in [&ours, &theirs] {
        fs_err::create_dir_all(path).unwrap();
    }
    let (certs, other) = (certificates(&ours), certificates(&theirs));
    let file = |who: &str, name: &str| certs.join(who).join(name).display().to_string();
    let addr = format!("tcp://127.0.0.1:{}", free_port());
    let Some(daemon) = Daemon::start_with(
        dir.path(),
        &dir.path().join("root"),
        None,
        &[
            "--addr",
            &addr,
            "--tlscert",
            &file("daemon", "cert.pem"),
            "--tlskey",
            &file("daemon", "key.pem"),
            "--tlscacert",
            &file("daemon", "ca.pem"),
        ],
    ) else {
        return;
    };
    let over_tcp = |client: Option<&Path>, args: &[&str]| {
        let mut command = Command::new(&daemon.buildctl);
        command
            .args(["--addr", &addr, "--tlscacert", &file("client", "ca.pem")])
            .args(["--timeout", "20"]);
        if let Some(client) = client {
            command
                .arg("--tlscert")
                .arg(client.join("client/cert.pem"))
                .arg("--tlskey")
                .arg(client.join("client/key.pem"));
        }
        command.args(args).output().unwrap()
    };

    // A client with a certificate of the daemon's CA lists the worker and builds, with its
    // context sent and its output received over the TLS connection.
    let workers = text(&assert_ok(over_tcp(Some(&certs), &["debug", "workers"])));
    assert!(workers.contains("linux/amd64"), "{workers}");
    let context = context_with(dir.path(), "FROM scratch\nCOPY greeting /out/\n");
    fs_err::write(context.join("greeting"), "over mutual TLS\n").unwrap();
    let dest = dir.path().join("dest");
    let (context_arg, dest_arg) = (
        format!("context={}", context.display()),
        format!("type=local,dest={}", dest.display()),
    );
    assert_ok(over_tcp(
        Some(&certs),
        &[
            "build",
            "--progress=plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &context_arg,
            "--local",
            &context_arg.replacen("context=", "dockerfile=", 1),
            "--output",
            &dest_arg,
        ],
    ));
    assert_eq!(
        fs_err::read_to_string(dest.join("out/greeting")).unwrap(),
        "over mutual TLS\n"
    );

    // Without a client certificate, or with one another CA signed, the handshake fails.
    for client in [None, Some(other.as_path())] {
        let out = over_tcp(client, &["debug", "workers"]);
        assert!(!out.status.success(), "{client:?}: {}", text(&out));
        assert!(!text(&out).contains("linux/amd64"), "{}", text(&out));
    }
    // The unix socket serves as before, beside the TCP address.
    assert!(text(&assert_ok(daemon.buildctl(&["debug", "workers"]))).contains("linux/amd64"));
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "{}", text(&stopped));
}

#[test]
fn serial_daemon_du_and_prune_through_buildctl_match_the_store() {
    if !registry_up() {
        skip("the test registry is not serving 127.0.0.1:5000 (run scripts/test-env.sh)");
        return;
    }
    if !is_root() {
        skip("leaving build cache behind needs root to run containers");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    assert_ok(kiln(&root, &["pull", "-q", IMAGE]));
    // A build leaves cache records (its RUN step's snapshot among them).
    let vector = kiln_testdata::llb_vectors_dir().join("045-workdir-run-pwd/def.pb");
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    assert_ok(kiln(
        &root,
        &[
            "build",
            "--llb",
            vector.to_str().unwrap(),
            "--local",
            &format!("context={}", context.display()),
            "--output",
            &format!("type=local,dest={}", dir.path().join("out").display()),
        ],
    ));
    let store = kiln_du(&root);
    assert!(store.iter().any(|r| r.0 == IMAGE && r.1), "{store:?}");
    let cache: Vec<String> = store.iter().filter(|r| !r.1).map(|r| r.0.clone()).collect();
    assert!(!cache.is_empty(), "{store:?}");

    let Some(daemon) = Daemon::start(dir.path(), &root, None) else {
        return;
    };
    assert_eq!(buildctl_du(&daemon), store);
    let table = String::from_utf8(assert_ok(daemon.buildctl(&["du"])).stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(IMAGE) && l.contains("false")),
        "{table}"
    );

    // An unknown filter is the client's error, not the daemon's end.
    let bad = daemon.buildctl(&["prune", "--filter", "label=x"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("unsupported filter \\\"label\\\"")
            || text(&bad).contains("unsupported filter \"label\""),
        "{}",
        text(&bad)
    );
    // Recent records survive an age filter.
    let kept = assert_ok(daemon.buildctl(&["prune", "--filter", "until=1h"]));
    assert_eq!(String::from_utf8(kept.stdout).unwrap(), "Total:\t0B\n");
    assert_eq!(buildctl_du(&daemon), store);

    // Every cache record goes, listed by ID; the image stays.
    let pruned = assert_ok(daemon.buildctl(&["prune", "--all", "--format", "{{.ID}}"]));
    let mut removed: Vec<String> = String::from_utf8(pruned.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    removed.sort();
    let mut expected = cache.clone();
    expected.sort();
    assert_eq!(removed, expected);
    let left = buildctl_du(&daemon);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, IMAGE);
    drop(daemon);
    assert_eq!(kiln_du(&root), left);
}

/// Runs `buildctl build --progress=plain ARGS` with the marshalled Definition `def` on its
/// standard input.
fn buildctl_build(daemon: &Daemon, def: &[u8], args: &[&str]) -> Output {
    let mut child = Command::new(&daemon.buildctl)
        .arg("--addr")
        .arg(format!("unix://{}", daemon.socket.display()))
        .args(["build", "--progress=plain"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, def).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The digest the test registry serves for `repository:tag`: its manifest, or its index.
pub(crate) fn registry_digest(repository: &str, tag: &str) -> String {
    let out = assert_ok(
        Command::new("curl")
            .args(["-sfI", "-H"])
            .arg(
                "Accept: application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.oci.image.index.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .arg(format!(
                "http://127.0.0.1:5000/v2/{repository}/manifests/{tag}"
            ))
            .output()
            .unwrap(),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_owned())
        })
        .expect("the registry names the manifest's digest")
}

#[test]
fn serial_daemon_builds_a_definition_from_buildctl_and_pushes_the_image() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let def =
        fs_err::read(kiln_testdata::llb_vectors_dir().join("123-run-shell-form-uses-sh-c/def.pb"))
            .unwrap();
    let tag = format!("daemon-{}", std::process::id());
    let metadata = dir.path().join("metadata.json");
    let output = format!("type=image,name=127.0.0.1:5000/kiln-test/daemon:{tag},push=true");
    let built = assert_ok(buildctl_build(
        daemon,
        &def,
        &[
            "--output",
            &output,
            "--metadata-file",
            metadata.to_str().unwrap(),
        ],
    ));
    let progress = String::from_utf8_lossy(&built.stderr);
    assert!(
        progress.contains("[b 2/2] RUN echo -n \"$0\" > /zero"),
        "{progress}"
    );
    assert!(progress.contains("DONE"), "{progress}");
    let response: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&metadata).unwrap()).unwrap();
    let digest = response["containerimage.digest"].as_str().unwrap();
    assert_eq!(registry_digest("kiln-test/daemon", &tag), digest);

    // Again: every step is cached.
    let again = assert_ok(buildctl_build(daemon, &def, &[]));
    let progress = String::from_utf8_lossy(&again.stderr);
    assert!(progress.contains("CACHED"), "{progress}");
    assert!(!progress.contains("DONE"), "{progress}");
}

/// The marshalled Definition of one `sh -c SCRIPT` step on the test registry's busybox.
fn busybox_step(script: &str) -> Vec<u8> {
    use kiln_llb::prost::Message as _;
    kiln_llb::image(&format!(
        "127.0.0.1:5000/library/busybox@{}",
        kiln_testdata::BUSYBOX_MANIFEST_DIGEST
    ))
    .run(["/bin/sh", "-c", script])
    .root()
    .marshal()
    .encode_to_vec()
}

#[test]
fn serial_daemon_reports_a_failing_step_and_keeps_serving() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let daemon = &setup.daemon;
    let def = busybox_step("echo failing-step-output; exit 3");
    let failed = buildctl_build(daemon, &def, &[]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("failing-step-output"), "{stderr}");
    assert!(stderr.contains("ERROR:"), "{stderr}");
    assert!(stderr.contains("exit code: 3"), "{stderr}");
    assert!(
        stderr.contains("error: failed to solve: ")
            && !stderr.contains("failed to solve: failed to solve"),
        "{stderr}"
    );
    assert_ok(daemon.buildctl(&["debug", "workers"]));
}

#[test]
fn serial_daemon_runs_concurrent_builds_and_one_failing_leaves_the_other() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let tag = format!("concurrent-{}", std::process::id());
    let output = format!("type=image,name=127.0.0.1:5000/kiln-test/daemon:{tag},push=true");
    let metadata = dir.path().join("metadata.json");
    let (good, bad) = std::thread::scope(|scope| {
        let good = scope.spawn(|| {
            buildctl_build(
                daemon,
                &busybox_step("sleep 1; echo good > /good"),
                &[
                    "--output",
                    &output,
                    "--metadata-file",
                    metadata.to_str().unwrap(),
                ],
            )
        });
        let bad = scope.spawn(|| {
            buildctl_build(
                daemon,
                &busybox_step("echo concurrent-failure; exit 7"),
                &[],
            )
        });
        (good.join().unwrap(), bad.join().unwrap())
    });
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("exit code: 7"),
        "{}",
        text(&bad)
    );
    assert_ok(good);
    let response: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&metadata).unwrap()).unwrap();
    assert_eq!(
        registry_digest("kiln-test/daemon", &tag),
        response["containerimage.digest"].as_str().unwrap()
    );
}

/// Two clients build equal contexts at the same time: the steps both need run once (the
/// random bytes the `RUN` writes are the same in both results), the other build waits and
/// takes the result.
#[test]
fn serial_daemon_runs_a_step_two_concurrent_builds_need_once() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let nonce = format!("{}-{}", std::process::id(), fastrand::u64(..));
    let contexts = ["one", "two"].map(|name| {
        let context = dir.path().join(name);
        fs_err::create_dir_all(&context).unwrap();
        fs_err::write(
            context.join("Dockerfile"),
            format!(
                "FROM {IMAGE}\n\
                 COPY data.txt /data.txt\n\
                 RUN sleep 2 && head -c 16 /dev/urandom | od -An -tx1 > /random\n"
            ),
        )
        .unwrap();
        fs_err::write(context.join("data.txt"), &nonce).unwrap();
        context
    });
    let outputs = ["out-one", "out-two"].map(|name| dir.path().join(name));
    let built: Vec<Output> = std::thread::scope(|scope| {
        let builds: Vec<_> = contexts
            .iter()
            .zip(&outputs)
            .map(|(context, out)| {
                let daemon = &daemon;
                scope.spawn(move || {
                    let local = format!("type=local,dest={}", out.display());
                    buildctl_dockerfile(daemon, context, &["--output", &local])
                })
            })
            .collect();
        builds.into_iter().map(|b| b.join().unwrap()).collect()
    });
    for output in built {
        assert_ok(output);
    }
    let [one, two] = [0, 1].map(|i| fs_err::read_to_string(outputs[i].join("random")).unwrap());
    assert_eq!(one.split_whitespace().count(), 16, "{one}");
    assert_eq!(one, two, "the RUN step ran in both builds");
    for out in &outputs {
        assert_eq!(fs_err::read_to_string(out.join("data.txt")).unwrap(), nonce);
    }
}

/// Runs `buildctl build --progress=plain --frontend dockerfile.v0` on the context `context`
/// (also the Dockerfile's directory) with `args`.
pub(crate) fn buildctl_dockerfile(daemon: &Daemon, context: &Path, args: &[&str]) -> Output {
    buildctl_dockerfile_env(daemon, context, args, &[])
}

/// [`buildctl_dockerfile`] with `env` added to buildctl's environment.
fn buildctl_dockerfile_env(
    daemon: &Daemon,
    context: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Output {
    let local = |name: &str| format!("{name}={}", context.display());
    Command::new(&daemon.buildctl)
        .envs(env.iter().copied())
        .arg("--addr")
        .arg(format!("unix://{}", daemon.socket.display()))
        .args(["build", "--progress=plain", "--frontend", "dockerfile.v0"])
        .args([
            "--local",
            &local("context"),
            "--local",
            &local("dockerfile"),
        ])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn serial_daemon_records_its_builds_for_history_and_explain() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let root = setup.root();
    let context = setup.context(&format!("FROM {IMAGE}\nARG V\nRUN echo \"$V\" > /v\n"));
    let out = dir.path().join("out");
    let local = format!("type=local,dest={}", out.display());
    for v in ["1", "2"] {
        let arg = format!("build-arg:V={v}");
        assert_ok(buildctl_dockerfile(
            daemon,
            &context,
            &["--opt", &arg, "--output", &local],
        ));
    }
    // The daemon's store holds both builds; kiln reads them from another process.
    let kiln = |args: &[&str]| -> serde_json::Value {
        let output = assert_ok(
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("--root")
                .arg(&root)
                .args(args)
                .output()
                .unwrap(),
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)))
    };
    let history = kiln(&["history", "--format", "json"]);
    let builds = history.as_array().unwrap();
    assert_eq!(builds.len(), 2, "{history:#}");
    for build in builds {
        assert_eq!(build["name"], "Dockerfile");
        assert_eq!(build["status"], "completed");
        assert_eq!(build["build_args"], serde_json::json!(["V"]));
        let id = build["id"].as_str().unwrap();
        assert!(
            id.len() == 25
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{id}"
        );
    }
    // The latest build ran its RUN again because the build arg changed.
    let explained = kiln(&["explain", "--format", "json"]);
    let steps = explained["steps"].as_array().unwrap();
    let run = steps
        .iter()
        .find(|s| s["name"].as_str().unwrap().contains("RUN echo"))
        .unwrap_or_else(|| panic!("{explained:#}"));
    assert_eq!(run["explanation"], "build arg V changed", "{run:#}");
}

#[test]
fn serial_daemon_builds_a_dockerfile_from_the_client_session() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let context = dir.path().join("context");
    fs_err::create_dir_all(context.join("app/sub")).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             ARG GREETING\n\
             COPY app/ /app/\n\
             RUN echo \"$GREETING from the daemon\" > /app/greeting && ls /app > /app/listing\n\
             LABEL built.by=kiln\n"
        ),
    )
    .unwrap();
    fs_err::write(context.join(".dockerignore"), "app/secret.txt\n").unwrap();
    fs_err::write(context.join("app/main.txt"), "main\n").unwrap();
    fs_err::write(context.join("app/secret.txt"), "secret\n").unwrap();
    fs_err::write(context.join("app/sub/deep.txt"), "deep\n").unwrap();

    // A local export comes back through the session.
    let out = dir.path().join("out");
    let local = format!("type=local,dest={}", out.display());
    let built = assert_ok(buildctl_dockerfile(
        daemon,
        &context,
        &["--opt", "build-arg:GREETING=hello", "--output", &local],
    ));
    let progress = String::from_utf8_lossy(&built.stderr);
    assert!(progress.contains("RUN echo"), "{progress}");
    let read = |path: &str| fs_err::read_to_string(out.join(path)).unwrap();
    assert_eq!(read("app/greeting"), "hello from the daemon\n");
    // .dockerignore kept the secret out of the context.
    assert_eq!(read("app/listing"), "greeting\nlisting\nmain.txt\nsub\n");
    assert_eq!(read("app/sub/deep.txt"), "deep\n");
    assert!(!out.join("app/secret.txt").exists());

    // The same build pushed: every step cached, the image config from the Dockerfile.
    let tag = format!("dockerfile-{}", std::process::id());
    let output = format!("type=image,name=127.0.0.1:5000/kiln-test/daemon:{tag},push=true");
    let metadata = dir.path().join("metadata.json");
    let pushed = assert_ok(buildctl_dockerfile(
        daemon,
        &context,
        &[
            "--opt",
            "build-arg:GREETING=hello",
            "--output",
            &output,
            "--metadata-file",
            metadata.to_str().unwrap(),
        ],
    ));
    let progress = String::from_utf8_lossy(&pushed.stderr);
    assert!(progress.contains("CACHED"), "{progress}");
    let response: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&metadata).unwrap()).unwrap();
    let digest = response["containerimage.digest"].as_str().unwrap();
    assert_eq!(registry_digest("kiln-test/daemon", &tag), digest);
    let inspected = assert_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--config"])
            .arg(format!("docker://127.0.0.1:5000/kiln-test/daemon:{tag}"))
            .output()
            .unwrap(),
    );
    let config: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(config["config"]["Labels"]["built.by"], "kiln");

    // A changed file reaches the next build; a tar export comes back whole.
    fs_err::write(context.join("app/main.txt"), "changed\n").unwrap();
    let archive = dir.path().join("out.tar");
    let tar = format!("type=tar,dest={}", archive.display());
    assert_ok(buildctl_dockerfile(
        daemon,
        &context,
        &["--opt", "build-arg:GREETING=again", "--output", &tar],
    ));
    let member = |path: &str| {
        let out = assert_ok(
            Command::new("tar")
                .arg("-xOf")
                .arg(&archive)
                .arg(path)
                .output()
                .unwrap(),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(member("app/main.txt"), "changed\n");
    assert_eq!(member("app/greeting"), "again from the daemon\n");

    // A Dockerfile the client does not have is the build's error.
    let missing = buildctl_dockerfile(daemon, &context, &["--opt", "filename=Missing.Dockerfile"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains(
            "failed to read dockerfile: open Missing.Dockerfile: no such file or directory"
        ),
        "{}",
        text(&missing)
    );
    assert_ok(daemon.buildctl(&["debug", "workers"]));
}

#[test]
fn serial_two_daemons_share_a_registry_cache_and_the_second_runs_no_step() {
    if !crate::common::ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    let marker = format!("fleet-{}", std::process::id());
    fs_err::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             RUN echo {marker} > /first\n\
             RUN cat /first > /second && echo built >> /second\n"
        ),
    )
    .unwrap();
    let cache = format!("127.0.0.1:5000/kiln-test/fleet-cache:{marker}");
    let (first_dir, second_dir) = (dir.path().join("one"), dir.path().join("two"));
    fs_err::create_dir_all(&first_dir).unwrap();
    fs_err::create_dir_all(&second_dir).unwrap();
    let Some(first) = Daemon::start(&first_dir, &first_dir.join("root"), None) else {
        return;
    };
    let exported = assert_ok(buildctl_dockerfile(
        &first,
        &context,
        &[
            "--export-cache",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    ));
    let progress = String::from_utf8_lossy(&exported.stderr);
    assert!(
        progress.contains(&format!("RUN echo {marker}")),
        "{progress}"
    );
    drop(first);

    // Another daemon, another store: every step comes from the cache.
    builds_from_the_cache_alone(
        &second_dir,
        &context,
        &format!("type=registry,ref={cache}"),
        &marker,
    );
}

/// Asserts that buildctl's plain progress in `built` shows `count` `RUN` steps, all cached.
fn assert_runs_cached(built: &Output, count: usize) {
    let progress = String::from_utf8_lossy(&built.stderr);
    // buildctl's plain progress: `#N NAME` when a step starts, `#N CACHED` or `#N DONE …`.
    let runs: Vec<&str> = progress
        .lines()
        .filter(|l| l.contains("] RUN "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(runs.len(), count, "{progress}");
    for run in runs {
        assert!(progress.contains(&format!("{run} CACHED")), "{progress}");
        assert!(!progress.contains(&format!("{run} DONE")), "{progress}");
    }
}

/// `--export-cache type=local` and `--import-cache type=local` name a directory of the
/// client's: the daemon writes the cache's blobs into it through the client's content store
/// (buildctl records the manifest in its index.json), and another daemon with another store
/// reads it from there and runs no step.
#[test]
fn serial_daemons_export_and_import_a_local_cache_in_the_clients_directory() {
    if !crate::common::ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    let marker = format!("local-cache-{}-{}", std::process::id(), fastrand::u64(..));
    fs_err::write(
        context.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             RUN echo {marker} > /first\n\
             RUN cat /first > /second && echo built >> /second\n"
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let (first_dir, second_dir) = (dir.path().join("one"), dir.path().join("two"));
    fs_err::create_dir_all(&first_dir).unwrap();
    fs_err::create_dir_all(&second_dir).unwrap();
    let Some(first) = Daemon::start(&first_dir, &first_dir.join("root"), None) else {
        return;
    };
    let export = format!("type=local,dest={},mode=max", cache.display());
    assert_ok(buildctl_dockerfile(
        &first,
        &context,
        &["--export-cache", &export],
    ));
    // The layout: index.json names the cache manifest as `latest`; every blob it names is there.
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(cache.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"], "latest",
        "{index}"
    );
    let blob = |digest: &str| {
        cache
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs_err::read(blob(entries[0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["config"]["mediaType"], "application/vnd.buildkit.cacheconfig.v0",
        "{manifest}"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert!(
        layers.len() >= 3,
        "the base and both RUN layers: {manifest}"
    );
    for descriptor in layers.iter().chain([&manifest["config"]]) {
        let digest = descriptor["digest"].as_str().unwrap();
        let data = fs_err::read(blob(digest)).unwrap();
        assert_eq!(
            data.len() as u64,
            descriptor["size"].as_u64().unwrap(),
            "{digest}"
        );
    }
    // Exported again into the same directory: the same single entry.
    assert_ok(buildctl_dockerfile(
        &first,
        &context,
        &["--export-cache", &export],
    ));
    let again: serde_json::Value =
        serde_json::from_slice(&fs_err::read(cache.join("index.json")).unwrap()).unwrap();
    assert_eq!(again["manifests"], index["manifests"]);
    drop(first);

    // Another daemon, another store: every step comes from the client's directory.
    let import = format!("type=local,src={}", cache.display());
    builds_from_the_cache_alone(&second_dir, &context, &import, &marker);
}

/// Starts a daemon in `daemon_dir` with an empty store and builds `context` (the two-`RUN`
/// Dockerfile of these tests) with `--import-cache IMPORT`: both steps come from the cache,
/// and the result is the one they make.
fn builds_from_the_cache_alone(daemon_dir: &Path, context: &Path, import: &str, marker: &str) {
    let Some(daemon) = Daemon::start(daemon_dir, &daemon_dir.join("root"), None) else {
        return;
    };
    let out = daemon_dir.join("out");
    let imported = assert_ok(buildctl_dockerfile(
        &daemon,
        context,
        &[
            "--import-cache",
            import,
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    ));
    assert_runs_cached(&imported, 2);
    assert_eq!(
        fs_err::read_to_string(out.join("second")).unwrap(),
        format!("{marker}\nbuilt\n")
    );
}

#[test]
fn serial_daemon_forwards_the_clients_ssh_agent() {
    use crate::build_dockerfile_sources::{host_ssh_add, which};
    if !crate::common::ready() {
        return;
    }
    if which("ssh-keygen").is_none() {
        return skip("openssh-client is not installed (run scripts/test-env.sh)");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let generated = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "kiln-daemon-key",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert_ok(generated);
    let listed = assert_ok(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub"))
            .output()
            .unwrap(),
    );
    let fingerprint = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let context = dir.path().join("context");
    let Some(ssh_add) = host_ssh_add(&context.join("host")) else {
        return skip("cannot copy the host's ssh-add and its libraries");
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
    let out = dir.path().join("out");
    // buildctl serves the key through an agent of its own; the step lists it through the
    // daemon's forwarding socket.
    assert_ok(buildctl_dockerfile(
        &daemon,
        &context,
        &[
            "--ssh",
            &format!("default={}", key.display()),
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    ));
    // (buildctl's own agent keeps no comment: the key is known by its fingerprint.)
    let keys = fs_err::read_to_string(out.join("keys")).unwrap();
    assert!(keys.contains(&fingerprint), "{keys}");
}

/// Socket activation (issue 14): `kiln daemon --addr fd://` under `systemd-socket-activate`,
/// which binds the socket and passes it as fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` set to
/// the daemon's pid, answers `buildctl debug workers` on it; after SIGTERM the socket, which
/// the daemon did not create, is still there.
#[test]
fn socket_activated_daemon_answers_on_the_passed_socket() {
    let Some(buildctl) = buildctl_path() else {
        return;
    };
    let Some(activate) = crate::build_dockerfile_sources::which("systemd-socket-activate") else {
        skip("systemd-socket-activate is not installed (Debian's systemd package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kiln.sock");
    let mut child = Command::new(activate)
        .arg("-l")
        .arg(&socket)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["daemon", "--addr", "fd://"])
        .env_remove("KILN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = assert_ok(
        Command::new(buildctl)
            .arg("--addr")
            .arg(format!("unix://{}", socket.display()))
            .args(["debug", "workers"])
            .output()
            .unwrap(),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("linux/"),
        "{}",
        text(&out)
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(socket.exists(), "the passed socket was removed");
}

/// `# syntax=IMAGE` through the daemon: buildctl's `dockerfile.v0` build of a Dockerfile that
/// names BuildKit's stock frontend image runs that image (its local sources come from
/// buildctl's session), and `gateway.v0` with `source=` runs it directly.
#[test]
fn serial_daemon_runs_the_frontend_image_a_dockerfile_names() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let context = setup.context(&format!(
        "# syntax=docker/dockerfile:1\nFROM {IMAGE}\nARG V=unset\nCOPY note.txt /note.txt\n\
             RUN echo \"$V $(cat /note.txt)\" > /made\n"
    ));
    fs_err::write(context.join("note.txt"), "via the frontend image").unwrap();
    for (round, frontend) in [
        ("1", &["--opt", "build-arg:V=1"][..]),
        (
            "2",
            &[
                "--frontend",
                "gateway.v0",
                "--opt",
                "source=docker/dockerfile:1",
                "--opt",
                "build-arg:V=2",
            ][..],
        ),
    ] {
        let out = dir.path().join(format!("out-{round}"));
        let local = format!("type=local,dest={}", out.display());
        let mut args = frontend.to_vec();
        args.extend(["--output", &local]);
        let built = assert_ok(buildctl_dockerfile(daemon, &context, &args));
        let progress = String::from_utf8_lossy(&built.stderr);
        assert!(
            progress.contains("[frontend] docker/dockerfile:1"),
            "{progress}"
        );
        assert_eq!(
            fs_err::read_to_string(out.join("made")).unwrap(),
            format!("{round} via the frontend image\n")
        );
    }
}

#[test]
fn serial_a_kiln_yaml_definition_from_print_llb_builds_through_buildctl() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("greeting"), "hello yaml\n").unwrap();
    fs_err::write(
        context.join("kiln.yaml"),
        "apiVersion: kiln/v1\nstages:\n  app:\n    from: 127.0.0.1:5000/library/busybox\n    \
         steps:\n      - copy: {src: greeting, dest: /greeting}\n      \
         - run: [sh, -c, 'tr a-z A-Z < /greeting > /shout']\n",
    )
    .unwrap();
    // kiln.yaml's executable form: the Definition on standard output, for any LLB client.
    let printed = assert_ok(kiln(
        &dir.path().join("printer"),
        &["build", "--print-llb", context.to_str().unwrap()],
    ));
    let out = dir.path().join("out");
    let local = format!("context={}", context.display());
    let dest = format!("type=local,dest={}", out.display());
    assert_ok(buildctl_build(
        daemon,
        &printed.stdout,
        &["--local", &local, "--output", &dest],
    ));
    assert_eq!(
        fs_err::read_to_string(out.join("shout")).unwrap(),
        "HELLO YAML\n"
    );
}

#[test]
fn serial_daemon_builds_several_platforms_into_one_index() {
    let Some(setup) = DaemonSetup::start(crate::multiplatform::multi_ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let context = setup.context(
        "FROM --platform=$BUILDPLATFORM 127.0.0.1:5000/library/busybox:multi AS gen\n\
         RUN echo generated once > /gen\n\
         FROM 127.0.0.1:5000/library/busybox:multi\n\
         ARG TARGETPLATFORM\n\
         COPY --from=gen /gen /gen\n\
         RUN echo \"$(uname -m) $TARGETPLATFORM\" > /arch\n",
    );

    // buildctl's --opt platform=A,B: a folder per platform back through the session.
    let out = dir.path().join("out");
    let local = format!("type=local,dest={}", out.display());
    let built = assert_ok(buildctl_dockerfile(
        daemon,
        &context,
        &[
            "--opt",
            "platform=linux/amd64,linux/arm64",
            "--output",
            &local,
        ],
    ));
    let progress = String::from_utf8_lossy(&built.stderr).into_owned();
    let read = |path: &str| fs_err::read_to_string(out.join(path)).unwrap();
    assert_eq!(read("linux_amd64/arch"), "x86_64 linux/amd64\n");
    assert_eq!(read("linux_arm64/arch"), "aarch64 linux/arm64\n");
    assert_eq!(read("linux_arm64/gen"), "generated once\n");
    // Steps carry their platform; the build-platform stage ran once for both.
    assert!(
        progress.contains("[linux/arm64 stage-1 3/3] RUN echo"),
        "{progress}"
    );
    assert_eq!(
        progress.matches("] RUN echo generated once").count(),
        1,
        "{progress}"
    );

    // Pushed: one index with a manifest per platform, each config with its inline cache.
    let name = format!(
        "127.0.0.1:5000/kiln-test/daemon-multi:{}",
        std::process::id()
    );
    let output = format!("type=image,name={name},push=true");
    assert_ok(buildctl_dockerfile(
        daemon,
        &context,
        &[
            "--opt",
            "platform=linux/amd64,linux/arm64",
            "--output",
            &output,
            "--export-cache",
            "type=inline",
        ],
    ));
    for arch in ["amd64", "arm64"] {
        let config = assert_ok(
            Command::new("skopeo")
                // The raw config: skopeo's parsed one leaves out keys OCI does not define.
                .args(["inspect", "--raw", "--config", "--tls-verify=false"])
                .args(["--override-arch", arch])
                .arg(format!("docker://{name}"))
                .output()
                .unwrap(),
        );
        let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
        assert_eq!(config["architecture"], arch);
        assert!(
            config["moby.buildkit.cache.v0"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{arch}: {config:#}"
        );
    }
    let raw = assert_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{name}"))
            .output()
            .unwrap(),
    );
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{index:#}");
}

/// A Docker config in `dir` (`DIR/config.json`) holding `user:password` for `host`, as
/// `docker login` writes it (base64, by coreutils' `base64`).
fn docker_config(dir: &Path, host: &str, user_password: &str) -> PathBuf {
    fs_err::create_dir_all(dir).unwrap();
    let encoded = assert_ok(
        Command::new("sh")
            .args(["-c", "printf %s \"$1\" | base64 -w0", "sh", user_password])
            .output()
            .unwrap(),
    );
    let auth = String::from_utf8(encoded.stdout).unwrap();
    fs_err::write(
        dir.join("config.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    dir.to_owned()
}

/// A registry that wants credentials: the daemon pulls the base image and pushes the result
/// with the credentials of the client that asked (its session's `Auth`: buildctl's Docker
/// config, then kiln's own client's), and never with credentials of its own.
#[test]
fn serial_daemon_pulls_and_pushes_with_the_credentials_of_the_client_that_asked() {
    if !crate::common::ready() {
        return;
    }
    let Some(registry) =
        kiln_testdata::registry::PrivateRegistry::start_with(Some(("alice", "s3cret")))
    else {
        skip("docker-registry, skopeo or htpasswd is missing");
        return;
    };
    registry.push_busybox();
    let host = registry.host.as_str();
    let dir = tempfile::tempdir().unwrap();
    // The daemon's own Docker config has the right credentials: they must not serve a client.
    let daemon_docker = docker_config(&dir.path().join("daemon-docker"), host, "alice:s3cret");
    let Some(daemon) = Daemon::start_with_env(
        dir.path(),
        &dir.path().join("root"),
        None,
        &[],
        &[("DOCKER_CONFIG", &daemon_docker)],
    ) else {
        return;
    };
    let context = context_with(
        dir.path(),
        &format!("FROM {host}/library/busybox:latest\nRUN echo built with credentials > /built\n"),
    );
    let buildctl = |docker: &Path, name: &str| {
        let output = format!("type=image,name={host}/kiln-test/private:{name},push=true");
        buildctl_dockerfile_env(
            &daemon,
            &context,
            &["--output", &output],
            &[("DOCKER_CONFIG", docker)],
        )
    };

    // A client without credentials: the base image is refused, saying whose access it was.
    let nobody = dir.path().join("nobody-docker");
    fs_err::create_dir_all(&nobody).unwrap();
    let refused = buildctl(&nobody, "anonymous");
    assert!(!refused.status.success(), "{}", text(&refused));
    let message = text(&refused);
    assert!(
        message.contains(&format!(
            "registry {host} refused anonymous access (no credentials for it in the client's session)"
        )),
        "{message}"
    );
    // A client with a wrong password is refused too.
    let wrong = docker_config(&dir.path().join("wrong-docker"), host, "alice:wrong");
    let refused = buildctl(&wrong, "wrong");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("the credentials of user `alice`"),
        "{}",
        text(&refused)
    );

    // buildctl with the credentials in its Docker config: pulled, built and pushed.
    let alice = docker_config(&dir.path().join("alice-docker"), host, "alice:s3cret");
    assert_ok(buildctl(&alice, "buildctl"));
    // kiln's own client serves its Docker config the same way (without buildx's default
    // provenance on a push, so that both pushes are the plain image read back below).
    let pushed = format!("{host}/kiln-test/private:kiln");
    assert_ok(daemon.kiln(
        &dir.path().join("client-root"),
        &[
            "build",
            "--provenance=false",
            "-t",
            &pushed,
            "--push",
            context.to_str().unwrap(),
        ],
        &[("DOCKER_CONFIG", alice.to_str().unwrap())],
    ));
    // The daemon's store now holds the base image: a client without credentials is still
    // refused, as the daemon asks the registry for the tag with each client's credentials.
    let refused = buildctl(&nobody, "anonymous");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("refused anonymous access"),
        "{}",
        text(&refused)
    );
    for name in ["buildctl", "kiln"] {
        let image = format!("docker://{host}/kiln-test/private:{name}");
        let read = |creds: Option<&str>| {
            let mut command = Command::new("skopeo");
            command.args(["inspect", "--tls-verify=false", "--raw"]);
            if let Some(creds) = creds {
                command.args(["--creds", creds]);
            }
            command.arg(&image).output().unwrap()
        };
        // The registry really wants credentials, and has the image.
        assert!(!read(None).status.success(), "{name}: read anonymously");
        let manifest: serde_json::Value =
            serde_json::from_slice(&assert_ok(read(Some("alice:s3cret"))).stdout).unwrap();
        assert_eq!(
            manifest["layers"].as_array().map(Vec::len),
            Some(2),
            "{name}: {manifest}"
        );
    }
}
