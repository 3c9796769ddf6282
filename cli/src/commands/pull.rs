//! `kiln pull`: fetch an image from a registry into the store, printing progress like docker.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use kiln_cache::{PullEvent, PullOptions, PullProgress, Store};

use crate::args::PullArgs;
use crate::config::Config;

/// Writes a line to stdout, ignoring a closed pipe.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

struct Lines {
    quiet: bool,
}

impl PullProgress for Lines {
    fn event(&self, event: PullEvent) {
        if self.quiet {
            return;
        }
        match event {
            PullEvent::Source { reference, host } => {
                let parsed = kiln_cache::parse_reference(&reference).ok();
                let (tag, repository) = parsed
                    .as_ref()
                    .map(|r| {
                        (
                            r.tag().unwrap_or("latest").to_owned(),
                            r.repository().to_owned(),
                        )
                    })
                    .unwrap_or_default();
                out(&format!("{tag}: Pulling from {repository} ({host})"));
            }
            PullEvent::LayerExists(d) => out(&format!("{}: Already exists", d.short())),
            PullEvent::LayerDownloading(d) => out(&format!("{}: Pulling fs layer", d.short())),
            PullEvent::LayerDownloaded(d) => out(&format!("{}: Download complete", d.short())),
            PullEvent::LayerUnpacked(d) => out(&format!("{}: Pull complete", d.short())),
            _ => {}
        }
    }
}

pub(crate) fn run(root: &Path, config: &Config, args: &PullArgs) -> anyhow::Result<ExitCode> {
    let options = PullOptions {
        config: config.cache.clone(),
        ..PullOptions::default()
    };
    let store = Arc::new(
        Store::open(root)
            .with_context(|| format!("opening the store at {}", root.display()))?
            .with_unpack_limits(options.config.unpack),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let progress = Lines { quiet: args.quiet };
    let last = args.reference.rsplit('/').next().unwrap_or_default();
    if !args.quiet && !last.contains(':') && !last.contains('@') {
        out("Using default tag: latest");
    }
    let pulled = runtime
        .block_on(kiln_cache::pull(
            store,
            &args.reference,
            &options,
            &progress,
        ))
        .with_context(|| format!("pulling {}", args.reference))?;
    let image = &pulled.image;
    if !args.quiet {
        out(&format!("Digest: {}", image.manifest));
        let status = if pulled.previous == Some(image.manifest) {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        out(&format!("Status: {status} {}", image.name));
    }
    out(&image.name);
    Ok(ExitCode::SUCCESS)
}
