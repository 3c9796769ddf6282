use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::cache_mount::cache_mount;
use super::mounts::select_in_layers;
use super::*;
use crate::executor::ExecMount;
use crate::testing::FakeExecutor;

fn config(root: &Path) -> SessionConfig {
    SessionConfig {
        store: Arc::new(kiln_cache::Store::open(root).unwrap()),
        executor: Arc::new(FakeExecutor::refusing("not used")),
        pull: kiln_cache::PullOptions::default(),
        locals: HashMap::new(),
        local_dirs: None,
        secrets: HashMap::new(),
        ssh: HashMap::new(),
        no_cache: false,
        entitlements: Entitlements::default(),
        cache_imports: Vec::new(),
    }
}

/// Everything the tail holds: its lines and the partial one.
fn retained(tail: &Tail) -> usize {
    tail.lines.iter().map(String::len).sum::<usize>() + tail.split.partial().len()
}

#[test]
fn output_without_newlines_keeps_the_tail_bounded() {
    let mut tail = Tail::default();
    // 10 MB without a newline, in the pipe-sized chunks an executor forwards.
    let chunk = [b'y'; 65536];
    for _ in 0..(10 << 20) / chunk.len() {
        tail.push(&chunk);
        assert!(tail.split.partial().len() <= TAIL_LINE_MAX);
    }
    assert!(retained(&tail) <= (TAIL_LINES + 1) * TAIL_LINE_MAX);
    assert_eq!(tail.lines.len(), TAIL_LINES);
    assert!(tail.lines.iter().all(|l| l.len() == TAIL_LINE_MAX));
    // The end of the output is what the tail shows.
    tail.push(b"done\n");
    let render = tail.render();
    assert!(render.ends_with(&format!("{}\ndone", "y".repeat(TAIL_LINE_MAX))));
    assert_eq!(render.lines().count(), TAIL_LINES);
}

#[test]
fn tail_keeps_the_last_lines_and_cuts_only_lines_over_the_limit() {
    let mut tail = Tail::default();
    for n in 0..30 {
        tail.push(format!("line {n}\n").as_bytes());
    }
    tail.push(b"no newline yet");
    let expected: Vec<String> = (11..30).map(|n| format!("line {n}")).collect();
    assert_eq!(
        tail.render(),
        format!("{}\nno newline yet", expected.join("\n"))
    );

    // A line of exactly the limit is one line; one byte more makes two.
    let mut tail = Tail::default();
    let full = "x".repeat(TAIL_LINE_MAX);
    tail.push(format!("{full}\n{full}z\n").as_bytes());
    assert_eq!(tail.render(), format!("{full}\n{full}\nz"));
    // Split across pushes, byte by byte, the same.
    let mut bytes = Tail::default();
    for b in format!("{full}\n{full}z\n").bytes() {
        bytes.push(&[b]);
    }
    assert_eq!(bytes.render(), tail.render());
}

#[test]
fn host_network_and_insecure_mode_need_their_entitlements() {
    let exec = |network: pb::NetMode, security: pb::SecurityMode| pb::ExecOp {
        network: network as i32,
        security: security as i32,
        ..Default::default()
    };
    let none = Entitlements::default();
    let all = Entitlements {
        network_host: true,
        security_insecure: true,
    };
    let plain = exec(pb::NetMode::Unset, pb::SecurityMode::Sandbox);
    assert_eq!(entitled(&plain, none).unwrap(), ExecSecurity::Sandbox);
    let host = exec(pb::NetMode::Host, pb::SecurityMode::Sandbox);
    assert_eq!(entitled(&host, none), Err("network.host"));
    assert_eq!(entitled(&host, all).unwrap(), ExecSecurity::Sandbox);
    let insecure = exec(pb::NetMode::None, pb::SecurityMode::Insecure);
    assert_eq!(entitled(&insecure, none), Err("security.insecure"));
    // One entitlement does not stand in for the other.
    let only_host = Entitlements {
        network_host: true,
        ..none
    };
    assert!(entitled(&insecure, only_host).is_err());
    assert_eq!(entitled(&insecure, all).unwrap(), ExecSecurity::Insecure);
}

