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
use crate::commands::run::signals::{RawMode, own_terminal_size};

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
        // docker's size when kiln has no terminal to take it from.
        terminal: args.tty.then(|| {
            own_terminal_size().unwrap_or(kiln_runner::TerminalSize { rows: 24, cols: 80 })
        }),
    };
    if args.tty {
        // The command has a terminal of its own, which follows the size of kiln's (SIGWINCH is
        // read by the runner once blocked). Without `-i` kiln's terminal stays as it is, and
        // the keys that signal its foreground (Ctrl-C, Ctrl-\, Ctrl-Z) are for the command,
        // not for kiln, which would take it down with it; with `-i` they reach the command's
        // terminal as bytes, kiln's being in raw mode.
        let mut keys = nix::sys::signal::SigSet::empty();
        for signal in [
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGTSTP,
            Signal::SIGWINCH,
        ] {
            keys.add(signal);
        }
        keys.thread_block().map_err(|e| kiln_error(&e))?;
    }
    let _raw = (args.tty && args.interactive)
        .then(RawMode::enable)
        .flatten();
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

    #[test]
    fn exec_t_gives_the_command_a_terminal_of_its_own_that_follows_kilns() {
        use std::process::{Command, Stdio};

        use crate::commands::run::tests::{collect, kiln_with_busybox, resize, terminal, wait_for};

        let Some((kiln, root)) = kiln_with_busybox() else {
            return;
        };
        let k = |args: &[&str]| {
            Command::new(&kiln)
                .arg("--root")
                .arg(root.path())
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let started = k(&["run", "-d", "--name", "term", "busybox", "sleep", "300"]);
        assert!(started.status.success(), "{started:?}");
        struct Remove<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                let _ = (self.0)(&["rm", "-f", "term"]);
            }
        }
        let _remove = Remove(&k);

        // Without a terminal of its own, kiln gives docker's 24x80; the terminal is the
        // container's /dev/pts/0 (its own devpts), and its line discipline ends lines with CRLF.
        let out = k(&["exec", "-t", "term", "sh", "-c", "tty; stty size; exit 3"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/dev/pts/0\r\n24 80\r\n"
        );
        assert_eq!(out.status.code(), Some(3));
        // Without -t there is no terminal at all.
        let out = k(&["exec", "term", "tty"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "not a tty\n");
        assert_eq!(out.status.code(), Some(1));

        // `-it` from a terminal of 33x101: the command's terminal takes its size, its input is
        // typed through it, and it follows a resize.
        let (pty, terminal) = terminal(33, 101);
        let mut child = Command::new(&kiln)
            .arg("--root")
            .arg(root.path())
            .args(["exec", "-it", "term", "sh"])
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave))
            .spawn()
            .unwrap();
        let input = pty.master.try_clone().unwrap();
        let output = collect(pty.master);
        let mut text = String::new();
        let typed = |line: &str| crate::commands::exec::tests::write_all(&input, line);
        typed("echo size-$(stty size)\n");
        wait_for(&output, &mut text, "size-33 101");
        resize(&terminal, 40, 120, child.id());
        // The resize reaches the container's terminal a moment later: ask until it has.
        typed(
            "i=0; while [ \"$(stty size)\" != '40 120' ] && [ $i -lt 300 ]; do sleep 0.1; \
             i=$((i+1)); done; echo now-$(stty size); exit 7\n",
        );
        wait_for(&output, &mut text, "now-40 120");
        assert_eq!(child.wait().unwrap().code(), Some(7), "{text:?}");
    }

    /// Writes all of `bytes` to `fd`.
    fn write_all(fd: &std::os::fd::OwnedFd, bytes: &str) {
        let mut bytes = bytes.as_bytes();
        while !bytes.is_empty() {
            let n = nix::unistd::write(fd, bytes).unwrap();
            bytes = &bytes[n..];
        }
    }
}
