//! The instructions that set the image configuration and the stage's environment: `ENV`,
//! `ARG`, `LABEL`, `MAINTAINER`, `ONBUILD`, `WORKDIR`, `USER`, `VOLUME`, `STOPSIGNAL`, `SHELL`,
//! `EXPOSE`, `CMD`, `ENTRYPOINT` and `HEALTHCHECK`, each with its history entry in BuildKit's
//! wording, and the Go formats these use (durations, ports, signals). A new instruction that
//! sets the image configuration, with no op of its own beyond a `WORKDIR`-like mkdir, goes here.

use kiln_llb::{FileAction, MkdirOptions};

use super::copy::chown;
use super::dispatch::{Step, normalize_workdir};
use super::{ConvertError, ConvertErrorKind, Empty, Healthcheck, at, set_env};
use crate::error::Location;
use crate::instructions::{
    ArgDefinition, Command, HealthConfig, KeyValuePair, ShellDependentCmdLine,
};
use crate::lint;
use crate::quote::go_quote_list;

impl Step<'_, '_> {
    /// `ENV`: sets the variables in the stage, its later processes and the image.
    pub(super) fn dispatch_env(
        &mut self,
        pairs: &[KeyValuePair],
        loc: &Location,
    ) -> Result<(), ConvertError> {
        let mut message = "ENV".to_owned();
        // Every word is expanded with the environment from before the instruction, as in
        // BuildKit: `ENV a=new b=$a` gives `b` the old value of `a`.
        let expanded = pairs
            .iter()
            .map(|pair| Ok((self.expand(&pair.key, loc)?, self.expand(&pair.value, loc)?)))
            .collect::<Result<Vec<_>, ConvertError>>()?;
        for (key, value) in expanded {
            self.check_secret("ENV", &key, loc);
            message.push_str(&format!(" {key}={value}"));
            self.d.state = self.d.state.clone().env(&key, &value);
            set_env(&mut self.d.env, &key, &value);
            add_env(&mut self.d.image.config.env, &key, &value);
        }
        self.d.history(message, false);
        Ok(())
    }

    /// `LABEL`: adds labels to the image.
    pub(super) fn dispatch_label(
        &mut self,
        pairs: &[KeyValuePair],
        loc: &Location,
    ) -> Result<(), ConvertError> {
        let mut message = "LABEL".to_owned();
        for pair in pairs {
            let key = self.expand(&pair.key, loc)?;
            let value = self.expand(&pair.value, loc)?;
            message.push_str(&format!(" {key}={value}"));
            self.d.image.config.labels.insert(key, value);
        }
        self.d.history(message, false);
        Ok(())
    }

    /// `MAINTAINER`: the image author.
    pub(super) fn dispatch_maintainer(
        &mut self,
        m: &str,
        loc: &Location,
    ) -> Result<(), ConvertError> {
        let m = self.expand(m, loc)?;
        self.d.image.author = Some(m.clone());
        self.d.history(format!("MAINTAINER {m}"), false);
        Ok(())
    }

    /// `ONBUILD`: a trigger stored in the image for the builds that use it.
    pub(super) fn dispatch_onbuild(&mut self, expression: &str) {
        self.d.image.config.on_build.push(expression.to_owned());
    }

    /// `WORKDIR`: the working directory, created (owned by the current user) unless `/`.
    pub(super) fn dispatch_workdir(
        &mut self,
        cmd: &Command,
        path: &str,
    ) -> Result<(), ConvertError> {
        let loc = &cmd.location;
        let path = self.expand(path, loc)?;
        // Only the stage's first `WORKDIR` is checked: an absolute one fixes the later ones.
        if !self.d.seen.workdir && !path.starts_with('/') {
            self.plan.linter.run(
                &lint::WORKDIR_RELATIVE_PATH,
                loc,
                format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
            );
        }
        self.d.seen.workdir = true;
        let wd = normalize_workdir(&self.d.image.config.working_dir, &path);
        self.d.image.config.working_dir = wd.clone();
        self.d.cwd = wd.clone();
        self.d.state = self.d.state.clone().cwd(&wd);
        let layer = wd != "/";
        if layer {
            let name = self.op_name(&cmd.code, false);
            let user = self.d.image.config.user.clone();
            let options = MkdirOptions {
                make_parents: true,
                owner: (!user.is_empty()).then(|| chown(&user)),
                ..MkdirOptions::default()
            };
            self.d.state = self
                .d
                .state
                .file(FileAction::mkdir(&wd, 0o755, options))
                .with_custom_name(&name);
        }
        self.d.history(format!("WORKDIR {wd}"), layer);
        Ok(())
    }

