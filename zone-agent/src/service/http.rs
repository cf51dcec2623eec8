//! The metrics listener (loopback by default): `GET /metrics` (Prometheus text), `GET /` (the
//! operator's page, [`page`]) and `GET /api/v1/overview` (the JSON the page polls,
//! [`overview`]).
//!
//! Anyone on the host can connect to it, so it is bounded: at most [`MAX_CONNECTIONS`] open
//! connections (more are closed as soon as they are accepted, so they cost no descriptor),
//! request headers within [`HEADER_TIMEOUT`], one request per connection, and a connection
//! closed after [`CONNECTION_TIMEOUT`] whatever it does. A scrape reads the snapshot the
//! control task published and the metrics server's own map handles: it never waits for a
//! reload nor holds anything a reload needs. Renders of each endpoint run one at a time;
//! requests that arrive while one runs share the next one (never a result older than theirs).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::{net::TcpListener, sync::Mutex};

use crate::{
    datapath::{DatapathError, stats::View},
    service::{Shared, Slots, Snapshot, overview, page},
    telemetry::figures,
};

/// The JSON the operator's page polls.
pub const OVERVIEW_PATH: &str = "/api/v1/overview";

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// For a client to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection stays open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// One render and when it started.
struct Rendered {
    started: Instant,
    body: Result<Arc<String>, String>,
}

/// Renders one kind of answer at a time from the published snapshot; requests that arrive
/// while one runs share the next one (never a result older than their request).
struct Coalesced {
    render: fn(&Shared, &Snapshot) -> Result<String, DatapathError>,
    last: Mutex<Option<Rendered>>,
}

impl Coalesced {
    fn new(render: fn(&Shared, &Snapshot) -> Result<String, DatapathError>) -> Coalesced {
        Coalesced {
            render,
            last: Mutex::new(None),
        }
    }

    async fn get(&self, shared: &Arc<Shared>) -> Result<Arc<String>, String> {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        let fresh = last.as_ref().is_some_and(|r| r.started >= arrived);
        if !fresh {
            let shared = shared.clone();
            let render = self.render;
            let started = Instant::now();
            let body = tokio::task::spawn_blocking(move || consistent(&shared, render)).await;
            let body = match body {
                Ok(Ok(t)) => Ok(Arc::new(t)),
                Ok(Err(e)) => Err(format!("{e:#}\n")),
                Err(e) => Err(format!("{e}\n")),
            };
            *last = Some(Rendered { started, body });
        }
        last.as_ref()
            .map(|r| r.body.clone())
            .unwrap_or_else(|| Err("no render\n".into()))
    }
}

/// A reload may publish while `render` runs (it publishes before it zeroes any counter it
/// re-labels): render again from the new snapshot, so that no answer mixes two of them and a
/// counter never appears to go back.
fn consistent(
    shared: &Shared,
    render: fn(&Shared, &Snapshot) -> Result<String, DatapathError>,
) -> Result<String, DatapathError> {
    let mut tries = 0;
    loop {
        let snap = shared.snapshot();
        let text = render(shared, &snap)?;
        tries += 1;
        if tries >= 3 || Arc::ptr_eq(&snap, &shared.snapshot()) {
            return Ok(text);
        }
    }
}

fn view<'a>(shared: &'a Shared, snap: &Snapshot) -> View<'a> {
    View {
        maps: &shared.maps,
        active_set: snap.active_set,
    }
}

fn render_metrics(shared: &Shared, snap: &Snapshot) -> Result<String, DatapathError> {
    crate::telemetry::metrics::render(&view(shared, snap), &snap.telemetry)
}

fn render_overview(shared: &Shared, snap: &Snapshot) -> Result<String, DatapathError> {
    let f = figures::gather(&view(shared, snap), &snap.telemetry)?;
    let recent = shared.recent.latest(overview::RECENT_SHOWN);
    let (produced, lost) = crate::telemetry::event_counts(&f.kernel_events);
    let events = overview::EventHealth {
        total: produced
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
        lost: lost.into_iter().map(|(k, n)| (k.to_string(), n)).collect(),
    };
    let o = overview::build(&f, &snap.telemetry, recent, Some(events));
    Ok(serde_json::to_string(&o).expect("the overview serializes"))
}

struct Endpoints {
    shared: Arc<Shared>,
    metrics: Coalesced,
    overview: Coalesced,
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let state = Arc::new(Endpoints {
        shared,
        metrics: Coalesced::new(render_metrics),
        overview: Coalesced::new(render_overview),
    });
    let app = Router::new()
        .route("/", get(page::page))
        .route("/metrics", get(metrics))
        .route(OVERVIEW_PATH, get(overview))
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

async fn metrics(State(e): State<Arc<Endpoints>>) -> Response {
    answer(
        e.metrics.get(&e.shared).await,
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

async fn overview(State(e): State<Arc<Endpoints>>) -> Response {
    answer(e.overview.get(&e.shared).await, "application/json")
}

fn answer(body: Result<Arc<String>, String>, content_type: &'static str) -> Response {
    match body {
        Ok(text) => (
            StatusCode::OK,
            [
                ("content-type", content_type),
                ("x-content-type-options", "nosniff"),
                ("cache-control", "no-store"),
            ],
            String::clone(&text),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}
