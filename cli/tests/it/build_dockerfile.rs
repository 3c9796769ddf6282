//! `kiln build CONTEXT`: Dockerfiles converted and built end to end, and `--print-llb`.

use kiln_testdata::{registry_up, skip};

use crate::build_dockerfile_sources::build;
use crate::common::cases::assert_dockerfile_cases;
use crate::common::{assert_ok, kiln_in, ready, text};

#[test]
fn builds_a_dockerfile_with_run_copy_workdir_env() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(context.join("src")).unwrap();
    fs_err::write(context.join("src/hello.txt"), "hello from the context\n").unwrap();
    fs_err::write(context.join("ignored.txt"), "must not be sent\n").unwrap();
    fs_err::write(context.join(".dockerignore"), "ignored.txt\n").unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox AS build\n\
         ARG GREETING=hi\n\
         ENV NAME=kiln\n\
         WORKDIR /work\n\
         COPY src/ ./in/\n\
         RUN echo -n \"$GREETING $NAME $(pwd)\" > out.txt && cat in/hello.txt >> out.txt\n\
         RUN ls /work/in > listing.txt\n\
         FROM scratch\n\
         COPY --from=build /work/ /\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--build-arg",
            "GREETING=hello",
            "--output",
            &format!("type=local,dest={}", out.display()),
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(out.join("out.txt")).unwrap(),
        "hello kiln /workhello from the context\n"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("in/hello.txt")).unwrap(),
        "hello from the context\n"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("listing.txt")).unwrap(),
        "hello.txt\n"
    );
}

#[test]
fn print_llb_writes_the_definition_and_errors_name_the_line() {
    if !registry_up() {
        return skip("the test registry is not serving 127.0.0.1:5000 (run scripts/test-env.sh)");
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    let output = kiln_in(
        dir.path(),
        &["build", "--print-llb", context.to_str().unwrap()],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let loaded = kiln_llb::LoadedDefinition::from_bytes(&output.stdout).unwrap();
    let Some(kiln_llb::pb::op::Op::Source(source)) = loaded.ops()[0].body() else {
        panic!("the first op is not the base image");
    };
    assert_eq!(
        source.identifier,
        format!(
            "docker-image://docker.io/library/busybox:latest@{}",
            kiln_testdata::BUSYBOX_MANIFEST_DIGEST
        )
    );

    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY --from=nowhere-stage /x /\n",
    )
    .unwrap();
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--target",
            "missing",
            "--print-llb",
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("target stage \"missing\" could not be found"),
        "{}",
        text(&output)
    );
}

