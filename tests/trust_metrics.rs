//! The receiver's metrics endpoint cannot be kept from a scrape by clients that connect and
//! send nothing, and closes every connection within its deadline. Real TCP on 127.0.0.1,
//! the real `serve_http` the receiver runs.

use std::sync::Arc;
use std::time::Duration;

use blockrep::metrics::{serve_http, HTTP_CONNECTIONS, HTTP_DEADLINE};
use blockrep::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Idle connections opened before the scrape: twice the endpoint's slots.
const IDLE: usize = 32;
const _: () = assert!(IDLE >= 2 * HTTP_CONNECTIONS);
/// The longest a step of this test may take (the machine is shared and may be slow).
const BOUND: Duration = Duration::from_secs(20);

/// One `GET /metrics` on a new connection: the whole response, or why there is none.
async fn scrape(addr: std::net::SocketAddr) -> Result<String, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response)
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_gets_through_32_idle_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_http(listener, Arc::new(Metrics::new())));

    // Clients that connect and never send a byte.
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }

    // A real scrape, while all of them are still open: it gets the metrics.
    let response = timeout(BOUND, scrape(addr))
        .await
        .expect("the scrape did not finish within the bound")
        .expect("the scrape got no response");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(
        response.contains("\n# TYPE blockrep_receiver_uptime_seconds gauge\n"),
        "{response}"
    );
    // And again: the endpoint keeps answering while they are open.
    for _ in 0..3 {
        let again = timeout(BOUND, scrape(addr)).await.unwrap().unwrap();
        assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again:?}");
    }

    // Every idle connection is closed by the endpoint (replaced by a newer one, or at its
    // deadline): none is kept open.
    for (i, tcp) in idle.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        let read = timeout(HTTP_DEADLINE + BOUND, tcp.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("idle connection {i} is still open"));
        assert!(matches!(read, Ok(0) | Err(_)), "connection {i}: {read:?}");
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_gets_through_slow_requests() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_http(listener, Arc::new(Metrics::new())));

    // Clients that send the start of a request and then nothing more.
    let mut slow = Vec::new();
    for _ in 0..IDLE {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        slow.push(tcp);
    }
    let response = timeout(BOUND, scrape(addr))
        .await
        .expect("the scrape did not finish within the bound")
        .expect("the scrape got no response");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    server.abort();
}
