//! `kiln prune`: remove build cache, like `docker buildx prune`.
//!
//! Without options only unreferenced data goes (the garbage collection that follows every
//! prune); `--all` removes every build cache record and cache mount, `--filter until=DURATION`
//! the records unused for that long, `--filter type=exec.cachemount` only the cache mounts
//! (`type=regular` only the records, `type=source.local` only the directories a daemon
//! received its clients' local sources into, which any prune of no other type removes when
//! no build holds them), and `--keep-storage` then the least recently used
//! records until the rest fit; `--reserved-space`, `--max-used-space` and `--min-free-space`
//! limit them as BuildKit's garbage collection policies do (`kiln_cache::GcPolicy`). Images are never removed, nor anything a running build holds.
//! What killed kiln processes left goes too: their temporary files in the store and beside
//! export destinations, and the runner's per-run files.
//! The removed entries are listed with the sizes `kiln du` gave them, then the bytes freed, in
//! `kiln du`'s measure; `--format json` prints them in bytes, as one document
//! `{"removed": [...], "freed": N}` whose entries are those of `kiln du --format json`.
//! `--history` removes the records of past builds instead (`kiln history`), and no cache.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::{PruneOptions, UsageEntry, parse_size};

use super::du::{entry_json, entry_rows, now, open_store, write_stdout};
use crate::args::{PruneArgs, UsageFormat};
use crate::format::{human_size, table};

pub(crate) fn run(root: &Path, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    if args.history {
        return prune_history(root, args);
    }
    let options = options(args)?;
    if !args.force && !confirm(options.all)? {
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(root)?;
    let before: HashMap<String, UsageEntry> = store
        .du()
        .context("measuring disk usage")?
        .entries
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let report = store.prune(&options).context("pruning the build cache")?;
    // What killed builds left outside the store: the runner's per-run files, and their places
    // on the network (veth pairs, namespaces, published ports).
    kiln_runner::Runner::new(kiln_engine::RUNNER_STATE).sweep();
    kiln_engine::default_network().sweep();
    let removed: Vec<UsageEntry> = report
        .removed_records
        .iter()
        .chain(&report.gc.removed_cache_mounts)
        .chain(&report.gc.removed_local_sources)
        .map(|id| {
            before.get(id.as_str()).cloned().unwrap_or(UsageEntry {
                kind: "cache",
                id: id.clone(),
                ..UsageEntry::default()
            })
        })
        .collect();
    show_removed(&removed, report.gc.freed, args)
}

/// Prints the removed entries and the bytes freed as `args` ask.
pub(crate) fn show_removed(
    removed: &[UsageEntry],
    freed: u64,
    args: &PruneArgs,
) -> anyhow::Result<ExitCode> {
    if args.format == UsageFormat::Json {
        let document = serde_json::json!({
            "removed": removed.iter().map(entry_json).collect::<Vec<_>>(),
            "freed": freed,
        });
        return write_stdout(&format!("{document}\n"));
    }
    let mut text = String::new();
    if !removed.is_empty() {
        text.push_str(&table(&entry_rows(removed.iter(), now())));
    }
    text.push_str(&format!("Total:\t{}\n", human_size(freed)));
    write_stdout(&text)
}

/// `--history`: removes every build record.
fn prune_history(root: &Path, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    if !args.force && !ask("all build records")? {
        return Ok(ExitCode::SUCCESS);
    }
    let removed = open_store(root)?
        .remove_build_records()
        .context("removing the build records")?;
    if args.format == UsageFormat::Json {
        return write_stdout(&format!(
            "{}\n",
            serde_json::json!({ "removed_builds": removed })
        ));
    }
    write_stdout(&format!("Deleted {removed} build records\n"))
}

/// Validates the arguments into the store's options.
pub(crate) fn options(args: &PruneArgs) -> anyhow::Result<PruneOptions> {
    let mut options = PruneOptions {
        all: args.all,
        ..PruneOptions::default()
    };
    for filter in &args.filter {
        options.add_filter(filter)?;
    }
    let size = |flag: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| parse_size(v).with_context(|| format!("invalid --{flag} value {v:?}")))
            .transpose()
    };
    options.keep_bytes = size("keep-storage", &args.keep_storage)?;
    options.reserved_space = size("reserved-space", &args.reserved_space)?;
    options.max_used_space = size("max-used-space", &args.max_used_space)?;
    options.min_free_space = size("min-free-space", &args.min_free_space)?;
    Ok(options)
}

/// Asks on the terminal, as buildx does; anything but `y`/`yes` declines.
pub(crate) fn confirm(all: bool) -> anyhow::Result<bool> {
    ask(if all {
        "all build cache"
    } else {
        "all dangling build cache"
    })
}

/// Asks whether to remove `what`; anything but `y`/`yes` declines.
fn ask(what: &str) -> anyhow::Result<bool> {
    {
        let mut stdout = std::io::stdout().lock();
        write!(
            stdout,
            "WARNING! This will remove {what}. Are you sure you want to continue? [y/N] "
        )
        .and_then(|()| stdout.flush())
        .context("writing to standard output")?;
    }
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kiln_cache::CacheKind;

    use super::*;

    fn args(all: bool, filter: &[&str], keep: Option<&str>) -> PruneArgs {
        PruneArgs {
            all,
            filter: filter.iter().map(|s| (*s).to_owned()).collect(),
            keep_storage: keep.map(str::to_owned),
            reserved_space: None,
            max_used_space: None,
            min_free_space: None,
            force: true,
            history: false,
            format: UsageFormat::Table,
        }
    }

    #[test]
    fn arguments_become_prune_options() {
        assert_eq!(
            options(&args(false, &[], None)).unwrap(),
            PruneOptions::default()
        );
        assert_eq!(
            options(&args(true, &["until=48h"], Some("1GB"))).unwrap(),
            PruneOptions {
                all: true,
                older_than: Some(Duration::from_secs(48 * 3600)),
                keep_bytes: Some(1 << 30),
                kind: None,
                keep_duration: None,
                reserved_space: None,
                max_used_space: None,
                min_free_space: None,
            }
        );
        assert_eq!(
            options(&args(false, &["type=exec.cachemount"], None))
                .unwrap()
                .kind,
            Some(CacheKind::CacheMount)
        );
        assert_eq!(
            options(&args(true, &["type=regular"], None)).unwrap().kind,
            Some(CacheKind::Regular)
        );
        let err = options(&args(false, &["label=x"], None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported filter \"label\": only until=DURATION and type=TYPE are supported"
        );
        assert_eq!(
            options(&args(false, &["type=source.local"], None))
                .unwrap()
                .kind,
            Some(CacheKind::LocalSource)
        );
        let err = options(&args(false, &["type=source.git.checkout"], None)).unwrap_err();
        assert!(err.to_string().contains("unsupported type"), "{err}");
        assert!(options(&args(false, &["until"], None)).is_err());
    }
}
