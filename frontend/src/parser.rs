//! The Dockerfile parser: bytes in, a list of instruction [`Node`]s out.
//!
//! Written for kiln after reading BuildKit's `frontend/dockerfile/parser` (commit 73ed6825) as
//! the model; its AST dump is byte-compatible with BuildKit's parser test files.
//!
//! # Overview
//!
//! 1. The input is split into physical lines (endings kept); invalid UTF-8 is replaced with
//!    U+FFFD (or, with [`Parser::strict_utf8`], refused outside comments); a UTF-8 byte-order
//!    mark on the first line is dropped.
//! 2. Parser directives (`# syntax=`, `# escape=`, `# check=`) are recognised only in the
//!    leading comment block; `escape` switches the escape character to `` ` ``.
//! 3. Comment lines and blank lines are skipped; a line ending in the escape character continues
//!    on the next line (comments and empty lines inside a continuation are dropped, the latter
//!    with a [`Warning`]).
//! 4. Each logical line is split into keyword, `--flags` and the rest, and the rest is parsed by
//!    the instruction's rule: JSON array or shell string (`RUN`, `CMD`, ...), whitespace list
//!    (`FROM`, `EXPOSE`, ...), key/value pairs (`ENV`, `LABEL`), names (`ARG`), a nested
//!    instruction (`ONBUILD`).
//! 5. `RUN`, `COPY` and `ADD` (also as `ONBUILD` triggers) in shell form may carry heredocs
//!    (`<<EOF`, `<<-EOF`, `<<"EOF"`, several per line): their bodies are read from the following
//!    lines up to the delimiter.

use crate::error::{Error, ErrorKind, Location};
use crate::quote::{go_quote, go_quote_list};

mod line;

pub use line::chomp_heredoc_content;
pub(crate) use line::parse_heredoc;
use line::*;

/// The default escape character.
pub const DEFAULT_ESCAPE: char = '\\';

/// The longest physical line accepted, in bytes without the line ending (BuildKit's scanner
/// limit, kept so that the same files are accepted and rejected).
pub const MAX_LINE_BYTES: usize = 64 * 1024 - 1;

/// A parsed Dockerfile: its instructions plus what the parser learned on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The file name used in error messages.
    pub file: String,
    /// The instructions in order.
    pub nodes: Vec<Node>,
    /// The escape character in effect (`\` unless `# escape=` changed it).
    pub escape: char,
    /// The parser directives found at the top of the file.
    pub directives: Vec<Directive>,
    /// Things that are accepted but deserve a note.
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The AST dump in the format of BuildKit's parser test files (one `(...)` per line, no
    /// trailing newline).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push('(');
            out.push_str(&node.dump());
            out.push_str(")\n");
        }
        out.trim().to_string()
    }

    /// The value of a parser directive (`syntax`, `escape`, `check`), if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// One instruction as parsed, before its arguments are interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword as written (`RUN`, `run`, ...).
    pub keyword: String,
    /// The `--flag[=value]` words before the arguments, quotes and escapes removed.
    pub flags: Vec<String>,
    /// The arguments, shaped by the instruction's rule (see the module docs).
    pub args: Vec<String>,
    /// `ONBUILD`'s trigger instruction.
    pub trigger: Option<Box<Node>>,
    /// Whether the arguments were written in JSON (exec) form.
    pub json: bool,
    /// Heredoc bodies attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line after continuations were joined (the keyword included).
    pub original: String,
    /// First physical line, 1-based.
    pub start_line: usize,
    /// Last physical line (heredoc bodies included), 1-based.
    pub end_line: usize,
    /// The comment lines right before the instruction (`#` and surrounding space removed).
    pub comments: Vec<String>,
    /// The physical source lines `start_line..=end_line`, without line endings.
    pub source: Vec<String>,
}

impl Node {
    /// The keyword lower-cased, as used for dispatch.
    pub fn name(&self) -> String {
        self.keyword.to_lowercase()
    }

