//! `GET /openapi.json` against the routes the server really serves.

mod common;

use std::collections::BTreeSet;

use common::{Backend, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

async fn document(server: &TestServer) -> Value {
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");
    document
}

/// Documented `(path template, method)` pairs.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| (path.clone(), (*method).to_owned()))
        })
        .collect()
}

/// A path of `template` with its parameters filled in.
fn concrete(template: &str) -> String {
    template
        .replace("{kafka_name}", "test.tenant.topic")
        .replace(['{', '}'], "")
}

/// Whether the router answered from a route, not from its fallbacks.
async fn served(server: &TestServer, method: &str, path: &str) -> (bool, u16, String) {
    let method: Method = method.to_uppercase().parse().unwrap();
    let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
    let (status, text, _) = server.call(method, path, None, body.as_ref()).await;
    let fallback = (status == 404 && text.contains("no such endpoint"))
        || (status == 405 && text.contains("method not allowed on this endpoint"));
    (!fallback, status, text)
}

#[tokio::test]
async fn the_document_names_exactly_the_routes_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let document = document(&server).await;
    let documented = operations(&document);
    assert!(documented.len() >= 20, "{documented:?}");
    for (template, method) in &documented {
        let path = concrete(template);
        let (served, status, text) = served(&server, method, &path).await;
        assert!(
            served,
            "{method} {template} is documented, not served: {status} {text}"
        );
        assert!(status < 500, "{method} {path}: {status} {text}");
    }
    // Every other method on a documented path is refused as unserved.
    let paths: BTreeSet<&String> = documented.iter().map(|(path, _)| path).collect();
    for template in paths {
        for method in METHODS {
            if documented.contains(&(template.clone(), method.to_owned())) {
                continue;
            }
            let (served, status, text) = served(&server, method, &concrete(template)).await;
            assert!(
                !served,
                "{method} {template} is served, not documented: {status} {text}"
            );
        }
    }
}

#[tokio::test]
async fn routes_turned_off_are_neither_served_nor_documented() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[bus]\nenabled = false\n\n[metrics]\nenabled = false\n";
    let server = TestServer::start_with_config(&Backend::Memory, dir.path(), config);
    let document = document(&server).await;
    let paths: BTreeSet<String> = operations(&document)
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let expected: BTreeSet<String> = ["/healthz", "/readyz", "/openapi.json"]
        .map(str::to_owned)
        .into();
    assert_eq!(paths, expected);
    for path in ["/metrics", "/v1/bus/topics", "/v1/audit"] {
        assert!(!served(&server, "get", path).await.0, "{path}");
    }
}

/// The document describes every answer shape a client needs: errors, SSE
/// event data, and the security scheme.
#[tokio::test]
async fn errors_events_and_auth_are_described() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&Backend::Memory, dir.path());
    let document = document(&server).await;
    let schemas = &document["components"]["schemas"];
    for name in [
        "ErrorBody",
        "StreamEvent",
        "DurableEvent",
        "BusMessage",
        "DeliveryReceipt",
    ] {
        assert!(schemas.get(name).is_some(), "{name} is missing");
    }
    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    let subscribe = &document["paths"]["/v1/bus/subscribe/{subscription_id}"]["get"];
    assert!(
        subscribe["responses"]["200"]["content"]
            .get("text/event-stream")
            .is_some(),
        "{subscribe}"
    );
    let publish = &document["paths"]["/v1/bus/publish"]["post"]["responses"];
    assert_eq!(
        publish["404"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    assert_eq!(
        document["paths"]["/healthz"]["get"]["security"],
        json!([{}]),
        "health checks need no key"
    );
}
