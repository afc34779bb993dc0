//! The HTTP API: one module per resource.

#[cfg(feature = "bus")]
mod audit;
#[cfg(feature = "bus")]
mod durable;
#[cfg(feature = "bus")]
mod extract;
mod health;
mod metrics;
mod openapi;
#[cfg(feature = "bus")]
mod publish;
#[cfg(feature = "bus")]
mod records;
#[cfg(feature = "bus")]
mod rules;
#[cfg(feature = "bus")]
mod schemas;
#[cfg(feature = "bus")]
mod silences;
#[cfg(feature = "bus")]
mod subscribe;
#[cfg(feature = "bus")]
mod tokens;
#[cfg(feature = "bus")]
mod topics;

use std::collections::BTreeMap;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub(crate) use self::health::Readiness;
use crate::app::AppState;
use crate::config::Config;
use crate::error::{ApiError, ErrorBody};

/// The error answers any operation may give, each with an [`ErrorBody`].
pub(crate) struct Refusals;

impl utoipa::IntoResponses for Refusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        [
            ("400", "The request is malformed, or a field is out of bounds; the error names it"),
            ("401", "No API key, an unknown one, or a bad or expired subscribe token"),
            ("403", "The key's grants do not allow this here, a rule denied the publish, or a per-tenant limit is reached"),
            ("404", "No such topic, subscription, silence or endpoint"),
            ("405", "The endpoint does not take this method"),
            ("409", "It exists already, or is in use"),
            ("413", "The body is over its size limit"),
            ("415", "A body that is not `Content-Type: application/json`"),
            ("422", "The idempotency key was used for a different record on this topic"),
            ("429", "Over a quota or a connection limit; `Retry-After` says when to retry"),
            ("502", "The broker refused the operation"),
            ("503", "The broker or the state store is unavailable, or the server is at its limit; `Retry-After` says when to retry"),
        ]
        .into_iter()
        .map(|(status, description)| {
            let content = Content::new(Some(Ref::from_schema_name("ErrorBody")));
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build();
            (status.to_owned(), RefOr::T(response))
        })
        .collect()
    }
}

/// `Authorization: Bearer <key>` on every operation but the health checks,
/// when auth is enabled.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Acteon",
        description = "A multi-tenant event bus for AI agents: publish JSON over HTTP with a \
            receipt, subscribe with Server-Sent Events. With `[auth] enabled`, every operation \
            but `/healthz` and `/readyz` needs `Authorization: Bearer <key>`; the two subscribe \
            streams also take `?token=` from `POST /v1/auth/sse-tokens`. Every answer carries \
            `x-request-id`.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// When a stream opened by `caller` ends: at shutdown, or when the
/// subscribe token that opened it expires.
#[cfg(feature = "bus")]
fn stream_end(app: &AppState, caller: &crate::auth::Caller) -> impl Future<Output = ()> + use<> {
    let shutdown = app.shutdown.clone();
    let expires = caller.expires();
    async move {
        let expiry = async {
            match expires {
                Some(at) => {
                    let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = expiry => {}
        }
    }
}

/// A handler panicked: a JSON 500 instead of a dropped connection.
pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Request {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "internal error".to_owned(),
    }
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::Request {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".to_owned(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::Request {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "method not allowed on this endpoint".to_owned(),
    }
}

/// Every route the configuration enables, and the OpenAPI document that
/// describes exactly those: each route is added with the description of
/// its handler (`routes!`), never on its own.
pub(crate) fn router(config: &Config) -> Router<AppState> {
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(openapi::routes());
    let api = if config.metrics.enabled {
        api.merge(metrics::routes())
    } else {
        api
    };
    #[cfg(feature = "bus")]
    let api = if config.bus.enabled {
        api.merge(topics::routes())
            .merge(publish::routes())
            .merge(records::routes(config))
            .merge(subscribe::routes())
            .merge(durable::routes())
            .merge(rules::routes())
            .merge(silences::routes())
            .merge(schemas::routes())
            .merge(audit::routes())
            .merge(tokens::routes())
    } else {
        api
    };
    let (router, document) = api.split_for_parts();
    let json = document.to_json().expect("the document serialises");
    router
        .layer(axum::Extension(openapi::Document(json.into_bytes().into())))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn sources(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path.display().to_string(), text));
            }
        }
    }

    /// The document lists the routes added with `routes!`; a route added
    /// any other way would be served and not documented.
    #[test]
    fn every_route_is_added_with_its_description() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        // Spelled in pieces, so this test does not find itself.
        let bypasses = [
            [".route", "("].concat(),
            [".route_service", "("].concat(),
            [".nest", "("].concat(),
            [".nest_service", "("].concat(),
            ["axum::routing", "::"].concat(),
        ];
        for (path, text) in &files {
            for bypass in &bypasses {
                assert!(
                    !text.contains(bypass.as_str()),
                    "{path} adds a route with {bypass}; add it with routes!() instead"
                );
            }
        }
    }
}
