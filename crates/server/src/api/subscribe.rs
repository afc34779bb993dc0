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

use acteon_bus::{BusError, GroupId, SubscriptionEvent};
use acteon_core::{Scope, StartPosition, SubscriptionMode, TopicName};
use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Path, Query};
use crate::app::AppState;
use crate::auth::{Subscriber, TokenStream};
use crate::error::{ApiError, ServiceError};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/bus/subscribe/{subscription_id}", get(subscribe))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeQuery {
    topic: String,
    from: Option<String>,
    #[serde(default)]
    mode: SubscriptionMode,
    /// A subscribe token, read by [`Subscriber`].
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

async fn subscribe(
    State(app): State<AppState>,
    Subscriber(caller): Subscriber,
    Path(subscription_id): Path<String>,
    Query(query): Query<SubscribeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let topic: TopicName = query.topic.parse().map_err(ServiceError::from)?;
    let stream = TokenStream::Topic(topic.kafka_topic_name());
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
        .take_until(app.shutdown.clone().cancelled_owned())
        .map(move |event| {
            // The permit is released when the stream is dropped.
            let _open = &permit;
            Ok(to_sse(event))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(app.sse_keep_alive)))
}

fn to_sse(event: Result<SubscriptionEvent, BusError>) -> Event {
    let sse = Event::default();
    let built = match event {
        Ok(SubscriptionEvent::Message(message)) => sse
            .event("bus.message")
            .id(message.offset.to_string())
            .json_data(&*message),
        Ok(SubscriptionEvent::Assigned(partitions)) => sse
            .event("bus.assignment")
            .json_data(json!({ "partitions": partitions })),
        Ok(SubscriptionEvent::Lagged { partition, skipped }) => sse
            .event("bus.lagged")
            .json_data(json!({ "partition": partition, "skipped": skipped })),
        Err(error) => sse
            .event("bus.error")
            .json_data(json!({ "error": error.to_string() })),
    };
    built.expect("bus events serialise to JSON")
}
