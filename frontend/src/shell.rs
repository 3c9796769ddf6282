//! Shell-word expansion, with the semantics of BuildKit's `frontend/dockerfile/shell/lex.go`
//! (read as the model at BuildKit commit 73ed6825; this is an independent implementation).
//!
//! # Overview
//!
//! A [`Lexer`] walks one word of Dockerfile text character by character:
//!
//! 1. quotes: `'...'` keeps everything literally, `"..."` expands `$` and honours the escape
//!    character only before `"`, `$` and the escape character itself;
//! 2. the escape character (`\`, or `` ` `` after `# escape=` + backtick) makes the next
//!    character literal; a trailing escape is dropped;
//! 3. `$name`, `${name}` and the modifiers `:-` `-` `:+` `+` `:?` `?` `#` `##` `%` `%%` `/` `//`
//!    are substituted from an [`Env`];
//! 4. [`Lexer::process_words`] splits the result on unquoted whitespace (after substitution, so a
//!    variable holding spaces yields several words), [`Lexer::process_word`] keeps one string.
//!
//! Every variable looked up is recorded in [`Expansion::matched`] or [`Expansion::unmatched`], so
//! callers can tell which build arguments a line used.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::ExpandError;

/// A source of variable values for expansion.
pub trait Env {
    /// The value of `name`, or `None` when the variable is unset.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<S: std::hash::BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl Env for [(String, String)] {
    /// The last pair with this name wins, as in a process environment built by appending.
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// An environment with no variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// An environment built from `KEY=VALUE` strings (a `KEY` without `=` has an empty value); the
/// last definition of a key wins.
#[derive(Debug, Clone, Default)]
pub struct EnvList {
    values: HashMap<String, String>,
}

impl EnvList {
    /// Builds the environment from `KEY=VALUE` entries.
    pub fn from_entries<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut values = HashMap::new();
        for entry in entries {
            let entry = entry.as_ref();
            let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
            values.insert(k.to_string(), v.to_string());
        }
        Self { values }
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// The result of one expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded text as one string (quotes removed, spaces kept).
    pub word: String,
    /// The expanded text split into words on unquoted whitespace.
    pub words: Vec<String>,
    /// Variables that were looked up and set.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and unset.
    pub unmatched: BTreeSet<String>,
}

/// Shell-word lexer and expander; configure it with the `with_*`/`raw_*` builder methods.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
    error_on_unset: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` ``) as the escape character.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
            error_on_unset: false,
        }
    }

    /// Keep quote characters in the output (they still group words).
    pub fn raw_quotes(mut self, yes: bool) -> Self {
        self.raw_quotes = yes;
        self
    }

    /// Keep escape characters in the output.
    pub fn raw_escapes(mut self, yes: bool) -> Self {
        self.raw_escapes = yes;
        self
    }

    /// Treat quote characters as ordinary characters.
    pub fn skip_process_quotes(mut self, yes: bool) -> Self {
        self.skip_process_quotes = yes;
        self
    }

    /// Leave references to unset variables as written (`$x`, `${x:-y}`) instead of expanding them.
    pub fn skip_unset_env(mut self, yes: bool) -> Self {
        self.skip_unset_env = yes;
        self
    }

    /// Make a reference to an unset variable that has no modifier to handle it (`$x`, `${x}`,
    /// `${x#p}`, `${x/a/b}`; not `${x:-y}`, `${x:+y}`, `${x?m}`) an error
    /// ([`ExpandErrorKind::Undefined`]) instead of the empty string. The kiln.yaml frontend
    /// expands its fields this way.
    pub fn error_on_unset(mut self, yes: bool) -> Self {
        self.error_on_unset = yes;
        self
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` as one string (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        Ok(self.process(word, env)?.word)
    }

    /// Expands `word` and splits it into words (BuildKit's `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        Ok(self.process(word, env)?.words)
    }

    /// Expands `word`, returning the single string, the split words and the variables used.
    pub fn process(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        let chars: Vec<char> = word.chars().collect();
        let mut state = State {
            lexer: self,
            chars: &chars,
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let raw = self.raw_escapes;
        match state.process_until(None, raw) {
            Ok((word, words)) => Ok(Expansion {
                word,
                words,
                matched: state.matched,
                unmatched: state.unmatched,
            }),
            Err(kind) => Err(ExpandError::Failed {
                input: word.to_string(),
                kind,
            }),
        }
    }
}

/// What went wrong inside an expansion (wrapped in [`ExpandError::Failed`] with the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandErrorKind {
    /// A `'` was never closed.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// A `"` was never closed.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// The stop character of a nested scan was never found.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    /// `${` without `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${name/pattern` without the second `/`.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${{`, `${:`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier that is not supported, e.g. `${x:=y}` or `${x:#y}`.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${x?message}` / `${x:?message}` with `x` unset (or empty).
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message given or the default one.
        message: String,
    },
    /// A variable that is not set, referenced without a default, under
    /// [`Lexer::error_on_unset`].
    #[error("undefined variable {name:?}")]
    Undefined {
        /// The variable.
        name: String,
    },
    /// `${...}` nested deeper than kiln accepts.
    #[error("substitutions nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A `#`/`%`/`/` pattern that is not valid.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
}

