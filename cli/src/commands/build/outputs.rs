//! `--output`: where a build's result goes (docker buildx syntax).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use kiln_cache::Store;
use kiln_solver::Ref;

/// An `--output` request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Output {
    Local { dest: PathBuf },
}

/// Parses docker buildx's `--output` syntax (`type=local,dest=DIR`, or a bare `DIR`).
pub(super) fn parse(text: &str) -> anyhow::Result<Output> {
    if !text.contains('=') {
        return Ok(Output::Local { dest: text.into() });
    }
    let mut fields = HashMap::new();
    for part in text.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("invalid output option {part:?}: expected KEY=VALUE"))?;
        fields.insert(k.trim(), v.trim());
    }
    match fields.get("type").copied() {
        Some("local") => {
            let dest = fields
                .get("dest")
                .with_context(|| format!("output {text:?}: type=local needs dest=DIR"))?;
            Ok(Output::Local {
                dest: PathBuf::from(dest),
            })
        }
        Some(other) => bail!("output type {other:?} is not supported yet"),
        None => bail!("output {text:?} has no type=..."),
    }
}

/// Writes the result to one output.
pub(super) fn export(store: &Store, result: &Ref, output: &Output) -> anyhow::Result<()> {
    match output {
        Output::Local { dest } => kiln_solver::export_local(store, result, dest)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("exporting to {}", dest.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildx() {
        assert_eq!(
            parse("type=local,dest=out").unwrap(),
            Output::Local { dest: "out".into() }
        );
        assert_eq!(parse("out").unwrap(), Output::Local { dest: "out".into() });
        let err = parse("type=local").unwrap_err().to_string();
        assert!(err.contains("needs dest=DIR"), "{err}");
        let err = parse("type=carrier-pigeon,dest=x").unwrap_err().to_string();
        assert_eq!(err, "output type \"carrier-pigeon\" is not supported yet");
    }
}