    /// `USER`: the user of later processes and of the image.
    pub(super) fn dispatch_user(&mut self, user: &str, loc: &Location) -> Result<(), ConvertError> {
        let user = self.expand(user, loc)?;
        self.d.state = self.d.state.clone().user(&user);
        self.d.image.config.user = user.clone();
        self.d.history(format!("USER {user}"), false);
        Ok(())
    }

    /// `VOLUME`: volumes of the image.
    pub(super) fn dispatch_volume(
        &mut self,
        volumes: &[String],
        loc: &Location,
    ) -> Result<(), ConvertError> {
        let mut expanded = Vec::new();
        for v in volumes {
            let v = self.expand(v, loc)?;
            if v.is_empty() {
                return Err(at(loc, ConvertErrorKind::EmptyVolume));
            }
            self.d.image.config.volumes.insert(v.clone(), Empty {});
            expanded.push(v);
        }
        self.d
            .history(format!("VOLUME [{}]", expanded.join(" ")), false);
        Ok(())
    }

    /// `STOPSIGNAL`: the signal that stops containers of the image.
    pub(super) fn dispatch_stop_signal(
        &mut self,
        signal: &str,
        loc: &Location,
    ) -> Result<(), ConvertError> {
        let signal = self.expand(signal, loc)?;
        if !valid_signal(&signal) {
            return Err(at(loc, ConvertErrorKind::InvalidSignal { signal }));
        }
        self.d.image.config.stop_signal = signal.clone();
        self.d.history(format!("STOPSIGNAL {signal}"), false);
        Ok(())
    }

    /// `SHELL`: the shell of later shell-form instructions.
    pub(super) fn dispatch_shell(&mut self, shell: &[String]) {
        self.d.image.config.shell = shell.to_vec();
        self.d
            .history(format!("SHELL [{}]", shell.join(" ")), false);
    }

    /// `EXPOSE`: ports of the image, ranges expanded.
    pub(super) fn dispatch_expose(
        &mut self,
        ports: &[String],
        loc: &Location,
    ) -> Result<(), ConvertError> {
        let mut words = Vec::new();
        for p in ports {
            words.extend(
                self.plan
                    .lexer
                    .process_words(p, &self.d.env)
                    .map_err(|e| at(loc, e))?,
            );
        }
        let parsed = parse_ports(&words, loc)?;
        for p in &parsed {
            self.d
                .image
                .config
                .exposed_ports
                .insert(p.clone(), Empty {});
        }
        self.d
            .history(format!("EXPOSE [{}]", parsed.join(" ")), false);
        Ok(())
    }

    /// The arguments of a `CMD` or `ENTRYPOINT`: the shell form run by the stage's shell.
    fn shell_dependent(&self, line: &ShellDependentCmdLine) -> Vec<String> {
        if line.prepend_shell {
            self.with_shell(&line.cmd_line)
        } else {
            line.cmd_line.clone()
        }
    }

    /// `CMD`: the default command of the image.
    pub(super) fn dispatch_cmd(&mut self, line: &ShellDependentCmdLine) {
        let args = self.shell_dependent(line);
        self.d
            .history(format!("CMD {}", go_quote_list(&args)), false);
        self.d.image.config.cmd = Some(args);
        self.d.image.config.args_escaped = true;
        self.d.cmd_set = true;
    }

    /// `ENTRYPOINT`: the entrypoint of the image; it clears a `CMD` inherited from the base.
    pub(super) fn dispatch_entrypoint(&mut self, line: &ShellDependentCmdLine) {
        let args = self.shell_dependent(line);
        self.d
            .history(format!("ENTRYPOINT {}", go_quote_list(&args)), false);
        self.d.image.config.entrypoint = Some(args);
        if !self.d.cmd_set {
            self.d.image.config.cmd = None;
        }
    }

    /// `HEALTHCHECK`: the health check of the image.
    pub(super) fn dispatch_healthcheck(&mut self, h: &HealthConfig) {
        let config = Healthcheck {
            test: h.test.clone(),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            start_period: nanos(h.start_period),
            start_interval: nanos(h.start_interval),
            retries: h.retries,
        };
        self.d.image.config.healthcheck = Some(config);
        self.d
            .history(format!("HEALTHCHECK {}", health_string(h)), false);
    }

