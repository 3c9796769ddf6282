//! `http://` and `https://` sources: one downloaded file in a snapshot of its own.
//!
//! Attributes as BuildKit's: `http.checksum` (the content must have this digest),
//! `http.filename` (default: the last segment of the URL path, or `index`), `http.perm` (octal,
//! default 0600), `http.uid` and `http.gid`; `http.header.accept` and `http.header.user-agent`
//! set those request headers. The `Authorization` header is the session secret
//! `http.authheadersecret` names (which must exist), or else, when the session has them, the
//! secret `HTTP_AUTH_HEADER_<host>` or `Bearer` and the secret `HTTP_AUTH_TOKEN_<host>`. The cache key is the op digest plus the checksum
//! when one is given; otherwise the server's `ETag` or `Last-Modified` from a `HEAD` request, so
//! an unchanged resource is not downloaded again; a server that sends neither is downloaded to
//! key the content itself; that download is kept for the step, so a file is fetched once.
//!
//! A download is streamed to a file, never held in memory, and stops with an error past
//! [`MAX_DOWNLOAD`] bytes (at once when the server announces a larger `Content-Length`).
//! Connecting times out after [`CONNECT_TIMEOUT`], and a server silent for [`READ_TIMEOUT`]
//! fails the download.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;
use sha2::{Digest as _, Sha256};

use super::{ActiveSnapshot, Ref, SessionConfig, blocking};
use crate::error::Error;
use crate::scheduler::{CacheMap, Op, OpContext, OpError};

pub(super) struct HttpSource {
    digest: String,
    url: String,
    checksum: Option<String>,
    filename: String,
    perm: u32,
    uid: u32,
    gid: u32,
    /// Request headers: `Accept`, `User-Agent` and `Authorization`, as the attributes and
    /// secrets give them.
    headers: reqwest::header::HeaderMap,
    config: Arc<SessionConfig>,
    /// The file downloaded to key the content, kept for [`Op::exec`].
    downloaded: Arc<Mutex<Option<Download>>>,
}

/// The largest file an HTTP source downloads.
pub(super) const MAX_DOWNLOAD: u64 = 16 << 30;
/// How long connecting to the server may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may stay silent during a request.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A downloaded file (removed on drop), its digest and its modification time.
struct Download {
    file: tempfile::TempPath,
    digest: String,
    /// The server's `Last-Modified`, in seconds since the epoch.
    last_modified: Option<i64>,
}

/// What BuildKit's `ResolveSourceMeta` tells of an HTTP source: the file is downloaded for
/// its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMeta {
    /// The file's digest (`sha256:...`).
    pub digest: String,
    /// The name the file gets (`http.filename`, else the URL's last segment).
    pub filename: String,
    /// The server's `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<i64>,
}

/// An HTTP date (`Tue, 15 Nov 1994 08:12:31 GMT`) in seconds since the epoch.
fn http_date(value: &str) -> Option<i64> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()
        .map(|t| t.as_second())
}

fn client(headers: &reqwest::header::HeaderMap) -> Result<reqwest::Client, Error> {
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .default_headers(headers.clone())
        .build()?)
}

/// The request headers of a source: `Accept` and `User-Agent` from `http.header.*`, and
/// `Authorization` from the session's secrets.
fn request_headers(
    source: &pb::SourceOp,
    secrets: &std::collections::HashMap<String, Vec<u8>>,
) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{self, HeaderMap, HeaderValue};
    let value = |what: &str, bytes: &[u8]| {
        HeaderValue::from_bytes(bytes).map_err(|_| format!("invalid value for {what}"))
    };
    let mut headers = HeaderMap::new();
    for (key, text) in &source.attrs {
        let Some(name) = key.strip_prefix("http.header.") else {
            continue;
        };
        let name = match name.to_ascii_lowercase().as_str() {
            "accept" => header::ACCEPT,
            "user-agent" => header::USER_AGENT,
            _ => {
                return Err(format!(
                    "{key} is not supported: only Accept and User-Agent"
                ));
            }
        };
        headers.insert(name, value(key, text.as_bytes())?);
    }
    let host = reqwest::Url::parse(&source.identifier)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let named = source
        .attrs
        .get("http.authheadersecret")
        .filter(|s| !s.is_empty());
    let authorization = match named {
        Some(name) => {
            let secret = secrets
                .get(name)
                .ok_or_else(|| format!("failed to retrieve HTTP auth secret {name}: not found"))?;
            Some(secret.clone())
        }
        None => secrets
            .get(&format!("HTTP_AUTH_HEADER_{host}"))
            .cloned()
            .or_else(|| {
                let token = secrets.get(&format!("HTTP_AUTH_TOKEN_{host}"))?;
                Some([b"Bearer ".as_slice(), token].concat())
            }),
    };
    if let Some(authorization) = authorization {
        let mut authorization = value("the HTTP auth secret", &authorization)?;
        authorization.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, authorization);
    }
    Ok(headers)
}

