//! Exports a directory, as the layer of one build step, into an OCI image layout tar through
//! kiln's exporters, and prints how long each export took (what `bench/export.sh` measures).
//!
//! ```text
//! export DIR --store ROOT [--compression gzip|zstd|uncompressed] [--level N] [--runs N] [--out FILE]
//! ```
//! The directory is first made a committed snapshot of a fresh store under `ROOT` (not timed;
//! hard links where possible). Each run then exports it with another `SOURCE_DATE_EPOCH`, so
//! every run compresses the layer again instead of reusing the previous run's blob: layer
//! (tar, compression, both digests), image config and manifest, and the OCI tar into `FILE`
//! (default `/dev/null`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_cache::{Compression, LayerOptions, Store};
use kiln_exporters::ImageOptions;

/// Copies `src` into the empty `dest`, hard-linking files (copying them across file systems).
fn link_tree(src: &Path, dest: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for entry in fs_err::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fs_err::create_dir(&to)?;
            link_tree(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs_err::read_link(&from)?, &to)?;
        } else if fs_err::hard_link(&from, &to).is_err() {
            fs_err::copy(&from, &to)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut store_root: Option<PathBuf> = None;
    let mut compression = "gzip".to_owned();
    let mut level: Option<i32> = None;
    let mut runs = 3;
    let mut out = PathBuf::from("/dev/null");
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--store" => store_root = Some(value()?.into()),
            "--compression" => compression = value()?,
            "--level" => level = Some(value()?.parse()?),
            "--runs" => runs = value()?.parse()?,
            "--out" => out = value()?.into(),
            _ if dir.is_none() => dir = Some(PathBuf::from(&arg)),
            _ => return Err(format!("unexpected argument {arg}").into()),
        }
    }
    let dir = dir.ok_or("usage: export DIR --store ROOT [options]")?;
    let store_root = store_root.ok_or("--store ROOT is required")?;
    let compression = match compression.as_str() {
        "gzip" => Compression::Gzip {
            level: u32::try_from(level.unwrap_or(6))?,
        },
        "zstd" => Compression::Zstd {
            level: level.unwrap_or(3),
        },
        "uncompressed" | "none" => Compression::Uncompressed,
        other => return Err(format!("unknown compression {other}").into()),
    };

    let store = Store::open(&store_root)?;
    let key = "bench-step";
    if store.snapshot(key)?.is_none() {
        let mounts = store.prepare("bench-active", None)?;
        link_tree(&dir, &mounts.upper)?;
        store.commit("bench-active", key)?;
    }
    let keys = kiln_exporters::snapshot_chain(&store, key)?;
    let mut stdout = std::io::stdout().lock();
    for run in 0..runs {
        let epoch = 2_000_000_000 + i64::from(run) + i64::from(fastrand::u32(..));
        let start = Instant::now();
        let options = LayerOptions {
            compression,
            source_date_epoch: Some(epoch),
            threads: 0,
        };
        let layers = kiln_exporters::chain_layers(
            &store,
            &keys,
            &options,
            kiln_exporters::ExistingLayers::Reuse,
        )?;
        let image = kiln_exporters::build_image(
            layers,
            None,
            &ImageOptions {
                oci_mediatypes: true,
                source_date_epoch: Some(epoch),
                build_time: None,
                base_histories: Vec::new(),
                layer_times: Vec::new(),
            },
        )?;
        let file = std::io::BufWriter::new(fs_err::File::create(&out)?);
        let file = kiln_exporters::write_oci_tar(&store, &image, Some("bench:latest"), file, 0)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let seconds = start.elapsed().as_secs_f64();
        writeln!(
            stdout,
            "run {run}: {seconds:.3} s, layer {} ({} bytes)",
            image.layers[0].digest, image.layers[0].size
        )?;
    }
    Ok(())
}
