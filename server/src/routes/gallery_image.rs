//! `GET /gallery/{id}/image`: the gallery image of a record, when the server knows where it is.
//!
//! Where an image is looked for, in order: `meta.image` (a file in `--image-store`, set by `POST /gallery`),
//! `meta.path` (a path written into the record by whoever built the index: relative to `--gallery-root`, or
//! absolute but inside it), the Fashion-MNIST record for ids `train/<i>` and `test/<i>` (with
//! `--fashion-mnist`), `--gallery-root`/`<id>` (an index built from an image folder, whose ids are paths
//! relative to it). Otherwise 404. Files are served only from inside those folders (symbolic links that lead
//! out are refused) and only up to the upload size limit.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorBody};
use crate::state::SharedState;

/// The gallery image of a record.
#[utoipa::path(
    get,
    path = "/gallery/{id}/image",
    params(("id" = String, Path, description = "the record's id (may contain `/`)")),
    responses(
        (status = 200, description = "the image bytes", content_type = "image/*"),
        (status = 404, description = "no such id, or no image the server may serve", body = ErrorBody),
    ),
    tag = "gallery"
)]
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
    let folders = Folders {
        image_store: state.image_store.clone(),
        gallery_root: state.gallery_root.clone(),
        fashion_mnist: state.fashion_mnist.is_some(),
    };
    let bytes = match folders.locate(id, meta.as_ref()) {
        Some(file) => {
            let cap = state.limits.body_limit as u64;
            tokio::task::spawn_blocking(move || file.read(cap))
                .await?
                .map_err(|e| {
                    tracing::warn!(error = %e, "gallery image not served");
                    not_found()
                })?
        }
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

/// The folders gallery images may be served from.
struct Folders {
    image_store: Option<PathBuf>,
    gallery_root: Option<PathBuf>,
    fashion_mnist: bool,
}

/// A file inside one of the [`Folders`].
#[derive(Debug, PartialEq)]
struct Inside {
    folder: PathBuf,
    relative: PathBuf,
}

impl Folders {
    /// The file to serve; `None` leaves the Fashion-MNIST records, then 404.
    fn locate(&self, id: &str, meta: Option<&serde_json::Value>) -> Option<Inside> {
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(|v| v.as_str());
        let inside = |folder: &PathBuf, rel: &Path| Inside {
            folder: folder.clone(),
            relative: rel.to_owned(),
        };
        if let (Some(name), Some(store)) = (field("image"), &self.image_store) {
            return plain_relative(name).map(|p| inside(store, p));
        }
        if let Some(p) = field("path") {
            let root = self.gallery_root.as_ref()?;
            let path = Path::new(p);
            let relative = if path.is_absolute() {
                path.strip_prefix(root).ok()?.to_str()?
            } else {
                p
            };
            return plain_relative(relative).map(|r| inside(root, r));
        }
        if self.fashion_mnist && (id.starts_with("train/") || id.starts_with("test/")) {
            return None;
        }
        let root = self.gallery_root.as_ref()?;
        plain_relative(id).map(|p| inside(root, p))
    }
}

impl Inside {
    /// Reads the file, refusing one that a symbolic link puts outside its folder or that is over `cap` bytes.
    fn read(&self, cap: u64) -> std::io::Result<Vec<u8>> {
        let folder = self.folder.canonicalize()?;
        let path = self.folder.join(&self.relative).canonicalize()?;
        if !path.starts_with(&folder) {
            return Err(std::io::Error::other(format!(
                "{} leads outside {}",
                self.relative.display(),
                folder.display()
            )));
        }
        let file = std::fs::File::open(&path)?;
        let too_big = || std::io::Error::other(format!("{} is over {cap} bytes", path.display()));
        if file.metadata()?.len() > cap {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        file.take(cap + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(too_big());
        }
        Ok(bytes)
    }
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

    #[test]
    fn meta_paths_are_served_only_from_inside_the_gallery_root() {
        let root = PathBuf::from("/srv/gallery");
        let folders = Folders {
            image_store: None,
            gallery_root: Some(root.clone()),
            fashion_mnist: false,
        };
        let at = |p: &str| folders.locate("x", Some(&serde_json::json!({ "path": p })));
        let inside = |r: &str| {
            Some(Inside {
                folder: root.clone(),
                relative: PathBuf::from(r),
            })
        };
        assert_eq!(at("shoes/a.png"), inside("shoes/a.png"));
        assert_eq!(at("/srv/gallery/shoes/a.png"), inside("shoes/a.png"));
        for outside in [
            "/etc/passwd",
            "/srv/gallery/../secret.png",
            "../secret.png",
            "/srv/gallery2/a.png",
        ] {
            assert_eq!(at(outside), None, "{outside}");
        }
        // Without a gallery root no meta.path is served at all.
        let none = Folders {
            image_store: None,
            gallery_root: None,
            fashion_mnist: false,
        };
        assert_eq!(
            none.locate(
                "x",
                Some(&serde_json::json!({ "path": "/srv/gallery/a.png" }))
            ),
            None
        );
    }

    #[test]
    fn links_out_of_the_folder_and_files_over_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("small.png"), [1u8; 100]).unwrap();
        std::fs::write(root.join("big.png"), [1u8; 5000]).unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.png")).unwrap();
        let file = |r: &str| Inside {
            folder: root.clone(),
            relative: PathBuf::from(r),
        };
        assert_eq!(file("small.png").read(1000).unwrap().len(), 100);
        assert!(file("big.png")
            .read(1000)
            .unwrap_err()
            .to_string()
            .contains("over 1000"));
        assert!(file("link.png")
            .read(1000)
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }
}
