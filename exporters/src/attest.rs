//! What a build asks for in attestations, read one way for both of kiln's front doors:
//! buildx's flag values in `kiln build` (`--provenance=mode=max`, `--sbom=true`, `--attest
//! type=sbom`) and BuildKit's frontend attributes of a `Solve` in `kiln daemon`
//! (`attest:provenance=mode=max`, `attest:sbom=`, `build-arg:BUILDKIT_ATTEST_PROVENANCE=…`), as
//! BuildKit's `frontend/attestations/parse.go` reads them.
//!
//! # Overview
//! 1. [`Attest::flag`] reads `--attest type=KIND,KEY=VALUE,…`; [`Attest::value`] one kind's
//!    value: `true`/`false` (Go's `strconv.ParseBool` spellings; false is `disabled=true`) or
//!    `KEY=VALUE,…` pairs, empty for the kind's defaults.
//! 2. [`AttestationRequest::apply`] takes one [`Attest`]: `disabled`, provenance's `mode`
//!    (`min`, `max`, `full` as BuildKit's alias of `max`; when absent, the front door's
//!    default: buildx's `min`, BuildKit's `max`), and refuses an SBOM `generator` (kiln makes
//!    the SBOM itself) and a kind other than `provenance` and `sbom`.
//! 3. [`AttestationRequest::from_frontend_attrs`] reads every `attest:` attribute of a
//!    daemon's request (and the `BUILDKIT_ATTEST_` build args, which they override).

use std::collections::BTreeMap;

use crate::provenance::ProvenanceMode;

/// Why an attestation request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A comma-separated part without `=`.
    #[error("invalid {origin} value {value:?}: expected KEY=VALUE")]
    NotKeyValue {
        /// Where the value came from (`--provenance`, `attest:sbom`).
        origin: String,
        /// The whole value.
        value: String,
    },
    /// `--attest` without `type=`.
    #[error("invalid {origin} value {value:?}: type is required (type=provenance or type=sbom)")]
    NoType {
        /// Where the value came from (`--attest`).
        origin: String,
        /// The whole value.
        value: String,
    },
    /// `disabled=` that is not a boolean.
    #[error("invalid value {value:?} for disabled: expected true or false")]
    Disabled {
        /// Its value.
        value: String,
    },
    /// A provenance `mode=` other than `min` or `max`.
    #[error("invalid provenance mode {mode:?}: expected min or max")]
    Mode {
        /// The mode asked for.
        mode: String,
    },
    /// An SBOM generator image: kiln runs none.
    #[error(
        "{origin} generator={generator}: kiln makes the SBOM itself and runs no generator image"
    )]
    Generator {
        /// Where the value came from (`--sbom`, `attest:sbom`).
        origin: String,
        /// The image asked for.
        generator: String,
    },
    /// An attestation kind kiln does not make.
    #[error("unknown attestation type {kind:?}: expected provenance or sbom")]
    UnknownType {
        /// The kind asked for.
        kind: String,
    },
}

/// One attestation asked for: its kind and its `KEY=VALUE` fields (`type` left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// Where it came from (`--attest`, `--provenance`, `attest:sbom`), for messages.
    pub origin: String,
    /// `provenance` or `sbom` (checked by [`AttestationRequest::apply`]).
    pub kind: String,
    /// Its other fields, keys lowercase (`mode`, `disabled`, `generator`…).
    pub fields: BTreeMap<String, String>,
}

impl Attest {
    /// `--attest type=KIND,KEY=VALUE,…`: the type is required.
    pub fn flag(origin: &str, text: &str) -> Result<Self, AttestError> {
        let mut fields = pairs(origin, text)?;
        let kind = fields.remove("type").ok_or_else(|| AttestError::NoType {
            origin: origin.to_owned(),
            value: text.to_owned(),
        })?;
        Ok(Self {
            origin: origin.to_owned(),
            kind,
            fields,
        })
    }

    /// One kind's value (`--provenance=VALUE`, `attest:provenance=VALUE`): `true`/`false`, or
    /// `KEY=VALUE,…` (empty: the kind with its defaults).
    pub fn value(kind: &str, origin: &str, value: &str) -> Result<Self, AttestError> {
        let fields = match kiln_cache::parse_bool(value) {
            Some(true) => BTreeMap::new(),
            Some(false) => BTreeMap::from([("disabled".to_owned(), "true".to_owned())]),
            None => pairs(origin, value)?,
        };
        Ok(Self {
            origin: origin.to_owned(),
            kind: kind.to_owned(),
            fields,
        })
    }
}

/// `KEY=VALUE,…`, keys lowercase, empty parts skipped.
fn pairs(origin: &str, text: &str) -> Result<BTreeMap<String, String>, AttestError> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            part.split_once('=')
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                .ok_or_else(|| AttestError::NotKeyValue {
                    origin: origin.to_owned(),
                    value: text.to_owned(),
                })
        })
        .collect()
}

/// The attestations a build asks for, before the build.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttestationRequest {
    /// Provenance, and its mode.
    pub provenance: Option<ProvenanceMode>,
    /// An SPDX SBOM of each image.
    pub sbom: bool,
}

