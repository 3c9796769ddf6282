//! Garbage collection policies, as BuildKit's `buildkitd.toml` has them, and the sizes and
//! durations `kiln prune` and the configuration file take.
//!
//! ```toml
//! [gc]
//! enabled = true
//! # Defaults of the policies BuildKit makes when none is given (see GcConfig::policies).
//! reserved-space = "2GB"
//!
//! [[gc.policy]]
//! filters = ["type==exec.cachemount"]
//! keep-duration = "48h"
//! max-used-space = "512MB"
//!
//! [[gc.policy]]
//! all = true
//! max-used-space = "10GB"
//! ```
//!
//! # Overview
//! 1. Policies apply in order, each a prune of the records its filters select (not those a
//!    live lease holds), least recently used first.
//! 2. A policy with a space setting prunes only while the records it selects take more than
//!    its limit, BuildKit's `calculateKeepBytes`: `max-used-space` (or, without it, what is
//!    used), lowered so that the file system gets `min-free-space` free, but never below
//!    `reserved-space`. With `keep-duration` too, only records unused that long go.
//! 3. A policy with `keep-duration` alone removes every record unused that long.
//! 4. Sizes are bytes (`512MB`, `10GB`, binary units as docker's) or a percentage of the
//!    store's file system (`10%`, rounded up to whole gigabytes as BuildKit does); BuildKit's
//!    camelCase keys (`keepDuration`, `maxUsedSpace`, `keepBytes`) are accepted too.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, ValueError};
use crate::gc::{CacheKind, PruneOptions, PruneReport};
use crate::store::Store;

/// An amount of disk space: bytes, or a percentage of the store's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSpace {
    /// This many bytes.
    Bytes(u64),
    /// This percentage of the file system's size.
    Percent(u64),
}

impl DiskSpace {
    /// Parses `10GB`, `512mb`, `2048` (bytes) or `10%`.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        match text.trim().strip_suffix('%') {
            Some(number) => number
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .map(Self::Percent)
                .ok_or_else(|| ValueError::Percentage {
                    text: text.to_owned(),
                }),
            None => parse_size(text).map(Self::Bytes),
        }
    }

    /// The bytes this is on a file system of `disk_size` bytes (BuildKit rounds a percentage
    /// up to whole gigabytes).
    pub fn bytes(self, disk_size: u64) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Percent(0) => 0,
            Self::Percent(percent) => {
                let share = disk_size / 100 * percent;
                (share / (1 << 30) + 1) * 1_000_000_000
            }
        }
    }
}

impl<'de> Deserialize<'de> for DiskSpace {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(Self::Bytes(bytes)),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration in the configuration: a Go duration (`48h`) or seconds (`172800`), as BuildKit
/// reads `keepDuration`.
fn deserialize_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Ok(Some(Duration::from_secs(seconds))),
        Raw::Text(text) => match text.parse::<u64>() {
            Ok(seconds) => Ok(Some(Duration::from_secs(seconds))),
            Err(_) => parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        },
    }
}

/// The cache types a policy's filters select, by BuildKit's names; kiln keeps `regular`
/// records and `exec.cachemount` directories (BuildKit's other types select nothing here).
const CACHE_TYPES: [&str; 6] = [
    "regular",
    "exec.cachemount",
    "source.local",
    "source.git.checkout",
    "internal",
    "frontend",
];

/// Parses BuildKit's filters (`type==exec.cachemount`, several per string separated by commas)
/// into the cache types they name.
fn deserialize_filters<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    let filters = Vec::<String>::deserialize(deserializer)?;
    let mut types = Vec::new();
    for filter in filters.iter().flat_map(|f| f.split(',')) {
        let filter = filter.trim();
        let value = filter
            .strip_prefix("type==")
            .or_else(|| filter.strip_prefix("type="))
            .ok_or_else(|| {
                serde::de::Error::custom(ValueError::Filter {
                    filter: filter.to_owned(),
                })
            })?;
        if !CACHE_TYPES.contains(&value) {
            return Err(serde::de::Error::custom(ValueError::CacheType {
                value: value.to_owned(),
            }));
        }
        types.push(value.to_owned());
    }
    Ok(types)
}

