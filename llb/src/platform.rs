//! Which manifest of an image index serves a wanted platform, as containerd's
//! `platforms.Only` matcher that BuildKit uses when it pulls.
//!
//! # Overview
//! 1. Both sides are normalized (`aarch64` = `arm64`, `arm64/v8` = `arm64`, `arm` = `arm/v7`,
//!    `x86_64` = `amd64`, `amd64/v1` = `amd64`).
//! 2. The wanted platform expands to an ordered list of platforms that can run in its place:
//!    itself, then older variants (`arm/v7` then `arm/v6`, `arm/v5`; `amd64/v3` then `v2`,
//!    `amd64`, then `386`; `arm64/v8.2` then `v8.1`, `v8`, then `arm/v8` and down).
//! 3. The index entry matching the earliest item of that list wins; among equals, the first in
//!    the index.
//!
//! [`Platform::parse`] reads the `os/arch[/variant]` text of `--platform` and `FROM --platform`
//! (an `os` alone, or an `arch` alone, as containerd's `platforms.Parse`); a new way of naming
//! platforms goes there, a new architecture's aliases into [`Platform::new`].
//!
//! ```
//! use kiln_llb::Platform;
//! let p = Platform::parse("linux/aarch64").unwrap();
//! assert_eq!(p.to_string(), "linux/arm64");
//! assert_eq!(Platform::parse("linux/arm/v7").unwrap().to_pb().variant, "v7");
//! assert!(Platform::parse("linux/arm64/v8/x").is_err());
//! ```

use crate::pb;

/// A platform text that is not `os[/arch[/variant]]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {text:?}: {reason}")]
pub struct PlatformError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A platform as an index entry or a request names it, normalized.
///
/// It reads from an OCI `platform` object or an image config (`os`, `architecture`,
/// `variant`; absent or `null` fields are empty), normalized.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "OciPlatform")]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`…
    pub architecture: String,
    /// `v7`, `v8.2`…, empty when none.
    pub variant: String,
}

