//! Real containers over a busybox root filesystem. Needs root; skips (or fails under
//! `KILN_TEST_REQUIRE_ALL=1`) without it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_runner::{
    Error, ExitStatus, Handle, Mount, NetworkMode, Resources, Rootfs, Runner, Security, Signal,
    Spec, Stdio, TerminalSize, TmpfsOptions,
};

fn can_run() -> bool {
    let problem = if !nix::unistd::Uid::effective().is_root() {
        Some("not running as root")
    } else if !Path::new("/bin/busybox").exists() {
        Some("/bin/busybox (busybox-static) is not installed")
    } else {
        None
    };
    match problem {
        None => true,
        Some(reason) => {
            kiln_testdata::skip(reason);
            false
        }
    }
}

/// A busybox root filesystem in `dir`: /bin/busybox plus applet links, users root, nobody and
/// app (uid 1000, also in group `extra`).
fn busybox_rootfs(dir: &Path) {
    fs_err::create_dir_all(dir.join("bin")).unwrap();
    fs_err::create_dir_all(dir.join("etc")).unwrap();
    fs_err::create_dir_all(dir.join("tmp")).unwrap();
    fs_err::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    fs_err::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
    fs_err::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs_err::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n",
    )
    .unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    runner: Runner,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    busybox_rootfs(&root);
    let runner = Runner::new(dir.path().join("state"));
    Fixture { root, runner, dir }
}

impl Fixture {
    fn spec(&self, script: &str) -> Spec {
        Spec::new(
            Rootfs::Dir {
                path: self.root.clone(),
                readonly: false,
            },
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }

    fn run(&self, spec: Spec) -> (kiln_runner::Result<ExitStatus>, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = self
            .runner
            .run(spec, &mut out, &mut err, &Handle::new().unwrap());
        (
            status,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// Runs `script` and returns stdout, asserting exit 0.
    fn sh(&self, script: &str) -> String {
        self.sh_spec(self.spec(script))
    }

    fn sh_spec(&self, spec: Spec) -> String {
        let (status, out, err) = self.run(spec);
        assert_eq!(
            status.unwrap(),
            ExitStatus::Code(0),
            "stdout: {out}\nstderr: {err}"
        );
        out
    }
}

#[test]
fn hostname_and_generated_etc_files() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let mut spec =
        f.spec("hostname; cat /etc/hostname; grep -c 'db' /etc/hosts; cat /etc/resolv.conf");
    spec.hostname = "box1".into();
    spec.extra_hosts.push(("db".into(), "10.0.0.7".into()));
    spec.resolv_conf = Some("nameserver 9.9.9.9\n".into());
    assert_eq!(f.sh_spec(spec), "box1\nbox1\n1\nnameserver 9.9.9.9\n");
    assert_ne!(nix::unistd::gethostname().unwrap(), "box1");
    // The image's own files were not touched: the empty mount targets are gone again.
    for name in ["hosts", "hostname", "resolv.conf"] {
        assert!(!f.root.join("etc").join(name).exists(), "{name}");
    }
    assert!(f.root.join("etc/passwd").exists());
}

#[test]
fn pid_namespace_shows_only_the_container() {
    if !can_run() {
        return;
    }
    let f = fixture();
    // The shell's own view of its pid agrees with /proc: one PID namespace, the step's own
    // process at 1 (as under runc), no helper beside it.
    let out = f.sh("echo $$; ps -o pid,comm; true");
    assert!(out.starts_with("1\n"), "{out}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines, vec![vec!["1", "sh"], vec!["2", "ps"]], "{out}");
}

#[test]
fn the_step_is_pid_1_and_proc_is_all_its_own() {
    if !can_run() {
        return;
    }
    let f = fixture();
    // /proc/1 is the step's own command line, with no host path in it, and its descriptors
    // are readable.
    let script = "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; grep -c . /proc/1/fdinfo/0";
    assert_eq!(f.sh(script), format!("1\n/bin/sh -c {script} \n4\n"));
    // Walking the whole tree meets nothing the step may not read (BuildKit's
    // `find / -name __pycache__`), nor does another user under /proc/1.
    let (status, out, err) = f.run(f.spec("find / -name nothing-like-this"));
    assert_eq!(
        (status.unwrap(), out.as_str(), err.as_str()),
        (ExitStatus::Code(0), "", "")
    );
    let mut spec = f.spec("find /proc/1/ -name nothing-like-this");
    spec.user = "app".into();
    let (status, out, err) = f.run(spec);
    assert_eq!(
        (status.unwrap(), out.as_str(), err.as_str()),
        (ExitStatus::Code(0), "", "")
    );
}

#[test]
fn a_step_leaving_zombies_and_background_children_finishes() {
    if !can_run() {
        return;
    }
    let f = fixture();
    // `sleep 0.1` is orphaned at once and reparented to PID 1, which then becomes a `sleep`
    // that never waits: a zombie, which an observer counts. Another child keeps running in
    // the background. None of that keeps the step alive past its PID 1.
    let started = Instant::now();
    let out = f.sh(
        "(sleep 0.1 &); sleep 1000 & (sleep 0.6; ps -o stat,comm | grep -c '^Z'; echo done) & \
         exec sleep 1.2",
    );
    assert_eq!(out, "1\ndone\n");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn host_files_are_invisible() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let host = tempfile::tempdir().unwrap();
    fs_err::write(host.path().join("marker"), "x").unwrap();
    let path = host.path().join("marker");
    let (status, _, _) = f.run(f.spec(&format!("test -e {}", path.display())));
    assert_eq!(status.unwrap(), ExitStatus::Code(1));
    assert_eq!(f.sh("ls /"), "bin\ndev\netc\nproc\nsys\ntmp\n");
}

#[test]
fn network_none_has_only_loopback_up() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let out = f.sh("ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags");
    // flags 0x9 = IFF_UP | IFF_LOOPBACK.
    assert_eq!(out, "lo\nunknown\n0x9\n");
    // With the host's network the container sees the host's interfaces. The veth pairs of
    // containers that come and go meanwhile (kiln's `kv…`, in tests running beside this one)
    // are left out of the comparison.
    let lasting = "ls /sys/class/net | grep -v '^kv'";
    let mut spec = f.spec(lasting);
    spec.network = NetworkMode::Host;
    let mut host: Vec<String> = fs_err::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("kv"))
        .collect();
    host.sort();
    assert!(host.len() > 1, "{host:?}");
    assert_eq!(f.sh_spec(spec), host.join("\n") + "\n");
}

#[test]
fn env_cwd_and_user() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let mut spec = f.spec("echo $GREETING; pwd; id -u; id -g; id -G; echo $HOME");
    spec.env = vec!["GREETING=hi there".into()];
    spec.cwd = "/work/deep/dir".into();
    spec.user = "app".into();
    assert_eq!(
        f.sh_spec(spec),
        "hi there\n/work/deep/dir\n1000\n1000\n1000 2000\n/home/app\n"
    );
    assert!(f.root.join("work/deep/dir").is_dir());
    let mut spec = f.spec("id -u; id -g; id -G");
    spec.user = "nobody:2000".into();
    assert_eq!(f.sh_spec(spec), "65534\n2000\n2000\n");
}

