//! `GET /gallery/{id}/image`: the gallery image of a record, when the server knows where it is.
//!
//! Where an image is looked for, in order: `meta.image` (a file in `--image-store`, set by `POST /gallery`),
//! `meta.path` (a file path written into the record by whoever built the index), the Fashion-MNIST record for
//! ids `train/<i>` and `test/<i>` (with `--fashion-mnist`), `--gallery-root`/`<id>` (an index built from an
//! image folder, whose ids are paths relative to it). Otherwise 404.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::SharedState;

/// Ids may contain `/` (`train/123`, `shoes/a.png`), so the route is a wildcard ending in `/image`.
pub async fn image(
    State(state): State<SharedState>,
    UrlPath(rest): UrlPath<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no gallery image for {rest:?}"));
    let id = rest.strip_suffix("/image").ok_or_else(not_found)?;
    // The index lock may be held by an upload for a moment: wait on a blocking thread, not an async one.
    let (shared, key) = (state.clone(), id.to_owned());
    let meta = tokio::task::spawn_blocking(move || {
        let index = shared.read_index();
        let row = index.row_of(&key)?;
        Some(index.records()[row].meta.clone())
    })
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no id {id:?} in the index")))?;
    let bytes = match locate(&state, id, meta.as_ref()) {
        Some(path) => tokio::fs::read(&path).await.map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "gallery image unreadable");
            not_found()
        })?,
        None if state.fashion_mnist.is_some() => {
            let (shared, id) = (state.clone(), id.to_owned());
            tokio::task::spawn_blocking(move || shared.fashion_mnist.as_ref()?.png(&id))
                .await?
                .ok_or_else(not_found)?
        }
        None => return Err(not_found()),
    };
    let mime = image::guess_format(&bytes)
        .map(|f| f.to_mime_type())
        .unwrap_or("application/octet-stream");
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}

/// The file to serve; `None` leaves the Fashion-MNIST records, then 404.
fn locate(state: &SharedState, id: &str, meta: Option<&serde_json::Value>) -> Option<PathBuf> {
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(|v| v.as_str());
    if let (Some(name), Some(store)) = (field("image"), &state.image_store) {
        return plain_relative(name).map(|p| store.join(p));
    }
    if let Some(p) = field("path") {
        return Some(PathBuf::from(p));
    }
    if state.fashion_mnist.is_some() && (id.starts_with("train/") || id.starts_with("test/")) {
        return None;
    }
    let root = state.gallery_root.as_ref()?;
    plain_relative(id).map(|p| root.join(p))
}

/// `s` as a relative path that cannot leave the folder it is joined to (no `..`, no root, no prefix).
fn plain_relative(s: &str) -> Option<&Path> {
    let p = Path::new(s);
    let plain = !s.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_joined() {
        assert!(plain_relative("c0/01.png").is_some());
        assert!(plain_relative("a.png").is_some());
        for bad in ["", "../x.png", "c0/../../x", "/etc/passwd", "./a"] {
            assert!(plain_relative(bad).is_none(), "{bad}");
        }
    }
}
