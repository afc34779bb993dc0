//! The publish pipeline over HTTP: rules, quotas, silences and the audit
//! trail, against the real server binary.

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[[rules]]
name = "allow-vip"
priority = 5
condition = 'headers["x-vip"] == "yes"'
action = "allow"

[[rules]]
name = "no-big-refunds"
priority = 10
condition = 'tenant == "shop" && payload.amount > 1000'
action = "deny"
reason = "refunds over 1000 need approval"

[[rules]]
name = "drop-heartbeats"
priority = 20
condition = 'payload.kind == "heartbeat"'
action = "suppress"

[[quotas]]
tenant = "busy"
max_per_second = 2
burst = 2

[audit]
flush_interval_ms = 20
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_decide_in_priority_order_and_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), CONFIG);
    let topic = server.create_topic("shop", "refunds", 1).await;

    let (status, body) = server.publish(&topic, json!({ "amount": 5000 })).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "no-big-refunds");
    assert_eq!(body["reason"], "refunds over 1000 need approval");
    assert_eq!(server.publish(&topic, json!({ "amount": 10 })).await.0, 200);
    assert_eq!(
        server
            .publish(&topic, json!({ "note": "no amount" }))
            .await
            .0,
        200
    );
    let vip = server
        .post(
            "/v1/bus/publish",
            &json!({ "topic": topic, "payload": { "amount": 5000 }, "headers": { "x-vip": "yes" } }),
        )
        .await;
    assert_eq!(vip.0, 200, "an earlier allow rule wins: {}", vip.1);

    let (status, body) = server.publish(&topic, json!({ "kind": "heartbeat" })).await;
    assert_eq!(
        (status, body),
        (
            202,
            json!({ "outcome": "suppressed", "rule": "drop-heartbeats" })
        )
    );

    // Only the three allowed messages were produced.
    let mut reader = server.subscribe("check", &topic, "earliest").await;
    let mut produced = Vec::new();
    while let Some(message) = reader.next_message(Duration::from_secs(2)).await {
        produced.push(message.payload.clone());
    }
    assert_eq!(produced.len(), 3, "{produced:?}");

    let (_, rules) = server.get("/v1/rules").await;
    let names: Vec<_> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(
        names,
        [
            json!("allow-vip"),
            json!("no-big-refunds"),
            json!("drop-heartbeats")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_answers_429_then_lets_traffic_through_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), CONFIG);
    let topic = server.create_topic("busy", "events", 1).await;
    let other = server.create_topic("calm", "events", 1).await;

    let heartbeat = server.publish(&topic, json!({ "kind": "heartbeat" })).await;
    assert_eq!(heartbeat.0, 202, "suppressed messages use no quota");
    assert_eq!(server.publish(&topic, json!(1)).await.0, 200);
    assert_eq!(server.publish(&topic, json!(2)).await.0, 200);
    let response = server
        .http
        .post(server.url("/v1/bus/publish"))
        .json(&json!({ "topic": topic, "payload": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "whole seconds, at least 1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["quota"], "busy");
    let wait_ms = body["retry_after_ms"].as_u64().unwrap();
    assert!(wait_ms > 0 && wait_ms <= 1000, "{body}");
    assert_eq!(
        server.publish(&other, json!(1)).await.0,
        200,
        "other tenants are not limited"
    );

    tokio::time::sleep(Duration::from_millis(wait_ms + 50)).await;
    assert_eq!(
        server.publish(&topic, json!(4)).await.0,
        200,
        "allowed again after the wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_suppress_until_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), CONFIG);
    let topic = server.create_topic("ops", "alerts", 1).await;

    let (status, silence) = server
        .post(
            "/v1/silences",
            &json!({ "tenant": "ops", "topic": "alerts", "condition": "payload.level == \"info\"",
                     "duration_ms": 600_000, "comment": "maintenance" }),
        )
        .await;
    assert_eq!(status, 201, "{silence}");
    let id = silence["id"].as_str().unwrap().to_owned();
    let (status, body) = server.publish(&topic, json!({ "level": "info" })).await;
    assert_eq!(
        (status, body),
        (202, json!({ "outcome": "suppressed", "silence": id }))
    );
    assert_eq!(
        server.publish(&topic, json!({ "level": "error" })).await.0,
        200,
        "condition"
    );

    let (status, short) = server
        .post(
            "/v1/silences",
            &json!({ "tenant": "ops", "duration_ms": 300, "comment": "blip" }),
        )
        .await;
    assert_eq!(status, 201, "{short}");
    assert_eq!(
        server.publish(&topic, json!({ "level": "error" })).await.0,
        202
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        server.publish(&topic, json!({ "level": "error" })).await.0,
        200,
        "expired"
    );

    let (_, active) = server.get("/v1/silences").await;
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    let (_, all) = server.get("/v1/silences?all=true").await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");

    assert_eq!(server.delete(&format!("/v1/silences/{id}")).await.0, 204);
    assert_eq!(server.delete(&format!("/v1/silences/{id}")).await.0, 404);
    assert_eq!(server.delete("/v1/silences/unknown").await.0, 404);
    assert_eq!(
        server.publish(&topic, json!({ "level": "info" })).await.0,
        200,
        "ended"
    );

    for bad in [
        json!({ "tenant": "ops", "comment": "no end" }),
        json!({ "tenant": "ops", "duration_ms": 1, "ends_at": "2030-01-01T00:00:00Z", "comment": "both" }),
        json!({ "tenant": "ops", "ends_at": "2000-01-01T00:00:00Z", "comment": "past" }),
        json!({ "tenant": "o.ps", "duration_ms": 1000, "comment": "bad tenant" }),
        json!({ "tenant": "ops", "duration_ms": 1000, "condition": "payload.(", "comment": "bad CEL" }),
        json!({ "tenant": "ops", "duration_ms": 9_000_000_000_000_000_000_u64, "comment": "forever" }),
    ] {
        let (status, body) = server.post("/v1/silences", &bad).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_leaves_one_audit_record_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), CONFIG);
    let topic = server.create_topic("shop", "orders", 2).await;
    let other = server.create_topic("busy", "orders", 1).await;

    let receipt = server.publish_seq(&topic, 0).await;
    assert_eq!(
        server.publish(&topic, json!({ "amount": 9999 })).await.0,
        403
    );
    assert_eq!(
        server
            .publish(&topic, json!({ "kind": "heartbeat" }))
            .await
            .0,
        202
    );
    for seq in 0..3 {
        server
            .post(
                "/v1/bus/publish",
                &json!({ "topic": other, "payload": seq }),
            )
            .await;
    }
    let (status, _) = server.publish("test.shop.missing", json!(1)).await;
    assert_eq!(
        status, 404,
        "a publish rejected before the pipeline is not audited"
    );

    let page = server.audit("", 6).await;
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 6, "{page}");
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "throttled",
            "produced",
            "produced",
            "suppressed",
            "denied",
            "produced"
        ]
    );
    let produced = &records[5];
    assert_eq!(produced["topic"], topic.as_str());
    assert_eq!(produced["tenant"], "shop");
    assert_eq!(produced["key"], "key-0");
    assert_eq!(produced["partition"], receipt["partition"]);
    assert_eq!(produced["offset"], receipt["offset"]);
    assert_eq!(records[4]["rule"], "no-big-refunds");
    assert_eq!(records[3]["rule"], "drop-heartbeats");

    let denied = server.audit("tenant=shop&outcome=denied", 1).await;
    assert_eq!(denied["records"].as_array().unwrap().len(), 1);
    let by_topic = server.audit(&format!("topic={other}"), 3).await;
    assert_eq!(by_topic["records"].as_array().unwrap().len(), 3);

    let first = server.audit("limit=4", 4).await;
    assert_eq!(first["records"].as_array().unwrap().len(), 4);
    let cursor = first["next_before"].as_u64().expect("a next page");
    let (_, second) = server
        .get(&format!("/v1/audit?limit=4&before={cursor}"))
        .await;
    assert_eq!(second["records"].as_array().unwrap().len(), 2);
    assert!(second.get("next_before").is_none(), "last page: {second}");
    assert_eq!(server.get("/v1/audit?limit=zero").await.0, 400);

    assert!(server.terminate(Duration::from_secs(20)), "clean exit");
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), CONFIG);
    let after = server.audit("", 6).await;
    assert_eq!(
        after["records"], page["records"],
        "the trail survives a restart"
    );
}

#[test]
fn a_rule_that_does_not_parse_stops_the_server_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("acteon.toml");
    std::fs::write(
        &config,
        "[[rules]]\nname = \"broken\"\npriority = 1\ncondition = \"payload.(\"\naction = \"deny\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_acteon-server"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rule \"broken\""), "{stderr}");

    std::fs::write(
        &config,
        "[[rules]]\nname = \"odd\"\npriority = 1\ncondition = \"true\"\naction = \"drop\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_acteon-server"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("drop"),
        "an unknown action is named: {stderr}"
    );
}
