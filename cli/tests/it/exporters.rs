//! Issue 7: `--output type=oci|docker|tar|image`, `-t`, `kiln load|tag|rmi`, checked with
//! skopeo and umoci, and reproducibility under `SOURCE_DATE_EPOCH`.

use kiln_testdata::{is_root, registry_up, skip};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// 2023-11-14T22:13:20Z (`date -u -d @1700000000 +%FT%TZ`).
const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";
/// The manifest digest of testdata/images/busybox (the test registry serves the same image).
const BUSYBOX_MANIFEST: &str =
    "sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89";

fn has_tool(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

/// Whether builds (root, registry) and the checking tools can run here; skips if not.
fn can_build() -> bool {
    let missing = [
        (!is_root(), "needs root for namespaces and overlayfs"),
        (
            !registry_up(),
            "the test registry on 127.0.0.1:5000 is down",
        ),
        (!has_tool("skopeo"), "skopeo is not installed"),
        (!has_tool("umoci"), "umoci is not installed"),
    ];
    match missing.iter().find(|(m, _)| *m) {
        Some((_, reason)) => {
            skip(reason);
            false
        }
        None => true,
    }
}

fn kiln(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.arg("--root").arg(root);
    command.env_remove("SOURCE_DATE_EPOCH");
    command
}

fn ok(mut command: Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(command: Command) -> String {
    String::from_utf8(ok(command).stdout).unwrap()
}

fn json(command: Command) -> serde_json::Value {
    serde_json::from_str(&stdout(command)).unwrap()
}

fn skopeo(args: &[&str]) -> Command {
    let mut command = Command::new("skopeo");
    command.args(args);
    command
}

fn vector(name: &str) -> PathBuf {
    kiln_testdata::llb_vectors_dir().join(name).join("def.pb")
}

/// Builds an LLB vector with `--local context=context` and extra arguments.
fn build(root: &Path, name: &str, context: &Path, extra: &[&str], epoch: bool) {
    let mut command = kiln(root);
    command
        .arg("build")
        .arg("--llb")
        .arg(vector(name))
        .arg("--local")
        .arg(format!("context={}", context.display()))
        .args(extra);
    if epoch {
        command.env("SOURCE_DATE_EPOCH", EPOCH);
    }
    ok(command);
}

/// Unpacks an OCI layout with umoci and returns the bundle's rootfs.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let mut command = Command::new("umoci");
    command
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle);
    ok(command);
    bundle.join("rootfs")
}

fn untar(file: &Path, dest: &Path) {
    fs_err::create_dir_all(dest).unwrap();
    let mut command = Command::new("tar");
    command.arg("-xf").arg(file).arg("-C").arg(dest);
    ok(command);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_output_type_is_read_by_skopeo_and_umoci() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (root, context) = (tmp.path().join("root"), tmp.path().join("context"));
    fs_err::create_dir_all(&context).unwrap();
    let out = |name: &str| tmp.path().join(name);
    build(
        &root,
        "045-workdir-run-pwd",
        &context,
        &[
            "--output",
            &format!("type=oci,dest={},name=x:v1", path(&out("oci.tar"))),
            "--output",
            &format!("type=oci,dest={},tar=false,name=x:v1", path(&out("oci"))),
            "--output",
            &format!("type=docker,dest={},name=x:v1", path(&out("docker.tar"))),
            "--output",
            &format!("type=tar,dest={}", path(&out("fs.tar"))),
            "--output",
            &format!("type=local,dest={}", path(&out("local"))),
        ],
        false,
    );
    // The Dockerfile's RUN writes the working directory into /pwd.
    let local = fs_err::read_to_string(out("local/pwd")).unwrap();
    assert_eq!(local, "/test1/test2");

    let archive = json(skopeo(&[
        "inspect",
        &format!("oci-archive:{}:v1", path(&out("oci.tar"))),
    ]));
    let layout = json(skopeo(&[
        "inspect",
        &format!("oci:{}:v1", path(&out("oci"))),
    ]));
    assert_eq!(archive["Digest"], layout["Digest"]);
    assert_eq!(archive["Architecture"], "amd64");
    assert_eq!(archive["Os"], "linux");
    let config = json(skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:v1", path(&out("oci"))),
    ]));
    let diff_ids = config["rootfs"]["diff_ids"].clone();
    assert_eq!(diff_ids.as_array().unwrap().len(), 1);
    assert_eq!(config["history"].as_array().unwrap().len(), 1);

    // docker-archive layers are the uncompressed tars: their digests are the diff IDs.
    let docker = json(skopeo(&[
        "inspect",
        &format!("docker-archive:{}", path(&out("docker.tar"))),
    ]));
    assert_eq!(docker["Layers"], diff_ids);
    let mut listing = Command::new("tar");
    listing.arg("-tf").arg(out("docker.tar"));
    let names = stdout(listing);
    assert!(names.lines().any(|l| l == "manifest.json"), "{names}");
    assert!(names.lines().any(|l| l == "repositories"), "{names}");

    // umoci unpacks the directory and the tar alike, to what type=local wrote.
    let rootfs = umoci_unpack(&out("oci"), "v1", &out("bundle-dir"));
    assert_eq!(fs_err::read_to_string(rootfs.join("pwd")).unwrap(), local);
    untar(&out("oci.tar"), &out("oci-from-tar"));
    let rootfs = umoci_unpack(&out("oci-from-tar"), "v1", &out("bundle-tar"));
    assert_eq!(fs_err::read_to_string(rootfs.join("pwd")).unwrap(), local);
    untar(&out("fs.tar"), &out("fs"));
    assert_eq!(fs_err::read_to_string(out("fs/pwd")).unwrap(), local);
}

