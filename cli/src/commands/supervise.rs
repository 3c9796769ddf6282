//! Detached containers (`kiln run -d`): the supervisor that keeps one, its json-file log, and
//! health checks.
//!
//! # Overview
//!
//! 1. `kiln run -d` makes the container (record and file system) as `kiln run` does, then
//!    [`start`]s a supervisor: kiln itself again (`kiln container-supervise ID`), with its own
//!    stdio on `/dev/null` and its errors in `supervisor.log` beside the record. It waits until
//!    the record says the container started (or why it could not) and prints the ID.
//! 2. The supervisor ([`run`]) starts a session of its own, parses the container's `kiln run`
//!    arguments again and runs the container through the same foreground path as `kiln run`
//!    (`run::run_supervised`), with the container's output going to its log ([`JsonLog`]):
//!    whatever `kiln run` sets up for a container applies, and is torn down when it ends.
//! 3. When the container ends, its restart policy decides whether it runs again (after a
//!    delay doubling from 100 ms, as docker's); `kiln stop` marks the record so that it does
//!    not. With `--rm` the container is removed at the end.
//! 4. While the container runs, its health check (if any) runs every interval through
//!    `kiln_runner::exec` ([`check_health`]) and its result goes to the record.

use std::io::{Read as _, Seek as _, Write};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kiln_cache::{
    ContainerRecord, ContainerRecords, ContainerStatus, HealthConfig, HealthLog, Store, ZERO_TIME,
    now_rfc3339,
};
use kiln_runner::{ExecSpec, ExitStatus};

use crate::commands::run;
use crate::config::Config;