#[test]
fn insecure_and_host_network_steps_need_allow() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    let build = |dockerfile: &str, allow: &[&str]| {
        fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
        let out = dir.path().join("out");
        let _ = fs_err::remove_dir_all(&out);
        let dest = format!("type=local,dest={}", out.display());
        let mut args = vec!["build", "--no-cache", "--output", &dest];
        for entitlement in allow {
            args.extend(["--allow", entitlement]);
        }
        args.push(context.to_str().unwrap());
        let output = kiln_in(dir.path(), &args, &[]);
        let file = fs_err::read_to_string(out.join("status")).ok();
        (output, file)
    };
    let insecure = "FROM busybox\n\
        RUN --security=insecure grep -E '^(Seccomp|CapEff):' /proc/self/status > /status\n";
    // Refused without the entitlement, with BuildKit's wording, and nothing runs.
    let (output, file) = build(insecure, &[]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("security.insecure is not allowed"),
        "{}",
        text(&output)
    );
    assert_eq!(file, None);
    // Allowed: no filter, more than Docker's capabilities.
    let (output, file) = build(insecure, &["security.insecure"]);
    assert!(output.status.success(), "{}", text(&output));
    let file = file.unwrap();
    assert!(file.contains("Seccomp:\t0\n"), "{file}");
    assert!(!file.contains("CapEff:\t00000000a80425fb"), "{file}");
    // The default sandbox is filtered.
    let (output, file) = build(
        "FROM busybox\nRUN grep -E '^Seccomp:' /proc/self/status > /status\n",
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(file.unwrap(), "Seccomp:\t2\n");
    // The host's network, likewise.
    let host = "FROM busybox\nRUN --network=host echo host > /status\n";
    let (output, _) = build(host, &[]);
    assert!(
        text(&output).contains("network.host is not allowed"),
        "{}",
        text(&output)
    );
    let (output, file) = build(host, &["network.host"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(file.unwrap(), "host\n");
    // An unknown entitlement is an error before anything runs.
    let (output, _) = build(host, &["network.everything"]);
    assert!(
        text(&output).contains("invalid entitlement: network.everything"),
        "{}",
        text(&output)
    );
}

#[test]
fn run_steps_get_ulimits_and_open_no_device_they_make() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(context.join("data")).unwrap();
    // As root with Docker's CAP_MKNOD, a step makes the null device (which even the v1 device
    // rules allow) in a cache mount, a writable bind mount and its root: none of them opens,
    // as no other device would without a device cgroup. /dev/null itself works.
    let open = |dir: &str| {
        format!(
            "mknod {dir}/null c 1 3 && echo made >> /out/devices; \
             if out=$(head -c 0 {dir}/null 2>&1); then echo '{dir} opened' >> /out/devices; \
             else echo \"{dir} ${{out##*: }}\" >> /out/devices; fi; "
        )
    };
    fs_err::write(
        context.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             RUN mkdir /out && ulimit -n > /out/nofile && ulimit -Hn >> /out/nofile\n\
             RUN --mount=type=cache,target=/cache {}\n\
             RUN --mount=type=bind,source=data,target=/data,rw {}\n\
             RUN {} echo x > /dev/null && echo null-ok >> /out/devices\n\
             FROM scratch\n\
             COPY --from=0 /out/ /\n",
            open("/cache"),
            open("/data"),
            open("/tmp"),
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--ulimit",
            "nofile=1024:2048",
            "--output",
            &format!("type=local,dest={}", out.display()),
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(out.join("nofile")).unwrap(),
        "1024\n2048\n"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("devices")).unwrap(),
        "made\n/cache Permission denied\nmade\n/data Permission denied\n\
         made\n/tmp Permission denied\nnull-ok\n"
    );
    // An unknown name is docker's error, before anything runs.
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--ulimit",
            "openfiles=10",
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("invalid ulimit type: openfiles"),
        "{}",
        text(&output)
    );
}

#[test]
fn run_tmpfs_mounts_have_their_size_and_read_only_flag() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox AS build\n\
         RUN --mount=type=tmpfs,target=/t,size=1m df -k /t | tail -1 | awk '{print $2}' > /size\n\
         RUN --mount=type=tmpfs,target=/r,ro sh -c 'touch /r/x 2>/dev/null && echo writable > /ro || echo read-only > /ro'\n\
         RUN --mount=type=tmpfs,target=/w sh -c 'touch /w/x && echo writable > /rw'\n\
         FROM scratch\n\
         COPY --from=build /size /ro /rw /\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = kiln_in(
        dir.path(),
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", out.display()),
            context.to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let read = |name: &str| fs_err::read_to_string(out.join(name)).unwrap();
    assert_eq!(read("size"), "1024\n");
    assert_eq!(read("ro"), "read-only\n");
    assert_eq!(read("rw"), "writable\n");
}

/// Many more layers than `mount(2)`'s one page of overlay options holds (about 80): a base
/// image of 50 layers and 300 steps on it, each step's root an overlay of every layer below.
#[test]
fn builds_three_hundred_steps_on_a_fifty_layer_base() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = |from: &str, prefix: &str, n: usize| {
        let mut text = format!("FROM {from}\n");
        for i in 0..n {
            text.push_str(&format!(
                "RUN mkdir -p /layers && echo {i} > /layers/{prefix}{i}\n"
            ));
        }
        text
    };
    let base = dir.path().join("base");
    fs_err::create_dir_all(&base).unwrap();
    fs_err::write(base.join("Dockerfile"), steps("busybox", "b", 49)).unwrap();
    assert_ok(kiln_in(
        dir.path(),
        &["build", "-t", "deep-base", base.to_str().unwrap()],
        &[],
    ));

    let app = dir.path().join("app");
    fs_err::create_dir_all(&app).unwrap();
    let mut dockerfile = steps("deep-base", "a", 300);
    dockerfile
        .push_str("RUN ls /layers | wc -l > /count && cat /layers/b0 /layers/a299 >> /count\n");
    fs_err::write(app.join("Dockerfile"), dockerfile).unwrap();
    let out = dir.path().join("out");
    assert_ok(kiln_in(
        dir.path(),
        &[
            "build",
            "--output",
            &format!("type=local,dest={}", out.display()),
            app.to_str().unwrap(),
        ],
        &[],
    ));
    assert_eq!(
        fs_err::read_to_string(out.join("count")).unwrap(),
        "349\n0\n299\n"
    );
    assert_eq!(fs_err::read_dir(out.join("layers")).unwrap().count(), 349);
    // The same steps, cached, exported as an image of 351 layers.
    let tagged = assert_ok(kiln_in(
        dir.path(),
        &["build", "-t", "deep-app", app.to_str().unwrap()],
        &[],
    ));
    assert!(text(&tagged).contains("CACHED"), "{}", text(&tagged));
}