impl HttpSource {
    pub(super) fn new(
        digest: String,
        source: &pb::SourceOp,
        config: Arc<SessionConfig>,
    ) -> Result<Self, String> {
        let attr = |name: &str| source.attrs.get(name).filter(|v| !v.is_empty());
        let number = |name: &str, radix: u32| -> Result<Option<u32>, String> {
            attr(name)
                .map(|v| {
                    u32::from_str_radix(v, radix)
                        .map_err(|_| format!("invalid {name} {v:?} for {}", source.identifier))
                })
                .transpose()
        };
        let url = source.identifier.clone();
        let filename = match attr("http.filename") {
            Some(name) => name.clone(),
            None => default_filename(&url),
        };
        if filename.contains('/') || filename == ".." || filename == "." {
            return Err(format!("invalid http.filename {filename:?}"));
        }
        Ok(Self {
            digest,
            checksum: attr("http.checksum").cloned(),
            filename,
            perm: number("http.perm", 8)?.unwrap_or(0o600) & 0o7777,
            uid: number("http.uid", 10)?.unwrap_or(0),
            gid: number("http.gid", 10)?.unwrap_or(0),
            headers: request_headers(source, &config.secrets)?,
            url,
            config,
            downloaded: Arc::default(),
        })
    }
}

/// The last segment of the URL's path, as BuildKit names a download without a filename.
fn default_filename(url: &str) -> String {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    match path.split_once('/') {
        Some((_, path)) => path
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("index")
            .to_owned(),
        None => "index".to_owned(),
    }
}

/// Streams `url` into a new file in `dir`, refusing more than `max` bytes.
async fn download(
    client: &reqwest::Client,
    url: &str,
    dir: &std::path::Path,
    max: u64,
) -> Result<Download, Error> {
    let mut response = client.get(url).send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::DownloadStatus {
            url: url.to_owned(),
            status,
        });
    }
    if let Some(length) = response.content_length().filter(|l| *l > max) {
        return Err(Error::DownloadLength {
            url: url.to_owned(),
            length,
            max,
        });
    }
    let last_modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(http_date);
    let file = tempfile::Builder::new().prefix("http-").tempfile_in(dir)?;
    let (file, path) = file.into_parts();
    let mut out = std::io::BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    while let Some(chunk) = response.chunk().await? {
        written += chunk.len() as u64;
        if written > max {
            return Err(Error::DownloadTooLarge {
                url: url.to_owned(),
                max,
            });
        }
        hasher.update(&chunk);
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(Download {
        file: path,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        last_modified,
    })
}

impl HttpSource {
    /// Downloads the file and tells its digest (checked against `http.checksum`), name and
    /// modification time.
    pub(super) async fn meta(&self) -> Result<HttpMeta, Error> {
        let dir = super::scratch_dir(&self.config.store)?;
        let data = download(&client(&self.headers)?, &self.url, &dir, MAX_DOWNLOAD).await?;
        if let Some(expected) = &self.checksum
            && *expected != data.digest
        {
            return Err(Error::DownloadDigest {
                url: self.url.clone(),
                expected: expected.clone(),
                computed: data.digest,
            });
        }
        Ok(HttpMeta {
            digest: data.digest,
            filename: self.filename.clone(),
            last_modified: data.last_modified,
        })
    }
}

