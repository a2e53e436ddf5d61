//! The breaker's single pod-wide probe: a real pusher handshake plus a heartbeat,
//! made by the breaker's own prober task (never borrowed from a session).

use futures::SinkExt;
use hark_proto::PusherFrame;
use hark_resilience::breaker::ProbeOutcome;
use tokio_tungstenite::tungstenite::Message;

use super::dial::{dial, listen_url};
use crate::config::PusherConfig;

/// The uid the prober connects as, so pusher can tell probes from users.
pub const PROBE_UID: &str = "hark-breaker-probe";

/// Dials pusher once, sends a heartbeat and closes; classifies the result.
pub async fn probe(config: PusherConfig) -> ProbeOutcome {
    let url = listen_url(&config.url, PROBE_UID, 16_000);
    match dial(&url, config.connect_timeout, config.retry_after_max).await {
        Ok(mut ws) => {
            let sent = tokio::time::timeout(config.connect_timeout, async {
                ws.send(Message::Binary(PusherFrame::Heartbeat.encode())).await?;
                ws.close(None).await
            })
            .await;
            match sent {
                Ok(Ok(())) => ProbeOutcome::Success,
                Ok(Err(error)) => {
                    tracing::info!(%error, "breaker probe connected but the heartbeat failed");
                    ProbeOutcome::Failure
                }
                Err(_) => ProbeOutcome::Failure,
            }
        }
        Err(error) => {
            tracing::info!(%error, "breaker probe failed");
            match error.retry_after() {
                Some(delay) => ProbeOutcome::RetryAfter(delay),
                None => ProbeOutcome::Failure,
            }
        }
    }
}
