//! The client listener: accepts TCP, reads each upgrade request itself and decides
//! it — route, query, authentication, admission — before any WebSocket handshake,
//! then spawns a session per client.
//!
//! Every refusal happens at the HTTP upgrade with a status, a one-line reason and a
//! metric, written one way (`prefixed::refusal`); nothing is accepted and then
//! dropped. The one exception is `/v4/web/listen`: browsers cannot set headers on
//! a WebSocket, so it upgrades first and authenticates with the first message
//! (see `web`), refusing with a WebSocket close instead.

mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hark_proto::{ListenParams, QueryError};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{retry_after_header, AdmissionGuard, Rejection};
use crate::auth::Principal;
use crate::fairuse::{Pass, Refusal as FairRefusal};
use crate::metrics::{ACCEPT_ERRORS, AUTH_FAILURES, SESSION_REJECTIONS};
use crate::prefixed::{head_refusal, read_head, refusal, refuse, write_response, Prefixed};
use crate::session::{self, Identity};
use crate::ws::ClientIo;
use crate::Shared;
use hark_codec::Decoder;
use hark_store::metrics::QUOTA_REJECTIONS;

/// The app endpoint: `Authorization: Bearer <JWT>` at the upgrade.
pub const LISTEN_PATH: &str = "/v4/listen";
/// The browser endpoint: the first message authenticates.
pub const WEB_LISTEN_PATH: &str = "/v4/web/listen";

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
                sessions.spawn(async move { upgrade(stream, peer, shared).await });
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

/// What an upgrade request was granted.
enum Decision {
    /// `/v4/listen`: authenticated and admitted, here and fleet-wide.
    Session {
        params: ListenParams,
        who: Identity,
        guard: AdmissionGuard,
        pass: Box<Pass>,
        decoder: Box<dyn Decoder>,
    },
    /// `/v4/web/listen`: upgraded; its first message decides. `uid` is the query's,
    /// with auth `none`.
    Web { params: ListenParams, uid: Option<String>, decoder: Box<dyn Decoder> },
}

/// An upgrade the listener agreed to: the decision, the `Sec-WebSocket-Accept`
/// value, and the bytes that followed the head.
struct Granted {
    decision: Decision,
    accept: String,
    rest: Vec<u8>,
}

async fn upgrade(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // The handshake's state (head parsing, auth, admission, fleet calls) is boxed:
    // a task's future is as big as its largest state for the task's whole life,
    // and the session after it runs for hours. Boxed, those kilobytes are freed
    // once the upgrade is done (docs/benchmarks.md, memory).
    let Some((ws, decision)) = Box::pin(handshake(stream, peer, &shared)).await else { return };
    match decision {
        Decision::Session { params, who, guard, pass, decoder } => {
            session::run(ws, shared, params, who, guard, *pass, decoder).await;
        }
        // Rare, and bigger than a session (it waits for the first message): boxed
        // so it does not size every session's task.
        Decision::Web { params, uid, decoder } => {
            Box::pin(web::run(ws, shared, params, uid, decoder)).await;
        }
    }
}

/// Reads and decides the upgrade request and answers it (within
/// `--handshake-timeout`); on success, the client's WebSocket and the decision.
async fn handshake(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<(WebSocketStream<ClientIo>, Decision)> {
    crate::ws::tune(&stream);
    crate::ws::bound_client_send_buffer(&stream);
    let limit = shared.config.limits.handshake_timeout;
    let handshake = async {
        let granted = match decide(&mut stream, peer, shared).await {
            Ok(granted) => granted,
            Err(Some(response)) => {
                refuse(&mut stream, &response).await;
                return None;
            }
            Err(None) => return None,
        };
        let switching = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_ACCEPT, granted.accept.as_str())
            .body(String::new())
            .expect("static response parts are valid");
        if let Err(error) = write_response(&mut stream, &switching).await {
            tracing::debug!(%peer, %error, "upgrade failed");
            return None;
        }
        Some(granted)
    };
    let Granted { decision, rest, .. } = match tokio::time::timeout(limit, handshake).await {
        Ok(Some(granted)) => granted,
        Ok(None) => return None,
        Err(_) => {
            tracing::debug!(%peer, "upgrade timed out");
            return None;
        }
    };
    let config = crate::ws::client_config(shared.config.limits.max_frame_bytes.get());
    let io: ClientIo = Prefixed::new(rest, stream);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    Some((ws, decision))
}

