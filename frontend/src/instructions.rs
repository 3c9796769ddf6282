//! Typed instructions and build stages, from parsed [`Node`]s.
//!
//! Follows BuildKit's `frontend/dockerfile/instructions/parse.go` (commit 73ed6825, read as the
//! model): each node becomes a [`Command`] or, for `FROM`, a new [`Stage`]; `ARG`s before the
//! first `FROM` are meta arguments. Arguments are not expanded here: variables are resolved by
//! the converter, which knows the build arguments and each stage's environment.

use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::flags::{FlagSet, FlagType, suggest};
use crate::mount::{parse_device, parse_mount};
use crate::parser::{Dockerfile, Heredoc, Node, chomp_heredoc_content, parse_heredoc};

mod types;

pub use types::*;

/// Every instruction keyword, upper-case.
pub const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Splits a parsed Dockerfile into stages of typed commands.
pub fn parse_stages(dockerfile: &Dockerfile) -> Result<Stages, Error> {
    let mut out = Stages::default();
    for node in &dockerfile.nodes {
        let instruction = parse_instruction(node, &dockerfile.file)?;
        match instruction {
            Instruction::Stage(stage) => out.stages.push(stage),
            Instruction::Command(cmd) => {
                if out.stages.is_empty() {
                    if let CommandKind::Arg(args) = cmd.kind {
                        out.meta_args.extend(args);
                        continue;
                    }
                }
                match out.stages.last_mut() {
                    Some(stage) => stage.commands.push(cmd),
                    None => {
                        return Err(Error::Syntax {
                            location: Box::new(node.location(&dockerfile.file)),
                            kind: ErrorKind::NoStage,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Parses one node into a typed instruction. `file` names the Dockerfile in errors.
pub fn parse_instruction(node: &Node, file: &str) -> Result<Instruction, Error> {
    parse_node(node, file).map_err(|kind| {
        let mut location = node.location(file);
        location.column = error_column(node, &kind);
        Error::Instruction {
            location: Box::new(location),
            kind,
        }
    })
}

/// The 1-based column of the token an error is about, on the node's first line.
fn error_column(node: &Node, kind: &ErrorKind) -> Option<usize> {
    let first = node.source.first()?;
    let needle = match kind {
        ErrorKind::UnknownInstruction { instruction, .. } => instruction.as_str(),
        ErrorKind::UnknownFlag { flag, .. }
        | ErrorKind::DuplicateFlag { flag }
        | ErrorKind::MissingFlagValue { flag }
        | ErrorKind::NotABoolean { flag, .. } => flag.as_str(),
        _ => return None,
    };
    if needle.is_empty() {
        return None;
    }
    let byte = first.find(needle)?;
    Some(first[..byte].chars().count() + 1)
}

/// All arguments of a node, an `ONBUILD` trigger flattened to its keyword and arguments.
fn node_args(node: &Node) -> Vec<String> {
    let mut args = node.args.clone();
    if let Some(trigger) = &node.trigger {
        args.push(trigger.keyword.clone());
        args.extend(node_args(trigger));
    }
    args
}

fn upper(name: &str) -> String {
    name.to_uppercase()
}

fn at_least_one(instruction: &str) -> ErrorKind {
    ErrorKind::AtLeastOneArgument {
        instruction: instruction.to_string(),
    }
}

fn exactly_one(instruction: &str) -> ErrorKind {
    ErrorKind::ExactlyOneArgument {
        instruction: instruction.to_string(),
    }
}

fn parse_node(node: &Node, file: &str) -> Result<Instruction, ErrorKind> {
    let name = node.name();
    let args = node_args(node);
    let no_flags = |node: &Node| FlagSet::new(&[]).parse(&node.flags).map(|_| ());
    let kind = match name.as_str() {
        "env" | "label" => {
            no_flags(node)?;
            let pairs = parse_key_values(&args, &upper(&name))?;
            if name == "env" {
                CommandKind::Env(pairs)
            } else {
                CommandKind::Label(pairs)
            }
        }
        "maintainer" => {
            let [m] = args.as_slice() else {
                return Err(exactly_one("MAINTAINER"));
            };
            no_flags(node)?;
            CommandKind::Maintainer(m.clone())
        }
        "add" => {
            if args.len() < 2 {
                return Err(ErrorKind::NoDestination {
                    instruction: "ADD".into(),
                });
            }
            let flags = FlagSet::new(&[
                ("chown", FlagType::String),
                ("chmod", FlagType::String),
                ("link", FlagType::Bool),
                ("keep-git-dir", FlagType::Bool),
                ("checksum", FlagType::String),
                ("unpack", FlagType::Bool),
                ("exclude", FlagType::Strings),
            ])
            .parse(&node.flags)?;
            CommandKind::Add(AddCommand {
                sources: sources_and_dest(&args, &node.heredocs, "ADD")?,
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link"),
                keep_git_dir: flags.bool_opt("keep-git-dir"),
                checksum: flags.string("checksum"),
                unpack: flags.bool_opt("unpack"),
                exclude: flags.strings("exclude"),
            })
        }
        "copy" => {
            if args.len() < 2 {
                return Err(ErrorKind::NoDestination {
                    instruction: "COPY".into(),
                });
            }
            let flags = FlagSet::new(&[
                ("chown", FlagType::String),
                ("from", FlagType::String),
                ("chmod", FlagType::String),
                ("link", FlagType::Bool),
                ("exclude", FlagType::Strings),
                ("parents", FlagType::Bool),
            ])
            .parse(&node.flags)?;
            CommandKind::Copy(CopyCommand {
                sources: sources_and_dest(&args, &node.heredocs, "COPY")?,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link"),
                parents: flags.bool("parents"),
                exclude: flags.strings("exclude"),
            })
        }
        "from" => return parse_from(node, &args, file).map(Instruction::Stage),
        "onbuild" => {
            let Some(first) = args.first() else {
                return Err(at_least_one("ONBUILD"));
            };
            no_flags(node)?;
            let trigger = first.trim().to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => return Err(ErrorKind::OnbuildChaining),
                "MAINTAINER" | "FROM" => {
                    return Err(ErrorKind::OnbuildTrigger {
                        instruction: trigger,
                    });
                }
                _ => {}
            }
            let mut expression = strip_onbuild(&node.original).to_string();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            CommandKind::Onbuild(expression)
        }
        "workdir" | "user" => {
            let [v] = args.as_slice() else {
                return Err(exactly_one(&upper(&name)));
            };
            no_flags(node)?;
            if name == "workdir" {
                CommandKind::Workdir(v.clone())
            } else {
                CommandKind::User(v.clone())
            }
        }
        "run" => CommandKind::Run(parse_run(node, &args)?),
        "cmd" => {
            no_flags(node)?;
            CommandKind::Cmd(shell_dependent(node, &args))
        }
        "entrypoint" => {
            no_flags(node)?;
            CommandKind::Entrypoint(shell_dependent(node, &args))
        }
        "healthcheck" => CommandKind::Healthcheck(parse_healthcheck(node, &args)?),
        "expose" => {
            if args.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            no_flags(node)?;
            let mut ports = args;
            ports.sort();
            CommandKind::Expose(ports)
        }
        "volume" => {
            if args.is_empty() {
                return Err(at_least_one("VOLUME"));
            }
            no_flags(node)?;
            let mut volumes = Vec::with_capacity(args.len());
            for v in &args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(ErrorKind::EmptyVolume);
                }
                volumes.push(v.to_string());
            }
            CommandKind::Volume(volumes)
        }
        "stopsignal" => {
            // As in BuildKit, flags of STOPSIGNAL are not checked.
            let [sig] = args.as_slice() else {
                return Err(exactly_one("STOPSIGNAL"));
            };
            CommandKind::StopSignal(sig.clone())
        }
        "arg" => {
            // As in BuildKit, flags of ARG are not checked.
            if args.is_empty() {
                return Err(at_least_one("ARG"));
            }
            let mut defs = Vec::with_capacity(args.len());
            for arg in &args {
                let (key, value) = match arg.split_once('=') {
                    Some((k, v)) => {
                        if k.is_empty() {
                            return Err(ErrorKind::BlankName {
                                instruction: "ARG".into(),
                            });
                        }
                        (k.to_string(), Some(v.to_string()))
                    }
                    None => (arg.clone(), None),
                };
                defs.push(ArgDefinition {
                    doc_comment: doc_comment(&node.comments, &key),
                    key,
                    value,
                });
            }
            CommandKind::Arg(defs)
        }
        "shell" => {
            no_flags(node)?;
            let cmd = shell_dependent(node, &args);
            if cmd.cmd_line.is_empty() {
                return Err(at_least_one("SHELL"));
            }
            if !node.json {
                return Err(ErrorKind::NotJson {
                    instruction: "SHELL".into(),
                });
            }
            CommandKind::Shell(cmd.cmd_line)
        }
        _ => {
            let known: Vec<&str> = INSTRUCTIONS.to_vec();
            return Err(ErrorKind::UnknownInstruction {
                suggest: suggest(&node.keyword, &known, false),
                instruction: node.keyword.clone(),
            });
        }
    };
    Ok(Instruction::Command(Command {
        name,
        code: node.original.trim().to_string(),
        location: node.location(file),
        comments: node.comments.clone(),
        kind,
    }))
}

/// Removes a leading `ONBUILD` keyword (any case) and the space after it.
fn strip_onbuild(original: &str) -> &str {
    let s = original.trim_start();
    match s.get(..7) {
        Some(head) if head.eq_ignore_ascii_case("onbuild") => s[7..].trim_start(),
        _ => original,
    }
}

fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_default()
        .to_string()
}

fn parse_key_values(args: &[String], instruction: &str) -> Result<Vec<KeyValuePair>, ErrorKind> {
    if args.is_empty() {
        return Err(at_least_one(instruction));
    }
    if args.len() % 3 != 0 {
        return Err(ErrorKind::TooManyArguments {
            instruction: instruction.to_string(),
        });
    }
    args.chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                return Err(ErrorKind::BlankName {
                    instruction: instruction.to_string(),
                });
            }
            Ok(KeyValuePair {
                key: c[0].clone(),
                value: c[1].clone(),
                no_delim: c[2].is_empty(),
            })
        })
        .collect()
}

fn sources_and_dest(
    args: &[String],
    heredocs: &[Heredoc],
    instruction: &str,
) -> Result<SourcesAndDest, ErrorKind> {
    let (dest, srcs) = args.split_last().expect("callers check for two arguments");
    if parse_heredoc(dest).ok().flatten().is_some() {
        return Err(ErrorKind::BadHeredoc {
            instruction: instruction.to_string(),
            role: "a destination".to_string(),
        });
    }
    let mut out = SourcesAndDest {
        dest_path: dest.clone(),
        ..SourcesAndDest::default()
    };
    for src in srcs {
        match parse_heredoc(src).ok().flatten() {
            Some(h) => {
                let body = heredocs
                    .iter()
                    .rev()
                    .find(|b| b.name == h.name)
                    .map(|b| b.content.as_str())
                    .unwrap_or_default();
                let data = if h.chomp {
                    chomp_heredoc_content(body)
                } else {
                    body.to_string()
                };
                out.source_contents.push(SourceContent {
                    path: h.name,
                    data,
                    expand: h.expand,
                });
            }
            None => out.source_paths.push(src.clone()),
        }
    }
    Ok(out)
}

fn shell_dependent(node: &Node, args: &[String]) -> ShellDependentCmdLine {
    let cmd_line = if args.is_empty() || node.json {
        args.to_vec()
    } else {
        vec![args.join(" ")]
    };
    ShellDependentCmdLine {
        cmd_line,
        files: node
            .heredocs
            .iter()
            .map(|h| ShellInlineFile {
                name: h.name.clone(),
                data: h.content.clone(),
                chomp: h.chomp,
                expand: h.expand,
            })
            .collect(),
        prepend_shell: !node.json,
    }
}

fn parse_run(node: &Node, args: &[String]) -> Result<RunCommand, ErrorKind> {
    let flags = FlagSet::new(&[
        ("mount", FlagType::Strings),
        ("network", FlagType::String),
        ("security", FlagType::String),
        ("device", FlagType::Strings),
    ])
    .parse(&node.flags)?;
    let mount_specs = flags.strings("mount");
    for spec in &mount_specs {
        // Checks what can be checked before variables are known (`from=$x`) ...
        parse_mount(spec, None)?;
        // ... and validates literal specifications fully, so typos fail early.
        if !spec.contains('$') {
            let mut literal = |s: &str| Ok(s.to_string());
            parse_mount(spec, Some(&mut literal))?;
        }
    }
    let network = match flags.string_or("network", "default").as_str() {
        "default" => NetworkMode::Default,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => {
            return Err(ErrorKind::InvalidNetwork {
                value: other.to_string(),
            });
        }
    };
    let security = match flags.string_or("security", "sandbox").as_str() {
        "sandbox" => SecurityMode::Sandbox,
        "insecure" => SecurityMode::Insecure,
        other => {
            return Err(ErrorKind::InvalidSecurity {
                value: other.to_string(),
            });
        }
    };
    Ok(RunCommand {
        cmd: shell_dependent(node, args),
        mount_specs,
        network,
        security,
        devices: flags
            .strings("device")
            .iter()
            .map(|spec| parse_device(spec))
            .collect::<Result<_, _>>()?,
        flags_used: flags.used(),
    })
}

fn parse_from(node: &Node, args: &[String], file: &str) -> Result<Stage, ErrorKind> {
    let name = match args {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(ErrorKind::InvalidStageName { name: name.clone() });
            }
            lower
        }
        [_] => String::new(),
        _ => return Err(ErrorKind::FromArguments),
    };
    let flags = FlagSet::new(&[("platform", FlagType::String)]).parse(&node.flags)?;
    Ok(Stage {
        doc_comment: doc_comment(&node.comments, &name),
        name,
        base_name: args[0].clone(),
        platform: flags.string("platform"),
        orig_cmd: node.keyword.clone(),
        source_code: node.original.trim().to_string(),
        location: node.location(file),
        comments: node.comments.clone(),
        commands: Vec::new(),
    })
}

