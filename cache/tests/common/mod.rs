//! Helpers shared by the cache integration tests.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "each test binary uses a subset"
)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;

/// Whether a requirement holds; when it does not, prints why the test is skipped, or fails
/// when `KILN_TEST_REQUIRE_ALL=1`.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    kiln_testdata::skip(&format!("{what} is unavailable"));
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The shared test registry (scripts/test-env.sh).
pub const TEST_REGISTRY: &str = "127.0.0.1:5000";

pub use kiln_testdata::registry::{
    PrivateRegistry, registry_answers, registry_serves as registry_up,
};

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

/// A registry front that demands bearer tokens, as Docker Hub does: `/v2/*` without a valid
/// `Authorization: Bearer` gets a 401 with a `WWW-Authenticate: Bearer realm=...` challenge
/// naming its own `/token` endpoint, which issues the token for the right HTTP basic
/// credentials (or to anyone, when it has none). Authorised requests are forwarded to
/// `upstream`. One request per connection; stopped on drop.
pub struct TokenProxy {
    pub host: String,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    credentials: Option<String>,
    token: String,
    stop: std::sync::atomic::AtomicBool,
    /// Every request: (method and path, the Authorization header).
    log: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

impl TokenProxy {
    /// Starts one in front of `upstream`; `credentials` (`user`, `password`) are what the
    /// token endpoint accepts, `None` for anonymous tokens.
    pub fn start(upstream: &str, credentials: Option<(&str, &str)>) -> Self {
        use base64::Engine as _;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = std::sync::Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            credentials: credentials
                .map(|(u, p)| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))),
            token: format!("token-{:016x}", fastrand::u64(..)),
            stop: std::sync::atomic::AtomicBool::new(false),
            log: std::sync::Mutex::default(),
        });
        let shared = std::sync::Arc::clone(&state);
        let me = host.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = std::sync::Arc::clone(&shared);
                let me = me.clone();
                std::thread::spawn(move || {
                    let _ = shared.serve(stream, &me);
                });
            }
        });
        Self { host, state }
    }

    /// The requests seen so far: method and path, and the Authorization header.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.log.lock().unwrap().clone()
    }
}

impl Drop for TokenProxy {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

impl ProxyState {
    fn serve(&self, mut client: TcpStream, me: &str) -> std::io::Result<()> {
        use std::io::{Read as _, Write as _};
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if client.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut parts = request_line.split(' ');
        let (method, target) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let authorization = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone());
        self.log
            .lock()
            .unwrap()
            .push((format!("{method} {target}"), authorization.clone()));
        let reply = |client: &mut TcpStream, status: &str, extra: &str, body: &str| {
            write!(
                client,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                body.len()
            )
        };
        if let Some(query) = target.strip_prefix("/token?") {
            let wanted_scope = query
                .split('&')
                .any(|p| p == "scope=repository%3Alibrary%2Fbusybox%3Apull");
            let allowed = match &self.credentials {
                None => true,
                Some(expected) => authorization.as_deref() == Some(&format!("Basic {expected}")),
            };
            return if !allowed {
                reply(
                    &mut client,
                    "401 Unauthorized",
                    "",
                    "invalid username or password",
                )
            } else if !wanted_scope {
                reply(&mut client, "403 Forbidden", "", "scope not granted")
            } else {
                let body = format!(r#"{{"token":"{0}","access_token":"{0}"}}"#, self.token);
                reply(&mut client, "200 OK", "", &body)
            };
        }
        if authorization.as_deref() != Some(&format!("Bearer {}", self.token)) {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"kiln-test\",scope=\"repository:library/busybox:pull\"\r\n"
            );
            return reply(
                &mut client,
                "401 Unauthorized",
                &challenge,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
        let mut upstream = TcpStream::connect(&self.upstream)?;
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.upstream
        );
        for (k, v) in &headers {
            if !matches!(k.as_str(), "host" | "connection" | "authorization") {
                request.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        request.push_str("\r\n");
        upstream.write_all(request.as_bytes())?;
        std::io::copy(&mut upstream, &mut client)?;
        Ok(())
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A gzip layer holding one file of `zeros` zero bytes: about a kilobyte of gzip per megabyte
/// of tar, the shape of a decompression bomb. Returns the blob and its diff ID. Made of
/// concatenated gzip members (which decompress to one stream), so one compressed chunk of
/// zeros serves the whole file.
pub fn gzip_bomb(zeros: u64) -> (Vec<u8>, String) {
    use sha2::Digest as _;
    const CHUNK: u64 = 64 << 20;
    let gzip = |data: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, data).unwrap();
        gz.finish().unwrap()
    };
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size(zeros);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header.set_cksum();
    // After the header, the stream is all zeros: the data, its padding to 512 bytes and the
    // two end-of-archive blocks.
    let tail = zeros.next_multiple_of(512) + 1024;
    let chunk = vec![0u8; CHUNK as usize];
    let chunk_gz = gzip(&chunk);
    let chunk_hash = sha2::Sha256::new();
    let mut hasher = chunk_hash;
    let mut blob = gzip(header.as_bytes());
    hasher.update(header.as_bytes());
    for _ in 0..tail / CHUNK {
        blob.extend_from_slice(&chunk_gz);
        hasher.update(&chunk);
    }
    let rest = &chunk[..(tail % CHUNK) as usize];
    blob.extend_from_slice(&gzip(rest));
    hasher.update(rest);
    (blob, format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// A gzip layer of a plain tar stream; returns the blob and its diff ID.
pub fn gzip_layer(tar: &[u8]) -> (Vec<u8>, String) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, tar).unwrap();
    (gz.finish().unwrap(), sha256(tar))
}

/// An image made in a test: its config, layer blobs and manifest (which a test may make lie
/// before pushing it with [`push_image`]).
pub struct CraftedImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: serde_json::Value,
}

/// An OCI image of gzip `layers` (blob, diff ID), linux/amd64.
pub fn craft_image(layers: Vec<(Vec<u8>, String)>) -> CraftedImage {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        },
    }))
    .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config),
            "size": config.len(),
        },
        "layers": layers.iter().map(|(blob, _)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha256(blob),
            "size": blob.len(),
        })).collect::<Vec<_>>(),
    });
    CraftedImage {
        config,
        layers: layers.into_iter().map(|(blob, _)| blob).collect(),
        manifest,
    }
}

/// Pushes a crafted image over the registry API as `host/repository:tag`, exactly as given
/// (a registry checks blob digests, not what a manifest says about them).
pub fn push_image(host: &str, repository: &str, tag: &str, image: &CraftedImage) {
    use kiln_cache::oci_client::{self, Reference};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![host.to_owned()]),
        ..Default::default()
    });
    let reference = Reference::with_tag(host.to_owned(), repository.to_owned(), tag.to_owned());
    runtime.block_on(async {
        client
            .auth(
                &reference,
                &oci_client::secrets::RegistryAuth::Anonymous,
                oci_client::RegistryOperation::Push,
            )
            .await
            .unwrap();
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            client
                .push_blob(&reference, blob.clone(), &sha256(blob))
                .await
                .unwrap();
        }
        client
            .push_manifest_raw(
                &reference,
                serde_json::to_vec(&image.manifest).unwrap(),
                "application/vnd.oci.image.manifest.v1+json"
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
    });
}

/// Bytes used by the files below `dir` (allocated blocks, so sparse files count as small).
pub fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs_err::symlink_metadata(dir).unwrap();
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for entry in fs_err::read_dir(dir).unwrap() {
            total += disk_use(&entry.unwrap().path());
        }
    }
    total
}
