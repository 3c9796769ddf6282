use super::*;
use crate::sys::fake::RecordingSys;

fn read(path: &Path) -> String {
    fs_err::read_to_string(path).unwrap()
}

#[test]
fn v2_writes_limits_and_enables_controllers() {
    let root = tempfile::tempdir().unwrap();
    fs_err::write(
        root.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    assert_eq!(
        Hierarchy::detect(root.path()),
        Hierarchy::V2(root.path().to_owned())
    );
    let limits = Resources {
        memory: Some(64 << 20),
        pids: Some(32),
        cpu_shares: Some(1024),
        cpu_quota: Some((50_000, 100_000)),
    };
    let dir = root.path().join("kiln/run1");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(dir.join("memory.swap.max"), "max").unwrap();
    let mut cgroup = Cgroup::create(
        HostFs,
        &Hierarchy::V2(root.path().to_owned()),
        Path::new("kiln"),
        "run1",
        &limits,
        false,
        false,
    )
    .unwrap();
    assert_eq!(
        read(&root.path().join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(&root.path().join("kiln/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("pids.max")), "32");
    // runc maps the default 1024 shares to weight 39.
    assert_eq!(read(&dir.join("cpu.weight")), "39");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(cgroup.procs, vec![dir.join("cgroup.procs")]);
    cgroup.remove();
    assert!(!dir.exists());
}

#[test]
fn v2_skips_missing_controllers() {
    let root = tempfile::tempdir().unwrap();
    fs_err::write(root.path().join("cgroup.controllers"), "memory\n").unwrap();
    let limits = Resources {
        memory: Some(1 << 20),
        ..Resources::default()
    };
    let _cgroup = Cgroup::create(
        HostFs,
        &Hierarchy::V2(root.path().to_owned()),
        Path::new("kiln"),
        "x",
        &limits,
        false,
        false,
    )
    .unwrap();
    assert_eq!(read(&root.path().join("cgroup.subtree_control")), "+memory");
}

#[test]
fn v1_writes_per_controller() {
    let root = tempfile::tempdir().unwrap();
    for c in ["memory", "pids", "cpu", "devices"] {
        fs_err::create_dir_all(root.path().join(c)).unwrap();
    }
    fs_err::write(root.path().join("cgroup.controllers"), "").unwrap();
    assert_eq!(
        Hierarchy::detect(root.path()),
        Hierarchy::V1(root.path().to_owned())
    );
    let limits = Resources {
        memory: Some(1 << 20),
        pids: Some(7),
        cpu_shares: Some(512),
        cpu_quota: Some((25_000, 50_000)),
    };
    let mut cgroup = Cgroup::create(
        HostFs,
        &Hierarchy::V1(root.path().to_owned()),
        Path::new("kiln"),
        "r",
        &limits,
        true,
        false,
    )
    .unwrap();
    assert_eq!(
        read(&root.path().join("memory/kiln/r/memory.limit_in_bytes")),
        "1048576"
    );
    assert_eq!(read(&root.path().join("pids/kiln/r/pids.max")), "7");
    assert_eq!(read(&root.path().join("cpu/kiln/r/cpu.shares")), "512");
    assert_eq!(
        read(&root.path().join("cpu/kiln/r/cpu.cfs_quota_us")),
        "25000"
    );
    assert_eq!(
        read(&root.path().join("cpu/kiln/r/cpu.cfs_period_us")),
        "50000"
    );
    assert_eq!(read(&root.path().join("devices/kiln/r/devices.deny")), "a");
    let allowed = read(&root.path().join("devices/kiln/r/devices.allow"));
    assert!(
        allowed.starts_with("c *:* m\nb *:* m\nc 1:3 rwm\n"),
        "{allowed}"
    );
    assert!(allowed.ends_with("c 136:* rwm\n"), "{allowed}");
    assert!(Hierarchy::V1(root.path().to_owned()).restricts_devices());
    assert_eq!(cgroup.procs.len(), 4);
    cgroup.remove();
    assert!(!root.path().join("memory/kiln/r").exists());
}

/// A fake cgroup file system: `files` exist (with these contents), every call is recorded.
fn fake(files: &[(&str, &str)]) -> RecordingSys {
    let mut fs = RecordingSys::default();
    fs.files = files
        .iter()
        .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
        .collect();
    fs
}

fn v2() -> Hierarchy {
    Hierarchy::V2(PathBuf::from("/sys/fs/cgroup"))
}

#[test]
fn v2_hands_the_controllers_down_to_the_parent_and_writes_the_limits() {
    let mut fs = fake(&[
        (
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory pids\n",
        ),
        ("/sys/fs/cgroup/ci/kiln/1-2-3/memory.swap.max", "max\n"),
    ]);
    let limits = Resources {
        memory: Some(64 << 20),
        pids: Some(32),
        ..Resources::default()
    };
    let parent = parent_path(Some("/ci"), "kiln").unwrap();
    let cgroup = Cgroup::create(&mut fs, &v2(), &parent, "1-2-3", &limits, false, true);
    let cgroup = cgroup.unwrap();
    assert_eq!(
        cgroup.procs,
        [PathBuf::from("/sys/fs/cgroup/ci/kiln/1-2-3/cgroup.procs")]
    );
    drop(cgroup);
    assert_eq!(
        fs.calls,
        [
            "write /sys/fs/cgroup/cgroup.subtree_control +cpu +memory +pids",
            "mkdir /sys/fs/cgroup/ci",
            "write /sys/fs/cgroup/ci/cgroup.subtree_control +cpu +memory +pids",
            "mkdir /sys/fs/cgroup/ci/kiln",
            "write /sys/fs/cgroup/ci/kiln/cgroup.subtree_control +cpu +memory +pids",
            "mkdir /sys/fs/cgroup/ci/kiln/1-2-3",
            "write /sys/fs/cgroup/ci/kiln/1-2-3/memory.max 67108864",
            "write /sys/fs/cgroup/ci/kiln/1-2-3/memory.swap.max 0",
            "write /sys/fs/cgroup/ci/kiln/1-2-3/pids.max 32",
            "rmdir /sys/fs/cgroup/ci/kiln/1-2-3",
        ]
    );
}

#[test]
fn v2_without_the_controller_of_a_limit_is_an_error() {
    // The unified hierarchy of a hybrid host: v1 holds memory and pids.
    for limits in [
        Resources {
            memory: Some(1 << 20),
            ..Resources::default()
        },
        Resources {
            pids: Some(10),
            ..Resources::default()
        },
    ] {
        let mut fs = fake(&[("/sys/fs/cgroup/cgroup.controllers", "hugetlb\n")]);
        let err = Cgroup::create(
            &mut fs,
            &v2(),
            Path::new("kiln"),
            "r",
            &limits,
            false,
            false,
        )
        .unwrap_err();
        let controller = if limits.memory.is_some() {
            "memory"
        } else {
            "pids"
        };
        assert!(
            matches!(err, Error::CgroupController { controller: c, .. } if c == controller),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "cannot apply the {controller} limit: the cgroup v2 hierarchy at /sys/fs/cgroup has no {controller} controller"
            )
        );
        assert_eq!(fs.calls, Vec::<String>::new());
    }
    // Without limits (a cgroup parent alone) the run's cgroup is made all the same.
    let mut fs = fake(&[("/sys/fs/cgroup/cgroup.controllers", "hugetlb\n")]);
    let cgroup = Cgroup::create(
        &mut fs,
        &v2(),
        Path::new("kiln"),
        "r",
        &Resources::default(),
        false,
        true,
    );
    drop(cgroup.unwrap());
    assert_eq!(
        fs.calls,
        [
            "mkdir /sys/fs/cgroup/kiln",
            "mkdir /sys/fs/cgroup/kiln/r",
            "rmdir /sys/fs/cgroup/kiln/r",
        ]
    );
}

#[test]
fn a_failed_write_removes_the_cgroup() {
    let mut fs = fake(&[("/sys/fs/cgroup/cgroup.controllers", "memory pids\n")]);
    fs.fail.push((
        "write /sys/fs/cgroup/kiln/r/pids.max".to_owned(),
        nix::errno::Errno::EINVAL,
    ));
    let limits = Resources {
        memory: Some(1 << 20),
        pids: Some(10),
        ..Resources::default()
    };
    let err = Cgroup::create(
        &mut fs,
        &v2(),
        Path::new("kiln"),
        "r",
        &limits,
        false,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Cgroup { path, .. } if path == Path::new("/sys/fs/cgroup/kiln/r/pids.max")),
        "{err}"
    );
    assert_eq!(fs.calls.last().unwrap(), "rmdir /sys/fs/cgroup/kiln/r");
}

#[test]
fn v1_with_a_parent_joins_every_mounted_controller() {
    let mut fs = fake(&[
        ("/sys/fs/cgroup/memory", ""),
        ("/sys/fs/cgroup/pids", ""),
        ("/sys/fs/cgroup/devices", ""),
    ]);
    let v1 = Hierarchy::V1(PathBuf::from("/sys/fs/cgroup"));
    let parent = parent_path(Some("ci"), "kiln").unwrap();
    let limits = Resources {
        pids: Some(5),
        ..Resources::default()
    };
    let cgroup = Cgroup::create(&mut fs, &v1, &parent, "r", &limits, false, true).unwrap();
    assert_eq!(cgroup.procs.len(), 3);
    drop(cgroup);
    // No limit is written where none is set; `cpu` is not mounted here.
    assert_eq!(
        fs.calls,
        [
            "mkdir /sys/fs/cgroup/devices/ci",
            "mkdir /sys/fs/cgroup/devices/ci/kiln",
            "mkdir /sys/fs/cgroup/devices/ci/kiln/r",
            "mkdir /sys/fs/cgroup/memory/ci",
            "mkdir /sys/fs/cgroup/memory/ci/kiln",
            "mkdir /sys/fs/cgroup/memory/ci/kiln/r",
            "mkdir /sys/fs/cgroup/pids/ci",
            "mkdir /sys/fs/cgroup/pids/ci/kiln",
            "mkdir /sys/fs/cgroup/pids/ci/kiln/r",
            "write /sys/fs/cgroup/pids/ci/kiln/r/pids.max 5",
            "rmdir /sys/fs/cgroup/pids/ci/kiln/r",
            "rmdir /sys/fs/cgroup/memory/ci/kiln/r",
            "rmdir /sys/fs/cgroup/devices/ci/kiln/r",
        ]
    );
}

#[test]
fn cgroup_parents_stay_in_the_hierarchy() {
    assert_eq!(parent_path(None, "kiln").unwrap(), PathBuf::from("kiln"));
    assert_eq!(
        parent_path(Some("/ci/./build/"), "kiln").unwrap(),
        PathBuf::from("ci/build/kiln")
    );
    let err = parent_path(Some("ci/../../host"), "kiln").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid cgroup parent \"ci/../../host\": it leads out of the cgroup hierarchy"
    );
    assert!(matches!(
        parent_path(Some("system.slice:kiln:x"), "kiln"),
        Err(Error::CgroupParent { .. })
    ));
}

#[test]
fn sweep_removes_the_cgroups_of_dead_runs() {
    let root = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    let dead_start = crate::state::start_time(dead).unwrap_or(1);
    child.wait().unwrap();
    let me = std::process::id();
    let my_start = crate::state::start_time(me).unwrap();
    let (dead, alive, other) = (
        format!("{dead}-{dead_start}-0"),
        format!("{me}-{my_start}-0"),
        "system".to_owned(),
    );
    for controller in ["memory", "pids"] {
        for name in [&dead, &alive, &other] {
            fs_err::create_dir_all(root.path().join(controller).join("kiln").join(name)).unwrap();
        }
    }
    let hierarchy = Hierarchy::detect(root.path());
    sweep_once(&hierarchy, Path::new("kiln"));
    for controller in ["memory", "pids"] {
        let dir = root.path().join(controller).join("kiln");
        let mut left: Vec<String> = fs_err::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![alive.clone(), other.clone()];
        expected.sort();
        assert_eq!(left, expected, "{controller}");
    }
}

#[test]
fn nothing_mounted() {
    let root = tempfile::tempdir().unwrap();
    assert_eq!(Hierarchy::detect(root.path()), Hierarchy::Unavailable);
}

#[test]
fn a_process_s_cgroups_are_found_to_join() {
    let text = "12:pids:/kiln/run-1\n11:cpu,cpuacct:/kiln/run-1\n5:name=systemd:/user.slice\n\
                3:memory:/\n0::/kiln/run-1\n";
    let v1 = Hierarchy::V1("/sys/fs/cgroup".into());
    assert_eq!(
        v1.procs_of(text),
        [
            PathBuf::from("/sys/fs/cgroup/pids/kiln/run-1/cgroup.procs"),
            PathBuf::from("/sys/fs/cgroup/cpu/kiln/run-1/cgroup.procs"),
        ]
    );
    let v2 = Hierarchy::V2("/sys/fs/cgroup".into());
    assert_eq!(
        v2.procs_of(text),
        [PathBuf::from("/sys/fs/cgroup/kiln/run-1/cgroup.procs")]
    );
}
