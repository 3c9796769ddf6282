//! Source ops: images from a registry and local directories.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;
use sha2::{Digest as _, Sha256};

use super::{LlbError, Ref, SessionConfig, blocking, snapshot_from_dir};
use crate::scheduler::{CacheMap, Op, OpContext, OpError};

/// The op for a source identifier.
pub(super) fn source_op(
    digest: String,
    source: &pb::SourceOp,
    config: Arc<SessionConfig>,
) -> Result<Arc<dyn Op<Ref>>, LlbError> {
    let identifier = source.identifier.as_str();
    if let Some(reference) = identifier.strip_prefix("docker-image://") {
        return Ok(Arc::new(ImageSource {
            digest,
            reference: reference.to_owned(),
            config,
        }));
    }
    if let Some(name) = identifier.strip_prefix("local://") {
        return Ok(Arc::new(LocalSource {
            digest,
            name: name.to_owned(),
            config,
        }));
    }
    Err(LlbError::UnsupportedSource {
        digest,
        identifier: identifier.to_owned(),
    })
}

/// `docker-image://REF`: the image's layers as snapshots.
struct ImageSource {
    digest: String,
    reference: String,
    config: Arc<SessionConfig>,
}

impl Op<Ref> for ImageSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        // The pull itself is the cheap path when the image is stored: it only checks the
        // manifest. The op digest keys it (a tag is resolved again on each pull).
        let digest = self.digest.clone();
        async move {
            Ok(CacheMap {
                digest,
                deps: Vec::new(),
            })
        }
        .boxed()
    }

    fn exec(&self, _: OpContext, _: Vec<Ref>) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let config = self.config.clone();
        let reference = self.reference.clone();
        async move {
            // The pull future is not `Send` (a closure in it borrows across an await), so it
            // runs on a runtime of its own on the blocking pool.
            let pulled = blocking(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(runtime.block_on(kiln_cache::pull(
                    config.store.clone(),
                    &reference,
                    &config.pull,
                    &(),
                ))?)
            })
            .await?;
            let top = pulled.image.chain_id.map(|c| Ref::snapshot(c.to_string()));
            Ok(vec![top.unwrap_or_else(Ref::scratch)])
        }
        .boxed()
    }
}

/// `local://NAME`: a directory given to the build, copied into a snapshot.
struct LocalSource {
    digest: String,
    name: String,
    config: Arc<SessionConfig>,
}

impl LocalSource {
    fn dir(&self) -> Result<PathBuf, OpError> {
        self.config.locals.get(&self.name).cloned().ok_or_else(|| {
            format!(
                "no local directory named {:?} was given (use --local {}=DIR)",
                self.name, self.name
            )
            .into()
        })
    }
}

impl Op<Ref> for LocalSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        let dir = self.dir();
        let digest = self.digest.clone();
        async move {
            let dir = dir?;
            let content = blocking(move || Ok(tree_digest(&dir)?)).await?;
            Ok(CacheMap {
                digest: format!("{digest}:{content}"),
                deps: Vec::new(),
            })
        }
        .boxed()
    }

    fn exec(&self, _: OpContext, _: Vec<Ref>) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let dir = self.dir();
        let store = self.config.store.clone();
        async move {
            let dir = dir?;
            blocking(move || Ok(vec![snapshot_from_dir(&store, &dir, "local")?])).await
        }
        .boxed()
    }
}

/// A digest of a directory tree: names, types, modes, link targets and file contents.
fn tree_digest(root: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    fn walk(hasher: &mut Sha256, dir: &std::path::Path, rel: &str) -> std::io::Result<()> {
        let mut names: Vec<_> = fs_err::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = format!("{rel}/{}", name.to_string_lossy());
            let meta = fs_err::symlink_metadata(&path)?;
            hasher.update(rel.as_bytes());
            hasher.update([0]);
            hasher.update(meta.mode().to_le_bytes());
            if meta.file_type().is_symlink() {
                hasher.update(fs_err::read_link(&path)?.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                hasher.update(meta.len().to_le_bytes());
                let mut file = fs_err::File::open(&path)?;
                std::io::copy(&mut file, hasher)?;
            } else if meta.is_dir() {
                walk(hasher, &path, &rel)?;
            }
            hasher.update([0]);
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    walk(&mut hasher, root, "")?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}
