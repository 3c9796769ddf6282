//! Pulling from real registries: the shared test registry and private ones.

mod common;

use std::sync::{Arc, Mutex};

use kiln_cache::{Config, Digest, Error, PullEvent, PullOptions, PullProgress, Store, pull};
use sha2::Digest as _;

#[derive(Default)]
struct Events(Mutex<Vec<PullEvent>>);

impl PullProgress for Events {
    fn event(&self, event: PullEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn options(config: &str) -> PullOptions {
    PullOptions {
        config: Config::parse(config, std::path::Path::new("kiln.toml")).unwrap(),
        credentials: std::sync::Arc::new(kiln_cache::DockerConfigFile::anonymous()),
        ..PullOptions::default()
    }
}

/// Credentials from the Docker config file `path`, with credential helpers in `helpers`.
fn docker_file(
    path: &std::path::Path,
    helpers: Option<std::ffi::OsString>,
) -> Arc<dyn kiln_cache::Credentials> {
    Arc::new(kiln_cache::DockerConfigFile {
        path: Some(path.to_owned()),
        helper_path: helpers,
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn digest(text: &str) -> Digest {
    text.parse().unwrap()
}

/// Checks a pulled busybox against the test layout, independently of kiln.
fn assert_busybox(store: &Store, image: &kiln_cache::ImageRecord) {
    let layout = common::busybox_layout();
    assert_eq!(
        image.manifest.to_string(),
        kiln_testdata::BUSYBOX_MANIFEST_DIGEST
    );
    assert_eq!(image.manifest.to_string(), layout.manifest);
    assert_eq!(image.config.to_string(), layout.config);
    let layers: Vec<String> = image.layers.iter().map(ToString::to_string).collect();
    assert_eq!(layers, layout.layers);
    let diff_ids: Vec<String> = image.diff_ids.iter().map(ToString::to_string).collect();
    assert_eq!(diff_ids, layout.diff_ids);
    // Each stored layer decompresses to its diff ID.
    for (layer, diff_id) in image.layers.iter().zip(&layout.diff_ids) {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(store.open_blob(layer).unwrap()),
            &mut plain,
        )
        .unwrap();
        assert_eq!(
            &format!("sha256:{}", hex::encode(sha2::Sha256::digest(&plain))),
            diff_id
        );
    }
    let chain = image.chain_id.expect("unpacked");
    let lowers = store.lowers(&chain.to_string()).unwrap();
    assert_eq!(lowers.len(), layout.layers.len());
    let busybox = lowers.last().unwrap().join("bin/busybox");
    assert!(
        fs_err::metadata(&busybox).unwrap().len() > 100_000,
        "{}",
        busybox.display()
    );
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

#[test]
fn pull_from_the_test_registry() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let events = Events::default();
    let rt = runtime();
    let pulled = rt
        .block_on(pull(
            Arc::clone(&store),
            "127.0.0.1:5000/library/busybox:latest",
            &options(""),
            &events,
        ))
        .unwrap();
    assert_eq!(pulled.image.name, "127.0.0.1:5000/library/busybox:latest");
    assert_eq!(pulled.previous, None);
    assert_busybox(&store, &pulled.image);
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .contains(&PullEvent::LayerDownloaded(pulled.image.layers[0]))
    );

    // Again: nothing downloaded, same image.
    let events = Events::default();
    let again = rt
        .block_on(pull(
            Arc::clone(&store),
            "127.0.0.1:5000/library/busybox",
            &options(""),
            &events,
        ))
        .unwrap();
    assert_eq!(again.previous, Some(pulled.image.manifest));
    let events = events.0.lock().unwrap();
    assert!(events.contains(&PullEvent::LayerExists(pulled.image.layers[0])));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, PullEvent::LayerDownloading(_)))
    );

    // By digest.
    let by_digest = format!(
        "127.0.0.1:5000/library/busybox@{}",
        kiln_testdata::BUSYBOX_MANIFEST_DIGEST
    );
    let pinned = rt
        .block_on(pull(Arc::clone(&store), &by_digest, &options(""), &()))
        .unwrap();
    assert_eq!(pinned.image.name, by_digest);
    let wrong = format!(
        "127.0.0.1:5000/library/busybox@{}",
        Digest::from_bytes(b"not it")
    );
    assert!(
        rt.block_on(pull(Arc::clone(&store), &wrong, &options(""), &()))
            .is_err()
    );
    assert_eq!(store.images().unwrap().len(), 2);
}

