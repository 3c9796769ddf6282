//! Unit tests of the mount plan against the recording fake.

use super::overlay::overlay_options;
use super::*;
use crate::TmpfsOptions;
use crate::sys::fake::RecordingSys;

fn staged(dir: &Path) -> Staged {
    Staged {
        rootfs_mountpoint: dir.join("rootfs"),
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
        secrets: vec![dir.join("secret-0")],
        overlays: (0..3).map(|i| dir.join(format!("overlay-{i}"))).collect(),
    }
}

fn run(spec: &Spec, fake: &mut RecordingSys) -> Result<(), (usize, Errno)> {
    let plan = build(spec, &staged(Path::new("/run/b"))).unwrap();
    let mut slots = vec![-1; plan.slots];
    apply(&plan.ops, &mut slots, fake)
}

fn position(calls: &[String], line: &str) -> usize {
    calls
        .iter()
        .position(|c| c == line)
        .unwrap_or_else(|| panic!("no call {line:?} in {calls:#?}"))
}

#[test]
fn overlay_uses_relative_layer_paths() {
    let lowers: Vec<PathBuf> = (0..150)
        .map(|i| PathBuf::from(format!("/var/lib/kiln/snapshots/{i}/fs")))
        .collect();
    let (base, options) = overlay_options(
        &lowers,
        Some((
            Path::new("/var/lib/kiln/snapshots/up/fs"),
            Path::new("/var/lib/kiln/snapshots/up/work"),
        )),
    )
    .unwrap()
    .expect("relative options fit in a page");
    assert_eq!(base, PathBuf::from("/var/lib/kiln/snapshots"));
    assert!(options.starts_with("lowerdir=0/fs:1/fs:2/fs:"), "{options}");
    assert!(
        options.ends_with(":149/fs,upperdir=up/fs,workdir=up/work"),
        "{options}"
    );
    // The absolute form would not fit in a page.
    let absolute: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    let limit = kiln_fsutil::MOUNT_DATA_LIMIT;
    assert!(absolute > limit && options.len() <= limit);
}

#[test]
fn overlays_past_a_page_of_options_are_mounted_layer_by_layer() {
    let lowers: Vec<PathBuf> = (0..400)
        .map(|i| PathBuf::from(format!("/a/layer-number-{i}/fs")))
        .collect();
    let upper_work = Some((Path::new("/b/u"), Path::new("/b/w")));
    assert_eq!(overlay_options(&lowers, upper_work).unwrap(), None);
    let rootfs = Rootfs::Overlay {
        lowers: lowers.clone(),
        upper: PathBuf::from("/b/u"),
        work: PathBuf::from("/b/w"),
        readonly: false,
    };
    let mut fake = RecordingSys::default();
    run(&Spec::new(rootfs, vec!["true".into()]), &mut fake).unwrap();
    let all: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    assert_eq!(
        fake.calls[2],
        format!(
            "mount_layers /run/b/rootfs lowers={} upper_work=/b/u,/b/w nodev=true",
            all.join(":")
        )
    );
    assert!(
        !fake.calls.iter().any(|c| c.starts_with("mount overlay")),
        "{:#?}",
        fake.calls
    );

    let too_many: Vec<PathBuf> = (0..=kiln_fsutil::MAX_LAYERS)
        .map(|i| PathBuf::from(format!("/a/{i}")))
        .collect();
    assert_eq!(
        overlay_options(&too_many, None).unwrap_err().to_string(),
        "501 layers are more than the 500 one overlay can stack"
    );
    assert!(matches!(
        overlay_options(&[], None),
        Err(Error::NoLowerDirs)
    ));
}

#[test]
fn overlay_mount_happens_in_the_layers_parent_and_before_pivot() {
    let rootfs = Rootfs::Overlay {
        lowers: vec![PathBuf::from("/l/a"), PathBuf::from("/l/b")],
        upper: PathBuf::from("/l/u"),
        work: PathBuf::from("/l/w"),
        readonly: false,
    };
    let spec = Spec::new(rootfs, vec!["true".into()]);
    let mut fake = RecordingSys::default();
    run(&spec, &mut fake).unwrap();
    let calls = &fake.calls;
    assert_eq!(calls[0], "umask 0");
    assert_eq!(calls[1], "mount - / - MS_REC | MS_PRIVATE -");
    assert_eq!(calls[2], "chdir /l");
    assert_eq!(
        calls[3],
        "mount overlay /run/b/rootfs overlay MS_NODEV lowerdir=a:b,upperdir=u,workdir=w"
    );
    let pivot = position(calls, "pivot_root . .");
    assert_eq!(calls[pivot - 1], "chdir /run/b/rootfs");
    assert_eq!(calls[pivot + 1], "umount .");
    assert!(position(calls, "open_tree /run/b/hosts") < pivot);
    assert!(
        position(
            calls,
            "mount proc /proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -"
        ) > pivot
    );
    assert!(calls.last().unwrap() == "umask 22");
}

