//! How the CLI shows things, the way docker and buildx show them: sizes, relative durations,
//! times, and tables. One place for each, so every command prints them alike; times are read
//! and written with `jiff`.

/// Columns padded like Go's tabwriter in docker's tables (three spaces between columns, no
/// trailing spaces), one line per row.
pub(crate) fn table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.as_ref().iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}   "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Seconds since the epoch of an RFC 3339 time (`2024-09-26T21:31:42.123Z`, `...+02:00`),
/// rounded down; `None` for anything else.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    let time: jiff::Timestamp = text.parse().ok()?;
    Some(time.as_second() - i64::from(time.subsec_nanosecond() < 0))
}

/// `2006-01-02 15:04:05 UTC` from seconds since the epoch, as `buildx du --verbose` shows
/// times.
pub(crate) fn utc_time(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || format!("{seconds} seconds after 1970"),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
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

/// A duration as Go prints one (`30s`, `1m30s`, `1.5s`, `500ms`), as docker's messages show
/// them.
pub(crate) fn go_duration(duration: std::time::Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (value, unit) = if nanos < 1_000 {
            (nanos as f64, "ns")
        } else if nanos < 1_000_000 {
            (nanos as f64 / 1e3, "µs")
        } else {
            (nanos as f64 / 1e6, "ms")
        };
        return format!("{value}{unit}");
    }
    let seconds = duration.as_secs_f64() % 60.0;
    let minutes = duration.as_secs() / 60 % 60;
    let hours = duration.as_secs() / 3600;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", (seconds * 1e9).round() / 1e9));
    out
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
    fn tables_pad_by_characters() {
        let rows = [
            vec!["A".to_owned(), "B".to_owned()],
            vec!["\"sh -c 'x; …\"".to_owned(), "b".to_owned()],
        ];
        assert_eq!(table(&rows), "A               B\n\"sh -c 'x; …\"   b\n");
    }

    #[test]
    fn durations_print_as_go_does() {
        use std::time::Duration;
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn created_times_with_multibyte_characters_do_not_panic() {
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
    }

    #[test]
    fn rfc3339_times() {
        // 2024-01-01T00:00:00Z is 1704067200 (date -d 2024-01-01T00:00:00Z +%s).
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(
            parse_rfc3339("2024-01-01T02:00:00.123456789+02:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Some(-1));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        // `date -u -d @1704067200` is 2024-01-01 00:00:00 UTC.
        assert_eq!(utc_time(1_704_067_200), "2024-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400 + 3_723), "2000-02-29 01:02:03 UTC");
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

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = [
            ["NAME".to_owned(), "SIZE".to_owned(), "X".to_owned()],
            ["a-long-name".to_owned(), "1kB".to_owned(), String::new()],
        ];
        assert_eq!(table(&rows), "NAME          SIZE   X\na-long-name   1kB\n");
    }
}