#[test]
fn pull_through_a_docker_io_mirror() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let events = Events::default();
    let config = "[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:5000\"]\n";
    let pulled = runtime()
        .block_on(pull(
            Arc::clone(&store),
            "busybox",
            &options(config),
            &events,
        ))
        .unwrap();
    assert_eq!(pulled.image.name, "docker.io/library/busybox:latest");
    assert_busybox(&store, &pulled.image);
    let first = events.0.lock().unwrap()[0].clone();
    assert_eq!(
        first,
        PullEvent::Source {
            reference: "docker.io/library/busybox:latest".to_owned(),
            host: "127.0.0.1:5000".to_owned()
        }
    );
}

#[test]
fn dead_mirror_falls_back_to_the_next_source() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let config = format!("[registry.\"docker.io\"]\nmirrors = [\"{dead}\", \"127.0.0.1:5000\"]\n");
    let pulled = runtime()
        .block_on(pull(
            Arc::clone(&store),
            "docker.io/library/busybox:latest",
            &options(&config),
            &(),
        ))
        .unwrap();
    assert_eq!(
        pulled.image.manifest,
        digest(kiln_testdata::BUSYBOX_MANIFEST_DIGEST)
    );
}

#[test]
fn corrupted_blob_in_the_registry_is_detected() {
    let registry = common::PrivateRegistry::start();
    if !common::require(registry.is_some(), "docker-registry and skopeo") {
        return;
    }
    let registry = registry.unwrap();
    registry.push_busybox();
    let layout = common::busybox_layout();
    let layer = layout.layers[0].clone();
    let data_file = registry.blob_data(layer.strip_prefix("sha256:").unwrap());
    let mut data = fs_err::read(&data_file).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff; // same size, different content
    fs_err::write(&data_file, &data).unwrap();

    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let reference = format!("{}/library/busybox:latest", registry.host);
    let err = runtime()
        .block_on(pull(Arc::clone(&store), &reference, &options(""), &()))
        .unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(chain.contains(&layer), "{chain}");
    assert!(chain.to_lowercase().contains("digest"), "{chain}");
    assert!(
        matches!(err, Error::Download { .. } | Error::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(
        !store.has_blob(&digest(&layer)),
        "the corrupt layer was stored"
    );
    assert!(store.images().unwrap().is_empty());
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
    assert!(
        fs_err::read_dir(root.path().join("ingest"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn basic_credentials_from_docker_config() {
    let registry = common::PrivateRegistry::start_with(Some(("alice", "s3cret")));
    if !common::require(registry.is_some(), "docker-registry, skopeo and htpasswd") {
        return;
    }
    let registry = registry.unwrap();
    registry.push_busybox();
    let reference = format!("{}/library/busybox:latest", registry.host);
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let rt = runtime();

    // Anonymous: refused.
    let err = rt
        .block_on(pull(Arc::clone(&store), &reference, &options(""), &()))
        .unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "registry {} refused anonymous access (no credentials for it in the Docker config)",
            registry.host
        )),
        "{err}"
    );
    assert!(store.images().unwrap().is_empty());

    let docker = root.path().join("docker-config.json");
    let write_auth = |secret: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(secret);
        let text = format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host
        );
        fs_err::write(&docker, text).unwrap();
    };
    let with_docker = || PullOptions {
        credentials: docker_file(&docker, None),
        ..options("")
    };
    // A wrong password: refused.
    write_auth("alice:wrong");
    let err = rt
        .block_on(pull(Arc::clone(&store), &reference, &with_docker(), &()))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("refused the credentials of user `alice`"),
        "{err}"
    );
    assert!(store.images().unwrap().is_empty());

    // The right credentials from config.json: pulled.
    write_auth("alice:s3cret");
    let pulled = rt
        .block_on(pull(Arc::clone(&store), &reference, &with_docker(), &()))
        .unwrap();
    assert_busybox(&store, &pulled.image);
}

/// Copies the busybox layout and puts an image index (linux/amd64 → busybox) on top of it.
fn layout_with_index(dir: &std::path::Path) -> String {
    let src = kiln_testdata::busybox_layout();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let layout = dir.join("busybox");
    let manifest_digest = kiln_testdata::BUSYBOX_MANIFEST_DIGEST;
    let manifest_size = fs_err::metadata(
        layout
            .join("blobs/sha256")
            .join(manifest_digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
    .len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"os": "linux", "architecture": "amd64"}
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}
            }
        ]
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let hex = hex::encode(sha2::Sha256::digest(&bytes));
    fs_err::write(layout.join("blobs/sha256").join(&hex), &bytes).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    fs_err::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    format!("sha256:{hex}")
}

