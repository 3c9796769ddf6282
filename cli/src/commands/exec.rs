//! `kiln exec`: a command in a running container, through `kiln_runner::exec` (its
//! namespaces, cgroups, root, user and environment), with docker's exit codes: the command's,
//! 126 when it cannot be executed, 127 when it is not found, 1 when the container is missing
//! or stopped, 125 for kiln's own errors.

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln_cache::{ContainerRecords, ContainerStatus};
use kiln_runner::{CapabilityChanges, ExecSpec, ExitStatus, Security, Signal};

use crate::args::ExecArgs;

/// Runs the command; kiln's errors are reported with docker's exit codes.
pub(crate) fn run(root: &Path, args: &ExecArgs) -> ExitCode {
    match exec(root, args) {
        Ok(code) => code,
        Err((code, message)) => {
            #[expect(clippy::print_stderr, reason = "the binary reports its errors")]
            {
                eprintln!("{message}");
            }
            ExitCode::from(code)
        }
    }
}

/// `-e` entries over the container's environment (a bare `KEY` takes kiln's own value).
fn environment(container: &[String], entries: &[String]) -> Vec<String> {
    let mut env = container.to_vec();
    for entry in entries {
        let entry = if entry.contains('=') {
            entry.clone()
        } else {
            match std::env::var(entry) {
                Ok(value) => format!("{entry}={value}"),
                Err(_) => continue,
            }
        };
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(entry);
    }
    env
}

fn exec(root: &Path, args: &ExecArgs) -> Result<ExitCode, (u8, String)> {
    let daemon = |err: &dyn std::fmt::Display| (1, format!("Error response from daemon: {err}"));
    let records = ContainerRecords::new(root);
    let record = records.get(&args.container).map_err(|e| daemon(&e))?;
    if record.state.status != ContainerStatus::Running || record.state.pid == 0 {
        return Err(daemon(&format!("container {} is not running", record.id)));
    }
    let mut env = environment(&record.config.env, &args.env);
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    let kiln_error = |err: &dyn std::fmt::Display| (125, format!("kiln: {err}"));
    let spec = ExecSpec {
        args: args.command.clone(),
        env,
        cwd: PathBuf::from(
            args.workdir
                .clone()
                .unwrap_or_else(|| record.config.working_dir.clone()),
        ),
        user: args
            .user
            .clone()
            .unwrap_or_else(|| record.config.user.clone()),
        security: if args.privileged || record.host_config.privileged {
            Security::Insecure
        } else {
            Security::Sandbox
        },
        capabilities: CapabilityChanges::new(
            &record.host_config.cap_add,
            &record.host_config.cap_drop,
        )
        .map_err(|e| kiln_error(&e))?,
    };
    if args.tty {
        // The command shares kiln's terminal: the keys that signal its foreground (Ctrl-C,
        // Ctrl-\, Ctrl-Z) are for the command, not for kiln, which would take it down with it.
        let mut keys = nix::sys::signal::SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
            keys.add(signal);
        }
        keys.thread_block().map_err(|e| kiln_error(&e))?;
    }
    let null = fs_err::File::open("/dev/null").map_err(|e| kiln_error(&e))?;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let input = if args.interactive {
        stdin.as_fd()
    } else {
        null.file().as_fd()
    };
    match kiln_runner::exec(
        record.state.pid,
        &spec,
        [input, stdout.as_fd(), stderr.as_fd()],
    ) {
        Ok(ExitStatus::Code(code)) => Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))),
        Ok(ExitStatus::Signal(signal)) => Ok(ExitCode::from(
            u8::try_from(128 + (signal & 0x7f)).unwrap_or(1),
        )),
        Err(kiln_runner::Error::Exec { program, source }) => Err((
            u8::try_from(crate::commands::run::exec_failure_code(source)).unwrap_or(126),
            format!("kiln: cannot execute {program:?}: {}", source.desc()),
        )),
        Err(kiln_runner::Error::NoContainerProcess { .. }) => {
            Err(daemon(&format!("container {} is not running", record.id)))
        }
        Err(err) => Err(kiln_error(&anyhow::Error::new(err).context("exec failed"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_environment_overrides_the_container_s() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            environment(&v(&["PATH=/bin", "MODE=prod"]), &v(&["MODE=dev", "NEW=1"])),
            v(&["PATH=/bin", "MODE=dev", "NEW=1"])
        );
    }
}
