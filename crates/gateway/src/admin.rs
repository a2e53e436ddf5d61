//! The admin listener: `/metrics`, `/healthz`, `/ready`. Separate from the client
//! listener so probes and scrapes never compete with client upgrades.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    admission: Arc<Admission>,
}

/// Serves the admin routes until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    admission: Arc<Admission>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(AdminState { metrics, admission });
    let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
    if let Err(error) = served {
        tracing::error!(%error, "admin listener failed");
    }
}

async fn render(State(state): State<AdminState>) -> String {
    state.metrics.run_upkeep();
    state.metrics.render()
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.admission.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !state.admission.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "at capacity\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
