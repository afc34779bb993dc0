//! The client against a real server on a free loopback port, built with the
//! same builder as the `acteon-server` binary.

use std::sync::Arc;
use std::time::Duration;

use acteon_client::{
    AuditOutcome, AuditQuery, Client, Error, PublishOutcome, SilenceSpec, TopicFilter,
};
use acteon_core::{
    Headers, OutgoingMessage, StartPosition, SubscriptionEvent, TopicName, TopicSpec,
};
use acteon_server::config::StateEngine;
use acteon_server::pipeline::RuleConfig;
use acteon_server::{Config, Server};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// An in-process server on the memory backends; stopped when dropped.
struct TestServer {
    client: Client,
    stop: CancellationToken,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    async fn start_with(mut config: Config) -> Self {
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.state.engine = StateEngine::Memory;
        let server = Server::build(config).await.expect("server");
        let listener = server.bind().await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let stop = server.shutdown_token();
        tokio::spawn(server.serve(listener));
        let client = Client::builder(base_url).build().expect("client");
        Self { client, stop }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn spec(tenant: &str, name: &str) -> TopicSpec {
    TopicSpec {
        namespace: "agents".into(),
        tenant: tenant.into(),
        name: name.into(),
        partitions: 2,
        replication_factor: 1,
        retention_ms: None,
        schema: None,
    }
}

fn message(seq: u64) -> OutgoingMessage {
    OutgoingMessage {
        key: Some(format!("key-{seq}")),
        payload: json!({ "seq": seq }),
        headers: Headers::from([("x-trace-id".to_owned(), format!("t-{seq}"))]),
    }
}

/// The next record, skipping assignment and lag events.
async fn next_message(
    events: &mut acteon_client::Subscription,
) -> Option<Result<acteon_core::BusMessage, Error>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .ok()??
        {
            Ok(SubscriptionEvent::Message(message)) => {
                return Some(Ok(Arc::unwrap_or_clone(message)));
            }
            Ok(SubscriptionEvent::Assigned(_) | SubscriptionEvent::Lagged { .. }) => continue,
            Err(error) => return Some(Err(error)),
        }
    }
}

#[tokio::test]
async fn topics_are_created_listed_and_deleted() {
    let server = TestServer::start().await;
    let client = &server.client;
    let created = client
        .create_bus_topic(&spec("demo", "inbox"))
        .await
        .unwrap();
    assert_eq!(created.topic.kafka_topic_name(), "agents.demo.inbox");
    client
        .create_bus_topic(&spec("other", "inbox"))
        .await
        .unwrap();

    let duplicate = client
        .create_bus_topic(&spec("demo", "inbox"))
        .await
        .unwrap_err();
    assert_eq!(duplicate.status(), Some(409), "{duplicate}");
    assert!(
        duplicate.to_string().contains("agents.demo.inbox"),
        "{duplicate}"
    );

    let filter = TopicFilter {
        tenant: Some("demo".into()),
        ..TopicFilter::default()
    };
    let listed = client.list_bus_topics(&filter).await.unwrap();
    assert_eq!(listed, vec![created.clone()]);

    client.delete_bus_topic(created.topic.name()).await.unwrap();
    let missing = client
        .delete_bus_topic(created.topic.name())
        .await
        .unwrap_err();
    assert!(
        matches!(missing, Error::Api { status: 404, .. }),
        "{missing}"
    );
}

#[tokio::test]
async fn published_messages_arrive_on_the_subscription() {
    let server = TestServer::start().await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "feed"))
        .await
        .unwrap();
    let name = topic.topic.name();
    let outcome = client.publish_message(name, &message(1)).await.unwrap();
    let receipt = outcome.receipt().expect("produced").clone();
    assert_eq!(receipt.topic, "agents.demo.feed");

    let mut events = client
        .subscribe("reader", name, StartPosition::Earliest)
        .await
        .unwrap();
    let received = next_message(&mut events).await.expect("a record").unwrap();
    assert_eq!(received.payload, json!({ "seq": 1 }));
    assert_eq!(received.headers["x-trace-id"], "t-1");
    assert_eq!(
        (received.partition, received.offset),
        (receipt.partition, receipt.offset)
    );
}