/// Writes `bytes` as a blob of the OCI layout `layout`; returns its descriptor fields.
fn put_blob(layout: &std::path::Path, bytes: &[u8]) -> (String, usize) {
    let digest = kiln_llb::Digest::from_bytes(bytes);
    fs_err::write(layout.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    (digest.to_string(), bytes.len())
}

/// Issue 18: a base image whose config has JSON `null` fields (as `docker commit`, `docker
/// import` and the classic builder write them), pushed to the test registry and pulled by a
/// build, reads as if those fields were absent.
#[test]
fn serial_regression_18_base_image_configs_with_null_fields() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The busybox layout with a config rewritten the way those tools write it.
    let layout = dir.path().join("layout");
    let busybox = kiln_testdata::busybox_layout();
    fs_err::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for entry in fs_err::read_dir(busybox.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        fs_err::copy(
            entry.path(),
            layout.join("blobs/sha256").join(entry.file_name()),
        )
        .unwrap();
    }
    fs_err::copy(busybox.join("oci-layout"), layout.join("oci-layout")).unwrap();
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = fs_err::read(layout.join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    let mut manifest = blob(kiln_testdata::BUSYBOX_MANIFEST_DIGEST);
    let mut config = blob(manifest["config"]["digest"].as_str().unwrap());
    for field in [
        "Volumes",
        "Entrypoint",
        "ExposedPorts",
        "OnBuild",
        "Labels",
        "Shell",
        "Healthcheck",
    ] {
        config["config"][field] = serde_json::Value::Null;
    }
    config["config"]["User"] = serde_json::Value::Null;
    config["history"] = serde_json::Value::Null;
    let (digest, size) = put_blob(&layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    // A tag of its own per run, so an earlier run's image cannot satisfy the build.
    let name = format!(
        "127.0.0.1:5000/kiln-test/null-config:{:x}",
        std::process::id()
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"io.containerd.image.name": name},
        }],
    });
    fs_err::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let pusher = dir.path().join("pusher");
    fs_err::create_dir_all(&pusher).unwrap();
    assert_ok(kiln_in(&pusher, &["load", layout.to_str().unwrap()], &[]));
    assert_ok(kiln_in(&pusher, &["push", &name], &[]));

    // A new store pulls it from the registry and builds on it.
    let builder = dir.path().join("builder");
    fs_err::create_dir_all(&builder).unwrap();
    let dockerfile = format!("FROM {name}\nRUN echo \"built on $PATH\" > /out\n");
    let output = build(&builder, &dockerfile, &[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let path = config["config"]["Env"][0].as_str().unwrap();
    assert_eq!(
        fs_err::read_to_string(builder.join("out/out")).unwrap(),
        format!("built on {}\n", path.trim_start_matches("PATH="))
    );
}

/// Issue 18, Dockerfile fidelity: conformance cases of what BuildKit builds and kiln built
/// differently, each built from its Dockerfile and checked against its expectations.
#[test]
fn regression_18_dockerfile_fidelity_cases() {
    if !ready() {
        return;
    }
    assert_dockerfile_cases(&[
        // Owner names of COPY/ADD --chown, a heredoc COPY --chown and WORKDIR after USER NAME
        // resolve in the destination's /etc/passwd and /etc/group.
        "204-copy-chown-by-name",
        // ENV a=new b=$a gives b the value a had before the instruction.
        "205-env-same-line-old-value",
        // COPY keeps mode bits; a numeric --chmod reaches the directories the copy makes.
        "206-copy-modes-and-chmod-parents",
        // A wildcard matching symlinks copies what they lead to, under the links' names.
        "207-copy-wildcard-matches-symlinks",
        // A missing secret with required=false: the step runs without the mount.
        "208-mount-secret-optional-missing",
        // Cache mounts: uid, gid and mode; seeded from a stage's path.
        "209-mount-cache-owner-and-from",
        // Writable binds of a directory or a file inside another stage.
        "210-mount-bind-rw-stage-subpath",
    ]);
}

/// Issue 18, real-world Dockerfile shapes (written for kiln, no network in their steps), each
/// checked on the files it makes and its image config.
#[test]
fn regression_18_real_world_shapes() {
    if !ready() {
        return;
    }
    assert_dockerfile_cases(&[
        // An apt-style `set -eux` RUN over continuation lines with comments between them.
        "211-realworld-set-eux-continuations",
        // RUN heredoc scripts, several heredocs on one RUN, several heredoc files in one COPY.
        "212-realworld-run-heredoc-files",
        // Meta ARGs in FROM and, declared again, in the stage; a build argument over them.
        "213-realworld-arg-before-from",
        // pip-style cache mounts: sharing=locked, seeded from another stage.
        "214-realworld-cache-mounts-locked-from",
        // Multi-stage with a non-root user by name: COPY --chown, USER, WORKDIR.
        "215-realworld-multistage-named-user",
    ]);
}

/// Issue 18: a Dockerfile outside the context, named relative to the working directory
/// (`-f ../other/Dockerfile .`), with the `.dockerignore` of the context.
#[test]
fn regression_18_dockerfile_outside_the_context() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    let other = dir.path().join("other");
    fs_err::create_dir_all(context.join("src")).unwrap();
    fs_err::create_dir_all(&other).unwrap();
    fs_err::write(context.join("src/app.txt"), "from the context\n").unwrap();
    fs_err::write(context.join("src/secret.txt"), "ignored\n").unwrap();
    fs_err::write(context.join(".dockerignore"), "src/secret.txt\n").unwrap();
    // A Dockerfile in the context is not the one built.
    fs_err::write(context.join("Dockerfile"), "FROM scratch\nCOPY nothing /\n").unwrap();
    fs_err::write(
        other.join("Dockerfile"),
        "FROM busybox AS build\nCOPY src/ /in/\nRUN ls /in > /listing && mv /listing /in/\n\
         FROM scratch\nCOPY --from=build /in/ /\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&context)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--config")
        .arg(crate::common::mirror_config(dir.path()))
        .args(["build", "-f", "../other/Dockerfile", "--output"])
        .arg(format!("type=local,dest={}", out.display()))
        .arg(".")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(out.join("app.txt")).unwrap(),
        "from the context\n"
    );
    assert_eq!(
        fs_err::read_to_string(out.join("listing")).unwrap(),
        "app.txt\n"
    );
    assert!(!out.join("secret.txt").exists());
}

