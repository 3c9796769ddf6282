//! `kiln rmi`: remove image names from the store (their blobs go at the next garbage
//! collection).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::Store;

use crate::args::RmiArgs;

pub(crate) fn run(root: &Path, args: &RmiArgs) -> anyhow::Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let mut code = ExitCode::SUCCESS;
    let mut stdout = std::io::stdout().lock();
    for name in &args.images {
        let record = match store.find_image(name) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!("{e}");
                #[expect(
                    clippy::print_stderr,
                    reason = "docker prints each failure and goes on"
                )]
                {
                    eprintln!("Error: No such image: {name}");
                }
                code = ExitCode::FAILURE;
                continue;
            }
        };
        store
            .remove_image(&record.name)
            .with_context(|| format!("removing {}", record.name))?;
        writeln!(stdout, "Untagged: {}", record.name).context("writing to standard output")?;
    }
    Ok(code)
}
