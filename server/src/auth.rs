//! The admin bearer token that guards `POST /gallery`.

use axum::http::{header, HeaderMap};

use crate::error::ApiError;

/// 403 when the server has no token (uploads disabled), 401 when the request's is missing or wrong.
pub fn require_admin(configured: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = configured else {
        return Err(ApiError::Forbidden(
            "gallery uploads are disabled: start the server with --admin-token".into(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn with(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn token_checks() {
        let status =
            |c: Option<&str>, a: Option<&str>| require_admin(c, &with(a)).err().map(|e| e.status());
        assert_eq!(status(Some("s3cret"), Some("Bearer s3cret")), None);
        assert_eq!(status(Some("s3cret"), None), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(Some("s3cret"), Some("Bearer s3cre")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(Some("s3cret"), Some("s3cret")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(status(None, Some("Bearer x")), Some(StatusCode::FORBIDDEN));
    }
}
