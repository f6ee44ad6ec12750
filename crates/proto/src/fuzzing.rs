//! Entry points for fuzz targets; unit tests run each on seed inputs so they run in CI.
//!
//! - [`receive`]: any bytes, decoded as frames and fed to a receiver session, as a hostile
//!   sender would send them (`fuzz/fuzz_targets/frames.rs`).
//! - [`session`]: any bytes, read as a list of [`Op`]s that drive a [`SenderSession`] and a
//!   [`ReceiverSession`] talking to each other through two in-memory queues of encoded bytes,
//!   quinn-style: the drivers' calls, deliveries of queued frames, and attacks on the queues
//!   (`fuzz/fuzz_targets/session.rs`). [`session_summary`] says how far a run got.
//!
//! What [`session`] checks (a panic is a finding):
//!
//! - nothing panics, whatever the ops;
//! - every frame either session produces (and every frame the drivers build, and every frame
//!   an attack injects) encodes to `encoded_len()` bytes and decodes back to itself; every
//!   frame decoded from a queue, however damaged the queue, re-encodes to the bytes it came
//!   from;
//! - until the first attack op or driver bug op (both listed in [`Op`]), no side ever sees a
//!   decode error or a protocol error, and each side receives exactly the frames the other sent;
//! - the sender never counts more acknowledged than sent, and while it is open its unacked
//!   frames are exactly the difference;
//! - the receiver never reports DATA for a disk it was not told of, longer than the disk's block
//!   size or past the disk's end, nor a HASH_REQUEST reaching past the disk's end, nor more
//!   unanswered HASH_REQUESTs than allowed, nor END with counts other than its own;
//! - `ReceiverSession::durable` never acknowledges more frames than were received, nor goes
//!   backwards;
//! - the sender matches every HASHES to its oldest unanswered request;
//! - a closed side (after an error, an ERROR either way, or DONE) refuses every frame.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::consts::{
    MAX_BLOCK_SIZE, MAX_COMPARE_FINE, MAX_DISKS, MAX_DISK_ID_LEN, MAX_DISK_SIZE,
    MAX_HASHES_PER_REQUEST, MAX_HASH_REQUEST_BYTES, MAX_OUTSTANDING_HASH_REQUESTS,
    MAX_SESSION_ID_LEN, MAX_VERSION_STR_LEN, MIN_BLOCK_SIZE, MIN_HASH_GRANULARITY, VERSION_MAX,
};
use crate::frame::check;
use crate::{
    decode, Ack, Compare, Data, DiskAnnounce, Done, Encoding, End, ErrorFrame, Extent, Frame,
    HashRange, HashRequest, Hashes, Hello, Ping, ReceiverEvent, ReceiverSession, SenderEvent,
    SenderSession, Sent, Welcome,
};

/// Decodes every frame in `data` and feeds them to a receiver session, as a hostile sender
/// would, answering as a driver would (accept every HELLO, acknowledge as data arrives,
/// DONE after END). Must never panic. Frames that decode must re-encode to the same bytes,
/// and the frames the receiver answers with must decode to themselves.
pub fn receive(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut session = ReceiverSession::new();
    loop {
        let before = buf.clone();
        match decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = before.len() - buf.len();
                let mut again = BytesMut::new();
                frame.encode(&mut again);
                assert_eq!(&again[..], &before[..used], "re-encoding differs");
                match session.handle_frame(frame) {
                    Ok(ReceiverEvent::Hello(_)) => {
                        let held = vec![Vec::new(); session.disks().len()];
                        reply(session.accept("fuzz", held));
                    }
                    Ok(ReceiverEvent::Data(_)) => {
                        // A batching driver: every other frame makes a batch durable.
                        let (frames, bytes) = session.received();
                        if frames % 2 == 0 {
                            reply_opt(session.durable(frames, bytes));
                        }
                    }
                    Ok(ReceiverEvent::End(_)) => {
                        let (frames, bytes) = session.received();
                        reply_opt(session.durable(frames, bytes));
                        reply(session.done(bytes, 0));
                    }
                    Ok(ReceiverEvent::HashRequest(req)) => {
                        // An answer of the right shape (contents do not matter here):
                        // zero digests, or no granule differs.
                        let n = req.digest_count() as usize;
                        let mut h = crate::Hashes::plain(
                            req.disk,
                            req.digest_len,
                            vec![0u8; n * usize::from(req.digest_len)].into(),
                        );
                        if req.compare.is_some() {
                            h.digests = bytes::Bytes::new();
                            h.differ = Some(vec![0u8; n.div_ceil(8)].into());
                        }
                        reply(session.hashes(h));
                    }
                    Ok(ReceiverEvent::Ping(p)) => reply(session.pong(p)),
                    Ok(ReceiverEvent::PeerError(_)) => {}
                    Err(_) => return,
                }
            }
            Ok(None) => {
                assert_eq!(buf, before, "an incomplete frame must not be consumed");
                return;
            }
            Err(_) => return,
        }
    }
}

fn reply_opt(frame: Option<Frame>) {
    if let Some(frame) = frame {
        reply(frame);
    }
}

/// What the receiver sends must be a frame the sender can decode.
fn reply(frame: Frame) {
    let mut bytes = BytesMut::new();
    frame.encode(&mut bytes);
    assert_eq!(bytes.len(), frame.encoded_len(), "encoded_len differs");
    assert_eq!(decode(&mut bytes), Ok(Some(frame)), "reply does not decode");
    assert!(bytes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Structured session fuzzing.

/// Most ops one input runs.
pub const MAX_OPS: usize = 256;

/// Largest raw DATA payload the ops build (bigger chunks are sent as zero chunks): the payload's
/// bytes do not matter here (`blockrep-chunk` verifies them), its cost does.
const MAX_RAW_PAYLOAD: u32 = 4096;

/// Most frames one [`Op::Flush`] moves.
const MAX_FLUSH: usize = 1024;

/// One side of the connection.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The sender (source host).
    Sender,
    /// The receiver (target host).
    Receiver,
}

/// One step of a fuzzed session: a driver's call on its session, a delivery of queued bytes, or
/// an attack on a queue. Ops that do not apply (DATA before WELCOME, an answer with no request
/// unanswered, anything on a closed side) are skipped, as a driver would not make the call.
///
/// The attacks are [`Op::Inject`] and [`Op::Corrupt`]. Some driver ops can also act as a buggy
/// driver (their `wild`, `shape`, `tamper` or `duplicate` field says when); after the first attack
/// or driver bug, protocol errors are expected and only the other invariants are checked.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The sender driver connects: a new sender session sends its HELLO (once).
    Hello(HelloOp),
    /// The receiver driver accepts the HELLO it is deciding on: WELCOME.
    Accept(AcceptOp),
    /// The receiver driver refuses the HELLO it is deciding on: ERROR.
    Refuse(ErrorOp),
    /// The sender driver writes one DATA frame and records it (while streaming).
    Data(DataOp),
    /// The sender driver sends a HASH_REQUEST (while streaming, with room for one more).
    HashRequest(HashRequestOp),
    /// The receiver driver answers the oldest unanswered HASH_REQUEST: HASHES.
    Answer(AnswerOp),
    /// The receiver driver reports frames durable: `ReceiverSession::durable`, ACK if new.
    Durable(DurableOp),
    /// The sender driver sends END (while streaming, once every HASH_REQUEST is answered).
    End {
        /// False: stopped early.
        complete: bool,
    },
    /// The receiver driver, after END: everything durable (the last ACK), then DONE.
    Done,
    /// A driver ends the session with an ERROR.
    Abort {
        /// Whose driver.
        side: Side,
        /// What it says.
        error: ErrorOp,
    },
    /// `side` reads the next whole frame queued to it, if there is one.
    Deliver(Side),
    /// Both sides read everything queued to them, until nothing moves.
    Flush,
    /// Attack: a well-formed frame of any type, appended to the queue to `to`.
    Inject {
        /// Whose queue.
        to: Side,
        /// The frame.
        frame: FuzzFrame,
    },
    /// Attack: the bytes queued to `to` are damaged.
    Corrupt {
        /// Whose queue.
        to: Side,
        /// How.
        how: Corruption,
    },
    /// The sender driver of a network check sends a PING with `pad % 4096` bytes of padding
    /// (while streaming, at most 64 unanswered).
    Ping {
        /// Padding.
        pad: u16,
    },
}

/// The sender's HELLO: 1 to 4 disks, of any valid size and block size, unique ids.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct HelloOp {
    /// Disks announced: `1 + count % 4` of `disks`.
    pub count: u8,
    /// The disks.
    pub disks: [DiskOp; 4],
    /// `% 4`: no flag, VERIFY, JOIN, NETCHECK (then no disks).
    pub flags: u8,
    /// The session id (`% 4`) and agent version (`/ 4 % 3`).
    pub names: u8,
    /// `% 16 == 15`, with two disks or more: the last disk has the first's id (a driver bug).
    pub duplicate: u8,
}

/// One announced disk.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct DiskOp {
    /// `% 4`: at most 64 KiB, 64 MiB, 1 TiB or `MAX_DISK_SIZE`.
    pub class: u8,
    /// The size is `1 + size % (the class's maximum)`.
    pub size: u64,
    /// The block size is `MIN_BLOCK_SIZE << (shift % 9)`.
    pub shift: u8,
    /// The id's form, `% 4`.
    pub name: u8,
}

/// The receiver's WELCOME: what it holds of each disk (a resumed session).
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct AcceptOp {
    /// Per disk (in HELLO order), at most 4 held extents, ascending, inside the disk.
    pub held: [Vec<HeldOp>; 4],
    /// `% 8`: 0 to 4, as a journal gives them; 5, two extents out of order; 6, an extent past
    /// the disk's end; 7, overlapping extents (driver bugs, when there is something to break).
    pub tamper: u8,
}

/// One held extent, in units of 1/4096 of its disk (at least one byte): after a gap of
/// `gap % 1024` units, `1 + len % 1024` units, cut at the disk's end.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldOp {
    /// Units between the previous extent's end (or the disk's start) and this one.
    pub gap: u16,
    /// Units long.
    pub len: u16,
}

