//! Per-run cgroups: v2 where the unified hierarchy has controllers, v1 otherwise.
//!
//! # Overview
//!
//! These are a handful of file writes, done here rather than through cgroups-rs or libcgroups:
//! the container joins its cgroup from the forked child with a bare `open`+`write` of
//! `cgroup.procs` (paths prepared before the fork), so all the runner needs is to create the
//! directory, write the limits and remove it afterwards. The writes go through [`CgroupFs`], so
//! the layout is tested against the recording fake as well as on the host.
//!
//! 1. A run's cgroup is `<parent>/<name>`: the parent is the runner's (`kiln`), below the
//!    spec's own parent if it has one (LLB's `cgroupParent`, as BuildKit's
//!    `<cgroupParent>/buildkit/<id>`); the name is the run's bundle name, after its owner.
//! 2. cgroup v2: the controllers are enabled in `cgroup.subtree_control` of the root and of
//!    every directory down to the parent, then the run's directory gets `memory.max` (and
//!    `memory.swap.max` 0: no swap beyond the limit), `pids.max`, `cpu.weight`, `cpu.max`.
//!    A limit whose controller the hierarchy lacks is an error, not a silent no-op.
//! 3. cgroup v1: one directory per controller hierarchy (`memory.limit_in_bytes` with
//!    `memory.memsw.limit_in_bytes`, `pids.max`, `cpu.shares`, `cpu.cfs_*`), and Docker's
//!    device rules in the `devices` one.
//! 4. The directories are removed when the run ends; those of runs whose process died are
//!    swept by the next process, as the bundles are.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spec::Resources;

/// Which cgroup hierarchy to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// Unified hierarchy at this mount point, with controllers.
    V2(PathBuf),
    /// Legacy hierarchy: one mount per controller under this directory.
    V1(PathBuf),
    /// No usable cgroup filesystem: limits cannot be applied.
    Unavailable,
}

/// The v1 controller hierarchies a run can join.
const V1_CONTROLLERS: &[&str] = &["devices", "memory", "pids", "cpu"];

impl Hierarchy {
    /// Looks at a cgroup mount point (normally /sys/fs/cgroup).
    pub(crate) fn detect(root: &Path) -> Self {
        let controllers = root.join("cgroup.controllers");
        if let Ok(text) = fs_err::read_to_string(&controllers) {
            if !text.trim().is_empty() {
                return Self::V2(root.to_owned());
            }
        }
        if root.join("memory").is_dir() || root.join("pids").is_dir() {
            return Self::V1(root.to_owned());
        }
        Self::Unavailable
    }

    /// The directories holding runs' cgroups under `parent`: one per controller on v1.
    fn parent_dirs(&self, parent: &Path) -> Vec<PathBuf> {
        match self {
            Self::V2(root) => vec![root.join(parent)],
            Self::V1(root) => V1_CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(parent))
                .collect(),
            Self::Unavailable => Vec::new(),
        }
    }
}

