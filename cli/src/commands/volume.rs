//! `kiln volume create|ls|rm|inspect`: named volumes ([`kiln_cache::Volumes`]) with docker's
//! output and messages.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_cache::{ContainerRecords, Volume, Volumes};

use crate::args::VolumeCommand;

/// `docker volume inspect`'s JSON for a volume.
pub(crate) fn volume_json(volume: &Volume) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": volume.created_at,
        "Driver": volume.driver,
        "Labels": null,
        "Mountpoint": volume.mountpoint,
        "Name": volume.name,
        "Options": null,
        "Scope": volume.scope,
    })
}

/// Runs a `kiln volume` subcommand.
pub(crate) fn run(root: &Path, command: VolumeCommand) -> anyhow::Result<ExitCode> {
    let volumes = Volumes::new(root);
    let mut stdout = std::io::stdout().lock();
    let mut failed = false;
    #[expect(clippy::print_stderr, reason = "the binary reports its errors")]
    let mut report = |err: &dyn std::fmt::Display| {
        eprintln!("Error response from daemon: {err}");
        failed = true;
    };
    match command {
        VolumeCommand::Create { name } => {
            let name = name.unwrap_or_else(|| {
                (0..4)
                    .map(|_| format!("{:016x}", fastrand::u64(..)))
                    .collect()
            });
            let (volume, _) = volumes.create(&name)?;
            writeln!(stdout, "{}", volume.name)?;
        }
        VolumeCommand::Ls { quiet } => {
            let list = volumes.list()?;
            if quiet {
                for volume in list {
                    writeln!(stdout, "{}", volume.name)?;
                }
            } else {
                let mut rows = vec![vec!["DRIVER".to_owned(), "VOLUME NAME".to_owned()]];
                rows.extend(list.into_iter().map(|v| vec![v.driver, v.name]));
                stdout.write_all(crate::format::table(&rows).as_bytes())?;
            }
        }
        VolumeCommand::Rm {
            force,
            volumes: names,
        } => {
            let containers = ContainerRecords::new(root).list()?;
            for name in names {
                let users: Vec<&str> = containers
                    .iter()
                    .filter(|c| {
                        c.host_config
                            .binds
                            .iter()
                            .any(|b| b.split(':').next() == Some(name.as_str()))
                    })
                    .map(|c| c.id.as_str())
                    .collect();
                if !users.is_empty() {
                    report(&format!(
                        "remove {name}: volume is in use - [{}]",
                        users.join(", ")
                    ));
                    continue;
                }
                match volumes.remove(&name) {
                    Ok(()) => writeln!(stdout, "{name}")?,
                    Err(kiln_cache::Error::NoSuchVolume { .. }) if force => {}
                    Err(err) => report(&err),
                }
            }
        }
        VolumeCommand::Inspect { volumes: names } => {
            let mut found = Vec::new();
            for name in names {
                match volumes.get(&name) {
                    Ok(volume) => found.push(volume_json(&volume)),
                    Err(err) => report(&err),
                }
            }
            let text = serde_json::to_string_pretty(&found).context("writing JSON")?;
            writeln!(stdout, "{text}")?;
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
