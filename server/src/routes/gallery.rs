//! `POST /gallery`: bulk-adds images to the index, embedded with the gallery model, saved atomically.
//!
//! Body: `multipart/form-data` with one or more `image` parts. A part's id is the value of the `id` text
//! field sent just before it, else its filename; an optional `label` field before it labels it. All or
//! nothing: any bad image, duplicate id or failed save adds nothing. The live index takes the new rows only
//! after the save succeeded.

use std::path::Path;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hetvis_indexer::{checksum, IndexError, Record};
use hetvis_models::preprocess;
use serde::Serialize;

use super::image_body::{self, BodyKind};
use crate::auth;
use crate::error::ApiError;
use crate::state::SharedState;

/// Most images one request may add.
pub const MAX_IMAGES: usize = 1024;
const MAX_ID_BYTES: usize = 512;

struct Upload {
    id: String,
    label: Option<String>,
    bytes: Bytes,
}

#[derive(Debug, Serialize)]
pub struct AddResponse {
    pub added: usize,
    pub ids: Vec<String>,
    pub index_size: usize,
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "invalid id {id:?}: 1 to {MAX_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

async fn read_uploads(req: Request) -> Result<Vec<Upload>, ApiError> {
    if !matches!(image_body::body_kind(&req)?, BodyKind::Multipart) {
        return Err(ApiError::UnsupportedMediaType(
            "POST /gallery takes multipart/form-data with `image` parts".into(),
        ));
    }
    let mut form = image_body::multipart(req).await?;
    let (mut id, mut label) = (None, None);
    let mut uploads: Vec<Upload> = Vec::new();
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
                uploads.push(Upload {
                    id,
                    label: label.take(),
                    bytes,
                });
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

fn refuse_duplicates(state: &SharedState, uploads: &[Upload]) -> Result<(), ApiError> {
    let index = state.read_index();
    let mut seen = std::collections::HashSet::new();
    for u in uploads {
        if !seen.insert(u.id.as_str()) {
            return Err(ApiError::Conflict(format!("id {:?} appears twice", u.id)));
        }
        if index.contains_id(&u.id) {
            return Err(ApiError::Conflict(format!(
                "id {:?} is already in the index",
                u.id
            )));
        }
    }
    Ok(())
}

pub async fn add(
    State(state): State<SharedState>,
    headers: HeaderMap,
    req: Request,
) -> Result<(StatusCode, Json<AddResponse>), ApiError> {
    auth::require_admin(state.admin_token.as_deref(), &headers)?;
    let gallery = state.gallery.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "adding to the gallery needs its model: start the server with --gallery-model".into(),
        )
    })?;
    let uploads = read_uploads(req).await?;
    refuse_duplicates(&state, &uploads)?;

    let decoder = state
        .decoders
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let (p, limits) = (gallery.preprocessing.clone(), state.limits.image);
    let (uploads, input) = tokio::task::spawn_blocking(move || {
        let mut input = Vec::with_capacity(uploads.len() * p.numel());
        for u in &uploads {
            let one = preprocess::preprocess_bytes(&u.bytes, &p, limits)
                .map_err(|e| ApiError::image(&format!("image {:?}", u.id), e))?;
            input.extend_from_slice(&one);
        }
        Ok::<_, ApiError>((uploads, input))
    })
    .await??;
    drop(decoder);
    let n = uploads.len();
    let embedded = gallery.pool.embed(input, n).await?;

    // One writer at a time; searches go on meanwhile. The guard moves into the blocking task, so a request
    // that times out cannot let a second save start while its own is still running.
    let writer = state.writer.clone().lock_owned().await;
    let shared = state.clone();
    let (ids, index_size) = tokio::task::spawn_blocking(move || {
        let _writer = writer;
        refuse_duplicates(&shared, &uploads)?;
        let dim = embedded.vectors.len() / n;
        let mut items = Vec::with_capacity(n);
        for (u, v) in uploads.iter().zip(embedded.vectors.chunks_exact(dim)) {
            let mut record = Record::new(u.id.clone());
            if let Some(l) = &u.label {
                record = record.with_label(l.clone());
            }
            if let Some(store) = &shared.image_store {
                let name = keep_image(store, &u.bytes)?;
                record = record.with_meta(serde_json::json!({ "image": name }));
            }
            items.push((record, v.to_vec()));
        }
        let ids: Vec<String> = items.iter().map(|(r, _)| r.id.clone()).collect();
        // Stage on a copy and save it; only then does the live index take the rows.
        let mut staged = shared.read_index().clone_without_graph();
        staged.add(items.clone()).map_err(index_error)?;
        staged.save(&shared.index_dir).map_err(index_error)?;
        drop(staged);
        let mut live = shared.write_index();
        live.add(items).map_err(index_error)?;
        shared.metrics.index_size.set(live.len() as i64);
        tracing::info!(added = n, size = live.len(), "gallery images added");
        Ok::<_, ApiError>((ids, live.len()))
    })
    .await??;
    Ok((
        StatusCode::CREATED,
        Json(AddResponse {
            added: n,
            ids,
            index_size,
        }),
    ))
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
fn keep_image(store: &Path, bytes: &[u8]) -> Result<String, ApiError> {
    let ext = image::guess_format(bytes)
        .ok()
        .and_then(|f| f.extensions_str().first().copied())
        .unwrap_or("bin");
    let name = format!("{}.{ext}", checksum::sha256_hex(bytes));
    let path = store.join(&name);
    if path.is_file() {
        return Ok(name);
    }
    hetvis_models::atomic::write(&path, bytes)
        .map_err(|e| ApiError::Internal(format!("image store: {e}")))?;
    Ok(name)
}
