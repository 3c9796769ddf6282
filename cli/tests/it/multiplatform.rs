//! Issue 20: `--platform linux/amd64,linux/arm64` — one graph per platform solved together
//! (shared steps run once), foreign steps under QEMU user emulation, one image index out
//! (registry, OCI layout, store), a folder per platform for local outputs, `kiln run
//! --platform`. The base is `library/busybox:multi` of the test registry: the canonical amd64
//! busybox and an arm64 busybox from Debian's `busybox-static:arm64` (scripts/test-env.sh).

use std::path::Path;
use std::process::Command;

use kiln_testdata::skip;

use crate::common::{kiln_in, ready, text};

/// A Dockerfile whose first stage runs once on the build platform (its cache mount counts
/// the runs) and whose last stage runs on each target platform.
const DOCKERFILE: &str = "\
FROM --platform=$BUILDPLATFORM busybox:multi AS gen
RUN --mount=type=cache,id=runs,target=/c sh -c 'echo ran >> /c/runs; cp /c/runs /made'
FROM busybox:multi
ARG TARGETARCH TARGETPLATFORM BUILDPLATFORM
COPY --from=gen /made /made-$TARGETARCH
RUN uname -m > /arch && echo $TARGETARCH $TARGETPLATFORM $BUILDPLATFORM > /args
";

/// Whether the test registry serves the two-platform busybox and arm64 steps can run here.
pub(crate) fn multi_ready() -> bool {
    if !ready() {
        return false;
    }
    let registered = fs_err::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")
        .is_ok_and(|t| t.starts_with("enabled"));
    if !registered {
        skip("QEMU user emulation is not registered for aarch64 (run scripts/test-env.sh)");
        return false;
    }
    true
}

fn context(dir: &Path) -> String {
    let context = dir.join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), DOCKERFILE).unwrap();
    context.to_string_lossy().into_owned()
}

fn read(path: &Path) -> String {
    fs_err::read_to_string(path).unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo").args(args).output().unwrap()
}