/// `^[a-z][a-z0-9-_.]*$`
pub(crate) fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_healthcheck(node: &Node, args: &[String]) -> Result<HealthConfig, ErrorKind> {
    let Some((kind, rest)) = args.split_first() else {
        return Err(at_least_one("HEALTHCHECK"));
    };
    let kind = kind.to_uppercase();
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err(ErrorKind::HealthcheckNoneArguments);
        }
        return Ok(HealthConfig {
            test: vec![kind],
            ..HealthConfig::default()
        });
    }
    let flags = FlagSet::new(&[
        ("interval", FlagType::String),
        ("timeout", FlagType::String),
        ("start-period", FlagType::String),
        ("start-interval", FlagType::String),
        ("retries", FlagType::String),
    ])
    .parse(&node.flags)?;
    if kind != "CMD" {
        return Err(ErrorKind::HealthcheckUnknownType { kind });
    }
    let cmd = if rest.is_empty() || node.json {
        rest.to_vec()
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err(ErrorKind::HealthcheckMissingCommand);
    }
    let test_kind = if node.json { "CMD" } else { "CMD-SHELL" };
    let mut config = HealthConfig {
        test: std::iter::once(test_kind.to_string()).chain(cmd).collect(),
        ..HealthConfig::default()
    };
    config.interval = interval_flag(&flags, "interval")?;
    config.timeout = interval_flag(&flags, "timeout")?;
    config.start_period = interval_flag(&flags, "start-period")?;
    config.start_interval = interval_flag(&flags, "start-interval")?;
    let retries = flags.string("retries");
    if !retries.is_empty() {
        let n = parse_go_int32(&retries).ok_or(ErrorKind::InvalidRetries { value: retries })?;
        if n < 0 {
            return Err(ErrorKind::NegativeRetries { retries: n });
        }
        config.retries = n;
    }
    Ok(config)
}