#[test]
fn exit_codes_and_signals() {
    if !can_run() {
        return;
    }
    let f = fixture();
    assert_eq!(f.run(f.spec("exit 42")).0.unwrap(), ExitStatus::Code(42));
    // The step is PID 1: like any namespace's init it ignores a signal it has no handler for,
    // even its own (as `docker run busybox sh -c 'kill -TERM $$; echo alive'` does) ...
    assert_eq!(f.sh("kill -TERM $$; kill -KILL $$; echo alive"), "alive\n");
    // ... while its children die as usual, and a handler runs.
    assert_eq!(f.sh("sh -c 'kill -TERM $$'; echo $?"), "143\n");
    let (status, out, _) =
        f.run(f.spec("trap 'echo trapped; exit 5' USR1; kill -USR1 $$; sleep 5"));
    assert_eq!(
        (status.unwrap(), out.as_str()),
        (ExitStatus::Code(5), "trapped\n")
    );
    // Killed from outside: 128 + n.
    let handle = Handle::new().unwrap();
    let sender = handle.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        sender.signal(Signal::SIGKILL);
    });
    let status = f
        .runner
        .run(
            f.spec("sleep 1000"),
            &mut std::io::sink(),
            &mut std::io::sink(),
            &handle,
        )
        .unwrap();
    thread.join().unwrap();
    assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
    assert_eq!(status.docker_code(), 137);
    let err = f
        .run(Spec::new(
            Rootfs::Dir {
                path: f.root.clone(),
                readonly: false,
            },
            vec!["nonexistent".into()],
        ))
        .0
        .unwrap_err();
    assert!(
        matches!(err, Error::Exec { ref program, source: nix::errno::Errno::ENOENT } if program == "nonexistent"),
        "{err}"
    );
    // PATH lookup inside the container.
    let spec = Spec::new(
        Rootfs::Dir {
            path: f.root.clone(),
            readonly: false,
        },
        vec!["echo".into(), "found".into()],
    );
    assert_eq!(f.sh_spec(spec), "found\n");
}

#[test]
fn stdout_and_stderr_are_separate_and_ordered() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let (status, out, err) =
        f.run(f.spec("for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.01; done"));
    assert!(status.unwrap().success());
    assert_eq!(out, "out1\nout2\nout3\n");
    assert_eq!(err, "err1\nerr2\nerr3\n");
}

#[test]
fn memory_limit_kills_the_allocator() {
    if !can_run() {
        return;
    }
    let f = fixture();
    // 64 MiB of zeroes through a shell variable needs far more than 32 MiB.
    let script = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}";
    let mut spec = f.spec(script);
    spec.resources = Resources {
        memory: Some(32 << 20),
        ..Resources::default()
    };
    let (status, out, _) = f.run(spec);
    let status = status.unwrap();
    assert!(!out.contains("survived"), "{out}");
    assert_ne!(status, ExitStatus::Code(0));
    // Without the limit the same script completes.
    assert_eq!(f.sh(script), "survived 67108864\n");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let script = "for i in $(seq 1 64); do sleep 100 & done; echo all-forked";
    let mut spec = f.spec(script);
    spec.resources = Resources {
        pids: Some(16),
        ..Resources::default()
    };
    let started = Instant::now();
    let (status, out, err) = f.run(spec);
    assert_ne!(status.unwrap(), ExitStatus::Code(0));
    assert_eq!(out, "");
    assert!(err.contains("can't fork"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Without the limit the same script gets through (and its sleeps die with the container).
    assert_eq!(f.sh(script), "all-forked\n");
}

#[test]
fn background_processes_do_not_keep_the_step_alive() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let started = Instant::now();
    assert_eq!(f.sh("sleep 1000 & echo started"), "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn cancel_kills_the_container_quickly() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let handle = Handle::new().unwrap();
    let canceller = handle.clone();
    let spec = f.spec("sleep 1000");
    let thread = std::thread::spawn(move || {
        let guard = canceller.cancel_on_drop();
        std::thread::sleep(Duration::from_millis(300));
        let at = Instant::now();
        drop(guard);
        at
    });
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = f.runner.run(spec, &mut out, &mut err, &handle);
    let cancelled_at = thread.join().unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        cancelled_at.elapsed()
    );
}

#[test]
fn timeout_kills_the_container() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let mut spec = f.spec("sleep 1000");
    spec.timeout = Some(Duration::from_millis(200));
    let started = Instant::now();
    assert!(matches!(f.run(spec).0, Err(Error::TimedOut { .. })));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Mount lines naming one of `paths`, or an overlay.
fn runner_mounts(paths: &[&Path]) -> Vec<String> {
    fs_err::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.contains("overlay") || paths.iter().any(|p| l.contains(&*p.to_string_lossy()))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn overlay_writes_land_in_upper_and_no_mount_remains() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let layers = tempfile::tempdir().unwrap();
    let watched = [layers.path(), f.dir.path()];
    let before = runner_mounts(&watched);
    // 120 lower layers: the busybox base at the bottom, each other adding one file. Their
    // absolute paths do not fit in the one page the kernel takes for mount options.
    let mut lowers = Vec::new();
    for i in 0..119 {
        let dir = layers.path().join(format!("snapshot-{i:03}-layer-fs"));
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::write(dir.join(format!("file-{i}")), format!("{i}")).unwrap();
        lowers.push(dir);
    }
    let base = layers.path().join("snapshot-base-layer-fs");
    busybox_rootfs(&base);
    lowers.push(base);
    let absolute: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(absolute > 4096, "{absolute}");
    let upper = layers.path().join("upper");
    let work = layers.path().join("work");
    fs_err::create_dir_all(&upper).unwrap();
    fs_err::create_dir_all(&work).unwrap();
    let rootfs = Rootfs::Overlay {
        lowers: lowers.clone(),
        upper: upper.clone(),
        work,
        readonly: false,
    };
    let spec = Spec::new(
        rootfs,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "cat /file-0 /file-118; echo new > /created; echo changed >> /file-5; rm /file-7"
                .into(),
        ],
    );
    assert_eq!(f.sh_spec(spec), "0118");
    assert_eq!(
        fs_err::read_to_string(upper.join("created")).unwrap(),
        "new\n"
    );
    assert_eq!(
        fs_err::read_to_string(upper.join("file-5")).unwrap(),
        "5changed\n"
    );
    assert_eq!(
        fs_err::read_to_string(lowers[5].join("file-5")).unwrap(),
        "5"
    );
    assert!(lowers[7].join("file-7").exists());
    assert!(!f.root.join("created").exists());
    // A whiteout for the removed file.
    assert_eq!(
        fs_err::symlink_metadata(upper.join("file-7"))
            .unwrap()
            .rdev(),
        0
    );
    assert_eq!(runner_mounts(&watched), before);
}

