//! Reading JSON bodies with our error format: 400 for syntax, types and unknown fields, 415 for
//! another media type. Values out of range are the handlers' business (422).

use crate::error::{ApiError, ErrorCode};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

/// Parses `body` as `T`; an empty body is `None`.
pub fn parse_optional<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    // A body must say it is JSON: a page on another site can post a body without a type (or
    // as text/plain) with the browser's cookies, but not as application/json without asking.
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|ct| ct.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if essence.as_deref() != Some("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "a request body must be sent as application/json",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error_free(&mut de) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_syntax() || e.is_eof() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )),
        Err(e) => Err(ApiError::bad_body(e.to_string())),
    }
}

fn serde_path_to_error_free<T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<T, serde_json::Error> {
    let v = T::deserialize(&mut *de)?;
    de.end()?;
    Ok(v)
}

/// Parses a body that must be present.
pub fn parse<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    parse_optional(headers, body)?.ok_or_else(|| ApiError::bad_body("a JSON body is required"))
}
