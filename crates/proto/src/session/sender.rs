//! The sender's side of a session.

use std::collections::VecDeque;

use crate::consts::{VERSION_MAX, VERSION_MIN};
use crate::error::ProtocolError;
use crate::frame::{
    Done, End, ErrorFrame, Extent, Frame, FrameType, HashRequest, Hashes, Hello, Ping, Welcome,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitWelcome,
    Streaming,
    /// END sent; waiting for DONE.
    Ending,
    Finished,
    Closed,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            Self::AwaitWelcome => "waiting for WELCOME",
            Self::Streaming => "sending data",
            Self::Ending => "waiting for DONE",
            Self::Finished => "finished",
            Self::Closed => "closed",
        }
    }
}

/// A DATA frame sent and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Disk index.
    pub disk: u16,
    /// Chunk offset.
    pub offset: u64,
    /// Raw length.
    pub raw_len: u32,
}

/// What a frame from the receiver means for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    /// The receiver accepted the session; data may flow.
    Welcome(Welcome),
    /// These frames, oldest first, are now durable on the target.
    Acked(Vec<Sent>),
    /// Everything is durable and the counts agree: the session is over.
    Done(Done),
    /// The receiver ended the session with an error.
    PeerError(ErrorFrame),
    /// Digests answering `request` (checked: same disk and digest length, one per granule).
    Hashes {
        /// The request they answer.
        request: HashRequest,
        /// The digests.
        hashes: Hashes,
    },
    /// The answer to the oldest unanswered PING (checked: the same numbers).
    Pong(Ping),
}

/// The sender's session state machine.
#[derive(Debug)]
pub struct SenderSession {
    state: State,
    hello: Hello,
    sent_frames: u64,
    sent_bytes: u64,
    acked_frames: u64,
    acked_bytes: u64,
    unacked: VecDeque<Sent>,
    /// HASH_REQUESTs sent and not yet answered, oldest first.
    hash_requests: VecDeque<HashRequest>,
    /// PINGs sent and not yet answered, oldest first (network checks only).
    pings: VecDeque<Ping>,
}

/// Held extents must lie inside their disk, in ascending order, without overlapping
/// (docs/PROTOCOL.md, WELCOME): the sender's plan subtracts them from what it reads, and must
/// not be steered by ranges that no disk has.
fn check_held(hello: &Hello, held: &[Vec<Extent>]) -> Result<(), ProtocolError> {
    for (disk, extents) in hello.disks.iter().zip(held) {
        let mut next = 0u64;
        for e in extents {
            let end = e
                .offset
                .checked_add(e.len)
                .filter(|&end| e.len > 0 && end <= disk.size);
            let Some(end) = end else {
                return Err(ProtocolError::BadWelcome("held extent outside its disk"));
            };
            if e.offset < next {
                return Err(ProtocolError::BadWelcome(
                    "held extents overlap or are not in ascending order",
                ));
            }
            next = end;
        }
    }
    Ok(())
}

impl SenderSession {
    /// A session that will open with `hello`; the version range is this build's.
    pub fn new(mut hello: Hello) -> Self {
        hello.version_min = VERSION_MIN;
        hello.version_max = VERSION_MAX;
        Self {
            state: State::AwaitWelcome,
            hello,
            sent_frames: 0,
            sent_bytes: 0,
            acked_frames: 0,
            acked_bytes: 0,
            unacked: VecDeque::new(),
            hash_requests: VecDeque::new(),
            pings: VecDeque::new(),
        }
    }

    /// The HELLO to send first.
    pub fn hello(&self) -> Frame {
        Frame::Hello(self.hello.clone())
    }

    /// DATA frames and raw bytes sent so far.
    pub fn sent(&self) -> (u64, u64) {
        (self.sent_frames, self.sent_bytes)
    }

    /// DATA frames and raw bytes acknowledged as durable so far.
    pub fn acked(&self) -> (u64, u64) {
        (self.acked_frames, self.acked_bytes)
    }

