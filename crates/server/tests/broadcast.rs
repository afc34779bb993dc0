//! Broadcast subscriptions against the real server binary, on both
//! backends: start positions, slow connections, topic deletes and bad
//! input.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use acteon_bus::conformance::{DEADLINE, read_broadcast, wait_for_settled_group};
use common::{Backend, TestServer};
use serde_json::json;

on_both_backends!(
    broadcast_connections_start_where_they_ask,
    a_slow_broadcast_connection_holds_back_no_other,
    deleting_a_topic_ends_broadcast_streams,
    a_bad_mode_is_refused,
);

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

async fn broadcast_connections_start_where_they_ask(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "news", 3).await;
    for seq in 0..5 {
        server.publish_seq(&topic, seq).await;
    }
    let mut replay = server.broadcast(&topic, 3, "earliest").await;
    let mut live = server.broadcast(&topic, 3, "latest").await;
    let mut second_live = server.broadcast(&topic, 3, "latest").await;
    // A shared subscription of the id the broadcasts use takes nothing
    // from them: a broadcast joins no group.
    let mut shared = server.subscribe("broadcast", &topic, "latest").await;
    wait_for_settled_group(&mut [&mut shared], 3).await;
    for seq in 5..10 {
        server.publish_seq(&topic, seq).await;
    }
    assert_eq!(
        read_broadcast(&mut replay, 10).await,
        ((0..10).collect(), 0)
    );
    for reader in [&mut live, &mut second_live] {
        assert_eq!(read_broadcast(reader, 5).await, ((5..10).collect(), 0));
    }
    let got: BTreeSet<usize> = acteon_bus::conformance::collect(&mut [&mut shared], 5)
        .await
        .remove(0)
        .into_iter()
        .collect();
    assert_eq!(got, (5..10).collect());
}

async fn a_slow_broadcast_connection_holds_back_no_other(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "firehose", 2).await;
    let mut slow = server.broadcast(&topic, 2, "latest").await;
    let mut fast = server.broadcast(&topic, 2, "latest").await;
    // More than the server buffers for a topic on Kafka, with padding so
    // that the slow connection's socket buffers fill too; `slow` reads
    // nothing until the fast one has had everything.
    let count = 5_000;
    let padding = "x".repeat(1_000);
    let publisher = {
        let (server_url, topic) = (server.base_url.clone(), topic.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for seq in 0..count {
                let body = json!({
                    "topic": topic, "key": format!("key-{seq}"),
                    "payload": { "seq": seq, "padding": padding },
                });
                let response = http
                    .post(format!("{server_url}/v1/bus/publish"))
                    .json(&body)
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(response.status(), 200);
            }
        })
    };
    assert_eq!(
        read_broadcast(&mut fast, count).await,
        ((0..count).collect(), 0)
    );
    publisher.await.expect("publisher");
    let (seen, skipped) = read_broadcast(&mut slow, count).await;
    assert_eq!(seen.len() + skipped as usize, count, "{skipped} skipped");
}

async fn deleting_a_topic_ends_broadcast_streams(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let topic = server.create_topic(&tenant(), "brief", 2).await;
    let mut readers = vec![
        server.broadcast(&topic, 2, "latest").await,
        server.broadcast(&topic, 2, "earliest").await,
    ];
    let (status, body) = server.delete(&format!("/v1/bus/topics/{topic}")).await;
    assert_eq!(status, 204, "{body}");
    for reader in &mut readers {
        let end = reader.next_event(DEADLINE).await;
        assert!(end.is_none(), "expected the stream to end, got {end:?}");
    }
}

async fn a_bad_mode_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, dir.path());
    let tenant = tenant();
    let topic = server.create_topic(&tenant, "modes", 1).await;
    let (status, body) = server
        .get(&format!("/v1/bus/subscribe/x?topic={topic}&mode=everyone"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("mode"), "{body}");
    let (status, body) = server
        .post(
            "/v1/bus/subscriptions",
            &json!({
                "namespace": "test", "tenant": tenant, "id": "jobs",
                "topic": "modes", "mode": "broadcast",
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("mode"), "{body}");
    let (status, body) = server
        .post(
            "/v1/bus/subscriptions",
            &json!({
                "namespace": "test", "tenant": tenant, "id": "jobs",
                "topic": "modes", "mode": "shared",
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["mode"], "shared");
}
