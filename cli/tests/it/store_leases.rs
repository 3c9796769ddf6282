//! The store under concurrent prune and `SIGKILL`: builds hold leases, so `kiln prune -a`
//! while they run removes nothing they use; a killed build's lease is void, so the next
//! prune reclaims everything it left.
//!
//! Needs root (containers) and the test registry; skips saying why, or fails under
//! `KILN_TEST_REQUIRE_ALL=1`.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_testdata::{is_root, registry_up, skip};

const IMAGE: &str = "127.0.0.1:5000/library/busybox:latest";

fn kiln(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.arg("--root").arg(root).env_remove("KILN_CONFIG");
    command
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = kiln(root).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kiln {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `kiln build -t TAG` of a Dockerfile in `dir` whose steps overlap with others'.
fn start_build(root: &Path, dir: &Path, tag: &str, dockerfile: &str) -> Child {
    fs_err::create_dir_all(dir).unwrap();
    fs_err::write(dir.join("Dockerfile"), dockerfile).unwrap();
    kiln(root)
        .args(["build", "--progress=plain", "-t", tag])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn can_run() -> bool {
    if !registry_up() {
        return false;
    }
    if !is_root() {
        skip("builds need root to run containers");
        return false;
    }
    true
}

#[test]
fn serial_builds_survive_prune_all_while_they_run() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let builds: Vec<(String, Child)> = (0..3)
        .map(|n| {
            let tag = format!("leased-{n}:1");
            let dockerfile = format!(
                "FROM {IMAGE}\n\
                 RUN echo first-{n} > /a && sleep 1\n\
                 RUN cat /a > /b && sleep 1 && echo second-{n} >> /b\n\
                 RUN sleep 1 && cat /b > /c && echo third-{n} >> /c\n"
            );
            let child = start_build(
                &root,
                &dir.path().join(format!("ctx{n}")),
                &tag,
                &dockerfile,
            );
            (tag, child)
        })
        .collect();
    // Prune everything, again and again, while the builds run.
    let start = Instant::now();
    let mut prunes = 0;
    let mut builds: Vec<(String, Child, Option<Output>)> =
        builds.into_iter().map(|(t, c)| (t, c, None)).collect();
    while builds.iter().any(|b| b.2.is_none()) {
        assert!(start.elapsed() < Duration::from_secs(180), "builds hang");
        if root.join("meta.redb").exists() {
            ok(&root, &["prune", "-a", "-f"]);
            prunes += 1;
        }
        for build in &mut builds {
            if build.2.is_none() && build.1.try_wait().unwrap().is_some() {
                let child = std::mem::replace(&mut build.1, Command::new("true").spawn().unwrap());
                build.2 = Some(child.wait_with_output().unwrap());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(prunes >= 3, "only {prunes} prunes ran during the builds");
    for (n, (tag, _, out)) in builds.iter().enumerate() {
        let out = out.as_ref().unwrap();
        assert!(
            out.status.success(),
            "build {tag} failed under prune: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The image runs and exports.
        let content = ok(&root, &["run", "--rm", tag, "cat", "/c"]);
        assert_eq!(content, format!("first-{n}\nsecond-{n}\nthird-{n}\n"));
        let tar = dir.path().join(format!("image-{n}.tar"));
        ok(&root, &["save", "-o", tar.to_str().unwrap(), tag]);
        let list = Command::new("tar").arg("tf").arg(&tar).output().unwrap();
        assert!(list.status.success());
        assert!(String::from_utf8_lossy(&list.stdout).contains("manifest.json"));
    }
}

/// Kilobytes under `dir`, as `du -sk` counts them (blocks on disk, each inode once).
fn du_kb(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sk").arg(dir).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn serial_killed_builds_leave_nothing_after_rmi_and_prune() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut rng = fastrand::Rng::with_seed(0x6b69_6c6e);
    for n in 0..5 {
        // About 40 MB per build, in snapshots, an exported layer in ingest or both.
        let dockerfile = format!(
            "FROM {IMAGE}\n\
             RUN head -c 20000000 /dev/urandom > /big-{n} && sleep 1\n\
             RUN cp /big-{n} /copy && sleep 1\n\
             RUN sleep 5\n"
        );
        let mut child = start_build(
            &root,
            &dir.path().join(format!("ctx{n}")),
            &format!("killed-{n}:1"),
            &dockerfile,
        );
        std::thread::sleep(Duration::from_millis(rng.u64(200..3000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let before = du_kb(&root);
    let images = ok(&root, &["images"]);
    for line in images.lines().skip(1) {
        let mut cells = line.split_whitespace();
        let (Some(repository), Some(tag)) = (cells.next(), cells.next()) else {
            continue;
        };
        ok(&root, &["rmi", &format!("{repository}:{tag}")]);
    }
    ok(&root, &["prune", "-a", "-f"]);
    let after = du_kb(&root);
    assert!(after < 10 * 1024, "{after} kB left (from {before} kB)");
    let du = ok(&root, &["du"]);
    assert!(du.ends_with("Total:        0B\n"), "{du}");
}

/// The names under `dir` (recursively, relative to it) that look like temporary files.
fn temporaries(dir: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(dir)
        .args([
            "-name", ".tmp*", "-o", "-name", "*.tmp-*", "-o", "-name", "tmp-*",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            l.strip_prefix(dir.to_str().unwrap())
                .unwrap_or(l)
                .to_owned()
        })
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn serial_a_build_killed_while_exporting_leaves_nothing_after_prune() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let out = dir.path().join("out");
    let dest = out.join("image.tar");
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    // About 200 MB that do not compress: writing the OCI tar takes a while.
    fs_err::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN head -c 200000000 /dev/urandom > /big\n"),
    )
    .unwrap();
    let mut child = kiln(&root)
        .args(["build", "--progress=plain", "--output"])
        .arg(format!("type=oci,dest={},compression=gzip", dest.display()))
        .arg(&context)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the export file is being written beside its destination.
    let start = Instant::now();
    let partial = loop {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no export began"
        );
        let partial = out
            .exists()
            .then(|| entries(&out))
            .and_then(|names| names.into_iter().find(|n| n.starts_with(".image.tar.tmp-")));
        if let Some(name) = partial {
            if fs_err::metadata(out.join(&name)).is_ok_and(|m| m.len() > 1 << 20) {
                break name;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none() && !dest.exists(),
            "the export finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Killed half way: the partial file is there, nothing under the final name, and the
    // dead process's scratch directory in the store (which names the file's directory).
    assert_eq!(entries(&out), [partial]);
    let tag = format!("p{}s", child.id());
    assert!(
        entries(&root.join("tmp"))
            .iter()
            .any(|n| n.starts_with(&tag)),
        "{:?}",
        entries(&root.join("tmp"))
    );

    ok(&root, &["prune", "-a", "-f"]);
    // Nothing beside the destination, no partial file under its name.
    assert_eq!(entries(&out), Vec::<String>::new());
    // Nothing temporary in the store: no unfinished blob, scratch or active snapshot.
    assert_eq!(temporaries(&root), Vec::<String>::new());
    for sub in ["ingest", "tmp", "snapshots/active"] {
        let path = root.join(sub);
        if path.exists() {
            assert_eq!(entries(&path), Vec::<String>::new(), "{sub}");
        }
    }
    // What is left is the image the build pulled, and du counts all of it.
    let du: serde_json::Value =
        serde_json::from_str(&ok(&root, &["du", "--format", "json"])).unwrap();
    let listed = du["entries"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{du:#}");
    assert_eq!(listed[0]["id"], IMAGE);
    assert_eq!(du["reclaimable"], 0, "{du:#}");
    assert_eq!(du["total"], listed[0]["size"], "{du:#}");
    assert!(du_kb(&root) < 10 * 1024, "{} kB left", du_kb(&root));
}