#[test]
fn index_selects_the_platform_manifest() {
    let registry = common::PrivateRegistry::start();
    if !common::require(registry.is_some(), "docker-registry and skopeo") {
        return;
    }
    let registry = registry.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let index_digest = layout_with_index(scratch.path());
    let status = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!(
            "oci:{}:latest",
            scratch.path().join("busybox").display()
        ))
        .arg(format!("docker://{}/library/multi:latest", registry.host))
        .status()
        .unwrap();
    assert!(status.success());

    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let rt = runtime();
    let reference = format!("{}/library/multi:latest", registry.host);
    let pulled = rt
        .block_on(pull(Arc::clone(&store), &reference, &options(""), &()))
        .unwrap();
    assert_eq!(pulled.image.index, Some(digest(&index_digest)));
    assert_busybox(&store, &pulled.image);

    let other_platform = PullOptions {
        architecture: "riscv64".to_owned(),
        ..options("")
    };
    let fresh_root = tempfile::tempdir().unwrap();
    let fresh = Arc::new(Store::open(fresh_root.path()).unwrap());
    match rt.block_on(pull(fresh, &reference, &other_platform, &())) {
        Err(Error::NoMatchingPlatform { platform, .. }) => assert_eq!(platform, "linux/riscv64"),
        other => panic!("expected no matching platform, got {other:?}"),
    }

    // `arm/v7` falls back to the index's `arm/v6` entry as containerd's matcher does; `arm/v5`
    // has nothing to run.
    let arm_v7 = PullOptions {
        architecture: "arm/v7".to_owned(),
        ..options("")
    };
    let fresh_root = tempfile::tempdir().unwrap();
    let fresh = Arc::new(Store::open(fresh_root.path()).unwrap());
    let pulled = rt
        .block_on(pull(Arc::clone(&fresh), &reference, &arm_v7, &()))
        .unwrap();
    assert_eq!(pulled.image.index, Some(digest(&index_digest)));
    assert_busybox(&fresh, &pulled.image);
    let arm_v5 = PullOptions {
        architecture: "arm/v5".to_owned(),
        ..options("")
    };
    let fresh_root = tempfile::tempdir().unwrap();
    let fresh = Arc::new(Store::open(fresh_root.path()).unwrap());
    match rt.block_on(pull(fresh, &reference, &arm_v5, &())) {
        Err(Error::NoMatchingPlatform { platform, .. }) => assert_eq!(platform, "linux/arm/v5"),
        other => panic!("expected no matching platform, got {other:?}"),
    }
}

#[test]
fn corrupted_manifest_in_the_registry_is_detected() {
    let registry = common::PrivateRegistry::start();
    if !common::require(registry.is_some(), "docker-registry and skopeo") {
        return;
    }
    let registry = registry.unwrap();
    registry.push_busybox();
    let manifest = kiln_testdata::BUSYBOX_MANIFEST_DIGEST;
    let data_file = registry.blob_data(manifest.strip_prefix("sha256:").unwrap());
    let text = fs_err::read_to_string(&data_file).unwrap();
    // Change one digit of a size: still a valid manifest, but not the one the tag names.
    let at = text.find("\"size\":").unwrap() + 7;
    let digit = text[at..].find(|c: char| c.is_ascii_digit()).unwrap() + at;
    let mut bytes = text.into_bytes();
    bytes[digit] = if bytes[digit] == b'9' {
        b'1'
    } else {
        bytes[digit] + 1
    };
    fs_err::write(&data_file, &bytes).unwrap();

    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let reference = format!("{}/library/busybox:latest", registry.host);
    match runtime().block_on(pull(Arc::clone(&store), &reference, &options(""), &())) {
        Err(Error::DigestMismatch {
            what,
            expected,
            computed,
        }) => {
            assert!(what.contains("manifest"), "{what}");
            assert_eq!(expected, digest(manifest));
            assert_eq!(
                computed.to_string(),
                format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
            );
        }
        other => panic!("expected a manifest digest mismatch, got {other:?}"),
    }
    assert!(store.images().unwrap().is_empty());
    assert!(store.blob_records().unwrap().is_empty());
}

