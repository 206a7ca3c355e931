//! Small request extractors shared by the handlers: a positive integer path id, and the JSON
//! content-type rule.
//!
//! Both refuse before anything is consumed or changed: a bad id or a body that is not declared
//! as JSON gets its 4xx (with the usual JSON error body) before the handler reads the body, so
//! no WebAuthn challenge is used up and no audit row is written by such a request. Must never
//! accept an id the OpenAPI document says is invalid (`integer`, `minimum: 1`, 63-bit).

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::ApiError;

/// A path id that is a positive 63-bit integer (entries, agents). Anything else is a 400 that
/// reveals nothing about what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PositiveId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bad = || ApiError::BadRequest("the id in the path must be a positive integer".into());
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| bad())?;
        parse_positive(&raw).map(PositiveId).ok_or_else(bad)
    }
}

/// Digits only: no sign, no spaces, no leading `+` that `str::parse` would accept.
pub(crate) fn parse_positive(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|n| *n > 0)
}

/// Whether the request says its body is JSON: `application/json`, parameters allowed.
pub(super) fn declares_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The 415 every JSON route gives a body that is not declared as JSON.
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if declares_json(headers) { Ok(()) } else { Err(ApiError::UnsupportedMediaType) }
}

/// The raw bytes of a body that must be JSON: refused with 415 unless the request declares
/// `Content-Type: application/json`, before a byte of it is read.
pub struct JsonBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = axum::response::Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        require_json(req.headers()).map_err(IntoResponse::into_response)?;
        let body = axum::body::Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        Ok(Self(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_positive_digits_are_ids() {
        assert_eq!(parse_positive("1"), Some(1));
        assert_eq!(parse_positive("9223372036854775807"), Some(i64::MAX));
        for bad in ["", "0", "-1", "+1", " 1", "1.0", "9223372036854775808", "abc", "0x10"] {
            assert_eq!(parse_positive(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!declares_json(&h));
        for (v, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/json-seq", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            assert_eq!(declares_json(&h), ok, "{v}");
        }
    }
}