#[test]
fn source_date_epoch_makes_images_byte_identical() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = tmp.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("testfile"), "hello\n").unwrap();
    let mut archives = Vec::new();
    for (run, compression) in [(1, "gzip"), (2, "gzip"), (3, "zstd")] {
        let root = tmp.path().join(format!("root{run}"));
        let dest = tmp.path().join(format!("image{run}.tar"));
        build(
            &root,
            "165-mount-bind-not-persisted",
            &context,
            &[
                "--output",
                &format!(
                    "type=oci,dest={},name=r:1,rewrite-timestamp=true,compression={compression}",
                    path(&dest)
                ),
            ],
            true,
        );
        archives.push(dest);
    }
    let first = fs_err::read(&archives[0]).unwrap();
    assert_eq!(
        first,
        fs_err::read(&archives[1]).unwrap(),
        "two builds in two stores differ"
    );
    let inspect = |dest: &Path| {
        json(skopeo(&[
            "inspect",
            &format!("oci-archive:{}:1", path(dest)),
        ]))
    };
    let gzip = inspect(&archives[0]);
    let zstd = inspect(&archives[2]);
    assert_eq!(gzip["Created"], EPOCH_RFC3339);
    // busybox's layer plus the RUN's layer; the busybox blob is reused as pulled.
    let layers = gzip["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(zstd["Layers"][0], layers[0]);
    assert_ne!(zstd["Layers"][1], layers[1]);
    let config = json(skopeo(&[
        "inspect",
        "--config",
        &format!("oci-archive:{}:1", path(&archives[0])),
    ]));
    for entry in config["history"].as_array().unwrap() {
        assert_eq!(entry["created"], EPOCH_RFC3339);
    }
    // Every entry of the archive carries the epoch too.
    let mut listing = Command::new("tar");
    listing.arg("--full-time").arg("-tvf").arg(&archives[0]);
    let listing = stdout(listing);
    assert!(
        listing.lines().all(|l| l.contains("2023-11-14 22:13:20")),
        "{listing}"
    );
}

#[test]
fn tagged_images_are_stored_tagged_removed_loaded_and_reexported() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (root, context) = (tmp.path().join("root"), tmp.path().join("context"));
    fs_err::create_dir_all(&context).unwrap();
    let oci = tmp.path().join("image.tar");
    build(
        &root,
        "045-workdir-run-pwd",
        &context,
        &[
            "-t",
            "demo:1",
            "--output",
            &format!("type=oci,dest={},name=demo:1", path(&oci)),
        ],
        false,
    );
    let digest = json(skopeo(&[
        "inspect",
        &format!("oci-archive:{}:1", path(&oci)),
    ]))["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let short = &digest["sha256:".len().."sha256:".len() + 12];
    let mut images = kiln(&root);
    images.arg("images");
    let listed = stdout(images);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("demo ") && l.contains(" 1 ") && l.contains(short)),
        "{listed}"
    );

    let mut tag = kiln(&root);
    tag.args(["tag", "demo:1", "other/demo:2"]);
    ok(tag);
    let mut rmi = kiln(&root);
    rmi.args(["rmi", "demo:1"]);
    assert_eq!(stdout(rmi), "Untagged: docker.io/library/demo:1\n");
    let mut images = kiln(&root);
    images.arg("images");
    let listed = stdout(images);
    assert!(!listed.lines().any(|l| l.starts_with("demo ")), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("other/demo ") && l.contains(short)),
        "{listed}"
    );
    let mut rmi = kiln(&root);
    rmi.args(["rmi", "nothing-here"]);
    let out = rmi.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such image: nothing-here"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Loading the archive into another store gives the same manifest.
    let other = tmp.path().join("other");
    let mut load = kiln(&other);
    load.arg("load").arg(&oci);
    assert_eq!(stdout(load), "Loaded image: docker.io/library/demo:1\n");
    let mut images = kiln(&other);
    images.arg("images");
    assert!(stdout(images).contains(short));
}