/// Starts the supervisor of the new container `record` and waits until the container runs;
/// prints its ID. Returns `kiln run -d`'s exit code.
pub(crate) fn start(
    root: &Path,
    config_path: Option<&Path>,
    records: &ContainerRecords,
    record: &ContainerRecord,
) -> anyhow::Result<u8> {
    let exe = std::env::current_exe().context("finding the kiln executable")?;
    let log = fs_err::File::create(records.dir(&record.id).join("supervisor.log"))?;
    let mut command = Command::new(exe);
    command.arg("--root").arg(root);
    if let Some(path) = config_path {
        command.arg("--config").arg(path);
    }
    command
        .arg("container-supervise")
        .arg(&record.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.into_file());
    let mut supervisor = command
        .spawn()
        .context("starting the container's supervisor")?;
    let started = |current: &ContainerRecord| {
        current.state.started_at != ZERO_TIME || !current.state.error.is_empty()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let current = loop {
        let current = records.get(&record.id)?;
        if started(&current) {
            break current;
        }
        if supervisor.try_wait()?.is_some() {
            let current = records.get(&record.id)?;
            if started(&current) {
                break current;
            }
            let log = fs_err::read_to_string(records.dir(&record.id).join("supervisor.log"))
                .unwrap_or_default();
            bail!("the container's supervisor ended: {}", log.trim());
        }
        if Instant::now() > deadline {
            break current;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if current.state.started_at == ZERO_TIME && !current.state.error.is_empty() {
        #[expect(clippy::print_stderr, reason = "the binary reports its errors")]
        {
            eprintln!("kiln: {}", current.state.error);
        }
        return Ok(u8::try_from(current.state.exit_code & 0xff).unwrap_or(125));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", record.id).context("writing to standard output")?;
    Ok(0)
}

/// `kiln container-supervise ID`: keeps the detached container `id` until it ends for good.
pub(crate) fn run(root: &Path, config: anyhow::Result<Config>, id: &str) -> ExitCode {
    // Out of the session of the `kiln run -d` that started it, so that its terminal's signals
    // do not reach the container.
    let _ = nix::unistd::setsid();
    let records = ContainerRecords::new(root);
    match config.and_then(|config| supervise(root, &config, &records, id)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = format!("{err:#}");
            #[expect(clippy::print_stderr, reason = "the supervisor's errors go to its log")]
            {
                eprintln!("kiln: {message}");
            }
            let _ = records.update(id, |r| {
                if r.state.status == ContainerStatus::Created {
                    r.state.status = ContainerStatus::Exited;
                    r.state.exit_code = 125;
                }
                r.state.error = message;
            });
            ExitCode::from(125)
        }
    }
}

fn supervise(
    root: &Path,
    config: &Config,
    records: &ContainerRecords,
    id: &str,
) -> anyhow::Result<()> {
    let record = records.get(id)?;
    let args = run::parse_run_arguments(&record.run_args)?;
    let route = run::SignalRoute::start(run::block_signals(false)?, false)?;
    let policy = record.host_config.restart_policy;
    let mut delay = Duration::from_millis(100);
    loop {
        let began = Instant::now();
        let code = run::run_supervised(root, config, &args, id, &route)?;
        let current = records.get(id)?;
        if !policy.restarts(
            i32::from(code),
            current.restart_count,
            current.stopped_by_user,
        ) {
            break;
        }
        // docker's back-off: doubling from 100 ms, reset after a run of 10 s or more.
        if began.elapsed() >= Duration::from_secs(10) {
            delay = Duration::from_millis(100);
        }
        records.update(id, |r| {
            r.state.status = ContainerStatus::Restarting;
            r.state.keeper = Some(kiln_cache::Owner::current());
            r.restart_count += 1;
        })?;
        tracing::debug!(id, delay_ms = delay.as_millis() as u64, "restarting");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(60));
        if records.get(id)?.stopped_by_user {
            records.update(id, |r| r.state.status = ContainerStatus::Exited)?;
            break;
        }
    }
    if args.rm {
        let store = Store::open(root)?;
        run::remove_container(&store, records, id, &record.name)?;
    }
    Ok(())
}

/// One stream of a container's log in docker's json-file format: a JSON object per line,
/// `{"log":"LINE\n","stream":"stdout","time":"RFC 3339"}`; a line without its newline yet is
/// kept until it ends (or the writer is dropped).
pub(crate) struct JsonLog {
    file: Arc<Mutex<fs_err::File>>,
    stream: &'static str,
    partial: Vec<u8>,
}

/// Longest partial line kept before it is logged as it is (docker's buffer size).
const MAX_PARTIAL: usize = 16 * 1024;

impl JsonLog {
    /// The stdout and stderr writers of the log at `path` (appended to).
    pub(crate) fn pair(path: &Path) -> anyhow::Result<(Self, Self)> {
        let file = Arc::new(Mutex::new(
            fs_err::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ));
        let writer = |stream| Self {
            file: Arc::clone(&file),
            stream,
            partial: Vec::new(),
        };
        Ok((writer("stdout"), writer("stderr")))
    }

    fn emit(&self, line: &[u8]) -> std::io::Result<()> {
        let entry = serde_json::json!({
            "log": String::from_utf8_lossy(line),
            "stream": self.stream,
            "time": now_rfc3339(),
        });
        let mut text = entry.to_string();
        text.push('\n');
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(text.as_bytes())
    }
}

impl Write for JsonLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.emit(&line)?;
        }
        if self.partial.len() >= MAX_PARTIAL {
            let line = std::mem::take(&mut self.partial);
            self.emit(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for JsonLog {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            let _ = self.emit(&line);
        }
    }
}

/// A duration in nanoseconds, or `default` for 0.
fn nanos_or(nanos: u64, default: Duration) -> Duration {
    if nanos == 0 {
        default
    } else {
        Duration::from_nanos(nanos)
    }
}

/// The command of a `HEALTHCHECK` test: `CMD args...` or `CMD-SHELL command`.
fn health_command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first()? {
        (kind, args) if kind == "CMD" && !args.is_empty() => Some(args.to_vec()),
        (kind, args) if kind == "CMD-SHELL" && !args.is_empty() => {
            Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), args.join(" ")])
        }
        _ => None,
    }
}

