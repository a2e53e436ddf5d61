//! The breaker's single pod-wide probe: a real pusher handshake, a heartbeat and an
//! answered ping,
//! made by the breaker's own prober task (never borrowed from a session).

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hark_proto::PusherFrame;
use hark_resilience::breaker::ProbeOutcome;
use tokio_tungstenite::tungstenite::Message;

use super::dial::{dial, listen_url};
use crate::config::PusherConfig;
use crate::connect::Connector;

/// The uid the prober connects as, so pusher can tell probes from users.
pub const PROBE_UID: &str = "hark-breaker-probe";

/// How long one probe can take at most: the dial, the heartbeat-and-pong exchange
/// (each bounded by the connect timeout) and the close (1 s). The breaker's
/// `probe_timeout` is set from it, so it never cuts a probe that is still in time.
pub fn max_duration(config: &PusherConfig) -> Duration {
    config.connect_timeout * 2 + PROBE_CLOSE + Duration::from_millis(500)
}

/// Bound on closing the probe's link.
const PROBE_CLOSE: Duration = Duration::from_secs(1);

/// Dials pusher once, sends a heartbeat and closes; classifies the result.
pub async fn probe(config: PusherConfig, connector: Arc<dyn Connector>) -> ProbeOutcome {
    let url = listen_url(&config.url, PROBE_UID, 16_000);
    match dial(&*connector, &url, &config).await {
        Ok(mut ws) => {
            // A handshake alone does not prove pusher is back: a pusher (or proxy)
            // that accepts and drops at once would close the breaker every cooldown.
            // The probe also needs its heartbeat taken and a ping answered.
            let exchange = tokio::time::timeout(config.connect_timeout, async {
                ws.send(Message::Binary(PusherFrame::Heartbeat.encode())).await?;
                ws.send(Message::Ping(bytes::Bytes::from_static(b"hark-probe"))).await?;
                while let Some(message) = ws.next().await {
                    match message? {
                        Message::Pong(_) => return Ok(true),
                        Message::Close(_) => return Ok(false),
                        _ => {}
                    }
                }
                Ok::<bool, tokio_tungstenite::tungstenite::Error>(false)
            })
            .await;
            let _ = tokio::time::timeout(PROBE_CLOSE, ws.close()).await;
            match exchange {
                Ok(Ok(true)) => ProbeOutcome::Success,
                Ok(Ok(false)) => {
                    tracing::info!("breaker probe: pusher accepted, then closed the link");
                    ProbeOutcome::Failure
                }
                Ok(Err(error)) => {
                    tracing::info!(%error, "breaker probe connected but the exchange failed");
                    ProbeOutcome::Failure
                }
                Err(_) => {
                    tracing::info!("breaker probe: no pong within the connect timeout");
                    ProbeOutcome::Failure
                }
            }
        }
        Err(error) => {
            tracing::info!(%error, "breaker probe failed");
            match error.retry_after(config.retry_after_max) {
                Some(delay) => ProbeOutcome::RetryAfter(delay),
                None => ProbeOutcome::Failure,
            }
        }
    }
}
