//! Source ops: images from a registry and local directories.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;
use sha2::{Digest as _, Sha256};

use super::checksum::KnownFiles;
use super::local::{LocalFilter, LocalRequest, Selected};
use super::{LlbError, Ref, SessionConfig, blocking, snapshot_from_dir};
use crate::error::Error;
use crate::history::FileChange;
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

/// File checksums of a local directory with the stat they were taken at, by relative path.
type FileChecksums = HashMap<PathBuf, (StatKey, [u8; 32])>;

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
                let result = snapshot_from_dir(&store, &dir, &selected, "local")?;
                if let (Some(checksums), Some(key)) = (checksums, result.key()) {
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

/// The checksums of the selected files that still have the stat they were hashed at: the
/// files of the snapshot made from `selected`, which a copy from it need not read again.
fn known_files(selected: &[Selected], checksums: &FileChecksums) -> KnownFiles {
    let mut known = KnownFiles::default();
    for entry in selected.iter().filter(|e| e.meta.is_file()) {
        if let Some((stat, sha)) = checksums.get(&entry.path) {
            if *stat == StatKey::of(&entry.meta) {
                known.insert(entry.path.clone(), entry.meta.len(), *sha);
            }
        }
    }
    known
}

/// What identifies a file's content without reading it: if none of these changed, neither did
/// the content (the checksum cache's validity rule, as git's index uses).
#[derive(Clone, Copy, PartialEq, Eq)]
struct StatKey {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    /// `st_mode` (0: not known, in a cache written before modes were kept).
    mode: u32,
}

impl StatKey {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            inode: meta.ino(),
            mode: meta.mode(),
        }
    }
}

/// The first line of a checksum cache that keeps each file's mode (before the path); a
/// cache without it is read with modes unknown, and rewritten with them.
const CHECKSUMS_HEADER: &[u8] = b"kiln-checksums 2\n";

/// A file's size and the sha256 of its content.
type SizedDigest = (u64, [u8; 32]);

/// File checksums of one local directory from earlier builds, keyed by relative path. Kept in
/// the store as [`CHECKSUMS_HEADER`] and lines `size mtime ctime inode sha256 mode path` (the
/// mode in octal, the path as the directory's own bytes, which need not be UTF-8).
struct ChecksumCache {
    file: PathBuf,
    entries: FileChecksums,
    changed: bool,
    /// The first file found with content other than cached, or not cached at all: its
    /// path, its size and digest before (if cached) and now.
    first_changed: Option<(PathBuf, Option<SizedDigest>, SizedDigest)>,
    /// The first file found with the content cached but another mode: its path, its mode
    /// before and now.
    first_mode_changed: Option<(PathBuf, u32, u32)>,
    /// Whether it held anything when loaded (there is something to compare with).
    loaded_any: bool,
}

impl ChecksumCache {
    fn load(store_root: &Path, dir: &Path) -> Self {
        let name = hex::encode(Sha256::digest(dir.as_os_str().as_encoded_bytes()));
        let file = store_root.join("local-checksums").join(name);
        let mut entries = HashMap::new();
        if let Ok(bytes) = fs_err::read(&file) {
            let (with_modes, bytes) = match bytes.strip_prefix(CHECKSUMS_HEADER) {
                Some(rest) => (true, rest),
                None => (false, bytes.as_slice()),
            };
            for line in bytes.split(|&b| b == b'\n') {
                let mut fields = line.splitn(if with_modes { 7 } else { 6 }, |&b| b == b' ');
                let mut next = || fields.next();
                let parsed = (|| {
                    let mut number = || std::str::from_utf8(next()?).ok();
                    let mut key = StatKey {
                        size: number()?.parse().ok()?,
                        mtime_ns: number()?.parse().ok()?,
                        ctime_ns: number()?.parse().ok()?,
                        inode: number()?.parse().ok()?,
                        mode: 0,
                    };
                    let digest: [u8; 32] = hex::decode(next()?).ok()?.try_into().ok()?;
                    if with_modes {
                        let mode = std::str::from_utf8(next()?).ok()?;
                        key.mode = u32::from_str_radix(mode, 8).ok()?;
                    }
                    let path = next().filter(|p| !p.is_empty())?;
                    Some((PathBuf::from(OsStr::from_bytes(path)), (key, digest)))
                })();
                if let Some((path, entry)) = parsed {
                    entries.insert(path, entry);
                }
            }
        }
        Self {
            file,
            loaded_any: !entries.is_empty(),
            entries,
            changed: false,
            first_changed: None,
            first_mode_changed: None,
        }
    }

