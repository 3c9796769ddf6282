//! Source ops: images from a registry and local directories.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;

use super::local::{LocalFilter, LocalRequest, Selected};
use super::local_checksums::{
    ChecksumCache, FileChecksums, LastSnapshot, known_files, tree_digest,
};
use super::{LlbError, Ref, SessionConfig, blocking, snapshot_from_dir};
use crate::error::Error;
use crate::scheduler::{CacheMap, Op, OpContext, OpError, SourceContent};

/// The op for a source identifier.
pub(super) fn source_op(
    digest: String,
    source: &pb::SourceOp,
    platform: Option<&pb::Platform>,
    config: Arc<SessionConfig>,
) -> Result<Arc<dyn Op<Ref>>, LlbError> {
    let identifier = source.identifier.as_str();
    if let Some(reference) = identifier.strip_prefix("docker-image://") {
        let platform = platform.map(kiln_llb::Platform::from_pb);
        let source = ImageSource::new(digest.clone(), reference, &source.attrs, platform, config)
            .map_err(|message| LlbError::BadAttribute { digest, message })?;
        return Ok(Arc::new(source));
    }
    if identifier.starts_with("git://") {
        let source = super::git::GitSource::new(digest.clone(), source, config)
            .map_err(|message| LlbError::BadAttribute { digest, message })?;
        return Ok(Arc::new(source));
    }
    if identifier.starts_with("http://") || identifier.starts_with("https://") {
        let source =
            super::http::HttpSource::new(digest.clone(), source, config).map_err(|message| {
                LlbError::BadAttribute {
                    digest: digest.clone(),
                    message,
                }
            })?;
        return Ok(Arc::new(source));
    }
    if let Some(name) = identifier.strip_prefix("local://") {
        let request = LocalRequest::from_attrs(name, &source.attrs).map_err(|message| {
            LlbError::BadAttribute {
                digest: digest.clone(),
                message,
            }
        })?;
        return Ok(Arc::new(LocalSource {
            digest,
            filter: Arc::new(LocalFilter::new(&request)),
            request,
            config,
            dir: Arc::default(),
            keyed: Arc::default(),
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
    /// How the image is found: the session's options, `image.resolvemode` applied.
    pull: kiln_cache::PullOptions,
    /// `image.layerlimit`: only this many layers, from the bottom.
    layer_limit: Option<usize>,
    /// `image.checksum`: the digest the name must resolve to (an index or a manifest).
    checksum: Option<kiln_cache::Digest>,
    config: Arc<SessionConfig>,
}

impl ImageSource {
    fn new(
        digest: String,
        reference: &str,
        attrs: &std::collections::BTreeMap<String, String>,
        platform: Option<kiln_llb::Platform>,
        config: Arc<SessionConfig>,
    ) -> Result<Self, String> {
        // The op's platform picks the image of an index; without one, the session's.
        let mut pull = match &platform {
            Some(platform) => config.pull.for_platform(platform),
            None => config.pull.clone(),
        };
        match attrs.get("image.resolvemode").map(String::as_str) {
            None | Some("" | "default") => {}
            Some("pull") => pull.prefer_local = false,
            Some("local") => pull.prefer_local = true,
            Some(other) => return Err(format!("invalid resolvemode: {other}")),
        }
        let layer_limit = attrs
            .get("image.layerlimit")
            .map(|v| match v.parse::<usize>() {
                Ok(limit) if limit > 0 => Ok(limit),
                _ => Err(format!("invalid layer limit {v}")),
            })
            .transpose()?;
        let checksum = attrs
            .get("image.checksum")
            .map(|v| {
                v.parse::<kiln_cache::Digest>()
                    .map_err(|_| format!("invalid image checksum {v}"))
            })
            .transpose()?;
        Ok(Self {
            digest,
            reference: reference.to_owned(),
            pull,
            layer_limit,
            checksum,
            config,
        })
    }
}

/// The snapshot of an image's first `limit` layers (all of them without a limit); `None` for
/// an image without layers.
fn image_top(image: &kiln_cache::ImageRecord, limit: Option<usize>) -> Option<Ref> {
    let count = limit.map_or(image.diff_ids.len(), |l| l.min(image.diff_ids.len()));
    if count == image.diff_ids.len() {
        return image.chain_id.map(|c| Ref::snapshot(c.to_string()));
    }
    let mut chain = None;
    for diff_id in &image.diff_ids[..count] {
        chain = Some(kiln_cache::chain_id(chain.as_ref(), diff_id));
    }
    chain.map(|c| Ref::snapshot(c.to_string()))
}

/// Runs a registry call on a runtime of its own on the blocking pool: the registry client's
/// futures are not `Send` (a closure in them borrows across an await).
async fn on_own_runtime<T, F>(call: impl FnOnce() -> F + Send + 'static) -> Result<T, Error>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, kiln_cache::Error>>,
{
    blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(call())?)
    })
    .await
}

/// Says in the image vertex's output when the stored image stands in for a tag that no
/// registry could check.
/// Pull progress as the phases (and store fallback warnings) of the vertex pulling.
pub(super) struct VertexLog(pub(super) OpContext);

impl kiln_cache::PullProgress for VertexLog {
    fn event(&self, event: kiln_cache::PullEvent) {
        match event {
            kiln_cache::PullEvent::StoreFallback { reference, reason } => {
                let line = format!(
                    "could not check {reference} against its registry ({reason}); using the image in the store\n"
                );
                self.0.log(2, line.as_bytes());
            }
            kiln_cache::PullEvent::StageDone {
                stage,
                started,
                bytes,
            } => {
                let name = match stage {
                    kiln_cache::PullStage::Download => "pull",
                    kiln_cache::PullStage::Unpack => "unpack",
                };
                self.0.phase_ended(name, started, Some(bytes));
            }
            _ => {}
        }
    }
}

/// An image's lineage: its name, whatever digest it resolves to, so that a miss after the
/// image moved names the old and new digests.
fn image_lineage(name: &str, digest: &str) -> crate::Lineage {
    crate::Lineage {
        id: kiln_llb::Digest::from_bytes(format!("image\n{name}").as_bytes()).to_string(),
        facts: vec![crate::Fact::Image {
            reference: name.to_owned(),
            digest: digest.to_owned(),
        }],
    }
}

impl Op<Ref> for ImageSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        // A reference with a digest is keyed by the op digest. A tag is keyed by what it
        // points to now, as BuildKit keys it: the registry's answer to a manifest `HEAD`, or,
        // when no registry answers, the image stored under the name; so a moved tag is seen.
        if let Some((name, pinned)) = self.reference.split_once('@') {
            let map = CacheMap {
                outline: None,
                digest: self.digest.clone(),
                deps: Vec::new(),
                lineage: Some(image_lineage(name, pinned)),
            };
            return async move { Ok(map) }.boxed();
        }
        let (digest, reference) = (self.digest.clone(), self.reference.clone());
        let (pull, config) = (self.pull.clone(), self.config.clone());
        async move {
            let resolved = {
                let reference = reference.clone();
                on_own_runtime(move || async move {
                    kiln_cache::resolve_digest(&reference, &pull).await
                })
                .await
            };
            let resolved = match resolved {
                Ok(resolved) => Some(resolved),
                Err(_) => match kiln_cache::parse_reference(&reference) {
                    Ok(name) => config
                        .store
                        .image(&name.whole())
                        .map_err(Error::from)?
                        .map(|image| image.index.unwrap_or_else(|| image.id())),
                    Err(_) => None,
                },
            };
            let lineage = resolved
                .as_ref()
                .map(|resolved| image_lineage(&reference, &resolved.to_string()));
            let key = match resolved {
                Some(resolved) => {
                    kiln_llb::Digest::from_bytes(format!("{digest}\n{resolved}").as_bytes())
                        .to_string()
                }
                None => digest,
            };
            Ok(CacheMap {
                outline: None,
                lineage,
                digest: key,
                deps: Vec::new(),
            })
        }
        .boxed()
    }

    fn exec(&self, ctx: OpContext, _: Vec<Ref>) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let config = self.config.clone();
        let reference = self.reference.clone();
        let pull = self.pull.clone();
        let (layer_limit, checksum) = (self.layer_limit, self.checksum);
        async move {
            let pulled = {
                let reference = reference.clone();
                on_own_runtime(move || async move {
                    kiln_cache::pull(config.store.clone(), &reference, &pull, &VertexLog(ctx)).await
                })
                .await?
            };
            if let Some(expected) = checksum {
                // What the name resolved to: the index when it named one, else the manifest.
                let resolved = pulled.image.index.unwrap_or(pulled.image.manifest);
                if resolved != expected {
                    return Err(Error::ImageChecksum {
                        reference,
                        resolved: resolved.to_string(),
                        expected: expected.to_string(),
                    }
                    .into());
                }
            }
            let top = image_top(&pulled.image, layer_limit);
            Ok(vec![top.unwrap_or_else(Ref::scratch)])
        }
        .boxed()
    }
}

