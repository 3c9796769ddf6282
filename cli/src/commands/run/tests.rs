use super::*;

#[test]
fn volume_specs_are_checked_like_docker() {
    let store = tempfile::tempdir().unwrap();
    let volumes = Volumes::new(store.path());
    for spec in ["./relative:/x", "a/b:/x", "/tmp:relative"] {
        let err = volume(spec, &volumes).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid volume specification: '{spec}'")),
            "{err}"
        );
    }
    let err = volume("/a:/b:bogus", &volumes).unwrap_err().to_string();
    assert_eq!(err, "invalid volume specification: '/a:/b:bogus'");
    let Mount::Bind { readonly, .. } = volume("/tmp:/data:ro", &volumes).unwrap() else {
        panic!("not a bind mount");
    };
    assert!(readonly);
    // A name is a named volume, made on first use.
    let Mount::Bind { source, .. } = volume("cache:/cache", &volumes).unwrap() else {
        panic!("not a bind mount");
    };
    assert_eq!(source, store.path().join("volumes/cache/_data"));
    assert!(source.is_dir());
}

/// The `kiln` binary of this build (cargo builds it for the package's integration tests).
pub(crate) fn kiln_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("kiln");
    path.is_file().then_some(path)
}

/// Reads everything written to a pseudo-terminal's master side, in the background.
pub(crate) fn collect(master: std::os::fd::OwnedFd) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the last slave descriptor is closed.
        while let Ok(n @ 1..) = nix::unistd::read(&master, &mut buf) {
            if sender.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits (up to 30 s) until `output` plus what `receiver` brings contains `text`.
pub(crate) fn wait_for(
    receiver: &std::sync::mpsc::Receiver<Vec<u8>>,
    output: &mut String,
    text: &str,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !output.contains(text) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match receiver.recv_timeout(left) {
            Ok(bytes) => output.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => panic!("no {text:?} in the terminal's output: {output:?}"),
        }
    }
}

/// The kiln binary and a store with busybox loaded, for tests that run kiln itself; `None`
/// (after saying why) where they cannot run.
pub(crate) fn kiln_with_busybox() -> Option<(std::path::PathBuf, tempfile::TempDir)> {
    if !kiln_testdata::is_root() {
        kiln_testdata::skip("needs root for namespaces and overlayfs");
        return None;
    }
    let Some(kiln) = kiln_binary() else {
        kiln_testdata::skip("the kiln binary is not built next to the tests");
        return None;
    };
    let root = tempfile::tempdir().unwrap();
    let loaded = std::process::Command::new(&kiln)
        .arg("--root")
        .arg(root.path())
        .arg("load")
        .arg(kiln_testdata::busybox_layout())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(loaded.success());
    Some((kiln, root))
}

/// A pseudo-terminal of `rows`x`cols` (kiln's terminal in a test) and its slave's path.
pub(crate) fn terminal(rows: u16, cols: u16) -> (nix::pty::OpenptyResult, std::path::PathBuf) {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let path = nix::unistd::ttyname(&pty.slave).unwrap();
    (pty, path)
}

/// Resizes the terminal at `path` and tells the process `child`, as a terminal emulator does.
pub(crate) fn resize(path: &std::path::Path, rows: u16, cols: u16, child: u32) {
    let resized = std::process::Command::new("stty")
        .arg("-F")
        .arg(path)
        .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
        .status()
        .unwrap();
    assert!(resized.success());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGWINCH).unwrap();
}

#[test]
fn tty_containers_get_kilns_terminal_size_and_its_changes() {
    use std::process::{Command, Stdio as ProcessStdio};

    let Some((kiln, root)) = kiln_with_busybox() else {
        return;
    };
    // kiln's terminal: a pseudo-terminal of 33x101.
    let (pty, terminal) = terminal(33, 101);
    let script = "stty size; i=0; while [ $i -lt 300 ]; do s=$(stty size); \
                  [ \"$s\" != '33 101' ] && break; sleep 0.1; i=$((i+1)); done; echo \"now $s\"";
    let mut child = Command::new(&kiln)
        .arg("--root")
        .arg(root.path())
        .args(["run", "--rm", "-t", "busybox", "sh", "-c", script])
        .stdin(ProcessStdio::null())
        .stdout(ProcessStdio::from(pty.slave.try_clone().unwrap()))
        .stderr(ProcessStdio::from(pty.slave))
        .spawn()
        .unwrap();
    let output = collect(pty.master);
    let mut text = String::new();
    // The initial size is kiln's terminal's, not a default.
    wait_for(&output, &mut text, "33 101");

    // Resize kiln's terminal and tell kiln, as the terminal emulator does.
    resize(&terminal, 40, 120, child.id());
    wait_for(&output, &mut text, "now 40 120");
    assert!(child.wait().unwrap().success(), "{text:?}");
}

#[test]
fn cpus_and_health_flags_parse_like_docker() {
    assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
    assert_eq!(parse_cpus("0.25").unwrap(), 250_000_000);
    assert_eq!(
        parse_cpus("lots").unwrap_err().to_string(),
        "invalid argument \"lots\" for \"--cpus\" flag: failed to parse lots as a rational number"
    );
    use clap::Parser as _;
    let parse = |flags: &[&str]| {
        let cli = crate::args::Cli::try_parse_from(
            ["kiln", "run"].iter().chain(flags).chain(&["busybox"]),
        )
        .unwrap();
        let crate::args::Command::Run(args) = cli.command else {
            panic!("not run");
        };
        args
    };
    let image = HealthConfig {
        test: vec!["CMD".to_owned(), "true".to_owned()],
        interval: 5,
        ..HealthConfig::default()
    };
    let health = health_config(
        &parse(&[
            "--health-cmd",
            "curl -f localhost",
            "--health-interval",
            "1m30s",
        ]),
        Some(image.clone()),
    )
    .unwrap()
    .unwrap();
    assert_eq!(health.test, ["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(health.interval, 90_000_000_000);
    assert_eq!(
        health_config(&parse(&[]), Some(image.clone())).unwrap(),
        Some(image.clone())
    );
    assert_eq!(
        health_config(&parse(&["--no-healthcheck"]), Some(image)).unwrap(),
        None
    );
    let none = HealthConfig {
        test: vec!["NONE".to_owned()],
        ..HealthConfig::default()
    };
    assert_eq!(health_config(&parse(&[]), Some(none)).unwrap(), None);
    assert!(health_config(&parse(&["--health-timeout", "soon"]), None).is_err());
}

#[test]
fn memory_takes_docker_sizes() {
    assert_eq!(parse_memory("512").unwrap(), 512);
    assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
    assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
    assert_eq!(parse_memory("1.5GiB").unwrap(), 3 << 29);
    assert_eq!(
        format!("{:#}", parse_memory("lots").unwrap_err()),
        format!(
            "invalid argument \"lots\" for \"-m, --memory\" flag: {}",
            kiln_cache::parse_size("lots").unwrap_err()
        )
    );
    assert!(parse_memory("17179869184p").is_err());
}
