//! Issue 18: the `docker buildx build` flags that apply on Linux, each checked on what the build
//! made (the image config, the files a step wrote), not only on its exit code.

use std::path::Path;

use crate::build_dockerfile_sources::build;
use crate::common::{ready, text};

/// The image config of the only image in the OCI layout directory `layout`.
fn layout_config(layout: &Path) -> serde_json::Value {
    let json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        json(
            &layout
                .join("blobs")
                .join(digest.as_str().unwrap().replacen(':', "/", 1)),
        )
    };
    let index = json(&layout.join("index.json"));
    let manifest = blob(&index["manifests"][0]["digest"]);
    blob(&manifest["config"]["digest"])
}

/// Fails the test unless the command failed saying `message`.
fn assert_refused(output: &std::process::Output, message: &str) {
    assert!(!output.status.success(), "{}", text(output));
    assert!(text(output).contains(message), "{}", text(output));
}

#[test]
fn label_sets_the_image_config_labels() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let dest = format!(
        "type=oci,dest={},tar=false,name=labelled:1",
        layout.display()
    );
    let output = build(
        dir.path(),
        "FROM busybox\nLABEL version=1 kept=yes\n",
        &[],
        &[
            "--output",
            &dest,
            "--label",
            "org.opencontainers.image.title=kiln test",
            "--label",
            "version=2",
            "--label",
            "empty",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let config = layout_config(&layout);
    assert_eq!(
        config["config"]["Labels"],
        serde_json::json!({
            "empty": "",
            "kept": "yes",
            "org.opencontainers.image.title": "kiln test",
            "version": "2",
        })
    );
    // A label without a key is buildx's error, before anything runs.
    let output = build(dir.path(), "FROM busybox\n", &[], &["--label", "=x"]);
    assert_refused(&output, "invalid key-value pair \"=x\": empty key");
}

#[test]
fn add_host_reaches_the_hosts_file_of_run() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = build(
        dir.path(),
        "FROM busybox AS build\n\
         RUN cat /etc/hosts > /hosts\n\
         FROM scratch\n\
         COPY --from=build /hosts /\n",
        &[],
        &[
            "--add-host",
            "registry.example:10.1.2.3",
            "--add-host",
            "Mirror=[2001:db8::5]",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let hosts = fs_err::read_to_string(dir.path().join("out/hosts")).unwrap();
    let extra: Vec<&str> = hosts
        .lines()
        .filter(|l| l.contains("example") || l.contains("mirror"))
        .collect();
    assert_eq!(
        extra,
        ["10.1.2.3\tregistry.example", "2001:db8::5\tmirror"],
        "{hosts}"
    );
    // A host without an address is buildx's error, before anything runs.
    let output = build(dir.path(), "FROM busybox\n", &[], &["--add-host", "lonely"]);
    assert_refused(&output, "invalid host lonely");
}

#[test]
fn network_sets_the_network_of_every_run() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What a step sees of the network: its interfaces, and whether the test registry on the
    // host's loopback answers.
    let dockerfile = "FROM busybox AS build\n\
         RUN sed -n 's/^ *\\([^:]*\\):.*/\\1/p' /proc/net/dev > /interfaces; \
             if printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 5000 2>/dev/null \
                 | grep -q '^HTTP/1.0 200'; \
             then echo reached > /registry; else echo unreachable > /registry; fi\n\
         FROM scratch\n\
         COPY --from=build /interfaces /registry /\n";
    let seen = |extra: &[&str]| {
        let mut args = vec!["--no-cache"];
        args.extend_from_slice(extra);
        let output = build(dir.path(), dockerfile, &[], &args);
        assert!(output.status.success(), "{}", text(&output));
        let read = |name: &str| fs_err::read_to_string(dir.path().join("out").join(name)).unwrap();
        (read("interfaces"), read("registry"))
    };
    // `none`: only loopback, and the host's services are out of reach.
    assert_eq!(
        seen(&["--network=none"]),
        ("lo\n".to_owned(), "unreachable\n".to_owned())
    );
    // The default, as BuildKit's with its CNI network: a namespace of the step's own on kiln's
    // bridge, where the host's loopback services are out of reach.
    for extra in [&[][..], &["--network", "default"]] {
        assert_eq!(
            seen(extra),
            ("lo\neth0\n".to_owned(), "unreachable\n".to_owned()),
            "{extra:?}"
        );
    }
    // `host`, once allowed, is the host's network.
    let (interfaces, registry) = seen(&["--network=host", "--allow", "network.host"]);
    assert_eq!(registry, "reached\n");
    assert_ne!(interfaces, "lo\n");
    // `host` needs the entitlement, as a RUN --network=host does.
    let output = build(
        dir.path(),
        dockerfile,
        &[],
        &["--no-cache", "--network=host"],
    );
    assert_refused(&output, "network.host is not allowed");
    // Other modes are refused before anything runs.
    let output = build(dir.path(), dockerfile, &[], &["--network=bridge"]);
    assert_refused(&output, "network mode \"bridge\" not supported");
}

#[test]
fn quiet_prints_only_the_image_id() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let dest = format!("type=oci,dest={},tar=false,name=quiet:1", layout.display());
    let dockerfile = "FROM busybox\nRUN echo made > /made\n";
    for quiet in [
        &["-q"][..],
        &["--quiet", "--progress=auto"],
        &["--progress=quiet"],
    ] {
        let _ = fs_err::remove_dir_all(&layout);
        let mut args = vec!["--output", &dest];
        args.extend_from_slice(quiet);
        let output = build(dir.path(), dockerfile, &[], &args);
        assert!(output.status.success(), "{}", text(&output));
        let index: serde_json::Value =
            serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{digest}\n"),
            "{quiet:?}"
        );
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{quiet:?}");
    }
    // Without -q: the progress, and no id on stdout.
    let output = build(
        dir.path(),
        dockerfile,
        &[],
        &["--output", &dest, "--progress=plain"],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    assert!(String::from_utf8_lossy(&output.stderr).contains("RUN echo made"));
    // Only auto progress goes with -q, as buildx says.
    let output = build(dir.path(), dockerfile, &[], &["-q", "--progress=plain"]);
    assert_refused(&output, "progress=plain and quiet cannot be used together");
}

