//! The client and its builder.

use std::time::Duration;

use acteon_core::{
    DeliveryReceipt, OutgoingMessage, StartPosition, SubscriptionMode, TopicName, TopicRecord,
    TopicSpec,
};
use chrono::{DateTime, Utc};
use reqwest::{RequestBuilder, Response, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Subscription};

/// One record of [`Client::publish_records`].
#[derive(Debug, Clone, Serialize)]
pub struct BatchRecord<'a> {
    #[serde(flatten)]
    pub message: &'a OutgoingMessage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<&'a str>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored by the broker: where.
    Produced(DeliveryReceipt),
    /// Accepted but not produced (202): by this rule or silence.
    Suppressed {
        rule: Option<String>,
        silence: Option<String>,
    },
}

impl PublishOutcome {
    /// The receipt, when the message was produced.
    pub fn receipt(&self) -> Option<&DeliveryReceipt> {
        match self {
            Self::Produced(receipt) => Some(receipt),
            Self::Suppressed { .. } => None,
        }
    }
}

#[derive(Deserialize)]
struct SuppressedBody {
    rule: Option<String>,
    silence: Option<String>,
}

/// Filters of [`Client::list_bus_topics`]; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// An API key; its `Debug` output hides it, so logging a client or a
/// builder does not leak it.
#[derive(Clone)]
struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    idle_timeout: Duration,
    api_key: Option<ApiKey>,
}

impl ClientBuilder {
    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request/response call may take in all (default 30 s).
    /// Subscriptions are long-lived and not bound by it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a subscription may go without receiving a byte before it
    /// fails (default 60 s). The server sends keep-alives every 15 s by
    /// default, so only a dead connection goes this long silent.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// An API key, sent as `Authorization: Bearer <key>`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey(key.into()));
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base_url = reqwest::Url::parse(&self.base_url)
            .ok()
            .filter(|url| !url.cannot_be_a_base())
            .ok_or_else(|| Error::InvalidBaseUrl(self.base_url.clone()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.idle_timeout)
            .build()?;
        Ok(Client {
            http,
            base_url,
            request_timeout: self.request_timeout,
            api_key: self.api_key,
        })
    }
}

/// A client of one Acteon server. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: reqwest::Url,
    request_timeout: Duration,
    api_key: Option<ApiKey>,
}

