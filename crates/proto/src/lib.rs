//! blockrep's wire format and session state machines.
//!
//! This crate turns bytes into frames and frames into session events, and back. It does no
//! I/O, reads no clock and spawns nothing: the tokio driver in the `blockrep` crate moves the
//! bytes, and tests and fuzzers drive the same code with plain buffers. Everything a peer sends
//! is untrusted: every length is checked against a named maximum (see [`consts`]) before
//! anything is allocated, and no input makes this crate panic.
//!
//! The format is written down byte by byte in `docs/PROTOCOL.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod consts;

/// A blake3 digest of a chunk's raw (uncompressed) bytes.
pub type Digest = [u8; consts::DIGEST_LEN];

/// How a DATA frame's payload encodes the chunk's raw bytes. The byte values are part of the
/// wire format and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// The payload is the raw bytes.
    Raw = 0,
    /// The payload is one lz4 block (no size prefix) that decompresses to exactly the raw length.
    Lz4 = 1,
    /// The chunk is all zeros; the payload is empty.
    Zero = 2,
}

impl Encoding {
    /// The encoding for a wire byte, or `None` for an unknown one.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Raw),
            1 => Some(Self::Lz4),
            2 => Some(Self::Zero),
            _ => None,
        }
    }
}

pub mod codec;
pub mod error;
pub mod frame;
pub mod session;
#[cfg(test)]
mod testutil;

pub use error::{DecodeError, ProtocolError};
pub use frame::{
    decode, Ack, Compare, Data, DiskAnnounce, Done, End, ErrorFrame, Extent, Frame, FrameType,
    HashRange, HashRequest, Hashes, Hello, Ping, Welcome,
};
pub use session::{ReceiverEvent, ReceiverSession, SenderEvent, SenderSession, Sent};

