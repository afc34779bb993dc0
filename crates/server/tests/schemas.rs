//! The schema registry over HTTP, on both backends.

#[macro_use]
mod common;

use acteon_bus::conformance::DEADLINE;
use common::{Backend, TestServer};
use serde_json::{Value, json};

on_both_backends!(
    registration_versions_and_modes_follow_the_contract,
    each_mode_accepts_and_refuses_as_documented,
    bound_topics_check_every_publish_path,
    another_tenants_subjects_are_never_visible_or_usable,
);

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

fn integer(bounds: Value) -> Value {
    let mut schema = json!({ "type": "integer" });
    schema
        .as_object_mut()
        .unwrap()
        .extend(bounds.as_object().unwrap().clone());
    json!({ "schema": schema })
}

/// Each mode on a subject whose history was registered under `none`: an
/// accepted change is registered (201), a refused one is 409 with its
/// reasons, and the check without registering agrees with both.
async fn each_mode_accepts_and_refuses_as_documented(backend: Backend) {
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&backend, data_dir.path());
    let base = format!("/v1/schemas/test/{}", tenant());
    let up_to_10 = integer(json!({ "maximum": 10 }));
    let from_0 = integer(json!({ "minimum": 0 }));
    let from_0_titled = integer(json!({ "minimum": 0, "title": "count" }));
    let cases = [
        (
            "none",
            vec![&from_0],
            json!({ "schema": { "type": "string" } }),
            None,
        ),
        (
            "backward",
            vec![&up_to_10, &from_0],
            integer(json!({ "minimum": -5 })),
            Some(integer(json!({ "minimum": 5 }))),
        ),
        (
            "backward_transitive",
            vec![&up_to_10, &from_0],
            integer(json!({})),
            Some(integer(json!({ "minimum": -5 }))),
        ),
        (
            "forward",
            vec![&up_to_10, &from_0],
            integer(json!({ "minimum": 5 })),
            Some(integer(json!({ "minimum": -5 }))),
        ),
        (
            "forward_transitive",
            vec![&up_to_10, &from_0],
            integer(json!({ "minimum": 0, "maximum": 10 })),
            Some(integer(json!({ "minimum": 5 }))),
        ),
        (
            "full",
            vec![&up_to_10, &from_0],
            from_0_titled.clone(),
            Some(integer(json!({ "minimum": 5 }))),
        ),
        (
            "full_transitive",
            vec![&from_0, &from_0_titled],
            integer(json!({ "minimum": 0, "description": "a count" })),
            Some(integer(json!({ "minimum": 0, "maximum": 10 }))),
        ),
    ];
    for (mode, history, accepted, refused) in cases {
        let subject = format!("{base}/{mode}");
        let versions = format!("{subject}/versions");
        for (n, schema) in history.iter().enumerate() {
            let (status, body) = server.post(&versions, schema).await;
            assert_eq!(status, 201, "{mode}: {body}");
            let config = json!({ "compatibility": if n == 0 { "none" } else { mode } });
            let (status, body) = server.put(&format!("{subject}/config"), &config).await;
            assert_eq!(status, 200, "{mode}: {body}");
        }
        let (_, config) = server.get(&format!("{subject}/config")).await;
        assert_eq!(config, json!({ "compatibility": mode }));
        let check = format!("{subject}/compatibility");
        let (_, answer) = server.post(&check, &accepted).await;
        assert_eq!(answer["compatible"], true, "{mode}: {answer}");
        let (status, body) = server.post(&versions, &accepted).await;
        assert_eq!(status, 201, "{mode} accepts {accepted}: {body}");
        let Some(refused) = refused else { continue };
        let (_, answer) = server.post(&check, &refused).await;
        assert_eq!(answer["compatible"], false, "{mode}: {answer}");
        let (status, body) = server.post(&versions, &refused).await;
        assert_eq!(status, 409, "{mode} refuses {refused}: {body}");
        let reasons = body["messages"].as_array().expect("reasons");
        assert!(!reasons.is_empty(), "{body}");
        assert_eq!(
            server.get(&versions).await.1.as_array().unwrap().len(),
            history.len() + 1,
            "{mode}: a refused schema is not registered"
        );
    }
    let (status, body) = server
        .put(
            &format!("{base}/backward/config"),
            &json!({ "compatibility": "sideways" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // A mode may be set before the first version, as Confluent's allows.
    let early = format!("{base}/early");
    let (status, body) = server
        .put(
            &format!("{early}/config"),
            &json!({ "compatibility": "forward" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let early_versions = format!("{early}/versions");
    assert_eq!(server.get(&early_versions).await.1, json!([]));
    assert_eq!(server.post(&early_versions, &from_0).await.0, 201);
    let (status, body) = server
        .post(&early_versions, &integer(json!({ "minimum": -5 })))
        .await;
    assert_eq!(status, 409, "forward from the start: {body}");
}

fn call_schema() -> Value {
    json!({ "schema": {
        "type": "object",
        "properties": {
            "tool": { "type": "string" },
            "tags": { "type": "array", "items": { "type": "string" } },
        },
        "required": ["tool"],
        "additionalProperties": false,
    }})
}

/// A topic bound at create and one bound later to `latest`: single and
/// batch publishes are checked, refusals name the schema and the issues
/// and are audited, produced records carry `acteon.schema`, and a bound
/// version cannot be deleted.
async fn bound_topics_check_every_publish_path(backend: Backend) {
    let data_dir = tempfile::tempdir().unwrap();
    let config = "[audit]\nflush_interval_ms = 20\n";
    let server = TestServer::start_with_config(&backend, data_dir.path(), config);
    let tenant = tenant();
    let subject = format!("/v1/schemas/test/{tenant}/calls");
    let versions = format!("{subject}/versions");
    assert_eq!(server.post(&versions, &call_schema()).await.0, 201);

    let spec = |name: &str, schema: Value| {
        json!({ "namespace": "test", "tenant": tenant, "name": name,
                "partitions": 1, "replication_factor": 1, "schema": schema })
    };
    for (schema, expected) in [
        (json!({ "subject": "nobody", "version": 1 }), 404),
        (json!({ "subject": "calls", "version": 9 }), 404),
        (json!({ "subject": "calls", "version": "first" }), 400),
        (json!({ "subject": "no.dots", "version": 1 }), 400),
        (json!({ "subject": "calls" }), 400),
    ] {
        let (status, body) = server
            .post("/v1/bus/topics", &spec("refused", schema.clone()))
            .await;
        assert_eq!(status, expected, "{schema}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, pinned) = server
        .post(
            "/v1/bus/topics",
            &spec("pinned", json!({ "subject": "calls", "version": 1 })),
        )
        .await;
    assert_eq!(status, 201, "{pinned}");
    assert_eq!(
        pinned["schema"],
        json!({ "subject": "calls", "version": 1 })
    );
    let pinned = pinned["kafka_name"].as_str().unwrap().to_owned();
    let mut reader = server.subscribe("readers", &pinned, "earliest").await;

    let (status, receipt) = server.publish(&pinned, json!({ "tool": "search" })).await;
    assert_eq!(status, 200, "{receipt}");
    let (status, refused) = server
        .publish(&pinned, json!({ "tool": 5, "extra": 1 }))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["schema"],
        json!({ "subject": "calls", "version": 1 })
    );
    let issues = refused["issues"].as_array().expect("issues");
    assert!(
        issues.iter().any(|issue| issue["path"] == "/tool"),
        "{refused}"
    );
    assert!(
        refused["error"].as_str().unwrap().contains("calls"),
        "{refused}"
    );
    let many = json!({ "tool": "t", "tags": (0..15).collect::<Vec<_>>() });
    let (status, refused) = server.publish(&pinned, many).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["issues"].as_array().unwrap().len(), 10, "{refused}");

    let (status, answer) = server
        .post(
            &format!("/v1/bus/topics/{pinned}/records"),
            &json!({ "records": [
                { "payload": { "tool": "a" } },
                { "payload": { "tags": [] } },
                { "payload": { "tool": "c", "tags": ["x"] } },
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert!(results[0]["offset"].is_i64(), "{answer}");
    assert_eq!(results[1]["status"], 400, "{answer}");
    assert_eq!(results[1]["schema"]["version"], 1, "{answer}");
    assert_eq!(results[1]["issues"][0]["path"], "", "{answer}");
    assert!(results[2]["offset"].is_i64(), "{answer}");

    let page = server
        .audit(&format!("topic={pinned}&outcome=invalid"), 3)
        .await;
    let invalid = page["records"].as_array().unwrap();
    assert_eq!(invalid.len(), 3, "{page}");
    assert!(
        invalid[0]["error"].as_str().unwrap().contains("calls"),
        "{page}"
    );
    for _ in 0..3 {
        let message = reader.next_message(DEADLINE).await.expect("a record");
        assert_eq!(message.headers["acteon.schema"], "calls:1", "{message:?}");
    }

    // Bound later, to whichever version is the latest.
    let open = server.create_topic(&tenant, "open", 1).await;
    let bind = format!("/v1/bus/topics/{open}/schema");
    for (body, expected) in [
        (json!({ "subject": "calls", "version": 7 }), 404),
        (json!({ "subject": "calls", "version": 0 }), 400),
        (
            json!({ "subject": "calls", "version": "latest", "x": 1 }),
            400,
        ),
        (json!([]), 400),
    ] {
        let (status, answer) = server.put(&bind, &body).await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let missing = format!("/v1/bus/topics/test.{tenant}.missing/schema");
    let latest = json!({ "subject": "calls", "version": "latest" });
    assert_eq!(server.put(&missing, &latest).await.0, 404);
    let (status, bound) = server.put(&bind, &latest).await;
    assert_eq!((status, &bound["schema"]), (200, &latest), "{bound}");
    assert_eq!(server.publish(&open, json!({ "tags": [] })).await.0, 400);
    // Version 2 no longer requires `tool`, which is backward compatible.
    let mut loose = call_schema();
    loose["schema"]["required"] = json!([]);
    let (status, second) = server.post(&versions, &loose).await;
    assert_eq!((status, &second["version"]), (201, &json!(2)), "{second}");
    let (status, receipt) = server.publish(&open, json!({ "tags": [] })).await;
    assert_eq!(status, 200, "the latest version applies at once: {receipt}");
    assert_eq!(server.publish(&pinned, json!({ "tags": [] })).await.0, 400);
    let mut open_reader = server.subscribe("readers", &open, "earliest").await;
    let message = open_reader.next_message(DEADLINE).await.expect("a record");
    assert_eq!(message.headers["acteon.schema"], "calls:2");

    // A bound version stays: by number (pinned), and as the latest (open).
    for version in [1, 2] {
        let (status, body) = server.delete(&format!("{versions}/{version}")).await;
        assert_eq!(status, 409, "version {version}: {body}");
    }
    let (status, unbound) = server.delete(&bind).await;
    assert_eq!(status, 200, "{unbound}");
    assert!(unbound.get("schema").is_none(), "{unbound}");
    assert_eq!(server.publish(&open, json!("anything")).await.0, 200);
    assert_eq!(server.delete(&format!("{versions}/2")).await.0, 204);
    assert_eq!(
        server.delete(&format!("/v1/bus/topics/{pinned}")).await.0,
        204
    );
    assert_eq!(server.delete(&format!("{versions}/1")).await.0, 204);
    assert_eq!(server.get(&versions).await.1, json!([]));
    assert_eq!(server.delete(&format!("{versions}/latest")).await.0, 400);
}

fn keys_config() -> String {
    let key = |id: &str, tenant: &str, ops: &str| {
        format!(
            "[[auth.keys]]\nid = \"{id}\"\nkey_sha256 = \"{}\"\n\
             grants = [{{ namespace = \"test\", tenant = \"{tenant}\", ops = [{ops}] }}]\n",
            sha256(id)
        )
    };
    format!(
        "[auth]\nenabled = true\n\n{}{}{}",
        key("acme-admin", "acme", "\"admin\""),
        key("acme-agent", "acme", "\"publish\", \"subscribe\""),
        key("globex-admin", "globex", "\"admin\""),
    )
}

fn sha256(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The registry of tenant `acme` as its own keys and another tenant's
/// admin see it.
async fn another_tenants_subjects_are_never_visible_or_usable(backend: Backend) {
    use reqwest::Method as M;
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_config(&backend, data_dir.path(), &keys_config());
    let as_key = |key: &'static str, method: M, path: String, body: Option<Value>| {
        let server = &server;
        async move {
            let (status, text, _) = server.call(method, &path, Some(key), body.as_ref()).await;
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
            )
        }
    };
    let acme = "/v1/schemas/test/acme".to_owned();
    let calls = format!("{acme}/calls/versions");
    let (status, body) = as_key("acme-agent", M::POST, calls.clone(), Some(call_schema())).await;
    assert_eq!(
        status, 403,
        "publish and subscribe grant no schema op: {body}"
    );
    let (status, body) = as_key("acme-admin", M::POST, calls.clone(), Some(call_schema())).await;
    assert_eq!(status, 201, "{body}");

    for (method, path, body) in [
        (M::GET, acme.clone(), None),
        (M::GET, calls.clone(), None),
        (M::GET, format!("{calls}/1"), None),
        (M::POST, calls.clone(), Some(call_schema())),
        (M::DELETE, format!("{calls}/1"), None),
        (M::GET, format!("{acme}/calls/config"), None),
        (
            M::POST,
            format!("{acme}/calls/compatibility"),
            Some(call_schema()),
        ),
    ] {
        let (status, answer) = as_key("globex-admin", method.clone(), path.clone(), body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains("tool"), "{answer}");
    }
    let (status, listed) = as_key(
        "globex-admin",
        M::GET,
        "/v1/schemas/test/globex".into(),
        None,
    )
    .await;
    assert_eq!((status, listed), (200, json!([])));

    // A topic names a subject of its own tenant only.
    let topic = |tenant: &str| {
        json!({ "namespace": "test", "tenant": tenant, "name": "calls", "partitions": 1,
                "replication_factor": 1, "schema": { "subject": "calls", "version": 1 } })
    };
    let record = |topic: &str| json!({ "topic": topic, "payload": { "no": "tool" } });
    let topics = "/v1/bus/topics";
    let publish = "/v1/bus/publish";
    // In order: globex's own `calls`, registered halfway, accepts
    // anything; acme's topic still checks against acme's.
    let steps = [
        (
            "globex-admin",
            M::POST,
            topics,
            topic("globex"),
            404,
            "acme's subject is not globex's",
        ),
        (
            "globex-admin",
            M::POST,
            topics,
            topic("acme"),
            403,
            "another tenant's topic",
        ),
        ("acme-admin", M::POST, topics, topic("acme"), 201, "its own"),
        (
            "globex-admin",
            M::POST,
            "/v1/schemas/test/globex/calls/versions",
            json!({ "schema": true }),
            201,
            "globex's own subject",
        ),
        (
            "globex-admin",
            M::POST,
            topics,
            topic("globex"),
            201,
            "bound to globex's",
        ),
        (
            "acme-agent",
            M::POST,
            publish,
            record("test.acme.calls"),
            400,
            "acme's schema",
        ),
        (
            "globex-admin",
            M::POST,
            publish,
            record("test.globex.calls"),
            200,
            "globex's schema",
        ),
        (
            "globex-admin",
            M::PUT,
            "/v1/bus/topics/test.acme.calls/schema",
            json!({ "subject": "calls", "version": 1 }),
            403,
            "rebinding another tenant's topic",
        ),
    ];
    for (key, method, path, body, expected, what) in steps {
        let (status, answer) = as_key(key, method, path.into(), Some(body)).await;
        assert_eq!(status, expected, "{what}: {answer}");
    }
}