/// `local://NAME`: a directory given to the build, copied into a snapshot.
struct LocalSource {
    digest: String,
    request: LocalRequest,
    filter: Arc<LocalFilter>,
    config: Arc<SessionConfig>,
    /// The directory, once found (or received from the client: once per build).
    dir: Arc<tokio::sync::OnceCell<PathBuf>>,
    /// What keying the source found: the selection (so the copy does not walk the directory
    /// again) and the file checksums, for its result's content keys.
    keyed: Arc<Mutex<Option<Keyed>>>,
}

/// The selection of a local source and its file checksums, found while keying it.
struct Keyed {
    selected: Vec<Selected>,
    checksums: FileChecksums,
}

impl LocalSource {
    /// The directory: given up front by name, else brought by the session's [`LocalDirs`].
    fn dir(&self) -> BoxFuture<'static, Result<PathBuf, Error>> {
        let request = self.request.clone();
        let config = self.config.clone();
        let dir = self.dir.clone();
        async move {
            let found = dir
                .get_or_try_init(|| async {
                    if let Some(dir) = config.locals.get(&request.name) {
                        return Ok(dir.clone());
                    }
                    let Some(local_dirs) = &config.local_dirs else {
                        return Err(Error::NoLocalDirectory {
                            name: request.name.clone(),
                        });
                    };
                    let name = request.name.clone();
                    local_dirs
                        .sync(request)
                        .await
                        .map_err(|source| Error::LocalSync { name, source })
                })
                .await?;
            Ok(found.clone())
        }
        .boxed()
    }
}

