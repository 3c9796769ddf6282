//! `kiln --host ADDR COMMAND` (`$KILN_HOST`): the commands a daemon does go to it; the ones
//! that act on this machine's store or containers are refused rather than quietly done here,
//! and the ones that touch neither run as without `--host`.

use std::process::ExitCode;

use anyhow::bail;

use crate::args::Command;

/// Runs `command` against the daemon at `host`; `None` for a command that runs here all the
/// same.
pub(crate) fn run(host: &str, command: &Command) -> Option<anyhow::Result<ExitCode>> {
    let name = match command {
        Command::Build(build) => return Some(super::build::remote::run(host, build)),
        // Files and standard streams only.
        Command::Debug(_) | Command::Yaml(_) | Command::GatewayFrontend => return None,
        Command::Daemon(_) => {
            return Some(Err(anyhow::anyhow!(
                "kiln daemon listens where --addr says; --host ({host}) names a daemon to use"
            )));
        }
        Command::Pull(_) => "pull",
        Command::Images => "images",
        Command::Load(_) => "load",
        Command::Tag(_) => "tag",
        Command::Rmi(_) => "rmi",
        Command::Run(_) => "run",
        Command::Ps(_) => "ps",
        Command::Rm(_) => "rm",
        Command::Logs(_) => "logs",
        Command::Exec(_) => "exec",
        Command::Stop(_) => "stop",
        Command::Kill(_) => "kill",
        Command::Inspect(_) => "inspect",
        Command::Volume(_) => "volume",
        Command::ContainerSupervise { .. } => "container-supervise",
        Command::Save(_) => "save",
        Command::Push(_) => "push",
        Command::Prune(_) => "prune",
        Command::History(_) => "history",
        Command::Explain(_) => "explain",
        Command::Du(_) => "du",
    };
    Some(refuse(name, host))
}

fn refuse(name: &str, host: &str) -> anyhow::Result<ExitCode> {
    bail!(
        "kiln {name} works on this machine's store, not through a daemon; \
         unset KILN_HOST or drop --host {host} to run it here"
    )
}
