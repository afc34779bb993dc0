//! A broker outage: publish and topic create answer 503 while the broker is
//! down, a failed create leaves no state row, and the same server recovers
//! once the broker is back.

mod common;

use std::time::Duration;

use common::broker::{OwnBroker, tansu_binary};
use common::{Backend, TestServer};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_answers_503_and_the_server_recovers() {
    let Some(binary) = tansu_binary("broker_outage_answers_503_and_the_server_recovers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = OwnBroker::start(binary, dir.path());
    let backend = Backend::Kafka {
        bootstrap: broker.bootstrap(),
    };
    let server = TestServer::start_with(
        &backend,
        &dir.path().join("state"),
        &[
            ("ACTEON_BUS__KAFKA__PRODUCE_TIMEOUT_MS", "2000"),
            ("ACTEON_BUS__KAFKA__ADMIN_TIMEOUT_MS", "2000"),
            ("ACTEON_BUS__KAFKA__IDEMPOTENCE", "false"),
        ],
    );
    let topic = server.create_topic("outage", "events", 2).await;
    server.publish_seq(&topic, 0).await;

    broker.kill();
    let (status, body) = server
        .post(
            "/v1/bus/publish",
            &json!({ "topic": topic, "payload": { "seq": 1 } }),
        )
        .await;
    assert_eq!(status, 503, "publish with the broker down: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("broker unavailable"),
        "{body}"
    );
    let spec = json!({
        "namespace": "test", "tenant": "outage", "name": "created-during-outage",
        "partitions": 1, "replication_factor": 1,
    });
    let (status, body) = server.post("/v1/bus/topics", &spec).await;
    assert_eq!(status, 503, "create with the broker down: {body}");
    let names = server.topic_names("").await;
    assert_eq!(
        names,
        [topic.as_str()],
        "the failed create left no state row"
    );
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 503, "not ready without a broker");

    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server
            .post(
                "/v1/bus/publish",
                &json!({ "topic": topic, "payload": { "seq": 2 } }),
            )
            .await;
        if status == 200 {
            break;
        }
        eprintln!("recovering: {status} {body}");
        assert!(Instant::now() < deadline, "publish did not recover: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body) = server.post("/v1/bus/topics", &spec).await;
    assert_eq!(status, 201, "create after recovery: {body}");
    assert_eq!(server.get("/readyz").await.0, 200);
}