#[test]
fn loading_the_busybox_layout_names_it_busybox() {
    if !is_root() {
        // Unpacking keeps file owners, which needs root.
        skip("needs root to unpack layers with their owners");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut load = kiln(&root);
    load.arg("load").arg(kiln_testdata::busybox_layout());
    assert_eq!(
        stdout(load),
        "Loaded image: docker.io/library/busybox:latest\n"
    );
    let mut images = kiln(&root);
    images.arg("images");
    let listed = stdout(images);
    let row = listed
        .lines()
        .find(|l| l.starts_with("busybox "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains(&BUSYBOX_MANIFEST[7..19]), "{row}");

    let mut load = kiln(&root);
    load.arg("load").arg(tmp.path());
    let out = load.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not an OCI image layout or docker archive"),
        "{stderr}"
    );
}

#[test]
fn serial_pushed_images_keep_their_digest_and_save_round_trips() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (root, context) = (tmp.path().join("root"), tmp.path().join("context"));
    fs_err::create_dir_all(&context).unwrap();
    // A tag of its own per run, so an earlier run's manifest cannot satisfy the check.
    let tag = format!("{:x}", std::process::id());
    let name = format!("127.0.0.1:5000/kiln-test/exporters:{tag}");
    // The image alone, as `kiln push` sends it (a build's push adds its provenance).
    build(
        &root,
        "045-workdir-run-pwd",
        &context,
        &["-t", &name, "--push", "--provenance=false"],
        false,
    );
    let remote = json(skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    // The digest of the manifest blob kiln stored for the name.
    let mut save = kiln(&root);
    let oci = tmp.path().join("saved-oci.tar");
    save.args(["save", "--format", "oci", "-o"])
        .arg(&oci)
        .arg(&name);
    ok(save);
    let saved = json(skopeo(&[
        "inspect",
        &format!("oci-archive:{}:{tag}", path(&oci)),
    ]));
    assert_eq!(remote["Digest"], saved["Digest"]);
    let local_digest = remote["Digest"].as_str().unwrap();

    // `kiln push` of the stored image again reports the same digest.
    let mut push = kiln(&root);
    push.args(["push", &name]);
    assert_eq!(stdout(push), format!("{name}: digest: {local_digest}\n"));

    // docker-archive save, loaded into a new store, gives back the same layers.
    let docker = tmp.path().join("saved.tar");
    let mut save = kiln(&root);
    save.arg("save").arg("-o").arg(&docker).arg(&name);
    ok(save);
    let archive = json(skopeo(&[
        "inspect",
        &format!("docker-archive:{}", path(&docker)),
    ]));
    let config = json(skopeo(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    assert_eq!(archive["Layers"], config["rootfs"]["diff_ids"]);
    let other = tmp.path().join("other");
    let mut load = kiln(&other);
    load.arg("load").arg(&docker);
    assert_eq!(stdout(load), format!("Loaded image: {name}\n"));
}

/// Builds the Dockerfile `dockerfile` (in a context of its own under `dir`) with `extra`
/// arguments.
fn build_dockerfile(root: &Path, dir: &Path, dockerfile: &str, extra: &[&str], epoch: bool) {
    fs_err::create_dir_all(dir).unwrap();
    fs_err::write(dir.join("Dockerfile"), dockerfile).unwrap();
    let mut command = kiln(root);
    command.arg("build").args(extra).arg(dir);
    if epoch {
        command.env("SOURCE_DATE_EPOCH", EPOCH);
    }
    ok(command);
}

#[test]
fn a_stored_image_written_with_rewrite_timestamp_has_the_epoch_mtimes() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_dockerfile(
        &root,
        &tmp.path().join("base"),
        "FROM 127.0.0.1:5000/library/busybox:latest\nRUN mkdir /made && echo hi > /made/file\n",
        &[
            "--output",
            "type=image,name=clamped-base:1,rewrite-timestamp=true",
        ],
        true,
    );
    // The next build runs on the stored image's snapshots: they show what its layer says.
    let out = tmp.path().join("out");
    build_dockerfile(
        &root,
        &tmp.path().join("next"),
        "FROM clamped-base:1\nRUN stat -c %Y /made/file /made > /mtimes\n",
        &["--output", &format!("type=local,dest={}", path(&out))],
        false,
    );
    let mtimes = fs_err::read_to_string(out.join("mtimes")).unwrap();
    assert_eq!(mtimes, format!("{EPOCH}\n{EPOCH}\n"));

    // And so does the layer: umoci unpacks the exported image to the same times.
    let layout = tmp.path().join("layout");
    let mut save = kiln(&root);
    save.args(["save", "--format", "oci", "-o"])
        .arg(tmp.path().join("saved.tar"))
        .arg("clamped-base:1");
    ok(save);
    untar(&tmp.path().join("saved.tar"), &layout);
    let rootfs = umoci_unpack(&layout, "1", &tmp.path().join("bundle"));
    use std::os::unix::fs::MetadataExt as _;
    let unpacked = fs_err::metadata(rootfs.join("made/file")).unwrap().mtime();
    assert_eq!(unpacked.to_string(), EPOCH);
}

#[test]
fn serial_a_registry_refusing_monolithic_uploads_gets_the_blobs_in_chunks() {
    if !can_build() {
        return;
    }
    let (proxy, seen) = crate::common::recording_registry(true);
    let tmp = tempfile::tempdir().unwrap();
    let (root, context) = (tmp.path().join("root"), tmp.path().join("context"));
    fs_err::create_dir_all(&context).unwrap();
    // A repository of its own per run, so no blob is in it yet.
    let repository = format!("kiln-test/chunked-{:x}", std::process::id());
    let name = format!("{proxy}/{repository}:v1");
    // The image alone, as `kiln save` writes it (a build's push adds its provenance).
    build(
        &root,
        "045-workdir-run-pwd",
        &context,
        &["-t", &name, "--push", "--provenance=false"],
        false,
    );
    let seen = seen.lock().unwrap().clone();
    let refused = seen.iter().filter(|r| r.ends_with(" 413")).count();
    let patches = seen
        .iter()
        .filter(|r| r.starts_with("PATCH ") && r.ends_with(" 202"))
        .count();
    let committed = seen
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/blobs/uploads/") && r.ends_with(" 201"))
        .count();
    // The layers and the config: each refused whole, then sent in chunks and committed.
    assert!(refused >= 2, "{seen:#?}");
    assert!(patches >= refused, "{seen:#?}");
    assert_eq!(committed, refused, "{seen:#?}");

    // What the registry holds (read directly, not through the proxy) is the image kiln stored.
    let direct = format!("127.0.0.1:5000/{repository}:v1");
    let remote = json(skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{direct}"),
    ]));
    let saved = tmp.path().join("saved.tar");
    let mut save = kiln(&root);
    save.args(["save", "--format", "oci", "-o"])
        .arg(&saved)
        .arg(&name);
    ok(save);
    let local = json(skopeo(&[
        "inspect",
        &format!("oci-archive:{}:v1", path(&saved)),
    ]));
    assert_eq!(remote["Digest"], local["Digest"]);
    assert_eq!(remote["Layers"], local["Layers"]);
    // skopeo copies every blob back, checking each against its digest.
    let copy = tmp.path().join("copy");
    ok(skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{direct}"),
        &format!("oci:{}:v1", path(&copy)),
    ]));
    let copied = json(skopeo(&["inspect", &format!("oci:{}:v1", path(&copy))]));
    assert_eq!(copied["Layers"], local["Layers"]);
}

