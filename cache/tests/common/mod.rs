//! Helpers shared by the cache integration tests.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a requirement holds; when it does not, prints why the test is skipped, or fails
/// when `KILN_TEST_REQUIRE_ALL=1`.
#[expect(clippy::print_stderr, reason = "a skipped test says why")]
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("KILN_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required but unavailable: {what}");
    }
    eprintln!("skipped: {what} is unavailable");
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether an HTTP registry answers `GET /v2/` with 200 at `host` (`127.0.0.1:5000`).
pub fn registry_up(host: &str) -> bool {
    registry_reply(host)
        .is_some_and(|s| s.starts_with("HTTP/1.1 200") || s.starts_with("HTTP/1.0 200"))
}

/// Whether an HTTP server answers at `host` at all (a registry that wants credentials says 401).
pub fn registry_answers(host: &str) -> bool {
    registry_reply(host).is_some_and(|s| s.starts_with("HTTP/"))
}

fn registry_reply(host: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        TcpStream::connect_timeout(&host.parse().unwrap(), Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
        .write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    Some(reply)
}

/// The shared test registry (scripts/test-env.sh).
pub const TEST_REGISTRY: &str = "127.0.0.1:5000";

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private registry on a free 127.0.0.1 port with its own storage, stopped on drop.
pub struct PrivateRegistry {
    pub host: String,
    pub storage: tempfile::TempDir,
    child: Child,
    credentials: Option<String>,
}

impl PrivateRegistry {
    /// Starts one, or returns `None` when `docker-registry` or `skopeo` is missing.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// Starts one that requires HTTP basic authentication as `user:password` (htpasswd).
    pub fn start_with(credentials: Option<(&str, &str)>) -> Option<Self> {
        if !have("docker-registry") || !have("skopeo") || credentials.is_some() && !have("htpasswd")
        {
            return None;
        }
        let storage = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        let mut auth = String::new();
        if let Some((user, password)) = credentials {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap();
            assert!(out.status.success());
            let file = storage.path().join("htpasswd");
            fs_err::write(&file, out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                file.display()
            );
        }
        fs_err::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth}http:\n  addr: {host}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self {
            host,
            storage,
            child,
            credentials: credentials.map(|(u, p)| format!("{u}:{p}")),
        };
        let start = Instant::now();
        while !registry_answers(&registry.host) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "private registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    /// Pushes the busybox test layout as `library/busybox:latest`.
    pub fn push_busybox(&self) {
        let layout = kiln_testdata::busybox_layout();
        let status = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .args(
                self.credentials
                    .iter()
                    .flat_map(|c| ["--dest-creds", c.as_str()]),
            )
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/library/busybox:latest", self.host))
            .status()
            .unwrap();
        assert!(status.success(), "skopeo copy failed");
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_data(&self, hex: &str) -> std::path::PathBuf {
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox test image's manifest, config and layer digests, read from the layout.
pub struct BusyboxLayout {
    pub manifest: String,
    pub config: String,
    pub layers: Vec<String>,
    pub diff_ids: Vec<String>,
}

pub fn busybox_layout() -> BusyboxLayout {
    let layout = kiln_testdata::busybox_layout();
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&fs_err::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let m = blob(&manifest);
    let config = m["config"]["digest"].as_str().unwrap().to_owned();
    let layers = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    let diff_ids = blob(&config)["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    BusyboxLayout {
        manifest,
        config,
        layers,
        diff_ids,
    }
}

/// Every file below `dir`, relative, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs_err::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if fs_err::symlink_metadata(&path).unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
