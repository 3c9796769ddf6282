//! Exec mounts through `kiln build --llb`: a secret is visible to its step and stored nowhere,
//! a tmpfs leaves nothing behind, and a cache mount keeps its contents across builds.

use std::path::Path;
use std::process::Command;

use kiln_llb::prost::Message as _;
use kiln_llb::{MountOptions, image, pb, scratch};
use kiln_testdata::{is_root, registry_up, skip};

use crate::common::{assert_ok, build_llb, ready};

const SECRET: &[u8] = b"kiln-test-secret-6f1d0c";

/// One step with a secret, a tmpfs and a cache mount.
fn definition() -> Vec<u8> {
    // The step checks the secret by its sha256: the Definition (and what a build records of
    // its steps) must not hold the secret itself.
    let script = format!(
        "set -e; \
        test \"$(sha256sum < /run/secrets/token | cut -c1-64)\" = {}; echo ok > /secret-seen; \
        echo t > /scratch/x; \
        echo run >> /cache/log; wc -l < /cache/log > /cache-count",
        kiln_llb::Digest::from_bytes(SECRET).hex()
    );
    let secret = pb::SecretOpt {
        id: "token".into(),
        uid: 0,
        gid: 0,
        mode: 0o400,
        optional: false,
    };
    image(&format!(
        "127.0.0.1:5000/library/busybox@{}",
        kiln_testdata::BUSYBOX_MANIFEST_DIGEST
    ))
    .run(["/bin/sh", "-c", script.as_str()])
    .with_mount(
        "/run/secrets/token",
        scratch(),
        MountOptions {
            secret: Some(secret),
            ..Default::default()
        },
    )
    .with_mount(
        "/scratch",
        scratch(),
        MountOptions {
            tmpfs: Some(0),
            ..Default::default()
        },
    )
    .with_mount(
        "/cache",
        scratch(),
        MountOptions {
            cache: Some(("test-cache".into(), pb::CacheSharingOpt::Locked)),
            ..Default::default()
        },
    )
    .root()
    .marshal()
    .encode_to_vec()
}

fn build(root: &Path, def: &Path, secret: &Path, out: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain", "--no-cache", "--llb"])
        .arg(def)
        .arg("--secret")
        .arg(format!("id=token,src={}", secret.display()))
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Files under `dir` whose bytes contain `needle` (not following links).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
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
                let data = fs_err::read(&path).unwrap_or_default();
                if data.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn serial_secret_tmpfs_and_cache_mounts() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let def = work.path().join("def.pb");
    fs_err::write(&def, definition()).unwrap();
    let secret = work.path().join("secret");
    fs_err::write(&secret, SECRET).unwrap();

    let out1 = work.path().join("out1");
    build(&root, &def, &secret, &out1);
    // The step saw the secret (it checked the value and wrote this).
    assert_eq!(
        fs_err::read_to_string(out1.join("secret-seen")).unwrap(),
        "ok\n"
    );
    // Neither the tmpfs's nor the cache's contents are in the result.
    assert!(!out1.join("scratch/x").exists());
    assert!(!out1.join("cache/log").exists());
    assert_eq!(
        fs_err::read_to_string(out1.join("cache-count"))
            .unwrap()
            .trim(),
        "1"
    );
    // The secret is nowhere: not in the result, not anywhere in the store.
    assert_eq!(files_containing(&out1, SECRET), Vec::<String>::new());
    assert_eq!(files_containing(&root, SECRET), Vec::<String>::new());

    // The cache mount kept its contents for the next build.
    let out2 = work.path().join("out2");
    build(&root, &def, &secret, &out2);
    assert_eq!(
        fs_err::read_to_string(out2.join("cache-count"))
            .unwrap()
            .trim(),
        "2"
    );
    assert_eq!(files_containing(&root, SECRET), Vec::<String>::new());
}

#[test]
fn bind_mounts_of_layered_results_read_only_and_writable() {
    if !is_root() || !registry_up() {
        skip("needs root and the test registry on 127.0.0.1:5000");
        return;
    }
    let busybox = image(&format!(
        "127.0.0.1:5000/library/busybox@{}",
        kiln_testdata::BUSYBOX_MANIFEST_DIGEST
    ));
    // Two layers: busybox and a step on it.
    let layered = busybox
        .run(["/bin/sh", "-c", "mkdir -p /data && echo layered > /data/f"])
        .root();
    let step = busybox
        .run([
            "/bin/sh",
            "-c",
            "set -e; cat /ro/data/f > /from-ro; \
             if touch /ro/x 2>/dev/null; then echo writable > /ro-was-writable; fi; \
             echo new > /rw/data/g; rm /rw/data/f",
        ])
        .with_mount(
            "/ro",
            layered.clone(),
            MountOptions {
                readonly: true,
                ..Default::default()
            },
        )
        .with_mount("/rw", layered, MountOptions::default());
    let root_def = step.root().marshal().encode_to_vec();
    let rw_def = step.get_mount("/rw").unwrap().marshal().encode_to_vec();

    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let root_out = work.path().join("root");
    assert_ok(build_llb(&store, &root_def, &root_out));
    assert_eq!(
        fs_err::read_to_string(root_out.join("from-ro")).unwrap(),
        "layered\n"
    );
    assert!(!root_out.join("ro-was-writable").exists());
    // Mount points and the writable mount's changes are not part of the root's result.
    assert!(!root_out.join("rw/data/g").exists());

    let rw_out = work.path().join("rw");
    assert_ok(build_llb(&store, &rw_def, &rw_out));
    assert_eq!(
        fs_err::read_to_string(rw_out.join("data/g")).unwrap(),
        "new\n"
    );
    assert!(!rw_out.join("data/f").exists(), "the deletion is kept");
    assert!(
        rw_out.join("bin/busybox").exists(),
        "the mount's base layers are kept"
    );
}

#[test]
fn exec_ulimits_apply_and_unknown_names_fail_the_step() {
    if !ready() {
        return;
    }
    let definition = |name: &str| {
        image(&format!(
            "127.0.0.1:5000/library/busybox@{}",
            kiln_testdata::BUSYBOX_MANIFEST_DIGEST
        ))
        .run([
            "/bin/sh",
            "-c",
            "ulimit -n > /nofile; ulimit -Hn >> /nofile",
        ])
        .add_ulimit(name, 512, 1024)
        .root()
        .marshal()
        .encode_to_vec()
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    assert_ok(build_llb(&root, &definition("nofile"), &out));
    assert_eq!(
        fs_err::read_to_string(out.join("nofile")).unwrap(),
        "512\n1024\n"
    );
    let output = build_llb(&root, &definition("files"), &dir.path().join("out2"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid ulimit type: files"), "{stderr}");
}
