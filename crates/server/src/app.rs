//! Builds the server from its configuration and runs it; `main` and the
//! tests use the same builder.

use std::sync::Arc;
use std::time::Duration;

use acteon_bus::{BusBackend, KafkaBackend, MemoryBackend};
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;

use crate::api::{self, Readiness};
use crate::auth::KeyStore;
use crate::config::{Config, StateEngine};
use crate::durable::{DurableSubscriptions, EngineServices};
use crate::idempotency::{IdempotencySnapshots, IdempotencyWindow};
use crate::limits::Connections;
use crate::listener::SendTimeoutListener;
use crate::messages::MessageService;
use crate::metrics::Metrics;
use crate::pipeline::{AuditLog, AuditWriter, Pipeline, Quotas, RuleSet, Silences};
use crate::request_context::RequestScopeLayer;
use crate::schemas::registry::SchemaRegistry;
use crate::state::{MemoryStore, SqliteStore, StateStore, TimedStore};
use crate::topics::TopicRegistry;

/// What every handler shares, behind one `Arc`: each request clones it
/// several times (extractors, middleware), and one count is cheaper than
/// one per service.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

#[derive(Debug)]
// Without the `bus` feature only the health routes read it.
#[cfg_attr(not(feature = "bus"), allow(dead_code))]
pub struct Services {
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) bus: Arc<dyn BusBackend>,
    pub(crate) topics: TopicRegistry,
    pub(crate) messages: MessageService,
    pub(crate) durable: DurableSubscriptions,
    pub(crate) pipeline: Arc<Pipeline>,
    /// Cancelled at shutdown; ends open SSE streams.
    pub(crate) shutdown: CancellationToken,
    pub(crate) sse_keep_alive: Duration,
    pub(crate) keys: Arc<KeyStore>,
    /// Open subscriptions, server-wide, per tenant and per key.
    pub(crate) connections: Arc<Connections>,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) schemas: Arc<SchemaRegistry>,
}

/// A built server, ready to serve on a bound listener.
#[derive(Debug)]
pub struct Server {
    config: Config,
    app: AppState,
    audit_writer: AuditWriter,
    /// None where the window is not restored either.
    idempotency_snapshots: Option<IdempotencySnapshots>,
    cors: Option<CorsLayer>,
}