fn parse_go_int32(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    i32::try_from(n).ok().map(i64::from)
}

/// A duration flag: empty or zero is unset; otherwise at least 1ms.
fn interval_flag(flags: &FlagSet, name: &str) -> Result<Duration, ErrorKind> {
    interval_value(name, &flags.string(name))
}

/// A health check duration named `name` (`interval`, `start-period`, ...): empty or zero is
/// unset; otherwise at least 1ms.
pub(crate) fn interval_value(name: &str, value: &str) -> Result<Duration, ErrorKind> {
    let value = value.to_owned();
    if value.is_empty() {
        return Ok(Duration::ZERO);
    }
    let nanos = parse_go_duration(&value).ok_or_else(|| ErrorKind::InvalidDuration {
        value: value.clone(),
    })?;
    if nanos == 0 {
        return Ok(Duration::ZERO);
    }
    if nanos < 1_000_000 {
        return Err(ErrorKind::IntervalTooSmall {
            flag: name.to_string(),
        });
    }
    Ok(Duration::from_nanos(
        u64::try_from(nanos).unwrap_or(u64::MAX),
    ))
}

/// Go's `time.ParseDuration`: `[-+]?(\d*(\.\d*)?unit)+` or `0`; units ns, us, µs, μs, ms, s, m,
/// h. Returns nanoseconds; `None` if invalid or beyond ±2^63 ns.
pub(crate) fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_end);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let end = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(end)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.get(..30).unwrap_or(int_part).parse().ok()?
        };
        let mut value = int.checked_mul(scale)?;
        let mut place = scale;
        for d in frac_part.bytes().take(30) {
            place /= 10;
            value += i128::from(d - b'0') * place;
        }
        total = total.checked_add(value)?;
        if total > i128::from(i64::MAX) + i128::from(neg) {
            return None;
        }
        rest = after;
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests;
