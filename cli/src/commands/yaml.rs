//! `kiln yaml convert`: a Dockerfile written as the equivalent kiln.yaml
//! (`kiln_frontend::dockerfile_to_yaml`).

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::args::YamlCommand;

pub(crate) fn run(cmd: YamlCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        YamlCommand::Convert { file, output } => convert(&file, output.as_deref()),
    }
}

fn convert(file: &Path, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (bytes, name) = if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from standard input")?;
        (bytes, "Dockerfile".to_owned())
    } else {
        let name = file.file_name().map_or_else(
            || "Dockerfile".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        (fs_err::read(file).context("reading the Dockerfile")?, name)
    };
    let yaml = kiln_frontend::dockerfile_to_yaml(&bytes, &name)?;
    match output {
        Some(path) => fs_err::write(path, yaml)?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(yaml.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