#[cfg(any(feature = "fuzzing", test))]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use bytes::BytesMut;
    use proptest::prelude::*;

    use crate::testutil;
    use crate::*;

    fn stream(frames: &[Frame]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for f in frames {
            f.encode(&mut buf);
        }
        buf.to_vec()
    }

    /// The seed streams in fuzz/seeds/frames, by file name.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let mut hello = testutil::hello(2);
        for d in &mut hello.disks {
            d.size = 1 << 20;
            d.block_size = 4096;
        }
        let hello = Frame::Hello(hello);
        let raw = Frame::Data(testutil::data_raw(0, 0, 4096, 0x5a));
        // The payload of an lz4 chunk is opaque here; blockrep-chunk decodes it.
        let lz4 = Frame::Data(Data {
            encoding: Encoding::Lz4,
            payload: bytes::Bytes::from_static(b"\x1fA\x01\x00\xff\xff\xff\xe4PAAAAA"),
            ..testutil::data_raw(1, 4096, 4096, 0x41)
        });
        let zero = Frame::Data(testutil::data_zero(1, 1 << 19, 4096));
        let hash_request = |disk, granularity, ranges: &[(u64, u32)]| {
            Frame::HashRequest(HashRequest {
                disk,
                digest_len: 8,
                granularity,
                key: *b"blockrep fuzz seed key, 32 bytes",
                ranges: ranges
                    .iter()
                    .map(|&(offset, len)| HashRange { offset, len })
                    .collect(),
                compare: None,
            })
        };
        // COMPARE: 16 KiB granules of 4 KiB fine ones, the sender's digests all 0x5a.
        let compare = |disk, ranges: &[(u64, u32)]| {
            let Frame::HashRequest(mut req) = hash_request(disk, 16 << 10, ranges) else {
                unreachable!()
            };
            let n = req.digest_count() as usize * usize::from(req.digest_len);
            req.compare = Some(crate::Compare {
                fine: 4096,
                digests: vec![0x5a; n].into(),
            });
            Frame::HashRequest(req)
        };
        let end = |complete, frames, bytes| {
            Frame::End(End {
                complete,
                frames,
                bytes,
            })
        };
        vec![
            ("hello.bin", stream(std::slice::from_ref(&hello))),
            ("hello_data.bin", stream(&[hello.clone(), raw.clone()])),
            (
                "session.bin",
                stream(&[
                    hello.clone(),
                    raw.clone(),
                    lz4,
                    zero.clone(),
                    end(true, 3, 3 * 4096),
                ]),
            ),
            (
                "stopped.bin",
                stream(&[hello.clone(), zero, end(false, 1, 4096)]),
            ),
            (
                "hashes.bin",
                stream(&[
                    hello.clone(),
                    hash_request(0, 16 << 10, &[(0, 64 << 10), (1 << 19, 20 << 10)]),
                    raw.clone(),
                    hash_request(1, 4096, &[(16 << 10, 16 << 10)]),
                    end(true, 1, 4096),
                ]),
            ),
            (
                "compare.bin",
                stream(&[
                    hello.clone(),
                    compare(0, &[(0, 64 << 10)]),
                    raw.clone(),
                    compare(1, &[(1 << 19, 20 << 10)]),
                    end(true, 1, 4096),
                ]),
            ),
            (
                "error.bin",
                stream(&[
                    hello,
                    raw,
                    Frame::Error(ErrorFrame::new(
                        "SMS.1905",
                        "failed to read the source disk",
                    )),
                ]),
            ),
        ]
    }

    fn seed_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/frames")
    }

    /// Decodes a whole valid stream and runs it through a receiver, checking it is accepted.
    fn assert_valid_session(bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        let mut r = ReceiverSession::new();
        while let Some(frame) = decode(&mut buf).expect("a seed decodes") {
            match r.handle_frame(frame).expect("a seed follows the rules") {
                ReceiverEvent::Hello(h) => {
                    let _ = r.accept("seed", vec![Vec::new(); h.disks.len()]);
                }
                ReceiverEvent::End(_) => {
                    let _ = r.done(0, 0);
                }
                ReceiverEvent::HashRequest(req) => {
                    let _ = r.hashes(testutil::hashes_for(&req, 0));
                }
                _ => {}
            }
        }
        assert!(buf.is_empty(), "a seed ends on a frame boundary");
    }

    /// Runs the fuzz target on every seed file, so the seeds run in every CI, and checks that
    /// the generated seeds are on disk as written (regenerate with `write_fuzz_seeds`).
    #[test]
    fn fuzz_seeds() {
        let dir = seed_dir();
        for (name, bytes) in seeds() {
            assert_valid_session(&bytes);
            let on_disk = std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}: run the ignored test write_fuzz_seeds"));
            assert_eq!(on_disk, bytes, "{name} is stale: run write_fuzz_seeds");
        }
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            fuzzing::receive(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= seeds().len());
    }

    /// `cargo test -p blockrep-proto -- --ignored write_fuzz_seeds` rewrites the seed files.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir = seed_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// Frames with a valid header and any body, of any type, so the fuzz target reaches the
    /// body decoders and the session rules rather than stopping at the header.
    fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
        let ty = prop_oneof![
            prop::sample::select(vec![0x01u8, 0x02, 0x10, 0x11, 0x20, 0x21, 0x30, 0x31, 0x7f]),
            any::<u8>(),
        ];
        proptest::collection::vec((ty, proptest::collection::vec(any::<u8>(), 0..96)), 0..8)
            .prop_map(|frames| {
                let mut out = Vec::new();
                for (ty, body) in frames {
                    out.extend_from_slice(&testutil::header(ty, body.len() as u32));
                    out.extend_from_slice(&body);
                }
                out
            })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Set(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            1 => any::<usize>().prop_map(Mutation::Remove),
            1 => any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for m in mutations {
            let len = bytes.len().max(1);
            match *m {
                Mutation::Set(i, b) if !bytes.is_empty() => bytes[i % len] = b,
                Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                Mutation::Remove(i) if !bytes.is_empty() => {
                    bytes.remove(i % len);
                }
                Mutation::Truncate(i) => bytes.truncate(i % len),
                _ => {}
            }
        }
        bytes
    }

    proptest! {
        #[test]
        fn receive_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            fuzzing::receive(&bytes);
        }

        #[test]
        fn receive_never_panics_on_framed_garbage(
            seed in 0..3usize,
            garbage in framed_garbage(),
        ) {
            // After a valid HELLO (or HELLO and DATA), so the session rules are reached too.
            let mut bytes = seeds()[seed].1.clone();
            bytes.extend_from_slice(&garbage);
            fuzzing::receive(&bytes);
            fuzzing::receive(&garbage);
        }

        #[test]
        fn receive_never_panics_on_mutated_streams(
            seed in 0..6usize,
            mutations in proptest::collection::vec(mutation(), 1..6),
        ) {
            fuzzing::receive(&mutate(seeds()[seed].1.clone(), &mutations));
        }

        #[test]
        fn receive_never_panics_on_valid_frames_in_any_order(
            frames in proptest::collection::vec(crate::frame::tests::frame(), 0..6),
        ) {
            let mut bytes = stream(&[Frame::Hello(testutil::hello(2))]);
            bytes.extend_from_slice(&stream(&frames));
            fuzzing::receive(&bytes);
        }
    }
}
