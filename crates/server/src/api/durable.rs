//! Durable subscriptions: `POST|GET /v1/bus/subscriptions`,
//! `GET|DELETE /v1/bus/subscriptions/{namespace}/{tenant}/{id}`, its SSE
//! stream `.../events`, and the settlements `.../ack`, `nack`, `reject`,
//! `extend`.
//!
//! Events: `bus.message` (id = the delivery id, data = the record plus
//! `delivery: {id, attempt, deadline}`), `bus.lost` (data = `{"records"}`,
//! unsettled records retention removed), `bus.end` (data =
//! `{"reason"}`, the last event when the subscription is deleted, its topic
//! deleted or the server stops).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use acteon_core::{BusMessage, Scope};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::SecondsFormat;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::{Json, Path, Query};
use crate::app::AppState;
use crate::auth::{Caller, Op, Subscriber, TokenStream};
use crate::durable::{
    DurableSubscriptions, Push, Settled, Settlement, Subscription, SubscriptionFilter,
    SubscriptionRequest, SubscriptionView,
};
use crate::error::{ApiError, ServiceError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(view, remove))
        .routes(routes!(events))
        .routes(routes!(ack))
        .routes(routes!(nack))
        .routes(routes!(reject))
        .routes(routes!(extend))
}

/// A durable subscription by name: the path of its routes, and what a
/// subscribe token for it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Path)]
pub(super) struct Named {
    #[param(value_type = acteon_core::Fragment)]
    pub(super) namespace: String,
    #[param(value_type = acteon_core::Fragment)]
    pub(super) tenant: String,
    /// The subscription's id, unique in its tenant.
    #[param(value_type = acteon_core::Fragment)]
    pub(super) id: String,
}

impl Named {
    /// The stream a subscribe token for this subscription opens.
    pub(super) fn stream(&self) -> TokenStream {
        TokenStream::Subscription {
            namespace: self.namespace.clone(),
            tenant: self.tenant.clone(),
            id: self.id.clone(),
        }
    }
}

/// The tenant a path names. Grants are per namespace and tenant, so the
/// caller's right is checked before the subscription is looked up: a
/// foreign tenant's subscription and a missing one answer alike.
pub(super) fn tenant_scope(namespace: &str, tenant: &str) -> Result<Scope, ServiceError> {
    Ok(Scope::new(Some(namespace), Some(tenant), None)?)
}

/// Creates a durable subscription: at-least-once delivery with a deadline
/// per record, settled one by one.
#[utoipa::path(
    post,
    path = "/v1/bus/subscriptions",
    tag = "durable subscriptions",
    request_body = SubscriptionRequest,
    responses((status = 201, description = "Created", body = Subscription), Refusals),
)]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(request): Json<SubscriptionRequest>,
) -> Result<(StatusCode, axum::Json<Subscription>), ApiError> {
    caller.require(
        Op::Manage,
        &DurableSubscriptions::requested_scope(&request)?,
    )?;
    let subscription = app.durable.create(request).await?;
    Ok((StatusCode::CREATED, axum::Json(subscription)))
}

/// The durable subscriptions whose topics the caller's grants cover.
#[utoipa::path(
    get,
    path = "/v1/bus/subscriptions",
    tag = "durable subscriptions",
    params(SubscriptionFilter),
    responses((status = 200, body = Vec<Subscription>), Refusals),
)]
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(filter): Query<SubscriptionFilter>,
) -> Result<axum::Json<Vec<Subscription>>, ApiError> {
    let mut subscriptions = app.durable.list(&filter)?;
    subscriptions.retain(|subscription| caller.sees(&subscription.scope()));
    Ok(axum::Json(subscriptions))
}

/// A durable subscription with its live figures.
#[utoipa::path(
    get,
    path = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}",
    tag = "durable subscriptions",
    params(Named),
    responses((status = 200, body = SubscriptionView), Refusals),
)]
async fn view(
    State(app): State<AppState>,
    caller: Caller,
    Path(Named {
        namespace,
        tenant,
        id,
    }): Path<Named>,
) -> Result<axum::Json<SubscriptionView>, ApiError> {
    if !caller.sees(&tenant_scope(&namespace, &tenant)?) {
        return Err(ServiceError::Forbidden(Op::Subscribe).into());
    }
    Ok(axum::Json(
        app.durable.view(&namespace, &tenant, &id).await?,
    ))
}

