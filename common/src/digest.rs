//! Content digests as the OCI spec writes them: `algorithm:hex`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form algorithm:hex")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (sha256, sha512)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} has a hex part of the wrong length or with characters other than 0-9a-f")]
    BadHex(String),
}

/// A validated content digest. The hex part is lowercase and of the length
/// its algorithm produces. Serialized as its text (`sha256:…`), in JSON and
/// in stored records alike, and checked again when read.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: DigestAlgorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest { algorithm: DigestAlgorithm::Sha256, hex: hex::encode(sha2::Sha256::digest(bytes)) }
    }

    /// The digest of `bytes` with this digest's algorithm.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        let hex = match self.algorithm {
            DigestAlgorithm::Sha256 => hex::encode(sha2::Sha256::digest(bytes)),
            DigestAlgorithm::Sha512 => hex::encode(sha2::Sha512::digest(bytes)),
        };
        hex == self.hex
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        let algorithm = match alg {
            "sha256" => DigestAlgorithm::Sha256,
            "sha512" => DigestAlgorithm::Sha512,
            "" => return Err(DigestError::Malformed(s.to_string())),
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_string())),
        };
        let valid = hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::BadHex(s.to_string()));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let d = Digest::sha256_of(b"hello");
        let parsed: Digest = d.to_string().parse().unwrap();
        assert_eq!(parsed, d);
        assert!(parsed.matches(b"hello"));
        assert!(!parsed.matches(b"hellO"));
        assert!(matches!("sha256".parse::<Digest>(), Err(DigestError::Malformed(_))));
        assert!(matches!("md5:abcd".parse::<Digest>(), Err(DigestError::UnsupportedAlgorithm(_))));
        assert!(matches!("sha256:ABCD".parse::<Digest>(), Err(DigestError::BadHex(_))));
        let upper = d.to_string().to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(upper.parse::<Digest>(), Err(DigestError::BadHex(_))));
    }
}
