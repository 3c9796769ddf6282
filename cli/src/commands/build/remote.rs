//! `kiln --host ADDR build`: the build runs in a daemon (`kiln daemon`, or BuildKit's), as
//! `docker buildx build` with a remote builder and `buildctl build` run it. The flags become
//! a `Control.Solve` with BuildKit's Dockerfile frontend attributes (the ones the in-process
//! build converts with); the context and the Dockerfile's directory are served to the daemon
//! as the locals `context` and `dockerfile` (it reads `.dockerignore` and asks only for what
//! it leaves in), the secrets and SSH agents as the session's; `local`, `tar`, `oci` and
//! `docker` outputs come back to this side (an `oci` or `docker` layout directory,
//! `tar=false`, through this side's content store). The daemon's progress is shown as a local build's,
//! and makes its record: the summary, `--trace` and `--dot` (not `--explain`: the progress does
//! not say why a step missed the cache).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_daemon::{BuildRequest, Client, Export, ExportTarget, Host};
use kiln_exporters::{ExportResponse, Output};

use super::{dockerfile, flags, gateway, metadata, progress_flag};
use crate::args::BuildArgs;
use crate::progress::Progress;

/// The flags an in-process build has and a build in a daemon has not (yet).
fn refuse_local_only(args: &BuildArgs) -> anyhow::Result<()> {
    let given: Vec<&str> = [
        ("--frontend-exec", args.frontend_exec.is_some()),
        ("--print-llb", args.print_llb),
        // The daemon's progress does not say why a step missed the cache.
        ("--explain", args.explain),
        (
            "--call",
            !args.check && !matches!(args.call.as_str(), "build" | "check"),
        ),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    if !given.is_empty() {
        bail!(
            "{} with --host: not supported yet; build without --host to use {}",
            given.join(", "),
            if given.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

/// The exporters of `-o`, `-t` and `--push`, with the outputs as an in-process build reads
/// and checks them (for what else they ask of the build: a push's provenance). `dest`
/// stays on this side, where the daemon sends those outputs back.
fn exports(args: &BuildArgs) -> anyhow::Result<(Vec<Export>, Vec<Output>)> {
    let outputs = kiln_exporters::outputs_from_args(&args.output, &args.tag, args.push)?;
    let mut exports = Vec::new();
    for text in &args.output {
        let (kind, mut fields) = kiln_exporters::output_fields(text)?;
        let dest = fields.remove("dest");
        let tar = !matches!(fields.get("tar"), Some(&("false" | "0")));
        let target = match (kind, dest) {
            ("local", Some(dest)) => Some(ExportTarget::Dir(PathBuf::from(dest))),
            ("oci" | "docker", Some(dest)) if !tar => Some(ExportTarget::Layout(dest.into())),
            ("tar" | "oci" | "docker", Some("-")) => Some(ExportTarget::Stdout),
            ("tar" | "oci" | "docker", Some(dest)) => Some(ExportTarget::File(dest.into())),
            _ => None,
        };
        let attrs = fields
            .into_iter()
            .map(|(key, value)| {
                // kiln's `;` between image names is BuildKit's `,`.
                let value = if key == "name" {
                    value.replace(';', ",")
                } else {
                    value.to_owned()
                };
                (key.to_owned(), value)
            })
            .collect();
        exports.push(Export {
            kind: kind.to_owned(),
            attrs,
            target,
        });
    }
    if !args.tag.is_empty() {
        let mut attrs = BTreeMap::from([("name".to_owned(), args.tag.join(","))]);
        if args.push {
            attrs.insert("push".to_owned(), "true".to_owned());
        }
        exports.push(Export {
            kind: "image".to_owned(),
            attrs,
            target: None,
        });
    }
    Ok((exports, outputs))
}

/// The attestations the flags ask for (with buildx's `mode=min` provenance when one of
/// `outputs` pushes), as the frontend attributes buildx sends: `attest:provenance=mode=…`,
/// `attest:sbom=`.
fn attest_attrs(args: &BuildArgs, outputs: &[Output]) -> anyhow::Result<BTreeMap<String, String>> {
    let requested = super::attest::requested(args, super::attest::pushes(outputs))?;
    let mut attrs = BTreeMap::new();
    if let Some(mode) = requested.provenance {
        let mode = match mode {
            kiln_exporters::ProvenanceMode::Min => "mode=min",
            kiln_exporters::ProvenanceMode::Max => "mode=max",
        };
        attrs.insert("attest:provenance".to_owned(), mode.to_owned());
    }
    if requested.sbom {
        attrs.insert("attest:sbom".to_owned(), String::new());
    }
    Ok(attrs)
}

/// The `--cache-to` and `--cache-from` entries, checked as an in-process build checks them.
fn caches(
    args: &BuildArgs,
) -> anyhow::Result<(
    Vec<kiln_cache::CacheOptionsEntry>,
    Vec<kiln_cache::CacheOptionsEntry>,
)> {
    kiln_cache::CacheExportRequest::parse_all(&args.cache_to).context("--cache-to")?;
    kiln_cache::CacheImportRequest::parse_all(&args.cache_from).context("--cache-from")?;
    Ok((
        kiln_cache::CacheOptionsEntry::parse_all(&args.cache_to).context("--cache-to")?,
        kiln_cache::CacheOptionsEntry::parse_all(&args.cache_from).context("--cache-from")?,
    ))
}

/// The Dockerfile's directory and name, for the `dockerfile` local: a Dockerfile from
/// standard input is written into `scratch` first.
fn dockerfile_dir(source: &dockerfile::Source, scratch: &Path) -> anyhow::Result<PathBuf> {
    if source.path == Path::new("-") {
        fs_err::write(scratch.join("Dockerfile"), &source.bytes)?;
        return Ok(scratch.to_owned());
    }
    let parent = source.path.parent().filter(|p| !p.as_os_str().is_empty());
    fs_err::canonicalize(parent.unwrap_or(Path::new(".")))
        .context("opening the Dockerfile's directory")
}

/// The request `args` make; `scratch` holds what is written for it.
fn request(args: &BuildArgs, scratch: &Path) -> anyhow::Result<BuildRequest> {
    let mut request = BuildRequest::default();
    if let Some(llb) = &args.llb {
        request.definition = Some(flags::read_definition(llb)?.definition().clone());
    } else {
        let context = dockerfile::context_dir(args)?;
        let source = dockerfile::read_dockerfile(args, &context)?;
        let options = dockerfile::options(args, &source, &context)?;
        request.frontend = args
            .frontend
            .clone()
            .unwrap_or_else(|| "dockerfile.v0".to_owned());
        request.frontend_attrs = kiln_daemon::frontend_attrs(&options, args.no_cache);
        if source.path == Path::new("-") {
            request
                .frontend_attrs
                .insert("filename".to_owned(), "Dockerfile".to_owned());
        }
        let platforms: Vec<&str> = args
            .platform
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .collect();
        if !platforms.is_empty() {
            request
                .frontend_attrs
                .insert("platform".to_owned(), platforms.join(","));
        }
        if args.pull {
            request
                .frontend_attrs
                .insert("image-resolve-mode".to_owned(), "pull".to_owned());
        }
        request.frontend_attrs.extend(gateway::extra_options(args)?);
        request.shared_key =
            kiln_llb::Digest::from_bytes(context.as_os_str().as_encoded_bytes()).hex();
        request
            .locals
            .insert("dockerfile".to_owned(), dockerfile_dir(&source, scratch)?);
        for named in dockerfile::named_contexts(args)?.1 {
            request.locals.insert(named.name, named.dir);
        }
        request.locals.insert("context".to_owned(), context);
    }
    flags::add_locals(args, &mut request.locals)?;
    request.secrets = flags::secrets(args)?;
    request.ssh = flags::ssh_agents(args)?;
    let outputs;
    (request.exports, outputs) = exports(args)?;
    request.frontend_attrs.extend(attest_attrs(args, &outputs)?);
    (request.cache_exports, request.cache_imports) = caches(args)?;
    flags::parse_entitlements(&args.allow)?;
    request.entitlements.clone_from(&args.allow);
    Ok(request)
}

/// The daemon's exporter response as the export responses `--iidfile`, `--metadata-file`
/// and `-q` read.
fn exported(response: &HashMap<String, String>) -> Vec<ExportResponse> {
    let digest = |key: &str| {
        response
            .get(key)
            .and_then(|d| kiln_llb::Digest::parse(d).ok())
    };
    let image_digest = digest("containerimage.digest");
    if image_digest.is_none() {
        return Vec::new();
    }
    vec![ExportResponse {
        image_digest,
        config_digest: digest("containerimage.config.digest"),
        names: response
            .get("image.name")
            .map(|n| n.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        pushed: Vec::new(),
        provenance: Vec::new(),
        phases: Vec::new(),
    }]
}

/// Prints the daemon's answer to the build checks (BuildKit's lint result: `result.json`,
/// base64 of its JSON, `result.txt` and `result.statuscode`) as `--check` prints them in
/// process; fails with the Dockerfile's error when it did not convert.
fn report_checks(response: &HashMap<String, String>) -> anyhow::Result<ExitCode> {
    use base64::Engine as _;
    let result = response
        .get("result.json")
        .context("the daemon answered the build checks without a result")?;
    let result: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(result)
            .context("the daemon's lint result")?,
    )
    .context("the daemon's lint result")?;
    let count = result["warnings"].as_array().map_or(0, Vec::len);
    let rendered = response.get("result.txt").map_or("", String::as_str);
    let error = result["buildError"]["message"].as_str().map(str::to_owned);
    let code = super::check::print_report(count, rendered, error)?;
    // A result without a warning may still say the check failed.
    if response.get("result.statuscode").is_some_and(|s| s != "0") {
        return Ok(ExitCode::from(1));
    }
    Ok(code)
}

/// Builds `args` in the daemon at `host`.
pub(crate) fn run(host: &str, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let host: Host = host.parse()?;
    refuse_local_only(args)?;
    let check = super::check::Call::from_args(args)? == super::check::Call::Check;
    if check && args.llb.is_some() {
        bail!("--call=check reads a Dockerfile; an LLB Definition has no build checks");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The daemon first, as docker: nothing is read for a build that cannot run.
    let tls = crate::commands::host::tls_files();
    let client = runtime.block_on(Client::connect(&host, tls.as_ref()))?;
    let scratch = tempfile::tempdir().context("making a scratch directory")?;
    let mut request = request(args, scratch.path())?;
    if check {
        // BuildKit's subrequest: the build checks alone, nothing built or exported.
        request
            .frontend_attrs
            .insert("requestid".to_owned(), "frontend.lint".to_owned());
        request.exports.clear();
        request.cache_exports.clear();
    }
    let progress = Progress::stderr(progress_flag(args)?)?;
    // The build's record, from its progress: the summary, `--trace` and `--dot`.
    let recorder = Arc::new(kiln_solver::Recorder::new(progress.reporter()));
    let response = runtime.block_on(client.build(request, recorder.clone()));
    progress.finish();
    let status = match response.is_ok() {
        true => kiln_solver::BuildStatus::Completed,
        false => kiln_solver::BuildStatus::Failed,
    };
    let context = args.context.as_deref().filter(|c| c.is_dir());
    let record = super::report::report_build(&recorder, args, context, status, Some(&progress))?;
    super::report::write_reports(args, &record)?;
    let response = match response {
        Ok(response) => response,
        Err(error @ kiln_daemon::ClientError::Daemon { .. }) => {
            return Err(anyhow::Error::new(error).context("failed to solve"));
        }
        Err(error) => return Err(error.into()),
    };
    if check {
        return report_checks(&response);
    }
    let exported = exported(&response);
    metadata::write_files(args, &exported, None)?;
    super::report::print_image_id(args, &exported)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::build::parse_build_args as parse;

    #[test]
    fn outputs_become_exporters_whose_files_stay_here() {
        let args = parse(&[
            "-o",
            "type=local,dest=out",
            "-o",
            "type=tar,dest=-",
            "-o",
            "type=oci,dest=layout,tar=false",
            "-o",
            "type=image,name=a;b,push=true",
            "-t",
            "app:1",
            "-t",
            "app:2",
            "ctx",
        ]);
        let shown: Vec<String> = exports(&args)
            .unwrap()
            .0
            .iter()
            .map(|e| format!("{} {:?} {:?}", e.kind, e.attrs, e.target))
            .collect();
        assert_eq!(
            shown,
            [
                "local {} Some(Dir(\"out\"))",
                "tar {} Some(Stdout)",
                "oci {\"tar\": \"false\"} Some(Layout(\"layout\"))",
                "image {\"name\": \"a,b\", \"push\": \"true\"} None",
                "image {\"name\": \"app:1,app:2\"} None",
            ]
        );
        let err = exports(&parse(&["-o", "type=local", "ctx"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "output \"type=local\": type=local needs dest=DIR"
        );
        let err = refuse_local_only(&parse(&["--explain", "--print-llb", "ctx"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--print-llb, --explain with --host: not supported yet; build without --host to use them"
        );
    }

    #[test]
    fn a_push_asks_the_daemon_for_min_provenance_from_the_outputs_read_once() {
        let args = parse(&["-t", "127.0.0.1:5000/app:1", "--push", "ctx"]);
        let (exported, outputs) = exports(&args).unwrap();
        assert_eq!(exported.len(), 1);
        assert_eq!(
            attest_attrs(&args, &outputs).unwrap(),
            BTreeMap::from([("attest:provenance".to_owned(), "mode=min".to_owned())])
        );
        let args = parse(&["-o", "type=local,dest=out", "--sbom=true", "ctx"]);
        let (_, outputs) = exports(&args).unwrap();
        assert_eq!(
            attest_attrs(&args, &outputs).unwrap(),
            BTreeMap::from([("attest:sbom".to_owned(), String::new())])
        );
    }
}
