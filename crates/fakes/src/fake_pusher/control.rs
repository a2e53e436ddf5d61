//! The fake pusher's HTTP control port: `GET /stats`, `GET /mode`, `POST /mode`,
//! `POST /drop-links`, `GET /accepts?since=MS`, `GET /processed`, `GET /frames`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{FakePusher, ModeSpec, PusherMode, PusherStats, RecordedFrame};
use crate::server;

/// Serves the control port for `pusher` on `listen` until the fake shuts down;
/// returns the bound address.
///
/// `POST /mode` takes a [`ModeSpec`] (`{"mode":"http-429","retry_after":"5"}`,
/// `{"mode":"slow-ack","delay":"2s"}`) and answers 200 with the mode now in force, or
/// 400 with a one-line reason.
pub async fn serve_control(pusher: FakePusher, listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let life = pusher.shared.life.clone();
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/mode", get(mode).post(set_mode))
        .route("/drop-links", post(drop_links))
        .route("/accepts", get(accepts))
        .route("/processed", get(processed))
        .route("/frames", get(frames))
        .with_state(pusher);
    server::serve_control(&life, super::NAME, listen, app).await
}

async fn stats(State(pusher): State<FakePusher>) -> Json<PusherStats> {
    Json(pusher.stats())
}

/// `since` (unix ms, default 0) for `GET /accepts`.
#[derive(Debug, serde::Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn accepts(State(pusher): State<FakePusher>, Query(q): Query<Since>) -> Json<Vec<u64>> {
    Json(pusher.accept_times(q.since))
}

async fn drop_links(State(pusher): State<FakePusher>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "dropped": pusher.drop_links() }))
}

async fn processed(State(pusher): State<FakePusher>) -> Json<Vec<String>> {
    Json(pusher.processed_ids())
}

async fn frames(State(pusher): State<FakePusher>) -> Json<Vec<RecordedFrame>> {
    Json(pusher.frames())
}

async fn mode(State(pusher): State<FakePusher>) -> Json<ModeSpec> {
    Json(pusher.mode().spec())
}

async fn set_mode(State(pusher): State<FakePusher>, body: Bytes) -> Response {
    let spec = match serde_json::from_slice::<ModeSpec>(&body) {
        Ok(spec) => spec,
        Err(err) => {
            return (StatusCode::BAD_REQUEST, format!("bad mode JSON: {err}\n")).into_response()
        }
    };
    match PusherMode::try_from(spec) {
        Ok(mode) => {
            let spec = mode.spec();
            pusher.set_mode(mode);
            Json(spec).into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}
