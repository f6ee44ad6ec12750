//! Errors of the wire format and of the session state machines.

use crate::frame::FrameType;

/// Why bytes from a peer are not a valid frame. Small and `Copy`: it is returned on the hot
/// path. Running out of buffered bytes is not an error (the decoder returns `Ok(None)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame type byte is not one this version knows.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The header's flags byte is not zero (no flags are defined in version 1).
    #[error("frame header flags are not zero")]
    NonzeroFlags,
    /// A reserved header or body field is not zero.
    #[error("a reserved field is not zero")]
    NonzeroReserved,
    /// The header announces a body longer than the frame type allows.
    #[error("frame body of {len} bytes is longer than the {max} bytes allowed")]
    TooLong {
        /// The announced body length.
        len: u32,
        /// The maximum for this frame type.
        max: u32,
    },
    /// The body ends before a field it must contain.
    #[error("frame body is truncated")]
    Truncated,
    /// The body has bytes after its last field.
    #[error("frame body has trailing bytes")]
    TrailingBytes,
    /// A HELLO does not start with the protocol magic: the peer is not a blockrep sender.
    #[error("bad magic: the peer does not speak the blockrep protocol")]
    BadMagic,
    /// A string is longer than its field allows.
    #[error("a string field is too long")]
    StringTooLong,
    /// A string is not valid UTF-8, or an identifier or code has characters it may not have.
    #[error("a string field has invalid characters")]
    BadString,
    /// A HELLO announces no disks or more than `MAX_DISKS`.
    #[error("disk count is zero or above the maximum")]
    BadDiskCount,
    /// A WELCOME lists more held extents than allowed, or a count that does not match.
    #[error("held extent count is above the maximum or does not match the disks")]
    BadExtentCount,
    /// A held extent is empty or ends beyond 2^64.
    #[error("a held extent is empty or overflows")]
    BadExtent,
    /// A disk block size is not a power of two between the minimum and maximum.
    #[error("disk block size is not a power of two from 4 KiB to 1 MiB")]
    BadBlockSize,
    /// A disk size is zero or larger than `MAX_DISK_SIZE`.
    #[error("disk size is zero or too large")]
    BadDiskSize,
    /// A DATA frame's encoding byte is not one this version knows.
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(u8),
    /// A DATA frame's raw length is zero or larger than `MAX_BLOCK_SIZE`.
    #[error("chunk raw length is zero or above 1 MiB")]
    BadRawLength,
    /// A DATA frame's payload length does not fit its encoding.
    #[error("chunk payload length does not match its encoding")]
    BadPayloadLength,
    /// A version range whose minimum exceeds its maximum, or a version of 0.
    #[error("bad protocol version range")]
    BadVersion,
    /// A HASH_REQUEST or HASHES field is out of range: digest length, granularity, range
    /// count, an unaligned or empty range, or more digests or bytes than one request allows.
    #[error("bad hash request or answer: a field is out of range")]
    BadHashRequest,
    /// A boolean field is neither 0 nor 1.
    #[error("a boolean field is neither 0 nor 1")]
    BadBool,
}

/// A violation of the session rules by the peer, or a decode error. Ends the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The bytes are not a valid frame.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// A frame that is valid but not allowed in the session's current state.
    #[error("unexpected {frame:?} frame while {state}")]
    Unexpected {
        /// The frame that arrived.
        frame: FrameType,
        /// What the session was doing.
        state: &'static str,
    },
    /// No protocol version in common.
    #[error("no common protocol version: peer speaks {peer_min}..={peer_max}, this build {ours_min}..={ours_max}")]
    NoCommonVersion {
        /// The peer's oldest version.
        peer_min: u16,
        /// The peer's newest version.
        peer_max: u16,
        /// Our oldest version.
        ours_min: u16,
        /// Our newest version.
        ours_max: u16,
    },
    /// A HELLO announces the same disk id twice.
    #[error("disk id {0:?} is announced twice")]
    DuplicateDisk(String),
    /// A DATA frame names a disk index that was not announced.
    #[error("a frame names disk index {index}, but only {count} disks were announced")]
    UnknownDisk {
        /// The index in the frame.
        index: u16,
        /// How many disks the session has.
        count: usize,
    },
    /// A DATA frame reaches past the end of its disk, or is longer than its block size.
    #[error("a frame for disk {disk:?} at offset {offset} length {len} is outside the disk ({size} bytes, block size {block_size})")]
    OutOfBounds {
        /// The disk id.
        disk: String,
        /// The chunk offset.
        offset: u64,
        /// The chunk raw length.
        len: u32,
        /// The announced disk size.
        size: u64,
        /// The announced block size.
        block_size: u32,
    },
    /// An ACK acknowledges frames that were never sent, or goes backwards.
    #[error("ACK for {acked} frames, but {sent} were sent and {previous} already acknowledged")]
    BadAck {
        /// Frames the ACK claims.
        acked: u64,
        /// Frames sent so far.
        sent: u64,
        /// Frames acknowledged before.
        previous: u64,
    },
    /// A WELCOME picks a version outside what was offered, lists held extents for a
    /// different number of disks, or lists extents outside their disk or out of order.
    #[error("WELCOME does not match the HELLO: {0}")]
    BadWelcome(&'static str),
    /// Too many HASH_REQUESTs unanswered, or END while some are.
    #[error("{0} hash requests unanswered: too many, or the session is ending")]
    HashRequestsPending(usize),
    /// HASHES that do not answer the oldest HASH_REQUEST (wrong disk, digest length or count),
    /// or that answer nothing.
    #[error("HASHES do not answer the oldest HASH_REQUEST: {0}")]
    BadHashes(&'static str),
    /// A summary (END or DONE) whose counts differ from what this side saw.
    #[error("summary mismatch: peer counted {peer_frames} frames / {peer_bytes} bytes, this side {our_frames} / {our_bytes}")]
    SummaryMismatch {
        /// Frames the peer counted.
        peer_frames: u64,
        /// Raw bytes the peer counted.
        peer_bytes: u64,
        /// Frames this side counted.
        our_frames: u64,
        /// Raw bytes this side counted.
        our_bytes: u64,
    },
    /// A PONG that does not answer the oldest unanswered PING.
    #[error("PONG does not answer the oldest unanswered PING")]
    BadPong,
}
