//! `GET /metrics` on the metrics address (loopback by default).

use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::agent::Agent;

pub async fn serve(listener: TcpListener, agent: Arc<Mutex<Agent>>) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics)).with_state(agent);
    axum::serve(listener, app).await
}

async fn metrics(State(agent): State<Arc<Mutex<Agent>>>) -> impl IntoResponse {
    let agent = agent.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let a = agent.lock().expect("agent lock");
        super::metrics::render(&a.dp, &a.telemetry)
    })
    .await;
    match rendered {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
