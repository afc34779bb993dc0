//! What one request's log lines carry: its id (the caller's `x-request-id`
//! when it is a short printable token, a fresh UUID otherwise), method,
//! route and, once authorization names one, tenant. The id is also
//! returned in the response header and written into error bodies.
//!
//! The context is a task-local, not a tracing span: a span costs the log
//! subscriber a slot, its fields formatted and an enter and exit on every
//! poll, 8-10 µs a request on two cores, for lines most requests never
//! write. The log formatter reads the context only when it writes a line.

use std::fmt;
use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde::ser::{Serialize, SerializeMap, Serializer};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a caller; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The route logged for a request no route matched.
const UNMATCHED: &str = "unmatched";

tokio::task_local! {
    /// The context of the request whose handler is running.
    static CURRENT: RequestContext;
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

/// The fields of one request's log lines. The path is left out: the route
/// template says where it went, and a query may hold a subscribe token.
#[derive(Debug)]
pub(crate) struct RequestContext {
    id: RequestId,
    method: Method,
    route: Option<MatchedPath>,
    tenant: OnceLock<String>,
}

impl RequestContext {
    fn route_template(&self) -> &str {
        self.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str)
    }
}

/// As the `span` object of a JSON log line.
impl Serialize for RequestContext {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("request_id", self.id.as_str())?;
        map.serialize_entry("method", self.method.as_str())?;
        map.serialize_entry("route", self.route_template())?;
        if let Some(tenant) = self.tenant.get() {
            map.serialize_entry("tenant", tenant)?;
        }
        map.end()
    }
}

/// As the fields that end a text log line.
impl fmt::Display for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request_id={} method={} route={}",
            self.id.as_str(),
            self.method,
            self.route_template()
        )?;
        match self.tenant.get() {
            Some(tenant) => write!(f, " tenant={tenant}"),
            None => Ok(()),
        }
    }
}

/// The id of the request being handled, if any.
pub(crate) fn current_id() -> Option<RequestId> {
    CURRENT.try_with(|context| context.id.clone()).ok()
}

/// Runs `f` on the context of the request being handled, if any.
pub(crate) fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Names the tenant of the request being handled, for its later log
/// lines; the first tenant named stays.
pub(crate) fn name_tenant(tenant: &str) {
    let _ = CURRENT.try_with(|context| {
        context.tenant.get_or_init(|| tenant.to_owned());
    });
}

/// Gives the request its id, runs the rest of the stack in its context,
/// logs its answer at debug, and puts the id on the response.
pub(crate) async fn scope(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(RequestId::accepted)
        .unwrap_or_else(RequestId::generate);
    let context = RequestContext {
        id: id.clone(),
        method: request.method().clone(),
        route: request.extensions().get::<MatchedPath>().cloned(),
        tenant: OnceLock::new(),
    };
    let started = std::time::Instant::now();
    let mut response = CURRENT
        .scope(context, async {
            let response = next.run(request).await;
            tracing::debug!(
                status = response.status().as_u16(),
                took_us = started.elapsed().as_micros() as u64,
                "request answered"
            );
            response
        })
        .await;
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

    #[test]
    fn the_context_is_logged_with_its_tenant_once_named() {
        let context = RequestContext {
            id: RequestId("abc".into()),
            method: Method::POST,
            route: None,
            tenant: OnceLock::new(),
        };
        assert_eq!(
            context.to_string(),
            "request_id=abc method=POST route=unmatched"
        );
        context.tenant.set("t1".to_owned()).unwrap();
        let json = serde_json::to_value(&context).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "request_id": "abc", "method": "POST", "route": "unmatched", "tenant": "t1",
            })
        );
    }
}