#[test]
fn two_platforms_run_natively_and_emulated_with_shared_steps_once() {
    if !multi_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    let out = dir.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &dest,
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let amd64 = out.join("linux_amd64");
    let arm64 = out.join("linux_arm64");
    assert_eq!(read(&amd64.join("arch")), "x86_64\n");
    assert_eq!(read(&arm64.join("arch")), "aarch64\n");
    assert_eq!(read(&amd64.join("args")), "amd64 linux/amd64 linux/amd64\n");
    assert_eq!(read(&arm64.join("args")), "arm64 linux/arm64 linux/amd64\n");
    // The build-platform stage ran once for both: each image has the one run's file.
    assert_eq!(read(&amd64.join("made-amd64")), "ran\n");
    assert_eq!(read(&arm64.join("made-arm64")), "ran\n");
    assert!(!amd64.join("made-arm64").exists());
    // Steps are named after their stage's platform, as BuildKit names them.
    let log = text(&output);
    assert!(
        log.contains("[linux/arm64 stage-1 3/3] RUN uname -m"),
        "{log}"
    );
    assert_eq!(log.matches("] RUN --mount=type=cache").count(), 1, "{log}");

    // A tar holds the same folders.
    let tar = dir.path().join("out.tar");
    let dest = format!("type=tar,dest={}", tar.display());
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--platform=linux/amd64,linux/arm64",
            "--output",
            &dest,
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let listing = Command::new("tar").arg("tf").arg(&tar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for path in [
        "linux_amd64/arch",
        "linux_arm64/arch",
        "linux_arm64/bin/busybox",
    ] {
        assert!(listing.lines().any(|l| l == path), "{path} in {listing}");
    }

    // docker's archive holds one platform, as docker's exporter says.
    let dest = format!("type=docker,dest={}", dir.path().join("d.tar").display());
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--platform=linux/amd64,linux/arm64",
            "--output",
            &dest,
            &context,
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output)
            .contains("docker exporter does not currently support exporting manifest lists"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_two_platform_image_is_one_index_in_the_registry_a_layout_and_the_store() {
    if !multi_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    let repository = format!(
        "127.0.0.1:5000/kiln-test/multi-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    );
    let name = format!("{repository}:v1");
    let layout = dir.path().join("layout");
    let dest = format!("type=oci,dest={},tar=false", layout.display());
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/amd64",
            "-t",
            &name,
            "--push",
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    assert!(raw.status.success(), "{}", text(&raw));
    let index = json(&raw.stdout);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
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
    // In the order asked for, then the attestation manifest of each (the push's default
    // provenance, as buildx's), naming its image.
    assert_eq!(
        platforms,
        [
            "linux/arm64",
            "linux/amd64",
            "unknown/unknown",
            "unknown/unknown"
        ]
    );
    let manifests = index["manifests"].as_array().unwrap();
    for (image, attestation) in manifests[..2].iter().zip(&manifests[2..]) {
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.digest"],
            image["digest"]
        );
        assert_eq!(
            attestation["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
    }
    // Each manifest's config says its platform.
    for arch in ["arm64", "amd64"] {
        let config = skopeo(&[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            "--override-arch",
            arch,
            &format!("docker://{name}"),
        ]);
        assert!(config.status.success(), "{}", text(&config));
        assert_eq!(json(&config.stdout)["architecture"], arch);
    }
    let copied = dir.path().join("copied");
    let copy = skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:v1", copied.display()),
    ]);
    assert!(copy.status.success(), "{}", text(&copy));

    // The same build as an OCI layout: index.json names the same index.
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--platform",
            "linux/arm64,linux/amd64",
            "--output",
            &dest,
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let top = json(&fs_err::read(layout.join("index.json")).unwrap());
    let digest = top["manifests"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let blob = fs_err::read(layout.join("blobs").join(digest.replacen(':', "/", 1))).unwrap();
    // The layout (no provenance asked for) names the pushed images alone.
    assert_eq!(
        json(&blob)["manifests"].as_array().unwrap().as_slice(),
        &manifests[..2],
        "the layout's index names the pushed images"
    );
    let inspected = skopeo(&["inspect", "--raw", &format!("oci:{}", layout.display())]);
    assert!(inspected.status.success(), "{}", text(&inspected));

    // The store runs the host's image under the name, the other with --platform.
    let run = |platform: Option<&str>| {
        let mut args = vec!["run", "--rm"];
        if let Some(platform) = platform {
            args.extend(["--platform", platform]);
        }
        args.extend([name.as_str(), "cat", "/arch"]);
        let output = kiln_in(dir.path(), &args, &[]);
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(run(None), "x86_64\n");
    assert_eq!(run(Some("linux/arm64")), "aarch64\n");
    assert_eq!(
        run(None),
        "x86_64\n",
        "the name still runs the host's image"
    );

    // Tagged without --push, the whole index goes out with a later `kiln push`.
    let later = format!("{repository}:v2");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--platform",
            "linux/arm64,linux/amd64",
            "-t",
            &later,
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let output = kiln_in(dir.path(), &["push", &later], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{later}"),
    ]);
    assert!(raw.status.success(), "{}", text(&raw));
    // The images' index: an image only stored keeps no attestations (as with buildx).
    let mut images_only = index.clone();
    images_only["manifests"] = manifests[..2].to_vec().into();
    assert_eq!(
        json(&raw.stdout),
        images_only,
        "kiln push sends the same images"
    );
}

/// Asserts that the plain progress `log` of a two-platform build of a Dockerfile with a shared
/// RUN and one RUN per platform shows the three, each CACHED.
fn assert_three_runs_cached(log: &str) {
    let runs: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("] RUN "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(runs.len(), 3, "the shared RUN and one per platform: {log}");
    for id in runs {
        assert!(
            log.lines().any(|l| l == format!("{id} CACHED")),
            "{id} came from the cache: {log}"
        );
    }
}

#[test]
fn a_two_platform_build_exports_one_cache_a_fresh_store_builds_from() {
    if !multi_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            &to,
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    // A store that never built it: every step of both platforms comes from the cache.
    let fresh = tempfile::tempdir().unwrap();
    let from = format!("type=local,src={}", cache.display());
    let out = fresh.path().join("out");
    let output = kiln_in(
        fresh.path(),
        &[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-from",
            &from,
            "--output",
            &format!("type=local,dest={}", out.display()),
            &context,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let log = text(&output);
    assert_three_runs_cached(&log);
    assert_eq!(read(&out.join("linux_arm64/arch")), "aarch64\n");
    assert_eq!(read(&out.join("linux_amd64/made-amd64")), "ran\n");
}

#[test]
fn issue_20_an_inline_cache_of_two_platforms_gives_a_fresh_store_every_step_and_the_same_index() {
    if !multi_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    // The last RUN writes the time: run again, it would change the images and the index.
    fs_err::write(
        context.join("Dockerfile"),
        "FROM --platform=$BUILDPLATFORM busybox:multi AS gen\n\
         RUN echo generated > /made\n\
         FROM busybox:multi\n\
         ARG TARGETARCH\n\
         COPY --from=gen /made /made-$TARGETARCH\n\
         RUN uname -m > /arch && date +%s%N > /stamp\n",
    )
    .unwrap();
    let context = context.to_string_lossy().into_owned();
    let repository = format!(
        "127.0.0.1:5000/kiln-test/inline-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    );
    let build = |root: &Path, tag: &str, cache_from: Option<&str>| {
        let metadata = root.join("metadata.json");
        let name = format!("{repository}:{tag}");
        let mut args = vec![
            "build",
            "--progress=plain",
            "--provenance=false",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &name,
            "--push",
            "--cache-to",
            "type=inline",
            "--metadata-file",
            metadata.to_str().unwrap(),
        ];
        if let Some(from) = cache_from {
            args.extend(["--cache-from", from]);
        }
        args.push(&context);
        let output = kiln_in(root, &args, &[]);
        assert!(output.status.success(), "{}", text(&output));
        let digest = json(&fs_err::read(&metadata).unwrap())["containerimage.digest"]
            .as_str()
            .unwrap()
            .to_owned();
        (digest, text(&output))
    };
    let (first, _) = build(dir.path(), "v1", None);
    // Each platform's image carries its own inline cache.
    let index = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{repository}:v1"),
    ]);
    assert!(index.status.success(), "{}", text(&index));
    let index = json(&index.stdout);
    let images = index["manifests"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{index}");
    for image in images {
        let reference = format!(
            "docker://{repository}@{}",
            image["digest"].as_str().unwrap()
        );
        let config = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            "--config",
            &reference,
        ]);
        assert!(config.status.success(), "{}", text(&config));
        assert!(
            json(&config.stdout).get("moby.buildkit.cache.v0").is_some(),
            "{reference} has an inline cache"
        );
    }

    let fresh = tempfile::tempdir().unwrap();
    let (second, log) = build(fresh.path(), "v2", Some(&format!("{repository}:v1")));
    assert_three_runs_cached(&log);
    assert_eq!(second, first, "the same index");
}

#[test]
fn a_frontend_image_builds_each_platform_asked_for() {
    if !multi_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "# syntax=docker/dockerfile:1\n\
         FROM busybox:multi\n\
         ARG TARGETPLATFORM\n\
         RUN echo \"$(uname -m) $TARGETPLATFORM\" > /arch\n",
    )
    .unwrap();
    let context = context.to_string_lossy().into_owned();
    let build = |platform: &str, out: &Path| {
        let dest = format!("type=local,dest={}", out.display());
        let output = kiln_in(
            dir.path(),
            &[
                "build",
                "--progress=plain",
                "--platform",
                platform,
                "--output",
                &dest,
                &context,
            ],
            &[],
        );
        let log = text(&output);
        assert!(output.status.success(), "{log}");
        // BuildKit's own frontend image converted the Dockerfile, not the built-in stand-in.
        assert!(log.contains("[frontend] docker/dockerfile:1"), "{log}");
        assert!(
            !log.contains("built-in Dockerfile frontend instead"),
            "{log}"
        );
    };
    // Each platform asked for is built for that platform, natively or emulated.
    let out = dir.path().join("two");
    build("linux/amd64,linux/arm64", &out);
    assert_eq!(read(&out.join("linux_amd64/arch")), "x86_64 linux/amd64\n");
    assert_eq!(read(&out.join("linux_arm64/arch")), "aarch64 linux/arm64\n");
    // One foreign platform: the frontend is told which (it builds for the builder's own
    // platform when it is not).
    let out = dir.path().join("one");
    build("linux/arm64", &out);
    assert_eq!(read(&out.join("arch")), "aarch64 linux/arm64\n");
}

/// The entries of the host's binfmt_misc, sorted.
fn binfmt_entries() -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether an arm step here runs under an emulator of kiln's own: the host has no qemu-arm
/// registration, Debian's qemu-arm-static is there, and the kernel gives a user namespace its
/// own binfmt_misc (Linux 6.7).
fn own_emulator_ready() -> bool {
    if !ready() {
        return false;
    }
    if Path::new("/proc/sys/fs/binfmt_misc/qemu-arm").exists() {
        skip("the host has qemu-arm registered, so kiln's own emulator is not used");
        return false;
    }
    if !Path::new("/usr/bin/qemu-arm-static").is_file() {
        skip("no /usr/bin/qemu-arm-static (apt-get install qemu-user-static)");
        return false;
    }
    let release = fs_err::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !kiln_runner::emulation::release_has_namespaced_binfmt(release.trim()) {
        skip("the kernel has no binfmt_misc per user namespace (Linux 6.7)");
        return false;
    }
    true
}

#[test]
fn issue_20_an_arm_step_runs_every_process_under_kilns_own_emulator_leaving_the_host_alone() {
    if !own_emulator_ready() {
        return;
    }
    let before = binfmt_entries();
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    // `sh -c` executes /bin/busybox afresh: a second arm program, not an applet of the first.
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox:armhf\n\
         RUN uname -m > /arch && sh -c '/bin/busybox uname -m && /bin/busybox id -u' > /second\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--platform",
            "linux/arm/v7",
            "--output",
            &format!("type=local,dest={}", out.display()),
            &context.to_string_lossy(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read(&out.join("arch")), "armv7l\n");
    assert_eq!(read(&out.join("second")), "armv7l\n0\n");
    assert_eq!(
        binfmt_entries(),
        before,
        "the host's binfmt_misc is unchanged"
    );

    // `kiln run --platform` too, the emulator's registration the container's alone.
    let output = kiln_in(
        dir.path(),
        &[
            "run",
            "--rm",
            "--platform",
            "linux/arm/v7",
            "busybox:armhf",
            "sh",
            "-c",
            "/bin/busybox uname -m; ls /proc/sys/fs/binfmt_misc",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "armv7l\nqemu-arm\nregister\nstatus\n"
    );

    // `kiln exec` joins the container's user namespace, where its emulator is registered.
    let args = [
        "--platform",
        "linux/arm/v7",
        "--name",
        "arm",
        "busybox:armhf",
    ];
    let started = kiln_in(
        dir.path(),
        &[&["run", "-d"], &args[..], &["sleep", "60"]].concat(),
        &[],
    );
    let exec = kiln_in(
        dir.path(),
        &["exec", "arm", "sh", "-c", "/bin/busybox uname -m"],
        &[],
    );
    let _ = kiln_in(dir.path(), &["rm", "-f", "arm"], &[]);
    assert!(started.status.success(), "{}", text(&started));
    assert!(exec.status.success(), "{}", text(&exec));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "armv7l\n");
    assert_eq!(
        binfmt_entries(),
        before,
        "the host's binfmt_misc is unchanged"
    );
}
