//! The HTTP side of a client upgrade, done by hark itself: reading the request head
//! (bounded, parsed once with `httparse`, so an oversized or malformed request gets
//! a real status — 431/400 — instead of a dropped socket), writing every answer
//! (refusals and the 101) from an `http::Response`, and handing the bytes that
//! followed the head to the WebSocket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::admission::retry_after_header;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// Longest request line accepted.
pub const MAX_REQUEST_LINE: usize = 4 * 1024;
/// Bound on writing one answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed or failed before a full head arrived (nothing to answer).
    Gone,
    /// Head, request line or header count over its limit (431).
    TooLarge,
    /// Not an HTTP/1.1 GET request (400).
    Malformed,
}

/// A parsed request head and the bytes read after it (none for a well-behaved
/// client, which waits for the 101).
#[derive(Debug)]
pub struct Head {
    /// Method, URI, version and headers; no body.
    pub request: Request<()>,
    /// Bytes after the head: the start of the WebSocket stream.
    pub rest: Vec<u8>,
}

/// Reads until the end of the request head and parses it.
pub async fn read_head(stream: &mut TcpStream) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Gone)?;
        if n == 0 {
            return Err(HeadError::Gone);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf)? {
            return Ok(head);
        }
    }
}

/// `Ok(None)`: the head is not complete yet (and within its limits).
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(buf.len());
    if line_end > MAX_REQUEST_LINE {
        return Err(HeadError::TooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return Err(HeadError::Malformed);
    }
    let mut request = Request::builder().method(http::Method::GET).version(Version::HTTP_11);
    request = request.uri(parsed.path.ok_or(HeadError::Malformed)?);
    for header in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| HeadError::Malformed)?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| HeadError::Malformed)?;
        request = request.header(name, value);
    }
    let request = request.body(()).map_err(|_| HeadError::Malformed)?;
    Ok(Some(Head { request, rest: buf[len..].to_vec() }))
}

/// The answer to a refused head: 431 or 400 (`None` when the peer is gone).
pub fn head_refusal(error: HeadError) -> Option<Response<String>> {
    match error {
        HeadError::Gone => None,
        HeadError::TooLarge => Some(refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request line or headers are too large",
            None,
            &[],
        )),
        HeadError::Malformed => Some(refusal(
            StatusCode::BAD_REQUEST,
            "expected an HTTP/1.1 GET WebSocket upgrade",
            None,
            &[],
        )),
    }
}

/// A refusal: `status` with a one-line plain-text reason, `Connection: close`, and
/// a `Retry-After` when given.
pub fn refusal(
    status: StatusCode,
    reason: &str,
    retry_after: Option<Duration>,
    headers: &[(&str, &str)],
) -> Response<String> {
    let mut response = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONNECTION, "close");
    if let Some(delay) = retry_after {
        response = response.header(http::header::RETRY_AFTER, retry_after_header(delay));
    }
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(format!("{reason}\n")).expect("static response parts are valid")
}

/// Writes `response` (status line, headers, `Content-Length` unless it is a 101,
/// body), bounded by a short timeout. `Err` when the peer did not take it.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response<String>,
) -> io::Result<()> {
    let status = response.status();
    let mut out =
        format!("HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or(""))
            .into_bytes();
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        out.extend_from_slice(format!("content-length: {}\r\n", response.body().len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(response.body().as_bytes());
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Writes a refusal and closes the stream.
pub async fn refuse(stream: &mut TcpStream, response: &Response<String>) {
    let _ = write_response(stream, response).await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
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
                // The prefix is consumed; give its memory back.
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
    fn heads_are_parsed_and_bounded() {
        let head = parse_head(b"GET /v4/listen?uid=a HTTP/1.1\r\nHost: x\r\n\r\nrest")
            .expect("valid")
            .expect("complete");
        assert_eq!(head.request.uri().path(), "/v4/listen");
        assert_eq!(head.request.uri().query(), Some("uid=a"));
        assert_eq!(head.request.headers()["host"], "x");
        assert_eq!(head.rest, b"rest");
        assert!(parse_head(b"GET /v4/listen HTTP/1.1\r\nHost: x\r\n").expect("ok").is_none());
        for bad in [
            &b"POST /v4/listen HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /v4/listen HTTP/1.0\r\n\r\n",
            b"\xff\xfe garbage\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad).err(), Some(HeadError::Malformed));
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(parse_head(many.as_bytes()).err(), Some(HeadError::TooLarge));
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(parse_head(long_line.as_bytes()).err(), Some(HeadError::TooLarge));
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse_head(big.as_bytes()).err(), Some(HeadError::TooLarge));
    }

    #[tokio::test]
    async fn responses_are_written_one_way() {
        let mut out = Vec::new();
        let response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "slow down",
            Some(Duration::from_millis(1500)),
            &[("X-Rate-Limit-Reason", "quota")],
        );
        write_response(&mut out, &response).await.expect("written");
        let text = String::from_utf8(out).expect("text");
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{text}");
        assert!(text.contains("retry-after: 2\r\n"), "{text}");
        assert!(text.contains("x-rate-limit-reason: quota\r\n"), "{text}");
        assert!(text.ends_with("content-length: 10\r\n\r\nslow down\n"), "{text}");
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
