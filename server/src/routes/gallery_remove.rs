//! `DELETE /gallery/{id}` (admin token): the item leaves every search at once, and its id is free again. The
//! removal is a write-ahead log entry, like an addition, under the same writer and the same honest reply: past
//! the request's deadline the answer is 202 with an operation to poll. Its row is reclaimed by a compaction.

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Serialize;

use crate::auth;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::Accepted;
use crate::operations::run_as_operation;
use crate::state::SharedState;
use crate::work::CommitSlot;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RemoveResponse {
    pub removed: String,
    /// Searchable items after the removal.
    pub index_size: usize,
    /// True: answered only once the removal's log entry is fsynced.
    pub durable: bool,
}

/// Removes an item from the gallery (bearer token); a search never returns it again.
#[utoipa::path(
    delete,
    path = "/gallery/{id}",
    params(("id" = String, Path, description = "the item's id (`/` may be sent as is or as %2F)")),
    responses(
        (status = 200, description = "removed and logged durably", body = RemoveResponse),
        (status = 202, description = "the commit outlived the request; poll the operation", body = Accepted),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "changes disabled", body = ErrorBody),
        (status = 404, description = "no such item", body = ErrorBody),
        (status = 503, description = "timed out before anything was committed", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "gallery"
)]
pub async fn remove(
    State(state): State<SharedState>,
    Extension(slot): Extension<CommitSlot>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Json<RemoveResponse>, ApiError> {
    auth::require_admin(state.admin_token.as_deref(), &headers)?;
    if let Some(why) = state.backend.read_only() {
        return Err(ApiError::Forbidden(why.into()));
    }
    if !state.read_index().contains_id(&id) {
        return Err(ApiError::NotFound(format!("no gallery item {id:?}")));
    }
    let removed = run_as_operation(&state, &slot, commit(state.clone(), id)).await?;
    Ok(Json(removed))
}

/// Logs the removal, then takes the item out of the live index. One commit at a time (a removal has no body, so it needs
/// no admission permit; the writer mutex orders it with additions).
async fn commit(state: SharedState, id: String) -> Result<RemoveResponse, ApiError> {
    let writer = state.writer.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let _writer = writer;
        let lock = state.writer_lock.as_ref().ok_or_else(|| {
            ApiError::Forbidden(
                "changes to the gallery are disabled: start the server with --admin-token and --gallery-model"
                    .into(),
            )
        })?;
        // Checked again under the writer: a concurrent removal may have taken it.
        let (change, missing) = state.read_index().prepare_remove(std::slice::from_ref(&id));
        if !missing.is_empty() {
            return Err(ApiError::NotFound(format!("no gallery item {id:?}")));
        }
        // Logged (fsynced) first, then applied: a failed append changes nothing.
        let log_len = state
            .read_index()
            .log_change(lock, &change)
            .map_err(|e| ApiError::Internal(format!("logging the removal: {e}")))?;
        state.write_index().apply_logged(&change, log_len);
        let size = state.read_index().live_len();
        state.metrics.index_size.set(size as i64);
        state.metrics.log_bytes.set(log_len as i64);
        tracing::info!(id = %id, size, "gallery item removed");
        crate::compaction::start_if_due(&state);
        Ok(RemoveResponse {
            removed: id,
            index_size: size,
            durable: true,
        })
    })
    .await?
}