/// Ends its connections and deletes it, its progress and its Kafka group.
#[utoipa::path(
    delete,
    path = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}",
    tag = "durable subscriptions",
    params(Named),
    responses((status = 204, description = "Deleted"), Refusals),
)]
async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(Named {
        namespace,
        tenant,
        id,
    }): Path<Named>,
) -> Result<StatusCode, ApiError> {
    caller.require(Op::Manage, &tenant_scope(&namespace, &tenant)?)?;
    app.durable.delete(&namespace, &tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deliveries as Server-Sent Events.
///
/// Events: `bus.message` (a record with `delivery: {id, attempt,
/// deadline}`; the event id is the delivery id), `bus.lost` (unsettled
/// records retention removed), `bus.end` (the last event: the subscription
/// or its topic was deleted, or the server stops).
#[utoipa::path(
    get,
    path = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}/events",
    tag = "durable subscriptions",
    params(
        Named,
        ("token" = Option<String>, Query,
            description = "A subscribe token, when no Authorization header is sent"),
    ),
    responses(
        (status = 200, description = "The event stream; each event's data is a DurableEvent",
            content_type = "text/event-stream", body = DurableEvent),
        Refusals,
    ),
)]
async fn events(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path(named): Path<Named>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require_stream(
        &named.stream(),
        &tenant_scope(&named.namespace, &named.tenant)?,
    )?;
    let Named {
        namespace,
        tenant,
        id,
    } = named;
    let permit = app.connections.open(&tenant, caller.principal())?;
    let pushes = app.durable.connect(&namespace, &tenant, &id).await?;
    let events = pushes
        .take_until(super::stream_end(&app, &caller))
        .map(move |push| {
            // The permit is released when the stream is dropped.
            let _open = &permit;
            Ok(to_sse(push))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(app.sse_keep_alive)))
}

/// The data of the events that are not deliveries; a delivery's data is
/// written as it is held (see [`to_sse`]), and described in the document by
/// [`delivery_schema`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum DurableEvent {
    /// `bus.lost`: unsettled records retention removed.
    Lost { records: u64 },
    /// `bus.end`: why the stream ended.
    Ended { reason: String },
}

/// A `bus.message` event's data: the record and its delivery.
fn delivery_schema() -> Schema {
    let delivery = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("Settle the record with this id")),
        )
        .property("attempt", ObjectBuilder::new().schema_type(Type::Integer))
        .property(
            "deadline",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("RFC 3339; redelivered if not settled by then")),
        )
        .required("id")
        .required("attempt")
        .required("deadline");
    let with_delivery = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("delivery", delivery)
        .required("delivery");
    Schema::AllOf(
        AllOfBuilder::new()
            .item(Ref::from_schema_name("BusMessage"))
            .item(with_delivery)
            .build(),
    )
}

impl PartialSchema for DurableEvent {
    fn schema() -> RefOr<Schema> {
        let lost = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("bus.lost"))
            .property("records", ObjectBuilder::new().schema_type(Type::Integer))
            .required("records");
        let ended = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("bus.end"))
            .property("reason", ObjectBuilder::new().schema_type(Type::String))
            .required("reason");
        let events = OneOfBuilder::new()
            .item(delivery_schema())
            .item(lost)
            .item(ended)
            .description(Some("Each event's data: bus.message, bus.lost or bus.end"))
            .build();
        RefOr::T(Schema::OneOf(events))
    }
}

impl ToSchema for DurableEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((BusMessage::name().into(), BusMessage::schema()));
        <BusMessage as ToSchema>::schemas(schemas);
    }
}

