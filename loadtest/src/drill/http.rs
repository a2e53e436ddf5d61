//! A small HTTP client for the control ports and hark's `/metrics`, every call
//! bounded.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Bound on one request, body included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled HTTP/1 client.
#[derive(Clone, Debug)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

impl Default for Http {
    fn default() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl Http {
    /// `GET url`; the body as text. Non-2xx is an error.
    pub async fn get(&self, url: &str) -> anyhow::Result<String> {
        self.call(http::Method::GET, url, None).await
    }

    /// `POST url` with a JSON body (or none); the answer as text. Non-2xx is an error.
    pub async fn post(
        &self,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> anyhow::Result<String> {
        self.call(http::Method::POST, url, json).await
    }

    async fn call(
        &self,
        method: http::Method,
        url: &str,
        json: Option<&serde_json::Value>,
    ) -> anyhow::Result<String> {
        let body = match json {
            Some(value) => Bytes::from(serde_json::to_vec(value)?),
            None => Bytes::new(),
        };
        let request = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .with_context(|| format!("building {method} {url}"))?;
        let exchange = async {
            let response = self.0.request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {url}: no answer within {TIMEOUT:?}"))?
            .with_context(|| format!("{method} {url}"))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            anyhow::bail!("{method} {url}: HTTP {status}: {}", text.trim());
        }
        Ok(text)
    }
}
