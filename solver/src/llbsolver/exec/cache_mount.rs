//! Cache mounts: directories kept in the store across builds, shared, locked or private.

use std::path::{Path, PathBuf};

use kiln_llb::pb;
use sha2::Digest as _;

use super::input_ref;
use super::mounts::select_in_layers;
use crate::error::Error;
use crate::executor::ExecMount;
use crate::llbsolver::{Ref, SessionConfig, blocking};

/// A held lock on a cache mount directory (released when dropped).
pub(super) type CacheLock = Box<dyn Send>;

/// How many fresh directories a `private` cache mount tries before giving up.
const MAX_PRIVATE_DIRS: usize = 64;

/// A cache mount: a directory in the store per id (the mount target when no id is given),
/// kept across builds. Sharing modes, enforced with `flock` so they hold between kiln
/// processes too:
/// - `shared`: any number of steps use the directory at once; no lock.
/// - `locked`: a step takes the directory exclusively; a second one waits for it.
/// - `private`: a step takes the directory exclusively; when it is busy, the step takes the
///   next free one of `ID-1`, `ID-2`, ... (kept too, for later private users).
///
/// A directory kiln creates starts as a copy of the mount's input at its selector (`from` and
/// `source`, resolved inside that snapshot), owner and mode included: that is how the
/// frontend's `uid`, `gid` and `mode` arrive (a `/cache` directory made with them).
pub(super) async fn cache_mount(
    config: &SessionConfig,
    inputs: &[Ref],
    m: &pb::Mount,
) -> Result<(ExecMount, Option<CacheLock>), Error> {
    let seed = if m.input < 0 {
        Vec::new()
    } else {
        let lowers = input_ref(inputs, m.input)?.lowers(&config.store)?;
        if lowers.is_empty() {
            Vec::new()
        } else {
            select_in_layers(&lowers, &m.selector).map_err(|source| Error::CacheMountSource {
                selector: m.selector.clone(),
                dest: m.dest.clone(),
                source,
            })?
        }
    };
    let scratch = crate::llbsolver::scratch_dir(&config.store)?;
    let opt = m.cache_opt.clone().unwrap_or_default();
    let id = Some(opt.id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| m.dest.clone());
    let name = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    let store = config.store.clone();
    let sharing = pb::CacheSharingOpt::try_from(opt.sharing).unwrap_or(pb::CacheSharingOpt::Shared);
    let (dir, lock) = blocking(move || {
        // The store hands the directory out under the build's lease: a prune leaves it alone.
        let open = |name: &str| -> Result<PathBuf, Error> {
            let dir = store.cache_mount_dir(name)?;
            if dir.created {
                seed_cache_dir(&scratch, &seed, &dir.path)?;
            }
            Ok(dir.path)
        };
        let base = open(&name)?;
        match sharing {
            pb::CacheSharingOpt::Shared => Ok((base, None)),
            pb::CacheSharingOpt::Locked => {
                let lock = lock_dir(&base, nix::fcntl::FlockArg::LockExclusive)?
                    .ok_or(Error::CacheMountLock)?;
                Ok((base, Some(lock)))
            }
            pb::CacheSharingOpt::Private => {
                for n in 0..MAX_PRIVATE_DIRS {
                    let dir = if n == 0 {
                        base.clone()
                    } else {
                        open(&format!("{name}-{n}"))?
                    };
                    if let Some(lock) = lock_dir(&dir, nix::fcntl::FlockArg::LockExclusiveNonblock)?
                    {
                        return Ok((dir, Some(lock)));
                    }
                }
                Err(Error::CacheMountBusy {
                    id,
                    max: MAX_PRIVATE_DIRS,
                })
            }
        }
    })
    .await?;
    let mount = ExecMount::Bind {
        source: dir,
        target: PathBuf::from(&m.dest),
        readonly: m.readonly,
    };
    Ok((mount, lock))
}

/// Fills the new cache directory `dir` with the merged directory made of the layer directories
/// `seed` (topmost first; none leaves it empty) and gives it that directory's owner and mode.
pub(super) fn seed_cache_dir(scratch: &Path, seed: &[PathBuf], dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let Some(top) = seed.first() else {
        return Ok(());
    };
    let meta = fs_err::symlink_metadata(top)?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: top.to_owned(),
        });
    }
    let view = kiln_cache::View {
        lowers: seed.to_vec(),
        writable: None,
    };
    kiln_cache::with_views(scratch, &[view], |points| {
        kiln_fsutil::TreeCopy::default().copy_contents(
            &points[0],
            dir,
            &mut kiln_fsutil::HardLinks::new(),
        )
    })??;
    std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid()))?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Ok(())
}

/// Takes `flock` on `DIR.lock`; `None` when a non-blocking attempt finds it held.
fn lock_dir(dir: &Path, how: nix::fcntl::FlockArg) -> Result<Option<CacheLock>, Error> {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    let file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))?
        .into_file();
    match nix::fcntl::Flock::lock(file, how) {
        Ok(lock) => Ok(Some(Box::new(lock))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::Sys(e)),
    }
}
