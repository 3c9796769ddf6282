//! The runner's state directory: one private bundle directory per run, swept after a crash.
//!
//! # Overview
//!
//! 1. The state directory is created `0700` and must be a real directory owned by this
//!    user: a symlink or someone else's directory there is refused, never followed or used.
//! 2. Each run makes its bundle with `mkdir` (which fails on anything already there, a
//!    planted symlink included), named `<pid>-<start time>-<counter>` after the owning
//!    process; files in it are created with `O_CREAT | O_EXCL | O_NOFOLLOW`.
//! 3. The bundle is removed when the run ends; after a crash (kiln killed with SIGKILL) the
//!    next runner of any process sweeps bundles whose owner is gone: no such pid, or a pid
//!    reused by a process that started at another time. The run's cgroup has the same name
//!    and is swept the same way ([`crate::cgroup::sweep_once`]).

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use fs_err::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// A live process's start time in clock ticks since boot (field 22 of /proc/PID/stat);
/// `None` for no such process and for a zombie (dead, not yet reaped by its parent).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(rest.next(), Some("Z" | "X")) {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

/// The owner recorded in a bundle's name, `<pid>-<start time>-<counter>`.
fn owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.split('-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next().is_none().then_some((pid, start))
}

/// Creates `dir` (and its parents) if missing and checks it: a directory, not a symlink,
/// owned by this user; its mode is set to 0700.
pub(crate) fn prepare(dir: &Path) -> Result<()> {
    let refuse = |reason: &'static str| Error::StateDir {
        path: dir.to_owned(),
        reason,
    };
    if let Some(parent) = dir.parent() {
        fs_err::create_dir_all(parent).map_err(Error::Prepare)?;
    }
    match mkdir_private(dir) {
        Ok(())
        | Err(Error::Mkdir {
            source: nix::errno::Errno::EEXIST,
            ..
        }) => {}
        Err(err) => return Err(err),
    }
    let meta = fs_err::symlink_metadata(dir).map_err(Error::Prepare)?;
    if !meta.file_type().is_dir() {
        return Err(refuse("it is not a directory"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse("it belongs to another user"));
    }
    if meta.mode() & 0o777 != 0o700 {
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::Prepare)?;
    }
    Ok(())
}

/// Whether this process asks about `dir` for the first time: sweeps run once per directory
/// and process.
pub(crate) fn first_time(dir: &Path) -> bool {
    static SWEPT: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    SWEPT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(dir.to_owned())
}

/// Removes bundles in `dir` whose owning process is gone, once per directory and process.
pub(crate) fn sweep_once(dir: &Path) {
    if first_time(dir) {
        sweep(dir);
    }
}

/// The entries of `dir` named after a run (`<pid>-<start time>-<counter>`) whose process is
/// gone: no such pid, or a pid reused by a process that started at another time.
pub(crate) fn left_by_dead_processes(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(owner)
                .is_some_and(|(pid, start)| start_time(pid) != Some(start))
        })
        .map(|entry| entry.path())
        .collect()
}

/// Removes bundles in `dir` whose owning process is gone.
pub(crate) fn sweep(dir: &Path) {
    for path in left_by_dead_processes(dir) {
        tracing::debug!(path = %path.display(), "removing the bundle of a dead run");
        if let Err(err) = fs_err::remove_dir_all(&path) {
            tracing::warn!(error = %err, "cannot remove a dead run's bundle");
        }
    }
}

/// `mkdir(path, 0700)`: fails on anything already at `path`, a symlink included.
fn mkdir_private(path: &Path) -> Result<()> {
    nix::unistd::mkdir(path, nix::sys::stat::Mode::S_IRWXU).map_err(|source| Error::Mkdir {
        path: path.to_owned(),
        source,
    })
}

/// A new, empty, private bundle directory for one run, named after it: the name is also the
/// run's cgroup's.
pub(crate) fn create_bundle(dir: &Path, counter: u64) -> Result<PathBuf> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    let bundle = dir.join(format!("{pid}-{start}-{counter}"));
    mkdir_private(&bundle)?;
    Ok(bundle)
}

/// Writes a new file at `path` with `mode`, refusing anything already there (a symlink
/// included). Returns the open file for further `fchmod`/`fchown`.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<fs_err::File> {
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(Error::Prepare)?;
    file.write_all(data).map_err(Error::Prepare)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_names_record_their_owner() {
        assert_eq!(owner("12-3456-7"), Some((12, 3456)));
        for name in ["12-3456", "12-x-7", "rootfs", "12-3456-7-8", ""] {
            assert_eq!(owner(name), None, "{name}");
        }
        let me = std::process::id();
        assert!(start_time(me).is_some_and(|t| t > 0));
    }

    #[test]
    fn state_dir_is_private_and_never_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/state");
        prepare(&dir).unwrap();
        assert_eq!(fs_err::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(fs_err::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // A symlink planted where the state directory goes is refused, not followed.
        let elsewhere = tmp.path().join("elsewhere");
        fs_err::create_dir(&elsewhere).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(matches!(
            prepare(&link),
            Err(Error::StateDir {
                reason: "it is not a directory",
                ..
            })
        ));
        // So is a file planted where a staged file goes, symlink or not.
        let bundle = create_bundle(&dir, 1).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("target"), bundle.join("hosts")).unwrap();
        assert!(write_new(&bundle.join("hosts"), b"x", 0o644).is_err());
        assert!(!elsewhere.join("target").exists());
        let file = write_new(&bundle.join("secret"), b"s", 0o400).unwrap();
        drop(file);
        assert_eq!(fs_err::read(bundle.join("secret")).unwrap(), b"s");
        assert_eq!(
            fs_err::metadata(bundle.join("secret")).unwrap().mode() & 0o777,
            0o400
        );
        assert!(create_bundle(&dir, 1).is_err());
    }

    #[test]
    fn sweep_removes_only_bundles_of_dead_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        let dead_start = start_time(dead);
        child.wait().unwrap();
        let me = std::process::id();
        let my_start = start_time(me).unwrap();
        let names = [
            format!("{dead}-{}-0", dead_start.unwrap_or(1)),
            // Our pid, but another start time: a reused pid.
            format!("{me}-{}-0", my_start + 1),
            format!("{me}-{my_start}-0"),
            "unrelated".to_owned(),
        ];
        for name in &names {
            fs_err::create_dir_all(dir.join(name).join("rootfs")).unwrap();
        }
        sweep(dir);
        let left: HashSet<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, HashSet::from([names[2].clone(), names[3].clone()]));
    }
}
