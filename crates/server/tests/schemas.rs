//! The schema registry over HTTP, on both backends.

#[macro_use]
mod common;

use common::{Backend, TestServer};
use serde_json::{Value, json};

on_both_backends!(registration_versions_and_modes_follow_the_contract);

fn tenant() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn person(required: &[&str]) -> Value {
    json!({ "schema": {
        "type": "object",
        "properties": { "name": { "type": "string" }, "age": { "type": "integer" } },
        "required": required,
    }})
}

async fn registration_versions_and_modes_follow_the_contract(backend: Backend) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, data_dir.path());
    let base = format!("/v1/schemas/test/{}", tenant());
    let versions = format!("{base}/people/versions");

    let (status, first) = server.post(&versions, &person(&["name"])).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["version"], 1);
    assert_eq!(first["subject"], "people");
    let (status, again) = server.post(&versions, &person(&["name"])).await;
    assert_eq!((status, &again["version"]), (200, &json!(1)), "{again}");

    let (status, refused) = server.post(&versions, &person(&["name", "age"])).await;
    assert_eq!(status, 409, "{refused}");
    let messages = refused["messages"].as_array().expect("reasons");
    assert!(
        messages[0]
            .as_str()
            .unwrap()
            .contains("\"age\" is required now"),
        "{refused}"
    );
    let (status, answer) = server
        .post(&format!("{base}/people/compatibility"), &person(&[]))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "compatible": true, "messages": [] }));

    let (status, second) = server.post(&versions, &person(&[])).await;
    assert_eq!((status, &second["version"]), (201, &json!(2)), "{second}");
    assert_eq!(server.get(&versions).await.1, json!([1, 2]));
    let (status, latest) = server.get(&format!("{versions}/latest")).await;
    assert_eq!((status, &latest["version"]), (200, &json!(2)), "{latest}");
    assert_eq!(server.get(&base).await.1, json!(["people"]));

    assert_eq!(server.delete(&format!("{versions}/2")).await.0, 204);
    let (status, third) = server.post(&versions, &person(&[])).await;
    assert_eq!((status, &third["version"]), (201, &json!(3)), "{third}");

    for (path, body, expected) in [
        (
            versions.clone(),
            json!({ "schema": { "type": "nothing" } }),
            400,
        ),
        (versions.clone(), json!({ "schema": 4 }), 400),
        (versions.clone(), json!({ "nothing": {} }), 400),
        (format!("{base}/no.dots/versions"), person(&[]), 400),
        (
            format!("{base}/people/compatibility"),
            json!({ "schema": [] }),
            400,
        ),
    ] {
        let (status, answer) = server.post(&path, &body).await;
        assert_eq!(status, expected, "{path} {body} -> {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    for (path, expected) in [
        (format!("{versions}/9"), 404),
        (format!("{versions}/zero"), 400),
        (format!("{base}/missing/versions"), 404),
    ] {
        let (status, answer) = server.get(&path).await;
        assert_eq!(status, expected, "{path} -> {answer}");
    }
}
