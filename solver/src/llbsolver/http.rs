//! `http://` and `https://` sources: one downloaded file in a snapshot of its own.
//!
//! Attributes as BuildKit's: `http.checksum` (the content must have this digest),
//! `http.filename` (default: the last segment of the URL path, or `index`), `http.perm` (octal,
//! default 0600), `http.uid` and `http.gid`. The cache key is the op digest plus the checksum
//! when one is given; otherwise the server's `ETag` or `Last-Modified` from a `HEAD` request, so
//! an unchanged resource is not downloaded again; a server that sends neither is downloaded to
//! key the content itself.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;
use sha2::{Digest as _, Sha256};

use super::{Ref, SessionConfig, blocking, new_snapshot_key};
use crate::scheduler::{CacheMap, Op, OpContext, OpError};

pub(super) struct HttpSource {
    digest: String,
    url: String,
    checksum: Option<String>,
    filename: String,
    perm: u32,
    uid: u32,
    gid: u32,
    config: Arc<SessionConfig>,
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
            url,
            config,
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

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

async fn get(url: &str) -> Result<Vec<u8>, OpError> {
    let response = reqwest::get(url).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("downloading {url}: {status}").into());
    }
    Ok(response.bytes().await?.to_vec())
}

impl Op<Ref> for HttpSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        let digest = self.digest.clone();
        let url = self.url.clone();
        let checksum = self.checksum.clone();
        async move {
            let version = match checksum {
                Some(checksum) => checksum,
                None => {
                    let response = reqwest::Client::new().head(&url).send().await?;
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
                        _ => sha256(&get(&url).await?),
                    }
                }
            };
            Ok(CacheMap {
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
        async move {
            let data = get(&url).await?;
            if let Some(expected) = checksum {
                let computed = sha256(&data);
                if computed != expected {
                    return Err(format!(
                        "digest mismatch for {url}: expected {expected}, got {computed}"
                    )
                    .into());
                }
            }
            blocking(move || {
                let active = new_snapshot_key("active");
                let mounts = store.prepare_upper(&active, None)?;
                let written = (|| -> std::io::Result<()> {
                    let path = mounts.upper.join(&filename);
                    fs_err::write(&path, &data)?;
                    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(perm))?;
                    std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                })();
                if let Err(e) = written {
                    let _ = store.remove_snapshot(&active);
                    return Err(e.into());
                }
                let key = new_snapshot_key("http");
                store.commit(&active, &key)?;
                Ok(vec![Ref::snapshot(key)])
            })
            .await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::default_filename;

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
