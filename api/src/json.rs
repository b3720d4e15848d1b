//! Reading JSON bodies with our error format: 400 for syntax, types and unknown fields, 415 for
//! another media type. Values out of range are the handlers' business (422).

use crate::error::{ApiError, ErrorCode};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
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
    // Every body oO takes is an object: serde would also read a struct from an array.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(body) {
            Err(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidJson,
                format!("the body is not valid JSON: {e}"),
            ),
            Ok(_) => ApiError::bad_body("the body must be a JSON object"),
        });
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

/// An integer as JSON Schema counts them: `2`, or `2.0` (a number with no fractional part).
pub fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    whole(&n).ok_or_else(|| serde::de::Error::custom(format!("invalid type: {n}, expected an integer")))
}

/// [`integer`], or null.
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| whole(&n).ok_or_else(|| serde::de::Error::custom(format!("invalid type: {n}, expected an integer"))))
        .transpose()
}

fn whole(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64)
            .map(|f| f as i64)
    })
}

/// A nested object, or null: serde would also read a struct from an array.
pub fn optional_object<'de, D: serde::Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(v) => object(&v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A list of objects.
pub fn objects<'de, D: serde::Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<serde_json::Value>::deserialize(d)?
        .into_iter()
        .map(|v| object(&v))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

/// `v` as `T`, if it is an object.
pub fn object<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, serde_json::Error> {
    if v.is_object() {
        T::deserialize(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "invalid type: {}, expected an object",
            match v {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::Object(_) => "an object",
            }
        )))
    }
}