#[test]
fn extra_mounts() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let host = tempfile::tempdir().unwrap();
    fs_err::write(host.path().join("data"), "hostdata").unwrap();
    let mut spec = f.spec(
        "cat /ro/data; echo x > /ro/new 2>/dev/null && echo WRITABLE; echo y > /rw/new; \
         echo t > /scratch/t && df -k /scratch | tail -1 | awk '{print $2}'; \
         stat -c '%a %u %g' /run/secrets/token; cat /run/secrets/token",
    );
    spec.mounts = vec![
        Mount::Bind {
            source: host.path().to_owned(),
            target: "/ro".into(),
            readonly: true,
        },
        Mount::Bind {
            source: host.path().to_owned(),
            target: "/rw".into(),
            readonly: false,
        },
        Mount::Tmpfs {
            target: "/scratch".into(),
            options: TmpfsOptions::default().size(2 << 20),
        },
        Mount::Secret {
            target: "/run/secrets/token".into(),
            data: b"s3cret".to_vec(),
            mode: 0o400,
            uid: 1000,
            gid: 2000,
        },
    ];
    assert_eq!(f.sh_spec(spec), "hostdata2048\n400 1000 2000\ns3cret");
    assert_eq!(
        fs_err::read_to_string(host.path().join("new")).unwrap(),
        "y\n"
    );
    assert!(!f.root.join("scratch/t").exists());
}

#[test]
fn readonly_bind_makes_its_submounts_readonly_too() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let host = tempfile::tempdir().unwrap();
    let sub = host.path().join("sub");
    fs_err::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    /// Unmounts the submount however the test ends.
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(&sub);
    fs_err::write(sub.join("f"), "inner").unwrap();
    let mut spec = f.spec(
        "cat /ro/sub/f; echo x > /ro/sub/new 2>/dev/null && echo WRITABLE; \
         echo x > /ro/new 2>/dev/null && echo TOP-WRITABLE; true",
    );
    spec.mounts = vec![Mount::Bind {
        source: host.path().to_owned(),
        target: "/ro".into(),
        readonly: true,
    }];
    assert_eq!(f.sh_spec(spec), "inner");
    assert!(!sub.join("new").exists());
    assert!(!host.path().join("new").exists());
}

#[test]
fn docker_capabilities_and_masked_paths() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let out = f.sh(
        "grep -E '^Cap(Inh|Eff|Bnd)' /proc/self/status; \
         for p in /proc/kcore /proc/keys /proc/timer_list; do [ -e $p ] && stat -c \"$p %t:%T\" $p; done; \
         ls -A /proc/acpi | wc -l; touch /proc/acpi/x 2>/dev/null || echo acpi-ro; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-ro",
    );
    // Docker's default set, as `docker run busybox grep Cap /proc/self/status` shows; masked
    // files are /dev/null (1:3), masked directories an empty read-only tmpfs; /proc/sys is
    // read-only. This kernel may lack /proc/kcore.
    let kcore = if Path::new("/proc/kcore").exists() {
        "/proc/kcore 1:3\n"
    } else {
        ""
    };
    assert_eq!(
        out,
        format!(
            "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
             {kcore}/proc/keys 1:3\n/proc/timer_list 1:3\n0\nacpi-ro\nsys-ro\n"
        )
    );
    let mut spec = f.spec("grep -E '^Cap(Eff|Bnd)' /proc/self/status");
    spec.user = "app".into();
    assert_eq!(
        f.sh_spec(spec),
        "CapEff:\t0000000000000000\nCapBnd:\t00000000a80425fb\n"
    );
}

#[test]
fn dev_and_proc_contents() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let out = f.sh("ls /dev | tr '\\n' ' '; echo; readlink /dev/ptmx; mount | awk '{print $3, $5}' | grep -E '^/(proc|sys|dev/pts) '");
    assert_eq!(
        out,
        "core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero \npts/ptmx\n/proc proc\n/dev/pts devpts\n/sys sysfs\n"
    );
}

#[test]
fn pty_with_size_and_forwarded_signal() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let mut spec = f.spec("[ -t 0 ] && [ -t 1 ] && echo tty; stty size; echo $TERM");
    spec.stdio = Stdio::Pty {
        size: TerminalSize {
            rows: 33,
            cols: 101,
        },
        input: None,
    };
    // The terminal turns "\n" into "\r\n".
    assert_eq!(f.sh_spec(spec), "tty\r\n33 101\r\nxterm\r\n");

    // SIGTERM through the handle reaches the process, which handles it (as PID 1 it would
    // ignore it otherwise); SIGKILL needs no handler.
    for (signal, expected) in [
        (Signal::SIGTERM, ExitStatus::Code(3)),
        (Signal::SIGKILL, ExitStatus::Signal(libc::SIGKILL)),
    ] {
        let handle = Handle::new().unwrap();
        let sender = handle.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            sender.signal(signal);
        });
        let mut spec = f.spec("trap 'echo got-term; exit 3' TERM; while true; do sleep 0.05; done");
        spec.stdio = Stdio::Pty {
            size: TerminalSize { rows: 5, cols: 20 },
            input: None,
        };
        spec.timeout = Some(Duration::from_secs(20));
        let mut out = Vec::new();
        let status = f
            .runner
            .run(spec, &mut out, &mut std::io::sink(), &handle)
            .unwrap();
        thread.join().unwrap();
        assert_eq!(status, expected);
        let got_term = String::from_utf8_lossy(&out).contains("got-term");
        assert_eq!(got_term, signal == Signal::SIGTERM);
    }
}

#[test]
fn input_fd_feeds_stdin() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let input = tempfile::NamedTempFile::new().unwrap();
    fs_err::write(input.path(), "line one\nline two\n").unwrap();
    let mut spec = f.spec("wc -l; true");
    spec.stdio = Stdio::CapturedWithInput(
        fs_err::File::open(input.path())
            .unwrap()
            .into_parts()
            .0
            .into(),
    );
    assert_eq!(f.sh_spec(spec), "2\n");
}

fn kiln_cgroups() -> Vec<PathBuf> {
    ["memory", "pids", "cpu"]
        .iter()
        .filter_map(|c| fs_err::read_dir(Path::new("/sys/fs/cgroup").join(c).join("kiln")).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", std::process::id()))
        })
        .collect()
}

#[test]
fn cgroup_and_state_are_removed_even_when_a_sink_panics() {
    if !can_run() {
        return;
    }
    let f = fixture();
    struct Panicking;
    impl std::io::Write for Panicking {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            panic!("sink failure");
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut spec = f.spec("echo hi; sleep 424242");
    spec.resources = Resources {
        memory: Some(64 << 20),
        pids: Some(100),
        cpu_shares: Some(512),
        cpu_quota: None,
    };
    let runner = f.runner.clone();
    let started = Instant::now();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = runner.run(
            spec,
            &mut Panicking,
            &mut std::io::sink(),
            &Handle::new().unwrap(),
        );
    }));
    assert!(caught.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(kiln_cgroups(), Vec::<PathBuf>::new());
    let state = f.dir.path().join("state");
    assert_eq!(fs_err::read_dir(&state).unwrap().count(), 0);
    // No process of the container survived.
    let survivors = fs_err::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs_err::read_to_string(e.unwrap().path().join("cmdline")).ok())
        .filter(|c| c == "sleep\u{0}424242\u{0}")
        .count();
    assert_eq!(survivors, 0);
}
#[test]
fn readonly_root_still_gets_its_mounts_and_cwd() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let mut spec =
        f.spec("pwd; touch /x 2>/dev/null || echo root-ro; echo ok > /scratch/f && cat /scratch/f");
    spec.rootfs = Rootfs::Dir {
        path: f.root.clone(),
        readonly: true,
    };
    spec.cwd = "/made/here".into();
    spec.mounts.push(Mount::Tmpfs {
        target: "/scratch".into(),
        options: TmpfsOptions::default(),
    });
    assert_eq!(f.sh_spec(spec), "/made/here\nroot-ro\nok\n");
    assert!(!f.root.join("x").exists());
}