fn to_sse(push: Push) -> Event {
    let sse = Event::default();
    let json =
        |sse: Event, data: DurableEvent| sse.json_data(data).expect("bus events serialise to JSON");
    match push {
        Push::Delivery {
            record,
            id,
            attempt,
            deadline,
        } => {
            // The held JSON object, with `delivery` added before its end.
            // Delivery ids and RFC 3339 times need no escaping.
            let object = record.json.strip_suffix('}').unwrap_or("{");
            let deadline = deadline.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            let mut data = String::with_capacity(object.len() + 40 + id.len() + deadline.len());
            data.push_str(object);
            let _ = write!(
                data,
                r#","delivery":{{"id":"{id}","attempt":{attempt},"deadline":"{deadline}"}}}}"#
            );
            sse.event("bus.message").id(id).data(data)
        }
        Push::Lost { records } => json(sse.event("bus.lost"), DurableEvent::Lost { records }),
        Push::Ended { reason } => json(sse.event("bus.end"), DurableEvent::Ended { reason }),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Ids {
    ids: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NackRequest {
    ids: Vec<String>,
    delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RejectRequest {
    ids: Vec<String>,
    reason: String,
}

/// The longest nack delay: a day.
const MAX_NACK_DELAY_MS: u64 = 86_400_000;

/// The longest reject reason, in bytes.
const MAX_REASON_BYTES: usize = 1_024;

async fn settle(
    app: &AppState,
    caller: &Caller,
    named: Named,
    settlement: Settlement,
    ids: Vec<String>,
) -> Result<axum::Json<Settled>, ApiError> {
    let scope = tenant_scope(&named.namespace, &named.tenant)?;
    caller.require_stream(&named.stream(), &scope)?;
    let settled = app
        .durable
        .settle(&named.namespace, &named.tenant, &named.id, settlement, ids)
        .await?;
    Ok(axum::Json(settled))
}

/// Settles deliveries as done.
#[utoipa::path(
    post,
    path = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}/ack",
    tag = "durable subscriptions",
    params(
        Named,
        ("token" = Option<String>, Query,
            description = "This subscription's subscribe token, when no Authorization header is sent"),
    ),
    request_body = Ids,
    responses(
        (status = 200, description = "Which ids were settled and which were stale", body = Settled),
        Refusals,
    ),
)]
async fn ack(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path(named): Path<Named>,
    Json(request): Json<Ids>,
) -> Result<axum::Json<Settled>, ApiError> {
    settle(&app, &caller, named, Settlement::Ack, request.ids).await
}

/// Asks for redelivery, after `delay_ms` or the backoff.
#[utoipa::path(
    post,
    path = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}/nack",
    tag = "durable subscriptions",
    params(
        Named,
        ("token" = Option<String>, Query,
            description = "This subscription's subscribe token, when no Authorization header is sent"),
    ),
    request_body = NackRequest,
    responses(
        (status = 200, description = "Which ids were settled and which were stale", body = Settled),
        Refusals,
    ),
)]
async fn nack(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path(named): Path<Named>,
    Json(request): Json<NackRequest>,
) -> Result<axum::Json<Settled>, ApiError> {
    if request.delay_ms.is_some_and(|ms| ms > MAX_NACK_DELAY_MS) {
        return Err(ApiError::bad_request(format!(
            "delay_ms: at most {MAX_NACK_DELAY_MS}"
        )));
    }
    let delay = request.delay_ms.map(Duration::from_millis);
    settle(
        &app,
        &caller,
        named,
        Settlement::Nack { delay },
        request.ids,
    )
    .await
}

/// Moves records to the dead-letter topic at once.
#[utoipa::path(
    post,
    path = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}/reject",
    tag = "durable subscriptions",
    params(
        Named,
        ("token" = Option<String>, Query,
            description = "This subscription's subscribe token, when no Authorization header is sent"),
    ),
    request_body = RejectRequest,
    responses(
        (status = 200, description = "Which ids were settled and which were stale", body = Settled),
        Refusals,
    ),
)]
async fn reject(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path(named): Path<Named>,
    Json(request): Json<RejectRequest>,
) -> Result<axum::Json<Settled>, ApiError> {
    if request.reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(format!(
            "reason: at most {MAX_REASON_BYTES} bytes"
        )));
    }
    let settlement = Settlement::Reject {
        reason: request.reason,
    };
    settle(&app, &caller, named, settlement, request.ids).await
}

/// Pushes the deadlines back by `ack_deadline_ms`.
#[utoipa::path(
    post,
    path = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}/extend",
    tag = "durable subscriptions",
    params(
        Named,
        ("token" = Option<String>, Query,
            description = "This subscription's subscribe token, when no Authorization header is sent"),
    ),
    request_body = Ids,
    responses(
        (status = 200, description = "Which ids were settled and which were stale", body = Settled),
        Refusals,
    ),
)]
async fn extend(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path(named): Path<Named>,
    Json(request): Json<Ids>,
) -> Result<axum::Json<Settled>, ApiError> {
    settle(&app, &caller, named, Settlement::Extend, request.ids).await
}
