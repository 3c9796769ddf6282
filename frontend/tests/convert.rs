//! Dockerfile conversion: LLB shape and image configuration per instruction, and errors.

use std::collections::BTreeMap;

use kiln_frontend::testing::FakeResolver;
use kiln_frontend::{ConvertOptions, Converted, convert};
use kiln_llb::pb::op::Op;
use kiln_llb::{LoadedDefinition, pb, prost::Message as _};

const DIGEST: &str = "sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89";

/// Serves `config` for every reference but `missing`.
fn resolver(config: &str) -> FakeResolver {
    FakeResolver::default()
        .fallback(DIGEST, config)
        .unknown("missing")
}

const BASE: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","HOME=/root"],"WorkingDir":"/srv","User":"app","Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}]}"#;

fn run(dockerfile: &str, options: &ConvertOptions) -> Result<Converted, String> {
    convert(dockerfile.as_bytes(), options, &resolver(BASE)).map_err(|e| e.to_string())
}

fn ok(dockerfile: &str) -> Converted {
    run(dockerfile, &ConvertOptions::default()).unwrap()
}

fn ops(c: &Converted) -> Vec<pb::Op> {
    let loaded = LoadedDefinition::from_bytes(&c.definition.encode_to_vec()).unwrap();
    loaded
        .ops()
        .iter()
        .map(|o| pb::Op::decode(o.bytes()).unwrap())
        .collect()
}