/// A new session's identity.
fn identity(principal: Principal) -> Identity {
    let session_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    Identity { session_id, uid: principal.uid, plan: principal.plan }
}

/// Reads the request head and decides the upgrade: per-IP rate, route, WebSocket
/// headers, query, and (for `/v4/listen`) authentication and admission. `Err`
/// carries the refusal to write, or `None` when the peer is gone.
async fn decide(
    stream: &mut TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<Granted, Option<Response<String>>> {
    let head = read_head(stream).await.map_err(head_refusal)?;
    if let Some(limiter) = &shared.ip_limiter {
        if let Err(not_until) = limiter.check_key(&peer.ip()) {
            metrics::counter!(SESSION_REJECTIONS, "reason" => "rate_limit").increment(1);
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(Some(refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "too many upgrades from this address",
                Some(wait),
                &[("X-Rate-Limit-Reason", "upgrades-per-ip")],
            )));
        }
    }
    let request = &head.request;
    let web = match request.uri().path() {
        LISTEN_PATH => false,
        WEB_LISTEN_PATH => true,
        _ => {
            return Err(Some(refusal(
                StatusCode::NOT_FOUND,
                "not found: the listen endpoints are /v4/listen and /v4/web/listen",
                None,
                &[],
            )))
        }
    };
    let accept = websocket_accept(request).map_err(Some)?;
    let params = ListenParams::parse(request.uri().query().unwrap_or(""))
        .map_err(|error| Some(bad_request(&error.to_string())))?;
    // One decoder per session, chosen here: a codec that cannot run is a 400.
    let decoder = hark_codec::decoder(params.codec, params.sample_rate)
        .map_err(|error| Some(bad_request(&error.to_string())))?;
    // `shared.auth` is set exactly when the auth mode is `jwt` (Gateway::start).
    let anonymous_uid = match &shared.auth {
        Some(_) => None,
        None => Some(
            params
                .uid
                .clone()
                .ok_or_else(|| Some(bad_request(&QueryError::MissingUid.to_string())))?,
        ),
    };
    let decision = if web {
        shared.admission.precheck().map_err(|r| Some(rejection_response(r)))?;
        Decision::Web { params, uid: anonymous_uid, decoder }
    } else {
        let principal = match (&shared.auth, anonymous_uid) {
            (Some(verifier), _) => {
                let header = request.headers().get(http::header::AUTHORIZATION);
                let header = header.and_then(|v| v.to_str().ok());
                verifier.authenticate(header).await.map_err(|error| {
                    // The reason only; a token never reaches a log line or a response.
                    count_auth_failure(error.reason());
                    Some(refusal(
                        StatusCode::UNAUTHORIZED,
                        &format!("unauthorized: {}", error.reason()),
                        None,
                        &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
                    ))
                })?
            }
            (None, Some(uid)) => Principal { uid, plan: None },
            (None, None) => return Err(Some(bad_request(&QueryError::MissingUid.to_string()))),
        };
        let guard =
            shared.admission.admit(&principal.uid).map_err(|r| Some(rejection_response(r)))?;
        let who = identity(principal);
        let pass = admit_fairly(shared, &who).await.map_err(|r| Some(fair_use_response(r)))?;
        let pass = Box::new(pass);
        Decision::Session { params, who, guard, pass, decoder }
    };
    Ok(Granted { decision, accept, rest: head.rest })
}