/// An ERROR's code and message (`ErrorFrame::new` makes any of them valid).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorOp {
    /// Which code: service codes, and ones `ErrorFrame::new` must replace.
    pub code: u8,
    /// Which message: short, empty, too long, cut inside a character.
    pub message: u8,
}

/// One DATA frame.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOp {
    /// Disk index, `% disks`.
    pub disk: u8,
    /// A whole chunk (chunk `index % chunks`, the last one short), or any `len` at any offset.
    pub aligned: bool,
    /// The chunk, when aligned.
    pub index: u32,
    /// The offset, when not aligned: `offset % (room)`.
    pub offset: u64,
    /// The length, when not aligned: `1 + len % min(block size, disk size)`.
    pub len: u32,
    /// `% 3`: raw (at most `MAX_RAW_PAYLOAD` bytes, else zero), lz4, zero.
    pub encoding: u8,
    /// The payload's bytes and digest.
    pub fill: u8,
    /// `% 16`: 0 to 11 inside the disk; 12, an unknown disk; 13, past the disk's end; 14, longer
    /// than the block size; 15, an end that overflows a u64 (driver bugs).
    pub wild: u8,
}

/// One HASH_REQUEST.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct HashRequestOp {
    /// Disk index, `% disks`.
    pub disk: u8,
    /// The COMPARE form.
    pub compare: bool,
    /// `8 + digest_len % 25` bytes.
    pub digest_len: u8,
    /// Granularity `4 KiB << (shift % 15)` (at least 8 KiB for COMPARE).
    pub shift: u8,
    /// COMPARE: fine granule `granularity >> (1 + fine % 3)`, at least 4 KiB.
    pub fine: u8,
    /// The key, and the sender's COMPARE digests.
    pub key: u8,
    /// 1 to 4 ranges (none: one).
    pub ranges: Vec<RangeOp>,
    /// `% 16`: 0 to 12 inside the disk; 13, an unknown disk; 14, a range starting past the
    /// disk's end; 15, a range one byte past the disk's end (driver bugs).
    pub wild: u8,
}

/// One requested range: `1 + granules % 16` granules from granule `start % (granules in the
/// disk)`, the last one `short % granularity` bytes short, cut at the disk's end (and at 1 GiB
/// for the whole request).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeOp {
    /// First granule.
    pub start: u32,
    /// Granules.
    pub granules: u8,
    /// Bytes short.
    pub short: u32,
}

/// The receiver's answer to its oldest unanswered request.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerOp {
    /// COMPARE: granule `i` differs when bit `i % 64` is set.
    pub differ: u64,
    /// The digests' bytes.
    pub fill: u8,
    /// `% 16`: 0 to 9, the right shape; 10, another disk; 11, another digest length; 12, one
    /// granule more; 13, one granule fewer; 14, the other form; 15, one fine digest more
    /// (COMPARE; plain: one granule more). Driver bugs, all but the first.
    pub shape: u8,
}

/// What the receiver's writer reports durable.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableOp {
    /// `% 4 == 3`: `1 + frames % 4` frames more than were received (and any byte count);
    /// otherwise the first `received - frames % (received + 1)` frames and their bytes.
    pub beyond: u8,
    /// How many frames back (or beyond).
    pub frames: u32,
    /// The byte count reported with frames beyond.
    pub bytes: u64,
}

/// Damage to the bytes queued one way.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Byte `at % len` is XORed with `mask` (at least 1).
    Flip {
        /// Which byte.
        at: u16,
        /// The bits flipped.
        mask: u8,
    },
    /// Only the first `at % len` bytes stay.
    Truncate {
        /// How many stay.
        at: u16,
    },
    /// The next whole frame is there twice.
    Duplicate,
    /// The next whole frame is gone (or, if there is none, everything queued).
    Drop,
}

/// A well-formed frame of any type, every field within the ranges the decoder accepts, so
/// that `decode(encode(f)) == f` must hold; or a near miss, built from the state of the session
/// it is injected into (what the peer would send, a little off).
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum FuzzFrame {
    /// HELLO: at most `MAX_DISKS` disks (id form, size, block size shift).
    Hello {
        /// At least 1.
        version_min: u16,
        /// At least `version_min`.
        version_max: u16,
        /// The session id and agent version.
        names: u8,
        /// The disks.
        disks: Vec<(u8, u64, u8)>,
        /// `% 4`: no flag, VERIFY, JOIN, NETCHECK (then no disks).
        flags: u8,
    },
    /// WELCOME: at most `MAX_DISKS` lists, 64 extents in all.
    Welcome {
        /// At least 1.
        version: u16,
        /// The receiver version's form.
        names: u8,
        /// Extents (offset, length), made non-empty and not overflowing.
        held: Vec<Vec<(u64, u64)>>,
    },
    /// DATA.
    Data {
        /// Any disk index.
        disk: u16,
        /// Any offset.
        offset: u64,
        /// `1 + raw_len % MAX_BLOCK_SIZE` (raw: at most `MAX_RAW_PAYLOAD`; lz4: at least 2).
        raw_len: u32,
        /// `% 3`.
        encoding: u8,
        /// lz4: the payload's length.
        payload: u16,
        /// The payload's bytes.
        fill: u8,
    },
    /// ACK.
    Ack {
        /// Any.
        frames: u64,
        /// Any.
        bytes: u64,
    },
    /// END.
    End {
        /// Any.
        complete: bool,
        /// Any.
        frames: u64,
        /// Any.
        bytes: u64,
    },
    /// DONE.
    Done {
        /// Any.
        frames: u64,
        /// Any.
        bytes: u64,
        /// Any.
        data_bytes: u64,
        /// Any.
        zero_bytes: u64,
    },
    /// ERROR, through `ErrorFrame::new`.
    Error {
        /// Any string.
        code: String,
        /// Any string.
        message: String,
    },
    /// HASH_REQUEST: at most 16 ranges of at most 16 granules.
    HashRequest {
        /// Any disk index.
        disk: u16,
        /// `8 + digest_len % 25`.
        digest_len: u8,
        /// Granularity `4 KiB << (shift % 15)`.
        shift: u8,
        /// The key's bytes.
        key: u8,
        /// Ranges (offset, length), aligned, cut to fit.
        ranges: Vec<(u64, u32)>,
        /// COMPARE: fine granule shift and the sender's digests' bytes.
        compare: Option<(u8, u8)>,
    },
    /// HASHES: at most 64 granules.
    Hashes {
        /// Any disk index.
        disk: u16,
        /// `8 + digest_len % 25`.
        digest_len: u8,
        /// Granules, `% 65`.
        count: u8,
        /// COMPARE: the bitmap's bits (cut to `count`), and fine digests (`% 65`).
        compare: Option<(u64, u8)>,
        /// The digests' bytes.
        fill: u8,
    },
    /// An ACK the sender could take: its acknowledged counts plus (frames, bytes).
    AckNear {
        /// Frames more (or fewer) than acknowledged.
        frames: i8,
        /// Bytes more (or fewer) than those frames hold.
        bytes: i16,
    },
    /// An END the receiver could take: its received counts plus (frames, bytes).
    EndNear {
        /// Any.
        complete: bool,
        /// Frames more (or fewer).
        frames: i8,
        /// Bytes more (or fewer).
        bytes: i16,
    },
    /// A DONE the sender could take: its sent counts plus (frames, bytes).
    DoneNear {
        /// Frames more (or fewer).
        frames: i8,
        /// Bytes more (or fewer).
        bytes: i16,
    },
    /// A zero DATA chunk at a disk's end, moved by `shift` bytes.
    DataNear {
        /// Disk index, `% (disks + 1)`.
        disk: u8,
        /// `1 + raw_len % MAX_BLOCK_SIZE`.
        raw_len: u32,
        /// Added to the offset that ends the chunk at the disk's end.
        shift: i16,
    },
    /// An answer to the sender's oldest unanswered request, as [`Op::Answer`] builds it.
    HashesNear(AnswerOp),
    /// PING: `pad % 4096` bytes of padding.
    Ping {
        /// Sequence number.
        seq: u64,
        /// The sender's clock.
        time: u64,
        /// Padding.
        pad: u16,
    },
    /// PONG, any numbers.
    Pong {
        /// Sequence number.
        seq: u64,
        /// The sender's clock.
        time: u64,
        /// Padding answered for.
        pad: u32,
    },
}

/// How far a [`session`] run got, for tests that check seeds reach where they should.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Ops read from the input.
    pub ops: usize,
    /// The first attack or driver bug, if any.
    pub attack: Option<String>,
    /// HELLOs the receiver took.
    pub hellos: usize,
    /// The sender took a WELCOME.
    pub accepted: bool,
    /// Held extents in the WELCOMEs the sender took.
    pub held: usize,
    /// The sender took an ERROR before any WELCOME.
    pub refused: bool,
    /// DATA frames the receiver took.
    pub data: u64,
    /// Frames the sender saw acknowledged.
    pub acked: u64,
    /// HASHES the sender took.
    pub hash_answers: usize,
    /// COMPARE answers among `hash_answers`.
    pub compare_answers: usize,
    /// The receiver took END.
    pub ended: bool,
    /// The sender took DONE.
    pub done: bool,
    /// PONGs the sender took (network checks).
    pub pongs: usize,
    /// ERRORs either side took.
    pub peer_errors: usize,
    /// Protocol or decode errors either side hit (only ever after an attack).
    pub errors: usize,
}

/// The fuzz target: `data` read as ops (see [`ops`]) and run (see [`session_ops`]).
pub fn session(data: &[u8]) {
    let _ = session_summary(data);
}

/// [`session`], saying how far it got.
pub fn session_summary(data: &[u8]) -> Summary {
    session_ops(&ops(data))
}

