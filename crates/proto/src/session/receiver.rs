//! The receiver's side of a session.

use crate::consts::{MAX_OUTSTANDING_HASH_REQUESTS, VERSION_MAX, VERSION_MIN};
use crate::error::ProtocolError;
use crate::frame::{
    Ack, Data, DiskAnnounce, Done, End, ErrorFrame, Extent, Frame, FrameType, HashRequest, Hashes,
    Hello, Ping, Welcome,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    /// HELLO received; the driver checks the disks and calls `accept` or `refuse`.
    AwaitDecision,
    Streaming,
    /// END received; the driver makes everything durable and calls `done`.
    Ended,
    Closed,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            Self::AwaitHello => "waiting for HELLO",
            Self::AwaitDecision => "deciding on HELLO",
            Self::Streaming => "receiving data",
            Self::Ended => "finishing after END",
            Self::Closed => "closed",
        }
    }
}

/// What a frame from the sender means for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// A well-formed HELLO with unique disk ids and a common version: check the disks against
    /// the configuration, then [`ReceiverSession::accept`] or [`ReceiverSession::refuse`].
    Hello(Hello),
    /// A chunk whose disk index, length and range have been checked against the HELLO. Its
    /// bytes are not verified yet (that needs decompression and hashing: `blockrep-chunk`).
    Data(Data),
    /// The sender has sent everything it will; its counts match ours. Make all data durable,
    /// then send [`ReceiverSession::done`].
    End(End),
    /// The sender ended the session with an error.
    PeerError(ErrorFrame),
    /// The sender asks for digests of ranges checked to lie inside the disk. Answer (in
    /// order) with [`ReceiverSession::hashes`].
    HashRequest(HashRequest),
    /// A network check's PING: answer (in order) with [`ReceiverSession::pong`].
    Ping(Ping),
}

/// The receiver's session state machine.
#[derive(Debug)]
pub struct ReceiverSession {
    state: State,
    version: u16,
    disks: Vec<DiskAnnounce>,
    received_frames: u64,
    received_bytes: u64,
    acked_frames: u64,
    /// HASH_REQUESTs received and not yet answered.
    hash_requests: usize,
    /// A network check (HELLO NETCHECK): PINGs only, no disks.
    netcheck: bool,
    /// PINGs received and not yet answered.
    pings: usize,
}

impl Default for ReceiverSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ReceiverSession {
    /// A session waiting for HELLO.
    pub fn new() -> Self {
        Self {
            state: State::AwaitHello,
            version: 0,
            disks: Vec::new(),
            received_frames: 0,
            received_bytes: 0,
            acked_frames: 0,
            hash_requests: 0,
            netcheck: false,
            pings: 0,
        }
    }

    /// The disks the sender announced (empty before HELLO).
    pub fn disks(&self) -> &[DiskAnnounce] {
        &self.disks
    }

    /// True for a network check (HELLO NETCHECK): PINGs, no disks.
    pub fn netcheck(&self) -> bool {
        self.netcheck
    }

