//! `kiln daemon`: serves BuildKit's control API on unix sockets and TCP with mutual TLS
//! (`kiln_daemon`), building in the store at `--root` with the registry settings of
//! `--config`, until SIGTERM or SIGINT. `--addr fd://` serves on the socket systemd passed
//! (socket activation); `--addr` repeats, as buildkitd's. `kiln
//! gateway-frontend` is the other side of the gateway API: kiln's own frontend in an image.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::args::DaemonArgs;
use crate::config::Config;

pub(crate) fn run(root: &Path, config: &Config, args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    let addresses = args
        .addr
        .iter()
        .map(|addr| addr.parse::<kiln_daemon::Address>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut daemon = kiln_daemon::Daemon::open(root, config.cache.clone())?;
    if let Some(gid) = args.group {
        daemon = daemon.socket_group(gid);
    }
    if let (Some(cert), Some(key), Some(ca)) = (&args.tlscert, &args.tlskey, &args.tlscacert) {
        daemon = daemon.tls(&kiln_daemon::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })?;
    }
    // Before the runtime's threads start: taking a passed socket edits the environment.
    let listeners = addresses
        .iter()
        .map(|address| daemon.listen(address))
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon.serve_on(listeners, kiln_daemon::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln gateway-frontend`: one build's frontend, for the builder on standard input and
/// output (`kiln_daemon::serve_builtin_frontend`).
pub(crate) fn gateway_frontend() -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(kiln_daemon::serve_builtin_frontend())
        .context("returning the result to the builder")?;
    Ok(ExitCode::SUCCESS)
}
