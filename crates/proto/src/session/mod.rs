//! The session rules, as state machines that take decoded frames and return what happened.
//!
//! No I/O and no clock: the driver feeds frames in, performs the I/O an event asks for, and
//! sends the frames these machines return. Timeouts belong to the driver.

mod receiver;
mod sender;

pub use receiver::{ReceiverEvent, ReceiverSession};
pub use sender::{SenderEvent, SenderSession, Sent};

use crate::consts::{VERSION_MAX, VERSION_MIN};

/// The version both sides will speak, or `None`: the newest in both ranges.
pub fn negotiate(peer_min: u16, peer_max: u16) -> Option<u16> {
    let v = VERSION_MAX.min(peer_max);
    (v >= VERSION_MIN.max(peer_min)).then_some(v)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::error::ProtocolError;
    use crate::frame::{self, Data, Frame};
    use crate::testutil;
    use crate::Encoding;

    /// Two endpoints wired together through byte buffers, quinn-proto style: every frame is
    /// encoded by one side and decoded by the other, with no sockets and no clock.
    struct Pair {
        sender: SenderSession,
        receiver: ReceiverSession,
        to_receiver: BytesMut,
        to_sender: BytesMut,
    }

    impl Pair {
        fn new(disks: usize) -> Self {
            Self {
                sender: SenderSession::new(testutil::hello(disks)),
                receiver: ReceiverSession::new(),
                to_receiver: BytesMut::new(),
                to_sender: BytesMut::new(),
            }
        }

        fn send(&mut self, frame: Frame) {
            let before = self.to_receiver.len();
            frame.encode(&mut self.to_receiver);
            assert_eq!(self.to_receiver.len() - before, frame.encoded_len());
        }

        fn reply(&mut self, frame: Frame) {
            frame.encode(&mut self.to_sender);
        }

        /// Records and sends one DATA frame.
        fn send_data(&mut self, data: Data) {
            self.sender.record_data(Sent {
                disk: data.disk,
                offset: data.offset,
                raw_len: data.raw_len,
            });
            self.send(Frame::Data(data));
        }

        /// The receiver takes the next buffered frame, if a whole one is there.
        fn receiver_step(&mut self) -> Option<Result<ReceiverEvent, ProtocolError>> {
            let frame = frame::decode(&mut self.to_receiver).expect("valid bytes")?;
            Some(self.receiver.handle_frame(frame))
        }

        fn sender_step(&mut self) -> Option<Result<SenderEvent, ProtocolError>> {
            let frame = frame::decode(&mut self.to_sender).expect("valid bytes")?;
            Some(self.sender.handle_frame(frame))
        }

        /// Drives the receiver over everything buffered; returns the DATA it accepted.
        fn receive_all(&mut self) -> Vec<Data> {
            let mut out = Vec::new();
            while let Some(ev) = self.receiver_step() {
                match ev.unwrap() {
                    ReceiverEvent::Data(d) => out.push(d),
                    other => panic!("unexpected {other:?}"),
                }
            }
            out
        }

        fn receive_all_then_end(&mut self) -> usize {
            let mut n = 0;
            loop {
                match self.receiver_step().expect("END").unwrap() {
                    ReceiverEvent::Data(_) => n += 1,
                    ReceiverEvent::End(e) => {
                        assert!(!e.complete);
                        return n;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }

        fn receive_all_or_error(&mut self) -> usize {
            let mut n = 0;
            while let Some(ev) = self.receiver_step() {
                match ev.unwrap() {
                    ReceiverEvent::Data(_) => n += 1,
                    ReceiverEvent::PeerError(e) => assert_eq!(e.code, "SMS.1905"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            n
        }

        fn handshake(&mut self) {
            let hello = self.sender.hello();
            self.send(hello);
            let Some(Ok(ReceiverEvent::Hello(h))) = self.receiver_step() else {
                panic!("no HELLO");
            };
            let welcome = self
                .receiver
                .accept("test", vec![Vec::new(); h.disks.len()]);
            self.reply(welcome);
            assert!(matches!(
                self.sender_step(),
                Some(Ok(SenderEvent::Welcome(_)))
            ));
            assert!(self.sender.is_streaming());
        }
    }

    fn chunk(i: u64) -> Data {
        let mut d = testutil::data_raw((i % 2) as u16, i * 65536, 65536, i as u8);
        if i % 3 == 2 {
            d = testutil::data_zero(d.disk, d.offset, 32768);
        } else if i % 3 == 1 {
            d.encoding = Encoding::Lz4;
            d.payload = d.payload.slice(..1000);
        }
        d
    }

    #[test]
    fn happy_path() {
        let mut p = Pair::new(2);
        // Nothing buffered: both sides wait.
        assert!(p.receiver_step().is_none());
        assert!(p.sender_step().is_none());
        p.handshake();
        assert_eq!(p.receiver.version(), 1);
        assert_eq!(p.receiver.disks().len(), 2);

        let mut expected_bytes = 0;
        for batch in [0..4u64, 4..5, 5..9] {
            for i in batch.clone() {
                p.send_data(chunk(i));
                expected_bytes += u64::from(chunk(i).raw_len);
            }
            let got = p.receive_all();
            assert_eq!(got, batch.clone().map(chunk).collect::<Vec<_>>());
            // The batch is written and fdatasync'ed: one cumulative ACK.
            let (frames, bytes) = p.receiver.received();
            let ack = p
                .receiver
                .durable(frames, bytes)
                .expect("new data is durable");
            assert_eq!(p.receiver.durable(frames, bytes), None);
            p.reply(ack);
            let Some(Ok(SenderEvent::Acked(acked))) = p.sender_step() else {
                panic!("no ACK");
            };
            assert_eq!(acked.len(), batch.clone().count());
            assert_eq!(acked[0].offset, batch.start * 65536);
            assert_eq!(p.sender.unacked().count(), 0);
        }
        assert_eq!(p.sender.sent(), (9, expected_bytes));
        assert_eq!(p.sender.acked(), (9, expected_bytes));

        let end = p.sender.end(true);
        assert!(!p.sender.is_streaming());
        p.send(end);
        let Some(Ok(ReceiverEvent::End(end))) = p.receiver_step() else {
            panic!("no END");
        };
        assert!(end.complete);
        let done = p.receiver.done(expected_bytes - 3 * 32768, 3 * 32768);
        p.reply(done);
        let Some(Ok(SenderEvent::Done(done))) = p.sender_step() else {
            panic!("no DONE");
        };
        assert_eq!((done.frames, done.bytes), (9, expected_bytes));
        assert_eq!(done.zero_bytes, 3 * 32768);
        assert!(p.to_receiver.is_empty() && p.to_sender.is_empty());

        // Both sides are over: anything more is refused.
        p.send(Frame::Ack(crate::Ack {
            frames: 9,
            bytes: expected_bytes,
        }));
        assert!(matches!(
            p.receiver_step(),
            Some(Err(ProtocolError::Unexpected { .. }))
        ));
        p.reply(Frame::Error(crate::ErrorFrame::new("SMS.1908", "late")));
        assert!(matches!(
            p.sender_step(),
            Some(Err(ProtocolError::Unexpected { .. }))
        ));
    }

    /// The receiver's answer to a request: digest `i` is `digest_len` bytes of (a byte of)
    /// `i + offset of its range`, standing in for the keyed blake3 of the target's bytes.
    fn target_digests(req: &crate::HashRequest) -> bytes::Bytes {
        let mut out = Vec::new();
        for r in &req.ranges {
            let granules = u64::from(r.len).div_ceil(u64::from(req.granularity));
            for i in 0..granules {
                let b = (i + r.offset / u64::from(req.granularity)) as u8;
                out.extend(std::iter::repeat_n(b, usize::from(req.digest_len)));
            }
        }
        out.into()
    }

    fn hash_request(granularity: u32, ranges: &[(u64, u32)]) -> crate::HashRequest {
        crate::HashRequest {
            disk: 1,
            digest_len: 8,
            granularity,
            key: [0x6b; 32],
            ranges: ranges
                .iter()
                .map(|&(offset, len)| crate::HashRange { offset, len })
                .collect(),
            compare: None,
        }
    }

    /// A hash-delta round: coarse requests in flight (as many as allowed), answers in order
    /// while DATA and ACKs flow, a fine request for a coarse granule that differed, the
    /// differing chunk sent, then END and DONE once every request is answered.
    #[test]
    fn delta_session() {
        use crate::consts::MAX_OUTSTANDING_HASH_REQUESTS;

        let mut p = Pair::new(2);
        p.handshake();
        // One chunk of disk 0 before the comparison starts: DATA and HASH_REQUESTs mix.
        p.send_data(testutil::data_raw(0, 0, 65536, 1));

        let coarse: Vec<_> = (0..MAX_OUTSTANDING_HASH_REQUESTS as u64)
            .map(|i| {
                hash_request(
                    16 << 10,
                    &[(i << 20, 1 << 20), ((i << 20) + (8 << 20), 5000)],
                )
            })
            .collect();
        for req in &coarse {
            let frame = p.sender.request_hashes(req.clone());
            p.send(frame);
        }
        assert_eq!(p.sender.hash_requests_pending(), coarse.len());

        // The receiver takes everything, answering each request as it arrives (a driver
        // answers in request order, later, from its hashing threads).
        let mut answered = Vec::new();
        let mut data = 0;
        while let Some(ev) = p.receiver_step() {
            match ev.unwrap() {
                ReceiverEvent::HashRequest(req) => {
                    let digests = target_digests(&req);
                    let answer =
                        p.receiver
                            .hashes(crate::Hashes::plain(req.disk, req.digest_len, digests));
                    answered.push(answer);
                }
                ReceiverEvent::Data(_) => data += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((data, answered.len()), (1, coarse.len()));
        // An ACK overtakes the answers: the sender takes both in any mix.
        let ack = p.receiver.durable(1, 65536).unwrap();
        p.reply(ack);
        for a in answered {
            p.reply(a);
        }
        let mut compared = Vec::new();
        while let Some(ev) = p.sender_step() {
            match ev.unwrap() {
                SenderEvent::Acked(a) => assert_eq!(a.len(), 1),
                SenderEvent::Hashes { request, hashes } => {
                    assert_eq!(hashes.digest_total() as u64, request.digest_count());
                    assert_eq!(hashes.digests, target_digests(&request));
                    compared.push(request);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Answers matched to requests oldest first, each 64 + 1 digests.
        assert_eq!(compared, coarse);
        assert_eq!(coarse[0].digest_count(), 64 + 1);
        assert_eq!(p.sender.hash_requests_pending(), 0);

        // One coarse granule differed: its fine digests, then its one differing 4 KiB chunk.
        let fine = hash_request(4096, &[(3 << 20, 16 << 10)]);
        let frame = p.sender.request_hashes(fine.clone());
        p.send(frame);
        let Some(Ok(ReceiverEvent::HashRequest(req))) = p.receiver_step() else {
            panic!("no HASH_REQUEST");
        };
        assert_eq!(req, fine);
        let answer = p.receiver.hashes(crate::Hashes::plain(
            req.disk,
            req.digest_len,
            target_digests(&req),
        ));
        p.reply(answer);
        let Some(Ok(SenderEvent::Hashes { hashes, .. })) = p.sender_step() else {
            panic!("no HASHES");
        };
        assert_eq!(hashes.digest_total(), 4);
        p.send_data(testutil::data_raw(1, (3 << 20) + 8192, 4096, 2));
        assert_eq!(p.receive_all().len(), 1);
        let ack = p.receiver.durable(2, 65536 + 4096).unwrap();
        p.reply(ack);
        assert!(matches!(p.sender_step(), Some(Ok(SenderEvent::Acked(_)))));

        let end = p.sender.end(true);
        p.send(end);
        let Some(Ok(ReceiverEvent::End(end))) = p.receiver_step() else {
            panic!("no END");
        };
        assert_eq!((end.frames, end.bytes), (2, 65536 + 4096));
        let done = p.receiver.done(65536 + 4096, 0);
        p.reply(done);
        let Some(Ok(SenderEvent::Done(done))) = p.sender_step() else {
            panic!("no DONE");
        };
        assert_eq!(done.frames, 2);
        assert!(p.to_receiver.is_empty() && p.to_sender.is_empty());
    }

    #[test]
    fn stopped_early_with_acks_in_flight() {
        let mut p = Pair::new(1);
        p.handshake();
        for i in 0..3 {
            p.send_data(testutil::data_raw(0, i * 65536, 65536, 1));
        }
        let end = p.sender.end(false);
        p.send(end);
        // The receiver reads everything, acknowledges part while the rest is being synced,
        // then the rest, then DONE.
        assert_eq!(p.receive_all_then_end(), 3);
        let a1 = p.receiver.durable(1, 65536).unwrap();
        let a2 = p.receiver.durable(3, 3 * 65536).unwrap();
        let done = p.receiver.done(3 * 65536, 0);
        p.reply(a1);
        p.reply(a2);
        p.reply(done);
        let mut acked = 0;
        while let Some(ev) = p.sender_step() {
            match ev.unwrap() {
                SenderEvent::Acked(a) => acked += a.len(),
                SenderEvent::Done(d) => assert_eq!(d.frames, 3),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(acked, 3);
        assert_eq!(p.sender.unacked().count(), 0);
    }

    #[test]
    fn refused_hello() {
        let mut p = Pair::new(1);
        let hello = p.sender.hello();
        p.send(hello);
        assert!(matches!(
            p.receiver_step(),
            Some(Ok(ReceiverEvent::Hello(_)))
        ));
        let err = p
            .receiver
            .refuse("SMS.1504", "disk0: target is smaller than the source");
        p.reply(err);
        let Some(Ok(SenderEvent::PeerError(e))) = p.sender_step() else {
            panic!("no ERROR");
        };
        assert_eq!(e.code, "SMS.1504");
    }

    #[test]
    fn sender_error_mid_stream() {
        let mut p = Pair::new(1);
        p.handshake();
        p.send_data(chunk(0));
        let abort = p.sender.abort("SMS.1905", "read error on the source disk");
        p.send(abort);
        assert_eq!(p.receive_all_or_error(), 1);
        assert!(p
            .sender
            .handle_frame(Frame::Ack(crate::Ack {
                frames: 1,
                bytes: 65536
            }))
            .is_err());
    }

    #[test]
    fn negotiates_the_newest_common_version() {
        assert_eq!(negotiate(1, 1), Some(1));
        assert_eq!(negotiate(1, u16::MAX), Some(VERSION_MAX));
        assert_eq!(negotiate(VERSION_MAX + 1, u16::MAX), None);
        assert_eq!(negotiate(0, 0), None);
    }
}