fn execs(c: &Converted) -> Vec<pb::ExecOp> {
    ops(c)
        .into_iter()
        .filter_map(|o| match o.op {
            Some(Op::Exec(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn created_by(c: &Converted) -> Vec<String> {
    c.config
        .history
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h.empty_layer,
                h.created_by.clone().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn base_image_defaults_and_run() {
    let c = ok("FROM alpine\nENV A=1 B=\"two words\"\nRUN echo $A\nRUN [\"ls\", \"-l\"]\n");
    let all = ops(&c);
    let Some(Op::Source(source)) = &all[0].op else {
        panic!()
    };
    assert_eq!(
        source.identifier,
        format!("docker-image://docker.io/library/alpine:latest@{DIGEST}")
    );
    let runs = execs(&c);
    let meta = runs[0].meta.clone().unwrap();
    assert_eq!(meta.args, ["/bin/sh", "-c", "echo $A"]);
    assert_eq!(meta.env, ["PATH=/bin", "HOME=/root", "A=1", "B=two words"]);
    assert_eq!(meta.cwd, "/srv");
    assert_eq!(meta.user, "app");
    assert!(meta.remove_mount_stubs_recursive);
    assert_eq!(runs[1].meta.as_ref().unwrap().args, ["ls", "-l"]);
    assert_eq!(c.config.rootfs.diff_ids, ["sha256:aa"]);
    assert_eq!(c.config.config.cmd, Some(vec!["sh".to_owned()]));
    assert_eq!(
        created_by(&c),
        [
            "false base",
            "true ENV A=1 B=two words",
            "false RUN /bin/sh -c echo $A # buildkit",
            "false RUN ls -l # buildkit",
        ]
    );
}

#[test]
fn env_values_expand_before_any_assignment_of_the_line() {
    let c = ok("FROM alpine\nENV a=old\nENV a=new b=$a c=${a}-x\nRUN true\n");
    let env = execs(&c)[0].meta.clone().unwrap().env;
    assert_eq!(
        env,
        ["PATH=/bin", "HOME=/root", "a=new", "b=old", "c=old-x"]
    );
    assert_eq!(c.config.config.env, env);
    assert!(
        created_by(&c).contains(&"true ENV a=new b=old c=old-x".to_owned()),
        "{:?}",
        created_by(&c)
    );
}

#[test]
fn config_instructions() {
    let c = ok("FROM scratch\n\
        LABEL a=b \"c d\"=e\n\
        EXPOSE 80 53/udp\n\
        VOLUME /data\n\
        STOPSIGNAL SIGINT\n\
        USER 1000:1000\n\
        SHELL [\"/bin/bash\", \"-c\"]\n\
        HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://x/\n\
        ONBUILD RUN echo later\n\
        ENTRYPOINT echo hi\n\
        CMD [\"--flag\"]\n\
        MAINTAINER someone\n");
    let cfg = &c.config.config;
    assert_eq!(cfg.labels["a"], "b");
    assert_eq!(cfg.labels["c d"], "e");
    assert_eq!(
        cfg.exposed_ports.keys().collect::<Vec<_>>(),
        ["53/udp", "80/tcp"]
    );
    assert!(cfg.volumes.contains_key("/data"));
    assert_eq!(cfg.stop_signal, "SIGINT");
    assert_eq!(cfg.user, "1000:1000");
    assert_eq!(cfg.shell, ["/bin/bash", "-c"]);
    let health = cfg.healthcheck.as_ref().unwrap();
    assert_eq!(health.test, ["CMD-SHELL", "curl -f http://x/"]);
    assert_eq!(health.interval, 30_000_000_000);
    assert_eq!(health.retries, 3);
    assert_eq!(cfg.on_build, ["RUN echo later"]);
    assert_eq!(
        cfg.entrypoint,
        Some(vec![
            "/bin/bash".to_owned(),
            "-c".to_owned(),
            "echo hi".to_owned()
        ])
    );
    assert_eq!(cfg.cmd, Some(vec!["--flag".to_owned()]));
    assert!(cfg.args_escaped);
    assert_eq!(c.config.author.as_deref(), Some("someone"));
    let history = created_by(&c);
    assert!(
        history.contains(&"true EXPOSE [53/udp 80/tcp]".to_owned()),
        "{history:?}"
    );
    assert!(
        history.contains(&"true VOLUME [/data]".to_owned()),
        "{history:?}"
    );
    assert!(
        history.contains(&"true ENTRYPOINT [\"/bin/bash\" \"-c\" \"echo hi\"]".to_owned()),
        "{history:?}"
    );
    assert!(
        history.contains(
            &"true HEALTHCHECK {Test:[CMD-SHELL curl -f http://x/] Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}".to_owned()
        ),
        "{history:?}"
    );
    // Nothing here makes a layer: the definition is empty (scratch).
    assert!(c.definition.def.is_empty());
}

#[test]
fn entrypoint_resets_inherited_cmd() {
    let c = ok("FROM alpine\nENTRYPOINT [\"x\"]\n");
    assert_eq!(c.config.config.cmd, None);
    let c = ok("FROM alpine\nCMD [\"y\"]\nENTRYPOINT [\"x\"]\n");
    assert_eq!(c.config.config.cmd, Some(vec!["y".to_owned()]));
}

#[test]
fn args_global_stage_and_build_args() {
    let dockerfile = "ARG IMG=alpine\nARG V=global\nFROM $IMG\nARG V\nARG W=w-$V\nARG TARGETARCH\nRUN echo $V $W $TARGETARCH\n";
    let mut options = ConvertOptions::default();
    let c = run(dockerfile, &options).unwrap();
    let env = execs(&c)[0].meta.clone().unwrap().env;
    assert_eq!(
        env,
        [
            "PATH=/bin",
            "HOME=/root",
            "V=global",
            "W=w-global",
            "TARGETARCH=amd64"
        ]
    );
    assert_eq!(
        created_by(&c).last().unwrap(),
        "false RUN |3 V=global W=w-global TARGETARCH=amd64 /bin/sh -c echo $V $W $TARGETARCH # buildkit"
    );
    options.build_args = BTreeMap::from([
        ("V".to_owned(), "cli".to_owned()),
        ("IMG".to_owned(), "busybox".to_owned()),
    ]);
    let c = run(dockerfile, &options).unwrap();
    let Some(Op::Source(source)) = &ops(&c)[0].op else {
        panic!()
    };
    assert!(
        source.identifier.contains("library/busybox:latest"),
        "{}",
        source.identifier
    );
    let env = execs(&c)[0].meta.clone().unwrap().env;
    assert!(
        env.contains(&"V=cli".to_owned()) && env.contains(&"W=w-cli".to_owned()),
        "{env:?}"
    );
}

#[test]
fn workdir_copy_and_context_source() {
    let options = ConvertOptions {
        excludes: vec!["*.log".to_owned(), "!keep.log".to_owned()],
        ..ConvertOptions::default()
    };
    let c = run(
        "FROM scratch\nWORKDIR /app\nWORKDIR sub\nCOPY --chown=1:2 --chmod=640 a.txt b/ ./\n",
        &options,
    )
    .unwrap();
    let all = ops(&c);
    let Some(Op::Source(local)) = &all.iter().find_map(|o| match &o.op {
        Some(Op::Source(s)) if s.identifier.starts_with("local://") => Some(Op::Source(s.clone())),
        _ => None,
    }) else {
        panic!("no context source")
    };
    assert_eq!(local.identifier, "local://context");
    assert_eq!(local.attrs["local.followpaths"], r#"["a.txt","b"]"#);
    assert_eq!(
        local.attrs["local.excludepatterns"],
        r#"["*.log","!keep.log"]"#
    );
    let files: Vec<pb::FileOp> = all
        .iter()
        .filter_map(|o| match &o.op {
            Some(Op::File(f)) => Some(f.clone()),
            _ => None,
        })
        .collect();
    let Some(pb::file_action::Action::Mkdir(mkdir)) = &files[0].actions[0].action else {
        panic!()
    };
    assert_eq!(
        (mkdir.path.as_str(), mkdir.mode, mkdir.make_parents),
        ("/app", 0o755, true)
    );
    let Some(pb::file_action::Action::Mkdir(mkdir)) = &files[1].actions[0].action else {
        panic!()
    };
    assert_eq!(mkdir.path, "/app/sub");
    let copy = &files[2];
    assert_eq!(copy.actions.len(), 2);
    let Some(pb::file_action::Action::Copy(first)) = &copy.actions[0].action else {
        panic!()
    };
    assert_eq!(
        (first.src.as_str(), first.dest.as_str()),
        ("/a.txt", "/app/sub/")
    );
    assert_eq!(first.mode, 0o640);
    assert!(first.follow_symlink && first.dir_copy_contents && first.allow_wildcard);
    assert!(!first.attempt_unpack_docker_compatibility);
    let owner = first.owner.as_ref().unwrap();
    assert_eq!(
        owner.user.as_ref().unwrap().user,
        Some(pb::user_opt::User::ById(1))
    );
    let Some(pb::file_action::Action::Copy(second)) = &copy.actions[1].action else {
        panic!()
    };
    assert_eq!(second.src, "/b");
    assert_eq!(c.config.config.working_dir, "/app/sub");
    assert_eq!(
        created_by(&c),
        [
            "false WORKDIR /app",
            "false WORKDIR /app/sub",
            "false COPY --chown=1:2 --chmod=640 a.txt b/ ./ # buildkit",
        ]
    );
}

#[test]
fn add_unpacks_local_archives() {
    let c = ok("FROM scratch\nADD t.tar.gz /\n");
    let copy = ops(&c)
        .into_iter()
        .find_map(|o| match o.op {
            Some(Op::File(f)) => Some(f),
            _ => None,
        })
        .unwrap();
    let Some(pb::file_action::Action::Copy(copy)) = &copy.actions[0].action else {
        panic!()
    };
    assert!(copy.attempt_unpack_docker_compatibility);
}

#[test]
fn run_mounts_and_network() {
    let c = ok(
        "FROM alpine AS b\nRUN true\nFROM alpine\nRUN --network=none \
         --mount=type=cache,target=/c,sharing=locked \
         --mount=type=tmpfs,target=/t,size=1024 \
         --mount=type=secret,id=tok \
         --mount=type=bind,from=b,source=/etc,target=/e \
         true\n",
    );
    let exec = execs(&c).pop().unwrap();
    assert_eq!(exec.network, pb::NetMode::None as i32);
    let by_dest: BTreeMap<&str, &pb::Mount> =
        exec.mounts.iter().map(|m| (m.dest.as_str(), m)).collect();
    let cache = by_dest["/c"];
    assert_eq!(cache.mount_type, pb::MountType::Cache as i32);
    let opt = cache.cache_opt.as_ref().unwrap();
    assert_eq!(
        (opt.id.as_str(), opt.sharing),
        ("//c", pb::CacheSharingOpt::Locked as i32)
    );
    assert_eq!(by_dest["/t"].tmpfs_opt.as_ref().unwrap().size, 1024);
    let secret = by_dest["/run/secrets/tok"].secret_opt.as_ref().unwrap();
    assert_eq!(
        (secret.id.as_str(), secret.mode, secret.optional),
        ("tok", 0o400, true)
    );
    let bind = by_dest["/e"];
    assert_eq!((bind.selector.as_str(), bind.readonly), ("/etc", true));
}

#[test]
fn ulimits_and_cgroup_parent_go_to_every_run() {
    let options = ConvertOptions {
        ulimits: vec![pb::Ulimit {
            name: "nofile".to_owned(),
            soft: 1024,
            hard: 2048,
        }],
        cgroup_parent: Some("ci".to_owned()),
        ..ConvertOptions::default()
    };
    let c = run("FROM alpine\nRUN true\nRUN false\n", &options).unwrap();
    let runs = execs(&c);
    assert_eq!(runs.len(), 2);
    for exec in runs {
        let meta = exec.meta.unwrap();
        assert_eq!(meta.ulimit, options.ulimits);
        assert_eq!(meta.cgroup_parent, "ci");
    }
    let caps = &c.definition.metadata;
    assert_eq!(
        caps.values()
            .filter(|m| m.caps.get("exec.meta.ulimit") == Some(&true))
            .count(),
        2
    );
    // Without the options, neither is set.
    let meta = execs(&ok("FROM alpine\nRUN true\n"))[0]
        .meta
        .clone()
        .unwrap();
    assert!(meta.ulimit.is_empty() && meta.cgroup_parent.is_empty());
}

#[test]
fn build_labels_go_over_the_dockerfiles() {
    let options = ConvertOptions {
        labels: BTreeMap::from([
            ("org.example.team".to_owned(), "build".to_owned()),
            ("version".to_owned(), "2".to_owned()),
        ]),
        ..ConvertOptions::default()
    };
    let c = run(
        "FROM alpine AS base\nLABEL version=1 kept=yes\nFROM base\n",
        &options,
    )
    .unwrap();
    assert_eq!(
        c.config.config.labels,
        BTreeMap::from([
            ("kept".to_owned(), "yes".to_owned()),
            ("org.example.team".to_owned(), "build".to_owned()),
            ("version".to_owned(), "2".to_owned()),
        ])
    );
    // No history entry: the labels are the build's, not a step's.
    assert_eq!(
        created_by(&c),
        created_by(&ok(
            "FROM alpine AS base\nLABEL version=1 kept=yes\nFROM base\n"
        ))
    );
}

#[test]
fn extra_hosts_go_to_every_run() {
    let options = ConvertOptions {
        extra_hosts: vec![
            ("Registry.Local".to_owned(), "10.0.0.7".parse().unwrap()),
            ("v6".to_owned(), "2001:db8:0::1".parse().unwrap()),
        ],
        ..ConvertOptions::default()
    };
    let c = run("FROM alpine\nRUN true\nRUN false\n", &options).unwrap();
    let runs = execs(&c);
    assert_eq!(runs.len(), 2);
    for exec in runs {
        let hosts: Vec<(String, String)> = exec
            .meta
            .unwrap()
            .extra_hosts
            .into_iter()
            .map(|h| (h.host, h.ip))
            .collect();
        assert_eq!(
            hosts,
            [
                ("registry.local".to_owned(), "10.0.0.7".to_owned()),
                ("v6".to_owned(), "2001:db8::1".to_owned()),
            ]
        );
    }
    let meta = execs(&ok("FROM alpine\nRUN true\n"))[0]
        .meta
        .clone()
        .unwrap();
    assert!(meta.extra_hosts.is_empty());
}

#[test]
fn the_build_network_mode_is_every_runs_unless_it_sets_its_own() {
    let dockerfile = "FROM alpine\nRUN true\nRUN --network=host true\nRUN --network=default true\n";
    let networks = |network: pb::NetMode| {
        let options = ConvertOptions {
            network,
            ..ConvertOptions::default()
        };
        execs(&run(dockerfile, &options).unwrap())
            .iter()
            .map(|e| e.network)
            .collect::<Vec<_>>()
    };
    let (unset, none, host) = (
        pb::NetMode::Unset as i32,
        pb::NetMode::None as i32,
        pb::NetMode::Host as i32,
    );
    assert_eq!(networks(pb::NetMode::Unset), [unset, host, unset]);
    assert_eq!(networks(pb::NetMode::None), [none, host, none]);
    assert_eq!(networks(pb::NetMode::Host), [host, host, host]);
}

#[test]
fn shm_size_mounts_a_tmpfs_of_that_size_on_dev_shm() {
    let options = ConvertOptions {
        shm_size: 128 << 20,
        ..ConvertOptions::default()
    };
    let c = run(
        "FROM alpine\nRUN --mount=type=tmpfs,target=/t true\n",
        &options,
    )
    .unwrap();
    let exec = execs(&c).pop().unwrap();
    let tmpfs: Vec<(&str, i64)> = exec
        .mounts
        .iter()
        .filter_map(|m| Some((m.dest.as_str(), m.tmpfs_opt.as_ref()?.size)))
        .collect();
    // In the op's mount order (sorted by target, as BuildKit's).
    assert_eq!(tmpfs, [("/dev/shm", 128 << 20), ("/t", 0)]);
    let exec = execs(&ok("FROM alpine\nRUN true\n")).pop().unwrap();
    assert!(exec.mounts.iter().all(|m| m.dest != "/dev/shm"));
}

#[test]
fn no_cache_stages_mark_their_runs_to_ignore_the_cache() {
    let options = ConvertOptions {
        no_cache_stages: vec!["Build".to_owned(), "absent".to_owned()],
        ..ConvertOptions::default()
    };
    let c = run(
        "FROM alpine AS base\nRUN echo base\n\
         FROM base AS build\nRUN echo build\nCOPY a /a\n\
         FROM build\nRUN echo final\n",
        &options,
    )
    .unwrap();
    let loaded = LoadedDefinition::from_bytes(&c.definition.encode_to_vec()).unwrap();
    let mut ignored: Vec<String> = loaded
        .ops()
        .iter()
        .filter(|op| op.metadata().is_some_and(|m| m.ignore_cache))
        .map(|op| match pb::Op::decode(op.bytes()).unwrap().op {
            Some(Op::Exec(e)) => e.meta.unwrap().args.join(" "),
            other => format!("{other:?}"),
        })
        .collect();
    ignored.sort();
    assert_eq!(ignored, ["/bin/sh -c echo build"]);
    // Without the option, no step ignores the cache.
    let c = ok("FROM alpine AS build\nRUN echo build\n");
    assert!(c.definition.metadata.values().all(|m| !m.ignore_cache));
}

#[test]
fn cache_mount_owner_makes_a_cache_directory() {
    let c = ok("FROM alpine\nRUN --mount=type=cache,target=/c,uid=1000,gid=50,mode=0700 true\n");
    let exec = execs(&c).pop().unwrap();
    let cache = exec.mounts.iter().find(|m| m.dest == "/c").unwrap();
    assert_eq!(cache.selector, "/cache");
    let mkdir = ops(&c)
        .into_iter()
        .find_map(|o| match o.op {
            Some(Op::File(f)) => Some(f),
            _ => None,
        })
        .unwrap();
    let Some(pb::file_action::Action::Mkdir(mkdir)) = &mkdir.actions[0].action else {
        panic!()
    };
    assert_eq!((mkdir.path.as_str(), mkdir.mode), ("/cache", 0o700));
    let owner = mkdir.owner.as_ref().unwrap();
    assert_eq!(
        owner.user.as_ref().unwrap().user,
        Some(pb::user_opt::User::ById(1000))
    );
    assert_eq!(
        owner.group.as_ref().unwrap().user,
        Some(pb::user_opt::User::ById(50))
    );
}

fn platform(text: &str) -> pb::Platform {
    kiln_llb::Platform::parse(text).unwrap().to_pb()
}

#[test]
fn stages_are_built_for_their_from_platform_or_the_target() {
    let options = ConvertOptions {
        platform: platform("linux/arm64"),
        build_platform: platform("linux/amd64"),
        ..ConvertOptions::default()
    };
    let c = run(
        "FROM --platform=$BUILDPLATFORM alpine AS tools\nARG TARGETARCH BUILDARCH\n\
         RUN echo $BUILDARCH $TARGETARCH > /made\n\
         FROM alpine\nARG TARGETARCH\nCOPY --from=tools /made /made-$TARGETARCH\nRUN uname -m\n",
        &options,
    )
    .unwrap();
    let platforms = |kind: fn(&Op) -> bool| -> Vec<String> {
        ops(&c)
            .into_iter()
            .filter(|o| o.op.as_ref().is_some_and(kind))
            .map(|o| kiln_llb::Platform::from_pb(&o.platform.unwrap()).to_string())
            .collect()
    };
    // The tools stage runs on the build platform, the last stage on the target's.
    assert_eq!(
        platforms(|o| matches!(o, Op::Exec(_))),
        ["linux/amd64", "linux/arm64"]
    );
    let mut images = platforms(|o| matches!(o, Op::Source(_)));
    images.sort();
    assert_eq!(images, ["linux/amd64", "linux/arm64"]);
    let args: Vec<Vec<String>> = execs(&c)
        .into_iter()
        .map(|e| e.meta.unwrap().args)
        .collect();
    assert_eq!(
        args[0],
        ["/bin/sh", "-c", "echo $BUILDARCH $TARGETARCH > /made"]
    );
    let env = execs(&c)[0].meta.clone().unwrap().env;
    assert!(env.contains(&"TARGETARCH=arm64".to_owned()), "{env:?}");
    assert!(env.contains(&"BUILDARCH=amd64".to_owned()), "{env:?}");
    let copy = ops(&c)
        .into_iter()
        .find_map(|o| match o.op {
            Some(Op::File(f)) => Some(f),
            _ => None,
        })
        .unwrap();
    let Some(pb::file_action::Action::Copy(copy)) = &copy.actions[0].action else {
        panic!("a copy")
    };
    assert_eq!(copy.dest, "/made-arm64");
    assert_eq!(
        (c.config.os.as_str(), c.config.architecture.as_str()),
        ("linux", "arm64")
    );
    assert_eq!(c.config.variant, None);

    let arm = ConvertOptions {
        platform: platform("linux/arm/v7"),
        ..ConvertOptions::default()
    };
    let c = run("FROM alpine\nRUN true\n", &arm).unwrap();
    assert_eq!(c.config.variant.as_deref(), Some("v7"));

    let err = run(
        "ARG P=linux//arm64\nFROM --platform=$P alpine\n",
        &ConvertOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.ends_with("failed to parse platform linux//arm64: an empty part"),
        "{err}"
    );
}

#[test]
fn heredoc_run_with_shebang_mounts_a_script() {
    let c = ok("FROM alpine\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n");
    let exec = execs(&c).pop().unwrap();
    assert_eq!(exec.meta.unwrap().args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert!(
        exec.mounts
            .iter()
            .any(|m| m.dest == "/dev/pipes/" && m.readonly)
    );
}

#[test]
fn onbuild_triggers_of_the_base_image_run_first() {
    let base = r#"{"architecture":"amd64","os":"linux","config":{"OnBuild":["RUN echo triggered"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
    let c = convert(
        b"FROM parent\nRUN echo mine\n",
        &ConvertOptions::default(),
        &resolver(base),
    )
    .unwrap();
    let args: Vec<String> = execs(&c)
        .into_iter()
        .map(|e| e.meta.unwrap().args[2].clone())
        .collect();
    assert_eq!(args, ["echo triggered", "echo mine"]);
    assert!(c.config.config.on_build.is_empty());
}

#[test]
fn target_picks_stages() {
    let dockerfile =
        "FROM alpine AS a\nRUN echo a\nFROM alpine AS b\nRUN echo b\nFROM a\nRUN echo c\n";
    let args = |c: &Converted| -> Vec<String> {
        execs(c)
            .into_iter()
            .map(|e| e.meta.unwrap().args[2].clone())
            .collect()
    };
    assert_eq!(args(&ok(dockerfile)), ["echo a", "echo c"]);
    let options = ConvertOptions {
        target: Some("b".to_owned()),
        ..ConvertOptions::default()
    };
    assert_eq!(args(&run(dockerfile, &options).unwrap()), ["echo b"]);
}

#[test]
fn instructions_that_are_not_utf8_are_refused_not_altered() {
    // A source path, a command or a heredoc file's content with a Latin-1 byte would reach the
    // build with U+FFFD in its place: the conversion refuses it, naming the line.
    for (dockerfile, line) in [
        (&b"FROM scratch\nCOPY caf\xe9.txt /\n"[..], 2),
        (b"FROM busybox\nRUN echo \xff > /x\n", 2),
        (b"FROM scratch\nCOPY <<EOF /f\n\xe9t\xe9\nEOF\n", 3),
    ] {
        let err = convert(dockerfile, &ConvertOptions::default(), &resolver(BASE)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("Dockerfile:{line}\n")), "{text}");
        assert!(
            text.ends_with("an instruction or heredoc line that is not UTF-8 text"),
            "{text}"
        );
    }
    // A comment may hold any bytes.
    convert(
        b"# caf\xe9\nFROM scratch\nCOPY a /\n",
        &ConvertOptions::default(),
        &resolver(BASE),
    )
    .unwrap();
}

#[test]
fn errors_are_worded_like_buildkit() {
    let options = ConvertOptions {
        target: Some("nope".to_owned()),
        ..ConvertOptions::default()
    };
    assert_eq!(
        run("FROM alpine AS a\n", &options).unwrap_err(),
        "target stage \"nope\" could not be found"
    );
    let err = run(
        "FROM alpine\nCOPY --from=5 /a /b\n",
        &ConvertOptions::default(),
    )
    .unwrap_err();
    assert!(err.starts_with("Dockerfile:2\n"), "{err}");
    assert!(err.ends_with("invalid stage index 5"), "{err}");
    let err = run(
        "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n",
        &ConvertOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.starts_with("circular dependency detected on stage: "),
        "{err}"
    );
    let err = run(
        "FROM alpine AS a\nCOPY --from=later /x /x\nFROM alpine AS later\n",
        &ConvertOptions {
            target: Some("a".to_owned()),
            ..ConvertOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        err.ends_with(
            "cannot copy from stage \"later\", it needs to be defined before current stage \"a\""
        ),
        "{err}"
    );
    let err = run(
        "FROM alpine\nCOPY --from=$X /a /b\n",
        &ConvertOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("variable expansion is not supported for --from"),
        "{err}"
    );
    let err = run("ARG X\nFROM $X\n", &ConvertOptions::default()).unwrap_err();
    assert!(
        err.starts_with("Dockerfile:2\n") && err.ends_with("base name ($X) should not be blank"),
        "{err}"
    );
    let err = run("FROM missing\n", &ConvertOptions::default()).unwrap_err();
    assert!(
        err.starts_with("Dockerfile:1\n") && err.ends_with("missing: manifest unknown"),
        "{err}"
    );
    let err = run("FROM alpine\nSTOPSIGNAL NOPE\n", &ConvertOptions::default()).unwrap_err();
    assert!(err.ends_with("Invalid signal: NOPE"), "{err}");
    assert_eq!(
        run("", &ConvertOptions::default()).unwrap_err(),
        "the Dockerfile cannot be empty"
    );
    let options = ConvertOptions {
        target: Some("bulid".to_owned()),
        ..ConvertOptions::default()
    };
    assert_eq!(
        run("FROM alpine AS build\nFROM alpine AS other\n", &options).unwrap_err(),
        "target stage \"bulid\" could not be found (did you mean build?)"
    );
    let options = ConvertOptions {
        excludes: vec!["!".to_owned()],
        ..ConvertOptions::default()
    };
    assert_eq!(
        run("FROM alpine\n", &options).unwrap_err(),
        "illegal exclusion pattern: \"!\""
    );
}
