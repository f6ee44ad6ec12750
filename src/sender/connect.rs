//! Reaching the receiver: TCP, TLS 1.3, HELLO/WELCOME, and the errors a user sees for each.

use std::sync::Arc;
use std::time::Duration;

use blockrep_proto::{Frame, Hello, SenderEvent, SenderSession, Welcome};
use rustls::pki_types::ServerName;
use tokio::io::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::SendConfig;
use crate::error::sanitize;
use crate::framed::{write_frame, FrameReader, ReadError};
use crate::throttle::{Paced, Throttle};
use crate::{Error, DEFAULT_PORT};

/// The socket under TLS: paced and measured by the task's throttle.
pub(crate) type Socket = Paced<TcpStream>;
pub(crate) type Writer = WriteHalf<TlsStream<Socket>>;
pub(crate) type FrameRx = mpsc::Receiver<Result<Option<Frame>, ReadError>>;

/// `host:port` with the default port added, and the host part for certificate checks.
fn split_target(target: &str) -> (String, String) {
    // [v6]:port, [v6], v4:port, name:port, v4, name, bare v6
    if let Some(rest) = target.strip_prefix('[') {
        if let Some((host, port)) = rest.split_once(']') {
            let port = port.strip_prefix(':').unwrap_or("");
            let port = if port.is_empty() {
                DEFAULT_PORT.to_string()
            } else {
                port.to_owned()
            };
            return (format!("[{host}]:{port}"), host.to_owned());
        }
    }
    if target.matches(':').count() > 1 {
        return (format!("[{target}]:{DEFAULT_PORT}"), target.to_owned());
    }
    match target.rsplit_once(':') {
        Some((host, _port)) => (target.to_owned(), host.to_owned()),
        None => (format!("{target}:{DEFAULT_PORT}"), target.to_owned()),
    }
}

/// Connects and authenticates: TCP (`SMS.1807` on failure), then TLS 1.3 (`SMS.0304`).
pub(crate) async fn connect(
    target: &str,
    server_name: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    throttle: Arc<Throttle>,
) -> Result<TlsStream<Socket>, Error> {
    let (addr, host) = split_target(target);
    let name = server_name.unwrap_or(&host).to_owned();
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| Error::Config(format!("{name:?} is not a valid server name")))?;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| Error::Connect {
            addr: addr.clone(),
            reason: format!("no answer within {} s", timeout.as_secs()),
        })?
        .map_err(|e| Error::Connect {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let socket = Paced::new(tcp, throttle);
    let stream = tokio::time::timeout(
        timeout,
        TlsConnector::from(tls).connect(server_name, socket),
    )
    .await
    .map_err(|_| Error::Tls {
        peer: addr.clone(),
        reason: format!("handshake not finished within {} s", timeout.as_secs()),
    })?
    .map_err(|e| Error::Tls {
        peer: addr.clone(),
        reason: tls_reason(&e),
    })?;
    Ok(stream)
}

/// The rustls error inside an I/O error, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn tls_reason(e: &std::io::Error) -> String {
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(c)) => format!(
            "the receiver's certificate was refused ({c:?}); check --ca and --server-name"
        ),
        Some(rustls::Error::AlertReceived(a)) => format!(
            "the receiver refused this client's certificate (alert {a:?}); check --cert/--key and the receiver's --client-ca"
        ),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// Maps a failure to read the receiver's frames to the error a user should see.
pub(crate) fn read_failure(e: ReadError, peer: &str) -> Error {
    match e {
        ReadError::Decode(d) => Error::Protocol(d.into()),
        ReadError::Io(io) if rustls_error(&io).is_some() => Error::Tls {
            peer: peer.to_owned(),
            reason: tls_reason(&io),
        },
        ReadError::Io(io) => Error::Transport(format!("reading from the receiver {peer}: {io}")),
    }
}

pub(crate) fn peer_error(e: blockrep_proto::ErrorFrame) -> Error {
    Error::Peer {
        side: "receiver",
        code: sanitize(&e.code),
        message: sanitize(&e.message),
    }
}

/// An accepted session: HELLO sent, WELCOME received. Frames from the receiver arrive on a
/// task of their own (`frames`), so ACKs are taken while the caller writes.
pub(crate) struct Link {
    pub session: SenderSession,
    pub wr: Writer,
    pub frames: FrameRx,
    pub welcome: Welcome,
    pub peer: String,
    /// The TCP socket's descriptor, for `TCP_INFO` (valid while the link lives).
    pub fd: std::os::fd::RawFd,
    reader_task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader_task.abort();
    }
}

impl Link {
    /// Connects, authenticates and opens the session announced by `hello`.
    pub async fn open(
        config: &SendConfig,
        hello: Hello,
        received: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<Self, Error> {
        let io_timeout = config.io_timeout;
        let stream = connect(
            &config.target,
            config.server_name.as_deref(),
            config.tls.clone(),
            config.connect_timeout,
            config.limits.clone(),
        )
        .await?;
        let peer = config.target.clone();
        let fd = std::os::fd::AsRawFd::as_raw_fd(stream.get_ref().0.get_ref());
        let (rd, mut wr) = tokio::io::split(stream);
        let mut reader = FrameReader::new(rd);
        let mut session = SenderSession::new(hello);
        write_frame(&mut wr, &session.hello())
            .await
            .map_err(|e| Error::Transport(format!("sending HELLO to {peer}: {e}")))?;
        let answer = tokio::time::timeout(io_timeout, reader.read_frame())
            .await
            .map_err(|_| {
                Error::Transport(format!(
                    "no answer to HELLO from {peer} within {} s",
                    io_timeout.as_secs()
                ))
            })?
            .map_err(|e| read_failure(e, &peer))?
            .ok_or_else(|| Error::Transport(format!("{peer} closed the connection after HELLO")))?;
        let welcome = match session.handle_frame(answer)? {
            SenderEvent::Welcome(w) => w,
            SenderEvent::PeerError(e) => return Err(peer_error(e)),
            other => {
                unreachable!("the session only yields WELCOME or an error here, got {other:?}")
            }
        };
        debug!(version = welcome.version, receiver = %sanitize(&welcome.receiver_version), "session accepted");
        let (frames_tx, frames) = mpsc::channel(64);
        let reader_task = tokio::spawn(async move {
            loop {
                let r = reader.read_frame().await;
                if let Ok(Some(frame)) = &r {
                    received.fetch_add(
                        frame.encoded_len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                let last = !matches!(r, Ok(Some(_)));
                if frames_tx.send(r).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Self {
            session,
            wr,
            frames,
            welcome,
            peer,
            fd,
            reader_task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_get_the_default_port() {
        assert_eq!(split_target("host"), ("host:8900".into(), "host".into()));
        assert_eq!(split_target("host:99"), ("host:99".into(), "host".into()));
        assert_eq!(
            split_target("127.0.0.1"),
            ("127.0.0.1:8900".into(), "127.0.0.1".into())
        );
        assert_eq!(split_target("[::1]:7"), ("[::1]:7".into(), "::1".into()));
        assert_eq!(split_target("[::1]"), ("[::1]:8900".into(), "::1".into()));
        assert_eq!(split_target("::1"), ("[::1]:8900".into(), "::1".into()));
    }
}
