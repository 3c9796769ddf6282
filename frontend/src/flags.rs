//! Instruction flags (`--from=x`, `--link`, `--mount=...`) with BuildKit's rules
//! (`instructions/bflag.go`): `--` ends the flags, booleans take no value or `=true`/`=false`,
//! strings need `=value`, list flags may repeat, anything else is an error.

use std::collections::BTreeMap;

use crate::error::ErrorKind;

/// The kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagType {
    Bool,
    String,
    Strings,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FlagValue {
    pub(crate) value: Option<String>,
    pub(crate) values: Vec<String>,
    pub(crate) used: bool,
}

/// The flags an instruction takes, and after [`FlagSet::parse`] their values.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlagSet {
    defs: Vec<(&'static str, FlagType)>,
    values: BTreeMap<&'static str, FlagValue>,
}

impl FlagSet {
    pub(crate) fn new(defs: &[(&'static str, FlagType)]) -> Self {
        Self {
            defs: defs.to_vec(),
            values: BTreeMap::new(),
        }
    }

    /// Reads `args` (the node's flag words).
    pub(crate) fn parse(mut self, args: &[String]) -> Result<Self, ErrorKind> {
        for arg in args {
            if arg == "--" {
                break;
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(ErrorKind::NotAFlag { arg: arg.clone() });
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let flag = format!("--{name}");
            let Some(&(key, kind)) = self.defs.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = self.defs.iter().map(|(n, _)| *n).collect();
                return Err(ErrorKind::UnknownFlag {
                    flag,
                    suggest: suggest(name, &names, true),
                });
            };
            let entry = self.values.entry(key).or_default();
            if entry.used && kind != FlagType::Strings {
                return Err(ErrorKind::DuplicateFlag { flag });
            }
            entry.used = true;
            match kind {
                FlagType::Bool => {
                    let parsed = match value {
                        Some("") => return Err(ErrorKind::MissingFlagValue { flag }),
                        None => true,
                        Some(v) if v.eq_ignore_ascii_case("true") => true,
                        Some(v) if v.eq_ignore_ascii_case("false") => false,
                        Some(v) => {
                            return Err(ErrorKind::NotABoolean {
                                flag,
                                value: v.to_string(),
                            });
                        }
                    };
                    entry.value = Some(parsed.to_string());
                }
                FlagType::String => {
                    let Some(v) = value else {
                        return Err(ErrorKind::MissingFlagValue { flag });
                    };
                    entry.value = Some(v.to_string());
                }
                FlagType::Strings => {
                    let Some(v) = value else {
                        return Err(ErrorKind::MissingFlagValue { flag });
                    };
                    entry.values.push(v.to_string());
                }
            }
        }
        Ok(self)
    }

    pub(crate) fn string(&self, name: &str) -> String {
        self.values
            .get(name)
            .and_then(|v| v.value.clone())
            .unwrap_or_default()
    }

    pub(crate) fn string_or(&self, name: &str, default: &str) -> String {
        self.values
            .get(name)
            .and_then(|v| v.value.clone())
            .unwrap_or_else(|| default.to_string())
    }

    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .get(name)
            .map(|v| v.values.clone())
            .unwrap_or_default()
    }

    /// `Some(value)` when the boolean flag was given.
    pub(crate) fn bool_opt(&self, name: &str) -> Option<bool> {
        self.values
            .get(name)
            .filter(|v| v.used)
            .map(|v| v.value.as_deref() == Some("true"))
    }

    pub(crate) fn bool(&self, name: &str) -> bool {
        self.bool_opt(name).unwrap_or(false)
    }

    /// The names of the flags that were given, sorted.
    pub(crate) fn used(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(_, v)| v.used)
            .map(|(k, _)| (*k).to_string())
            .collect()
    }
}

/// The closest option to `value` (Levenshtein distance below 3), as BuildKit's `suggest` does;
/// `None` for an exact match or nothing close.
pub(crate) fn suggest(value: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let val = norm(value);
    let mut best: Option<String> = None;
    let mut min = 3;
    for opt in options {
        let opt = norm(opt);
        if opt == val {
            return None;
        }
        let d = levenshtein(&val, &opt);
        if d < min {
            min = d;
            best = Some(if case_sensitive {
                opt
            } else if value == value.to_lowercase() {
                opt.to_lowercase()
            } else if value == value.to_uppercase() {
                opt.to_uppercase()
            } else {
                opt
            });
        }
    }
    best
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_kinds() {
        let defs = [
            ("link", FlagType::Bool),
            ("from", FlagType::String),
            ("exclude", FlagType::Strings),
        ];
        let f = FlagSet::new(&defs)
            .parse(&args(&["--link", "--from=a", "--exclude=x", "--exclude=y"]))
            .unwrap();
        assert!(f.bool("link"));
        assert_eq!(f.string("from"), "a");
        assert_eq!(f.strings("exclude"), ["x", "y"]);
        assert_eq!(f.used(), ["exclude", "from", "link"]);
        let f = FlagSet::new(&defs).parse(&args(&["--link=FALSE"])).unwrap();
        assert_eq!(f.bool_opt("link"), Some(false));
        // `--` ends the flags.
        let f = FlagSet::new(&defs)
            .parse(&args(&["--", "--bogus"]))
            .unwrap();
        assert!(f.used().is_empty());
    }

    #[test]
    fn errors_use_buildkit_wording() {
        let defs = [("link", FlagType::Bool), ("from", FlagType::String)];
        let err = |a: &[&str]| FlagSet::new(&defs).parse(&args(a)).unwrap_err().to_string();
        assert_eq!(
            err(&["--form=x"]),
            "unknown flag: --form (did you mean from?)"
        );
        assert_eq!(err(&["--nope"]), "unknown flag: --nope");
        assert_eq!(
            err(&["--from=a", "--from=b"]),
            "duplicate flag specified: --from"
        );
        assert_eq!(err(&["--from"]), "missing a value on flag: --from");
        assert_eq!(err(&["--link="]), "missing a value on flag: --link");
        assert_eq!(
            err(&["--link=yes"]),
            "expecting boolean value for flag --link, not: yes"
        );
        assert_eq!(err(&["-x"]), "arg should start with -- : -x");
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("COPPY", &["copy", "run"], false).as_deref(),
            Some("COPY")
        );
        assert_eq!(suggest("copy", &["copy"], false), None);
        assert_eq!(suggest("zzzzzz", &["copy"], false), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
