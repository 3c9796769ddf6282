//! Merge and diff ops: stacking the layers of several results, and the layers between two.
//!
//! # Overview
//!
//! A result is a chain of overlay layer directories (see `Ref::lowers`). The store's
//! snapshots have one parent each, so a merge cannot share the layers of every input:
//!
//! 1. MergeOp: scratch inputs are dropped; one input left is returned as is. Otherwise the
//!    output is a new snapshot on the first input, with the layers of each later input applied
//!    in order, bottom layer first: overlay whiteouts delete, opaque directories replace, and
//!    everything else is copied with its metadata.
//! 2. DiffOp: when `lower`'s chain is the bottom of `upper`'s chain, the output is a new
//!    snapshot holding the layers of `upper` above `lower`, squashed into one with their
//!    whiteouts kept, so merging it onto another base deletes what `upper` deleted.

use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use filetime::FileTime;
use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;

use super::view::{View, with_views};
use super::{Ref, SessionConfig, blocking, new_snapshot_key, scratch_dir};
use crate::scheduler::{CacheDep, CacheMap, Op, OpContext, OpError};

/// The xattr overlayfs uses to mark a directory that hides the layers below it.
const OPAQUE: &str = "trusted.overlay.opaque";

/// `merge`: the inputs' file systems stacked in order.
pub(super) struct MergeOp {
    digest: String,
    inputs: usize,
    merge: pb::MergeOp,
    config: Arc<SessionConfig>,
}

impl MergeOp {
    pub(super) fn new(
        digest: String,
        inputs: usize,
        merge: pb::MergeOp,
        config: Arc<SessionConfig>,
    ) -> Self {
        Self {
            digest,
            inputs,
            merge,
            config,
        }
    }
}

/// `diff`: what changed from `lower` to `upper`.
pub(super) struct DiffOp {
    digest: String,
    inputs: usize,
    diff: pb::DiffOp,
    config: Arc<SessionConfig>,
}

impl DiffOp {
    pub(super) fn new(
        digest: String,
        inputs: usize,
        diff: pb::DiffOp,
        config: Arc<SessionConfig>,
    ) -> Self {
        Self {
            digest,
            inputs,
            diff,
            config,
        }
    }
}

fn definition_map(
    digest: &str,
    inputs: usize,
) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
    let map = CacheMap {
        digest: digest.to_owned(),
        deps: (0..inputs).map(|_| CacheDep::definition()).collect(),
    };
    async move { Ok(map) }.boxed()
}

fn input_ref(inputs: &[Ref], index: i64) -> Result<Ref, OpError> {
    if index < 0 {
        return Ok(Ref::scratch());
    }
    usize::try_from(index)
        .ok()
        .and_then(|i| inputs.get(i).cloned())
        .ok_or_else(|| format!("refers to input {index}, which does not exist").into())
}

impl Op<Ref> for MergeOp {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        definition_map(&self.digest, self.inputs)
    }

    fn exec(
        &self,
        _: OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let config = self.config.clone();
        let merge = self.merge.clone();
        async move {
            let refs = merge
                .inputs
                .iter()
                .map(|i| input_ref(&inputs, i.input))
                .filter(|r| !r.as_ref().is_ok_and(|r| r.key().is_none()))
                .collect::<Result<Vec<Ref>, OpError>>()?;
            let result = blocking(move || merge_refs(&config, &refs)).await?;
            Ok(vec![result])
        }
        .boxed()
    }
}

impl Op<Ref> for DiffOp {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        definition_map(&self.digest, self.inputs)
    }

    fn exec(
        &self,
        _: OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let config = self.config.clone();
        let diff = self.diff;
        async move {
            let lower = input_ref(&inputs, diff.lower.map_or(-1, |l| l.input))?;
            let upper = input_ref(&inputs, diff.upper.map_or(-1, |u| u.input))?;
            let result = blocking(move || diff_refs(&config, &lower, &upper)).await?;
            Ok(vec![result])
        }
        .boxed()
    }
}

