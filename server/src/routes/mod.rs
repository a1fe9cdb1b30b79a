//! The HTTP surface: routes and the layers around them.

pub mod gallery;
pub mod gallery_image;
pub mod gallery_remove;
pub mod image_body;
pub mod info;
pub mod search;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;

use crate::middleware;
use crate::page;
use crate::state::SharedState;

/// Every route, with (outermost first) request metrics, JSON errors, the request timeout and the body limit;
/// searches and uploads also pass admission control.
pub fn router(state: SharedState) -> Router {
    // The routes that take bodies and do heavy work, behind admission control.
    let heavy = Router::new()
        .route("/search", post(search::search))
        .route("/gallery", post(gallery::add))
        .route_layer(from_fn_with_state(state.clone(), middleware::admit));
    Router::new()
        .merge(heavy)
        .route("/", get(page::page))
        .route(
            "/gallery/{*rest}",
            get(gallery_image::image).delete(gallery_remove::remove),
        )
        .route("/operations/{id}", get(gallery::operation))
        .route("/v1/info", get(info::info))
        .route("/healthz", get(info::healthz))
        .route("/readyz", get(info::readyz))
        .route("/metrics", get(info::metrics))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .fallback(middleware::not_found)
        .layer(DefaultBodyLimit::max(state.limits.body_limit))
        .layer(from_fn_with_state(state.clone(), middleware::timeout))
        .layer(from_fn(middleware::json_errors))
        .layer(from_fn_with_state(state.clone(), middleware::track))
        .with_state(state)
}

#[cfg(test)]
mod tests;
