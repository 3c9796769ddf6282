//! `kiln du`: what uses space in the store, formatted like `docker buildx du`.
//!
//! Build cache records are reclaimable (`kiln prune` removes them); images are listed too, as
//! not reclaimable, since they hold most of a store's bytes.
//!
//! Sizes count each file once per inode: a stored image's snapshots hard-link the build's
//! files, and a layer may hold several names of one file (busybox's applets). An entry's size
//! is the bytes of the distinct files it uses; files used by more than one entry are summed
//! as `Shared:` (and the rest as `Private:`) under the table, as `docker buildx du` does;
//! `Reclaimable:` is what only build cache records and cache mounts use, and `Total:` the
//! distinct bytes of the store's data ([`Store::disk_files`], the measure `kiln prune`
//! reports what it freed in). Cache mounts (`RUN --mount=type=cache`) are listed with
//! BuildKit's type `exec.cachemount`, and the directories `kiln daemon` receives its clients'
//! local sources into with `source.local` (not reclaimable while a build holds them). `--format json` prints the same numbers in bytes:
//! `{"entries": [{"id", "type", "reclaimable", "size", "lastUsed"}], "shared", "private",
//! "reclaimable", "total"}`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use kiln_cache::{CacheRecord, DiskUsage, Store, UsageEntry};

use crate::args::{DuArgs, UsageFormat};
use crate::format::{human_duration, human_size, table, utc_time};

pub(crate) fn run(root: &Path, args: &DuArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(root)?;
    let usage = store.du().context("measuring disk usage")?;
    let records = if args.verbose {
        store
            .cache_records()
            .context("listing build cache records")?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect()
    } else {
        HashMap::new()
    };
    show(&usage, &records, args)
}

/// Prints `usage` as `args` ask (`records`: the cache records `--verbose` describes).
pub(crate) fn show(
    usage: &DiskUsage,
    records: &HashMap<String, CacheRecord>,
    args: &DuArgs,
) -> anyhow::Result<ExitCode> {
    if args.format == UsageFormat::Json {
        let document = serde_json::json!({
            "entries": usage.entries.iter().map(entry_json).collect::<Vec<_>>(),
            "shared": usage.shared,
            "private": usage.private(),
            "reclaimable": usage.reclaimable,
            "total": usage.total,
        });
        return write_stdout(&format!("{document}\n"));
    }
    let now = now();
    let mut text = if args.verbose {
        verbose(&usage.entries, records, now)
    } else if usage.entries.is_empty() {
        String::new()
    } else {
        table(&entry_rows(usage.entries.iter(), now))
    };
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&totals(usage));
    write_stdout(&text)
}

pub(crate) fn open_store(root: &Path) -> anyhow::Result<Store> {
    Store::open(root).with_context(|| format!("opening the store at {}", root.display()))
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `text` to stdout; a closed pipe ends the output quietly.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

/// BuildKit's name of an entry's type (`regular` for a build cache record).
fn type_name(entry: &UsageEntry) -> &'static str {
    match entry.kind {
        "cache" => "regular",
        other => other,
    }
}

/// An entry as `--format json` prints it: sizes in bytes, times in seconds since the epoch.
pub(crate) fn entry_json(entry: &UsageEntry) -> serde_json::Value {
    serde_json::json!({
        "id": entry.id,
        "type": type_name(entry),
        "reclaimable": entry.reclaimable(),
        "size": entry.size,
        "lastUsed": entry.last_used,
    })
}

/// The header and one row per entry: ID, RECLAIMABLE, SIZE, LAST ACCESSED.
pub(crate) fn entry_rows<'a>(
    entries: impl Iterator<Item = &'a UsageEntry>,
    now: u64,
) -> Vec<[String; 4]> {
    let mut rows = vec![[
        "ID".to_owned(),
        "RECLAIMABLE".to_owned(),
        "SIZE".to_owned(),
        "LAST ACCESSED".to_owned(),
    ]];
    rows.extend(entries.map(|e| {
        [
            e.id.clone(),
            e.reclaimable().to_string(),
            human_size(e.size),
            last_accessed(e.last_used, now),
        ]
    }));
    rows
}

fn last_accessed(last_used: u64, now: u64) -> String {
    if last_used == 0 {
        String::new()
    } else {
        format!("{} ago", human_duration(now.saturating_sub(last_used)))
    }
}

fn verbose(entries: &[UsageEntry], records: &HashMap<String, CacheRecord>, now: u64) -> String {
    let mut out = String::new();
    for entry in entries {
        let record = records.get(&entry.id);
        let mut fields = vec![("ID:", entry.id.clone())];
        if let Some(record) = record {
            fields.push(("Created at:", utc_time(record.created)));
        }
        fields.push(("Reclaimable:", entry.reclaimable().to_string()));
        fields.push(("Size:", human_size(entry.size)));
        if let Some(record) = record {
            fields.push(("Description:", record.description.clone()));
        } else if !entry.description.is_empty() {
            fields.push(("Description:", entry.description.clone()));
        }
        fields.push(("Last used:", last_accessed(entry.last_used, now)));
        fields.push(("Type:", type_name(entry).to_owned()));
        for (name, value) in fields {
            out.push_str(format!("{name:<14}{value}").trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The lines under the table, worded as `docker buildx du` words them.
fn totals(usage: &DiskUsage) -> String {
    let mut lines = Vec::new();
    if usage.shared > 0 {
        lines.push(("Shared:", usage.shared));
        lines.push(("Private:", usage.private()));
    }
    lines.push(("Reclaimable:", usage.reclaimable));
    lines.push(("Total:", usage.total));
    lines
        .into_iter()
        .map(|(name, size)| format!("{name:<14}{}\n", human_size(size)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &'static str, id: &str, size: u64, last_used: u64) -> UsageEntry {
        UsageEntry {
            kind,
            id: id.to_owned(),
            size,
            last_used,
            ..UsageEntry::default()
        }
    }

    #[test]
    fn table_like_buildx_du() {
        let entries = [
            entry(
                "image",
                "docker.io/library/busybox:latest",
                4_261_000,
                1_000_000,
            ),
            entry("cache", "sha256:ab", 123_456, 1_000_000 - 3 * 86_400),
        ];
        let text = table(&entry_rows(entries.iter(), 1_000_000 + 30));
        assert_eq!(
            text,
            "ID                                 RECLAIMABLE   SIZE     LAST ACCESSED\n\
             docker.io/library/busybox:latest   false         4.26MB   30 seconds ago\n\
             sha256:ab                          true          123kB    3 days ago\n"
        );
    }

    #[test]
    fn shared_and_reclaimable_totals_like_buildx_du() {
        // An image and a cache record sharing 1 kB (kiln_cache's du measures this).
        let usage = DiskUsage {
            entries: vec![entry("image", "i", 1_500, 1), entry("cache", "c", 1_200, 1)],
            shared: 1_000,
            reclaimable: 200,
            total: 1_700,
        };
        assert_eq!(
            totals(&usage),
            "Shared:       1kB\nPrivate:      700B\nReclaimable:  200B\nTotal:        1.7kB\n"
        );
        let alone = DiskUsage {
            entries: vec![entry("cache", "c", 200, 1)],
            shared: 0,
            reclaimable: 200,
            total: 200,
        };
        assert_eq!(totals(&alone), "Reclaimable:  200B\nTotal:        200B\n");
    }

    #[test]
    fn times_and_units() {
        // `date -u -d @1704067200` is 2024-01-01 00:00:00 UTC.
        assert_eq!(last_accessed(0, 10), "");
    }
}