#[test]
fn concurrent_runs_from_many_threads() {
    if !can_run() {
        return;
    }
    let f = fixture();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let f = &f;
            scope.spawn(move || {
                for i in 0..5 {
                    // Concurrent runs over one writable directory share its mount stubs.
                    let mut spec = f.spec(&format!("echo out-{t}-{i}; echo err-{t}-{i} >&2"));
                    spec.remove_mount_stubs = false;
                    let (status, out, err) = f.run(spec);
                    assert!(status.unwrap().success());
                    assert_eq!(
                        (out, err),
                        (format!("out-{t}-{i}\n"), format!("err-{t}-{i}\n"))
                    );
                }
            });
        }
    });
}

#[test]
fn setup_and_exec_failures_are_reported() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let mut spec = f.spec("true");
    spec.mounts.push(Mount::Tmpfs {
        target: "/proc/no/such".into(),
        options: TmpfsOptions::default(),
    });
    let err = f.run(spec).0.unwrap_err();
    assert!(
        matches!(&err, Error::Setup { step, .. } if step == "create directory /proc/no/such"),
        "{err:?}"
    );

    fs_err::write(f.root.join("not-executable"), "#!/bin/sh\n").unwrap();
    let spec = Spec::new(
        Rootfs::Dir {
            path: f.root.clone(),
            readonly: false,
        },
        vec!["/not-executable".into()],
    );
    let err = f.run(spec).0.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Exec {
                source: nix::errno::Errno::EACCES,
                ..
            }
        ),
        "{err:?}"
    );

    let mut spec = f.spec("true");
    spec.user = "ghost".into();
    assert!(matches!(f.run(spec).0, Err(Error::UnknownUser { .. })));
    // Nothing is left in the state directory after failures.
    assert_eq!(
        fs_err::read_dir(f.dir.path().join("state"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn pty_input_and_resize() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    nix::unistd::write(&write_end, b"stty size\nexit 7\n").unwrap();
    drop(write_end);
    let handle = Handle::new().unwrap();
    // Processed as soon as the run starts, long before the shell reads its input.
    handle.resize(TerminalSize {
        rows: 50,
        cols: 132,
    });
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: f.root.clone(),
            readonly: false,
        },
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "sleep 1; exec /bin/sh -i".into(),
        ],
    );
    spec.stdio = Stdio::Pty {
        size: TerminalSize { rows: 24, cols: 80 },
        input: Some(read_end),
    };
    let mut out = Vec::new();
    let status = f
        .runner
        .run(spec, &mut out, &mut std::io::sink(), &handle)
        .unwrap();
    assert_eq!(status, ExitStatus::Code(7));
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("50 132\r\n"), "{out:?}");
}

#[test]
fn devices_outside_dockers_list_cannot_be_opened() {
    if !can_run() {
        return;
    }
    // With the v1 devices controller its rules refuse the node; without it (cgroup v2) the
    // nodev root file system does.
    // /dev/loop-control (10:237) opens on the host, so a refusal inside comes from the
    // container's device rules.
    let host = tempfile::tempdir().unwrap();
    let node = host.path().join("loop-control");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(10, 237),
    )
    .unwrap();
    fs_err::File::open(&node).unwrap();

    let f = fixture();
    // Docker's CAP_MKNOD lets root create the node; it cannot be opened.
    let out = f.sh(
        "mknod /tmp/lc c 10 237 && echo made; true < /tmp/lc 2>/dev/null && echo opened || echo refused; \
         head -c 4 /dev/zero | wc -c; echo ok > /dev/null && echo null-ok",
    );
    assert_eq!(out, "made\nrefused\n4\nnull-ok\n");
}

#[test]
fn the_calling_thread_is_left_as_it_was() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let before = fs_err::read_link("/proc/thread-self/ns/pid_for_children").unwrap();
    assert_eq!(f.sh("echo hi"), "hi\n");
    assert_eq!(
        fs_err::read_link("/proc/thread-self/ns/pid_for_children").unwrap(),
        before
    );
    assert_eq!(
        fs_err::read_link("/proc/thread-self/ns/pid").unwrap(),
        before
    );
    // Ordinary child processes of this thread still start, in the caller's namespace.
    let status = std::process::Command::new("/bin/true").status().unwrap();
    assert!(status.success());
}

