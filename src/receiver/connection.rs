//! One connection: TLS, who the client is, the HELLO, which kind of session it opens, and how
//! the session's end is told to the sender.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blockrep_proto::{ReceiverEvent, ReceiverSession};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use super::accept::Ended;
use super::identity::ClientIdentity;
use super::session::run_session;
use super::Shared;
use crate::error::sanitize;
use crate::framed::{write_frame, FrameReader, ReadError};
use crate::Error;

/// How long a failed session keeps reading (and discarding) after its ERROR, so the sender
/// gets to read the ERROR instead of a connection reset.
const LINGER: Duration = Duration::from_secs(2);

pub(super) type Reader = FrameReader<ReadHalf<TlsStream<TcpStream>>>;

pub(super) type Writer = WriteHalf<TlsStream<TcpStream>>;

/// The sender of a session: its address, who it is, and what its HELLO asked for.
pub(super) struct Client {
    pub addr: SocketAddr,
    /// blake3 of the client certificate's DER: who owns a session's journal.
    pub cert: [u8; 32],
    /// What the certificate says, for the allow rules.
    pub identity: ClientIdentity,
    /// Only compare (HELLO VERIFY): nothing is written.
    pub verify: bool,
    /// Another stream of an open session (HELLO JOIN).
    pub join: bool,
}

/// A connection past its HELLO: the session's state machine, the two halves of the TLS
/// stream, who sent the HELLO, and the receiver's shutdown signal.
pub(super) struct Conn {
    pub session: ReceiverSession,
    pub reader: Reader,
    pub wr: Writer,
    pub client: Client,
    pub session_id: String,
    pub stop: watch::Receiver<bool>,
}

impl Conn {
    pub fn peer(&self) -> SocketAddr {
        self.client.addr
    }

    /// Writes one frame; `what` names it for the error.
    pub async fn send(&mut self, frame: &blockrep_proto::Frame, what: &str) -> Result<(), Error> {
        let peer = self.client.addr;
        write_frame(&mut self.wr, frame)
            .await
            .map_err(|e| Error::Transport(format!("sending {what} to {peer}: {e}")))
    }
}

/// One connection: TLS, HELLO, then the session.
pub(super) async fn handle_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Ended {
    let _ = tcp.set_nodelay(true);
    let hs_timeout = shared.config.handshake_timeout;
    let tls = match tokio::time::timeout(hs_timeout, shared.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            warn!(%peer, "TLS handshake failed: {e}");
            return Ended::NoSession;
        }
        Err(_) => {
            warn!(%peer, "TLS handshake not finished within {} s; closing", hs_timeout.as_secs());
            return Ended::NoSession;
        }
    };
    // Who the client is (only the certificate that started a session may resume it), and
    // whether it may use this receiver; told after its HELLO, so it reads why.
    let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => ClientIdentity::from_der(cert.as_ref()),
        None => Err(Error::ClientNotAllowed {
            why: "it presented no certificate".into(),
        }),
    }
    .and_then(|id| {
        if shared.config.access.allows(&id) {
            Ok(id)
        } else {
            Err(Error::ClientNotAllowed {
                why: format!(
                    "its certificate ({id}) matches none of the receiver's --allow-client rules"
                ),
            })
        }
    });
    let (rd, mut wr) = tokio::io::split(tls);
    let mut reader = FrameReader::new(rd);
    let mut session = ReceiverSession::new();
    let first = match tokio::time::timeout(hs_timeout, reader.read_frame()).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => {
            warn!(%peer, "closed before HELLO");
            return Ended::NoSession;
        }
        Ok(Err(e)) => {
            let e = read_error(e, peer);
            warn!(%peer, "before HELLO: {e}");
            send_error(&mut session, &mut wr, &e).await;
            return Ended::NoSession;
        }
        Err(_) => {
            warn!(%peer, "no HELLO within {} s; closing", hs_timeout.as_secs());
            return Ended::NoSession;
        }
    };
    let hello = match session.handle_frame(first) {
        Ok(ReceiverEvent::Hello(hello)) => hello,
        other => {
            // A protocol error with its reason (a version this receiver does not speak, a
            // HELLO that breaks a rule): the sender reports it and does not retry.
            let e = Error::Protocol(match other {
                Err(e) => e,
                Ok(_) => blockrep_proto::ProtocolError::Unexpected {
                    frame: blockrep_proto::FrameType::Hello,
                    state: "waiting for HELLO",
                },
            });
            warn!(%peer, "refusing the session: {e}");
            send_error(&mut session, &mut wr, &e).await;
            return Ended::NoSession;
        }
    };
    let identity = match identity {
        Ok(id) => id,
        Err(e) => {
            warn!(%peer, "refusing the session: {e}");
            send_error(&mut session, &mut wr, &e).await;
            return Ended::NoSession;
        }
    };
    let session_id = hello.session_id.clone();
    let (join, netcheck) = (hello.join, hello.netcheck);
    if join {
        info!(%peer, session = %session_id, "another stream of the session");
    } else {
        info!(%peer, session = %session_id, agent = %sanitize(&hello.agent_version), disks = hello.disks.len(), "session opened");
    }
    let mut conn = Conn {
        session,
        reader,
        wr,
        client: Client {
            addr: peer,
            cert: identity.fingerprint,
            identity,
            verify: hello.verify,
            join: hello.join,
        },
        session_id,
        stop,
    };
    let result = run_session(&mut conn, &shared).await;
    let session_id = &conn.session_id;
    match &result {
        Ok(r) if join => {
            info!(%peer, session = %session_id, bytes = r.bytes, "stream ended")
        }
        Ok(r) => {
            info!(%peer, session = %session_id, complete = r.complete, bytes = r.bytes, "session ended")
        }
        Err(e) => {
            warn!(%peer, session = %session_id, "session failed: {}", e.user_line());
            send_error(&mut conn.session, &mut conn.wr, e).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.wr.shutdown()).await;
    if result.is_err() {
        conn.reader.drain(LINGER).await;
    }
    if join {
        Ended::Stream(result)
    } else if netcheck {
        Ended::Check(result)
    } else {
        Ended::Session(result)
    }
}

/// Tells the sender why the session ends; best effort, bounded in time.
async fn send_error(session: &mut ReceiverSession, wr: &mut Writer, e: &Error) {
    let frame = session.refuse(e.code(), &e.to_string());
    let _ = tokio::time::timeout(Duration::from_secs(5), write_frame(wr, &frame)).await;
}

/// What a failed frame read means.
pub(super) fn read_error(e: ReadError, peer: SocketAddr) -> Error {
    match e {
        ReadError::Decode(d) => Error::Protocol(d.into()),
        ReadError::Io(io) => Error::Transport(format!("reading from the sender {peer}: {io}")),
    }
}

/// The ERROR a sender ended its session with.
pub(super) fn sender_error(e: blockrep_proto::ErrorFrame) -> Error {
    Error::Peer {
        side: "sender",
        code: sanitize(&e.code),
        message: sanitize(&e.message),
    }
}
