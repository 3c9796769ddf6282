//! Helpers shared by the CLI end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub(crate) mod cases;
pub(crate) mod daemon;

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

/// A registry in front of the test registry that passes every request through and records
/// it; with `refuse_monolithic`, it refuses monolithic blob uploads (a `PUT` to an upload
/// with a body gets `413 Request Entity Too Large`, as from a proxy with a small body limit).
/// Returns its `host:port` and the requests it saw (`METHOD path status`).
pub(crate) fn recording_registry(
    refuse_monolithic: bool,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    fn serve(
        client: TcpStream,
        seen: &Mutex<Vec<String>>,
        refuse_monolithic: bool,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(client.try_clone()?);
        let mut head = Vec::new();
        loop {
            let start = head.len();
            if reader.read_until(b'\n', &mut head)? == 0 {
                return Ok(());
            }
            if head[start..] == *b"\r\n" {
                break;
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        let (mut length, mut chunked) = (0, false);
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => {}
                _ => headers.push(format!("{name}: {value}")),
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut piece = vec![0; size + 2];
                reader.read_exact(&mut piece)?;
                body.extend_from_slice(&piece[..size]);
                if size == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut client = client;
        if refuse_monolithic
            && method == "PUT"
            && target.contains("/blobs/uploads/")
            && !body.is_empty()
        {
            seen.lock().unwrap().push(format!("{method} {target} 413"));
            client.write_all(
                b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        let mut upstream = TcpStream::connect("127.0.0.1:5000")?;
        let mut request = format!("{request_line}\r\n");
        for header in &headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        upstream.write_all(request.as_bytes())?;
        upstream.write_all(&body)?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        let status = String::from_utf8_lossy(&response)
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_owned();
        seen.lock()
            .unwrap()
            .push(format!("{method} {target} {status}"));
        client.write_all(&response)
    }

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let _ = serve(client, &log, refuse_monolithic);
            });
        }
    });
    (address, seen)
}

/// `kiln --root ROOT`.
pub(crate) fn kiln(root: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.arg("--root").arg(root);
    command
}

/// A store with busybox loaded from testdata, or `None` (skipped) when not root.
pub(crate) fn store_with_busybox() -> Option<tempfile::TempDir> {
    if !kiln_testdata::is_root() {
        kiln_testdata::skip("needs root for namespaces and overlayfs");
        return None;
    }
    let root = tempfile::tempdir().unwrap();
    let mut load = kiln(root.path());
    load.arg("load").arg(kiln_testdata::busybox_layout());
    assert!(load.status().unwrap().success());
    Some(root)
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A build context `DIR/context` holding `dockerfile`.
pub(crate) fn context_with(dir: &Path, dockerfile: &str) -> PathBuf {
    let context = dir.join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(context.join("Dockerfile"), dockerfile).unwrap();
    context
}