impl Op<Ref> for LocalSource {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        super::definition_map(&self.digest, 0)
    }

    /// A checksum of exactly the selected files: the same files under another name or
    /// other attributes hit the same cache.
    fn content_key(
        &self,
        ctx: OpContext,
    ) -> BoxFuture<'static, Result<Option<SourceContent>, OpError>> {
        let dir = self.dir();
        let filter = self.filter.clone();
        let store = self.config.store.clone();
        let keyed = self.keyed.clone();
        async move {
            let dir = dir.await?;
            let mut phase = ctx.phase("checksum");
            let content = blocking(move || {
                let selected = filter.select(&dir)?;
                phase.bytes(file_bytes(&selected));
                let mut cache = ChecksumCache::load(store.root(), &dir);
                let digest = tree_digest(&dir, &selected, &mut cache)?;
                let (changed, change) = cache.first_change_detail(&selected).unzip();
                let saved = store
                    .scratch_dir()
                    .map_err(std::io::Error::other)
                    .and_then(|scratch| cache.save(&selected, &scratch));
                if let Err(e) = saved {
                    tracing::warn!(error = %e, "saving the checksum cache");
                }
                *keyed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Keyed {
                    selected,
                    checksums: cache.entries,
                });
                Ok(SourceContent {
                    digest,
                    changed,
                    change,
                })
            })
            .await?;
            Ok(Some(content))
        }
        .boxed()
    }

    fn exec(&self, ctx: OpContext, _: Vec<Ref>) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let dir = self.dir();
        let store = self.config.store.clone();
        let filter = self.filter.clone();
        let keyed = self.keyed.clone();
        async move {
            let dir = dir.await?;
            let mut phase = ctx.phase("transfer");
            Ok(blocking(move || {
                let keyed = keyed.lock().unwrap_or_else(PoisonError::into_inner).take();
                let (selected, checksums) = match keyed {
                    Some(Keyed {
                        selected,
                        checksums,
                    }) => (selected, Some(checksums)),
                    None => (filter.select(&dir)?, None),
                };
                phase.bytes(file_bytes(&selected));
                let reuse = checksums.as_ref().and_then(|checksums| {
                    LastSnapshot::load(store.root(), &dir)?.reuse(&store, &selected, checksums)
                });
                let result = snapshot_from_dir(&store, &dir, &selected, "local", reuse.as_ref())?;
                if let (Some(checksums), Some(key)) = (checksums, result.key()) {
                    let saved =
                        store
                            .scratch_dir()
                            .map_err(std::io::Error::other)
                            .and_then(|scratch| {
                                let root = store.root();
                                LastSnapshot::save(root, &dir, key, &selected, &checksums, &scratch)
                            });
                    if let Err(e) = saved {
                        tracing::warn!(error = %e, "saving the local source's last snapshot");
                    }
                    let known = known_files(&selected, &checksums);
                    super::checksum::remember(store.committed_dir(key)?, known);
                }
                Ok(vec![result])
            })
            .await?)
        }
        .boxed()
    }
}

