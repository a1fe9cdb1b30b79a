//! Cross-cutting request handling: metrics and in-flight tracking, the request timeout, and JSON bodies for
//! every error, axum's own rejections (bad multipart, body too large, wrong method, unknown route) included.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::json_error;
use crate::state::SharedState;
use crate::work::{Admitted, CommitSlot};

/// Counts requests by route template and status, and keeps the in-flight gauge.
pub async fn track(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    // Unknown paths share one label so a scanner cannot blow up the series count.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let in_flight = InFlight::enter(&state);
    let response = next.run(req).await;
    drop(in_flight);
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}

/// Decrements the gauge even when the request future is dropped (client gone, shutdown).
struct InFlight(SharedState);

impl InFlight {
    fn enter(state: &SharedState) -> Self {
        state.metrics.in_flight.inc();
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// Admits a search or upload only while fewer than `--max-in-flight` are being served; 429 otherwise. Bodies
/// are read after admission, so memory held by bodies stays below `max_in_flight x body_limit`. The permit goes
/// into the request's extensions as [`Admitted`]; handlers hand clones of it to the work they start, so it is
/// returned when both the request and its work are over.
pub async fn admit(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    match state.admission.clone().try_acquire_owned() {
        Ok(permit) => {
            req.extensions_mut().insert(Admitted::new(permit));
            next.run(req).await
        }
        Err(_) => json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight; retry later",
        ),
    }
}

/// Answers 503 (with `Retry-After`) when a request, body upload included, takes longer than the limit; but 202
/// with the operation's id when the handler had already started a change that will be made (see
/// [`CommitSlot`]), so a client is never told "failed" about a write that lands.
pub async fn timeout(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let limit = state.limits.request_timeout;
    let slot = CommitSlot::default();
    req.extensions_mut().insert(slot.clone());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => match slot.get() {
            Some(operation) => accepted(operation),
            None => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("request timed out after {} ms", limit.as_millis()),
            ),
        },
    }
}

/// 202 for a change still being made: where to read its outcome.
pub fn accepted(operation: &str) -> Response {
    let url = format!("/operations/{operation}");
    let body = serde_json::json!({ "operation": operation, "state": "running", "status_url": url });
    let mut r = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Largest non-JSON error body kept as the message.
const MAX_ERROR_TEXT: usize = 4096;

/// Rewrites error responses that are not JSON (axum's rejections are plain text) as `{"error": "..."}`,
/// keeping the status and headers such as `Allow` and `Retry-After`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
    };
    let body = serde_json::json!({ "error": text }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body)).into_response()
}

/// Unknown routes.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn plain_text_rejections_become_json_with_their_status() {
        let app = Router::new()
            .route(
                "/n",
                post(|axum::Json(v): axum::Json<u32>| async move { v.to_string() }),
            )
            .layer(axum::middleware::from_fn(json_errors));
        let req = Request::post("/n")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("not json"))
            .unwrap();
        let r = app.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("JSON"), "{v}");
        // 405 keeps its Allow header.
        let r = app
            .oneshot(Request::get("/n").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers().contains_key(header::ALLOW));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
