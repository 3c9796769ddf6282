//! `kiln debug`: tools for looking inside builds.

use std::process::ExitCode;

use crate::args::DebugCommand;

pub(crate) fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::DumpLlb { .. } => anyhow::bail!("dump-llb is not available yet"),
    }
}
