//! Scenario 1: a publish through Acteon in process (the router, without a
//! socket) against a bare produce on the in-memory backend.

use std::time::{Duration, Instant};

use acteon_bus::{BusBackend, MemoryBackend};
use acteon_core::{OutgoingMessage, Topic, TopicName};
use acteon_server::Server;
use anyhow::{Context, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use serde::Serialize;
use tower::ServiceExt;

use super::setup::{self, PARTITIONS, Pipeline};

/// How many publishes each case makes per round, and in how many rounds;
/// the rounds of the cases alternate, so that a noisy neighbour slows all
/// of them alike, and each case's figure is its median round.
#[derive(Debug, Clone, Copy)]
pub struct InProcessSize {
    pub rounds: usize,
    pub publishes_per_round: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InProcessReport {
    pub rounds: usize,
    pub publishes_per_round: u64,
    pub cases: Vec<InProcessCase>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InProcessCase {
    pub label: String,
    pub ns_per_publish: f64,
    /// Time per publish ÷ the bare produce's (higher is slower).
    pub ratio: f64,
}

/// The server's router with its state, as `acteon-server` builds it.
struct InProcessServer {
    router: Router,
    bearer: Option<String>,
    // Kept alive: the audit writer stops when the server is dropped.
    _server: Server,
    _data_dir: tempfile::TempDir,
}

impl InProcessServer {
    async fn start(pipeline: Pipeline, topic: &TopicName) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let mut config = setup::acteon_config(pipeline, None);
        config.state.data_dir = data_dir.path().to_owned();
        let server = Server::build(config).await?;
        let started = Self {
            router: server.router(),
            bearer: pipeline.bearer(),
            _server: server,
            _data_dir: data_dir,
        };
        let spec = serde_json::to_string(&setup::topic_spec(topic))?;
        started
            .call("/v1/bus/topics", Bytes::from(spec), StatusCode::CREATED)
            .await
            .context("creating the topic")?;
        Ok(started)
    }

    async fn call(&self, path: &str, body: Bytes, expected: StatusCode) -> anyhow::Result<()> {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(bearer) = &self.bearer {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body))?)
            .await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        ensure!(
            status == expected,
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    async fn publish_round(&self, bodies: &[Bytes], count: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for seq in 0..count {
            let body = bodies[seq as usize % bodies.len()].clone();
            self.call("/v1/bus/publish", body, StatusCode::OK).await?;
        }
        Ok(started.elapsed())
    }
}

async fn bare_round(
    bus: &MemoryBackend,
    topic: &TopicName,
    messages: &[OutgoingMessage],
    count: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for seq in 0..count {
        bus.produce(topic, messages[seq as usize % messages.len()].clone())
            .await?;
    }
    Ok(started.elapsed())
}

pub async fn run(size: InProcessSize) -> anyhow::Result<InProcessReport> {
    anyhow::ensure!(
        size.rounds > 0 && size.publishes_per_round > 0,
        "the in-process scenario needs at least one round of one publish"
    );
    const DISTINCT: u64 = 64;
    let messages: Vec<_> = (0..DISTINCT).map(setup::message).collect();
    let topic = setup::topic("in-process");
    let bodies = setup::publish_bodies(&topic, DISTINCT);
    let bare = MemoryBackend::default();
    bare.create_topic(&Topic::new(topic.clone(), PARTITIONS, 1, None)?)
        .await?;
    let servers = [
        InProcessServer::start(Pipeline::Defaults, &topic).await?,
        InProcessServer::start(Pipeline::Full, &topic).await?,
    ];
    let count = size.publishes_per_round;
    // One round of each, not counted: allocations, caches, SQLite pages.
    bare_round(&bare, &topic, &messages, count).await?;
    for server in &servers {
        server.publish_round(&bodies, count).await?;
    }
    let mut rounds: [Vec<Duration>; 3] = Default::default();
    for _ in 0..size.rounds {
        rounds[0].push(bare_round(&bare, &topic, &messages, count).await?);
        for (server, times) in servers.iter().zip(&mut rounds[1..]) {
            times.push(server.publish_round(&bodies, count).await?);
        }
    }
    let per_publish = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_nanos() as f64 / count as f64
    };
    let [bare_times, defaults_times, full_times] = &mut rounds;
    let bare_ns = per_publish(bare_times);
    let cases = [
        ("bare in-memory produce", bare_ns),
        (
            "acteon request, defaults (audit on)",
            per_publish(defaults_times),
        ),
        (
            "acteon request, auth + 10 rules + quota + audit",
            per_publish(full_times),
        ),
    ];
    Ok(InProcessReport {
        rounds: size.rounds,
        publishes_per_round: count,
        cases: cases
            .into_iter()
            .map(|(label, ns)| InProcessCase {
                label: label.to_owned(),
                ns_per_publish: ns,
                ratio: ns / bare_ns,
            })
            .collect(),
    })
}