/// `data` read as up to [`MAX_OPS`] ops.
pub fn ops(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Runs `ops` on a fresh pair of sessions, checking the invariants after each; panics on a
/// violation.
pub fn session_ops(ops: &[Op]) -> Summary {
    let mut h = Harness::new();
    h.summary.ops = ops.len();
    for (i, op) in ops.iter().enumerate() {
        h.step = i;
        h.apply(op);
        h.check();
    }
    h.summary
}

/// Checks the round trip `decode(encode(f)) == f` of a structured frame built from `data`:
/// every [`FuzzFrame`] (near misses built against fresh sessions) must survive it.
pub fn frame_round_trip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let h = Harness::new();
    while let Ok(f) = FuzzFrame::arbitrary(&mut u) {
        let _ = wire(&h.build_frame(&f));
        if u.is_empty() {
            break;
        }
    }
}

/// Encodes `frame`, checking `encoded_len` and that it decodes back to itself.
fn wire(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    assert_eq!(buf.len(), frame.encoded_len(), "encoded_len of {frame:?}");
    let bytes = buf.clone().freeze();
    match decode(&mut buf) {
        Ok(Some(back)) => assert_eq!(&back, frame, "{frame:?} decodes to another frame"),
        other => panic!("{frame:?} does not decode: {other:?}"),
    }
    assert!(buf.is_empty(), "{frame:?} decodes from fewer bytes");
    bytes
}

/// The bytes on their way one way, and (until the first attack) the frames they hold.
#[derive(Default)]
struct Queue {
    buf: BytesMut,
    /// The reader gave up on this connection (a decode error): nothing more is read.
    dead: bool,
    /// While the exchange is honest: the frames queued, oldest first.
    frames: VecDeque<Frame>,
}

/// The receiver driver's state, as the real one (src/receiver) keeps it.
#[derive(Debug, Default)]
struct ReceiverBooks {
    /// A HELLO is waiting for `accept` or `refuse`.
    deciding: bool,
    /// WELCOME sent.
    accepted: bool,
    /// END taken: only `durable` and `done` remain.
    ended: bool,
    /// Closed: an error, an ERROR either way, or DONE sent.
    closed: bool,
    /// Raw bytes in the first `i` DATA frames taken, for every `i`.
    prefix: Vec<u64>,
    /// Of those, bytes of zero chunks.
    zero_bytes: u64,
    /// Frames acknowledged so far.
    acked: u64,
    /// HASH_REQUESTs taken and not answered, oldest first.
    to_answer: VecDeque<HashRequest>,
}

/// The sender driver's state.
#[derive(Default)]
struct SenderBooks {
    closed: bool,
    /// HASH_REQUESTs sent and not answered, oldest first.
    asked: VecDeque<HashRequest>,
    /// PINGs sent and not answered, oldest first.
    pings: VecDeque<Ping>,
}

struct Harness {
    step: usize,
    sender: Option<SenderSession>,
    receiver: ReceiverSession,
    /// The HELLO the sender announced.
    hello: Option<Hello>,
    to_receiver: Queue,
    to_sender: Queue,
    rx: ReceiverBooks,
    tx: SenderBooks,
    summary: Summary,
}

impl Harness {
    fn new() -> Self {
        Self {
            step: 0,
            sender: None,
            receiver: ReceiverSession::new(),
            hello: None,
            to_receiver: Queue::default(),
            to_sender: Queue::default(),
            rx: ReceiverBooks {
                prefix: vec![0],
                ..ReceiverBooks::default()
            },
            tx: SenderBooks::default(),
            summary: Summary::default(),
        }
    }

    fn honest(&self) -> bool {
        self.summary.attack.is_none()
    }

    /// From now on, errors are expected.
    fn attack(&mut self, what: impl FnOnce() -> String) {
        if self.summary.attack.is_none() {
            self.summary.attack = Some(format!("op {}: {}", self.step, what()));
            self.to_receiver.frames.clear();
            self.to_sender.frames.clear();
        }
    }

    fn queue(&mut self, to: Side) -> &mut Queue {
        match to {
            Side::Sender => &mut self.to_sender,
            Side::Receiver => &mut self.to_receiver,
        }
    }

    /// A driver writes `frame` to the connection towards `to`.
    fn send(&mut self, to: Side, frame: Frame) {
        let bytes = wire(&frame);
        let honest = self.honest();
        let q = self.queue(to);
        if q.dead {
            return;
        }
        q.buf.extend_from_slice(&bytes);
        if honest {
            q.frames.push_back(frame);
        }
    }

    fn sender_open(&self) -> bool {
        self.sender.is_some() && !self.tx.closed
    }