/// Stacks non-scratch results in order.
fn merge_refs(config: &SessionConfig, refs: &[Ref]) -> Result<Ref, OpError> {
    let Some((base, rest)) = refs.split_first() else {
        return Ok(Ref::scratch());
    };
    if rest.is_empty() {
        return Ok(base.clone());
    }
    let store = &config.store;
    let mut layers = Vec::new();
    for r in rest {
        let mut lowers = r.lowers(store)?;
        lowers.reverse(); // bottom first
        layers.extend(lowers);
    }
    new_snapshot_with(config, base, "merge", |root| {
        for layer in &layers {
            apply_layer(layer, root, false)?;
        }
        Ok(())
    })
}

/// The layers of `upper` above `lower`, squashed into one.
fn diff_refs(config: &SessionConfig, lower: &Ref, upper: &Ref) -> Result<Ref, OpError> {
    let store = &config.store;
    let lower_layers = lower.lowers(store)?;
    let upper_layers = upper.lowers(store)?;
    if lower == upper {
        return Ok(Ref::scratch());
    }
    if !upper_layers.ends_with(&lower_layers) {
        return Err(format!(
            "a diff whose lower ({}) is not below its upper ({}) is not supported yet",
            lower.key().unwrap_or("scratch"),
            upper.key().unwrap_or("scratch")
        )
        .into());
    }
    let mut above = upper_layers[..upper_layers.len() - lower_layers.len()].to_vec();
    if above.is_empty() {
        return Ok(Ref::scratch());
    }
    above.reverse(); // bottom first
    new_snapshot_with(config, &Ref::scratch(), "diff", |root| {
        for layer in &above {
            apply_layer(layer, root, true)?;
        }
        Ok(())
    })
}

/// Prepares a snapshot on `base`, runs `work` on its merged tree, and commits it.
fn new_snapshot_with(
    config: &SessionConfig,
    base: &Ref,
    prefix: &str,
    work: impl FnOnce(&Path) -> io::Result<()> + Send,
) -> Result<Ref, OpError> {
    let store = &config.store;
    let active = new_snapshot_key("active");
    let mounts = store.prepare(&active, base.key())?;
    let view = View {
        lowers: mounts.lowers.clone(),
        writable: Some((mounts.upper.clone(), mounts.work.clone())),
    };
    let outcome = with_views(&scratch_dir(store)?, &[view], |points| work(&points[0]));
    if let Err(e) = outcome.and_then(|r| r) {
        let _ = store.remove_snapshot(&active);
        return Err(e.into());
    }
    let key = new_snapshot_key(prefix);
    store.commit(&active, &key)?;
    Ok(Ref::snapshot(key))
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    matches!(xattr::get(dir, OPAQUE), Ok(Some(v)) if v == b"y")
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs_err::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(path),
        Ok(_) => fs_err::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies the overlay layer directory `layer` onto the tree at `dest`. With `keep_whiteouts`
/// (`dest` is itself a layer directory), whiteouts and opaque markers are written, not applied.
fn apply_layer(layer: &Path, dest: &Path, keep_whiteouts: bool) -> io::Result<()> {
    let mut names: Vec<_> = fs_err::read_dir(layer)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let src = layer.join(&name);
        let dst = dest.join(&name);
        let meta = fs_err::symlink_metadata(&src)?;
        if is_whiteout(&meta) {
            remove_any(&dst)?;
            if keep_whiteouts {
                make_node(&src, &dst, &meta)?;
                finish(&src, &dst, &meta, true)?;
            }
            continue;
        }
        let existing = fs_err::symlink_metadata(&dst).ok();
        if meta.is_dir() {
            let keep_existing = existing.as_ref().is_some_and(|e| e.is_dir()) && !is_opaque(&src);
            if !keep_existing {
                remove_any(&dst)?;
                fs_err::create_dir(&dst)?;
            }
            apply_layer(&src, &dst, keep_whiteouts)?;
        } else {
            if existing.is_some() {
                remove_any(&dst)?;
            }
            let ft = meta.file_type();
            if ft.is_symlink() {
                std::os::unix::fs::symlink(fs_err::read_link(&src)?, &dst)?;
            } else if ft.is_file() {
                fs_err::copy(&src, &dst)?;
            } else {
                make_node(&src, &dst, &meta)?;
            }
        }
        finish(&src, &dst, &meta, keep_whiteouts)?;
    }
    Ok(())
}

