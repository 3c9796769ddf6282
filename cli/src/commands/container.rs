//! `kiln ps`, `logs`, `stop`, `kill`, `rm` and `inspect`: containers' records
//! ([`kiln_cache::ContainerRecords`]) shown and acted on with docker's flags, wording and
//! exit codes.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kiln_cache::{ContainerRecord, ContainerRecords, ContainerStatus, RestartPolicy, Store};
use kiln_runner::Signal;

use crate::args::{InspectArgs, KillArgs, LogsArgs, PsArgs, RmArgs, StopArgs};
use crate::format;

/// Prints docker's `Error response from daemon: ...` for one of several containers.
#[expect(clippy::print_stderr, reason = "the binary reports its errors")]
fn report(err: &anyhow::Error) {
    eprintln!("Error response from daemon: {err:#}");
}

/// Seconds since the RFC 3339 time `text` (0 for a time in the future or unreadable).
fn seconds_since(text: &str) -> u64 {
    let now = jiff::Timestamp::now().as_second();
    format::parse_rfc3339(text)
        .and_then(|then| u64::try_from(now - then).ok())
        .unwrap_or(0)
}

/// docker's `STATUS` column: `Up 3 seconds (healthy)`, `Exited (0) 5 seconds ago`, ...
fn status(record: &ContainerRecord) -> String {
    let state = &record.state;
    match state.status {
        ContainerStatus::Created => "Created".to_owned(),
        ContainerStatus::Running => {
            let health = match state.health.as_ref().map(|h| h.status.as_str()) {
                Some("starting") => " (health: starting)".to_owned(),
                Some(status @ ("healthy" | "unhealthy")) => format!(" ({status})"),
                _ => String::new(),
            };
            format!(
                "Up {}{health}",
                format::human_duration(seconds_since(&state.started_at))
            )
        }
        ContainerStatus::Restarting => format!(
            "Restarting ({}) {} ago",
            state.exit_code,
            format::human_duration(seconds_since(&state.finished_at))
        ),
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            state.exit_code,
            format::human_duration(seconds_since(&state.finished_at))
        ),
        ContainerStatus::Dead => "Dead".to_owned(),
    }
}

