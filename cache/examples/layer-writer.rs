//! Writes a directory as an OCI layer through kiln's layer writer and prints the digests.
//!
//! ```text
//! layer-writer DIR [--compression gzip|zstd|none] [--level N] [--threads N] [--epoch SECONDS] [--out FILE]
//! ```
//! Without `--out` the blob is discarded (only hashed), which is what the benchmark measures.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use kiln_cache::{Compression, DiffSource, LayerOptions, write_layer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut compression = "gzip".to_owned();
    let mut level: Option<i32> = None;
    let mut options = LayerOptions::default();
    let mut out: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--compression" => compression = value()?,
            "--level" => level = Some(value()?.parse()?),
            "--threads" => options.threads = value()?.parse()?,
            "--epoch" => options.source_date_epoch = Some(value()?.parse()?),
            "--out" => out = Some(value()?.into()),
            _ if dir.is_none() => dir = Some(PathBuf::from(&arg)),
            _ => return Err(format!("unexpected argument {arg}").into()),
        }
    }
    let dir = dir.ok_or("usage: layer-writer DIR [options]")?;
    options.compression = match compression.as_str() {
        "gzip" => Compression::Gzip {
            level: u32::try_from(level.unwrap_or(6))?,
        },
        "zstd" => Compression::Zstd {
            level: level.unwrap_or(3),
        },
        "none" => Compression::Uncompressed,
        other => return Err(format!("unknown compression {other}").into()),
    };
    let start = Instant::now();
    let layer = match out {
        Some(path) => {
            write_layer(
                &dir,
                DiffSource::Directory,
                &options,
                fs_err::File::create(path)?,
            )?
            .0
        }
        None => write_layer(&dir, DiffSource::Directory, &options, std::io::sink())?.0,
    };
    let seconds = start.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "digest {}", layer.digest)?;
    writeln!(stdout, "diff_id {}", layer.diff_id)?;
    writeln!(stdout, "media_type {}", layer.media_type)?;
    writeln!(stdout, "size {}", layer.size)?;
    writeln!(stdout, "uncompressed_size {}", layer.uncompressed_size)?;
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    let rate = layer.uncompressed_size as f64 / 1e6 / seconds;
    writeln!(stdout, "seconds {seconds:.3}")?;
    writeln!(stdout, "uncompressed_mb_per_s {rate:.1}")?;
    Ok(())
}
