//! Options of a tmpfs mount: the mount flags and tmpfs's own settings, written as `mount -o`
//! and `docker run --tmpfs PATH:OPTIONS` take them (`size=64m,mode=1777,noexec`).
//!
//! Docker's rules: every option is either a mount flag (`ro`, `noexec`, `nosuid`, ...: the
//! later of two opposites wins) or one of tmpfs's settings `size`, `mode`, `uid`, `gid`,
//! `nr_inodes`, `nr_blocks` and `mpol` (the later value wins); anything else is refused
//! before the container starts. Flags that make no sense on a fresh tmpfs (`bind`, `remount`,
//! propagation other than private) are refused too, and values are checked for what the
//! kernel accepts, so a typo is an error naming the option rather than `EINVAL` from `mount`.

use nix::mount::MsFlags;

use crate::error::{Error, Result};

/// The flags an option sets (`true`) or clears (`false`).
const FLAGS: &[(&str, MsFlags, bool)] = &[
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("diratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("norelatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("nostrictatime", MsFlags::MS_STRICTATIME, false),
];

/// Options Docker accepts that change nothing here: the mount is private to the container's
/// mount namespace already, and `defaults` names no setting.
const NO_OPS: &[&str] = &["defaults", "private", "rprivate"];

/// Options Docker passes on that kiln refuses: they bind, remount or share mounts, which a
/// fresh tmpfs inside a private namespace has no use for.
const REFUSED: &[&str] = &[
    "bind",
    "rbind",
    "remount",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
    "mand",
    "nomand",
];

/// Whether a setting's value is one tmpfs accepts.
type Check = fn(&str) -> bool;

/// tmpfs's own settings and how their values are checked.
const SETTINGS: &[(&str, Check)] = &[
    ("size", |v| is_amount(v, true)),
    ("mode", |v| {
        !v.is_empty() && v.len() <= 4 && v.bytes().all(|b| (b'0'..=b'7').contains(&b))
    }),
    ("uid", is_id),
    ("gid", is_id),
    ("nr_inodes", |v| is_amount(v, false)),
    ("nr_blocks", |v| is_amount(v, false)),
    ("mpol", |v| {
        let policy = v.split_once(':').map_or(v, |(p, _)| p);
        ["default", "prefer", "bind", "interleave", "local"].contains(&policy)
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":,-=".contains(&b))
    }),
];

/// A number with an optional `k`, `m`, `g`, `t`, `p` or `e` suffix (and, for sizes, a
/// percentage of memory), as tmpfs reads it.
fn is_amount(value: &str, percent: bool) -> bool {
    let digits = value
        .strip_suffix(|c: char| "kKmMgGtTpPeE".contains(c))
        .or_else(|| value.strip_suffix('%').filter(|_| percent))
        .unwrap_or(value);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_id(value: &str) -> bool {
    value.parse::<u32>().is_ok()
}

/// Options of a [`Mount::Tmpfs`](crate::Mount::Tmpfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsOptions {
    flags: MsFlags,
    /// `key=value` settings, each key once, in the order first given.
    settings: Vec<(String, String)>,
}

impl Default for TmpfsOptions {
    /// What a build step's tmpfs gets (BuildKit's): `nosuid,nodev,mode=1777`.
    fn default() -> Self {
        Self {
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            settings: vec![("mode".to_owned(), "1777".to_owned())],
        }
    }
}

impl TmpfsOptions {
    /// `docker run --tmpfs PATH:OPTIONS`: Docker's defaults (`noexec,nosuid,nodev`) with
    /// `options` (comma-separated, possibly empty) applied over them.
    pub fn docker(options: &str) -> Result<Self> {
        Self {
            flags: MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            settings: Vec::new(),
        }
        .with(options)
    }

    /// These options with `options` (comma-separated) applied over them, in order.
    pub fn with(mut self, options: &str) -> Result<Self> {
        for option in options.split(',').filter(|o| !o.is_empty()) {
            self.apply(option)?;
        }
        Ok(self)
    }