impl Server {
    /// Opens the state store and the bus backend the configuration names,
    /// and loads the pipeline; a rule that does not compile stops it here.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if serves_strangers_unauthenticated(&config)? {
            let listen = config.server.listen;
            tracing::warn!(%listen, "authentication is disabled on a non-loopback address");
        }
        let keys = Arc::new(KeyStore::new(&config.auth).context("loading [auth] keys")?);
        let cors = config.server.cors.layer()?;
        let rules = RuleSet::compile(&config.rules).context("loading [[rules]]")?;
        let quotas = Quotas::new(&config.quotas).context("loading [[quotas]]")?;
        let metrics = Arc::new(Metrics::default());
        let state: Arc<dyn StateStore> = match config.state.engine {
            StateEngine::Sqlite => {
                let path = config.state_db_path();
                let store = SqliteStore::open(&path)
                    .with_context(|| format!("opening the state store {}", path.display()))?;
                Arc::new(store)
            }
            StateEngine::Memory => Arc::new(MemoryStore::default()),
        };
        let state: Arc<dyn StateStore> = Arc::new(TimedStore::new(state, Arc::clone(&metrics)));
        let bus: Arc<dyn BusBackend> = match &config.bus.kafka {
            Some(kafka) => {
                Arc::new(KafkaBackend::new(kafka.clone()).context("configuring the Kafka backend")?)
            }
            None => Arc::new(MemoryBackend::new(config.bus.memory.clone())),
        };
        let schemas = Arc::new(
            SchemaRegistry::load(Arc::clone(&state), (&config.limits).into())
                .await
                .context("loading schemas")?,
        );
        let silences = Silences::load(Arc::clone(&state), config.limits.clone())
            .await
            .context("loading silences")?;
        let (audit, audit_writer) = AuditLog::start(Arc::clone(&state), config.audit.clone());
        let pipeline = Arc::new(Pipeline {
            silences,
            rules,
            quotas,
            audit,
            bus: Arc::clone(&bus),
            tasks: TaskTracker::new(),
            metrics: Arc::clone(&metrics),
        });
        let idempotency = IdempotencyWindow::new(config.idempotency.clone());
        // Receipts of records the backend does not keep across a restart
        // would name offsets given again.
        if bus.keeps_records() {
            idempotency
                .restore(&*state)
                .await
                .context("reading the idempotency window")?;
        }
        let idempotency_snapshots = bus
            .keeps_records()
            .then(|| idempotency.start_snapshots(Arc::clone(&state)));
        let topics = TopicRegistry::new(
            Arc::clone(&state),
            Arc::clone(&bus),
            Arc::clone(&schemas),
            config.limits.max_topics_per_tenant,
        );
        let messages = MessageService::new(
            topics.clone(),
            Arc::clone(&bus),
            Arc::clone(&pipeline),
            Arc::new(config.limits.clone()),
            config.server.max_batch_records,
            Arc::clone(&idempotency),
            Arc::clone(&schemas),
        );
        let shutdown = CancellationToken::new();
        let durable = DurableSubscriptions::new(
            EngineServices {
                bus: Arc::clone(&bus),
                state: Arc::clone(&state),
                audit: pipeline.audit.clone(),
                shutdown: shutdown.clone(),
            },
            topics.clone(),
            config.durable.clone(),
        );
        let app = AppState(Arc::new(Services {
            state,
            bus,
            topics,
            messages,
            durable,
            pipeline,
            shutdown,
            sse_keep_alive: Duration::from_secs(config.server.sse_keep_alive_secs.max(1)),
            connections: Arc::new(Connections::new(
                config.server.max_subscriptions,
                &config.limits,
            )),
            readiness: Arc::default(),
            metrics,
            keys,
            schemas,
        }));
        app.topics
            .restore()
            .await
            .context("reading stored topics")?;
        app.durable
            .restore()
            .await
            .context("reading stored durable subscriptions")?;
        Ok(Self {
            config,
            app,
            audit_writer,
            idempotency_snapshots,
            cors,
        })
    }

    /// The token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.app.shutdown.clone()
    }

    /// The API with its layers, innermost first: the body limit, panics as
    /// 500s, CORS (which answers preflights itself), and around it all the
    /// request's id, log context and metrics.
    pub fn router(&self) -> Router {
        let router = api::router(&self.config)
            .layer(DefaultBodyLimit::max(self.config.server.max_body_bytes))
            .layer(CatchPanicLayer::custom(api::panic_response));
        let router = match &self.cors {
            Some(cors) => router.layer(cors.clone()),
            None => router,
        };
        router
            .layer(RequestScopeLayer::new(Arc::clone(&self.app.metrics)))
            .with_state(self.app.clone())
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> anyhow::Result<TcpListener> {
        let listen = self.config.server.listen;
        TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))
    }

    /// Serves until the shutdown token is cancelled, then lets requests in
    /// flight finish, ends SSE streams, stores the queued audit records and
    /// flushes the producer.
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        let address = listener.local_addr()?;
        tracing::info!(%address, backend = self.app.bus.kind(), "acteon-server listening");
        let shutdown = self.app.shutdown.clone();
        let send_timeout = Duration::from_millis(self.config.server.send_timeout_ms.max(1));
        // Served as a make-service, each connection gets a clone of the
        // router (a reference count); served as a router, each would get
        // its routes rebuilt, some 18 KiB per open SSE connection.
        let serving = axum::serve(
            SendTimeoutListener::new(listener, send_timeout),
            self.router().into_make_service(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
        tokio::select! {
            served = serving => served.context("serving HTTP")?,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "connections still open after the grace period; closing them");
            }
        }
        // The engines stopped with the shutdown token; their last progress
        // is stored before the store and the audit trail close.
        self.app.durable.wait_stopped(grace).await;
        let pipeline = &self.app.pipeline.tasks;
        pipeline.close();
        if tokio::time::timeout(grace, pipeline.wait()).await.is_err() {
            tracing::warn!("publishes still waiting for the broker after the grace period");
        }
        // Publishes that settled their keys within the grace period are in
        // the last snapshot.
        if let Some(snapshots) = self.idempotency_snapshots {
            snapshots.stop().await;
        }
        self.audit_writer.stop().await;
        let timeout = Duration::from_millis(self.config.server.shutdown_flush_timeout_ms);
        if let Err(error) = self.app.bus.flush(timeout).await {
            tracing::error!(%error, "producer did not flush before shutdown");
        }
        tracing::info!("acteon-server stopped");
        Ok(())
    }
}

/// The start of the line `run` prints on stdout, followed by the base URL.
pub const LISTENING: &str = "acteon-server listening on ";

/// Builds the server, binds it, announces the bound address on stdout, and
/// serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = Server::build(config).await?;
    let listener = server.bind().await?;
    // One line on stdout with the bound address, for scripts, tests and
    // benchmarks that start the server on port 0.
    println!("{LISTENING}http://{}", listener.local_addr()?);
    tokio::spawn(cancel_on_signal(server.shutdown_token()));
    server.serve(listener).await
}

/// Whether the server would serve a non-loopback address without
/// authentication, as `allow_unauthenticated` permits; without that
/// permission, an error.
fn serves_strangers_unauthenticated(config: &Config) -> anyhow::Result<bool> {
    let listen = config.server.listen;
    if config.auth.enabled || listen.ip().is_loopback() {
        return Ok(false);
    }
    anyhow::ensure!(
        config.auth.allow_unauthenticated,
        "refusing to listen on {listen} without authentication: enable [auth], \
         or set allow_unauthenticated = true in [auth] to serve anyone who can reach it"
    );
    Ok(true)
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_exposure_needs_explicit_permission() {
        let mut config = Config::default();
        assert!(
            !serves_strangers_unauthenticated(&config).unwrap(),
            "loopback is fine"
        );
        config.server.listen = "0.0.0.0:8080".parse().unwrap();
        let refused = serves_strangers_unauthenticated(&config).unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("refusing to listen on 0.0.0.0:8080"),
            "{refused}"
        );
        config.auth.allow_unauthenticated = true;
        assert!(
            serves_strangers_unauthenticated(&config).unwrap(),
            "allowed, with a warning"
        );
        config.auth.enabled = true;
        assert!(
            !serves_strangers_unauthenticated(&config).unwrap(),
            "authenticated"
        );
    }
}
