//! Per-run cgroups: v2 where the unified hierarchy has controllers, v1 otherwise.
//!
//! These are a handful of file writes, done here rather than through cgroups-rs or libcgroups:
//! the container joins its cgroup from the forked child with a bare `open`+`write` of
//! `cgroup.procs` (paths prepared before the fork), so all the runner needs is to create the
//! directory, write the limits and remove it afterwards.

use std::io;
use std::path::{Path, PathBuf};
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
}

/// A created cgroup; [`Cgroup::remove`] deletes it.
#[derive(Debug)]
pub(crate) struct Cgroup {
    /// Directories created, removed in reverse order.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` files the container writes itself into.
    pub(crate) procs: Vec<PathBuf>,
}

fn write(path: PathBuf, value: &str) -> Result<()> {
    fs_err::write(&path, value).map_err(|source| Error::Cgroup { path, source })
}

fn mkdir(path: &Path) -> Result<()> {
    match fs_err::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(source) => Err(Error::Cgroup {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Device access a container gets (cgroup v1 `devices.allow` lines), as Docker grants it:
/// creating any node is allowed (`m`), but only these can be opened. Without this, root with
/// Docker's `CAP_MKNOD` could create and open the host's disks.
pub(crate) const DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

impl Hierarchy {
    /// Whether device access can be restricted (the v1 `devices` controller is mounted). On
    /// v2 that takes an eBPF program, which the runner does not load yet.
    pub(crate) fn restricts_devices(&self) -> bool {
        matches!(self, Self::V1(root) if root.join("devices").is_dir())
    }
}

/// Writes each rule with its own `write(2)`, as the devices controller parses one per write
/// (appending keeps them all visible in a plain directory, for tests).
fn write_rules(path: PathBuf, rules: &[&str]) -> Result<()> {
    use std::io::Write;
    let mut file = fs_err::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|source| Error::Cgroup {
            path: path.clone(),
            source,
        })?;
    for rule in rules {
        file.write_all(format!("{rule}\n").as_bytes())
            .map_err(|source| Error::Cgroup {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}

/// cgroup v2 `cpu.weight` for a v1 `cpu.shares` value (the conversion runc and crun use).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl Cgroup {
    /// Creates `<parent>/<name>` in `hierarchy` with `limits`, and with Docker's device rules
    /// if `restrict_devices` (see [`Hierarchy::restricts_devices`]).
    pub(crate) fn create(
        hierarchy: &Hierarchy,
        parent: &str,
        name: &str,
        limits: &Resources,
        restrict_devices: bool,
    ) -> Result<Self> {
        let mut cgroup = Self {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        let result = match hierarchy {
            Hierarchy::V2(root) => cgroup.create_v2(root, parent, name, limits),
            Hierarchy::V1(root) => cgroup.create_v1(root, parent, name, limits, restrict_devices),
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

    fn create_v2(
        &mut self,
        root: &Path,
        parent: &str,
        name: &str,
        limits: &Resources,
    ) -> Result<()> {
        let available = fs_err::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<&str> = ["cpu", "memory", "pids"]
            .into_iter()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect();
        let enable = wanted
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        let parent_dir = root.join(parent);
        mkdir(&parent_dir)?;
        if !enable.is_empty() {
            write(root.join("cgroup.subtree_control"), &enable)?;
            write(parent_dir.join("cgroup.subtree_control"), &enable)?;
        }
        let dir = parent_dir.join(name);
        mkdir(&dir)?;
        self.dirs.push(dir.clone());
        if let Some(memory) = limits.memory {
            write(dir.join("memory.max"), &memory.to_string())?;
            if dir.join("memory.swap.max").exists() {
                write(dir.join("memory.swap.max"), "0")?;
            }
        }
        if let Some(pids) = limits.pids {
            write(dir.join("pids.max"), &pids.to_string())?;
        }
        if let Some(shares) = limits.cpu_shares {
            write(
                dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if let Some((quota, period)) = limits.cpu_quota {
            write(dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        self.procs.push(dir.join("cgroup.procs"));
        Ok(())
    }

    fn create_v1(
        &mut self,
        root: &Path,
        parent: &str,
        name: &str,
        limits: &Resources,
        restrict_devices: bool,
    ) -> Result<()> {
        let mut controllers = Vec::new();
        if restrict_devices {
            controllers.push("devices");
        }
        if limits.memory.is_some() {
            controllers.push("memory");
        }
        if limits.pids.is_some() {
            controllers.push("pids");
        }
        if limits.cpu_shares.is_some() || limits.cpu_quota.is_some() {
            controllers.push("cpu");
        }
        for controller in controllers {
            let dir = root.join(controller).join(parent).join(name);
            mkdir(&dir)?;
            self.dirs.push(dir.clone());
            match controller {
                "memory" => {
                    let memory = limits.memory.unwrap_or_default().to_string();
                    write(dir.join("memory.limit_in_bytes"), &memory)?;
                    // Limit memory+swap to the same total so swap cannot extend the limit.
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        write(dir.join("memory.memsw.limit_in_bytes"), &memory)?;
                    }
                }
                "devices" => {
                    write(dir.join("devices.deny"), "a")?;
                    write_rules(dir.join("devices.allow"), DEVICE_RULES)?;
                }
                "pids" => write(
                    dir.join("pids.max"),
                    &limits.pids.unwrap_or_default().to_string(),
                )?,
                _ => {
                    if let Some(shares) = limits.cpu_shares {
                        write(dir.join("cpu.shares"), &shares.to_string())?;
                    }
                    if let Some((quota, period)) = limits.cpu_quota {
                        write(dir.join("cpu.cfs_period_us"), &period.to_string())?;
                        write(dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                }
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
                match fs_err::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => break,
                    // A fake cgroupfs (a plain directory) holds the files we wrote.
                    Err(_) if !is_cgroupfs(&dir) => {
                        let _ = fs_err::remove_dir_all(&dir);
                        break;
                    }
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

impl Drop for Cgroup {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        fs_err::read_to_string(path).unwrap()
    }

    #[test]
    fn v2_writes_limits_and_enables_controllers() {
        let root = tempfile::tempdir().unwrap();
        fs_err::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        assert_eq!(
            Hierarchy::detect(root.path()),
            Hierarchy::V2(root.path().to_owned())
        );
        let limits = Resources {
            memory: Some(64 << 20),
            pids: Some(32),
            cpu_shares: Some(1024),
            cpu_quota: Some((50_000, 100_000)),
        };
        let dir = root.path().join("kiln/run1");
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::write(dir.join("memory.swap.max"), "max").unwrap();
        let mut cgroup = Cgroup::create(
            &Hierarchy::V2(root.path().to_owned()),
            "kiln",
            "run1",
            &limits,
            false,
        )
        .unwrap();
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(&root.path().join("kiln/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(read(&dir.join("memory.max")), "67108864");
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "32");
        // runc maps the default 1024 shares to weight 39.
        assert_eq!(read(&dir.join("cpu.weight")), "39");
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
        assert_eq!(cgroup.procs, vec![dir.join("cgroup.procs")]);
        cgroup.remove();
        assert!(!dir.exists());
    }

    #[test]
    fn v2_skips_missing_controllers() {
        let root = tempfile::tempdir().unwrap();
        fs_err::write(root.path().join("cgroup.controllers"), "memory\n").unwrap();
        let limits = Resources {
            memory: Some(1 << 20),
            ..Resources::default()
        };
        let _cgroup = Cgroup::create(
            &Hierarchy::V2(root.path().to_owned()),
            "kiln",
            "x",
            &limits,
            false,
        )
        .unwrap();
        assert_eq!(read(&root.path().join("cgroup.subtree_control")), "+memory");
    }

    #[test]
    fn v1_writes_per_controller() {
        let root = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "cpu", "devices"] {
            fs_err::create_dir_all(root.path().join(c)).unwrap();
        }
        fs_err::write(root.path().join("cgroup.controllers"), "").unwrap();
        assert_eq!(
            Hierarchy::detect(root.path()),
            Hierarchy::V1(root.path().to_owned())
        );
        let limits = Resources {
            memory: Some(1 << 20),
            pids: Some(7),
            cpu_shares: Some(512),
            cpu_quota: Some((25_000, 50_000)),
        };
        let mut cgroup = Cgroup::create(
            &Hierarchy::V1(root.path().to_owned()),
            "kiln",
            "r",
            &limits,
            true,
        )
        .unwrap();
        assert_eq!(
            read(&root.path().join("memory/kiln/r/memory.limit_in_bytes")),
            "1048576"
        );
        assert_eq!(read(&root.path().join("pids/kiln/r/pids.max")), "7");
        assert_eq!(read(&root.path().join("cpu/kiln/r/cpu.shares")), "512");
        assert_eq!(
            read(&root.path().join("cpu/kiln/r/cpu.cfs_quota_us")),
            "25000"
        );
        assert_eq!(
            read(&root.path().join("cpu/kiln/r/cpu.cfs_period_us")),
            "50000"
        );
        assert_eq!(read(&root.path().join("devices/kiln/r/devices.deny")), "a");
        let allowed = read(&root.path().join("devices/kiln/r/devices.allow"));
        assert!(
            allowed.starts_with("c *:* m\nb *:* m\nc 1:3 rwm\n"),
            "{allowed}"
        );
        assert!(allowed.ends_with("c 136:* rwm\n"), "{allowed}");
        assert!(Hierarchy::V1(root.path().to_owned()).restricts_devices());
        assert_eq!(cgroup.procs.len(), 4);
        cgroup.remove();
        assert!(!root.path().join("memory/kiln/r").exists());
    }

    #[test]
    fn nothing_mounted() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(Hierarchy::detect(root.path()), Hierarchy::Unavailable);
    }
}
