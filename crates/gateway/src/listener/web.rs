//! `/v4/web/listen`: first-message authentication for browsers, which cannot set
//! headers on a WebSocket. Same query as `/v4/listen`; the first message must be
//! the text `{"type":"auth","token":"<JWT>"}` within `--handshake-timeout`.
//!
//! As omi's backend does: a good token gets `{"type":"auth_response","success":true}`
//! and the session starts; a token that does not verify gets
//! `{"type":"auth_response","success":false}` and a close 1008 "Invalid token"; an
//! auth message that is not one (not JSON, another type, no token, binary) gets a
//! close 1008 naming the problem, and no message within the timeout a close 1008
//! "Auth timeout". Every close completes the closing handshake.
//!
//! With auth `none` the uid is the query's (required at the upgrade) and the auth
//! message is still expected, its token unchecked, so a browser client runs the
//! same code against a local Hark as against production.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hark_proto::{ListenParams, ServerEvent};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{count_auth_failure, identity, rejection_close};
use crate::auth::Principal;
use crate::fairuse::Refusal as FairRefusal;
use crate::metrics::CLIENT_CLOSES;
use crate::session;
use crate::ws::{close_handshake, ClientIo};
use crate::Shared;

/// Bound on the closing handshake of a refused web client, and on sending it the
/// auth response.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

/// Why a web client does not get a session.
enum Refusal {
    /// Close with this code and reason, without an auth response.
    Close(u16, &'static str),
    /// The token did not verify: `auth_response` false, then 1008 "Invalid token".
    Denied,
    /// The client closed or broke the connection first.
    Gone,
}

/// Runs a `/v4/web/listen` connection: the auth message, admission, then the
/// session. `uid` is the query's, with auth `none`.
pub(super) async fn run(
    mut ws: WebSocketStream<ClientIo>,
    shared: Arc<Shared>,
    params: ListenParams,
    uid: Option<String>,
    decoder: Box<dyn hark_codec::Decoder>,
) {
    let bound = shared.config.limits.handshake_timeout;
    let principal = match authenticate(&mut ws, &shared, uid, bound).await {
        Ok(principal) => principal,
        Err(Refusal::Close(code, reason)) => {
            close(ws, code, reason).await;
            return;
        }
        Err(Refusal::Denied) => {
            if send_auth_response(&mut ws, false).await {
                close(ws, 1008, "Invalid token").await;
            }
            return;
        }
        Err(Refusal::Gone) => {
            // Flushes the answer to a client's Close, if that is what ended it.
            let _ = tokio::time::timeout(CLOSE_BOUND, ws.close(None)).await;
            return;
        }
    };
    let guard = match shared.admission.admit(&principal.uid) {
        Ok(guard) => guard,
        Err(rejection) => {
            // The token was good: not an auth failure, so no `auth_response` false
            // (which would send the app to re-login), but the close code says why.
            let (code, reason) = rejection_close(rejection);
            close(ws, code, &reason).await;
            return;
        }
    };
    let who = identity(principal);
    let pass = match super::admit_fairly(&shared, &who).await {
        Ok(pass) => pass,
        Err(refusal) => {
            let retry = match refusal {
                FairRefusal::Quota { retry_after } | FairRefusal::Cap { retry_after } => {
                    retry_after
                }
            };
            let why = match refusal {
                FairRefusal::Quota { .. } => "audio quota used up for this period",
                FairRefusal::Cap { .. } => "too many sessions for this user",
            };
            let reason = format!("{why}; retry after {} s", retry.as_secs().max(1));
            close(ws, 1008, &reason).await;
            return;
        }
    };
    if !send_auth_response(&mut ws, true).await {
        return;
    }
    session::run(ws, shared, params, who, guard, pass, decoder).await;
}

/// Closes a refused client (counted in `hark_client_closes_total{code}`).
async fn close(ws: WebSocketStream<ClientIo>, code: u16, reason: &str) {
    metrics::counter!(CLIENT_CLOSES, "code" => code.to_string()).increment(1);
    let outcome = Box::pin(close_handshake(ws, code, reason, CLOSE_BOUND)).await;
    tracing::debug!(code, reason, ?outcome, "web listen client refused");
}

/// Sends `{"type":"auth_response","success":…}`; `false` when the client is gone.
async fn send_auth_response(ws: &mut WebSocketStream<ClientIo>, success: bool) -> bool {
    let text = ServerEvent::AuthResponse { success }.to_json();
    matches!(tokio::time::timeout(CLOSE_BOUND, ws.send(Message::text(text))).await, Ok(Ok(())))
}

/// Waits for the auth message and verifies it.
async fn authenticate(
    ws: &mut WebSocketStream<ClientIo>,
    shared: &Shared,
    uid: Option<String>,
    bound: Duration,
) -> Result<Principal, Refusal> {
    let deadline = Instant::now() + bound;
    let text = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(refused("missing", "Auth timeout")),
            Ok(Some(Ok(Message::Text(text)))) => break text,
            Ok(Some(Ok(Message::Binary(_)))) => {
                return Err(refused("malformed", "Expected JSON auth message"))
            }
            // Pings are answered by the WebSocket layer; they do not authenticate.
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(Message::Close(_)) | Err(_))) | Ok(None) => return Err(Refusal::Gone),
        }
    };
    let token = match auth_message(&text) {
        Ok(token) => token,
        Err(Refusal::Close(code, reason)) => {
            count_auth_failure(if reason == "Missing token" { "missing" } else { "malformed" });
            return Err(Refusal::Close(code, reason));
        }
        Err(other) => {
            count_auth_failure("malformed");
            return Err(other);
        }
    };
    match (&shared.auth, uid) {
        (Some(verifier), _) => verifier.authenticate_token(&token).await.map_err(|error| {
            count_auth_failure(error.reason());
            Refusal::Denied
        }),
        (None, Some(uid)) => Ok(Principal { uid, plan: None }),
        // Auth `none` without a uid is refused at the upgrade; this is unreachable
        // in practice, and refusing is the safe answer.
        (None, None) => {
            count_auth_failure("missing");
            Err(Refusal::Denied)
        }
    }
}

