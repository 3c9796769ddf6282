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
//! BuildKit's type `exec.cachemount`.

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use kiln_cache::{CacheKind, CacheRecord, Digest, Store, UsageEntry};

use crate::args::DuArgs;
use crate::format::{human_duration, human_size, table, utc_time};

pub(crate) fn run(root: &Path, args: &DuArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(root)?;
    let usage = Usage::measure(&store).context("measuring disk usage")?;
    let now = now();
    let mut text = if args.verbose {
        let records: HashMap<String, CacheRecord> = store
            .cache_records()
            .context("listing build cache records")?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        verbose(&usage.entries, &records, now)
    } else if usage.entries.is_empty() {
        String::new()
    } else {
        table(&entry_rows(usage.entries.iter(), now))
    };
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&totals(&usage));
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

/// Files by `(device, inode)`, with their sizes: each file once, whatever its names.
pub(crate) type Files = HashMap<(u64, u64), u64>;

/// Adds the regular files and symbolic links under `path` (a file or a directory; a missing
/// one has none) to `files`, in the store's measure ([`kiln_cache::Files`]).
pub(crate) fn add_files(path: &Path, files: &mut Files) -> io::Result<()> {
    let mut found = kiln_cache::Files::new();
    found.add(path)?;
    files.extend(found.iter());
    Ok(())
}

/// The files of the snapshot `key` and the snapshots below it.
pub(crate) fn add_snapshot_files(store: &Store, key: &str, files: &mut Files) -> io::Result<()> {
    for dir in store.lowers(key).map_err(io::Error::other)? {
        add_files(&dir, files)?;
    }
    Ok(())
}

/// Bytes of `files`.
pub(crate) fn bytes(files: &Files) -> u64 {
    files.values().sum()
}

/// What `kiln du` shows: entries with their sizes, and the totals under them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Images, cache records and cache mounts, largest first.
    pub(crate) entries: Vec<UsageEntry>,
    /// Bytes of files more than one entry uses.
    shared: u64,
    /// Bytes of files only build cache records use.
    reclaimable: u64,
    /// Bytes of the distinct files in the store.
    pub(crate) total: u64,
}

impl Usage {
    pub(crate) fn measure(store: &Store) -> anyhow::Result<Self> {
        let blob = |files: &mut Files, digest: &Digest| add_files(&store.blob_path(digest), files);
        let mut measured: Vec<(UsageEntry, Files)> = Vec::new();
        for image in store.images().context("listing images")? {
            let mut files = Files::new();
            for digest in [image.manifest, image.config]
                .iter()
                .chain(image.index.iter())
                .chain(image.layers.iter())
            {
                blob(&mut files, digest)?;
            }
            if let Some(chain) = image.chain_id {
                add_snapshot_files(store, &chain.to_string(), &mut files)?;
            }
            measured.push((
                UsageEntry {
                    kind: "image",
                    id: image.name,
                    size: 0,
                    last_used: image.last_used,
                },
                files,
            ));
        }
        for record in store
            .cache_records()
            .context("listing build cache records")?
        {
            let mut files = Files::new();
            for digest in &record.blobs {
                blob(&mut files, digest)?;
            }
            for key in &record.snapshots {
                add_snapshot_files(store, key, &mut files)?;
            }
            measured.push((
                UsageEntry {
                    kind: "cache",
                    id: record.id,
                    size: 0,
                    last_used: record.last_used,
                },
                files,
            ));
        }
        for name in store.cache_mounts().context("listing cache mounts")? {
            let dir = store.root().join("cache-mounts").join(&name);
            let mut files = Files::new();
            add_files(&dir, &mut files)?;
            let last_used = fs_err::metadata(&dir)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            measured.push((
                UsageEntry {
                    kind: CacheKind::CacheMount.as_str(),
                    id: name,
                    size: 0,
                    last_used,
                },
                files,
            ));
        }
        let total = store.disk_files().context("measuring the store")?.bytes();
        Ok(Self::from_entries(measured, total))
    }

