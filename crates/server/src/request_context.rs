//! What one request's log lines carry: its id (the caller's `x-request-id`
//! when it is a short printable token, a fresh UUID otherwise), method,
//! route and, once authorization names one, tenant. The id is also
//! returned in the response header and written into error bodies.
//!
//! The context is a task-local, not a tracing span: a span costs the log
//! subscriber a slot, its fields formatted and an enter and exit on every
//! poll, 8-10 µs a request on two cores, for lines most requests never
//! write. The log formatter reads the context only when it writes a line.
//!
//! One hand-written layer sets the context, counts the request in the
//! metrics and logs its answer. Written with `middleware::from_fn`, each of
//! those jobs cost a clone of the inner service and two boxed futures per
//! request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use serde::ser::{Serialize, SerializeMap, Serializer};
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

use crate::metrics::Metrics;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a caller; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The route logged and counted for a request no route matched.
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

/// The route template a request matched, or [`UNMATCHED`]. It shares the
/// router's string, so logging or counting a request allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct Route(Option<MatchedPath>);

impl Route {
    pub(crate) fn as_str(&self) -> &str {
        self.0.as_ref().map_or(UNMATCHED, MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// The fields of one request's log lines. The path is left out: the route
/// template says where it went, and a query may hold a subscribe token.
#[derive(Debug)]
pub(crate) struct RequestContext {
    id: RequestId,
    method: Method,
    route: Route,
    tenant: OnceLock<String>,
}

impl RequestContext {
    pub(crate) fn id(&self) -> &str {
        self.id.as_str()
    }
}

/// As the `span` object of a JSON log line.
impl Serialize for RequestContext {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("request_id", self.id.as_str())?;
        map.serialize_entry("method", self.method.as_str())?;
        map.serialize_entry("route", self.route.as_str())?;
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
            self.route.as_str()
        )?;
        match self.tenant.get() {
            Some(tenant) => write!(f, " tenant={tenant}"),
            None => Ok(()),
        }
    }
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

/// The layer that gives each request its context, counts it in `metrics`,
/// logs its answer at debug and puts its id on the response.
#[derive(Debug, Clone)]
pub(crate) struct RequestScopeLayer {
    metrics: Arc<Metrics>,
}

impl RequestScopeLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RequestScopeLayer {
    type Service = RequestScope<S>;

    fn layer(&self, inner: S) -> RequestScope<S> {
        RequestScope {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service [`RequestScopeLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub(crate) struct RequestScope<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower_service::Service<Request<B>> for RequestScope<S>
where
    S: tower_service::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Answering<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(RequestId::accepted)
            .unwrap_or_else(RequestId::generate);
        let context = RequestContext {
            id,
            method: request.method().clone(),
            route: Route(request.extensions().get::<MatchedPath>().cloned()),
            tenant: OnceLock::new(),
        };
        Answering {
            inner: CURRENT.scope(context, self.inner.call(request)),
            metrics: Arc::clone(&self.metrics),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered in its context.
    pub(crate) struct Answering<F> {
        #[pin]
        inner: TaskLocalFuture<RequestContext, F>,
        metrics: Arc<Metrics>,
        started: Instant,
    }
}

impl<F, E> Future for Answering<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let answered = ready!(this.inner.as_mut().poll(cx));
        let Some(context) = this.inner.take_value() else {
            return Poll::Ready(answered);
        };
        let Ok(mut response) = answered else {
            return Poll::Ready(answered);
        };
        let took = this.started.elapsed();
        let status = response.status().as_u16();
        this.metrics
            .count_request(&context.method, &context.route, status, took);
        let value = HeaderValue::from_str(context.id.as_str()).expect("ids are printable ASCII");
        response.headers_mut().insert(REQUEST_ID, value);
        CURRENT.sync_scope(context, || {
            tracing::debug!(
                status,
                took_us = took.as_micros() as u64,
                "request answered"
            );
        });
        Poll::Ready(Ok(response))
    }
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
            route: Route(None),
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
