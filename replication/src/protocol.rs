//! The blob peer protocol, one request per bidirectional QUIC stream.
//!
//! A frame is a big-endian u32 length and a versioned bincode body. The
//! requester writes one request frame and finishes its side; the server
//! answers with one reply frame, and for `Get` the raw bytes after it.
//! `Mirror` is the one long exchange: the requester streams an upload as
//! [`MirrorFrame`]s while its client sends it, and the server answers with
//! [`MirrorReply`]s (see [`crate::pipeline`]).

use berth_common::{decode_versioned, encode_versioned, Digest, NodeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Format version of every frame body.
pub const PROTOCOL_VERSION: u8 = 1;
/// ALPN of the blob transport.
pub const ALPN: &[u8] = b"berth-blob/1";
const MAX_FRAME: u32 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Which of these does the server hold?
    Have { digests: Vec<Digest> },
    /// Bytes of a blob from `start`, `len` of them (or to the end).
    Get { digest: Digest, start: u64, len: Option<u64> },
    /// Fetch this blob now (from `from` first) and answer once it is stored
    /// and recorded: how a push reaches `min_copies` before it is acknowledged.
    Replicate { digest: Digest, size: u64, from: NodeId },
    /// A hint that the sender stored a blob; the receiver may reconcile sooner.
    Announce { digest: Digest, size: u64 },
    /// The receiver's measured RTT to each of its peers.
    Rtts,
    /// The filesystem the receiver's blob store is on.
    Disk,
    /// Keep a copy of the upload `from` is receiving now: [`MirrorFrame`]s
    /// follow on this stream, as the bytes reach `from`.
    Mirror { from: NodeId },
}

/// What the node taking an upload sends a node keeping a copy of it, after
/// [`Request::Mirror`]. The stream ending before `Seal` abandons the copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MirrorFrame {
    /// `len` raw bytes of the blob follow.
    Data { len: u32 },
    /// That was every byte: verify it is `digest`, `size` bytes long, make
    /// it durable, answer [`MirrorReply::Stored`].
    Seal { digest: Digest, size: u64 },
    /// The blob is recorded in the metadata now: record this copy too, and
    /// answer [`MirrorReply::Recorded`].
    Record,
}

/// What a node keeping a copy answers, on the same stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MirrorReply {
    /// This many bytes are written here (and hashed): the sender's window.
    Received(u64),
    /// The digest checked out and the copy is durable.
    Stored,
    /// The copy is recorded in the metadata.
    Recorded,
    /// No copy here, and why; nothing of it is kept.
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GetReply {
    /// `len` bytes follow, starting at `start` of a blob of `size` bytes.
    Ok {
        size: u64,
        start: u64,
        len: u64,
    },
    NotFound,
    RangeInvalid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Have(Vec<bool>),
    Replicated,
    Failed(String),
    Ack,
    /// (peer, smoothed RTT in µs)
    Rtts(Vec<(NodeId, u64)>),
    /// None when the node could not read it.
    Disk(Option<DiskUse>),
}

/// A filesystem's size and use, in bytes (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUse {
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What an unprivileged writer may still use.
    pub available_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(u32),
    #[error("unreadable frame: {0}")]
    Codec(#[from] berth_common::CodecError),
}

pub async fn write_frame<T: Serialize>(w: &mut (impl AsyncWrite + Unpin), value: &T) -> Result<(), FrameError> {
    let body = encode_versioned(PROTOCOL_VERSION, value)?;
    w.write_u32(body.len() as u32).await?;
    w.write_all(&body).await?;
    Ok(())
}

pub async fn read_frame<T: DeserializeOwned>(r: &mut (impl AsyncRead + Unpin)) -> Result<T, FrameError> {
    let len = r.read_u32().await?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    // Grown as bytes arrive, not allocated as claimed: a peer that claims a
    // full frame and sends nothing holds no memory.
    let mut body = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut body).await?;
    if body.len() != len as usize {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(decode_versioned(PROTOCOL_VERSION, &body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(read_frame(&mut &bytes[..]))
    }

    #[test]
    fn a_frame_claiming_more_than_the_limit_or_than_it_sends_is_refused() {
        assert!(matches!(read::<Request>(&(MAX_FRAME + 1).to_be_bytes()), Err(FrameError::TooLarge(_))));
        // Claims a whole frame, sends three bytes.
        let mut short = MAX_FRAME.to_be_bytes().to_vec();
        short.extend([1, 2, 3]);
        assert!(matches!(read::<Request>(&short), Err(FrameError::Io(_))));
    }

    proptest! {
        /// Random and truncated frames: an error or a value, never a panic.
        #[test]
        fn hostile_frames_never_panic(noise in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..8, cut in any::<prop::sample::Index>()) {
            let _ = read::<Request>(&noise);
            let mut framed = (noise.len() as u32).to_be_bytes().to_vec();
            framed.extend(&noise);
            let _ = read::<Request>(&framed);
            let _ = read::<Reply>(&framed);
            let _ = read::<GetReply>(&framed);
            let _ = read::<MirrorFrame>(&framed);
            let _ = read::<MirrorReply>(&framed);
            let req = Request::Have { digests: (0..n).map(|i| Digest::sha256_of(&[i as u8])).collect() };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut good = Vec::new();
            rt.block_on(write_frame(&mut good, &req)).unwrap();
            prop_assert!(read::<Request>(&good).is_ok());
            prop_assert!(read::<Request>(&good[..cut.index(good.len())]).is_err());
        }
    }
}