struct State<'a> {
    lexer: &'a Lexer,
    chars: &'a [char],
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    /// Nesting depth of `${...}` (each level recurses).
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// The deepest `${...}` nesting accepted. BuildKit (Go, growable stacks) has no limit; ours
/// keeps recursion within a thread stack. No real Dockerfile nests this deep.
const MAX_NESTING: usize = 200;

/// Accumulates split words: whitespace from substitutions separates words, quoted text does not.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_str(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

type Step<T> = Result<T, ExpandErrorKind>;

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Scans until `stop` (consumed) or the end of input; returns the text and its words.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.process_until_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let s = self.process_dollar()?;
                    result.push_str(&s);
                    words.add_str(&s);
                }
                '<' => {
                    let s = self.process_possible_heredoc();
                    result.push_str(&s);
                    words.add_raw_str(&s);
                }
                '\'' if quotes => {
                    let s = self.process_single_quote()?;
                    result.push_str(&s);
                    words.add_raw_str(&s);
                }
                '"' if quotes => {
                    let s = self.process_double_quote()?;
                    result.push_str(&s);
                    words.add_raw_str(&s);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(ExpandErrorKind::Unterminated(stop));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ExpandErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Step<String> {
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ExpandErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let s = self.process_dollar()?;
                    out.push_str(&s);
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            // A trailing escape is dropped; the loop then reports the open quote.
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lexer.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// The value of a reference to an unset variable: empty, or an error under
    /// [`Lexer::error_on_unset`].
    fn unset(&self, name: String) -> Step<String> {
        if self.lexer.error_on_unset {
            return Err(ExpandErrorKind::Undefined { name });
        }
        Ok(String::new())
    }

    fn process_dollar(&mut self) -> Step<String> {
        if self.depth >= MAX_NESTING {
            return Err(ExpandErrorKind::TooDeep { max: MAX_NESTING });
        }
        self.depth += 1;
        let out = self.process_dollar_inner();
        self.depth -= 1;
        out
    }

    fn process_dollar_inner(&mut self) -> Step<String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => self.unset(name)?,
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ExpandErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandErrorKind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            // `${name` at the end of the input.
            return Err(ExpandErrorKind::MissingBrace);
        };
        let mut modifier = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => {
                return Ok(match self.lookup(&name) {
                    Some(v) => v,
                    None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                    None => self.unset(name)?,
                });
            }
            '/' => return self.process_replace(&name),
            ':' => {
                null_is_unset = true;
                match self.next() {
                    Some(c) => {
                        ch = c;
                        modifier.push(c);
                    }
                    None => return Err(ExpandErrorKind::MissingBrace),
                }
            }
            '+' | '-' | '?' | '#' | '%' => {}
            _ => return Err(ExpandErrorKind::UnsupportedModifier(modifier)),
        }
        let pattern_mode = ch == '#' || ch == '%';
        if null_is_unset && pattern_mode {
            return Err(ExpandErrorKind::UnsupportedModifier(modifier));
        }
        let word = match self.process_until(Some('}'), pattern_mode) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingBrace),
            Err(e) => return Err(e),
        };
        let value = self.lookup(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match ch {
            '-' => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset_or_null { String::new() } else { word }),
            '?' => match value {
                Some(v) if !(null_is_unset && v.is_empty()) => Ok(v),
                other => {
                    let message = if !word.is_empty() {
                        word
                    } else if other.is_none() {
                        "is not allowed to be unset".to_string()
                    } else {
                        "is not allowed to be empty".to_string()
                    };
                    Err(ExpandErrorKind::Required { name, message })
                }
            },
            '#' | '%' => {
                let (greedy, pattern) = match word.strip_prefix(ch) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                let value = match value {
                    Some(v) => v,
                    None => self.unset(name)?,
                };
                if ch == '%' {
                    trim_suffix(&pattern, &value, greedy)
                } else {
                    trim_prefix(&pattern, &value, greedy)
                }
            }
            _ => Err(ExpandErrorKind::UnsupportedModifier(modifier)),
        }
    }

    fn process_replace(&mut self, name: &str) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.process_until(Some('/'), true) {
            Ok((p, _)) => p,
            Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingSlash),
            Err(e) => return Err(e),
        };
        let replacement = match self.process_until(Some('}'), true) {
            Ok((r, _)) => r,
            Err(_) if self.peek().is_none() => return Err(ExpandErrorKind::MissingBrace),
            Err(e) => return Err(e),
        };
        let value = self.lookup(name);
        let Some(value) = value else {
            if self.lexer.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return self.unset(name.to_owned());
        };
        let re = shell_pattern_to_regex(&pattern, true, false).map_err(|reason| {
            ExpandErrorKind::InvalidPattern {
                pattern: pattern.clone(),
                reason,
            }
        })?;
        Ok(if all {
            // Like Go's ReplaceAllString: `$1`/`${name}` in the replacement are group references.
            re.replace_all(&value, replacement.as_str()).into_owned()
        } else {
            // Like BuildKit's first-match path: the replacement is spliced in literally.
            match re.find(&value) {
                Some(m) => format!("{}{replacement}{}", &value[..m.start()], &value[m.end()..]),
                None => value,
            }
        })
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.pos += 1; // '<'
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.pos += 1;
        let mut out = "<<".to_string();
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            out.push(c);
            self.pos += 1;
        }
        out
    }
}

