//! Build checks: BuildKit's Dockerfile linter rules, with its rule names, messages and links.
//!
//! # Overview
//!
//! 1. The configuration ([`LintConfig`]) comes from the `BUILDKIT_DOCKERFILE_CHECK` build
//!    argument when given, else from the `# check=skip=Rule1,Rule2;error=true` directive; a
//!    `# check=` comment right above a `FROM` adds to it for that stage.
//! 2. The converter reports what it sees to a [`Linter`] while it parses the stages and
//!    dispatches their instructions; a skipped rule reports nothing. Each report is a
//!    [`LintWarning`] with the instruction's [`Location`].
//! 3. The warnings come back in [`Converted::warnings`](crate::Converted::warnings); with
//!    `error=true`, a conversion with warnings fails ([`ConvertError::Lint`](crate::ConvertError::Lint))
//!    and carries them.
//!
//! Written after reading BuildKit's `frontend/dockerfile/linter` and
//! `dockerfile2llb/validations.go` (commit 73ed6825); the rule table is BuildKit's.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};

use crate::error::Location;
use crate::instructions::Stages;
use crate::parser::Dockerfile;

/// One build check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name (`StageNameCasing`).
    pub name: &'static str,
    /// What it asks for.
    pub description: &'static str,
    /// Its documentation page (empty when there is none).
    pub url: &'static str,
}

macro_rules! rules {
    ($($id:ident = $name:literal, $slug:literal, $description:literal;)*) => {
        $(
            #[doc = $description]
            pub(crate) const $id: Rule = Rule {
                name: $name,
                description: $description,
                url: if $slug.is_empty() {
                    ""
                } else {
                    concat!("https://docs.docker.com/go/dockerfile/rule/", $slug, "/")
                },
            };
        )*
        /// Every rule kiln checks, by name.
        pub const RULES: &[Rule] = &[$($id),*];
    };
}

rules! {
    STAGE_NAME_CASING = "StageNameCasing", "stage-name-casing", "Stage names should be lowercase";
    FROM_AS_CASING = "FromAsCasing", "from-as-casing", "The 'as' keyword should match the case of the 'from' keyword";
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation", "no-empty-continuation", "Empty continuation lines will become errors in a future release";
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing", "consistent-instruction-casing", "All commands within the Dockerfile should use the same casing (either upper or lower)";
    DUPLICATE_STAGE_NAME = "DuplicateStageName", "duplicate-stage-name", "Stage names should be unique";
    RESERVED_STAGE_NAME = "ReservedStageName", "reserved-stage-name", "Reserved words should not be used as stage names";
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended", "json-args-recommended", "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals";
    MAINTAINER_DEPRECATED = "MaintainerDeprecated", "maintainer-deprecated", "The MAINTAINER instruction is deprecated, use a label instead to define an image author";
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom", "undefined-arg-in-from", "FROM command must use declared ARGs";
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath", "workdir-relative-path", "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes";
    UNDEFINED_VAR = "UndefinedVar", "undefined-var", "Variables should be defined before their use";
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed", "multiple-instructions-disallowed", "Multiple instructions of the same type should not be used in the same stage";
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat", "legacy-key-value-format", "Legacy key/value format with whitespace separator should not be used";
    INVALID_BASE_IMAGE_PLATFORM = "InvalidBaseImagePlatform", "", "Base image platform does not match expected target platform";
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform", "redundant-target-platform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior";
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env", "Sensitive data should not be used in the ARG or ENV commands";
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom", "invalid-default-arg-in-from", "Default value for global ARG results in an empty or invalid base image name";
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed", "FROM --platform flag should not use a constant value";
    COPY_IGNORED_FILE = "CopyIgnoredFile", "copy-ignored-file", "Attempting to Copy file that is excluded by .dockerignore";
}

/// Which checks run and what a warning does: BuildKit's `check` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintConfig {
    /// `skip=all`: no check runs.
    pub skip_all: bool,
    /// `skip=Rule1,Rule2`: these do not run.
    pub skip: BTreeSet<String>,
    /// `error=true`: a build with warnings fails.
    pub error: bool,
}

