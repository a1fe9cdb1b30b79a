//! `POST /gallery`: bulk-adds images to the index, embedded with the gallery model, logged durably;
//! `GET /operations/{id}`: the outcome of an addition answered before it finished.
//!
//! Body: `multipart/form-data` with one or more `image` parts. A part's id is the value of the `id` text
//! field sent just before it, else its filename; an optional `label` field before it labels it. All or
//! nothing: any bad image, conflicting id or failed log append adds nothing. The live index takes the new rows
//! only after their write-ahead log entry is fsynced (one entry per request; the index is not rewritten).
//!
//! Replies tell the truth. 201: added (and durable). 200: every image was already there with the same id and the
//! same bytes (a retry of a committed upload is a success, not a conflict). 409: an id is taken by other bytes.
//! 202 with an operation id: the request ran out of time after the commit had started (it waits behind other
//! changes and a compaction's final step); the commit goes on, and
//! `GET /operations/{id}` says how it ended. A 503 timeout means nothing was or will be added.

use std::path::Path;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use hetvis_indexer::{checksum, Index, IndexError, Record};
use hetvis_models::preprocess;
use serde::Serialize;

use super::image_body::{self, BodyKind};
use crate::auth;
use crate::embed_pool::Embedded;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{Accepted, GalleryUpload};
use crate::operations::{self, OperationState};
use crate::state::SharedState;
use crate::work::{Admitted, CommitSlot};

/// Most images one request may add.
pub const MAX_IMAGES: usize = 1024;
const MAX_ID_BYTES: usize = 512;

struct Upload {
    id: String,
    label: Option<String>,
    bytes: Bytes,
    sha256: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AddResponse {
    pub added: usize,
    /// The ids added by this request.
    pub ids: Vec<String>,
    /// Ids that were already in the index with the same image bytes (an earlier, committed attempt).
    pub already_present: Vec<String>,
    pub index_size: usize,
    /// True: a change is answered only once its log entry is fsynced (a failed fsync is an error, and the
    /// change is not applied).
    pub durable: bool,
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "invalid id {id:?}: 1 to {MAX_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// The id, label and bytes of every image part (not hashed yet: that is blocking work). Public for the fuzzer.
pub async fn read_uploads(req: Request) -> Result<Vec<(String, Option<String>, Bytes)>, ApiError> {
    if !matches!(image_body::body_kind(&req)?, BodyKind::Multipart) {
        return Err(ApiError::UnsupportedMediaType(
            "POST /gallery takes multipart/form-data with `image` parts".into(),
        ));
    }
    let mut form = image_body::multipart(req).await?;
    let (mut id, mut label) = (None, None);
    let mut uploads = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(image_body::multipart_error)?
    {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "id" => id = Some(field.text().await.map_err(image_body::multipart_error)?),
            "label" => label = Some(field.text().await.map_err(image_body::multipart_error)?),
            "image" => {
                let n = uploads.len() + 1;
                let id = id
                    .take()
                    .or_else(|| field.file_name().map(str::to_owned))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "image part {n} has no id: send an `id` field before it or a filename"
                        ))
                    })?;
                check_id(&id)?;
                if uploads.len() == MAX_IMAGES {
                    return Err(ApiError::BadRequest(format!(
                        "at most {MAX_IMAGES} images per request"
                    )));
                }
                let bytes = field.bytes().await.map_err(image_body::multipart_error)?;
                uploads.push((id, label.take(), bytes));
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unexpected field {other:?}: the parts are `image`, optionally preceded by `id` and `label`"
                )))
            }
        }
    }
    if uploads.is_empty() {
        return Err(ApiError::BadRequest("no `image` parts".into()));
    }
    Ok(uploads)
}

/// Splits uploads into new ones and ids already in `index` with the same bytes; 409 for an id given twice or
/// taken by other bytes.
fn classify(index: &Index, uploads: Vec<Upload>) -> Result<(Vec<Upload>, Vec<String>), ApiError> {
    let mut seen = std::collections::HashSet::new();
    let (mut fresh, mut present) = (Vec::new(), Vec::new());
    for u in uploads {
        if !seen.insert(u.id.clone()) {
            return Err(ApiError::Conflict(format!("id {:?} appears twice", u.id)));
        }
        match index.row_of(&u.id) {
            None => fresh.push(u),
            Some(row) if index.records()[row].sha256.as_deref() == Some(u.sha256.as_str()) => {
                present.push(u.id)
            }
            Some(_) => {
                return Err(ApiError::Conflict(format!(
                    "id {:?} is already in the index with another image",
                    u.id
                )))
            }
        }
    }
    Ok((fresh, present))
}

