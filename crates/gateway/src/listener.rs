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
use crate::metrics::{ACCEPT_ERRORS, AUTH_FAILURES, SESSION_REJECTIONS};
use crate::prefixed::{read_head, refuse as refuse_head, respond, Prefixed};
use crate::session::{self, Identity};
use crate::Shared;

/// The only client route.
pub const LISTEN_PATH: &str = "/v4/listen";
/// Upgrades per second per client IP, keyed; memory is reclaimed periodically.
pub type IpLimiter = Arc<
    governor::RateLimiter<
        std::net::IpAddr,
        governor::state::keyed::DefaultKeyedStateStore<std::net::IpAddr>,
        governor::clock::DefaultClock,
    >,
>;

/// Builds the per-IP limiter: `rate` per second with a burst of twice that.
pub fn ip_limiter(rate: std::num::NonZeroU32) -> IpLimiter {
    let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).expect("2 is non-zero"));
    Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst)))
}

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
                // EMFILE and friends: back off briefly instead of spinning. The
                // client sees a reset or a SYN timeout, not a status: count it.
                metrics::counter!(ACCEPT_ERRORS).increment(1);
                tracing::warn!(%error, "accept failed (out of file descriptors? see the runbook)");
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

async fn upgrade(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _tracker: TaskTracker,
) {
    crate::ws::tune(&stream);
    let limit = shared.config.limits.handshake_timeout;
    let mut admitted: Option<Admitted> = None;
    let handshake = async {
        // The head is read by hark, bounded, so an oversized or malformed request
        // gets 431/400 instead of a dropped socket.
        let head = match read_head(&mut stream).await {
            Ok(head) => head,
            Err(error) => {
                refuse_head(&mut stream, error).await;
                return None;
            }
        };
        if let Some(limiter) = &shared.ip_limiter {
            if let Err(not_until) = limiter.check_key(&peer.ip()) {
                metrics::counter!(SESSION_REJECTIONS, "reason" => "rate_limit").increment(1);
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                let retry = vec![
                    ("Retry-After", retry_after_header(wait)),
                    ("X-Rate-Limit-Reason", "upgrades-per-ip".to_owned()),
                ];
                respond(
                    &mut stream,
                    "429 Too Many Requests",
                    "too many upgrades from this address",
                    &retry,
                )
                .await;
                return None;
            }
        }
        let callback = |request: &Request, response| match check(request, &shared) {
            Ok(ok) => {
                admitted = Some(ok);
                Ok(response)
            }
            Err(refusal) => Err(refusal),
        };
        let config = crate::ws::client_config(shared.config.limits.max_frame_bytes.get());
        let io = Prefixed::new(head, stream);
        Some(tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(config)).await)
    };
    let ws = match tokio::time::timeout(limit, handshake).await {
        Ok(Some(Ok(ws))) => ws,
        Ok(Some(Err(error))) => {
            tracing::debug!(%peer, %error, "upgrade failed");
            return;
        }
        Ok(None) => return,
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
    // `shared.auth` is set exactly when the auth mode is `jwt` (Gateway::start).
    let uid = match &shared.auth {
        Some(verifier) => {
            let header =
                request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            verifier.authenticate(header).map_err(|error| {
                // The reason only; a token never reaches a log line or a response.
                metrics::counter!(SESSION_REJECTIONS, "reason" => "auth").increment(1);
                metrics::counter!(AUTH_FAILURES, "reason" => error.reason()).increment(1);
                refuse(
                    StatusCode::UNAUTHORIZED,
                    &format!("unauthorized: {}", error.reason()),
                    None,
                    &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
                )
            })?
        }
        None => params.uid.clone().ok_or_else(|| {
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
