//! The fake STT's HTTP control port: `GET /stats`, `GET /fault`,
//! `POST /fault/{none|close-1011|stall|refuse}`.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{FakeStt, SttFault};
use crate::server;

/// Serves the control port for `stt` on `listen` until the fake shuts down; returns
/// the bound address.
pub async fn serve_control(stt: FakeStt, listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let life = stt.shared.life.clone();
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/fault", get(fault))
        .route("/fault/{name}", post(set_fault))
        .with_state(stt);
    server::serve_control(&life, super::NAME, listen, app).await
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