/// Adds images to the gallery, embedded with the gallery model (bearer token).
#[utoipa::path(
    post,
    path = "/gallery",
    request_body(content = GalleryUpload, content_type = "multipart/form-data",
        description = "`image` parts, each optionally preceded by `id` and `label` fields"),
    responses(
        (status = 201, description = "added and logged durably", body = AddResponse),
        (status = 200, description = "every image was already there with the same bytes", body = AddResponse),
        (status = 202, description = "the commit outlived the request; poll the operation", body = Accepted),
        (status = 400, description = "bad part or image", body = ErrorBody),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 403, description = "uploads disabled", body = ErrorBody),
        (status = 409, description = "id taken by other bytes, or no gallery model", body = ErrorBody),
        (status = 413, description = "body or image over the limits", body = ErrorBody),
        (status = 429, description = "too many requests in flight", body = ErrorBody),
        (status = 503, description = "timed out before anything was committed", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "gallery"
)]
pub async fn add(
    State(state): State<SharedState>,
    Extension(admitted): Extension<Admitted>,
    Extension(slot): Extension<CommitSlot>,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, Json<AddResponse>), ApiError> {
    auth::require_admin(state.admin_token.as_deref(), &headers)?;
    if let Some(why) = state.backend.read_only() {
        return Err(ApiError::Forbidden(why.into()));
    }
    let gallery = state.gallery.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "adding to the gallery needs its model: start the server with --gallery-model".into(),
        )
    })?;
    let parts = read_uploads(req).await?;

    // Hashing, the duplicate check (which takes the index lock) and decoding are blocking work: off the async
    // threads, holding the decoder and admission permits until they are done.
    let decoder = state
        .decoders
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let (shared, held) = (state.clone(), admitted.clone());
    let p = gallery.preprocessing.clone();
    let (fresh, present, input) = tokio::task::spawn_blocking(move || {
        let _work = (held, decoder);
        let uploads = parts
            .into_iter()
            .map(|(id, label, bytes)| Upload {
                sha256: checksum::sha256_hex(&bytes),
                id,
                label,
                bytes,
            })
            .collect();
        let (fresh, present) = classify(&shared.read_index(), uploads)?;
        let mut input = Vec::with_capacity(fresh.len() * p.numel());
        for u in &fresh {
            let one = preprocess::preprocess_bytes(&u.bytes, &p, shared.limits.image)
                .map_err(|e| ApiError::image(&format!("image {:?}", u.id), e))?;
            input.extend_from_slice(&one);
        }
        Ok::<_, ApiError>((fresh, present, input))
    })
    .await??;
    if fresh.is_empty() {
        let index_size = state.metrics.index_size.get() as usize;
        return Ok((
            StatusCode::OK,
            Json(AddResponse {
                added: 0,
                ids: Vec::new(),
                already_present: present,
                index_size,
                durable: true,
            }),
        ));
    }
    let embedded = gallery.pool.embed(input, fresh.len()).await?;

    // From here the change is made whatever happens to this request: it runs as a task of its own, and the
    // timeout answers 202 with the operation's id rather than 503.
    let response = operations::run_as_operation(
        &state,
        &slot,
        commit(state.clone(), admitted, fresh, present, embedded),
    )
    .await?;
    let status = if response.added > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)))
}

