//! The builder: graphs marshal deterministically, load back with the expected structure, and
//! BuildKit-like inputs encode as BuildKit encodes them.

use kiln_llb::prost::Message as _;
use kiln_llb::{
    Chown, CopyOptions, Digest, FileAction, LoadedDefinition, MkdirOptions, MountOptions, State,
    diff, image, image_for, local_with, merge, pb, scratch,
};

fn amd64() -> pb::Platform {
    pb::Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    }
}

fn small_graph() -> State {
    let base = image_for("busybox", amd64());
    let context = local_with(
        "context",
        kiln_llb::LocalOptions {
            include_patterns: vec!["src/<x>".into()],
            shared_key_hint: Some("context".into()),
            ..Default::default()
        },
    );
    let exec = base
        .clone()
        .env("A", "1")
        .cwd("/work")
        .run(["sh", "-c", "make > /out/log"])
        .with_mount(
            "/src",
            context.clone(),
            MountOptions {
                readonly: true,
                ..Default::default()
            },
        )
        .with_mount("/out", scratch(), MountOptions::default());
    let out = exec.get_mount("/out").expect("writable mount");
    let root = exec.root();
    merge(&[root, out.file(FileAction::mkfile("/done", 0o644, b"ok\n"))])
        .with_custom_name("final merge")
}

#[test]
fn builder_marshal_is_deterministic_and_loads() {
    let def = small_graph().marshal();
    let bytes = def.encode_to_vec();
    assert_eq!(small_graph().marshal().encode_to_vec(), bytes);

    let loaded = LoadedDefinition::from_bytes(&bytes).expect("valid definition");
    // image, local, exec, file, merge (+ terminal, not listed).
    let kinds: Vec<_> = loaded
        .ops()
        .iter()
        .map(|op| kiln_llb::op_kind(op.op()).unwrap())
        .collect();
    assert_eq!(kinds, ["source", "source", "exec", "file", "merge"]);
    let exec = &loaded.ops()[2];
    assert_eq!(exec.output_count(), 2, "root and /out are writable");
    let Some(pb::op::Op::Exec(e)) = exec.body() else {
        panic!("not exec")
    };
    let dests: Vec<_> = e.mounts.iter().map(|m| m.dest.as_str()).collect();
    assert_eq!(dests, ["/", "/out", "/src"]);
    assert_eq!(e.mounts[1].input, -1, "scratch mount has no input");
    assert_eq!(e.mounts[1].output, 1);
    assert_eq!(e.mounts[2].output, -1, "read-only mount has no output");
    let meta = e.meta.as_ref().unwrap();
    assert_eq!(meta.env, ["A=1"]);
    assert_eq!(meta.cwd, "/work");
    // The file op works on output 1 of the exec op.
    let file = &loaded.ops()[3];
    assert_eq!(file.inputs()[0].digest, exec.digest());
    assert_eq!(file.inputs()[0].index, 1);
    assert!(exec.metadata().unwrap().caps["exec.mount.bind"]);
    // The result is the merge, named in its metadata.
    let result = loaded.result();
    assert_eq!(result.digest, loaded.ops()[4].digest());
    assert_eq!(
        loaded.metadata(&result.digest).unwrap().description["llb.customname"],
        "final merge"
    );
    // Source attrs: Go-style JSON array (HTML-escaped) and the shared key hint.
    let Some(pb::op::Op::Source(local)) = loaded.ops()[1].body() else {
        panic!("not source")
    };
    assert_eq!(local.identifier, "local://context");
    assert_eq!(
        local.attrs["local.includepattern"],
        r#"["src/\u003cx\u003e"]"#
    );
    assert_eq!(local.attrs["local.sharedkeyhint"], "context");
    // Each op appears once and digests match the bytes.
    for (op, raw) in loaded.ops().iter().zip(&def.def) {
        assert_eq!(op.digest(), Digest::from_bytes(raw));
    }
}