#[test]
fn devices_stay_in_images_and_tars_but_local_exports_skip_them() {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (local, fs_tar) = (tmp.path().join("local"), tmp.path().join("fs.tar"));
    let dir = tmp.path().join("context");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(
        dir.join("Dockerfile"),
        "FROM 127.0.0.1:5000/library/busybox:latest\n\
         RUN mkdir /nodes && mknod /nodes/null c 1 3 && mknod /nodes/loop b 7 0 \
         && mkfifo /nodes/pipe && touch /nodes/su && chmod 4755 /nodes/su\n",
    )
    .unwrap();
    let mut command = kiln(&root);
    command
        .arg("build")
        .args(["--output", &format!("type=local,dest={}", path(&local))])
        .args(["--output", &format!("type=tar,dest={}", path(&fs_tar))])
        .args(["--output", "type=image,name=nodes:1"])
        .arg(&dir);
    let out = ok(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("device node not exported"), "{stderr}");
    // The local export has the FIFO and the setuid file, and no devices.
    assert!(!local.join("nodes/null").exists());
    assert!(!local.join("nodes/loop").exists());
    let meta = |p: &str| fs_err::symlink_metadata(local.join(p)).unwrap();
    assert!(meta("nodes/pipe").file_type().is_fifo());
    assert_eq!(meta("nodes/su").mode() & 0o7777, 0o4755);
    // The tar export has every node, devices as entries.
    let mut entries = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(fs_err::File::open(&fs_tar).unwrap())
        .entries()
        .unwrap()
    {
        let entry = entry.unwrap();
        let h = entry.header();
        entries.insert(
            entry.path().unwrap().display().to_string(),
            (
                h.entry_type(),
                h.mode().unwrap() & 0o7777,
                h.device_major().ok().flatten(),
                h.device_minor().ok().flatten(),
            ),
        );
    }
    assert_eq!(entries["nodes/null"].0, tar::EntryType::Char);
    assert_eq!(entries["nodes/null"].2, Some(1));
    assert_eq!(entries["nodes/null"].3, Some(3));
    assert_eq!(entries["nodes/loop"].0, tar::EntryType::Block);
    assert_eq!(entries["nodes/pipe"].0, tar::EntryType::Fifo);
    assert_eq!(entries["nodes/su"].1, 0o4755);
    // `kiln run` sees them in the stored image.
    let mut run = kiln(&root);
    run.args(["run", "--rm", "nodes:1", "ls", "-l", "/nodes"]);
    let listing = stdout(run);
    assert!(listing.contains("crw"), "{listing}");
    assert!(listing.contains("brw"), "{listing}");
    assert!(listing.contains("prw"), "{listing}");
    assert!(listing.contains("rws"), "{listing}");
}

