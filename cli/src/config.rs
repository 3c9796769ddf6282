//! kiln's configuration file, `kiln.toml` (`--config`, `KILN_CONFIG`, else
//! `/etc/kiln/kiln.toml`): read once per command, its parts handed to the crates that use them.
//!
//! Every part today belongs to kiln-cache, which types and checks it ([`kiln_cache::Config`]):
//! `[registry."HOST"]` (mirrors, plain HTTP) for pulls and pushes, `[unpack]` (layer limits)
//! for the store.

use std::path::Path;

use anyhow::Context as _;

/// The configuration file used when neither `--config` nor `KILN_CONFIG` names one.
const DEFAULT_CONFIG: &str = "/etc/kiln/kiln.toml";

/// The configuration of one command.
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    /// The registry settings and the store's unpack limits.
    pub(crate) cache: kiln_cache::Config,
}

impl Config {
    /// Reads the file `path` names (which must exist), else the default one (which may be
    /// absent: then every setting has its default).
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG), false),
        };
        let text = match fs_err::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("loading configuration {}", path.display()));
            }
        };
        Self::parse(&text, path)
    }

    /// Parses the text of the file at `path`.
    fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let cache = kiln_cache::Config::parse(text, path)
            .with_context(|| format!("loading configuration {}", path.display()))?;
        Ok(Self { cache })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_default_file_gives_the_defaults_a_named_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kiln.toml");
        let err = Config::load(Some(&missing)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("loading configuration {}", missing.display())
        );
    }

    #[test]
    fn each_part_goes_to_its_crate() {
        let text = "[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:5000\"]\n\n[unpack]\nmax-layer-entries = 7\n";
        let config = Config::parse(text, Path::new("kiln.toml")).unwrap();
        assert_eq!(config.cache.mirrors("docker.io"), ["127.0.0.1:5000"]);
        assert_eq!(config.cache.unpack.max_layer_entries, 7);
        let err =
            Config::parse("[unpack]\nmax-layer-sise = 1\n", Path::new("kiln.toml")).unwrap_err();
        assert_eq!(err.to_string(), "loading configuration kiln.toml");
    }
}
