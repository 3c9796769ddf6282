//! `kiln yaml convert`: a Dockerfile written as the equivalent kiln.yaml, for the common
//! subset of Dockerfiles (users migrate by converting).
//!
//! The Dockerfile is parsed into the typed stages the converter uses, and each instruction
//! becomes the kiln.yaml construct that lowers back to it: global `ARG`s (and a stage's own
//! `ARG`s) become `args`, `FROM` a stage, `RUN`/`COPY`/`ADD`/`ENV`/`WORKDIR`/`USER` steps, and the
//! image settings of the last stage (`CMD`, `ENTRYPOINT`, `LABEL`, `EXPOSE`, `VOLUME`,
//! `STOPSIGNAL`, `HEALTHCHECK`) the `image` mapping. What kiln.yaml cannot say — heredocs,
//! `SHELL`, `ONBUILD`, `RUN --device`, image settings in an earlier stage, values whose quoting
//! or escapes only the Dockerfile's word rules give meaning to — is an error naming the
//! instruction's line, never a silently different build. The YAML is written with saphyr's
//! emitter, which quotes what needs it.

use std::borrow::Cow;
use std::time::Duration;

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};

use crate::error::Location;
use crate::instructions::{
    ArgDefinition, CommandKind, HealthConfig, KeyValuePair, NetworkMode, SecurityMode,
    ShellDependentCmdLine, SourcesAndDest, Stage, parse_stages,
};
use crate::mount::csv_fields;

/// Why a Dockerfile could not be written as kiln.yaml.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FromDockerfileError {
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] crate::error::Error),
    /// An instruction has no kiln.yaml equivalent.
    #[error("{}:{}: {what} has no kiln.yaml equivalent", location.file, location.start_line)]
    Unsupported {
        /// Where it is.
        location: Location,
        /// What it is.
        what: String,
    },
}

type Result<T> = std::result::Result<T, FromDockerfileError>;

fn unsupported(location: &Location, what: impl Into<String>) -> FromDockerfileError {
    FromDockerfileError::Unsupported {
        location: location.clone(),
        what: what.into(),
    }
}

fn string(text: impl Into<String>) -> Yaml<'static> {
    Yaml::Value(Scalar::String(Cow::Owned(text.into())))
}

fn strings(items: &[String]) -> Yaml<'static> {
    Yaml::Sequence(items.iter().map(|s| string(s.clone())).collect())
}

/// A mapping built in order.
#[derive(Default)]
struct Map(Mapping<'static>);

impl Map {
    fn put(&mut self, key: &str, value: Yaml<'static>) -> &mut Self {
        self.0.insert(string(key), value);
        self
    }

    fn put_str(&mut self, key: &str, value: &str) -> &mut Self {
        if !value.is_empty() {
            self.put(key, string(value));
        }
        self
    }

    fn put_true(&mut self, key: &str, on: bool) -> &mut Self {
        if on {
            self.put(key, Yaml::Value(Scalar::Boolean(true)));
        }
        self
    }

    fn yaml(self) -> Yaml<'static> {
        Yaml::Mapping(self.0)
    }
}

/// A value of `ENV` or `LABEL` as kiln.yaml writes it: the Dockerfile's quotes removed where
/// that leaves the same text; a value whose meaning depends on the Dockerfile's word rules
/// (escapes, single quotes around `$`, quotes inside) is refused.
fn plain_value(value: &str, location: &Location, what: &str) -> Result<String> {
    let refuse = || unsupported(location, format!("{what} value {value:?}"));
    if value.contains('\\') {
        return Err(refuse());
    }
    let inner = |quote: char| {
        value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
            .filter(|v| !v.contains(quote))
    };
    if let Some(text) = inner('"') {
        return Ok(text.to_owned());
    }
    if let Some(text) = inner('\'') {
        return if text.contains('$') {
            Err(refuse())
        } else {
            Ok(text.to_owned())
        };
    }
    if value.contains(['"', '\'', ' ', '\t']) {
        return Err(refuse());
    }
    Ok(value.to_owned())
}