    fn streaming(&self) -> bool {
        self.sender_open()
            && self
                .sender
                .as_ref()
                .is_some_and(SenderSession::is_streaming)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Hello(op) => self.op_hello(op),
            Op::Accept(op) => self.op_accept(op),
            Op::Refuse(e) => {
                if self.rx.deciding && !self.rx.closed {
                    let (code, message) = error_text(*e);
                    let f = self.receiver.refuse(&code, &message);
                    self.rx.closed = true;
                    self.rx.deciding = false;
                    self.send(Side::Sender, f);
                }
            }
            Op::Data(op) => self.op_data(op),
            Op::HashRequest(op) => self.op_hash_request(op),
            Op::Answer(op) => self.op_answer(op),
            Op::Durable(op) => self.op_durable(op),
            Op::End { complete } => {
                if self.streaming() && self.tx.asked.is_empty() && self.tx.pings.is_empty() {
                    let sender = self.sender.as_mut().expect("streaming");
                    let f = sender.end(*complete);
                    assert!(!sender.is_streaming());
                    self.send(Side::Receiver, f);
                }
            }
            Op::Done => self.op_done(),
            Op::Abort { side, error } => {
                let (code, message) = error_text(*error);
                match side {
                    Side::Sender if self.sender_open() => {
                        let sender = self.sender.as_mut().expect("open");
                        let f = sender.abort(&code, &message);
                        self.tx.closed = true;
                        self.send(Side::Receiver, f);
                    }
                    Side::Receiver if !self.rx.closed => {
                        let f = self.receiver.refuse(&code, &message);
                        self.rx.closed = true;
                        self.send(Side::Sender, f);
                    }
                    _ => {}
                }
            }
            Op::Deliver(side) => {
                self.deliver(*side);
            }
            Op::Flush => {
                let mut moved = 0;
                while moved < MAX_FLUSH {
                    let mut any = false;
                    while moved < MAX_FLUSH && self.deliver(Side::Receiver) {
                        moved += 1;
                        any = true;
                    }
                    while moved < MAX_FLUSH && self.deliver(Side::Sender) {
                        moved += 1;
                        any = true;
                    }
                    if !any {
                        break;
                    }
                }
            }
            Op::Inject { to, frame } => {
                let f = self.build_frame(frame);
                let bytes = wire(&f);
                self.attack(|| format!("injected {f:?} towards the {to:?}"));
                let q = self.queue(*to);
                if !q.dead {
                    q.buf.extend_from_slice(&bytes);
                }
            }
            Op::Corrupt { to, how } => self.op_corrupt(*to, *how),
            Op::Ping { pad } => {
                if self.streaming() && self.netcheck() && self.tx.pings.len() < 64 {
                    let ping = Ping {
                        seq: self.step as u64,
                        time: u64::from(*pad) << 20 | self.step as u64,
                        pad: u32::from(*pad % 4096),
                    };
                    let f = self.sender.as_mut().expect("streaming").ping(ping);
                    self.tx.pings.push_back(ping);
                    self.send(Side::Receiver, f);
                }
            }
        }
    }

    fn op_hello(&mut self, op: &HelloOp) {
        if self.sender.is_some() {
            return;
        }
        let count = 1 + usize::from(op.count % 4);
        let mut disks: Vec<DiskAnnounce> = op.disks[..count]
            .iter()
            .enumerate()
            .map(|(i, d)| DiskAnnounce {
                id: disk_id(d.name, i),
                size: disk_size(d.class, d.size),
                block_size: MIN_BLOCK_SIZE << (d.shift % 9),
            })
            .collect();
        if op.duplicate % 16 == 15 && count >= 2 {
            disks[count - 1].id = disks[0].id.clone();
            self.attack(|| "HELLO with a disk id twice".into());
        }
        let (session_id, agent_version) = names(op.names);
        let netcheck = op.flags % 4 == 3;
        if netcheck {
            disks.clear();
        }
        let hello = Hello {
            version_min: 1,
            version_max: 1,
            session_id,
            agent_version,
            disks,
            verify: op.flags % 4 == 1,
            join: op.flags % 4 == 2,
            netcheck,
        };
        let sender = SenderSession::new(hello);
        let f = sender.hello();
        let Frame::Hello(h) = &f else {
            panic!("hello() is not a HELLO: {f:?}")
        };
        self.hello = Some(h.clone());
        self.sender = Some(sender);
        self.send(Side::Receiver, f);
    }

    fn op_accept(&mut self, op: &AcceptOp) {
        if !self.rx.deciding || self.rx.closed {
            return;
        }
        let disks = self.receiver.disks().to_vec();
        let mut held: Vec<Vec<Extent>> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| held_extents(d.size, op.held.get(i).map_or(&[][..], |v| &v[..])))
            .collect();
        let tamper = op.tamper % 8;
        let broken = match tamper {
            5 => held.iter_mut().find(|e| e.len() >= 2).map(|e| e.swap(0, 1)),
            6 => held
                .iter_mut()
                .zip(&disks)
                .next()
                .map(|(e, d)| match e.last_mut() {
                    Some(last) => last.len += d.size,
                    None => e.push(Extent {
                        offset: d.size,
                        len: 1,
                    }),
                }),
            7 => held.iter_mut().find(|e| !e.is_empty()).map(|e| {
                let first = e[0];
                match e.get_mut(1) {
                    Some(second) => second.offset = first.offset,
                    None => e.push(first),
                }
            }),
            _ => None,
        };
        if broken.is_some() {
            self.attack(|| format!("WELCOME with bad held extents ({tamper})"));
        }
        let f = self.receiver.accept("fuzz 0.1", held);
        self.rx.deciding = false;
        self.rx.accepted = true;
        self.send(Side::Sender, f);
    }

    /// The disks the sender announced, if it did.
    fn sender_disks(&self) -> &[DiskAnnounce] {
        self.hello.as_ref().map_or(&[], |h| &h.disks[..])
    }

    /// The session is a network check (no disks, no DATA or HASH_REQUEST).
    fn netcheck(&self) -> bool {
        self.hello.as_ref().is_some_and(|h| h.netcheck)
    }

    fn op_data(&mut self, op: &DataOp) {
        if !self.streaming() || self.netcheck() {
            return;
        }
        let disks = self.sender_disks();
        let index = usize::from(op.disk) % disks.len();
        let d = &disks[index];
        let (size, bs) = (d.size, d.block_size);
        let (mut offset, mut raw_len) = if op.aligned {
            let chunks = size.div_ceil(u64::from(bs));
            let offset = u64::from(op.index) % chunks * u64::from(bs);
            (offset, (size - offset).min(u64::from(bs)) as u32)
        } else {
            let raw_len = 1 + op.len % (u64::from(bs).min(size) as u32);
            let room = size - u64::from(raw_len) + 1;
            (op.offset % room, raw_len)
        };
        let mut disk = index as u16;
        let wild = op.wild % 16;
        match wild {
            12 => disk = (disks.len() + usize::from(op.disk % 8)) as u16,
            13 => offset = size - u64::from(raw_len) + 1 + op.offset % 4096,
            14 if bs < MAX_BLOCK_SIZE => {
                raw_len = bs + 1 + op.len % (MAX_BLOCK_SIZE - bs);
                offset = 0;
            }
            14 => offset = size - u64::from(raw_len) + 1,
            15 => offset = u64::MAX - op.offset % u64::from(raw_len),
            _ => {}
        }
        if wild >= 12 {
            self.attack(|| format!("DATA outside the disks ({wild})"));
        }
        let data = data_frame(disk, offset, raw_len, op.encoding, op.fill, op.fill);
        let sender = self.sender.as_mut().expect("streaming");
        sender.record_data(Sent {
            disk,
            offset,
            raw_len,
        });
        self.send(Side::Receiver, Frame::Data(data));
    }

    fn op_hash_request(&mut self, op: &HashRequestOp) {
        if !self.streaming()
            || self.netcheck()
            || self.tx.asked.len() >= MAX_OUTSTANDING_HASH_REQUESTS
        {
            return;
        }
        let disks = self.sender_disks();
        let index = usize::from(op.disk) % disks.len();
        let size = disks[index].size;
        let mut granularity = MIN_HASH_GRANULARITY << (op.shift % 15);
        if op.compare {
            granularity = granularity.max(2 * MIN_HASH_GRANULARITY);
        }
        let g = u64::from(granularity);
        let slots = size.div_ceil(g);
        let mut budget = MAX_HASH_REQUEST_BYTES;
        let mut ranges = Vec::new();
        for r in op.ranges.iter().take(4).chain(
            // No range: one of one granule.
            op.ranges.is_empty().then_some(&RangeOp {
                start: 0,
                granules: 0,
                short: 0,
            }),
        ) {
            let offset = u64::from(r.start) % slots * g;
            let whole = (1 + u64::from(r.granules % 16)) * g;
            let mut len = whole.min(size - offset).min(budget);
            if len == 0 {
                break;
            }
            len -= (u64::from(r.short) % g).min(len - 1);
            budget -= len;
            ranges.push(HashRange {
                offset,
                len: len as u32,
            });
        }
        let mut disk = index as u16;
        let wild = op.wild % 16;
        match wild {
            13 => disk = (disks.len() + usize::from(op.disk % 8)) as u16,
            14 => {
                ranges = vec![HashRange {
                    offset: slots * g,
                    len: granularity,
                }]
            }
            15 => {
                let offset = (slots - 1) * g;
                ranges = vec![HashRange {
                    offset,
                    len: (size - offset + 1) as u32,
                }];
            }
            _ => {}
        }
        if wild >= 13 {
            self.attack(|| format!("HASH_REQUEST outside the disks ({wild})"));
        }
        let digest_len = 8 + op.digest_len % 25;
        let mut req = HashRequest {
            disk,
            digest_len,
            granularity,
            key: [op.key; 32],
            ranges,
            compare: None,
        };
        if op.compare {
            let fine = (granularity >> (1 + op.fine % 3)).max(MIN_HASH_GRANULARITY);
            let n = req.digest_count() as usize * usize::from(digest_len);
            req.compare = Some(Compare {
                fine,
                digests: vec![op.key; n].into(),
            });
        }
        let sender = self.sender.as_mut().expect("streaming");
        let f = sender.request_hashes(req.clone());
        assert_eq!(f, Frame::HashRequest(req.clone()));
        self.tx.asked.push_back(req);
        self.send(Side::Receiver, f);
    }

    fn op_answer(&mut self, op: &AnswerOp) {
        if self.rx.closed {
            return;
        }
        let Some(req) = self.rx.to_answer.pop_front() else {
            return;
        };
        let (answer, bad) = answer(&req, op);
        if let Some(bad) = bad {
            self.attack(|| format!("HASHES of the wrong shape: {bad}"));
        }
        let f = self.receiver.hashes(answer.clone());
        assert_eq!(f, Frame::Hashes(answer));
        self.send(Side::Sender, f);
    }

    fn op_durable(&mut self, op: &DurableOp) {
        if !self.rx.accepted || self.rx.closed {
            return;
        }
        let received = (self.rx.prefix.len() - 1) as u64;
        let (frames, bytes) = if op.beyond % 4 == 3 {
            (received + 1 + u64::from(op.frames % 4), op.bytes)
        } else {
            let frames = received - u64::from(op.frames) % (received + 1);
            (frames, self.rx.prefix[frames as usize])
        };
        self.durable(frames, bytes);
    }

    /// The receiver driver reports `frames` durable; the ACK, if any, goes to the sender.
    fn durable(&mut self, frames: u64, bytes: u64) {
        let received = (self.rx.prefix.len() - 1) as u64;
        let Some(f) = self.receiver.durable(frames, bytes) else {
            return;
        };
        let Frame::Ack(ack) = f else {
            panic!("durable returned {f:?}")
        };
        assert!(
            ack.frames <= received,
            "durable({frames}, {bytes}) acknowledged {} frames, {received} received",
            ack.frames
        );
        assert!(ack.frames > self.rx.acked, "ACK going backwards: {ack:?}");
        assert_eq!(ack.bytes, self.rx.prefix[ack.frames as usize], "{ack:?}");
        self.rx.acked = ack.frames;
        self.send(Side::Sender, f);
    }

    fn op_done(&mut self) {
        if !self.rx.ended || self.rx.closed {
            return;
        }
        let (frames, bytes) = self.receiver.received();
        self.durable(frames, bytes);
        let f = self
            .receiver
            .done(bytes - self.rx.zero_bytes, self.rx.zero_bytes);
        self.rx.closed = true;
        self.send(Side::Sender, f);
    }

    fn op_corrupt(&mut self, to: Side, how: Corruption) {
        let q = self.queue(to);
        if q.dead || q.buf.is_empty() {
            return;
        }
        let len = q.buf.len();
        match how {
            Corruption::Flip { at, mask } => q.buf[usize::from(at) % len] ^= mask.max(1),
            Corruption::Truncate { at } => q.buf.truncate(usize::from(at) % len),
            Corruption::Duplicate => match check(&q.buf) {
                Ok(Some(n)) => {
                    let copy = q.buf[..n].to_vec();
                    let rest = q.buf.split_off(0);
                    q.buf.extend_from_slice(&copy);
                    q.buf.extend_from_slice(&rest);
                }
                _ => return,
            },
            Corruption::Drop => match check(&q.buf) {
                Ok(Some(n)) => {
                    let _ = q.buf.split_to(n);
                }
                _ => q.buf.clear(),
            },
        }
        self.attack(|| format!("{how:?} on the bytes to the {to:?}"));
    }

    /// `side` reads the next whole frame queued to it. False when there is none.
    fn deliver(&mut self, side: Side) -> bool {
        if side == Side::Sender && self.sender.is_none() {
            // Not connected yet.
            return false;
        }
        let honest = self.honest();
        let q = self.queue(side);
        if q.dead {
            return false;
        }
        let before = q.buf.clone();
        let frame = match decode(&mut q.buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                assert_eq!(q.buf, before, "an incomplete frame must not be consumed");
                return false;
            }
            Err(e) => {
                // The driver gives up on the connection: it reads nothing more.
                q.dead = true;
                q.buf.clear();
                assert!(!honest, "the {side:?} cannot decode what was sent: {e}");
                self.fail(side, &e.to_string());
                return true;
            }
        };
        let used = before.len() - q.buf.len();
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(
            &again[..],
            &before[..used],
            "{frame:?} re-encodes differently"
        );
        if honest {
            let sent = q.frames.pop_front();
            assert_eq!(
                sent.as_ref(),
                Some(&frame),
                "the {side:?} read another frame"
            );
        }
        match side {
            Side::Receiver => self.receiver_takes(frame),
            Side::Sender => self.sender_takes(frame),
        }
        true
    }

    /// A protocol or decode error on `side`: its driver sends ERROR (as src/receiver and
    /// src/sender do) and closes.
    fn fail(&mut self, side: Side, why: &str) {
        self.summary.errors += 1;
        match side {
            Side::Receiver if !self.rx.closed => {
                self.rx.closed = true;
                let f = self.receiver.refuse(blockrep_codes::RECEIVE, why);
                self.send(Side::Sender, f);
            }
            Side::Sender if self.sender_open() => {
                self.tx.closed = true;
                let sender = self.sender.as_mut().expect("open");
                let f = sender.abort(blockrep_codes::RECEIVE, why);
                self.send(Side::Receiver, f);
            }
            _ => {}
        }
    }

    fn receiver_takes(&mut self, frame: Frame) {
        let shown = format!("{frame:?}");
        let result = self.receiver.handle_frame(frame);
        if self.rx.closed {
            assert!(
                result.is_err(),
                "a closed receiver took {shown}: {result:?}"
            );
            return;
        }
        let event = match result {
            Ok(event) => event,
            Err(e) => {
                assert!(
                    !self.honest(),
                    "honest exchange: the receiver refused {shown}: {e}"
                );
                self.fail(Side::Receiver, &e.to_string());
                return;
            }
        };
        match event {
            ReceiverEvent::Hello(h) => {
                assert_eq!(self.receiver.disks(), &h.disks[..]);
                assert!((1..=VERSION_MAX).contains(&self.receiver.version()));
                let mut ids: Vec<&str> = h.disks.iter().map(|d| d.id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), h.disks.len(), "HELLO taken with a disk id twice");
                self.rx.deciding = true;
                self.summary.hellos += 1;
            }
            ReceiverEvent::Data(d) => {
                let disk = self
                    .receiver
                    .disks()
                    .get(usize::from(d.disk))
                    .unwrap_or_else(|| panic!("DATA taken for an unknown disk: {shown}"));
                let end = d.offset.checked_add(u64::from(d.raw_len));
                assert!(
                    end.is_some_and(|end| end <= disk.size) && d.raw_len <= disk.block_size,
                    "DATA taken outside {disk:?}: {shown}"
                );
                let last = *self.rx.prefix.last().expect("never empty");
                self.rx.prefix.push(last + u64::from(d.raw_len));
                if d.encoding == Encoding::Zero {
                    self.rx.zero_bytes += u64::from(d.raw_len);
                }
                self.summary.data += 1;
            }
            ReceiverEvent::HashRequest(req) => {
                let disk = self
                    .receiver
                    .disks()
                    .get(usize::from(req.disk))
                    .unwrap_or_else(|| panic!("HASH_REQUEST taken for an unknown disk: {shown}"));
                for r in &req.ranges {
                    assert!(
                        r.offset + u64::from(r.len) <= disk.size,
                        "HASH_REQUEST taken outside {disk:?}: {shown}"
                    );
                }
                self.rx.to_answer.push_back(req);
                assert!(
                    self.rx.to_answer.len() <= MAX_OUTSTANDING_HASH_REQUESTS,
                    "{} HASH_REQUESTs taken unanswered",
                    self.rx.to_answer.len()
                );
            }
            ReceiverEvent::End(e) => {
                assert_eq!((e.frames, e.bytes), self.receiver.received(), "{shown}");
                assert!(
                    self.rx.to_answer.is_empty(),
                    "END taken, requests unanswered"
                );
                self.rx.ended = true;
                self.summary.ended = true;
            }
            ReceiverEvent::PeerError(_) => {
                self.rx.closed = true;
                self.summary.peer_errors += 1;
            }
            ReceiverEvent::Ping(p) => {
                assert!(
                    self.receiver.disks().is_empty(),
                    "PING taken in a session with disks: {shown}"
                );
                assert!(p.pad <= crate::frame::MAX_PING_PAD);
                // The real driver answers at once.
                let f = self.receiver.pong(p);
                self.send(Side::Sender, f);
            }
        }
    }

    fn sender_takes(&mut self, frame: Frame) {
        let shown = format!("{frame:?}");
        let sender = self.sender.as_mut().expect("connected");
        let result = sender.handle_frame(frame);
        if self.tx.closed {
            assert!(result.is_err(), "a closed sender took {shown}: {result:?}");
            return;
        }
        let event = match result {
            Ok(event) => event,
            Err(e) => {
                assert!(
                    !self.honest(),
                    "honest exchange: the sender refused {shown}: {e}"
                );
                self.fail(Side::Sender, &e.to_string());
                return;
            }
        };
        match event {
            SenderEvent::Welcome(w) => {
                assert!(sender.is_streaming());
                assert_eq!(w.held.len(), self.sender_disks().len());
                self.summary.accepted = true;
                self.summary.held += w.held.iter().map(Vec::len).sum::<usize>();
            }
            SenderEvent::Acked(acked) => {
                assert!(!acked.is_empty(), "an ACK of nothing taken");
                self.summary.acked = sender.acked().0;
            }
            SenderEvent::Done(d) => {
                assert_eq!((d.frames, d.bytes), sender.sent(), "{shown}");
                self.tx.closed = true;
                self.summary.done = true;
            }
            SenderEvent::PeerError(_) => {
                self.tx.closed = true;
                self.summary.peer_errors += 1;
                self.summary.refused |= !self.summary.accepted;
            }
            SenderEvent::Hashes { request, hashes } => {
                let asked = self.tx.asked.pop_front();
                assert_eq!(asked.as_ref(), Some(&request), "HASHES for another request");
                assert_eq!(
                    (hashes.disk, hashes.digest_len, u64::from(hashes.count)),
                    (request.disk, request.digest_len, request.digest_count()),
                    "HASHES taken for another shape"
                );
                assert_eq!(hashes.differ.is_some(), request.compare.is_some());
                self.summary.hash_answers += 1;
                self.summary.compare_answers += usize::from(request.compare.is_some());
            }
            SenderEvent::Pong(p) => {
                let sent = self.tx.pings.pop_front();
                assert_eq!(sent, Some(p), "a PONG for another PING taken");
                self.summary.pongs += 1;
            }
        }
    }

    /// The invariants that hold after every op.
    fn check(&self) {
        if let Some(sender) = &self.sender {
            let (sent, acked) = (sender.sent(), sender.acked());
            assert!(
                acked.0 <= sent.0 && acked.1 <= sent.1,
                "acknowledged {acked:?} of {sent:?}"
            );
            if !self.tx.closed {
                let unacked: Vec<&Sent> = sender.unacked().collect();
                let bytes: u64 = unacked.iter().map(|s| u64::from(s.raw_len)).sum();
                assert_eq!(
                    (unacked.len() as u64, bytes),
                    (sent.0 - acked.0, sent.1 - acked.1),
                    "unacked frames are not sent minus acknowledged"
                );
                assert_eq!(sender.hash_requests_pending(), self.tx.asked.len());
            }
        }
        let prefix = &self.rx.prefix;
        assert_eq!(
            self.receiver.received(),
            (
                (prefix.len() - 1) as u64,
                *prefix.last().expect("never empty")
            )
        );
    }

    /// The frame an [`Op::Inject`] sends.
    fn build_frame(&self, f: &FuzzFrame) -> Frame {
        match f {
            FuzzFrame::Hello {
                version_min,
                version_max,
                names: n,
                disks,
                flags,
            } => {
                let (session_id, agent_version) = names(*n);
                let mut disks: Vec<DiskAnnounce> = disks
                    .iter()
                    .take(usize::from(MAX_DISKS))
                    .enumerate()
                    .map(|(i, &(name, size, shift))| DiskAnnounce {
                        id: disk_id(name, i % 3),
                        size: 1 + size % MAX_DISK_SIZE,
                        block_size: MIN_BLOCK_SIZE << (shift % 9),
                    })
                    .collect();
                let netcheck = flags % 4 == 3;
                if netcheck {
                    disks.clear();
                } else if disks.is_empty() {
                    disks.push(DiskAnnounce {
                        id: "disk0".into(),
                        size: 1 << 20,
                        block_size: 1 << 16,
                    });
                }
                let version_min = (*version_min).max(1);
                Frame::Hello(Hello {
                    version_min,
                    version_max: (*version_max).max(version_min),
                    session_id,
                    agent_version,
                    disks,
                    verify: flags % 4 == 1,
                    join: flags % 4 == 2,
                    netcheck,
                })
            }
            FuzzFrame::Welcome {
                version,
                names: n,
                held,
            } => {
                let mut room = 64;
                let held = held
                    .iter()
                    .take(usize::from(MAX_DISKS))
                    .map(|extents| {
                        let take = extents.len().min(room);
                        room -= take;
                        extents[..take]
                            .iter()
                            .map(|&(offset, len)| {
                                let len = len.max(1);
                                let offset = offset.min(u64::MAX - len);
                                Extent { offset, len }
                            })
                            .collect()
                    })
                    .collect();
                Frame::Welcome(Welcome {
                    version: (*version).max(1),
                    receiver_version: names(*n).1,
                    held,
                })
            }
            FuzzFrame::Data {
                disk,
                offset,
                raw_len,
                encoding,
                payload,
                fill,
            } => {
                let raw_len = 1 + raw_len % MAX_BLOCK_SIZE;
                Frame::Data(data_frame(
                    *disk,
                    *offset,
                    raw_len,
                    *encoding,
                    *fill,
                    *payload as u8,
                ))
            }
            &FuzzFrame::Ack { frames, bytes } => Frame::Ack(Ack { frames, bytes }),
            &FuzzFrame::End {
                complete,
                frames,
                bytes,
            } => Frame::End(End {
                complete,
                frames,
                bytes,
            }),
            &FuzzFrame::Done {
                frames,
                bytes,
                data_bytes,
                zero_bytes,
            } => Frame::Done(Done {
                frames,
                bytes,
                data_bytes,
                zero_bytes,
            }),
            FuzzFrame::Error { code, message } => Frame::Error(ErrorFrame::new(code, message)),
            FuzzFrame::HashRequest {
                disk,
                digest_len,
                shift,
                key,
                ranges,
                compare,
            } => {
                let mut granularity = MIN_HASH_GRANULARITY << (shift % 15);
                if compare.is_some() {
                    granularity = granularity.max(2 * MIN_HASH_GRANULARITY);
                }
                let g = u64::from(granularity);
                let mut budget = MAX_HASH_REQUEST_BYTES;
                let mut out = Vec::new();
                for &(offset, len) in ranges.iter().take(16) {
                    let len = (1 + u64::from(len) % (16 * g)).min(budget);
                    if len == 0 {
                        break;
                    }
                    budget -= len;
                    let offset = offset.min(u64::MAX - len) / g * g;
                    out.push(HashRange {
                        offset,
                        len: len as u32,
                    });
                }
                if out.is_empty() {
                    out.push(HashRange {
                        offset: 0,
                        len: granularity,
                    });
                }
                let digest_len = 8 + digest_len % 25;
                let mut req = HashRequest {
                    disk: *disk,
                    digest_len,
                    granularity,
                    key: [*key; 32],
                    ranges: out,
                    compare: None,
                };
                if let Some((fine, fill)) = compare {
                    let fine = (granularity >> (1 + fine % 3)).max(MIN_HASH_GRANULARITY);
                    let n = req.digest_count() as usize * usize::from(digest_len);
                    req.compare = Some(Compare {
                        fine,
                        digests: vec![*fill; n].into(),
                    });
                }
                Frame::HashRequest(req)
            }
            FuzzFrame::Hashes {
                disk,
                digest_len,
                count,
                compare,
                fill,
            } => {
                let digest_len = 8 + digest_len % 25;
                let count = u32::from(count % 65);
                let dl = usize::from(digest_len);
                Frame::Hashes(match compare {
                    None => {
                        Hashes::plain(*disk, digest_len, vec![*fill; count as usize * dl].into())
                    }
                    Some((bits, fine)) => {
                        let fine = usize::from(fine % 65).min(MAX_COMPARE_FINE as usize);
                        Hashes {
                            disk: *disk,
                            digest_len,
                            count,
                            differ: Some(bitmap(count as usize, |i| bits >> (i % 64) & 1 == 1)),
                            digests: vec![*fill; fine * dl].into(),
                        }
                    }
                })
            }
            &FuzzFrame::AckNear { frames, bytes } => {
                let (acked, unacked) = match &self.sender {
                    Some(s) => (s.acked(), s.unacked().copied().collect()),
                    None => ((0, 0), Vec::new()),
                };
                let frames = acked.0.saturating_add_signed(i64::from(frames));
                let new = frames.saturating_sub(acked.0) as usize;
                let held: u64 = unacked.iter().take(new).map(|s| u64::from(s.raw_len)).sum();
                Frame::Ack(Ack {
                    frames,
                    bytes: (acked.1 + held).saturating_add_signed(i64::from(bytes)),
                })
            }
            &FuzzFrame::EndNear {
                complete,
                frames,
                bytes,
            } => {
                let (f, b) = self.receiver.received();
                Frame::End(End {
                    complete,
                    frames: f.saturating_add_signed(i64::from(frames)),
                    bytes: b.saturating_add_signed(i64::from(bytes)),
                })
            }
            &FuzzFrame::DoneNear { frames, bytes } => {
                let (f, b) = self.sender.as_ref().map_or((0, 0), SenderSession::sent);
                let (f, b) = (
                    f.saturating_add_signed(i64::from(frames)),
                    b.saturating_add_signed(i64::from(bytes)),
                );
                Frame::Done(Done {
                    frames: f,
                    bytes: b,
                    data_bytes: b,
                    zero_bytes: 0,
                })
            }
            &FuzzFrame::DataNear {
                disk,
                raw_len,
                shift,
            } => {
                let disks = self.sender_disks();
                let index = usize::from(disk) % (disks.len() + 1);
                let size = disks.get(index).map_or(1 << 20, |d| d.size);
                let raw_len = 1 + raw_len % MAX_BLOCK_SIZE;
                let offset = size
                    .saturating_sub(u64::from(raw_len))
                    .saturating_add_signed(i64::from(shift));
                Frame::Data(data_frame(index as u16, offset, raw_len, 2, 0, 0))
            }
            FuzzFrame::Ping { seq, time, pad } => Frame::Ping(Ping {
                seq: *seq,
                time: *time,
                pad: u32::from(*pad % 4096),
            }),
            FuzzFrame::Pong { seq, time, pad } => Frame::Pong(Ping {
                seq: *seq,
                time: *time,
                pad: *pad,
            }),
            FuzzFrame::HashesNear(op) => {
                let req = self
                    .tx
                    .asked
                    .front()
                    .cloned()
                    .unwrap_or_else(|| HashRequest {
                        disk: 0,
                        digest_len: 8,
                        granularity: MIN_HASH_GRANULARITY,
                        key: [0; 32],
                        ranges: vec![HashRange {
                            offset: 0,
                            len: MIN_HASH_GRANULARITY,
                        }],
                        compare: None,
                    });
                Frame::Hashes(answer(&req, op).0)
            }
        }
    }
}

