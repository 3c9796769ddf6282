//! `--cache-to` / `--cache-from` (BuildKit's cache format): export from one store, import into
//! an empty one, against a local OCI layout and the test registry (through a proxy that
//! records every request, to count what is downloaded).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{assert_ok, ready, recording_registry, text};

/// A two-stage build: the first stage makes a file the final stage copies, so with
/// `mode=max` the cache holds a layer that a build from the cache never needs.
const DOCKERFILE: &str = "FROM 127.0.0.1:5000/library/busybox:latest AS build\n\
RUN head -c 100000 /dev/urandom > /big && echo made > /made\n\
FROM 127.0.0.1:5000/library/busybox:latest\n\
COPY --from=build /made /made\n\
COPY hello.txt /hello.txt\n\
RUN cat /made /hello.txt > /both\n";

fn context(dir: &Path, marker: &str) -> std::path::PathBuf {
    let context = dir.join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), DOCKERFILE).unwrap();
    fs_err::write(context.join("hello.txt"), format!("hello {marker}\n")).unwrap();
    context
}

/// `kiln --root ROOT build --progress=plain ARGS CONTEXT`, without `SOURCE_DATE_EPOCH`: an image
/// built from the cache is dated by the cache, so it equals the image that exported it.
fn build(root: &Path, context: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain"])
        .args(args)
        .arg(context)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// The steps of a plain progress log that ran (`DONE`) and that were cached, by name.
fn steps(log: &str) -> (Vec<String>, Vec<String>) {
    let mut names = BTreeMap::new();
    let (mut ran, mut cached) = (Vec::new(), Vec::new());
    for line in log.lines() {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if rest.starts_with('[') {
            names.insert(id.to_owned(), rest.to_owned());
        } else if rest == "CACHED" || rest.starts_with("DONE") {
            let name = names.get(id).cloned().unwrap_or_default();
            match rest {
                "CACHED" => cached.push(name),
                _ => ran.push(name),
            }
        }
    }
    (ran, cached)
}

/// `--cache-to` into the OCI layout `cache`, every result (`mode=max`).
fn to_local(cache: &Path) -> String {
    format!("type=local,dest={},mode=max", cache.display())
}

/// `--cache-from` the OCI layout `cache`.
fn from_local(cache: &Path) -> String {
    format!("type=local,src={}", cache.display())
}

/// Fails unless the progress `log` shows no RUN step run and the last one (`RUN cat`) cached.
fn assert_every_run_cached(log: &str) {
    let (ran, cached) = steps(log);
    assert!(ran.iter().all(|s| !s.contains("RUN")), "{log}");
    assert!(cached.iter().any(|s| s.contains("RUN cat")), "{log}");
}

/// The manifest digest of the image `--output type=oci,dest=FILE` wrote (its index's one
/// entry).
fn oci_digest(tar: &Path) -> String {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg("index.json")
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// The image config in the OCI archive `tar`, for messages.
fn oci_config(tar: &Path) -> String {
    let blob = |digest: &str| {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(tar)
            .arg(format!(
                "blobs/sha256/{}",
                digest.trim_start_matches("sha256:")
            ))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let manifest = blob(&oci_digest(tar));
    blob(manifest["config"]["digest"].as_str().unwrap()).to_string()
}

/// The blob digests the recorded requests downloaded (`GET …/blobs/DIGEST 200`).
fn blob_gets(seen: &[String]) -> Vec<String> {
    seen.iter()
        .filter(|r| r.starts_with("GET ") && r.ends_with(" 200"))
        .filter_map(|r| {
            r.split(' ')
                .nth(1)?
                .split("/blobs/")
                .nth(1)
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_local_cache_export_fills_an_empty_store_with_every_step_cached_and_the_same_image() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = context(tmp.path(), "local");
    let cache = tmp.path().join("cache");
    let (first, second) = (tmp.path().join("first.tar"), tmp.path().join("second.tar"));
    let cold = assert_ok(build(
        &tmp.path().join("a"),
        &context,
        &[
            "--cache-to",
            &to_local(&cache),
            "--output",
            &format!("type=oci,dest={}", first.display()),
        ],
    ));
    let (ran, _) = steps(&text(&cold));
    assert!(ran.iter().any(|s| s.contains("RUN cat")), "{}", text(&cold));

    // The layout is BuildKit's: index.json → image manifest → cache config, every layer
    // described with its diff ID and creation time; every step's record is there (mode=max).
    let imported = kiln_cache::ImportedCache::from_local(&cache, "latest", None).unwrap();
    assert!(imported.config.records.len() >= 6, "{:#?}", imported.config);
    let with_results = imported
        .config
        .records
        .iter()
        .filter(|r| !r.results.is_empty())
        .count();
    assert!(with_results >= 4, "{:#?}", imported.config);
    for blob in imported.blobs.values() {
        assert!(
            blob.diff_id.is_some() && blob.created_at.is_some(),
            "{blob:?}"
        );
    }

    // Exporting the same graph again writes the same bytes.
    let index = fs_err::read(cache.join("index.json")).unwrap();
    assert_ok(build(
        &tmp.path().join("a"),
        &context,
        &["--cache-to", &to_local(&cache)],
    ));
    assert_eq!(fs_err::read(cache.join("index.json")).unwrap(), index);

    // A second later, so that an image dated by the build instead of the cache would differ.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let warm = assert_ok(build(
        &tmp.path().join("b"),
        &context,
        &[
            "--cache-from",
            &from_local(&cache),
            "--output",
            &format!("type=oci,dest={}", second.display()),
        ],
    ));
    assert_every_run_cached(&text(&warm));
    assert_eq!(
        oci_digest(&second),
        oci_digest(&first),
        "{}\n{}",
        oci_config(&first),
        oci_config(&second)
    );
}

#[test]
fn serial_a_registry_cache_downloads_only_the_result_s_layers() {
    if !ready() {
        return;
    }
    let (proxy, seen) = recording_registry(false);
    let tmp = tempfile::tempdir().unwrap();
    let context = context(tmp.path(), &format!("{:x}", std::process::id()));
    let reference = format!("{proxy}/kiln-test/remote-cache:{:x}", std::process::id());
    let first = tmp.path().join("first.tar");
    assert_ok(build(
        &tmp.path().join("a"),
        &context,
        &[
            "--cache-to",
            &format!("type=registry,ref={reference},mode=max"),
            "--output",
            &format!("type=oci,dest={}", first.display()),
        ],
    ));
    seen.lock().unwrap().clear();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let second = tmp.path().join("second.tar");
    let warm = assert_ok(build(
        &tmp.path().join("b"),
        &context,
        &[
            "--cache-from",
            &reference,
            "--output",
            &format!("type=oci,dest={}", second.display()),
        ],
    ));
    let (ran, _) = steps(&text(&warm));
    assert!(ran.iter().all(|s| !s.contains("RUN")), "{}", text(&warm));
    assert_eq!(
        oci_digest(&second),
        oci_digest(&first),
        "{}\n{}",
        oci_config(&first),
        oci_config(&second)
    );

    // Downloaded: the cache config and the result's own layers (its base layer is in the store
    // already, from resolving FROM), never the first stage's 100 kB layer.
    let gets = blob_gets(&seen.lock().unwrap());
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(&second)
        .arg(format!(
            "blobs/sha256/{}",
            oci_digest(&second).trim_start_matches("sha256:")
        ))
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let not_result: Vec<&String> = gets.iter().filter(|g| !layers.contains(g)).collect();
    // The only other blob fetched is the cache config.
    assert_eq!(not_result.len(), 1, "{gets:#?} vs the image's {layers:#?}");
    assert!(
        gets.len() < layers.len() + 1,
        "the base layer was downloaded again: {gets:#?}"
    );
}

#[test]
fn an_unreadable_cache_from_warns_and_a_failing_cache_to_fails_unless_ignored() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = context(tmp.path(), "errors");
    let root = tmp.path().join("root");
    let missing = tmp.path().join("missing");
    let out = assert_ok(build(
        &root,
        &context,
        &[
            "--cache-from",
            &format!("type=local,src={}", missing.display()),
        ],
    ));
    let log = text(&out);
    assert!(
        log.contains("WARNING: importing cache from") && log.contains("missing"),
        "{log}"
    );

    // Nothing listens on port 1.
    let failed = build(
        &root,
        &context,
        &[
            "--cache-to",
            "type=registry,ref=127.0.0.1:1/kiln-test/nowhere:cache",
        ],
    );
    assert!(!failed.status.success());
    assert!(
        text(&failed).contains("failed to export the build cache"),
        "{}",
        text(&failed)
    );
    let ignored = assert_ok(build(
        &root,
        &context,
        &[
            "--cache-to",
            "type=registry,ref=127.0.0.1:1/kiln-test/nowhere:cache,ignore-error=true",
        ],
    ));
    assert!(
        text(&ignored).contains("WARNING: exporting the build cache"),
        "{}",
        text(&ignored)
    );
}

#[test]
fn an_inline_cache_travels_in_the_pushed_image_config() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = context(tmp.path(), "inline");
    let name = format!(
        "127.0.0.1:5000/kiln-test/inline-cache:{:x}",
        std::process::id()
    );
    assert_ok(build(
        &tmp.path().join("a"),
        &context,
        &["--cache-to", "type=inline", "-t", &name, "--push"],
    ));
    let config = Command::new("skopeo")
        .args(["inspect", "--raw", "--config", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    assert!(
        config[kiln_cache::cacheconfig::INLINE_CACHE_KEY].is_string(),
        "{config:#}"
    );

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = format!("{name}-again");
    let warm = assert_ok(build(
        &tmp.path().join("b"),
        &context,
        &["--cache-from", &name, "-t", &again, "--push"],
    ));
    assert_every_run_cached(&text(&warm));
    // Dated by the history of the image that carried the cache: the same layers and times.
    let config_of = |name: &str| {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--config", "--tls-verify=false"])
            .arg(format!("docker://{name}"))
            .output()
            .unwrap();
        let mut config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        config
            .as_object_mut()
            .unwrap()
            .remove(kiln_cache::cacheconfig::INLINE_CACHE_KEY);
        config
    };
    assert_eq!(config_of(&again), config_of(&name));
}

#[test]
fn two_builds_exporting_to_one_ref_at_once_leave_a_valid_cache() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!(
        "127.0.0.1:5000/kiln-test/concurrent-cache:{:x}",
        std::process::id()
    );
    let builds: Vec<_> = ["one", "two"]
        .iter()
        .map(|marker| {
            let dir = tmp.path().join(marker);
            let context = context(&dir, marker);
            let reference = reference.clone();
            std::thread::spawn(move || {
                build(
                    &dir.join("root"),
                    &context,
                    &[
                        "--cache-to",
                        &format!("type=registry,ref={reference},mode=max"),
                    ],
                )
            })
        })
        .collect();
    for handle in builds {
        assert_ok(handle.join().unwrap());
    }
    // Whichever wrote last, its manifest names only blobs the registry has: a fresh store
    // imports it and one of the two contexts builds from it with every RUN cached.
    let hits: Vec<bool> = ["one", "two"]
        .iter()
        .map(|marker| {
            let dir = tmp.path().join(format!("{marker}-import"));
            let context = context(&dir, marker);
            let out = assert_ok(build(
                &dir.join("root"),
                &context,
                &["--cache-from", &reference],
            ));
            assert!(!text(&out).contains("WARNING"), "{}", text(&out));
            let (ran, cached) = steps(&text(&out));
            ran.iter().all(|s| !s.contains("RUN cat"))
                && cached.iter().any(|s| s.contains("RUN cat"))
        })
        .collect();
    assert!(hits.contains(&true), "{hits:?}");
}

#[test]
fn buildx_cache_options_index_form_zstd_tags_and_several_sources() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = context(tmp.path(), "options");
    let cache = tmp.path().join("cache");
    assert_ok(build(
        &tmp.path().join("a"),
        &context,
        &[
            "--cache-to",
            &format!(
                "type=local,dest={},mode=max,image-manifest=false,compression=zstd,tag=v1",
                cache.display()
            ),
        ],
    ));
    // image-manifest=false: the tagged entry is an index listing the blobs, config last.
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(cache.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"][kiln_cache::ANNOTATION_REF_NAME],
        "v1",
        "{index:#}"
    );
    assert_eq!(entry["mediaType"], kiln_cache::MEDIA_TYPE_OCI_INDEX);
    let digest = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let listed: serde_json::Value =
        serde_json::from_slice(&fs_err::read(cache.join("blobs/sha256").join(digest)).unwrap())
            .unwrap();
    let types: Vec<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.last(),
        Some(&kiln_cache::cacheconfig::CACHE_CONFIG_MEDIA_TYPE)
    );
    // The build's own layers are compressed with zstd for the cache; the base image's layer
    // is reused as it is (gzip) without force-compression.
    assert!(
        types.contains(&"application/vnd.oci.image.layer.v1.tar+zstd"),
        "{types:?}"
    );
    assert!(
        types.contains(&"application/vnd.oci.image.layer.v1.tar+gzip"),
        "{types:?}"
    );

    // Several sources: the unreadable one is a warning, the next one is used.
    let warm = assert_ok(build(
        &tmp.path().join("b"),
        &context,
        &[
            "--cache-from",
            &format!("type=local,src={}", tmp.path().join("nothing").display()),
            "--cache-from",
            &format!("type=local,src={},tag=v1", cache.display()),
        ],
    ));
    let log = text(&warm);
    assert!(log.contains("WARNING: importing cache from"), "{log}");
    assert_every_run_cached(&log);
}