fn pairs(pairs: &[KeyValuePair], location: &Location, what: &str) -> Result<Yaml<'static>> {
    let mut map = Map::default();
    for pair in pairs {
        let value = plain_value(&pair.value, location, what)?;
        map.put(&pair.key, string(value));
    }
    Ok(map.yaml())
}

/// A command line: a string for the shell form, a list for the exec form.
fn command(line: &ShellDependentCmdLine, location: &Location, what: &str) -> Result<Yaml<'static>> {
    if !line.files.is_empty() {
        return Err(unsupported(location, format!("{what} with a heredoc")));
    }
    Ok(if line.prepend_shell {
        string(line.cmd_line.join(" "))
    } else {
        strings(&line.cmd_line)
    })
}

/// A `--mount` value as a kiln.yaml mount mapping (BuildKit's key aliases resolved).
fn mount(spec: &str, location: &Location) -> Result<Yaml<'static>> {
    let fields = csv_fields(spec).map_err(|_| unsupported(location, format!("--mount={spec}")))?;
    let mut map = Map::default();
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.to_ascii_lowercase(), Some(value.to_owned())),
            None => (field.to_ascii_lowercase(), None),
        };
        let boolean = |value: Option<String>, default: bool| match value.as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(_) => Err(unsupported(location, format!("--mount={spec}"))),
        };
        let integer = |value: Option<String>| {
            value
                .and_then(|v| v.parse::<i64>().ok())
                .map(|n| Yaml::Value(Scalar::Integer(n)))
                .ok_or_else(|| unsupported(location, format!("--mount={spec}")))
        };
        match (key.as_str(), value) {
            ("target" | "dst" | "destination", Some(v)) => map.put("target", string(v)),
            ("source" | "src", Some(v)) => map.put("source", string(v)),
            ("readonly" | "ro", v) => {
                map.put("readonly", Yaml::Value(Scalar::Boolean(boolean(v, true)?)))
            }
            ("readwrite" | "rw", v) => {
                map.put("readonly", Yaml::Value(Scalar::Boolean(!boolean(v, true)?)))
            }
            ("required", v) => map.put("required", Yaml::Value(Scalar::Boolean(boolean(v, true)?))),
            ("uid" | "gid", v) => map.put(&key, integer(v)?),
            ("size", Some(v)) if v.parse::<i64>().is_ok() => map.put("size", integer(Some(v))?),
            ("size", Some(v)) => map.put("size", string(v)),
            ("type" | "from" | "id" | "sharing" | "env" | "mode", Some(v)) => {
                map.put(&key, string(v))
            }
            _ => return Err(unsupported(location, format!("--mount={spec}"))),
        };
    }
    if !map.0.contains_key(&string("type")) {
        map.put("type", string("bind"));
    }
    Ok(map.yaml())
}

fn sources(sources: &SourcesAndDest, location: &Location, what: &str, map: &mut Map) -> Result<()> {
    if !sources.source_contents.is_empty() {
        return Err(unsupported(location, format!("{what} with a heredoc")));
    }
    map.put("src", strings(&sources.source_paths));
    map.put("dest", string(sources.dest_path.clone()));
    Ok(())
}

fn duration(d: Duration) -> Option<Yaml<'static>> {
    (!d.is_zero()).then(|| {
        let (secs, millis) = (d.as_secs(), d.subsec_millis());
        string(if millis == 0 {
            format!("{secs}s")
        } else {
            format!("{}ms", d.as_millis())
        })
    })
}

fn healthcheck(health: &HealthConfig, location: &Location) -> Result<Yaml<'static>> {
    let mut map = Map::default();
    match health.test.split_first() {
        Some((kind, [])) if kind == "NONE" => {
            map.put_true("disable", true);
            return Ok(map.yaml());
        }
        Some((kind, [line])) if kind == "CMD-SHELL" => map.put("test", string(line.clone())),
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => map.put("test", strings(args)),
        _ => return Err(unsupported(location, "this HEALTHCHECK")),
    };
    for (key, value) in [
        ("interval", health.interval),
        ("timeout", health.timeout),
        ("start_period", health.start_period),
        ("start_interval", health.start_interval),
    ] {
        if let Some(value) = duration(value) {
            map.put(key, value);
        }
    }
    if health.retries > 0 {
        map.put("retries", Yaml::Value(Scalar::Integer(health.retries)));
    }
    Ok(map.yaml())
}

