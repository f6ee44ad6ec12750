//! Helpers shared by the unit tests: frames built byte by byte (so a test can write what no
//! encoder would) and small sample frames.

use bytes::{BufMut, Bytes, BytesMut};

use crate::consts::FRAME_HEADER_LEN;
use crate::frame::{self, FrameType};
use crate::{
    Ack, Data, DecodeError, DiskAnnounce, Done, End, ErrorFrame, Frame, HashRange, HashRequest,
    Hashes, Hello, Welcome,
};

/// A frame body written field by field, with no validation.
#[derive(Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.put_u8(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.put_u16(v);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.put_u32(v);
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.put_u64(v);
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.put_slice(v);
        self
    }
    /// A u16 length prefix and the bytes, whatever they are.
    pub fn str(self, v: &[u8]) -> Self {
        self.u16(v.len() as u16).bytes(v)
    }
}

/// A header for `ty` announcing `body_len` bytes.
pub fn header(ty: u8, body_len: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0] = ty;
    h[4..].copy_from_slice(&body_len.to_be_bytes());
    h
}

/// A whole frame: a header with the right length, then `body`.
pub fn raw_frame(ty: FrameType, body: &[u8]) -> Vec<u8> {
    let mut out = header(ty as u8, body.len() as u32).to_vec();
    out.extend_from_slice(body);
    out
}

/// Decodes the one frame in `bytes`; a decoded frame must use up all of them.
pub fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let frame = frame::decode(&mut buf)?;
    if frame.is_some() {
        assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    } else {
        assert_eq!(&buf[..], bytes, "an incomplete decode must not consume");
    }
    Ok(frame)
}

/// The error decoding a frame of type `ty` with `body` gives.
#[track_caller]
pub fn reject(ty: FrameType, body: &[u8]) -> DecodeError {
    match decode_one(&raw_frame(ty, body)) {
        Ok(f) => panic!("accepted {f:?}"),
        Err(e) => e,
    }
}

/// Asserts that every strict prefix of `body` (cut at `from` bytes or later), framed with a
/// header that matches the shorter length, is refused as truncated.
#[track_caller]
pub fn assert_truncated(ty: FrameType, body: &[u8], from: usize) {
    for n in from..body.len() {
        assert_eq!(
            reject(ty, &body[..n]),
            DecodeError::Truncated,
            "{ty:?} body cut at {n} of {}",
            body.len()
        );
    }
}

/// The frame's bytes, checked against `encoded_len`.
pub fn encode(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    assert_eq!(buf.len(), frame.encoded_len(), "encoded_len of {frame:?}");
    buf
}

/// The frame's body, without its header.
pub fn body(frame: &Frame) -> Vec<u8> {
    encode(frame)[FRAME_HEADER_LEN..].to_vec()
}

/// A HELLO for `n` disks `disk0`.. of 1 GiB with 64 KiB blocks.
pub fn hello(n: usize) -> Hello {
    Hello {
        version_min: 1,
        version_max: 1,
        session_id: "task-0042".into(),
        agent_version: "blockrep 0.1.0".into(),
        disks: (0..n)
            .map(|i| DiskAnnounce {
                id: format!("disk{i}"),
                size: 1 << 30,
                block_size: 64 << 10,
            })
            .collect(),
        verify: false,
        join: false,
        netcheck: false,
    }
}

/// A WELCOME for `n` disks, holding one extent of the first.
pub fn welcome(n: usize) -> Welcome {
    let mut held = vec![Vec::new(); n];
    if let Some(first) = held.first_mut() {
        first.push(crate::Extent {
            offset: 4096,
            len: 8192,
        });
    }
    Welcome {
        version: 1,
        receiver_version: "blockrep 0.1.0".into(),
        held,
    }
}

/// A raw DATA frame of `len` bytes of `fill`.
pub fn data_raw(disk: u16, offset: u64, len: u32, fill: u8) -> Data {
    Data {
        disk,
        encoding: crate::Encoding::Raw,
        offset,
        raw_len: len,
        digest: [fill; 32],
        payload: Bytes::from(vec![fill; len as usize]),
    }
}

/// A zero DATA frame.
pub fn data_zero(disk: u16, offset: u64, len: u32) -> Data {
    Data {
        disk,
        encoding: crate::Encoding::Zero,
        offset,
        raw_len: len,
        digest: [0; 32],
        payload: Bytes::new(),
    }
}

/// A HASH_REQUEST for 8-byte digests of 16 KiB granules of two ranges of `disk`, the second
/// ending in a short granule: 4 + 2 digests.
pub fn hash_request(disk: u16) -> HashRequest {
    HashRequest {
        disk,
        digest_len: 8,
        granularity: 16 << 10,
        key: [0x4b; 32],
        ranges: vec![
            HashRange {
                offset: 0,
                len: 64 << 10,
            },
            HashRange {
                offset: 1 << 20,
                len: 20 << 10,
            },
        ],
        compare: None,
    }
}

/// HASHES of the right shape for `req`. Plain: digest `i` is `digest_len` bytes of `i + fill`.
/// COMPARE: every granule differs, fine digest `j` is `digest_len` bytes of `j + fill`.
pub fn hashes_for(req: &HashRequest, fill: u8) -> Hashes {
    let n = match &req.compare {
        None => req.digest_count(),
        Some(_) => req.fine_count(),
    } as usize;
    let digests: Vec<u8> = (0..n)
        .flat_map(|i| vec![(i as u8).wrapping_add(fill); usize::from(req.digest_len)])
        .collect();
    let mut h = Hashes::plain(req.disk, req.digest_len, Bytes::from(digests));
    if req.compare.is_some() {
        let count = req.digest_count() as usize;
        let mut bitmap = vec![0xffu8; count.div_ceil(8)];
        if !count.is_multiple_of(8) {
            if let Some(last) = bitmap.last_mut() {
                *last = (1u8 << (count % 8)) - 1;
            }
        }
        h.count = count as u32;
        h.differ = Some(Bytes::from(bitmap));
    }
    h
}

/// A COMPARE request over `testutil::hash_request`'s ranges: 4 KiB fine granules, the
/// sender's digests `digest_len` bytes of `fill`.
pub fn compare_request(disk: u16, fill: u8) -> HashRequest {
    let mut req = hash_request(disk);
    let n = req.digest_count() as usize * usize::from(req.digest_len);
    req.compare = Some(crate::frame::Compare {
        fine: 4096,
        digests: Bytes::from(vec![fill; n]),
    });
    req
}

/// One of each frame type.
pub fn one_of_each() -> Vec<Frame> {
    vec![
        Frame::Hello(hello(2)),
        Frame::Welcome(welcome(2)),
        Frame::Data(data_raw(0, 0, 4096, 7)),
        Frame::Ack(Ack {
            frames: 1,
            bytes: 4096,
        }),
        Frame::End(End {
            complete: true,
            frames: 1,
            bytes: 4096,
        }),
        Frame::Done(Done {
            frames: 1,
            bytes: 4096,
            data_bytes: 4096,
            zero_bytes: 0,
        }),
        Frame::Error(ErrorFrame::new("SMS.2011", "digest mismatch")),
        Frame::HashRequest(hash_request(0)),
        Frame::Hashes(hashes_for(&hash_request(0), 1)),
        Frame::HashRequest(compare_request(1, 9)),
        Frame::Hashes(hashes_for(&compare_request(1, 9), 2)),
    ]
}
