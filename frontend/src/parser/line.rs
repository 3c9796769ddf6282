//! One logical line of a Dockerfile into a [`Node`]: the keyword, its `--flags` and the
//! arguments by the instruction's rule (step 4 of the parser's overview), and the heredoc
//! headers of a line (step 5).

use super::{Heredoc, Node};
use crate::error::ErrorKind;
use crate::shell::{EmptyEnv, Lexer};

/// The argument rule of an instruction.
#[derive(Clone, Copy)]
pub(super) enum Rule {
    /// Unknown instruction: arguments ignored.
    Ignore,
    /// JSON array, or the rest as one string.
    MaybeJson,
    /// JSON array, or whitespace-separated words.
    MaybeJsonList,
    /// Whitespace-separated words.
    Whitespace,
    /// The rest as one string.
    String,
    /// `ENV`/`LABEL` key/value pairs.
    NameValue(&'static str),
    /// `ARG` names with optional values.
    NameOrNameValue,
    /// `HEALTHCHECK` type + command.
    Health,
    /// `ONBUILD` trigger.
    SubCommand,
}

pub(super) fn rule_for(keyword: &str) -> Rule {
    match keyword.to_lowercase().as_str() {
        "add" | "copy" | "volume" => Rule::MaybeJsonList,
        "arg" => Rule::NameOrNameValue,
        "cmd" | "entrypoint" | "run" | "shell" => Rule::MaybeJson,
        "env" => Rule::NameValue("ENV"),
        "label" => Rule::NameValue("LABEL"),
        "expose" | "from" => Rule::Whitespace,
        "healthcheck" => Rule::Health,
        "maintainer" | "stopsignal" | "user" | "workdir" => Rule::String,
        "onbuild" => Rule::SubCommand,
        _ => Rule::Ignore,
    }
}

/// Whitespace as BuildKit's `[\t\v\f\r ]+` separator regex sees it.
pub(super) fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits at the first run of separator whitespace.
pub(super) fn split_once_separator(s: &str) -> Option<(&str, &str)> {
    let start = s.find(is_separator)?;
    let rest = &s[start..];
    let end = rest.find(|c| !is_separator(c)).unwrap_or(rest.len());
    Some((&s[..start], &rest[end..]))
}

/// How deep `ONBUILD ONBUILD ...` is parsed (BuildKit, in Go, has no limit but rejects any
/// chaining in the instruction parser); deeper chains are rejected here with the same message.
pub(super) const MAX_ONBUILD_DEPTH: usize = 16;

/// Builds the node for one logical line (without heredoc bodies and line numbers).
pub(super) fn node_from_line(line: &str, escape: char) -> Result<Node, ErrorKind> {
    node_from_line_at(line, escape, 0)
}

pub(super) fn node_from_line_at(line: &str, escape: char, depth: usize) -> Result<Node, ErrorKind> {
    let trimmed = line.trim();
    let (keyword, after) = split_once_separator(trimmed).unwrap_or((trimmed, ""));
    let (rest, flags) = extract_flags(after, escape);
    let rest = rest.trim();
    let mut node = Node {
        keyword: keyword.to_string(),
        flags,
        args: Vec::new(),
        trigger: None,
        json: false,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        comments: Vec::new(),
        source: Vec::new(),
    };
    match rule_for(keyword) {
        Rule::Ignore => node.args = vec![String::new()],
        Rule::MaybeJson => (node.args, node.json) = maybe_json(rest)?,
        Rule::MaybeJsonList => match parse_json(rest) {
            JsonForm::Array(args) => (node.args, node.json) = (args, true),
            JsonForm::NotStrings => return Err(ErrorKind::NotStringArray),
            JsonForm::NotJson => node.args = whitespace_words(rest),
        },
        Rule::Whitespace => node.args = whitespace_words(rest),
        Rule::String => {
            if !rest.is_empty() {
                node.args = vec![rest.to_string()];
            }
        }
        Rule::NameValue(instruction) => node.args = name_values(rest, instruction, escape)?,
        Rule::NameOrNameValue => node.args = parse_words(rest, escape),
        Rule::Health => {
            let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if sep > 0 {
                let (kind, cmd) = rest.split_at(sep);
                let (args, json) = maybe_json(cmd.trim_start())?;
                node.args = std::iter::once(kind.to_string()).chain(args).collect();
                node.json = json;
            }
        }
        Rule::SubCommand => {
            if !rest.is_empty() {
                if depth >= MAX_ONBUILD_DEPTH {
                    return Err(ErrorKind::OnbuildChaining);
                }
                node.trigger = Some(Box::new(node_from_line_at(rest, escape, depth + 1)?));
            }
        }
    }
    Ok(node)
}

pub(super) fn whitespace_words(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_separator)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) enum JsonForm {
    Array(Vec<String>),
    NotStrings,
    NotJson,
}

