//! `GET /`: a self-contained search page (HTML, CSS and JS in one file, compiled into the binary; no CDN).

use axum::http::header;
use axum::response::{Html, IntoResponse};

const PAGE: &str = include_str!("page.html");

/// The search web page.
#[utoipa::path(get, path = "/", responses((status = 200, description = "HTML page", content_type = "text/html")), tag = "ops")]
pub async fn page() -> impl IntoResponse {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        )],
        Html(PAGE),
    )
}
