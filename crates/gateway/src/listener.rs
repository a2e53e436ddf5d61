//! The client listener: accepts TCP, runs the WebSocket upgrade with query
//! validation, authentication and admission, and spawns a session per client.
//!
//! Every refusal happens at the HTTP upgrade with a status, a one-line reason and a
//! metric; nothing is accepted and then dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hark_proto::{ListenParams, QueryError};
use http::{Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{retry_after_header, AdmissionGuard, Rejection};
use crate::config::AuthConfig;
use crate::metrics::SESSION_REJECTIONS;
use crate::session::{self, Identity};
use crate::Shared;

/// The only client route.
pub const LISTEN_PATH: &str = "/v4/listen";
/// Bound on the HTTP upgrade (request line, headers, handshake): slow clients
/// (slowloris) are dropped after it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts clients until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                let tracker = sessions.clone();
                sessions.spawn(async move { upgrade(stream, peer, shared, tracker).await });
            }
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the upgrade callback decided.
struct Admitted {
    params: ListenParams,
    uid: String,
    guard: AdmissionGuard,
}

async fn upgrade(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, _tracker: TaskTracker) {
    crate::ws::tune(&stream);
    let mut admitted: Option<Admitted> = None;
    let callback = |request: &Request, response| match check(request, &shared) {
        Ok(ok) => {
            admitted = Some(ok);
            Ok(response)
        }
        Err(refusal) => Err(refusal),
    };
    let config = crate::ws::client_config(shared.config.limits.max_frame_bytes.get());
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "upgrade failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "upgrade timed out");
            return;
        }
    };
    let Some(Admitted { params, uid, guard }) = admitted else { return };
    let session_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    session::run(ws, shared, params, Identity { session_id, uid }, guard).await;
}

/// Validates an upgrade request: route, query, auth, admission.
fn check(request: &Request, shared: &Shared) -> Result<Admitted, ErrorResponse> {
    if request.uri().path() != LISTEN_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "not found: the listen endpoint is /v4/listen",
            None,
            &[],
        ));
    }
    let params = ListenParams::parse(request.uri().query().unwrap_or("")).map_err(|error| {
        metrics::counter!(SESSION_REJECTIONS, "reason" => "bad_request").increment(1);
        refuse(StatusCode::BAD_REQUEST, &error.to_string(), None, &[])
    })?;
    let uid = match &shared.config.auth {
        AuthConfig::None => params.uid.clone().ok_or_else(|| {
            metrics::counter!(SESSION_REJECTIONS, "reason" => "bad_request").increment(1);
            refuse(StatusCode::BAD_REQUEST, &QueryError::MissingUid.to_string(), None, &[])
        })?,
    };
    let guard = shared.admission.admit(&uid).map_err(|rejection| match rejection {
        Rejection::UserLimit { retry_after } => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions for this user",
            Some(retry_after),
            &[("X-Rate-Limit-Reason", "max-sessions-per-user")],
        ),
        Rejection::Capacity { retry_after } => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server at capacity; retry after the given delay",
            Some(retry_after),
            &[],
        ),
        Rejection::Draining { retry_after } => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is restarting; retry after the given delay",
            Some(retry_after),
            &[],
        ),
    })?;
    Ok(Admitted { params, uid, guard })
}

/// An HTTP refusal with a one-line plain-text reason.
fn refuse(
    status: StatusCode,
    reason: &str,
    retry_after: Option<Duration>,
    headers: &[(&str, &str)],
) -> ErrorResponse {
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
    response.body(Some(format!("{reason}\n"))).expect("static response parts are valid")
}
