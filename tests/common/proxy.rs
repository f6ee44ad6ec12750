//! A TCP proxy on 127.0.0.1 that stands in for a bad network: it can cut a connection after a
//! number of bytes from the client, as a dropped link would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Forwards to `upstream`. Connection `i` (from 0) is cut, both ways, with a reset, once
    /// it has carried `cuts[i]` bytes from the client; later connections pass untouched.
    pub async fn start(upstream: SocketAddr, cuts: Vec<u64>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let i = conns.fetch_add(1, Relaxed);
                let cut = cuts.get(i).copied();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, cut).await;
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }
}

async fn relay(client: TcpStream, server: TcpStream, cut: Option<u64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut carried = 0u64;
        loop {
            let room = cut
                .map_or(buf.len() as u64, |c| c - carried)
                .min(buf.len() as u64);
            if room == 0 {
                return;
            }
            let n = match cr.read(&mut buf[..room as usize]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            carried += n as u64;
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    // Reset both sides, as a dropped link ends up doing, rather than a clean close. (A zero
    // linger resets at once; it is a lingering close that would block the thread.)
    if let (Ok(c), Ok(s)) = (cr.reunite(cw), sr.reunite(sw)) {
        #[allow(deprecated)]
        {
            let _ = c.set_linger(Some(std::time::Duration::ZERO));
            let _ = s.set_linger(Some(std::time::Duration::ZERO));
        }
    }
}
