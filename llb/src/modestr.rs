//! Symbolic permissions (`COPY --chmod=u+x,g=r`), with chmod(1)'s grammar and meaning and no
//! umask, as BuildKit applies `FileActionCopy.modeStr`: relative to each copied file's own
//! mode. The frontend checks a Dockerfile's `--chmod` with [`ModeSet::parse`]; the solver
//! applies it with [`ModeSet::apply`].
//!
//! A mode string is clauses separated by `,`; each clause is `[ugoa]*` followed by one or more
//! actions `[-+=]` with permissions `[rwxXst]*` or a class to copy from (`u`, `g`, `o`). No
//! `who` means all classes. `X` adds execute permission only to directories and files that
//! already have some execute bit. A string starting with a digit is an octal mode.

/// One parsed action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Sets `bits`.
    Add(u32),
    /// Clears `bits`.
    Remove(u32),
    /// Sets `bits` on directories and on files with an execute bit in the original mode.
    AddIfExecutable(u32),
    /// Copies the permissions of class `from` (shift 6, 3 or 0) onto the classes in `to`
    /// (a mask of 0o700/0o070/0o007): `op` is `+`, `-` or `=`.
    Copy { from: u32, to: u32, op: u8 },
}

/// A parsed mode string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeSet {
    actions: Vec<Action>,
}

/// A mode string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid syntax")]
pub struct ModeSyntaxError;

const SETUID: u32 = 0o4000;
const SETGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
/// Every bit `=` clears when no class is named (sticky is kept, as chmod does).
const STANDARD: u32 = SETUID | SETGID | 0o777;