fn docker_config_with(path: &std::path::Path, host: &str, user_password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(user_password);
    fs_err::write(
        path,
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
}

#[test]
fn bearer_token_challenge_with_docker_credentials() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let proxy = common::TokenProxy::start(common::TEST_REGISTRY, Some(("alice", "s3cret")));
    let reference = format!("{}/library/busybox:latest", proxy.host);
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let rt = runtime();
    let docker = root.path().join("docker-config.json");
    let with_docker = || PullOptions {
        credentials: docker_file(&docker, None),
        ..options("")
    };

    // No credentials: the token service refuses, and says so.
    let err = rt
        .block_on(pull(Arc::clone(&store), &reference, &with_docker(), &()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Authentication { credentials, reason, .. }
            if credentials.starts_with("anonymous") && reason == "invalid username or password"),
        "{err:?}"
    );

    // A wrong password: refused, naming the user and the registry.
    docker_config_with(&docker, &proxy.host, "alice:wrong");
    let err = rt
        .block_on(pull(Arc::clone(&store), &reference, &with_docker(), &()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "registry {} refused the credentials of user `alice`: invalid username or password",
            proxy.host
        )
    );
    assert!(store.images().unwrap().is_empty());

    // The right password: a token from the realm, then every request with it.
    docker_config_with(&docker, &proxy.host, "alice:s3cret");
    let seen_before = proxy.requests().len();
    let pulled = rt
        .block_on(pull(Arc::clone(&store), &reference, &with_docker(), &()))
        .unwrap();
    assert_busybox(&store, &pulled.image);
    let requests = &proxy.requests()[seen_before..];
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        )
    };
    let token_requests: Vec<_> = requests
        .iter()
        .filter(|(line, _)| line.starts_with("GET /token?"))
        .collect();
    assert!(!token_requests.is_empty(), "{requests:?}");
    assert!(
        token_requests
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some(basic.as_str()))
    );
    let layout = common::busybox_layout();
    for wanted in [
        "GET /v2/library/busybox/manifests/latest".to_owned(),
        format!("GET /v2/library/busybox/blobs/{}", layout.config),
        format!("GET /v2/library/busybox/blobs/{}", layout.layers[0]),
    ] {
        let bearer = requests.iter().any(|(line, auth)| {
            line == &wanted
                && auth
                    .as_deref()
                    .is_some_and(|a| a.starts_with("Bearer token-"))
        });
        assert!(
            bearer,
            "no `{wanted}` with the bearer token in {requests:?}"
        );
    }
}

#[test]
fn bearer_token_challenge_anonymous() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let proxy = common::TokenProxy::start(common::TEST_REGISTRY, None);
    let reference = format!("{}/library/busybox", proxy.host);
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let pulled = runtime()
        .block_on(pull(Arc::clone(&store), &reference, &options(""), &()))
        .unwrap();
    assert_busybox(&store, &pulled.image);
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|(line, auth)| line.starts_with("GET /token?") && auth.is_none()),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(
            |(line, auth)| line == "GET /v2/library/busybox/manifests/latest"
                && auth
                    .as_deref()
                    .is_some_and(|a| a.starts_with("Bearer token-"))
        ),
        "{requests:?}"
    );
}

#[test]
fn credential_helper_answers_the_bearer_challenge() {
    use std::os::unix::fs::PermissionsExt as _;
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let proxy =
        common::TokenProxy::start(common::TEST_REGISTRY, Some(("helped", "pw-from-helper")));
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    fs_err::create_dir(&bin).unwrap();
    // The helper answers only for the proxy's host, which it must be given on stdin.
    let helper = bin.join("docker-credential-test");
    fs_err::write(
        &helper,
        format!(
            "#!/bin/sh\nread -r server\n[ \"$1 $server\" = \"get {}\" ] || {{ echo \"credentials not found\"; exit 1; }}\necho '{{\"Username\":\"helped\",\"Secret\":\"pw-from-helper\"}}'\n",
            proxy.host
        ),
    )
    .unwrap();
    fs_err::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = root.path().join("config.json");
    fs_err::write(
        &docker,
        format!(r#"{{"credHelpers": {{"{}": "test"}}}}"#, proxy.host),
    )
    .unwrap();
    let store = Arc::new(Store::open(root.path().join("store")).unwrap());
    let options = PullOptions {
        credentials: docker_file(&docker, Some(bin.into_os_string())),
        ..options("")
    };
    let reference = format!("{}/library/busybox:latest", proxy.host);
    let pulled = runtime()
        .block_on(pull(Arc::clone(&store), &reference, &options, &()))
        .unwrap();
    assert_busybox(&store, &pulled.image);

    // Without the helper on the search path the pull fails, saying why.
    let options = PullOptions {
        credentials: docker_file(&docker, Some(root.path().join("empty").into_os_string())),
        ..options
    };
    let fresh = Arc::new(Store::open(root.path().join("fresh")).unwrap());
    let err = runtime()
        .block_on(pull(fresh, &reference, &options, &()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "credential helper docker-credential-test for {}: not found in the search path",
            proxy.host
        )
    );
}

/// A repository name no other test run uses.
fn unique_repository(what: &str) -> String {
    format!("kiln-test/{what}-{:016x}", fastrand::u64(..))
}

fn small_layer() -> (Vec<u8>, String) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_path("hello").unwrap();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header.set_cksum();
    builder.append(&header, &b"hello"[..]).unwrap();
    common::gzip_layer(&builder.into_inner().unwrap())
}