/// An overlay over a busybox lower without /etc, /proc, /dev or /sys, with a fresh upper.
fn bare_overlay(dir: &Path, name: &str) -> (Rootfs, PathBuf) {
    let lower = dir.join(format!("{name}-lower"));
    if !lower.exists() {
        busybox_rootfs(&lower);
        fs_err::remove_dir_all(lower.join("etc")).unwrap();
    }
    let upper = dir.join(format!("{name}-upper"));
    let work = dir.join(format!("{name}-work"));
    fs_err::create_dir_all(&upper).unwrap();
    fs_err::create_dir_all(&work).unwrap();
    let rootfs = Rootfs::Overlay {
        lowers: vec![lower],
        upper: upper.clone(),
        work,
        readonly: false,
    };
    (rootfs, upper)
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in fs_err::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                pending.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn mount_stubs_are_removed_from_the_upper() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let mounts = || {
        vec![
            Mount::Tmpfs {
                target: PathBuf::from("/mnt/deep/scratch"),
                options: TmpfsOptions::default(),
            },
            Mount::Secret {
                target: PathBuf::from("/run/secrets/token"),
                data: b"t".to_vec(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        ]
    };
    // `true`: nothing of the setup's stubs is left.
    let (rootfs, upper) = bare_overlay(f.dir.path(), "a");
    let mut spec = Spec::new(rootfs, vec!["/bin/true".into()]);
    spec.mounts = mounts();
    f.sh_spec(spec);
    assert_eq!(tree(&upper), Vec::<String>::new());

    // What the process writes next to and into the stubs' directories stays.
    let (rootfs, upper) = bare_overlay(f.dir.path(), "b");
    let mut spec = Spec::new(
        rootfs,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /etc/foo && echo hi > /mnt/note && cat /etc/hostname /run/secrets/token".into(),
        ],
    );
    spec.mounts = mounts();
    assert_eq!(f.sh_spec(spec), "kiln\nt");
    assert_eq!(tree(&upper), ["etc", "etc/foo", "mnt", "mnt/note"]);
    assert_eq!(
        fs_err::read_to_string(upper.join("mnt/note")).unwrap(),
        "hi\n"
    );

    // Kept on request.
    let (rootfs, upper) = bare_overlay(f.dir.path(), "c");
    let mut spec = Spec::new(rootfs, vec!["/bin/true".into()]);
    spec.remove_mount_stubs = false;
    f.sh_spec(spec);
    let kept = tree(&upper);
    for stub in [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "proc",
        "dev",
        "sys",
    ] {
        assert!(kept.iter().any(|p| p == stub), "{stub} not in {kept:?}");
    }
    assert_eq!(fs_err::metadata(upper.join("etc/hosts")).unwrap().len(), 0);
}

#[test]
fn overlay_mounts_at_non_root_targets() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let layers = tempfile::tempdir().unwrap();
    let watched = [layers.path(), f.dir.path()];
    let before = runner_mounts(&watched);
    // 120 layers whose absolute paths do not fit in one page of mount options; layer i holds
    // file-i, and the top one also shadows file-119 and whites out file-118 (OCI form does
    // not apply to overlayfs, so use a 0/0 device).
    let mut lowers = Vec::new();
    for i in 0..120 {
        let dir = layers.path().join(format!("snapshot-{i:03}-layer-fs"));
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::write(dir.join(format!("file-{i}")), format!("{i}")).unwrap();
        lowers.push(dir);
    }
    fs_err::write(lowers[0].join("file-119"), "shadowed").unwrap();
    nix::sys::stat::mknod(
        &lowers[0].join("file-118"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let upper = layers.path().join("out-upper");
    let work = layers.path().join("out-work");
    fs_err::create_dir_all(&upper).unwrap();
    fs_err::create_dir_all(&work).unwrap();
    let mut spec = f.spec(
        "cat /layers/file-0 /layers/file-77 /layers/file-119; echo; \
         test -e /layers/file-118 || echo whited-out; \
         touch /layers/new 2>/dev/null || echo read-only; \
         echo out > /output/result; cat /output/file-3; echo; \
         touch /ro-output/x 2>/dev/null || echo ro-output read-only; \
         cat /single/file-5; echo; touch /single/x 2>/dev/null || echo single read-only",
    );
    spec.mounts = vec![
        Mount::Overlay {
            lowers: lowers.clone(),
            upper_work: None,
            target: "/layers".into(),
            readonly: false,
        },
        Mount::Overlay {
            lowers: lowers[..10].to_vec(),
            upper_work: Some((upper.clone(), work.clone())),
            target: "/output".into(),
            readonly: false,
        },
        Mount::Overlay {
            lowers: lowers[..2].to_vec(),
            upper_work: Some((
                layers.path().join("ro-upper"),
                layers.path().join("ro-work"),
            )),
            target: "/ro-output".into(),
            readonly: true,
        },
        Mount::Overlay {
            lowers: vec![lowers[5].clone()],
            upper_work: None,
            target: "/single".into(),
            readonly: false,
        },
    ];
    fs_err::create_dir_all(layers.path().join("ro-upper")).unwrap();
    fs_err::create_dir_all(layers.path().join("ro-work")).unwrap();
    assert_eq!(
        f.sh_spec(spec),
        "077shadowed\nwhited-out\nread-only\n3\nro-output read-only\n5\nsingle read-only\n"
    );
    assert_eq!(
        fs_err::read_to_string(upper.join("result")).unwrap(),
        "out\n"
    );
    assert!(!lowers[0].join("result").exists());
    assert!(!lowers[0].join("new").exists());
    assert_eq!(tree(&layers.path().join("ro-upper")), Vec::<String>::new());
    // The mount points were stubs in the root directory: gone again, as are the mounts.
    for target in ["layers", "output", "ro-output", "single"] {
        assert!(!f.root.join(target).exists(), "{target}");
    }
    assert_eq!(runner_mounts(&watched), before);
}

/// A Python script that makes raw system calls and prints one `name errno` line each (0 for
/// success), run in a busybox root with the host's /usr bound read-only.
const SYSCALL_PROBE: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, *args):
    ctypes.set_errno(0)
    result = libc.syscall(*[ctypes.c_long(a) for a in args])
    print(name, 0 if result >= 0 else ctypes.get_errno())
call("keyctl", 250, 0, -3, 0)           # KEYCTL_GET_KEYRING_ID of the session keyring
call("add_key", 248, 0, 0, 0, 0, -2)    # bad pointers: EFAULT/EINVAL when not filtered
call("unshare_user", 272, 0x10000000)   # CLONE_NEWUSER, no capability needed without a filter
call("personality", 135, 0x0040000)     # ADDR_NO_RANDOMIZE: not in the allowed values
call("personality_query", 135, 0xffffffff)
call("clone3", 435, 0, 0)               # EINVAL (size 0) when not filtered
call("swapon", 167, 0, 0)
call("socket_alg", 41, 38, 5, 0)        # AF_ALG
call("socket_unix", 41, 1, 1, 0)
call("fork_ok", 57) if os.uname().machine == "x86_64" else print("fork_ok 0")
"#;

fn syscall_probe(f: &Fixture, security: Security) -> Vec<(String, i32)> {
    for link in ["lib", "lib64"] {
        let path = f.root.join(link);
        if path.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("usr/{link}"), &path).unwrap();
        }
    }
    let mut spec = Spec::new(
        Rootfs::Dir {
            path: f.root.clone(),
            readonly: false,
        },
        vec!["/usr/bin/python3".into(), "-c".into(), SYSCALL_PROBE.into()],
    );
    spec.mounts.push(Mount::Bind {
        source: "/usr".into(),
        target: "/usr".into(),
        readonly: true,
    });
    spec.security = security;
    let (status, out, err) = f.run(spec);
    assert_eq!(status.unwrap(), ExitStatus::Code(0), "{out}\n{err}");
    out.lines()
        .map(|line| {
            let (name, errno) = line.split_once(' ').unwrap();
            (name.to_owned(), errno.parse().unwrap())
        })
        .collect()
}

fn can_probe() -> bool {
    if !Path::new("/usr/bin/python3").exists() {
        kiln_testdata::skip("/usr/bin/python3 is not installed");
        return false;
    }
    true
}

#[test]
fn seccomp_blocks_what_dockers_profile_blocks() {
    if !can_run() || !can_probe() {
        return;
    }
    let f = fixture();
    let errno = |results: &[(String, i32)], name: &str| {
        results
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} in {results:?}"))
            .1
    };
    let sandboxed = syscall_probe(&f, Security::Sandbox);
    for name in [
        "keyctl",
        "add_key",
        "unshare_user",
        "personality",
        "socket_alg",
    ] {
        assert_eq!(
            errno(&sandboxed, name),
            libc::EPERM,
            "{name}: {sandboxed:?}"
        );
    }
    assert_eq!(errno(&sandboxed, "clone3"), libc::ENOSYS, "{sandboxed:?}");
    for name in ["personality_query", "socket_unix", "fork_ok"] {
        assert_eq!(errno(&sandboxed, name), 0, "{name}: {sandboxed:?}");
    }
    // Without the filter the same calls get past it: what refused them above was seccomp.
    let insecure = syscall_probe(&f, Security::Insecure);
    for name in [
        "keyctl",
        "unshare_user",
        "personality",
        "personality_query",
        "socket_unix",
    ] {
        assert_eq!(errno(&insecure, name), 0, "{name}: {insecure:?}");
    }
    for name in ["add_key", "clone3"] {
        let got = errno(&insecure, name);
        assert!(
            got != libc::EPERM && got != libc::ENOSYS,
            "{name}: {insecure:?}"
        );
    }
}

