//! The admin bearer token that guards gallery changes and their operations.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
        .and_then(bearer_token);
    match given {
        Some(t) if tokens_match(t, expected) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// The credentials of an `Authorization: Bearer <token>` value; the scheme is case-insensitive (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares SHA-256 digests in constant time: neither the position of the first wrong byte nor the length of
/// the configured token shows in the timing.
fn tokens_match(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
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
        for ok in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret ",
            "Bearer\ts3cret",
        ] {
            assert_eq!(status(Some("s3cret"), Some(ok)), None, "{ok:?}");
        }
        for wrong in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearer "),
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearers3cret"),
        ] {
            assert_eq!(
                status(Some("s3cret"), wrong),
                Some(StatusCode::UNAUTHORIZED),
                "{wrong:?}"
            );
        }
        assert_eq!(status(None, Some("Bearer x")), Some(StatusCode::FORBIDDEN));
    }
}
