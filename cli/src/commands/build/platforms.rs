//! A build of several platforms (`--platform a,b`): the frontend converts each platform's
//! Dockerfile, one session solves them together (a vertex the platforms share runs once),
//! and the exporters write one index of the platforms' images, with one cache.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kiln_cache::BuildKeys;
use kiln_llb::{LoadedDefinition, Platform};
use kiln_solver::{BuildRecord, Session};

use super::caches::CacheImports;
use super::convert::{builtin, frontend_conversion, load_converted, run_image, show_warnings};
use super::report::report_build;
use super::{Build, Noted, attest, dockerfile, gateway, show_progress, status};
use crate::progress::Progress;

/// What the frontend made of one platform: its Definition (none for `scratch`) and image
/// configuration.
type PlatformDefinition = (
    Platform,
    Option<LoadedDefinition>,
    kiln_frontend::ImageConfig,
);

/// Builds `platforms` (more than one) of a Dockerfile build.
pub(super) fn build(
    build: &Build<'_>,
    platforms: &[Platform],
    mut imports: CacheImports,
    noted: &mut Noted,
    lease: kiln_cache::Lease,
) -> anyhow::Result<ExitCode> {
    let args = build.args;
    let Some((dir, source)) = build.dockerfile() else {
        bail!(
            "--platform with several platforms builds a Dockerfile; an LLB Definition \
             names the platform of each op"
        );
    };
    if args.print_llb {
        bail!("--print-llb prints one Definition: give one --platform");
    }
    let options = dockerfile::options(args, source, dir)?;
    let choice = gateway::choose(args, &options.build_args, &source.bytes)?;
    let frontend = attest::frontend_facts(args, &options, &choice);
    let (definitions, warnings, shared) =
        convert(build, &options, &choice, platforms, &mut imports, noted)?;
    let (session, progress) = match shared {
        Some(shared) => shared,
        None => (build.session(&mut imports)?, show_progress(args, noted)?),
    };
    let solved = solve(build, &definitions, &session, noted);
    progress.finish();
    show_warnings(args, &warnings);
    let status = status(&solved);
    let record = report_build(&noted.recorder, args, Some(dir), status, Some(&progress))?;
    build.end(record, noted, lease, |record| {
        export(build, definitions, solved, frontend, record)
    })
}

/// Converts the Dockerfile for each platform with the frontend `choice` names; returns the Definitions, the build checks'
/// warnings (each once), and the session and progress a frontend image opened.
#[expect(
    clippy::type_complexity,
    reason = "the three results of the conversion, each named in the doc"
)]
fn convert(
    build: &Build<'_>,
    options: &kiln_frontend::ConvertOptions,
    choice: &gateway::Choice,
    platforms: &[Platform],
    imports: &mut CacheImports,
    noted: &Noted,
) -> anyhow::Result<(
    Vec<PlatformDefinition>,
    Vec<kiln_frontend::LintWarning>,
    Option<(Arc<Session>, Progress)>,
)> {
    let args = build.args;
    let Some((dir, source)) = build.dockerfile() else {
        unreachable!("checked by the caller");
    };
    // A frontend image solves through the build's session, with its progress shown: both
    // are made before it runs (the built-in frontend converts first, then they are made).
    let mut shared: Option<(Arc<Session>, Progress)> = None;
    let mut definitions = Vec::with_capacity(platforms.len());
    let mut warnings = Vec::new();
    for platform in platforms {
        let options = kiln_frontend::ConvertOptions {
            platform: platform.to_pb(),
            multi_platform: true,
            ..options.clone()
        };
        let builtin = || builtin(build, source, &options);
        // A frontend image or command is asked for one platform at a time, as the
        // built-in frontend converts one; the graphs are then solved together.
        let ran = frontend_conversion(args, choice, &options, dir, builtin, |syntax| {
            if shared.is_none() {
                shared = Some((build.session(imports)?, show_progress(args, noted)?));
            }
            let Some((session, _)) = &shared else {
                unreachable!("made above");
            };
            run_image(build, syntax, &options, session.clone(), noted)
        })?;
        let mut converted = match ran {
            Ok(converted) => converted,
            Err(error) => {
                if let Some((_, progress)) = &shared {
                    progress.finish();
                }
                return Err(error).context("failed to solve");
            }
        };
        for warning in std::mem::take(&mut converted.warnings) {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
        let loaded = load_converted(converted.definition)?;
        definitions.push((platform.clone(), loaded, converted.config));
    }
    Ok((definitions, warnings, shared))
}

/// Solves every platform at once in one session: a vertex the platforms share (the context,
/// a `FROM --platform=$BUILDPLATFORM` stage) runs once.
fn solve(
    build: &Build<'_>,
    definitions: &[PlatformDefinition],
    session: &Arc<Session>,
    noted: &Noted,
) -> anyhow::Result<Vec<(kiln_solver::Ref, Option<BuildKeys>)>> {
    let solves = definitions.iter().map(|(_, definition, _)| {
        build.solve_one(definition.as_ref(), session.clone(), noted.recorder.clone())
    });
    build
        .runtime
        .block_on(futures::future::try_join_all(solves))
}

/// Exports the platforms' results as one index, then the cache: one for every platform,
/// their keys merged (shared vertices once); an inline cache puts each platform's own keys
/// into its image.
fn export(
    build: &Build<'_>,
    definitions: Vec<PlatformDefinition>,
    solved: anyhow::Result<Vec<(kiln_solver::Ref, Option<BuildKeys>)>>,
    frontend: attest::FrontendFacts,
    record: &BuildRecord,
) -> anyhow::Result<Vec<kiln_exporters::ExportResponse>> {
    let solved = solved.context("failed to solve")?;
    let mut keys: Option<BuildKeys> = None;
    let mut results = Vec::with_capacity(solved.len());
    let mut definitions_llb = Vec::with_capacity(solved.len());
    let inline = build.cache_to.iter().any(kiln_engine::is_inline);
    let mut inline_keys = Vec::with_capacity(solved.len());
    for ((platform, definition, config), (result, platform_keys)) in
        definitions.into_iter().zip(solved)
    {
        definitions_llb.push(definition);
        inline_keys.push(platform_keys.clone().filter(|_| inline));
        match (&mut keys, platform_keys) {
            (Some(keys), Some(more)) => keys.merge(more),
            (keys @ None, more) => *keys = more,
            (Some(_), None) => {}
        }
        results.push((platform, result, Some(config)));
    }
    let refs: Vec<&kiln_solver::Ref> = results.iter().map(|(_, r, _)| r).collect();
    build.realize(&refs)?;
    let attestations = build.attestations(Some(frontend), record);
    let llb: Vec<_> = definitions_llb
        .iter()
        .map(|d| d.as_ref().map(|d| d.definition()))
        .collect();
    let inline_keys: Vec<_> = inline_keys.iter().map(Option::as_ref).collect();
    let exported = kiln_engine::export_platforms_inline(
        &build.store,
        &results,
        &build.inputs.outputs,
        &build.pull,
        attestations,
        &llb,
        &inline_keys,
    )?;
    build.export_caches(keys.as_ref())?;
    Ok(exported)
}
