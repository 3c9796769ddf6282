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
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(crate::format::table(&rows).as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
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
        .and_then(crate::format::parse_rfc3339)
        .map_or_else(
            || "N/A".to_owned(),
            |t| {
                format!(
                    "{} ago",
                    crate::format::human_duration(u64::try_from(now - t).unwrap_or(0))
                )
            },
        );
    [
        repository,
        tag,
        image.id().short(),
        created,
        crate::format::human_size(size),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
