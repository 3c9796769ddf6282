//! The network's leases: which address belongs to which attachment, in one JSON file guarded by
//! an exclusive `flock` on a lock file beside it (held for a whole attach or release, across
//! processes).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::Publish;
use crate::error::{Error, Result};

/// One attachment, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    /// `<pid>-<start time>-<counter>` of the owning process, as the runner's bundles.
    pub(crate) id: String,
    pub(crate) address: Ipv4Addr,
    pub(crate) names: Vec<String>,
    pub(crate) hostname: String,
    pub(crate) extra_hosts: Vec<(String, String)>,
    pub(crate) publish: Vec<Publish>,
    /// Whether its hosts file lists the others.
    #[serde(default)]
    pub(crate) peers: bool,
}

/// The lease file, locked.
pub(crate) struct Leases {
    dir: PathBuf,
    leases: Vec<Lease>,
    _lock: Flock<std::os::fd::OwnedFd>,
}

fn fail(step: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Network {
        step: step.to_owned(),
        source: source.into(),
    }
}

impl Leases {
    /// Locks the network's state in `dir` (created 0700 if missing) and reads its leases.
    pub(crate) fn lock(dir: &Path) -> Result<Self> {
        crate::state::prepare(dir)?;
        for sub in ["ns", "hosts"] {
            let sub = dir.join(sub);
            if !sub.is_dir() {
                fs_err::create_dir(&sub).map_err(fail("create the network's state directory"))?;
            }
        }
        let file: std::os::fd::OwnedFd = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(fail("open the network's lock file"))?
            .into_parts()
            .0
            .into();
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| Error::Network {
                step: "lock the network's state".to_owned(),
                source: std::io::Error::from(errno).into(),
            })?;
        let leases = match fs_err::read(dir.join("leases.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                // Only kiln writes it, atomically; a damaged file loses the leases, and the
                // sweep of namespace files still finds what they held.
                tracing::warn!(error = %err, "the network's lease file is damaged; starting afresh");
                Vec::new()
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(fail("read the network's leases")(err)),
        };
        Ok(Self {
            dir: dir.to_owned(),
            leases,
            _lock: lock,
        })
    }

    pub(crate) fn all(&self) -> &[Lease] {
        &self.leases
    }

    /// The leases whose owning process is gone, and namespace files no lease names (an
    /// attach killed between its steps) as bare leases to release.
    pub(crate) fn dead(&self) -> Vec<Lease> {
        let dead_ids: BTreeSet<String> = crate::state::left_by_dead_processes(&self.dir.join("ns"))
            .into_iter()
            .chain(crate::state::left_by_dead_processes(
                &self.dir.join("hosts"),
            ))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let mut dead: Vec<Lease> = self
            .leases
            .iter()
            .filter(|lease| dead_ids.contains(&lease.id) || owner_gone(&lease.id))
            .cloned()
            .collect();
        for id in dead_ids {
            if !dead.iter().any(|lease| lease.id == id) {
                dead.push(Lease {
                    id,
                    address: Ipv4Addr::UNSPECIFIED,
                    names: Vec::new(),
                    hostname: String::new(),
                    extra_hosts: Vec::new(),
                    publish: Vec::new(),
                    peers: false,
                });
            }
        }
        dead
    }

    /// The lowest address of the subnet that no lease holds (the gateway excluded).
    pub(crate) fn free_address(&self, gateway: Ipv4Addr, prefix: u8) -> Result<Ipv4Addr> {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = u32::from(gateway) & mask;
        let broadcast = network | !mask;
        let taken: BTreeSet<u32> = self.leases.iter().map(|l| u32::from(l.address)).collect();
        (network + 1..broadcast)
            .find(|a| *a != u32::from(gateway) && !taken.contains(a))
            .map(Ipv4Addr::from)
            .ok_or_else(|| Error::Network {
                step: "lease an address".to_owned(),
                source: format!("every address of {gateway}/{prefix} is in use").into(),
            })
    }

    pub(crate) fn insert(&mut self, lease: Lease) -> Result<()> {
        self.leases.push(lease);
        self.save()
    }

    pub(crate) fn remove(&mut self, id: &str) -> Result<()> {
        let before = self.leases.len();
        self.leases.retain(|lease| lease.id != id);
        if self.leases.len() == before {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.leases).map_err(|err| Error::Network {
            step: "record the network's leases".to_owned(),
            source: err.into(),
        })?;
        let temporary = self.dir.join("leases.json.new");
        fs_err::write(&temporary, bytes).map_err(fail("record the network's leases"))?;
        fs_err::rename(&temporary, self.dir.join("leases.json"))
            .map_err(fail("record the network's leases"))
    }
}

/// Whether the process named in a lease id (`<pid>-<start time>-<counter>`) is gone.
fn owner_gone(id: &str) -> bool {
    let mut parts = id.split('-');
    let (Some(pid), Some(start)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return true;
    };
    crate::state::start_time(pid) != Some(start)
}

/// The file a lease's network namespace is bind-mounted on.
pub(crate) fn namespace_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("ns").join(id)
}

/// Unmounts and removes a namespace file (the namespace ends with its last user).
pub(crate) fn remove_namespace(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(err) => {
            tracing::warn!(error = %err, path = %path.display(), "cannot unmount a network namespace")
        }
    }
    match fs_err::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(error = %err, "cannot remove a network namespace file"),
    }
}