impl Hierarchy {
    /// The `cgroup.procs` files of the cgroups `/proc/PID/cgroup` (`text`) names in the
    /// hierarchies a run joins, for a process that joins them (`kiln exec`); the root cgroups
    /// are left out.
    pub(crate) fn procs_of(&self, text: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if path.is_empty() {
                continue;
            }
            match self {
                Self::V2(root) if controllers.is_empty() => {
                    out.push(root.join(path).join("cgroup.procs"));
                }
                Self::V1(root) => {
                    for controller in V1_CONTROLLERS {
                        if controllers.split(',').any(|c| c == *controller) {
                            out.push(root.join(controller).join(path).join("cgroup.procs"));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// The file operations of cgroup setup: the host's cgroup file system ([`HostFs`]), or a
/// recording fake in tests.
pub(crate) trait CgroupFs {
    /// The contents of a file.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Whether a file exists.
    fn exists(&self, path: &Path) -> bool;
    /// `mkdir path`; one that exists already is fine.
    fn create_dir(&mut self, path: &Path) -> io::Result<()>;
    /// Writes `value` to a file (one `write(2)`; outside a cgroup file system the file is
    /// created or replaced).
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    /// Writes each of `values` with its own `write(2)` on one open file (outside a cgroup
    /// file system, appended).
    fn write_each(&mut self, path: &Path, values: &[&str]) -> io::Result<()>;
    /// `rmdir path`.
    fn remove_dir(&mut self, path: &Path) -> io::Result<()>;
}

/// The cgroup file system of the host (or plain directories standing in for it in tests).
#[derive(Debug, Default)]
pub(crate) struct HostFs;

impl<T: CgroupFs + ?Sized> CgroupFs for &mut T {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        (**self).read_to_string(path)
    }

    fn exists(&self, path: &Path) -> bool {
        (**self).exists(path)
    }

    fn create_dir(&mut self, path: &Path) -> io::Result<()> {
        (**self).create_dir(path)
    }

    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        (**self).write(path, value)
    }

    fn write_each(&mut self, path: &Path, values: &[&str]) -> io::Result<()> {
        (**self).write_each(path, values)
    }

    fn remove_dir(&mut self, path: &Path) -> io::Result<()> {
        (**self).remove_dir(path)
    }
}

impl CgroupFs for HostFs {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        fs_err::read_to_string(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_dir(&mut self, path: &Path) -> io::Result<()> {
        match fs_err::create_dir(path) {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        fs_err::write(path, value)
    }

    fn write_each(&mut self, path: &Path, values: &[&str]) -> io::Result<()> {
        use std::io::Write as _;
        let mut file = fs_err::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        for value in values {
            file.write_all(value.as_bytes())?;
        }
        Ok(())
    }

    fn remove_dir(&mut self, path: &Path) -> io::Result<()> {
        match fs_err::remove_dir(path) {
            // A plain directory standing in for a cgroup holds the files written to it.
            Err(err) if err.kind() != io::ErrorKind::NotFound && !is_cgroupfs(path) => {
                fs_err::remove_dir_all(path)
            }
            other => other,
        }
    }
}

/// A created cgroup; [`Cgroup::remove`] (or dropping it) deletes it.
#[derive(Debug)]
pub(crate) struct Cgroup<F: CgroupFs = HostFs> {
    fs: F,
    /// Directories created, removed in reverse order.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` files the container writes itself into.
    pub(crate) procs: Vec<PathBuf>,
}

/// Device access a container gets (cgroup v1 `devices.allow` lines), as Docker grants it:
/// creating any node is allowed (`m`), but only these can be opened. Without this, root with
/// Docker's `CAP_MKNOD` could create and open the host's disks.
pub(crate) const DEVICE_RULES: &[&str] = &[
    "c *:* m\n",
    "b *:* m\n",
    "c 1:3 rwm\n",
    "c 1:5 rwm\n",
    "c 1:7 rwm\n",
    "c 1:8 rwm\n",
    "c 1:9 rwm\n",
    "c 5:0 rwm\n",
    "c 5:1 rwm\n",
    "c 5:2 rwm\n",
    "c 136:* rwm\n",
];

impl Hierarchy {
    /// Whether device access can be restricted (the v1 `devices` controller is mounted). On
    /// v2 that takes an eBPF program, which the runner does not load: there, as everywhere,
    /// the nodev mounts keep device files from opening.
    pub(crate) fn restricts_devices(&self) -> bool {
        matches!(self, Self::V1(root) if root.join("devices").is_dir())
    }
}

/// cgroup v2 `cpu.weight` for a v1 `cpu.shares` value (the conversion runc and crun use).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The cgroup parent of a run: the runner's `own` parent, below the spec's `requested` one
/// (relative to the hierarchy's root; a leading `/` is allowed, `..` is not).
pub(crate) fn parent_path(requested: Option<&str>, own: &str) -> Result<PathBuf> {
    let Some(requested) = requested else {
        return Ok(PathBuf::from(own));
    };
    let refuse = |reason: &'static str| Error::CgroupParent {
        parent: requested.to_owned(),
        reason,
    };
    if requested.contains(':') {
        return Err(refuse(
            "a systemd slice needs the systemd cgroup driver, and kiln writes the cgroup file system itself",
        ));
    }
    let mut path = PathBuf::new();
    for component in Path::new(requested).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(refuse("it leads out of the cgroup hierarchy"));
            }
        }
    }
    Ok(path.join(own))
}

impl<F: CgroupFs> Cgroup<F> {
    /// Creates `<parent>/<name>` in `hierarchy` with `limits`, and with Docker's device rules
    /// if `restrict_devices` (see [`Hierarchy::restricts_devices`]). With `every_controller`
    /// (a parent chosen by the spec, whose own limits must apply) a v1 run joins every
    /// mounted controller hierarchy, not just those of its limits.
    pub(crate) fn create(
        fs: F,
        hierarchy: &Hierarchy,
        parent: &Path,
        name: &str,
        limits: &Resources,
        restrict_devices: bool,
        every_controller: bool,
    ) -> Result<Self> {
        let mut cgroup = Self {
            fs,
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        let result = match hierarchy {
            Hierarchy::V2(root) => cgroup.create_v2(root, parent, name, limits),
            Hierarchy::V1(root) => cgroup.create_v1(
                root,
                parent,
                name,
                limits,
                restrict_devices,
                every_controller,
            ),
            Hierarchy::Unavailable => Err(Error::Cgroup {
                path: PathBuf::from("/sys/fs/cgroup"),
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no cgroup hierarchy is mounted",
                ),
            }),
        };
        match result {
            Ok(()) => Ok(cgroup),
            Err(err) => {
                cgroup.remove();
                Err(err)
            }
        }
    }

    fn write(&mut self, path: PathBuf, value: &str) -> Result<()> {
        self.fs
            .write(&path, value)
            .map_err(|source| Error::Cgroup { path, source })
    }

    /// Creates `dir`; with `owned` it is removed with the cgroup.
    fn mkdir(&mut self, dir: PathBuf, owned: bool) -> Result<()> {
        self.fs.create_dir(&dir).map_err(|source| Error::Cgroup {
            path: dir.clone(),
            source,
        })?;
        if owned {
            self.dirs.push(dir);
        }
        Ok(())
    }

    fn create_v2(
        &mut self,
        root: &Path,
        parent: &Path,
        name: &str,
        limits: &Resources,
    ) -> Result<()> {
        let available = self
            .fs
            .read_to_string(&root.join("cgroup.controllers"))
            .unwrap_or_default();
        let has = |controller: &str| available.split_whitespace().any(|a| a == controller);
        let needed = [
            ("memory", limits.memory.is_some()),
            ("pids", limits.pids.is_some()),
            (
                "cpu",
                limits.cpu_shares.is_some() || limits.cpu_quota.is_some(),
            ),
        ];
        if let Some((controller, _)) = needed.iter().find(|(c, needed)| *needed && !has(c)) {
            return Err(Error::CgroupController {
                controller,
                path: root.to_owned(),
            });
        }
        let enable = ["cpu", "memory", "pids"]
            .into_iter()
            .filter(|c| has(c))
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        // Each level hands the controllers down to the next: the root, then every directory
        // down to the parent.
        let mut dir = root.to_owned();
        let mut levels = parent.components();
        loop {
            if !enable.is_empty() {
                self.write(dir.join("cgroup.subtree_control"), &enable)?;
            }
            let Some(level) = levels.next() else { break };
            dir.push(level);
            self.mkdir(dir.clone(), false)?;
        }
        dir.push(name);
        self.mkdir(dir.clone(), true)?;
        if let Some(memory) = limits.memory {
            self.write(dir.join("memory.max"), &memory.to_string())?;
            if self.fs.exists(&dir.join("memory.swap.max")) {
                self.write(dir.join("memory.swap.max"), "0")?;
            }
        }
        if let Some(pids) = limits.pids {
            self.write(dir.join("pids.max"), &pids.to_string())?;
        }
        if let Some(shares) = limits.cpu_shares {
            self.write(
                dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if let Some((quota, period)) = limits.cpu_quota {
            self.write(dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        self.procs.push(dir.join("cgroup.procs"));
        Ok(())
    }

    fn create_v1(
        &mut self,
        root: &Path,
        parent: &Path,
        name: &str,
        limits: &Resources,
        restrict_devices: bool,
        every_controller: bool,
    ) -> Result<()> {
        let cpu = limits.cpu_shares.is_some() || limits.cpu_quota.is_some();
        let wanted = [
            ("devices", restrict_devices),
            ("memory", limits.memory.is_some()),
            ("pids", limits.pids.is_some()),
            ("cpu", cpu),
        ];
        for (controller, limited) in wanted {
            let mounted = self.fs.exists(&root.join(controller));
            let joined = limited || (every_controller && mounted);
            if !joined {
                continue;
            }
            let mut dir = root.join(controller);
            for level in parent.components() {
                dir.push(level);
                self.mkdir(dir.clone(), false)?;
            }
            dir.push(name);
            self.mkdir(dir.clone(), true)?;
            match controller {
                "memory" => {
                    if let Some(memory) = limits.memory {
                        let memory = memory.to_string();
                        self.write(dir.join("memory.limit_in_bytes"), &memory)?;
                        // Limit memory+swap to the same total so swap cannot extend the limit.
                        if self.fs.exists(&dir.join("memory.memsw.limit_in_bytes")) {
                            self.write(dir.join("memory.memsw.limit_in_bytes"), &memory)?;
                        }
                    }
                }
                "devices" if restrict_devices => {
                    self.write(dir.join("devices.deny"), "a")?;
                    // One rule per write: the controller parses one a write.
                    let path = dir.join("devices.allow");
                    self.fs
                        .write_each(&path, DEVICE_RULES)
                        .map_err(|source| Error::Cgroup { path, source })?;
                }
                "pids" => {
                    if let Some(pids) = limits.pids {
                        self.write(dir.join("pids.max"), &pids.to_string())?;
                    }
                }
                "cpu" => {
                    if let Some(shares) = limits.cpu_shares {
                        self.write(dir.join("cpu.shares"), &shares.to_string())?;
                    }
                    if let Some((quota, period)) = limits.cpu_quota {
                        self.write(dir.join("cpu.cfs_period_us"), &period.to_string())?;
                        self.write(dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                }
                _ => {}
            }
            self.procs.push(dir.join("cgroup.procs"));
        }
        Ok(())
    }

    /// Removes the cgroup directories, waiting briefly for exiting processes to leave them.
    pub(crate) fn remove(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(dir) = self.dirs.pop() {
            loop {
                match self.fs.remove_dir(&dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => break,
                    Err(err) if Instant::now() >= deadline => {
                        tracing::warn!(path = %dir.display(), error = %err, "cannot remove cgroup");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
    }
}

impl<F: CgroupFs> Drop for Cgroup<F> {
    fn drop(&mut self) {
        self.remove();
    }
}

fn is_cgroupfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|fs| {
        let kind = fs.filesystem_type();
        kind == nix::sys::statfs::CGROUP_SUPER_MAGIC
            || kind == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    })
}

/// Removes the cgroups under `parent` that runs of dead processes left (kiln killed with
/// SIGKILL), once per directory and process, as [`crate::state`] sweeps their bundles. Their
/// processes are gone with them, so each is an empty cgroup that `rmdir` removes.
pub(crate) fn sweep_once(hierarchy: &Hierarchy, parent: &Path) {
    for dir in hierarchy.parent_dirs(parent) {
        if crate::state::first_time(&dir) {
            sweep(&dir);
        }
    }
}

/// Removes the cgroups in `dir` named after a dead process.
fn sweep(dir: &Path) {
    for path in crate::state::left_by_dead_processes(dir) {
        tracing::debug!(path = %path.display(), "removing the cgroup of a dead run");
        if let Err(err) = fs_err::remove_dir(&path) {
            tracing::warn!(error = %err, "cannot remove a dead run's cgroup");
        }
    }
}

#[cfg(test)]
mod tests;