fn cache(id: &str, sharing: pb::CacheSharingOpt) -> pb::Mount {
    pb::Mount {
        dest: "/cache".into(),
        mount_type: pb::MountType::Cache as i32,
        input: -1,
        cache_opt: Some(pb::CacheOpt {
            id: id.into(),
            sharing: sharing as i32,
        }),
        ..Default::default()
    }
}

fn source(mount: &ExecMount) -> PathBuf {
    match mount {
        ExecMount::Bind { source, .. } => source.clone(),
        other => panic!("not a bind mount: {other:?}"),
    }
}

#[test]
fn selector_in_layers_shows_the_merged_directory_only() {
    let root = tempfile::tempdir().unwrap();
    let layer = |name: &str| {
        let dir = root.path().join(name);
        fs_err::create_dir_all(&dir).unwrap();
        dir
    };
    // Topmost first: top, middle, bottom.
    let (top, middle, bottom) = (layer("top"), layer("middle"), layer("bottom"));
    for (dir, file) in [(&top, "t"), (&middle, "m"), (&bottom, "b")] {
        fs_err::create_dir_all(dir.join("app/src")).unwrap();
        fs_err::write(dir.join("app/src").join(file), file).unwrap();
    }
    fs_err::create_dir_all(middle.join("other")).unwrap();
    let lowers = vec![top.clone(), middle.clone(), bottom.clone()];
    assert_eq!(
        select_in_layers(&lowers, "app/src").unwrap(),
        [
            top.join("app/src"),
            middle.join("app/src"),
            bottom.join("app/src")
        ]
    );
    // A layer without the path is skipped.
    assert_eq!(
        select_in_layers(&lowers, "other").unwrap(),
        [middle.join("other")]
    );
    // A file on the path in an upper layer hides the directories below it.
    fs_err::create_dir_all(top.join("data")).unwrap();
    fs_err::write(middle.join("data"), "file").unwrap();
    fs_err::create_dir_all(bottom.join("data")).unwrap();
    assert_eq!(
        select_in_layers(&lowers, "data").unwrap(),
        [top.join("data")]
    );
    // A file is mounted on its own.
    assert_eq!(
        select_in_layers(&lowers, "app/src/t").unwrap(),
        [top.join("app/src/t")]
    );
    assert_eq!(
        select_in_layers(&lowers, "nowhere")
            .unwrap_err()
            .to_string(),
        "/nowhere: no such file or directory"
    );
    assert!(select_in_layers(&lowers, "../x").is_err());
    // `..` and links resolve inside the snapshot, never on the host.
    assert_eq!(
        select_in_layers(&lowers, "/../../other").unwrap(),
        [middle.join("other")]
    );
    let host = tempfile::tempdir().unwrap();
    fs_err::write(host.path().join("marker"), "host").unwrap();
    fs_err::os::unix::fs::symlink("/", top.join("hostroot")).unwrap();
    fs_err::os::unix::fs::symlink(host.path(), middle.join("hostdir")).unwrap();
    assert_eq!(
        select_in_layers(&lowers, "hostroot/app/../other").unwrap(),
        [middle.join("other")]
    );
    assert_eq!(
        select_in_layers(&lowers, "hostroot").unwrap(),
        [top.clone(), middle.clone(), bottom.clone()]
    );
    assert!(select_in_layers(&lowers, "hostdir/marker").is_err());
    // One layer: the same resolution.
    assert_eq!(
        select_in_layers(&lowers[..1], "hostroot/app/src").unwrap(),
        [top.join("app/src")]
    );
    assert!(select_in_layers(&lowers[1..2], "hostdir/marker").is_err());

    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("KILN_TEST_REQUIRE_ALL").is_none_or(|v| v != "1"),
            "whiteouts and opaque directories need root"
        );
        return;
    }
    // A whiteout in the middle layer hides the bottom layer's directory.
    let wiped = [top.join("gone"), middle.join("gone"), bottom.join("gone")];
    fs_err::create_dir_all(&wiped[0]).unwrap();
    nix::sys::stat::mknod(
        &wiped[1],
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs_err::create_dir_all(&wiped[2]).unwrap();
    assert_eq!(
        select_in_layers(&lowers, "gone").unwrap(),
        [wiped[0].clone()]
    );
    // An opaque directory on the path in the middle layer: top and middle only.
    for dir in &lowers {
        fs_err::create_dir_all(dir.join("opq/sub")).unwrap();
    }
    xattr::set(middle.join("opq"), kiln_fsutil::overlay::OPAQUE_XATTR, b"y").unwrap();
    assert_eq!(
        select_in_layers(&lowers, "opq/sub").unwrap(),
        [top.join("opq/sub"), middle.join("opq/sub")]
    );
}

