//! Dialing pusher: the listen URL, one counted dial through the [`Connector`]
//! seam, and "dial, then report to the pod breaker", written once for the
//! session links and the outbox drainer.

use hark_resilience::breaker::Breaker;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::config::PusherConfig;
use crate::connect::{self, Conn, Connector, DialError};
use crate::metrics::PUSHER_CONNECT_ATTEMPTS;

/// The listen URL for a user: `<base>/v1/trigger/listen?uid=…&sample_rate=…`.
pub fn listen_url(base: &str, uid: &str, sample_rate: u32) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("uid", uid)
        .append_pair("sample_rate", &sample_rate.to_string())
        .finish();
    format!("{}/v1/trigger/listen?{query}", base.trim_end_matches('/'))
}

/// Dials pusher once: connect + handshake bounded by `--pusher-connect-timeout`.
/// Counts the attempt in `pusher_connect_attempts_total{result}`.
pub async fn dial(
    connector: &dyn Connector,
    url: &str,
    config: &PusherConfig,
) -> Result<Conn, DialError> {
    let result = match url.into_client_request() {
        Ok(request) => {
            connect::dial(connector, request, crate::ws::pusher_config(), config.connect_timeout)
                .await
        }
        Err(error) => Err(DialError::Other(error.to_string())),
    };
    let label = match &result {
        Ok(_) => "ok",
        Err(error) => error.label(),
    };
    metrics::counter!(PUSHER_CONNECT_ATTEMPTS, "result" => label).increment(1);
    result
}

/// [`dial`], then tells the pod breaker about a failure: a `Retry-After` opens it
/// for that long, anything else counts towards its threshold. (A success tells it
/// nothing: its window counts failures only, see decision 4.)
pub async fn dial_reported(
    connector: &dyn Connector,
    url: &str,
    config: &PusherConfig,
    breaker: &Breaker,
) -> Result<Conn, DialError> {
    let result = dial(connector, url, config).await;
    if let Err(error) = &result {
        match error.retry_after(config.retry_after_max) {
            Some(delay) => breaker.record_retry_after(delay),
            None => breaker.record_failure(),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uid_is_form_encoded() {
        assert_eq!(
            listen_url("ws://p:1/", "a b&c=d/é", 16_000),
            "ws://p:1/v1/trigger/listen?uid=a+b%26c%3Dd%2F%C3%A9&sample_rate=16000"
        );
    }
}
