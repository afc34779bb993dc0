//! Builds the server from its configuration and runs it; `main` and the
//! tests use the same builder.

use std::sync::Arc;
use std::time::Duration;

use acteon_bus::{BusBackend, KafkaBackend, MemoryBackend};
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::api;
use crate::config::{Config, StateEngine};
use crate::messages::MessageService;
use crate::pipeline::{AuditLog, AuditWriter, Pipeline, Quotas, RuleSet, Silences};
use crate::state::{MemoryStore, SqliteStore, StateStore};
use crate::topics::TopicRegistry;

/// What every handler can reach.
#[derive(Debug, Clone)]
// Without the `bus` feature only the health routes read it.
#[cfg_attr(not(feature = "bus"), allow(dead_code))]
pub struct AppState {
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) bus: Arc<dyn BusBackend>,
    pub(crate) topics: TopicRegistry,
    pub(crate) messages: MessageService,
    pub(crate) pipeline: Arc<Pipeline>,
    /// Cancelled at shutdown; ends open SSE streams.
    pub(crate) shutdown: CancellationToken,
    pub(crate) sse_keep_alive: Duration,
    /// One permit per open subscription.
    pub(crate) subscriptions: Arc<Semaphore>,
}

/// A built server, ready to serve on a bound listener.
#[derive(Debug)]
pub struct Server {
    config: Config,
    app: AppState,
    audit_writer: AuditWriter,
}

impl Server {
    /// Opens the state store and the bus backend the configuration names,
    /// and loads the pipeline; a rule that does not compile stops it here.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let rules = RuleSet::compile(&config.rules).context("loading [[rules]]")?;
        let quotas = Quotas::new(&config.quotas).context("loading [[quotas]]")?;
        let state: Arc<dyn StateStore> = match config.state.engine {
            StateEngine::Sqlite => {
                let path = config.state_db_path();
                let store = SqliteStore::open(&path)
                    .with_context(|| format!("opening the state store {}", path.display()))?;
                Arc::new(store)
            }
            StateEngine::Memory => Arc::new(MemoryStore::default()),
        };
        let bus: Arc<dyn BusBackend> = match &config.bus.kafka {
            Some(kafka) => {
                Arc::new(KafkaBackend::new(kafka.clone()).context("configuring the Kafka backend")?)
            }
            None => Arc::new(MemoryBackend::new(config.bus.memory.clone())),
        };
        let silences = Silences::load(Arc::clone(&state))
            .await
            .context("loading silences")?;
        let (audit, audit_writer) = AuditLog::start(Arc::clone(&state), config.audit.clone());
        let pipeline = Arc::new(Pipeline {
            silences,
            rules,
            quotas,
            audit,
            bus: Arc::clone(&bus),
        });
        let topics = TopicRegistry::new(Arc::clone(&state), Arc::clone(&bus));
        let messages = MessageService::new(topics.clone(), Arc::clone(&bus), Arc::clone(&pipeline));
        let app = AppState {
            state,
            bus,
            topics,
            messages,
            pipeline,
            shutdown: CancellationToken::new(),
            sse_keep_alive: Duration::from_secs(config.server.sse_keep_alive_secs.max(1)),
            subscriptions: Arc::new(Semaphore::new(config.server.max_subscriptions)),
        };
        app.topics
            .restore()
            .await
            .context("reading stored topics")?;
        Ok(Self {
            config,
            app,
            audit_writer,
        })
    }

    /// The token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.app.shutdown.clone()
    }

    pub fn router(&self) -> Router {
        api::router(self.config.bus.enabled)
            .layer(DefaultBodyLimit::max(self.config.server.max_body_bytes))
            .layer(CatchPanicLayer::custom(api::panic_response))
            .layer(TraceLayer::new_for_http())
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
        let serving = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
        tokio::select! {
            served = serving => served.context("serving HTTP")?,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "connections still open after the grace period; closing them");
            }
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
