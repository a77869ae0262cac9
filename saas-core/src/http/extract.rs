//! Extractors whose rejections are problem+json.
//!
//! Use these instead of axum's `Json`, `Path` and `Query`: malformed input becomes a 4xx
//! [`Error`] with a stable code, and JSON that does not fit the type names the field.

use axum::{
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{PathRejection, QueryRejection},
    },
    response::{IntoResponse, Response},
};
use axum_extra::typed_header::TypedHeaderRejection;
use http::{header, request::Parts};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, FieldError};

/// JSON body extractor and response.
///
/// Rejections: wrong or missing `Content-Type` → 415 `unsupported_media_type`; malformed
/// JSON → 400 `malformed_json`; JSON of the wrong shape → 422 `validation_failed` naming the
/// field; body over the limit → 413 `payload_too_large`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !is_json(req.headers()) {
            return Err(Error::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        let bytes = bytes::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                payload_too_large()
            } else {
                Error::bad_request("unreadable_body", "the request body could not be read")
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// 413 `payload_too_large`.
pub fn payload_too_large() -> Error {
    Error::new(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server accepts",
    )
}

fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON, turning serde errors into problem errors that name the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(malformed)?;
            Ok(v)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    let (field, code) = match message.strip_prefix("missing field `") {
                        Some(rest) => {
                            let name = rest.trim_end_matches('`');
                            (join_path(&path, name), "required")
                        }
                        None if message.starts_with("unknown field") => (path, "unknown_field"),
                        None => (path, "invalid"),
                    };
                    Err(Error::validation([FieldError::new(
                        if field == "." { String::new() } else { field },
                        code,
                        message,
                    )]))
                }
                _ => Err(malformed(inner)),
            }
        }
    }
}

fn malformed(e: serde_json::Error) -> Error {
    Error::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() || parent == "." { name.to_owned() } else { format!("{parent}.{name}") }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Path parameters extractor; a bad parameter is 400 `invalid_path_parameter`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state).await.map(|p| Path(p.0)).map_err(Error::from)
    }
}

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(e) => {
                Error::bad_request("invalid_path_parameter", e.body_text())
            }
            other => Error::internal(anyhow::anyhow!("path extraction: {}", other.body_text())),
        }
    }
}

/// Query string extractor; a bad query is 400 `invalid_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|q| Query(q.0)).map_err(Error::from)
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Error::bad_request("invalid_query", r.body_text())
    }
}

impl From<TypedHeaderRejection> for Error {
    fn from(r: TypedHeaderRejection) -> Self {
        let name = r.name().as_str().to_owned();
        if r.is_missing() {
            Error::bad_request("missing_header", format!("the `{name}` header is required"))
        } else {
            Error::bad_request("invalid_header", format!("the `{name}` header is malformed"))
        }
    }
}

/// A typed header extractor whose rejection is problem+json (400 `missing_header` or
/// `invalid_header`).
#[derive(Debug, Clone)]
pub struct TypedHeader<H>(pub H);

impl<S: Send + Sync, H: axum_extra::headers::Header + Send> FromRequestParts<S> for TypedHeader<H> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum_extra::TypedHeader::<H>::from_request_parts(parts, state)
            .await
            .map(|h| TypedHeader(h.0))
            .map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Signup {
        name: String,
        seats: u32,
        owner: Owner,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Owner {
        email: String,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Signup>(br#"{"name":"a","seats":"many","owner":{"email":"x"}}"#).unwrap_err();
        assert_eq!(e.status(), 422);
        assert_eq!(e.field_errors()[0].field, "seats");
        assert_eq!(e.field_errors()[0].code, "invalid");

        let e = parse_json::<Signup>(br#"{"name":"a","seats":1,"owner":{}}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].field, "owner.email");
        assert_eq!(e.field_errors()[0].code, "required");

        let e = parse_json::<Signup>(br#"{"name":"a","seats":1,"owner":{"email":"x"},"x":1}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].code, "unknown_field");

        let e = parse_json::<Signup>(br#"{"name": "#).unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "malformed_json"));
        let e = parse_json::<Signup>(br#"{"name":"a","seats":1,"owner":{"email":"x"}} trailing"#).unwrap_err();
        assert_eq!(e.code(), "malformed_json");
    }
}
