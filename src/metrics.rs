//! The Prometheus endpoint of the server (`[metrics] listen`) and of the
//! agent (`--metrics-listen`): plain HTTP, `GET /metrics` answered with a
//! registry's metrics in the OpenMetrics text format. They say how much and
//! how fast, never about whom (see [`otpgate_actors::metrics`]); each is off
//! unless configured, and belongs on loopback or a monitoring network.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `registry` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, registry: Registry, cancel: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry));
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %err, "the metrics endpoint stopped");
    }
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::with_capacity(8 << 10);
    match encode(&mut text, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
