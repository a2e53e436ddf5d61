//! The fake STT's HTTP control port: `GET /stats`, `GET /fault`,
//! `POST /fault/{none|close-1011|stall|refuse}`.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use super::{FakeStt, SttFault};

/// Serves the control port for `stt` on `listen` until the fake shuts down; returns
/// the bound address.
pub async fn serve_control(stt: FakeStt, listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let stop = stt.shared.cancel.clone().cancelled_owned();
    let tracker = stt.shared.tracker.clone();
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/fault", get(fault))
        .route("/fault/{name}", post(set_fault))
        .with_state(stt);
    tracker.spawn(async move {
        if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::warn!(%err, "fake STT control port failed");
        }
    });
    Ok(addr)
}

async fn stats(State(stt): State<FakeStt>) -> Json<super::SttStats> {
    Json(stt.stats())
}

async fn fault(State(stt): State<FakeStt>) -> Json<SttFault> {
    Json(stt.fault())
}

async fn set_fault(State(stt): State<FakeStt>, Path(name): Path<String>) -> Response {
    match name.parse::<SttFault>() {
        Ok(fault) => {
            stt.set_fault(fault);
            Json(fault).into_response()
        }
        Err(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
    }
}