    /// The negotiated protocol version (0 before HELLO).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// DATA frames and raw bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (self.received_frames, self.received_bytes)
    }

    /// Takes one frame from the sender.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<ReceiverEvent, ProtocolError> {
        let result = self.handle(frame);
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    fn handle(&mut self, frame: Frame) -> Result<ReceiverEvent, ProtocolError> {
        match (self.state, frame) {
            (State::Closed, f) => Err(self.unexpected(f.frame_type())),
            (_, Frame::Error(e)) => {
                self.state = State::Closed;
                Ok(ReceiverEvent::PeerError(e))
            }
            (State::AwaitHello, Frame::Hello(hello)) => {
                let version = super::negotiate(hello.version_min, hello.version_max).ok_or(
                    ProtocolError::NoCommonVersion {
                        peer_min: hello.version_min,
                        peer_max: hello.version_max,
                        ours_min: VERSION_MIN,
                        ours_max: VERSION_MAX,
                    },
                )?;
                for (i, d) in hello.disks.iter().enumerate() {
                    if hello.disks[..i].iter().any(|e| e.id == d.id) {
                        return Err(ProtocolError::DuplicateDisk(d.id.clone()));
                    }
                }
                self.version = version;
                self.disks = hello.disks.clone();
                self.netcheck = hello.netcheck;
                self.state = State::AwaitDecision;
                Ok(ReceiverEvent::Hello(hello))
            }
            (State::Streaming, Frame::Ping(ping)) if self.netcheck => {
                self.pings += 1;
                Ok(ReceiverEvent::Ping(ping))
            }
            (State::Streaming, f @ (Frame::Data(_) | Frame::HashRequest(_))) if self.netcheck => {
                Err(self.unexpected(f.frame_type()))
            }
            (State::Streaming, Frame::Data(data)) => {
                self.check_data(&data)?;
                self.received_frames += 1;
                self.received_bytes += u64::from(data.raw_len);
                Ok(ReceiverEvent::Data(data))
            }
            (State::Streaming, Frame::HashRequest(req)) => {
                self.check_hash_request(&req)?;
                self.hash_requests += 1;
                Ok(ReceiverEvent::HashRequest(req))
            }
            (State::Streaming, Frame::End(end)) => {
                if self.hash_requests > 0 {
                    return Err(ProtocolError::HashRequestsPending(self.hash_requests));
                }
                if self.pings > 0 {
                    return Err(self.unexpected(FrameType::End));
                }
                if (end.frames, end.bytes) != (self.received_frames, self.received_bytes) {
                    return Err(ProtocolError::SummaryMismatch {
                        peer_frames: end.frames,
                        peer_bytes: end.bytes,
                        our_frames: self.received_frames,
                        our_bytes: self.received_bytes,
                    });
                }
                self.state = State::Ended;
                Ok(ReceiverEvent::End(end))
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

    /// The session rule for HASH_REQUEST: a known disk, ranges inside it, and no more than
    /// `MAX_OUTSTANDING_HASH_REQUESTS` unanswered.
    fn check_hash_request(&self, req: &HashRequest) -> Result<(), ProtocolError> {
        let disk = self
            .disks
            .get(usize::from(req.disk))
            .ok_or(ProtocolError::UnknownDisk {
                index: req.disk,
                count: self.disks.len(),
            })?;
        if self.hash_requests >= MAX_OUTSTANDING_HASH_REQUESTS {
            return Err(ProtocolError::HashRequestsPending(self.hash_requests + 1));
        }
        for r in &req.ranges {
            if r.offset.saturating_add(u64::from(r.len)) > disk.size {
                return Err(ProtocolError::OutOfBounds {
                    disk: disk.id.clone(),
                    offset: r.offset,
                    len: r.len,
                    size: disk.size,
                    block_size: disk.block_size,
                });
            }
        }
        Ok(())
    }

    /// Answers the oldest unanswered PING: the PONG to send.
    ///
    /// # Panics
    /// If no PING is unanswered (a driver bug).
    pub fn pong(&mut self, ping: Ping) -> Frame {
        assert!(self.pings > 0, "PONG without a PING");
        self.pings -= 1;
        Frame::Pong(ping)
    }

    /// Answers the oldest unanswered HASH_REQUEST (in its form: plain or COMPARE).
    ///
    /// # Panics
    /// If no request is unanswered (a driver bug).
    pub fn hashes(&mut self, answer: Hashes) -> Frame {
        assert!(self.hash_requests > 0, "HASHES without a HASH_REQUEST");
        self.hash_requests -= 1;
        Frame::Hashes(answer)
    }

    /// The session rule for DATA: a known disk, no longer than its block size, inside it.
    fn check_data(&self, data: &Data) -> Result<(), ProtocolError> {
        let disk = self
            .disks
            .get(usize::from(data.disk))
            .ok_or(ProtocolError::UnknownDisk {
                index: data.disk,
                count: self.disks.len(),
            })?;
        let end = data.offset.checked_add(u64::from(data.raw_len));
        if data.raw_len > disk.block_size || end.is_none_or(|end| end > disk.size) {
            return Err(ProtocolError::OutOfBounds {
                disk: disk.id.clone(),
                offset: data.offset,
                len: data.raw_len,
                size: disk.size,
                block_size: disk.block_size,
            });
        }
        Ok(())
    }

    /// Accepts the HELLO: returns the WELCOME to send. `held` lists, per announced disk, what
    /// is already durable for this session (one list per disk, possibly empty).
    ///
    /// # Panics
    /// If called other than once after a HELLO event, or with a `held` of the wrong length:
    /// both are driver bugs, not peer input.
    pub fn accept(&mut self, receiver_version: &str, held: Vec<Vec<Extent>>) -> Frame {
        assert_eq!(self.state, State::AwaitDecision, "accept without a HELLO");
        assert_eq!(held.len(), self.disks.len(), "one held list per disk");
        self.state = State::Streaming;
        Frame::Welcome(Welcome {
            version: self.version,
            receiver_version: receiver_version.to_owned(),
            held,
        })
    }

    /// Refuses the session (or ends it on an error): returns the ERROR frame to send.
    pub fn refuse(&mut self, code: &str, message: &str) -> Frame {
        self.state = State::Closed;
        Frame::Error(ErrorFrame::new(code, message))
    }

    /// Reports that the first `frames` DATA frames (holding `bytes` raw bytes) are durable.
    /// Returns the ACK to send, or `None` when nothing new is durable.
    ///
    /// A report of more frames than were received (a driver bug) acknowledges nothing, in every
    /// build: an ACK must never claim frames this side has not even seen.
    pub fn durable(&mut self, frames: u64, bytes: u64) -> Option<Frame> {
        if frames <= self.acked_frames || frames > self.received_frames {
            return None;
        }
        self.acked_frames = frames;
        Some(Frame::Ack(Ack { frames, bytes }))
    }

    /// After END, once everything is durable: returns the DONE to send. The session is over.
    pub fn done(&mut self, data_bytes: u64, zero_bytes: u64) -> Frame {
        assert_eq!(self.state, State::Ended, "done before END");
        self.state = State::Closed;
        Frame::Done(Done {
            frames: self.received_frames,
            bytes: self.received_bytes,
            data_bytes,
            zero_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    fn streaming(disks: Vec<DiskAnnounce>) -> ReceiverSession {
        let mut r = ReceiverSession::new();
        let mut hello = testutil::hello(0);
        hello.disks = disks;
        let n = hello.disks.len();
        assert!(matches!(
            r.handle_frame(Frame::Hello(hello)),
            Ok(ReceiverEvent::Hello(_))
        ));
        let _ = r.accept("test", vec![Vec::new(); n]);
        r
    }

    fn disk(id: &str, size: u64, block_size: u32) -> DiskAnnounce {
        DiskAnnounce {
            id: id.into(),
            size,
            block_size,
        }
    }

    fn end(frames: u64, bytes: u64) -> Frame {
        Frame::End(End {
            complete: true,
            frames,
            bytes,
        })
    }

    #[track_caller]
    fn assert_unexpected(r: &mut ReceiverSession, frame: Frame) {
        let ty = frame.frame_type();
        match r.handle_frame(frame) {
            Err(ProtocolError::Unexpected { frame, .. }) => assert_eq!(frame, ty),
            other => panic!("{ty:?}: {other:?}"),
        }
    }

    #[track_caller]
    fn assert_out_of_bounds(r: &mut ReceiverSession, d: crate::Data) {
        assert!(
            matches!(
                r.handle_frame(Frame::Data(d.clone())),
                Err(ProtocolError::OutOfBounds { .. })
            ),
            "{} {}",
            d.offset,
            d.raw_len
        );
        // And the session is over.
        assert_unexpected(r, Frame::Data(d));
    }

    #[test]
    fn accepts_data_up_to_the_disk_end() {
        let mut r = streaming(vec![disk("a", 10_000, 4096)]);
        for (offset, len) in [(0, 4096), (8192, 1808), (9999, 1)] {
            let d = testutil::data_zero(0, offset, len);
            assert_eq!(
                r.handle_frame(Frame::Data(d.clone())),
                Ok(ReceiverEvent::Data(d))
            );
        }
        assert_eq!(r.received(), (3, 4096 + 1808 + 1));
    }

    #[test]
    fn rejects_data_before_hello() {
        let mut r = ReceiverSession::new();
        assert_unexpected(&mut r, Frame::Data(testutil::data_zero(0, 0, 4096)));
    }

    #[test]
    fn rejects_data_before_welcome() {
        let mut r = ReceiverSession::new();
        r.handle_frame(Frame::Hello(testutil::hello(1))).unwrap();
        assert_unexpected(&mut r, Frame::Data(testutil::data_zero(0, 0, 4096)));
    }

    #[test]
    fn rejects_data_for_unknown_disk() {
        for index in [2, u16::MAX] {
            let mut r = streaming(testutil::hello(2).disks);
            let d = testutil::data_zero(index, 0, 4096);
            assert_eq!(
                r.handle_frame(Frame::Data(d)),
                Err(ProtocolError::UnknownDisk { index, count: 2 })
            );
        }
    }

    #[test]
    fn rejects_data_past_the_disk_end() {
        for (offset, len) in [(10_000, 1), (8192, 1809), (1 << 40, 4096)] {
            let mut r = streaming(vec![disk("a", 10_000, 4096)]);
            assert_out_of_bounds(&mut r, testutil::data_zero(0, offset, len));
        }
    }

    #[test]
    fn rejects_data_whose_end_overflows() {
        for offset in [u64::MAX, u64::MAX - 4095, u64::MAX - (1 << 20) + 1] {
            let mut r = streaming(vec![disk("a", crate::consts::MAX_DISK_SIZE, 1 << 20)]);
            assert_out_of_bounds(&mut r, testutil::data_zero(0, offset, 1 << 20));
        }
    }

    #[test]
    fn rejects_data_longer_than_the_block_size() {
        let mut r = streaming(vec![disk("a", 1 << 30, 4096), disk("b", 1 << 30, 1 << 20)]);
        // Fine on disk 1, too long for disk 0.
        let d = testutil::data_raw(1, 0, 8192, 0);
        assert!(r.handle_frame(Frame::Data(d)).is_ok());
        assert_out_of_bounds(&mut r, testutil::data_raw(0, 0, 4097, 0));
    }

    #[test]
    fn rejects_duplicate_disk_ids() {
        let mut r = ReceiverSession::new();
        let mut hello = testutil::hello(3);
        hello.disks[2].id = "disk0".into();
        assert_eq!(
            r.handle_frame(Frame::Hello(hello)),
            Err(ProtocolError::DuplicateDisk("disk0".into()))
        );
        assert!(r.disks().is_empty());
        assert_unexpected(&mut r, Frame::Hello(testutil::hello(1)));
    }

    #[test]
    fn rejects_no_common_version() {
        let mut r = ReceiverSession::new();
        let mut hello = testutil::hello(1);
        hello.version_min = VERSION_MAX + 1;
        hello.version_max = u16::MAX;
        assert!(matches!(
            r.handle_frame(Frame::Hello(hello)),
            Err(ProtocolError::NoCommonVersion { .. })
        ));
    }

    #[test]
    fn negotiates_within_a_wide_range() {
        let mut r = ReceiverSession::new();
        let mut hello = testutil::hello(1);
        hello.version_max = u16::MAX;
        assert!(r.handle_frame(Frame::Hello(hello)).is_ok());
        assert_eq!(r.version(), VERSION_MAX);
    }

    #[test]
    fn rejects_end_with_mismatched_counts() {
        for (frames, bytes) in [
            (1, 4096),
            (2, 4096),
            (1, 4095),
            (0, 0),
            (u64::MAX, u64::MAX),
        ] {
            let mut r = streaming(testutil::hello(1).disks);
            r.handle_frame(Frame::Data(testutil::data_zero(0, 0, 4096)))
                .unwrap();
            r.handle_frame(Frame::Data(testutil::data_zero(0, 4096, 4096)))
                .unwrap();
            assert!(matches!(
                r.handle_frame(end(frames, bytes)),
                Err(ProtocolError::SummaryMismatch {
                    our_frames: 2,
                    our_bytes: 8192,
                    ..
                })
            ));
        }
    }

    #[test]
    fn rejects_frames_of_the_wrong_direction_or_order() {
        let mut r = ReceiverSession::new();
        assert_unexpected(&mut r, end(0, 0));
        let mut r = streaming(testutil::hello(1).disks);
        assert_unexpected(&mut r, Frame::Hello(testutil::hello(1)));
        for f in testutil::one_of_each() {
            if matches!(
                f,
                Frame::Welcome(_) | Frame::Ack(_) | Frame::Done(_) | Frame::Hashes(_)
            ) {
                let mut r = streaming(testutil::hello(1).disks);
                assert_unexpected(&mut r, f);
            }
        }
    }

    #[test]
    fn rejects_any_frame_after_close() {
        let closers: [fn() -> ReceiverSession; 5] = [
            // A protocol error.
            || {
                let mut r = streaming(testutil::hello(1).disks);
                let _ = r.handle_frame(Frame::Data(testutil::data_zero(9, 0, 1)));
                r
            },
            // The peer's ERROR.
            || {
                let mut r = streaming(testutil::hello(1).disks);
                let e = ErrorFrame::new("SMS.1905", "read failed");
                assert_eq!(
                    r.handle_frame(Frame::Error(e.clone())),
                    Ok(ReceiverEvent::PeerError(e))
                );
                r
            },
            // Our refusal.
            || {
                let mut r = ReceiverSession::new();
                r.handle_frame(Frame::Hello(testutil::hello(1))).unwrap();
                let _ = r.refuse("SMS.1504", "too small");
                r
            },
            // DONE sent.
            || {
                let mut r = streaming(testutil::hello(1).disks);
                r.handle_frame(end(0, 0)).unwrap();
                let _ = r.done(0, 0);
                r
            },
            // END received: only ERROR may still come.
            || {
                let mut r = streaming(testutil::hello(1).disks);
                r.handle_frame(end(0, 0)).unwrap();
                r
            },
        ];
        for (i, close) in closers.iter().enumerate() {
            for f in testutil::one_of_each() {
                if i == 4 && matches!(f, Frame::Error(_)) {
                    continue;
                }
                let mut r = close();
                assert_unexpected(&mut r, f);
            }
        }
    }

    fn hash_request(disk: u16, ranges: &[(u64, u32)]) -> Frame {
        Frame::HashRequest(HashRequest {
            ranges: ranges
                .iter()
                .map(|&(offset, len)| crate::HashRange { offset, len })
                .collect(),
            ..testutil::hash_request(disk)
        })
    }

    /// Answers the oldest request, as the driver would.
    fn answer(r: &mut ReceiverSession, req: &HashRequest) -> Frame {
        r.hashes(testutil::hashes_for(req, 0))
    }

    #[test]
    fn accepts_hash_requests_up_to_the_disk_end() {
        let mut r = streaming(vec![disk("a", 100_000, 4096), disk("b", 1 << 30, 4096)]);
        for f in [
            hash_request(0, &[(0, 16384), (98304, 1696)]),
            hash_request(1, &[(0, 1 << 20), ((1 << 30) - 16384, 16384)]),
        ] {
            let Frame::HashRequest(req) = f.clone() else {
                unreachable!()
            };
            assert_eq!(r.handle_frame(f), Ok(ReceiverEvent::HashRequest(req)));
        }
        // DATA flows while requests are unanswered; nothing is counted for the requests.
        r.handle_frame(Frame::Data(testutil::data_zero(1, 0, 4096)))
            .unwrap();
        assert_eq!(r.received(), (1, 4096));
    }

    #[test]
    fn rejects_hash_request_for_unknown_disk() {
        for index in [2, u16::MAX] {
            let mut r = streaming(testutil::hello(2).disks);
            assert_eq!(
                r.handle_frame(hash_request(index, &[(0, 4096)])),
                Err(ProtocolError::UnknownDisk { index, count: 2 })
            );
            assert_unexpected(&mut r, hash_request(0, &[(0, 4096)]));
        }
    }

    #[test]
    fn rejects_hash_request_past_the_disk_end() {
        for ranges in [
            &[(98304, 1697)][..],
            &[(0, 16384), (98304, 1697)],
            &[(100_000, 1)],
            &[(114_688, 16384)],
            &[(1 << 40, 4096)],
            &[(u64::MAX - 16383, 16384)],
        ] {
            let mut r = streaming(vec![disk("a", 100_000, 4096)]);
            assert!(
                matches!(
                    r.handle_frame(hash_request(0, ranges)),
                    Err(ProtocolError::OutOfBounds { size: 100_000, .. })
                ),
                "{ranges:?}"
            );
            assert_unexpected(&mut r, hash_request(0, &[(0, 4096)]));
        }
    }

    #[test]
    fn rejects_too_many_unanswered_hash_requests() {
        let max = crate::consts::MAX_OUTSTANDING_HASH_REQUESTS;
        let mut r = streaming(testutil::hello(1).disks);
        for _ in 0..max {
            r.handle_frame(Frame::HashRequest(testutil::hash_request(0)))
                .unwrap();
        }
        // Answering one makes room for one.
        let _ = answer(&mut r, &testutil::hash_request(0));
        r.handle_frame(Frame::HashRequest(testutil::hash_request(0)))
            .unwrap();
        assert_eq!(
            r.handle_frame(Frame::HashRequest(testutil::hash_request(0))),
            Err(ProtocolError::HashRequestsPending(max + 1))
        );
        assert_unexpected(&mut r, Frame::HashRequest(testutil::hash_request(0)));
    }

    #[test]
    fn rejects_end_while_hash_requests_are_unanswered() {
        let mut r = streaming(testutil::hello(1).disks);
        for _ in 0..2 {
            r.handle_frame(Frame::HashRequest(testutil::hash_request(0)))
                .unwrap();
        }
        let _ = answer(&mut r, &testutil::hash_request(0));
        assert_eq!(
            r.handle_frame(end(0, 0)),
            Err(ProtocolError::HashRequestsPending(1))
        );
        assert_unexpected(&mut r, end(0, 0));
        // All answered, END is fine.
        let mut r = streaming(testutil::hello(1).disks);
        r.handle_frame(Frame::HashRequest(testutil::hash_request(0)))
            .unwrap();
        let _ = answer(&mut r, &testutil::hash_request(0));
        assert!(matches!(
            r.handle_frame(end(0, 0)),
            Ok(ReceiverEvent::End(_))
        ));
    }

    #[test]
    fn rejects_hash_request_before_welcome() {
        let req = Frame::HashRequest(testutil::hash_request(0));
        assert_unexpected(&mut ReceiverSession::new(), req.clone());
        let mut r = ReceiverSession::new();
        r.handle_frame(Frame::Hello(testutil::hello(1))).unwrap();
        assert_unexpected(&mut r, req.clone());
        // Nor after END.
        let mut r = streaming(testutil::hello(1).disks);
        r.handle_frame(end(0, 0)).unwrap();
        assert_unexpected(&mut r, req);
    }

    #[test]
    #[should_panic(expected = "HASHES without a HASH_REQUEST")]
    fn answering_nothing_is_a_driver_bug() {
        let mut r = streaming(testutil::hello(1).disks);
        let _ = answer(&mut r, &testutil::hash_request(0));
    }

    #[test]
    fn acks_only_what_is_new() {
        let mut r = streaming(testutil::hello(1).disks);
        for i in 0..3 {
            r.handle_frame(Frame::Data(testutil::data_zero(0, i * 4096, 4096)))
                .unwrap();
        }
        assert_eq!(r.durable(0, 0), None);
        assert_eq!(
            r.durable(2, 8192),
            Some(Frame::Ack(Ack {
                frames: 2,
                bytes: 8192
            }))
        );
        assert_eq!(r.durable(1, 4096), None);
        assert_eq!(r.durable(2, 8192), None);
        assert!(r.durable(3, 12288).is_some());
    }

    /// Found by the `session` fuzz target: `durable` with more frames than were received hit a
    /// `debug_assert` (a panic in debug builds) and, in release builds, returned an ACK for
    /// frames never received, which the sender takes when it has sent that many.
    #[test]
    fn never_acknowledges_more_than_was_received() {
        let mut r = streaming(testutil::hello(1).disks);
        assert_eq!(r.durable(1, 4096), None);
        for i in 0..2 {
            r.handle_frame(Frame::Data(testutil::data_zero(0, i * 4096, 4096)))
                .unwrap();
        }
        for (frames, bytes) in [(3, 12288), (3, 8192), (u64::MAX, u64::MAX)] {
            assert_eq!(r.durable(frames, bytes), None, "{frames}");
        }
        assert_eq!(
            r.durable(2, 8192),
            Some(Frame::Ack(Ack {
                frames: 2,
                bytes: 8192
            }))
        );
        assert_eq!(r.durable(3, 12288), None);
    }

    /// A network check: PINGs answered in order, END only once all are answered; no DATA or
    /// HASH_REQUEST. A PING outside a network check is refused.
    #[test]
    fn network_check_takes_pings_and_nothing_else() {
        let ping = |seq| Ping {
            seq,
            time: 9,
            pad: 100,
        };
        let mut r = ReceiverSession::new();
        let hello = Hello {
            netcheck: true,
            ..testutil::hello(0)
        };
        assert!(matches!(
            r.handle_frame(Frame::Hello(hello)),
            Ok(ReceiverEvent::Hello(_))
        ));
        let _ = r.accept("test", Vec::new());
        assert_eq!(
            r.handle_frame(Frame::Ping(ping(1))),
            Ok(ReceiverEvent::Ping(ping(1)))
        );
        let end = Frame::End(End {
            complete: true,
            frames: 0,
            bytes: 0,
        });
        // END with a PING unanswered is refused; answered, it is taken.
        let mut early = ReceiverSession::new();
        let hello = Hello {
            netcheck: true,
            ..testutil::hello(0)
        };
        let _ = early.handle_frame(Frame::Hello(hello));
        let _ = early.accept("test", Vec::new());
        let _ = early.handle_frame(Frame::Ping(ping(1)));
        assert!(early.handle_frame(end.clone()).is_err());
        assert_eq!(r.pong(ping(1)), Frame::Pong(ping(1)));
        assert!(matches!(r.handle_frame(end), Ok(ReceiverEvent::End(_))));

        let mut with_disks = streaming(testutil::hello(1).disks);
        assert!(with_disks.handle_frame(Frame::Ping(ping(1))).is_err());
        let mut check = ReceiverSession::new();
        let _ = check.handle_frame(Frame::Hello(Hello {
            netcheck: true,
            ..testutil::hello(0)
        }));
        let _ = check.accept("test", Vec::new());
        let data = Frame::Data(testutil::data_zero(0, 0, 4096));
        assert!(check.handle_frame(data).is_err());
    }
}
