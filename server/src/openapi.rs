//! The OpenAPI 3 description of the HTTP API, generated from the handlers' annotations and response types,
//! served at `GET /openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::ErrorBody;
use crate::operations::OperationState;
use crate::routes::gallery::AddResponse;
use crate::routes::gallery_remove::RemoveResponse;
use crate::routes::search::{HitJson, Mode, SearchResponse, Timings};
use crate::state::ModelInfo;
use crate::{page, routes};

/// Body of `POST /search` (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImageUpload {
    /// PNG, JPEG, WebP, BMP or GIF.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

/// Body of `POST /gallery` (documentation only): the parts repeat, in order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct GalleryUpload {
    /// The next image's id (else its filename).
    id: Option<String>,
    /// The next image's label.
    label: Option<String>,
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

/// A 202 answer: the change is being made; poll `status_url`.
#[derive(ToSchema, serde::Serialize)]
pub struct Accepted {
    pub operation: String,
    pub state: String,
    pub status_url: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hetvis", description = "Heterogeneous visual search: a compact query model searches a gallery embedded by a large one."),
    paths(
        routes::search::search,
        routes::gallery::add,
        routes::gallery::operation,
        routes::gallery_image::image,
        routes::gallery_remove::remove,
        routes::info::info,
        routes::info::healthz,
        routes::info::readyz,
        routes::info::metrics,
        page::page,
        openapi_json,
    ),
    components(schemas(
        SearchResponse, HitJson, Timings, Mode, ModelInfo, AddResponse, RemoveResponse, OperationState,
        Accepted, ErrorBody,
        ImageUpload, GalleryUpload
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// This description.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3 document", body = Object)), tag = "ops")]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The route templates registered in `routes/mod.rs`, read from its source (axum has no route listing),
    /// in OpenAPI form.
    fn registered_routes() -> Vec<String> {
        let src = include_str!("routes/mod.rs");
        src.split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .flat_map(|r| match r {
                // The wildcard exists because ids contain `/`: GET serves `{id}/image`, DELETE removes `{id}`.
                "/gallery/{*rest}" => {
                    vec!["/gallery/{id}/image".to_owned(), "/gallery/{id}".to_owned()]
                }
                other => vec![other.to_owned()],
            })
            .collect()
    }

    #[test]
    fn every_route_is_described() {
        let doc = ApiDoc::openapi();
        let routes = registered_routes();
        assert!(routes.len() >= 10, "{routes:?}");
        for route in &routes {
            assert!(
                doc.paths.paths.contains_key(route),
                "{route} is not in the OpenAPI description"
            );
        }
        for path in doc.paths.paths.keys() {
            assert!(routes.contains(path), "{path} is described but not routed");
        }
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        assert!(json["components"]["schemas"]["SearchResponse"].is_object());
    }
}