/// Counts a refusal that has no `auth_response` and names its close.
fn refused(reason: &'static str, close: &'static str) -> Refusal {
    count_auth_failure(reason);
    Refusal::Close(1008, close)
}

/// The token of `{"type":"auth","token":"…"}`, or how the message is wrong (omi's
/// close reasons). A token that is present but not a string is a bad token.
fn auth_message(text: &str) -> Result<String, Refusal> {
    let message: Value =
        serde_json::from_str(text).map_err(|_| Refusal::Close(1008, "Invalid JSON"))?;
    if message.get("type").and_then(Value::as_str) != Some("auth") {
        return Err(Refusal::Close(1008, "First message must be auth"));
    }
    match message.get("token") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {
            Err(Refusal::Close(1008, "Missing token"))
        }
        Some(Value::String(token)) if token.is_empty() => {
            Err(Refusal::Close(1008, "Missing token"))
        }
        Some(Value::String(token)) => Ok(token.clone()),
        Some(_) => Err(Refusal::Denied),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> Result<String, Option<&'static str>> {
        auth_message(text).map_err(|r| match r {
            Refusal::Close(1008, reason) => Some(reason),
            _ => None,
        })
    }

    #[test]
    fn auth_messages_as_omi_reads_them() {
        assert_eq!(reason(r#"{"type":"auth","token":"a.b.c"}"#), Ok("a.b.c".into()));
        assert_eq!(reason("not json"), Err(Some("Invalid JSON")));
        assert_eq!(reason(r#"["auth"]"#), Err(Some("First message must be auth")));
        assert_eq!(reason(r#"{"type":"ping"}"#), Err(Some("First message must be auth")));
        assert_eq!(reason(r#"{"type":"auth"}"#), Err(Some("Missing token")));
        assert_eq!(reason(r#"{"type":"auth","token":""}"#), Err(Some("Missing token")));
        assert_eq!(reason(r#"{"type":"auth","token":null}"#), Err(Some("Missing token")));
        assert_eq!(reason(r#"{"type":"auth","token":42}"#), Err(None), "a bad token");
    }
}
