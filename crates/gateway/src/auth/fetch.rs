//! One bounded HTTP(S) GET of the JWKS URL: connect, TLS (rustls with ring and the
//! webpki roots, as Hark's `wss://` links), request and body all inside one
//! timeout, the body capped, conditional on the last `ETag`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AGE, CACHE_CONTROL, ETAG, HOST, IF_NONE_MATCH, USER_AGENT};
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::remote::{CacheHeaders, FetchError, FetchFuture, Fetched, Fetcher};

/// Fetches one JWKS URL over HTTP/1.1.
pub(crate) struct HttpFetcher {
    /// Host to connect to (no brackets around an IPv6 address).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// Path and query of the request.
    path: String,
    /// For `https://` URLs.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Bound on connect + TLS + request + body.
    timeout: Duration,
    /// Largest body read.
    max_bytes: usize,
}

impl HttpFetcher {
    /// Checks the URL (`http://` or `https://`, a host, no user info) and prepares
    /// the TLS client.
    pub(crate) fn new(url: &str, timeout: Duration, max_bytes: usize) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the URL must start with https:// or http://".into()),
        };
        let authority = uri.authority().ok_or("the URL has no host")?.clone();
        if authority.as_str().contains('@') {
            return Err("user info in the URL is not supported".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
            Some((TlsConnector::from(tls_config()?), name))
        } else {
            None
        };
        Ok(Self { host, port, authority: authority.to_string(), path, tls, timeout, max_bytes })
    }

    async fn exchange(&self, etag: Option<&str>) -> Result<Fetched, FetchError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| FetchError::Connect(format!("TLS: {e}")))?;
                self.request(TokioIo::new(tls), etag).await
            }
            None => self.request(TokioIo::new(tcp), etag).await,
        }
    }

    async fn request<IO>(&self, io: IO, etag: Option<&str>) -> Result<Fetched, FetchError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let http = |e: hyper::Error| FetchError::Http(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(http)?;
        // The connection task dies with this request, whatever ends it.
        let conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut request = http::Request::get(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(USER_AGENT, concat!("hark/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json");
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(format!("cannot build the request: {e}")))?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let cache = cache_headers(response.headers());
        if status == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified(cache));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let new_etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(str::to_owned);
        let body =
            Limited::new(response.into_body(), self.max_bytes).collect().await.map_err(|e| {
                match e.downcast_ref::<LengthLimitError>() {
                    Some(_) => FetchError::TooLarge(self.max_bytes),
                    None => FetchError::Http(e.to_string()),
                }
            })?;
        drop(conn);
        Ok(Fetched::Modified { body: body.to_bytes(), etag: new_etag, cache })
    }
}

impl Fetcher for HttpFetcher {
    fn fetch<'a>(&'a self, etag: Option<&'a str>) -> FetchFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.exchange(etag))
                .await
                .unwrap_or(Err(FetchError::Timeout(self.timeout)))
        })
    }
}

fn cache_headers(headers: &HeaderMap) -> CacheHeaders {
    let text = |name| headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    CacheHeaders {
        cache_control: text(CACHE_CONTROL).map(str::to_owned),
        age: text(AGE).and_then(|a| a.trim().parse().ok()),
    }
}

/// A client configuration trusting the webpki roots, with the `ring` provider
/// named explicitly (rustls is built without a default one).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn urls_are_checked() {
        let f = HttpFetcher::new(
            "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com",
            T,
            1024,
        )
        .expect("Google's securetoken JWKS URL");
        assert_eq!((f.host.as_str(), f.port), ("www.googleapis.com", 443));
        assert_eq!(f.path, "/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com");
        assert!(f.tls.is_some());
        let f = HttpFetcher::new("http://[::1]:8081/jwks?x=1", T, 1024).expect("ipv6");
        assert_eq!((f.host.as_str(), f.port, f.path.as_str()), ("::1", 8081, "/jwks?x=1"));
        assert_eq!(f.authority, "[::1]:8081");
        assert!(f.tls.is_none());
        for bad in ["ftp://x/jwks", "/jwks", "https://user:pw@x/jwks", "not a url"] {
            assert!(HttpFetcher::new(bad, T, 1024).is_err(), "{bad}");
        }
    }
}
