//! `GET /v1/bus/subscribe/{subscription_id}?topic=&from=&mode=`: records
//! as Server-Sent Events.
//!
//! `mode=shared` (the default): connections with one id share the topic's
//! partitions as a consumer group. `mode=broadcast`: every connection gets
//! every record from `from`, in no group; the id only names the connection.
//!
//! Events: `bus.message` (id = offset, data = the record),
//! `bus.assignment` (data = `{"partitions": [...]}`, after the subscription's
//! group assigns it partitions, so a client knows from when records reach
//! it), and `bus.error` (data = `{"error": ...}`, the last event of a stream
//! that failed). The stream ends when the topic is deleted or the server
//! shuts down. `bus.lagged` (data = `{"partition", "skipped"}`) says that
//! retention removed records before this subscriber read them.

use std::convert::Infallible;
use std::sync::Arc;

use acteon_bus::{BusError, GroupId, SubscriptionEvent};
use acteon_core::{BusMessage, Scope, StartPosition, SubscriptionMode, TopicName};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Refusals;
use super::extract::{Path, Query};
use crate::app::AppState;
use crate::auth::{Subscriber, TokenStream};
use crate::error::{ApiError, ServiceError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(subscribe))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SubscribeQuery {
    /// The topic's Kafka name.
    #[param(value_type = acteon_core::TopicName)]
    topic: String,
    /// Where a partition without a stored position starts (default `latest`).
    #[param(value_type = Option<StartPosition>)]
    from: Option<String>,
    #[serde(default)]
    #[param(inline)]
    mode: SubscriptionMode,
    /// A subscribe token (`POST /v1/auth/sse-tokens`), read by
    /// [`Subscriber`], when no `Authorization` header is sent.
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

/// The data of a `bus.assignment` event.
#[derive(Debug, Serialize, ToSchema)]
struct Assignment {
    partitions: Vec<i32>,
}

/// The data of a `bus.lagged` event.
#[derive(Debug, Serialize, ToSchema)]
struct Lagged {
    partition: i32,
    /// Records this stream never got.
    skipped: i64,
}

/// The data of a `bus.error` event, a failed stream's last.
#[derive(Debug, Serialize, ToSchema)]
struct StreamError {
    error: String,
}

/// Each event's `data`, by event name.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum StreamEvent<'a> {
    /// `bus.message`: one record; the event id is its offset.
    Message(&'a BusMessage),
    /// `bus.assignment`
    Assignment(Assignment),
    /// `bus.lagged`
    Lagged(Lagged),
    /// `bus.error`
    Error(StreamError),
}

/// Records of a topic as Server-Sent Events.
///
/// Events: `bus.message` (a record; id = its offset), `bus.assignment` (the
/// partitions this connection reads from now on), `bus.lagged` (records
/// retention removed, or a broadcast stream fell behind), `bus.error` (the
/// last event of a failed stream). The stream ends when the topic is
/// deleted or the server stops.
#[utoipa::path(
    get,
    path = "/v1/bus/subscribe/{subscription_id}",
    tag = "subscribe",
    params(
        ("subscription_id" = String, Path,
            description = "Shared: connections with one id share the partitions. Broadcast: names the connection."),
        SubscribeQuery,
    ),
    responses(
        (status = 200, description = "The event stream; each event's data is a StreamEvent",
            content_type = "text/event-stream", body = StreamEvent<'static>),
        Refusals,
    ),
)]
async fn subscribe(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path(subscription_id): Path<String>,
    Query(query): Query<SubscribeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let topic: TopicName = query.topic.parse().map_err(ServiceError::from)?;
    let stream = TokenStream::Topic {
        topic: topic.kafka_topic_name().to_owned(),
        subscription_id: subscription_id.clone(),
    };
    caller.require_stream(&stream, &Scope::topic(&topic))?;
    let start: StartPosition = match query.from.as_deref() {
        Some(from) => from.parse().map_err(ServiceError::from)?,
        None => StartPosition::default(),
    };
    let group = GroupId::parse(&subscription_id).map_err(ServiceError::from)?;
    let permit = app.connections.open(topic.tenant(), caller.principal())?;
    let events = app
        .messages
        .subscribe(&topic, &group, start, query.mode)
        .await?;
    let events = events
        .take_until(super::stream_end(&app, &caller))
        .map(move |event| {
            // The permit is released when the stream is dropped.
            let _open = &permit;
            Ok(to_sse(event))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(app.sse_keep_alive)))
}

fn to_sse(event: Result<SubscriptionEvent, BusError>) -> Event {
    let sse = Event::default();
    let message: Arc<BusMessage>;
    let (sse, data) = match event {
        Ok(SubscriptionEvent::Message(record)) => {
            message = record;
            (
                sse.event("bus.message").id(message.offset.to_string()),
                StreamEvent::Message(&message),
            )
        }
        Ok(SubscriptionEvent::Assigned(partitions)) => (
            sse.event("bus.assignment"),
            StreamEvent::Assignment(Assignment { partitions }),
        ),
        Ok(SubscriptionEvent::Lagged { partition, skipped }) => (
            sse.event("bus.lagged"),
            StreamEvent::Lagged(Lagged { partition, skipped }),
        ),
        Err(error) => (
            sse.event("bus.error"),
            StreamEvent::Error(StreamError {
                error: error.to_string(),
            }),
        ),
    };
    sse.json_data(data).expect("bus events serialise to JSON")
}