impl LintConfig {
    /// Parses `skip=Rule1,Rule2;error=true` (also `skip=all`; `experimental=` is accepted, as
    /// kiln has no experimental rules). The message of an error is BuildKit's.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let mut config = Self::default();
        if text.is_empty() {
            return Ok(config);
        }
        // As BuildKit's: at most three options; a fourth stays in the third's value.
        for part in text.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!(
                    "invalid check option {}",
                    crate::quote::go_quote(part)
                ));
            };
            let value = value.trim();
            match key.trim() {
                "skip" if value == "all" => config.skip_all = true,
                "skip" => config.skip = value.split(',').map(|r| r.trim().to_owned()).collect(),
                "experimental" => {}
                "error" => {
                    config.error = parse_go_bool(value).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: strconv.ParseBool: parsing {}: invalid syntax",
                            crate::quote::go_quote(part),
                            crate::quote::go_quote(value)
                        )
                    })?;
                }
                other => {
                    return Err(format!(
                        "invalid check option {}",
                        crate::quote::go_quote(other)
                    ));
                }
            }
        }
        Ok(config)
    }

    /// This configuration with `other`'s skips and `error` added.
    fn merged(&self, other: &Self) -> Self {
        let mut merged = self.clone();
        merged.skip_all |= other.skip_all;
        merged.skip.extend(other.skip.iter().cloned());
        merged.error |= other.error;
        merged
    }

    /// This configuration with the first `# check=` comment of `comments` added (a comment
    /// that does not parse leaves it as it is, as in BuildKit).
    pub(crate) fn with_comments(&self, comments: &[String]) -> Self {
        for comment in comments {
            let Some(value) = comment
                .strip_prefix("check")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
            else {
                continue;
            };
            let value = value.trim().split(' ').next().unwrap_or("");
            return match Self::parse(value) {
                Ok(other) => self.merged(&other),
                Err(_) => self.clone(),
            };
        }
        self.clone()
    }

    fn runs(&self, rule: &Rule) -> bool {
        !self.skip_all && !self.skip.contains(rule.name)
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    /// The rule.
    pub rule: Rule,
    /// The message, with the names it is about (BuildKit's `detail`).
    pub message: String,
    /// The instruction it is about.
    pub location: Location,
}

impl LintWarning {
    /// The one-line form buildx lists after a build: `Rule: message (line N)`.
    pub fn short(&self) -> String {
        format!(
            "{}: {} (line {})",
            self.rule.name, self.message, self.location.start_line
        )
    }

    /// The form `--check` prints, as buildx: `WARNING: Rule - URL`, the message, and the
    /// lines of `dockerfile` around the instruction (the marked lines behind `>>>`).
    pub fn render(&self, dockerfile: &[u8]) -> String {
        let mut out = format!("\nWARNING: {}", self.rule.name);
        if !self.rule.url.is_empty() {
            out.push_str(" - ");
            out.push_str(self.rule.url);
        }
        out.push('\n');
        out.push_str(&self.message);
        out.push('\n');
        out.push_str(&source_excerpt(
            &self.location.file,
            dockerfile,
            self.location.start_line,
            self.location.end_line.max(self.location.start_line),
        ));
        out
    }
}

/// The lines `first..=last` of `data` with a few lines around them, as BuildKit prints a
/// source range (`errdefs.Source.Print`): two more lines for a range, four for one line, taken
/// before and after as the file allows.
pub fn source_excerpt(file: &str, data: &[u8], first: usize, last: usize) -> String {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    if first < 1 || first > lines.len() {
        return String::new();
    }
    let (mut start, mut end) = (first, last.min(lines.len()));
    let pad = if end == start { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file}:{first}\n--------------------\n");
    for (i, line) in lines.iter().enumerate().take(end).skip(start - 1) {
        let number = i + 1;
        let marker = if (first..=last).contains(&number) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {number:>3} | {marker} {line}\n"));
    }
    out.push_str("--------------------\n");
    out
}