    /// The node in BuildKit's dump format, without the surrounding parentheses.
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            out.push(' ');
            out.push_str(&go_quote_list(&self.flags));
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        if let Some(trigger) = &self.trigger {
            out.push_str(" (");
            out.push_str(&trigger.dump());
            out.push(')');
        }
        out.trim().to_string()
    }

    /// A [`Location`] covering this node, for errors about it.
    pub fn location(&self, file: &str) -> Location {
        Location {
            file: file.to_string(),
            start_line: self.start_line,
            end_line: self.end_line,
            column: None,
            source: self.source.clone(),
        }
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.trigger, self.name().as_str()) {
            (Some(trigger), "onbuild") => trigger,
            _ => self,
        };
        matches!(node.name().as_str(), "run" | "copy" | "add") && !node.json
    }
}

/// A heredoc (`<<EOF` ... `EOF`) attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u64,
    /// Whether variables in the body are expanded (false when the delimiter was quoted).
    pub expand: bool,
    /// Whether leading tabs are stripped (`<<-EOF`).
    pub chomp: bool,
    /// The body, line endings included, delimiter line excluded.
    pub content: String,
}

/// A parser directive from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// `syntax`, `escape` or `check` (lower-cased).
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// The line, 1-based.
    pub line: usize,
}

/// Something accepted that deserves a note to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// One-line description.
    pub short: String,
    /// More detail, if any.
    pub detail: Option<String>,
    /// A documentation link, if any.
    pub url: Option<String>,
    /// The line, 1-based.
    pub line: usize,
}

/// Dockerfile parser configuration.
#[derive(Debug, Clone)]
pub struct Parser {
    file: String,
    strict_utf8: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser whose errors name the file `Dockerfile`.
    pub fn new() -> Self {
        Self {
            file: "Dockerfile".to_string(),
            strict_utf8: false,
        }
    }

    /// Sets the file name used in errors.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file = name.into();
        self
    }

    /// Refuses instruction and heredoc lines that are not UTF-8 ([`ErrorKind::NotUtf8`], with
    /// the line and column) instead of replacing their bytes with U+FFFD: what becomes LLB,
    /// which carries it as text, must not be altered. Comments may still have any bytes.
    pub fn strict_utf8(mut self) -> Self {
        self.strict_utf8 = true;
        self
    }

    /// Parses a Dockerfile.
    pub fn parse(&self, input: &[u8]) -> Result<Dockerfile, Error> {
        let mut run = Run::new(&self.file, input)?;
        if !self.strict_utf8 {
            run.not_utf8.clear();
        }
        run.parse()
    }
}

/// Parses a Dockerfile named `Dockerfile`.
pub fn parse(input: &[u8]) -> Result<Dockerfile, Error> {
    Parser::new().parse(input)
}

/// The parser directive scanner: only the leading `#` lines count.
#[derive(Default)]
struct DirectiveScanner {
    line: usize,
    done: bool,
    found: Vec<Directive>,
}

const DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

impl DirectiveScanner {
    /// Looks at one line (newline trimmed); returns the directive if the line is one.
    fn scan(&mut self, line: &str) -> Result<Option<Directive>, ErrorKind> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = line
            .strip_prefix('#')
            .and_then(|rest| split_directive(rest.trim_start()))
        else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_lowercase();
        if !DIRECTIVES.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(ErrorKind::DuplicateDirective { name });
        }
        let directive = Directive {
            name,
            value,
            line: self.line,
        };
        self.found.push(directive.clone());
        Ok(Some(directive))
    }
}

