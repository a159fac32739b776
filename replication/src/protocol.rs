//! The blob peer protocol, one request per bidirectional QUIC stream.
//!
//! A frame is a big-endian u32 length and a versioned bincode body. The
//! requester writes one request frame and finishes its side; the server
//! answers with one reply frame, and for `Get` the raw bytes after it.

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
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(decode_versioned(PROTOCOL_VERSION, &body)?)
}
