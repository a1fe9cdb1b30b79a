//! `POST /search`: decode, embed with the query (or, `mode=paragon`, the gallery) model, search the index.

use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::{Extension, Json};
use hetvis_indexer::Hit;
use hetvis_models::preprocess;
use serde::{Deserialize, Serialize};

use super::image_body;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::Stage;
use crate::openapi::ImageUpload;
use crate::state::{LoadedModel, ModelInfo, SharedState};
use crate::work::Admitted;

pub const DEFAULT_K: usize = 10;

/// Query parameters, parsed by hand so each mistake gets its own message.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Results to return, 1..=`--max-k` (default 10).
    #[param(value_type = Option<u32>)]
    k: Option<String>,
    /// HNSW candidate list size, 1..=`--max-ef` (default: the index's `ef_search`).
    #[param(value_type = Option<u32>)]
    ef: Option<String>,
    /// `query` (default) or `paragon`.
    #[param(value_type = Option<Mode>)]
    mode: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The compact query model: the heterogeneous setting.
    Query,
    /// The gallery model for the query too: the accuracy reference.
    Paragon,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Query => "query",
            Mode::Paragon => "paragon",
        }
    }
}

#[derive(Debug, PartialEq)]
struct Parsed {
    k: usize,
    ef: Option<usize>,
    mode: Mode,
}

fn bounded(name: &str, value: &str, max: usize) -> Result<usize, ApiError> {
    match value.trim().parse::<usize>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(ApiError::BadRequest(format!(
            "{name} must be an integer from 1 to {max}, not {value:?}"
        ))),
    }
}

fn parse(p: &SearchParams, max_k: usize, max_ef: usize) -> Result<Parsed, ApiError> {
    let k = match &p.k {
        Some(k) => bounded("k", k, max_k)?,
        None => DEFAULT_K.min(max_k),
    };
    let ef =
        p.ef.as_deref()
            .map(|e| bounded("ef", e, max_ef))
            .transpose()?;
    let mode = match p.mode.as_deref() {
        None | Some("query") => Mode::Query,
        Some("paragon") => Mode::Paragon,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "mode must be `query` or `paragon`, not {other:?}"
            )))
        }
    };
    Ok(Parsed { k, ef, mode })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HitJson {
    pub id: String,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Value>,
}

impl From<Hit> for HitJson {
    /// `meta.path` (where the server may find the gallery file) is the server's business, not the client's.
    fn from(h: Hit) -> Self {
        let meta = h.meta.and_then(|mut m| {
            if let Some(obj) = m.as_object_mut() {
                obj.remove("path");
                if obj.is_empty() {
                    return None;
                }
            }
            Some(m)
        });
        Self {
            id: h.id,
            score: h.score,
            label: h.label,
            meta,
        }
    }
}

/// The `ef` a search runs with: the request's (already bounded), else the index's default, which comes from a
/// file and gets the same bound as a request's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Timings {
    pub decode: f64,
    pub embed: f64,
    pub search: f64,
    pub total: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub results: Vec<HitJson>,
    pub model: ModelInfo,
    pub mode: Mode,
    pub k: usize,
    /// Images in the forward pass this query shared (micro-batching).
    pub batch_images: usize,
    /// False while the HNSW graph is still being built (the search was exact).
    pub graph: bool,
    pub timings_ms: Timings,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Searches the gallery with an uploaded image.
