//! `GET /metrics` on the metrics address (loopback by default).
//!
//! Anyone on the host can connect to it, so it is bounded: at most [`MAX_CONNECTIONS`] open
//! connections (more are closed as soon as they are accepted, so they cost no descriptor),
//! request headers within [`HEADER_TIMEOUT`], one request per connection, and a connection
//! closed after [`CONNECTION_TIMEOUT`] whatever it does. A scrape reads the snapshot the
//! control task published and the metrics server's own map handles: it never waits for a
//! reload nor holds anything a reload needs. Renders run one at a time; scrapes that arrive
//! while one runs share the next one (never a result older than their request).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::{net::TcpListener, sync::Mutex};

use crate::{
    datapath::stats::View,
    service::{Shared, Slots},
};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// For a client to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection stays open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

struct Rendered {
    started: Instant,
    text: Result<Arc<String>, String>,
}

struct Metrics {
    shared: Arc<Shared>,
    last: Mutex<Option<Rendered>>,
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let state = Arc::new(Metrics {
        shared,
        last: Mutex::new(None),
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    let mut slots = Slots::new(
        "metrics",
        MAX_CONNECTIONS,
        &crate::telemetry::REFUSED_METRICS,
    );
    loop {
        let Some((stream, slot)) = slots.admit(listener.accept().await.map(|(s, _)| s)).await
        else {
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let arrived = Instant::now();
    let mut last = m.last.lock().await;
    let fresh = last.as_ref().is_some_and(|r| r.started >= arrived);
    if !fresh {
        let shared = m.shared.clone();
        let started = Instant::now();
        let text = tokio::task::spawn_blocking(move || {
            // A reload may publish while this renders (it publishes before it zeroes any
            // counter it re-labels): render again from the new snapshot, so that no scrape
            // mixes two of them and a counter never appears to go back.
            let mut tries = 0;
            loop {
                let snap = shared.snapshot();
                let view = View {
                    maps: &shared.maps,
                    active_set: snap.active_set,
                };
                let text = crate::telemetry::metrics::render(&view, &snap.telemetry);
                tries += 1;
                if tries >= 3 || Arc::ptr_eq(&snap, &shared.snapshot()) {
                    break text;
                }
            }
        })
        .await;
        let text = match text {
            Ok(Ok(t)) => Ok(Arc::new(t)),
            Ok(Err(e)) => Err(format!("{e:#}\n")),
            Err(e) => Err(format!("{e}\n")),
        };
        *last = Some(Rendered { started, text });
    }
    let text = last
        .as_ref()
        .map(|r| r.text.clone())
        .unwrap_or_else(|| Err("no render\n".into()));
    drop(last);
    match text {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            String::clone(&text),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}