impl Platform {
    /// The platform normalized as containerd's `platforms.Normalize`.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        let os = os.to_lowercase();
        let architecture = architecture.to_lowercase();
        let variant = variant.to_lowercase();
        let (architecture, variant) = match architecture.as_str() {
            "i386" => ("386".to_owned(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                let variant = if variant == "v1" {
                    String::new()
                } else {
                    variant
                };
                ("amd64".to_owned(), variant)
            }
            "aarch64" | "arm64" => {
                let variant = match variant.as_str() {
                    "8" | "v8" | "v8.0" => String::new(),
                    "9" | "9.0" | "v9.0" => "v9".to_owned(),
                    _ => variant,
                };
                ("arm64".to_owned(), variant)
            }
            "armhf" => ("arm".to_owned(), "v7".to_owned()),
            "armel" => ("arm".to_owned(), "v6".to_owned()),
            "arm" => {
                let variant = match variant.as_str() {
                    "" | "7" => "v7".to_owned(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_owned(), variant)
            }
            _ => (architecture, variant),
        };
        Self {
            os,
            architecture,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`, `os` (this host's architecture) or `arch` (on linux), and
    /// normalizes it.
    pub fn parse(text: &str) -> Result<Self, PlatformError> {
        let error = |reason| PlatformError {
            text: text.to_owned(),
            reason,
        };
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(error("an empty part"));
        }
        let valid = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !parts.iter().all(|p| valid(p)) {
            return Err(error(
                "a part holds a character other than letters, digits, _ - .",
            ));
        }
        let host = Self::host();
        Ok(match parts.as_slice() {
            [one] => {
                let lower = one.to_lowercase();
                if matches!(
                    lower.as_str(),
                    "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd"
                ) {
                    Self::new(&lower, &host.architecture, &host.variant)
                } else {
                    Self::new("linux", one, "")
                }
            }
            [os, architecture] => Self::new(os, architecture, ""),
            [os, architecture, variant] => Self::new(os, architecture, variant),
            _ => return Err(error("more than three parts (os/arch/variant)")),
        })
    }

    /// The platform of this host (`linux` and the OCI name of its architecture).
    pub fn host() -> Self {
        Self::new("linux", std::env::consts::ARCH, "")
    }

    /// The LLB form of this platform.
    pub fn to_pb(&self) -> pb::Platform {
        pb::Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }

    /// The normalized form of an LLB platform.
    pub fn from_pb(platform: &pb::Platform) -> Self {
        Self::new(&platform.os, &platform.architecture, &platform.variant)
    }

    /// Whether code built for `other` runs as this platform (the same one, or one this
    /// platform's [`candidates`](Self::candidates) list).
    pub fn runs(&self, other: &Platform) -> bool {
        self.candidates().contains(other)
    }

    /// The name of this platform in a folder name, as buildx's `platform-split`
    /// (`linux_arm64`, `linux_arm_v7`).
    pub fn folder_name(&self) -> String {
        self.to_string().replace('/', "_")
    }

    /// The platforms that can stand in for this one, best first (containerd's
    /// `platformVector`), each normalized.
    pub fn candidates(&self) -> Vec<Platform> {
        let with =
            |architecture: &str, variant: String| Platform::new(&self.os, architecture, &variant);
        let version = |prefix: &str| self.variant.strip_prefix(prefix)?.parse::<u32>().ok();
        let mut vector = vec![self.clone()];
        match self.architecture.as_str() {
            "amd64" => {
                if let Some(level) = version("v").filter(|v| *v > 1) {
                    vector.extend((1..level).rev().map(|v| with("amd64", format!("v{v}"))));
                }
                vector.push(with("386", String::new()));
            }
            "arm" => {
                if let Some(level) = version("v").filter(|v| *v > 5) {
                    vector.extend((5..level).rev().map(|v| with("arm", format!("v{v}"))));
                }
            }
            "arm64" => {
                let variant = if self.variant.is_empty() {
                    "v8"
                } else {
                    self.variant.as_str()
                };
                // (major, newest minor) pairs: a v9.x core runs v8.(x+5) code.
                let versions: Option<&[(u32, u32)]> = match variant {
                    "v8" | "v8.0" => Some(&[(8, 0)]),
                    "v9" | "v9.0" => Some(&[(9, 0), (8, 5)]),
                    _ => arm64_version(variant),
                };
                vector.clear();
                if let Some(versions) = versions {
                    for &(major, newest) in versions {
                        for minor in (0..=newest).rev() {
                            let variant = if minor == 0 {
                                format!("v{major}")
                            } else {
                                format!("v{major}.{minor}")
                            };
                            vector.push(with("arm64", variant));
                        }
                    }
                }
                let arm = if variant.starts_with("v8") || variant.starts_with("v9") {
                    "v8"
                } else {
                    variant
                };
                vector.extend(with("arm", arm.to_owned()).candidates());
            }
            _ => {}
        }
        vector
    }

    /// Index of the entry that serves this platform best, if any.
    pub fn best_match<'a>(&self, entries: impl IntoIterator<Item = &'a Platform>) -> Option<usize> {
        let candidates = self.candidates();
        entries
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| Some((candidates.iter().position(|c| c == p)?, i)))
            .min()
            .map(|(_, i)| i)
    }
}

/// The platform fields of an OCI descriptor or image config, as written.
#[derive(serde::Deserialize)]
struct OciPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

impl From<OciPlatform> for Platform {
    fn from(raw: OciPlatform) -> Self {
        Self::new(
            raw.os.as_deref().unwrap_or_default(),
            raw.architecture.as_deref().unwrap_or_default(),
            raw.variant.as_deref().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// `v8.N` and `v9.N` as containerd's `arm64variantToVersion`.
fn arm64_version(variant: &str) -> Option<&'static [(u32, u32)]> {
    static V8: [[(u32, u32); 1]; 10] = [
        [(8, 0)],
        [(8, 1)],
        [(8, 2)],
        [(8, 3)],
        [(8, 4)],
        [(8, 5)],
        [(8, 6)],
        [(8, 7)],
        [(8, 8)],
        [(8, 9)],
    ];
    static V9: [[(u32, u32); 2]; 8] = [
        [(9, 0), (8, 5)],
        [(9, 1), (8, 6)],
        [(9, 2), (8, 7)],
        [(9, 3), (8, 8)],
        [(9, 4), (8, 9)],
        [(9, 5), (8, 9)],
        [(9, 6), (8, 9)],
        [(9, 7), (8, 9)],
    ];
    let minor = |prefix: &str| variant.strip_prefix(prefix)?.parse::<usize>().ok();
    if let Some(m) = minor("v8.") {
        return V8.get(m).map(|v| v.as_slice());
    }
    minor("v9.").and_then(|m| V9.get(m).map(|v| v.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::Platform;

    fn p(s: &str) -> Platform {
        let mut parts = s.split('/');
        let os = parts.next().unwrap_or_default();
        let arch = parts.next().unwrap_or_default();
        Platform::new(os, arch, parts.next().unwrap_or_default())
    }

    fn pick(wanted: &str, index: &[&str]) -> Option<String> {
        let entries: Vec<Platform> = index.iter().map(|s| p(s)).collect();
        p(wanted).best_match(&entries).map(|i| index[i].to_owned())
    }

    #[test]
    fn parse_reads_os_arch_and_variant_as_containerd() {
        let host = Platform::host();
        assert_eq!(Platform::parse("linux").unwrap(), host);
        assert_eq!(
            Platform::parse("arm64").unwrap(),
            Platform::new("linux", "arm64", "")
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().folder_name(),
            "linux_arm_v7"
        );
        let err = Platform::parse("linux//arm64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid platform \"linux//arm64\": an empty part"
        );
        assert!(Platform::parse("linux/arm64;rm").is_err());
        assert!(Platform::parse("").is_err());
        // From JSON: an index entry's platform or an image config, normalized.
        let read: Platform = serde_json::from_str(
            r#"{"architecture":"aarch64","os":"linux","variant":null,"config":{}}"#,
        )
        .unwrap();
        assert_eq!(read.to_string(), "linux/arm64");
        let read: Platform = serde_json::from_str("{}").unwrap();
        assert_eq!(read, Platform::new("", "", ""));
        // An amd64 host runs 386 code, not arm64 code.
        let amd64 = Platform::new("linux", "amd64", "");
        assert!(amd64.runs(&Platform::new("linux", "386", "")));
        assert!(!amd64.runs(&Platform::new("linux", "arm64", "")));
    }

    #[test]
    fn arm64_is_arm64_v8() {
        assert_eq!(p("linux/aarch64"), p("linux/arm64/v8"));
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64");
        let index = ["linux/amd64", "linux/arm64/v8"];
        assert_eq!(
            pick("linux/arm64", &index).as_deref(),
            Some("linux/arm64/v8")
        );
        let index = ["linux/amd64", "linux/arm64"];
        assert_eq!(
            pick("linux/arm64/v8", &index).as_deref(),
            Some("linux/arm64")
        );
    }

    #[test]
    fn arm_falls_back_to_older_variants_best_first() {
        let index = ["linux/arm/v5", "linux/arm/v6", "linux/amd64"];
        assert_eq!(
            pick("linux/arm/v7", &index).as_deref(),
            Some("linux/arm/v6")
        );
        assert_eq!(pick("linux/arm", &index).as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/arm/v6", &["linux/arm/v7"]), None);
        // arm64 runs 32-bit arm code when no arm64 entry exists.
        assert_eq!(
            pick("linux/arm64", &["linux/arm/v7"]).as_deref(),
            Some("linux/arm/v7")
        );
        assert_eq!(
            pick("linux/arm64", &["linux/arm/v7", "linux/arm64"]).as_deref(),
            Some("linux/arm64")
        );
    }

    #[test]
    fn amd64_levels_and_386() {
        let index = ["linux/386", "linux/amd64/v2", "linux/amd64"];
        assert_eq!(
            pick("linux/amd64/v3", &index).as_deref(),
            Some("linux/amd64/v2")
        );
        assert_eq!(pick("linux/amd64", &index).as_deref(), Some("linux/amd64"));
        assert_eq!(
            pick("linux/amd64", &["linux/386"]).as_deref(),
            Some("linux/386")
        );
        assert_eq!(pick("linux/amd64", &["linux/arm64", "windows/amd64"]), None);
    }

    #[test]
    fn arm64_minor_variants() {
        let index = ["linux/arm64/v8.1", "linux/arm64/v8.3"];
        assert_eq!(
            pick("linux/arm64/v8.2", &index).as_deref(),
            Some("linux/arm64/v8.1")
        );
        assert_eq!(
            pick("linux/arm64/v9", &["linux/arm64/v8.5"]).as_deref(),
            Some("linux/arm64/v8.5")
        );
        assert_eq!(pick("linux/arm64", &["linux/arm64/v8.1"]), None);
    }
}