/// The bytes of the selected regular files.
fn file_bytes(selected: &[Selected]) -> u64 {
    selected
        .iter()
        .filter(|e| e.meta.is_file())
        .map(|e| e.meta.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_limit_takes_the_snapshot_of_the_bottom_layers() {
        let diff_ids: Vec<kiln_cache::Digest> = (0..3u8)
            .map(|i| kiln_cache::Digest::from_bytes(&[i]))
            .collect();
        let chains: Vec<kiln_cache::Digest> = diff_ids
            .iter()
            .scan(None, |parent: &mut Option<kiln_cache::Digest>, d| {
                let chain = kiln_cache::chain_id(parent.as_ref(), d);
                *parent = Some(chain);
                Some(chain)
            })
            .collect();
        let image = kiln_cache::ImageRecord {
            name: "docker.io/library/layers:latest".into(),
            manifest: kiln_cache::Digest::from_bytes(b"manifest"),
            manifest_media_type: String::new(),
            index: None,
            config: kiln_cache::Digest::from_bytes(b"config"),
            layers: diff_ids.clone(),
            diff_ids,
            chain_id: Some(chains[2]),
            size: 0,
            created: None,
            last_used: 0,
            pending: None,
            config_id: false,
        };
        let key = |r: Option<Ref>| r.and_then(|r| r.key().map(str::to_owned));
        let chain = |i: usize| Some(chains[i].to_string());
        assert_eq!(key(image_top(&image, None)), chain(2));
        assert_eq!(key(image_top(&image, Some(1))), chain(0));
        assert_eq!(key(image_top(&image, Some(2))), chain(1));
        assert_eq!(key(image_top(&image, Some(9))), chain(2));
        let empty = kiln_cache::ImageRecord {
            layers: Vec::new(),
            diff_ids: Vec::new(),
            chain_id: None,
            ..image
        };
        assert_eq!(key(image_top(&empty, Some(1))), None);
    }

    #[test]
    fn resolve_modes_choose_between_the_store_and_the_registry() {
        let store = tempfile::tempdir().unwrap();
        let mut config = crate::llbsolver::tests::session(store.path(), &[])
            .config()
            .clone();
        let prefer_local = |config: &Arc<SessionConfig>, mode: &str| {
            let attrs = [("image.resolvemode".to_owned(), mode.to_owned())].into();
            ImageSource::new(String::new(), "busybox", &attrs, None, config.clone())
                .unwrap()
                .pull
                .prefer_local
        };
        assert!(!prefer_local(&config, "default"));
        assert!(!prefer_local(&config, "pull"));
        assert!(prefer_local(&config, "local"));
        Arc::get_mut(&mut config).unwrap().pull.prefer_local = true;
        assert!(prefer_local(&config, "default"));
        assert!(!prefer_local(&config, "pull"));
    }
}