#[tokio::test]
async fn cache_mount_sharing_modes() {
    let root = tempfile::tempdir().unwrap();
    let config = config(root.path());
    let shared = pb::CacheSharingOpt::Shared;
    let private = pb::CacheSharingOpt::Private;
    let locked = pb::CacheSharingOpt::Locked;

    // Shared: the same directory for everyone, and for the next build (it persists).
    let (a, lock_a) = cache_mount(&config, &[], &cache("x", shared))
        .await
        .unwrap();
    let (b, _) = cache_mount(&config, &[], &cache("x", shared))
        .await
        .unwrap();
    assert!(lock_a.is_none());
    assert_eq!(source(&a), source(&b));
    fs_err::write(source(&a).join("kept"), "1").unwrap();
    let (again, _) = cache_mount(&config, &[], &cache("x", shared))
        .await
        .unwrap();
    assert!(source(&again).join("kept").is_file());
    // Another id is another directory.
    let (other, _) = cache_mount(&config, &[], &cache("y", shared))
        .await
        .unwrap();
    assert_ne!(source(&other), source(&a));

    // Private: a busy directory sends the next user to a fresh one; freed, it is reused.
    let (p1, lock1) = cache_mount(&config, &[], &cache("p", private))
        .await
        .unwrap();
    let (p2, lock2) = cache_mount(&config, &[], &cache("p", private))
        .await
        .unwrap();
    assert_ne!(source(&p1), source(&p2));
    drop(lock1);
    let (p3, _lock3) = cache_mount(&config, &[], &cache("p", private))
        .await
        .unwrap();
    assert_eq!(source(&p3), source(&p1));
    drop(lock2);

    // Locked: the second user waits until the first lets go.
    let (l1, lock_l1) = cache_mount(&config, &[], &cache("l", locked))
        .await
        .unwrap();
    let config = Arc::new(config);
    let waiter = {
        let config = config.clone();
        tokio::spawn(async move {
            cache_mount(&config, &[], &cache("l", locked))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "a locked cache mount waits");
    drop(lock_l1);
    let (l2, _) = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
        .await
        .expect("the waiter gets the lock once it is free")
        .unwrap();
    assert_eq!(source(&l1), source(&l2));
}

/// Requests as the executor gets them, through a whole session.
mod requests {
    use super::*;
    use crate::llbsolver::tests::{Recorder, definition};
    use crate::llbsolver::{Session, SessionConfig};
    use crate::testing::FakeExecutor;

    /// A step on a scratch root with a proxy and a read-only 1 MiB tmpfs.
    fn step(proxy: &str) -> pb::Op {
        pb::Op {
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec!["true".into()],
                    env: vec!["A=1".into()],
                    proxy_env: Some(pb::ProxyEnv {
                        http_proxy: proxy.into(),
                        no_proxy: "localhost".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                mounts: vec![
                    pb::Mount {
                        input: -1,
                        dest: "/".into(),
                        output: 0,
                        ..Default::default()
                    },
                    pb::Mount {
                        input: -1,
                        dest: "/t".into(),
                        output: -1,
                        readonly: true,
                        mount_type: pb::MountType::Tmpfs.into(),
                        tmpfs_opt: Some(pb::TmpfsOpt { size: 1 << 20 }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn proxies_reach_the_environment_but_not_the_cache_key() {
        let store = tempfile::tempdir().unwrap();
        let executor = FakeExecutor::default();
        let session = || {
            Session::new(
                SessionConfig {
                    store: Arc::new(kiln_cache::Store::open(store.path()).unwrap()),
                    executor: Arc::new(executor.clone()),
                    pull: kiln_cache::PullOptions::default(),
                    locals: Default::default(),
                    local_dirs: None,
                    secrets: Default::default(),
                    ssh: Default::default(),
                    no_cache: false,
                    entitlements: Entitlements::default(),
                    cache_imports: Vec::new(),
                },
                None,
            )
        };
        let recorder = Arc::new(Recorder::default());
        session()
            .solve(&definition(step("http://proxy:3128"), None), recorder)
            .await
            .unwrap();
        let requests = executor.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].env,
            [
                "A=1",
                "HTTP_PROXY=http://proxy:3128",
                "http_proxy=http://proxy:3128",
                "NO_PROXY=localhost",
                "no_proxy=localhost",
            ]
        );
        assert_eq!(
            requests[0].mounts,
            [ExecMount::Tmpfs {
                target: "/t".into(),
                size: Some(1 << 20),
                readonly: true,
            }]
        );
        // Another proxy makes the same result: the step is cached, not run again.
        let recorder = Arc::new(Recorder::default());
        session()
            .solve(
                &definition(step("http://other:8080"), None),
                recorder.clone(),
            )
            .await
            .unwrap();
        assert_eq!(executor.requests().len(), 1, "not run again");
        assert_eq!(recorder.names(true), ["true"]);
    }

    /// A step running `args` on the output of `input` (scratch when `None`).
    fn on(input: Option<&pb::Op>, args: &str, network: pb::NetMode) -> pb::Op {
        pb::Op {
            inputs: input
                .map(|op| pb::Input {
                    digest: kiln_llb::op_digest(op).to_string(),
                    index: 0,
                })
                .into_iter()
                .collect(),
            op: Some(pb::op::Op::Exec(pb::ExecOp {
                meta: Some(pb::Meta {
                    args: vec![args.into()],
                    ..Default::default()
                }),
                network: network as i32,
                mounts: vec![pb::Mount {
                    input: if input.is_some() { 0 } else { -1 },
                    dest: "/".into(),
                    output: 0,
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_step_without_its_entitlement_fails_the_graph_before_any_step_runs() {
        let store = tempfile::tempdir().unwrap();
        let executor = FakeExecutor::default();
        let mut config = super::config(store.path());
        config.executor = Arc::new(executor.clone());
        let first = on(None, "first", pb::NetMode::Unset);
        let second = on(Some(&first), "second", pb::NetMode::Host);
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: kiln_llb::op_digest(&second).to_string(),
                index: 0,
            }],
            ..Default::default()
        };
        let loaded = kiln_llb::LoadedDefinition::from_definition(pb::Definition {
            def: [&first, &second, &terminal]
                .into_iter()
                .map(kiln_llb::marshal_op)
                .collect(),
            ..Default::default()
        })
        .unwrap();
        let session = Session::new(config, None);
        let error = session
            .solve(&loaded, Arc::new(Recorder::default()))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "network.host is not allowed");
        assert!(executor.requests().is_empty(), "the first step did not run");
        // Allowed, both run, in order.
        let mut config = super::config(store.path());
        config.executor = Arc::new(executor.clone());
        config.entitlements.network_host = true;
        Session::new(config, None)
            .solve(&loaded, Arc::new(Recorder::default()))
            .await
            .unwrap();
        let ran: Vec<Vec<String>> = executor.requests().into_iter().map(|r| r.args).collect();
        assert_eq!(ran, [["first"], ["second"]]);
    }
}