#[test]
fn a_readonly_overlay_root_is_made_readonly_at_the_end() {
    let rootfs = Rootfs::Overlay {
        lowers: vec![PathBuf::from("/l/a")],
        upper: PathBuf::from("/l/u"),
        work: PathBuf::from("/l/w"),
        readonly: true,
    };
    let mut spec = Spec::new(rootfs, vec!["true".into()]);
    spec.cwd = PathBuf::from("/w");
    let mut fake = RecordingSys::default();
    run(&spec, &mut fake).unwrap();
    let calls = &fake.calls;
    let remount = position(calls, "mount_setattr / MOUNT_ATTR_RDONLY");
    assert!(position(calls, "mkdir /w 755") < remount);
    assert!(position(calls, "move_mount 103 /etc/hostname") < remount);
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("mount_setattr /run/b/rootfs")),
        "{calls:#?}"
    );
}

#[test]
fn standard_mounts_devices_and_masks() {
    let spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: false,
        },
        vec!["true".into()],
    );
    let mut fake = RecordingSys::default();
    // /proc/acpi is a directory (ENOTDIR for the /dev/null bind), /proc/asound is absent.
    fake.fail
        .push(("mount /dev/null /proc/acpi ".to_owned(), Errno::ENOTDIR));
    fake.fail
        .push(("mount /dev/null /proc/asound ".to_owned(), Errno::ENOENT));
    fake.fail.push((
        "mount /proc/bus /proc/bus - MS_BIND | MS_REC -".to_owned(),
        Errno::ENOENT,
    ));
    run(&spec, &mut fake).unwrap();
    let calls = &fake.calls;
    assert_eq!(calls[2], "mount /r /r - MS_BIND | MS_REC -");
    // nodev on the root directory and every mount below it, its other flags left alone.
    assert_eq!(calls[3], "mount_setattr /r AT_RECURSIVE MOUNT_ATTR_NODEV");
    for line in [
        "mount tmpfs /dev tmpfs MS_NOSUID | MS_NODEV | MS_STRICTATIME mode=755,size=65536k",
        "mknod /proc/null 666 1:3",
        "mknod /proc/tty 666 5:0",
        "mount devpts /dev/pts devpts MS_NOSUID | MS_NOEXEC newinstance,ptmxmode=0666,mode=0620,gid=5",
        "symlink /dev/ptmx -> pts/ptmx",
        "symlink /dev/fd -> /proc/self/fd",
        "mount sysfs /sys sysfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC -",
        "mount /dev/null /proc/kcore - MS_BIND -",
        "mount tmpfs /proc/acpi tmpfs MS_RDONLY -",
        "create /etc/hosts 644",
        "move_mount 101 /etc/hosts",
        "mount tmpfs /dev/shm tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=1777,size=65536k",
        "mount mqueue /dev/mqueue mqueue MS_NOSUID | MS_NODEV | MS_NOEXEC -",
        "sethostname kiln",
        "loopback up",
    ] {
        position(calls, line);
    }
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("mount tmpfs /proc/asound"))
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("mount_setattr /proc/bus"))
    );
    // Read-only paths: bound onto themselves, then read-only with every mount below them.
    let sys = position(calls, "mount /proc/sys /proc/sys - MS_BIND | MS_REC -");
    assert_eq!(
        calls[sys + 1],
        "mount_setattr /proc/sys AT_RECURSIVE MOUNT_ATTR_RDONLY"
    );
    let trigger = position(
        calls,
        "mount /proc/sysrq-trigger /proc/sysrq-trigger - MS_BIND | MS_REC -",
    );
    assert_eq!(
        calls[trigger + 1],
        "mount_setattr /proc/sysrq-trigger AT_RECURSIVE MOUNT_ATTR_RDONLY"
    );
    // Every bound tree is nodev before it is attached.
    for (fd, target) in [
        (101, "/etc/hosts"),
        (102, "/etc/resolv.conf"),
        (103, "/etc/hostname"),
    ] {
        let attach = position(calls, &format!("move_mount {fd} {target}"));
        assert_eq!(
            calls[attach - 1],
            format!("mount_setattr {fd} AT_RECURSIVE MOUNT_ATTR_NODEV")
        );
    }
    // Devices: made in a scratch tmpfs on /proc, bound into the nodev /dev, the scratch
    // detached before proc is mounted there; none is made in /dev itself.
    let scratch = position(
        calls,
        "mount tmpfs /proc tmpfs MS_NOSUID | MS_NOEXEC mode=700,size=64k",
    );
    let null = position(calls, "mknod /proc/null 666 1:3");
    let bound = position(calls, "mount /proc/null /dev/null - MS_BIND -");
    let detached = position(calls, "umount /proc");
    let proc = position(
        calls,
        "mount proc /proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -",
    );
    assert!(scratch < null && null < bound && bound < detached && detached < proc);
    assert!(!calls.iter().any(|c| c.starts_with("mknod /dev/")));
    // /proc before the binds.
    assert!(
        position(
            calls,
            "mount proc /proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -"
        ) < position(calls, "create /etc/hosts 644")
    );
}

