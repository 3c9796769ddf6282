//! Conversion of `ADD <git url>`, symbolic `--chmod`, `COPY --parents` required paths,
//! `RUN --mount=type=ssh`, secrets as environment variables and the context's `local.unique`.
//! Expected ops are written out from BuildKit's `dockerfile2llb` and `client/llb` (commit
//! 73ed6825): `convert_copy.go`, `convert_ssh.go`, `convert_secrets.go`, `source.go` `Git`,
//! `exec.go`.

use std::collections::BTreeMap;

use kiln_frontend::testing::FakeResolver;
use kiln_frontend::{ConvertOptions, Converted, convert};
use kiln_llb::pb::op::Op;
use kiln_llb::{LoadedDefinition, pb, prost::Message as _};

const DIGEST: &str = "sha256:d52f2e085b43a66eac685128644e8bf54be9a108b5ec88453584b34039ae7f89";
const BASE: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;

/// Serves `BASE` for every reference.
fn resolver() -> FakeResolver {
    FakeResolver::default().fallback(DIGEST, BASE)
}

fn run(dockerfile: &str) -> Result<Converted, String> {
    convert(
        dockerfile.as_bytes(),
        &ConvertOptions::default(),
        &resolver(),
    )
    .map_err(|e| e.to_string())
}

fn ops(c: &Converted) -> Vec<pb::Op> {
    let loaded = LoadedDefinition::from_bytes(&c.definition.encode_to_vec()).unwrap();
    loaded
        .ops()
        .iter()
        .map(|o| pb::Op::decode(o.bytes()).unwrap())
        .collect()
}

fn sources(c: &Converted) -> Vec<pb::SourceOp> {
    ops(c)
        .into_iter()
        .filter_map(|o| match o.op {
            Some(Op::Source(s)) => Some(s),
            _ => None,
        })
        .collect()
}

