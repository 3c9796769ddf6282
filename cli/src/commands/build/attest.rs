//! `--provenance`, `--sbom` and `--attest`: the attestations a build asks for, read as buildx
//! reads them (`true`/`false` or `KEY=VALUE,…`; `--attest type=provenance,mode=max`) by
//! kiln-exporters' [`Attest`] (the reading `kiln daemon` shares for BuildKit's `attest:`
//! attributes), with buildx's default (`mode=min` provenance on a push); and what the build
//! says of its request, from which kiln-engine makes each image's SLSA predicate.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use kiln_exporters::{Attest, AttestationRequest, Output, ProvenanceMode, RequestFacts};

use crate::args::BuildArgs;

/// Reads the flags; `pushes` says whether an output pushes to a registry (which gets
/// `mode=min` provenance unless asked otherwise, as buildx's default).
pub(super) fn requested(args: &BuildArgs, pushes: bool) -> anyhow::Result<AttestationRequest> {
    let mut given = Vec::new();
    for text in &args.attest {
        given.push(Attest::flag("--attest", text)?);
    }
    if let Some(value) = &args.provenance {
        given.push(Attest::value("provenance", "--provenance", value)?);
    }
    if let Some(value) = &args.sbom {
        given.push(Attest::value("sbom", "--sbom", value)?);
    }
    let default_provenance =
        pushes && std::env::var_os("BUILDX_NO_DEFAULT_ATTESTATIONS").is_none_or(|v| v.is_empty());
    let mut requested = AttestationRequest {
        provenance: default_provenance.then_some(ProvenanceMode::Min),
        sbom: false,
    };
    for attest in &given {
        // buildx sends `mode=min` when the flag names no mode.
        requested.apply(attest, ProvenanceMode::Min)?;
    }
    Ok(requested)
}

/// Whether an output pushes to a registry.
pub(super) fn pushes(outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| matches!(o, Output::Image { settings, .. } if settings.push))
}

/// What the provenance says of a Dockerfile build's frontend: its name, its attributes and
/// the Dockerfile's name.
pub(super) type FrontendFacts = (&'static str, BTreeMap<String, String>, String);

/// The frontend of a Dockerfile build as its provenance names it: `dockerfile.v0`, its
/// attributes (with `source` and `cmdline` for a frontend image, as buildx sends them) and
/// the Dockerfile's name.
pub(super) fn frontend_facts(
    args: &BuildArgs,
    options: &kiln_frontend::ConvertOptions,
    choice: &super::gateway::Choice,
) -> FrontendFacts {
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
pub(super) fn request_facts<S, T>(
    frontend: Option<(&str, BTreeMap<String, String>, String)>,
    source: Option<&super::dockerfile::Source>,
    locals: &HashMap<String, PathBuf>,
    secrets: &HashMap<String, S>,
    ssh: &HashMap<String, T>,
) -> RequestFacts {
    let sorted = |keys: Vec<&String>| {
        let mut keys: Vec<String> = keys.into_iter().cloned().collect();
        keys.sort();
        keys
    };
    let (frontend, args, config_path) = match frontend {
        Some((name, attrs, file)) => (name.to_owned(), attrs, Some(file)),
        None => (String::new(), BTreeMap::new(), None),
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