/// Runs the health check of the container `id` (PID 1 `pid`) every interval in a thread of
/// its own until `stopped` disconnects, recording each result in the container's record as
/// docker does (`starting`, `healthy` after a success, `unhealthy` after `retries` failures
/// in a row; failures within the start period do not count).
pub(crate) fn check_health(
    records: ContainerRecords,
    id: String,
    pid: u32,
    health: HealthConfig,
    mut exec: ExecSpec,
    stopped: Receiver<()>,
) {
    let Some(command) = health_command(&health.test) else {
        return;
    };
    exec.args = command;
    let interval = nanos_or(health.interval, Duration::from_secs(30));
    let timeout = nanos_or(health.timeout, Duration::from_secs(30));
    let start_period = Duration::from_nanos(health.start_period);
    let retries = if health.retries == 0 {
        3
    } else {
        health.retries
    };
    let began = Instant::now();
    let spawned = std::thread::Builder::new()
        .name("health".to_owned())
        .spawn(move || {
            loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let start = now_rfc3339();
                let (exit_code, output) = probe(pid, &exec, timeout);
                let end = now_rfc3339();
                let in_start_period = began.elapsed() < start_period;
                let recorded = records.update(&id, |r| {
                    if r.state.status != ContainerStatus::Running {
                        return;
                    }
                    let health = r.state.health.get_or_insert_with(Default::default);
                    if exit_code == 0 {
                        health.status = "healthy".to_owned();
                        health.failing_streak = 0;
                    } else if !(in_start_period && health.status == "starting") {
                        health.failing_streak += 1;
                        if health.failing_streak >= retries {
                            health.status = "unhealthy".to_owned();
                        }
                    }
                    health.log.push(HealthLog {
                        start,
                        end,
                        exit_code,
                        output,
                    });
                    let excess = health.log.len().saturating_sub(5);
                    health.log.drain(..excess);
                });
                if let Err(err) = recorded {
                    tracing::warn!(error = %err, "cannot record a health check");
                }
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the health checks");
    }
}

/// One health check: its exit code (-1 when it could not run, as docker) and its output (at
/// most 4 KiB); one that outlives `timeout` is killed and fails.
fn probe(pid: u32, exec: &ExecSpec, timeout: Duration) -> (i32, String) {
    let run = || -> anyhow::Result<(Option<ExitStatus>, fs_err::File)> {
        let output = fs_err::File::from_parts(tempfile::tempfile()?, "health check output");
        let null = fs_err::File::open("/dev/null")?;
        let stdio = [
            null.file().as_fd(),
            output.file().as_fd(),
            output.file().as_fd(),
        ];
        let mut process = kiln_runner::spawn_exec(pid, exec, stdio)?;
        let status = process.wait_timeout(timeout)?;
        if status.is_none() {
            process.kill();
        }
        Ok((status, output))
    };
    match run() {
        Ok((Some(status), mut output)) => {
            let mut text = Vec::new();
            let _ = output.rewind();
            let _ = std::io::Read::by_ref(&mut output)
                .take(4096)
                .read_to_end(&mut text);
            (
                status.docker_code(),
                String::from_utf8_lossy(&text).into_owned(),
            )
        }
        Ok((None, _)) => (
            -1,
            format!(
                "Health check exceeded timeout ({})",
                crate::format::go_duration(timeout)
            ),
        ),
        Err(err) => (-1, format!("{err:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_json_lines_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        {
            let (mut out, mut err) = JsonLog::pair(&path).unwrap();
            out.write_all(b"one\ntw").unwrap();
            err.write_all(b"oops\n").unwrap();
            out.write_all(b"o\nend").unwrap();
        }
        let text = fs_err::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l["stream"].as_str().unwrap(), l["log"].as_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("stdout", "one\n"),
                ("stderr", "oops\n"),
                ("stdout", "two\n"),
                ("stdout", "end")
            ]
        );
        assert!(text.starts_with("{\"log\":\"one\\n\",\"stream\":\"stdout\",\"time\":\""));
        assert!(crate::format::parse_rfc3339(lines[0]["time"].as_str().unwrap()).is_some());
    }

    #[test]
    fn health_commands_are_docker_s() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            health_command(&v(&["CMD", "test", "-f", "/ok"])),
            Some(v(&["test", "-f", "/ok"]))
        );
        assert_eq!(
            health_command(&v(&["CMD-SHELL", "test -f /ok"])),
            Some(v(&["/bin/sh", "-c", "test -f /ok"]))
        );
        assert_eq!(health_command(&v(&["NONE"])), None);
        assert_eq!(health_command(&v(&["CMD"])), None);
    }
}
