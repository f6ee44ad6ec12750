//! Moving frames over an async byte stream: the thin I/O around `blockrep-proto`.

use blockrep_proto::consts::FRAME_HEADER_LEN;
use blockrep_proto::frame::Header;
use blockrep_proto::{DecodeError, Frame};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read ahead when no frame header is buffered: small, so an idle or handshaking
/// connection costs little memory.
const READ_AHEAD: usize = 16 * 1024;

/// Why no frame could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not a valid frame.
    Decode(DecodeError),
    /// The connection failed, or closed in the middle of a frame.
    Io(std::io::Error),
}

/// Reads whole frames from a stream, buffering at most one frame (plus read-ahead).
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or `None` when the peer closed the connection between frames. Cancel
    /// safe: a partly read frame stays buffered.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = blockrep_proto::decode(&mut self.buf).map_err(ReadError::Decode)? {
                return Ok(Some(frame));
            }
            // The header (if buffered) has been checked against its type's maximum, so
            // reserving the whole frame is bounded.
            let want = match self.buf.first_chunk::<FRAME_HEADER_LEN>() {
                Some(head) => {
                    let header = Header::decode(head).map_err(ReadError::Decode)?;
                    FRAME_HEADER_LEN + header.body_len as usize - self.buf.len()
                }
                None => READ_AHEAD,
            };
            self.buf.reserve(want);
            let n = self
                .inner
                .read_buf(&mut self.buf)
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads and discards whatever the peer still sends, until it closes or `limit` passes.
    /// Closing a socket with unread input makes the kernel send a reset, which can destroy
    /// the last frames we wrote (an ERROR saying why) before the peer reads them.
    pub async fn drain(&mut self, limit: std::time::Duration) {
        self.buf.clear();
        let mut scratch = [0u8; 16 * 1024];
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = self.inner.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(frame.encoded_len());
    frame.encode(&mut buf);
    w.write_all(&buf).await?;
    w.flush().await
}
