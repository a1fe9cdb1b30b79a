//! Which models may be used with an index: the embedding space (`compat_id`) and dimension must match, and only
//! the very gallery model file that built an index may add to it.

use hetvis_models::manifest::{ModelManifest, Role};

use crate::error::IndexError;
use crate::manifest::IndexManifest;

/// A model whose embeddings can be searched in `index`: the gallery model or a query model trained against it.
pub fn check_query_model(index: &IndexManifest, model: &ModelManifest) -> Result<(), IndexError> {
    if model.compat_id != index.gallery.compat_id {
        return Err(IndexError::Incompatible {
            index: index.gallery.compat_id.clone(),
            model: model.compat_id.clone(),
        });
    }
    if model.embedding_dim != index.dim {
        return Err(IndexError::DimensionMismatch {
            index: index.dim,
            model: model.embedding_dim,
        });
    }
    Ok(())
}

/// A model that may embed a gallery at all.
pub fn check_is_gallery(model: &ModelManifest) -> Result<(), IndexError> {
    if model.role == Role::Gallery {
        Ok(())
    } else {
        Err(IndexError::NotGallery {
            model: model.name.clone(),
            role: model.role.to_string(),
        })
    }
}

/// The model that may add vectors to `index`: a gallery model in its space whose file hashes the same as the
/// one that built it (same compat_id alone could still be a re-trained model with different weights).
pub fn check_gallery_model(
    index: &IndexManifest,
    model: &ModelManifest,
    model_sha256: &str,
) -> Result<(), IndexError> {
    check_is_gallery(model)?;
    check_query_model(index, model)?;
    if model_sha256 != index.gallery.sha256 {
        return Err(IndexError::ModelChanged {
            index: index.gallery.sha256.clone(),
            model: model_sha256.to_owned(),
        });
    }
    Ok(())
}
