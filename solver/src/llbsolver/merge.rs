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
//!    Otherwise (BuildKit's semantics for unrelated pairs) both trees are mounted and walked
//!    side by side: what `upper` adds or changes is copied, what it lacks becomes a whiteout,
//!    so that `merge(lower, diff(lower, upper))` is `upper`.

use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use filetime::FileTime;
use futures::future::{BoxFuture, FutureExt};
use kiln_llb::pb;

use super::{ActiveSnapshot, Ref, SessionConfig, blocking, input_ref, scratch_dir};
use crate::error::{Error, InputOf};
use crate::scheduler::{CacheMap, Op, OpContext, OpError};
use kiln_cache::{View, with_views};

/// The xattr overlayfs uses to mark a directory that hides the layers below it.
use kiln_fsutil::overlay::OPAQUE_XATTR as OPAQUE;

/// What a [`LayerOp`] makes of its inputs.
#[derive(Clone)]
pub(super) enum Layers {
    /// `merge`: the inputs' file systems stacked in order.
    Merge(pb::MergeOp),
    /// `diff`: what changed from `lower` to `upper`.
    Diff(pb::DiffOp),
}

/// A merge or diff op: a new result made of its inputs' layers.
pub(super) struct LayerOp {
    digest: String,
    inputs: usize,
    layers: Layers,
    config: Arc<SessionConfig>,
}

impl LayerOp {
    pub(super) fn new(
        digest: String,
        inputs: usize,
        layers: Layers,
        config: Arc<SessionConfig>,
    ) -> Self {
        Self {
            digest,
            inputs,
            layers,
            config,
        }
    }
}

impl Op<Ref> for LayerOp {
    fn cache_map(&self, _: OpContext) -> BoxFuture<'static, Result<CacheMap<Ref>, OpError>> {
        super::definition_map(&self.digest, self.inputs)
    }

    fn exec(
        &self,
        _: OpContext,
        inputs: Vec<Ref>,
    ) -> BoxFuture<'static, Result<Vec<Ref>, OpError>> {
        let config = self.config.clone();
        let layers = self.layers.clone();
        async move {
            let input = |index: i64| input_ref(&inputs, index, InputOf::Merge);
            let result = match layers {
                Layers::Merge(merge) => {
                    let refs = merge
                        .inputs
                        .iter()
                        .map(|i| input(i.input))
                        .filter(|r| !r.as_ref().is_ok_and(|r| r.key().is_none()))
                        .collect::<Result<Vec<Ref>, Error>>()?;
                    blocking(move || merge_refs(&config, &refs)).await?
                }
                Layers::Diff(diff) => {
                    let lower = input(diff.lower.map_or(-1, |l| l.input))?;
                    let upper = input(diff.upper.map_or(-1, |u| u.input))?;
                    blocking(move || diff_refs(&config, &lower, &upper)).await?
                }
            };
            Ok(vec![result])
        }
        .boxed()
    }
}

