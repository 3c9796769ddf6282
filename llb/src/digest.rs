//! Content digests, as LLB uses them to name ops.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::DigestError;

/// A sha256 content digest, written `sha256:<64 lowercase hex digits>`.
///
/// An op's digest is the digest of its marshalled bytes as they stand in `Definition.def`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest whose 32 bytes of sha256 output are `raw` (a hash computed elsewhere, as
    /// while data streams through).
    pub const fn from_raw(raw: [u8; 32]) -> Self {
        Self(raw)
    }

    /// Parses `sha256:<hex>`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let Some(hex_part) = value.strip_prefix("sha256:") else {
            return Err(DigestError::Algorithm {
                value: value.to_owned(),
            });
        };
        Self::from_hex(hex_part).map_err(|_| DigestError::Hex {
            value: value.to_owned(),
        })
    }

    /// Parses the 64 lowercase hex digits without the algorithm (a blob's file name in a
    /// content store).
    pub fn from_hex(hex_digits: &str) -> Result<Self, DigestError> {
        let mut raw = [0u8; 32];
        let lowercase = hex_digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lowercase || hex::decode_to_slice(hex_digits, &mut raw).is_err() {
            return Err(DigestError::Hex {
                value: hex_digits.to_owned(),
            });
        }
        Ok(Self(raw))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for display.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_known_sha256() {
        // sha256("") from FIPS 180-2 test vectors.
        assert_eq!(
            Digest::from_bytes(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_display_round_trip_and_short() {
        let s = "sha256:bd2bd46a452d1b220da1a97bac53f57fc586d0ac1a95a5f747ae6d347e5a16b6";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d.short(), "bd2bd46a452d");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "",
            "sha256:",
            "sha512:bd2bd46a452d1b220da1a97bac53f57fc586d0ac1a95a5f747ae6d347e5a16b6",
            "sha256:BD2BD46A452D1B220DA1A97BAC53F57FC586D0AC1A95A5F747AE6D347E5A16B6",
            "sha256:bd2bd46a452d1b220da1a97bac53f57fc586d0ac1a95a5f747ae6d347e5a16b",
            "sha256:bd2bd46a452d1b220da1a97bac53f57fc586d0ac1a95a5f747ae6d347e5a16b6a",
            "sha256:zz2bd46a452d1b220da1a97bac53f57fc586d0ac1a95a5f747ae6d347e5a16b6",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            Digest::parse("md5:00"),
            Err(DigestError::Algorithm { .. })
        ));
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    #[test]
    fn bare_hex_and_raw_bytes() {
        let s = "bd2bd46a452d1b220da1a97bac53f57fc586d0ac1a95a5f747ae6d347e5a16b6";
        let d = Digest::from_hex(s).unwrap();
        assert_eq!(d.hex(), s);
        assert_eq!(Digest::from_raw(*d.as_bytes()), d);
        assert_eq!(Digest::parse(&format!("sha256:{s}")).unwrap(), d);
        for bad in ["", &s[1..], &s.to_uppercase(), &format!("sha256:{s}")] {
            assert!(
                matches!(Digest::from_hex(bad), Err(DigestError::Hex { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