/// Collects the warnings of one conversion.
#[derive(Debug, Default)]
pub(crate) struct Linter {
    config: Option<LintConfig>,
    warnings: RefCell<Vec<LintWarning>>,
    /// What was reported, by rule, lines and message: the converter dispatches twice (once to
    /// learn the context paths), and each warning is reported once.
    reported: RefCell<HashSet<(&'static str, usize, usize, String)>>,
    /// The configuration of the instruction being converted, when its comments change it.
    instruction: RefCell<Option<LintConfig>>,
}

impl Linter {
    /// A linter with this configuration.
    pub(crate) fn new(config: LintConfig) -> Self {
        Self {
            config: Some(config),
            ..Self::default()
        }
    }

    /// A linter that reports nothing (a frontend without checks).
    pub(crate) fn disabled() -> Self {
        Self::default()
    }

    /// Applies the `# check=` comment among `comments` (an instruction's) to what is
    /// reported until [`end_instruction`](Self::end_instruction), as BuildKit's dispatch does.
    pub(crate) fn begin_instruction(&self, comments: &[String]) {
        let config = self.config.as_ref().map(|c| c.with_comments(comments));
        *self.instruction.borrow_mut() = config.filter(|c| Some(c) != self.config.as_ref());
    }

    /// Ends what [`begin_instruction`](Self::begin_instruction) began.
    pub(crate) fn end_instruction(&self) {
        self.instruction.borrow_mut().take();
    }

    /// Reports `message` about `location` unless `rule` is skipped.
    pub(crate) fn run(&self, rule: &Rule, location: &Location, message: String) {
        self.run_with(None, rule, location, message);
    }

    /// As [`run`](Self::run), with a configuration of the instruction's own (its comments).
    pub(crate) fn run_with(
        &self,
        config: Option<&LintConfig>,
        rule: &Rule,
        location: &Location,
        message: String,
    ) {
        let Some(base) = &self.config else {
            return;
        };
        let instruction = self.instruction.borrow();
        if !config.or(instruction.as_ref()).unwrap_or(base).runs(rule) {
            return;
        }
        let key = (
            rule.name,
            location.start_line,
            location.end_line,
            message.clone(),
        );
        if self.reported.borrow_mut().insert(key) {
            self.warnings.borrow_mut().push(LintWarning {
                rule: *rule,
                message,
                location: location.clone(),
            });
        }
    }

    /// The configuration, if checks run.
    pub(crate) fn config(&self) -> Option<&LintConfig> {
        self.config.as_ref()
    }

    /// The warnings so far, in the order they were found.
    pub(crate) fn take(&self) -> Vec<LintWarning> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }

    /// With `error=true` and warnings, the rules that failed the build, sorted.
    pub(crate) fn failed_rules(&self) -> Option<Vec<String>> {
        let config = self.config.as_ref()?;
        let warnings = self.warnings.borrow();
        if !config.error || warnings.is_empty() {
            return None;
        }
        let rules: BTreeSet<&str> = warnings.iter().map(|w| w.rule.name).collect();
        Some(rules.into_iter().map(str::to_owned).collect())
    }
}

/// Whether `key` looks like it holds a secret (`API_KEY`, `password`, `GITHUB_TOKEN`), as
/// BuildKit's `SecretsUsedInArgOrEnv` decides: a secret word as the whole name or its first or
/// last `_` part, and no allowed word (`public`, `file`, `version`) as one.
pub(crate) fn looks_secret(key: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    // `(?:_|^)WORD(?:_|$)`: a word bounded by `_` or the ends, anywhere in the name.
    let has = |words: &[&str]| {
        let lower = key.to_lowercase();
        let parts: Vec<&str> = lower.split('_').collect();
        parts.iter().any(|p| words.contains(p))
    };
    has(&DENY) && !has(&ALLOW)
}

