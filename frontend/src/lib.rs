//! kiln-frontend: the Dockerfile and kiln.yaml frontends of kiln.
//!
//! It reads a Dockerfile (or a kiln.yaml file) and turns it into an LLB `Definition` plus an OCI
//! image config:
//!
//! - **the converter** ([`convert`]): one [`pb::Definition`](kiln_llb::pb::Definition) for the
//!   target stage (only the stages it needs) and its [`ImageConfig`] (Env, Cmd, Entrypoint,
//!   WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal, Healthcheck, OnBuild, Shell,
//!   history with BuildKit's `created_by` wording, the base image's `diff_ids`), following
//!   BuildKit's `dockerfile2llb` so that the ops are BuildKit's, byte for byte where no
//!   per-invocation value is involved. [`ConvertOptions`] carries the target, build arguments
//!   and the context's exclude patterns ([`parse_dockerignore`]). Base images are looked up
//!   through the [`ImageMetaResolver`] trait, which this crate owns and `cli` implements with
//!   the registry client and the content store: it returns the manifest digest (to pin
//!   `docker-image://...@sha256:`) and the image configuration; tests use the in-memory
//!   `testing::FakeResolver` instead (the `testing` feature). `ADD` of git URLs
//!   (`https://host/repo.git#ref:subdir`, `git@host:repo`, `git://`, with `?ref=`/`?tag=`/
//!   `?branch=`/`?checksum=`/`?keep-git-dir=` queries) becomes a git source with BuildKit's
//!   attributes; symbolic `--chmod` (`u+x,g=r`) becomes the copy's `modeStr`;
//!   `RUN --mount=type=ssh` becomes an SSH socket mount with `SSH_AUTH_SOCK` set, and
//!   `--mount=type=secret,env=NAME` an exec `secretenv`. [`ImageConfig::to_json`] gives
//!   the configuration the exporters write. Errors are [`ConvertError`]s, with the
//!   `Dockerfile:LINE` location where there is one;
//!
//! - **the parser** ([`parse`], [`Parser`]): parser directives (`# syntax=`, `# escape=`,
//!   `# check=`), line continuations with the escape character, comments and empty lines inside
//!   continuations, case-insensitive keywords, JSON (exec) versus shell form, `--flags`,
//!   heredocs (`RUN <<EOF`, `COPY <<EOF /dst`, several per line, `<<-` tab stripping, quoted
//!   delimiters that disable expansion). It produces a [`Dockerfile`] of [`Node`]s whose
//!   [`Dockerfile::dump`] is byte-compatible with BuildKit's parser test files;
//! - **the instruction parser** ([`parse_stages`], [`parse_instruction`]): typed [`Command`]s
//!   ([`CommandKind`]: `RUN` with `--mount`/`--network`/`--security`, `COPY`/`ADD` with all
//!   their flags, `ENV`/`ARG`/`LABEL`, `HEALTHCHECK`, ...) grouped into [`Stage`]s, with the
//!   `ARG`s before the first `FROM` as meta arguments, and [`parse_mount`] for `RUN --mount`;
//! - **shell-word expansion** ([`Lexer`]): `$var`, `${var}`, `${var:-word}` and the other
//!   modifiers, quotes and escapes exactly as BuildKit's shell lexer, splitting into words or
//!   not, and reporting which variables were used ([`Expansion`]). Values come from the
//!   [`Env`] trait (implemented for maps, `(key, value)` lists and [`EnvList`]), which the
//!   converter implements over build arguments and stage environments.
//!
//! - **the build checks** ([`RULES`], [`LintConfig`], [`LintWarning`]): BuildKit's Dockerfile
//!   linter rules with its names, messages and links, run by the converter as it parses and
//!   dispatches; [`Converted::warnings`] holds what they found. The `# check=skip=...;error=true`
//!   directive, or the [`CHECK_BUILD_ARG`] build argument over it, chooses the rules; with
//!   `error=true` a conversion with warnings fails ([`ConvertError::Lint`]).
//!   [`ConvertOptions::all_stages`] checks every stage, not only those the target needs (what
//!   `--check` asks for). [`LintWarning::render`] gives buildx's `--check` text;
//!
//! - **the kiln.yaml frontend** ([`convert_yaml`], [`is_kiln_yaml`]): `apiVersion: kiln/v1` files
//!   (named stages of `run`/`copy`/`add` steps and an `image` configuration, see `docs/yaml.md`),
//!   loaded with spans, validated against [`YAML_SCHEMA`], lowered to the same [`Stages`] the
//!   instruction parser makes and converted by the same converter; its [`YamlError`]s read
//!   `kiln.yaml:LINE:COL: message`.
//!
//! No maintained Rust crate parses the current Dockerfile syntax (`dockerfile-parser` is
//! deprecated and has no heredocs, no `RUN` flags and no directives), so the parser is our own,
//! written after reading BuildKit's `frontend/dockerfile/parser`, `shell/lex.go` and
//! `instructions` (commit 73ed6825) as the model.
//!
//! Where new code goes: a new Dockerfile instruction or flag is parsed in `parser/` and
//! `instructions/` (typed, with its source position), and converted by one `dispatch_*` method in
//! `convert/dispatch.rs` with its LLB in `convert/run.rs`, `convert/copy.rs` or
//! `convert/config.rs` (image config instructions). The frontend only emits LLB and an image
//! config; it never runs or stores anything.
//!
//! Errors are [`Error`]s carrying a [`Location`] (file, lines, column where known, source lines)
//! and render as BuildKit prints them, with BuildKit's message wording:
//!
//! ```text
//! Dockerfile:2
//! --------------------
//!    2 | >>> frobnicate x
//! --------------------
//! dockerfile parse error on line 2: unknown instruction: frobnicate
//! ```
//!
//! Place in the data path: `cli` reads the Dockerfile and `.dockerignore` and calls
//! [`convert`], which parses ([`parse`], [`parse_stages`]), expands arguments with [`Lexer`]
//! against build arguments and stage environments, and emits LLB for the solver and the image
//! configuration for the exporters.
//!
//! # Example
//!
//! ```
//! use kiln_frontend::{CommandKind, EnvList, Lexer, parse, parse_stages};
//!
//! let dockerfile = parse(b"ARG BASE=busybox\nFROM $BASE AS build\nRUN --network=none echo hi\n")?;
//! assert_eq!(dockerfile.dump(), "(arg \"BASE=busybox\")\n(from \"$BASE\" \"AS\" \"build\")\n(run [\"--network=none\"] \"echo hi\")");
//!
//! let stages = parse_stages(&dockerfile)?;
//! assert_eq!(stages.meta_args[0].key, "BASE");
//! assert_eq!(stages.stages[0].name, "build");
//! let CommandKind::Run(run) = &stages.stages[0].commands[0].kind else { panic!() };
//! assert_eq!(run.cmd.cmd_line, ["echo hi"]);
//!
//! let env = EnvList::from_entries(["BASE=busybox"]);
//! let base = Lexer::default().process_word(&stages.stages[0].base_name, &env)?;
//! assert_eq!(base, "busybox");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Converting, with a resolver that knows one image:
//!
//! ```
//! use kiln_frontend::{ConvertOptions, ImageMetaResolver, ResolvedImage, convert};
//! use kiln_llb::pb;
//!
//! struct OneImage;
//! impl ImageMetaResolver for OneImage {
//!     fn resolve(
//!         &self,
//!         reference: &str,
//!         _platform: &pb::Platform,
//!     ) -> Result<ResolvedImage, Box<dyn std::error::Error + Send + Sync>> {
//!         assert_eq!(reference, "docker.io/library/busybox:latest");
//!         Ok(ResolvedImage {
//!             digest: format!("sha256:{}", "0".repeat(64)),
//!             config: br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#.to_vec(),
//!         })
//!     }
//! }
//!
//! let converted = convert(
//!     b"FROM busybox\nENV GREETING=hi\nRUN echo $GREETING > /out\nCMD [\"cat\", \"/out\"]\n",
//!     &ConvertOptions::default(),
//!     &OneImage,
//! )?;
//! assert_eq!(converted.definition.def.len(), 3); // image, exec, terminal op
//! assert_eq!(converted.config.config.env, ["PATH=/bin", "GREETING=hi"]);
//! assert_eq!(converted.config.config.cmd, Some(vec!["cat".to_owned(), "/out".to_owned()]));
//! assert_eq!(
//!     converted.config.history.last().unwrap().created_by.as_deref(),
//!     Some("CMD [\"cat\" \"/out\"]")
//! );
//! # Ok::<(), kiln_frontend::ConvertError>(())
//! ```

