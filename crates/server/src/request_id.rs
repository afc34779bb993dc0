//! Request ids: the caller's `x-request-id` when it is a short printable
//! token, a fresh UUID otherwise. Returned in the response header, carried
//! by the request's log span and written into error bodies.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a caller; longer ones are replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request whose handler is running.
    static CURRENT: RequestId;
}

/// One request's id.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(Arc<str>);

impl RequestId {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The caller's id if it can go into logs and headers unchanged.
    fn accepted(value: &HeaderValue) -> Option<Self> {
        let id = value.to_str().ok()?;
        let printable = id.bytes().all(|b| b.is_ascii_graphic());
        (!id.is_empty() && id.len() <= MAX_LEN && printable).then(|| Self(id.into()))
    }

    fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string().into())
    }
}

/// The id of the request being handled, if any.
pub(crate) fn current() -> Option<RequestId> {
    CURRENT.try_with(RequestId::clone).ok()
}

/// Gives the request its id, runs the rest of the stack with it, and puts
/// it on the response.
pub(crate) async fn assign(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(RequestId::accepted)
        .unwrap_or_else(RequestId::generate);
    request.extensions_mut().insert(id.clone());
    let mut response = CURRENT.scope(id.clone(), next.run(request)).await;
    let value = HeaderValue::from_str(id.as_str()).expect("ids are printable ASCII");
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_ids_are_taken() {
        let taken = |value: &str| RequestId::accepted(&HeaderValue::from_str(value).unwrap());
        assert_eq!(taken("abc-123").unwrap().as_str(), "abc-123");
        assert!(taken("").is_none());
        assert!(taken("with space").is_none());
        assert!(taken(&"x".repeat(MAX_LEN + 1)).is_none());
        assert!(taken(&"x".repeat(MAX_LEN)).is_some());
    }
}
