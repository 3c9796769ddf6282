//! The directories `kiln daemon` receives its clients' local sources into (`ROOT/local-sync`)
//! are records of the store's disk usage (issue 14): `buildctl du` and `kiln du` list them as
//! BuildKit does (`source.local`, "local source for context") with the bytes they hold, and
//! `buildctl prune` and `kiln prune` remove them, except those a running build holds. Needs
//! buildctl, root and the test registry; skips saying why, or fails under
//! `KILN_TEST_REQUIRE_ALL=1`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::daemon::{Daemon, DaemonSetup};
use crate::common::{assert_ok, text};
use crate::daemon::{IMAGE, kiln};

/// A `source.local` record: in use, size, description.
type Source = (bool, u64, String);

/// `buildctl du`'s `source.local` records by ID.
fn buildctl_sources(daemon: &Daemon) -> BTreeMap<String, Source> {
    let out = assert_ok(daemon.buildctl(&["du", "--format", "{{json .}}"]));
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    records
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|r| r["recordType"] == "source.local")
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                (
                    r["inUse"].as_bool().unwrap(),
                    r["size"].as_u64().unwrap(),
                    r["description"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// The bytes of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs_err::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            total += bytes_under(&entry.path());
        } else if kind.is_file() {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

/// `kiln --root ROOT du --format json`'s `source.local` entries: ID, reclaimable, size.
fn kiln_sources(root: &Path) -> Vec<(String, bool, u64)> {
    let out = assert_ok(kiln(root, &["du", "--format", "json"]));
    let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    crate::prune_du::json_entries(&document, "entries")
        .into_iter()
        .filter(|e| e.1 == "source.local")
        .map(|(id, _, reclaimable, size)| (id, reclaimable, size))
        .collect()
}

/// `buildctl build` of the Dockerfile in `context`, with `PAUSE` as its build argument.
fn build(daemon: &Daemon, context: &Path, pause: &str, out: &Path) -> Command {
    let local = |name: &str| format!("{name}={}", context.display());
    let mut command = daemon.buildctl_command();
    command
        .args(["build", "--progress=plain", "--frontend", "dockerfile.v0"])
        .args([
            "--local",
            &local("context"),
            "--local",
            &local("dockerfile"),
        ])
        .args(["--opt", &format!("build-arg:PAUSE={pause}")])
        .args(["--output", &format!("type=local,dest={}", out.display())]);
    command
}

#[test]
fn serial_daemon_lists_and_prunes_the_local_sources_it_received() {
    let Some(setup) = DaemonSetup::start(crate::common::ready) else {
        return;
    };
    let (daemon, dir) = (&setup.daemon, &setup.dir);
    let root = setup.root();
    let context = setup.context(&format!(
        "FROM {IMAGE}\n\
             COPY data.bin /data.bin\n\
             ARG PAUSE\n\
             RUN sleep $PAUSE && wc -c < /data.bin > /size\n"
    ));
    let data: Vec<u8> = (0..300_000).map(|_| fastrand::u8(..)).collect();
    fs_err::write(context.join("data.bin"), &data).unwrap();
    let out = dir.path().join("out");
    assert_ok(build(daemon, &context, "0", &out).output().unwrap());
    assert_eq!(
        fs_err::read_to_string(out.join("size")).unwrap().trim(),
        "300000"
    );

    // The context (the frontend's read of its `.dockerignore`, and the files the build
    // copies) and the Dockerfile's directory, each with the bytes it holds.
    let sync = root.join("local-sync");
    let sources = buildctl_sources(daemon);
    let descriptions: std::collections::BTreeSet<&str> =
        sources.values().map(|s| s.2.as_str()).collect();
    assert_eq!(
        descriptions,
        ["local source for context", "local source for dockerfile"].into(),
        "{sources:?}"
    );
    for (id, (in_use, size, _)) in &sources {
        assert!(!in_use, "{sources:?}");
        assert_eq!(*size, bytes_under(&sync.join(id)), "{id}");
    }
    let context_id = sources
        .iter()
        .find(|s| s.1.2 == "local source for context" && s.1.1 >= 300_000)
        .map(|s| s.0.clone())
        .unwrap_or_else(|| panic!("no context with the data: {sources:?}"));
    assert_eq!(
        fs_err::read(sync.join(&context_id).join("data.bin")).unwrap(),
        data
    );
    // The store on its own (another process) agrees.
    let expected: Vec<(String, bool, u64)> = sources
        .iter()
        .map(|(id, (in_use, size, _))| (id.clone(), !in_use, *size))
        .collect();
    assert_eq!(kiln_sources(&root), expected);

    // A build that holds its context while its step runs: neither the daemon's prune nor
    // another process's removes that directory.
    let running = build(daemon, &context, "8", &dir.path().join("out-2"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let held = context_id;
    loop {
        let now = buildctl_sources(daemon);
        if now.get(&held).is_some_and(|s| s.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the context was not held: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pruned = assert_ok(daemon.buildctl(&["prune", "--format", "{{.ID}}"]));
    let removed = String::from_utf8(pruned.stdout).unwrap();
    assert!(!removed.contains(&held), "{removed}");
    assert!(sync.join(&held).is_dir());
    let pruned = assert_ok(kiln(&root, &["prune", "-f", "--format", "json"]));
    let document: serde_json::Value = serde_json::from_slice(&pruned.stdout).unwrap();
    assert!(!document.to_string().contains(&held), "{document}");
    assert!(sync.join(&held).join("data.bin").is_file());
    let finished = running.wait_with_output().unwrap();
    assert!(finished.status.success(), "{}", text(&finished));
    assert_eq!(
        fs_err::read_to_string(dir.path().join("out-2/size"))
            .unwrap()
            .trim(),
        "300000"
    );

    // Once the build is over, a prune removes every one, directories and all.
    let left = buildctl_sources(daemon);
    assert!(left.contains_key(&held), "{left:?}");
    let pruned = assert_ok(daemon.buildctl(&["prune", "--format", "{{.ID}}"]));
    let removed: Vec<&str> = std::str::from_utf8(&pruned.stdout)
        .unwrap()
        .lines()
        .collect();
    for id in left.keys() {
        assert!(removed.contains(&id.as_str()), "{id} in {removed:?}");
        assert!(!sync.join(id).exists(), "{id}");
    }
    assert!(buildctl_sources(daemon).is_empty());
}