    /// The build check `SecretsUsedInArgOrEnv` on the name `key` of `ENV` or `ARG`.
    fn check_secret(&self, instruction: &str, key: &str, loc: &Location) {
        if lint::looks_secret(key) {
            self.plan.linter.run(
                &lint::SECRETS_USED_IN_ARG_OR_ENV,
                loc,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
                ),
            );
        }
    }

    /// `ARG`: a build argument of the stage, from `--build-arg`, its default or a meta argument.
    pub(super) fn dispatch_arg(
        &mut self,
        args: &[ArgDefinition],
        loc: &Location,
    ) -> Result<(), ConvertError> {
        let mut parts = Vec::new();
        for arg in args {
            self.check_secret("ARG", &arg.key, loc);
            let given = self.plan.options.build_args.get(&arg.key);
            let mut value = arg.value.clone();
            if value.is_none() && given.is_none() {
                if let Some(v) = crate::shell::Env::get(&self.plan.global_args, &arg.key) {
                    value = Some(v.to_owned());
                }
            }
            if let Some(v) = given {
                value = Some(v.clone());
            } else if let Some(v) = &arg.value {
                value = Some(self.expand(v, loc)?);
            }
            if let Some(v) = &value {
                self.d.state = self.d.state.clone().env(&arg.key, v);
                set_env(&mut self.d.env, &arg.key, v);
            }
            self.d.build_args.push((arg.key.clone(), value.clone()));
            parts.push(match &value {
                Some(v) => format!("{}={v}", arg.key),
                None => arg.key.clone(),
            });
        }
        self.d.history(format!("ARG {}", parts.join(" ")), false);
        Ok(())
    }
}

/// Formats a duration like Go's `time.Duration.String`.
fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let rest = nanos % 3_600_000_000_000;
    let minutes = rest / 60_000_000_000;
    let seconds = rest % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_fraction(seconds, 1_000_000_000)));
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = unit.to_string().len() - 1;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn health_string(h: &HealthConfig) -> String {
    format!(
        "{{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        h.test.join(" "),
        go_duration(h.interval),
        go_duration(h.timeout),
        go_duration(h.start_period),
        go_duration(h.start_interval),
        h.retries
    )
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The signals `STOPSIGNAL` accepts by name (Linux numbering), without `SIG`.
const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM",
];

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0 && n < 65;
    }
    let upper = s.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.contains(&name)
        || name
            .strip_prefix("RTMIN")
            .or_else(|| name.strip_prefix("RTMAX"))
            .is_some_and(|r| {
                r.is_empty() || r.trim_start_matches(['+', '-']).parse::<u32>().is_ok()
            })
}

/// `EXPOSE` port specifications as `port/proto` keys (ranges expanded).
fn parse_ports(specs: &[String], location: &Location) -> Result<Vec<String>, ConvertError> {
    let mut out = Vec::new();
    for spec in specs {
        let bad = || {
            at(
                location,
                ConvertErrorKind::InvalidPort { port: spec.clone() },
            )
        };
        // `ip:hostPort:containerPort` forms keep only the container port.
        let raw = spec.rsplit(':').next().unwrap_or(spec);
        let (ports, proto) = raw.split_once('/').unwrap_or((raw, "tcp"));
        let (start, end) = match ports.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let p = ports.parse::<u32>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if start > end || end > 65535 {
            return Err(bad());
        }
        for p in start..=end {
            out.push(format!("{p}/{}", proto.to_lowercase()));
        }
    }
    Ok(out)
}

/// BuildKit's `addEnv`: replaces the entry for `key` in place, or appends one.
fn add_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    for e in env.iter_mut() {
        if e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key {
            *e = entry;
            return;
        }
    }
    env.push(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_format() {
        use std::time::Duration;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(5)), "5ms");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn ports_and_signals() {
        let loc = Location {
            file: "Dockerfile".into(),
            start_line: 1,
            end_line: 1,
            column: None,
            source: vec![],
        };
        assert_eq!(
            parse_ports(&["80".into(), "53/UDP".into(), "8000-8001".into()], &loc).unwrap(),
            ["80/tcp", "53/udp", "8000/tcp", "8001/tcp"]
        );
        assert!(parse_ports(&["x".into()], &loc).is_err());
        assert!(valid_signal("SIGTERM"));
        assert!(valid_signal("9"));
        assert!(!valid_signal("SIGBOGUS"));
    }
}
