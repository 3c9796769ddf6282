//! `--output type=oci|docker,tar=false,dest=DIR` through `kiln daemon` (issue 14): the daemon
//! writes the image's blobs into the client's directory through the content store the client
//! serves on its session (`export`), and the client records the image in the directory's
//! `index.json`, from buildctl as from kiln's own client; the layout is the one an in-process
//! `kiln build` writes. Needs buildctl, root and the test registry; skips saying why, or fails
//! under `KILN_TEST_REQUIRE_ALL=1`.

use std::path::Path;
use std::process::Command;

use crate::common::daemon::Daemon;
use crate::common::{assert_ok, text};
use crate::daemon::{IMAGE, buildctl_dockerfile};

/// The image's time, so that the daemon's builds and the in-process one make the same image.
const EPOCH: &str = "1700000000";

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
}

/// The only entry of the layout `dir`'s `index.json`, after checking that every blob the image
/// names is in `dir` with its size and digest; answers the entry and the manifest.
fn checked_layout(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    assert_eq!(
        fs_err::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = json(&dir.join("index.json"));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    let blob = |descriptor: &serde_json::Value| {
        let digest = descriptor["digest"].as_str().unwrap();
        let path = dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let data = fs_err::read(&path).unwrap();
        assert_eq!(data.len() as u64, descriptor["size"].as_u64().unwrap());
        assert_eq!(kiln_llb::Digest::from_bytes(&data).to_string(), digest);
        data
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&entries[0])).unwrap();
    blob(&manifest["config"]);
    let layers = manifest["layers"].as_array().unwrap();
    assert!(
        layers.len() >= 2,
        "the base and the build's layers: {manifest}"
    );
    for layer in layers {
        blob(layer);
    }
    (entries[0].clone(), manifest)
}

/// The names of the files in the layout `dir`'s `blobs/sha256`, sorted.
fn blob_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn serial_daemon_writes_image_layouts_into_the_clients_directory() {
    if !crate::common::ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let Some(daemon) = Daemon::start_with_env(
        dir.path(),
        &root,
        None,
        &[],
        &[("SOURCE_DATE_EPOCH", Path::new(EPOCH))],
    ) else {
        return;
    };
    let context = dir.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    let marker = format!("layout-{}-{}", std::process::id(), fastrand::u64(..));
    fs_err::write(
        context.join("Dockerfile"),
        format!("FROM {IMAGE}\nCOPY hello.txt /hello.txt\nRUN echo {marker} > /marker\n"),
    )
    .unwrap();
    fs_err::write(context.join("hello.txt"), "hello\n").unwrap();
    let name = "example.com/kiln/layout:1";

    // buildctl: the layout lands in its directory, its index.json names the image.
    let oci = dir.path().join("oci");
    let metadata = dir.path().join("oci.json");
    assert_ok(buildctl_dockerfile(
        &daemon,
        &context,
        &[
            "--output",
            &format!("type=oci,tar=false,dest={},name={name}", oci.display()),
            "--metadata-file",
            metadata.to_str().unwrap(),
        ],
    ));
    let digest = json(&metadata)["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let (entry, manifest) = checked_layout(&oci);
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(entry["annotations"]["io.containerd.image.name"], name);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // Other tools read it.
    let inspected = assert_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}", oci.display()))
            .output()
            .unwrap(),
    );
    let inspected: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    let tags = assert_ok(
        Command::new("umoci")
            .args(["ls", "--layout"])
            .arg(&oci)
            .output()
            .unwrap(),
    );
    assert_eq!(String::from_utf8(tags.stdout).unwrap(), "1\n");

    // type=docker,tar=false: an OCI layout of an image in docker's media types.
    let docker = dir.path().join("docker");
    let docker_metadata = dir.path().join("docker.json");
    assert_ok(buildctl_dockerfile(
        &daemon,
        &context,
        &[
            "--output",
            &format!("type=docker,tar=false,dest={}", docker.display()),
            "--metadata-file",
            docker_metadata.to_str().unwrap(),
        ],
    ));
    let (entry, manifest) = checked_layout(&docker);
    assert_eq!(
        entry["digest"],
        json(&docker_metadata)["containerimage.digest"]
    );
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_ne!(entry["digest"], digest.as_str());

    // kiln's own client: the same image, the index.json an in-process build writes.
    let client = dir.path().join("client-oci");
    let output = format!("type=oci,tar=false,dest={},name={name}", client.display());
    let built = daemon.kiln(
        &dir.path().join("client-root"),
        &[
            "build",
            "--progress=plain",
            "-o",
            &output,
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert_ok(built);
    let (entry, _) = checked_layout(&client);
    assert_eq!(entry["digest"], digest.as_str());
    drop(daemon);

    // In process, on the daemon's store: the same layout, byte for byte.
    let local = dir.path().join("local-oci");
    let output = format!("type=oci,tar=false,dest={},name={name}", local.display());
    let in_process = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args(["build", "-o", &output])
        .arg(&context)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("KILN_CONFIG")
        .env_remove("KILN_HOST")
        .output()
        .unwrap();
    assert!(in_process.status.success(), "{}", text(&in_process));
    checked_layout(&local);
    assert_eq!(
        fs_err::read(local.join("index.json")).unwrap(),
        fs_err::read(client.join("index.json")).unwrap()
    );
    assert_eq!(blob_names(&local), blob_names(&client));
}
