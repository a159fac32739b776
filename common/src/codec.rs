//! Versioned bincode envelopes.
//!
//! bincode does not describe itself: a record written by one version of berth
//! and read by another would decode into garbage. Every stored and wire record
//! is therefore prefixed with a one-byte format version; readers refuse a
//! version they do not know instead of guessing.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("record format version {found} is not known (this build reads {expected})")]
    UnknownVersion { found: u8, expected: u8 },
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` behind the format version byte `version`.
pub fn encode_versioned<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version];
    out.extend(bincode::serde::encode_to_vec(value, config())?);
    Ok(out)
}

/// Decodes a record written by [`encode_versioned`] with `version`.
pub fn decode_versioned<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, CodecError> {
    let (&found, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if found != version {
        return Err(CodecError::UnknownVersion { found, expected: version });
    }
    let (value, _) = bincode::serde::decode_from_slice(body, config())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode_versioned(3, &("tag", 7u64)).unwrap();
        let back: (String, u64) = decode_versioned(3, &bytes).unwrap();
        assert_eq!(back, ("tag".to_string(), 7));
        let err = decode_versioned::<(String, u64)>(4, &bytes).unwrap_err();
        assert!(matches!(err, CodecError::UnknownVersion { found: 3, expected: 4 }));
        assert!(matches!(decode_versioned::<u8>(1, &[]), Err(CodecError::Empty)));
    }
}
