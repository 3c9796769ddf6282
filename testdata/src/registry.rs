//! Registries for tests: a private `docker-registry` on a free port (optionally behind
//! basic authentication, or serving HTTPS), and probes of a registry's `/v2/` endpoint.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a registry answers `GET /v2/` with 200 at `host` (`127.0.0.1:5000`).
pub fn registry_serves(host: &str) -> bool {
    http_reply(host).is_some_and(|s| s.starts_with("HTTP/1.1 200") || s.starts_with("HTTP/1.0 200"))
}

/// Whether an HTTP server answers at `host` at all (a registry that wants credentials says 401).
pub fn registry_answers(host: &str) -> bool {
    http_reply(host).is_some_and(|s| s.starts_with("HTTP/"))
}

/// The whole reply to `GET /v2/` at `host`.
fn http_reply(host: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        TcpStream::connect_timeout(&host.parse().ok()?, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    Some(reply)
}

/// Whether `program` is on the `$PATH`.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private registry on a free 127.0.0.1 port with its own storage, stopped on drop.
pub struct PrivateRegistry {
    /// Where it listens (`127.0.0.1:PORT`).
    pub host: String,
    /// Its configuration and storage.
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
        Self::start_on("127.0.0.1", credentials, None)
    }

    /// Starts one that serves HTTPS with the PEM files `certificate` and `key`, on a free port
    /// of 127.0.0.2: a loopback address that clients do not take for a plain-HTTP registry,
    /// as they take 127.0.0.1 and localhost.
    pub fn start_tls(certificate: &Path, key: &Path) -> Option<Self> {
        Self::start_on("127.0.0.2", None, Some((certificate, key)))
    }

    fn start_on(
        address: &str,
        credentials: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
    ) -> Option<Self> {
        if !have("docker-registry") || !have("skopeo") || credentials.is_some() && !have("htpasswd")
        {
            return None;
        }
        let storage = tempfile::tempdir().unwrap();
        let port = TcpListener::bind((address, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("{address}:{port}");
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
        let tls = tls.map_or(String::new(), |(certificate, key)| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certificate.display(),
                key.display()
            )
        });
        fs_err::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth}http:\n  addr: {host}\n{tls}",
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
        let layout = crate::busybox_layout();
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