/// Appends the new rows to the index's write-ahead log (fsynced) and then adds them to the live index
/// (searchable at once): a reply never claims rows the disk does not hold, and the cost is that of the rows, not
/// of the index. One commit at a time; the admission permit is held until it is over. Checking and logging read
/// the index (searches go on); only applying takes the write lock. A compaction may follow in the background.
async fn commit(
    state: SharedState,
    admitted: Admitted,
    fresh: Vec<Upload>,
    mut present: Vec<String>,
    embedded: Embedded,
) -> Result<AddResponse, ApiError> {
    let writer = state.writer.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let _work = (writer, admitted);
        let lock = state.writer_lock.as_ref().ok_or_else(|| {
            ApiError::Internal("the server does not hold the index's writer lock".into())
        })?;
        let dim = embedded.vectors.len() / fresh.len().max(1);
        let vectors: Vec<(Upload, &[f32])> = fresh
            .into_iter()
            .zip(embedded.vectors.chunks_exact(dim))
            .collect();
        // Checked again under the writer: a retry that committed meanwhile shows up as already present.
        let mut items = Vec::with_capacity(vectors.len());
        {
            let live = state.read_index();
            for (u, v) in vectors {
                match live.row_of(&u.id) {
                    Some(row)
                        if live.records()[row].sha256.as_deref() == Some(u.sha256.as_str()) =>
                    {
                        present.push(u.id);
                        continue;
                    }
                    Some(_) => {
                        return Err(ApiError::Conflict(format!(
                            "id {:?} is already in the index with another image",
                            u.id
                        )))
                    }
                    None => {}
                }
                let mut record = Record::new(u.id.clone()).with_sha256(u.sha256.clone());
                if let Some(l) = &u.label {
                    record = record.with_label(l.clone());
                }
                if let Some(store) = &state.image_store {
                    let name = keep_image(store, &u.bytes, &u.sha256)?;
                    record = record.with_meta(serde_json::json!({ "image": name }));
                }
                items.push((record, v.to_vec()));
            }
        }
        let ids: Vec<String> = items.iter().map(|(r, _)| r.id.clone()).collect();
        let n = items.len();
        if n > 0 {
            let change = state.read_index().prepare_add(items).map_err(index_error)?;
            let log_len = state
                .read_index()
                .log_change(lock, &change)
                .map_err(index_error)?;
            state.write_index().apply_logged(&change, log_len);
            let live = state.read_index();
            state.metrics.index_size.set(live.live_len() as i64);
            state.metrics.log_bytes.set(log_len as i64);
            tracing::info!(added = n, size = live.live_len(), "gallery images added");
            drop(live);
            crate::compaction::start_if_due(&state);
        }
        Ok(AddResponse {
            added: n,
            ids,
            already_present: present,
            index_size: state.metrics.index_size.get() as usize,
            durable: true,
        })
    })
    .await?
}

fn index_error(e: IndexError) -> ApiError {
    match e {
        IndexError::DuplicateId(id) => {
            ApiError::Conflict(format!("id {id:?} is already in the index"))
        }
        other => ApiError::Internal(format!("saving the index: {other}")),
    }
}

/// Writes an uploaded image into the store under its content hash (atomically); returns the file name.
fn keep_image(store: &Path, bytes: &[u8], sha256: &str) -> Result<String, ApiError> {
    let ext = image::guess_format(bytes)
        .ok()
        .and_then(|f| f.extensions_str().first().copied())
        .unwrap_or("bin");
    let name = format!("{sha256}.{ext}");
    let path = store.join(&name);
    if path.is_file() {
        return Ok(name);
    }
    hetvis_models::atomic::write(&path, bytes)
        .map_err(|e| ApiError::Internal(format!("image store: {e}")))?;
    Ok(name)
}

/// `GET /operations/{id}` (admin token): running, committed with the addition's result, or failed.
#[utoipa::path(
    get,
    path = "/operations/{id}",
    params(("id" = String, Path, description = "the id a 202 answer gave")),
    responses(
        (status = 200, description = "the operation's state", body = OperationState),
        (status = 401, description = "missing or wrong token", body = ErrorBody),
        (status = 404, description = "no such operation", body = ErrorBody),
    ),
    security(("bearer" = [])),
    tag = "gallery"
)]
pub async fn operation(
    State(state): State<SharedState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth::require_admin(state.admin_token.as_deref(), &headers)?;
    let op = state
        .operations
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no operation {id:?}")))?;
    let mut body = serde_json::to_value(op).unwrap_or_default();
    body["operation"] = serde_json::Value::String(id);
    Ok(Json(body))
}
