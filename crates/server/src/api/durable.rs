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

use acteon_core::Scope;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use chrono::SecondsFormat;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Json, Path, Query};
use crate::app::AppState;
use crate::auth::{Caller, Op, Subscriber, TokenStream};
use crate::durable::{
    DurableSubscriptions, Push, Settled, Settlement, Subscription, SubscriptionFilter,
    SubscriptionRequest, SubscriptionView,
};
use crate::error::{ApiError, ServiceError};

pub(super) fn routes() -> Router<AppState> {
    let one = "/v1/bus/subscriptions/{namespace}/{tenant}/{id}";
    Router::new()
        .route("/v1/bus/subscriptions", get(list).post(create))
        .route(one, get(view).delete(remove))
        .route(&format!("{one}/events"), get(events))
        .route(&format!("{one}/ack"), post(ack))
        .route(&format!("{one}/nack"), post(nack))
        .route(&format!("{one}/reject"), post(reject))
        .route(&format!("{one}/extend"), post(extend))
}

type Named = Path<(String, String, String)>;

/// The tenant a path names. Grants are per namespace and tenant, so the
/// caller's right is checked before the subscription is looked up: a
/// foreign tenant's subscription and a missing one answer alike.
fn tenant_scope(namespace: &str, tenant: &str) -> Result<Scope, ServiceError> {
    Ok(Scope::new(Some(namespace), Some(tenant), None)?)
}

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

/// Only the subscriptions whose topics the caller's grants cover.
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(filter): Query<SubscriptionFilter>,
) -> Result<axum::Json<Vec<Subscription>>, ApiError> {
    let mut subscriptions = app.durable.list(&filter)?;
    subscriptions.retain(|subscription| caller.sees(&subscription.scope()));
    Ok(axum::Json(subscriptions))
}

async fn view(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, tenant, id)): Named,
) -> Result<axum::Json<SubscriptionView>, ApiError> {
    if !caller.sees(&tenant_scope(&namespace, &tenant)?) {
        return Err(ServiceError::Forbidden(Op::Subscribe).into());
    }
    Ok(axum::Json(
        app.durable.view(&namespace, &tenant, &id).await?,
    ))
}

async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, tenant, id)): Named,
) -> Result<StatusCode, ApiError> {
    caller.require(Op::Manage, &tenant_scope(&namespace, &tenant)?)?;
    app.durable.delete(&namespace, &tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn events(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path((namespace, tenant, id)): Named,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = TokenStream::Subscription {
        namespace: namespace.clone(),
        tenant: tenant.clone(),
        id: id.clone(),
    };
    caller.require_stream(&stream, &tenant_scope(&namespace, &tenant)?)?;
    let permit = app.connections.open(&tenant, caller.principal())?;
    let pushes = app.durable.connect(&namespace, &tenant, &id).await?;
    let events = pushes
        .take_until(app.shutdown.clone().cancelled_owned())
        .map(move |push| {
            // The permit is released when the stream is dropped.
            let _open = &permit;
            Ok(to_sse(push))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(app.sse_keep_alive)))
}

fn to_sse(push: Push) -> Event {
    let sse = Event::default();
    let json = |sse: Event, data: serde_json::Value| {
        sse.json_data(data).expect("bus events serialise to JSON")
    };
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
        Push::Lost { records } => json(sse.event("bus.lost"), json!({ "records": records })),
        Push::Ended { reason } => json(sse.event("bus.end"), json!({ "reason": reason })),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ids {
    ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NackRequest {
    ids: Vec<String>,
    delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
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
    (namespace, tenant, id): (String, String, String),
    settlement: Settlement,
    ids: Vec<String>,
) -> Result<axum::Json<Settled>, ApiError> {
    caller.require(Op::Subscribe, &tenant_scope(&namespace, &tenant)?)?;
    let settled = app
        .durable
        .settle(&namespace, &tenant, &id, settlement, ids)
        .await?;
    Ok(axum::Json(settled))
}

async fn ack(
    State(app): State<AppState>,
    caller: Caller,
    Path(named): Named,
    Json(request): Json<Ids>,
) -> Result<axum::Json<Settled>, ApiError> {
    settle(&app, &caller, named, Settlement::Ack, request.ids).await
}

async fn nack(
    State(app): State<AppState>,
    caller: Caller,
    Path(named): Named,
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

async fn reject(
    State(app): State<AppState>,
    caller: Caller,
    Path(named): Named,
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

async fn extend(
    State(app): State<AppState>,
    caller: Caller,
    Path(named): Named,
    Json(request): Json<Ids>,
) -> Result<axum::Json<Settled>, ApiError> {
    settle(&app, &caller, named, Settlement::Extend, request.ids).await
}