mod convert;
mod dockerignore;
mod error;
mod flags;
mod instructions;
mod lint;
mod mount;
mod parser;
mod quote;
mod shell;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod yaml;

pub use convert::{
    CHECK_BUILD_ARG, ContainerConfig, ConvertError, ConvertErrorKind, ConvertOptions, Converted,
    DEFAULT_PATH, Empty, Healthcheck, History, ImageConfig, ImageMetaResolver, NamedContext,
    ResolvedImage, RootFs, convert,
};
pub use dockerignore::{parse_dockerignore, select_dockerignore};
pub use error::{
    DeviceError, Error, ErrorKind, ExpandError, ExpandErrorKind, Location, MountError, UnknownKey,
};
pub use instructions::{
    AddCommand, ArgDefinition, Command, CommandKind, CopyCommand, HealthConfig, INSTRUCTIONS,
    Instruction, KeyValuePair, NetworkMode, RunCommand, SecurityMode, ShellDependentCmdLine,
    ShellInlineFile, SourceContent, SourcesAndDest, Stage, Stages, parse_instruction, parse_stages,
};
pub use lint::{LintConfig, LintWarning, RULES, Rule, source_excerpt};
pub use mount::{CacheSharing, Device, Mount, MountExpander, MountType, parse_device, parse_mount};
pub use parser::{
    DEFAULT_ESCAPE, Directive, Dockerfile, Heredoc, MAX_LINE_BYTES, Node, Parser, Warning,
    chomp_heredoc_content, detect_syntax, parse,
};
pub use shell::{EmptyEnv, Env, EnvList, Expansion, Lexer};
pub use yaml::{
    FromDockerfileError, SCHEMA as YAML_SCHEMA, YamlError, YamlErrorKind, convert_yaml,
    dockerfile_to_yaml, is_kiln_yaml,
};