#[test]
fn a_change_to_a_file_a_step_does_not_copy_still_hits_the_imported_cache() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = tmp.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM 127.0.0.1:5000/library/busybox:latest\n\
         COPY hello.txt /hello.txt\n\
         RUN cat /hello.txt > /both\n\
         COPY other.txt /other.txt\n",
    )
    .unwrap();
    fs_err::write(context.join("hello.txt"), "hello\n").unwrap();
    fs_err::write(context.join("other.txt"), "one\n").unwrap();
    let cache = tmp.path().join("cache");
    assert_ok(build(
        &tmp.path().join("a"),
        &context,
        &["--cache-to", &to_local(&cache)],
    ));
    // The next commit changes other.txt: the context's definition changes (it serves both
    // COPYs), the content the first COPY reads does not, so the RUN after it still hits.
    fs_err::write(context.join("other.txt"), "two\n").unwrap();
    let warm = assert_ok(build(
        &tmp.path().join("b"),
        &context,
        &["--cache-from", &from_local(&cache)],
    ));
    let log = text(&warm);
    assert_every_run_cached(&log);
    assert!(
        steps(&log).0.iter().any(|s| s.contains("COPY other.txt")),
        "{log}"
    );
}

#[test]
fn a_local_cache_whose_blobs_were_tampered_with_is_not_trusted() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let context = context(tmp.path(), "tampered");
    let cache = tmp.path().join("cache");
    assert_ok(build(
        &tmp.path().join("a"),
        &context,
        &["--cache-to", &to_local(&cache)],
    ));
    // Every layer of the cache manifest keeps its size and name but not its bytes.
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(cache.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        cache
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs_err::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for layer in layers {
        let path = blob(layer["digest"].as_str().unwrap());
        let mut bytes = fs_err::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs_err::write(&path, bytes).unwrap();
    }
    let out = tmp.path().join("out");
    let built = build(
        &tmp.path().join("b"),
        &context,
        &[
            "--cache-from",
            &from_local(&cache),
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    // The blobs are refused by their digests, the steps run again, the result is right.
    let log = text(&built);
    assert!(built.status.success(), "{log}");
    assert!(log.contains("digest mismatch for blob"), "{log}");
    let (ran, cached) = steps(&log);
    assert!(ran.iter().any(|s| s.contains("RUN head")), "{log}");
    assert!(ran.iter().any(|s| s.contains("RUN cat")), "{log}");
    assert!(!cached.iter().any(|s| s.contains("RUN")), "{log}");
    assert_eq!(
        fs_err::read_to_string(out.join("both")).unwrap(),
        "made\nhello tampered\n"
    );
    // Nothing of the tampered cache reached the store: the next build there is all cached.
    let again = assert_ok(build(&tmp.path().join("b"), &context, &[]));
    assert_every_run_cached(&text(&again));
}

/// The build of [`DOCKERFILE`] with its base image pulled through the recording registry
/// `proxy` too, so that its layer downloads are counted.
fn proxied_context(dir: &Path, proxy: &str, last_step: &str) -> std::path::PathBuf {
    let context = dir.join("proxied");
    fs_err::create_dir_all(&context).unwrap();
    let dockerfile = DOCKERFILE
        .replace("127.0.0.1:5000/", &format!("{proxy}/"))
        .replace("RUN cat /made /hello.txt > /both", last_step);
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    fs_err::write(context.join("hello.txt"), "hello lazy\n").unwrap();
    context
}

/// The manifest `reference` (`127.0.0.1:PORT/repository:tag`) names, read from the test
/// registry itself (not through the proxy, so it is not counted).
fn registry_manifest(reference: &str) -> serde_json::Value {
    let (_, path) = reference.split_once('/').unwrap();
    let (repository, tag) = path.rsplit_once(':').unwrap();
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(format!(
            "http://127.0.0.1:5000/v2/{repository}/manifests/{tag}"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{reference}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The layer digests of a manifest.
fn layers_of(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// The manifest digest a build's `--metadata-file` names.
fn metadata_digest(file: &Path) -> String {
    let metadata: serde_json::Value = serde_json::from_slice(&fs_err::read(file).unwrap()).unwrap();
    metadata["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A name no other run of the tests uses.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}-{nanos:x}", std::process::id())
}

/// A cold build through the recording registry `proxy` that pushes its image and exports
/// its cache (`mode=max`) there: the references of the image and of the cache. Pushes in
/// these tests leave out the provenance a push adds by default (as buildx), so that a
/// reference names the image manifest itself.
fn export_through(tmp: &Path, proxy: &str, context: &Path, name: &str) -> (String, String) {
    // Repositories of their own: a registry mounts or finds nothing left by an earlier run.
    let id = unique();
    let image = format!("{proxy}/kiln-test/lazy-{name}-image-{id}:1");
    let cache = format!("{proxy}/kiln-test/lazy-{name}-cache-{id}:1");
    assert_ok(build(
        &tmp.join("exporting"),
        context,
        &[
            "-t",
            &image,
            "--push",
            "--provenance=false",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
            "--metadata-file",
            &tmp.join("exporting.json").display().to_string(),
        ],
    ));
    (image, cache)
}

#[test]
fn serial_a_build_from_the_cache_pushed_to_the_same_registry_downloads_no_layer() {
    if !ready() {
        return;
    }
    let (proxy, seen) = recording_registry(false);
    let tmp = tempfile::tempdir().unwrap();
    let context = proxied_context(tmp.path(), &proxy, "RUN cat /made /hello.txt > /both");
    let (image, cache) = export_through(tmp.path(), &proxy, &context, "push");
    seen.lock().unwrap().clear();

    // Another repository of the same registry, from an empty store.
    let again = image.replace("-image-", "-again-");
    let metadata = tmp.path().join("again.json");
    let warm = assert_ok(build(
        &tmp.path().join("empty"),
        &context,
        &[
            "-t",
            &again,
            "--push",
            "--provenance=false",
            "--cache-from",
            &cache,
            "--metadata-file",
            &metadata.display().to_string(),
        ],
    ));
    assert_every_run_cached(&text(&warm));
    assert_eq!(
        metadata_digest(&metadata),
        metadata_digest(&tmp.path().join("exporting.json")),
        "{}",
        text(&warm)
    );

    // Manifests and configs only: no layer of the image or of the cache was downloaded; the
    // image's layers were mounted from the cache's and the base image's repositories.
    let seen = seen.lock().unwrap().clone();
    let mut layers = layers_of(&registry_manifest(&image));
    layers.extend(layers_of(&registry_manifest(&cache)));
    let downloaded: Vec<String> = blob_gets(&seen)
        .into_iter()
        .filter(|g| layers.contains(g))
        .collect();
    assert!(downloaded.is_empty(), "{downloaded:#?} in {seen:#?}");
    let mounted = seen
        .iter()
        .filter(|r| r.starts_with("POST ") && r.contains("mount=") && r.ends_with(" 201"))
        .count();
    assert_eq!(
        mounted,
        layers_of(&registry_manifest(&again)).len(),
        "{seen:#?}"
    );
}

#[test]
fn serial_a_build_from_the_cache_downloads_the_image_s_layers_only_when_it_must_run() {
    if !ready() {
        return;
    }
    let (proxy, seen) = recording_registry(false);
    let tmp = tempfile::tempdir().unwrap();
    let context = proxied_context(tmp.path(), &proxy, "RUN cat /made /hello.txt > /both");
    let (image, cache) = export_through(tmp.path(), &proxy, &context, "tagged");
    let cached_layers = layers_of(&registry_manifest(&cache));
    let mut layers = layers_of(&registry_manifest(&image));
    layers.sort();
    // The layers of the cache downloaded since the last look, sorted.
    let downloaded = || {
        let mut gets: Vec<String> = blob_gets(&std::mem::take(&mut *seen.lock().unwrap()))
            .into_iter()
            .filter(|g| cached_layers.contains(g))
            .collect();
        gets.sort();
        gets
    };
    downloaded();
    let id = unique();

    // `-t`: the image must run here, so its layers come, each once, and nothing else (not
    // the first stage's layer).
    let tagged = tmp.path().join("tagged");
    let name = format!("kiln-test/lazy-tagged-{id}:1");
    let warm = assert_ok(build(
        &tagged,
        &context,
        &["-t", &name, "--cache-from", &cache],
    ));
    assert_every_run_cached(&text(&warm));
    assert_eq!(downloaded(), layers);
    let run = |root: &Path, name: &str| {
        let run = assert_ok(
            crate::common::kiln(root)
                .args(["run", "--rm", name, "cat", "/both"])
                .output()
                .unwrap(),
        );
        assert_eq!(String::from_utf8_lossy(&run.stdout), "made\nhello lazy\n");
    };
    run(&tagged, &name);
    assert_eq!(downloaded(), Vec::<String>::new());

    // `-t` with `--push` to the same registry: nothing is downloaded until the image is run
    // here, as containerd's lazy layers.
    let pushed = tmp.path().join("pushed");
    let name = image.replace("-image-", "-pushed-");
    let warm = assert_ok(build(
        &pushed,
        &context,
        &[
            "-t",
            &name,
            "--push",
            "--provenance=false",
            "--cache-from",
            &cache,
        ],
    ));
    assert_every_run_cached(&text(&warm));
    assert_eq!(downloaded(), Vec::<String>::new());
    run(&pushed, &name);
    assert_eq!(downloaded(), layers);
}

#[test]
fn serial_a_step_that_runs_on_a_cache_hit_downloads_only_that_hit_s_layers() {
    if !ready() {
        return;
    }
    let (proxy, seen) = recording_registry(false);
    let tmp = tempfile::tempdir().unwrap();
    let id = unique();
    // The first stage's own base image, which the build from the cache never needs.
    let other_base = format!("{proxy}/kiln-test/lazy-other-base-{id}:1");
    let base_context = tmp.path().join("base");
    fs_err::create_dir_all(&base_context).unwrap();
    fs_err::write(
        base_context.join("Dockerfile"),
        format!("FROM {proxy}/library/busybox:latest\nRUN echo {id} > /other\n"),
    )
    .unwrap();
    assert_ok(build(
        &tmp.path().join("base-root"),
        &base_context,
        &["-t", &other_base, "--push", "--provenance=false"],
    ));
    let with_last = |last: &str| {
        let context = proxied_context(&tmp.path().join(last.len().to_string()), &proxy, last);
        let dockerfile = fs_err::read_to_string(context.join("Dockerfile")).unwrap();
        let dockerfile = dockerfile.replacen(
            &format!("{proxy}/library/busybox:latest AS build"),
            &format!("{other_base} AS build"),
            1,
        );
        fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
        context
    };
    let context = with_last("RUN cat /made /hello.txt > /both");
    let (image, cache) = export_through(tmp.path(), &proxy, &context, "step");
    seen.lock().unwrap().clear();

    // The last step changes: it runs on the cached `COPY hello.txt`, whose chain (the final
    // stage's base layer and the two copies) is all it needs; its image is pushed.
    let changed = with_last("RUN cat /made /hello.txt > /both && echo changed >> /both");
    let again = image.replace("-image-", "-again-");
    let warm = assert_ok(build(
        &tmp.path().join("empty"),
        &changed,
        &[
            "-t",
            &again,
            "--push",
            "--provenance=false",
            "--cache-from",
            &cache,
        ],
    ));
    let (ran, cached) = steps(&text(&warm));
    assert!(ran.iter().any(|s| s.contains("echo changed")), "{ran:?}");
    assert!(
        cached.iter().any(|s| s.contains("COPY hello.txt")),
        "{cached:?}"
    );

    let mut known = layers_of(&registry_manifest(&cache));
    known.extend(layers_of(&registry_manifest(&other_base)));
    let mut gets: Vec<String> = blob_gets(&seen.lock().unwrap())
        .into_iter()
        .filter(|g| known.contains(g))
        .collect();
    gets.sort();
    let mut chain = layers_of(&registry_manifest(&image));
    chain.pop(); // the old last step's layer
    chain.sort();
    assert_eq!(gets, chain, "{:#?}", seen.lock().unwrap());
}

#[test]
fn serial_a_lazy_hit_whose_cache_lies_about_a_layer_fails_the_step_that_reads_it() {
    if !ready() {
        return;
    }
    let (proxy, _seen) = recording_registry(false);
    let tmp = tempfile::tempdir().unwrap();
    let context = proxied_context(tmp.path(), &proxy, "RUN cat /made /hello.txt > /both");
    let (image, cache) = export_through(tmp.path(), &proxy, &context, "lying");

    // The same cache, each layer's descriptor naming another diff ID: its hits are found,
    // but no layer unpacks to what the cache says.
    let mut manifest = registry_manifest(&cache);
    let lie = format!("sha256:{}", "0".repeat(64));
    for layer in manifest["layers"].as_array_mut().unwrap() {
        layer["annotations"]["containerd.io/uncompressed"] = lie.clone().into();
    }
    let body = tmp.path().join("lying.json");
    fs_err::write(&body, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (_, path) = cache.split_once('/').unwrap();
    let (repository, _) = path.rsplit_once(':').unwrap();
    let put = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(format!(
            "http://127.0.0.1:5000/v2/{repository}/manifests/lying"
        ))
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", text(&put));
    let lying = cache.replace(":1", ":lying");

    // A step runs on a hit: reading it downloads and checks its layers, and fails there.
    let changed = proxied_context(
        &tmp.path().join("changed"),
        &proxy,
        "RUN cat /made /hello.txt > /both && echo changed >> /both",
    );
    let root = tmp.path().join("empty");
    let again = image.replace("-image-", "-again-");
    let out = build(
        &root,
        &changed,
        &[
            "-t",
            &again,
            "--push",
            "--provenance=false",
            "--cache-from",
            &lying,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("diff ID of layer"), "{}", text(&out));
    assert!(text(&out).contains(&lie), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    // The false hit is forgotten, not kept as a result: the same build without the cache
    // runs the step it came from (and the store holds no snapshot of it).
    let out = assert_ok(build(&root, &changed, &["-t", &again]));
    let (ran, _) = steps(&text(&out));
    assert!(
        ran.iter().any(|s| s.contains("COPY hello.txt")),
        "{}",
        text(&out)
    );
}

/// The blob `digest` of the repository of `reference` (`127.0.0.1:PORT/repository:tag`), read
/// from the test registry itself (not through the proxy, so it is not counted).
fn registry_blob(reference: &str, digest: &str) -> Vec<u8> {
    let (_, path) = reference.split_once('/').unwrap();
    let (repository, _) = path.rsplit_once(':').unwrap();
    let out = Command::new("curl")
        .args(["-sfL"])
        .arg(format!(
            "http://127.0.0.1:5000/v2/{repository}/blobs/{digest}"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{reference} {digest}: {}", text(&out));
    out.stdout
}

/// Fails unless each layer of `manifest` (in the repository of `reference`) has `media_type`,
/// starts as that compression does, and decompresses to the tar whose digest is its diff ID
/// in `diff_ids`, in order.
fn assert_layers_unpack_to(
    reference: &str,
    manifest: &serde_json::Value,
    media_type: &str,
    diff_ids: &[String],
) {
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len(), "{manifest:#}");
    let magic: &[u8] = match media_type {
        kiln_cache::MEDIA_TYPE_LAYER_ZSTD => &[0x28, 0xb5, 0x2f, 0xfd],
        kiln_cache::MEDIA_TYPE_LAYER_GZIP => &[0x1f, 0x8b],
        other => panic!("no magic for {other}"),
    };
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        assert_eq!(layer["mediaType"], media_type, "{manifest:#}");
        let digest = layer["digest"].as_str().unwrap();
        let blob = registry_blob(reference, digest);
        assert!(blob.starts_with(magic), "{digest} is not {media_type}");
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut kiln_cache::decompress(blob.as_slice()).unwrap(),
            &mut tar,
        )
        .unwrap();
        assert_eq!(
            &kiln_cache::Digest::from_bytes(&tar).to_string(),
            diff_id,
            "layer {digest}"
        );
    }
}

/// The diff IDs of the image config `manifest` (in the repository of `reference`) names.
fn config_diff_ids(reference: &str, manifest: &serde_json::Value) -> Vec<String> {
    let config = registry_blob(reference, manifest["config"]["digest"].as_str().unwrap());
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

/// The media types of a manifest's layers, by digest.
fn layer_types(manifest: &serde_json::Value) -> BTreeMap<String, String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let field = |name: &str| l[name].as_str().unwrap().to_owned();
            (field("digest"), field("mediaType"))
        })
        .collect()
}

#[test]
fn serial_a_push_with_force_compression_converts_only_the_lazy_layers_in_another_compression() {
    if !ready() {
        return;
    }
    let (proxy, seen) = recording_registry(false);
    let tmp = tempfile::tempdir().unwrap();
    let context = proxied_context(tmp.path(), &proxy, "RUN cat /made /hello.txt > /both");
    // A cache whose own layers are zstd; the base image's layer stays gzip (it is reused as
    // it is without force-compression).
    let id = unique();
    let cache = format!("{proxy}/kiln-test/lazy-forced-cache-{id}:1");
    assert_ok(build(
        &tmp.path().join("exporting"),
        &context,
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max,compression=zstd"),
        ],
    ));
    let cached = layer_types(&registry_manifest(&cache));
    assert!(
        cached
            .values()
            .any(|t| t == kiln_cache::MEDIA_TYPE_LAYER_ZSTD)
            && cached
                .values()
                .any(|t| t == kiln_cache::MEDIA_TYPE_LAYER_GZIP),
        "{cached:#?}"
    );
    // The layers of either cache or base image downloaded since the last look.
    let downloads = || blob_gets(&std::mem::take(&mut *seen.lock().unwrap()));
    downloads();

    // Without force-compression a lazy layer in another compression is left as it is
    // (BuildKit's behaviour): the image names the cache's blobs, nothing is downloaded.
    let kept = format!("{proxy}/kiln-test/lazy-forced-kept-{id}:1");
    let warm = assert_ok(build(
        &tmp.path().join("kept"),
        &context,
        &[
            "--cache-from",
            &cache,
            "--provenance=false",
            "--output",
            &format!("type=image,name={kept},push=true,compression=gzip"),
        ],
    ));
    assert_every_run_cached(&text(&warm));
    let kept_manifest = registry_manifest(&kept);
    let kept_types = layer_types(&kept_manifest);
    for (digest, media_type) in &kept_types {
        assert_eq!(Some(media_type), cached.get(digest), "{digest}");
    }
    let base: Vec<&String> = kept_types
        .iter()
        .filter(|(_, t)| *t == kiln_cache::MEDIA_TYPE_LAYER_GZIP)
        .map(|(digest, _)| digest)
        .collect();
    assert_eq!(base.len(), 1, "the base image's layer: {kept_types:#?}");
    assert!(kept_types.len() > 1, "{kept_types:#?}");
    let downloaded = downloads();
    assert!(
        !downloaded.iter().any(|d| kept_types.contains_key(d)),
        "{downloaded:#?}"
    );

    // With it, the lazy layer in another compression (the base image's, gzip) is downloaded
    // (checked against its digest) and compressed again; the zstd ones stay lazy, mounted
    // from the cache's repository, never downloaded.
    let forced = format!("{proxy}/kiln-test/lazy-forced-image-{id}:1");
    let warm = assert_ok(build(
        &tmp.path().join("forced"),
        &context,
        &[
            "--cache-from",
            &cache,
            "--provenance=false",
            "--output",
            &format!("type=image,name={forced},push=true,compression=zstd,force-compression=true"),
        ],
    ));
    assert_every_run_cached(&text(&warm));
    let downloaded: Vec<String> = downloads()
        .into_iter()
        .filter(|d| kept_types.contains_key(d))
        .collect();
    assert_eq!(downloaded, [base[0].clone()], "{}", text(&warm));
    let manifest = registry_manifest(&forced);
    let diff_ids = config_diff_ids(&forced, &manifest);
    // The diff IDs are those of the image left as it was.
    assert_eq!(diff_ids, config_diff_ids(&kept, &kept_manifest));
    assert_layers_unpack_to(
        &forced,
        &manifest,
        kiln_cache::MEDIA_TYPE_LAYER_ZSTD,
        &diff_ids,
    );
    assert!(!layer_types(&manifest).contains_key(base[0]));
}

#[test]
fn serial_a_cache_export_with_force_compression_converts_the_lazy_layers() {
    if !ready() {
        return;
    }
    let (proxy, seen) = recording_registry(false);
    let tmp = tempfile::tempdir().unwrap();
    let context = proxied_context(tmp.path(), &proxy, "RUN cat /made /hello.txt > /both");
    let (_, cache) = export_through(tmp.path(), &proxy, &context, "recompressed");
    let cached = registry_manifest(&cache);
    let cached_types = layer_types(&cached);
    assert!(
        cached_types
            .values()
            .all(|t| t == kiln_cache::MEDIA_TYPE_LAYER_GZIP),
        "{cached_types:#?}"
    );
    let diff_id_of = |manifest: &serde_json::Value| -> Vec<String> {
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l["annotations"]["containerd.io/uncompressed"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    seen.lock().unwrap().clear();

    // Without force-compression the lazy (gzip) results go into the zstd cache as they are.
    let kept = cache.replace(":1", ":kept");
    let warm = assert_ok(build(
        &tmp.path().join("kept"),
        &context,
        &[
            "--cache-from",
            &cache,
            "--cache-to",
            &format!("type=registry,ref={kept},mode=max,compression=zstd"),
        ],
    ));
    assert_every_run_cached(&text(&warm));
    assert_eq!(layer_types(&registry_manifest(&kept)), cached_types);
    let downloaded = blob_gets(&std::mem::take(&mut *seen.lock().unwrap()));
    assert!(
        !downloaded.iter().any(|d| cached_types.contains_key(d)),
        "{downloaded:#?}"
    );

    // With it, each is downloaded, compressed with zstd, and described with the same diff ID.
    let forced = cache.replace(":1", ":forced");
    let warm = assert_ok(build(
        &tmp.path().join("forced"),
        &context,
        &[
            "--cache-from",
            &cache,
            "--cache-to",
            &format!("type=registry,ref={forced},mode=max,compression=zstd,force-compression=true"),
        ],
    ));
    assert_every_run_cached(&text(&warm));
    let manifest = registry_manifest(&forced);
    let diff_ids = diff_id_of(&manifest);
    let mut sorted = diff_ids.clone();
    sorted.sort();
    let mut before = diff_id_of(&cached);
    before.sort();
    assert_eq!(sorted, before);
    assert_layers_unpack_to(
        &forced,
        &manifest,
        kiln_cache::MEDIA_TYPE_LAYER_ZSTD,
        &diff_ids,
    );

    // A fresh store builds from the converted cache with every step cached.
    let again = assert_ok(build(
        &tmp.path().join("again"),
        &context,
        &["--cache-from", &forced],
    ));
    assert_every_run_cached(&text(&again));
}