/// Stacks non-scratch results in order.
fn merge_refs(config: &SessionConfig, refs: &[Ref]) -> Result<Ref, Error> {
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
fn diff_refs(config: &SessionConfig, lower: &Ref, upper: &Ref) -> Result<Ref, Error> {
    let store = &config.store;
    let lower_layers = lower.lowers(store)?;
    let upper_layers = upper.lowers(store)?;
    if lower == upper {
        return Ok(Ref::scratch());
    }
    if !upper_layers.ends_with(&lower_layers) {
        let inputs = [
            View {
                lowers: lower_layers,
                writable: None,
            },
            View {
                lowers: upper_layers,
                writable: None,
            },
        ];
        let diff = new_snapshot_with_views(config, &Ref::scratch(), "diff", &inputs, |root, p| {
            diff_trees(&p[0], &p[1], root).map(drop)
        })?;
        return hide_lowest_whiteouts(config, diff);
    }
    let mut above = upper_layers[..upper_layers.len() - lower_layers.len()].to_vec();
    if above.is_empty() {
        return Ok(Ref::scratch());
    }
    above.reverse(); // bottom first
    let diff = new_snapshot_with(config, &Ref::scratch(), "diff", |root| {
        for layer in &above {
            apply_layer(layer, root, true)?;
        }
        Ok(())
    })?;
    hide_lowest_whiteouts(config, diff)
}

/// Puts a layer of bare directories under the one-layer snapshot `diff` when its whiteouts
/// would otherwise show when it is the lowest layer of a view.
///
/// overlayfs hides whiteouts only when listing a directory that more than one layer has: in
/// a directory that exists only in the lowest layer (one the diff added or changed) a
/// whiteout is listed but cannot be opened. Whiteouts in the lowest layer delete nothing, so
/// the directory is given a twin in a layer below (same owner and mode, nothing in it),
/// which makes overlayfs merge the two and drop the whiteouts from the listing. Applying the
/// pair onto another tree (MergeOp) is unchanged, as every such directory is also in the
/// diff layer itself.
fn hide_lowest_whiteouts(config: &SessionConfig, diff: Ref) -> Result<Ref, Error> {
    let Some(key) = diff.key() else {
        return Ok(diff);
    };
    let store = &config.store;
    let layer = store.committed_dir(key)?;
    let mut dirs = Vec::new();
    dirs_with_whiteouts(&layer, Path::new(""), &mut dirs)?;
    if dirs.is_empty() {
        return Ok(diff);
    }
    // The twins, bottom.
    let (active, mounts) = ActiveSnapshot::prepare(store, None)?;
    (|| -> io::Result<()> {
        for rel in &dirs {
            let mut path = PathBuf::new();
            for part in rel.components() {
                path.push(part);
                let dst = mounts.upper.join(&path);
                if fs_err::symlink_metadata(&dst).is_err() {
                    let src = layer.join(&path);
                    fs_err::create_dir(&dst)?;
                    let meta = fs_err::symlink_metadata(&src)?;
                    std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
                    fs_err::set_permissions(
                        &dst,
                        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                    )?;
                }
            }
        }
        Ok(())
    })()?;
    let base = active.commit("diff-dirs")?;
    // The diff layer itself, moved on top.
    let (active, mounts) = ActiveSnapshot::prepare(store, base.key())?;
    (|| -> io::Result<()> {
        for entry in fs_err::read_dir(&layer)? {
            let name = entry?.file_name();
            fs_err::rename(layer.join(&name), mounts.upper.join(&name))?;
        }
        let meta = fs_err::symlink_metadata(&layer)?;
        finish(&layer, &mounts.upper, &meta, true)
    })()?;
    let top = active.commit("diff")?;
    store.remove_snapshot(key)?;
    Ok(top)
}

/// Collects (relative to `root`) the directories below `root`, not `root` itself, that hold
/// a whiteout.
fn dirs_with_whiteouts(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut holds_whiteout = false;
    for entry in fs_err::read_dir(root.join(rel))? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            dirs_with_whiteouts(root, &rel.join(entry.file_name()), out)?;
        } else if file_type.is_char_device() && is_whiteout(&entry.metadata()?) {
            holds_whiteout = true;
        }
    }
    if holds_whiteout && !rel.as_os_str().is_empty() {
        out.push(rel.to_owned());
    }
    Ok(())
}

/// Prepares a snapshot on `base`, runs `work` on its merged tree, and commits it.
fn new_snapshot_with(
    config: &SessionConfig,
    base: &Ref,
    prefix: &str,
    work: impl FnOnce(&Path) -> io::Result<()> + Send,
) -> Result<Ref, Error> {
    new_snapshot_with_views(config, base, prefix, &[], |root, _| work(root))
}

/// Like [`new_snapshot_with`], with `inputs` mounted too (their mount points are `work`'s
/// second argument, in order).
fn new_snapshot_with_views(
    config: &SessionConfig,
    base: &Ref,
    prefix: &str,
    inputs: &[View],
    work: impl FnOnce(&Path, &[std::path::PathBuf]) -> io::Result<()> + Send,
) -> Result<Ref, Error> {
    let store = &config.store;
    let (active, mounts) = ActiveSnapshot::prepare(store, base.key())?;
    let mut views = vec![View {
        lowers: mounts.lowers.clone(),
        writable: Some((mounts.upper.clone(), mounts.work.clone())),
    }];
    views.extend_from_slice(inputs);
    let outcome = with_views(&scratch_dir(store)?, &views, |points| {
        work(&points[0], &points[1..])
    });
    outcome??;
    active.commit(prefix)
}

