//! `kiln images`: list the images in the store, formatted like `docker images`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use kiln_cache::{ImageRecord, Store};

pub(crate) fn run(root: &Path) -> anyhow::Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let images = store.images().context("listing images")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        "IMAGE ID".to_owned(),
        "CREATED".to_owned(),
        "SIZE".to_owned(),
    ]];
    for image in &images {
        rows.push(row(image, content_size(&store, image)?, now));
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut stdout = std::io::stdout().lock();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c < 4 {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            } else {
                line.push_str(cell);
            }
        }
        if let Err(e) = writeln!(stdout, "{}", line.trim_end()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(e).context("writing to standard output");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The bytes of the image's files, each file once however many names it has (busybox's
/// applets are one file), as docker's SIZE counts them.
fn content_size(store: &Store, image: &ImageRecord) -> anyhow::Result<u64> {
    let Some(chain) = image.chain_id else {
        return Ok(image.size);
    };
    Ok(store
        .snapshot_files(&chain.to_string())
        .with_context(|| format!("measuring {}", image.name))?
        .bytes())
}

fn row(image: &ImageRecord, size: u64, now: i64) -> [String; 5] {
    let (repository, tag) = split_name(&image.name);
    let created = image
        .created
        .as_deref()
        .and_then(parse_rfc3339)
        .map_or_else(
            || "N/A".to_owned(),
            |t| {
                format!(
                    "{} ago",
                    human_duration(u64::try_from(now - t).unwrap_or(0))
                )
            },
        );
    [
        repository,
        tag,
        image.manifest.short(),
        created,
        human_size(size),
    ]
}

/// Splits a stored name into docker's REPOSITORY and TAG (`docker.io/library/` is hidden).
fn split_name(name: &str) -> (String, String) {
    let (repository, tag) = if let Some((repo, _digest)) = name.split_once('@') {
        (repo, "<none>")
    } else {
        match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (name, "<none>"),
        }
    };
    let short = repository
        .strip_prefix("docker.io/library/")
        .or_else(|| repository.strip_prefix("docker.io/"))
        .unwrap_or(repository);
    (short.to_owned(), tag.to_owned())
}

/// Seconds since the epoch of an RFC 3339 time (`2024-09-26T21:31:42.123Z`, `...+02:00`).
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = text.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let hours = rest.get(1..3)?.parse::<i64>().ok()?;
            let minutes = rest.get(4..6)?.parse::<i64>().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Docker's relative durations (`About an hour`, `3 weeks`, `2 years`).
pub(crate) fn human_duration(seconds: u64) -> String {
    let s = seconds;
    if s < 1 {
        return "Less than a second".to_owned();
    }
    if s == 1 {
        return "1 second".to_owned();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".to_owned();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (s + 1800) / 3600;
    match hours {
        1 => "About an hour".to_owned(),
        h if h < 48 => format!("{h} hours"),
        h if h < 24 * 7 * 2 => format!("{} days", h / 24),
        h if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        h if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// Docker's sizes: decimal units, three significant digits (`4.26MB`, `123kB`).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_times_with_multibyte_characters_do_not_panic() {
        // Byte 19 or the offset's bytes inside a multibyte character.
        for text in [
            "2024-01-01T00:00:0é1Z",
            "2024-01-01T00:00:00é:00:",
            "2024-01-01T00:00:00+0é:0",
            "2024-01-01T00:00:00+01é0",
            "2024-01-01T00:00:00.12€",
            "ééééééééééééééééééééé",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200)
        );
    }

    #[test]
    fn names_split_like_docker() {
        let cases = [
            ("docker.io/library/busybox:latest", "busybox", "latest"),
            ("docker.io/user/app:v1", "user/app", "v1"),
            (
                "127.0.0.1:5000/library/busybox:latest",
                "127.0.0.1:5000/library/busybox",
                "latest",
            ),
            (
                "127.0.0.1:5000/library/busybox@sha256:abc",
                "127.0.0.1:5000/library/busybox",
                "<none>",
            ),
        ];
        for (name, repository, tag) in cases {
            assert_eq!(
                split_name(name),
                (repository.to_owned(), tag.to_owned()),
                "{name}"
            );
        }
    }

    #[test]
    fn rfc3339_times() {
        // 2024-01-01T00:00:00Z is 1704067200 (date -d 2024-01-01T00:00:00Z +%s).
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339("2024-01-01T02:00:00.123456789+02:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn docker_units() {
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(123_456), "123kB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(2_000_000_000), "2GB");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(21 * 86_400), "3 weeks");
        assert_eq!(human_duration(800 * 86_400), "2 years");
    }
}