fn copies(c: &Converted) -> Vec<pb::FileActionCopy> {
    ops(c)
        .into_iter()
        .filter_map(|o| match o.op {
            Some(Op::File(f)) => Some(f.actions),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a.action {
            Some(pb::file_action::Action::Copy(c)) => Some(c),
            _ => None,
        })
        .collect()
}

fn exec(c: &Converted) -> pb::ExecOp {
    ops(c)
        .into_iter()
        .find_map(|o| match o.op {
            Some(Op::Exec(e)) => Some(e),
            _ => None,
        })
        .expect("an exec op")
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn git_source(c: &Converted) -> pb::SourceOp {
    sources(c)
        .into_iter()
        .find(|s| s.identifier.starts_with("git://"))
        .expect("a git source")
}

#[test]
fn add_git_https_with_ref_subdir_and_keep_git_dir() {
    let c = run(
        "FROM scratch\nADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1:docs /dst\n",
    )
    .unwrap();
    let git = git_source(&c);
    assert_eq!(
        git.identifier,
        "git://github.com/moby/buildkit.git#v0.10.1:docs"
    );
    let want = attrs(&[
        ("git.authheadersecret", "GIT_AUTH_HEADER"),
        ("git.authtokensecret", "GIT_AUTH_TOKEN"),
        ("git.fullurl", "https://github.com/moby/buildkit.git"),
        ("git.keepgitdir", "true"),
    ]);
    assert_eq!(git.attrs.into_iter().collect::<BTreeMap<_, _>>(), want);
    let copy = &copies(&c)[0];
    assert_eq!((copy.src.as_str(), copy.dest.as_str()), ("/", "/dst"));
    assert_eq!(copy.mode, -1);
    assert!(copy.create_dest_path);
    assert!(!copy.follow_symlink && !copy.dir_copy_contents && !copy.allow_wildcard);
    assert!(!copy.attempt_unpack_docker_compatibility);
    // The history names the URL as written.
    let history = c.config.history.last().unwrap().created_by.clone().unwrap();
    assert_eq!(
        history,
        "ADD https://github.com/moby/buildkit.git#v0.10.1:docs /dst # buildkit"
    );
}

#[test]
fn add_git_scp_style_and_queries() {
    let c =
        run("FROM scratch\nADD git@github.com:moby/buildkit.git?tag=v1&keep-git-dir=false /x\n")
            .unwrap();
    let git = git_source(&c);
    assert_eq!(
        git.identifier,
        "git://github.com/moby/buildkit.git#refs/tags/v1"
    );
    assert_eq!(git.attrs["git.fullurl"], "git@github.com:moby/buildkit.git");
    assert_eq!(git.attrs["git.mountsshsock"], "default");
    assert!(!git.attrs.contains_key("git.keepgitdir"));
    // Nothing is read from the build context.
    let context = sources(&c)
        .into_iter()
        .find(|s| s.identifier == "local://context");
    assert!(context.is_none(), "no local source is used by the build");

    let c =
        run("FROM scratch\nADD --checksum=0123abc git://127.0.0.1:9418/project#main /x\n").unwrap();
    let git = git_source(&c);
    assert_eq!(git.identifier, "git://127.0.0.1:9418/project#main");
    assert_eq!(git.attrs["git.checksum"], "0123abc");
    assert_eq!(git.attrs["git.fullurl"], "git://127.0.0.1:9418/project");

    let c =
        run("FROM scratch\nADD https://host/r.git?submodules=false&checksum=beef /x\n").unwrap();
    let git = git_source(&c);
    assert_eq!(git.identifier, "git://host/r.git");
    assert_eq!(git.attrs["git.skipsubmodules"], "true");
    assert_eq!(git.attrs["git.checksum"], "beef");
}

#[test]
fn add_git_errors() {
    let e = |df: &str| run(df).unwrap_err();
    assert!(
        e("FROM scratch\nCOPY https://host/r.git /x\n")
            .contains("source can't be a git ref for COPY")
    );
    assert!(
        e("FROM scratch\nADD --keep-git-dir=false https://host/r.git?keep-git-dir=true /x\n")
            .contains("inconsistent keep-git-dir configuration")
    );
    assert!(
        e("FROM scratch\nADD --checksum=aa https://host/r.git?checksum=bb /x\n")
            .contains("checksum mismatch \"aa\" != \"bb\"")
    );
    assert!(
        e("FROM scratch\nADD --checksum=aa local.txt /x\n")
            .contains("checksum requires HTTP(S) or Git sources")
    );
    assert!(
        e("FROM scratch\nADD --checksum=aa https://host/r.git https://host/s.git /x/\n")
            .contains("checksum can't be specified for multiple sources")
    );
    assert!(
        e("FROM scratch\nADD https://host/r.git?bogus=1 /x\n")
            .contains("unexpected query \"bogus\"")
    );
    // A broken escape followed by a character of several bytes is named, not sliced through.
    let err = e("FROM scratch\nADD https://host/r.git?ref=%a\u{e9} /x\n");
    assert!(err.contains("invalid URL escape \"%a\u{e9}\""), "{err}");
    // An http(s) URL without `.git` stays a download.
    let c = run("FROM scratch\nADD https://host/file.tar /x\n").unwrap();
    assert!(
        sources(&c)
            .iter()
            .any(|s| s.identifier == "https://host/file.tar")
    );
}

#[test]
fn symbolic_chmod_is_a_mode_string() {
    let c = run("FROM scratch\nCOPY --chmod=u+x,g=r a /b\nCOPY --chmod=755 c /d\n").unwrap();
    let all = copies(&c);
    // BuildKit leaves the numeric mode at 0 when it sends a mode string.
    assert_eq!((all[0].mode, all[0].mode_str.as_str()), (0, "u+x,g=r"));
    assert_eq!((all[1].mode, all[1].mode_str.as_str()), (0o755, ""));
    let e = |df: &str| run(df).unwrap_err();
    assert!(e("FROM scratch\nCOPY --chmod=64a a /b\n").contains(
        "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"
    ));
    assert!(e("FROM scratch\nCOPY --chmod=10000 a /b\n").contains("invalid chmod parameter"));
    assert!(e("FROM scratch\nADD --chmod=u+q a /b\n").contains("invalid syntax"));
    // A mode string disables `--link`'s merge, as in BuildKit (a chmod copy is a plain file op).
    let c = run("FROM busybox\nCOPY --link --chmod=+x a /b\n").unwrap();
    assert!(!ops(&c).iter().any(|o| matches!(o.op, Some(Op::Merge(_)))));
}

#[test]
fn copy_parents_requires_literal_paths() {
    let c = run(
        "FROM scratch\nCOPY --parents a/./b/c /d/\nCOPY --parents x/*/y /e/\nCOPY --parents /p/q/. /f/\n",
    )
    .unwrap();
    let all = copies(&c);
    assert_eq!(all[0].src, "/a");
    assert_eq!(all[0].include_patterns, ["b/c"]);
    assert_eq!(all[0].required_paths, ["/a/b/c"]);
    assert_eq!(all[1].include_patterns, ["x/*/y"]);
    assert!(
        all[1].required_paths.is_empty(),
        "wildcards are never required"
    );
    // An absolute pattern is kept as written, the required path cleaned.
    assert_eq!(all[2].include_patterns, ["p/q/."]);
    assert_eq!(all[2].required_paths, ["/p/q"]);
}

#[test]
fn ssh_mounts_and_agent_variable() {
    let c = run("FROM busybox\nRUN --mount=type=ssh ssh-add -l\n").unwrap();
    let e = exec(&c);
    let ssh: Vec<&pb::Mount> = e
        .mounts
        .iter()
        .filter(|m| m.mount_type == pb::MountType::Ssh as i32)
        .collect();
    assert_eq!(ssh.len(), 1);
    assert_eq!(ssh[0].dest, "/run/buildkit/ssh_agent.0");
    assert_eq!((ssh[0].input, ssh[0].output), (-1, -1));
    assert_eq!(
        ssh[0].ssh_opt,
        Some(pb::SshOpt {
            id: String::new(),
            uid: 0,
            gid: 0,
            mode: 0o600,
            optional: true,
        })
    );
    let env = &e.meta.as_ref().unwrap().env;
    assert_eq!(
        env.last().unwrap(),
        "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"
    );
    // The variable is the step's, not the image's.
    assert!(
        !c.config
            .config
            .env
            .iter()
            .any(|v| v.starts_with("SSH_AUTH_SOCK"))
    );

    let c = run(
        "FROM busybox\nRUN --mount=type=ssh,id=deploy,target=/s,required,uid=1,gid=2,mode=0644 --mount=type=ssh,id=other true\n",
    )
    .unwrap();
    let e = exec(&c);
    let ssh: Vec<&pb::Mount> = e
        .mounts
        .iter()
        .filter(|m| m.mount_type == pb::MountType::Ssh as i32)
        .collect();
    let opts: Vec<(String, pb::SshOpt)> = ssh
        .iter()
        .map(|m| (m.dest.clone(), m.ssh_opt.clone().unwrap()))
        .collect();
    assert!(opts.contains(&(
        "/s".to_owned(),
        pb::SshOpt {
            id: "deploy".into(),
            uid: 1,
            gid: 2,
            mode: 0o644,
            optional: false,
        }
    )));
    assert!(opts.contains(&(
        "/run/buildkit/ssh_agent.1".to_owned(),
        pb::SshOpt {
            id: "other".into(),
            uid: 0,
            gid: 0,
            mode: 0o600,
            optional: true,
        }
    )));
    assert!(
        e.meta
            .as_ref()
            .unwrap()
            .env
            .contains(&"SSH_AUTH_SOCK=/s".to_owned())
    );
    // An explicit SSH_AUTH_SOCK wins.
    let c = run("FROM busybox\nENV SSH_AUTH_SOCK=/mine\nRUN --mount=type=ssh true\n").unwrap();
    let env = exec(&c).meta.unwrap().env;
    assert!(env.contains(&"SSH_AUTH_SOCK=/mine".to_owned()));
    assert!(!env.iter().any(|v| v.contains("ssh_agent")));
    assert!(
        run("FROM busybox\nRUN --mount=type=ssh,source=/x true\n")
            .unwrap_err()
            .contains("ssh does not support source")
    );
}

#[test]
fn secrets_as_environment_variables() {
    let c = run("FROM busybox\nRUN --mount=type=secret,id=tok,env=TOKEN,required env\n").unwrap();
    let e = exec(&c);
    assert_eq!(
        e.secretenv,
        [pb::SecretEnv {
            id: "tok".into(),
            name: "TOKEN".into(),
            optional: false,
        }]
    );
    // `env=` alone mounts no file.
    assert!(
        !e.mounts
            .iter()
            .any(|m| m.mount_type == pb::MountType::Secret as i32)
    );
    assert!(
        !e.meta
            .as_ref()
            .unwrap()
            .env
            .iter()
            .any(|v| v.starts_with("TOKEN"))
    );
    assert!(!c.config.config.env.iter().any(|v| v.starts_with("TOKEN")));
    // The op's name shows the variable masked, as BuildKit's does.
    let c = run("FROM busybox\nRUN --mount=type=secret,id=tok,env=TOKEN echo $TOKEN\n").unwrap();
    let names: Vec<String> = c
        .definition
        .metadata
        .values()
        .filter_map(|m| m.description.get("llb.customname").cloned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n == "[2/2] RUN --mount=type=secret,id=tok,env=TOKEN echo ****"),
        "{names:?}"
    );

    // With a target too, it is both a file and a variable.
    let c =
        run("FROM busybox\nRUN --mount=type=secret,id=tok,env=TOKEN,target=/t cat /t\n").unwrap();
    let e = exec(&c);
    assert_eq!(e.secretenv.len(), 1);
    assert!(e.secretenv[0].optional);
    let file = e
        .mounts
        .iter()
        .find(|m| m.mount_type == pb::MountType::Secret as i32)
        .unwrap();
    assert_eq!(file.dest, "/t");
    assert_eq!(file.secret_opt.as_ref().unwrap().id, "tok");
}

#[test]
fn context_source_is_unique_per_conversion() {
    let dockerfile = "FROM scratch\nCOPY a /a\n";
    let unique = |c: &Converted| {
        sources(c)
            .into_iter()
            .find(|s| s.identifier == "local://context")
            .unwrap()
            .attrs
            .get("local.unique")
            .cloned()
            .unwrap()
    };
    let first = unique(&run(dockerfile).unwrap());
    let second = unique(&run(dockerfile).unwrap());
    assert_ne!(first, second);
    for id in [&first, &second] {
        // BuildKit's identity.NewID: 25 base-36 digits.
        assert_eq!(id.len(), 25, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
            "{id}"
        );
    }
    let options = ConvertOptions {
        local_unique: Some("fixed".into()),
        ..ConvertOptions::default()
    };
    let c = convert(dockerfile.as_bytes(), &options, &resolver()).unwrap();
    assert_eq!(unique(&c), "fixed");
    let again = convert(dockerfile.as_bytes(), &options, &resolver()).unwrap();
    assert_eq!(c.definition.def, again.definition.def);
}

#[test]
fn exec_mounts_are_ordered_like_buildkit() {
    // client/llb exec.go: filesystem mounts sorted by target, then secrets, then SSH sockets,
    // each in the order given.
    let c = run(
        "FROM busybox\nRUN --mount=type=ssh,id=b --mount=type=secret,id=s2 --mount=type=bind,target=/z \
         --mount=type=ssh,id=a --mount=type=cache,target=/a --mount=type=secret,id=s1 true\n",
    )
    .unwrap();
    let dests: Vec<String> = exec(&c).mounts.iter().map(|m| m.dest.clone()).collect();
    assert_eq!(
        dests,
        [
            "/",
            "/a",
            "/z",
            "/run/secrets/s2",
            "/run/secrets/s1",
            "/run/buildkit/ssh_agent.0",
            "/run/buildkit/ssh_agent.1",
        ]
    );
}