/// Writes into the layer directory `out` what turns the tree `lower` into the tree `upper`:
/// entries added or changed in `upper` (copied whole, with their metadata) and whiteouts for
/// entries `upper` lacks. Directories in both are compared entry by entry and appear in `out`
/// only when something below them changed or their own metadata did. Returns whether
/// anything was written.
fn diff_trees(lower: &Path, upper: &Path, out: &Path) -> io::Result<bool> {
    let mut names: Vec<_> = fs_err::read_dir(upper)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    let mut changed = false;
    for name in &names {
        let (src, dst, old) = (upper.join(name), out.join(name), lower.join(name));
        let meta = fs_err::symlink_metadata(&src)?;
        let before = match fs_err::symlink_metadata(&old) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match before {
            Some(before) if before.is_dir() && meta.is_dir() => {
                fs_err::create_dir(&dst)?;
                let below = diff_trees(&old, &src, &dst)?;
                if below || !same_metadata(&before, &meta, &old, &src)? {
                    finish(&src, &dst, &meta, false)?;
                    changed = true;
                } else {
                    fs_err::remove_dir(&dst)?;
                }
            }
            Some(before) if same_entry(&before, &meta, &old, &src)? => {}
            _ => {
                copy_entry(&src, &dst, &meta)?;
                changed = true;
            }
        }
    }
    let upper_names: std::collections::HashSet<_> = names.into_iter().collect();
    for entry in fs_err::read_dir(lower)? {
        let name = entry?.file_name();
        if !upper_names.contains(&name) {
            let dst = out.join(&name);
            nix::sys::stat::mknod(
                &dst,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(io::Error::from)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Whether two entries have the same type, mode, owner, device, link target and xattrs.
fn same_metadata(
    a: &std::fs::Metadata,
    b: &std::fs::Metadata,
    a_path: &Path,
    b_path: &Path,
) -> io::Result<bool> {
    if a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() || a.rdev() != b.rdev() {
        return Ok(false);
    }
    if a.file_type().is_symlink() {
        return Ok(fs_err::read_link(a_path)? == fs_err::read_link(b_path)?);
    }
    let xattrs = |p: &Path| -> Vec<(std::ffi::OsString, Option<Vec<u8>>)> {
        let mut names: Vec<_> = xattr::list(p).map(Iterator::collect).unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let v = xattr::get(p, &n).ok().flatten();
                (n, v)
            })
            .collect()
    };
    Ok(xattrs(a_path) == xattrs(b_path))
}

/// Whether two non-directory entries are the same: metadata and, for files, content.
fn same_entry(
    a: &std::fs::Metadata,
    b: &std::fs::Metadata,
    a_path: &Path,
    b_path: &Path,
) -> io::Result<bool> {
    if !same_metadata(a, b, a_path, b_path)? || a.len() != b.len() {
        return Ok(false);
    }
    if !a.is_file() {
        return Ok(true);
    }
    let (mut x, mut y) = (fs_err::File::open(a_path)?, fs_err::File::open(b_path)?);
    let (mut bx, mut by) = (vec![0; 64 * 1024], vec![0; 64 * 1024]);
    loop {
        let n = io::Read::read(&mut x, &mut bx)?;
        if n == 0 {
            return Ok(true);
        }
        io::Read::read_exact(&mut y, &mut by[..n])?;
        if bx[..n] != by[..n] {
            return Ok(false);
        }
    }
}

/// Copies one entry (a directory with everything below it) with its metadata.
fn copy_entry(src: &Path, dst: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_dir() {
        fs_err::create_dir(dst)?;
        apply_layer(src, dst, false)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(src)?, dst)?;
    } else if ft.is_file() {
        fs_err::copy(src, dst)?;
    } else {
        make_node(src, dst, meta)?;
    }
    finish(src, dst, meta, false)
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    kiln_fsutil::overlay::is_whiteout(meta)
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
                let overlay = name.as_bytes().starts_with(b"trusted.overlay.");
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
        kiln_testdata::skip("applying layers with whiteouts needs root");
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

    #[tokio::test]
    async fn a_diff_of_unrelated_trees_adds_changes_and_deletes() {
        use kiln_llb::{FileAction, MkdirOptions};

        use crate::llbsolver::tests::{Recorder, session, solve, tree};

        if skip_unless_root() {
            return;
        }
        let store = tempfile::tempdir().unwrap();
        let session = session(store.path(), &[]);
        let lower = kiln_llb::scratch().file(
            FileAction::mkfile("/same", 0o644, b"same")
                .then_mkfile("/changed", 0o644, b"old")
                .then_mkfile("/mode", 0o644, b"m")
                .then_mkfile("/deleted", 0o644, b"gone")
                .then_mkdir("/dir", 0o755, MkdirOptions::default())
                .then_mkfile("/dir/old", 0o644, b"o")
                .then_mkfile("/dir/kept", 0o644, b"k")
                .then_mkdir("/olddir", 0o755, MkdirOptions::default())
                .then_mkfile("/olddir/x", 0o644, b"x"),
        );
        // Made from scratch, not on top of `lower`.
        let upper = kiln_llb::scratch().file(
            FileAction::mkfile("/same", 0o644, b"same")
                .then_mkfile("/changed", 0o644, b"new")
                .then_mkfile("/mode", 0o600, b"m")
                .then_mkfile("/added", 0o644, b"+")
                .then_mkdir("/dir", 0o755, MkdirOptions::default())
                .then_mkfile("/dir/new", 0o644, b"n")
                .then_mkfile("/dir/kept", 0o644, b"k"),
        );
        let recorder = Arc::new(Recorder::default());
        let diff = kiln_llb::diff(&lower, &upper);
        let diff_ref = solve(&session, &diff, &recorder).await;
        // The layer: what upper adds or changes, and whiteouts for what it lacks.
        // Below it, a bare twin of the directory that holds a whiteout (so that the whiteout
        // is not listed when the diff is the lowest layer of a view).
        let layers = diff_ref.lowers(&session.config().store).unwrap();
        assert_eq!(layers.len(), 2);
        let twins: Vec<_> = fs_err::read_dir(&layers[1])
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(twins, ["dir"]);
        assert_eq!(fs_err::read_dir(layers[1].join("dir")).unwrap().count(), 0);
        let layer = &layers[0];
        let mut found = Vec::new();
        let mut stack = vec![layer.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs_err::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs_err::symlink_metadata(&path).unwrap();
                let rel = path
                    .strip_prefix(layer)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if meta.is_dir() {
                    stack.push(path);
                    found.push(format!("{rel}/"));
                } else if is_whiteout(&meta) {
                    found.push(format!("{rel} (whiteout)"));
                } else {
                    found.push(format!("{rel}={}", fs_err::read_to_string(&path).unwrap()));
                }
            }
        }
        found.sort();
        assert_eq!(
            found,
            [
                "added=+",
                "changed=new",
                "deleted (whiteout)",
                "dir/",
                "dir/new=n",
                "dir/old (whiteout)",
                "mode=m",
                "olddir (whiteout)",
            ]
        );

        // Applied on lower, it gives upper.
        let merged = solve(&session, &kiln_llb::merge(&[lower, diff]), &recorder).await;
        assert_eq!(
            tree(&session, &merged),
            tree(&session, &solve(&session, &upper, &recorder).await)
        );
        let mode = |r: &Ref| {
            let store = &session.config().store;
            store
                .with_snapshot(r.key(), |root| {
                    fs_err::metadata(root.join("mode")).unwrap().mode() & 0o7777
                })
                .unwrap()
        };
        assert_eq!(mode(&merged), 0o600);
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