/// docker's `PORTS` column: `0.0.0.0:8080->80/tcp, ...`.
fn ports(record: &ContainerRecord) -> String {
    record
        .network_settings
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip, p.host_port, p.container_port, p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// docker's `Ellipsis`: at most `width` characters, the last one `…` when cut.
fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `kiln ps`: docker's table of containers, newest first (running ones only without `-a`).
pub(crate) fn ps(root: &Path, args: &PsArgs) -> anyhow::Result<ExitCode> {
    let records = ContainerRecords::new(root).list()?;
    let shown = records
        .iter()
        .filter(|r| args.all || r.is_running() && r.state.status != ContainerStatus::Created);
    let id = |r: &ContainerRecord| {
        if args.no_trunc {
            r.id.clone()
        } else {
            r.id[..12.min(r.id.len())].to_owned()
        }
    };
    let mut out = String::new();
    if args.quiet {
        for record in shown {
            out.push_str(&id(record));
            out.push('\n');
        }
    } else {
        let mut rows = vec![
            [
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for record in shown {
            let command = std::iter::once(record.path.as_str())
                .chain(record.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            let command = if args.no_trunc {
                command
            } else {
                ellipsis(&command, 20)
            };
            rows.push(vec![
                id(record),
                record.config.image.clone(),
                format!("{command:?}"),
                format!(
                    "{} ago",
                    format::human_duration(seconds_since(&record.created))
                ),
                status(record),
                ports(record),
                record.name.clone(),
            ]);
        }
        out = format::table(&rows);
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln logs`: the container's log, stdout to stdout and stderr to stderr.
pub(crate) fn logs(root: &Path, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let records = ContainerRecords::new(root);
    let record = match records.get(&args.container) {
        Ok(record) => record,
        Err(err) => {
            report(&err.into());
            return Ok(ExitCode::FAILURE);
        }
    };
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<usize>()
                .with_context(|| format!("invalid value for \"tail\": {n:?}"))?,
        ),
    };
    let path = records.log_path(&record.id);
    let mut file = match fs_err::File::open(&path) {
        Ok(file) => Some(file),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err.into()),
    };
    let mut pending = Vec::new();
    let mut read_more = |file: &mut Option<fs_err::File>| -> anyhow::Result<Vec<Vec<u8>>> {
        if file.is_none() {
            *file = fs_err::File::open(&path).ok();
        }
        if let Some(file) = file {
            file.read_to_end(&mut pending)?;
        }
        let end = pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let complete: Vec<u8> = pending.drain(..end).collect();
        Ok(complete
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    };
    let mut lines = read_more(&mut file)?;
    if let Some(tail) = tail {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    print_log_lines(&lines, args.timestamps)?;
    if args.follow {
        loop {
            let running = records.get(&record.id).is_ok_and(|r| r.is_running());
            let lines = read_more(&mut file)?;
            print_log_lines(&lines, args.timestamps)?;
            if !running {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Some(file) = &mut file {
        // Nothing else to read; keep the position honest for a later reader of `file`.
        let _ = file.seek(SeekFrom::End(0));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_log_lines(lines: &[Vec<u8>], timestamps: bool) -> anyhow::Result<()> {
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    for line in lines {
        let Ok(entry) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let text = entry["log"].as_str().unwrap_or_default();
        let out: &mut dyn std::io::Write = if entry["stream"] == "stderr" {
            &mut stderr
        } else {
            &mut stdout
        };
        if timestamps {
            write!(out, "{} ", entry["time"].as_str().unwrap_or_default())?;
        }
        out.write_all(text.as_bytes())?;
        // Line by line, so that the two streams keep their order on one terminal.
        out.flush()?;
    }
    Ok(())
}

/// Waits until the container `id` no longer runs, at most `timeout` (`None`: for ever);
/// whether it stopped.
fn wait_stopped(records: &ContainerRecords, id: &str, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        match records.get(id) {
            Ok(record) if record.is_running() => {}
            _ => return true,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` to the container's process, if it has one; a process already gone is fine.
fn signal(record: &ContainerRecord, signal: Signal) -> anyhow::Result<()> {
    if record.state.pid == 0 {
        return Ok(());
    }
    match kiln_runner::signal_process(record.state.pid, signal) {
        Ok(())
        | Err(kiln_runner::Error::Syscall {
            source: nix::errno::Errno::ESRCH,
            ..
        }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The signal that stops `record`'s container: its stop signal, else SIGTERM.
fn stop_signal(record: &ContainerRecord) -> anyhow::Result<Signal> {
    if record.config.stop_signal.is_empty() {
        Ok(Signal::SIGTERM)
    } else {
        Ok(kiln_runner::parse_signal(&record.config.stop_signal)?)
    }
}

/// Stops one container: its stop signal (or `signal`), then SIGKILL after `timeout`.
fn stop_one(
    records: &ContainerRecords,
    name: &str,
    signal_override: Option<Signal>,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let record = records.get(name)?;
    if !record.is_running() {
        return Ok(());
    }
    let record = records.update(&record.id, |r| r.stopped_by_user = true)?;
    let first = match signal_override {
        Some(signal) => signal,
        None => stop_signal(&record)?,
    };
    tracing::debug!(id = %record.id, %first, "stopping");
    signal(&record, first)?;
    if wait_stopped(records, &record.id, timeout) {
        return Ok(());
    }
    tracing::debug!(id = %record.id, "killing after the stop timeout");
    signal(&records.get(&record.id)?, Signal::SIGKILL)?;
    if !wait_stopped(records, &record.id, Some(Duration::from_secs(30))) {
        bail!("cannot stop container: {name}: it is still running after SIGKILL");
    }
    Ok(())
}

/// For each name: `action`, printing the name as given, or docker's error; exit 1 if one
/// failed.
fn each(
    names: &[String],
    mut action: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for name in names {
        match action(name) {
            Ok(()) => {
                writeln!(std::io::stdout().lock(), "{name}")
                    .context("writing to standard output")?;
            }
            Err(err) => {
                report(&err);
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `kiln stop`.
pub(crate) fn stop(root: &Path, args: &StopArgs) -> anyhow::Result<ExitCode> {
    let records = ContainerRecords::new(root);
    let signal = args
        .signal
        .as_deref()
        .map(kiln_runner::parse_signal)
        .transpose()?;
    // docker: a negative timeout waits for ever.
    let timeout = u64::try_from(args.time).ok().map(Duration::from_secs);
    each(&args.containers, |name| {
        stop_one(&records, name, signal, timeout)
    })
}

/// `kiln kill`.
pub(crate) fn kill(root: &Path, args: &KillArgs) -> anyhow::Result<ExitCode> {
    let records = ContainerRecords::new(root);
    let sent = kiln_runner::parse_signal(&args.signal)?;
    each(&args.containers, |name| {
        let record = records.get(name)?;
        if record.state.status != ContainerStatus::Running {
            bail!(
                "cannot kill container: {name}: container {} is not running",
                record.id
            );
        }
        // As docker: killed with SIGKILL or its stop signal, it stays stopped.
        let record = if sent == Signal::SIGKILL || stop_signal(&record).ok() == Some(sent) {
            records.update(&record.id, |r| r.stopped_by_user = true)?
        } else {
            record
        };
        signal(&record, sent)
    })
}

/// `kiln rm`.
pub(crate) fn rm(root: &Path, args: &RmArgs) -> anyhow::Result<ExitCode> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let records = ContainerRecords::new(root);
    each(&args.containers, |name| {
        let record = match records.get(name) {
            Ok(record) => record,
            // A container kept by an older kiln: a file system without a record.
            Err(kiln_cache::Error::NoSuchContainer { .. }) => {
                return Ok(store.remove_container(name)?);
            }
            Err(err) => return Err(err.into()),
        };
        if record.is_running() {
            if !args.force {
                bail!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    record.name
                );
            }
            let record = records.update(&record.id, |r| r.stopped_by_user = true)?;
            signal(&record, Signal::SIGKILL)?;
            if !wait_stopped(&records, &record.id, Some(Duration::from_secs(30))) {
                bail!(
                    "cannot remove container \"/{}\": it still runs",
                    record.name
                );
            }
        }
        crate::commands::run::remove_container(&store, &records, &record.id, &record.name)
    })
}

/// docker's `RestartPolicy` object.
fn restart_policy(policy: RestartPolicy) -> serde_json::Value {
    let (name, count) = match policy {
        RestartPolicy::No => ("no", 0),
        RestartPolicy::OnFailure(count) => ("on-failure", count),
        RestartPolicy::Always => ("always", 0),
        RestartPolicy::UnlessStopped => ("unless-stopped", 0),
    };
    serde_json::json!({ "Name": name, "MaximumRetryCount": count })
}

/// A list, or `null` when empty (as docker shows an unset `Entrypoint`).
fn list_or_null(items: &[String]) -> serde_json::Value {
    if items.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(items)
    }
}

/// `docker inspect`'s JSON for a container (the fields that apply to kiln).
fn container_json(records: &ContainerRecords, record: &ContainerRecord) -> serde_json::Value {
    let state = &record.state;
    let mut state_json = serde_json::json!({
        "Status": state.status.as_str(),
        "Running": state.status == ContainerStatus::Running,
        "Paused": false,
        "Restarting": state.status == ContainerStatus::Restarting,
        "OOMKilled": state.oom_killed,
        "Dead": state.status == ContainerStatus::Dead,
        "Pid": state.pid,
        "ExitCode": state.exit_code,
        "Error": state.error,
        "StartedAt": state.started_at,
        "FinishedAt": state.finished_at,
    });
    if let Some(health) = &state.health {
        state_json["Health"] = serde_json::json!(health);
    }
    let host = &record.host_config;
    let mut ports = serde_json::Map::new();
    for port in &record.network_settings.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        let bindings = ports.entry(key).or_insert_with(|| serde_json::json!([]));
        if let Some(list) = bindings.as_array_mut() {
            list.push(serde_json::json!({
                "HostIp": port.host_ip,
                "HostPort": port.host_port.to_string(),
            }));
        }
    }
    let mut config = serde_json::json!({
        "Tty": record.config.tty,
        "Env": record.config.env,
        "Cmd": list_or_null(&record.config.cmd),
        "Image": record.config.image,
        "WorkingDir": record.config.working_dir,
        "Entrypoint": list_or_null(&record.config.entrypoint),
        "Labels": record.config.labels,
        "User": record.config.user,
    });
    if !record.config.stop_signal.is_empty() {
        config["StopSignal"] = serde_json::json!(record.config.stop_signal);
    }
    if let Some(health) = &record.config.healthcheck {
        config["Healthcheck"] = serde_json::json!(health);
    }
    serde_json::json!({
        "Id": record.id,
        "Created": record.created,
        "Path": record.path,
        "Args": record.args,
        "State": state_json,
        "Image": record.image,
        "LogPath": records.log_path(&record.id),
        "Name": format!("/{}", record.name),
        "RestartCount": record.restart_count,
        "HostConfig": {
            "Binds": list_or_null(&host.binds),
            "NetworkMode": host.network_mode,
            "RestartPolicy": restart_policy(host.restart_policy),
            "AutoRemove": host.auto_remove,
            "CapAdd": list_or_null(&host.cap_add),
            "CapDrop": list_or_null(&host.cap_drop),
            "Privileged": host.privileged,
            "ReadonlyRootfs": host.readonly_rootfs,
            "Memory": host.memory,
            "NanoCpus": host.nano_cpus,
            "PidsLimit": host.pids_limit,
        },
        "Config": config,
        "NetworkSettings": {
            "IPAddress": record.network_settings.ip_address,
            "Gateway": record.network_settings.gateway,
            "MacAddress": record.network_settings.mac_address,
            "Ports": ports,
        },
    })
}

/// `kiln inspect`: containers (and volumes) as docker's JSON array.
pub(crate) fn inspect(root: &Path, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let records = ContainerRecords::new(root);
    let volumes = kiln_cache::Volumes::new(root);
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in &args.objects {
        match records.get(name) {
            Ok(record) => found.push(container_json(&records, &record)),
            Err(kiln_cache::Error::NoSuchContainer { .. }) => match volumes.get(name) {
                Ok(volume) => found.push(crate::commands::volume::volume_json(&volume)),
                Err(_) => missing.push(name),
            },
            Err(err) => return Err(err.into()),
        }
    }
    let mut text = serde_json::to_string_pretty(&found).context("writing JSON")?;
    text.push('\n');
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing to standard output")?;
    if missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    #[expect(clippy::print_stderr, reason = "the binary reports its errors")]
    for name in missing {
        eprintln!("Error: No such object: {name}");
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_docker() {
        let mut record = ContainerRecord::new("web");
        assert_eq!(status(&record), "Created");
        record.state.status = ContainerStatus::Running;
        record.state.started_at = kiln_cache::now_rfc3339();
        assert_eq!(status(&record), "Up Less than a second");
        record.state.health = Some(kiln_cache::Health {
            status: "healthy".to_owned(),
            ..Default::default()
        });
        assert_eq!(status(&record), "Up Less than a second (healthy)");
        record.state.status = ContainerStatus::Exited;
        record.state.exit_code = 3;
        record.state.finished_at = "2000-01-01T00:00:00Z".to_owned();
        assert!(
            status(&record).starts_with("Exited (3) "),
            "{}",
            status(&record)
        );
        assert!(
            status(&record).ends_with(" years ago"),
            "{}",
            status(&record)
        );
    }

    #[test]
    fn commands_are_cut_like_docker() {
        assert_eq!(ellipsis("sleep 1000", 20), "sleep 1000");
        assert_eq!(
            ellipsis("sh -c 'while true; do sleep 1; done'", 20),
            "sh -c 'while true; …"
        );
    }
}
