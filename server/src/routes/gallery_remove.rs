//! `DELETE /gallery/{id}` (admin token): the item leaves every search at once, and its id is free again. The
//! index on disk is rewritten with the removal, like an addition, under the same writer and the same honest
//! reply: past the request's deadline the answer is 202 with an operation to poll.

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use hetvis_indexer::Durability;
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
    /// False when the removal is in place but the final fsync failed (a power loss may undo it).
    pub durable: bool,
}

/// Removes an item from the gallery (bearer token); a search never returns it again.
#[utoipa::path(
    delete,
    path = "/gallery/{id}",
    params(("id" = String, Path, description = "the item's id (`/` may be sent as is or as %2F)")),
    responses(
        (status = 200, description = "removed and saved", body = RemoveResponse),
        (status = 202, description = "the save outlived the request; poll the operation", body = Accepted),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "changes disabled", body = ErrorBody),
        (status = 404, description = "no such item", body = ErrorBody),
        (status = 503, description = "timed out before anything was saved", body = ErrorBody),
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
    if !state.read_index().contains_id(&id) {
        return Err(ApiError::NotFound(format!("no gallery item {id:?}")));
    }
    let removed = run_as_operation(&state, &slot, commit(state.clone(), id)).await?;
    Ok(Json(removed))
}

/// Takes the item out of the live index, then saves it. One commit at a time (a removal has no body, so it needs
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
        if !state.write_index().remove(std::slice::from_ref(&id)).is_empty() {
            return Err(ApiError::NotFound(format!("no gallery item {id:?}")));
        }
        // Saved from the live index, graph included; a failed save puts the item back.
        let saved = state.read_index().save(lock);
        let durable = match saved {
            Ok(Durability::Durable) => true,
            Ok(Durability::NotDurable(why)) => {
                tracing::warn!(reason = %why, "gallery removal committed but not durable");
                false
            }
            Err(e) => {
                state.write_index().restore(&id);
                return Err(ApiError::Internal(format!("saving the index: {e}")));
            }
        };
        let live = state.read_index();
        state.metrics.index_size.set(live.live_len() as i64);
        tracing::info!(id = %id, size = live.live_len(), "gallery item removed");
        Ok(RemoveResponse {
            removed: id,
            index_size: live.live_len(),
            durable,
        })
    })
    .await?
}