/// POSIX special parameters (`$@`, `$*`, `$#`, `$?`, `$-`, `$$`, `$!`, `$0`): never set here.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Converts a shell wildcard pattern (`*`, `?`, `\` escapes; no bracket expressions) to a regex.
/// `greedy` picks `.*` over `.*?` for `*`; `anchored` matches only at the start.
pub(crate) fn shell_pattern_to_regex(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<regex::Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut it = pattern.chars().peekable();
    while let Some(tok) = it.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `\}` and `\/` are escapes for the `${...}` syntax, not part of the pattern.
                if matches!(it.peek(), Some('}' | '/')) {
                    continue;
                }
                match it.next() {
                    Some(c @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(c);
                    }
                    Some(c) => return Err(format!("invalid escape '\\{c}'")),
                    None => return Err("invalid escape '\\' at end of pattern".to_string()),
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(tok);
            }
            _ => out.push(tok),
        }
    }
    regex::Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let re = shell_pattern_to_regex(pattern, greedy, true).map_err(|reason| {
        ExpandErrorKind::InvalidPattern {
            pattern: pattern.to_string(),
            reason,
        }
    })?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern while keeping each `\x` escape pair in order (`a\*c` -> `c\*a`).
pub(crate) fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; chars.len()];
    let last = chars.len().saturating_sub(1);
    let mut i = 0;
    while i < chars.len() {
        let at = last - i;
        if chars[i] == '\\' && i != last {
            out[at - 1] = '\\';
            out[at] = chars[i + 1];
            i += 2;
        } else {
            out[at] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    // The shortest rightmost match is found as the shortest leftmost match of the reversed
    // pattern in the reversed value.
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

#[cfg(test)]
mod tests;