/// The layer media types of the manifest in the OCI layout tar `file`, bottom first.
fn layer_types(file: &Path, tag: &str) -> Vec<String> {
    let manifest = json(skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:{tag}", path(file)),
    ]));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn force_compression_converts_the_base_layers_too() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dockerfile = "FROM 127.0.0.1:5000/library/busybox:latest\nRUN echo hi > /hi\n";
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    let export = |name: &str, options: &str| {
        let file = tmp.path().join(format!("{name}.tar"));
        build_dockerfile(
            &root,
            &tmp.path().join(name),
            dockerfile,
            &[
                "--output",
                &format!("type=oci,dest={},name=forced:1,{options}", path(&file)),
            ],
            false,
        );
        file
    };
    // The base image's gzip layer is reused as it is; the step's layer is zstd.
    let reused = export("reused", "compression=zstd");
    assert_eq!(layer_types(&reused, "1"), [gzip, zstd]);
    // Forced: every layer is zstd, and the image still unpacks to the same files.
    let forced = export("forced", "compression=zstd,force-compression=true");
    assert_eq!(layer_types(&forced, "1"), [zstd, zstd]);
    let config = |file: &Path| {
        json(skopeo(&[
            "inspect",
            "--config",
            &format!("oci-archive:{}:1", path(file)),
        ]))["rootfs"]["diff_ids"]
            .clone()
    };
    assert_eq!(config(&reused), config(&forced), "the same tar streams");
    // umoci reads no zstd: kiln loads it into a store of its own and runs it, unpacking
    // each layer against its diff ID.
    let other = tmp.path().join("other");
    let mut load = kiln(&other);
    load.arg("load").arg(&forced);
    ok(load);
    let mut run = kiln(&other);
    run.args([
        "run",
        "--rm",
        "forced:1",
        "sh",
        "-c",
        "cat /hi; busybox true && echo ok",
    ]);
    assert_eq!(stdout(run), "hi\nok\n");
}

#[test]
fn serial_store_false_pushes_without_keeping_the_image() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let name = format!("127.0.0.1:5000/kiln-test/unstored:{:x}", std::process::id());
    build_dockerfile(
        &root,
        &tmp.path().join("ctx"),
        "FROM 127.0.0.1:5000/library/busybox:latest\nRUN echo hi > /hi\n",
        &[
            "--output",
            &format!("type=image,name={name},push=true,store=false"),
        ],
        false,
    );
    skopeo(&["inspect", "--tls-verify=false", &format!("docker://{name}")])
        .output()
        .map(|o| assert!(o.status.success(), "pushed"))
        .unwrap();
    let mut images = kiln(&root);
    images.arg("images");
    let listed = stdout(images);
    assert!(!listed.contains("kiln-test/unstored"), "{listed}");
}

