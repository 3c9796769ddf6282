//! The build checks' output, as buildx prints it: `--call=check` (`--check`) prints every
//! warning with its rule's link and the Dockerfile lines it is about, on standard output, and
//! exits 1 when there is one; after a build, the warnings are listed in one line each on
//! standard error (`N warnings found:`); `--call=targets` lists the stages.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kiln_frontend::LintWarning;

/// What `--call` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    /// Build (the default).
    Build,
    /// Run the build checks only.
    Check,
    /// List the stages.
    Targets,
}

impl Call {
    /// The method `--call` (or `--check`) names; the others buildx has are refused by name.
    pub(super) fn from_args(args: &crate::args::BuildArgs) -> anyhow::Result<Self> {
        if args.check {
            return Ok(Self::Check);
        }
        // buildx accepts options after the name (`check,format=json`); kiln prints text only.
        let (name, options) = args.call.split_once(',').unwrap_or((&args.call, ""));
        if !options.is_empty() {
            bail!(
                "--call {:?}: options after the method are not supported",
                args.call
            );
        }
        match name {
            "build" => Ok(Self::Build),
            "check" => Ok(Self::Check),
            "targets" => Ok(Self::Targets),
            "outline" => bail!("--call=outline is not supported yet: use check or targets"),
            other => bail!("invalid call method {other:?}: expected build, check or targets"),
        }
    }
}

/// Prints `--check`'s report of `warnings` about `dockerfile` to standard output, as buildx:
/// a count, then each warning sorted by line with the lines it is about; the exit code is 1
/// when there are warnings. With `failed` (the rules of `error=true`), the build checks' own
/// error follows and the check fails.
pub(super) fn report(
    warnings: &[LintWarning],
    dockerfile: &[u8],
    failed: Option<&[String]>,
) -> anyhow::Result<ExitCode> {
    let mut sorted: Vec<&LintWarning> = warnings.iter().collect();
    sorted.sort_by_key(|w| w.location.start_line);
    let rendered: String = sorted.iter().map(|w| w.render(dockerfile)).collect();
    let error = failed.map(|rules| format!("lint violation found for rules: {}", rules.join(", ")));
    print_report(warnings.len(), &rendered, error)
}

/// Prints the report of `count` warnings, `rendered` as [`LintWarning::render`] renders them
/// (sorted by line), to standard output; with `error` (the build checks' own error, or the
/// Dockerfile's), that error follows and the check fails. A daemon's lint result (its
/// `result.txt`) is printed so too.
pub(super) fn print_report(
    count: usize,
    rendered: &str,
    error: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    match count {
        0 => {}
        1 => text.push_str("Check complete, 1 warning has been found!\n"),
        n => text.push_str(&format!("Check complete, {n} warnings have been found!\n")),
    }
    text.push_str(rendered);
    if error.is_none() && count == 0 {
        text.push_str("Check complete, no warnings found.\n");
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the check's report")?;
    if let Some(error) = error {
        if count > 0 {
            let _ = writeln!(stdout);
        }
        bail!("{error}");
    }
    Ok(if count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The one-line list buildx prints on standard error after a build with warnings.
pub(super) fn summary(warnings: &[LintWarning]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let mut text = match warnings.len() {
        1 => "\n 1 warning found:\n".to_owned(),
        n => format!("\n {n} warnings found:\n"),
    };
    for warning in warnings {
        text.push_str(&format!(" - {}\n", warning.short()));
    }
    text
}

/// Prints [`summary`] to standard error (best effort, as the progress: a closed terminal must
/// not fail the build).
pub(super) fn print_summary(warnings: &[LintWarning]) {
    let _ = std::io::stderr()
        .lock()
        .write_all(summary(warnings).as_bytes());
}

/// `--call=targets`: lists the targets of the build's Dockerfile.
pub(super) fn list_targets(args: &crate::args::BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = super::dockerfile::context_dir(args)?;
    let source = super::dockerfile::read_dockerfile(args, &dir)?;
    let options = super::dockerfile::options(args, &source, &dir)?;
    targets(&source.bytes, &options.file_name)
}

/// `--call=targets`: the stages of `dockerfile`, as buildx lists them (the last one is the
/// default), with the description of a `# name description` comment above their `FROM`.
pub(super) fn targets(dockerfile: &[u8], file_name: &str) -> anyhow::Result<ExitCode> {
    let parsed = kiln_frontend::Parser::new()
        .file_name(file_name)
        .parse(dockerfile)?;
    let stages = kiln_frontend::parse_stages(&parsed)?;
    let last = stages.stages.len().saturating_sub(1);
    let rows: Vec<(String, &str)> = stages
        .stages
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let name = match (stage.name.as_str(), i == last) {
                ("", true) => "(default)".to_owned(),
                (name, true) => format!("{name} (default)"),
                (name, false) => name.to_owned(),
            };
            (name, stage.doc_comment.as_str())
        })
        .collect();
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .chain(std::iter::once("TARGET".len()))
        .max()
        .unwrap_or(0)
        + 1;
    let mut text = format!("{:<width$}DESCRIPTION\n", "TARGET");
    for (name, description) in rows {
        text.push_str(&format!("{name:<width$}{description}\n"));
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the targets")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_each_warning_with_its_line() {
        let warnings = kiln_frontend::convert(
            b"FROM scratch AS Base\nCMD run it\n",
            &kiln_frontend::ConvertOptions::default(),
            &kiln_frontend::testing::FakeResolver::default(),
        )
        .unwrap()
        .warnings;
        assert_eq!(
            summary(&warnings),
            "\n 2 warnings found:\n \
             - StageNameCasing: Stage name 'Base' should be lowercase (line 1)\n \
             - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)\n"
        );
        assert_eq!(summary(&[]), "");
    }
}