/// One `[[gc.policy]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GcPolicy {
    /// Every kind of record (BuildKit: also internal ones); without filters, the same.
    pub all: bool,
    /// The cache types this policy prunes (`type==exec.cachemount`); none: every type.
    #[serde(deserialize_with = "deserialize_filters")]
    pub filters: Vec<String>,
    /// Only records unused this long go.
    #[serde(alias = "keepDuration", deserialize_with = "deserialize_duration")]
    pub keep_duration: Option<Duration>,
    /// Space the cache may always keep (BuildKit's `keepBytes`, `kiln prune --keep-storage`).
    #[serde(alias = "reservedSpace", alias = "keepBytes", alias = "keep-bytes")]
    pub reserved_space: Option<DiskSpace>,
    /// The most space the cache may use.
    #[serde(alias = "maxUsedSpace")]
    pub max_used_space: Option<DiskSpace>,
    /// Free space the file system should have after pruning.
    #[serde(alias = "minFreeSpace")]
    pub min_free_space: Option<DiskSpace>,
}

/// The `[gc]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GcConfig {
    /// Collect after every build.
    pub enabled: bool,
    /// The policies, in order; none: BuildKit's defaults.
    pub policy: Vec<GcPolicy>,
    /// The default policies' `reserved-space` (BuildKit's `reservedSpace`).
    #[serde(alias = "reservedSpace", alias = "keepStorage", alias = "keep-storage")]
    pub reserved_space: Option<DiskSpace>,
    /// The default policies' `max-used-space`.
    #[serde(alias = "maxUsedSpace")]
    pub max_used_space: Option<DiskSpace>,
    /// The default policies' `min-free-space`.
    #[serde(alias = "minFreeSpace")]
    pub min_free_space: Option<DiskSpace>,
}

impl GcConfig {
    /// The policies to apply: those configured, else BuildKit's defaults (`DefaultGCPolicy`):
    /// cache mounts unused for 48 hours beyond 512 MB, then anything unused for 60 days beyond
    /// the caps, then anything beyond the caps. The caps are those of `[gc]`, else BuildKit's
    /// detected ones on a file system of `disk_size` bytes: reserve 10% (at most 10 GB), use
    /// at most 80% (at most 100 GB), keep 20% free.
    pub fn policies(&self, disk_size: u64) -> Vec<GcPolicy> {
        if !self.policy.is_empty() {
            return self.policy.clone();
        }
        let capped = |space: DiskSpace, cap: u64| {
            if space.bytes(disk_size) > cap {
                DiskSpace::Bytes(cap)
            } else {
                space
            }
        };
        let (reserved, max_used, min_free) = if self.reserved_space.is_none()
            && self.max_used_space.is_none()
            && self.min_free_space.is_none()
        {
            (
                Some(capped(DiskSpace::Percent(10), 10_000_000_000)),
                Some(capped(DiskSpace::Percent(80), 100_000_000_000)),
                Some(DiskSpace::Percent(20)),
            )
        } else {
            (
                self.reserved_space,
                self.max_used_space,
                self.min_free_space,
            )
        };
        let capped_policy = |keep_duration, all| GcPolicy {
            all,
            filters: Vec::new(),
            keep_duration,
            reserved_space: reserved,
            max_used_space: max_used,
            min_free_space: min_free,
        };
        vec![
            GcPolicy {
                filters: ["source.local", "exec.cachemount", "source.git.checkout"]
                    .map(str::to_owned)
                    .to_vec(),
                keep_duration: Some(Duration::from_secs(48 * 3600)),
                max_used_space: Some(DiskSpace::Bytes(512_000_000)),
                ..GcPolicy::default()
            },
            capped_policy(Some(Duration::from_secs(60 * 24 * 3600)), false),
            capped_policy(None, false),
            capped_policy(None, true),
        ]
    }
}

impl GcPolicy {
    /// Whether the policy selects `kind`.
    fn selects(&self, kind: CacheKind) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| f == kind.as_str())
    }

    /// The prune this policy makes on a file system of `disk_size` bytes.
    pub fn prune_options(&self, disk_size: u64) -> PruneOptions {
        let bytes = |space: Option<DiskSpace>| space.map(|s| s.bytes(disk_size));
        let (reserved, max_used, min_free) = (
            bytes(self.reserved_space),
            bytes(self.max_used_space),
            bytes(self.min_free_space),
        );
        let limited = reserved.is_some() || max_used.is_some() || min_free.is_some();
        PruneOptions {
            all: false,
            older_than: if limited { None } else { self.keep_duration },
            keep_duration: if limited { self.keep_duration } else { None },
            keep_bytes: None,
            reserved_space: reserved,
            max_used_space: max_used,
            min_free_space: min_free,
            kind: match (
                self.selects(CacheKind::Regular),
                self.selects(CacheKind::CacheMount),
            ) {
                (false, true) => Some(CacheKind::CacheMount),
                (true, false) => Some(CacheKind::Regular),
                _ => None,
            },
        }
    }
}

