//! `GET /healthz` (live), `GET /readyz` (a real forward pass and search work), `GET /v1/info`, `GET /metrics`.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::{ApiError, ErrorBody};
use crate::state::{LoadedModel, SharedState};

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process answers", body = Object)), tag = "ops")]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// How long a readiness result is reused: probes cost forward passes, and `/readyz` is unauthenticated.
const READY_FOR: Duration = Duration::from_secs(1);

/// Embeds the fixed probe image with every loaded model (through the same queues as searches, so an overloaded
/// server reports not ready) and searches the index with it (an exact search, if so, keeps k = 1 hits, never a
/// score per vector). 503 with the failing check otherwise. One check runs at a time, and its result answers
/// every call for a second, so a flood of probes costs at most one check a second.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready: status, index_size, removed_rows, log {bytes, changes, added, removed}, compaction {state, runs, last_seconds?, error?}, graph, graph_error?", body = Object),
    (status = 503, description = "a check failed", body = ErrorBody),
), tag = "ops")]
pub async fn readyz(State(state): State<SharedState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut last = state.readiness.lock().await;
    let result = match &*last {
        Some((at, result)) if at.elapsed() < READY_FOR => result.clone(),
        _ => {
            let result = check(&state).await;
            *last = Some((Instant::now(), result.clone()));
            result
        }
    };
    drop(last);
    result.map(Json).map_err(ApiError::Unavailable)
}

async fn check(state: &SharedState) -> Result<serde_json::Value, String> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| format!("not ready: {what}: {e}");
    let models: Vec<&LoadedModel> = std::iter::once(&state.query)
        .chain(&state.gallery)
        .collect();
    let mut query_vector = None;
    for m in models {
        let e = m
            .pool
            .embed(m.probe.clone(), 1)
            .await
            .map_err(|e| unavailable(&format!("{} model forward pass", m.info.role), &e))?;
        query_vector.get_or_insert(e.vectors);
    }
    let v = query_vector.unwrap_or_default();
    state.backend.ready(state, v).await
}

/// The write-ahead log as reported: its bytes and the changes (and items) it holds since the last compaction.
pub(crate) fn log_json(log: &hetvis_indexer::wal::LogStats) -> serde_json::Value {
    json!({
        "bytes": log.bytes,
        "changes": log.changes,
        "added": log.added,
        "removed": log.removed,
    })
}

/// Models, index, limits and whether uploads are enabled.
#[utoipa::path(get, path = "/v1/info", responses((status = 200, description = "server description", body = Object)), tag = "ops")]
pub async fn info(State(state): State<SharedState>) -> Result<Json<serde_json::Value>, ApiError> {
    let shared = state.clone();
    let (removed, log, dim, manifest) = tokio::task::spawn_blocking(move || {
        let index = shared.read_index();
        (
            index.removed_rows().len(),
            index.log_stats(),
            index.dim(),
            index.manifest().clone(),
        )
    })
    .await?;
    // The backend's own count (with Milvus the placeholder index is empty; null when Milvus is down).
    let size = state.backend.size(&state).await;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "provider": state.query.info.provider,
        "models": {
            "query": state.query.info,
            "gallery": state.gallery.as_ref().map(|g| &g.info),
        },
        "index": {
            "size": size,
            "removed_rows": removed,
            "log": log_json(&log),
            "compaction": state.compaction_status(),
            "format_version": manifest.format_version,
            "dim": dim,
            "metric": manifest.metric,
            "compat_id": manifest.gallery.compat_id,
            "gallery_model": manifest.gallery,
            "hnsw": manifest.hnsw,
            "graph": state.graph_state(),
        },
        "backend": state.backend.describe(),
        "limits": state.limits,
        "gallery_uploads": state.admin_token.is_some() && state.gallery.is_some(),
    })))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "metrics", content_type = "text/plain")), tag = "ops")]
pub async fn metrics(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