/// What one stage becomes: its mapping, and the image settings it makes (last stage only).
struct Converter {
    /// Stage names in order (unnamed stages are `stage-N`).
    names: Vec<String>,
    /// `args`: the global ones, then the stages' own.
    args: Map,
    image: Map,
}

impl Converter {
    fn add_args(&mut self, args: &[ArgDefinition], location: &Location) -> Result<()> {
        for arg in args {
            if self.args.0.contains_key(&string(arg.key.clone())) {
                continue;
            }
            let value = plain_value(arg.value.as_deref().unwrap_or_default(), location, "ARG")?;
            self.args.put(&arg.key, string(value));
        }
        Ok(())
    }

    /// A stage reference (`COPY --from`, a mount's `from`) by name: an index is resolved.
    fn stage_ref(&self, from: &str) -> String {
        from.parse::<usize>()
            .ok()
            .and_then(|i| self.names.get(i).cloned())
            .unwrap_or_else(|| from.to_owned())
    }

    fn stage(&mut self, stage: &Stage, last: bool) -> Result<Yaml<'static>> {
        let mut map = Map::default();
        map.put("from", string(stage.base_name.clone()));
        map.put_str("platform", &stage.platform);
        let mut steps = Vec::new();
        for cmd in &stage.commands {
            let location = &cmd.location;
            let image_only = |what: &str| -> Result<()> {
                if last {
                    Ok(())
                } else {
                    Err(unsupported(
                        location,
                        format!(
                            "{what} outside the last stage (kiln.yaml sets the image of the target stage)"
                        ),
                    ))
                }
            };
            let mut step = Map::default();
            match &cmd.kind {
                CommandKind::Arg(args) => {
                    self.add_args(args, location)?;
                    continue;
                }
                CommandKind::Env(env) => {
                    step.put("env", pairs(env, location, "ENV")?);
                }
                CommandKind::Workdir(dir) => {
                    step.put("workdir", string(dir.clone()));
                }
                CommandKind::User(user) => {
                    step.put("user", string(user.clone()));
                }
                CommandKind::Run(run) => {
                    if !run.devices.is_empty() {
                        return Err(unsupported(location, "RUN --device"));
                    }
                    step.put("run", command(&run.cmd, location, "RUN")?);
                    if !run.mount_specs.is_empty() {
                        let mounts = run
                            .mount_specs
                            .iter()
                            .map(|spec| {
                                let mut yaml = mount(spec, location)?;
                                if let Yaml::Mapping(m) = &mut yaml {
                                    if let Some(Yaml::Value(Scalar::String(from))) =
                                        m.get_mut(&string("from"))
                                    {
                                        *from = Cow::Owned(self.stage_ref(from));
                                    }
                                }
                                Ok(yaml)
                            })
                            .collect::<Result<Vec<_>>>()?;
                        step.put("mounts", Yaml::Sequence(mounts));
                    }
                    match run.network {
                        NetworkMode::Default => {}
                        NetworkMode::None => {
                            step.put("network", string("none"));
                        }
                        NetworkMode::Host => {
                            step.put("network", string("host"));
                        }
                    }
                    if run.security == SecurityMode::Insecure {
                        step.put("security", string("insecure"));
                    }
                }
                CommandKind::Copy(copy) => {
                    let mut body = Map::default();
                    if !copy.from.is_empty() {
                        body.put("from", string(self.stage_ref(&copy.from)));
                    }
                    sources(&copy.sources, location, "COPY", &mut body)?;
                    if !copy.exclude.is_empty() {
                        body.put("exclude", strings(&copy.exclude));
                    }
                    body.put_str("chmod", &copy.chmod)
                        .put_str("chown", &copy.chown)
                        .put_true("link", copy.link)
                        .put_true("parents", copy.parents);
                    step.put("copy", body.yaml());
                }
                CommandKind::Add(add) => {
                    let mut body = Map::default();
                    sources(&add.sources, location, "ADD", &mut body)?;
                    body.put_str("checksum", &add.checksum);
                    if !add.exclude.is_empty() {
                        body.put("exclude", strings(&add.exclude));
                    }
                    body.put_str("chmod", &add.chmod)
                        .put_str("chown", &add.chown)
                        .put_true("link", add.link);
                    for (key, value) in [("keep_git_dir", add.keep_git_dir), ("unpack", add.unpack)]
                    {
                        if let Some(value) = value {
                            body.put(key, Yaml::Value(Scalar::Boolean(value)));
                        }
                    }
                    step.put("add", body.yaml());
                }
                CommandKind::Cmd(line) => {
                    image_only("CMD")?;
                    self.image.put("cmd", command(line, location, "CMD")?);
                    continue;
                }
                CommandKind::Entrypoint(line) => {
                    image_only("ENTRYPOINT")?;
                    if line.cmd_line.is_empty() {
                        return Err(unsupported(location, "ENTRYPOINT []"));
                    }
                    self.image
                        .put("entrypoint", command(line, location, "ENTRYPOINT")?);
                    continue;
                }
                CommandKind::Label(labels) => {
                    image_only("LABEL")?;
                    let Yaml::Mapping(new) = pairs(labels, location, "LABEL")? else {
                        continue;
                    };
                    let key = string("labels");
                    let mut merged = match self.image.0.remove(&key) {
                        Some(Yaml::Mapping(m)) => m,
                        _ => Mapping::new(),
                    };
                    merged.extend(new);
                    self.image.put("labels", Yaml::Mapping(merged));
                    continue;
                }
                CommandKind::Expose(ports) => {
                    image_only("EXPOSE")?;
                    self.append("expose", ports);
                    continue;
                }
                CommandKind::Volume(paths) => {
                    image_only("VOLUME")?;
                    self.append("volumes", paths);
                    continue;
                }
                CommandKind::StopSignal(signal) => {
                    image_only("STOPSIGNAL")?;
                    self.image.put("stopsignal", string(signal.clone()));
                    continue;
                }
                CommandKind::Healthcheck(health) => {
                    image_only("HEALTHCHECK")?;
                    self.image
                        .put("healthcheck", healthcheck(health, location)?);
                    continue;
                }
                CommandKind::Shell(_) => return Err(unsupported(location, "SHELL")),
                CommandKind::Onbuild(_) => return Err(unsupported(location, "ONBUILD")),
                CommandKind::Maintainer(_) => return Err(unsupported(location, "MAINTAINER")),
            }
            steps.push(step.yaml());
        }
        if !steps.is_empty() {
            map.put("steps", Yaml::Sequence(steps));
        }
        Ok(map.yaml())
    }

    /// Appends `items` to the image's list `key`.
    fn append(&mut self, key: &str, items: &[String]) {
        let mut list = match self.image.0.remove(&string(key)) {
            Some(Yaml::Sequence(list)) => list,
            _ => Vec::new(),
        };
        list.extend(items.iter().map(|s| string(s.clone())));
        self.image.put(key, Yaml::Sequence(list));
    }
}