/// Entries of the store's snapshot directories (committed and temporary ones).
fn snapshot_dirs(root: &std::path::Path) -> Vec<String> {
    let mut out = common::list_files(&root.join("snapshots"));
    out.retain(|p| p != "committed" && p != "active");
    out
}

#[test]
fn gzip_bomb_in_the_registry_is_refused_and_nothing_kept() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let image = common::craft_image(vec![common::gzip_bomb(3 << 30)]);
    let repository = unique_repository("bomb");
    common::push_image(common::TEST_REGISTRY, &repository, "latest", &image);
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let reference = format!("{}/{repository}:latest", common::TEST_REGISTRY);
    match runtime().block_on(pull(Arc::clone(&store), &reference, &options(""), &())) {
        Err(Error::LayerLimit {
            limit: kiln_cache::LayerLimit::CompressionRatio,
            read,
            ..
        }) => assert!(read < 128 << 20, "{read}"),
        other => panic!("expected the compression ratio limit, got {other:?}"),
    }
    assert!(store.images().unwrap().is_empty());
    assert_eq!(snapshot_dirs(root.path()), Vec::<String>::new());
    // What is left is the 3 MB blob and the metadata, nothing unpacked.
    let used = common::disk_use(root.path());
    assert!(used < 32 << 20, "{used} bytes in the store");
}

#[test]
fn configured_limits_apply_to_pulls() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let image = common::craft_image(vec![small_layer()]);
    let repository = unique_repository("limits");
    common::push_image(common::TEST_REGISTRY, &repository, "latest", &image);
    let config = options("[unpack]\nmax-layer-entries = 0\n");
    assert_eq!(config.config.unpack.max_layer_entries, 0);
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(root.path())
            .unwrap()
            .with_unpack_limits(config.config.unpack),
    );
    let reference = format!("{}/{repository}:latest", common::TEST_REGISTRY);
    match runtime().block_on(pull(Arc::clone(&store), &reference, &config, &())) {
        Err(Error::LayerLimit {
            limit: kiln_cache::LayerLimit::Entries,
            max: 0,
            ..
        }) => {}
        other => panic!("expected the entry limit, got {other:?}"),
    }
    assert_eq!(snapshot_dirs(root.path()), Vec::<String>::new());
    // The default limits take it.
    let fresh = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(fresh.path()).unwrap());
    runtime()
        .block_on(pull(store, &reference, &options(""), &()))
        .unwrap();
}

#[test]
fn descriptor_sizes_are_verified() {
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) {
        return;
    }
    let honest = common::craft_image(vec![small_layer()]);
    let repository = unique_repository("sizes");
    common::push_image(common::TEST_REGISTRY, &repository, "honest", &honest);
    let reference = |tag: &str| format!("{}/{repository}:{tag}", common::TEST_REGISTRY);
    let lie = |path: &[&str], by: i64, tag: &str| {
        let mut image = common::craft_image(vec![small_layer()]);
        let mut field = &mut image.manifest;
        for key in path {
            field = if let Ok(i) = key.parse::<usize>() {
                &mut field[i]
            } else {
                &mut field[*key]
            };
        }
        *field = serde_json::json!(field.as_i64().unwrap() + by);
        common::push_image(common::TEST_REGISTRY, &repository, tag, &image);
    };
    lie(&["config", "size"], 1, "config-longer");
    lie(&["config", "size"], -1, "config-shorter");
    lie(&["layers", "0", "size"], -7, "layer-shorter");
    lie(&["layers", "0", "size"], 3, "layer-longer");

    for (tag, what) in [
        ("config-longer", "blob"),
        ("config-shorter", "blob"),
        ("layer-shorter", "blob"),
        ("layer-longer", "blob"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(root.path()).unwrap());
        match runtime().block_on(pull(Arc::clone(&store), &reference(tag), &options(""), &())) {
            Err(Error::SizeMismatch { what: found, .. }) => {
                assert!(found.contains(what), "{tag}: {found}");
            }
            other => panic!("{tag}: expected a size mismatch, got {other:?}"),
        }
        assert!(store.images().unwrap().is_empty(), "{tag}");
    }

    // With the honest image's blobs stored already, the lies are still refused.
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    runtime()
        .block_on(pull(
            Arc::clone(&store),
            &reference("honest"),
            &options(""),
            &(),
        ))
        .unwrap();
    for (tag, what) in [("config-longer", "config"), ("layer-shorter", "layer")] {
        match runtime().block_on(pull(Arc::clone(&store), &reference(tag), &options(""), &())) {
            Err(Error::SizeMismatch { what: found, .. }) => {
                assert!(found.starts_with(what), "{tag}: {found}");
            }
            other => panic!("{tag}: expected a size mismatch, got {other:?}"),
        }
    }
    assert_eq!(store.images().unwrap().len(), 1);
}