/// The `error` field of the server's error bodies.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl Client {
    /// A builder for a server at `base_url`, e.g. `http://127.0.0.1:8080`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            api_key: None,
        }
    }

    /// A request to the base URL plus `segments`, each percent-encoded.
    pub(crate) fn request(&self, method: reqwest::Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("the base URL was checked to be a base")
            .pop_if_empty()
            .extend(segments);
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(ApiKey(key)) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a request/response call; errors become [`Error::Api`].
    pub(crate) async fn call(&self, request: RequestBuilder) -> Result<Response, Error> {
        let response = request.timeout(self.request_timeout).send().await?;
        check(response).await
    }

    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, Error> {
        let bytes = self.call(request).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|error| Error::Decode(error.to_string()))
    }

    /// `POST /v1/bus/topics`.
    pub async fn create_bus_topic(&self, spec: &TopicSpec) -> Result<TopicRecord, Error> {
        self.call_json(
            self.request(reqwest::Method::POST, &["v1", "bus", "topics"])
                .json(spec),
        )
        .await
    }

    /// `GET /v1/bus/topics`.
    pub async fn list_bus_topics(&self, filter: &TopicFilter) -> Result<Vec<TopicRecord>, Error> {
        self.call_json(
            self.request(reqwest::Method::GET, &["v1", "bus", "topics"])
                .query(filter),
        )
        .await
    }

    /// `DELETE /v1/bus/topics/{kafka_name}`.
    pub async fn delete_bus_topic(&self, topic: &TopicName) -> Result<(), Error> {
        let kafka_name = topic.to_string();
        let segments = ["v1", "bus", "topics", kafka_name.as_str()];
        self.call(self.request(reqwest::Method::DELETE, &segments))
            .await
            .map(drop)
    }

    /// `POST /v1/bus/publish`: the broker's receipt, or which rule or
    /// silence suppressed the message.
    pub async fn publish_message(
        &self,
        topic: &TopicName,
        message: &OutgoingMessage,
    ) -> Result<PublishOutcome, Error> {
        let (outcome, _) = self.publish_with(topic, message, None).await?;
        Ok(outcome)
    }

    /// [`publish_message`](Self::publish_message) with an idempotency key
    /// (1 to 255 printable ASCII characters): a repeat within the server's
    /// window, to the same topic, gets the first outcome and produces
    /// nothing; the `bool` says whether this was such a repeat. The same
    /// key with another record is a 422.
    pub async fn publish_idempotent(
        &self,
        topic: &TopicName,
        message: &OutgoingMessage,
        idempotency_key: &str,
    ) -> Result<(PublishOutcome, bool), Error> {
        self.publish_with(topic, message, Some(idempotency_key))
            .await
    }

    async fn publish_with(
        &self,
        topic: &TopicName,
        message: &OutgoingMessage,
        idempotency_key: Option<&str>,
    ) -> Result<(PublishOutcome, bool), Error> {
        #[derive(Serialize)]
        struct Publish<'a> {
            topic: &'a TopicName,
            #[serde(flatten)]
            message: &'a OutgoingMessage,
        }
        let body = Publish { topic, message };
        let mut request = self
            .request(reqwest::Method::POST, &["v1", "bus", "publish"])
            .json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = self.call(request).await?;
        let suppressed = response.status() == reqwest::StatusCode::ACCEPTED;
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|value| value == "true");
        let bytes = response.bytes().await?;
        let decoded = if suppressed {
            serde_json::from_slice::<SuppressedBody>(&bytes).map(|body| {
                PublishOutcome::Suppressed {
                    rule: body.rule,
                    silence: body.silence,
                }
            })
        } else {
            serde_json::from_slice(&bytes).map(PublishOutcome::Produced)
        };
        let outcome = decoded.map_err(|error| Error::Decode(error.to_string()))?;
        Ok((outcome, replayed))
    }

    /// `POST /v1/bus/topics/{kafka_name}/records`: publishes `messages` in
    /// one request, each through the pipeline as [`publish_message`]
    /// would. The outer error is the batch's (bad topic, no grant, too many
    /// records); each record then has its own outcome, in order: a record
    /// the server stopped is an [`Error::Api`] with the status and reason a
    /// single publish would have got.
    ///
    /// [`publish_message`]: Self::publish_message
    pub async fn publish_batch(
        &self,
        topic: &TopicName,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<PublishOutcome, Error>>, Error> {
        let records: Vec<BatchRecord<'_>> = messages
            .iter()
            .map(|message| BatchRecord {
                message,
                idempotency_key: None,
            })
            .collect();
        self.publish_records(topic, &records).await
    }

    /// [`publish_batch`](Self::publish_batch) with an idempotency key per
    /// record where one is given: a keyed record repeated within the
    /// server's window gets its first outcome again.
    pub async fn publish_records(
        &self,
        topic: &TopicName,
        records: &[BatchRecord<'_>],
    ) -> Result<Vec<Result<PublishOutcome, Error>>, Error> {
        #[derive(Serialize)]
        struct Batch<'a> {
            records: &'a [BatchRecord<'a>],
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum RecordResult {
            Produced {
                partition: i32,
                offset: i64,
                produced_at: DateTime<Utc>,
            },
            Stopped {
                status: u16,
                error: String,
                rule: Option<String>,
                silence: Option<String>,
                retry_after_ms: Option<u64>,
            },
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<RecordResult>,
        }
        let kafka_name = topic.kafka_topic_name().to_owned();
        let path = ["v1", "bus", "topics", kafka_name.as_str(), "records"];
        let request = self
            .request(reqwest::Method::POST, &path)
            .json(&Batch { records });
        let answer: Answer = self.call_json(request).await?;
        if answer.results.len() != records.len() {
            return Err(Error::Decode(format!(
                "{} results for {} records",
                answer.results.len(),
                records.len()
            )));
        }
        let outcomes = answer.results.into_iter().map(|result| match result {
            RecordResult::Produced {
                partition,
                offset,
                produced_at,
            } => Ok(PublishOutcome::Produced(DeliveryReceipt {
                topic: kafka_name.clone(),
                partition,
                offset,
                produced_at,
            })),
            RecordResult::Stopped {
                status: 202,
                rule,
                silence,
                ..
            } => Ok(PublishOutcome::Suppressed { rule, silence }),
            RecordResult::Stopped {
                status,
                error,
                retry_after_ms,
                ..
            } => Err(Error::Api {
                status,
                message: error,
                retry_after: retry_after_ms.map(Duration::from_millis),
            }),
        });
        Ok(outcomes.collect())
    }

    /// `GET /v1/bus/subscribe/{subscription_id}`: the events of a shared
    /// subscription until the server ends the stream.
    pub async fn subscribe(
        &self,
        subscription_id: &str,
        topic: &TopicName,
        from: StartPosition,
    ) -> Result<Subscription, Error> {
        self.subscribe_in_mode(subscription_id, topic, from, SubscriptionMode::Shared)
            .await
    }

    /// `GET /v1/bus/subscribe/{subscription_id}?mode=`: `broadcast` gets
    /// every record from `from`, whatever else reads the topic.
    pub async fn subscribe_in_mode(
        &self,
        subscription_id: &str,
        topic: &TopicName,
        from: StartPosition,
        mode: SubscriptionMode,
    ) -> Result<Subscription, Error> {
        let topic = topic.to_string();
        let from = from.to_string();
        let request = self
            .request(
                reqwest::Method::GET,
                &["v1", "bus", "subscribe", subscription_id],
            )
            .query(&[
                ("topic", topic.as_str()),
                ("from", from.as_str()),
                ("mode", mode.as_str()),
            ])
            .header(header::ACCEPT, "text/event-stream");
        let response = check(request.send().await?).await?;
        Ok(Subscription::new(response))
    }
}

/// Turns an error status into [`Error::Api`] with the server's message.
pub(crate) async fn check(response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|body| body.error)
        .unwrap_or(text);
    Err(Error::Api {
        status: status.as_u16(),
        message,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_api_key() {
        let builder = Client::builder("http://127.0.0.1:1").api_key("s3cret-key");
        assert!(!format!("{builder:?}").contains("s3cret-key"));
        let client = builder.build().unwrap();
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("s3cret-key") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