#[tokio::test]
async fn api_errors_carry_the_status_and_the_servers_reason() {
    let server = TestServer::start().await;
    let client = &server.client;
    let unknown = TopicName::new("agents", "demo", "nowhere").unwrap();
    let error = client
        .publish_message(&unknown, &message(1))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert!(!error.is_retriable());

    let topic = client
        .create_bus_topic(&spec("demo", "strict"))
        .await
        .unwrap();
    let mut reserved = message(1);
    reserved.headers.insert("acteon.origin".into(), "me".into());
    match client
        .publish_message(topic.topic.name(), &reserved)
        .await
        .unwrap_err()
    {
        Error::Api {
            status: 400,
            message,
            ..
        } => assert!(message.contains("acteon."), "{message}"),
        other => panic!("{other}"),
    }
    let subscribe = client
        .subscribe("x", &unknown, StartPosition::Latest)
        .await
        .unwrap_err();
    assert_eq!(subscribe.status(), Some(404));
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let error = client
        .list_bus_topics(&TopicFilter::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error}");
    assert!(error.is_retriable());
}

#[tokio::test]
async fn the_stream_ends_when_the_server_ends_it() {
    let server = TestServer::start().await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "short-lived"))
        .await
        .unwrap();
    let mut events = client
        .subscribe("reader", topic.topic.name(), StartPosition::Latest)
        .await
        .unwrap();
    assert!(matches!(
        events.next().await,
        Some(Ok(SubscriptionEvent::Assigned(_)))
    ));
    client.delete_bus_topic(topic.topic.name()).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

/// Idle subscriptions see only keep-alive comments (every 15 s by default)
/// for long stretches; the client must not end or fail them.
#[tokio::test]
async fn a_subscription_survives_a_minute_of_keep_alives() {
    let server = TestServer::start().await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "quiet"))
        .await
        .unwrap();
    let name = topic.topic.name();
    let mut events = client
        .subscribe("patient", name, StartPosition::Latest)
        .await
        .unwrap();
    assert!(matches!(
        events.next().await,
        Some(Ok(SubscriptionEvent::Assigned(_)))
    ));

    let idle = tokio::time::timeout(Duration::from_secs(65), events.next()).await;
    assert!(
        idle.is_err(),
        "nothing but keep-alives for 65 s, got {idle:?}"
    );
    client.publish_message(name, &message(9)).await.unwrap();
    let received = next_message(&mut events)
        .await
        .expect("the stream is alive")
        .unwrap();
    assert_eq!(received.payload, json!({ "seq": 9 }));
}

#[tokio::test]
async fn a_suppressed_publish_says_by_which_rule() {
    let config = Config {
        rules: vec![RuleConfig {
            name: "quiet-heartbeats".into(),
            priority: 1,
            condition: "payload.kind == \"heartbeat\"".into(),
            action: "suppress".into(),
            reason: None,
            tenant: None,
            namespace: None,
            topic: None,
        }],
        ..Config::default()
    };
    let server = TestServer::start_with(config).await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "beats"))
        .await
        .unwrap();
    let heartbeat = OutgoingMessage {
        key: None,
        payload: json!({ "kind": "heartbeat" }),
        headers: Headers::new(),
    };
    let outcome = client
        .publish_message(topic.topic.name(), &heartbeat)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        PublishOutcome::Suppressed {
            rule: Some("quiet-heartbeats".into()),
            silence: None
        }
    );
}

fn rule(name: &str, priority: i64, action: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        priority,
        condition: "payload.kind == \"noise\"".into(),
        action: action.into(),
        reason: None,
        tenant: Some("demo".into()),
        namespace: None,
        topic: None,
    }
}

#[tokio::test]
async fn silences_are_created_listed_and_ended() {
    let server = TestServer::start().await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "alerts"))
        .await
        .unwrap();
    let silence = client
        .create_silence(&SilenceSpec {
            tenant: "demo".into(),
            topic: Some("alerts".into()),
            duration_ms: Some(60_000),
            comment: "maintenance".into(),
            ..SilenceSpec::default()
        })
        .await
        .unwrap();
    assert_eq!(silence.comment, "maintenance");
    assert!(silence.ends_at > silence.starts_at);
    assert_eq!(
        client.list_silences(false).await.unwrap(),
        vec![silence.clone()]
    );

    let outcome = client
        .publish_message(topic.topic.name(), &message(1))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        PublishOutcome::Suppressed {
            rule: None,
            silence: Some(silence.id.clone())
        }
    );

    client.end_silence(&silence.id).await.unwrap();
    assert!(client.list_silences(false).await.unwrap().is_empty());
    let all = client.list_silences(true).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].ends_at <= chrono::Utc::now());
    let again = client.end_silence(&silence.id).await.unwrap_err();
    assert_eq!(again.status(), Some(404), "{again}");

    let invalid = client
        .create_silence(&SilenceSpec {
            tenant: "demo".into(),
            comment: "no end".into(),
            ..SilenceSpec::default()
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.status(), Some(400), "{invalid}");
}