impl ModeSet {
    /// Parses `spec`.
    pub fn parse(spec: &str) -> Result<Self, ModeSyntaxError> {
        let bytes = spec.as_bytes();
        if bytes.first().is_some_and(u8::is_ascii_digit) {
            let mode = u32::from_str_radix(spec, 8).map_err(|_| ModeSyntaxError)?;
            if mode & !(STANDARD | STICKY) != 0 {
                return Err(ModeSyntaxError);
            }
            return Ok(Self {
                actions: vec![Action::Remove(STANDARD | STICKY), Action::Add(mode)],
            });
        }
        let mut actions = Vec::new();
        for clause in spec.split(',') {
            let mut rest = clause.as_bytes();
            let mut who = 0u32;
            while let Some((&c, tail)) = rest.split_first() {
                who |= match c {
                    b'a' => STANDARD,
                    b'u' => SETUID | 0o700,
                    b'g' => SETGID | 0o070,
                    b'o' => 0o007,
                    _ => break,
                };
                rest = tail;
            }
            if rest.is_empty() {
                return Err(ModeSyntaxError);
            }
            while let Some((&op, tail)) = rest.split_first() {
                if !matches!(op, b'+' | b'-' | b'=') {
                    return Err(ModeSyntaxError);
                }
                rest = tail;
                let mut perm = 0u32;
                let mut perm_x = 0u32;
                let mut sticky_who = 0u32;
                let mut copied = false;
                while let Some((&c, tail)) = rest.split_first() {
                    match c {
                        b'r' => perm |= 0o444,
                        b'w' => perm |= 0o222,
                        b'x' => perm |= 0o111,
                        b'X' if op == b'-' => perm |= 0o111,
                        b'X' => perm_x = 0o111,
                        // Set-id bits only for the user and group classes.
                        b's' if who == 0 || who & !0o007 != 0 => perm |= SETUID | SETGID,
                        b't' if who == 0 || who & !0o007 != 0 => {
                            sticky_who = STICKY;
                            perm |= STICKY;
                        }
                        b's' | b't' => {}
                        b'u' | b'g' | b'o' => {
                            let from = match c {
                                b'u' => 6,
                                b'g' => 3,
                                _ => 0,
                            };
                            let to = if who == 0 {
                                0o777
                            } else {
                                (who & 0o400) | (who & 0o040) | (who & 0o004)
                            };
                            let to = (if to & 0o400 != 0 { 0o700 } else { 0 })
                                | (if to & 0o040 != 0 { 0o070 } else { 0 })
                                | (if to & 0o004 != 0 { 0o007 } else { 0 });
                            push(&mut actions, op, who | sticky_who, perm, perm_x);
                            perm = 0;
                            perm_x = 0;
                            actions.push(Action::Copy { from, to, op });
                            copied = true;
                        }
                        _ => break,
                    }
                    rest = tail;
                }
                if perm != 0 || perm_x != 0 || (op == b'=' && !copied) {
                    push(&mut actions, op, who | sticky_who, perm, perm_x);
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        Ok(Self { actions })
    }

    /// The mode `mode` (permission, set-id and sticky bits) becomes; `is_dir` for `X`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let original = mode & 0o7777;
        let mut m = original;
        for action in &self.actions {
            match *action {
                Action::Add(bits) => m |= bits,
                Action::Remove(bits) => m &= !bits,
                Action::AddIfExecutable(bits) => {
                    if is_dir || original & 0o111 != 0 {
                        m |= bits;
                    }
                }
                Action::Copy { from, to, op } => {
                    let value = (m >> from) & 0o7;
                    let spread = (value << 6 | value << 3 | value) & to;
                    match op {
                        b'+' => m |= spread,
                        b'-' => m &= !spread,
                        _ => m = (m & !to) | spread,
                    }
                }
            }
        }
        m
    }
}

/// The actions of one `op` with permissions `perm` (and `X` as `perm_x`) for `who`.
fn push(actions: &mut Vec<Action>, op: u8, who: u32, perm: u32, perm_x: u32) {
    let mask = if who == 0 { !0 } else { who };
    if op == b'=' {
        actions.push(Action::Remove(if who == 0 { STANDARD } else { who }));
    }
    if perm != 0 {
        actions.push(match op {
            b'-' => Action::Remove(mask & perm),
            _ => Action::Add(mask & perm),
        });
    }
    if perm_x != 0 {
        actions.push(Action::AddIfExecutable(mask & perm_x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(spec: &str, mode: u32, is_dir: bool) -> u32 {
        ModeSet::parse(spec).unwrap().apply(mode, is_dir)
    }

    #[test]
    fn chmod_semantics() {
        // Values as GNU chmod gives them (umask aside).
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("+x", 0o644, false), 0o755);
        assert_eq!(apply("a-w", 0o666, false), 0o444);
        assert_eq!(apply("u+x,g=r", 0o664, false), 0o744);
        assert_eq!(apply("go=", 0o777, false), 0o700);
        assert_eq!(apply("o=u", 0o740, false), 0o747);
        assert_eq!(apply("g+u", 0o600, false), 0o660);
        assert_eq!(apply("u=rwx,g=rx,o=", 0o000, false), 0o750);
        assert_eq!(apply("=r", 0o4777, false), 0o444);
        assert_eq!(apply("a+X", 0o644, false), 0o644);
        assert_eq!(apply("a+X", 0o744, false), 0o755);
        assert_eq!(apply("a+X", 0o600, true), 0o711);
        assert_eq!(apply("u+s,+t", 0o755, false), 0o5755);
        assert_eq!(apply("o+s", 0o755, false), 0o755);
        assert_eq!(apply("u+r-w", 0o200, false), 0o400);
        assert_eq!(apply("755", 0o4600, false), 0o755);
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "", "u", "u+q", "x", "u+x,", ",u+x", "9", "0o755", "+x;", "ug",
        ] {
            assert_eq!(ModeSet::parse(bad), Err(ModeSyntaxError), "{bad:?}");
        }
        for good in [
            "u+x", "+x", "a-w", "u+x,g=r", "go=", "o=u", "u+r-w", "=rwX,+t",
        ] {
            assert!(ModeSet::parse(good).is_ok(), "{good:?}");
        }
    }
}