/// Whether the `.dockerignore` patterns `excludes` leave out the context path `src` (or a
/// parent of it), as BuildKit's `CopyIgnoredFile` decides: never when a pattern is an exception
/// (`!`), as what those let back in cannot be told without the files; the context's root only
/// when everything is left out (`*`, `**`, `**/*`).
pub(crate) fn ignored_by(excludes: &[String], src: &str) -> bool {
    if excludes.is_empty() || excludes.iter().any(|p| p.starts_with('!')) {
        return false;
    }
    let cleaned = kiln_llb::clean_path(src);
    if cleaned == "." || cleaned == "/" {
        return excludes
            .iter()
            .any(|p| matches!(p.as_str(), "*" | "**" | "**/*"));
    }
    let segments = kiln_llb::path_segments(std::path::Path::new(&cleaned));
    excludes
        .iter()
        .any(|p| kiln_llb::PathPattern::new(p.as_bytes()).matches_or_parent(&segments))
}

/// Whether `name` is a valid image reference once normalised (`busybox`, `host:5000/a/b:tag`,
/// `name@sha256:...`), as the distribution `reference` grammar says.
pub(crate) fn is_valid_reference(name: &str) -> bool {
    kiln_llb::ImageReference::parse(name).is_ok()
}

/// The checks on the parsed file, before the stages are typed: empty continuation lines,
/// `MAINTAINER`, the casing of stage names, of `AS` and of every instruction.
pub(crate) fn check_nodes(dockerfile: &Dockerfile, linter: &Linter) {
    let Some(base) = linter.config() else {
        return;
    };
    let file = &dockerfile.file;
    for warning in &dockerfile.warnings {
        if warning.url.as_deref() == Some(NO_EMPTY_CONTINUATION.url) {
            let location = Location {
                file: file.clone(),
                start_line: warning.line,
                end_line: warning.line,
                column: None,
                source: Vec::new(),
            };
            linter.run(
                &NO_EMPTY_CONTINUATION,
                &location,
                "Empty continuation line".to_owned(),
            );
        }
    }
    for node in &dockerfile.nodes {
        let config = base.with_comments(&node.comments);
        let location = node.location(file);
        match node.name().as_str() {
            "maintainer" => linter.run_with(
                Some(&config),
                &MAINTAINER_DEPRECATED,
                &location,
                "Maintainer instruction is deprecated in favor of using label".to_owned(),
            ),
            "from" if node.args.len() == 3 => {
                let (as_word, name) = (&node.args[1], &node.args[2]);
                if *name != name.to_lowercase() {
                    linter.run_with(
                        Some(&config),
                        &STAGE_NAME_CASING,
                        &location,
                        format!("Stage name '{name}' should be lowercase"),
                    );
                }
                let from = &node.keyword;
                let matches = if *from == from.to_lowercase() {
                    *as_word == as_word.to_lowercase()
                } else if *from == from.to_uppercase() {
                    *as_word == as_word.to_uppercase()
                } else {
                    true // the keyword's own casing is ConsistentInstructionCasing's
                };
                if !matches {
                    linter.run_with(
                        Some(&config),
                        &FROM_AS_CASING,
                        &location,
                        format!("'{as_word}' and '{from}' keywords' casing do not match"),
                    );
                }
            }
            _ => {}
        }
    }
    // The instructions of the stages (not the `ARG`s before the first `FROM`) against the
    // casing most of them use; a tie counts as upper case, as in BuildKit.
    let instructions: Vec<_> = dockerfile
        .nodes
        .iter()
        .skip_while(|n| n.name() != "from")
        .collect();
    let (mut lower, mut upper) = (0, 0);
    for node in &instructions {
        let keyword = &node.keyword;
        if *keyword == keyword.to_lowercase() {
            lower += 1;
        } else if *keyword == keyword.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for node in &instructions {
        let keyword = &node.keyword;
        let casing = if majority_lower && *keyword != keyword.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *keyword != keyword.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        linter.run(
            &CONSISTENT_INSTRUCTION_CASING,
            &node.location(file),
            format!("Command '{keyword}' should match the case of the command majority ({casing})"),
        );
    }
}

/// Stage names that mean something else in `FROM` and `COPY --from`.
const RESERVED_STAGE_NAMES: [&str; 2] = ["context", "scratch"];

/// The checks on the stages as a whole: reserved and duplicate names.
pub(crate) fn check_stages(stages: &Stages, linter: &Linter) {
    let Some(base) = linter.config() else {
        return;
    };
    let mut seen = BTreeSet::new();
    for stage in stages.stages.iter().filter(|s| !s.name.is_empty()) {
        let config = base.with_comments(&stage.comments);
        let name = &stage.name;
        if RESERVED_STAGE_NAMES.contains(&name.as_str()) {
            linter.run_with(
                Some(&config),
                &RESERVED_STAGE_NAME,
                &stage.location,
                format!("Stage name should not use the same name as reserved stage {name:?}"),
            );
        }
        if !seen.insert(name.as_str()) {
            linter.run_with(
                Some(&config),
                &DUPLICATE_STAGE_NAME,
                &stage.location,
                format!("Duplicate stage name {name:?}, stage names should be unique"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_options_parse_as_buildkit() {
        let config = LintConfig::parse("skip=StageNameCasing, FromAsCasing;error=true").unwrap();
        assert_eq!(
            config.skip,
            BTreeSet::from(["StageNameCasing".to_owned(), "FromAsCasing".to_owned()])
        );
        assert!(config.error && !config.skip_all);
        assert!(LintConfig::parse("skip=all").unwrap().skip_all);
        assert_eq!(LintConfig::parse("").unwrap(), LintConfig::default());
        assert_eq!(
            LintConfig::parse("skip").unwrap_err(),
            "invalid check option \"skip\""
        );
        assert_eq!(
            LintConfig::parse("bogus=1").unwrap_err(),
            "invalid check option \"bogus\""
        );
        assert!(LintConfig::parse("error=maybe").is_err());
    }

    #[test]
    fn secret_names_are_whole_words() {
        for secret in [
            "API_KEY",
            "password",
            "GITHUB_TOKEN",
            "secret_MESSAGE",
            "AUTH",
        ] {
            assert!(looks_secret(secret), "{secret}");
        }
        for plain in [
            "KEYBOARD",
            "PUBLIC_KEY",
            "TOKEN_FILE",
            "NODE_VERSION",
            "monkey",
        ] {
            assert!(!looks_secret(plain), "{plain}");
        }
    }

    #[test]
    fn ignored_sources_match_a_pattern_or_a_parent() {
        let excludes = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(ignored_by(&excludes(&["secret.txt"]), "secret.txt"));
        assert!(ignored_by(&excludes(&["build"]), "./build/out/a.o"));
        assert!(ignored_by(&excludes(&["**/*.log"]), "logs/x.log"));
        assert!(!ignored_by(&excludes(&["build"]), "src/build.rs"));
        // An exception makes the patterns too hard to judge without the files.
        assert!(!ignored_by(&excludes(&["build", "!build/keep"]), "build/x"));
        // The root, only when everything is left out.
        assert!(!ignored_by(&excludes(&["*.log"]), "."));
        assert!(ignored_by(&excludes(&["*"]), "."));
        assert!(!ignored_by(&[], "anything"));
    }

    #[test]
    fn references_follow_the_grammar() {
        for good in [
            "busybox",
            "127.0.0.1:5000/busybox:latest",
            "docker.io/library/alpine:3.20",
            "a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_valid_reference(good), "{good}");
        }
        for bad in ["", "busybox:", "Busybox", "a:b:c", ":tag", "busybox:tägged"] {
            assert!(!is_valid_reference(bad), "{bad}");
        }
    }

    #[test]
    fn excerpts_pad_the_range_as_buildkit() {
        let data = b"FROM a\nRUN b\nRUN c\nRUN d\nRUN e\nRUN f\n";
        assert_eq!(
            source_excerpt("Dockerfile", data, 3, 3),
            "Dockerfile:3\n--------------------\n   1 |     FROM a\n   2 |     RUN b\n   3 | >>> RUN c\n   4 |     RUN d\n   5 |     RUN e\n--------------------\n"
        );
        assert_eq!(
            source_excerpt("Dockerfile", data, 1, 2),
            "Dockerfile:1\n--------------------\n   1 | >>> FROM a\n   2 | >>> RUN b\n   3 |     RUN c\n--------------------\n"
        );
    }
}