/// The digests of the gzip blobs in the store at `root` (the layer blobs).
fn gzip_blobs(root: &Path) -> std::collections::BTreeSet<String> {
    let Ok(entries) = fs_err::read_dir(root.join("blobs/sha256")) else {
        return std::collections::BTreeSet::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| fs_err::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
        .map(|p| format!("sha256:{}", p.file_name().unwrap().to_string_lossy()))
        .collect()
}

/// Issue 17: `-t` compresses no layer; the first push makes the blobs, and the image pushed
/// is the one an export at build time pushes (same manifest, same layer blobs).
#[test]
fn serial_tagged_images_are_compressed_only_when_pushed() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = tmp.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    // Layers that do not depend on when they are built: copied files with fixed times.
    for (file, text) in [("a.txt", "a\n"), ("b.txt", "b\n")] {
        fs_err::write(context.join(file), text).unwrap();
        let mut touch = Command::new("touch");
        touch.args(["-d", "@1600000000"]).arg(context.join(file));
        ok(touch);
    }
    let dockerfile = "FROM 127.0.0.1:5000/library/busybox:latest\nCOPY a.txt /\nCOPY b.txt /\n";
    let tag = format!("{:x}", std::process::id());
    let lazy = format!("127.0.0.1:5000/kiln-test/lazy:{tag}");
    let eager = format!("127.0.0.1:5000/kiln-test/eager:{tag}");

    // The store holds the base image's layer before the build, and only it after.
    let root = tmp.path().join("lazy");
    let mut pull = kiln(&root);
    pull.args(["pull", "-q", "127.0.0.1:5000/library/busybox:latest"]);
    ok(pull);
    let base = gzip_blobs(&root);
    assert_eq!(base.len(), 1, "{base:?}");
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    let mut build = kiln(&root);
    // The epoch fixes the config's times, so both builds make the same config.
    build.args(["build", "-q", "-t", &lazy]).arg(&context);
    build.env("SOURCE_DATE_EPOCH", EPOCH);
    let id = stdout(build);
    assert_eq!(gzip_blobs(&root), base);
    // Runnable as it is.
    let mut run = kiln(&root);
    run.args(["run", "--rm", &lazy, "cat", "/a.txt", "/b.txt"]);
    assert_eq!(stdout(run), "a\nb\n");

    // Pushed: two new layer blobs, and the digest the registry has.
    let mut push = kiln(&root);
    push.args(["push", &lazy]);
    let pushed = stdout(push);
    let remote = json(skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{lazy}"),
    ]));
    let digest = remote["Digest"].as_str().unwrap();
    assert_eq!(pushed, format!("{lazy}: digest: {digest}\n"));
    let after = gzip_blobs(&root);
    let layers: std::collections::BTreeSet<String> = remote["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(after, layers);
    assert_eq!(after.len(), 3);

    // The ID is the config digest, before the push and after it.
    let raw = json(skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{lazy}"),
    ]));
    let config = raw["config"]["digest"].as_str().unwrap();
    assert_eq!(id, format!("{config}\n"));
    let mut images = kiln(&root);
    images.arg("images");
    let listed = stdout(images);
    let short = &config["sha256:".len().."sha256:".len() + 12];
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("127.0.0.1:5000/kiln-test/lazy ") && l.contains(short)),
        "{listed}"
    );
    // A second push compresses nothing again and names the same manifest.
    let mut push = kiln(&root);
    push.args(["push", &lazy]);
    assert_eq!(stdout(push), pushed);
    assert_eq!(gzip_blobs(&root), after);

    // The same build in another store, compressed at build time and pushed by the build.
    let other = tmp.path().join("eager");
    let mut build = kiln(&other);
    build
        .args([
            "build",
            "--output",
            &format!("type=image,name={eager},push=true"),
            // The image alone, as `kiln push` sends it (a build's push adds its provenance).
            "--provenance=false",
        ])
        .arg(&context)
        .env("SOURCE_DATE_EPOCH", EPOCH);
    ok(build);
    let eager_remote = json(skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{eager}"),
    ]));
    assert_eq!(eager_remote["Digest"], remote["Digest"]);
    assert_eq!(eager_remote["Layers"], remote["Layers"]);
}
