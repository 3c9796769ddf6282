//! `kiln --host ADDR COMMAND` (`$KILN_HOST`): the commands a daemon does go to it; the ones
//! that act on this machine's store or containers are refused rather than quietly done here,
//! and the ones that touch neither run as without `--host`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kiln_cache::{DiskUsage, UsageEntry};
use kiln_daemon::{Client, Host, UsageRecord};

use crate::args::{Command, DebugCommand, DuArgs, PruneArgs};
use crate::format::table;

/// Runs `command` against the daemon at `host`; `None` for a command that runs here all the
/// same.
pub(crate) fn run(host: &str, command: &Command) -> Option<anyhow::Result<ExitCode>> {
    let name = match command {
        Command::Build(build) => return Some(super::build::remote::run(host, build)),
        Command::Du(du) => return Some(self::du(host, du)),
        Command::Prune(prune) if !prune.history => return Some(self::prune(host, prune)),
        Command::Debug(DebugCommand::Workers { verbose }) => {
            return Some(workers(host, *verbose));
        }
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
        Command::Prune(_) => "prune --history",
        Command::History(_) => "history",
        Command::Explain(_) => "explain",
    };
    Some(refuse(name, host))
}

fn refuse(name: &str, host: &str) -> anyhow::Result<ExitCode> {
    bail!(
        "kiln {name} works on this machine's store, not through a daemon; \
         unset KILN_HOST or drop --host {host} to run it here"
    )
}

/// The certificates a `tcp://` host is reached with: `$KILN_CERT_PATH/{ca,cert,key}.pem`
/// (docker's `DOCKER_CERT_PATH` layout: the CA that signed the daemon's certificate, this
/// client's certificate and key).
pub(crate) fn tls_files() -> Option<kiln_daemon::TlsFiles> {
    let dir = std::env::var_os("KILN_CERT_PATH").filter(|d| !d.is_empty())?;
    let dir = std::path::Path::new(&dir);
    Some(kiln_daemon::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
    })
}

/// Runs `call` with a client of the daemon at `host`.
fn with_client<T>(
    host: &str,
    call: impl AsyncFnOnce(Client) -> Result<T, kiln_daemon::ClientError>,
) -> anyhow::Result<T> {
    let host: Host = host.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(async {
        let client = Client::connect(&host, tls_files().as_ref()).await?;
        call(client).await
    })?)
}

/// A daemon's usage record as `kiln du` lists an entry: in use is not reclaimable (a kiln
/// daemon's images are its records in use, and the local sources a running build holds).
fn entry(record: &UsageRecord) -> UsageEntry {
    let kind = match record.record_type.as_str() {
        "exec.cachemount" => "exec.cachemount",
        "source.local" => "source.local",
        _ if record.in_use => "image",
        _ => "cache",
    };
    UsageEntry {
        kind,
        id: record.id.clone(),
        size: u64::try_from(record.size).unwrap_or(0),
        last_used: record
            .last_used_at
            .map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0)),
        in_use: record.in_use,
        description: record.description.clone(),
    }
}

/// `kiln --host ADDR du`: the daemon's usage records (`Control.DiskUsage`), each counted
/// whole, as `buildctl du` sums them.
fn du(host: &str, args: &DuArgs) -> anyhow::Result<ExitCode> {
    let records = with_client(host, async |client| client.disk_usage().await)
        .context("measuring the daemon's disk usage")?;
    let mut entries: Vec<UsageEntry> = records.iter().map(entry).collect();
    entries.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    let usage = DiskUsage {
        reclaimable: entries
            .iter()
            .filter(|e| e.reclaimable())
            .map(|e| e.size)
            .sum(),
        total: entries.iter().map(|e| e.size).sum(),
        shared: 0,
        entries,
    };
    super::du::show(&usage, &std::collections::HashMap::new(), args)
}

/// `kiln --host ADDR prune`: `Control.Prune` with `kiln prune`'s options.
fn prune(host: &str, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let options = super::prune::options(args)?;
    if !args.force && !super::prune::confirm(options.all)? {
        return Ok(ExitCode::SUCCESS);
    }
    let request = kiln_daemon::PruneOptions {
        all: options.all,
        filters: args.filter.clone(),
        keep_duration: None,
        reserved_space: options.keep_bytes.max(options.reserved_space),
        max_used_space: options.max_used_space,
        min_free_space: options.min_free_space,
    };
    let removed = with_client(host, async |client| client.prune(request).await)
        .context("pruning the daemon's build cache")?;
    let removed: Vec<UsageEntry> = removed.iter().map(entry).collect();
    let freed = removed.iter().map(|e| e.size).sum();
    super::prune::show_removed(&removed, freed, args)
}

/// `kiln --host ADDR debug workers [-v]`, as `buildctl debug workers` prints them.
fn workers(host: &str, verbose: bool) -> anyhow::Result<ExitCode> {
    let workers = with_client(host, async |client| client.workers().await)
        .context("listing the daemon's workers")?;
    let platform = |p: &kiln_llb::pb::Platform| {
        let mut text = format!("{}/{}", p.os, p.architecture);
        if !p.variant.is_empty() {
            text.push('/');
            text.push_str(&p.variant);
        }
        text
    };
    let text = if verbose {
        let mut text = String::new();
        for worker in &workers {
            text.push_str(&format!("ID:\t\t{}\n", worker.id));
            let platforms: Vec<String> = worker.platforms.iter().map(platform).collect();
            text.push_str(&format!("Platforms:\t{}\n", platforms.join(",")));
            if let Some(version) = &worker.buildkit_version {
                let line = format!(
                    "BuildKit:\t{} {} {}",
                    version.package, version.version, version.revision
                );
                text.push_str(line.trim_end());
                text.push('\n');
            }
            text.push_str("Labels:\n");
            let mut labels: Vec<_> = worker.labels.iter().collect();
            labels.sort();
            for (key, value) in labels {
                text.push_str(&format!("\t{key}:\t{value}\n"));
            }
            text.push('\n');
        }
        text
    } else {
        let mut rows = vec![["ID".to_owned(), "PLATFORMS".to_owned()]];
        rows.extend(workers.iter().map(|w| {
            let platforms: Vec<String> = w.platforms.iter().map(platform).collect();
            [w.id.clone(), platforms.join(",")]
        }));
        table(&rows)
    };
    super::du::write_stdout(&text)
}
