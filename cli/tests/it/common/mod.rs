//! Helpers shared by the CLI end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub(crate) mod cases;

use kiln_testdata::{is_root, registry_up, skip};

/// Whether builds that pull from the test registry can run here (root, the registry up); when
/// not, skips the calling test saying why.
pub(crate) fn ready() -> bool {
    if !is_root() {
        skip("building needs root (namespaces, overlay mounts)");
        return false;
    }
    if !registry_up() {
        skip("the test registry is not serving 127.0.0.1:5000 (run scripts/test-env.sh)");
        return false;
    }
    true
}

/// Writes the marshalled Definition `def` next to `out` and solves it with
/// `kiln --root ROOT build --llb DEF --output type=local,dest=OUT`.
pub(crate) fn build_llb(root: &Path, def: &[u8], out: &Path) -> Output {
    let file = out.with_extension("pb");
    fs_err::write(&file, def).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain", "--llb"])
        .arg(&file)
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .output()
        .unwrap()
}

/// Writes `DIR/kiln.toml`, a config making 127.0.0.1:5000 docker.io's mirror; returns its path.
pub(crate) fn mirror_config(dir: &Path) -> PathBuf {
    let path = dir.join("kiln.toml");
    fs_err::write(
        &path,
        "[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:5000\"]\n",
    )
    .unwrap();
    path
}

/// Runs `kiln --root DIR/root --config DIR/kiln.toml ARGS` (the mirror config above) with `env`
/// added to its environment.
pub(crate) fn kiln_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--config")
        .arg(mirror_config(dir))
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// A command's standard output followed by its standard error.
pub(crate) fn text(output: &Output) -> String {
    let mut t = String::from_utf8_lossy(&output.stdout).into_owned();
    t.push_str(&String::from_utf8_lossy(&output.stderr));
    t
}

/// Fails the test with kiln's standard error unless the command succeeded.
pub(crate) fn assert_ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `git ARGS` in `dir` with a fixed identity; returns its trimmed standard output.
pub(crate) fn run_git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.email=test@kiln", "-c", "user.name=kiln"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A child process killed when dropped.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves the repositories under `base` with `git daemon` on 127.0.0.1; returns it and its port.
pub(crate) fn git_daemon(base: &Path) -> (Killed, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("git")
        .arg("daemon")
        .arg(format!("--base-path={}", base.display()))
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Killed(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (daemon, port);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("git daemon did not start");
}
