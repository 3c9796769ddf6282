//! Linux capabilities by name, for `docker run --cap-add/--cap-drop`.

use crate::error::{Error, Result};

/// The capabilities' names in number order (`<linux/capability.h>`), without `CAP_`.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `--cap-add` and `--cap-drop` over a sandboxed container's default set, as docker applies
/// them: drops first (`ALL` drops every one), then adds (`ALL` adds every one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityChanges {
    add: Vec<u32>,
    drop: Vec<u32>,
    add_all: bool,
    drop_all: bool,
}

impl CapabilityChanges {
    /// Parses docker's names (`NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin`, `ALL`).
    pub fn new(add: &[String], drop: &[String]) -> Result<Self> {
        let mut changes = Self::default();
        for (names, list, all) in [
            (add, &mut changes.add, &mut changes.add_all),
            (drop, &mut changes.drop, &mut changes.drop_all),
        ] {
            for name in names {
                match number(name)? {
                    None => *all = true,
                    Some(cap) => list.push(cap),
                }
            }
        }
        Ok(changes)
    }

    /// The capability mask `defaults` with these changes.
    pub(crate) fn apply(&self, defaults: u64, last: u32) -> u64 {
        let mut mask = if self.drop_all { 0 } else { defaults };
        for cap in &self.drop {
            mask &= !(1 << cap);
        }
        if self.add_all {
            mask = (0..=last.min(63)).fold(0, |m, cap| m | 1 << cap);
        }
        for cap in &self.add {
            mask |= 1 << cap;
        }
        mask
    }
}

/// The capability's number; `None` for `ALL`.
fn number(name: &str) -> Result<Option<u32>> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|n| Some(n as u32))
        .ok_or_else(|| Error::UnknownCapability {
            name: name.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_changes_apply_like_docker() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let defaults = 1 << 0 | 1 << 13;
        let changes = CapabilityChanges::new(&v(&["net_admin"]), &v(&["CAP_NET_RAW"])).unwrap();
        assert_eq!(changes.apply(defaults, 40), 1 << 0 | 1 << 12);
        let changes = CapabilityChanges::new(&v(&["CHOWN"]), &v(&["ALL"])).unwrap();
        assert_eq!(changes.apply(defaults, 40), 1);
        let changes = CapabilityChanges::new(&v(&["ALL"]), &[]).unwrap();
        assert_eq!(changes.apply(defaults, 40), (1 << 41) - 1);
        assert_eq!(
            CapabilityChanges::new(&v(&["FLY"]), &[])
                .unwrap_err()
                .to_string(),
            "unknown capability: \"FLY\""
        );
    }
}