/// Writes the Dockerfile `dockerfile` (named `file` in errors) as the equivalent kiln.yaml.
pub fn dockerfile_to_yaml(dockerfile: &[u8], file: &str) -> Result<String> {
    let parsed = crate::parser::Parser::new()
        .file_name(file)
        .parse(dockerfile)?;
    let stages = parse_stages(&parsed)?;
    let names: Vec<String> = stages
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.name.is_empty() {
                format!("stage-{i}")
            } else {
                s.name.clone()
            }
        })
        .collect();
    for (stage, name) in stages.stages.iter().zip(&names) {
        if name == "context" {
            return Err(unsupported(&stage.location, "a stage named context"));
        }
    }
    let mut converter = Converter {
        names: names.clone(),
        args: Map::default(),
        image: Map::default(),
    };
    // The global ARGs come before the first FROM; their errors name the file's first line.
    let top = Location {
        file: file.to_owned(),
        start_line: 1,
        end_line: 1,
        column: None,
        source: Vec::new(),
    };
    converter.add_args(&stages.meta_args, &top)?;
    let mut stage_map = Map::default();
    let count = stages.stages.len();
    for (index, stage) in stages.stages.iter().enumerate() {
        let yaml = converter.stage(stage, index + 1 == count)?;
        stage_map.put(&names[index], yaml);
    }
    let mut root = Map::default();
    root.put("apiVersion", string("kiln/v1"));
    let Converter { args, image, .. } = converter;
    if !args.0.is_empty() {
        root.put("args", args.yaml());
    }
    root.put("stages", stage_map.yaml());
    if !image.0.is_empty() {
        root.put("image", image.yaml());
    }
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&root.yaml())
        .map_err(|_| unsupported(&top, "the emitted YAML"))?;
    // The emitter starts a document with `---`; the file needs no marker.
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    Ok(format!("{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(dockerfile: &str) -> std::result::Result<String, String> {
        dockerfile_to_yaml(dockerfile.as_bytes(), "Dockerfile").map_err(|e| e.to_string())
    }

    #[test]
    fn stages_steps_mounts_and_the_image_are_written() {
        let yaml = convert(
            "ARG TAG=\"1.36\"\nFROM busybox:${TAG}\nRUN --mount=type=cache,dst=/cache,sharing=locked,ro \\\n\
             --mount=type=secret,id=tok,required --network=none make\n\
             FROM scratch AS final\nCOPY --from=0 --chmod=0755 /bin/busybox /bin/\n\
             LABEL a=\"b c\"\nEXPOSE 80\nCMD [\"/bin/busybox\"]\n",
        )
        .unwrap();
        assert_eq!(
            yaml,
            "apiVersion: kiln/v1\nargs:\n  TAG: \"1.36\"\nstages:\n  stage-0:\n    from: \"busybox:${TAG}\"\n    \
             steps:\n      - run: make\n        mounts:\n          - type: cache\n            target: /cache\n            \
             sharing: locked\n            readonly: true\n          - type: secret\n            id: tok\n            \
             required: true\n        network: none\n  final:\n    from: scratch\n    steps:\n      - copy:\n          \
             from: stage-0\n          src:\n            - /bin/busybox\n          dest: /bin/\n          chmod: \"0755\"\n\
             image:\n  labels:\n    a: b c\n  expose:\n    - \"80\"\n  cmd:\n    - /bin/busybox\n"
        );
    }

    #[test]
    fn what_kiln_yaml_cannot_say_is_refused_with_its_line() {
        for (dockerfile, error) in [
            (
                "FROM busybox\nSHELL [\"/bin/bash\", \"-c\"]\n",
                "Dockerfile:2: SHELL has no kiln.yaml equivalent",
            ),
            (
                "FROM busybox\nRUN <<EOF\necho hi\nEOF\n",
                "Dockerfile:2: RUN with a heredoc has no kiln.yaml equivalent",
            ),
            (
                "FROM busybox AS base\nCMD [\"sh\"]\nFROM base\n",
                "Dockerfile:2: CMD outside the last stage (kiln.yaml sets the image of the target stage) has no kiln.yaml equivalent",
            ),
            (
                "FROM busybox\nENV A=x\\ y\n",
                "Dockerfile:2: ENV value \"x\\\\ y\" has no kiln.yaml equivalent",
            ),
            (
                "FROM busybox\nENV A='$HOME'\n",
                "Dockerfile:2: ENV value \"'$HOME'\" has no kiln.yaml equivalent",
            ),
            (
                "FROM busybox AS context\n",
                "Dockerfile:1: a stage named context has no kiln.yaml equivalent",
            ),
        ] {
            assert_eq!(convert(dockerfile).unwrap_err(), error, "{dockerfile}");
        }
        // A Dockerfile that does not parse says so as the parser does.
        assert!(
            convert("FROM busybox\nFROBNICATE\n")
                .unwrap_err()
                .contains("unknown instruction: FROBNICATE")
        );
    }
}