    /// A size limit in bytes.
    pub fn size(mut self, bytes: u64) -> Self {
        self.set("size", bytes.to_string());
        self
    }

    /// Read-only or not.
    pub fn readonly(mut self, readonly: bool) -> Self {
        self.flags.set(MsFlags::MS_RDONLY, readonly);
        self
    }

    fn apply(&mut self, option: &str) -> Result<()> {
        let invalid = |reason: &'static str| Error::TmpfsOption {
            option: option.to_owned(),
            reason,
        };
        if let Some(&(_, flag, on)) = FLAGS.iter().find(|(name, ..)| *name == option) {
            self.flags.set(flag, on);
            return Ok(());
        }
        if NO_OPS.contains(&option) {
            return Ok(());
        }
        if REFUSED.contains(&option) {
            return Err(invalid("not supported on a tmpfs"));
        }
        let Some((key, value)) = option.split_once('=') else {
            return Err(invalid("unknown option"));
        };
        let Some((_, valid)) = SETTINGS.iter().find(|(name, _)| *name == key) else {
            return Err(invalid("unknown option"));
        };
        if !valid(value) {
            return Err(invalid("invalid value"));
        }
        self.set(key, value.to_owned());
        Ok(())
    }

    fn set(&mut self, key: &str, value: String) {
        match self.settings.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.settings.push((key.to_owned(), value)),
        }
    }

    /// The mount flags.
    pub(crate) fn flags(&self) -> MsFlags {
        self.flags
    }

    /// The mount's data argument (`size=...,mode=...`), `None` when there are no settings.
    pub(crate) fn data(&self) -> Option<String> {
        (!self.settings.is_empty()).then(|| {
            self.settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(options: &str) -> String {
        TmpfsOptions::docker(options).unwrap_err().to_string()
    }

    #[test]
    fn docker_defaults_and_overrides() {
        let plain = TmpfsOptions::docker("").unwrap();
        assert_eq!(
            plain.flags(),
            MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
        );
        assert_eq!(plain.data(), None);

        let options = TmpfsOptions::docker("size=64m,mode=1770,exec,ro,uid=1000,size=1g").unwrap();
        assert_eq!(
            options.flags(),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        // The later size wins, in the place of the first.
        assert_eq!(
            options.data().as_deref(),
            Some("size=1g,mode=1770,uid=1000")
        );
        // The later of two opposite flags wins; no-op options change nothing.
        let options = TmpfsOptions::docker("ro,rw,defaults,rprivate,noatime").unwrap();
        assert_eq!(
            options.flags(),
            MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME
        );
        assert!(TmpfsOptions::docker("size=50%,nr_inodes=1k,mpol=bind:0-3,gid=0").is_ok());
    }

    #[test]
    fn build_step_defaults() {
        let options = TmpfsOptions::default().size(1 << 20).readonly(true);
        assert_eq!(
            options.flags(),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY
        );
        assert_eq!(options.data().as_deref(), Some("mode=1777,size=1048576"));
    }

    #[test]
    fn unknown_options_and_bad_values_are_refused() {
        assert_eq!(
            error("size=64m,colour=red"),
            "invalid tmpfs option \"colour=red\": unknown option"
        );
        assert_eq!(
            error("nosuchflag"),
            "invalid tmpfs option \"nosuchflag\": unknown option"
        );
        assert_eq!(
            error("size=lots"),
            "invalid tmpfs option \"size=lots\": invalid value"
        );
        assert_eq!(
            error("mode=0999"),
            "invalid tmpfs option \"mode=0999\": invalid value"
        );
        assert_eq!(
            error("uid=-1"),
            "invalid tmpfs option \"uid=-1\": invalid value"
        );
        assert_eq!(
            error("nr_inodes=10%"),
            "invalid tmpfs option \"nr_inodes=10%\": invalid value"
        );
        assert_eq!(
            error("rshared"),
            "invalid tmpfs option \"rshared\": not supported on a tmpfs"
        );
        assert_eq!(
            error("size="),
            "invalid tmpfs option \"size=\": invalid value"
        );
    }
}
