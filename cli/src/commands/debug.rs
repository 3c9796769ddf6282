//! `kiln debug`: tools for looking inside builds.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_llb::LoadedDefinition;

use crate::args::DebugCommand;

pub(crate) fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::DumpLlb { file, dot } => dump_llb(file.as_deref(), dot),
        DebugCommand::Workers { .. } => anyhow::bail!(
            "kiln debug workers lists a daemon's workers: give its address with --host \
             (or $KILN_HOST); an in-process build has no workers to list"
        ),
    }
}

/// Reads a marshalled Definition (a file, or stdin for `-` or no argument), validates it and
/// prints it as `buildctl debug dump-llb` JSON lines or, with `--dot`, Graphviz DOT.
fn dump_llb(file: Option<&Path>, dot: bool) -> anyhow::Result<ExitCode> {
    let file = file.filter(|path| *path != Path::new("-"));
    let bytes = match file {
        Some(path) => fs_err::read(path).context("reading the LLB definition")?,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the LLB definition from standard input")?;
            bytes
        }
    };
    let source = file.map_or_else(|| "standard input".into(), |p| p.display().to_string());
    let loaded = LoadedDefinition::from_bytes(&bytes)
        .with_context(|| format!("{source} is not a valid LLB definition"))?;
    let text = if dot {
        kiln_llb::dump::to_dot(loaded.definition())?
    } else {
        kiln_llb::dump::to_json_lines(loaded.definition())?
    };
    // A closed pipe (`kiln debug dump-llb | head`) is not an error.
    super::du::write_stdout(&text)
}