/// A DATA frame: `encoding % 3` raw (when `raw_len` is at most `MAX_RAW_PAYLOAD`, else zero),
/// lz4 (a payload of `1 + lz4 % (raw_len - 1)` bytes, when `raw_len` is at least 2, else
/// zero), zero.
fn data_frame(disk: u16, offset: u64, raw_len: u32, encoding: u8, fill: u8, lz4: u8) -> Data {
    let (encoding, payload) = match encoding % 3 {
        0 if raw_len <= MAX_RAW_PAYLOAD => (Encoding::Raw, vec![fill; raw_len as usize]),
        1 if raw_len >= 2 => {
            let n = 1 + usize::from(lz4) % (raw_len as usize - 1).min(255);
            (Encoding::Lz4, vec![fill; n])
        }
        _ => (Encoding::Zero, Vec::new()),
    };
    Data {
        disk,
        encoding,
        offset,
        raw_len,
        digest: [fill; 32],
        payload: payload.into(),
    }
}

/// A COMPARE bitmap of `count` bits, bit `i` set when `set(i)`.
fn bitmap(count: usize, set: impl Fn(usize) -> bool) -> Bytes {
    let mut b = vec![0u8; count.div_ceil(8)];
    for i in (0..count).filter(|&i| set(i)) {
        b[i / 8] |= 1 << (i % 8);
    }
    b.into()
}

