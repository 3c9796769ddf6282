//! `--provenance`, `--sbom` and `--attest`: the attestations a build asks for, read as buildx
//! reads them (`true`/`false` or `KEY=VALUE,…`; `--attest type=provenance,mode=max`), and the
//! provenance request the exporters turn into each image's SLSA predicate.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use kiln_exporters::{Attestations, Output, ProvenanceMode, ProvenanceRequest};

use crate::args::BuildArgs;

/// What the flags ask for, before the build.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Requested {
    /// Provenance, and its mode.
    pub(super) provenance: Option<ProvenanceMode>,
    /// An SBOM.
    pub(super) sbom: bool,
}

/// One attestation flag's value: `true`/`false` (as Go's `strconv.ParseBool`) or CSV pairs.
fn attest_value(kind: &str, value: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut pairs = BTreeMap::new();
    pairs.insert("type".to_owned(), kind.to_owned());
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => {}
        "0" | "f" | "F" | "false" | "FALSE" | "False" => {
            pairs.insert("disabled".to_owned(), "true".to_owned());
        }
        _ => {
            for (key, value) in csv_pairs(&format!("--{kind}"), value)? {
                pairs.insert(key, value);
            }
        }
    }
    Ok(pairs)
}

/// `KEY=VALUE,…`.
fn csv_pairs(flag: &str, text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.split_once('=')
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                .with_context(|| format!("invalid {flag} value {text:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// Reads the flags; `pushes` says whether an output pushes to a registry (which gets
/// `mode=min` provenance unless asked otherwise, as buildx's default).
pub(super) fn requested(args: &BuildArgs, pushes: bool) -> anyhow::Result<Requested> {
    let mut given: Vec<BTreeMap<String, String>> = Vec::new();
    for text in &args.attest {
        let pairs: BTreeMap<String, String> = csv_pairs("--attest", text)?.into_iter().collect();
        if !pairs.contains_key("type") {
            bail!(
                "invalid --attest value {text:?}: type is required (type=provenance or type=sbom)"
            );
        }
        given.push(pairs);
    }
    if let Some(value) = &args.provenance {
        given.push(attest_value("provenance", value)?);
    }
    if let Some(value) = &args.sbom {
        given.push(attest_value("sbom", value)?);
    }
    let default_provenance =
        pushes && std::env::var_os("BUILDX_NO_DEFAULT_ATTESTATIONS").is_none_or(|v| v.is_empty());
    let mut requested = Requested {
        provenance: default_provenance.then_some(ProvenanceMode::Min),
        sbom: false,
    };
    for pairs in given {
        let disabled = match pairs.get("disabled").map(String::as_str) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => bail!("invalid value {other:?} for disabled: expected true or false"),
        };
        match pairs["type"].as_str() {
            "provenance" => {
                requested.provenance = if disabled {
                    None
                } else {
                    Some(match pairs.get("mode").map(String::as_str) {
                        None | Some("min") => ProvenanceMode::Min,
                        Some("max") => ProvenanceMode::Max,
                        Some(other) => {
                            bail!("invalid provenance mode {other:?}: expected min or max")
                        }
                    })
                };
            }
            "sbom" => {
                if let Some(generator) = pairs.get("generator") {
                    bail!(
                        "--sbom generator={generator}: kiln makes the SBOM itself and runs no \
                         generator image"
                    );
                }
                requested.sbom = !disabled;
            }
            other => bail!("unknown attestation type {other:?}: expected provenance or sbom"),
        }
    }
    Ok(requested)
}

/// Whether an output pushes to a registry.
pub(super) fn pushes(outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::Image { settings, .. } if settings.push))
}

/// What the build's provenance says about its request.
pub(super) struct RequestFacts<'a> {
    /// The frontend (`dockerfile.v0`; `None` for an LLB build).
    pub(super) frontend: Option<&'a str>,
    /// Its attributes.
    pub(super) args: BTreeMap<String, String>,
    /// The local sources' names.
    pub(super) locals: Vec<String>,
    /// The secrets' ids.
    pub(super) secrets: Vec<String>,
    /// The SSH sockets' ids.
    pub(super) ssh: Vec<String>,
    /// The Dockerfile's name.
    pub(super) config_path: Option<String>,
    /// The Dockerfile's text.
    pub(super) config_data: Option<Vec<u8>>,
}