#[test]
fn insecure_mode_has_no_masks_and_a_writable_sys() {
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: false,
        },
        vec!["true".into()],
    );
    spec.security = Security::Insecure;
    let mut fake = RecordingSys::default();
    run(&spec, &mut fake).unwrap();
    let calls = &fake.calls;
    position(
        calls,
        "mount sysfs /sys sysfs MS_NOSUID | MS_NODEV | MS_NOEXEC -",
    );
    for path in MASKED_PATHS.iter().chain(READONLY_PATHS) {
        assert!(
            !calls.iter().any(|c| c.contains(&format!(" {path} "))),
            "{path}: {calls:#?}"
        );
    }
    // Everything else is as in the sandbox, but for nodev on the root and the binds (the
    // privileged container opens what devices it likes).
    position(calls, "mknod /dev/null 666 1:3");
    position(calls, "move_mount 101 /etc/hosts");
    position(
        calls,
        "mount tmpfs /dev tmpfs MS_NOSUID | MS_STRICTATIME mode=755,size=65536k",
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("mount_setattr")),
        "{calls:#?}"
    );
}

#[test]
fn extra_mounts_in_order_with_readonly_and_sizes() {
    let host = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: true,
        },
        vec!["true".into()],
    );
    spec.network = NetworkMode::Host;
    spec.cwd = PathBuf::from("/work/../w");
    spec.mounts = vec![
        Mount::Bind {
            source: host.path().to_owned(),
            target: PathBuf::from("/data"),
            readonly: true,
        },
        Mount::Tmpfs {
            target: PathBuf::from("/scratch"),
            options: TmpfsOptions::default().size(1 << 20),
        },
        Mount::Secret {
            target: PathBuf::from("/run/secrets/token"),
            data: b"s".to_vec(),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
        Mount::Bind {
            source: host.path().to_owned(),
            target: PathBuf::from("/cache"),
            readonly: false,
        },
    ];
    let mut fake = RecordingSys::default();
    run(&spec, &mut fake).unwrap();
    let calls = &fake.calls;
    // The read-only root: read-only and nodev below its top mount before the pivot, so
    // that the mount points can still be made in it.
    let pivot = position(calls, "pivot_root . .");
    let root = position(
        calls,
        "mount_setattr /r AT_RECURSIVE MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV",
    );
    assert_eq!(calls[root - 1], "mount /r /r - MS_BIND | MS_REC -");
    assert_eq!(calls[root + 1], "mount_setattr /r clear MOUNT_ATTR_RDONLY");
    assert!(root < pivot);
    let data = position(calls, "move_mount 104 /data");
    assert_eq!(
        calls[data - 1],
        "mount_setattr 104 AT_RECURSIVE MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV"
    );
    assert_eq!(calls[data - 2], "mkdir /data 755");
    let scratch = position(
        calls,
        "mount tmpfs /scratch tmpfs MS_NOSUID | MS_NODEV mode=1777,size=1048576",
    );
    let secret = position(calls, "move_mount 105 /run/secrets/token");
    assert_eq!(
        calls[secret - 1],
        "mount_setattr 105 AT_RECURSIVE MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV"
    );
    let cache = position(calls, "move_mount 106 /cache");
    assert_eq!(
        calls[cache - 1],
        "mount_setattr 106 AT_RECURSIVE MOUNT_ATTR_NODEV"
    );
    assert!(data < scratch && scratch < secret && secret < cache);
    position(calls, "mkdir /run/secrets 755");
    position(calls, "create /run/secrets/token 644");
    // Read-only root: cwd made first, then the top mount made read-only (only it: what
    // the plan mounted on it keeps its own flags).
    let cwd = position(calls, "mkdir /w 755");
    let remount = position(calls, "mount_setattr / MOUNT_ATTR_RDONLY");
    assert!(cache < cwd && cwd < remount);
    assert!(!calls.iter().any(|c| c == "loopback up"));
}