/// Issue 18: base image tags are checked against their registry. A tag moved to another
/// image is seen by the next `FROM` and by an LLB image source without a digest (keyed by
/// what the tag points to now); `--pull` fetches the image again; a registry that does not
/// answer leaves the stored image in use, saying so.
#[test]
fn serial_regression_18_moved_tags_are_seen_and_the_store_stands_in_offline() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A tag of its own per run, so an earlier run's image cannot satisfy the builds.
    let name = format!("127.0.0.1:5000/kiln-test/moving:{:x}", std::process::id());
    let publish = |marker: &str| {
        let pusher = dir.path().join(format!("pusher-{marker}"));
        let dockerfile = format!("FROM busybox\nRUN echo {marker} > /marker\n");
        assert_ok(build(&pusher, &dockerfile, &[], &["-t", &name, "--push"]));
    };
    let builder = dir.path().join("builder");
    let from_tag = |extra: &[&str]| {
        let dockerfile = format!("FROM {name}\nRUN cat /marker > /seen\n");
        let output = build(&builder, &dockerfile, &[], extra);
        assert!(output.status.success(), "{}", text(&output));
        let seen = fs_err::read_to_string(builder.join("out/seen")).unwrap();
        (seen, text(&output))
    };
    let definition = kiln_llb::prost::Message::encode_to_vec(&kiln_llb::image(&name).marshal());
    let from_llb = || {
        let out = builder.join("llb-out");
        let _ = fs_err::remove_dir_all(&out);
        let output = crate::common::build_llb(&builder.join("root"), &definition, &out);
        assert!(output.status.success(), "{}", text(&output));
        fs_err::read_to_string(out.join("marker")).unwrap()
    };

    publish("one");
    assert_eq!(from_tag(&[]).0, "one\n");
    assert_eq!(from_llb(), "one\n");
    // The tag moves: the stored image is not used any more.
    publish("two");
    assert_eq!(from_tag(&[]).0, "two\n");
    assert_eq!(from_llb(), "two\n");
    // `--pull` fetches it again, and builds the same.
    assert_eq!(from_tag(&["--pull"]).0, "two\n");

    // A registry that does not answer: the stored image stands in, and the build says so.
    let offline = "127.0.0.1:1/kiln-test/offline:1";
    assert_ok(kiln_in(&builder, &["tag", &name, offline], &[]));
    let dockerfile = format!("FROM {offline}\nRUN cat /marker > /seen\n");
    let output = build(&builder, &dockerfile, &[], &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs_err::read_to_string(builder.join("out/seen")).unwrap(),
        "two\n"
    );
    assert!(
        text(&output).contains("using the image in the store"),
        "{}",
        text(&output)
    );
    // With `--pull` there is nothing to fall back on.
    let output = build(&builder, &dockerfile, &[], &["--pull"]);
    assert!(!output.status.success(), "{}", text(&output));
}

