//! Overlay mounts in a plan: the options of an overlay of many layers, made relative to the
//! layers' common parent so they fit in one page, and the ops that mount one (or its layers
//! one by one where even that does not fit).

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use super::{Op, cpath, cstring, lit};
use crate::error::{Error, Result};

/// The longest common ancestor directory of `paths`.
fn common_parent(paths: &[&Path]) -> PathBuf {
    let mut common: Vec<Component<'_>> =
        paths[0].parent().unwrap_or(paths[0]).components().collect();
    for path in &paths[1..] {
        let parent: Vec<Component<'_>> = path.parent().unwrap_or(path).components().collect();
        let same = common
            .iter()
            .zip(&parent)
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(same);
    }
    common.iter().collect()
}

/// The overlay mount: the directory to `chdir` into and the options, relative to it; `None`
/// when even relative options do not fit in one page (see [`overlay_mount`]).
pub(super) fn overlay_options(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
) -> Result<Option<(PathBuf, String)>> {
    if lowers.is_empty() {
        return Err(Error::NoLowerDirs);
    }
    if lowers.len() > kiln_fsutil::MAX_LAYERS {
        return Err(Error::TooManyLayers {
            count: lowers.len(),
            limit: kiln_fsutil::MAX_LAYERS,
        });
    }
    let writable: Vec<(&'static str, &Path)> = upper_work
        .map(|(upper, work)| vec![("overlay upper dir", upper), ("overlay work dir", work)])
        .unwrap_or_default();
    for (field, path) in lowers
        .iter()
        .map(|p| ("overlay lower dir", p.as_path()))
        .chain(writable.iter().copied())
    {
        if !path.is_absolute() {
            return Err(Error::RelativePath {
                field,
                path: path.to_owned(),
            });
        }
    }
    let all: Vec<&Path> = lowers
        .iter()
        .map(PathBuf::as_path)
        .chain(writable.iter().map(|(_, p)| *p))
        .collect();
    let base = common_parent(&all);
    let rel = |p: &Path| -> String {
        let r = p.strip_prefix(&base).unwrap_or(p);
        if r.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            r.to_string_lossy().into_owned()
        }
    };
    let lower = lowers.iter().map(|p| rel(p)).collect::<Vec<_>>().join(":");
    let options = match upper_work {
        Some((upper, work)) => format!(
            "lowerdir={lower},upperdir={},workdir={}",
            rel(upper),
            rel(work)
        ),
        None => format!("lowerdir={lower}"),
    };
    if options.len() > kiln_fsutil::MOUNT_DATA_LIMIT {
        return Ok(None);
    }
    Ok(Some((base, options)))
}

/// The ops that mount an overlay of `lowers` with an optional upper and work directory at
/// `target`: `chdir` to the layers' common parent and `mount(2)` with relative options where
/// they fit in a page, otherwise the layers one by one ([`Op::MountLayers`]).
pub(super) fn overlay_mount(
    ops: &mut Vec<Op>,
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: CString,
    flags: MsFlags,
) -> Result<()> {
    match overlay_options(lowers, upper_work)? {
        Some((base, options)) => {
            ops.push(Op::Chdir(cpath("overlay layers", &base)?));
            ops.push(Op::Mount {
                source: Some(lit("overlay")),
                target,
                fstype: Some(lit("overlay")),
                flags,
                data: Some(cstring("overlay options", options.as_bytes())?),
            });
        }
        None => ops.push(Op::MountLayers {
            target,
            lowers: lowers
                .iter()
                .map(|l| cpath("overlay lower dir", l))
                .collect::<Result<_>>()?,
            upper_work: upper_work
                .map(|(u, w)| {
                    Ok((
                        cpath("overlay upper dir", u)?,
                        cpath("overlay work dir", w)?,
                    ))
                })
                .transpose()?,
            nodev: flags.contains(MsFlags::MS_NODEV),
        }),
    }
    Ok(())
}
