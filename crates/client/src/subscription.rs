//! A subscription: the SSE response read as typed events.

use std::pin::Pin;
use std::task::{Context, Poll};

use acteon_core::{BusMessage, SubscriptionEvent};
use eventsource_stream::{Event, Eventsource};
use futures::Stream;
use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;

use crate::Error;

/// The events of one subscription. Keep-alive comments are skipped; the
/// stream ends when the server ends it (topic deleted, shutdown) and yields
/// an error, then ends, if the connection breaks or the server sends
/// `bus.error`. Dropping it closes the connection, and the server's consumer
/// leaves its group.
pub struct Subscription {
    events: BoxStream<'static, Result<SubscriptionEvent, Error>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Assignment {
    partitions: Vec<i32>,
}

#[derive(Deserialize)]
struct Lagged {
    partition: i32,
    skipped: i64,
}

#[derive(Deserialize)]
struct StreamError {
    error: String,
}

impl Subscription {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        let events = response
            .bytes_stream()
            .eventsource()
            .filter_map(|event| async move {
                match event {
                    Ok(event) => decode(event),
                    Err(error) => Some(Err(Error::Stream(error.to_string()))),
                }
            })
            // Nothing follows an error: the server has ended the stream.
            .scan(false, |failed, event| {
                let item = (!*failed).then_some(event);
                if let Some(Err(_)) = &item {
                    *failed = true;
                }
                futures::future::ready(item)
            })
            .boxed();
        Self { events }
    }
}

fn decode(event: Event) -> Option<Result<SubscriptionEvent, Error>> {
    let parsed = match event.event.as_str() {
        "bus.message" => serde_json::from_str::<BusMessage>(&event.data)
            .map(|message| SubscriptionEvent::Message(message.into()))
            .map_err(|error| Error::Decode(format!("bus.message: {error}"))),
        "bus.assignment" => serde_json::from_str::<Assignment>(&event.data)
            .map(|assignment| SubscriptionEvent::Assigned(assignment.partitions))
            .map_err(|error| Error::Decode(format!("bus.assignment: {error}"))),
        "bus.lagged" => serde_json::from_str::<Lagged>(&event.data)
            .map(|lag| SubscriptionEvent::Lagged {
                partition: lag.partition,
                skipped: lag.skipped,
            })
            .map_err(|error| Error::Decode(format!("bus.lagged: {error}"))),
        "bus.error" => Err(Error::Stream(
            serde_json::from_str::<StreamError>(&event.data)
                .map(|body| body.error)
                .unwrap_or(event.data),
        )),
        // Events this client does not know yet are skipped, so servers can
        // add event kinds without breaking older clients.
        _ => return None,
    };
    Some(parsed)
}

impl Stream for Subscription {
    type Item = Result<SubscriptionEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(body: &'static str) -> Subscription {
        Subscription::new(reqwest::Response::from(http_response(body)))
    }

    fn http_response(body: &'static str) -> http::Response<&'static str> {
        http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn keep_alives_are_skipped_and_multi_line_data_is_joined() {
        let body = ": keep-alive\n\n\
            event: bus.assignment\ndata: {\"partitions\":\ndata: [0, 1]}\n\n\
            : keep-alive\n\n\
            event: bus.message\nid: 7\n\
            data: {\"topic\":\"a.b.c\",\"key\":null,\n\
            data: \"payload\":{\"seq\":1},\"headers\":{},\"partition\":0,\n\
            data: \"offset\":7,\"timestamp\":\"2026-01-01T00:00:00Z\"}\n\n";
        let events: Vec<_> = subscription(body).collect().await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(&events[0], Ok(SubscriptionEvent::Assigned(p)) if p == &[0, 1]));
        match &events[1] {
            Ok(SubscriptionEvent::Message(message)) => {
                assert_eq!(message.offset, 7);
                assert_eq!(message.payload, serde_json::json!({ "seq": 1 }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_bus_error_is_the_last_item() {
        let body = "event: bus.error\ndata: {\"error\":\"broker gone\"}\n\n\
            event: bus.assignment\ndata: {\"partitions\":[0]}\n\n";
        let events: Vec<_> = subscription(body).collect().await;
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0], Err(Error::Stream(message)) if message == "broker gone"));
    }

    #[tokio::test]
    async fn a_lag_report_is_an_event() {
        let body = "event: bus.lagged\ndata: {\"partition\":2,\"skipped\":40}\n\n";
        let events: Vec<_> = subscription(body).collect().await;
        assert!(matches!(
            &events[..],
            [Ok(SubscriptionEvent::Lagged {
                partition: 2,
                skipped: 40
            })]
        ));
    }

    #[tokio::test]
    async fn unknown_event_kinds_are_skipped() {
        let body =
            "event: bus.future\ndata: {}\n\nevent: bus.assignment\ndata: {\"partitions\":[]}\n\n";
        let events: Vec<_> = subscription(body).collect().await;
        assert_eq!(events.len(), 1);
    }
}
