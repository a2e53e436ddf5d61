//! Delivering one fallback record downstream: replayed to pusher (103, 102 with
//! every segment, 104, wait for the 201) or POSTed to `--fallback-url` with
//! `Idempotency-Key`. Both drainers — the local outbox's and the shared one's —
//! deliver through here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hark_proto::ConversationRecord;
use hark_resilience::breaker::{Breaker, BreakerState};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use crate::config::PusherConfig;
use crate::connect::Connector;
use crate::pusher::conn::PusherConn;
use crate::pusher::dial::{dial, dial_reported, listen_url};

/// How long a replay waits for its 201 or HTTP answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where records are delivered.
#[derive(Clone)]
pub enum ReplaySink {
    /// Replay to pusher over its WebSocket protocol, dialing through the connector.
    Pusher(PusherConfig, Arc<dyn Connector>),
    /// POST the record as JSON with `Idempotency-Key: <conversation_id>`.
    Http(String),
    /// No destination configured: keep records on disk (an operator delivers them).
    None,
}

/// Outcome of one delivery.
#[derive(Debug)]
pub enum Delivery {
    /// Accepted; delete the record.
    Accepted,
    /// Refused for good (201 with an error, HTTP 4xx); quarantine it.
    Rejected(String),
    /// Try again later.
    Failed(String),
}

impl ReplaySink {
    /// Delivers `record` (a pusher replay is gated by `breaker` when given).
    /// `None` when there is no destination.
    pub async fn deliver(
        &self,
        record: &ConversationRecord,
        breaker: Option<&Breaker>,
    ) -> Option<Delivery> {
        Some(match self {
            ReplaySink::Pusher(config, connector) => {
                replay_to_pusher(config, &**connector, record, breaker).await
            }
            ReplaySink::Http(url) => post(url, record).await,
            ReplaySink::None => return None,
        })
    }
}

async fn replay_to_pusher(
    config: &PusherConfig,
    connector: &dyn Connector,
    record: &ConversationRecord,
    breaker: Option<&Breaker>,
) -> Delivery {
    let url = listen_url(&config.url, &record.uid, record.sample_rate);
    let dialed = match breaker {
        Some(breaker) => {
            if breaker.allow().is_err() {
                return Delivery::Failed("breaker open".into());
            }
            dial_reported(connector, &url, config, breaker).await
        }
        None => dial(connector, &url, config).await,
    };
    let mut conn = match dialed {
        Ok(conn) => PusherConn::new(conn),
        Err(error) => return Delivery::Failed(error.to_string()),
    };
    let outcome = match conn.hand_over(record, DELIVERY_TIMEOUT).await {
        Ok(ack) if ack.is_success() => Delivery::Accepted,
        Ok(ack) => Delivery::Rejected(ack.error.unwrap_or_else(|| "success=false".into())),
        Err(reason) => Delivery::Failed(reason),
    };
    conn.close(Duration::from_secs(1)).await;
    outcome
}

/// POSTs a record to the HTTP fallback sink.
pub async fn post(url: &str, record: &ConversationRecord) -> Delivery {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = Bytes::from(serde_json::to_vec(record).expect("records always serialize"));
    let request = match http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &record.conversation_id)
        .body(Full::new(body))
    {
        Ok(request) => request,
        Err(error) => return Delivery::Rejected(format!("bad --fallback-url: {error}")),
    };
    let answer = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Drain the body so the connection can be reused.
        let _ = response.into_body().collect().await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(DELIVERY_TIMEOUT, answer).await {
        Ok(Ok(status)) if status.is_success() => Delivery::Accepted,
        Ok(Ok(status))
            if status.is_client_error()
                && status != http::StatusCode::REQUEST_TIMEOUT
                && status != http::StatusCode::TOO_MANY_REQUESTS =>
        {
            Delivery::Rejected(format!("HTTP {status}"))
        }
        Ok(Ok(status)) => Delivery::Failed(format!("HTTP {status}")),
        Ok(Err(error)) => Delivery::Failed(error),
        Err(_) => Delivery::Failed(format!("no answer within {DELIVERY_TIMEOUT:?}")),
    }
}

/// Whether replay may go on: no breaker, or a closed one.
pub(crate) fn breaker_closed(breaker: Option<&Breaker>) -> bool {
    breaker.is_none_or(|b| b.state() == BreakerState::Closed)
}

/// Waits until the breaker is closed (at once without one). `false` on shutdown.
pub(crate) async fn wait_for_breaker(
    breaker: Option<&Breaker>,
    shutdown: &CancellationToken,
) -> bool {
    let Some(breaker) = breaker else { return true };
    let mut state = breaker.subscribe();
    tokio::select! {
        () = shutdown.cancelled() => false,
        closed = state.wait_for(|s| *s == BreakerState::Closed) => closed.is_ok(),
    }
}