/// The attestations for the exporters, once the build's record says when it ran.
pub(super) fn attestations(
    requested: &Requested,
    facts: RequestFacts<'_>,
    record: &kiln_solver::BuildRecord,
) -> Attestations {
    let started = i64::try_from(record.created).ok();
    let finished =
        started.map(|s| s + i64::try_from(record.duration_ms.div_ceil(1000)).unwrap_or(0));
    Attestations {
        provenance: requested.provenance.map(|mode| ProvenanceRequest {
            mode,
            frontend: facts.frontend.unwrap_or_default().to_owned(),
            args: facts.args,
            locals: facts.locals,
            secrets: facts.secrets,
            ssh: facts.ssh,
            config_path: facts.config_path,
            config_data: facts.config_data,
            invocation_id: record.id.clone(),
            started_on: started,
            finished_on: finished,
        }),
        sbom: requested.sbom,
    }
}

/// The frontend of a Dockerfile build as its provenance names it: `dockerfile.v0`, its
/// attributes (with `source` and `cmdline` for a frontend image, as buildx sends them) and
/// the Dockerfile's name.
pub(super) fn frontend_facts(
    args: &BuildArgs,
    options: &kiln_frontend::ConvertOptions,
    choice: &super::gateway::Choice,
) -> (&'static str, BTreeMap<String, String>, String) {
    let mut attrs = kiln_daemon::frontend_attrs(options, args.no_cache);
    if let super::gateway::Choice::Image(syntax) = choice {
        attrs.insert("source".to_owned(), syntax.image.clone());
        if let Some(cmdline) = &syntax.cmdline {
            attrs.insert("cmdline".to_owned(), cmdline.clone());
        }
    }
    ("dockerfile.v0", attrs, options.file_name.clone())
}

/// What the provenance says of the build's request: the frontend with its attributes and
/// Dockerfile (`None`: an LLB build), the names of its locals, secrets and SSH sockets.
pub(super) fn request_facts<'a, S, T>(
    frontend: Option<(&'a str, BTreeMap<String, String>, String)>,
    source: Option<&super::dockerfile::Source>,
    locals: &HashMap<String, PathBuf>,
    secrets: &HashMap<String, S>,
    ssh: &HashMap<String, T>,
) -> RequestFacts<'a> {
    let sorted = |keys: Vec<&String>| {
        let mut keys: Vec<String> = keys.into_iter().cloned().collect();
        keys.sort();
        keys
    };
    let (frontend, args, config_path) = match frontend {
        Some((name, attrs, file)) => (Some(name), attrs, Some(file)),
        None => (None, BTreeMap::new(), None),
    };
    RequestFacts {
        frontend,
        args,
        locals: sorted(locals.keys().collect()),
        secrets: sorted(secrets.keys().collect()),
        ssh: sorted(ssh.keys().collect()),
        config_path,
        config_data: source.map(|s| s.bytes.clone()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(flags: &[&str]) -> BuildArgs {
        let mut argv = vec!["kiln", "build"];
        argv.extend_from_slice(flags);
        argv.push(".");
        match crate::args::Cli::try_parse_from(argv).unwrap().command {
            crate::args::Command::Build(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn provenance_is_min_on_pushes_and_as_asked_otherwise() {
        let min = Some(ProvenanceMode::Min);
        assert_eq!(requested(&args(&[]), true).unwrap().provenance, min);
        assert_eq!(requested(&args(&[]), false).unwrap().provenance, None);
        let off = requested(&args(&["--provenance=false"]), true).unwrap();
        assert_eq!(off.provenance, None);
        let max = requested(&args(&["--provenance=mode=max"]), false).unwrap();
        assert_eq!(max.provenance, Some(ProvenanceMode::Max));
        assert_eq!(
            requested(&args(&["--provenance"]), false)
                .unwrap()
                .provenance,
            min
        );
        let attest = args(&[
            "--attest",
            "type=provenance,mode=max",
            "--attest",
            "type=sbom,disabled=true",
        ]);
        let both = requested(&attest, false).unwrap();
        assert_eq!(both.provenance, Some(ProvenanceMode::Max));
        assert!(!both.sbom);
        assert!(requested(&args(&["--sbom"]), false).unwrap().sbom);
        assert!(
            requested(&args(&["--attest", "type=sbom"]), false)
                .unwrap()
                .sbom
        );
        assert!(!requested(&args(&["--sbom=false"]), false).unwrap().sbom);
        let bad = requested(&args(&["--provenance=mode=all"]), false).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "invalid provenance mode \"all\": expected min or max"
        );
    }
}
