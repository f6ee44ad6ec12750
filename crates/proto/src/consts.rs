//! Every magic number and limit of the wire format, in one place.
//!
//! These values are part of the protocol (docs/PROTOCOL.md). Changing any of them breaks
//! compatibility with deployed peers: add a new protocol version instead.

/// The first four bytes of a HELLO body. Must not change.
pub const HELLO_MAGIC: [u8; 4] = *b"BRP1";

/// The oldest protocol version this build speaks.
pub const VERSION_MIN: u16 = 1;
/// The newest protocol version this build speaks.
pub const VERSION_MAX: u16 = 1;

/// Length of the fixed frame header: type (1), flags (1), reserved (2), body length (4).
pub const FRAME_HEADER_LEN: usize = 8;

/// Smallest chunk (block) size a disk may be announced with.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// Largest chunk (block) size a disk may be announced with, and so the largest raw chunk.
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;

/// Fixed part of a DATA body: disk (2), encoding (1), reserved (1), offset (8), raw length (4),
/// digest (32).
pub const DATA_FIXED_LEN: usize = 2 + 1 + 1 + 8 + 4 + DIGEST_LEN;

/// Largest frame body of any type. A DATA frame with a raw payload of `MAX_BLOCK_SIZE` is the
/// largest frame a conforming peer sends; other frames are far smaller.
pub const MAX_FRAME_BODY: u32 = MAX_BLOCK_SIZE + DATA_FIXED_LEN as u32;

/// Length of a blake3 digest.
pub const DIGEST_LEN: usize = 32;

/// Most disks one session may announce.
pub const MAX_DISKS: u16 = 64;
/// Longest session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Longest disk id, in bytes.
pub const MAX_DISK_ID_LEN: usize = 64;
/// Longest agent or receiver version string, in bytes.
pub const MAX_VERSION_STR_LEN: usize = 64;
/// Longest error code string (`SMS.1504`), in bytes.
pub const MAX_CODE_LEN: usize = 16;
/// Longest error message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Most held extents a WELCOME may list, over all disks.
pub const MAX_HELD_EXTENTS: u32 = 65_536;
/// Largest disk size a peer may announce (2^56 bytes = 64 PiB): offsets plus lengths never
/// overflow a u64.
pub const MAX_DISK_SIZE: u64 = 1 << 56;

/// Smallest granule a HASH_REQUEST may ask digests for (4 KiB).
pub const MIN_HASH_GRANULARITY: u32 = 4096;
/// Largest granule a HASH_REQUEST may ask digests for (64 MiB).
pub const MAX_HASH_GRANULARITY: u32 = 64 << 20;
/// Shortest digest a HASH_REQUEST may ask for (8 bytes of keyed blake3).
pub const MIN_HASH_DIGEST_LEN: u8 = 8;
/// Most ranges in one HASH_REQUEST.
pub const MAX_HASH_RANGES: u16 = 4096;
/// Most digests one HASH_REQUEST may ask for (so a HASHES body stays within a frame).
pub const MAX_HASHES_PER_REQUEST: u32 = 32_768;
/// Most fine granules one COMPARE HASH_REQUEST may cover (so either frame of it stays within
/// half a DATA frame).
pub const MAX_COMPARE_FINE: u32 = MAX_HASHES_PER_REQUEST / 2;
/// Most bytes one HASH_REQUEST may ask the receiver to read and hash (1 GiB): bounds the
/// work a single frame can cause.
pub const MAX_HASH_REQUEST_BYTES: u64 = 1 << 30;
/// Most HASH_REQUESTs a sender may have unanswered at once.
pub const MAX_OUTSTANDING_HASH_REQUESTS: usize = 8;