fn make_node(_src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode());
    let perm = nix::sys::stat::Mode::from_bits_truncate(meta.mode());
    nix::sys::stat::mknod(dst, kind, perm, meta.rdev()).map_err(io::Error::from)
}

/// Owner, mode, xattrs and times of an applied entry. Overlay's own xattrs are copied only
/// into a layer directory.
fn finish(src: &Path, dst: &Path, meta: &std::fs::Metadata, keep_overlay: bool) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs_err::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        if let Ok(names) = xattr::list(src) {
            for name in names {
                let overlay = name.to_string_lossy().starts_with("trusted.overlay.");
                if overlay && !keep_overlay {
                    continue;
                }
                if let Ok(Some(value)) = xattr::get(src, &name) {
                    xattr::set(dst, &name, &value)?;
                }
            }
        }
    }
    filetime::set_symlink_file_times(
        dst,
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn skip_unless_root() -> bool {
        if is_root() {
            return false;
        }
        assert!(
            std::env::var_os("KILN_TEST_REQUIRE_ALL").is_none(),
            "applying layers with whiteouts needs root"
        );
        #[expect(clippy::print_stderr, reason = "a skipped test says why")]
        {
            eprintln!("skipped: applying layers with whiteouts needs root");
        }
        true
    }

    fn whiteout(path: &Path) {
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn applying_a_layer_deletes_whiteouts_replaces_opaque_dirs_and_copies_the_rest() {
        if skip_unless_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (layer, dest) = (d.path().join("layer"), d.path().join("dest"));
        for p in [&layer, &dest] {
            fs_err::create_dir(p).unwrap();
        }
        fs_err::write(dest.join("gone"), "old").unwrap();
        fs_err::write(dest.join("kept"), "old").unwrap();
        fs_err::create_dir_all(dest.join("opaque/inner")).unwrap();
        fs_err::create_dir_all(dest.join("merged")).unwrap();
        fs_err::write(dest.join("merged/old"), "old").unwrap();

        whiteout(&layer.join("gone"));
        fs_err::create_dir(layer.join("opaque")).unwrap();
        xattr::set(layer.join("opaque"), OPAQUE, b"y").unwrap();
        fs_err::write(layer.join("opaque/new"), "n").unwrap();
        fs_err::create_dir(layer.join("merged")).unwrap();
        fs_err::write(layer.join("merged/new"), "n").unwrap();
        fs_err::set_permissions(
            layer.join("merged/new"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("kept", layer.join("link")).unwrap();

        apply_layer(&layer, &dest, false).unwrap();
        assert_eq!(names(&dest), ["kept", "link", "merged", "opaque"]);
        assert_eq!(names(&dest.join("opaque")), ["new"]);
        assert_eq!(names(&dest.join("merged")), ["new", "old"]);
        let mode = fs_err::metadata(dest.join("merged/new")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            fs_err::read_link(dest.join("link")).unwrap(),
            PathBuf::from("kept")
        );
        assert!(!is_opaque(&dest.join("opaque")));

        // Into a layer directory, whiteouts and opaque markers are kept.
        let squashed = d.path().join("squashed");
        fs_err::create_dir(&squashed).unwrap();
        apply_layer(&layer, &squashed, true).unwrap();
        assert!(is_whiteout(
            &fs_err::symlink_metadata(squashed.join("gone")).unwrap()
        ));
        assert!(is_opaque(&squashed.join("opaque")));
    }
}