#[test]
fn shm_size_is_the_size_of_runs_dev_shm() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = "FROM busybox AS build\n\
         RUN df -k /dev/shm | tail -1 | awk '{print $2}' > /size && \
             grep ' /dev/shm ' /proc/mounts | tail -1 | cut -d' ' -f3 > /type\n\
         FROM scratch\n\
         COPY --from=build /size /type /\n";
    let read = |name: &str| fs_err::read_to_string(dir.path().join("out").join(name)).unwrap();
    let output = build(dir.path(), dockerfile, &[], &["--shm-size", "96m"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read("size"), "98304\n");
    assert_eq!(read("type"), "tmpfs\n");
    // Without it, Docker's 64 MiB.
    let output = build(dir.path(), dockerfile, &[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(read("size"), "65536\n");
    let output = build(dir.path(), dockerfile, &[], &["--shm-size=lots"]);
    assert_refused(&output, "invalid argument \"lots\" for \"--shm-size\" flag");
}

#[test]
fn no_cache_filter_runs_the_named_stages_again() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Each step writes something new each time it runs.
    let dockerfile = "FROM busybox AS base\n\
         RUN cat /proc/sys/kernel/random/uuid > /base\n\
         FROM base AS app\n\
         RUN cat /proc/sys/kernel/random/uuid > /app\n\
         FROM busybox AS other\n\
         RUN cat /proc/sys/kernel/random/uuid > /other\n\
         FROM scratch\n\
         COPY --from=app /base /app /\n\
         COPY --from=other /other /\n";
    let built = |extra: &[&str]| {
        let output = build(dir.path(), dockerfile, &[], extra);
        assert!(output.status.success(), "{}", text(&output));
        let read = |name: &str| fs_err::read_to_string(dir.path().join("out").join(name)).unwrap();
        (read("base"), read("app"), read("other"))
    };
    let first = built(&[]);
    // Cached as a whole without the filter.
    assert_eq!(built(&[]), first);
    // Only app's step runs again.
    let (base, app, other) = built(&["--no-cache-filter", "app"]);
    assert_eq!((&base, &other), (&first.0, &first.2));
    assert_ne!(app, first.1);
    // Names are matched regardless of case; a comma list and repeated flags both work.
    let (base, _, other) = built(&[
        "--no-cache-filter",
        "OTHER,nonexistent",
        "--no-cache-filter=Base",
    ]);
    assert_ne!(base, first.0);
    assert_ne!(other, first.2);
    // As buildx: not with --no-cache.
    let output = build(
        dir.path(),
        dockerfile,
        &[],
        &["--no-cache", "--no-cache-filter", "app"],
    );
    assert!(!output.status.success());
    assert!(
        text(&output)
            .contains("--no-cache and --no-cache-filter cannot currently be used together"),
        "{}",
        text(&output)
    );
}

#[test]
fn dockerfile_build_flags_are_refused_with_an_llb_definition() {
    let dir = tempfile::tempdir().unwrap();
    let output = crate::common::kiln_in(
        dir.path(),
        &[
            "build",
            "--llb",
            "def.pb",
            "--label",
            "a=b",
            "--network=none",
            "--shm-size=1m",
        ],
        &[],
    );
    assert_refused(
        &output,
        "--label, --network, --shm-size apply to a Dockerfile build; \
             an LLB Definition sets its own in its ops",
    );
}

#[test]
fn build_context_replaces_a_stage_and_serves_from_and_copy_from() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (deps, assets) = (dir.path().join("deps"), dir.path().join("assets"));
    fs_err::create_dir_all(&deps).unwrap();
    fs_err::create_dir_all(&assets).unwrap();
    fs_err::write(deps.join("marker"), "replaced\n").unwrap();
    fs_err::write(assets.join("a.txt"), "from assets\n").unwrap();
    let dockerfile = "FROM busybox AS deps\n\
                      RUN echo original > /marker\n\
                      FROM base\n\
                      COPY --from=deps /marker /marker\n\
                      COPY --from=assets a.txt /a.txt\n\
                      RUN cat /marker /a.txt > /both\n";
    let base = "base=docker-image://busybox".to_owned();
    let with_assets = format!("assets={}", assets.display());
    let both = |extra: &[&str]| {
        let mut args = vec!["--build-context", &base, "--build-context", &with_assets];
        args.extend_from_slice(extra);
        let output = build(dir.path(), dockerfile, &[], &args);
        assert!(output.status.success(), "{}", text(&output));
        fs_err::read_to_string(dir.path().join("out/both")).unwrap()
    };
    // The image and the directory serve `FROM base` and `COPY --from=assets`.
    assert_eq!(both(&[]), "original\nfrom assets\n");
    // A context named after a stage stands for the whole stage.
    let replaced = format!("deps={}", deps.display());
    assert_eq!(
        both(&["--build-context", &replaced]),
        "replaced\nfrom assets\n"
    );

    let refused = build(
        dir.path(),
        dockerfile,
        &[],
        &["--build-context", "base=https://example.invalid/ctx.tar"],
    );
    assert_refused(
        &refused,
        "kiln takes a directory or docker-image://REF (oci-layout://, git and URL contexts are not supported yet)",
    );
    let own = format!("context={}", assets.display());
    let refused = build(dir.path(), dockerfile, &[], &["--build-context", &own]);
    assert_refused(&refused, "the name \"context\" is the build's own context");
}
