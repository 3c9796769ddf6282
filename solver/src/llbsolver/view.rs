//! Merged views of snapshots for in-process work (file actions, local export).
//!
//! A snapshot is a stack of layer directories in overlayfs form, so reading or changing it as
//! one tree needs an overlay mount. The mounts are made on a short-lived thread that first
//! moves into a mount namespace of its own (`unshare(CLONE_NEWNS)`, which also gives it its
//! own working directory): they are invisible to the host and to the rest of the process, and
//! they vanish with the thread even if the work panics or the process is killed. Views that
//! need no mount at all are used in place.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// One merged view to mount.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Read-only layer directories, topmost first.
    pub(crate) lowers: Vec<PathBuf>,
    /// A writable upper and work directory; `None` makes the view read-only.
    pub(crate) writable: Option<(PathBuf, PathBuf)>,
}

/// Mounts each view in a private mount namespace on a new thread, runs `work` with their
/// mount points (in the order of `views`), and unmounts them.
pub(crate) fn with_views<T: Send>(
    scratch: &Path,
    views: &[View],
    work: impl FnOnce(&[PathBuf]) -> T + Send,
) -> io::Result<T> {
    // Views that need no mount (a writable layer with nothing below it, the usual case for
    // file ops on scratch) are used in place: no thread, namespace or scratch directories.
    let direct: Option<Vec<PathBuf>> = views
        .iter()
        .map(|view| match (&view.writable, view.lowers.as_slice()) {
            (Some((upper, _)), []) => Some(upper.clone()),
            _ => None,
        })
        .collect();
    if let Some(points) = direct {
        return Ok(work(&points));
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).map_err(io::Error::from)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(io::Error::from)?;
                let base = tempfile::Builder::new()
                    .prefix("view-")
                    .tempdir_in(scratch)?;
                let mut points = Vec::with_capacity(views.len());
                let mut mounted = Vec::new();
                for (i, view) in views.iter().enumerate() {
                    let point = base.path().join(i.to_string());
                    let empty = base.path().join(format!("{i}.empty"));
                    fs_err::create_dir(&point)?;
                    fs_err::create_dir(&empty)?;
                    match plan(view, &empty) {
                        Plan::Dir(dir) => points.push(dir),
                        Plan::Overlay { options, readonly } => {
                            if let Some((_, work)) = &view.writable {
                                // Made only now: writers on an empty parent need none.
                                fs_err::create_dir_all(work)?;
                            }
                            let flags = if readonly {
                                MsFlags::MS_RDONLY
                            } else {
                                MsFlags::empty()
                            };
                            mount(
                                Some("overlay"),
                                &point,
                                Some("overlay"),
                                flags,
                                Some(&*options),
                            )
                            .map_err(|e| {
                                io::Error::other(format!(
                                    "mounting overlay at {}: {e}",
                                    point.display()
                                ))
                            })?;
                            mounted.push(point.clone());
                            points.push(point);
                        }
                    }
                }
                let result = work(&points);
                for point in mounted.iter().rev() {
                    umount2(point, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
                }
                Ok(result)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Writes the merged file system of `result` into the directory `dest` (created if missing),
/// as `--output type=local` does. Device nodes are left out with a warning (a build must not
/// make devices on the host); FIFOs are recreated, as BuildKit's local exporter does.
pub fn export_local(
    store: &kiln_cache::Store,
    result: &super::Ref,
    dest: &Path,
) -> Result<(), crate::Error> {
    fs_err::create_dir_all(dest)?;
    let view = View {
        lowers: result.lowers(store)?,
        writable: None,
    };
    let scratch = super::scratch_dir(store)?;
    let action = copy_whole_tree();
    with_views(&scratch, &[view], |points| {
        super::fileop::copy_with(
            &points[0],
            dest,
            super::fileop::CopyPaths::of(&action),
            &action,
            None,
            super::fileop::DeviceNodes::Skip,
        )
    })??;
    Ok(())
}

/// Writes the merged file system of `result` as one uncompressed tar stream to `out`, as
/// `--output type=tar` does, straight from the snapshots: device nodes are archive entries,
/// never made on the host.
pub fn export_tar<W: std::io::Write + Send + 'static>(
    store: &kiln_cache::Store,
    result: &super::Ref,
    source_date_epoch: Option<i64>,
    out: W,
) -> Result<W, crate::Error> {
    let view = View {
        lowers: result.lowers(store)?,
        writable: None,
    };
    let scratch = super::scratch_dir(store)?;
    let options = kiln_cache::LayerOptions {
        compression: kiln_cache::Compression::Uncompressed,
        source_date_epoch,
        threads: 1,
    };
    let (_, out) = with_views(&scratch, &[view], |points| {
        kiln_cache::write_layer(&points[0], kiln_cache::DiffSource::Directory, &options, out)
    })??;
    Ok(out)
}

/// A copy of a whole tree into a directory, keeping modes, owners and times.
pub(super) fn copy_whole_tree() -> kiln_llb::pb::FileActionCopy {
    kiln_llb::pb::FileActionCopy {
        src: "/".into(),
        dest: "/".into(),
        mode: -1,
        dir_copy_contents: true,
        timestamp: -1,
        ..Default::default()
    }
}

enum Plan {
    /// No mount needed: the directory is the view.
    Dir(PathBuf),
    /// An overlay mount with these options.
    Overlay { options: String, readonly: bool },
}

fn plan(view: &View, empty: &Path) -> Plan {
    match (&view.writable, view.lowers.as_slice()) {
        // Nothing below a writable upper: the upper is the whole tree.
        (Some((upper, _)), []) => Plan::Dir(upper.clone()),
        (None, []) => Plan::Dir(empty.to_owned()),
        (Some((upper, work)), lowers) => Plan::Overlay {
            options: format!(
                "lowerdir={},upperdir={},workdir={}",
                join(lowers),
                escape(upper),
                escape(work)
            ),
            readonly: false,
        },
        // overlayfs needs two lowers when it has no upper.
        (None, [only]) => Plan::Overlay {
            options: format!("lowerdir={}:{}", escape(only), escape(empty)),
            readonly: true,
        },
        (None, lowers) => Plan::Overlay {
            options: format!("lowerdir={}", join(lowers)),
            readonly: true,
        },
    }
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| escape(d)).collect::<Vec<_>>().join(":")
}

