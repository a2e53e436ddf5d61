//! Reading the HTTP upgrade request head ourselves, bounded, so oversized or
//! malformed requests get a real status (431/400) instead of a dropped socket, then
//! handing the bytes already read to the WebSocket handshake.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// Longest request line accepted.
pub const MAX_REQUEST_LINE: usize = 4 * 1024;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed or failed before a full head arrived (nothing to answer).
    Gone,
    /// Head, request line or header count over its limit (431).
    TooLarge,
    /// Not an HTTP/1.1 GET request line (400).
    Malformed,
}

/// Reads until the end of the request head. Bytes after it (none for a
/// well-behaved client) stay in the returned buffer.
pub async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Gone)?;
        if n == 0 {
            return Err(HeadError::Gone);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            check_head(&buf[..end])?;
            return Ok(buf);
        }
        let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(buf.len());
        if buf.len() > MAX_HEAD_BYTES || line_end > MAX_REQUEST_LINE {
            return Err(HeadError::TooLarge);
        }
    }
}

fn check_head(head: &[u8]) -> Result<(), HeadError> {
    if head.len() > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    if request_line.len() > MAX_REQUEST_LINE {
        return Err(HeadError::TooLarge);
    }
    let ok = request_line.starts_with(b"GET ")
        && (request_line.ends_with(b" HTTP/1.1\r") || request_line.ends_with(b" HTTP/1.1"));
    if !ok {
        return Err(HeadError::Malformed);
    }
    if lines.count() > MAX_HEADERS {
        return Err(HeadError::TooLarge);
    }
    Ok(())
}

/// Answers a refused head with a status and closes.
pub async fn refuse(stream: &mut TcpStream, error: HeadError) {
    let (status, reason) = match error {
        HeadError::Gone => return,
        HeadError::TooLarge => {
            ("431 Request Header Fields Too Large", "request line or headers are too large")
        }
        HeadError::Malformed => ("400 Bad Request", "expected an HTTP/1.1 GET WebSocket upgrade"),
    };
    respond(stream, status, reason, &[]).await;
}

/// Writes a plain-text HTTP response with a one-line body and closes the stream.
pub async fn respond(
    stream: &mut TcpStream,
    status: &str,
    reason: &str,
    headers: &[(&str, String)],
) {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n",
        reason.len() + 1
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!("\r\n{reason}\n"));
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// A stream that yields `prefix` before reading from `inner`.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    position: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self { prefix, position: 0, inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.position < this.prefix.len() {
            let left = &this.prefix[this.position..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.position += n;
            if this.position == this.prefix.len() {
                // The head is consumed; give its memory back.
                this.prefix = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_checked() {
        assert_eq!(check_head(b"GET /v4/listen HTTP/1.1\r\nHost: x\r"), Ok(()));
        assert_eq!(check_head(b"POST /v4/listen HTTP/1.1\r\nHost: x\r"), Err(HeadError::Malformed));
        assert_eq!(check_head(b"GET /v4/listen HTTP/1.0\r"), Err(HeadError::Malformed));
        let many = format!("GET / HTTP/1.1\r\n{}", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(check_head(many.as_bytes()), Err(HeadError::TooLarge));
    }

    #[tokio::test]
    async fn the_prefix_is_replayed_before_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello".to_vec(), b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
