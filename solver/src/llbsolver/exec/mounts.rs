//! The read-only and writable mounts of an exec step other than the root, cache and SSH
//! mounts: tmpfs, secrets and binds of other vertices' results.

use std::path::{Path, PathBuf};

use kiln_llb::pb;

use super::cache_mount::seed_cache_dir;
use super::{input_ref, prepare_writable};
use crate::error::{Error, SelectError};
use crate::executor::ExecMount;
use crate::llbsolver::{ActiveSnapshot, Ref, SessionConfig, blocking};

/// A writable bind mount of another vertex's result: an overlay with a fresh upper, whose
/// changes become the mount's output (or are dropped when it has none). A path inside the
/// result (a selector, resolved inside it) is mounted as a scratch copy of that directory.
pub(super) async fn writable_bind(
    config: &SessionConfig,
    inputs: &[Ref],
    m: &pb::Mount,
) -> Result<(ExecMount, ActiveSnapshot), Error> {
    let input = input_ref(inputs, m.input)?;
    if !m.selector.trim_start_matches('/').is_empty() {
        return writable_selection(config, &input, m).await;
    }
    let (guard, prepared) = prepare_writable(&config.store, &input).await?;
    let target = PathBuf::from(&m.dest);
    let mount = if prepared.lowers.is_empty() {
        ExecMount::Bind {
            source: prepared.upper,
            target,
            readonly: false,
        }
    } else {
        ExecMount::Overlay {
            lowers: prepared.lowers,
            upper_work: Some((prepared.upper, prepared.work)),
            target,
            readonly: false,
        }
    };
    Ok((mount, guard))
}

/// A writable mount of the directory or file `m.selector` of `input`: a new snapshot holding a
/// copy of the merged directory or of the file (found inside the snapshot, links followed
/// within it), bind-mounted writable. Its output, if it has one, is that directory with the step's changes (BuildKit's
/// is the whole input with them; Dockerfile `rw` mounts never read it).
async fn writable_selection(
    config: &SessionConfig,
    input: &Ref,
    m: &pb::Mount,
) -> Result<(ExecMount, ActiveSnapshot), Error> {
    let lowers = input.lowers(&config.store)?;
    let seed =
        select_in_layers(&lowers, &m.selector).map_err(|source| mount_selector(m, source))?;
    let scratch = crate::llbsolver::scratch_dir(&config.store)?;
    let (guard, upper) = {
        let store = config.store.clone();
        blocking(move || {
            let (active, mounts) = ActiveSnapshot::prepare(&store, None)?;
            Ok((active, mounts.upper))
        })
        .await?
    };
    // A file is copied alone into the new snapshot and bind-mounted as a file.
    let source = blocking(move || -> Result<PathBuf, Error> {
        let is_dir = match seed.first() {
            Some(top) => fs_err::symlink_metadata(top)?.is_dir(),
            None => true,
        };
        if is_dir {
            seed_cache_dir(&scratch, &seed, &upper)?;
            return Ok(upper);
        }
        let file = upper.join("file");
        kiln_fsutil::TreeCopy::default().copy_tree(
            &seed[0],
            &file,
            Path::new(""),
            &mut kiln_fsutil::HardLinks::new(),
        )?;
        Ok(file)
    })
    .await?;
    let mount = ExecMount::Bind {
        source,
        target: PathBuf::from(&m.dest),
        readonly: false,
    };
    Ok((mount, guard))
}

/// An exec mount other than the root; `None` for an optional secret that is missing.
pub(super) fn mount(
    config: &SessionConfig,
    inputs: &[Ref],
    m: &pb::Mount,
) -> Result<Option<ExecMount>, Error> {
    let target = PathBuf::from(&m.dest);
    match pb::MountType::try_from(m.mount_type) {
        Ok(pb::MountType::Tmpfs) => Ok(Some(ExecMount::Tmpfs {
            target,
            size: m
                .tmpfs_opt
                .as_ref()
                .and_then(|t| u64::try_from(t.size).ok())
                .filter(|&s| s > 0),
            readonly: m.readonly,
        })),
        Ok(pb::MountType::Secret) => {
            let opt = m.secret_opt.clone().unwrap_or_default();
            let Some(data) = config.secrets.get(&opt.id).cloned() else {
                if opt.optional {
                    return Ok(None);
                }
                return Err(Error::SecretNotFound { id: opt.id });
            };
            Ok(Some(ExecMount::Secret {
                target,
                data,
                mode: opt.mode,
                uid: opt.uid,
                gid: opt.gid,
            }))
        }
        Ok(pb::MountType::Bind) => {
            let input = input_ref(inputs, m.input)?;
            let lowers = input.lowers(&config.store)?;
            let selected = select_in_layers(&lowers, &m.selector)
                .map_err(|source| mount_selector(m, source))?;
            // The selected paths were resolved through real directories of the layers only.
            // The layers are committed snapshots that no build step writes to, so nothing can
            // swap a link into them between this resolution and the mount.
            Ok(Some(match selected.as_slice() {
                [only] => ExecMount::Bind {
                    source: only.clone(),
                    target,
                    readonly: true,
                },
                _ => ExecMount::Overlay {
                    lowers: selected,
                    upper_work: None,
                    target,
                    readonly: true,
                },
            }))
        }
        _ => Err(Error::UnsupportedMount {
            mount_type: m.mount_type,
            dest: m.dest.clone(),
        }),
    }
}

/// The error of a mount whose selector cannot be mounted.
fn mount_selector(m: &pb::Mount, source: SelectError) -> Error {
    Error::MountSelector {
        selector: m.selector.clone(),
        dest: m.dest.clone(),
        source,
    }
}

/// What a bind mount of `selector` of a snapshot with overlayfs layers `lowers` (topmost
/// first) mounts: for a directory, the layer directories that merge into it (mounted as a
/// read-only overlay of exactly those, it shows what the merged snapshot has there); for
/// anything else, the one host file. The selector is resolved inside the snapshot as BuildKit
/// does: links are followed with the snapshot as `/`, `..` stops at its root.
pub(super) fn select_in_layers(
    lowers: &[PathBuf],
    selector: &str,
) -> Result<Vec<PathBuf>, SelectError> {
    let resolved = kiln_fsutil::Root::layered(lowers.to_vec()).resolve(selector, true)?;
    match resolved.entry {
        Some(entry) => Ok(entry.layers),
        None => Err(SelectError::Missing {
            path: resolved.path,
        }),
    }
}