    /// The usage of entries with their files, in a store whose distinct files have `total`
    /// bytes.
    fn from_entries(measured: Vec<(UsageEntry, Files)>, total: u64) -> Self {
        // Per file: how many entries use it, and whether any of them is not reclaimable.
        let mut users: HashMap<(u64, u64), (u64, usize, bool)> = HashMap::new();
        for (entry, files) in &measured {
            for (inode, size) in files {
                let user = users.entry(*inode).or_insert((*size, 0, false));
                user.1 += 1;
                user.2 |= !reclaimable(entry);
            }
        }
        let sum = |keep: &dyn Fn(usize, bool) -> bool| -> u64 {
            users
                .values()
                .filter(|(_, count, kept)| keep(*count, *kept))
                .map(|(size, ..)| size)
                .sum()
        };
        let shared = sum(&|count, _| count > 1);
        let reclaimable = sum(&|_, kept| !kept);
        let mut entries: Vec<UsageEntry> = measured
            .into_iter()
            .map(|(mut entry, files)| {
                entry.size = bytes(&files);
                entry
            })
            .collect();
        entries.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
        Self {
            entries,
            shared: shared.min(total),
            reclaimable: reclaimable.min(total),
            total,
        }
    }
}

/// Whether `kiln prune` can remove the entry.
fn reclaimable(entry: &UsageEntry) -> bool {
    entry.kind == "cache" || entry.kind == CacheKind::CacheMount.as_str()
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
            reclaimable(e).to_string(),
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
        fields.push(("Reclaimable:", reclaimable(entry).to_string()));
        fields.push(("Size:", human_size(entry.size)));
        if let Some(record) = record {
            fields.push(("Description:", record.description.clone()));
        }
        fields.push(("Last used:", last_accessed(entry.last_used, now)));
        fields.push((
            "Type:",
            match entry.kind {
                "cache" => "regular",
                other => other,
            }
            .to_owned(),
        ));
        for (name, value) in fields {
            out.push_str(format!("{name:<14}{value}").trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The lines under the table, worded as `docker buildx du` words them.
fn totals(usage: &Usage) -> String {
    let mut lines = Vec::new();
    if usage.shared > 0 {
        lines.push(("Shared:", usage.shared));
        lines.push(("Private:", usage.total - usage.shared));
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
    fn shared_files_count_once_and_are_summed_as_shared() {
        let files =
            |list: &[(u64, u64)]| -> Files { list.iter().map(|&(i, s)| ((1, i), s)).collect() };
        // The image and a cache record share file 1 (a hard link); the record also has 2.
        let measured = vec![
            (entry("image", "i", 0, 1), files(&[(1, 1_000), (3, 500)])),
            (entry("cache", "c", 0, 1), files(&[(1, 1_000), (2, 200)])),
        ];
        let usage = Usage::from_entries(measured, 1_700);
        assert_eq!(usage.entries[0].size, 1_500);
        assert_eq!(usage.entries[1].size, 1_200);
        assert_eq!(usage.shared, 1_000);
        // Pruning the record frees only what nothing else uses.
        assert_eq!(usage.reclaimable, 200);
        assert_eq!(
            totals(&usage),
            "Shared:       1kB\nPrivate:      700B\nReclaimable:  200B\nTotal:        1.7kB\n"
        );
        let alone = Usage::from_entries(vec![(entry("cache", "c", 0, 1), files(&[(2, 200)]))], 200);
        assert_eq!(totals(&alone), "Reclaimable:  200B\nTotal:        200B\n");
    }

    #[test]
    fn a_file_of_many_names_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("a"), vec![0; 3_000]).unwrap();
        fs_err::create_dir(dir.path().join("bin")).unwrap();
        for name in ["x", "y", "z"] {
            fs_err::hard_link(dir.path().join("a"), dir.path().join("bin").join(name)).unwrap();
        }
        fs_err::write(dir.path().join("b"), "12345").unwrap();
        let mut found = Files::new();
        add_files(dir.path(), &mut found).unwrap();
        assert_eq!(bytes(&found), 3_005);
        add_files(&dir.path().join("missing"), &mut found).unwrap();
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn times_and_units() {
        // `date -u -d @1704067200` is 2024-01-01 00:00:00 UTC.
        assert_eq!(last_accessed(0, 10), "");
    }
}