#[test]
fn tmpfs_options_become_flags_and_data_and_devices_stay_off_in_the_sandbox() {
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: false,
        },
        vec!["true".into()],
    );
    spec.mounts = vec![
        Mount::Tmpfs {
            target: PathBuf::from("/run"),
            options: TmpfsOptions::docker("size=64m,mode=1770,uid=1000").unwrap(),
        },
        Mount::Tmpfs {
            target: PathBuf::from("/exec"),
            options: TmpfsOptions::docker("exec,ro").unwrap(),
        },
    ];
    let mut fake = RecordingSys::default();
    run(&spec, &mut fake).unwrap();
    position(
        &fake.calls,
        "mount tmpfs /run tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC size=64m,mode=1770,uid=1000",
    );
    position(
        &fake.calls,
        "mount tmpfs /exec tmpfs MS_RDONLY | MS_NOSUID | MS_NODEV -",
    );

    // `dev` would let the process open device files it makes: only outside the sandbox.
    spec.mounts = vec![Mount::Tmpfs {
        target: PathBuf::from("/devices"),
        options: TmpfsOptions::docker("dev").unwrap(),
    }];
    let err = build(&spec, &staged(Path::new("/b"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the tmpfs at /devices cannot allow device files (`dev`) in the sandbox: that needs insecure mode"
    );
    spec.security = Security::Insecure;
    let mut fake = RecordingSys::default();
    run(&spec, &mut fake).unwrap();
    position(
        &fake.calls,
        "mount tmpfs /devices tmpfs MS_NOSUID | MS_NOEXEC -",
    );
}

#[test]
fn overlay_mounts_are_made_before_pivot_and_attached_after() {
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: false,
        },
        vec!["true".into()],
    );
    let lowers: Vec<PathBuf> = (0..150)
        .map(|i| PathBuf::from(format!("/var/lib/kiln/snapshots/{i}/fs")))
        .collect();
    spec.mounts = vec![
        Mount::Overlay {
            lowers: lowers.clone(),
            upper_work: None,
            target: PathBuf::from("/layers"),
            readonly: false,
        },
        Mount::Overlay {
            lowers: vec![PathBuf::from("/s/1/fs")],
            upper_work: Some((PathBuf::from("/s/up/fs"), PathBuf::from("/s/up/work"))),
            target: PathBuf::from("/out"),
            readonly: false,
        },
        Mount::Overlay {
            lowers: vec![PathBuf::from("/s/only")],
            upper_work: None,
            target: PathBuf::from("/single"),
            readonly: false,
        },
    ];
    let mut fake = RecordingSys::default();
    run(&spec, &mut fake).unwrap();
    let calls = &fake.calls;
    let pivot = position(calls, "pivot_root . .");
    let chdir = position(calls, "chdir /var/lib/kiln/snapshots");
    let mount = chdir + 1;
    assert!(
        calls[mount].starts_with("mount overlay /run/b/overlay-0 overlay - lowerdir=0/fs:1/fs:"),
        "{}",
        calls[mount]
    );
    assert!(calls[mount].ends_with(":149/fs"), "{}", calls[mount]);
    assert_eq!(calls[mount + 1], "open_tree /run/b/overlay-0");
    assert_eq!(calls[mount + 2], "chdir /s");
    assert_eq!(
        calls[mount + 3],
        "mount overlay /run/b/overlay-1 overlay - lowerdir=1/fs,upperdir=up/fs,workdir=up/work"
    );
    assert_eq!(calls[mount + 4], "open_tree /run/b/overlay-1");
    // A single read-only lower is bound as is (overlayfs wants two without an upper).
    assert_eq!(calls[mount + 5], "open_tree /s/only");
    assert!(mount + 5 < pivot);
    let layers = position(calls, "move_mount 104 /layers");
    assert_eq!(calls[layers - 2], "mkdir /layers 755");
    assert_eq!(
        calls[layers - 1],
        "mount_setattr 104 AT_RECURSIVE MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV"
    );
    // The writable overlay: nodev, not read-only.
    let out = position(calls, "move_mount 105 /out");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("mount_setattr 105"))
            .collect::<Vec<_>>(),
        ["mount_setattr 105 AT_RECURSIVE MOUNT_ATTR_NODEV"]
    );
    assert_eq!(
        calls[out - 1],
        "mount_setattr 105 AT_RECURSIVE MOUNT_ATTR_NODEV"
    );
    assert_eq!(calls[out - 2], "mkdir /out 755");
    let single = position(calls, "move_mount 106 /single");
    assert_eq!(
        calls[single - 1],
        "mount_setattr 106 AT_RECURSIVE MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV"
    );
    assert!(pivot < layers && layers < out && out < single);
    let plan = build(&spec, &staged(Path::new("/run/b"))).unwrap();
    let points = mount_points(&plan.ops);
    for target in ["/layers", "/out", "/single", "/etc/hosts", "/proc"] {
        assert!(
            points.contains(&PathBuf::from(target)),
            "{target}: {points:?}"
        );
    }
    assert!(!points.contains(&PathBuf::from("/")));
}

