//! `kiln build`: solves a build graph in-process and exports the result.

mod dockerfile;
mod outputs;

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_cache::{PullOptions, Store};
use kiln_llb::LoadedDefinition;
use kiln_solver::{Session, SessionConfig};

use crate::args::BuildArgs;
use crate::progress::PlainProgress;

/// Parses `NAME=VALUE`.
fn pair<'a>(flag: &str, text: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .with_context(|| format!("invalid {flag} {text:?}: expected NAME=VALUE"))
}

/// Parses `id=ID,src=PATH` or `id=ID,env=VAR` into the secret's bytes.
fn parse_secret(text: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut data = None;
    for part in text.split(',') {
        let (k, v) = pair("--secret", part)?;
        match k {
            "id" => id = Some(v.to_owned()),
            "src" | "source" => {
                data = Some(fs_err::read(v).with_context(|| format!("reading secret {v}"))?);
            }
            "env" => {
                data = Some(
                    std::env::var(v)
                        .with_context(|| format!("secret environment variable {v} is not set"))?
                        .into_bytes(),
                );
            }
            "type" => {}
            _ => bail!("unexpected key {k:?} in --secret {text:?}"),
        }
    }
    let id = id.with_context(|| format!("--secret {text:?} has no id=..."))?;
    let data = match data {
        Some(d) => d,
        None => std::env::var(&id)
            .map(String::into_bytes)
            .with_context(|| format!("--secret {text:?} has no src=... or env=..."))?,
    };
    Ok((id, data))
}

fn read_definition(path: &Path) -> anyhow::Result<LoadedDefinition> {
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Definition from standard input")?;
        buf
    } else {
        fs_err::read(path)?
    };
    LoadedDefinition::from_bytes(&bytes)
        .with_context(|| format!("loading the LLB Definition {}", path.display()))
}

pub(crate) fn run(
    root: &Path,
    config: Option<&Path>,
    args: &BuildArgs,
) -> anyhow::Result<ExitCode> {
    let outputs = outputs::from_args(&args.output, &args.tag, args.push, config)?;
    let mut locals = HashMap::new();
    let context = match &args.llb {
        Some(_) => None,
        None => Some(dockerfile::context_dir(args)?),
    };
    if let Some(dir) = &context {
        locals.insert("context".to_owned(), dir.clone());
    }
    for local in &args.local {
        let (name, dir) = pair("--local", local)?;
        let dir = fs_err::canonicalize(dir).with_context(|| format!("local source {name}"))?;
        locals.insert(name.to_owned(), dir);
    }
    let secrets = args
        .secret
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let store = Arc::new(
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?,
    );
    let pull = PullOptions {
        config: super::pull::load_config(config)?,
        prefer_local: true,
        ..PullOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The image configuration of a Dockerfile build, for the exporters.
    let (definition, image_config) = match (&args.llb, &context) {
        (Some(llb), _) => (Some(read_definition(llb)?), None),
        (None, Some(dir)) => {
            let converted = dockerfile::convert(args, dir, store.clone(), &pull, &runtime)?;
            let bytes = kiln_llb::prost::Message::encode_to_vec(&converted.definition);
            if args.print_llb {
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes).context("writing the Definition")?;
                stdout.flush().context("writing the Definition")?;
                return Ok(ExitCode::SUCCESS);
            }
            // A build of `scratch` alone has no ops: its result is the empty file system.
            let loaded = if converted.definition.def.is_empty() {
                None
            } else {
                Some(
                    LoadedDefinition::from_bytes(&bytes)
                        .context("loading the Definition made from the Dockerfile")?,
                )
            };
            (loaded, Some(converted.config))
        }
        (None, None) => unreachable!("a Dockerfile build has a context"),
    };
    let session = Session::new(
        SessionConfig {
            store: store.clone(),
            executor: crate::executor::executor(PathBuf::from(crate::executor::RUNNER_STATE)),
            pull,
            locals,
            secrets,
            no_cache: args.no_cache,
        },
        None,
    );
    let progress = Arc::new(PlainProgress::new(std::io::stderr()));
    let result = match &definition {
        Some(definition) => runtime
            .block_on(session.solve(definition, progress))
            .context("failed to solve")?,
        None => kiln_solver::Ref::scratch(),
    };
    for output in &outputs {
        outputs::export(&store, &result, output, image_config.as_ref())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        fs_err::write(&file, "s3cret").unwrap();
        let (id, data) = parse_secret(&format!("id=tok,src={}", file.display())).unwrap();
        assert_eq!(
            (id.as_str(), data.as_slice()),
            ("tok", b"s3cret".as_slice())
        );
        let err = parse_secret("src=/nowhere").unwrap_err().to_string();
        assert!(err.contains("reading secret /nowhere"), "{err}");
        let err = parse_secret("id=x,bogus=1").unwrap_err().to_string();
        assert_eq!(err, "unexpected key \"bogus\" in --secret \"id=x,bogus=1\"");
    }
}