/// The bytes a prune keeps of `total` (BuildKit's `calculateKeepBytes`): `None` when no space
/// setting is given (no limit), else `max_used` (or `total`), lowered by what the file system
/// lacks of `min_free` given `free` bytes, but not below `reserved`.
pub(crate) fn keep_limit(
    total: u64,
    free: u64,
    reserved: Option<u64>,
    max_used: Option<u64>,
    min_free: Option<u64>,
) -> Option<u64> {
    if reserved.is_none() && max_used.is_none() && min_free.is_none() {
        return None;
    }
    let mut keep = max_used;
    if let Some(min_free) = min_free {
        let excess = min_free.saturating_sub(free);
        keep = Some(match keep {
            _ if excess == 0 => keep.unwrap_or(total),
            None => total.saturating_sub(excess),
            Some(keep) => keep.min(total.saturating_sub(excess)),
        });
    }
    Some(keep.unwrap_or(0).max(reserved.unwrap_or(0)))
}

/// The size and free bytes of the file system holding `path`.
pub(crate) fn disk_stat(path: &Path) -> Result<(u64, u64), Error> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|errno| Error::Statfs {
        path: path.to_owned(),
        source: std::io::Error::from(errno),
    })?;
    let block = stat.fragment_size();
    Ok((
        stat.blocks().saturating_mul(block),
        stat.blocks_available().saturating_mul(block),
    ))
}

impl Store {
    /// The size in bytes of the file system holding the store, which percentages of `[gc]`
    /// are of.
    pub fn disk_size(&self) -> Result<u64, Error> {
        Ok(disk_stat(self.root())?.0)
    }

    /// Applies the policies of `gc` ([`GcConfig::policies`] on the store's file system).
    pub fn apply_gc_config(&self, gc: &GcConfig) -> Result<Vec<PruneReport>, Error> {
        let (disk_size, _) = disk_stat(self.root())?;
        self.apply_gc_policies(&gc.policies(disk_size))
    }

    /// Applies `policies` in order (see the module's overview); returns what each removed.
    pub fn apply_gc_policies(&self, policies: &[GcPolicy]) -> Result<Vec<PruneReport>, Error> {
        let (disk_size, free) = disk_stat(self.root())?;
        let mut reports = Vec::new();
        for policy in policies {
            let options = policy.prune_options(disk_size);
            // Cache mounts go all at once (kiln keeps no record of their use): only when
            // those a policy selects alone take more than its limit.
            if options.kind == Some(CacheKind::CacheMount) {
                let total: u64 = self
                    .du()?
                    .entries
                    .iter()
                    .filter(|e| e.kind == CacheKind::CacheMount.as_str())
                    .map(|e| e.size)
                    .sum();
                let limit = keep_limit(
                    total,
                    free,
                    options.reserved_space,
                    options.max_used_space,
                    options.min_free_space,
                );
                if limit.is_none_or(|limit| total <= limit) {
                    continue;
                }
            }
            reports.push(self.prune(&options)?);
        }
        Ok(reports)
    }
}

/// A Go duration (`24h`, `1h30m`, `90s`, `1.5h`, `500ms`), as docker's filters take.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(ValueError::EmptyDuration);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| ValueError::NoNumber {
                text: rest.to_owned(),
            })?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(ValueError::DurationUnit {
                    unit: unit.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| ValueError::OutOfRange {
        text: text.to_owned(),
    })
}

/// A size like docker's `--keep-storage`: a number with an optional binary unit (`512mb`,
/// `10GB`, `1.5g`, `2048`).
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let lower = text.trim().to_ascii_lowercase();
    let number_len = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..number_len]
        .parse()
        .map_err(|_| ValueError::NoNumber {
            text: text.to_owned(),
        })?;
    let unit = lower[number_len..].trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => {
            return Err(ValueError::SizeUnit {
                text: text.to_owned(),
            });
        }
    };
    let bytes = number * 1024f64.powi(power);
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(ValueError::OutOfRange {
            text: text.to_owned(),
        });
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "range checked above; fractions of a byte are dropped"
    )]
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests;