#[test]
fn seccomp_mode_is_filter_and_ordinary_programs_work() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let out = f.sh(
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; ls / >/dev/null && echo ls-ok; \
         x=$(echo sub); echo $x; (sleep 0.01 & wait) && echo waited; unshare -U true 2>/dev/null || echo unshare-refused",
    );
    // Filter mode; no_new_privs stays off (setuid programs keep working, as under Docker).
    assert_eq!(
        out,
        "NoNewPrivs:\t0\nSeccomp:\t2\nls-ok\nsub\nwaited\nunshare-refused\n"
    );
    let mut spec =
        f.spec("grep -E '^Seccomp:' /proc/self/status; unshare -U true && echo unshared");
    spec.security = Security::Insecure;
    assert_eq!(f.sh_spec(spec), "Seccomp:\t0\nunshared\n");
    // A non-root user gets the same filter.
    let mut spec = f.spec("grep -E '^Seccomp:' /proc/self/status");
    spec.user = "app".into();
    assert_eq!(f.sh_spec(spec), "Seccomp:\t2\n");
}

#[test]
fn block_devices_made_anywhere_cannot_be_opened() {
    if !can_run() {
        return;
    }
    let f = fixture();
    // CAP_MKNOD makes the node; opening it fails, on any cgroup version: the root file system
    // and /dev are nodev (and on v1 the device rules refuse it as well).
    let out = f.sh(
        "mknod /tmp/sda b 8 0 && echo made; head -c1 /tmp/sda >/dev/null 2>&1 || echo refused; \
         mknod /dev/sdb b 8 16 && head -c1 /dev/sdb >/dev/null 2>&1 || echo refused-in-dev; \
         awk '$2 == \"/\" || $2 == \"/dev\" { print $2, ($4 ~ /(^|,)nodev(,|$)/) ? \"nodev\" : \"dev\" }' /proc/mounts; \
         head -c 3 /dev/zero | wc -c; head -c 3 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok; \
         [ -c /dev/tty ] && [ -c /dev/full ] && [ -c /dev/random ] && echo nodes-ok",
    );
    assert_eq!(
        out,
        "made\nrefused\nrefused-in-dev\n/ nodev\n/dev nodev\n3\n3\nnull-ok\nnodes-ok\n"
    );
    // An overlay root is nodev too; insecure mode has no such restriction on its root.
    let dir = tempfile::tempdir().unwrap();
    let (rootfs, _) = bare_overlay(dir.path(), "o");
    let mut spec = Spec::new(
        rootfs,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "awk '$2 == \"/\" { print ($4 ~ /(^|,)nodev(,|$)/) ? \"nodev\" : \"dev\" }' /proc/mounts".into(),
        ],
    );
    spec.security = Security::Sandbox;
    assert_eq!(f.sh_spec(spec), "nodev\n");
    let mut spec = f.spec(
        "awk '$2 == \"/\" { print ($4 ~ /(^|,)nodev(,|$)/) ? \"nodev\" : \"dev\" }' /proc/mounts",
    );
    spec.security = Security::Insecure;
    assert_eq!(f.sh_spec(spec), "dev\n");
}

/// Mounts a tmpfs at `path` on the host and unmounts it however the test ends.
struct HostTmpfs(PathBuf);

