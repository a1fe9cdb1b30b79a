//! Getting an uploaded image out of a request: a multipart field `image`, or the raw body as `image/*`.

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};

use crate::error::ApiError;

const HOW: &str =
    "send the image as multipart/form-data field `image`, or as the raw body with Content-Type image/*";

/// How the request body is encoded.
pub enum BodyKind {
    Multipart,
    RawImage,
}

/// The body's kind from its Content-Type; anything else is 415.
pub fn body_kind(req: &Request) -> Result<BodyKind, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "multipart/form-data" {
        Ok(BodyKind::Multipart)
    } else if mime.starts_with("image/") {
        Ok(BodyKind::RawImage)
    } else if mime.is_empty() {
        Err(ApiError::UnsupportedMediaType(format!(
            "no Content-Type: {HOW}"
        )))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {mime:?}: {HOW}"
        )))
    }
}

/// The one image of a search request.
pub async fn single_image(req: Request) -> Result<Bytes, ApiError> {
    match body_kind(&req)? {
        BodyKind::RawImage => Bytes::from_request(req, &())
            .await
            .map_err(|r| rejected(r.status(), r.body_text())),
        BodyKind::Multipart => {
            let mut form = multipart(req).await?;
            while let Some(field) = form.next_field().await.map_err(multipart_error)? {
                if field.name() == Some("image") {
                    return field.bytes().await.map_err(multipart_error);
                }
            }
            Err(ApiError::BadRequest(format!("no `image` field: {HOW}")))
        }
    }
}

pub async fn multipart(req: Request) -> Result<Multipart, ApiError> {
    Multipart::from_request(req, &())
        .await
        .map_err(|r| rejected(r.status(), r.body_text()))
}

pub fn multipart_error(e: MultipartError) -> ApiError {
    rejected(e.status(), e.body_text())
}

/// An axum rejection as our error, keeping 413 for bodies over the limit.
fn rejected(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        _ => ApiError::BadRequest(text),
    }
}