    /// The sha256 of a file's content, from the cache when its stat is unchanged.
    fn checksum(
        &mut self,
        rel: &Path,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> std::io::Result<[u8; 32]> {
        let key = StatKey::of(meta);
        let before = self.entries.get(rel).copied();
        if let Some((cached, digest)) = before {
            if cached == key {
                return Ok(digest);
            }
        }
        let mut hasher = Sha256::new();
        std::io::copy(&mut fs_err::File::open(path)?, &mut hasher)?;
        let digest: [u8; 32] = hasher.finalize().into();
        if before.is_none_or(|(_, old)| old != digest) && self.first_changed.is_none() {
            let before = before.map(|(cached, old)| (cached.size, old));
            self.first_changed = Some((rel.to_owned(), before, (key.size, digest)));
        }
        if let Some((cached, old)) = before {
            let mode_changed = cached.mode != 0 && cached.mode != key.mode;
            if old == digest && mode_changed && self.first_mode_changed.is_none() {
                self.first_mode_changed = Some((rel.to_owned(), cached.mode, key.mode));
            }
        }
        // Paths with line breaks are hashed every time rather than stored.
        if !rel.as_os_str().as_bytes().contains(&b'\n') {
            self.entries.insert(rel.to_owned(), (key, digest));
            self.changed = true;
        }
        Ok(digest)
    }

    /// The path of [`ChecksumCache::first_change_detail`].
    #[cfg(test)]
    fn first_change(&self, selected: &[Selected]) -> Option<String> {
        self.first_change_detail(selected).map(|(path, _)| path)
    }

    /// A file that changed since the cache was written, and how: the first whose content
    /// differs or that is new, else the first that is gone from `selected`, else the first
    /// whose mode changed. `None` for a first build.
    fn first_change_detail(&self, selected: &[Selected]) -> Option<(String, FileChange)> {
        let sha256 = |digest: &[u8; 32]| format!("sha256:{}", hex::encode(digest));
        if !self.loaded_any {
            return None;
        }
        if let Some((path, before, (size, digest))) = &self.first_changed {
            let change = match before {
                Some((old_size, old)) => FileChange::Modified {
                    old_size: *old_size,
                    new_size: *size,
                    old_sha256: sha256(old),
                    new_sha256: sha256(digest),
                },
                None => FileChange::Added {
                    size: *size,
                    sha256: sha256(digest),
                },
            };
            return Some((path.display().to_string(), change));
        }
        let now: std::collections::HashSet<&Path> =
            selected.iter().map(|s| s.path.as_path()).collect();
        let mut gone: Vec<&PathBuf> = self
            .entries
            .keys()
            .filter(|p| !now.contains(p.as_path()))
            .collect();
        gone.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        let Some(path) = gone.first() else {
            let (path, old_mode, new_mode) = self.first_mode_changed.as_ref()?;
            return Some((
                path.display().to_string(),
                FileChange::ModeChanged {
                    old_mode: *old_mode,
                    new_mode: *new_mode,
                },
            ));
        };
        let (key, digest) = self.entries.get(*path)?;
        Some((
            path.display().to_string(),
            FileChange::Removed {
                size: key.size,
                sha256: sha256(digest),
            },
        ))
    }

    /// Writes the cache back (atomically, through a temporary file in `scratch`, this
    /// process's scratch directory of the store, which garbage collection clears if the
    /// process is killed) if anything was added; keeps only `keep`'s paths.
    fn save(&mut self, keep: &[Selected], scratch: &Path) -> std::io::Result<()> {
        let before = self.entries.len();
        let keep: std::collections::HashSet<&Path> =
            keep.iter().map(|s| s.path.as_path()).collect();
        self.entries.retain(|path, _| keep.contains(path.as_path()));
        if !self.changed && self.entries.len() == before {
            return Ok(());
        }
        let mut text = CHECKSUMS_HEADER.to_vec();
        for (path, (key, digest)) in &self.entries {
            text.extend_from_slice(
                format!(
                    "{} {} {} {} {} {:o} ",
                    key.size,
                    key.mtime_ns,
                    key.ctime_ns,
                    key.inode,
                    hex::encode(digest),
                    key.mode
                )
                .as_bytes(),
            );
            text.extend_from_slice(path.as_os_str().as_bytes());
            text.push(b'\n');
        }
        let parent = self.file.parent().unwrap_or(Path::new("."));
        fs_err::create_dir_all(parent)?;
        let temp = tempfile::NamedTempFile::new_in(scratch)?;
        fs_err::write(temp.path(), text)?;
        temp.persist(&self.file).map_err(|e| e.error)?;
        Ok(())
    }
}

/// A digest of the selected paths of a directory: names, types, modes, link targets and file
/// contents (file checksums come from `cache` when the file's stat is unchanged).
fn tree_digest(
    root: &Path,
    selected: &[Selected],
    cache: &mut ChecksumCache,
) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut hasher = Sha256::new();
    for entry in selected {
        let path = root.join(&entry.path);
        let meta = &entry.meta;
        hasher.update(entry.path.as_os_str().as_bytes());
        hasher.update([0]);
        hasher.update(meta.mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            hasher.update(fs_err::read_link(&path)?.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            hasher.update(cache.checksum(&entry.path, &path, meta)?);
        }
        hasher.update([0]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_all(dir: &Path) -> Vec<Selected> {
        LocalFilter::default().select(dir).unwrap()
    }

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

    #[test]
    fn tree_digest_reuses_checksums_of_unchanged_files_and_sees_changes() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        let file = context.path().join("a");
        fs_err::write(&file, "one").unwrap();
        fs_err::write(context.path().join("b"), "bee").unwrap();

        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        let first = tree_digest(context.path(), &selected, &mut cache).unwrap();
        cache.save(&selected, store.path()).unwrap();

        // A reloaded cache answers for files whose stat is unchanged: poison its entry for
        // `a` and the digest follows the poisoned value, proving the file was not read.
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(
            tree_digest(context.path(), &selected, &mut cache).unwrap(),
            first
        );
        cache.entries.get_mut(Path::new("a")).unwrap().1 = [7; 32];
        assert_ne!(
            tree_digest(context.path(), &selected, &mut cache).unwrap(),
            first
        );

        // Same size, new content: the stat changes (ctime, and mtime set apart), so it is hashed.
        let mut cache = ChecksumCache::load(store.path(), context.path());
        fs_err::write(&file, "two").unwrap();
        filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(1, 0)).unwrap();
        let second = tree_digest(context.path(), &select_all(context.path()), &mut cache).unwrap();
        assert_ne!(second, first);
        fs_err::write(&file, "one").unwrap();
        let third = tree_digest(context.path(), &select_all(context.path()), &mut cache).unwrap();
        assert_eq!(third, first);
    }

    #[test]
    fn the_first_changed_added_or_removed_file_is_named() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            fs_err::write(context.path().join(name), name).unwrap();
        }
        let change = |cache: &mut ChecksumCache| {
            let selected = select_all(context.path());
            tree_digest(context.path(), &selected, cache).unwrap();
            cache.first_change(&selected)
        };
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache), None, "nothing to compare with");
        cache
            .save(&select_all(context.path()), store.path())
            .unwrap();

        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache), None, "nothing changed");
        fs_err::write(context.path().join("b"), "bee").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        let sha256 = |text: &str| format!("sha256:{}", hex::encode(Sha256::digest(text)));
        assert_eq!(
            cache.first_change_detail(&selected),
            Some((
                "b".to_owned(),
                FileChange::Modified {
                    old_size: 1,
                    new_size: 3,
                    old_sha256: sha256("b"),
                    new_sha256: sha256("bee"),
                }
            ))
        );
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache).as_deref(), Some("b"));
        // Touched but equal content is no change.
        let mut cache = ChecksumCache::load(store.path(), context.path());
        fs_err::write(context.path().join("b"), "b").unwrap();
        filetime::set_file_mtime(
            context.path().join("b"),
            filetime::FileTime::from_unix_time(5, 0),
        )
        .unwrap();
        assert_eq!(change(&mut cache), None);
        cache
            .save(&select_all(context.path()), store.path())
            .unwrap();

        // Only the mode changes: it says so.
        use std::os::unix::fs::PermissionsExt as _;
        let c = context.path().join("c");
        fs_err::set_permissions(&c, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        let Some((path, FileChange::ModeChanged { old_mode, new_mode })) =
            cache.first_change_detail(&selected)
        else {
            panic!("{:?}", cache.first_change_detail(&selected));
        };
        assert_eq!(path, "c");
        assert_ne!(old_mode & 0o777, 0o700);
        assert_eq!(new_mode & 0o777, 0o700);
        cache
            .save(&select_all(context.path()), store.path())
            .unwrap();

        fs_err::remove_file(context.path().join("a")).unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache).as_deref(), Some("a"), "a is gone");
        fs_err::write(context.path().join("d"), "d").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(change(&mut cache).as_deref(), Some("d"), "d is new");
    }

    #[test]
    fn a_cache_without_modes_is_read_and_rewritten_with_them() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join("a"), "a").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        cache.save(&selected, store.path()).unwrap();
        // As an older version wrote it: no header, no mode.
        let file = cache.file.clone();
        let text = fs_err::read(&file).unwrap();
        let line = text.strip_prefix(CHECKSUMS_HEADER).unwrap();
        let fields: Vec<&[u8]> = line.splitn(7, |&b| b == b' ').collect();
        let old = [&fields[..5], &fields[6..]].concat().join(&b' ');
        fs_err::write(&file, &old).unwrap();

        let mut cache = ChecksumCache::load(store.path(), context.path());
        let (_, (key, _)) = cache.entries.iter().next().unwrap();
        assert_eq!(key.mode, 0, "not known");
        tree_digest(context.path(), &selected, &mut cache).unwrap();
        assert_eq!(
            cache.first_change_detail(&selected),
            None,
            "nothing changed"
        );
        cache.save(&selected, store.path()).unwrap();
        assert!(fs_err::read(&file).unwrap().starts_with(CHECKSUMS_HEADER));
        let cache = ChecksumCache::load(store.path(), context.path());
        let (_, (key, _)) = cache.entries.iter().next().unwrap();
        assert_ne!(key.mode, 0);
    }

    #[test]
    fn names_that_are_not_utf8_count_as_their_bytes() {
        use std::os::unix::ffi::OsStrExt as _;
        let name = |bytes: &[u8]| PathBuf::from(OsStr::from_bytes(bytes));
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join(name(b"a\xff")), "same").unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        assert_eq!(selected[0].path, name(b"a\xff"));
        let before = tree_digest(context.path(), &selected, &mut cache).unwrap();
        cache.save(&selected, store.path()).unwrap();

        // The cache file keeps the name's bytes: it loads back under the same name.
        let cache = ChecksumCache::load(store.path(), context.path());
        assert_eq!(cache.entries.keys().collect::<Vec<_>>(), [&name(b"a\xff")]);

        // `a\xfe` reads as `a\u{fffd}` too when converted lossily; its digest differs.
        fs_err::rename(
            context.path().join(name(b"a\xff")),
            context.path().join(name(b"a\xfe")),
        )
        .unwrap();
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let selected = select_all(context.path());
        let after = tree_digest(context.path(), &selected, &mut cache).unwrap();
        assert_ne!(after, before);
        assert_eq!(cache.first_change(&selected).as_deref(), Some("a\u{fffd}"));
    }

    #[test]
    fn unselected_files_do_not_change_the_digest() {
        let store = tempfile::tempdir().unwrap();
        let context = tempfile::tempdir().unwrap();
        fs_err::write(context.path().join("wanted"), "w").unwrap();
        fs_err::write(context.path().join("other"), "1").unwrap();
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("local.followpaths".to_owned(), r#"["wanted"]"#.to_owned());
        let filter = LocalFilter::from_attrs(&attrs).unwrap();
        let digest = |cache: &mut ChecksumCache| {
            tree_digest(
                context.path(),
                &filter.select(context.path()).unwrap(),
                cache,
            )
            .unwrap()
        };
        let mut cache = ChecksumCache::load(store.path(), context.path());
        let before = digest(&mut cache);
        fs_err::write(context.path().join("other"), "2").unwrap();
        assert_eq!(digest(&mut cache), before);
        fs_err::write(context.path().join("wanted"), "W").unwrap();
        assert_ne!(digest(&mut cache), before);
    }
}