impl Op<Ref> for HttpSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        let digest = self.digest.clone();
        let url = self.url.clone();
        let checksum = self.checksum.clone();
        let store = self.config.store.clone();
        let downloaded = Arc::clone(&self.downloaded);
        let headers = self.headers.clone();
        async move {
            let version = match checksum {
                Some(checksum) => checksum,
                None => {
                    let client = client(&headers)?;
                    let response = client.head(&url).send().await?;
                    let header = |name: &str| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    match (header("etag"), header("last-modified")) {
                        (Some(etag), _) if response.status().is_success() => {
                            format!("etag:{etag}")
                        }
                        (None, Some(modified)) if response.status().is_success() => {
                            format!("modified:{modified}")
                        }
                        _ => {
                            let dir = super::scratch_dir(&store)?;
                            let file = download(&client, &url, &dir, MAX_DOWNLOAD).await?;
                            let digest = file.digest.clone();
                            *downloaded.lock().unwrap_or_else(PoisonError::into_inner) = Some(file);
                            digest
                        }
                    }
                }
            };
            Ok(CacheMap {
                outline: None,
                lineage: None,
                digest: format!("{digest}:{version}"),
                deps: Vec::new(),
            })
        }
        .boxed()
    }

    fn exec(&self, _: OpContext, _: Vec<Ref>) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let url = self.url.clone();
        let checksum = self.checksum.clone();
        let (filename, perm, uid, gid) = (self.filename.clone(), self.perm, self.uid, self.gid);
        let store = self.config.store.clone();
        let headers = self.headers.clone();
        let downloaded = self
            .downloaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        async move {
            let data = match downloaded {
                Some(file) => file,
                None => {
                    let dir = super::scratch_dir(&store)?;
                    download(&client(&headers)?, &url, &dir, MAX_DOWNLOAD).await?
                }
            };
            if let Some(expected) = checksum {
                let computed = data.digest.clone();
                if computed != expected {
                    return Err(Error::DownloadDigest {
                        url,
                        expected,
                        computed,
                    }
                    .into());
                }
            }
            let snapshot = blocking(move || {
                let (active, mounts) = ActiveSnapshot::prepare(&store, None)?;
                let path = mounts.upper.join(&filename);
                fs_err::copy(&data.file, &path)?;
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(perm))?;
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
                active.commit("http")
            })
            .await?;
            Ok(vec![snapshot])
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `reply` (head and body) to every connection on 127.0.0.1; returns the URL.
    async fn serve(reply: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/file", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(&reply).await;
                });
            }
        });
        url
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn downloads_past_the_cap_stop_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A download of `url` into `dir`, capped at 1000 bytes.
        let fetch = |url: &str| {
            let (url, dir) = (url.to_owned(), dir.path().to_owned());
            async move { download(&client(&Default::default())?, &url, &dir, 1000).await }
        };
        runtime().block_on(async {
            // Announced too large: refused before the body is read.
            let url = serve(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\nConnection: close\r\n\r\nxx"
                    .to_vec(),
            )
            .await;
            let err = fetch(&url)
                .await
                .err()
                .expect("an announced 1 TiB download");
            assert!(
                err.to_string().contains("more than the 1000 allowed"),
                "{err}"
            );
            // No length announced: stopped once past the cap.
            let mut reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            reply.extend(std::iter::repeat_n(b'x', 5000));
            let url = serve(reply).await;
            let err = fetch(&url).await.err().expect("a 5000-byte download");
            assert!(
                err.to_string().contains("more than the 1000 bytes allowed"),
                "{err}"
            );
            // Within the cap: the file and its digest.
            let url = serve(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(),
            )
            .await;
            let file = fetch(&url).await.unwrap();
            assert_eq!(fs_err::read(&file.file).unwrap(), b"hello");
            assert_eq!(
                file.digest,
                format!("sha256:{}", hex::encode(Sha256::digest(b"hello")))
            );
        });
        // Failed downloads leave no file behind; the kept one is removed on drop.
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Answers each request with its own head as the body; returns the URL.
    async fn echo() -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/file", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let n = stream.read(&mut request).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&request[..n]).to_ascii_lowercase();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                        head.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        url
    }

    /// The request head the server saw for a source with these attributes and secrets.
    fn sent(attrs: &[(&str, &str)], secrets: &[(&str, &str)]) -> Result<String, String> {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let url = echo().await;
            let source = pb::SourceOp {
                identifier: url.clone(),
                attrs: attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            };
            let secrets = secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect();
            let headers = request_headers(&source, &secrets)?;
            let file = download(&client(&headers).unwrap(), &url, dir.path(), 1 << 20)
                .await
                .unwrap();
            Ok(fs_err::read_to_string(&file.file).unwrap())
        })
    }

    #[test]
    fn headers_and_authorization_come_from_attributes_and_secrets() {
        let head = sent(
            &[
                ("http.header.Accept", "text/plain"),
                ("http.header.user-agent", "kiln-test"),
                ("http.authheadersecret", "TOKEN"),
            ],
            &[("TOKEN", "Basic abc")],
        )
        .unwrap();
        for line in [
            "accept: text/plain\r\n",
            "user-agent: kiln-test\r\n",
            "authorization: basic abc\r\n",
        ] {
            assert!(head.contains(line), "{line:?} in {head}");
        }
        // A named secret must exist.
        assert_eq!(
            sent(&[("http.authheadersecret", "TOKEN")], &[]).unwrap_err(),
            "failed to retrieve HTTP auth secret TOKEN: not found"
        );
        // Without one, the host's secrets are used when there are any.
        let head = sent(&[], &[("HTTP_AUTH_TOKEN_127.0.0.1", "t0k")]).unwrap();
        assert!(head.contains("authorization: bearer t0k\r\n"), "{head}");
        let head = sent(&[], &[]).unwrap();
        assert!(!head.contains("authorization"), "{head}");
        assert_eq!(
            sent(&[("http.header.cookie", "a=b")], &[]).unwrap_err(),
            "http.header.cookie is not supported: only Accept and User-Agent"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/file", listener.local_addr().unwrap());
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    held.push(stream); // never answers
                }
            });
            let client = reqwest::Client::builder()
                .read_timeout(Duration::from_millis(200))
                .build()
                .unwrap();
            let started = std::time::Instant::now();
            assert!(download(&client, &url, dir.path(), 1000).await.is_err());
            assert!(started.elapsed() < Duration::from_secs(10));
        });
    }

    #[test]
    fn filenames_default_to_the_last_path_segment() {
        assert_eq!(
            default_filename("https://example.com/a/b/tool.tar.gz"),
            "tool.tar.gz"
        );
        assert_eq!(default_filename("http://127.0.0.1:8080/file?x=1#y"), "file");
        assert_eq!(default_filename("http://127.0.0.1:8080/dir/"), "index");
        assert_eq!(default_filename("http://127.0.0.1:8080"), "index");
    }
}
