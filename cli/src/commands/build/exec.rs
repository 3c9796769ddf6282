//! `kiln build --frontend-exec CMD`: a frontend that is a command on the host, for generators
//! that need no round trips. It runs through `sh -c` in the context directory with the
//! options as `BUILDKIT_FRONTEND_OPT_n=KEY=VALUE` (as a frontend image gets them), prints one
//! marshalled LLB Definition on its standard output (at most [`MAX_DEFINITION`] bytes), and
//! may write the image configuration to the file `$KILN_FRONTEND_IMAGE_CONFIG` names.
//!
//! The command is the user's own (it is named on the command line, never by a Dockerfile):
//! it runs with kiln's privileges, like any build script.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use kiln_frontend::Converted;
use kiln_llb::pb;

/// The largest Definition a command may print.
pub(super) const MAX_DEFINITION: u64 = 64 << 20;

/// The variable naming the file for the image configuration.
pub(super) const CONFIG_VAR: &str = "KILN_FRONTEND_IMAGE_CONFIG";

/// Runs `command` with `options` in `dir` and reads the Definition it prints.
pub(super) fn run(
    command: &str,
    options: &BTreeMap<String, String>,
    dir: &Path,
) -> anyhow::Result<Converted> {
    let scratch = tempfile::Builder::new()
        .prefix("kiln-frontend-")
        .tempdir()
        .context("making a directory for the frontend command")?;
    let config_file = scratch.path().join("config.json");
    let mut child = Command::new("/bin/sh");
    child
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env(CONFIG_VAR, &config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for variable in kiln_daemon::frontend_option_env(options) {
        if let Some((name, value)) = variable.split_once('=') {
            child.env(name, value);
        }
    }
    let mut child = child
        .spawn()
        .with_context(|| format!("running the frontend command {command:?}"))?;
    let mut bytes = Vec::new();
    let read = child
        .stdout
        .take()
        .context("the frontend command's standard output")?
        .take(MAX_DEFINITION + 1)
        .read_to_end(&mut bytes);
    if read.is_err() || bytes.len() as u64 > MAX_DEFINITION {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for the frontend command {command:?}"))?;
    read.with_context(|| format!("reading the output of the frontend command {command:?}"))?;
    if bytes.len() as u64 > MAX_DEFINITION {
        bail!(
            "the frontend command {command:?} printed more than {MAX_DEFINITION} bytes: \
             a Definition is not that large"
        );
    }
    if !status.success() {
        bail!("the frontend command {command:?} failed: {status}");
    }
    if bytes.is_empty() {
        bail!("the frontend command {command:?} printed no Definition on its standard output");
    }
    let definition = <pb::Definition as kiln_llb::prost::Message>::decode(bytes.as_slice())
        .with_context(|| {
            format!("the frontend command {command:?} printed no valid LLB Definition")
        })?;
    let config = match fs_err::read(&config_file) {
        Ok(bytes) if !bytes.is_empty() => Some(bytes),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    kiln_daemon::FrontendResult {
        definition: Some(definition),
        config,
        ..kiln_daemon::FrontendResult::default()
    }
    .into_converted()
    .map_err(|message| {
        anyhow::anyhow!("the frontend command {command:?} wrote an {message} to ${CONFIG_VAR}")
    })
}