/// The `syntax` directive of a build file, found as BuildKit's `DetectSyntax` finds it: in
/// the leading `# name=value` lines (after a byte order mark and a `#!` line), else in
/// leading `// name=value` lines, else as the `"syntax"` key of a JSON object. The value is
/// the frontend image and, after a space, its arguments; the line is 1-based (1 for JSON).
///
/// ```
/// let found = kiln_frontend::detect_syntax(b"# escape=`\n# syntax=docker/dockerfile:1\nFROM x\n");
/// assert_eq!(found.map(|d| (d.value, d.line)), Some(("docker/dockerfile:1".into(), 2)));
/// assert!(kiln_frontend::detect_syntax(b"FROM x\n# syntax=late\n").is_none());
/// ```
pub fn detect_syntax(input: &[u8]) -> Option<Directive> {
    let text = String::from_utf8_lossy(input);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (body, skipped) = match text.strip_prefix("#!") {
        Some(rest) => (rest.split_once('\n').map_or("", |(_, after)| after), 1),
        None => (text, 0),
    };
    for comment in ["#", "//"] {
        for (index, line) in body.lines().enumerate() {
            let Some((name, value)) = line
                .strip_prefix(comment)
                .and_then(|rest| split_directive(rest.trim_start()))
            else {
                break;
            };
            let name = name.to_lowercase();
            if !DIRECTIVES.contains(&name.as_str()) {
                break;
            }
            if name == "syntax" {
                return Some(Directive {
                    name,
                    value,
                    line: skipped + index + 1,
                });
            }
        }
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(body).ok()?;
    Some(Directive {
        name: "syntax".to_owned(),
        value: object.get("syntax")?.as_str()?.trim().to_owned(),
        line: 1,
    })
    .filter(|d| !d.value.is_empty())
}

/// Matches `name \s* = \s* value` (name `[A-Za-z][A-Za-z0-9]*`, value non-empty, trailing space
/// trimmed) the way BuildKit's directive regex does.
fn split_directive(s: &str) -> Option<(String, String)> {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let first = s.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let name_end = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let (name, rest) = s.split_at(name_end);
    let rest = rest.trim_start_matches(is_space).strip_prefix('=')?;
    let after_eq = rest.trim_start_matches(is_space);
    let value = after_eq.trim_end_matches(is_space);
    if !value.is_empty() {
        return Some((name.to_string(), value.to_string()));
    }
    // The value must have at least one character: a regex engine backtracks into the spaces.
    let last_space = rest.chars().last()?;
    Some((name.to_string(), last_space.to_string()))
}

/// One parse of one input.
struct Run<'a> {
    file: &'a str,
    /// Physical lines with their line endings (bytes that are not UTF-8 shown as U+FFFD).
    raw: Vec<String>,
    /// For each physical line that is not UTF-8, the column of its first such byte: with
    /// [`Parser::strict_utf8`], an error unless the line is a comment (empty otherwise).
    not_utf8: Vec<Option<usize>>,
    escape: char,
    directives: DirectiveScanner,
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Splits `line` at a trailing escape character (followed only by spaces and tabs) that is not
/// itself escaped; returns the line without it and whether the logical line ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

impl<'a> Run<'a> {
    fn new(file: &'a str, input: &[u8]) -> Result<Self, Error> {
        let mut raw = Vec::new();
        let mut not_utf8 = Vec::new();
        let mut rest = input;
        if let Some(stripped) = rest.strip_prefix(b"\xEF\xBB\xBF") {
            rest = stripped;
        }
        let mut line_no = 0;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            let (line, tail) = rest.split_at(end);
            line_no += 1;
            let content_len = line.len() - usize::from(line.ends_with(b"\n"));
            if content_len > MAX_LINE_BYTES {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                return Err(Error::Syntax {
                    location: Box::new(Location {
                        file: file.to_string(),
                        start_line: line_no,
                        end_line: line_no,
                        column: Some(MAX_LINE_BYTES + 1),
                        source: vec![shown],
                    }),
                    kind: ErrorKind::LineTooLong {
                        max: MAX_LINE_BYTES,
                    },
                });
            }
            not_utf8.push(std::str::from_utf8(line).err().map(|e| {
                let valid = &line[..e.valid_up_to()];
                std::str::from_utf8(valid).map_or(0, |v| v.chars().count()) + 1
            }));
            raw.push(String::from_utf8_lossy(line).into_owned());
            rest = tail;
        }
        Ok(Self {
            file,
            raw,
            not_utf8,
            escape: DEFAULT_ESCAPE,
            directives: DirectiveScanner::default(),
        })
    }

    fn location(&self, start: usize, end: usize, column: Option<usize>) -> Location {
        let end = end.max(start);
        let source = (start..=end)
            .filter_map(|n| n.checked_sub(1).and_then(|i| self.raw.get(i)))
            .map(|l| trim_newline(l).to_string())
            .collect();
        Location {
            file: self.file.to_string(),
            start_line: start,
            end_line: end,
            column,
            source,
        }
    }

    fn syntax_error(&self, kind: ErrorKind, start: usize, end: usize) -> Error {
        Error::Syntax {
            location: Box::new(self.location(start, end, None)),
            kind,
        }
    }

    /// Refuses the physical line `index` if it is not UTF-8 (it is not a comment).
    fn check_utf8(&self, index: usize) -> Result<(), Error> {
        match self.not_utf8.get(index).copied().flatten() {
            None => Ok(()),
            Some(column) => Err(Error::Syntax {
                location: Box::new(self.location(index + 1, index + 1, Some(column))),
                kind: ErrorKind::NotUtf8,
            }),
        }
    }

    /// Newline-trims a physical line, feeds it to the directive scanner, and blanks comments.
    /// Returns the processed text and whether the line was a directive.
    fn process_line(&mut self, index: usize, strip_left: bool) -> Result<(String, bool), Error> {
        let mut text = trim_newline(&self.raw[index]);
        if strip_left {
            text = text.trim_start();
        }
        let directive = match self.directives.scan(text) {
            Ok(d) => d,
            Err(kind) => return Err(self.syntax_error(kind, index + 1, index + 1)),
        };
        let is_directive = directive.is_some();
        if let Some(d) = directive.filter(|d| d.name == "escape") {
            match d.value.as_str() {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => {
                    let kind = ErrorKind::InvalidEscapeToken { token: d.value };
                    return Err(self.syntax_error(kind, index + 1, index + 1));
                }
            }
        }
        if is_comment(text) {
            return Ok((String::new(), is_directive));
        }
        self.check_utf8(index)?;
        Ok((text.to_string(), is_directive))
    }

    fn parse(mut self) -> Result<Dockerfile, Error> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.raw.len() {
            let index = i;
            i += 1;
            if is_comment(&self.raw[index]) {
                // As BuildKit: the text after the first byte, trimmed.
                let comment = self.raw[index].get(1..).unwrap_or("").trim().to_string();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment);
                }
            }
            let (text, is_directive) = self.process_line(index, true)?;
            if is_directive {
                comments.pop();
            }
            let start_line = index + 1;
            let mut current_line = start_line;
            let (first, mut end_of_line) = trim_continuation(&text, self.escape);
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut line = first.to_string();
            let mut empty_continuation = false;
            while !end_of_line && i < self.raw.len() {
                let index = i;
                i += 1;
                let (text, _) = self.process_line(index, false)?;
                current_line = index + 1;
                if is_comment(&self.raw[index]) {
                    continue;
                }
                if text.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, eol) = trim_continuation(&text, self.escape);
                line.push_str(part);
                end_of_line = eol;
            }
            if empty_continuation {
                warnings.push(Warning {
                    short: format!("Empty continuation line found in: {line}"),
                    detail: Some(
                        "Empty continuation lines will become errors in a future release"
                            .to_string(),
                    ),
                    url: Some(
                        "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"
                            .to_string(),
                    ),
                    line: current_line,
                });
            }

            let mut node = match node_from_line(&line, self.escape) {
                Ok(node) => node,
                Err(kind) => return Err(self.syntax_error(kind, start_line, current_line)),
            };
            node.comments = std::mem::take(&mut comments);

            if node.can_contain_heredoc() && line.contains("<<") {
                let heredocs = match heredocs_from_line(&line) {
                    Ok(h) => h,
                    Err(kind) => return Err(self.syntax_error(kind, start_line, current_line)),
                };
                for mut heredoc in heredocs {
                    let mut terminated = false;
                    while i < self.raw.len() {
                        let raw = &self.raw[i];
                        i += 1;
                        current_line += 1;
                        let mut candidate = trim_newline(raw);
                        if heredoc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == heredoc.name {
                            terminated = true;
                            break;
                        }
                        self.check_utf8(i - 1)?;
                        heredoc.content.push_str(raw);
                    }
                    if !terminated {
                        let kind = ErrorKind::UnterminatedHeredoc;
                        return Err(self.syntax_error(kind, start_line, current_line));
                    }
                    node.heredocs.push(heredoc);
                }
            }
            node.start_line = start_line;
            node.end_line = current_line;
            node.source = self.location(start_line, current_line, None).source;
            nodes.push(node);
        }

        if nodes.is_empty() {
            // The last line (line 1 for an empty file).
            let last = self.raw.len().max(1);
            return Err(self.syntax_error(ErrorKind::NoInstructions, last, last));
        }

        let directives = std::mem::take(&mut self.directives.found);
        if let Some(d) = directives.iter().find(|d| d.name == "syntax") {
            tracing::debug!(
                line = d.line,
                "syntax directive {:?} noted; the built-in Dockerfile frontend is used",
                d.value
            );
        }
        Ok(Dockerfile {
            file: self.file.to_string(),
            nodes,
            escape: self.escape,
            directives,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests;
