//! Moving frames over an async byte stream: the thin I/O around `blockrep-proto`.

use std::sync::{Arc, Mutex};

use blockrep_disk::AlignedBuf;
use blockrep_proto::consts::{DATA_FIXED_LEN, FRAME_HEADER_LEN};
use blockrep_proto::frame::{decode_data, FrameType, Header, DATA_HEAD_LEN};
use blockrep_proto::{DecodeError, Frame};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read ahead when no frame header is buffered: small, so an idle or handshaking
/// connection costs little memory.
const READ_AHEAD: usize = 16 * 1024;

/// DATA payloads at least this long are read into pooled page-aligned buffers: no fresh
/// allocation (and page faults) per chunk, and a raw chunk can be written with `O_DIRECT`
/// straight from where it was received.
const POOLED_PAYLOAD: usize = 64 * 1024;

/// Payload buffers kept for reuse per connection: about what a receiver holds in flight.
const POOL_MAX: usize = 32;

/// A connection's spare payload buffers.
type PayloadPool = Arc<Mutex<Vec<AlignedBuf>>>;

/// A payload buffer that goes back to its pool when the last `Bytes` of it is dropped.
struct Pooled {
    buf: Option<AlignedBuf>,
    pool: PayloadPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_MAX {
                pool.push(buf);
            }
        }
    }
}

/// A DATA frame whose payload is being read into a pooled buffer.
struct Partial {
    head: [u8; DATA_HEAD_LEN],
    payload: AlignedBuf,
    filled: usize,
}

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
    partial: Option<Partial>,
    pool: PayloadPool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            partial: None,
            pool: PayloadPool::default(),
        }
    }

    /// The next frame, or `None` when the peer closed the connection between frames. Cancel
    /// safe: a partly read frame stays buffered.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if self.partial.is_some() {
                if let Some(frame) = self.read_payload().await? {
                    return Ok(Some(frame));
                }
                continue;
            }
            if let Some(frame) = blockrep_proto::decode(&mut self.buf).map_err(ReadError::Decode)? {
                return Ok(Some(frame));
            }
            // The header (if buffered) has been checked against its type's maximum, so
            // reserving the whole frame is bounded.
            let want = match self.buf.first_chunk::<FRAME_HEADER_LEN>() {
                Some(head) => {
                    let header = Header::decode(head).map_err(ReadError::Decode)?;
                    let body = header.body_len as usize;
                    let pooled = header.frame_type == FrameType::Data
                        && body >= DATA_FIXED_LEN + POOLED_PAYLOAD;
                    match (pooled, self.buf.first_chunk::<DATA_HEAD_LEN>()) {
                        (true, Some(head)) => {
                            let head = *head;
                            self.buf.advance(DATA_HEAD_LEN);
                            self.partial = Some(Partial {
                                head,
                                payload: self.take_buffer(body - DATA_FIXED_LEN),
                                filled: 0,
                            });
                            continue;
                        }
                        (true, None) => DATA_HEAD_LEN - self.buf.len(),
                        (false, _) => FRAME_HEADER_LEN + body - self.buf.len(),
                    }
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
    /// A payload buffer of `len` bytes, from the pool when it has one.
    fn take_buffer(&self, len: usize) -> AlignedBuf {
        let spare = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match spare {
            Some(mut buf) => {
                buf.set_len(len);
                buf
            }
            None => AlignedBuf::new(len),
        }
    }

    /// Fills the partial DATA frame's payload: what is buffered, then straight from the
    /// stream. The frame once it is whole; `None` after a read that did not finish it.
    async fn read_payload(&mut self) -> Result<Option<Frame>, ReadError> {
        let p = self.partial.as_mut().expect("a partial frame");
        let n = self.buf.len().min(p.payload.len() - p.filled);
        p.payload[p.filled..p.filled + n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        p.filled += n;
        if p.filled < p.payload.len() {
            let n = self
                .inner
                .read(&mut p.payload[p.filled..])
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            p.filled += n;
            if p.filled < p.payload.len() {
                return Ok(None);
            }
        }
        let Partial { head, payload, .. } = self.partial.take().expect("a partial frame");
        let payload = Bytes::from_owner(Pooled {
            buf: Some(payload),
            pool: self.pool.clone(),
        });
        let data = decode_data(&head, payload).map_err(ReadError::Decode)?;
        Ok(Some(Frame::Data(data)))
    }

    /// Reads and discards whatever the peer still sends, until it closes or `limit` passes.
    /// Closing a socket with unread input makes the kernel send a reset, which can destroy
    /// the last frames we wrote (an ERROR saying why) before the peer reads them.
    pub async fn drain(&mut self, limit: std::time::Duration) {
        self.buf.clear();
        self.partial = None;
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