/// Issue 17: a context copied whole into a new directory shares the context snapshot's files
/// (hard links) instead of copying them, with the same files, modes and links as a copy; a
/// copy into an existing directory still merges; an unchanged rebuild is served from the
/// cache and a touched file runs the copy again with its new content.
#[test]
fn regression_17_a_context_copied_whole_links_its_files_and_a_touched_file_invalidates() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(context.join("sub/deep")).unwrap();
    fs_err::write(context.join("sub/a.txt"), "a one\n").unwrap();
    fs_err::write(context.join("sub/deep/b.txt"), "b\n").unwrap();
    fs_err::write(context.join("secret.txt"), "s\n").unwrap();
    fs_err::set_permissions(
        context.join("secret.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", context.join("link")).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox\n\
         COPY . /ctx\n\
         COPY sub /etc/\n\
         RUN cat /ctx/sub/a.txt /ctx/sub/deep/b.txt /etc/a.txt > /out \
             && stat -c '%a %u' /ctx/secret.txt >> /out && readlink /ctx/link >> /out \
             && test -f /etc/passwd && stat -c %h /ctx/sub/a.txt > /links \
             && stat -c %h /etc/a.txt >> /links\n\
         FROM scratch\n\
         COPY --from=0 /out /links /\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let build = || {
        let output = assert_ok(kiln_in(
            dir.path(),
            &[
                "build",
                "--progress=plain",
                "--output",
                &format!("type=local,dest={}", out.display()),
                context.to_str().unwrap(),
            ],
            &[],
        ));
        let progress = text(&output);
        let cached = progress
            .lines()
            .filter(|l| l.starts_with('#') && l.ends_with(" CACHED"))
            .count();
        (progress, cached)
    };
    build();
    assert_eq!(
        fs_err::read_to_string(out.join("out")).unwrap(),
        "a one\nb\na one\n640 0\n/etc/passwd\n"
    );
    // Copied whole into a new directory: a link to the context's snapshot; merged into
    // busybox's /etc: a copy.
    let links: Vec<u64> = fs_err::read_to_string(out.join("links"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(links[0] >= 2, "{links:?}");
    assert_eq!(links[1], 1, "{links:?}");

    let (progress, all) = build();
    assert!(
        progress.contains(&format!("{all}/{all} steps cached")),
        "an unchanged rebuild is cached:\n{progress}"
    );

    fs_err::write(context.join("sub/a.txt"), "a two\n").unwrap();
    let (progress, cached) = build();
    assert!(cached < all, "{progress}");
    assert_eq!(
        fs_err::read_to_string(out.join("out")).unwrap(),
        "a two\nb\na two\n640 0\n/etc/passwd\n"
    );
}

/// Issue 17: a rebuild after one context file changed takes the unchanged files from the
/// context's last snapshot (hard links) instead of copying them again, and the snapshot is
/// the one a copy makes: the copied layer's entries (names, modes, owners, times, contents)
/// are a cold build's in a fresh store.
#[test]
fn regression_17_a_touched_context_links_its_unchanged_files_from_the_last_snapshot() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("ctx");
    fs_err::create_dir_all(context.join("d/sub")).unwrap();
    for (name, text) in [("d/f1", "one\n"), ("d/f2", "two\n"), ("d/sub/g", "g\n")] {
        fs_err::write(context.join(name), text).unwrap();
    }
    fs_err::set_permissions(
        context.join("d/sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        "FROM busybox\n\
         COPY d /d\n\
         RUN stat -c '%h %n' /d/f1 /d/f2 /d/sub/g > /links && cat /d/f2 >> /links\n",
    )
    .unwrap();
    // Builds into `root` (a store of its own under DIR/ROOT) and answers the entries of the
    // COPY's layer and what the RUN saw.
    let build = |root: &str| -> (String, String) {
        let store = dir.path().join(root);
        fs_err::create_dir_all(&store).unwrap();
        let layout = store.join("layout");
        let _ = fs_err::remove_dir_all(&layout);
        assert_ok(kiln_in(
            &store,
            &[
                "build",
                "--output",
                &format!(
                    "type=oci,dest={},tar=false,compression=uncompressed",
                    layout.display()
                ),
                context.to_str().unwrap(),
            ],
            &[],
        ));
        let blob = |digest: &serde_json::Value| -> Vec<u8> {
            let hex = &digest.as_str().unwrap()["sha256:".len()..];
            fs_err::read(layout.join("blobs/sha256").join(hex)).unwrap()
        };
        let json =
            |bytes: Vec<u8>| -> serde_json::Value { serde_json::from_slice(&bytes).unwrap() };
        let index = json(fs_err::read(layout.join("index.json")).unwrap());
        let manifest = json(blob(&index["manifests"][0]["digest"]));
        // The COPY's layer, entry by entry (but `d` itself: a new directory of the step's time).
        let mut copied = String::new();
        for entry in tar::Archive::new(blob(&manifest["layers"][1]["digest"]).as_slice())
            .entries()
            .unwrap()
        {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let path = entry.path().unwrap().display().to_string();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            if path.trim_end_matches('/') != "d" {
                copied.push_str(&format!(
                    "{path} {:o} {}:{} {} {:?}\n",
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    header.gid().unwrap(),
                    header.mtime().unwrap(),
                    String::from_utf8_lossy(&content),
                ));
            }
        }
        // The RUN's layer: its `links` file.
        let top = blob(&manifest["layers"][2]["digest"]);
        let mut listing = String::new();
        for entry in tar::Archive::new(top.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().as_os_str() == "links" {
                std::io::Read::read_to_string(&mut entry, &mut listing).unwrap();
            }
        }
        (copied, listing)
    };
    let (_, first) = build("warm");
    assert_eq!(first, "2 /d/f1\n2 /d/f2\n2 /d/sub/g\ntwo\n");
    fs_err::write(context.join("d/f2"), "two, touched\n").unwrap();
    let (touched, second) = build("warm");
    // f1 and g are the files of the first context snapshot (with its COPY's links, and this
    // snapshot's and COPY's); f2 is new.
    assert_eq!(second, "4 /d/f1\n2 /d/f2\n4 /d/sub/g\ntwo, touched\n");
    let (cold, third) = build("cold");
    assert_eq!(third, "2 /d/f1\n2 /d/f2\n2 /d/sub/g\ntwo, touched\n");
    assert_eq!(
        touched, cold,
        "the linked snapshot differs from a copied one"
    );
}