/// The fleet-wide cap and the quota (`--redis-url`, `--quota-plan`), after this
/// process's own limits; counted in `hark_quota_rejections_total{reason}`.
pub(crate) async fn admit_fairly(shared: &Shared, who: &Identity) -> Result<Pass, FairRefusal> {
    let result = shared.fairuse.admit(&who.uid, who.plan.as_deref(), &who.session_id).await;
    if let Err(refusal) = &result {
        let reason = match refusal {
            FairRefusal::Quota { .. } => "quota",
            FairRefusal::Cap { .. } => "max_sessions_per_user",
        };
        metrics::counter!(QUOTA_REJECTIONS, "reason" => reason).increment(1);
        let label = if reason == "quota" { "quota" } else { "user_limit" };
        metrics::counter!(SESSION_REJECTIONS, "reason" => label).increment(1);
        tracing::info!(uid = %who.uid, reason, "session refused by fair use");
    }
    result
}

/// The 429 for a fair-use refusal, with `Retry-After` and `X-Rate-Limit-Reason`.
fn fair_use_response(refusal: FairRefusal) -> Response<String> {
    match refusal {
        FairRefusal::Quota { retry_after } => refusal_with(
            StatusCode::TOO_MANY_REQUESTS,
            "audio quota used up for this period; retry after the given delay",
            retry_after,
            "quota",
        ),
        FairRefusal::Cap { retry_after } => refusal_with(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions for this user",
            retry_after,
            "max-sessions-per-user",
        ),
    }
}

fn refusal_with(
    status: StatusCode,
    text: &str,
    retry_after: Duration,
    reason: &str,
) -> Response<String> {
    refusal(status, text, Some(retry_after), &[("X-Rate-Limit-Reason", reason)])
}

/// Checks the WebSocket upgrade headers (RFC 6455 §4.2.1) and returns the
/// `Sec-WebSocket-Accept` value.
fn websocket_accept(request: &Request<()>) -> Result<String, Response<String>> {
    let headers = request.headers();
    let lists = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    let upgrade = lists(UPGRADE).iter().any(|t| t.eq_ignore_ascii_case("websocket"));
    let connection = lists(CONNECTION).iter().any(|t| t.eq_ignore_ascii_case("upgrade"));
    let version = headers.get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
    match headers.get(SEC_WEBSOCKET_KEY) {
        Some(key) if upgrade && connection && version && !key.is_empty() => {
            Ok(derive_accept_key(key.as_bytes()))
        }
        _ => {
            metrics::counter!(SESSION_REJECTIONS, "reason" => "bad_request").increment(1);
            Err(refusal(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Version: 13, Sec-WebSocket-Key)",
                None,
                &[("Sec-WebSocket-Version", "13")],
            ))
        }
    }
}

fn bad_request(reason: &str) -> Response<String> {
    metrics::counter!(SESSION_REJECTIONS, "reason" => "bad_request").increment(1);
    refusal(StatusCode::BAD_REQUEST, reason, None, &[])
}

/// Counts a refused credential: the upgrade (`reason="auth"`) and why.
fn count_auth_failure(reason: &'static str) {
    metrics::counter!(SESSION_REJECTIONS, "reason" => "auth").increment(1);
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// The HTTP answer to an admission refusal (already counted by `Admission`).
fn rejection_response(rejection: Rejection) -> Response<String> {
    let retry_after = Some(rejection.retry_after());
    match rejection {
        Rejection::UserLimit { .. } => refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sessions for this user",
            retry_after,
            &[("X-Rate-Limit-Reason", "max-sessions-per-user")],
        ),
        Rejection::Capacity { .. } => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "server at capacity; retry after the given delay",
            retry_after,
            &[],
        ),
        Rejection::Draining { .. } => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is restarting; retry after the given delay",
            retry_after,
            &[],
        ),
    }
}

/// The close (code, reason) for an admission refusal after a web client's auth
/// message, when no HTTP status can be sent any more.
fn rejection_close(rejection: Rejection) -> (u16, String) {
    let secs = retry_after_header(rejection.retry_after());
    match rejection {
        Rejection::UserLimit { .. } => {
            (1008, format!("too many sessions for this user; retry after {secs} s"))
        }
        Rejection::Capacity { .. } => {
            (1013, format!("server at capacity; retry after {secs} s with jitter"))
        }
        Rejection::Draining { .. } => {
            (1012, "server restarting; reconnect with jittered backoff".to_owned())
        }
    }
}