impl AttestationRequest {
    /// Takes `attest` (a later one of a kind replaces an earlier); provenance without a
    /// `mode` gets `default_mode`.
    pub fn apply(
        &mut self,
        attest: &Attest,
        default_mode: ProvenanceMode,
    ) -> Result<(), AttestError> {
        let disabled = match attest.fields.get("disabled") {
            None => false,
            Some(value) => kiln_cache::parse_bool(value).ok_or_else(|| AttestError::Disabled {
                value: value.clone(),
            })?,
        };
        match attest.kind.as_str() {
            "provenance" => {
                self.provenance = if disabled {
                    None
                } else {
                    Some(match attest.fields.get("mode").map(String::as_str) {
                        None => default_mode,
                        Some("min") => ProvenanceMode::Min,
                        Some("max" | "full") => ProvenanceMode::Max,
                        Some(other) => {
                            return Err(AttestError::Mode {
                                mode: other.to_owned(),
                            });
                        }
                    })
                };
            }
            "sbom" => {
                if let Some(generator) = attest.fields.get("generator") {
                    return Err(AttestError::Generator {
                        origin: attest.origin.clone(),
                        generator: generator.clone(),
                    });
                }
                self.sbom = !disabled;
            }
            other => {
                return Err(AttestError::UnknownType {
                    kind: other.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// What a daemon's request asks for in its frontend attributes, as BuildKit's controller
    /// reads them: `attest:KIND=VALUE` (an empty value: the kind with its defaults; provenance
    /// is then `mode=max`, BuildKit's default) and `build-arg:BUILDKIT_ATTEST_KIND=VALUE`.
    pub fn from_frontend_attrs<'a>(
        attrs: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Self, AttestError> {
        let mut build_args = BTreeMap::new();
        let mut attests = BTreeMap::new();
        for (key, value) in attrs {
            if let Some(kind) = key.strip_prefix("attest:") {
                attests.insert(kind.to_lowercase(), (key, value));
            } else if let Some(kind) = key.strip_prefix("build-arg:BUILDKIT_ATTEST_") {
                build_args.insert(kind.to_lowercase(), (key, value));
            }
        }
        build_args.extend(attests);
        let mut request = Self::default();
        for (kind, (key, value)) in build_args {
            request.apply(&Attest::value(&kind, key, value)?, ProvenanceMode::Max)?;
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Result<AttestationRequest, AttestError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AttestationRequest::from_frontend_attrs(&map)
    }

    #[test]
    fn values_are_booleans_or_pairs() {
        let on = Attest::value("sbom", "--sbom", "True").unwrap();
        assert!(on.fields.is_empty());
        let off = Attest::value("sbom", "--sbom", "0").unwrap();
        assert_eq!(off.fields["disabled"], "true");
        let max = Attest::value("provenance", "--provenance", "Mode=max,,").unwrap();
        assert_eq!(max.fields["mode"], "max");
        assert_eq!(
            Attest::value("provenance", "attest:provenance", "max")
                .unwrap_err()
                .to_string(),
            "invalid attest:provenance value \"max\": expected KEY=VALUE"
        );
        let flag = Attest::flag("--attest", "type=sbom,disabled=false").unwrap();
        assert_eq!((flag.kind.as_str(), flag.fields.len()), ("sbom", 1));
        assert_eq!(
            Attest::flag("--attest", "mode=max")
                .unwrap_err()
                .to_string(),
            "invalid --attest value \"mode=max\": type is required (type=provenance or type=sbom)"
        );
    }

    #[test]
    fn the_daemon_reads_attest_attributes_with_buildkits_defaults() {
        assert_eq!(attrs(&[("target", "app")]).unwrap(), Default::default());
        let both = attrs(&[("attest:sbom", ""), ("attest:provenance", "")]).unwrap();
        assert_eq!(both.provenance, Some(ProvenanceMode::Max));
        assert!(both.sbom);
        let min = attrs(&[("attest:provenance", "mode=min,inline-only=true")]).unwrap();
        assert_eq!(min.provenance, Some(ProvenanceMode::Min));
        let full = attrs(&[("Attest:Provenance", "mode=full")]);
        // The prefix is case-sensitive, as BuildKit's: not an attestation.
        assert_eq!(full.unwrap().provenance, None);
        let full = attrs(&[("attest:Provenance", "mode=full")]).unwrap();
        assert_eq!(full.provenance, Some(ProvenanceMode::Max));
        let off = attrs(&[("attest:sbom", "disabled=true")]).unwrap();
        assert_eq!(off, AttestationRequest::default());
        // The attribute wins over the build arg.
        let arg = attrs(&[
            ("build-arg:BUILDKIT_ATTEST_PROVENANCE", "mode=max"),
            ("attest:provenance", "mode=min"),
        ])
        .unwrap();
        assert_eq!(arg.provenance, Some(ProvenanceMode::Min));
        let error = |pairs: &[(&str, &str)]| attrs(pairs).unwrap_err().to_string();
        assert_eq!(
            error(&[("attest:provenance", "mode=bogus")]),
            "invalid provenance mode \"bogus\": expected min or max"
        );
        assert_eq!(
            error(&[("attest:sbom", "disabled=maybe")]),
            "invalid value \"maybe\" for disabled: expected true or false"
        );
        assert_eq!(
            error(&[("attest:sbom", "generator=docker/scout-sbom-indexer")]),
            "attest:sbom generator=docker/scout-sbom-indexer: kiln makes the SBOM itself and \
             runs no generator image"
        );
        assert_eq!(
            error(&[("attest:vex", "")]),
            "unknown attestation type \"vex\": expected provenance or sbom"
        );
    }
}