#[test]
fn special_mounts_produce_no_output() {
    let exec = image_for("busybox", amd64())
        .run(["true"])
        .with_mount(
            "/run/secrets/token",
            scratch(),
            MountOptions {
                secret: Some(pb::SecretOpt {
                    id: "token".into(),
                    mode: 0o400,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .with_mount(
            "/cache",
            scratch(),
            MountOptions {
                cache: Some(("go-build".into(), pb::CacheSharingOpt::Locked)),
                ..Default::default()
            },
        )
        .with_mount(
            "/tmp",
            scratch(),
            MountOptions {
                tmpfs: Some(1 << 20),
                ..Default::default()
            },
        )
        .network(pb::NetMode::None)
        .security(pb::SecurityMode::Insecure);
    assert!(exec.get_mount("/cache").is_none());
    let loaded = LoadedDefinition::from_definition(exec.root().marshal()).unwrap();
    let op = &loaded.ops()[1];
    assert_eq!(op.output_count(), 1);
    let Some(pb::op::Op::Exec(e)) = op.body() else {
        panic!("not exec")
    };
    let kinds: Vec<_> = e
        .mounts
        .iter()
        .map(|m| (m.dest.as_str(), m.mount_type, m.output))
        .collect();
    // As BuildKit marshals them: filesystem mounts by target, then secrets.
    assert_eq!(
        kinds,
        [
            ("/", pb::MountType::Bind as i32, 0),
            ("/cache", pb::MountType::Cache as i32, -1),
            ("/tmp", pb::MountType::Tmpfs as i32, -1),
            ("/run/secrets/token", pb::MountType::Secret as i32, -1),
        ]
    );
    assert_eq!(e.mounts[1].cache_opt.as_ref().unwrap().sharing, 2);
    assert_eq!(e.network, 2);
    assert_eq!(e.security, 1);
    let caps = &op.metadata().unwrap().caps;
    assert!(caps["exec.mount.secret"] && caps["exec.mount.cache"] && caps["exec.mount.tmpfs"]);
}

#[test]
fn shared_subgraphs_are_marshalled_once() {
    let base = image_for("alpine:3.20", amd64());
    let a = base.run(["true"]).root();
    let b = base.run(["true"]).root();
    let def = merge(&[a, b]).marshal();
    // image, one exec (both runs are the same op), merge, terminal.
    assert_eq!(def.def.len(), 4);
    let loaded = LoadedDefinition::from_definition(def).unwrap();
    let Some(pb::op::Op::Merge(m)) = loaded.ops()[2].body() else {
        panic!("not merge")
    };
    // Two separately built (equal) ops stay two inputs, both naming the one exec op.
    let inputs: Vec<_> = m.inputs.iter().map(|i| i.input).collect();
    assert_eq!(inputs, [0, 1]);
    let merge_op = &loaded.ops()[2];
    assert_eq!(merge_op.inputs()[0], merge_op.inputs()[1]);
    assert_eq!(merge_op.inputs()[0].digest, loaded.ops()[1].digest());
}

#[test]
fn diff_and_scratch() {
    let base = image_for("busybox", amd64());
    let upper = base.run(["touch", "/x"]).root();
    let loaded = LoadedDefinition::from_definition(diff(&base, &upper).marshal()).unwrap();
    let Some(pb::op::Op::Diff(d)) = loaded.ops().last().unwrap().body() else {
        panic!("not diff")
    };
    assert_eq!(d.lower.as_ref().unwrap().input, 0);
    assert_eq!(d.upper.as_ref().unwrap().input, 1);
    assert!(scratch().marshal().def.is_empty());
    assert!(image("busybox").marshal().def.len() == 2);
}

#[test]
fn image_names_are_normalised() {
    for (name, want) in [
        ("busybox", "docker.io/library/busybox:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("localhost/x", "localhost/x:latest"),
        (
            "127.0.0.1:5000/library/busybox",
            "127.0.0.1:5000/library/busybox:latest",
        ),
        ("ghcr.io/o/r@sha256:abc", "ghcr.io/o/r@sha256:abc"),
    ] {
        assert_eq!(kiln_llb::normalize_image_ref(name), want, "{name}");
    }
}

/// The file op at the top of `state`'s graph.
fn last_file_op(state: &State) -> pb::FileOp {
    let loaded = LoadedDefinition::from_definition(state.marshal()).unwrap();
    let Some(pb::op::Op::File(f)) = loaded.ops().last().unwrap().body() else {
        panic!("not file")
    };
    f.clone()
}

#[test]
fn chained_file_actions_refer_to_earlier_results() {
    let base = image_for("busybox", amd64());
    let other = kiln_llb::local("ctx");
    let action = FileAction::mkdir("/a", 0o755, MkdirOptions::default())
        .then_copy(&other, "/f", "/a/f", CopyOptions::default())
        .then_rm("/tmp", true);
    let f = last_file_op(&base.file(action));
    let shape: Vec<_> = f
        .actions
        .iter()
        .map(|a| (a.input, a.secondary_input, a.output))
        .collect();
    // Two inputs (base, ctx); action 1 works on action 0's result (2 + 0), action 2 on 1's.
    assert_eq!(shape, [(0, -1, -1), (2, 1, -1), (3, -1, 0)]);
}

#[test]
fn owner_names_are_read_in_the_actions_own_input() {
    let base = image_for("busybox", amd64());
    let other = kiln_llb::local("ctx");
    let by_name = |name: &str| {
        pb::user_opt::User::ByName(pb::NamedUserOpt {
            name: name.to_owned(),
            input: -1,
        })
    };
    let owner = Chown {
        user: Some(by_name("app")),
        group: Some(by_name("staff")),
    };
    let action = FileAction::mkdir(
        "/a",
        0o755,
        MkdirOptions {
            owner: Some(owner.clone()),
            ..MkdirOptions::default()
        },
    )
    .then_copy(
        &other,
        "/f",
        "/a/f",
        CopyOptions {
            owner: Some(owner),
            ..CopyOptions::default()
        },
    );
    let f = last_file_op(&base.file(action));
    let owners: Vec<_> = f
        .actions
        .iter()
        .map(|a| {
            let owner = match &a.action {
                Some(pb::file_action::Action::Mkdir(m)) => m.owner.clone(),
                Some(pb::file_action::Action::Copy(c)) => c.owner.clone(),
                _ => None,
            }
            .unwrap();
            let input = |u: Option<pb::UserOpt>| match u.and_then(|u| u.user) {
                Some(pb::user_opt::User::ByName(n)) => (n.name, n.input),
                other => panic!("not by name: {other:?}"),
            };
            (input(owner.user), input(owner.group))
        })
        .collect();
    // The mkdir works on input 0 (the image), the copy on the mkdir's result (2, after ctx).
    assert_eq!(
        owners,
        [
            (("app".to_owned(), 0), ("staff".to_owned(), 0)),
            (("app".to_owned(), 2), ("staff".to_owned(), 2)),
        ]
    );
}

/// Rebuilds `045-workdir-run-pwd` with the builder; every op digest must equal BuildKit's.
#[test]
fn builder_reproduces_vector_045_digests() {
    let dir = kiln_testdata::llb_vectors_dir().join("045-workdir-run-pwd");
    let want: Vec<String> = fs_err::read_to_string(dir.join("digests.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();

    let base = image_for(
        "127.0.0.1:5000/library/busybox:latest@sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89",
        amd64(),
    );
    let mkdir = |path: &str| {
        FileAction::mkdir(
            path,
            0o755,
            MkdirOptions {
                make_parents: true,
                ..Default::default()
            },
        )
    };
    let b = base.file(mkdir("/test1")).file(mkdir("/test1/test2"));
    let ran = b
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .cwd("/test1/test2")
        .run(["/bin/sh", "-c", "echo -n \"$PWD\" > /pwd"])
        .remove_mount_stubs_recursive(true)
        .root();
    let out = scratch().file(FileAction::copy(
        &ran,
        "/pwd",
        "/",
        CopyOptions {
            follow_symlink: true,
            dir_copy_contents: true,
            create_dest_path: true,
            allow_wildcard: true,
            allow_empty_wildcard: true,
            ..Default::default()
        },
    ));
    let def = out.marshal();
    let ours: Vec<String> = def
        .def
        .iter()
        .map(|b| Digest::from_bytes(b).to_string())
        .collect();
    assert_eq!(ours, want);
}

/// Long chains of ops marshal, load and drop without exhausting the stack.
#[test]
fn deep_chains_marshal_and_load() {
    let mut state = image_for("busybox", amd64());
    for i in 0..20_000 {
        state = state.file(FileAction::mkdir(
            &format!("/d{i}"),
            0o755,
            MkdirOptions::default(),
        ));
    }
    let def = state.marshal();
    assert_eq!(def.def.len(), 20_002);
    drop(state);
    let loaded = LoadedDefinition::from_bytes(&def.encode_to_vec()).unwrap();
    assert_eq!(loaded.ops().len(), 20_001);
    assert_eq!(loaded.result().digest, loaded.ops()[20_000].digest());
    assert!(kiln_llb::dump::to_json_lines(&def).is_ok());
}
