//! Versioned bincode envelopes, decoded with bounded allocation.
//!
//! bincode does not describe itself: a record written by one version of berth
//! and read by another would decode into garbage. Every stored and wire record
//! is therefore prefixed with a one-byte format version; readers refuse a
//! version they do not know instead of guessing.
//!
//! Decoding never trusts a length inside the bytes. bincode allocates a
//! string or byte buffer as large as its length prefix claims before it
//! reads the contents, so an unbounded decoder turns a 12-byte message that
//! claims a 2^40-byte string into a 1 TiB allocation and an abort. Every
//! decode here runs with bincode's byte limit, which counts what decoding
//! claims in memory: a string its length, an integer its width (a u64 is
//! claimed as 8 bytes though its varint may be 1, a u128 as 16). So a
//! well-formed record never claims more than [`CLAIM_PER_BYTE`] times its
//! size, and the limit is the smallest of [`LIMIT_STEPS`] at or above that:
//! whatever the bytes say, a decode allocates at most 64 times its input.

use serde::{de::DeserializeOwned, Serialize};

/// The largest record this codec decodes: more than any snapshot of a
/// registry's metadata berth is sized for.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

/// The most a well-formed record claims per byte of its encoding: a u128
/// whose varint is one byte.
pub const CLAIM_PER_BYTE: usize = 16;

/// bincode's limit is a type-level constant, so the limit for an input is
/// picked from these steps (each 4 times the one before).
pub const LIMIT_STEPS: [usize; 13] =
    [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30, 4 << 30, CLAIM_PER_BYTE * MAX_RECORD_BYTES];

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("record format version {found} is not known (this build reads {expected})")]
    UnknownVersion { found: u8, expected: u8 },
    #[error("record of {0} bytes is over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
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
///
/// Trailing bytes after the record are refused: a record is exactly what
/// its writer encoded.
pub fn decode_versioned<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, CodecError> {
    let (&found, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if found != version {
        return Err(CodecError::UnknownVersion { found, expected: version });
    }
    let (value, read) = decode_bounded(body)?;
    if read != body.len() {
        return Err(CodecError::Decode(bincode::error::DecodeError::OtherString(format!("{} bytes left over after the record", body.len() - read))));
    }
    Ok(value)
}

fn decode_bounded<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize), CodecError> {
    if body.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge(body.len()));
    }
    let claims = body.len() * CLAIM_PER_BYTE;
    macro_rules! by_step {
        ($($i:literal)*) => {
            $(if claims <= LIMIT_STEPS[$i] {
                return Ok(bincode::serde::decode_from_slice(body, config().with_limit::<{ LIMIT_STEPS[$i] }>())?);
            })*
        };
    }
    by_step!(0 1 2 3 4 5 6 7 8 9 10 11 12);
    // Not reached: the last step covers MAX_RECORD_BYTES.
    Err(CodecError::TooLarge(body.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode_versioned(3, &("tag", 7u64)).unwrap();
        let back: (String, u64) = decode_versioned(3, &bytes).unwrap();
        assert_eq!(back, ("tag".to_string(), 7));
        let err = decode_versioned::<(String, u64)>(4, &bytes).unwrap_err();
        assert!(matches!(err, CodecError::UnknownVersion { found: 3, expected: 4 }));
        assert!(matches!(decode_versioned::<u8>(1, &[]), Err(CodecError::Empty)));
    }

    /// The probe that aborted a node: version 1, then a string whose
    /// length prefix (0xfd: a u64 follows) claims 2^40 bytes.
    #[test]
    fn a_length_claim_beyond_the_input_is_refused_before_allocating() {
        let probe = [1u8, 0xfd, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(decode_versioned::<String>(1, &probe), Err(CodecError::Decode(_))));
        // The same inside a struct, as a join request's first field.
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Req {
            id: String,
            key: Vec<u8>,
        }
        assert!(decode_versioned::<Req>(1, &probe).is_err());
        // A claim past the input's step is refused too: 103 bytes may
        // claim 4 KiB (the step at or above 16 times 103), not 5000.
        let mut near = vec![1u8, 0xfb];
        near.extend_from_slice(&(5000u16).to_le_bytes());
        near.extend(std::iter::repeat_n(b'a', 100));
        assert!(matches!(decode_versioned::<String>(1, &near), Err(CodecError::Decode(bincode::error::DecodeError::LimitExceeded))));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_versioned(1, &7u32).unwrap();
        bytes.push(0);
        assert!(decode_versioned::<u32>(1, &bytes).is_err());
    }

    /// Integers are claimed at their width, not their varint's: a record
    /// of small u64s claims eight times its size and must still decode.
    #[test]
    fn integer_heavy_records_decode() {
        let many: Vec<u64> = (0..10_000).map(|i| i % 200).collect();
        let bytes = encode_versioned(1, &many).unwrap();
        assert_eq!(decode_versioned::<Vec<u64>>(1, &bytes).unwrap(), many);
        let wide: Vec<(u128, Option<u64>)> = (0..1000).map(|i| (i % 3, Some(i as u64 % 5))).collect();
        let bytes = encode_versioned(1, &wide).unwrap();
        assert_eq!(decode_versioned::<Vec<(u128, Option<u64>)>>(1, &bytes).unwrap(), wide);
    }

    #[test]
    fn large_records_still_decode() {
        let big = vec!["x".repeat(1 << 16); 80]; // 5 MiB: the 256 MiB step
        let bytes = encode_versioned(1, &big).unwrap();
        assert_eq!(decode_versioned::<Vec<String>>(1, &bytes).unwrap(), big);
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Unit,
        Named { name: String, bytes: Vec<u8>, n: u64 },
        Nested(Vec<(String, Option<u32>)>),
    }

    fn sample() -> impl Strategy<Value = Sample> {
        prop_oneof![
            Just(Sample::Unit),
            (".{0,40}", proptest::collection::vec(any::<u8>(), 0..64), any::<u64>()).prop_map(|(name, bytes, n)| Sample::Named { name, bytes, n }),
            proptest::collection::vec((".{0,8}", any::<Option<u32>>()), 0..8).prop_map(Sample::Nested),
        ]
    }

    // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
    proptest! {
        #[test]
        fn every_record_round_trips(v in sample()) {
            let bytes = encode_versioned(2, &v).unwrap();
            prop_assert_eq!(decode_versioned::<Sample>(2, &bytes).unwrap(), v);
        }

        /// Random bytes, and valid records cut short or with a byte
        /// replaced by a huge length prefix: an error or a value, never a
        /// panic, and never an allocation beyond the limit (the test's
        /// process would abort).
        #[test]
        fn hostile_bytes_never_panic(noise in proptest::collection::vec(any::<u8>(), 0..256), v in sample(), cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>()) {
            let _ = decode_versioned::<Sample>(2, &noise);
            let mut with_version = vec![2u8];
            with_version.extend(&noise);
            let _ = decode_versioned::<Sample>(2, &with_version);
            let bytes = encode_versioned(2, &v).unwrap();
            let _ = decode_versioned::<Sample>(2, &bytes[..cut.index(bytes.len())]);
            let mut huge = bytes.clone();
            let i = 1 + at.index(huge.len() - 1).min(huge.len().saturating_sub(2));
            huge.splice(i..i, [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
            let _ = decode_versioned::<Sample>(2, &huge);
        }
    }
}