    /// Frames sent and not acknowledged, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &Sent> {
        self.unacked.iter()
    }

    /// True once WELCOME has arrived and END has not been sent.
    pub fn is_streaming(&self) -> bool {
        self.state == State::Streaming
    }

    /// Takes one frame from the receiver.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<SenderEvent, ProtocolError> {
        let result = self.handle(frame);
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    fn handle(&mut self, frame: Frame) -> Result<SenderEvent, ProtocolError> {
        match (self.state, frame) {
            (State::Closed | State::Finished, f) => Err(self.unexpected(f.frame_type())),
            (_, Frame::Error(e)) => {
                self.state = State::Closed;
                Ok(SenderEvent::PeerError(e))
            }
            (State::AwaitWelcome, Frame::Welcome(w)) => {
                if !(self.hello.version_min..=self.hello.version_max).contains(&w.version) {
                    return Err(ProtocolError::BadWelcome(
                        "version outside the offered range",
                    ));
                }
                if w.held.len() != self.hello.disks.len() {
                    return Err(ProtocolError::BadWelcome(
                        "held extents for another disk count",
                    ));
                }
                check_held(&self.hello, &w.held)?;
                self.state = State::Streaming;
                Ok(SenderEvent::Welcome(w))
            }
            (State::Streaming, Frame::Hashes(hashes)) => {
                let Some(request) = self.hash_requests.front() else {
                    return Err(ProtocolError::BadHashes("no request is unanswered"));
                };
                if hashes.disk != request.disk {
                    return Err(ProtocolError::BadHashes("another disk"));
                }
                if hashes.digest_len != request.digest_len {
                    return Err(ProtocolError::BadHashes("another digest length"));
                }
                if u64::from(hashes.count) != request.digest_count() {
                    return Err(ProtocolError::BadHashes("another number of granules"));
                }
                match (&request.compare, &hashes.differ) {
                    (None, None) => {
                        if hashes.digest_total() != hashes.count as usize {
                            return Err(ProtocolError::BadHashes("another number of digests"));
                        }
                    }
                    (Some(c), Some(_)) => {
                        let fine = u64::from(c.fine);
                        let expected: u64 = request
                            .granules()
                            .enumerate()
                            .filter(|(i, _)| hashes.differs(*i))
                            .map(|(_, g)| u64::from(g.len).div_ceil(fine))
                            .sum();
                        if hashes.digest_total() as u64 != expected {
                            return Err(ProtocolError::BadHashes(
                                "another number of fine digests than granules differ",
                            ));
                        }
                    }
                    _ => return Err(ProtocolError::BadHashes("another form than asked")),
                }
                let request = self.hash_requests.pop_front().expect("checked above");
                Ok(SenderEvent::Hashes { request, hashes })
            }
            (State::Streaming, Frame::Pong(pong)) => {
                if self.pings.front() != Some(&pong) {
                    return Err(ProtocolError::BadPong);
                }
                self.pings.pop_front();
                Ok(SenderEvent::Pong(pong))
            }
            (State::Streaming | State::Ending, Frame::Ack(ack)) => {
                let new = ack.frames.checked_sub(self.acked_frames);
                let bad = ProtocolError::BadAck {
                    acked: ack.frames,
                    sent: self.sent_frames,
                    previous: self.acked_frames,
                };
                let new = match new {
                    Some(n) if n >= 1 && ack.frames <= self.sent_frames => n,
                    _ => return Err(bad),
                };
                // `new` <= frames in the queue, because acked + queue = sent.
                let acked: Vec<Sent> = self.unacked.drain(..new as usize).collect();
                let bytes: u64 = acked.iter().map(|s| u64::from(s.raw_len)).sum();
                if self.acked_bytes + bytes != ack.bytes {
                    return Err(bad);
                }
                self.acked_frames = ack.frames;
                self.acked_bytes = ack.bytes;
                Ok(SenderEvent::Acked(acked))
            }
            (State::Ending, Frame::Done(done)) => {
                if (done.frames, done.bytes) != (self.sent_frames, self.sent_bytes) {
                    return Err(ProtocolError::SummaryMismatch {
                        peer_frames: done.frames,
                        peer_bytes: done.bytes,
                        our_frames: self.sent_frames,
                        our_bytes: self.sent_bytes,
                    });
                }
                self.state = State::Finished;
                Ok(SenderEvent::Done(done))
            }
            (_, f) => Err(self.unexpected(f.frame_type())),
        }
    }

    fn unexpected(&self, frame: FrameType) -> ProtocolError {
        ProtocolError::Unexpected {
            frame,
            state: self.state.describe(),
        }
    }

    /// Records a DATA frame the driver has written. Frames must be recorded in the order they
    /// are written to the connection, since ACKs count them in that order.
    ///
    /// # Panics
    /// If not streaming (a driver bug).
    pub fn record_data(&mut self, sent: Sent) {
        assert_eq!(self.state, State::Streaming, "DATA outside streaming");
        self.sent_frames += 1;
        self.sent_bytes += u64::from(sent.raw_len);
        self.unacked.push_back(sent);
    }

    /// HASH_REQUESTs sent and not answered yet.
    pub fn hash_requests_pending(&self) -> usize {
        self.hash_requests.len()
    }

    /// Asks for digests: returns the HASH_REQUEST to send. At most
    /// `MAX_OUTSTANDING_HASH_REQUESTS` may be unanswered; the driver waits for HASHES first.
    ///
    /// # Panics
    /// If not streaming or too many are unanswered (driver bugs).
    pub fn request_hashes(&mut self, request: HashRequest) -> Frame {
        assert_eq!(
            self.state,
            State::Streaming,
            "HASH_REQUEST outside streaming"
        );
        assert!(
            self.hash_requests.len() < crate::consts::MAX_OUTSTANDING_HASH_REQUESTS,
            "too many unanswered HASH_REQUESTs"
        );
        self.hash_requests.push_back(request.clone());
        Frame::HashRequest(request)
    }

    /// PINGs sent and not answered yet.
    pub fn pings_pending(&self) -> usize {
        self.pings.len()
    }

    /// A network check's PING: returns the frame to send. Its PONG must come back in order.
    ///
    /// # Panics
    /// If not streaming, not a network check (HELLO NETCHECK), or the padding is over
    /// [`crate::frame::MAX_PING_PAD`]: driver bugs.
    pub fn ping(&mut self, ping: Ping) -> Frame {
        assert_eq!(self.state, State::Streaming, "PING outside streaming");
        assert!(self.hello.netcheck, "PING outside a network check");
        assert!(
            ping.pad <= crate::frame::MAX_PING_PAD,
            "PING padding too long"
        );
        self.pings.push_back(ping);
        Frame::Ping(ping)
    }

    /// No more data: returns the END to send. `complete` is false when stopping early.
    pub fn end(&mut self, complete: bool) -> Frame {
        assert_eq!(self.state, State::Streaming, "END outside streaming");
        assert!(
            self.hash_requests.is_empty() && self.pings.is_empty(),
            "END with HASH_REQUESTs or PINGs unanswered"
        );
        self.state = State::Ending;
        Frame::End(End {
            complete,
            frames: self.sent_frames,
            bytes: self.sent_bytes,
        })
    }

    /// Ends the session with an error: returns the ERROR frame to send.
    pub fn abort(&mut self, code: &str, message: &str) -> Frame {
        self.state = State::Closed;
        Frame::Error(ErrorFrame::new(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Ack;
    use crate::testutil;

    fn welcome(disks: usize) -> Frame {
        Frame::Welcome(Welcome {
            version: 1,
            receiver_version: "test".into(),
            held: vec![Vec::new(); disks],
        })
    }

    fn sent(i: u64, raw_len: u32) -> Sent {
        Sent {
            disk: 0,
            offset: i << 20,
            raw_len,
        }
    }

    /// A streaming sender that has sent frames of 1000, 2000 and 3000 bytes.
    fn streaming() -> SenderSession {
        let mut s = SenderSession::new(testutil::hello(1));
        assert!(matches!(
            s.handle_frame(welcome(1)),
            Ok(SenderEvent::Welcome(_))
        ));
        for (i, len) in [1000, 2000, 3000].into_iter().enumerate() {
            s.record_data(sent(i as u64, len));
        }
        s
    }

    fn ack(frames: u64, bytes: u64) -> Frame {
        Frame::Ack(Ack { frames, bytes })
    }

    fn done(frames: u64, bytes: u64) -> Frame {
        Frame::Done(Done {
            frames,
            bytes,
            data_bytes: bytes,
            zero_bytes: 0,
        })
    }

    #[track_caller]
    fn assert_bad_ack(s: &mut SenderSession, frame: Frame) {
        assert!(
            matches!(s.handle_frame(frame), Err(ProtocolError::BadAck { .. })),
            "accepted"
        );
        // The session is over.
        assert!(s.handle_frame(ack(3, 6000)).is_err());
    }

    #[track_caller]
    fn assert_bad_welcome(welcome: Welcome) {
        let mut s = SenderSession::new(testutil::hello(2));
        match s.handle_frame(Frame::Welcome(welcome.clone())) {
            Err(ProtocolError::BadWelcome(_)) => {}
            other => panic!("{welcome:?}: {other:?}"),
        }
        assert!(!s.is_streaming());
    }

    #[test]
    fn hello_carries_this_builds_versions() {
        let mut hello = testutil::hello(1);
        hello.version_min = 7;
        hello.version_max = 9;
        let Frame::Hello(h) = SenderSession::new(hello).hello() else {
            panic!()
        };
        assert_eq!((h.version_min, h.version_max), (VERSION_MIN, VERSION_MAX));
    }

    #[test]
    fn acks_release_frames_in_order() {
        let mut s = streaming();
        assert_eq!(
            s.handle_frame(ack(2, 3000)),
            Ok(SenderEvent::Acked(vec![sent(0, 1000), sent(1, 2000)]))
        );
        assert_eq!(s.unacked().copied().collect::<Vec<_>>(), [sent(2, 3000)]);
        let end = s.end(true);
        assert_eq!(
            end,
            Frame::End(End {
                complete: true,
                frames: 3,
                bytes: 6000
            })
        );
        // ACKs may still arrive after END.
        assert_eq!(
            s.handle_frame(ack(3, 6000)),
            Ok(SenderEvent::Acked(vec![sent(2, 3000)]))
        );
        assert!(matches!(
            s.handle_frame(done(3, 6000)),
            Ok(SenderEvent::Done(_))
        ));
        assert_eq!(s.acked(), (3, 6000));
    }

    #[test]
    fn rejects_ack_of_frames_never_sent() {
        assert_bad_ack(&mut streaming(), ack(4, 7000));
        assert_bad_ack(&mut streaming(), ack(u64::MAX, u64::MAX));
    }

    #[test]
    fn rejects_ack_going_backwards() {
        let mut s = streaming();
        s.handle_frame(ack(2, 3000)).unwrap();
        assert_bad_ack(&mut s, ack(1, 1000));
    }

    #[test]
    fn rejects_ack_not_advancing() {
        assert_bad_ack(&mut streaming(), ack(0, 0));
        let mut s = streaming();
        s.handle_frame(ack(1, 1000)).unwrap();
        assert_bad_ack(&mut s, ack(1, 1000));
    }

    #[test]
    fn rejects_ack_with_the_wrong_byte_count() {
        for bytes in [0, 2999, 3001, u64::MAX] {
            assert_bad_ack(&mut streaming(), ack(2, bytes));
        }
    }

    #[test]
    fn rejects_ack_before_welcome() {
        let mut s = SenderSession::new(testutil::hello(1));
        assert!(matches!(
            s.handle_frame(ack(0, 0)),
            Err(ProtocolError::Unexpected { .. })
        ));
    }

    #[test]
    fn rejects_welcome_version_outside_the_range() {
        for version in [VERSION_MAX + 1, u16::MAX] {
            let Frame::Welcome(mut w) = welcome(2) else {
                unreachable!()
            };
            w.version = version;
            assert_bad_welcome(w);
        }
    }

    #[test]
    fn rejects_welcome_with_the_wrong_held_count() {
        for n in [0, 1, 3, 64] {
            let Frame::Welcome(w) = welcome(n) else {
                unreachable!()
            };
            assert_bad_welcome(w);
        }
    }

    #[test]
    fn rejects_held_extents_outside_their_disk() {
        let size = testutil::hello(2).disks[1].size;
        for (offset, len) in [
            (size, 1),
            (size - 1, 2),
            (0, size + 1),
            (u64::MAX, 1),
            (0, 0),
        ] {
            let Frame::Welcome(mut w) = welcome(2) else {
                unreachable!()
            };
            w.held[1].push(Extent { offset, len });
            assert_bad_welcome(w);
        }
    }

    #[test]
    fn rejects_held_extents_out_of_order() {
        for pair in [[(4096, 4096), (0, 4096)], [(0, 8192), (4096, 8192)]] {
            let Frame::Welcome(mut w) = welcome(2) else {
                unreachable!()
            };
            w.held[0] = pair.map(|(offset, len)| Extent { offset, len }).to_vec();
            assert_bad_welcome(w);
        }
    }

    #[test]
    fn accepts_held_extents_that_touch_and_end_at_the_disk_end() {
        let size = testutil::hello(2).disks[0].size;
        let Frame::Welcome(mut w) = welcome(2) else {
            unreachable!()
        };
        w.held[0] = vec![
            Extent {
                offset: 0,
                len: 4096,
            },
            Extent {
                offset: 4096,
                len: 4096,
            },
            Extent {
                offset: size - 1,
                len: 1,
            },
        ];
        let mut s = SenderSession::new(testutil::hello(2));
        assert!(s.handle_frame(Frame::Welcome(w)).is_ok());
    }

    /// A second request, of another shape than `testutil::hash_request`: disk 0, 32-byte
    /// digests of 4 KiB granules, 3 of them.
    fn other_request() -> HashRequest {
        HashRequest {
            digest_len: 32,
            granularity: 4096,
            ranges: vec![crate::HashRange {
                offset: 8192,
                len: 12288,
            }],
            ..testutil::hash_request(0)
        }
    }

    /// A streaming sender with two requests unanswered: `testutil::hash_request(0)`, then
    /// `other_request()`.
    fn requesting() -> SenderSession {
        let mut s = streaming();
        let _ = s.request_hashes(testutil::hash_request(0));
        let _ = s.request_hashes(other_request());
        assert_eq!(s.hash_requests_pending(), 2);
        s
    }

    #[track_caller]
    fn assert_bad_hashes(s: &mut SenderSession, hashes: Hashes) {
        match s.handle_frame(Frame::Hashes(hashes.clone())) {
            Err(ProtocolError::BadHashes(_)) => {}
            other => panic!("{hashes:?}: {other:?}"),
        }
        // The session is over.
        assert!(s.handle_frame(ack(1, 1000)).is_err());
    }

    #[test]
    fn hashes_answer_requests_oldest_first() {
        let mut s = requesting();
        let first = testutil::hashes_for(&testutil::hash_request(0), 0);
        assert_eq!(
            s.handle_frame(Frame::Hashes(first.clone())),
            Ok(SenderEvent::Hashes {
                request: testutil::hash_request(0),
                hashes: first,
            })
        );
        // ACKs interleave with answers.
        assert!(matches!(
            s.handle_frame(ack(1, 1000)),
            Ok(SenderEvent::Acked(_))
        ));
        let second = testutil::hashes_for(&other_request(), 9);
        assert_eq!(
            s.handle_frame(Frame::Hashes(second.clone())),
            Ok(SenderEvent::Hashes {
                request: other_request(),
                hashes: second,
            })
        );
        assert_eq!(s.hash_requests_pending(), 0);
        let _ = s.end(true);
    }

    #[test]
    fn rejects_hashes_with_no_request_outstanding() {
        assert_bad_hashes(
            &mut streaming(),
            testutil::hashes_for(&testutil::hash_request(0), 0),
        );
        // All answered: one more is too many.
        let mut s = streaming();
        let _ = s.request_hashes(testutil::hash_request(0));
        let h = testutil::hashes_for(&testutil::hash_request(0), 0);
        s.handle_frame(Frame::Hashes(h.clone())).unwrap();
        assert_bad_hashes(&mut s, h);
    }

    #[test]
    fn rejects_hashes_for_another_disk() {
        let mut h = testutil::hashes_for(&testutil::hash_request(0), 0);
        h.disk = 1;
        assert_bad_hashes(&mut requesting(), h);
    }

    #[test]
    fn rejects_hashes_of_another_digest_length() {
        // Same byte count, other digest length: 6 x 8 bytes as 3 x 16.
        let mut h = testutil::hashes_for(&testutil::hash_request(0), 0);
        h.digest_len = 16;
        assert_bad_hashes(&mut requesting(), h);
        // The shape of the second request, answering the first.
        let h = testutil::hashes_for(&other_request(), 0);
        assert_bad_hashes(&mut requesting(), h);
    }

    #[test]
    fn rejects_hashes_with_another_count() {
        let right = testutil::hashes_for(&testutil::hash_request(0), 0);
        for n in [0, 5, 7, 100] {
            let h = Hashes {
                digests: vec![0; n * 8].into(),
                ..right.clone()
            };
            assert_bad_hashes(&mut requesting(), h);
        }
    }

    #[test]
    fn compare_answers_carry_fine_digests_of_differing_granules_only() {
        // Granules of testutil::hash_request: 4 of 16 KiB, then one of 16 KiB and one of
        // 4 KiB; 4 KiB fine granules, so 4, 4, 4, 4, 4 and 1 fine digests.
        let req = testutil::compare_request(0, 0);
        let answer = |bitmap: u8, fine: usize| Hashes {
            disk: 0,
            digest_len: 8,
            count: 6,
            differ: Some(vec![bitmap].into()),
            digests: vec![0; fine * 8].into(),
        };
        for (bitmap, fine) in [(0, 0), (0b10_0000, 1), (0b00_0001, 4), (0b10_0010, 5)] {
            let mut s = streaming();
            let _ = s.request_hashes(req.clone());
            match s.handle_frame(Frame::Hashes(answer(bitmap, fine))) {
                Ok(SenderEvent::Hashes { request, hashes }) => {
                    assert_eq!(request, req);
                    assert_eq!(hashes.digest_total(), fine);
                }
                other => panic!("{bitmap:#b}: {other:?}"),
            }
        }
        for (bitmap, fine) in [(0, 1), (0b10_0000, 4), (0b00_0001, 1), (0b10_0010, 8)] {
            let mut s = streaming();
            let _ = s.request_hashes(req.clone());
            assert_bad_hashes(&mut s, answer(bitmap, fine));
        }
        // A plain answer to a COMPARE request, and a COMPARE answer to a plain one.
        let mut s = streaming();
        let _ = s.request_hashes(req.clone());
        assert_bad_hashes(&mut s, testutil::hashes_for(&testutil::hash_request(0), 0));
        assert_bad_hashes(&mut requesting(), answer(0, 0));
    }

    #[test]
    fn rejects_hashes_before_welcome_or_after_end() {
        let h = Frame::Hashes(testutil::hashes_for(&testutil::hash_request(0), 0));
        let mut s = SenderSession::new(testutil::hello(1));
        assert!(matches!(
            s.handle_frame(h.clone()),
            Err(ProtocolError::Unexpected { .. })
        ));
        let mut s = streaming();
        let _ = s.end(true);
        assert!(matches!(
            s.handle_frame(h),
            Err(ProtocolError::Unexpected { .. })
        ));
    }

    #[test]
    #[should_panic(expected = "too many unanswered HASH_REQUESTs")]
    fn requesting_too_many_is_a_driver_bug() {
        let mut s = streaming();
        for _ in 0..=crate::consts::MAX_OUTSTANDING_HASH_REQUESTS {
            let _ = s.request_hashes(testutil::hash_request(0));
        }
    }

    #[test]
    #[should_panic(expected = "END with HASH_REQUESTs or PINGs unanswered")]
    fn ending_with_requests_unanswered_is_a_driver_bug() {
        let _ = requesting().end(true);
    }

    #[test]
    fn rejects_done_with_mismatched_counts() {
        for (frames, bytes) in [(2, 6000), (3, 5999), (4, 6000), (0, 0)] {
            let mut s = streaming();
            let _ = s.end(true);
            assert!(matches!(
                s.handle_frame(done(frames, bytes)),
                Err(ProtocolError::SummaryMismatch {
                    our_frames: 3,
                    our_bytes: 6000,
                    ..
                })
            ));
        }
    }

    #[test]
    fn rejects_done_before_end() {
        let mut s = streaming();
        assert!(matches!(
            s.handle_frame(done(3, 6000)),
            Err(ProtocolError::Unexpected { .. })
        ));
        let mut s = SenderSession::new(testutil::hello(1));
        assert!(s.handle_frame(done(0, 0)).is_err());
    }

    #[test]
    fn rejects_frames_of_the_wrong_direction() {
        for f in testutil::one_of_each() {
            if matches!(
                f,
                Frame::Hello(_) | Frame::Data(_) | Frame::End(_) | Frame::HashRequest(_)
            ) {
                let mut s = streaming();
                assert!(matches!(
                    s.handle_frame(f),
                    Err(ProtocolError::Unexpected { .. })
                ));
            }
        }
        let mut s = streaming();
        assert!(s.handle_frame(welcome(1)).is_err());
    }

    #[test]
    fn rejects_any_frame_after_close() {
        let closers: [fn() -> SenderSession; 4] = [
            || {
                let mut s = streaming();
                let _ = s.handle_frame(ack(9, 9));
                s
            },
            || {
                let mut s = streaming();
                let e = ErrorFrame::new("SMS.2007", "write failed");
                assert_eq!(
                    s.handle_frame(Frame::Error(e.clone())),
                    Ok(SenderEvent::PeerError(e))
                );
                s
            },
            || {
                let mut s = streaming();
                let _ = s.abort("SMS.1905", "read failed");
                s
            },
            || {
                let mut s = streaming();
                let _ = s.end(true);
                s.handle_frame(done(3, 6000)).unwrap();
                s
            },
        ];
        for close in closers {
            for f in testutil::one_of_each() {
                let mut s = close();
                assert!(matches!(
                    s.handle_frame(f),
                    Err(ProtocolError::Unexpected { .. })
                ));
            }
        }
    }
}