#[test]
fn devices_fifos_and_setuid_files_in_layers_are_kept() {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    if !common::require(
        common::registry_up(common::TEST_REGISTRY),
        "the test registry at 127.0.0.1:5000",
    ) || !common::require(common::is_root(), "root (mknod)")
    {
        return;
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, mode, major, minor) in [
        ("dev/null", tar::EntryType::Char, 0o666, 1, 3),
        ("dev/loop0", tar::EntryType::Block, 0o660, 7, 0),
        ("run/pipe", tar::EntryType::Fifo, 0o600, 0, 0),
        ("bin/su", tar::EntryType::Regular, 0o4755, 0, 0),
        ("bin/wall", tar::EntryType::Regular, 0o2755, 0, 0),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).unwrap();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        header.set_cksum();
        builder.append(&header, std::io::empty()).unwrap();
    }
    let image = common::craft_image(vec![common::gzip_layer(&builder.into_inner().unwrap())]);
    let repository = unique_repository("devices");
    common::push_image(common::TEST_REGISTRY, &repository, "latest", &image);
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let reference = format!("{}/{repository}:latest", common::TEST_REGISTRY);
    let pulled = runtime()
        .block_on(pull(Arc::clone(&store), &reference, &options(""), &()))
        .unwrap();
    let lowers = store
        .lowers(&pulled.image.chain_id.unwrap().to_string())
        .unwrap();
    let layer = &lowers[0];
    let meta = |p: &str| fs_err::symlink_metadata(layer.join(p)).unwrap();
    assert!(meta("dev/null").file_type().is_char_device());
    assert_eq!(meta("dev/null").rdev(), nix::sys::stat::makedev(1, 3));
    assert!(meta("dev/loop0").file_type().is_block_device());
    assert_eq!(meta("dev/loop0").rdev(), nix::sys::stat::makedev(7, 0));
    assert!(meta("run/pipe").file_type().is_fifo());
    assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(meta("bin/wall").mode() & 0o7777, 0o2755);
    // Only root reaches the snapshots.
    assert_eq!(
        fs_err::metadata(root.path().join("snapshots"))
            .unwrap()
            .mode()
            & 0o777,
        0o700
    );
    // Writing the layer again from the snapshot keeps them, bits and device numbers.
    let (_, blob) = kiln_cache::write_layer(
        layer,
        kiln_cache::DiffSource::OverlayUpper,
        &kiln_cache::LayerOptions {
            compression: kiln_cache::Compression::Uncompressed,
            ..kiln_cache::LayerOptions::default()
        },
        Vec::new(),
    )
    .unwrap();
    let mut found = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(blob.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        found.insert(
            entry.path().unwrap().display().to_string(),
            (
                header.entry_type(),
                header.mode().unwrap() & 0o7777,
                header.device_major().ok().flatten(),
                header.device_minor().ok().flatten(),
            ),
        );
    }
    assert_eq!(
        found["dev/null"],
        (tar::EntryType::Char, 0o666, Some(1), Some(3))
    );
    assert_eq!(
        found["dev/loop0"],
        (tar::EntryType::Block, 0o660, Some(7), Some(0))
    );
    assert_eq!(found["run/pipe"].0, tar::EntryType::Fifo);
    assert_eq!(found["bin/su"].1, 0o4755);
    assert_eq!(found["bin/wall"].1, 0o2755);
}
