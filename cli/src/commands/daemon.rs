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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser as _;

    /// A file of examples/kubernetes.
    fn example(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/kubernetes")
            .join(name)
    }

    #[test]
    fn the_kubernetes_examples_start_daemons_kiln_accepts() {
        use saphyr::LoadableYamlNode as _;

        for manifest in ["deployment+service.yaml", "statefulset.yaml"] {
            let text = fs_err::read_to_string(example(manifest)).unwrap();
            let documents = saphyr::Yaml::load_from_str(&text).unwrap();
            let pod = &documents[0]["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            let args: Vec<&str> = container["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|arg| arg.as_str().unwrap())
                .collect();
            let cli = crate::args::Cli::try_parse_from(std::iter::once("kiln").chain(args))
                .unwrap_or_else(|e| panic!("{manifest}: {e}"));
            let crate::args::Command::Daemon(daemon) = cli.command else {
                panic!("{manifest}: not `kiln daemon`");
            };
            let addresses: Vec<kiln_daemon::Address> =
                daemon.addr.iter().map(|a| a.parse().unwrap()).collect();
            assert!(
                addresses
                    .iter()
                    .any(|a| matches!(a, kiln_daemon::Address::Tcp(hp) if hp == "0.0.0.0:1234")),
                "{manifest}: {addresses:?}"
            );
            // The files the daemon reads are where the manifest mounts them.
            let mounts: Vec<&str> = container["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|m| m["mountPath"].as_str().unwrap())
                .collect();
            let files = [
                cli.config.unwrap(),
                daemon.tlscert.unwrap(),
                daemon.tlskey.unwrap(),
                daemon.tlscacert.unwrap(),
                cli.root,
            ];
            for file in files {
                assert!(
                    mounts.iter().any(|m| file.starts_with(m)),
                    "{manifest}: {} is not on a mounted volume ({mounts:?})",
                    file.display()
                );
            }
            // The probes and the Service use the port the daemon listens on.
            assert_eq!(
                container["ports"][0]["containerPort"].as_integer(),
                Some(1234)
            );
            assert_eq!(documents[1]["kind"].as_str(), Some("Service"));
        }
        // The configuration the ConfigMap carries is one kiln reads.
        crate::config::Config::load(Some(&example("kiln.toml"))).unwrap();
    }
}