pub(super) fn parse_json(rest: &str) -> JsonForm {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonForm::NotJson;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return JsonForm::NotStrings,
                }
            }
            JsonForm::Array(out)
        }
        Err(_) => JsonForm::NotJson,
    }
}

pub(super) fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), ErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        JsonForm::Array(args) => Ok((args, true)),
        JsonForm::NotStrings => Err(ErrorKind::NotStringArray),
        JsonForm::NotJson => Ok((vec![rest.to_string()], false)),
    }
}

/// Where a word scanner of a line ([`extract_flags`], [`parse_words`]) is.
#[derive(PartialEq)]
enum Phase {
    /// Between words.
    Spaces,
    /// In a word, outside quotes.
    Word,
    /// In a word, inside this quote.
    Quote(char),
}

/// Separates leading `--flag` words (quotes and escapes removed) from the rest of the line.
/// A `--` word ends the flags and is dropped.
pub(super) fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut it = line.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    continue;
                }
                if !line[pos..].starts_with("--") {
                    return (&line[pos..], words);
                }
                phase = Phase::Word;
                word.push(ch);
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (&line[pos..], words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                } else if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                } else if ch == escape {
                    if let Some((_, next)) = it.next() {
                        word.push(next);
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                } else if ch == escape {
                    match it.next() {
                        Some((_, next)) => word.push(next),
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    ("", words)
}

/// Splits on whitespace keeping quotes and escapes in the words (they are interpreted later).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut it = rest.chars().peekable();
    while let Some(ch) = it.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Spaces => unreachable!("handled above"),
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match it.next() {
                        // A trailing escape is dropped.
                        None => continue,
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                }
                if ch == escape && quote != '\'' {
                    match it.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// `ENV`/`LABEL` arguments as `key value sep` triples (`sep` is `=` or empty for the legacy
/// `KEY value` form).
pub(super) fn name_values(
    rest: &str,
    instruction: &str,
    escape: char,
) -> Result<Vec<String>, ErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some((key, value)) = split_once_separator(rest) else {
            return Err(ErrorKind::MissingValue {
                instruction: instruction.to_string(),
            });
        };
        return Ok(vec![key.to_string(), value.to_string(), String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ErrorKind::MissingEquals { word });
        };
        out.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// Finds the heredocs introduced on a logical line.
pub(super) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
    let lexer = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    // A line that does not lex (e.g. an open quote) has no heredocs, as in BuildKit.
    let words = lexer.process_words(line, &EmptyEnv).unwrap_or_default();
    let mut out = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// Parses one word as a heredoc introducer (`[n]<<[-]WORD`); `None` when it is not one.
pub(crate) fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, ErrorKind> {
    let digits_end = src.find(|c: char| !c.is_ascii_digit()).unwrap_or(src.len());
    let (digits, rest) = src.split_at(digits_end);
    let Some(rest) = rest.strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let file_descriptor = if digits.is_empty() {
        0
    } else {
        digits.parse().unwrap_or(u64::MAX)
    };
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let words = lexer.process_words(rest, &EmptyEnv)?;
    let [word] = words.as_slice() else {
        return Ok(None);
    };
    let raw_words = lexer.raw_quotes(true).process_words(rest, &EmptyEnv)?;
    let [raw_word] = raw_words.as_slice() else {
        return Ok(None);
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: word.clone(),
        file_descriptor,
        expand: quotes(word) == quotes(raw_word),
        chomp,
        content: String::new(),
    }))
}

/// Removes leading tabs from every line of a `<<-` heredoc body.
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}