/// Escapes the characters overlayfs's option parser treats specially.
fn escape(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn overlay_views_merge_layers_and_write_to_the_upper_only() {
        if !is_root() {
            assert!(
                std::env::var_os("KILN_TEST_REQUIRE_ALL").is_none(),
                "overlay views need root"
            );
            #[expect(clippy::print_stderr, reason = "a skipped test says why")]
            {
                eprintln!("skipped: overlay views need root");
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["lower1", "lower2", "upper", "work", "scratch"] {
            fs_err::create_dir(d.join(sub)).unwrap();
        }
        fs_err::write(d.join("lower1/a"), "bottom").unwrap();
        fs_err::write(d.join("lower2/a"), "top").unwrap();
        fs_err::write(d.join("lower1/b"), "b").unwrap();
        let writable = View {
            lowers: vec![d.join("lower2"), d.join("lower1")],
            writable: Some((d.join("upper"), d.join("work"))),
        };
        let readonly = View {
            lowers: vec![d.join("lower1")],
            writable: None,
        };
        let seen = with_views(&d.join("scratch"), &[writable, readonly], |points| {
            fs_err::write(points[0].join("new"), "n").unwrap();
            let a = fs_err::read_to_string(points[0].join("a")).unwrap();
            let ro = fs_err::read_to_string(points[1].join("a")).unwrap();
            let ro_write = fs_err::write(points[1].join("x"), "x").is_err();
            (a, ro, ro_write)
        })
        .unwrap();
        assert_eq!(seen, ("top".to_owned(), "bottom".to_owned(), true));
        assert_eq!(fs_err::read_to_string(d.join("upper/new")).unwrap(), "n");
        assert!(!d.join("lower2/new").exists());
        let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(&*d.to_string_lossy()),
            "no mount is left behind"
        );
        assert_eq!(fs_err::read_dir(d.join("scratch")).unwrap().count(), 0);
    }
}