/// The receiver's answer to `req`, and what is wrong with it, if the op asks for a wrong one.
fn answer(req: &HashRequest, op: &AnswerOp) -> (Hashes, Option<&'static str>) {
    let n = req.digest_count() as usize;
    let differs = |i: usize| op.differ >> (i % 64) & 1 == 1;
    // Fine digests of the first `count` granules that differ.
    let fine_digests = |count: usize| -> usize {
        let Some(c) = &req.compare else { return 0 };
        req.granules()
            .take(count)
            .enumerate()
            .filter(|(i, _)| differs(*i))
            .map(|(_, g)| g.len.div_ceil(c.fine) as usize)
            .sum()
    };
    let compare = |count: usize, fine: usize, digest_len: u8| Hashes {
        disk: req.disk,
        digest_len,
        count: count as u32,
        differ: Some(bitmap(count, differs)),
        digests: vec![op.fill; fine * usize::from(digest_len)].into(),
    };
    let plain = |count: usize, digest_len: u8| {
        Hashes::plain(
            req.disk,
            digest_len,
            vec![op.fill; count * usize::from(digest_len)].into(),
        )
    };
    let shape = op.shape % 16;
    let other_len = if req.digest_len == 32 {
        8
    } else {
        req.digest_len + 1
    };
    let (mut h, bad) = match (&req.compare, shape) {
        (None, 11) => (plain(n, other_len), Some("another digest length")),
        (None, 12 | 15) => (plain(n + 1, req.digest_len), Some("one granule more")),
        (None, 13) => (plain(n - 1, req.digest_len), Some("one granule fewer")),
        (None, 14) => (
            compare(n, fine_digests(n), req.digest_len),
            Some("the COMPARE form"),
        ),
        (None, _) => (plain(n, req.digest_len), None),
        (Some(_), 11) => (
            compare(n, fine_digests(n), other_len),
            Some("another digest length"),
        ),
        (Some(_), 12) => (
            compare(n + 1, fine_digests(n), req.digest_len),
            Some("one granule more"),
        ),
        (Some(_), 13) => (
            compare(n - 1, fine_digests(n - 1), req.digest_len),
            Some("one granule fewer"),
        ),
        (Some(_), 14) => (plain(n, req.digest_len), Some("the plain form")),
        (Some(_), 15) => (
            compare(n, fine_digests(n) + 1, req.digest_len),
            Some("one fine digest more"),
        ),
        (Some(_), _) => (compare(n, fine_digests(n), req.digest_len), None),
    };
    if shape == 10 {
        h.disk = h.disk.wrapping_add(1);
        return (h, Some("another disk"));
    }
    // A request at the limits (only an attack makes one) leaves no room for a wrong shape that
    // still decodes: answer it right.
    let fits = h.count <= MAX_HASHES_PER_REQUEST
        && (h.differ.is_none()
            || (h.count <= MAX_COMPARE_FINE && h.digest_total() <= MAX_COMPARE_FINE as usize));
    if !fits {
        return answer(req, &AnswerOp { shape: 0, ..*op });
    }
    (h, bad)
}

/// Held extents of a disk of `size` bytes, as a journal gives them: ascending, disjoint (or
/// touching), inside the disk.
fn held_extents(size: u64, ops: &[HeldOp]) -> Vec<Extent> {
    let unit = (size >> 12).max(1);
    let mut out = Vec::new();
    let mut cursor = 0u64;
    for h in ops.iter().take(4) {
        let offset = cursor + u64::from(h.gap % 1024) * unit;
        if offset >= size {
            break;
        }
        let len = ((1 + u64::from(h.len % 1024)) * unit).min(size - offset);
        out.push(Extent { offset, len });
        cursor = offset + len;
    }
    out
}

/// A disk id of form `name % 4`, unique for each `i`.
fn disk_id(name: u8, i: usize) -> String {
    match name % 4 {
        0 => format!("disk{i}"),
        1 => format!("d{i}"),
        2 => format!("nvme0n1p{i}.a_b-c"),
        _ => format!("{}{i}", "x".repeat(MAX_DISK_ID_LEN - 2)),
    }
}

/// Disk size class `class % 4`: 1 to 64 KiB, 64 MiB, 1 TiB or `MAX_DISK_SIZE`.
fn disk_size(class: u8, size: u64) -> u64 {
    let most = [64 << 10, 64 << 20, 1 << 40, MAX_DISK_SIZE][usize::from(class % 4)];
    1 + size % most
}

