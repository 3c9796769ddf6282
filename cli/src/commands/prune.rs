//! `kiln prune`: remove build cache, like `docker buildx prune`.
//!
//! Without options only unreferenced data goes (the garbage collection that follows every
//! prune); `--all` removes every build cache record and cache mount, `--filter until=DURATION`
//! the records unused for that long, `--filter type=exec.cachemount` only the cache mounts
//! (`type=regular` only the records), and `--keep-storage` then the least recently used
//! records until the rest fit. Images are never removed, nor anything a running build holds.
//! What killed kiln processes left goes too: their temporary files in the store and beside
//! export destinations, and the runner's per-run files.
//! The removed entries are listed with the sizes `kiln du` gave them, then the bytes freed, in
//! `kiln du`'s measure; `--format json` prints them in bytes, as one document
//! `{"removed": [...], "freed": N}` whose entries are those of `kiln du --format json`.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kiln_cache::{CacheKind, PruneOptions, UsageEntry};

use super::du::{entry_json, entry_rows, now, open_store, write_stdout};
use crate::args::{PruneArgs, UsageFormat};
use crate::format::{human_size, table};

pub(crate) fn run(root: &Path, args: &PruneArgs) -> anyhow::Result<ExitCode> {
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
    // What killed builds left outside the store: the runner's per-run files.
    kiln_runner::Runner::new(crate::executor::RUNNER_STATE).sweep();
    let removed: Vec<UsageEntry> = report
        .removed_records
        .iter()
        .chain(&report.gc.removed_cache_mounts)
        .map(|id| {
            before.get(id.as_str()).cloned().unwrap_or(UsageEntry {
                kind: "cache",
                id: id.clone(),
                size: 0,
                last_used: 0,
            })
        })
        .collect();
    if args.format == UsageFormat::Json {
        let document = serde_json::json!({
            "removed": removed.iter().map(entry_json).collect::<Vec<_>>(),
            "freed": report.gc.freed,
        });
        return write_stdout(&format!("{document}\n"));
    }
    let mut text = String::new();
    if !removed.is_empty() {
        text.push_str(&table(&entry_rows(removed.iter(), now())));
    }
    text.push_str(&format!("Total:\t{}\n", human_size(report.gc.freed)));
    write_stdout(&text)
}

/// Validates the arguments into the store's options.
fn options(args: &PruneArgs) -> anyhow::Result<PruneOptions> {
    let mut options = PruneOptions {
        all: args.all,
        ..PruneOptions::default()
    };
    for filter in &args.filter {
        let Some((key, value)) = filter.split_once('=') else {
            bail!("invalid filter {filter:?}: expected KEY=VALUE");
        };
        match key {
            "until" | "unused-for" => {
                options.older_than = Some(
                    parse_duration(value)
                        .with_context(|| format!("invalid duration in filter {filter:?}"))?,
                );
            }
            "type" => {
                options.kind = Some(CacheKind::from_name(value).with_context(|| {
                    format!(
                        "unsupported type in filter {filter:?}: expected regular or exec.cachemount"
                    )
                })?);
            }
            _ => {
                bail!("unsupported filter {key:?}: only until=DURATION and type=TYPE are supported")
            }
        }
    }
    if let Some(size) = &args.keep_storage {
        options.keep_bytes = Some(
            parse_bytes(size).with_context(|| format!("invalid --keep-storage value {size:?}"))?,
        );
    }
    Ok(options)
}

/// Asks on the terminal, as buildx does; anything but `y`/`yes` declines.
fn confirm(all: bool) -> anyhow::Result<bool> {
    let what = if all {
        "all build cache"
    } else {
        "all dangling build cache"
    };
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

/// A Go duration (`24h`, `1h30m`, `90s`, `1.5h`, `500ms`), as docker's filters take.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len]
            .parse()
            .with_context(|| format!("no number at {rest:?}"))?;
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
            "" => bail!("missing unit in {text:?} (use ns, us, ms, s, m or h)"),
            unit => bail!("unknown unit {unit:?} in {text:?} (use ns, us, ms, s, m or h)"),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).context("duration out of range")
}

/// A size like docker's `--keep-storage`: a number with an optional binary unit (`512mb`,
/// `10GB`, `1.5g`, `2048`).
fn parse_bytes(text: &str) -> anyhow::Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let number_len = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..number_len]
        .parse()
        .with_context(|| format!("no number in {text:?}"))?;
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
        _ => bail!("unknown unit in {text:?} (use b, k, m, g, t or p)"),
    };
    let bytes = number * 1024f64.powi(power);
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        bail!("{text:?} is out of range");
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "range checked above; fractions of a byte are dropped"
    )]
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(all: bool, filter: &[&str], keep: Option<&str>) -> PruneArgs {
        PruneArgs {
            all,
            filter: filter.iter().map(|s| (*s).to_owned()).collect(),
            keep_storage: keep.map(str::to_owned),
            force: true,
            format: UsageFormat::Table,
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "3d", "h", "1h-2m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_byte_sizes() {
        assert_eq!(parse_bytes("2048").unwrap(), 2048);
        assert_eq!(parse_bytes("512mb").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("3 GiB").unwrap(), 3 << 30);
        for bad in ["", "lots", "5x", "-1"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
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
        let err = options(&args(false, &["type=source.local"], None)).unwrap_err();
        assert!(err.to_string().contains("unsupported type"), "{err}");
        assert!(options(&args(false, &["until"], None)).is_err());
    }
}