#[tokio::test]
async fn rules_are_listed_in_evaluation_order() {
    let config = Config {
        rules: vec![rule("second", 20, "deny"), rule("first", 10, "suppress")],
        ..Config::default()
    };
    let server = TestServer::start_with(config).await;
    let rules = server.client.list_rules().await.unwrap();
    let names: Vec<&str> = rules.iter().map(|rule| rule.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(rules[0].action, "suppress");
    assert_eq!(rules[0].tenant.as_deref(), Some("demo"));
}

#[tokio::test]
async fn audit_records_come_newest_first_a_page_at_a_time() {
    let mut config = Config {
        rules: vec![rule("drop-noise", 1, "suppress")],
        ..Config::default()
    };
    config.audit.flush_interval_ms = 10;
    let server = TestServer::start_with(config).await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "trail"))
        .await
        .unwrap();
    let name = topic.topic.name();
    for seq in 1..=3 {
        client.publish_message(name, &message(seq)).await.unwrap();
    }
    let noise = OutgoingMessage {
        key: None,
        payload: json!({ "kind": "noise" }),
        headers: Headers::new(),
    };
    client.publish_message(name, &noise).await.unwrap();

    // The audit writer stores records in batches, shortly after the publish.
    let query = AuditQuery {
        topic: Some(name.to_string()),
        ..AuditQuery::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = client.query_audit(&query).await.unwrap();
        if page.records.len() == 4 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit records never written: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(page.next_before.is_none(), "{page:?}");
    let ids: Vec<u64> = page.records.iter().map(|record| record.id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "{ids:?}");
    assert_eq!(page.records[0].outcome, AuditOutcome::Suppressed);
    assert_eq!(page.records[0].rule.as_deref(), Some("drop-noise"));
    assert_eq!(page.records[1].key.as_deref(), Some("key-3"));
    assert!(page.records[1].offset.is_some());

    let first = client
        .query_audit(&AuditQuery {
            limit: Some(3),
            outcome: Some(AuditOutcome::Produced),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(first.records.len(), 3);
    assert_eq!(first.next_before, Some(first.records[2].id));
    let rest = client
        .query_audit(&AuditQuery {
            limit: Some(3),
            outcome: Some(AuditOutcome::Produced),
            before: first.next_before,
            ..query.clone()
        })
        .await
        .unwrap();
    assert!(rest.records.is_empty(), "{rest:?}");
    assert_eq!(rest.next_before, None);

    let other_tenant = client
        .query_audit(&AuditQuery {
            tenant: Some("other".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(other_tenant.records.is_empty());
    let disagreeing = client
        .query_audit(&AuditQuery {
            tenant: Some("other".into()),
            ..query
        })
        .await
        .unwrap_err();
    assert_eq!(disagreeing.status(), Some(400), "{disagreeing}");
}

#[tokio::test]
async fn a_batch_answers_for_each_record_in_order() {
    let config = Config {
        rules: vec![rule("drop-noise", 1, "suppress")],
        ..Config::default()
    };
    let server = TestServer::start_with(config).await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "batch"))
        .await
        .unwrap();
    let name = topic.topic.name();
    let noise = OutgoingMessage {
        key: None,
        payload: json!({ "kind": "noise" }),
        headers: Headers::new(),
    };
    let reserved = OutgoingMessage {
        headers: Headers::from([("acteon.x".to_owned(), "1".to_owned())]),
        ..message(9)
    };
    let outcomes = client
        .publish_batch(name, &[message(1), noise, reserved, message(2)])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    let first = outcomes[0].as_ref().unwrap().receipt().unwrap();
    assert_eq!(first.topic, name.kafka_topic_name());
    assert_eq!(
        outcomes[1].as_ref().unwrap(),
        &PublishOutcome::Suppressed {
            rule: Some("drop-noise".into()),
            silence: None
        }
    );
    let refused = outcomes[2].as_ref().unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    assert!(outcomes[3].as_ref().unwrap().receipt().is_some());

    let whole = client.publish_batch(name, &[]).await.unwrap_err();
    assert_eq!(whole.status(), Some(400), "{whole}");
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_answer_the_first_publish() {
    let server = TestServer::start().await;
    let client = &server.client;
    let topic = client
        .create_bus_topic(&spec("demo", "retries"))
        .await
        .unwrap();
    let name = topic.topic.name();
    let (first, replayed) = client
        .publish_idempotent(name, &message(1), "order-1")
        .await
        .unwrap();
    assert!(!replayed);
    let (again, replayed) = client
        .publish_idempotent(name, &message(1), "order-1")
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(again, first);
    let changed = client
        .publish_idempotent(name, &message(2), "order-1")
        .await
        .unwrap_err();
    assert_eq!(changed.status(), Some(422), "{changed}");

    let second = message(2);
    let records = [
        acteon_client::BatchRecord {
            message: &message(1),
            idempotency_key: Some("order-1"),
        },
        acteon_client::BatchRecord {
            message: &second,
            idempotency_key: Some("order-2"),
        },
    ];
    let outcomes = client.publish_records(name, &records).await.unwrap();
    assert_eq!(outcomes[0].as_ref().unwrap(), &first, "replayed in a batch");
    let stored = outcomes[1].as_ref().unwrap().receipt().unwrap().offset;
    let again = client.publish_records(name, &records).await.unwrap();
    assert_eq!(again[1].as_ref().unwrap().receipt().unwrap().offset, stored);
}

#[tokio::test]
async fn schemas_are_registered_checked_and_bound() {
    use acteon_client::SubjectRef;
    use acteon_core::{Compatibility, SchemaBinding, SchemaVersionRef};

    let server = TestServer::start().await;
    let client = &server.client;
    let subject = SubjectRef::new("agents", "typed", "calls");
    let strict = json!({ "type": "object", "required": ["tool"] });
    let first = client.register_schema(&subject, &strict).await.unwrap();
    assert!(first.created);
    assert_eq!(first.version.version, 1);
    let again = client.register_schema(&subject, &strict).await.unwrap();
    assert!(!again.created, "an identical schema keeps its version");

    let loose = json!({ "type": "object" });
    let check = client.check_schema(&subject, &loose).await.unwrap();
    assert!(check.compatible, "{check:?}");
    client
        .set_schema_compatibility(&subject, Compatibility::Forward)
        .await
        .unwrap();
    assert_eq!(
        client.schema_compatibility(&subject).await.unwrap(),
        Compatibility::Forward
    );
    let check = client.check_schema(&subject, &loose).await.unwrap();
    assert!(!check.compatible && !check.messages.is_empty(), "{check:?}");
    let refused = client.register_schema(&subject, &loose).await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert_eq!(
        client
            .list_schema_subjects("agents", "typed")
            .await
            .unwrap(),
        ["calls"]
    );
    assert_eq!(client.list_schema_versions(&subject).await.unwrap(), [1]);
    let latest = client
        .get_schema_version(&subject, SchemaVersionRef::Latest)
        .await
        .unwrap();
    assert_eq!(latest.schema, strict);

    let topic = client
        .create_bus_topic(&spec("typed", "calls"))
        .await
        .unwrap();
    let name = topic.topic.name();
    let binding = SchemaBinding {
        subject: "calls".into(),
        version: SchemaVersionRef::Number(1),
    };
    let bound = client.bind_topic_schema(name, &binding).await.unwrap();
    assert_eq!(bound.topic.schema(), Some(&binding));
    let invalid = OutgoingMessage {
        key: None,
        payload: json!({ "no": "tool" }),
        headers: Headers::new(),
    };
    let error = client.publish_message(name, &invalid).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert!(error.to_string().contains("\"tool\""), "{error}");
    let in_use = client.delete_schema_version(&subject, 1).await.unwrap_err();
    assert_eq!(in_use.status(), Some(409));

    let unbound = client.unbind_topic_schema(name).await.unwrap();
    assert_eq!(unbound.topic.schema(), None);
    client.publish_message(name, &invalid).await.unwrap();
    client.delete_schema_version(&subject, 1).await.unwrap();
}