impl HostTmpfs {
    fn mount(path: &Path) -> Self {
        fs_err::create_dir_all(path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        Self(path.to_owned())
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// For each directory: makes the null device (1:3) there with mknod and opens it; prints
/// `DIR: opened` or `DIR: ` and the error.
fn open_new_null_devices(dirs: &[&str]) -> String {
    let mut script = String::new();
    for dir in dirs {
        script.push_str(&format!(
            "rm -f {dir}/null-{n}; mknod {dir}/null-{n} c 1 3 || echo '{dir}: mknod failed'; \
             if out=$(head -c 0 {dir}/null-{n} 2>&1); then echo '{dir}: opened'; \
             else echo \"{dir}: ${{out##*: }}\"; fi; ",
            n = dir.len()
        ));
    }
    script
}

#[test]
fn device_nodes_open_on_no_mount_but_the_allowed_ones_in_dev() {
    if !can_run() {
        return;
    }
    // The null device is allowed by the v1 device rules, so a refusal here comes from nodev,
    // which is all that keeps devices closed on cgroup v2.
    let f = fixture();
    let host = tempfile::tempdir().unwrap();
    let (rw, ro, cache) = (
        host.path().join("rw"),
        host.path().join("ro"),
        host.path().join("cache"),
    );
    for dir in [&rw, &ro, &cache] {
        fs_err::create_dir(dir).unwrap();
    }
    // A node that is already there (as in a bound snapshot) is refused as well, read-only or not.
    nix::sys::stat::mknod(
        &ro.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    // A submount of a bound directory is nodev too.
    let _sub = HostTmpfs::mount(&rw.join("sub"));
    let layers = tempfile::tempdir().unwrap();
    let (lower, upper, work) = (
        layers.path().join("lower"),
        layers.path().join("upper"),
        layers.path().join("work"),
    );
    for dir in [&lower, &upper, &work] {
        fs_err::create_dir(dir).unwrap();
    }
    let dirs = [
        "/", "/tmp", "/rw", "/rw/sub", "/cache", "/scratch", "/ov", "/dev/shm",
    ];
    let mut spec = f.spec(&format!(
        "{} if out=$(head -c 0 /ro/null 2>&1); then echo '/ro: opened'; else echo \"/ro: ${{out##*: }}\"; fi; \
         echo x > /dev/null && head -c 2 /dev/zero | wc -c",
        open_new_null_devices(&dirs)
    ));
    spec.mounts = vec![
        Mount::Bind {
            source: rw.clone(),
            target: "/rw".into(),
            readonly: false,
        },
        Mount::Bind {
            source: ro.clone(),
            target: "/ro".into(),
            readonly: true,
        },
        Mount::Bind {
            source: cache.clone(),
            target: "/cache".into(),
            readonly: false,
        },
        Mount::Tmpfs {
            target: "/scratch".into(),
            options: TmpfsOptions::default(),
        },
        Mount::Overlay {
            lowers: vec![lower.clone()],
            upper_work: Some((upper.clone(), work.clone())),
            target: "/ov".into(),
            readonly: false,
        },
    ];
    let expected: String = dirs
        .iter()
        .map(|d| format!("{d}: Permission denied\n"))
        .chain(["/ro: Permission denied\n".to_owned(), "2\n".to_owned()])
        .collect();
    assert_eq!(f.sh_spec(spec), expected);
    // The nodes were made where the process could write, and are refused on the host's mounts
    // of them only by the container's mounts being nodev.
    assert!(rw.join("null-3").exists() && cache.join("null-6").exists());

    // An overlay root, likewise.
    let dir = tempfile::tempdir().unwrap();
    let (rootfs, _) = bare_overlay(dir.path(), "o");
    let spec = Spec::new(
        rootfs,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            open_new_null_devices(&["/", "/tmp"]),
        ],
    );
    assert_eq!(
        f.sh_spec(spec),
        "/: Permission denied\n/tmp: Permission denied\n"
    );
    // Privileged, the same node opens.
    let mut spec = f.spec(&open_new_null_devices(&["/tmp"]));
    spec.security = Security::Insecure;
    assert_eq!(f.sh_spec(spec), "/tmp: opened\n");
}

#[test]
fn readonly_paths_and_a_readonly_root_are_readonly_with_their_submounts() {
    if !can_run() {
        return;
    }
    let f = fixture();
    // A mount below /proc/sys, made before Docker's read-only paths are applied.
    let mut spec = f.spec(
        "touch /proc/sys/fs/binfmt_misc/x 2>/dev/null && echo binfmt-writable; \
         awk '$2 == \"/proc/sys/fs/binfmt_misc\" { split($4, o, \",\"); last = o[1] } END { print last }' /proc/mounts",
    );
    spec.mounts = vec![Mount::Tmpfs {
        target: "/proc/sys/fs/binfmt_misc".into(),
        options: TmpfsOptions::default(),
    }];
    // (The last entry is the one in sight: the copy under the read-only bind of /proc/sys.)
    assert_eq!(f.sh_spec(spec), "ro\n");

    // A root directory with a mount inside it: read-only and nodev all through, while the
    // mounts the runner makes on it stay writable.
    let _sub = HostTmpfs::mount(&f.root.join("sub"));
    fs_err::write(f.root.join("sub/f"), "inner\n").unwrap();
    let mut spec = f.spec(
        "cat /sub/f; touch /sub/new 2>/dev/null && echo sub-writable; \
         touch /new 2>/dev/null && echo root-writable; \
         awk '$2 == \"/\" || $2 == \"/sub\" { print $2, $4 }' /proc/mounts | sed -E 's/(ro|rw),.*(nodev).*/\\1 \\2/'; \
         echo ok > /scratch/f && cat /scratch/f; echo ok > /dev/shm/f && cat /dev/shm/f",
    );
    spec.rootfs = Rootfs::Dir {
        path: f.root.clone(),
        readonly: true,
    };
    spec.mounts.push(Mount::Tmpfs {
        target: "/scratch".into(),
        options: TmpfsOptions::default(),
    });
    assert_eq!(
        f.sh_spec(spec),
        "inner\n/ ro nodev\n/sub ro nodev\nok\nok\n"
    );
    assert!(!f.root.join("sub/new").exists() && !f.root.join("new").exists());

    // An overlay root read-only (`kiln run --read-only`): nothing lands in its upper, its
    // tmpfs mounts stay writable.
    let dir = tempfile::tempdir().unwrap();
    let (rootfs, upper) = bare_overlay(dir.path(), "ro");
    let Rootfs::Overlay {
        lowers,
        upper: up,
        work,
        ..
    } = rootfs
    else {
        unreachable!()
    };
    let mut spec = Spec::new(
        Rootfs::Overlay {
            lowers,
            upper: up,
            work,
            readonly: true,
        },
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /new 2>/dev/null && echo root-writable; echo ok > /dev/shm/f && cat /dev/shm/f; \
             awk '$2 == \"/\" { split($4, o, \",\"); print o[1] }' /proc/mounts"
                .into(),
        ],
    );
    spec.remove_mount_stubs = true;
    assert_eq!(f.sh_spec(spec), "ok\nro\n");
    assert!(!upper.join("new").exists());
}

/// The cgroups directly below the cgroup `dir`.
fn sub_cgroups(dir: &Path) -> Vec<PathBuf> {
    fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}

/// The run's line of /proc/self/cgroup for `hierarchy` (`0` is v2, else a v1 controller).
const CGROUP_LINE: &str =
    "grep -E '^[0-9]+:(pids|memory|):' /proc/self/cgroup | cut -d: -f2- | sort";

#[test]
fn a_cgroup_parent_holds_the_runs_cgroup_in_every_hierarchy() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let parent = format!("kiln-test-parent-{}", std::process::id());
    let mut spec = f.spec(CGROUP_LINE);
    spec.cgroup_parent = Some(format!("/{parent}"));
    let out = f.sh_spec(spec);
    let me = std::process::id();
    let lines: Vec<&str> = out.lines().collect();
    // v1 here: memory and pids joined below the parent without any limit set.
    assert_eq!(lines.len(), 3, "{out}");
    for (line, controller) in lines.iter().zip(["", "memory", "pids"]) {
        let path = line.strip_prefix(&format!("{controller}:")).unwrap();
        if controller.is_empty() {
            // The unified hierarchy of this hybrid host is not used.
            continue;
        }
        let run = path
            .strip_prefix(&format!("/{parent}/kiln/{me}-"))
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(run.split('-').count(), 2, "{out}");
    }
    for controller in ["memory", "pids", "cpu", "devices"] {
        let dir = Path::new("/sys/fs/cgroup").join(controller).join(&parent);
        if dir.exists() {
            // Only the runner's own level is left; the run's cgroup is gone.
            assert_eq!(sub_cgroups(&dir.join("kiln")), Vec::<PathBuf>::new());
            fs_err::remove_dir(dir.join("kiln")).unwrap();
            fs_err::remove_dir(&dir).unwrap();
        }
    }
    // One that leaves the hierarchy is refused before anything runs.
    let mut spec = f.spec("true");
    spec.cgroup_parent = Some("../..".into());
    let (status, _, _) = f.run(spec);
    assert!(
        matches!(status, Err(Error::CgroupParent { .. })),
        "{status:?}"
    );
}

#[test]
fn cgroups_of_dead_runs_are_swept() {
    if !can_run() {
        return;
    }
    // A cgroup named after a process that is gone, as a SIGKILLed kiln leaves it.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let left = Path::new("/sys/fs/cgroup/pids/kiln").join(format!("{dead}-1-0"));
    fs_err::create_dir_all(&left).unwrap();
    let f = fixture();
    let mut spec = f.spec("true");
    spec.resources.pids = Some(100);
    f.sh_spec(spec);
    assert!(!left.exists());
}

#[test]
fn on_cgroup_v2_runs_join_their_cgroup_and_missing_controllers_are_errors() {
    if !can_run() {
        return;
    }
    if !Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        kiln_testdata::skip("no cgroup v2 hierarchy at /sys/fs/cgroup/unified");
        return;
    }
    // A v2-only host for this thread: a private mount namespace with the unified hierarchy
    // mounted on /sys/fs/cgroup. Its controllers are what v1 does not hold (none of memory,
    // pids and cpu on a hybrid host), so limits cannot be applied, but a cgroup parent can.
    kiln_testdata::private_mount_namespace();
    nix::mount::mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let controllers = fs_err::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap();
    let f = fixture();
    let parent = format!("kiln-test-v2-{}", std::process::id());
    let mut spec = f.spec("grep '^0::' /proc/self/cgroup; ls /dev/sda 2>/dev/null; true");
    spec.cgroup_parent = Some(parent.clone());
    let out = f.sh_spec(spec);
    let prefix = format!("0::/{parent}/kiln/{}-", std::process::id());
    assert!(
        out.starts_with(&prefix) && out.lines().count() == 1,
        "{out}"
    );
    let kiln = Path::new("/sys/fs/cgroup").join(&parent).join("kiln");
    assert_eq!(sub_cgroups(&kiln), Vec::<PathBuf>::new());
    fs_err::remove_dir(&kiln).unwrap();
    fs_err::remove_dir(kiln.parent().unwrap()).unwrap();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        let mut spec = f.spec("true");
        spec.resources.memory = Some(64 << 20);
        let (status, _, _) = f.run(spec);
        let err = status.unwrap_err();
        assert!(
            matches!(
                err,
                Error::CgroupController {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );
    }
    // Devices stay closed without a device controller: the mounts are nodev.
    let out = f.sh(&open_new_null_devices(&["/tmp"]));
    assert_eq!(out, "/tmp: Permission denied\n");
}

#[test]
fn ulimits_are_set_before_the_exec() {
    if !can_run() {
        return;
    }
    let f = fixture();
    let ulimits: Vec<kiln_runner::Ulimit> = ["nofile=1024:2048", "core=-1", "nproc=300:400"]
        .iter()
        .map(|u| u.parse().unwrap())
        .collect();
    let mut spec = f.spec("ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hc; ulimit -u; ulimit -Hu");
    spec.ulimits = ulimits.clone();
    assert_eq!(
        f.sh_spec(spec),
        "1024\n2048\nunlimited\nunlimited\n300\n400\n"
    );
    // A user without capabilities gets them all the same (set before they are dropped).
    let mut spec = f.spec("ulimit -n; ulimit -Hn");
    spec.user = "app".into();
    spec.ulimits = ulimits;
    assert_eq!(f.sh_spec(spec), "1024\n2048\n");
    // Without ulimits the caller's limits are inherited.
    let own = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .0;
    assert_eq!(f.sh("ulimit -n"), format!("{own}\n"));

    // An unknown name is docker's error, before anything runs.
    let mut spec = f.spec("echo ran");
    spec.ulimits = vec![kiln_runner::Ulimit {
        name: "openfiles".into(),
        soft: 1,
        hard: 1,
    }];
    let (status, out, _) = f.run(spec);
    let err = status.unwrap_err();
    assert_eq!(err.to_string(), "invalid ulimit type: openfiles");
    assert_eq!(out, "");
    // A limit the kernel refuses (more open files than fs.nr_open) names the limit.
    let nr_open: i64 = fs_err::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut spec = f.spec("echo ran");
    spec.ulimits = vec![kiln_runner::Ulimit {
        name: "nofile".into(),
        soft: nr_open + 1,
        hard: nr_open + 1,
    }];
    let (status, out, _) = f.run(spec);
    let err = status.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "container setup failed: set the resource limit nofile={}:{}",
            nr_open + 1,
            nr_open + 1
        )
    );
    assert!(
        matches!(err, Error::Setup { source, .. } if source == nix::errno::Errno::EPERM),
        "{err:?}"
    );
    assert_eq!(out, "");
}

