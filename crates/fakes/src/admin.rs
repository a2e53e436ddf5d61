//! Hark's admin port as a test reads it: a bounded HTTP/1.0 GET (`/healthz`,
//! `/ready`, `/metrics`) and a parsed scrape of `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::prom::Scrape;

/// Bound on one request, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` on `addr`: the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("GET {path}: no answer"))
    })??;
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// `GET /metrics` on `addr`, parsed.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<Scrape> {
    let (status, body) = get(addr, "/metrics").await?;
    if status != 200 {
        return Err(std::io::Error::other(format!("GET /metrics: HTTP {status}")));
    }
    Ok(Scrape::parse(&body))
}