#[test]
fn failure_reports_the_op() {
    let spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: false,
        },
        vec!["true".into()],
    );
    let plan = build(&spec, &staged(Path::new("/b"))).unwrap();
    let mut fake = RecordingSys::default();
    fake.fail.push(("pivot_root".to_owned(), Errno::EINVAL));
    let mut slots = vec![-1; plan.slots];
    let (index, err) = apply(&plan.ops, &mut slots, &mut fake).unwrap_err();
    assert_eq!(err, Errno::EINVAL);
    assert_eq!(plan.ops[index].describe(), "pivot_root to /r");
}

#[test]
fn relative_paths_are_rejected() {
    let spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("r"),
            readonly: false,
        },
        vec!["true".into()],
    );
    assert!(matches!(
        build(&spec, &staged(Path::new("/b"))),
        Err(Error::RelativePath {
            field: "rootfs",
            ..
        })
    ));
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: PathBuf::from("/r"),
            readonly: false,
        },
        vec!["true".into()],
    );
    spec.mounts.push(Mount::Tmpfs {
        target: PathBuf::from("tmp"),
        options: TmpfsOptions::default(),
    });
    assert!(matches!(
        build(&spec, &staged(Path::new("/b"))),
        Err(Error::RelativePath { .. })
    ));
}

#[test]
fn an_emulator_is_opened_before_the_pivot_and_registered_in_a_user_namespace_last() {
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: "/r".into(),
            readonly: false,
        },
        vec!["/bin/sh".into()],
    );
    spec.emulator = Some(crate::emulation::Emulator {
        qemu: "arm",
        path: "/usr/bin/qemu-arm-static".into(),
    });
    let plan = build(&spec, &staged(Path::new("/run/b"))).unwrap();
    let mut slots = vec![-1; plan.slots];
    let mut fake = RecordingSys::default();
    apply(&plan.ops, &mut slots, &mut fake).unwrap();
    let setup = fake.calls.len();
    apply(&plan.emulation, &mut slots, &mut fake).unwrap();
    let calls = &fake.calls;
    let open = position(calls, "open /usr/bin/qemu-arm-static");
    assert!(open < position(calls, "pivot_root . ."), "{calls:#?}");
    let fd = 100 + calls.iter().filter(|c| c.starts_with("open")).count();
    assert_eq!(
        calls[setup..],
        [
            "unshare user mnt uts, map 0 0 4294967295".to_owned(),
            "mount binfmt_misc /proc/sys/fs/binfmt_misc binfmt_misc \
             MS_NOSUID | MS_NODEV | MS_NOEXEC -"
                .to_owned(),
            format!(
                "write /proc/sys/fs/binfmt_misc/register :qemu-arm:M::\
                 \\x7f\\x45\\x4c\\x46\\x01\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\
                 \\x00\\x02\\x00\\x28\\x00:\
                 \\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\
                 \\xff\\xfe\\xff\\xff\\xff:/proc/self/fd/{fd}:FP"
            ),
            format!("close {fd}"),
        ]
    );
    // Without an emulator, no step 9.
    spec.emulator = None;
    let plan = build(&spec, &staged(Path::new("/run/b"))).unwrap();
    assert!(plan.emulation.is_empty());
}