/// The default network, with its state where kiln keeps it (the bridge is the host's: every
/// process attaching to it shares that state).
fn bridge() -> kiln_runner::net::Bridge {
    kiln_runner::net::Bridge::default_network("/run/kiln/net")
}

fn joined(attachment: &kiln_runner::net::Attachment) -> NetworkMode {
    NetworkMode::Join {
        namespace: attachment.namespace(),
        hosts: Some(attachment.hosts_file()),
    }
}

fn host_links() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bridge_network_gives_an_address_names_published_ports_and_cleans_up() {
    use kiln_runner::net::{AttachOptions, Publish};
    if !can_run() {
        return;
    }
    let f = fixture();
    fs_err::create_dir_all(f.root.join("www")).unwrap();
    fs_err::write(f.root.join("www/index.html"), "served by web\n").unwrap();
    let net = bridge();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let web = net
        .attach(AttachOptions {
            names: vec!["web".into()],
            hostname: "web".into(),
            peers: true,
            publish: Publish::parse(&format!("127.0.0.1:{port}:80")).unwrap(),
            ..AttachOptions::default()
        })
        .unwrap();
    let address = web.address();
    let veth = format!("kv{:08x}", u32::from(address));
    assert!(host_links().contains(&veth), "{}", host_links());

    let handle = Handle::new().unwrap();
    std::thread::scope(|scope| {
        let mut spec = f.spec("exec httpd -f -p 80 -h /www");
        spec.network = joined(&web);
        let server = scope.spawn(|| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let _ = f.runner.run(spec, &mut out, &mut err, &handle);
        });
        // Whatever fails below, the server goes.
        let stop_server = handle.cancel_on_drop();
        // The host reaches the container's address through the bridge.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((address, 80)).is_err() {
            assert!(Instant::now() < deadline, "httpd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }

        // A second container finds the first by name; its own address, route and hosts file.
        let client = net
            .attach(AttachOptions {
                names: vec!["client".into()],
                hostname: "client".into(),
                extra_hosts: vec![("extra.example".into(), "192.0.2.5".into())],
                peers: true,
                ..AttachOptions::default()
            })
            .unwrap();
        let mut spec = f.spec(
            "wget -qO- http://web/; ip -4 -o addr show eth0 | awk '{print $4}'; \
             ip route | head -1; grep -E 'web|extra|client' /etc/hosts",
        );
        spec.network = joined(&client);
        let out = f.sh_spec(spec);
        assert_eq!(
            out,
            format!(
                "served by web\n{}/16\ndefault via 10.89.0.1 dev eth0 \n{}\tclient\n192.0.2.5\textra.example\n{address}\tweb\n",
                client.address(),
                client.address(),
            )
        );
        // The published port answers on the host's loopback.
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::{Read as _, Write as _};
        stream
            .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.") && reply.ends_with("served by web\n"),
            "{reply}"
        );

        // The web container's hosts file learnt the client while it ran, and forgets it.
        let hosts = fs_err::read_to_string(web.hosts_file()).unwrap();
        assert!(
            hosts.contains(&format!("{}\tclient\n", client.address())),
            "{hosts}"
        );
        drop(client);
        let hosts = fs_err::read_to_string(web.hosts_file()).unwrap();
        assert!(!hosts.contains("client"), "{hosts}");

        drop(stop_server);
        server.join().unwrap();
    });
    let namespace = web.namespace();
    drop(web);
    // The kernel destroys the namespace, and the pair with it, once its file is unmounted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_links().contains(&veth) {
        assert!(Instant::now() < deadline, "{}", host_links());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!namespace.exists());
    let rules = std::process::Command::new("nft")
        .args(["list", "map", "ip", "kiln", "publish_addr_tcp"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains(&format!(". {port} :")), "{rules}");
}

#[test]
fn a_container_on_the_bridge_cannot_reach_the_hosts_loopback() {
    use kiln_runner::net::AttachOptions;
    if !can_run() {
        return;
    }
    let f = fixture();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and at once closes each connection, so that a client that got through ends.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let net = bridge();
    let attachment = net.attach(AttachOptions::default()).unwrap();
    let gateway = attachment.gateway();
    let mut spec = f.spec(&format!(
        "nc -w 1 127.0.0.1 {port} </dev/null && echo loopback open; \
         nc -w 1 {gateway} {port} </dev/null && echo gateway open; echo done"
    ));
    spec.network = joined(&attachment);
    assert_eq!(f.sh_spec(spec), "done\n");
    // The same listener is reachable from the host's own namespace (the probe works).
    let mut spec = f.spec(&format!("nc -w 1 127.0.0.1 {port} </dev/null && echo open"));
    spec.network = NetworkMode::Host;
    assert_eq!(f.sh_spec(spec), "open\n");
}