/// A session id (`n % 4`) and an agent or receiver version (`n / 4 % 3`), all valid.
fn names(n: u8) -> (String, String) {
    let session = match n % 4 {
        0 => "task-0042".to_owned(),
        1 => "s".to_owned(),
        2 => "mig_2024.05-x".to_owned(),
        _ => "t".repeat(MAX_SESSION_ID_LEN),
    };
    let version = match n / 4 % 3 {
        0 => "blockrep 0.1.0".to_owned(),
        1 => String::new(),
        _ => "~".repeat(MAX_VERSION_STR_LEN),
    };
    (session, version)
}

/// An ERROR's code and message, before `ErrorFrame::new` makes them valid.
fn error_text(e: ErrorOp) -> (String, String) {
    let code = match e.code % 8 {
        0 => blockrep_codes::DISK_SIZE.to_owned(),
        1 => blockrep_codes::OPEN_DISK.to_owned(),
        2 => blockrep_codes::READ_SOURCE.to_owned(),
        3 => blockrep_codes::WRITE.to_owned(),
        4 => String::new(),
        5 => "SMS.\n".to_owned(),
        6 => "C".repeat(17),
        _ => "SMS.é".to_owned(),
    };
    let message = match e.message % 6 {
        0 => "disk0: target is smaller than the source".to_owned(),
        1 => String::new(),
        2 => format!("a{}", "€".repeat(400)),
        3 => "m".repeat(2000),
        4 => "\u{0}\x1b[31m control\ncharacters".to_owned(),
        _ => "ü".repeat(600),
    };
    (code, message)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The bytes `derive(Arbitrary)` reads back as the value: little-endian integers, a byte per
    /// bool, a u32 per enum variant (`(u32 * variants) >> 32` picks it), a `true` byte before
    /// each element of a Vec and a `false` one after the last. Checked by `seed_ops_round_trip`.
    trait Enc {
        fn enc(&self, out: &mut Vec<u8>);
    }

    macro_rules! enc_int {
        ($($t:ty)*) => {$(
            impl Enc for $t {
                fn enc(&self, out: &mut Vec<u8>) {
                    out.extend_from_slice(&self.to_le_bytes());
                }
            }
        )*};
    }
    enc_int!(u8 u16 u32 u64);

    impl Enc for bool {
        fn enc(&self, out: &mut Vec<u8>) {
            out.push(u8::from(*self));
        }
    }

    impl<T: Enc, const N: usize> Enc for [T; N] {
        fn enc(&self, out: &mut Vec<u8>) {
            self.iter().for_each(|x| x.enc(out));
        }
    }

    impl<T: Enc> Enc for Vec<T> {
        fn enc(&self, out: &mut Vec<u8>) {
            for x in self {
                out.push(1);
                x.enc(out);
            }
            out.push(0);
        }
    }

    /// Variant `i` of `n`.
    fn tag(out: &mut Vec<u8>, i: u64, n: u64) {
        (((i << 32).div_ceil(n)) as u32).enc(out);
    }

    impl Enc for Side {
        fn enc(&self, out: &mut Vec<u8>) {
            tag(out, *self as u64, 2);
        }
    }

    impl Enc for DiskOp {
        fn enc(&self, out: &mut Vec<u8>) {
            (self.class, self.size, self.shift, self.name).enc(out);
        }
    }

    impl<A: Enc, B: Enc, C: Enc, D: Enc> Enc for (A, B, C, D) {
        fn enc(&self, out: &mut Vec<u8>) {
            self.0.enc(out);
            self.1.enc(out);
            self.2.enc(out);
            self.3.enc(out);
        }
    }

    impl Enc for HelloOp {
        fn enc(&self, out: &mut Vec<u8>) {
            self.count.enc(out);
            self.disks.enc(out);
            (self.flags, self.names, self.duplicate).enc(out);
        }
    }

    impl<A: Enc, B: Enc, C: Enc> Enc for (A, B, C) {
        fn enc(&self, out: &mut Vec<u8>) {
            self.0.enc(out);
            self.1.enc(out);
            self.2.enc(out);
        }
    }

    impl Enc for HeldOp {
        fn enc(&self, out: &mut Vec<u8>) {
            self.gap.enc(out);
            self.len.enc(out);
        }
    }

    impl Enc for AcceptOp {
        fn enc(&self, out: &mut Vec<u8>) {
            self.held.enc(out);
            self.tamper.enc(out);
        }
    }

    impl Enc for ErrorOp {
        fn enc(&self, out: &mut Vec<u8>) {
            self.code.enc(out);
            self.message.enc(out);
        }
    }

    impl Enc for DataOp {
        fn enc(&self, out: &mut Vec<u8>) {
            (self.disk, self.aligned, self.index, self.offset).enc(out);
            (self.len, self.encoding, self.fill, self.wild).enc(out);
        }
    }

    impl Enc for RangeOp {
        fn enc(&self, out: &mut Vec<u8>) {
            (self.start, self.granules, self.short).enc(out);
        }
    }

    impl Enc for HashRequestOp {
        fn enc(&self, out: &mut Vec<u8>) {
            (self.disk, self.compare, self.digest_len, self.shift).enc(out);
            (self.fine, self.key).enc_pair(out);
            self.ranges.enc(out);
            self.wild.enc(out);
        }
    }

    trait EncPair {
        fn enc_pair(&self, out: &mut Vec<u8>);
    }

    impl<A: Enc, B: Enc> EncPair for (A, B) {
        fn enc_pair(&self, out: &mut Vec<u8>) {
            self.0.enc(out);
            self.1.enc(out);
        }
    }

    impl Enc for AnswerOp {
        fn enc(&self, out: &mut Vec<u8>) {
            (self.differ, self.fill, self.shape).enc(out);
        }
    }

    impl Enc for DurableOp {
        fn enc(&self, out: &mut Vec<u8>) {
            (self.beyond, self.frames, self.bytes).enc(out);
        }
    }

    impl Enc for Corruption {
        fn enc(&self, out: &mut Vec<u8>) {
            match *self {
                Corruption::Flip { at, mask } => {
                    tag(out, 0, 4);
                    (at, mask).enc_pair(out);
                }
                Corruption::Truncate { at } => {
                    tag(out, 1, 4);
                    at.enc(out);
                }
                Corruption::Duplicate => tag(out, 2, 4),
                Corruption::Drop => tag(out, 3, 4),
            }
        }
    }

    /// Injected frames in seeds: the near misses only (the others hold strings and i8s that
    /// the seeds do not need).
    impl Enc for FuzzFrame {
        fn enc(&self, out: &mut Vec<u8>) {
            match self {
                FuzzFrame::EndNear {
                    complete,
                    frames,
                    bytes,
                } => {
                    tag(out, 10, 16);
                    complete.enc(out);
                    (*frames as u8, *bytes as u16).enc_pair(out);
                }
                FuzzFrame::HashesNear(op) => {
                    tag(out, 13, 16);
                    op.enc(out);
                }
                other => unimplemented!("{other:?} in a seed"),
            }
        }
    }

    impl Enc for Op {
        fn enc(&self, out: &mut Vec<u8>) {
            const N: u64 = 15;
            match self {
                Op::Hello(op) => {
                    tag(out, 0, N);
                    op.enc(out);
                }
                Op::Accept(op) => {
                    tag(out, 1, N);
                    op.enc(out);
                }
                Op::Refuse(op) => {
                    tag(out, 2, N);
                    op.enc(out);
                }
                Op::Data(op) => {
                    tag(out, 3, N);
                    op.enc(out);
                }
                Op::HashRequest(op) => {
                    tag(out, 4, N);
                    op.enc(out);
                }
                Op::Answer(op) => {
                    tag(out, 5, N);
                    op.enc(out);
                }
                Op::Durable(op) => {
                    tag(out, 6, N);
                    op.enc(out);
                }
                Op::End { complete } => {
                    tag(out, 7, N);
                    complete.enc(out);
                }
                Op::Done => tag(out, 8, N),
                Op::Abort { side, error } => {
                    tag(out, 9, N);
                    side.enc(out);
                    error.enc(out);
                }
                Op::Deliver(side) => {
                    tag(out, 10, N);
                    side.enc(out);
                }
                Op::Flush => tag(out, 11, N),
                Op::Inject { to, frame } => {
                    tag(out, 12, N);
                    to.enc(out);
                    frame.enc(out);
                }
                Op::Corrupt { to, how } => {
                    tag(out, 13, N);
                    to.enc(out);
                    how.enc(out);
                }
                Op::Ping { pad } => {
                    tag(out, 14, N);
                    pad.enc(out);
                }
            }
        }
    }

    fn encode_ops(ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            op.enc(&mut out);
        }
        out
    }

    fn disk(class: u8, size: u64, shift: u8) -> DiskOp {
        DiskOp {
            class,
            size,
            shift,
            name: 0,
        }
    }

    /// Two disks: 1 MiB of 64 KiB chunks, and 40000 bytes of 4 KiB chunks.
    fn hello() -> Op {
        Op::Hello(HelloOp {
            count: 1,
            disks: [
                disk(1, (1 << 20) - 1, 4),
                disk(0, 40_000 - 1, 0),
                disk(0, 0, 0),
                disk(0, 0, 0),
            ],
            flags: 0,
            names: 0,
            duplicate: 0,
        })
    }

    fn accept(held: [Vec<HeldOp>; 4]) -> Op {
        Op::Accept(AcceptOp { held, tamper: 0 })
    }

    fn no_held() -> [Vec<HeldOp>; 4] {
        [Vec::new(), Vec::new(), Vec::new(), Vec::new()]
    }

    /// Chunk `index` of `disk`, whole.
    fn chunk(disk: u8, index: u32, encoding: u8) -> Op {
        Op::Data(DataOp {
            disk,
            aligned: true,
            index,
            offset: 0,
            len: 0,
            encoding,
            fill: index as u8,
            wild: 0,
        })
    }

    /// `len` bytes at `offset` of `disk`.
    fn piece(disk: u8, offset: u64, len: u32) -> Op {
        Op::Data(DataOp {
            disk,
            aligned: false,
            index: 0,
            offset,
            len: len - 1,
            encoding: 0,
            fill: 0x5a,
            wild: 0,
        })
    }

    /// All received frames durable.
    fn durable() -> Op {
        Op::Durable(DurableOp {
            beyond: 0,
            frames: 0,
            bytes: 0,
        })
    }

    fn request(disk: u8, compare: bool, shift: u8, ranges: &[(u32, u8)]) -> Op {
        Op::HashRequest(HashRequestOp {
            disk,
            compare,
            digest_len: 0,
            shift,
            fine: 1,
            key: 0x6b,
            ranges: ranges
                .iter()
                .map(|&(start, granules)| RangeOp {
                    start,
                    granules,
                    short: 0,
                })
                .collect(),
            wild: 0,
        })
    }

    fn answer(differ: u64) -> Op {
        Op::Answer(AnswerOp {
            differ,
            fill: 0x33,
            shape: 0,
        })
    }

    /// The seeds in fuzz/seeds/session, by file name, with whether each stays honest.
    fn seeds() -> Vec<(&'static str, Vec<Op>, bool)> {
        use Op::{Deliver, Done, End, Flush};
        use Side::{Receiver, Sender};
        let error = ErrorOp {
            code: 0,
            message: 0,
        };
        let netcheck = Op::Hello(HelloOp {
            flags: 3,
            ..match hello() {
                Op::Hello(h) => h,
                _ => unreachable!(),
            }
        });
        vec![
            (
                "netcheck.bin",
                vec![
                    netcheck,
                    Deliver(Receiver),
                    accept(no_held()),
                    Deliver(Sender),
                    Op::Ping { pad: 0 },
                    Op::Ping { pad: 4095 },
                    Flush,
                    Op::Ping { pad: 100 },
                    Deliver(Receiver),
                    Deliver(Sender),
                    End { complete: true },
                    Flush,
                    Done,
                    Flush,
                ],
                true,
            ),
            (
                "honest.bin",
                vec![
                    hello(),
                    Deliver(Receiver),
                    accept(no_held()),
                    Deliver(Sender),
                    chunk(0, 0, 0),
                    chunk(0, 1, 1),
                    chunk(1, 0, 0),
                    chunk(1, 9, 2),
                    Flush,
                    durable(),
                    chunk(0, 15, 2),
                    piece(1, 12_345, 100),
                    Deliver(Receiver),
                    Op::Durable(DurableOp {
                        beyond: 0,
                        frames: 1,
                        bytes: 0,
                    }),
                    Flush,
                    durable(),
                    End { complete: true },
                    Flush,
                    Done,
                    Flush,
                ],
                true,
            ),
            (
                "refused.bin",
                vec![
                    hello(),
                    Flush,
                    Op::Refuse(ErrorOp {
                        code: 0,
                        message: 0,
                    }),
                    Flush,
                ],
                true,
            ),
            (
                "delta.bin",
                vec![
                    hello(),
                    Flush,
                    accept(no_held()),
                    Flush,
                    // COMPARE: 64 KiB granules of 16 KiB fine ones, then 16 KiB of 8 KiB.
                    request(0, true, 4, &[(0, 3), (10, 1)]),
                    request(1, true, 2, &[(0, 15)]),
                    request(1, false, 0, &[(3, 4), (8, 0)]),
                    chunk(0, 15, 0),
                    Flush,
                    answer(0b1010),
                    answer(u64::MAX),
                    answer(0),
                    Flush,
                    chunk(0, 1, 0),
                    piece(1, 4096 * 3, 4096),
                    Flush,
                    durable(),
                    End { complete: true },
                    Flush,
                    Done,
                    Flush,
                ],
                true,
            ),
            (
                "resumed.bin",
                vec![
                    hello(),
                    Flush,
                    accept([
                        vec![HeldOp { gap: 0, len: 255 }, HeldOp { gap: 256, len: 511 }],
                        vec![HeldOp {
                            gap: 1024,
                            len: 1023,
                        }],
                        Vec::new(),
                        Vec::new(),
                    ]),
                    Flush,
                    chunk(0, 4, 0),
                    chunk(0, 5, 1),
                    chunk(1, 2, 0),
                    Flush,
                    // The writer reports more than it was given: nothing is acknowledged.
                    Op::Durable(DurableOp {
                        beyond: 3,
                        frames: 2,
                        bytes: 1 << 20,
                    }),
                    durable(),
                    End { complete: false },
                    Flush,
                    Done,
                    Flush,
                ],
                true,
            ),
            (
                "aborted.bin",
                vec![
                    hello(),
                    Flush,
                    accept(no_held()),
                    Flush,
                    request(0, false, 1, &[(0, 2)]),
                    chunk(0, 0, 0),
                    Flush,
                    Op::Abort {
                        side: Receiver,
                        error,
                    },
                    chunk(0, 1, 0),
                    Flush,
                ],
                true,
            ),
            (
                "attacked.bin",
                vec![
                    hello(),
                    Flush,
                    accept(no_held()),
                    Flush,
                    chunk(0, 0, 0),
                    chunk(1, 0, 0),
                    Op::Inject {
                        to: Receiver,
                        frame: FuzzFrame::EndNear {
                            complete: true,
                            frames: 2,
                            bytes: 0,
                        },
                    },
                    Op::Corrupt {
                        to: Receiver,
                        how: Corruption::Flip { at: 8, mask: 0x01 },
                    },
                    Flush,
                ],
                false,
            ),
        ]
    }

    fn seed_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/session")
    }

    #[test]
    fn seed_ops_round_trip() {
        for (name, ops, _) in seeds() {
            assert_eq!(super::ops(&encode_ops(&ops)), ops, "{name}");
        }
    }

    /// Runs the fuzz target on every seed file, so the seeds run in every CI; checks that the
    /// generated seeds are on disk as written (regenerate with `write_session_seeds`) and that
    /// together they reach an accepted session, DONE, hash answers of both forms, held extents
    /// and a refusal.
    #[test]
    fn session_seeds() {
        let dir = seed_dir();
        for (name, ops, honest) in seeds() {
            let on_disk = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
                panic!("{name}: {e}: run the ignored test write_session_seeds")
            });
            assert_eq!(
                on_disk,
                encode_ops(&ops),
                "{name} is stale: run write_session_seeds"
            );
            let s = session_ops(&ops);
            eprintln!("{name}: {s:?}");
            assert_eq!(s.attack.is_none(), honest, "{name}: {s:?}");
            if honest {
                assert_eq!(s.errors, 0, "{name}: {s:?}");
            }
        }
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            all.push(session_summary(
                &std::fs::read(entry.unwrap().path()).unwrap(),
            ));
        }
        assert!(all.len() >= seeds().len());
        let any = |f: fn(&Summary) -> bool| all.iter().any(f);
        assert!(any(|s| s.accepted && s.done && s.acked > 0 && s.data >= 6));
        assert!(any(|s| s.refused && !s.accepted));
        assert!(any(|s| s.hash_answers > s.compare_answers
            && s.compare_answers > 0
            && s.done));
        assert!(any(|s| s.held > 0 && s.done));
        assert!(any(|s| s.peer_errors > 0
            && s.accepted
            && s.attack.is_none()));
        assert!(any(|s| s.errors > 0));
        assert!(any(|s| s.pongs >= 3 && s.done && s.data == 0));
    }

    /// `cargo test -p blockrep-proto -- --ignored write_session_seeds` rewrites the seed files.
    #[test]
    #[ignore]
    fn write_session_seeds() {
        let dir = seed_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, ops, _) in seeds() {
            std::fs::write(dir.join(name), encode_ops(&ops)).unwrap();
        }
    }

    /// splitmix64: a fixed stream of pseudo-random numbers.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn session_never_panics_on_random_bytes() {
        let mut rng = Rng(1);
        for _ in 0..3000 {
            let n = (rng.next() % 2048) as usize;
            session(&rng.bytes(n));
        }
    }

    /// Random ops of the honest kinds only: they must never meet a protocol error.
    #[test]
    fn honest_random_sessions_never_fail() {
        let mut rng = Rng(2);
        let mut done = 0;
        for _ in 0..2000 {
            let n = (rng.next() % 4096) as usize;
            let ops: Vec<Op> = super::ops(&rng.bytes(n))
                .into_iter()
                .filter(|op| !matches!(op, Op::Inject { .. } | Op::Corrupt { .. }))
                .map(|op| match op {
                    Op::Hello(h) => Op::Hello(HelloOp { duplicate: 0, ..h }),
                    Op::Accept(a) => Op::Accept(AcceptOp { tamper: 0, ..a }),
                    Op::Data(d) => Op::Data(DataOp { wild: 0, ..d }),
                    Op::HashRequest(r) => Op::HashRequest(HashRequestOp { wild: 0, ..r }),
                    Op::Answer(a) => Op::Answer(AnswerOp { shape: 0, ..a }),
                    other => other,
                })
                .collect();
            let s = session_ops(&ops);
            assert_eq!((s.attack.as_deref(), s.errors), (None, 0), "{ops:?}");
            done += usize::from(s.done);
        }
        assert!(done > 0, "no random honest session got to DONE");
    }

    /// Seeds with random bytes changed: attacks and driver bugs from a meaningful start.
    #[test]
    fn session_never_panics_on_mutated_seeds() {
        let mut rng = Rng(3);
        let seeds: Vec<Vec<u8>> = seeds().iter().map(|(_, ops, _)| encode_ops(ops)).collect();
        for i in 0..3000 {
            let mut bytes = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % bytes.len();
                bytes[at] = rng.next() as u8;
            }
            session(&bytes);
        }
    }

    #[test]
    fn frames_round_trip_from_random_bytes() {
        let mut rng = Rng(4);
        for _ in 0..3000 {
            let n = (rng.next() % 512) as usize;
            frame_round_trip(&rng.bytes(n));
        }
    }
}
