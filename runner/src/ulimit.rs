//! Process resource limits (`docker run --ulimit`, LLB's `Meta.ulimit`): names and parsing as
//! docker has them, applied with `setrlimit` in the container's process before it execs.

use std::str::FromStr;

use nix::sys::resource::Resource;

use crate::error::{Error, Result};

/// A resource limit of the container's process, as docker and BuildKit spell it: `name` is
/// one of `core`, `cpu`, `data`, `fsize`, `locks`, `memlock`, `msgqueue`, `nice`, `nofile`,
/// `nproc`, `rss`, `rtprio`, `rttime`, `sigpending`, `stack`; `-1` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// The resource.
    pub name: String,
    /// The soft limit, which the process may raise up to the hard one.
    pub soft: i64,
    /// The hard limit.
    pub hard: i64,
}

/// The names docker accepts and the resources they limit (docker leaves out `as`).
const RESOURCES: &[(&str, Resource)] = &[
    ("core", Resource::RLIMIT_CORE),
    ("cpu", Resource::RLIMIT_CPU),
    ("data", Resource::RLIMIT_DATA),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("locks", Resource::RLIMIT_LOCKS),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE),
    ("nice", Resource::RLIMIT_NICE),
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("rss", Resource::RLIMIT_RSS),
    ("rtprio", Resource::RLIMIT_RTPRIO),
    ("rttime", Resource::RLIMIT_RTTIME),
    ("sigpending", Resource::RLIMIT_SIGPENDING),
    ("stack", Resource::RLIMIT_STACK),
];

/// One limit ready for `setrlimit`, computed before the fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    pub(crate) resource: Resource,
    pub(crate) soft: libc::rlim_t,
    pub(crate) hard: libc::rlim_t,
}

fn limit(value: i64) -> libc::rlim_t {
    u64::try_from(value).unwrap_or(libc::RLIM_INFINITY)
}

impl Ulimit {
    /// The limit for `setrlimit`; an unknown name is docker's `invalid ulimit type` error,
    /// and so are the rules of [`Ulimit::from_str`] on the values.
    pub(crate) fn rlimit(&self) -> Result<Rlimit> {
        let resource = RESOURCES
            .iter()
            .find(|(name, _)| *name == self.name)
            .map(|(_, resource)| *resource)
            .ok_or_else(|| Error::UlimitType {
                name: self.name.clone(),
            })?;
        check_order(self.soft, self.hard)?;
        Ok(Rlimit {
            resource,
            soft: limit(self.soft),
            hard: limit(self.hard),
        })
    }
}

/// docker's rule: the soft limit is at most the hard one (unlimited is above every number).
fn check_order(soft: i64, hard: i64) -> Result<()> {
    for value in [soft, hard] {
        if value < -1 {
            return Err(Error::UlimitValue {
                value: value.to_string(),
            });
        }
    }
    if hard != -1 && (soft == -1 || soft > hard) {
        return Err(Error::UlimitOrder { soft, hard });
    }
    Ok(())
}

impl FromStr for Ulimit {
    type Err = Error;

    /// Parses `name=soft[:hard]` as `docker run --ulimit` (a missing hard limit is the soft
    /// one), with docker's errors: `invalid ulimit argument: ..`, `invalid ulimit type: ..`.
    fn from_str(text: &str) -> Result<Self> {
        let (name, values) = text.split_once('=').ok_or_else(|| Error::UlimitArgument {
            argument: text.to_owned(),
        })?;
        if !RESOURCES.iter().any(|(known, _)| *known == name) {
            return Err(Error::UlimitType {
                name: name.to_owned(),
            });
        }
        let number = |value: &str| {
            value.parse::<i64>().map_err(|_| Error::UlimitValue {
                value: value.to_owned(),
            })
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => {
                let soft = number(values)?;
                (soft, soft)
            }
        };
        check_order(soft, hard)?;
        Ok(Self {
            name: name.to_owned(),
            soft,
            hard,
        })
    }
}

impl std::fmt::Display for Ulimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}:{}", self.name, self.soft, self.hard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ulimit> {
        text.parse()
    }

    #[test]
    fn parses_as_docker() {
        assert_eq!(
            parse("nofile=1024:2048").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(parse("nproc=64").unwrap().to_string(), "nproc=64:64");
        assert_eq!(parse("core=-1").unwrap().to_string(), "core=-1:-1");
        assert_eq!(parse("stack=8192:-1").unwrap().to_string(), "stack=8192:-1");
        for (text, message) in [
            ("nofile", "invalid ulimit argument: nofile"),
            ("as=10", "invalid ulimit type: as"),
            ("open-files=10", "invalid ulimit type: open-files"),
            ("nofile=ten", "invalid ulimit value \"ten\": not a number"),
            ("nofile=1:2:3", "invalid ulimit value \"2:3\": not a number"),
            (
                "nofile=2048:1024",
                "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024",
            ),
            (
                "nofile=-1:1024",
                "ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: 1024",
            ),
            ("nofile=-2", "invalid ulimit value \"-2\": not a number"),
        ] {
            assert_eq!(parse(text).unwrap_err().to_string(), message, "{text}");
        }
    }

    #[test]
    fn every_docker_name_maps_to_its_resource() {
        let rlimit = parse("nofile=1024:2048").unwrap().rlimit().unwrap();
        assert_eq!(
            rlimit,
            Rlimit {
                resource: Resource::RLIMIT_NOFILE,
                soft: 1024,
                hard: 2048
            }
        );
        let unlimited = parse("memlock=-1").unwrap().rlimit().unwrap();
        assert_eq!(
            (unlimited.soft, unlimited.hard),
            (libc::RLIM_INFINITY, libc::RLIM_INFINITY)
        );
        assert_eq!(RESOURCES.len(), 15);
        for (name, _) in RESOURCES {
            parse(&format!("{name}=1")).unwrap().rlimit().unwrap();
        }
        // A name from an LLB Definition is checked as well.
        let unknown = Ulimit {
            name: "bogus".into(),
            soft: 1,
            hard: 1,
        };
        assert_eq!(
            unknown.rlimit().unwrap_err().to_string(),
            "invalid ulimit type: bogus"
        );
    }
}