#[utoipa::path(
    post,
    path = "/search",
    params(SearchParams),
    request_body(content = ImageUpload, content_type = "multipart/form-data",
        description = "the image as field `image`; or the raw bytes with Content-Type image/*"),
    responses(
        (status = 200, description = "ranked gallery hits", body = SearchResponse),
        (status = 400, description = "bad parameter or image", body = ErrorBody),
        (status = 409, description = "mode=paragon without a gallery model", body = ErrorBody),
        (status = 413, description = "body or image over the limits", body = ErrorBody),
        (status = 415, description = "neither multipart nor image/*", body = ErrorBody),
        (status = 429, description = "too many requests in flight or queued", body = ErrorBody),
        (status = 503, description = "timed out or shutting down", body = ErrorBody),
    ),
    tag = "search"
)]
pub async fn search(
    State(state): State<SharedState>,
    Extension(admitted): Extension<Admitted>,
    Query(params): Query<SearchParams>,
    req: Request,
) -> Result<Json<SearchResponse>, ApiError> {
    let started = Instant::now();
    let Parsed { k, ef, mode } = parse(&params, state.limits.max_k, state.limits.max_ef)?;
    let model: &LoadedModel = match mode {
        Mode::Query => &state.query,
        Mode::Paragon => state.gallery.as_ref().ok_or_else(|| {
            ApiError::Conflict(
                "mode=paragon needs the gallery model: start the server with --gallery-model"
                    .into(),
            )
        })?,
    };
    let bytes = image_body::single_image(req).await?;

    let t = Instant::now();
    // Workers gathering a batch wait for this request while it decodes.
    let announced = model.pool.announce();
    // The decode holds its decoder and admission permits itself: if the request times out, they are
    // returned when the decode ends, not when the request is dropped.
    let decoder = state
        .decoders
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let (p, limits, held) = (
        model.preprocessing.clone(),
        state.limits.image,
        admitted.clone(),
    );
    let input = tokio::task::spawn_blocking(move || {
        let _work = (held, decoder);
        hetvis_models::failpoint::fail("decode");
        preprocess::preprocess_bytes(&bytes, &p, limits)
    })
    .await?
    .map_err(|e| ApiError::image("the image", e))?;
    let decode = ms(t);

    let t = Instant::now();
    let reply = model.pool.submit(input, 1)?;
    drop(announced);
    let embedded = reply
        .await
        .map_err(|_| ApiError::Unavailable("the inference workers have stopped".into()))??;
    let embed = ms(t);

    let t = Instant::now();
    let found = state
        .backend
        .search(&state, embedded.vectors, k, ef, admitted)
        .await?;
    let search = ms(t);
    if let Some(stage) = state.backend.round_trip_stage() {
        state
            .metrics
            .stage(stage, mode.label())
            .observe(search / 1e3);
    }
    Ok(respond(
        &state,
        model,
        mode,
        k,
        embedded.batch_images,
        found.hits,
        found.graph,
        [decode, embed, search],
        started,
    ))
}

/// The answer and the stage metrics of a finished search.
#[allow(clippy::too_many_arguments)]
fn respond(
    state: &SharedState,
    model: &LoadedModel,
    mode: Mode,
    k: usize,
    batch_images: usize,
    hits: Vec<hetvis_indexer::Hit>,
    graph: bool,
    [decode, embed, search]: [f64; 3],
    started: Instant,
) -> Json<SearchResponse> {
    let total = ms(started);
    let m = mode.label();
    for (stage, v) in [
        (Stage::Decode, decode),
        (Stage::Embed, embed),
        (Stage::Search, search),
        (Stage::Total, total),
    ] {
        state.metrics.stage(stage, m).observe(v / 1e3);
    }
    Json(SearchResponse {
        results: hits.into_iter().map(HitJson::from).collect(),
        model: model.info.clone(),
        mode,
        k,
        batch_images,
        graph,
        timings_ms: Timings {
            decode,
            embed,
            search,
            total,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: Option<&str>, ef: Option<&str>, mode: Option<&str>) -> SearchParams {
        SearchParams {
            k: k.map(str::to_owned),
            ef: ef.map(str::to_owned),
            mode: mode.map(str::to_owned),
        }
    }

    #[test]
    fn parameters_are_bounded_and_defaulted() {
        let ok = parse(&p(None, None, None), 100, 500).unwrap();
        assert_eq!((ok.k, ok.ef, ok.mode), (10, None, Mode::Query));
        let ok = parse(&p(Some("100"), Some("64"), Some("paragon")), 100, 500).unwrap();
        assert_eq!((ok.k, ok.ef, ok.mode), (100, Some(64), Mode::Paragon));
        assert_eq!(parse(&p(None, None, None), 5, 500).unwrap().k, 5);
        for bad in [
            p(Some("0"), None, None),
            p(Some("101"), None, None),
            p(Some("ten"), None, None),
            p(Some("-1"), None, None),
            p(Some(""), None, None),
            p(None, Some("0"), None),
            p(None, Some("501"), None),
            p(None, None, Some("gallery")),
        ] {
            let e = parse(&bad, 100, 500).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn the_index_default_ef_is_bounded_like_a_request_ef() {
        assert_eq!(crate::backend::effective_ef(None, 64, 500), 64);
        assert_eq!(crate::backend::effective_ef(None, 4096, 500), 500);
        assert_eq!(crate::backend::effective_ef(Some(200), 4096, 500), 200);
    }

    #[test]
    fn hits_never_show_where_the_server_keeps_files() {
        let hit = |meta| {
            HitJson::from(Hit {
                id: "a".into(),
                score: 1.0,
                label: None,
                meta,
            })
        };
        let j = hit(Some(
            serde_json::json!({ "path": "/srv/photos/a.jpg", "sku": 7 }),
        ));
        assert_eq!(j.meta, Some(serde_json::json!({ "sku": 7 })));
        assert_eq!(
            hit(Some(serde_json::json!({ "path": "/srv/a.jpg" }))).meta,
            None
        );
        assert_eq!(
            hit(Some(serde_json::json!("free text"))).meta,
            Some(serde_json::json!("free text"))
        );
    }
}
